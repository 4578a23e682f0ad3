//! Live venues: a venue's stream decoded into Bistoury's market messages.
//!
//! * [`hyperliquid`]: HyperLiquid's public WebSocket frames (`candle`,
//!   `trades`, `l2Book`, `allMids`, `pong`, `subscriptionResponse`), decoded
//!   into [`Frame`]s of Bistoury payloads;
//! * [`closing`]: venues stream the *forming* candle again and again;
//!   [`CandleCloser`](closing::CandleCloser) turns those snapshots into one
//!   candle per closed interval (the `data.candle` a replay publishes) and
//!   names the intervals a gap left out, to be back-filled.
//!
//! * [`Venue`]: what a venue is to the feed — where to connect, what to
//!   send to subscribe and keep alive, how to read a frame, how to ask for
//!   a range of history. A second venue is one module implementing it;
//! * [`feed`]: the socket, keep-alive, stall detection, reconnection with
//!   backoff and jitter, and gap back-fill over HTTP, for any [`Venue`];
//! * [`record`]: closed candles written to the candle file format the
//!   replay source reads.

pub mod closing;
pub mod feed;
pub mod hyperliquid;
pub mod record;

use bus_core::model::payload::{Candle, MarketTrade, OrderBook, PriceUpdate, Symbol};

/// A venue's public market data, as the feed needs it (see the module
/// docs). Everything here is pure: the feed does the I/O.
pub trait Venue: Send + Sync + 'static {
    /// Its name, for logs and the report (`hyperliquid`).
    fn name(&self) -> &str;

    /// The WebSocket URL.
    fn stream_url(&self) -> &str;

    /// The requests that subscribe to `coins`' candles at `interval` and to
    /// the other `channels` asked for, sent after each (re)connection.
    fn subscribe(&self, coins: &[Symbol], interval: &str, channels: Channels) -> Vec<String>;

    /// The keep-alive request, sent when the stream has been quiet a while.
    fn ping(&self) -> Option<String>;

    /// Decodes one text frame; `coins` are the markets followed.
    fn decode(&self, text: &str, coins: &[Symbol]) -> Result<Frame, FrameError>;

    /// The HTTP requests whose answers hold `coin`'s candles at `interval`
    /// (`interval_ms` long) opening in `[from_ms, until_ms)`.
    fn backfill(
        &self,
        coin: &Symbol,
        interval: &str,
        interval_ms: i64,
        from_ms: i64,
        until_ms: i64,
    ) -> Vec<HttpRequest>;

    /// Decodes the answer to one back-fill request.
    fn decode_backfill(&self, body: &str) -> Result<Vec<Candle>, FrameError>;
}

/// The streams besides candles a feed subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// Trades (`data.trade`).
    pub trades: bool,
    /// Order books (`data.orderbook`).
    pub book: bool,
    /// Mid prices (`data.price_update`).
    pub mids: bool,
}

impl Default for Channels {
    /// Candles and mids: enough to trade on and to see a live price.
    fn default() -> Self {
        Self {
            trades: false,
            book: false,
            mids: true,
        }
    }
}

/// A POST of a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Where.
    pub url: String,
    /// The JSON body.
    pub body: String,
}

/// One frame of a venue's stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A snapshot of a candle: forming, or the last one of its interval.
    Candle(Candle),
    /// Trades, oldest first.
    Trades(Vec<MarketTrade>),
    /// A full order book snapshot.
    Book(OrderBook),
    /// Mid prices of the markets asked for.
    Mids(Vec<PriceUpdate>),
    /// The answer to a keep-alive ping.
    Pong,
    /// A subscription was acknowledged (its JSON, as the venue echoed it).
    Subscribed(String),
}

/// Why a frame could not be decoded (counted and logged; the feed goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel} frame: {reason}")]
pub struct FrameError {
    /// The frame's channel (`?` when it has none).
    pub channel: String,
    /// What is wrong, naming the field.
    pub reason: String,
}
