//! A restarted risk agent remembers the day: the daily-loss stop fires at
//! the same loss as if it had never been restarted.

use agent_risk::{RiskAgent, RiskConfig, RiskStateStore, SharedState, StateFile};
use bus_core::model::payload::*;
use bus_core::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

mod common;
use common::pnl;

/// 2023-11-15 00:00 UTC.
const DAY: i64 = 1_700_006_400_000;

fn config() -> RiskConfig {
    RiskConfig {
        max_position_notional: None,
        max_order_notional: None,
        max_open_positions: None,
        max_orders_per_minute: None,
        max_drawdown: Some(dec!(0.15)),
        max_daily_loss: None,
        warning_fraction: dec!(0.8),
        halt_on_stale_feed: true,
    }
}

/// Equity 100,000 at the day's start, then 1,000 less every minute.
fn updates() -> Vec<Envelope> {
    let mut f = MessageFactory::new(AgentId::new("trader"), true);
    (0..30)
        .map(|i| {
            pnl(
                &mut f,
                dec!(100000) - Decimal::from(1000 * i),
                DAY + i * 60_000,
            )
        })
        .collect()
}

/// Feeds `input` to `agent`; returns the market times of emergency stops.
fn stops(agent: &mut RiskAgent, input: &[Envelope]) -> Vec<i64> {
    let mut out = Outbox::new();
    for envelope in input {
        agent.on_message(envelope, &mut out).unwrap();
    }
    out.drain()
        .filter(|e| e.message_type() == MessageType::RiskEmergencyStop)
        .map(|e| e.created_at_ms)
        .collect()
}

/// The oracle: the first update whose fall from the peak (the first
/// update's equity) reaches 15 %.
fn expected_stop() -> i64 {
    let peak = dec!(100000);
    updates()
        .iter()
        .find_map(|e| match e.payload() {
            Payload::TradePnlUpdate(p) if (peak - p.equity) / peak >= dec!(0.15) => {
                Some(p.timestamp_ms)
            }
            _ => None,
        })
        .unwrap()
}

fn restarted_agent_stops_where_an_uninterrupted_one_does(
    store: impl RiskStateStore + Clone + 'static,
) {
    let input = updates();
    let mut whole = RiskAgent::new(AgentId::new("risk"), config(), true);
    assert_eq!(stops(&mut whole, &input), vec![expected_stop()]);

    // Killed at a loss of 10,000, restarted from its store.
    let mut first = RiskAgent::new(AgentId::new("risk"), config(), true)
        .with_state_store(Box::new(store.clone()))
        .unwrap();
    assert!(stops(&mut first, &input[..11]).is_empty());
    drop(first);
    let mut again = RiskAgent::new(AgentId::new("risk"), config(), true)
        .with_state_store(Box::new(store.clone()))
        .unwrap();
    assert_eq!(stops(&mut again, &input[11..20]), vec![expected_stop()]);

    // Restarted once more after the stop: still halted (it says so again
    // at start, and never fires a second stop), orders refused.
    drop(again);
    let mut halted = RiskAgent::new(AgentId::new("risk"), config(), true)
        .with_state_store(Box::new(store))
        .unwrap();
    let mut out = Outbox::new();
    halted.on_start(&mut out).unwrap();
    let announced: Vec<MessageType> = out.drain().map(|e| e.message_type()).collect();
    assert_eq!(announced, vec![MessageType::RiskEmergencyStop]);
    assert!(stops(&mut halted, &input[20..]).is_empty());
    assert_eq!(halted.emergency_stop_at(), Some(expected_stop()));

    // Without a store, a restart takes its first update for the peak and
    // stops far later: what this guards against.
    let mut forgetful = RiskAgent::new(AgentId::new("risk"), config(), true);
    let late = stops(&mut forgetful, &input[11..]);
    assert!(late.iter().all(|&t| t > expected_stop()), "{late:?}");
}

#[test]
fn state_shared_in_process_survives_a_rebuild() {
    restarted_agent_stops_where_an_uninterrupted_one_does(SharedState::default());
}

#[derive(Clone)]
struct FileAt(std::path::PathBuf);

impl RiskStateStore for FileAt {
    fn load(&mut self) -> Result<Option<agent_risk::RiskSnapshot>, agent_risk::state::StateError> {
        StateFile::new(&self.0).load()
    }
    fn save(
        &mut self,
        snapshot: &agent_risk::RiskSnapshot,
    ) -> Result<(), agent_risk::state::StateError> {
        StateFile::new(&self.0).save(snapshot)
    }
}

#[test]
fn state_in_a_file_survives_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    restarted_agent_stops_where_an_uninterrupted_one_does(FileAt(dir.path().join("risk.json")));
}

#[test]
fn limits_changed_at_run_time_survive_too() {
    let store = SharedState::default();
    let mut first = RiskAgent::new(AgentId::new("risk"), config(), true)
        .with_state_store(Box::new(store.clone()))
        .unwrap();
    let mut f = MessageFactory::new(AgentId::new("ops"), true);
    let update = f.make(
        Topic::new("system.config_update").unwrap(),
        Payload::SystemConfigUpdate(
            ConfigUpdate::new(ConfigUpdateFields {
                key: "risk.max_drawdown".into(),
                value: "0.05".into(),
            })
            .unwrap(),
        ),
        0,
    );
    first.on_message(&update, &mut Outbox::new()).unwrap();
    drop(first);
    let mut again = RiskAgent::new(AgentId::new("risk"), config(), true)
        .with_state_store(Box::new(store))
        .unwrap();
    let input = updates();
    assert_eq!(stops(&mut again, &input), vec![DAY + 5 * 60_000]);
}

#[test]
fn a_file_that_is_not_a_risk_snapshot_is_neither_used_nor_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("risk-state.json");
    std::fs::write(&path, "my notes").unwrap();
    let error = RiskAgent::new(AgentId::new("risk"), config(), true)
        .with_state_store(Box::new(StateFile::new(&path)))
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("not a Bistoury risk snapshot"),
        "{error}"
    );
    assert!(StateFile::discard(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "my notes");
}

/// An order request for 1 BTC at 100 placed at market time `t`.
fn order_at(f: &mut MessageFactory, t: i64) -> Envelope {
    common::buy_btc(f, &format!("o-{t}"), dec!(1), t)
}

/// Whether the agent approved the order it answered in `out`.
fn approved(out: &mut Outbox) -> bool {
    out.drain()
        .any(|e| e.message_type() == MessageType::ResponseSuccess)
}

#[test]
fn the_daily_loss_limit_pauses_trading_until_the_next_utc_day() {
    let limits = RiskConfig {
        max_drawdown: None,
        max_daily_loss: Some(dec!(15000)),
        ..config()
    };
    let store = SharedState::default();
    let mut risk = RiskAgent::new(AgentId::new("risk"), limits.clone(), true)
        .with_state_store(Box::new(store.clone()))
        .unwrap();
    let mut f = MessageFactory::new(AgentId::new("trader"), true);
    let mut out = Outbox::new();
    // Losing 1,000 a minute from midnight: the limit is reached at 00:15.
    for i in 0..20 {
        let update = pnl(
            &mut f,
            dec!(100000) - Decimal::from(1000 * i),
            DAY + i * 60_000,
        );
        risk.on_message(&update, &mut out).unwrap();
    }
    let sent: Vec<Envelope> = out.drain().collect();
    let breach = sent
        .iter()
        .find(|e| e.message_type() == MessageType::RiskLimitBreach)
        .expect("the breach is announced");
    assert_eq!(breach.created_at_ms, DAY + 15 * 60_000);
    assert!(
        sent.iter()
            .all(|e| e.message_type() != MessageType::RiskEmergencyStop),
        "a daily loss pauses, it does not stop for good"
    );
    assert_eq!(risk.counters().daily_pauses, 1);
    risk.on_message(&order_at(&mut f, DAY + 3_600_000), &mut out)
        .unwrap();
    assert!(!approved(&mut out), "refused for the rest of the day");

    // A restart within the day is still paused.
    drop(risk);
    let mut risk = RiskAgent::new(AgentId::new("risk"), limits, true)
        .with_state_store(Box::new(store))
        .unwrap();
    risk.on_message(&order_at(&mut f, DAY + 86_399_999), &mut out)
        .unwrap();
    assert!(!approved(&mut out), "the last millisecond of the day");
    risk.on_message(&order_at(&mut f, DAY + 86_400_000), &mut out)
        .unwrap();
    assert!(approved(&mut out), "the next UTC day trades again");
    // The new day has its own limit: another 15,000 lost pauses it again.
    for i in 0..20 {
        let update = pnl(
            &mut f,
            dec!(85000) - Decimal::from(1000 * i),
            DAY + 86_400_000 + i * 60_000,
        );
        risk.on_message(&update, &mut out).unwrap();
    }
    assert_eq!(
        risk.counters().daily_pauses,
        1,
        "this agent's first (counters are not saved)"
    );
    risk.on_message(&order_at(&mut f, DAY + 86_400_000 + 3_600_000), &mut out)
        .unwrap();
    assert!(!approved(&mut out), "paused again on the second day");
}
