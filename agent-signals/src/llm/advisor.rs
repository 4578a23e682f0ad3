//! The `llm` strategy: when to ask the model, what to show it, and what
//! its answer adds to a bar's signals.
//!
//! Each market keeps a [`MarketMemory`]: its last `history_bars` bars and a
//! fixed set of indicators (documented in [`MarketMemory::indicators`]).
//! Once the memory is full, the model is asked on a bar when
//! `ask_every_bars` bars have passed since it was last asked about that
//! market, or when the technical strategies point both ways on the bar
//! (`ask_on_disagreement`). A valid answer is one more signal, named `llm`,
//! weighed like any other; anything else (a refusal, no answer, the budget
//! spent) adds nothing, so the technical strategies decide alone.
//!
//! One [`ModelAdvisor`] serves a whole run (every market, and a signals
//! agent rebuilt after a panic): its budget is the run's. A replay that
//! meets a question its recording has no answer for stops the run (the
//! [`StopSignal`] it was given) and keeps the reason for the run to report.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bus_core::model::payload::SignalDirection;
use bus_core::runtime::StopSignal;

use super::answer::Answer;
use super::cache::{AnswerCache, CacheMode};
use super::client::{Asked, ModelClient, ModelSettings, Spent};
use super::prompt::Summary;
use crate::aggregator::Weighted;
use crate::indicators::{Bollinger, Macd, Rsi, Sma};
use crate::strategy::Bar;

/// The strategy's name in signals, weights and reports.
pub const NAME: &str = "llm";

/// When the model is asked, and what it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consulting {
    /// Ask every this many bars of a market (0: never on a count).
    pub every_bars: u32,
    /// Ask when the technical strategies point both ways.
    pub on_disagreement: bool,
    /// Bars shown (and needed before the first question).
    pub history_bars: usize,
    /// The bars' length, ms (the summary says when the bar closed).
    pub interval_ms: i64,
}

/// One market as the model sees it.
#[derive(Debug, Clone)]
pub struct MarketMemory {
    bars: VecDeque<Bar>,
    capacity: usize,
    /// Bars since the model was last asked about this market.
    since_asked: u32,
    sma_10: Sma,
    sma_20: Sma,
    rsi_14: Rsi,
    macd: Macd,
    bollinger: Bollinger,
    values: Vec<(&'static str, f64)>,
}

impl MarketMemory {
    /// A market remembering its last `history_bars` bars.
    pub fn new(history_bars: usize) -> Self {
        Self {
            bars: VecDeque::with_capacity(history_bars),
            capacity: history_bars,
            since_asked: 0,
            sma_10: Sma::new(10),
            sma_20: Sma::new(20),
            rsi_14: Rsi::new(14),
            macd: Macd::new(12, 26, 9),
            bollinger: Bollinger::new(20, 2.0),
            values: Vec::with_capacity(7),
        }
    }

    /// Sees the next bar.
    pub fn update(&mut self, bar: &Bar) {
        if self.bars.len() == self.capacity {
            self.bars.pop_front();
        }
        self.bars.push_back(*bar);
        self.since_asked = self.since_asked.saturating_add(1);
        let close = bar.close;
        self.values.clear();
        if let Some(v) = self.sma_10.update(close) {
            self.values.push(("sma_10", v));
        }
        if let Some(v) = self.sma_20.update(close) {
            self.values.push(("sma_20", v));
        }
        if let Some(v) = self.rsi_14.update(close) {
            self.values.push(("rsi_14", v));
        }
        if let Some(m) = self.macd.update(close) {
            self.values.push(("macd_12_26", m.macd));
            self.values.push(("macd_signal_9", m.signal));
        }
        if let Some(b) = self.bollinger.update(close) {
            self.values.push(("bollinger_20_2_upper", b.upper));
            self.values.push(("bollinger_20_2_lower", b.lower));
        }
    }

    /// The indicators on the last bar, those that have enough bars:
    /// `sma_10`, `sma_20` (simple moving averages of the close), `rsi_14`
    /// (Wilder's RSI), `macd_12_26` and `macd_signal_9` (MACD line and its
    /// signal line), `bollinger_20_2_upper` and `_lower` (20-bar bands at 2
    /// standard deviations).
    pub fn indicators(&self) -> &[(&'static str, f64)] {
        &self.values
    }

    /// The bars remembered, oldest first.
    pub fn bars(&self) -> Vec<Bar> {
        self.bars.iter().copied().collect()
    }

    fn full(&self) -> bool {
        self.bars.len() == self.capacity
    }
}

/// The model's part in a run (see the module docs).
pub struct ModelAdvisor {
    client: ModelClient,
    cache: AnswerCache,
    consulting: Consulting,
    stop: Option<StopSignal>,
    failure: Option<String>,
}

impl std::fmt::Debug for ModelAdvisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelAdvisor")
            .field("consulting", &self.consulting)
            .field("cache", &(self.cache.mode(), self.cache.path()))
            .field("spent", &self.client.spent())
            .field("failure", &self.failure)
            .finish()
    }
}

/// One advisor shared by a run's signal agents.
pub type SharedAdvisor = Arc<Mutex<ModelAdvisor>>;

impl ModelAdvisor {
    /// An advisor asking through a client started with `settings`,
    /// answering from `cache` first.
    pub fn new(
        settings: ModelSettings,
        cache: AnswerCache,
        consulting: Consulting,
    ) -> Result<Self, String> {
        Ok(Self {
            client: ModelClient::start(settings)?,
            cache,
            consulting,
            stop: None,
            failure: None,
        })
    }

    /// Stops the run through `stop` when a replay has no answer.
    pub fn with_stop(mut self, stop: StopSignal) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Shared, for the agents.
    pub fn shared(self) -> SharedAdvisor {
        Arc::new(Mutex::new(self))
    }

    /// What the run has used and seen so far.
    pub fn spent(&self) -> Spent {
        self.client.spent()
    }

    /// How the answers are kept.
    pub fn cache_mode(&self) -> CacheMode {
        self.cache.mode()
    }

    /// Why the model's part failed the run (a replay without an answer).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether to ask about this bar: the memory is full, and the count
    /// is due or the technical signals point both ways.
    fn due(&self, memory: &MarketMemory, signals: &[Weighted]) -> bool {
        if self.failure.is_some() || !memory.full() {
            return false;
        }
        let Consulting {
            every_bars,
            on_disagreement,
            ..
        } = self.consulting;
        let counted = every_bars > 0 && memory.since_asked >= every_bars;
        let said = |d: SignalDirection| signals.iter().any(|w| w.signal.direction == d);
        counted || (on_disagreement && said(SignalDirection::Long) && said(SignalDirection::Short))
    }

    /// The model's view on `symbol`'s bar opened at `bar_open_ms` (already
    /// in `memory`), when one is due and the model gives a valid one.
    pub fn consult(
        &mut self,
        symbol: &str,
        interval: &str,
        bar_open_ms: i64,
        memory: &mut MarketMemory,
        signals: &[Weighted],
    ) -> Option<Answer> {
        if !self.due(memory, signals) {
            return None;
        }
        memory.since_asked = 0;
        let spoken: Vec<(&str, SignalDirection, f64)> = (signals.iter())
            .map(|w| (w.strategy, w.signal.direction, w.signal.confidence))
            .collect();
        let bars = memory.bars();
        let text = Summary {
            symbol,
            interval,
            bar_open_ms,
            interval_ms: self.consulting.interval_ms,
            candles: &bars,
            indicators: memory.indicators(),
            signals: &spoken,
        }
        .text();
        match self.client.ask(&text, &mut self.cache) {
            Ok(Asked::Answer(answer)) => Some(answer),
            Ok(Asked::Refused(_) | Asked::Failed(_) | Asked::OverBudget) => None,
            Err(error) => {
                let failure = error.to_string();
                tracing::error!(%failure, symbol, bar_open_ms, "the model strategy stops the run");
                self.failure = Some(failure);
                if let Some(stop) = &self.stop {
                    stop.stop();
                }
                None
            }
        }
    }
}
