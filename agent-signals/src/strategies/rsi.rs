//! RSI reversal: long when RSI leaves the oversold zone upwards, short when
//! it leaves the overbought zone downwards.

use bus_core::model::payload::SignalDirection;

use crate::indicators::Rsi;
use crate::strategy::{Bar, Strategy, StrategySignal};

/// RSI threshold reversal.
#[derive(Debug, Clone)]
pub struct RsiReversal {
    rsi: Rsi,
    oversold: f64,
    overbought: f64,
    previous: Option<f64>,
}

impl RsiReversal {
    /// RSI(`period`) with the given zones (e.g. 30 / 70).
    pub fn new(period: usize, oversold: f64, overbought: f64) -> Self {
        Self {
            rsi: Rsi::new(period),
            oversold,
            overbought,
            previous: None,
        }
    }
}

impl Strategy for RsiReversal {
    fn name(&self) -> &'static str {
        "rsi"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        let rsi = self.rsi.update(bar.close)?;
        let previous = self.previous.replace(rsi)?;
        let (direction, depth) = if previous < self.oversold && rsi >= self.oversold {
            (
                SignalDirection::Long,
                (self.oversold - previous) / self.oversold.max(1.0),
            )
        } else if previous > self.overbought && rsi <= self.overbought {
            (
                SignalDirection::Short,
                (previous - self.overbought) / (100.0 - self.overbought).max(1.0),
            )
        } else {
            return None;
        };
        Some(StrategySignal {
            direction,
            confidence: (0.6 + depth).clamp(0.0, 1.0),
            reason: match direction {
                SignalDirection::Long => "RSI left the oversold zone",
                _ => "RSI left the overbought zone",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_oversold_is_long() {
        let mut s = RsiReversal::new(3, 30.0, 70.0);
        let mut signals = Vec::new();
        for p in [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 7.0, 9.0] {
            signals.extend(s.on_bar(&Bar::flat(p)).map(|x| x.direction));
        }
        assert_eq!(signals, vec![SignalDirection::Long]);
    }
}
