//! Telling a candle that is news from one already seen.
//!
//! Market time only moves forward. A candle whose open time is not after
//! the last one of its symbol is a repeat (an at-least-once redelivery,
//! for instance after the NATS server came back without the
//! acknowledgements it had been sent) or arrives late; handling it again
//! would count a bar twice, feed an indicator the same bar twice, or fill
//! an order at an open that is not in its future. Agents that keep state
//! per bar pass it by.
//!
//! The number of symbols followed is bounded: state per symbol is memory,
//! and a feed (or an adversary on the wire) inventing symbols must not
//! grow an agent without limit. Candles of symbols beyond the limit are
//! refused and counted.

use super::payload::Candle;
use super::symbol_map::SymbolMap;

/// Symbols followed unless told otherwise.
pub const DEFAULT_MAX_SYMBOLS: usize = 1000;

/// What a candle is to the agent that sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandleAdmission {
    /// After the last candle of its symbol: news, to be handled.
    New,
    /// Not after the last candle of its symbol: a repeat, or late.
    Repeat,
    /// A new symbol beyond the limit of symbols followed.
    OverLimit,
}

/// The open time of the last candle seen per symbol.
#[derive(Debug)]
pub struct CandleSequence {
    last: SymbolMap<i64>,
    max_symbols: usize,
    repeats: u64,
    over_limit: u64,
}

impl Default for CandleSequence {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_SYMBOLS)
    }
}

impl CandleSequence {
    /// A sequence that has seen nothing, following up to
    /// [`DEFAULT_MAX_SYMBOLS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A sequence following up to `max_symbols` symbols.
    pub fn with_limit(max_symbols: usize) -> Self {
        Self {
            last: SymbolMap::new(),
            max_symbols,
            repeats: 0,
            over_limit: 0,
        }
    }

    /// What `candle` is (and, when new, remembered as the last of its
    /// symbol); repeats and refusals are counted.
    pub fn admit(&mut self, candle: &Candle) -> CandleAdmission {
        // One lookup for a symbol already followed (every candle but the
        // first of each symbol).
        if let Some(last) = self.last.get_mut(&candle.symbol) {
            if candle.open_time_ms > *last {
                *last = candle.open_time_ms;
                return CandleAdmission::New;
            }
            self.repeats += 1;
            return CandleAdmission::Repeat;
        }
        if self.last.len() >= self.max_symbols {
            self.over_limit += 1;
            return CandleAdmission::OverLimit;
        }
        self.last.insert(candle.symbol.clone(), candle.open_time_ms);
        CandleAdmission::New
    }

    /// True when `candle` is news ([`CandleAdmission::New`]).
    #[inline]
    pub fn is_new(&mut self, candle: &Candle) -> bool {
        self.admit(candle) == CandleAdmission::New
    }

    /// Candles passed by as repeats or late.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// Candles refused because their symbol was beyond the limit.
    pub fn over_limit(&self) -> u64 {
        self.over_limit
    }

    /// Symbols seen.
    pub fn symbols(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::payload::{CandleFields, Symbol};
    use rust_decimal::Decimal;

    fn candle(symbol: &str, t: i64) -> Candle {
        Candle::new(CandleFields {
            symbol: Symbol::new(symbol).unwrap(),
            interval: "1m".into(),
            open_time_ms: t,
            open: Decimal::ONE,
            high: Decimal::ONE,
            low: Decimal::ONE,
            close: Decimal::ONE,
            volume: Decimal::ONE,
        })
        .unwrap()
    }

    #[test]
    fn repeats_and_late_candles_are_passed_by_per_symbol() {
        let mut seen = CandleSequence::new();
        assert!(seen.is_new(&candle("BTC", 60)));
        assert!(seen.is_new(&candle("ETH", 60)), "another symbol");
        assert!(!seen.is_new(&candle("BTC", 60)), "a repeat");
        assert!(seen.is_new(&candle("BTC", 120)));
        assert!(!seen.is_new(&candle("BTC", 60)), "late");
        assert_eq!(seen.repeats(), 2);
        assert_eq!(seen.symbols(), 2);
    }

    #[test]
    fn symbols_beyond_the_limit_are_refused_and_counted() {
        let mut seen = CandleSequence::with_limit(2);
        assert!(seen.is_new(&candle("BTC", 60)));
        assert!(seen.is_new(&candle("ETH", 60)));
        assert_eq!(seen.admit(&candle("SOL", 60)), CandleAdmission::OverLimit);
        assert_eq!(seen.admit(&candle("SOL", 120)), CandleAdmission::OverLimit);
        assert!(seen.is_new(&candle("BTC", 120)), "followed symbols go on");
        assert_eq!(seen.over_limit(), 2);
        assert_eq!(seen.symbols(), 2);
    }
}
