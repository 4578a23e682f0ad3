//! Bollinger reversion: long when the close falls below the lower band,
//! short when it rises above the upper band.

use bus_core::model::payload::SignalDirection;

use crate::indicators::Bollinger;
use crate::strategy::{Bar, Strategy, StrategySignal};

/// Band-touch mean reversion.
#[derive(Debug, Clone)]
pub struct BollingerReversion {
    bands: Bollinger,
}

impl BollingerReversion {
    /// Bands over `period` bars at `k` deviations.
    pub fn new(period: usize, k: f64) -> Self {
        Self {
            bands: Bollinger::new(period, k),
        }
    }
}

impl Strategy for BollingerReversion {
    fn name(&self) -> &'static str {
        "bollinger"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        let bands = self.bands.update(bar.close)?;
        let half_width = (bands.upper - bands.middle).max(f64::MIN_POSITIVE);
        let (direction, excess) = if bar.close < bands.lower {
            (
                SignalDirection::Long,
                (bands.lower - bar.close) / half_width,
            )
        } else if bar.close > bands.upper {
            (
                SignalDirection::Short,
                (bar.close - bands.upper) / half_width,
            )
        } else {
            return None;
        };
        Some(StrategySignal {
            direction,
            confidence: (0.5 + excess).min(1.0),
            // Fixed text: formatting floats for every signal dominated backtests.
            reason: match direction {
                SignalDirection::Long => "close below the lower Bollinger band",
                _ => "close above the upper Bollinger band",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spike_above_the_band_is_short() {
        let calm = [10.0, 10.1, 9.9, 10.0, 10.1, 9.9, 10.0, 10.1, 9.9, 10.0];
        let mut s = BollingerReversion::new(10, 2.0);
        for p in calm {
            assert!(s.on_bar(&Bar::flat(p)).is_none());
        }
        assert_eq!(
            s.on_bar(&Bar::flat(12.0)).unwrap().direction,
            SignalDirection::Short
        );
        let mut s = BollingerReversion::new(10, 2.0);
        for p in calm {
            s.on_bar(&Bar::flat(p));
        }
        assert_eq!(
            s.on_bar(&Bar::flat(8.0)).unwrap().direction,
            SignalDirection::Long
        );
    }
}
