//! A live feed from any [`Venue`]: the WebSocket, keep-alive, stall
//! detection, reconnection with backoff and jitter, and back-fill of the
//! candles a reconnection missed, on a thread of its own.
//!
//! What it delivers ([`FeedEvent`]s, in order) is what the collector
//! publishes: one candle per closed interval, in time order per market, no
//! duplicate and none missing (a gap is filled from the venue's history
//! before later candles go out); the forming candle's price; trades, books,
//! mids; and the feed's health. A malformed frame is counted and logged
//! with its reason, and the feed goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::bus::reliability::RetryPolicy;
use bus_core::model::payload::{
    Candle, MarketTrade, OrderBook, PriceUpdate, PriceUpdateFields, Symbol,
};
use bus_core::MessageId;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::closing::{CandleCloser, Closed, Gap};
use super::{Channels, Frame, Venue};
use crate::error::CollectorError;

/// How a feed connects and when it gives up waiting.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Markets followed.
    pub symbols: Vec<Symbol>,
    /// Candle interval label (`1m`).
    pub interval: String,
    /// Its length.
    pub interval_ms: i64,
    /// Streams besides candles.
    pub channels: Channels,
    /// No market data for this long while subscribed: the feed is stalled
    /// (a warning goes out and the connection is replaced).
    pub stall_after: Duration,
    /// A keep-alive ping goes out this often.
    pub ping_every: Duration,
    /// Longest wait for a connection to open.
    pub connect_timeout: Duration,
    /// Longest wait for one back-fill answer.
    pub request_timeout: Duration,
    /// Delays between reconnections (and back-fill retries).
    pub reconnect: RetryPolicy,
    /// Tries per back-fill request before the gap is given up (logged,
    /// counted, and trading goes on without those candles).
    pub backfill_attempts: u32,
}

impl FeedSettings {
    /// Defaults for `symbols` at `interval`: a stall after 30 s without
    /// data, a ping every 20 s (HyperLiquid closes a connection silent for
    /// 60 s), reconnections from 0.5 s doubling to 30 s with ±20 % jitter.
    pub fn new(symbols: Vec<Symbol>, interval: &str, interval_ms: i64) -> Self {
        Self {
            symbols,
            interval: interval.into(),
            interval_ms,
            channels: Channels::default(),
            stall_after: Duration::from_secs(30),
            ping_every: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            reconnect: RetryPolicy {
                base: Duration::from_millis(500),
                factor: 2.0,
                cap: Duration::from_secs(30),
                jitter: 0.2,
            },
            backfill_attempts: 5,
        }
    }
}

/// What a feed delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// A candle whose interval has closed: final.
    Candle(Candle),
    /// The forming candle's latest price, stamped when it arrived.
    Forming(PriceUpdate),
    /// Trades, oldest first.
    Trades(Vec<MarketTrade>),
    /// An order book.
    Book(OrderBook),
    /// Mid prices, stamped when they arrived.
    Mids(Vec<PriceUpdate>),
    /// The feed's health changed.
    Health(FeedHealth),
}

/// The feed's health, as it changes.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedHealth {
    /// Subscribed, and market data is arriving.
    Live,
    /// No market data for `silent`: the connection is being replaced.
    Stalled {
        /// How long nothing came.
        silent: Duration,
    },
    /// The connection was lost or could not be opened; the next try is in
    /// `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next connection attempt.
        retry_in: Duration,
    },
    /// A gap could not be back-filled: those candles are missing.
    GapUnfilled {
        /// The market.
        symbol: Symbol,
        /// The intervals missing.
        gap: Gap,
        /// Why.
        reason: String,
    },
}

/// What a feed has counted so far.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Text frames received.
    pub frames: AtomicU64,
    /// Frames that could not be decoded (skipped).
    pub malformed: AtomicU64,
    /// Connections lost or refused.
    pub disconnections: AtomicU64,
    /// Stalls detected.
    pub stalls: AtomicU64,
    /// Candles brought in by back-fill.
    pub backfilled: AtomicU64,
    /// Gaps given up.
    pub gaps_unfilled: AtomicU64,
    /// Candle snapshots of an interval already closed (ignored).
    pub stale_snapshots: AtomicU64,
}

impl FeedCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A running feed: its events, its counters; dropping it stops it.
pub struct LiveFeed {
    venue: String,
    events: flume::Receiver<FeedEvent>,
    counters: Arc<FeedCounters>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveFeed {
    /// Starts following `venue` on a thread of its own.
    pub fn start(venue: Arc<dyn Venue>, settings: FeedSettings) -> Result<Self, CollectorError> {
        if settings.symbols.is_empty() {
            return Err(CollectorError::BadSpec(
                "a live feed needs at least one symbol".into(),
            ));
        }
        // Unbounded: the feed must keep reading its socket (a venue drops a
        // client that falls behind); the collector drains it as it comes.
        let (sender, events) = flume::unbounded();
        let counters = Arc::new(FeedCounters::default());
        let (stop, stopped) = watch::channel(false);
        let name = venue.name().to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                CollectorError::BadSpec(format!("cannot start the feed's runtime: {e}"))
            })?;
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| CollectorError::BadSpec(format!("cannot make an HTTP client: {e}")))?;
        let feed = Feed {
            closer: CandleCloser::new(settings.interval_ms),
            jitter: MessageId::new(),
            failures: 0,
            live: false,
            venue,
            settings,
            client,
            events: sender,
            counters: counters.clone(),
            stopped,
        };
        let thread = std::thread::Builder::new()
            .name(format!("feed-{name}"))
            .spawn(move || runtime.block_on(feed.run()))
            .map_err(|e| CollectorError::BadSpec(format!("cannot start the feed thread: {e}")))?;
        Ok(Self {
            venue: name,
            events,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// The venue's name.
    pub fn venue(&self) -> &str {
        &self.venue
    }

    /// The events, in order.
    pub fn events(&self) -> &flume::Receiver<FeedEvent> {
        &self.events
    }

    /// What the feed has counted.
    pub fn counters(&self) -> &Arc<FeedCounters> {
        &self.counters
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a connection ended.
enum Ended {
    /// The feed was told to stop (or nobody listens any more).
    Stopped,
    /// Lost, refused or stalled: reconnect.
    Lost(String),
}

struct Feed {
    venue: Arc<dyn Venue>,
    settings: FeedSettings,
    client: reqwest::Client,
    closer: CandleCloser,
    events: flume::Sender<FeedEvent>,
    counters: Arc<FeedCounters>,
    stopped: watch::Receiver<bool>,
    /// Seeds the reconnection jitter.
    jitter: MessageId,
    /// Connection attempts failed in a row.
    failures: u32,
    /// Market data has arrived since the last (re)connection.
    live: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Feed {
    async fn run(mut self) {
        loop {
            let reason = match self.connection().await {
                Ended::Stopped => return,
                Ended::Lost(reason) => reason,
            };
            self.closer.disconnected();
            self.live = false;
            self.failures += 1;
            FeedCounters::add(&self.counters.disconnections, 1);
            let retry_in = self.settings.reconnect.delay(self.jitter, self.failures);
            tracing::warn!(venue = self.venue.name(), %reason, ?retry_in, "feed disconnected");
            if !self.emit(FeedEvent::Health(FeedHealth::Disconnected {
                reason,
                retry_in,
            })) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = self.stopped.changed() => return,
            }
        }
    }

    /// Hands an event over; false when nobody listens any more.
    fn emit(&self, event: FeedEvent) -> bool {
        self.events.send(event).is_ok()
    }

    fn emit_closed(&self, closed: Closed) -> bool {
        closed
            .candles
            .into_iter()
            .all(|candle| self.emit(FeedEvent::Candle(candle)))
    }

    /// One connection, from opening to its end.
    async fn connection(&mut self) -> Ended {
        let url = self.venue.stream_url().to_string();
        let opened = tokio::select! {
            opened = tokio::time::timeout(
                self.settings.connect_timeout,
                tokio_tungstenite::connect_async(url.as_str()),
            ) => opened,
            _ = self.stopped.changed() => return Ended::Stopped,
        };
        let mut socket = match opened {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(error)) => return Ended::Lost(format!("cannot connect to {url}: {error}")),
            Err(_) => {
                return Ended::Lost(format!(
                    "cannot connect to {url}: no answer within {:?}",
                    self.settings.connect_timeout
                ))
            }
        };
        let settings = &self.settings;
        let requests =
            self.venue
                .subscribe(&settings.symbols, &settings.interval, settings.channels);
        for request in requests {
            if let Err(error) = socket.send(Message::text(request)).await {
                return Ended::Lost(format!("subscribing: {error}"));
            }
        }
        tracing::info!(venue = self.venue.name(), %url, "feed connected, subscribed");
        let mut last_data = Instant::now();
        let mut ping = tokio::time::interval(self.settings.ping_every);
        ping.tick().await;
        loop {
            let stall_at = last_data + self.settings.stall_after;
            tokio::select! {
                frame = socket.next() => {
                    let text = match frame {
                        None => return Ended::Lost("the venue closed the connection".into()),
                        Some(Err(error)) => return Ended::Lost(error.to_string()),
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            return Ended::Lost(format!("the venue closed the connection: {frame:?}"))
                        }
                        Some(Ok(Message::Binary(_))) => {
                            FeedCounters::add(&self.counters.malformed, 1);
                            tracing::warn!(venue = self.venue.name(), "binary frame skipped");
                            continue;
                        }
                        // Pings are answered by the socket itself.
                        Some(Ok(_)) => continue,
                    };
                    FeedCounters::add(&self.counters.frames, 1);
                    match self.frame(text.as_str()).await {
                        Some(true) => last_data = Instant::now(),
                        Some(false) => {}
                        None => return Ended::Stopped,
                    }
                }
                _ = tokio::time::sleep_until(stall_at.into()) => {
                    let silent = self.settings.stall_after;
                    FeedCounters::add(&self.counters.stalls, 1);
                    if !self.emit(FeedEvent::Health(FeedHealth::Stalled { silent })) {
                        return Ended::Stopped;
                    }
                    return Ended::Lost(format!("stalled: no market data for {silent:?}"));
                }
                _ = ping.tick() => {
                    if let Some(request) = self.venue.ping() {
                        if let Err(error) = socket.send(Message::text(request)).await {
                            return Ended::Lost(format!("keep-alive: {error}"));
                        }
                    }
                }
                _ = self.stopped.changed() => {
                    let _ = socket.close(None).await;
                    return Ended::Stopped;
                }
            }
        }
    }

    /// Handles one text frame: `Some(true)` when it was market data,
    /// `None` when nobody listens any more.
    async fn frame(&mut self, text: &str) -> Option<bool> {
        let frame = match self.venue.decode(text, &self.settings.symbols) {
            Ok(frame) => frame,
            Err(error) => {
                FeedCounters::add(&self.counters.malformed, 1);
                tracing::warn!(venue = self.venue.name(), %error, "malformed frame skipped");
                return Some(false);
            }
        };
        let event = match frame {
            Frame::Pong => return Some(false),
            Frame::Subscribed(what) => {
                tracing::debug!(venue = self.venue.name(), %what, "subscription acknowledged");
                return Some(false);
            }
            Frame::Candle(candle) => {
                let followed = *candle.interval == *self.settings.interval
                    && self.settings.symbols.contains(&candle.symbol);
                if !followed {
                    return Some(false);
                }
                let forming = PriceUpdate::new(PriceUpdateFields {
                    symbol: candle.symbol.clone(),
                    price: candle.close,
                    timestamp_ms: now_ms(),
                });
                let symbol = candle.symbol.clone();
                let stale = self.closer.stale;
                let closed = self.closer.snapshot(candle);
                FeedCounters::add(&self.counters.stale_snapshots, self.closer.stale - stale);
                let gap = closed.gap;
                if !self.emit_closed(closed) {
                    return None;
                }
                if let Some(gap) = gap {
                    if !self.backfill(&symbol, gap).await {
                        return None;
                    }
                }
                forming.ok().map(FeedEvent::Forming)
            }
            Frame::Trades(trades) => Some(FeedEvent::Trades(trades)),
            Frame::Book(book) => Some(FeedEvent::Book(book)),
            Frame::Mids(mids) => {
                // Mids carry no time of their own: stamped on arrival.
                let now = now_ms();
                let stamped = mids
                    .iter()
                    .filter_map(|m| {
                        PriceUpdate::new(PriceUpdateFields {
                            symbol: m.symbol.clone(),
                            price: m.price,
                            timestamp_ms: now,
                        })
                        .ok()
                    })
                    .collect();
                Some(FeedEvent::Mids(stamped))
            }
        };
        self.failures = 0;
        if !self.live {
            self.live = true;
            if !self.emit(FeedEvent::Health(FeedHealth::Live)) {
                return None;
            }
        }
        match event {
            Some(event) => self.emit(event).then_some(true),
            None => Some(true),
        }
    }

    /// Fills `symbol`'s gap from the venue's history, retrying each request;
    /// false when nobody listens any more.
    async fn backfill(&mut self, symbol: &Symbol, gap: Gap) -> bool {
        let settings = &self.settings;
        let requests = self.venue.backfill(
            symbol,
            &settings.interval,
            settings.interval_ms,
            gap.from_ms,
            gap.until_ms,
        );
        tracing::info!(
            venue = self.venue.name(),
            %symbol,
            from_ms = gap.from_ms,
            until_ms = gap.until_ms,
            "back-filling a gap"
        );
        let mut history = Vec::new();
        for request in requests {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut stopped = self.stopped.clone();
                let answer = tokio::select! {
                    answer = self.post(&request.url, request.body.clone()) => answer,
                    _ = stopped.changed() => return false,
                };
                match answer {
                    Ok(candles) => {
                        history.extend(candles);
                        break;
                    }
                    Err(reason) if attempt >= self.settings.backfill_attempts.max(1) => {
                        FeedCounters::add(&self.counters.gaps_unfilled, 1);
                        tracing::error!(
                            venue = self.venue.name(),
                            %symbol,
                            %reason,
                            "gap not back-filled: its candles are missing"
                        );
                        let health = FeedHealth::GapUnfilled {
                            symbol: symbol.clone(),
                            gap,
                            reason,
                        };
                        let released = self.closer.give_up(symbol);
                        return self.emit(FeedEvent::Health(health)) && self.emit_closed(released);
                    }
                    Err(reason) => {
                        let delay = self.settings.reconnect.delay(self.jitter, attempt);
                        tracing::warn!(venue = self.venue.name(), %reason, ?delay, "back-fill retried");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.stopped.changed() => return false,
                        }
                    }
                }
            }
        }
        let closed = self.closer.backfill(symbol, history);
        let filled = closed.candles.len() as u64;
        FeedCounters::add(&self.counters.backfilled, filled);
        self.emit_closed(closed)
    }

    async fn post(&self, url: &str, body: String) -> Result<Vec<Candle>, String> {
        let answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("POST {url}: HTTP {status}"));
        }
        self.venue
            .decode_backfill(&text)
            .map_err(|e| format!("POST {url}: {e}"))
    }
}
