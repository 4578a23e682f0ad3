//! Moving-average crossover: long when the fast SMA crosses above the slow
//! one, short when it crosses below. Confidence grows with the gap.

use bus_core::model::payload::SignalDirection;

use crate::indicators::Sma;
use crate::strategy::{Bar, Strategy, StrategySignal};

/// Fast/slow SMA crossover.
#[derive(Debug, Clone)]
pub struct MovingAverageCrossover {
    fast: Sma,
    slow: Sma,
    /// Fast minus slow at the last bar where they differed.
    previous_diff: Option<f64>,
}

impl MovingAverageCrossover {
    /// Crossover of SMA(`fast`) and SMA(`slow`).
    pub fn new(fast: usize, slow: usize) -> Self {
        Self {
            fast: Sma::new(fast),
            slow: Sma::new(slow),
            previous_diff: None,
        }
    }
}

impl Strategy for MovingAverageCrossover {
    fn name(&self) -> &'static str {
        "ma_crossover"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        let fast = self.fast.update(bar.close);
        let slow = self.slow.update(bar.close)?;
        let diff = fast? - slow;
        if diff == 0.0 {
            // Touching is not crossing: remember the last side the fast SMA was on.
            return None;
        }
        let previous = self.previous_diff.replace(diff)?;
        let direction = if previous < 0.0 && diff > 0.0 {
            SignalDirection::Long
        } else if previous > 0.0 && diff < 0.0 {
            SignalDirection::Short
        } else {
            return None;
        };
        let confidence = (0.6 + (diff.abs() / slow) * 100.0).min(1.0);
        Some(StrategySignal {
            direction,
            confidence,
            reason: match direction {
                SignalDirection::Long => "fast SMA crossed above the slow SMA",
                _ => "fast SMA crossed below the slow SMA",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_up_then_down() {
        let mut s = MovingAverageCrossover::new(2, 4);
        let prices = [10.0, 10.0, 10.0, 10.0, 9.0, 12.0, 14.0, 15.0, 9.0, 7.0];
        let signals: Vec<(usize, SignalDirection)> = prices
            .iter()
            .enumerate()
            .filter_map(|(i, p)| s.on_bar(&Bar::flat(*p)).map(|sig| (i, sig.direction)))
            .collect();
        assert_eq!(
            signals,
            vec![(5, SignalDirection::Long), (8, SignalDirection::Short)]
        );
    }
}
