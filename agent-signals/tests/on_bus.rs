//! The signal agent alone on a bus with scripted candles.

use agent_signals::config::{MaCrossoverConfig, RsiConfig};
use agent_signals::{SignalAgent, SignalsConfig};
use bus_core::model::payload::{Candle, CandleFields, SignalDirection, Symbol};
use bus_core::prelude::*;
use bus_core::runtime::script::run_script;
use rust_decimal::Decimal;

fn candles(closes: &[i64]) -> Vec<Envelope> {
    candles_of("BTC", closes)
}

fn candles_of(symbol: &str, closes: &[i64]) -> Vec<Envelope> {
    let mut f = MessageFactory::new(AgentId::new("collector"), true);
    closes
        .iter()
        .enumerate()
        .map(|(i, close)| {
            let c = Candle::new(CandleFields {
                symbol: Symbol::new(symbol).unwrap(),
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
                Topic::new(format!("data.candle.{symbol}.1m")).unwrap(),
                Payload::DataCandle(c),
                i as i64 * 60_000,
            )
        })
        .collect()
}

fn config() -> SignalsConfig {
    SignalsConfig {
        threshold: 0.5,
        publish_details: true,
        max_symbols: 1000,
        ma_crossover: Some(MaCrossoverConfig {
            enabled: true,
            fast: 3,
            slow: 8,
            weight: 1.0,
        }),
        rsi: Some(RsiConfig {
            enabled: true,
            period: 5,
            oversold: 30.0,
            overbought: 70.0,
            weight: 1.0,
        }),
        macd: None,
        bollinger: None,
        candlestick: None,
        custom: Default::default(),
        llm: None,
    }
}

#[test]
fn a_falling_then_rising_market_gives_a_long_then_a_short_aggregate() {
    let config = config();
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

fn closes() -> Vec<i64> {
    let mut closes: Vec<i64> = (0..20).map(|i| 200 - 3 * i).collect();
    closes.extend((0..20).map(|i| 140 + 4 * i));
    closes
}

/// What the agent says, as (type, topic, payload) triples.
fn said(agent: SignalAgent, input: Vec<Envelope>) -> Vec<String> {
    run_script(Box::new(agent), input, &["signal"])
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {:?}", e.message_type(), e.topic, e.payload()))
        .collect()
}

#[test]
fn a_repeated_or_late_candle_changes_nothing() {
    let once = candles(&closes());
    // Every candle delivered twice, and an old one again at the end (an
    // at-least-once redelivery after a server restart).
    let mut twice: Vec<Envelope> = once.iter().flat_map(|c| [c.clone(), c.clone()]).collect();
    twice.push(once[3].clone());
    let expected = said(
        SignalAgent::new(AgentId::new("signals"), config(), true),
        once,
    );
    assert!(expected.iter().any(|s| s.contains("signal.aggregated")));
    let agent = SignalAgent::new(AgentId::new("signals"), config(), true);
    assert_eq!(said(agent, twice), expected);
}

#[test]
fn symbols_beyond_max_symbols_are_refused() {
    let mut config = config();
    config.max_symbols = 2;
    let mut input = Vec::new();
    let symbols = ["AAA", "BBB", "CCC", "DDD"];
    let per_symbol: Vec<Vec<Envelope>> = symbols.iter().map(|s| candles_of(s, &closes())).collect();
    for step in 0..closes().len() {
        for candles in &per_symbol {
            input.push(candles[step].clone());
        }
    }
    let seen = said(
        SignalAgent::new(AgentId::new("signals"), config, true),
        input,
    );
    for symbol in ["AAA", "BBB"] {
        assert!(
            seen.iter().any(|s| s.contains(&format!(".{symbol} "))),
            "{symbol}"
        );
    }
    for symbol in ["CCC", "DDD"] {
        assert!(
            !seen.iter().any(|s| s.contains(&format!(".{symbol} "))),
            "{symbol}"
        );
    }
}
