//! A progress line on stderr for long runs, shown only on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent_collector::FeedStatus;

use crate::report::AccountView;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The progress line: redrawn a few times a second from a shared counter
/// (and, live, the feed's and the account's state).
pub struct Progress {
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The text of the progress line.
pub fn line(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    match total {
        Some(total) if total > 0 => format!(
            "candles {done}/{total} ({:.0}%), {rate:.0}/s",
            done as f64 * 100.0 / total as f64
        ),
        _ => format!("candles {done}, {rate:.0}/s"),
    }
}

/// What a live run shows besides its candle count.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    /// The feed's health and last prices.
    pub feed: Arc<Mutex<FeedStatus>>,
    /// Equity and positions.
    pub account: Arc<Mutex<AccountView>>,
}

/// The text of a live run's progress line: feed health, last prices,
/// positions, equity, candles.
pub fn live_line(candles: u64, feed: &FeedStatus, account: &AccountView) -> String {
    let prices: Vec<String> = (feed.prices.iter())
        .map(|(symbol, price)| format!("{symbol} {price}"))
        .collect();
    let positions: Vec<String> = (account.positions.iter())
        .map(|(symbol, quantity)| format!("{symbol} {quantity}"))
        .collect();
    format!(
        "feed {} | {} | position {} | equity {} | candles {candles}",
        feed.health,
        match prices.is_empty() {
            true => "no price yet".into(),
            false => prices.join(", "),
        },
        match positions.is_empty() {
            true => "flat".into(),
            false => positions.join(", "),
        },
        account.equity.round_dp(2),
    )
}

impl Progress {
    /// Starts drawing if stderr is a terminal; `None` otherwise. A live
    /// run (`live`) shows its feed and account.
    pub fn start(total: Option<u64>, live: Option<LiveView>) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let counter = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, view) = (counter.clone(), stop.clone(), live);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let started = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let candles = c.load(Ordering::Relaxed);
                    let text = match &view {
                        None => line(candles, total, started.elapsed()),
                        Some(view) => {
                            let feed = view.feed.lock().map(|f| f.clone()).unwrap_or_default();
                            let account =
                                (view.account.lock()).map(|a| a.clone()).unwrap_or_default();
                            live_line(candles, &feed, &account)
                        }
                    };
                    let _ = write!(std::io::stderr(), "\r{text}\x1b[K");
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            })
            .ok()?;
        Some(Self {
            counter,
            stop,
            thread: Some(thread),
        })
    }

    /// The counter the collector increments.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    /// Clears the line.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_text() {
        assert_eq!(
            line(50, Some(200), Duration::from_secs(2)),
            "candles 50/200 (25%), 25/s"
        );
        assert_eq!(line(10, None, Duration::from_secs(1)), "candles 10, 10/s");
    }

    #[test]
    fn live_line_text() {
        let btc = bus_core::model::payload::Symbol::new("BTC").unwrap();
        let mut feed = FeedStatus {
            health: "connecting".into(),
            prices: Vec::new(),
        };
        let mut account = AccountView {
            equity: rust_decimal::Decimal::new(10_000_000, 2),
            positions: Vec::new(),
        };
        assert_eq!(
            live_line(0, &feed, &account),
            "feed connecting | no price yet | position flat | equity 100000.00 | candles 0"
        );
        feed.health = "live".into();
        feed.prices
            .push((btc.clone(), rust_decimal::Decimal::new(998_905, 1)));
        account
            .positions
            .push((btc, rust_decimal::Decimal::new(5, 2)));
        account.equity = rust_decimal::Decimal::new(100_012_345, 3);
        assert_eq!(
            live_line(12, &feed, &account),
            "feed live | BTC 99890.5 | position BTC 0.05 | equity 100012.34 | candles 12"
        );
    }

    #[test]
    fn hidden_when_stderr_is_not_a_terminal() {
        // Under `cargo test` stderr is captured, not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(Progress::start(Some(1), None).is_none());
        }
    }
}
