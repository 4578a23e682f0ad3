//! The signal agent alone on a bus with scripted candles.

use agent_signals::config::{MaCrossoverConfig, RsiConfig};
use agent_signals::{SignalAgent, SignalsConfig};
use bus_core::message::payload::{Candle, CandleFields, SignalDirection, Symbol};
use bus_core::prelude::*;
use bus_core::script::run_script;
use rust_decimal::Decimal;

fn candles(closes: &[i64]) -> Vec<Envelope> {
    let mut f = MessageFactory::new(AgentId::new("collector"), true);
    closes
        .iter()
        .enumerate()
        .map(|(i, close)| {
            let c = Candle::new(CandleFields {
                symbol: Symbol::new("BTC").unwrap(),
                interval: "1m".into(),
                open_time_ms: i as i64 * 60_000,
                open: Decimal::new(*close, 0),
                high: Decimal::new(*close + 1, 0),
                low: Decimal::new(*close - 1, 0),
                close: Decimal::new(*close, 0),
                volume: Decimal::ONE,
            })
            .unwrap();
            f.make(
                Topic::new("data.candle.BTC.1m").unwrap(),
                Payload::DataCandle(c),
                i as i64 * 60_000,
            )
        })
        .collect()
}

#[test]
fn a_falling_then_rising_market_gives_a_long_then_a_short_aggregate() {
    let config = SignalsConfig {
        threshold: 0.5,
        publish_details: true,
        ma_crossover: Some(MaCrossoverConfig {
            fast: 3,
            slow: 8,
            weight: 1.0,
        }),
        rsi: Some(RsiConfig {
            period: 5,
            oversold: 30.0,
            overbought: 70.0,
            weight: 1.0,
        }),
        macd: None,
        bollinger: None,
        candlestick: None,
    };
    let mut closes: Vec<i64> = (0..20).map(|i| 200 - 3 * i).collect();
    closes.extend((0..20).map(|i| 140 + 4 * i));
    closes.extend((0..20).map(|i| 220 - 5 * i));
    let agent = SignalAgent::new(AgentId::new("signals"), config, true);
    let seen = run_script(Box::new(agent), candles(&closes), &["signal"]).unwrap();
    let aggregated: Vec<SignalDirection> = seen
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::SignalAggregated(a) => Some(a.direction),
            _ => None,
        })
        .collect();
    assert!(
        aggregated.contains(&SignalDirection::Long),
        "{aggregated:?}"
    );
    assert!(
        aggregated.contains(&SignalDirection::Short),
        "{aggregated:?}"
    );
    let first_long = aggregated
        .iter()
        .position(|d| *d == SignalDirection::Long)
        .unwrap();
    let last_short = aggregated
        .iter()
        .rposition(|d| *d == SignalDirection::Short)
        .unwrap();
    assert!(first_long < last_short);
    let completes = seen
        .iter()
        .filter(|e| e.message_type() == MessageType::SignalAnalysisComplete)
        .count();
    assert_eq!(completes, closes.len());
}
