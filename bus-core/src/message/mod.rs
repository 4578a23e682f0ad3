//! The message model: envelope, types, payloads, priority and delivery.

pub mod delivery;
pub mod envelope;
pub mod kind;
pub mod payload;

pub use delivery::{DeliveryMode, MessageStatus, Priority};
pub use envelope::{now_ms, Envelope, DEFAULT_MAX_ATTEMPTS};
pub use kind::{MessageType, Payload};

/// A decimal as `f64` through its mantissa and scale, for indicators and
/// statistics (never for money). `Decimal::to_f64` goes through text, which
/// dominated backtest profiles.
pub fn decimal_to_f64(value: rust_decimal::Decimal) -> f64 {
    value.mantissa() as f64 / 10f64.powi(value.scale() as i32)
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
    }
}
