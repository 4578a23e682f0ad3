//! `data.*`: market data (candles, prices, trades, order books, funding).

use super::*;

validated_payload! {
    /// `data.candle`: one OHLCV bar.
    pub struct Candle(CandleFields) as "data.candle" {
        /// Market.
        pub symbol: Symbol,
        /// Bar length, e.g. `1m` (shared: every bar of a series has the same).
        pub interval: Arc<str>,
        /// Bar open time, milliseconds since the Unix epoch.
        pub open_time_ms: i64,
        /// Open price.
        #[serde(with = "crate::model::wire::decimal")]
        pub open: Decimal,
        /// High price.
        #[serde(with = "crate::model::wire::decimal")]
        pub high: Decimal,
        /// Low price.
        #[serde(with = "crate::model::wire::decimal")]
        pub low: Decimal,
        /// Close price.
        #[serde(with = "crate::model::wire::decimal")]
        pub close: Decimal,
        /// Traded volume.
        #[serde(with = "crate::model::wire::decimal")]
        pub volume: Decimal,
    }
    check(f) {
        not_blank(P, "interval", &f.interval)?;
        positive(P, "open", f.open)?;
        positive(P, "high", f.high)?;
        positive(P, "low", f.low)?;
        positive(P, "close", f.close)?;
        non_negative(P, "volume", f.volume)?;
        let (high, low) = (&f.high, &f.low);
        rule(P, "high", [&f.open, &f.close, low].iter().all(|x| cmp_decimal(high, x).is_ge()), "must be >= open, close and low")?;
        rule(P, "low", [&f.open, &f.close].iter().all(|x| cmp_decimal(low, x).is_le()), "must be <= open and close")?;
    }
}

validated_payload! {
    /// `data.price_update`: a last-traded or mark price.
    pub struct PriceUpdate(PriceUpdateFields) as "data.price_update" {
        /// Market.
        pub symbol: Symbol,
        /// Price.
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Time of the price, ms since the Unix epoch.
        pub timestamp_ms: i64,
    }
    check(f) {
        positive(P, "price", f.price)?;
    }
}

validated_payload! {
    /// `data.trade`: one trade printed by the market.
    pub struct MarketTrade(MarketTradeFields) as "data.trade" {
        /// Market.
        pub symbol: Symbol,
        /// Price.
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Quantity.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Aggressor side.
        pub side: Side,
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
    }
    check(f) {
        positive(P, "price", f.price)?;
        positive(P, "quantity", f.quantity)?;
    }
}

/// One price level of an order book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookLevel {
    /// Price.
    #[serde(with = "crate::model::wire::decimal")]
    pub price: Decimal,
    /// Quantity at that price.
    #[serde(with = "crate::model::wire::decimal")]
    pub quantity: Decimal,
}

validated_payload! {
    /// `data.orderbook`: a snapshot of the best levels.
    pub struct OrderBook(OrderBookFields) as "data.orderbook" {
        /// Market.
        pub symbol: Symbol,
        /// Bids, best (highest) first.
        pub bids: Vec<BookLevel>,
        /// Asks, best (lowest) first.
        pub asks: Vec<BookLevel>,
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
    }
    check(f) {
        for level in f.bids.iter() {
            positive(P, "bids", level.price)?;
            positive(P, "bids", level.quantity)?;
        }
        for level in f.asks.iter() {
            positive(P, "asks", level.price)?;
            positive(P, "asks", level.quantity)?;
        }
        rule(P, "bids", f.bids.windows(2).all(|w| w[0].price > w[1].price), "must be strictly descending by price")?;
        rule(P, "asks", f.asks.windows(2).all(|w| w[0].price < w[1].price), "must be strictly ascending by price")?;
        if let (Some(bid), Some(ask)) = (f.bids.first(), f.asks.first()) {
            rule(P, "asks", bid.price < ask.price, "best ask must be above best bid")?;
        }
    }
}

/// `data.funding_rate`: a perpetual swap's funding rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundingRate {
    /// Market.
    pub symbol: Symbol,
    /// Rate per funding interval (may be negative).
    #[serde(with = "crate::model::wire::decimal")]
    pub rate: Decimal,
    /// Next funding time, ms since the Unix epoch.
    pub next_funding_ms: i64,
}
