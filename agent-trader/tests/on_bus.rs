//! The trader alone on a bus, with a stand-in risk manager that approves
//! everything: signals become orders, approvals become fills at the next
//! open, and an emergency stop halts new orders.

use agent_trader::{TraderAgent, TraderConfig};
use bus_core::model::payload::*;
use bus_core::prelude::*;
use bus_core::runtime::script::run_script_with;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

struct ApproveAll(AgentId, MessageFactory);

impl Agent for ApproveAll {
    fn id(&self) -> &AgentId {
        &self.0
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("trade.order_request").unwrap()]
    }
    fn on_message(&mut self, e: &Envelope, out: &mut Outbox) -> HandlerResult {
        out.publish(self.1.reply(
            e,
            Payload::ResponseSuccess(Success {
                detail: "ok".into(),
            }),
            e.created_at_ms,
        ));
        Ok(())
    }
}

fn candle(f: &mut MessageFactory, t: i64, price: i64) -> Envelope {
    let p = Decimal::new(price, 0);
    let c = Candle::new(CandleFields {
        symbol: Symbol::new("BTC").unwrap(),
        interval: "1m".into(),
        open_time_ms: t,
        open: p,
        high: p + dec!(1),
        low: p - dec!(1),
        close: p,
        volume: dec!(1),
    })
    .unwrap();
    f.make(
        Topic::new("data.candle.BTC.1m").unwrap(),
        Payload::DataCandle(c),
        t,
    )
}

fn signal(f: &mut MessageFactory, t: i64, direction: SignalDirection, price: i64) -> Envelope {
    let s = AggregatedSignal::new(AggregatedSignalFields {
        symbol: Symbol::new("BTC").unwrap(),
        direction,
        confidence: 0.9,
        price: Decimal::new(price, 0),
        timestamp_ms: t,
        contributions: vec![],
        rationale: None,
    })
    .unwrap();
    f.make(
        Topic::new("signal.aggregated.BTC").unwrap(),
        Payload::SignalAggregated(s),
        t,
    )
}

/// Long-only, half the equity per position, no slippage, no stops.
fn config(fee_rate: Decimal) -> TraderConfig {
    TraderConfig {
        initial_cash: dec!(10000),
        fee_rate,
        slippage: dec!(0),
        position_fraction: dec!(0.5),
        quantity_scale: 4,
        allow_short: false,
        min_confidence: 0.0,
        stop_loss: None,
        take_profit: None,
        close_on_emergency_stop: false,
        close_at_end: false,
        max_leverage: Decimal::ONE,
    }
}

/// Runs a trader (and a risk stand-in approving everything) on `script`;
/// returns what they said on `trade.*`.
fn trade(config: TraderConfig, script: Vec<Envelope>) -> Vec<Envelope> {
    let trader = TraderAgent::new(AgentId::new("trader"), config, None, true).unwrap();
    let risk = ApproveAll(
        AgentId::new("risk"),
        MessageFactory::new(AgentId::new("risk"), true),
    );
    run_script_with(vec![Box::new(risk), Box::new(trader)], script, &["trade"]).unwrap()
}

#[test]
fn signals_to_fills_through_the_bus_and_emergency_stop_halts() {
    let config = config(dec!(0.001));
    let mut f = MessageFactory::new(AgentId::new("script"), true);
    let stop = f.make_critical(
        Topic::new("risk.emergency_stop").unwrap(),
        Payload::RiskEmergencyStop(EmergencyStop {
            reason: "test".into(),
            triggered_by: "test".into(),
        }),
        4,
    );
    let script = vec![
        candle(&mut f, 0, 100),
        signal(&mut f, 0, SignalDirection::Long, 100),
        candle(&mut f, 1, 110),
        signal(&mut f, 1, SignalDirection::Short, 110),
        candle(&mut f, 2, 120),
        stop,
        signal(&mut f, 5, SignalDirection::Long, 120),
        candle(&mut f, 6, 130),
    ];
    let seen = trade(config, script);
    let fills: Vec<(Side, Decimal, Decimal)> = seen
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::TradeOrderFilled(f) => Some((f.side, f.quantity, f.price)),
            _ => None,
        })
        .collect();
    // Long 50 at the next open (110), flat again at the open after the short signal (120).
    assert_eq!(
        fills,
        vec![
            (Side::Buy, dec!(50), dec!(110)),
            (Side::Sell, dec!(50), dec!(120))
        ]
    );
    let requests = seen
        .iter()
        .filter(|e| e.message_type() == MessageType::TradeOrderRequest)
        .count();
    assert_eq!(requests, 2, "no order after the emergency stop");
    let pnl = seen.iter().rev().find_map(|e| match e.payload() {
        Payload::TradePnlUpdate(p) => Some(p.clone()),
        _ => None,
    });
    let pnl = pnl.expect("pnl published");
    assert_eq!(pnl.realised_pnl, dec!(500));
    assert_eq!(pnl.equity, dec!(10000) + dec!(500) - pnl.fees);
}

/// A signal and its approval may reach the trader before the candle of the
/// bar that made the signal (on a queued bus they are more urgent than
/// candles): the order still fills at the next bar's open, never at the
/// open of its own bar.
#[test]
fn an_order_never_fills_at_the_open_of_its_own_signal_bar() {
    let config = config(dec!(0));
    let mut f = MessageFactory::new(AgentId::new("script"), true);
    // Bar 60's close (100) makes a long signal; it arrives before bar 60's
    // candle (open 95). Bar 120 opens at 110.
    let script = vec![
        candle(&mut f, 0, 90),
        signal(&mut f, 60, SignalDirection::Long, 100),
        candle(&mut f, 60, 95),
        candle(&mut f, 120, 110),
    ];
    let seen = trade(config, script);
    let fills: Vec<(i64, Decimal)> = seen
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::TradeOrderFilled(f) => Some((f.timestamp_ms, f.price)),
            _ => None,
        })
        .collect();
    assert_eq!(fills, vec![(120, dec!(110))]);
}

fn command(f: &mut MessageFactory, t: i64, pause: bool) -> Envelope {
    let command = Command {
        symbols: vec![],
        reason: "operator".into(),
    };
    let (topic, payload) = match pause {
        true => (
            "command.pause_trading",
            Payload::CommandPauseTrading(command),
        ),
        false => (
            "command.resume_trading",
            Payload::CommandResumeTrading(command),
        ),
    };
    f.make(Topic::new(topic).unwrap(), payload, t)
}

/// Paused, the trader ignores signals (and its supervisor announces
/// `agent.paused`); resumed, it acts on the next one (`agent.resumed`).
#[test]
fn pause_and_resume_commands_stop_and_restart_new_orders() {
    let mut f = MessageFactory::new(AgentId::new("script"), true);
    let script = vec![
        candle(&mut f, 0, 100),
        command(&mut f, 0, true),
        signal(&mut f, 0, SignalDirection::Long, 100),
        candle(&mut f, 60, 101),
        command(&mut f, 60, false),
        signal(&mut f, 60, SignalDirection::Long, 101),
        candle(&mut f, 120, 102),
    ];
    let trader = TraderAgent::new(AgentId::new("trader"), config(dec!(0)), None, true).unwrap();
    let risk = ApproveAll(
        AgentId::new("risk"),
        MessageFactory::new(AgentId::new("risk"), true),
    );
    let seen = run_script_with(
        vec![Box::new(risk), Box::new(trader)],
        script,
        &["trade", "agent"],
    )
    .unwrap();
    let events: Vec<String> = seen
        .iter()
        .filter(|e| e.sender.as_str() == "trader")
        .filter_map(|e| match e.payload() {
            Payload::TradeOrderRequest(_) => Some(format!("request at {}", e.created_at_ms)),
            Payload::TradeOrderFilled(fill) => Some(format!("fill at {}", fill.timestamp_ms)),
            Payload::AgentPaused(_) => Some("paused".into()),
            Payload::AgentResumed(_) => Some("resumed".into()),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec!["paused", "resumed", "request at 60", "fill at 120"],
        "the signal while paused makes no order"
    );
}

/// A long position closes when a bar reaches the take-profit level: at the
/// level, or at the open when the bar opens beyond it.
#[test]
fn take_profit_closes_at_its_level() {
    let config = TraderConfig {
        take_profit: Some(dec!(0.05)),
        ..config(dec!(0))
    };
    let mut f = MessageFactory::new(AgentId::new("script"), true);
    let bar = |f: &mut MessageFactory, t: i64, open: i64, high: i64| {
        let c = Candle::new(CandleFields {
            symbol: Symbol::new("BTC").unwrap(),
            interval: "1m".into(),
            open_time_ms: t,
            open: Decimal::new(open, 0),
            high: Decimal::new(high, 0),
            low: Decimal::new(open - 1, 0),
            close: Decimal::new(open, 0),
            volume: dec!(1),
        })
        .unwrap();
        f.make(
            Topic::new("data.candle.BTC.1m").unwrap(),
            Payload::DataCandle(c),
            t,
        )
    };
    let script = vec![
        bar(&mut f, 0, 100, 101),
        signal(&mut f, 0, SignalDirection::Long, 100),
        bar(&mut f, 60, 100, 104),  // fills at 100; 104 is short of 105
        bar(&mut f, 120, 103, 106), // reaches 105: sold at 105
        signal(&mut f, 120, SignalDirection::Long, 103),
        bar(&mut f, 180, 100, 101), // the new entry at 100
        bar(&mut f, 240, 108, 109), // opens beyond 105: sold at the open
    ];
    let seen = trade(config, script);
    let fills: Vec<(Side, i64, Decimal)> = seen
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::TradeOrderFilled(f) => Some((f.side, f.timestamp_ms, f.price)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fills,
        vec![
            (Side::Buy, 60, dec!(100)),
            (Side::Sell, 120, dec!(105)),
            (Side::Buy, 180, dec!(100)),
            (Side::Sell, 240, dec!(108)),
        ]
    );
}

/// Sized at the signal's close (100) with all the equity, the buy fills at
/// a higher open (110): without leverage it is cut to what cash pays;
/// with `max_leverage = 2` it borrows, up to twice the equity.
#[test]
fn a_buy_is_cut_to_the_cash_unless_leverage_is_allowed() {
    let fill_of = |max_leverage: Decimal| {
        let config = TraderConfig {
            position_fraction: dec!(1),
            max_leverage,
            ..config(dec!(0))
        };
        let mut f = MessageFactory::new(AgentId::new("script"), true);
        let script = vec![
            candle(&mut f, 0, 100),
            signal(&mut f, 0, SignalDirection::Long, 100),
            candle(&mut f, 60, 110),
        ];
        trade(config, script)
            .iter()
            .find_map(|e| match e.payload() {
                Payload::TradeOrderFilled(f) => Some((f.quantity, f.price)),
                _ => None,
            })
            .expect("a fill")
    };
    assert_eq!(fill_of(dec!(1)), (dec!(90.9090), dec!(110)));
    assert_eq!(fill_of(dec!(2)), (dec!(100), dec!(110)));
}
