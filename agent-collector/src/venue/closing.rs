//! From a venue's stream of forming-candle snapshots to one candle per
//! closed interval, with no duplicate and no interval missing.
//!
//! A snapshot of a later interval closes the one before: that candle, as
//! its last snapshot had it, is final. When intervals are missing between
//! them (a reconnection), the closer names the gap and holds back what it
//! closes afterwards until the gap is back-filled (or given up), so
//! candles still come out in time order.

use std::collections::VecDeque;

use bus_core::model::payload::{Candle, Symbol};
use bus_core::model::SymbolMap;

/// Intervals a symbol's stream skipped: `from` (the first missing open
/// time) up to, not including, `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First missing open time.
    pub from_ms: i64,
    /// The open time after the last missing one.
    pub until_ms: i64,
}

#[derive(Debug, Default)]
struct Market {
    /// The candle of the interval in progress, as last sent.
    forming: Option<Candle>,
    /// Open time of the last candle let out.
    last_out: Option<i64>,
    /// A gap waiting for its back-fill, and what closed after it.
    gap: Option<Gap>,
    held: VecDeque<Candle>,
    /// Open time of a forming candle dropped at a disconnection: its
    /// interval is expected again (live, or from history).
    resume_at: Option<i64>,
}

impl Market {
    /// Open time of the last candle closed, let out or held back.
    fn last_closed(&self) -> Option<i64> {
        self.held.back().map(|c| c.open_time_ms).or(self.last_out)
    }
}

/// Turns forming-candle snapshots into closed candles (see the module
/// docs).
#[derive(Debug)]
pub struct CandleCloser {
    interval_ms: i64,
    markets: SymbolMap<Market>,
    /// Snapshots of an interval already closed (sent again late): ignored.
    pub stale: u64,
}

/// What a snapshot or a back-fill let out.
#[derive(Debug, Default, PartialEq)]
pub struct Closed {
    /// Candles now final, oldest first.
    pub candles: Vec<Candle>,
    /// A gap found, to back-fill.
    pub gap: Option<Gap>,
}

impl CandleCloser {
    /// For intervals of `interval_ms`.
    pub fn new(interval_ms: i64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            markets: SymbolMap::new(),
            stale: 0,
        }
    }

    /// The candle forming for `symbol`, if any (for a price update).
    pub fn forming(&self, symbol: &Symbol) -> Option<&Candle> {
        self.markets.get(symbol)?.forming.as_ref()
    }

    /// Takes one snapshot.
    pub fn snapshot(&mut self, candle: Candle) -> Closed {
        let interval = self.interval_ms;
        let market = self.markets.get_or_default(&candle.symbol.clone());
        let time = candle.open_time_ms;
        let mut out = Closed::default();
        match &market.forming {
            Some(forming) if time < forming.open_time_ms => {
                self.stale += 1;
                return out;
            }
            Some(forming) if time == forming.open_time_ms => {
                market.forming = Some(candle);
                return out;
            }
            _ => {}
        }
        if market.last_closed().is_some_and(|last| time <= last) {
            self.stale += 1;
            return out;
        }
        let closed = market.forming.replace(candle);
        let expected = closed
            .as_ref()
            .map(|c| c.open_time_ms)
            .or(market.last_closed())
            .map(|last| last + interval)
            .or(market.resume_at.take());
        if let Some(closed) = closed {
            Self::let_out(market, closed, &mut out.candles);
        }
        if let Some(expected) = expected.filter(|expected| time > *expected) {
            let gap = Gap {
                from_ms: expected,
                until_ms: time,
            };
            market.gap = Some(match market.gap {
                // A second gap before the first was filled: one range.
                Some(first) => Gap {
                    from_ms: first.from_ms,
                    until_ms: time,
                },
                None => gap,
            });
            out.gap = market.gap;
        }
        out
    }

    fn let_out(market: &mut Market, candle: Candle, out: &mut Vec<Candle>) {
        if market.gap.is_some() {
            market.held.push_back(candle);
        } else {
            market.last_out = Some(candle.open_time_ms);
            out.push(candle);
        }
    }

    /// Candles of `symbol`'s gap from the venue's history (any order, any
    /// overlap): lets out those the gap misses, oldest first, then what was
    /// held back behind it.
    pub fn backfill(&mut self, symbol: &Symbol, mut history: Vec<Candle>) -> Closed {
        let mut out = Closed::default();
        let Some(market) = self.markets.get_mut(symbol) else {
            return out;
        };
        let Some(gap) = market.gap.take() else {
            return out;
        };
        history.sort_by_key(|c| c.open_time_ms);
        for candle in history {
            let time = candle.open_time_ms;
            let new = market.last_out.is_none_or(|last| time > last);
            if new && time >= gap.from_ms && time < gap.until_ms && candle.symbol == *symbol {
                market.last_out = Some(time);
                out.candles.push(candle);
            }
        }
        Self::release(market, &mut out.candles);
        out
    }

    /// The connection was lost: the candles forming are not final (their
    /// updates during the outage were missed), so they are dropped, and
    /// their intervals are expected again — from the stream if it resumes
    /// within them, from history otherwise (as a gap).
    pub fn disconnected(&mut self) {
        for market in self.markets.values_mut() {
            if let Some(forming) = market.forming.take() {
                market.resume_at = Some(forming.open_time_ms);
            }
        }
    }

    /// Gives up back-filling `symbol`'s gap: lets out what was held back.
    pub fn give_up(&mut self, symbol: &Symbol) -> Closed {
        let mut out = Closed::default();
        if let Some(market) = self.markets.get_mut(symbol) {
            market.gap = None;
            Self::release(market, &mut out.candles);
        }
        out
    }

    fn release(market: &mut Market, out: &mut Vec<Candle>) {
        while let Some(candle) = market.held.pop_front() {
            // History may already have brought it (gaps merged over it).
            if market
                .last_out
                .is_none_or(|last| candle.open_time_ms > last)
            {
                market.last_out = Some(candle.open_time_ms);
                out.push(candle);
            }
        }
    }
}
