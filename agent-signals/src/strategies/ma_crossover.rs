//! Moving-average crossover: long when the fast SMA crosses above the slow
//! one, short when it crosses below. Confidence grows with the gap.

use bus_core::model::payload::SignalDirection;

use crate::indicators::ExactSma;
use crate::strategy::{Bar, Strategy, StrategySignal};

/// Fast/slow SMA crossover, compared exactly (see [`ExactSma`]).
#[derive(Debug, Clone)]
pub struct MovingAverageCrossover {
    fast: ExactSma,
    slow: ExactSma,
    /// The side the fast SMA was on at the last bar where they differed.
    previous_side: Option<std::cmp::Ordering>,
}

impl MovingAverageCrossover {
    /// Crossover of SMA(`fast`) and SMA(`slow`).
    pub fn new(fast: usize, slow: usize) -> Self {
        Self {
            fast: ExactSma::new(fast),
            slow: ExactSma::new(slow),
            previous_side: None,
        }
    }
}

impl Strategy for MovingAverageCrossover {
    fn name(&self) -> &'static str {
        "ma_crossover"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let fast_ready = self.fast.update(bar.close_units);
        if !self.slow.update(bar.close_units) || !fast_ready {
            return None;
        }
        let side = self.fast.cmp_average(&self.slow);
        if side == Equal {
            // Touching is not crossing: remember the last side the fast SMA was on.
            return None;
        }
        let direction = match (self.previous_side.replace(side)?, side) {
            (Less, Greater) => SignalDirection::Long,
            (Greater, Less) => SignalDirection::Short,
            _ => return None,
        };
        let (fast, slow) = (self.fast.average(), self.slow.average());
        let confidence = (0.6 + ((fast - slow).abs() / slow) * 100.0).min(1.0);
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

#[cfg(test)]
mod exactness {
    use super::*;

    /// The crossings of SMA(10) and SMA(20), recomputed from the windows
    /// in exact integer arithmetic at every bar (the obviously correct
    /// way): direction per bar, `None` where there is none.
    fn oracle(prices: &[i64]) -> Vec<Option<SignalDirection>> {
        let mut side = 0i8;
        (0..prices.len())
            .map(|i| {
                if i + 1 < 20 {
                    return None;
                }
                let fast: i128 = prices[i + 1 - 10..=i].iter().map(|&p| p as i128).sum();
                let slow: i128 = prices[i + 1 - 20..=i].iter().map(|&p| p as i128).sum();
                let now = (fast * 2).cmp(&slow) as i8;
                if now == 0 {
                    return None;
                }
                let before = std::mem::replace(&mut side, now);
                match (before, now) {
                    (-1, 1) => Some(SignalDirection::Long),
                    (1, -1) => Some(SignalDirection::Short),
                    _ => None,
                }
            })
            .collect()
    }

    /// Two million bars of 8-decimal prices with many exact touches (flat
    /// stretches, then a move either way): the strategy signals exactly
    /// where the exact oracle does, however long the series.
    #[test]
    fn crossings_over_millions_of_bars_match_exact_arithmetic() {
        let mut state: u64 = 42;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut units = Vec::with_capacity(2_000_000);
        let mut flat_left = 0;
        let mut price = 3_500_000_000_000_i64;
        for i in 0..2_000_000 {
            if flat_left > 0 {
                flat_left -= 1;
            } else if i % 997 == 0 {
                flat_left = 25;
            } else {
                let level = 35_000.0 + 5_000.0 * (i as f64 / 5_000.0).sin();
                price = ((level + (next() - 0.5) * 400.0) * 1e8).round() as i64;
            }
            units.push(price);
        }
        let expected = oracle(&units);
        let mut s = MovingAverageCrossover::new(10, 20);
        let mut mismatches = Vec::new();
        for (i, &u) in units.iter().enumerate() {
            let got = s.on_bar(&Bar::flat(u as f64 / 1e8)).map(|x| x.direction);
            if got != expected[i] && mismatches.len() < 5 {
                mismatches.push((i, got, expected[i]));
            }
        }
        assert!(
            mismatches.is_empty(),
            "bar, strategy, exact: {mismatches:?}"
        );
        assert!(
            expected.iter().flatten().count() > 10_000,
            "the series crosses"
        );
    }

    /// Equal averages of decimal prices that binary floating point cannot
    /// hold exactly: still a touch.
    #[test]
    fn an_exact_tie_of_decimal_prices_is_a_touch() {
        let mut s = MovingAverageCrossover::new(2, 4);
        // Fast above slow, then SMA2 = SMA4 = 0.2 exactly: a touch, then
        // the fast one goes back above: no crossing at any point.
        let prices = [0.3, 0.1, 0.1, 0.3, 0.1, 0.3, 0.3, 0.3];
        let signals: Vec<_> = prices
            .iter()
            .filter_map(|p| s.on_bar(&Bar::flat(*p)))
            .collect();
        assert!(signals.is_empty(), "{signals:?}");
    }
}
