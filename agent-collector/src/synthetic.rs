//! A seeded synthetic market: geometric Brownian motion with regime changes.
//!
//! Each symbol walks its own path; every step the market may switch regime
//! (calm, trending up, trending down, turbulent), which changes drift and
//! volatility for all symbols. Each bar is built from several sub-steps so
//! high and low are real extremes of the path. Prices are rounded to cents
//! and kept positive; the same seed always gives the same candles.

use bus_core::model::payload::{Candle, CandleFields, Symbol};
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::Decimal;

use crate::error::CollectorError;
use crate::random::SplitMix64;
use crate::source::CandleSource;

/// One symbol of the synthetic market.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    /// The symbol.
    pub symbol: Symbol,
    /// First open price.
    pub start_price: f64,
}

/// The synthetic market's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Symbols and their starting prices.
    pub symbols: Vec<SymbolSpec>,
    /// Bars per symbol.
    pub candles: usize,
    /// Bar length in milliseconds.
    pub interval_ms: i64,
    /// Interval label used in topics.
    pub interval: std::sync::Arc<str>,
    /// Open time of the first bar.
    pub start_time_ms: i64,
    /// Random seed.
    pub seed: u64,
    /// Per-bar volatility in the calm regime (e.g. 0.002 = 0.2 %).
    pub volatility: f64,
    /// Chance per bar of a regime change.
    pub regime_change_probability: f64,
}

impl SyntheticSpec {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), CollectorError> {
        let bad = |m: &str| Err(CollectorError::BadSpec(m.to_string()));
        if self.symbols.is_empty() {
            return bad("at least one symbol is needed");
        }
        if self
            .symbols
            .iter()
            .any(|s| !(s.start_price > 0.0 && s.start_price.is_finite()))
        {
            return bad("start prices must be positive");
        }
        if self.interval_ms <= 0 {
            return bad("interval_ms must be positive");
        }
        if !(self.volatility > 0.0 && self.volatility < 0.5) {
            return bad("volatility must be within (0, 0.5)");
        }
        if !(0.0..=1.0).contains(&self.regime_change_probability) {
            return bad("regime_change_probability must be within 0..=1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Regime {
    drift: f64,
    volatility_factor: f64,
}

const REGIMES: [Regime; 4] = [
    Regime {
        drift: 0.0,
        volatility_factor: 1.0,
    },
    Regime {
        drift: 0.0004,
        volatility_factor: 1.2,
    },
    Regime {
        drift: -0.0004,
        volatility_factor: 1.4,
    },
    Regime {
        drift: 0.0,
        volatility_factor: 2.5,
    },
];

const SUB_STEPS: usize = 4;

/// The generator.
#[derive(Debug, Clone)]
pub struct SyntheticMarket {
    spec: SyntheticSpec,
    rng: SplitMix64,
    prices: Vec<f64>,
    regime: usize,
    step: usize,
}

impl SyntheticMarket {
    /// A market at its first bar.
    pub fn new(spec: SyntheticSpec) -> Result<Self, CollectorError> {
        spec.validate()?;
        Ok(Self {
            rng: SplitMix64::new(spec.seed),
            prices: spec.symbols.iter().map(|s| s.start_price).collect(),
            regime: 0,
            step: 0,
            spec,
        })
    }

    /// Rounds to cents through an integer: much cheaper than converting
    /// the binary float to a decimal exactly and rounding that.
    fn cents(value: f64) -> Decimal {
        // Never below one cent (clamped before converting: cheaper than
        // comparing decimals).
        Self::fixed(value.max(0.01), 2)
    }

    fn fixed(value: f64, scale: u32) -> Decimal {
        let scaled = (value * 10f64.powi(scale as i32)).round();
        if scaled.is_finite() && scaled.abs() < 9.0e15 {
            Decimal::new(scaled as i64, scale)
        } else {
            Decimal::from_f64(value)
                .unwrap_or(Decimal::ONE)
                .round_dp(scale)
        }
    }
}

impl CandleSource for SyntheticMarket {
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError> {
        if self.step >= self.spec.candles {
            return Ok(None);
        }
        if self.rng.uniform() < self.spec.regime_change_probability {
            self.regime = (self.rng.next_u64() % REGIMES.len() as u64) as usize;
        }
        let regime = REGIMES[self.regime];
        let sigma = self.spec.volatility * regime.volatility_factor / (SUB_STEPS as f64).sqrt();
        let mu = regime.drift / SUB_STEPS as f64;
        let open_time_ms = self.spec.start_time_ms + self.step as i64 * self.spec.interval_ms;
        let mut batch = Vec::with_capacity(self.prices.len());
        for (i, spec) in self.spec.symbols.iter().enumerate() {
            // Extremes are tracked in f64 and rounded once: rounding to
            // cents is monotonic, so high >= open, close >= low still holds.
            let mut price = self.prices[i];
            let (mut high, mut low) = (price, price);
            for _ in 0..SUB_STEPS {
                let shock = self.rng.normal();
                price *= (mu - 0.5 * sigma * sigma + sigma * shock).exp();
                high = high.max(price);
                low = low.min(price);
            }
            let open = Self::cents(self.prices[i]);
            let (high, low) = (Self::cents(high), Self::cents(low));
            self.prices[i] = price;
            let close = Self::cents(price);
            let volume = Self::fixed((self.rng.normal() * 0.5).exp() * 10.0, 4);
            let candle = Candle::new(CandleFields {
                symbol: spec.symbol.clone(),
                interval: self.spec.interval.clone(),
                open_time_ms,
                open,
                high,
                low,
                close,
                volume,
            })
            .map_err(|e| CollectorError::BadSpec(e.to_string()))?;
            batch.push(candle);
        }
        self.step += 1;
        Ok(Some(batch))
    }

    fn interval(&self) -> &str {
        &self.spec.interval
    }
}

/// A two-market spec for this crate's tests: BTC and ETH from 100, one
/// minute bars from time 0.
#[cfg(test)]
pub(crate) fn test_spec(candles: usize, seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        symbols: ["BTC", "ETH"]
            .iter()
            .map(|s| SymbolSpec {
                symbol: Symbol::new(*s).unwrap(),
                start_price: 100.0,
            })
            .collect(),
        candles,
        interval_ms: 60_000,
        interval: "1m".into(),
        start_time_ms: 0,
        seed,
        volatility: 0.002,
        regime_change_probability: 0.01,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            symbols: vec![
                SymbolSpec {
                    symbol: Symbol::new("BTC").unwrap(),
                    start_price: 30_000.0,
                },
                SymbolSpec {
                    symbol: Symbol::new("ETH").unwrap(),
                    start_price: 2_000.0,
                },
            ],
            candles: 500,
            interval_ms: 60_000,
            interval: "1m".into(),
            start_time_ms: 1_700_000_000_000,
            seed,
            volatility: 0.002,
            regime_change_probability: 0.01,
        }
    }

    fn all(seed: u64) -> Vec<Candle> {
        let mut m = SyntheticMarket::new(spec(seed)).unwrap();
        let mut out = Vec::new();
        while let Some(batch) = m.next_batch().unwrap() {
            out.extend(batch);
        }
        out
    }

    #[test]
    fn same_seed_same_market_and_valid_candles() {
        let a = all(7);
        assert_eq!(a.len(), 1000);
        assert_eq!(a, all(7));
        assert_ne!(a, all(8));
        for pair in a.chunks(2).collect::<Vec<_>>().windows(2) {
            assert_eq!(pair[1][0].open_time_ms - pair[0][0].open_time_ms, 60_000);
        }
        // Prices move: not a constant series.
        let closes: std::collections::BTreeSet<_> = a.iter().map(|c| c.close).collect();
        assert!(closes.len() > 100);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(1);
        s.symbols.clear();
        assert!(SyntheticMarket::new(s).is_err());
        let mut s = spec(1);
        s.volatility = -1.0;
        assert!(SyntheticMarket::new(s).is_err());
    }
}
