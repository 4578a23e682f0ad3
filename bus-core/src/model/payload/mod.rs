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

mod market;
mod risk;
mod signal;
mod system;
mod trade;

pub use market::*;
pub use risk::*;
pub use signal::*;
pub use system::*;
pub use trade::*;

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
