//! The risk agent alone on a bus: scripted orders and PnL.

use agent_risk::{RiskAgent, RiskConfig};
use bus_core::model::payload::*;
use bus_core::prelude::*;
use bus_core::runtime::script::run_script;
use rust_decimal_macros::dec;

mod common;
use common::{buy_btc, pnl};

#[test]
fn approves_refuses_and_stops_on_drawdown() {
    let config = RiskConfig {
        max_position_notional: Some(dec!(1000)),
        max_order_notional: None,
        max_open_positions: None,
        max_orders_per_minute: None,
        max_drawdown: Some(dec!(0.1)),
        max_daily_loss: None,
        warning_fraction: dec!(0.8),
        halt_on_stale_feed: true,
    };
    let mut f = MessageFactory::new(AgentId::new("trader"), true);
    let order = |f: &mut MessageFactory, q| buy_btc(f, "o", q, 1);
    let small = order(&mut f, dec!(5));
    let big = order(&mut f, dec!(50));
    let after_stop = order(&mut f, dec!(1));
    let script = vec![
        small.clone(),
        big.clone(),
        pnl(&mut f, dec!(1000), 2),
        pnl(&mut f, dec!(880), 3),
        after_stop.clone(),
    ];
    let agent = RiskAgent::new(AgentId::new("risk"), config, true);
    let seen = run_script(Box::new(agent), script, &["trade.decision", "risk"]).unwrap();
    let kinds: Vec<(MessageType, Option<MessageId>)> = seen
        .iter()
        .map(|e| (e.message_type(), e.correlation_id))
        .collect();
    // Each decision answers its own request; the breach the big order
    // causes, and the stop, follow from it. (Within one generation a
    // subscriber takes higher priorities first: the breach alert may come
    // before the refusal it is published with.)
    let answer = |id| kinds.iter().find(|(_, c)| *c == Some(id)).map(|(k, _)| *k);
    assert_eq!(answer(small.id), Some(MessageType::ResponseSuccess));
    assert_eq!(answer(big.id), Some(MessageType::ResponseError));
    let position = |kind| kinds.iter().position(|(k, _)| *k == kind).unwrap();
    assert!(position(MessageType::RiskLimitBreach) > position(MessageType::ResponseSuccess));
    let stop = seen
        .iter()
        .find(|e| e.message_type() == MessageType::RiskEmergencyStop)
        .expect("emergency stop");
    assert_eq!(stop.priority, Priority::Critical);
    let last = seen
        .iter()
        .find(|e| e.correlation_id == Some(after_stop.id))
        .expect("answered");
    assert!(
        matches!(last.payload(), Payload::ResponseError(e) if e.message.contains("emergency_stop"))
    );
}

#[test]
fn a_config_update_on_the_bus_tightens_a_limit() {
    let config = RiskConfig {
        max_position_notional: None,
        max_order_notional: None,
        max_open_positions: None,
        max_orders_per_minute: None,
        max_drawdown: None,
        max_daily_loss: None,
        warning_fraction: dec!(0.8),
        halt_on_stale_feed: true,
    };
    let mut f = MessageFactory::new(AgentId::new("operator"), true);
    let update = f.make(
        Topic::new("system.config_update").unwrap(),
        Payload::SystemConfigUpdate(
            ConfigUpdate::new(ConfigUpdateFields {
                key: "risk.max_order_notional".into(),
                value: "50".into(),
            })
            .unwrap(),
        ),
        0,
    );
    let order = buy_btc(&mut f, "o", dec!(1), 1);
    let seen = run_script(
        Box::new(RiskAgent::new(AgentId::new("risk"), config, true)),
        vec![update, order.clone()],
        &["trade.decision"],
    )
    .unwrap();
    let answer = seen
        .iter()
        .find(|e| e.correlation_id == Some(order.id))
        .expect("answered");
    assert!(
        matches!(answer.payload(), Payload::ResponseError(e) if e.message.contains("max_order_notional"))
    );
}
