//! The `llm` strategy in the signal agent, against a local stub of the
//! chat-completions API: its answer is weighed like any strategy's signal
//! (checked against the aggregation formula computed here), it is asked
//! exactly on the bars its triggers name, and its rationale rides the
//! aggregated signal.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use agent_signals::config::{CustomStrategyConfig, LlmConfig, SignalsConfig};
use agent_signals::llm::advisor::ModelAdvisor;
use agent_signals::llm::cache::{AnswerCache, CacheMode};
use agent_signals::{Bar, SignalAgent, Strategy, StrategyRegistry, StrategySignal};
use bus_core::model::payload::{Candle, CandleFields, SignalDirection};
use bus_core::prelude::*;
use common::{stub, Reply};
use rust_decimal::Decimal;

/// Says `direction` with `confidence` on the bars `when` picks (by index).
struct Scripted {
    name: &'static str,
    direction: SignalDirection,
    confidence: f64,
    when: fn(u64) -> bool,
    bar: u64,
}

impl Strategy for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    fn on_bar(&mut self, _bar: &Bar) -> Option<StrategySignal> {
        let bar = self.bar;
        self.bar += 1;
        (self.when)(bar).then_some(StrategySignal {
            direction: self.direction,
            confidence: self.confidence,
            reason: "scripted",
        })
    }
}

fn registry() -> StrategyRegistry {
    StrategyRegistry::new()
        .register("up", |_| {
            Ok(Box::new(Scripted {
                name: "up",
                direction: SignalDirection::Long,
                confidence: 0.4,
                when: |_| true,
                bar: 0,
            }))
        })
        .register("down", |_| {
            Ok(Box::new(Scripted {
                name: "down",
                direction: SignalDirection::Short,
                confidence: 0.4,
                when: |bar| bar % 4 == 3,
                bar: 0,
            }))
        })
}

fn llm(weight: f64, every: u32, on_disagreement: bool, history: usize) -> LlmConfig {
    LlmConfig {
        enabled: true,
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "stub-model".into(),
        api_key_env: None,
        api_key_file: None,
        timeout_ms: 2_000,
        min_interval_ms: 0,
        max_calls: 1_000,
        max_tokens: 10_000_000,
        retries: 0,
        ask_every_bars: every,
        ask_on_disagreement: on_disagreement,
        history_bars: history,
        weight,
        cache: None,
        cache_mode: CacheMode::Live,
    }
}

/// A signal agent running `strategies` (name, weight) and the model at
/// `url` as `llm` says.
fn signal_agent(strategies: &[(&str, f64)], llm: LlmConfig, url: &str) -> SignalAgent {
    let custom = strategies
        .iter()
        .map(|(name, weight)| {
            let config = CustomStrategyConfig {
                enabled: true,
                weight: *weight,
                params: BTreeMap::new(),
            };
            (name.to_string(), config)
        })
        .collect();
    let config = SignalsConfig {
        threshold: 0.3,
        publish_details: true,
        max_symbols: 10,
        ma_crossover: None,
        rsi: None,
        macd: None,
        bollinger: None,
        candlestick: None,
        custom,
        llm: Some(llm.clone()),
    };
    assert!(config.validate("signals").is_empty());
    let settings = LlmConfig {
        base_url: url.into(),
        ..llm.clone()
    }
    .client_settings(None);
    let consulting = llm.consulting(60_000);
    let cache = AnswerCache::open(Path::new("unused"), CacheMode::Live).unwrap();
    let advisor = ModelAdvisor::new(settings, cache, consulting).unwrap();
    SignalAgent::with_strategies(AgentId::new("signals"), config, true, registry())
        .unwrap()
        .with_model(advisor.shared())
}

fn candle(n: i64) -> Envelope {
    let price = Decimal::new(100 + n, 0);
    let c = Candle::new(CandleFields {
        symbol: Symbol::new("BTC").unwrap(),
        interval: "1m".into(),
        open_time_ms: n * 60_000,
        open: price,
        high: price,
        low: price,
        close: price,
        volume: Decimal::ONE,
    })
    .unwrap();
    MessageFactory::new(AgentId::new("collector"), true).make(
        Topic::new("data.candle.BTC.1m").unwrap(),
        Payload::DataCandle(c),
        n,
    )
}

/// Feeds `bars` candles; returns everything published.
fn feed(agent: &mut SignalAgent, bars: i64) -> Vec<Envelope> {
    let mut out = Outbox::new();
    for n in 0..bars {
        agent.on_message(&candle(n), &mut out).unwrap();
    }
    out.drain().collect()
}

#[test]
fn the_model_is_weighed_like_any_strategy_and_its_rationale_rides_the_signal() {
    let short = r#"{"direction":"short","confidence":0.8,"rationale":"momentum fading"}"#;
    let (url, seen) = stub((0..3).map(|_| Reply::Answer(short)).collect());
    let mut agent = signal_agent(&[("up", 1.0)], llm(3.0, 1, false, 1), &url);
    let published = feed(&mut agent, 3);
    assert_eq!(seen.lock().unwrap().len(), 3, "asked on every bar");
    let aggregated: Vec<_> = (published.iter())
        .filter_map(|m| match m.payload() {
            Payload::SignalAggregated(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(aggregated.len(), 3);
    // score = sum(w * c * sign) / sum(w): "up" long 0.4 at weight 1, the
    // model short 0.8 at weight 3.
    let score: f64 = (1.0 * 0.4 - 3.0 * 0.8) / (1.0 + 3.0);
    for a in &aggregated {
        assert_eq!(a.direction, SignalDirection::Short);
        assert!((a.confidence - score.abs()).abs() < 1e-12, "{a:?}");
        let model = (a.contributions.iter())
            .find(|c| c.strategy == "llm")
            .expect("the model contributes");
        assert_eq!(
            (model.direction, model.confidence, model.weight),
            (SignalDirection::Short, 0.8, 3.0)
        );
        assert_eq!(a.rationale.as_deref(), Some("short 0.80, momentum fading"));
    }
    // Its own signal.generated carries its words.
    let said: Vec<_> = (published.iter())
        .filter_map(|m| match m.payload() {
            Payload::SignalGenerated(s) if s.strategy == "llm" => Some(s.reason.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(said, vec!["short 0.80, momentum fading"; 3]);
    // Weight 0: heard, and counts for nothing.
    let (url, _) = stub((0..3).map(|_| Reply::Answer(short)).collect());
    let mut muted = signal_agent(&[("up", 1.0)], llm(0.0, 1, false, 1), &url);
    for m in feed(&mut muted, 3) {
        if let Payload::SignalAggregated(a) = m.payload() {
            assert_eq!(a.direction, SignalDirection::Long);
            assert!((a.confidence - 0.4).abs() < 1e-12);
        }
    }
}

#[test]
fn the_model_is_asked_on_disagreement_and_every_n_bars_once_it_has_its_history() {
    let flat = r#"{"direction":"flat","confidence":0,"rationale":"no view"}"#;
    // "down" speaks on bars 3, 7, 11...: against "up", a disagreement.
    let (url, seen) = stub((0..100).map(|_| Reply::Answer(flat)).collect());
    let mut agent = signal_agent(&[("up", 1.0), ("down", 1.0)], llm(1.0, 0, true, 5), &url);
    feed(&mut agent, 24);
    let closing = |seen: &common::Seen| -> Vec<i64> {
        (seen.lock().unwrap().iter())
            .map(|(_, body)| {
                let body: serde_json::Value = serde_json::from_str(body).unwrap();
                let text = body["messages"][1]["content"].as_str().unwrap().to_string();
                let last = text
                    .lines()
                    .skip(2)
                    .take_while(|l| !l.starts_with("indicators"));
                // The last candle's close is 100 + its bar index.
                let close: f64 = last
                    .last()
                    .unwrap()
                    .split(' ')
                    .nth(3)
                    .unwrap()
                    .parse()
                    .unwrap();
                close as i64 - 100
            })
            .collect()
    };
    // History of 5 bars: bar 3 is too early.
    assert_eq!(closing(&seen), vec![7, 11, 15, 19, 23]);
    let (url, seen) = stub((0..100).map(|_| Reply::Answer(flat)).collect());
    let mut agent = signal_agent(&[("up", 1.0), ("down", 1.0)], llm(1.0, 5, false, 3), &url);
    feed(&mut agent, 24);
    assert_eq!(closing(&seen), vec![4, 9, 14, 19]);
    let (url, seen) = stub((0..100).map(|_| Reply::Answer(flat)).collect());
    let mut agent = signal_agent(&[("up", 1.0), ("down", 1.0)], llm(1.0, 3, true, 3), &url);
    feed(&mut agent, 24);
    // Every 3 bars counted from the last question, and on disagreements.
    assert_eq!(
        closing(&seen),
        vec![2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23]
    );
}
