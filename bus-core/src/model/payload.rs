//! Typed payloads, one struct per kind of content.
//!
//! Payloads with rules (a price must be positive, a confidence within 0..=1)
//! are newtypes around a plain `...Fields` struct: the only ways to get one
//! are `new`, which checks the rules, and deserialization, which calls `new`.
//! So an invalid payload cannot exist, whether built in code or read from the
//! wire. Read the fields through `Deref` (`candle.close`).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::error::PayloadError;
use crate::model::ids::{AgentId, MessageId};

fn rule(
    payload: &'static str,
    field: &'static str,
    ok: bool,
    reason: &str,
) -> Result<(), PayloadError> {
    check(payload, field, ok, || reason.to_string())
}

/// Like `rule`, but the reason is only built when the rule is broken: the
/// happy path of every payload constructor must not format anything.
fn check(
    payload: &'static str,
    field: &'static str,
    ok: bool,
    reason: impl FnOnce() -> String,
) -> Result<(), PayloadError> {
    if ok {
        Ok(())
    } else {
        Err(PayloadError {
            payload,
            field,
            reason: reason(),
        })
    }
}

fn positive(
    payload: &'static str,
    field: &'static str,
    value: Decimal,
) -> Result<(), PayloadError> {
    check(
        payload,
        field,
        value.is_sign_positive() && !value.is_zero(),
        || format!("must be positive, got {value}"),
    )
}

fn non_negative(
    payload: &'static str,
    field: &'static str,
    value: Decimal,
) -> Result<(), PayloadError> {
    check(
        payload,
        field,
        value.is_sign_positive() || value.is_zero(),
        || format!("must not be negative, got {value}"),
    )
}

fn unit_interval(
    payload: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), PayloadError> {
    check(payload, field, (0.0..=1.0).contains(&value), || {
        format!("must be within 0..=1, got {value}")
    })
}

/// Orders two decimals; equal scales (the usual case: prices of one
/// market) compare their integer mantissas directly, which is several
/// times cheaper than `Decimal`'s general comparison.
fn cmp_decimal(a: &Decimal, b: &Decimal) -> std::cmp::Ordering {
    if a.scale() == b.scale() {
        a.mantissa().cmp(&b.mantissa())
    } else {
        a.cmp(b)
    }
}

fn not_blank(payload: &'static str, field: &'static str, value: &str) -> Result<(), PayloadError> {
    rule(
        payload,
        field,
        !value.trim().is_empty(),
        "must not be empty",
    )
}

/// Declares a validated payload: a `Fields` struct with public fields and a
/// newtype that can only be built through `new`, which runs `check`.
macro_rules! validated_payload {
    (
        $(#[$doc:meta])*
        pub struct $name:ident($fields:ident) as $wire:literal {
            $( $(#[$fdoc:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
        check($f:ident) $check:block
    ) => {
        #[doc = concat!("The fields of [`", stringify!($name), "`], before validation.")]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $fields {
            $( $(#[$fdoc])* pub $field: $ty ),*
        }

        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(transparent)]
        pub struct $name($fields);

        impl $name {
            /// The payload's name on the wire.
            pub const WIRE_NAME: &'static str = $wire;

            /// Checks the rules and builds the payload.
            pub fn new($f: $fields) -> Result<Self, PayloadError> {
                #[allow(dead_code)]
                const P: &str = $wire;
                $check
                Ok(Self($f))
            }

            /// Gives back the plain fields (to change them and validate again).
            pub fn into_fields(self) -> $fields {
                self.0
            }
        }

        impl Deref for $name {
            type Target = $fields;
            fn deref(&self) -> &$fields {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let fields = $fields::deserialize(deserializer)?;
                Self::new(fields).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A market symbol (`BTC`, `ETH-USD`); used as a topic segment, so no dots,
/// wildcards or whitespace. Cheap to clone.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Symbol(Arc<str>);

crate::model::ids::shared_name_comparisons!(Symbol);

impl Symbol {
    /// Validates and wraps a symbol.
    pub fn new(text: impl Into<String>) -> Result<Self, PayloadError> {
        let text = text.into();
        let valid = !text.is_empty()
            && text.len() <= 32
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
        check("symbol", "symbol", valid, || {
            format!("{text:?} must be 1-32 ASCII letters, digits, '-', '_' or '/'")
        })?;
        Ok(Self(Arc::from(text)))
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when both are handles on one allocation (a clone, an interned
    /// name): equal without comparing text.
    pub(crate) fn same_allocation(&self, other: &Symbol) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::model::intern::deserialize_name(
            deserializer,
            "a symbol",
            crate::model::intern::symbol,
        )
    }
}

/// Identity of an order, unique within one trader.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub String);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    /// +1 for buy, -1 for sell.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

/// Which way a signal points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalDirection {
    /// Expect the price to rise.
    Long,
    /// Expect the price to fall.
    Short,
    /// No view.
    Neutral,
}

/// Market or limit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// Fill at the next price.
    Market,
    /// Fill at the limit price or better.
    Limit,
}

/// The lifecycle states of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Built, not started.
    Created,
    /// Start in progress.
    Starting,
    /// Handling messages.
    Running,
    /// Started but not acting.
    Paused,
    /// Stop in progress.
    Stopping,
    /// Stopped cleanly.
    Stopped,
    /// Failed, may be restarted.
    Error,
    /// Died unexpectedly (panic, killed).
    Crashed,
}

// ---------------------------------------------------------------- system.*

/// `system.startup`: the system is starting these agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Startup {
    /// Software version.
    pub version: String,
    /// Agents being started, in start order.
    pub agents: Vec<AgentId>,
}

/// `system.shutdown`: the system is stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// Why.
    pub reason: String,
}

/// `system.health_check`: every agent answers with `agent.health_update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {}

validated_payload! {
    /// `system.config_update`: change one setting at run time.
    pub struct ConfigUpdate(ConfigUpdateFields) as "system.config_update" {
        /// Dotted key, e.g. `risk.max_drawdown`.
        pub key: String,
        /// New value, as text (parsed by the agent that owns the key).
        pub value: String,
    }
    check(f) {
        not_blank(P, "key", &f.key)?;
    }
}

validated_payload! {
    /// `system.heartbeat`: an agent is alive; it is unhealthy if none arrives within `ttl_ms`.
    pub struct Heartbeat(HeartbeatFields) as "system.heartbeat" {
        /// Who is alive.
        pub agent: AgentId,
        /// Increases by one per heartbeat.
        pub sequence: u64,
        /// How long this heartbeat vouches for.
        pub ttl_ms: u64,
    }
    check(f) {
        rule(P, "ttl_ms", f.ttl_ms > 0, "must be positive")?;
    }
}

/// `system.dead_letter`: a message that could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// The message, as it was on its last attempt; absent when it could
    /// not even be decoded (see `raw`).
    pub original: Option<Box<crate::model::Envelope>>,
    /// The bytes as received (lossy UTF-8, at most 4 KiB) when they could
    /// not be decoded into an envelope.
    #[serde(default)]
    pub raw: Option<String>,
    /// The subscription that could not handle it.
    pub subscription: String,
    /// The last error.
    pub error: String,
    /// Deliveries attempted.
    pub attempts: u32,
    /// When it was given up, ms since the Unix epoch.
    pub dead_lettered_at_ms: i64,
}

// ---------------------------------------------------------------- agent.*

/// `agent.started` / `stopped` / `paused` / `resumed`: a lifecycle transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTransition {
    /// The agent.
    pub agent: AgentId,
    /// State before.
    pub from: AgentState,
    /// State after.
    pub to: AgentState,
}

/// `agent.error`: an agent hit an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentErrorReport {
    /// The agent.
    pub agent: AgentId,
    /// What happened.
    pub error: String,
    /// True when the agent cannot continue.
    pub fatal: bool,
}

/// `agent.health_update`: an agent's health, e.g. in answer to a health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// The agent.
    pub agent: AgentId,
    /// Its lifecycle state.
    pub state: AgentState,
    /// Whether it considers itself healthy.
    pub healthy: bool,
    /// Free-form detail.
    pub detail: String,
}

// ---------------------------------------------------------------- data.*

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

// ---------------------------------------------------------------- signal.*

validated_payload! {
    /// `signal.generated`: one strategy's view of one market.
    pub struct Signal(SignalFields) as "signal.generated" {
        /// Market.
        pub symbol: Symbol,
        /// Strategy name, e.g. `rsi` (a strategy's own names are static
        /// text: no allocation per signal).
        pub strategy: Cow<'static, str>,
        /// Direction.
        pub direction: SignalDirection,
        /// Confidence within 0..=1.
        pub confidence: f64,
        /// Price the signal was computed at.
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Time of the data it was computed from, ms since the Unix epoch.
        pub timestamp_ms: i64,
        /// Human-readable reason.
        pub reason: Cow<'static, str>,
    }
    check(f) {
        not_blank(P, "strategy", &f.strategy)?;
        unit_interval(P, "confidence", f.confidence)?;
        positive(P, "price", f.price)?;
    }
}

/// One strategy's part in an aggregated signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalContribution {
    /// Strategy name.
    pub strategy: Cow<'static, str>,
    /// Its direction.
    pub direction: SignalDirection,
    /// Its confidence.
    pub confidence: f64,
    /// Its configured weight.
    pub weight: f64,
}

validated_payload! {
    /// `signal.aggregated`: the weighted combination of strategy signals.
    pub struct AggregatedSignal(AggregatedSignalFields) as "signal.aggregated" {
        /// Market.
        pub symbol: Symbol,
        /// Combined direction.
        pub direction: SignalDirection,
        /// Combined confidence within 0..=1.
        pub confidence: f64,
        /// Price at the time of aggregation.
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
        /// What went into it.
        pub contributions: Vec<SignalContribution>,
    }
    check(f) {
        unit_interval(P, "confidence", f.confidence)?;
        positive(P, "price", f.price)?;
        for c in f.contributions.iter() {
            unit_interval(P, "contributions", c.confidence)?;
            rule(P, "contributions", c.weight.is_finite() && c.weight >= 0.0, "weights must be finite and >= 0")?;
        }
    }
}

/// `signal.analysis_complete`: all strategies ran on one bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisComplete {
    /// Market.
    pub symbol: Symbol,
    /// Time of the bar, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Strategies that ran.
    pub strategies: u32,
    /// Signals they produced.
    pub signals: u32,
}

// ---------------------------------------------------------------- trade.*

validated_payload! {
    /// `trade.order_request`: the trader asks risk to approve an order.
    pub struct OrderRequest(OrderRequestFields) as "trade.order_request" {
        /// Order identity.
        pub order_id: OrderId,
        /// Market.
        pub symbol: Symbol,
        /// Side.
        pub side: Side,
        /// Quantity, positive.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Market or limit.
        pub order_type: OrderType,
        /// Limit price, required for limit orders.
        #[serde(default, with = "crate::model::wire::decimal::option")]
        pub limit_price: Option<Decimal>,
        /// Price the order was sized at.
        #[serde(with = "crate::model::wire::decimal")]
        pub reference_price: Decimal,
        /// Why the order is placed.
        pub reason: String,
    }
    check(f) {
        positive(P, "quantity", f.quantity)?;
        positive(P, "reference_price", f.reference_price)?;
        match (f.order_type, f.limit_price) {
            (OrderType::Limit, Some(price)) => positive(P, "limit_price", price)?,
            (OrderType::Limit, None) => rule(P, "limit_price", false, "is required for a limit order")?,
            (OrderType::Market, Some(_)) => rule(P, "limit_price", false, "must be absent for a market order")?,
            (OrderType::Market, None) => {}
        }
    }
}

validated_payload! {
    /// `trade.order_filled`: an order was executed.
    pub struct Fill(FillFields) as "trade.order_filled" {
        /// Order identity.
        pub order_id: OrderId,
        /// Market.
        pub symbol: Symbol,
        /// Side.
        pub side: Side,
        /// Filled quantity.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Fill price (after slippage).
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Fee paid.
        #[serde(with = "crate::model::wire::decimal")]
        pub fee: Decimal,
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
    }
    check(f) {
        positive(P, "quantity", f.quantity)?;
        positive(P, "price", f.price)?;
        non_negative(P, "fee", f.fee)?;
    }
}

/// `trade.order_cancelled`: an order will not be filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// Order identity.
    pub order_id: OrderId,
    /// Market.
    pub symbol: Symbol,
    /// Why (refused by risk, emergency stop...).
    pub reason: String,
}

validated_payload! {
    /// `trade.position_update`: the position in one market after a change.
    pub struct PositionUpdate(PositionUpdateFields) as "trade.position_update" {
        /// Market.
        pub symbol: Symbol,
        /// Signed quantity: positive long, negative short.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Average entry price (zero when flat).
        #[serde(with = "crate::model::wire::decimal")]
        pub average_price: Decimal,
        /// Price the position is marked at.
        #[serde(with = "crate::model::wire::decimal")]
        pub mark_price: Decimal,
        /// Realised PnL in this market so far.
        #[serde(with = "crate::model::wire::decimal")]
        pub realised_pnl: Decimal,
        /// Unrealised PnL at the mark price.
        #[serde(with = "crate::model::wire::decimal")]
        pub unrealised_pnl: Decimal,
    }
    check(f) {
        non_negative(P, "average_price", f.average_price)?;
        positive(P, "mark_price", f.mark_price)?;
    }
}

validated_payload! {
    /// `trade.pnl_update`: the portfolio's accounts.
    pub struct PnlUpdate(PnlUpdateFields) as "trade.pnl_update" {
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
        /// Cash balance.
        #[serde(with = "crate::model::wire::decimal")]
        pub cash: Decimal,
        /// Realised PnL (before fees).
        #[serde(with = "crate::model::wire::decimal")]
        pub realised_pnl: Decimal,
        /// Unrealised PnL.
        #[serde(with = "crate::model::wire::decimal")]
        pub unrealised_pnl: Decimal,
        /// Fees paid.
        #[serde(with = "crate::model::wire::decimal")]
        pub fees: Decimal,
        /// Equity: initial cash + realised + unrealised - fees.
        #[serde(with = "crate::model::wire::decimal")]
        pub equity: Decimal,
    }
    check(f) {
        non_negative(P, "fees", f.fees)?;
    }
}

// ---------------------------------------------------------------- risk.*

/// `risk.limit_breach` and `risk.warning`: a limit was crossed or approached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAlert {
    /// Which limit (`max_drawdown`, `max_position`...).
    pub limit: String,
    /// Market, when the limit is per market.
    pub symbol: Option<Symbol>,
    /// Observed value.
    #[serde(with = "crate::model::wire::decimal")]
    pub value: Decimal,
    /// The limit's threshold.
    #[serde(with = "crate::model::wire::decimal")]
    pub threshold: Decimal,
    /// Human-readable text.
    pub message: String,
}

/// `risk.emergency_stop`: stop sending new orders now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyStop {
    /// Why.
    pub reason: String,
    /// The limit or component that triggered it.
    pub triggered_by: String,
}

// ---------------------------------------------------------------- command.*

/// `command.*`: start/stop collection, pause/resume trading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Markets concerned; empty means all.
    pub symbols: Vec<Symbol>,
    /// Why.
    pub reason: String,
}

// ---------------------------------------------------------------- response.*

/// `response.success`: a request was carried out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Success {
    /// What was done.
    pub detail: String,
}

/// `response.error`: a request was refused or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// Machine-readable code, e.g. `risk_refused`.
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

/// `response.ack`: a message was received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The acknowledged message.
    pub message_id: MessageId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn candle(
        open: Decimal,
        high: Decimal,
        low: Decimal,
        close: Decimal,
        volume: Decimal,
    ) -> Result<Candle, PayloadError> {
        Candle::new(CandleFields {
            symbol: Symbol::new("BTC").unwrap(),
            interval: "1m".into(),
            open_time_ms: 0,
            open,
            high,
            low,
            close,
            volume,
        })
    }

    #[test]
    fn valid_candle_builds_and_reads_through_deref() {
        let c = candle(dec!(10), dec!(12), dec!(9), dec!(11), dec!(5)).unwrap();
        assert_eq!(c.close, dec!(11));
        assert_eq!(c.symbol.as_str(), "BTC");
    }

    #[test]
    fn invalid_candles_are_refused_with_the_field() {
        let cases = [
            (
                candle(dec!(-1), dec!(12), dec!(9), dec!(11), dec!(5)),
                "open",
            ),
            (
                candle(dec!(10), dec!(10.5), dec!(9), dec!(11), dec!(5)),
                "high",
            ),
            (
                candle(dec!(10), dec!(12), dec!(10.5), dec!(11), dec!(5)),
                "low",
            ),
            (
                candle(dec!(10), dec!(12), dec!(9), dec!(11), dec!(-5)),
                "volume",
            ),
            (
                candle(dec!(10), dec!(12), dec!(9), dec!(0), dec!(5)),
                "close",
            ),
        ];
        for (result, field) in cases {
            let error = result.unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert_eq!(error.payload, "data.candle");
        }
    }

    #[test]
    fn confidence_outside_unit_interval_is_refused() {
        for confidence in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            let error = Signal::new(SignalFields {
                symbol: Symbol::new("ETH").unwrap(),
                strategy: "rsi".into(),
                direction: SignalDirection::Long,
                confidence,
                price: dec!(1),
                timestamp_ms: 0,
                reason: Cow::Borrowed(""),
            })
            .unwrap_err();
            assert_eq!(error.field, "confidence");
        }
    }

    #[test]
    fn zero_quantity_order_is_refused() {
        let error = OrderRequest::new(OrderRequestFields {
            order_id: OrderId("o1".into()),
            symbol: Symbol::new("BTC").unwrap(),
            side: Side::Buy,
            quantity: Decimal::ZERO,
            order_type: OrderType::Market,
            limit_price: None,
            reference_price: dec!(100),
            reason: String::new(),
        })
        .unwrap_err();
        assert_eq!(error.field, "quantity");
    }

    #[test]
    fn limit_order_needs_a_limit_price() {
        let error = OrderRequest::new(OrderRequestFields {
            order_id: OrderId("o1".into()),
            symbol: Symbol::new("BTC").unwrap(),
            side: Side::Sell,
            quantity: dec!(1),
            order_type: OrderType::Limit,
            limit_price: None,
            reference_price: dec!(100),
            reason: String::new(),
        })
        .unwrap_err();
        assert_eq!(error.field, "limit_price");
    }

    #[test]
    fn crossed_book_is_refused() {
        let error = OrderBook::new(OrderBookFields {
            symbol: Symbol::new("BTC").unwrap(),
            bids: vec![BookLevel {
                price: dec!(101),
                quantity: dec!(1),
            }],
            asks: vec![BookLevel {
                price: dec!(100),
                quantity: dec!(1),
            }],
            timestamp_ms: 0,
        })
        .unwrap_err();
        assert_eq!(error.field, "asks");
    }

    #[test]
    fn symbols_reject_dots_and_spaces() {
        for bad in ["", "BTC.USD", "BTC USD", "*", ">"] {
            assert!(Symbol::new(bad).is_err(), "{bad:?}");
        }
        assert!(Symbol::new("BTC-USD").is_ok());
    }

    #[test]
    fn fill_with_negative_fee_is_refused() {
        let error = Fill::new(FillFields {
            order_id: OrderId("o".into()),
            symbol: Symbol::new("BTC").unwrap(),
            side: Side::Buy,
            quantity: dec!(1),
            price: dec!(1),
            fee: dec!(-0.01),
            timestamp_ms: 0,
        })
        .unwrap_err();
        assert_eq!(error.field, "fee");
    }
}
