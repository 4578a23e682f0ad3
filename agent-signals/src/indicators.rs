//! Streaming indicators: feed one value at a time, read the latest value
//! once enough data has been seen.

use std::collections::VecDeque;

/// Simple moving average over `period` values.
#[derive(Debug, Clone)]
pub struct Sma {
    period: usize,
    window: VecDeque<f64>,
    sum: f64,
}

impl Sma {
    /// An SMA of `period` (at least 1).
    pub fn new(period: usize) -> Self {
        Self {
            period: period.max(1),
            window: VecDeque::with_capacity(period.max(1) + 1),
            sum: 0.0,
        }
    }

    /// Adds a value; the average once `period` values were seen.
    pub fn update(&mut self, value: f64) -> Option<f64> {
        self.window.push_back(value);
        self.sum += value;
        if self.window.len() > self.period {
            self.sum -= self.window.pop_front().unwrap_or(0.0);
        }
        (self.window.len() == self.period).then(|| self.sum / self.period as f64)
    }

    /// The values in the window, oldest first.
    pub fn window(&self) -> &VecDeque<f64> {
        &self.window
    }
}

/// Simple moving average of exact fixed-point values (prices in units of
/// 10⁻⁸, [`Bar::close_units`](crate::strategy::Bar::close_units)): its
/// running sum never drifts, however long the series, and two of them
/// compare exactly, so an exact touch stays a touch.
#[derive(Debug, Clone)]
pub struct ExactSma {
    period: usize,
    window: VecDeque<i128>,
    sum: i128,
}

impl ExactSma {
    /// An SMA of `period` (at least 1).
    pub fn new(period: usize) -> Self {
        Self {
            period: period.max(1),
            window: VecDeque::with_capacity(period.max(1) + 1),
            sum: 0,
        }
    }

    /// Adds a value; whether `period` values have been seen.
    pub fn update(&mut self, units: i128) -> bool {
        self.window.push_back(units);
        self.sum += units;
        if self.window.len() > self.period {
            self.sum -= self.window.pop_front().unwrap_or(0);
        }
        self.window.len() == self.period
    }

    /// How this average compares with `other`'s, exactly.
    pub fn cmp_average(&self, other: &ExactSma) -> std::cmp::Ordering {
        (self.sum * other.period as i128).cmp(&(other.sum * self.period as i128))
    }

    /// The average, in the value's units, as `f64` (for display and
    /// confidence, never for comparisons).
    pub fn average(&self) -> f64 {
        self.sum as f64 / self.period as f64
    }
}

/// Exponential moving average seeded with the SMA of the first `period` values.
#[derive(Debug, Clone)]
pub struct Ema {
    alpha: f64,
    seed: Sma,
    value: Option<f64>,
}

impl Ema {
    /// An EMA of `period`.
    pub fn new(period: usize) -> Self {
        Self {
            alpha: 2.0 / (period.max(1) as f64 + 1.0),
            seed: Sma::new(period),
            value: None,
        }
    }

    /// Adds a value; the EMA once seeded.
    pub fn update(&mut self, value: f64) -> Option<f64> {
        self.value = match self.value {
            Some(previous) => Some(previous + self.alpha * (value - previous)),
            None => self.seed.update(value),
        };
        self.value
    }
}

/// Relative strength index with Wilder's smoothing.
#[derive(Debug, Clone)]
pub struct Rsi {
    period: usize,
    previous: Option<f64>,
    seen: usize,
    gain: f64,
    loss: f64,
}

impl Rsi {
    /// An RSI of `period`.
    pub fn new(period: usize) -> Self {
        Self {
            period: period.max(1),
            previous: None,
            seen: 0,
            gain: 0.0,
            loss: 0.0,
        }
    }

    /// Adds a close; the RSI (0..=100) once `period` changes were seen.
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let previous = self.previous.replace(close)?;
        let change = close - previous;
        let (gain, loss) = (change.max(0.0), (-change).max(0.0));
        let n = self.period as f64;
        self.seen += 1;
        if self.seen <= self.period {
            self.gain += gain / n;
            self.loss += loss / n;
            if self.seen < self.period {
                return None;
            }
        } else {
            self.gain = (self.gain * (n - 1.0) + gain) / n;
            self.loss = (self.loss * (n - 1.0) + loss) / n;
        }
        Some(if self.loss == 0.0 {
            if self.gain == 0.0 {
                50.0
            } else {
                100.0
            }
        } else {
            100.0 - 100.0 / (1.0 + self.gain / self.loss)
        })
    }
}

/// MACD line, signal line and histogram.
#[derive(Debug, Clone)]
pub struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
}

/// One MACD reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    /// Fast EMA minus slow EMA.
    pub macd: f64,
    /// EMA of the MACD line.
    pub signal: f64,
    /// MACD minus signal.
    pub histogram: f64,
}

impl Macd {
    /// MACD(fast, slow, signal), classically (12, 26, 9).
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        Self {
            fast: Ema::new(fast),
            slow: Ema::new(slow),
            signal: Ema::new(signal),
        }
    }

    /// Adds a close.
    pub fn update(&mut self, close: f64) -> Option<MacdValue> {
        let fast = self.fast.update(close);
        let slow = self.slow.update(close)?;
        let macd = fast? - slow;
        let signal = self.signal.update(macd)?;
        Some(MacdValue {
            macd,
            signal,
            histogram: macd - signal,
        })
    }
}

/// Bollinger bands: SMA plus and minus `k` standard deviations.
#[derive(Debug, Clone)]
pub struct Bollinger {
    sma: Sma,
    k: f64,
}

/// One band reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    /// Lower band.
    pub lower: f64,
    /// Middle band (the SMA).
    pub middle: f64,
    /// Upper band.
    pub upper: f64,
}

impl Bollinger {
    /// Bands over `period` values at `k` deviations.
    pub fn new(period: usize, k: f64) -> Self {
        Self {
            sma: Sma::new(period),
            k,
        }
    }

    /// Adds a close.
    pub fn update(&mut self, close: f64) -> Option<Bands> {
        let middle = self.sma.update(close)?;
        let n = self.sma.window().len() as f64;
        let variance = self
            .sma
            .window()
            .iter()
            .map(|x| (x - middle).powi(2))
            .sum::<f64>()
            / n;
        let width = self.k * variance.sqrt();
        Some(Bands {
            lower: middle - width,
            middle,
            upper: middle + width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sma_and_ema_known_values() {
        let mut sma = Sma::new(3);
        let values: Vec<Option<f64>> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(|v| sma.update(*v))
            .collect();
        assert_eq!(values, vec![None, None, Some(2.0), Some(3.0)]);
        let mut ema = Ema::new(3);
        ema.update(1.0);
        ema.update(2.0);
        assert_eq!(ema.update(3.0), Some(2.0));
        assert_eq!(ema.update(4.0), Some(3.0));
    }

    #[test]
    fn rsi_extremes_and_range() {
        let mut up = Rsi::new(5);
        let last = (0..20).map(|i| up.update(i as f64)).last().flatten();
        assert_eq!(last, Some(100.0));
        let mut down = Rsi::new(5);
        let last = (0..20).map(|i| down.update(-(i as f64))).last().flatten();
        assert_eq!(last, Some(0.0));
        let mut mixed = Rsi::new(14);
        for i in 0..200 {
            if let Some(v) = mixed.update(100.0 + ((i * 7919) % 13) as f64) {
                assert!((0.0..=100.0).contains(&v));
            }
        }
    }

    #[test]
    fn bollinger_of_constant_series_is_flat() {
        let mut b = Bollinger::new(4, 2.0);
        let bands = (0..5).map(|_| b.update(10.0)).last().flatten().unwrap();
        assert_eq!((bands.lower, bands.middle, bands.upper), (10.0, 10.0, 10.0));
    }

    #[test]
    fn macd_turns_positive_on_an_uptrend() {
        let mut m = Macd::new(3, 6, 3);
        let v = (0..40)
            .map(|i| m.update(100.0 + i as f64))
            .last()
            .flatten()
            .unwrap();
        assert!(v.macd > 0.0);
    }
}
