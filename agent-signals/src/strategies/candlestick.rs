//! Candlestick patterns over the last three bars, in the context of a short
//! trend (close against its 10-bar average): doji, hammer, shooting star,
//! bullish/bearish engulfing, bullish/bearish harami, morning and evening
//! star. When several patterns match, the strongest directional one speaks.

use std::fmt;

use bus_core::model::payload::SignalDirection;

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
    /// Every pattern, in the order `detect` looks for them.
    pub const ALL: [Pattern; 9] = [
        Pattern::Doji,
        Pattern::Hammer,
        Pattern::ShootingStar,
        Pattern::BullishEngulfing,
        Pattern::BearishEngulfing,
        Pattern::BullishHarami,
        Pattern::BearishHarami,
        Pattern::MorningStar,
        Pattern::EveningStar,
    ];

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

/// A set of patterns (a bit each): what [`detect`] found, without an
/// allocation per bar.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct PatternSet(u16);

impl PatternSet {
    fn push(&mut self, pattern: Pattern) {
        self.0 |= 1 << pattern as u16;
    }

    /// Is `pattern` in the set?
    pub fn contains(&self, pattern: &Pattern) -> bool {
        self.0 & (1 << *pattern as u16) != 0
    }

    /// True when no pattern was found.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The patterns, in [`Pattern::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Pattern> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let next = Pattern::ALL.get(bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
            Some(*next)
        })
    }
}

impl fmt::Debug for PatternSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Patterns in `bars` (oldest first, the last is the newest bar).
/// `trend` is +1 for a rising market, -1 falling, 0 unknown.
pub fn detect(bars: &[Bar], trend: i8) -> PatternSet {
    let mut found = PatternSet::default();
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
    /// The last three bars, oldest first; `seen` of them are filled.
    bars: [Bar; 3],
    seen: usize,
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
            bars: [Bar::flat(0.0); 3],
            seen: 0,
            trend: Sma::new(10),
        }
    }
}

impl Strategy for CandlestickPatterns {
    fn name(&self) -> &'static str {
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
        let previous = self.seen.checked_sub(1).map(|last| &self.bars[last]);
        let trend = match (average, previous) {
            (Some(avg), Some(prev)) if prev.close < avg => -1,
            (Some(avg), Some(prev)) if prev.close > avg => 1,
            _ => 0,
        };
        self.trend.update(bar.close);
        if self.seen == self.bars.len() {
            self.bars.rotate_left(1);
        } else {
            self.seen += 1;
        }
        self.bars[self.seen - 1] = *bar;
        // The strongest directional pattern; the later one on a tie.
        let mut best = None;
        for pattern in detect(&self.bars[..self.seen], trend).iter() {
            let (direction, confidence) = pattern.signal();
            if direction != SignalDirection::Neutral
                && best.is_none_or(|(_, _, strongest)| confidence >= strongest)
            {
                best = Some((pattern, direction, confidence));
            }
        }
        let (best, direction, confidence) = best?;
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
            close_units: (close * 1e8).round() as i128,
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

    #[test]
    fn only_the_last_three_bars_count() {
        let mut s = CandlestickPatterns::new();
        // Two bullish bars that would spoil a morning star if still seen.
        s.on_bar(&b(9.0, 12.1, 8.9, 12.0));
        s.on_bar(&b(9.0, 12.1, 8.9, 12.0));
        s.on_bar(&b(12.0, 12.1, 9.9, 10.0));
        s.on_bar(&b(9.8, 10.0, 9.5, 9.9));
        let signal = s.on_bar(&b(10.0, 11.8, 9.9, 11.5)).unwrap();
        assert_eq!(signal.reason, "MorningStar");
        assert_eq!(
            s.bars[0],
            b(12.0, 12.1, 9.9, 10.0),
            "oldest of the three kept"
        );
    }

    #[test]
    fn a_pattern_set_lists_patterns_in_detection_order() {
        let mut set = PatternSet::default();
        assert!(set.is_empty());
        set.push(Pattern::EveningStar);
        set.push(Pattern::Doji);
        assert!(set.contains(&Pattern::Doji) && !set.contains(&Pattern::Hammer));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Pattern::Doji, Pattern::EveningStar]
        );
        assert_eq!(format!("{set:?}"), "{Doji, EveningStar}");
    }
}
