//! Candlestick patterns over the last three bars, in the context of a short
//! trend (close against its 10-bar average): doji, hammer, shooting star,
//! bullish/bearish engulfing, bullish/bearish harami, morning and evening
//! star. When several patterns match, the strongest directional one speaks.

use std::collections::VecDeque;

use bus_core::message::payload::SignalDirection;

use crate::indicators::Sma;
use crate::strategy::{Bar, Strategy, StrategySignal};

/// A recognised pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Open and close nearly equal: indecision.
    Doji,
    /// Long lower shadow after a fall: bullish.
    Hammer,
    /// Long upper shadow after a rise: bearish.
    ShootingStar,
    /// A bullish body swallowing the previous bearish one.
    BullishEngulfing,
    /// A bearish body swallowing the previous bullish one.
    BearishEngulfing,
    /// A small bullish body inside the previous large bearish one.
    BullishHarami,
    /// A small bearish body inside the previous large bullish one.
    BearishHarami,
    /// Bearish bar, small bar, strong bullish bar.
    MorningStar,
    /// Bullish bar, small bar, strong bearish bar.
    EveningStar,
}

impl Pattern {
    /// The pattern's name.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Doji => "Doji",
            Pattern::Hammer => "Hammer",
            Pattern::ShootingStar => "ShootingStar",
            Pattern::BullishEngulfing => "BullishEngulfing",
            Pattern::BearishEngulfing => "BearishEngulfing",
            Pattern::BullishHarami => "BullishHarami",
            Pattern::BearishHarami => "BearishHarami",
            Pattern::MorningStar => "MorningStar",
            Pattern::EveningStar => "EveningStar",
        }
    }

    /// Direction and confidence the pattern implies.
    pub fn signal(self) -> (SignalDirection, f64) {
        use SignalDirection::*;
        match self {
            Pattern::Doji => (Neutral, 0.3),
            Pattern::Hammer => (Long, 0.65),
            Pattern::ShootingStar => (Short, 0.65),
            Pattern::BullishEngulfing => (Long, 0.75),
            Pattern::BearishEngulfing => (Short, 0.75),
            Pattern::BullishHarami => (Long, 0.6),
            Pattern::BearishHarami => (Short, 0.6),
            Pattern::MorningStar => (Long, 0.8),
            Pattern::EveningStar => (Short, 0.8),
        }
    }
}

/// Patterns in `bars` (oldest first, the last is the newest bar).
/// `trend` is +1 for a rising market, -1 falling, 0 unknown.
pub fn detect(bars: &[Bar], trend: i8) -> Vec<Pattern> {
    let mut found = Vec::new();
    let Some(cur) = bars.last() else {
        return found;
    };
    let range = cur.range();
    if range <= 0.0 {
        return found;
    }
    let body = cur.body();
    if body <= 0.1 * range {
        found.push(Pattern::Doji);
    }
    if body > 0.0
        && cur.lower_shadow() >= 2.0 * body
        && cur.upper_shadow() <= 0.5 * body
        && trend < 0
    {
        found.push(Pattern::Hammer);
    }
    if body > 0.0
        && cur.upper_shadow() >= 2.0 * body
        && cur.lower_shadow() <= 0.5 * body
        && trend > 0
    {
        found.push(Pattern::ShootingStar);
    }
    if bars.len() >= 2 {
        let prev = &bars[bars.len() - 2];
        if prev.is_bearish()
            && cur.is_bullish()
            && cur.open <= prev.close
            && cur.close >= prev.open
            && body > prev.body()
        {
            found.push(Pattern::BullishEngulfing);
        }
        if prev.is_bullish()
            && cur.is_bearish()
            && cur.open >= prev.close
            && cur.close <= prev.open
            && body > prev.body()
        {
            found.push(Pattern::BearishEngulfing);
        }
        let inside = cur.open.max(cur.close) < prev.open.max(prev.close)
            && cur.open.min(cur.close) > prev.open.min(prev.close)
            && body < 0.5 * prev.body();
        if inside && prev.is_bearish() && cur.is_bullish() {
            found.push(Pattern::BullishHarami);
        }
        if inside && prev.is_bullish() && cur.is_bearish() {
            found.push(Pattern::BearishHarami);
        }
    }
    if bars.len() >= 3 {
        let (first, middle) = (&bars[bars.len() - 3], &bars[bars.len() - 2]);
        let small_middle = middle.body() <= 0.3 * first.body();
        let first_mid = (first.open + first.close) / 2.0;
        if first.is_bearish() && small_middle && cur.is_bullish() && cur.close > first_mid {
            found.push(Pattern::MorningStar);
        }
        if first.is_bullish() && small_middle && cur.is_bearish() && cur.close < first_mid {
            found.push(Pattern::EveningStar);
        }
    }
    found
}

/// The candlestick strategy.
#[derive(Debug, Clone)]
pub struct CandlestickPatterns {
    bars: VecDeque<Bar>,
    trend: Sma,
}

impl Default for CandlestickPatterns {
    fn default() -> Self {
        Self::new()
    }
}

impl CandlestickPatterns {
    /// A fresh strategy.
    pub fn new() -> Self {
        Self {
            bars: VecDeque::with_capacity(4),
            trend: Sma::new(10),
        }
    }
}

impl Strategy for CandlestickPatterns {
    fn name(&self) -> &str {
        "candlestick"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        // The trend is judged on the bars before this one.
        let average = self
            .trend
            .window()
            .len()
            .eq(&10)
            .then(|| self.trend.window().iter().sum::<f64>() / 10.0);
        let trend = match (average, self.bars.back()) {
            (Some(avg), Some(prev)) if prev.close < avg => -1,
            (Some(avg), Some(prev)) if prev.close > avg => 1,
            _ => 0,
        };
        self.trend.update(bar.close);
        self.bars.push_back(*bar);
        if self.bars.len() > 3 {
            self.bars.pop_front();
        }
        let bars: Vec<Bar> = self.bars.iter().copied().collect();
        let best = detect(&bars, trend)
            .into_iter()
            .filter(|p| p.signal().0 != SignalDirection::Neutral)
            .max_by(|a, b| a.signal().1.total_cmp(&b.signal().1))?;
        let (direction, confidence) = best.signal();
        Some(StrategySignal {
            direction,
            confidence,
            reason: best.name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(open: f64, high: f64, low: f64, close: f64) -> Bar {
        Bar {
            open,
            high,
            low,
            close,
            volume: 1.0,
        }
    }

    #[test]
    fn recognises_each_pattern() {
        let cases: Vec<(Vec<Bar>, i8, Pattern)> = vec![
            (vec![b(10.0, 11.0, 9.0, 10.05)], 0, Pattern::Doji),
            (vec![b(10.0, 10.25, 7.0, 10.2)], -1, Pattern::Hammer),
            (vec![b(10.0, 13.0, 9.95, 10.2)], 1, Pattern::ShootingStar),
            (
                vec![b(10.0, 10.1, 9.0, 9.2), b(9.0, 10.6, 8.9, 10.5)],
                0,
                Pattern::BullishEngulfing,
            ),
            (
                vec![b(9.2, 10.1, 9.0, 10.0), b(10.2, 10.3, 8.9, 9.0)],
                0,
                Pattern::BearishEngulfing,
            ),
            (
                vec![b(12.0, 12.1, 8.9, 9.0), b(10.0, 10.6, 9.8, 10.5)],
                0,
                Pattern::BullishHarami,
            ),
            (
                vec![b(9.0, 12.1, 8.9, 12.0), b(11.0, 11.2, 10.4, 10.5)],
                0,
                Pattern::BearishHarami,
            ),
            (
                vec![
                    b(12.0, 12.1, 9.9, 10.0),
                    b(9.8, 10.0, 9.5, 9.9),
                    b(10.0, 11.8, 9.9, 11.5),
                ],
                0,
                Pattern::MorningStar,
            ),
            (
                vec![
                    b(10.0, 12.1, 9.9, 12.0),
                    b(12.1, 12.4, 12.0, 12.2),
                    b(12.0, 12.1, 10.2, 10.5),
                ],
                0,
                Pattern::EveningStar,
            ),
        ];
        for (bars, trend, expected) in cases {
            let found = detect(&bars, trend);
            assert!(found.contains(&expected), "{expected:?} not in {found:?}");
        }
    }

    #[test]
    fn hammer_needs_a_falling_market() {
        assert!(!detect(&[b(10.0, 10.3, 7.0, 10.2)], 1).contains(&Pattern::Hammer));
    }

    #[test]
    fn strategy_emits_the_strongest_directional_pattern() {
        let mut s = CandlestickPatterns::new();
        s.on_bar(&b(12.0, 12.1, 9.9, 10.0));
        s.on_bar(&b(9.8, 10.0, 9.5, 9.9));
        let signal = s.on_bar(&b(10.0, 11.8, 9.9, 11.5)).unwrap();
        assert_eq!(signal.direction, SignalDirection::Long);
        assert_eq!(signal.reason, "MorningStar");
    }
}
