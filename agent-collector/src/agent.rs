//! The collector agent.

use bus_core::model::payload::Command;
use bus_core::model::SymbolTopics;
use bus_core::prelude::*;

use crate::source::CandleSource;
use crate::venue::feed::{FeedCounters, FeedEvent, FeedHealth, LiveFeed};

/// Where a collector's market data comes from.
enum Input {
    /// Recorded or generated candles, step by step.
    Replay(Box<dyn CandleSource>),
    /// A venue's live stream.
    Live(Box<LiveInput>),
}

/// A live feed and what the collector knows of its health.
struct LiveInput {
    feed: LiveFeed,
    /// The stall threshold, for the warnings.
    stall_after: std::time::Duration,
    /// When market data last arrived.
    last_data: std::time::Instant,
    /// A stale-feed warning is out and not yet cleared.
    stale: bool,
    /// What a progress display shows.
    status: std::sync::Arc<std::sync::Mutex<FeedStatus>>,
    prices: SymbolTopics,
    trades: SymbolTopics,
    books: SymbolTopics,
}

/// A live feed's state, for a progress display.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FeedStatus {
    /// `connecting`, `live`, `stalled` or `disconnected`.
    pub health: String,
    /// The last price seen per market.
    pub prices: Vec<(Symbol, rust_decimal::Decimal)>,
}

impl FeedStatus {
    fn price(&mut self, symbol: &Symbol, price: rust_decimal::Decimal) {
        match self.prices.iter_mut().find(|(s, _)| s == symbol) {
            Some((_, last)) => *last = price,
            None => self.prices.push((symbol.clone(), price)),
        }
    }
}

/// How long a live collector waits for an event before it lets its driver
/// handle commands (and a stop).
const LIVE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Publishes candles from a source, one time step per `produce` call, or
/// what a live feed delivers as it comes.
pub struct CollectorAgent {
    id: AgentId,
    input: Input,
    factory: MessageFactory,
    /// Symbols collection is stopped for (`command.stop_collection`).
    stopped: Vec<Symbol>,
    /// Collection stopped for every symbol.
    stopped_all: bool,
    published: u64,
    failure: Option<String>,
    /// Per symbol, the topic of each interval seen (usually one): looked up
    /// by reference, without cloning a key per candle.
    topics: SymbolTopics,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    pacing: Option<Pacing>,
    /// Staggered pacing: the current step's candles not yet published, and
    /// how many it had.
    held: std::collections::VecDeque<Candle>,
    held_of: usize,
    /// The time step being published (one buffer, reused).
    batch: Vec<Candle>,
    outcome: Option<Outcome<Collected>>,
}

/// What a collector hands back when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Candles published.
    pub published: u64,
    /// Rows the source skipped as malformed.
    pub skipped_rows: usize,
    /// The error that ended collection early, if any.
    pub failure: Option<String>,
}

/// Replays market time at `speed` times real time.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    speed: f64,
    /// Wall clock and market time of the first batch.
    anchor: Option<(std::time::Instant, i64)>,
    /// Market time between steps, when a step's candles are published one
    /// at a time, spread evenly over it.
    stagger_ms: Option<i64>,
}

impl CollectorAgent {
    /// A collector named `id` reading `source`.
    pub fn new(id: AgentId, source: Box<dyn CandleSource>, deterministic: bool) -> Self {
        Self::with_input(id, Input::Replay(source), deterministic)
    }

    /// A collector named `id` publishing what `feed` delivers: closed
    /// candles (`data.candle`), the forming candle's price and mids
    /// (`data.price_update`), trades (`data.trade`), books
    /// (`data.orderbook`), and `risk.warning.stale_feed` when the feed
    /// stalls or drops (value: seconds without data, against
    /// `stall_after`) and again once it is live (value 0). It runs until
    /// stopped.
    pub fn live(id: AgentId, feed: LiveFeed, stall_after: std::time::Duration) -> Self {
        let status = FeedStatus {
            health: "connecting".into(),
            prices: Vec::new(),
        };
        let live = LiveInput {
            feed,
            stall_after,
            last_data: std::time::Instant::now(),
            stale: false,
            status: std::sync::Arc::new(std::sync::Mutex::new(status)),
            prices: SymbolTopics::new("data.price_update"),
            trades: SymbolTopics::new("data.trade"),
            books: SymbolTopics::new("data.orderbook"),
        };
        Self::with_input(id, Input::Live(Box::new(live)), false)
    }

    /// A live collector keeps its feed state in `status` (shared with a
    /// progress display); a replaying one has none.
    pub fn with_feed_status(
        mut self,
        status: std::sync::Arc<std::sync::Mutex<FeedStatus>>,
    ) -> Self {
        if let Input::Live(live) = &mut self.input {
            if let (Ok(mut shared), Ok(own)) = (status.lock(), live.status.lock()) {
                *shared = own.clone();
            }
            live.status = status;
        }
        self
    }

    /// A live collector's feed state, shared (for a progress display).
    pub fn feed_status(&self) -> Option<std::sync::Arc<std::sync::Mutex<FeedStatus>>> {
        match &self.input {
            Input::Live(live) => Some(live.status.clone()),
            Input::Replay(_) => None,
        }
    }

    fn with_input(id: AgentId, input: Input, deterministic: bool) -> Self {
        Self {
            factory: MessageFactory::new(id.clone(), deterministic),
            id,
            input,
            stopped: Vec::new(),
            stopped_all: false,
            published: 0,
            failure: None,
            topics: SymbolTopics::new("data.candle"),
            progress: None,
            pacing: None,
            held: Default::default(),
            held_of: 0,
            batch: Vec::new(),
            outcome: None,
        }
    }

    /// Hands what it collected to `outcome` when it stops.
    pub fn with_outcome(mut self, outcome: Outcome<Collected>) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Replays at `speed` times real time (60 = a minute of market data per
    /// second) instead of as fast as possible. Only for the queued bus: a
    /// backtest never sleeps.
    pub fn with_speed(mut self, speed: f64) -> Self {
        if speed.is_finite() && speed > 0.0 {
            self.pacing = Some(Pacing {
                speed,
                anchor: None,
                stagger_ms: None,
            });
        }
        self
    }

    /// With [`with_speed`](Self::with_speed): publishes each step's candles
    /// one at a time, spread evenly over the step (`interval_ms` of market
    /// time). Paced slowly enough, every candle is then worked through by
    /// all agents before the next one — the order of an inline backtest —
    /// even with agents in separate processes.
    pub fn staggered(mut self, interval_ms: i64) -> Self {
        if let Some(pacing) = self.pacing.as_mut() {
            pacing.stagger_ms = (interval_ms > 0).then_some(interval_ms);
        }
        self
    }

    /// Sleeps until the wall clock has caught up with `time_ms` of market time.
    fn pace(&mut self, time_ms: i64) {
        let Some(pacing) = self.pacing.as_mut() else {
            return;
        };
        let (start, first) = *pacing
            .anchor
            .get_or_insert((std::time::Instant::now(), time_ms));
        let market_elapsed = (time_ms - first).max(0) as f64 / 1000.0;
        let due = start + std::time::Duration::from_secs_f64(market_elapsed / pacing.speed);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    /// Counts published candles into `counter` too (for a progress display).
    pub fn with_progress(mut self, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// Candles published so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Rows the source skipped as malformed.
    pub fn skipped_rows(&self) -> usize {
        match &self.input {
            Input::Replay(source) => source.skipped_rows(),
            Input::Live(live) => FeedCounters::get(&live.feed.counters().malformed) as usize,
        }
    }

    fn apply(&mut self, command: &Command, stop: bool) {
        if command.symbols.is_empty() {
            self.stopped_all = stop;
            self.stopped.clear();
        } else if stop {
            self.stopped.extend(command.symbols.iter().cloned());
        } else {
            self.stopped.retain(|s| !command.symbols.contains(s));
        }
    }
}

impl Agent for CollectorAgent {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["market_data".into()]
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![
            TopicPattern::from_static("command.start_collection"),
            TopicPattern::from_static("command.stop_collection"),
        ]
    }

    fn on_message(&mut self, envelope: &Envelope, _out: &mut Outbox) -> HandlerResult {
        match envelope.payload() {
            Payload::CommandStartCollection(c) => self.apply(c, false),
            Payload::CommandStopCollection(c) => self.apply(c, true),
            _ => {}
        }
        Ok(())
    }

    fn on_stop(&mut self, _out: &mut Outbox) -> HandlerResult {
        if let Some(outcome) = &self.outcome {
            outcome.set(Collected {
                published: self.published,
                skipped_rows: self.skipped_rows(),
                failure: self.failure.clone(),
            });
        }
        Ok(())
    }

    fn produce(&mut self, out: &mut Outbox) -> Produce {
        let stagger_ms = self.pacing.and_then(|p| p.stagger_ms);
        if let Some(interval_ms) = stagger_ms {
            if let Some(candle) = self.held.pop_front() {
                let k = (self.held_of - self.held.len() - 1) as i64;
                let n = self.held_of as i64;
                self.pace(candle.open_time_ms + k * interval_ms / n);
                self.publish_candle(candle, out);
                return Produce::More;
            }
        }
        let source = match &mut self.input {
            Input::Replay(source) => source,
            Input::Live(_) => return self.produce_live(out),
        };
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        match source.next_batch_into(&mut batch) {
            Ok(true) => {}
            Ok(false) => return Produce::Done,
            Err(error) => {
                tracing::error!(agent = %self.id, %error, "collection stopped");
                self.failure = Some(error.to_string());
                return Produce::Done;
            }
        }
        if stagger_ms.is_some() {
            self.held_of = batch.len();
            self.held.extend(batch.drain(..));
        } else {
            if let Some(first) = batch.first() {
                self.pace(first.open_time_ms);
            }
            for candle in batch.drain(..) {
                self.publish_candle(candle, out);
            }
        }
        self.batch = batch;
        Produce::More
    }
}

impl CollectorAgent {
    /// Publishes what the feed has delivered, waiting a little for it.
    fn produce_live(&mut self, out: &mut Outbox) -> Produce {
        let Input::Live(live) = &mut self.input else {
            return Produce::Done;
        };
        let event = match live.feed.events().recv_timeout(LIVE_WAIT) {
            Ok(event) => event,
            Err(flume::RecvTimeoutError::Timeout) => return Produce::Idle,
            Err(flume::RecvTimeoutError::Disconnected) => {
                self.failure = Some(format!("the {} feed stopped", live.feed.venue()));
                return Produce::Done;
            }
        };
        if !matches!(event, FeedEvent::Health(_)) {
            live.last_data = std::time::Instant::now();
        }
        live.record_metrics();
        let message = match event {
            FeedEvent::Candle(candle) => {
                tracing::info!(
                    symbol = %candle.symbol,
                    interval = %candle.interval,
                    open_time_ms = candle.open_time_ms,
                    close = %candle.close,
                    "live candle closed"
                );
                live.status_price(&candle.symbol, candle.close);
                self.publish_candle(candle, out);
                return Produce::More;
            }
            FeedEvent::Forming(price) => vec![live.price(price)],
            FeedEvent::Mids(prices) => prices.into_iter().map(|p| live.price(p)).collect(),
            FeedEvent::Trades(trades) => trades
                .into_iter()
                .map(|trade| {
                    let topic = live.trades.topic(&trade.symbol);
                    let time = trade.timestamp_ms;
                    (topic, Payload::DataTrade(trade), time)
                })
                .collect(),
            FeedEvent::Book(book) => {
                let topic = live.books.topic(&book.symbol);
                let time = book.timestamp_ms;
                vec![(topic, Payload::DataOrderbook(book), time)]
            }
            FeedEvent::Health(health) => live.health(&health).into_iter().collect(),
        };
        for (topic, payload, time) in message {
            let Ok(topic) = topic else { continue };
            let symbol = match &payload {
                Payload::DataPriceUpdate(p) => Some(&p.symbol),
                Payload::DataTrade(t) => Some(&t.symbol),
                Payload::DataOrderbook(b) => Some(&b.symbol),
                _ => None,
            };
            if symbol.is_some_and(|s| self.stopped_all || self.stopped.contains(s)) {
                continue;
            }
            out.publish(self.factory.make(topic, payload, time));
        }
        Produce::More
    }

    fn publish_candle(&mut self, candle: Candle, out: &mut Outbox) {
        if self.stopped_all || self.stopped.contains(&candle.symbol) {
            return;
        }
        let topic = match self.topics.topic_with(&candle.symbol, &candle.interval) {
            Ok(topic) => topic,
            Err(_) => {
                tracing::warn!(interval = %candle.interval, "interval is not a valid topic segment");
                return;
            }
        };
        let time = candle.open_time_ms;
        out.publish(self.factory.make(topic, Payload::DataCandle(candle), time));
        self.published += 1;
        if let Some(progress) = &self.progress {
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A message to publish: topic, payload, time.
type Outgoing = (Result<Topic, bus_core::TopicError>, Payload, i64);

impl LiveInput {
    /// The feed's counters and health as Prometheus metrics (no-ops unless
    /// an exporter is installed).
    fn record_metrics(&self) {
        let counters = self.feed.counters();
        let get = FeedCounters::get;
        metrics::counter!("bistoury_feed_frames_total").absolute(get(&counters.frames));
        metrics::counter!("bistoury_feed_malformed_total").absolute(get(&counters.malformed));
        metrics::counter!("bistoury_feed_disconnections_total")
            .absolute(get(&counters.disconnections));
        metrics::counter!("bistoury_feed_stalls_total").absolute(get(&counters.stalls));
        metrics::counter!("bistoury_feed_backfilled_total").absolute(get(&counters.backfilled));
        metrics::gauge!("bistoury_feed_stale").set(f64::from(u8::from(self.stale)));
    }

    fn status_price(&self, symbol: &Symbol, price: rust_decimal::Decimal) {
        if let Ok(mut status) = self.status.lock() {
            status.price(symbol, price);
        }
    }

    fn price(&mut self, price: PriceUpdate) -> Outgoing {
        self.status_price(&price.symbol, price.price);
        let topic = self.prices.topic(&price.symbol);
        let time = price.timestamp_ms;
        (topic, Payload::DataPriceUpdate(price), time)
    }

    /// Notes the feed's health; a `risk.warning.stale_feed` when the
    /// market turns stale or live again: seconds without market data
    /// against the stall threshold, 0 once it flows again.
    fn health(&mut self, health: &FeedHealth) -> Option<Outgoing> {
        let (name, stale) = match health {
            FeedHealth::Live => ("live", false),
            FeedHealth::Stalled { .. } => ("stalled", true),
            FeedHealth::Disconnected { .. } => ("disconnected", true),
            FeedHealth::GapUnfilled { .. } => return None,
        };
        if let Ok(mut status) = self.status.lock() {
            status.health = name.into();
        }
        if stale == self.stale {
            return None;
        }
        self.stale = stale;
        let silent = match stale {
            true => self.last_data.elapsed(),
            false => std::time::Duration::ZERO,
        };
        let seconds = |d: std::time::Duration| {
            rust_decimal::Decimal::from(d.as_millis() as i64) / rust_decimal::Decimal::from(1000)
        };
        let message = match stale {
            true => format!("{name}: no market data for {:.1} s", silent.as_secs_f64()),
            false => "market data is flowing again".into(),
        };
        let alert = RiskAlert {
            limit: "stale_feed".into(),
            symbol: None,
            value: seconds(silent),
            threshold: seconds(self.stall_after),
            message,
        };
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Some((
            Topic::new("risk.warning.stale_feed"),
            Payload::RiskWarning(alert),
            time,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SymbolSpec, SyntheticMarket, SyntheticSpec};

    fn collector(candles: usize) -> CollectorAgent {
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
            candles,
            interval_ms: 60_000,
            interval: "1m".into(),
            start_time_ms: 0,
            seed: 1,
            volatility: 0.01,
            regime_change_probability: 0.0,
        };
        CollectorAgent::new(
            AgentId::new("collector"),
            Box::new(SyntheticMarket::new(spec).unwrap()),
            true,
        )
    }

    #[test]
    fn publishes_candles_on_symbol_topics_then_finishes() {
        let mut c = collector(3);
        let mut out = Outbox::new();
        let mut steps = 0;
        while c.produce(&mut out) == Produce::More {
            steps += 1;
        }
        assert_eq!(steps, 3);
        let topics: Vec<String> = out.drain().map(|e| e.topic.to_string()).collect();
        assert_eq!(topics.len(), 6);
        assert_eq!(topics[0], "data.candle.BTC.1m");
        assert_eq!(topics[1], "data.candle.ETH.1m");
    }

    #[test]
    fn staggered_pacing_publishes_one_candle_at_a_time_in_the_same_order() {
        let mut plain = collector(4);
        let mut out = Outbox::new();
        while plain.produce(&mut out) == Produce::More {}
        let expected: Vec<(String, i64)> = out
            .drain()
            .map(|e| (e.topic.to_string(), e.created_at_ms))
            .collect();
        // Four steps of two candles at 6000x: a candle every 5 ms.
        let mut staggered = collector(4).with_speed(6000.0).staggered(60_000);
        let (mut got, mut wall) = (Vec::new(), Vec::new());
        let started = std::time::Instant::now();
        while staggered.produce(&mut out) == Produce::More {
            assert!(out.len() <= 1, "one candle per step of the driver");
            for e in out.drain() {
                got.push((e.topic.to_string(), e.created_at_ms));
                wall.push(started.elapsed());
            }
        }
        assert_eq!(got, expected);
        // The second candle of a step comes half a step after the first.
        assert!(wall[1] >= std::time::Duration::from_millis(5), "{wall:?}");
        assert!(wall[7] >= std::time::Duration::from_millis(35), "{wall:?}");
    }

    #[test]
    fn speed_factor_paces_the_replay() {
        // Four one-minute steps after the first at 6000x: 10 ms each.
        let mut c = collector(5).with_speed(6000.0);
        let mut out = Outbox::new();
        let started = std::time::Instant::now();
        while c.produce(&mut out) == Produce::More {}
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(40),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn stop_and_start_collection_commands() {
        let mut c = collector(4);
        let mut out = Outbox::new();
        let mut factory = MessageFactory::new(AgentId::new("operator"), true);
        let stop_btc = factory.make(
            Topic::new("command.stop_collection").unwrap(),
            Payload::CommandStopCollection(Command {
                symbols: vec![Symbol::new("BTC").unwrap()],
                reason: "test".into(),
            }),
            0,
        );
        c.on_message(&stop_btc, &mut out).unwrap();
        c.produce(&mut out);
        let symbols: Vec<String> = out.drain().map(|e| e.topic.to_string()).collect();
        assert_eq!(symbols, vec!["data.candle.ETH.1m"]);
        let start = factory.make(
            Topic::new("command.start_collection").unwrap(),
            Payload::CommandStartCollection(Command::default()),
            0,
        );
        c.on_message(&start, &mut out).unwrap();
        c.produce(&mut out);
        assert_eq!(out.len(), 2);
    }
}
