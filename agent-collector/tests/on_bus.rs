//! The collector alone on a bus: candles come out, commands are obeyed.

use agent_collector::{CollectorAgent, SymbolSpec, SyntheticMarket, SyntheticSpec};
use bus_core::model::payload::{Command, Symbol};
use bus_core::prelude::*;
use bus_core::runtime::script::run_script;

#[test]
fn publishes_every_candle_on_the_bus_and_obeys_stop_collection() {
    let spec = SyntheticSpec {
        symbols: vec![
            SymbolSpec {
                symbol: Symbol::new("BTC").unwrap(),
                start_price: 100.0,
            },
            SymbolSpec {
                symbol: Symbol::new("ETH").unwrap(),
                start_price: 10.0,
            },
        ],
        candles: 50,
        interval_ms: 60_000,
        interval: "5m".into(),
        start_time_ms: 0,
        seed: 3,
        volatility: 0.01,
        regime_change_probability: 0.05,
    };
    let collector = CollectorAgent::new(
        AgentId::new("collector"),
        Box::new(SyntheticMarket::new(spec.clone()).unwrap()),
        true,
    );
    let seen = run_script(Box::new(collector), vec![], &["data.candle.*.5m"]).unwrap();
    assert_eq!(seen.len(), 100);
    assert!(seen
        .iter()
        .all(|e| e.message_type() == MessageType::DataCandle));

    // Stop ETH from the first step on: only BTC candles flow.
    let stop = MessageFactory::new(AgentId::new("operator"), true).make(
        Topic::new("command.stop_collection").unwrap(),
        Payload::CommandStopCollection(Command {
            symbols: vec![Symbol::new("ETH").unwrap()],
            reason: "test".into(),
        }),
        0,
    );
    let collector = CollectorAgent::new(
        AgentId::new("collector"),
        Box::new(SyntheticMarket::new(spec).unwrap()),
        true,
    );
    let seen = run_script(Box::new(collector), vec![stop], &["data.candle"]).unwrap();
    let eth = seen
        .iter()
        .filter(|e| e.topic.as_str().contains("ETH"))
        .count();
    assert!(
        eth <= 1,
        "at most the step before the command was seen: {eth}"
    );
    assert!(seen.len() >= 50);
}
