//! Counters and snapshots: what the bus published, delivered, dropped and why.
//!
//! Counters are atomics updated on the hot path with relaxed ordering; a
//! snapshot reads them all into plain structs a caller can print or compare.
//! Handler latency goes into one HDR histogram per subscription, written only
//! by that subscription's consumer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bus::circuit::CircuitState;
use crate::model::ids::SubscriptionId;

/// Why a message did not reach a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The queue was full: the message, or an older one of lower priority, was dropped.
    Overflow,
    /// The queue was full and the reject policy refused it to the publisher.
    Rejected,
    /// The queue stayed full past the block policy's timeout.
    BlockTimeout,
    /// The handler's circuit breaker was open.
    CircuitOpen,
    /// The subscription was removed with messages still queued.
    Unsubscribed,
    /// The bus shut down before the message could be handled.
    Shutdown,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 6] = [
        DropReason::Overflow,
        DropReason::Rejected,
        DropReason::BlockTimeout,
        DropReason::CircuitOpen,
        DropReason::Unsubscribed,
        DropReason::Shutdown,
    ];
}

/// One counter per drop reason.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; 6]);

impl DropCounters {
    /// Counts `n` drops for `reason`.
    pub fn add(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Non-zero counts by reason.
    pub fn snapshot(&self) -> BTreeMap<DropReason, u64> {
        DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = self.0[*r as usize].load(Ordering::Relaxed);
                (n > 0).then_some((*r, n))
            })
            .collect()
    }
}

/// Aligns its content to its own cache lines, so counters written by
/// different threads do not slow each other down (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Counters written on the publishing side, shared by all publishers.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub(crate) published: AtomicU64,
    pub(crate) unrouted: AtomicU64,
    pub(crate) expired: AtomicU64,
}

/// Counters written only by one subscription's consumer.
#[derive(Debug, Default)]
pub struct ConsumerCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) expired: AtomicU64,
    /// 1 while a handler runs.
    pub(crate) running: AtomicU64,
    /// Redeliveries scheduled.
    pub(crate) retries: AtomicU64,
    /// Redeliveries waiting for their backoff to end.
    pub(crate) retrying: AtomicU64,
    /// Messages given up after their last attempt.
    pub(crate) dead_lettered: AtomicU64,
    /// Exactly-once messages not handed over again.
    pub(crate) duplicates: AtomicU64,
}

/// Histogram of handler run times in nanoseconds, 1 ns .. 1 hour, 3 digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one duration into a nanosecond histogram.
pub fn record_latency(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = (elapsed.as_nanos() as u64).clamp(1, 3_600_000_000_000);
    let _ = histogram.record(nanos);
}

/// One subscription's handler latencies. Only its consumer records, so the
/// lock is uncontended except while a snapshot is read; that is cheaper than
/// merging a consumer-local histogram (tens of thousands of buckets).
#[derive(Debug)]
pub struct SharedLatency(Mutex<Histogram<u64>>);

impl Default for SharedLatency {
    fn default() -> Self {
        Self(Mutex::new(latency_histogram()))
    }
}

impl SharedLatency {
    /// Records one handler run.
    pub(crate) fn record(&self, elapsed: Duration) {
        let mut histogram = self.0.lock().unwrap_or_else(|p| p.into_inner());
        record_latency(&mut histogram, elapsed);
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let shared = self.0.lock().unwrap_or_else(|p| p.into_inner());
        LatencySummary::from_histogram(&shared)
    }
}

/// Handler latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Handler runs recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarises a nanosecond histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_us: h.max() as f64 / 1000.0,
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// A point-in-time copy of one subscription's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionStats {
    /// Its id.
    pub id: SubscriptionId,
    /// Its name.
    pub name: String,
    /// Its pattern.
    pub pattern: String,
    /// Messages waiting in its queue.
    pub queue_depth: usize,
    /// The most messages its queue held at once.
    pub queue_high_water: usize,
    /// Handler runs that succeeded.
    pub delivered: u64,
    /// Handler runs that returned an error.
    pub failed: u64,
    /// Handler runs that panicked (also counted in `failed`).
    pub panicked: u64,
    /// Messages that expired in its queue.
    pub expired: u64,
    /// Redeliveries scheduled after failures.
    pub retries: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Exactly-once duplicates suppressed.
    pub duplicates: u64,
    /// Drops by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Its circuit breaker.
    pub circuit: CircuitState,
    /// Handler latency.
    pub latency: LatencySummary,
}

/// A point-in-time copy of the whole bus's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusStats {
    /// Messages accepted by `publish`.
    pub published: u64,
    /// Published messages that matched no subscription.
    pub unrouted: u64,
    /// Successful handler runs (one message to three handlers counts three).
    pub delivered: u64,
    /// Handler runs that failed or panicked.
    pub failed: u64,
    /// Handler runs that panicked.
    pub panicked: u64,
    /// Messages not delivered because their TTL ran out.
    pub expired: u64,
    /// Redeliveries scheduled after failures.
    pub retries: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Exactly-once duplicates suppressed.
    pub duplicates: u64,
    /// Durable messages read back from the store at start and queued again.
    pub replayed: u64,
    /// Deliveries queued or running right now.
    pub in_flight: i64,
    /// Drops by reason, all subscriptions together.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Drops by topic.
    pub dropped_by_topic: BTreeMap<String, u64>,
    /// Per subscription.
    pub subscriptions: Vec<SubscriptionStats>,
    /// Subscriptions removed, with their figures as they were then.
    pub removed_subscriptions: Vec<SubscriptionStats>,
}

impl BusStats {
    /// All drops, whatever the reason.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.values().sum()
    }
}
