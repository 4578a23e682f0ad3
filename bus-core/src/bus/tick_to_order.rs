//! Tick-to-order latency: the wall-clock time from the moment a candle is
//! handed to the bus to the moment the order request decided on it is
//! handed to the bus, through signals, aggregation and the trader. Shared
//! by the in-process transport (which says when each candle a source
//! produced is published: in lockstep, when its turn comes) and the trader
//! (which says when an order on a bar went out).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::{latency_histogram, record_latency};

/// Bars remembered per market: a run whose collector races this far ahead
/// of its trader (no lockstep) times no order on the bars it forgot, and
/// counts them as untimed.
const REMEMBERED: usize = 4096;

#[derive(Debug)]
struct Clock {
    sent: HashMap<String, VecDeque<(i64, Instant)>>,
    latencies: Histogram<u64>,
    unmatched: u64,
}

/// The shared clock (clones share it).
#[derive(Debug, Clone)]
pub struct TickToOrder(Arc<Mutex<Clock>>);

impl Default for TickToOrder {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Clock {
            sent: HashMap::new(),
            latencies: latency_histogram(),
            unmatched: 0,
        })))
    }
}

/// Tick-to-order percentiles, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickToOrderSummary {
    /// Orders timed.
    pub orders: u64,
    /// Orders on a bar no longer remembered (not timed).
    pub untimed: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl TickToOrder {
    /// A new clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// `symbol`'s candle opened at `bar_ms` is handed to the bus now.
    pub fn candle(&self, symbol: &str, bar_ms: i64) {
        let now = Instant::now();
        let mut clock = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bars = match clock.sent.get_mut(symbol) {
            Some(bars) => bars,
            None => clock.sent.entry(symbol.to_string()).or_default(),
        };
        if bars.len() == REMEMBERED {
            bars.pop_front();
        }
        bars.push_back((bar_ms, now));
    }

    /// An order on `symbol` decided on the bar opened at `bar_ms` is handed
    /// to the bus now.
    pub fn order(&self, symbol: &str, bar_ms: i64) {
        let now = Instant::now();
        let mut clock = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A market's candles go out in time order.
        let sent = (clock.sent.get(symbol)).and_then(|bars| {
            let at = bars.binary_search_by_key(&bar_ms, |(bar, _)| *bar).ok()?;
            Some(bars[at].1)
        });
        match sent {
            Some(at) => record_latency(&mut clock.latencies, now.saturating_duration_since(at)),
            None => clock.unmatched += 1,
        }
    }

    /// The figures so far.
    pub fn summary(&self) -> TickToOrderSummary {
        let clock = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let h = &clock.latencies;
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        match h.is_empty() {
            true => TickToOrderSummary {
                untimed: clock.unmatched,
                ..TickToOrderSummary::default()
            },
            false => TickToOrderSummary {
                orders: h.len(),
                untimed: clock.unmatched,
                p50_us: us(0.5),
                p99_us: us(0.99),
                p999_us: us(0.999),
                max_us: h.max() as f64 / 1000.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_order_is_timed_from_its_bars_candle() {
        let clock = TickToOrder::new();
        clock.candle("BTC", 60_000);
        clock.candle("ETH", 60_000);
        std::thread::sleep(Duration::from_millis(20));
        clock.candle("BTC", 120_000);
        clock.order("BTC", 60_000);
        clock.order("BTC", 120_000);
        clock.order("SOL", 60_000);
        let s = clock.summary();
        assert_eq!((s.orders, s.untimed), (2, 1));
        assert!(s.max_us >= 20_000.0, "the first order waited 20 ms: {s:?}");
        assert!(s.p50_us < 20_000.0, "the second did not: {s:?}");
        // Only the last bars are remembered.
        for bar in 0..REMEMBERED as i64 {
            clock.candle("ETH", 120_000 + bar * 60_000);
        }
        clock.order("ETH", 60_000);
        assert_eq!(clock.summary().untimed, 2);
    }
}
