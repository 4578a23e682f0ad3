//! A progress line on stderr for long runs, shown only on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The progress line: redrawn a few times a second from a shared counter.
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

impl Progress {
    /// Starts drawing if stderr is a terminal; `None` otherwise.
    pub fn start(total: Option<u64>) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let counter = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counter.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let started = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let text = line(c.load(Ordering::Relaxed), total, started.elapsed());
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
    fn hidden_when_stderr_is_not_a_terminal() {
        // Under `cargo test` stderr is captured, not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(Progress::start(Some(1)).is_none());
        }
    }
}
