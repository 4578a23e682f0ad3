//! The message model: ids, topics, the envelope and its typed payloads,
//! priorities and delivery modes, headers, and the wire codecs.
//!
//! Everything else in the crate stands on this; it imports nothing else of
//! the crate, and its errors ([`error`]) know nothing of buses or stores.

pub mod addressing;
pub mod candle_sequence;
mod decimal_text;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod headers;
pub mod ids;
pub(crate) mod intern;
pub mod kind;
pub mod payload;
pub mod setting;
pub mod symbol_map;
pub mod time;
pub mod topic;
pub mod wire;

pub use candle_sequence::{CandleAdmission, CandleSequence};
pub use decimal_text::{parse_decimal, push_decimal};
pub(crate) use decimal_text::{write_decimal, DECIMAL_TEXT};
pub use delivery::{DeliveryMode, Priority};
pub use envelope::{now_ms, Envelope, DEFAULT_MAX_ATTEMPTS};
pub use headers::Headers;
pub use kind::{MessageType, Payload};
pub use symbol_map::{SymbolMap, SymbolTopics};
pub use wire::WireFormat;

/// A decimal as `f64` through its mantissa and scale, for indicators and
/// statistics (never for money). `Decimal::to_f64` goes through text, which
/// dominated backtest profiles.
#[inline]
pub fn decimal_to_f64(value: rust_decimal::Decimal) -> f64 {
    /// Exact powers of ten (to 1e22 doubles are exact).
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let scale = value.scale() as usize;
    let mantissa = value.mantissa();
    // Prices fit an i64 mantissa: converting that is one instruction, where
    // an i128 goes through a slow software routine. That routine sits in a
    // function of its own: written inline, the compiler ran it on every
    // call (a conversion looks cheap to it) and picked the result after.
    #[cold]
    #[inline(never)]
    fn wide(mantissa: i128) -> f64 {
        mantissa as f64
    }
    let small = mantissa as i64;
    let mantissa = if i128::from(small) == mantissa {
        small as f64
    } else {
        wide(mantissa)
    };
    match POW10.get(scale) {
        Some(power) => mantissa / power,
        None => mantissa / 10f64.powi(scale as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_to_f64_is_close() {
        for (text, expected) in [
            ("35000.12", 35000.12),
            ("0.0001", 0.0001),
            ("-2.5", -2.5),
            ("0", 0.0),
        ] {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            assert!((decimal_to_f64(d) - expected).abs() < 1e-9);
        }
        // Mantissas wider than an i64 take the slow path.
        for (text, expected) in [
            ("123456789012345678901234.5", 1.234_567_890_123_456_8e23),
            (
                "-0.0000000012345678901234567890",
                -1.234_567_890_123_456_8e-9,
            ),
        ] {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            assert!(d.mantissa().abs() > i128::from(i64::MAX), "{text}");
            let relative = (decimal_to_f64(d) - expected).abs() / expected.abs();
            assert!(relative < 1e-15, "{text}: {}", decimal_to_f64(d));
        }
    }
}
