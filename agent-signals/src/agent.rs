//! The signal agent: runs every configured strategy on each symbol's
//! candles and publishes `signal.generated.<SYM>`, `signal.aggregated.<SYM>`
//! and `signal.analysis_complete.<SYM>`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bus_core::model::payload::{
    AggregatedSignal, AggregatedSignalFields, AnalysisComplete, Candle, Signal, SignalFields,
};
use bus_core::model::{CandleAdmission, CandleSequence, SymbolMap};
use bus_core::prelude::*;

use crate::aggregator::{Aggregator, Weighted};
use crate::config::{SignalsConfig, StrategyConfig};
use crate::llm::advisor::{MarketMemory, SharedAdvisor, NAME as MODEL};
use crate::registry::StrategyRegistry;
use crate::strategies::*;
use crate::strategy::{Bar, Strategy, StrategySignal};

struct SymbolState {
    /// Each strategy with its weight in the aggregate.
    strategies: Vec<(Box<dyn Strategy>, f64)>,
    /// What the model is shown of this market (when it is asked).
    memory: Option<MarketMemory>,
    generated: Topic,
    aggregated: Topic,
    complete: Topic,
}

/// The signal agent.
pub struct SignalAgent {
    id: AgentId,
    config: SignalsConfig,
    aggregator: Aggregator,
    factory: MessageFactory,
    symbols: SymbolMap<SymbolState>,
    /// Which candles are news (repeats and symbols beyond the limit are not).
    sequence: CandleSequence,
    aggregated: u64,
    /// What the strategies said on the current bar (kept to reuse its room).
    spoken: Vec<Weighted>,
    /// Where `[signals.custom.*]` strategies come from.
    registry: StrategyRegistry,
    /// The run's model, when `[signals.llm]` is on.
    model: Option<SharedAdvisor>,
}

fn build(config: &StrategyConfig, registry: &StrategyRegistry) -> Box<dyn Strategy> {
    match config {
        StrategyConfig::MaCrossover(c) => Box::new(MovingAverageCrossover::new(c.fast, c.slow)),
        StrategyConfig::Rsi(c) => Box::new(RsiReversal::new(c.period, c.oversold, c.overbought)),
        StrategyConfig::Macd(c) => Box::new(MacdCrossover::new(c.fast, c.slow, c.signal)),
        StrategyConfig::Bollinger(c) => Box::new(BollingerReversion::new(c.period, c.k)),
        StrategyConfig::Candlestick(_) => Box::new(CandlestickPatterns::new()),
        StrategyConfig::Custom(name, c) => registry
            .build(name, c)
            .expect("checked when the agent was made"),
    }
}

fn weight_of(config: &StrategyConfig) -> f64 {
    match config {
        StrategyConfig::MaCrossover(c) => c.weight,
        StrategyConfig::Rsi(c) => c.weight,
        StrategyConfig::Macd(c) => c.weight,
        StrategyConfig::Bollinger(c) => c.weight,
        StrategyConfig::Candlestick(c) => c.weight,
        StrategyConfig::Custom(_, c) => c.weight,
    }
}

impl SignalAgent {
    /// A signal agent running the strategies this crate ships; `config`
    /// should have passed `validate`.
    ///
    /// # Panics
    /// When `config` turns on `[signals.custom.*]` strategies: those need
    /// [`SignalAgent::with_strategies`].
    pub fn new(id: AgentId, config: SignalsConfig, deterministic: bool) -> Self {
        Self::with_strategies(id, config, deterministic, StrategyRegistry::new())
            .unwrap_or_else(|errors| panic!("{}", errors.join("; ")))
    }

    /// A signal agent that can also run the strategies in `registry`
    /// turned on by `[signals.custom.<name>]`; every problem with those
    /// (an unregistered name, parameters a factory refuses) otherwise.
    pub fn with_strategies(
        id: AgentId,
        config: SignalsConfig,
        deterministic: bool,
        registry: StrategyRegistry,
    ) -> Result<Self, Vec<String>> {
        let errors = registry.check(&config, "signals");
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut weights: BTreeMap<String, f64> = config
            .strategies()
            .iter()
            .map(|c| (build(c, &registry).name().to_string(), weight_of(c)))
            .collect();
        if let Some(model) = config.model() {
            weights.insert(MODEL.to_string(), model.weight);
        }
        Ok(Self {
            factory: MessageFactory::new(id.clone(), deterministic),
            aggregator: Aggregator::new(weights, config.threshold),
            sequence: CandleSequence::with_limit(config.max_symbols),
            id,
            config,
            symbols: SymbolMap::new(),
            aggregated: 0,
            spoken: Vec::new(),
            registry,
            model: None,
        })
    }

    /// Asks `advisor` for the `llm` strategy's view (`[signals.llm]`), one
    /// advisor per run: its budget is the run's, whatever the agents.
    pub fn with_model(mut self, advisor: SharedAdvisor) -> Self {
        self.model = Some(advisor);
        self
    }

    /// Aggregated signals published so far.
    pub fn aggregated(&self) -> u64 {
        self.aggregated
    }

    /// Candles passed by: (repeats or late, symbols beyond `max_symbols`).
    pub fn candles_passed_by(&self) -> (u64, u64) {
        (self.sequence.repeats(), self.sequence.over_limit())
    }

    fn on_candle(&mut self, candle: &Candle, out: &mut Outbox) -> HandlerResult {
        match self.sequence.admit(candle) {
            CandleAdmission::New => {}
            CandleAdmission::Repeat => return Ok(()),
            CandleAdmission::OverLimit => {
                let refused = self.sequence.over_limit();
                if refused.is_power_of_two() {
                    tracing::warn!(
                        agent = %self.id, symbol = %candle.symbol, refused,
                        max_symbols = self.config.max_symbols,
                        "candle of a symbol beyond signals.max_symbols refused"
                    );
                }
                return Ok(());
            }
        }
        let config = &self.config;
        let aggregator = &self.aggregator;
        let registry = &self.registry;
        let state = match self.symbols.get_mut(&candle.symbol) {
            Some(state) => state,
            None => {
                let topic = |kind: &str| Topic::new(format!("signal.{kind}.{}", candle.symbol));
                let state = SymbolState {
                    strategies: config
                        .strategies()
                        .iter()
                        .map(|c| {
                            let strategy = build(c, registry);
                            let weight = aggregator.weight(strategy.name());
                            (strategy, weight)
                        })
                        .collect(),
                    memory: (config.model()).map(|c| MarketMemory::new(c.history_bars)),
                    generated: topic("generated")?,
                    aggregated: topic("aggregated")?,
                    complete: topic("analysis_complete")?,
                };
                self.symbols.get_or_insert_with(&candle.symbol, || state)
            }
        };
        let bar = Bar::from_candle(candle);
        let time = candle.open_time_ms;
        let strategies = state.strategies.len() as u32;
        let signals = &mut self.spoken;
        signals.clear();
        for (strategy, weight) in state.strategies.iter_mut() {
            if let Some(signal) = strategy.on_bar(&bar) {
                signals.push(Weighted {
                    strategy: strategy.name(),
                    weight: *weight,
                    signal,
                });
            }
        }
        // The model, asked after the technical strategies: it is shown what
        // they said.
        let mut rationale = None;
        if let (Some(model), Some(memory)) = (&self.model, state.memory.as_mut()) {
            memory.update(&bar);
            let mut advisor = model.lock().unwrap_or_else(|p| p.into_inner());
            let answer = advisor.consult(
                candle.symbol.as_str(),
                &candle.interval,
                time,
                memory,
                signals,
            );
            if let Some(answer) = answer {
                signals.push(Weighted {
                    strategy: MODEL,
                    weight: self.aggregator.weight(MODEL),
                    signal: StrategySignal {
                        direction: answer.direction,
                        confidence: answer.confidence,
                        reason: "the model's view",
                    },
                });
                // The view beside its words: the aggregate may point the other way.
                rationale = Some(format!(
                    "{} {:.2}, {}",
                    crate::llm::prompt::direction_word(answer.direction),
                    answer.confidence,
                    answer.rationale
                ));
            }
        }
        if config.publish_details {
            for Weighted {
                strategy: name,
                signal,
                ..
            } in signals.iter()
            {
                let reason = match (*name, &rationale) {
                    (MODEL, Some(why)) => Cow::Owned(why.clone()),
                    _ => Cow::Borrowed(signal.reason),
                };
                let payload = Signal::new(SignalFields {
                    symbol: candle.symbol.clone(),
                    strategy: Cow::Borrowed(name),
                    direction: signal.direction,
                    confidence: signal.confidence,
                    price: candle.close,
                    timestamp_ms: time,
                    reason,
                })?;
                out.publish(self.factory.make(
                    state.generated.clone(),
                    Payload::SignalGenerated(payload),
                    time,
                ));
            }
        }
        if let Some(aggregate) = self.aggregator.combine(signals) {
            let payload = AggregatedSignal::new(AggregatedSignalFields {
                symbol: candle.symbol.clone(),
                direction: aggregate.direction,
                confidence: aggregate.confidence,
                price: candle.close,
                timestamp_ms: time,
                contributions: aggregate.contributions,
                rationale,
            })?;
            let message = self
                .factory
                .make(
                    state.aggregated.clone(),
                    Payload::SignalAggregated(payload),
                    time,
                )
                .with_priority(Priority::High);
            out.publish(message);
            self.aggregated += 1;
        }
        if config.publish_details {
            let complete = AnalysisComplete {
                symbol: candle.symbol.clone(),
                timestamp_ms: time,
                strategies,
                signals: signals.len() as u32,
            };
            out.publish(self.factory.make(
                state.complete.clone(),
                Payload::SignalAnalysisComplete(complete),
                time,
            ));
        }
        Ok(())
    }
}

impl Agent for SignalAgent {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["signals".into()]
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::from_static("data.candle")]
    }

    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        if let Payload::DataCandle(candle) = envelope.payload() {
            self.on_candle(candle, out)?;
        }
        Ok(())
    }

    /// Indicators are kept per symbol (`data.candle.<symbol>.<interval>`):
    /// instances split the symbols.
    fn partition_segment(&self) -> Option<usize> {
        Some(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaCrossoverConfig;
    use bus_core::model::payload::{CandleFields, SignalDirection};
    use rust_decimal::Decimal;

    fn candle(n: i64, close: i64) -> Envelope {
        let c = Candle::new(CandleFields {
            symbol: Symbol::new("BTC").unwrap(),
            interval: "1m".into(),
            open_time_ms: n * 60_000,
            open: Decimal::new(close, 0),
            high: Decimal::new(close, 0),
            low: Decimal::new(close, 0),
            close: Decimal::new(close, 0),
            volume: Decimal::ONE,
        })
        .unwrap();
        MessageFactory::new(AgentId::new("collector"), true).make(
            Topic::new("data.candle.BTC.1m").unwrap(),
            Payload::DataCandle(c),
            n,
        )
    }

    #[test]
    fn scripted_candles_produce_an_aggregated_long() {
        let config = SignalsConfig {
            threshold: 0.5,
            publish_details: true,
            max_symbols: 1000,
            ma_crossover: Some(MaCrossoverConfig {
                enabled: true,
                fast: 2,
                slow: 4,
                weight: 1.0,
            }),
            rsi: None,
            macd: None,
            bollinger: None,
            candlestick: None,
            custom: Default::default(),
            llm: None,
        };
        assert!(config.validate("signals").is_empty());
        let mut agent = SignalAgent::new(AgentId::new("signals"), config, true);
        let mut out = Outbox::new();
        for (n, close) in [10, 10, 10, 10, 9, 12].into_iter().enumerate() {
            agent
                .on_message(&candle(n as i64, close), &mut out)
                .unwrap();
        }
        let messages: Vec<Envelope> = out.drain().collect();
        let aggregated: Vec<&Envelope> = messages
            .iter()
            .filter(|m| m.message_type() == MessageType::SignalAggregated)
            .collect();
        assert_eq!(aggregated.len(), 1);
        assert_eq!(aggregated[0].topic.as_str(), "signal.aggregated.BTC");
        let Payload::SignalAggregated(a) = aggregated[0].payload() else {
            unreachable!()
        };
        assert_eq!(a.direction, SignalDirection::Long);
        assert_eq!(a.price, Decimal::new(12, 0));
        let completes = messages
            .iter()
            .filter(|m| m.message_type() == MessageType::SignalAnalysisComplete)
            .count();
        assert_eq!(completes, 6, "one analysis_complete per bar");
    }

    #[test]
    fn validation_names_keys() {
        let config = SignalsConfig {
            threshold: 1.5,
            publish_details: true,
            max_symbols: 1000,
            ma_crossover: Some(MaCrossoverConfig {
                enabled: true,
                fast: 5,
                slow: 3,
                weight: -1.0,
            }),
            rsi: None,
            macd: None,
            bollinger: None,
            candlestick: None,
            custom: Default::default(),
            llm: None,
        };
        let errors = config.validate("signals");
        assert!(errors.iter().any(|e| e.starts_with("signals.threshold")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("signals.ma_crossover.slow")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("signals.ma_crossover.weight")));
    }
}
