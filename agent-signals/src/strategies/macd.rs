//! MACD crossover: long when the MACD line crosses above its signal line,
//! short when it crosses below.

use bus_core::model::payload::SignalDirection;

use crate::indicators::Macd;
use crate::strategy::{Bar, Strategy, StrategySignal};

/// MACD / signal-line crossover.
#[derive(Debug, Clone)]
pub struct MacdCrossover {
    macd: Macd,
    previous_histogram: Option<f64>,
}

impl MacdCrossover {
    /// MACD(`fast`, `slow`, `signal`).
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        Self {
            macd: Macd::new(fast, slow, signal),
            previous_histogram: None,
        }
    }
}

impl Strategy for MacdCrossover {
    fn name(&self) -> &'static str {
        "macd"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        let value = self.macd.update(bar.close)?;
        let previous = self.previous_histogram.replace(value.histogram)?;
        let direction = if previous <= 0.0 && value.histogram > 0.0 {
            SignalDirection::Long
        } else if previous >= 0.0 && value.histogram < 0.0 {
            SignalDirection::Short
        } else {
            return None;
        };
        let strength = (value.histogram.abs() / bar.close.max(f64::MIN_POSITIVE)) * 1000.0;
        Some(StrategySignal {
            direction,
            confidence: (0.55 + strength).min(1.0),
            reason: match direction {
                SignalDirection::Long => "MACD crossed above its signal line",
                _ => "MACD crossed below its signal line",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trend_reversal_gives_a_short_then_a_long() {
        let mut s = MacdCrossover::new(3, 6, 3);
        let mut prices: Vec<f64> = (0..30).map(|i| 100.0 + i as f64).collect();
        prices.extend((0..30).map(|i| 130.0 - 2.0 * i as f64));
        prices.extend((0..30).map(|i| 70.0 + 3.0 * i as f64));
        let signals: Vec<SignalDirection> = prices
            .iter()
            .filter_map(|p| s.on_bar(&Bar::flat(*p)))
            .map(|x| x.direction)
            .collect();
        assert_eq!(signals, vec![SignalDirection::Short, SignalDirection::Long]);
    }
}
