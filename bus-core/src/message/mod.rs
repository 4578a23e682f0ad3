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
    /// Exact powers of ten (to 1e22 doubles are exact).
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let scale = value.scale() as usize;
    let mantissa = value.mantissa();
    // Prices fit an i64 mantissa: converting that is one instruction, where
    // an i128 goes through a slow software routine.
    let mantissa = match i64::try_from(mantissa) {
        Ok(small) => small as f64,
        Err(_) => mantissa as f64,
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
    }
}
