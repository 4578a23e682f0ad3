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
//! The socket, reconnection and back-fill requests are not here yet: this
//! module is what they will feed.

pub mod closing;
pub mod hyperliquid;

use bus_core::model::payload::{Candle, MarketTrade, OrderBook, PriceUpdate};

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
