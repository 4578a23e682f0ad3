//! HyperLiquid's public WebSocket (`wss://api.hyperliquid.xyz/ws`; testnet
//! `wss://api.hyperliquid-testnet.xyz/ws`): subscription requests and the
//! frames they bring, decoded into [`Frame`]s.
//!
//! Every frame is `{"channel": ..., "data": ...}`:
//!
//! | channel | data |
//! |---|---|
//! | `candle` | `{"t": open ms, "T": close ms, "s": coin, "i": interval, "o","c","h","l","v": decimal strings, "n": trades}` |
//! | `trades` | `[{"coin", "side": "B" (buy) or "A" (sell), "px", "sz", "time", "hash", "tid", "users"}]` |
//! | `l2Book` | `{"coin", "time", "levels": [[bids: {"px","sz","n"}], [asks]]}` |
//! | `allMids` | `{"mids": {coin: decimal string}}` |
//! | `pong` | none (the answer to `{"method":"ping"}`) |
//! | `subscriptionResponse` | the subscription acknowledged |

use std::str::FromStr;

use bus_core::model::payload::{
    BookLevel, Candle, CandleFields, MarketTrade, MarketTradeFields, OrderBook, OrderBookFields,
    PriceUpdate, PriceUpdateFields, Side, Symbol,
};
use rust_decimal::Decimal;
use serde_json::Value;

use super::{Channels, Frame, FrameError, HttpRequest, Venue};

/// Mainnet.
pub const MAINNET_URL: &str = "wss://api.hyperliquid.xyz/ws";
/// Testnet.
pub const TESTNET_URL: &str = "wss://api.hyperliquid-testnet.xyz/ws";

/// The keep-alive request (answered with a `pong` frame).
pub const PING: &str = r#"{"method":"ping"}"#;

/// What to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Candles of `coin` at `interval` (`1m`, `1h`, ...).
    Candle {
        /// The coin (`BTC`).
        coin: String,
        /// The interval.
        interval: String,
    },
    /// Trades of `coin`.
    Trades {
        /// The coin.
        coin: String,
    },
    /// The order book of `coin`.
    Book {
        /// The coin.
        coin: String,
    },
    /// Every market's mid price.
    AllMids,
}

impl Subscription {
    /// The subscribe request, as sent.
    pub fn request(&self) -> String {
        let subscription = match self {
            Subscription::Candle { coin, interval } => {
                serde_json::json!({"type": "candle", "coin": coin, "interval": interval})
            }
            Subscription::Trades { coin } => serde_json::json!({"type": "trades", "coin": coin}),
            Subscription::Book { coin } => serde_json::json!({"type": "l2Book", "coin": coin}),
            Subscription::AllMids => serde_json::json!({"type": "allMids"}),
        };
        serde_json::json!({"method": "subscribe", "subscription": subscription}).to_string()
    }
}

/// The REST info endpoint back-fills are asked of (POST, JSON).
pub const MAINNET_INFO_URL: &str = "https://api.hyperliquid.xyz/info";
/// Testnet's info endpoint.
pub const TESTNET_INFO_URL: &str = "https://api.hyperliquid-testnet.xyz/info";

/// HyperLiquid as a [`Venue`]: its stream and info endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperLiquid {
    /// The WebSocket URL.
    pub stream_url: String,
    /// The REST info endpoint.
    pub info_url: String,
}

impl HyperLiquid {
    /// Mainnet.
    pub fn mainnet() -> Self {
        Self {
            stream_url: MAINNET_URL.into(),
            info_url: MAINNET_INFO_URL.into(),
        }
    }

    /// Testnet.
    pub fn testnet() -> Self {
        Self {
            stream_url: TESTNET_URL.into(),
            info_url: TESTNET_INFO_URL.into(),
        }
    }
}

impl Venue for HyperLiquid {
    fn name(&self) -> &str {
        "hyperliquid"
    }

    fn stream_url(&self) -> &str {
        &self.stream_url
    }

    fn subscribe(&self, coins: &[Symbol], interval: &str, channels: Channels) -> Vec<String> {
        let mut all = Vec::new();
        for coin in coins {
            let coin = coin.as_str().to_string();
            all.push(Subscription::Candle {
                coin: coin.clone(),
                interval: interval.into(),
            });
            if channels.trades {
                all.push(Subscription::Trades { coin: coin.clone() });
            }
            if channels.book {
                all.push(Subscription::Book { coin });
            }
        }
        if channels.mids {
            all.push(Subscription::AllMids);
        }
        all.iter().map(Subscription::request).collect()
    }

    fn ping(&self) -> Option<String> {
        Some(PING.into())
    }

    fn decode(&self, text: &str, coins: &[Symbol]) -> Result<Frame, FrameError> {
        decode(text, coins)
    }

    fn backfill(
        &self,
        coin: &Symbol,
        interval: &str,
        interval_ms: i64,
        from_ms: i64,
        until_ms: i64,
    ) -> Vec<HttpRequest> {
        candle_snapshot_requests(coin.as_str(), interval, interval_ms, from_ms, until_ms)
            .into_iter()
            .map(|body| HttpRequest {
                url: self.info_url.clone(),
                body,
            })
            .collect()
    }

    fn decode_backfill(&self, body: &str) -> Result<Vec<Candle>, FrameError> {
        decode_candle_snapshot(body)
    }
}

/// Candles one `candleSnapshot` answer holds at most: a longer range is
/// asked for page by page.
pub const CANDLES_PER_SNAPSHOT: i64 = 5_000;

/// The `candleSnapshot` requests (POST bodies) that cover the candles of
/// `coin` at `interval` (`interval_ms` long) opening in
/// `[from_ms, until_ms)`, oldest page first.
pub fn candle_snapshot_requests(
    coin: &str,
    interval: &str,
    interval_ms: i64,
    from_ms: i64,
    until_ms: i64,
) -> Vec<String> {
    let page = CANDLES_PER_SNAPSHOT * interval_ms.max(1);
    let mut requests = Vec::new();
    let mut start = from_ms;
    while start < until_ms {
        // The venue's end time is inclusive: stop just before the next page.
        let end = (start + page).min(until_ms) - 1;
        requests.push(
            serde_json::json!({
                "type": "candleSnapshot",
                "req": {"coin": coin, "interval": interval, "startTime": start, "endTime": end}
            })
            .to_string(),
        );
        start += page;
    }
    requests
}

/// Decodes a `candleSnapshot` answer: a list of candles in the `candle`
/// channel's format.
pub fn decode_candle_snapshot(text: &str) -> Result<Vec<Candle>, FrameError> {
    let bad = |reason: String| FrameError {
        channel: "candleSnapshot".into(),
        reason,
    };
    let list: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = list
        .as_array()
        .ok_or_else(|| bad("not a list of candles".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, c)| candle(c).map_err(|e| bad(format!("candle {i}: {e}"))))
        .collect()
}

/// Decodes one text frame; `coins` limits mids to the markets followed
/// (all when empty).
pub fn decode(text: &str, coins: &[Symbol]) -> Result<Frame, FrameError> {
    let frame: Value = serde_json::from_str(text).map_err(|e| FrameError {
        channel: "?".into(),
        reason: format!("not JSON: {e}"),
    })?;
    let channel = frame
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(|| FrameError {
            channel: "?".into(),
            reason: "no `channel`".into(),
        })?;
    let bad = |reason: String| FrameError {
        channel: channel.to_string(),
        reason,
    };
    let data = frame.get("data");
    let data = || data.ok_or_else(|| bad("no `data`".into()));
    match channel {
        "pong" => Ok(Frame::Pong),
        "subscriptionResponse" => Ok(Frame::Subscribed(data()?.to_string())),
        "candle" => candle(data()?).map(Frame::Candle).map_err(bad),
        "trades" => trades(data()?).map(Frame::Trades).map_err(bad),
        "l2Book" => book(data()?).map(Frame::Book).map_err(bad),
        "allMids" => mids(data()?, coins).map(Frame::Mids).map_err(bad),
        other => Err(bad(format!("unknown channel {other:?}"))),
    }
}

fn field<'a>(data: &'a Value, name: &str) -> Result<&'a Value, String> {
    data.get(name).ok_or_else(|| format!("no `{name}`"))
}

fn text<'a>(data: &'a Value, name: &str) -> Result<&'a str, String> {
    field(data, name)?
        .as_str()
        .ok_or_else(|| format!("`{name}` is not a string"))
}

fn decimal(data: &Value, name: &str) -> Result<Decimal, String> {
    let raw = text(data, name)?;
    Decimal::from_str(raw).map_err(|_| format!("`{name}`: {raw:?} is not a decimal"))
}

fn millis(data: &Value, name: &str) -> Result<i64, String> {
    field(data, name)?
        .as_i64()
        .ok_or_else(|| format!("`{name}` is not an integer of milliseconds"))
}

fn symbol(data: &Value, name: &str) -> Result<Symbol, String> {
    Symbol::new(text(data, name)?).map_err(|e| format!("`{name}`: {e}"))
}

fn candle(data: &Value) -> Result<Candle, String> {
    Candle::new(CandleFields {
        symbol: symbol(data, "s")?,
        interval: text(data, "i")?.into(),
        open_time_ms: millis(data, "t")?,
        open: decimal(data, "o")?,
        high: decimal(data, "h")?,
        low: decimal(data, "l")?,
        close: decimal(data, "c")?,
        volume: decimal(data, "v")?,
    })
    .map_err(|e| e.to_string())
}

fn trades(data: &Value) -> Result<Vec<MarketTrade>, String> {
    let list = data.as_array().ok_or("`data` is not a list of trades")?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let side = match text(t, "side")? {
                "B" => Side::Buy,
                "A" => Side::Sell,
                other => return Err(format!("trade {i}: side {other:?} is neither B nor A")),
            };
            MarketTrade::new(MarketTradeFields {
                symbol: symbol(t, "coin")?,
                price: decimal(t, "px")?,
                quantity: decimal(t, "sz")?,
                side,
                timestamp_ms: millis(t, "time")?,
            })
            .map_err(|e| format!("trade {i}: {e}"))
        })
        .collect()
}

fn book(data: &Value) -> Result<OrderBook, String> {
    let levels = field(data, "levels")?
        .as_array()
        .filter(|sides| sides.len() == 2)
        .ok_or("`levels` is not [bids, asks]")?;
    let side = |at: usize| -> Result<Vec<BookLevel>, String> {
        levels[at]
            .as_array()
            .ok_or("a side of `levels` is not a list")?
            .iter()
            .map(|level| {
                Ok(BookLevel {
                    price: decimal(level, "px")?,
                    quantity: decimal(level, "sz")?,
                })
            })
            .collect()
    };
    OrderBook::new(OrderBookFields {
        symbol: symbol(data, "coin")?,
        bids: side(0)?,
        asks: side(1)?,
        timestamp_ms: millis(data, "time")?,
    })
    .map_err(|e| e.to_string())
}

/// Mids carry no time: they are stamped with 0 here, and the collector
/// stamps them with the time it received them.
fn mids(data: &Value, coins: &[Symbol]) -> Result<Vec<PriceUpdate>, String> {
    let mids = field(data, "mids")?
        .as_object()
        .ok_or("`mids` is not an object")?;
    let mut all = Vec::new();
    for (coin, price) in mids {
        // Spot pairs (`@107`, `PURR/USDC`) are not perpetuals' coins.
        if coin.starts_with('@') || coin.contains('/') {
            continue;
        }
        let Ok(symbol) = Symbol::new(coin) else {
            continue;
        };
        if !coins.is_empty() && !coins.contains(&symbol) {
            continue;
        }
        let raw = price
            .as_str()
            .ok_or(format!("mid of {coin} is not a string"))?;
        let price = Decimal::from_str(raw)
            .map_err(|_| format!("mid of {coin}: {raw:?} is not a decimal"))?;
        all.push(
            PriceUpdate::new(PriceUpdateFields {
                symbol,
                price,
                timestamp_ms: 0,
            })
            .map_err(|e| format!("mid of {coin}: {e}"))?,
        );
    }
    Ok(all)
}
