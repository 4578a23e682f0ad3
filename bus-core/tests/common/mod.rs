//! Helpers shared by the bus-core integration tests.

use std::time::{Duration, Instant};

/// Waits (up to 10 s) until `check` holds; fails naming `what` otherwise.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
