//! The strategy trait and what strategies see and say.

use bus_core::model::decimal_to_f64;
use bus_core::model::payload::{Candle, SignalDirection};

/// One candle as the strategies see it: `f64` prices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Open.
    pub open: f64,
    /// High.
    pub high: f64,
    /// Low.
    pub low: f64,
    /// Close.
    pub close: f64,
    /// Volume.
    pub volume: f64,
    /// The close exactly, in units of 10⁻⁸ (rounded half to even beyond
    /// eight decimals): for indicators that must compare exactly.
    pub close_units: i128,
}

/// `value` in units of 10⁻⁸, exactly (rounded half to even beyond eight
/// decimals).
pub fn price_units(value: rust_decimal::Decimal) -> i128 {
    // Prices rarely carry more than eight decimals: scale them up as they
    // are, rounding only the others.
    let exact = match value.scale() {
        0..=8 => value,
        _ => value.round_dp(8),
    };
    /// 10⁸⁻ˢ for a scale s of 0..=8 (a table: `pow` loops over i128).
    const UNITS_PER: [i128; 9] = [
        100_000_000,
        10_000_000,
        1_000_000,
        100_000,
        10_000,
        1_000,
        100,
        10,
        1,
    ];
    exact.mantissa() * UNITS_PER[exact.scale() as usize]
}

impl Bar {
    /// Converts a candle.
    pub fn from_candle(candle: &Candle) -> Self {
        let f = decimal_to_f64;
        Self {
            open: f(candle.open),
            high: f(candle.high),
            low: f(candle.low),
            close: f(candle.close),
            volume: f(candle.volume),
            close_units: price_units(candle.close),
        }
    }

    /// A bar where open, high, low and close are one price (a tick).
    pub fn flat(price: f64) -> Self {
        Self {
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 1.0,
            close_units: (price * 1e8).round() as i128,
        }
    }

    /// Size of the body.
    pub fn body(&self) -> f64 {
        (self.close - self.open).abs()
    }

    /// High minus low.
    pub fn range(&self) -> f64 {
        self.high - self.low
    }

    /// Shadow above the body.
    pub fn upper_shadow(&self) -> f64 {
        self.high - self.open.max(self.close)
    }

    /// Shadow below the body.
    pub fn lower_shadow(&self) -> f64 {
        self.open.min(self.close) - self.low
    }

    /// Close above open.
    pub fn is_bullish(&self) -> bool {
        self.close > self.open
    }

    /// Close below open.
    pub fn is_bearish(&self) -> bool {
        self.close < self.open
    }
}

/// A strategy's view on one bar.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategySignal {
    /// Direction.
    pub direction: SignalDirection,
    /// Confidence within 0..=1.
    pub confidence: f64,
    /// Why, for people (a fixed text: formatting per signal was costly).
    pub reason: &'static str,
}

/// A trading strategy for one symbol.
pub trait Strategy: Send {
    /// Its name, used in signals and aggregator weights.
    fn name(&self) -> &'static str;

    /// Sees the next bar; returns a signal when it has a view.
    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    /// Every scale a price may carry, against the same value worked out
    /// in decimal: rounded to eight places, times 10⁸.
    #[test]
    fn price_units_are_the_price_in_hundred_millionths() {
        let hundred_million = Decimal::new(100_000_000, 0);
        for mantissa in [0_i64, 1, 7, -3, 12_345, 99_999_999_999, -5_000_000_000_005] {
            for scale in 0..=16 {
                let value = Decimal::new(mantissa, scale);
                let expected = (value.round_dp(8) * hundred_million).mantissa();
                let expected_scale = (value.round_dp(8) * hundred_million).scale();
                let expected = expected / 10_i128.pow(expected_scale);
                assert_eq!(price_units(value), expected, "{value}");
            }
        }
    }
}
