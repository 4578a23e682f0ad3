//! A subscription: its options, its bounded priority queue, its overflow
//! policy and breaker state, and the counters its consumer keeps.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::bus::circuit::{CircuitBreakerConfig, CircuitState};
use crate::bus::filter::Filter;
use crate::bus::queue::{PriorityQueue, PushOutcome};
use crate::bus::reliability::{DedupeWindow, RetryPolicy};
use crate::bus::stats::{
    CachePadded, ConsumerCounters, DropCounters, SharedLatency, SubscriptionStats,
};
use crate::model::error::TopicError;
use crate::model::ids::SubscriptionId;
use crate::model::topic::TopicPattern;
use crate::model::Envelope;

/// What a subscription does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// The publisher waits up to `timeout` for room, then gets `BlockedTimeout`.
    Block {
        /// Longest wait.
        timeout: Duration,
    },
    /// Drop the oldest queued message of the lowest priority not above the
    /// new one's (or the new one, if nothing lower is queued). Counted.
    DropOldestLowest,
    /// Refuse the message; the publisher gets `Rejected`. Counted.
    Reject,
}

impl Default for OverflowPolicy {
    /// Back-pressure by default: nothing is dropped unless a publisher waits a full second.
    fn default() -> Self {
        OverflowPolicy::Block {
            timeout: Duration::from_secs(1),
        }
    }
}

/// How a subscription is set up.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Name shown in stats and logs.
    pub name: String,
    /// Optional refinement after topic routing.
    pub filter: Option<Filter>,
    /// Queue capacity for non-critical messages.
    pub capacity: usize,
    /// What to do when the queue is full.
    pub overflow: OverflowPolicy,
    /// When to stop calling a failing handler.
    pub circuit_breaker: CircuitBreakerConfig,
    /// When to redeliver failed at-least-once / exactly-once messages.
    pub retry: RetryPolicy,
    /// Ids remembered for exactly-once de-duplication.
    pub dedupe_window: usize,
    /// Latency mode: how long the consumer spins on its empty queue (a
    /// busy core) before it parks; a message that comes meanwhile is taken
    /// without a wake-up. Zero (the default) looks a few times, yielding
    /// the CPU, then parks. Worth it only while spinning consumers and
    /// publishers fit the cores.
    pub idle_spin: std::time::Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            name: String::new(),
            filter: None,
            capacity: 10_000,
            overflow: OverflowPolicy::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            retry: RetryPolicy::default(),
            dedupe_window: 100_000,
            idle_spin: std::time::Duration::ZERO,
        }
    }
}

impl SubscribeOptions {
    /// Options with a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the latency mode's spin (see [`idle_spin`](Self::idle_spin)).
    pub fn with_idle_spin(mut self, spin: std::time::Duration) -> Self {
        self.idle_spin = spin;
        self
    }

    /// Sets the filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the queue capacity.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the overflow policy.
    pub fn with_overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.overflow = overflow;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the circuit breaker.
    pub fn with_circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = config;
        self
    }
}

/// Why a subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern is malformed.
    #[error(transparent)]
    InvalidPattern(#[from] TopicError),
    /// The bus is shutting down.
    #[error("the bus is closed")]
    BusClosed,
}

pub(super) struct QueueState {
    pub(super) queue: PriorityQueue<Arc<Envelope>>,
    /// Messages ever queued here (first deliveries and redeliveries): lets
    /// [`MessageBus::is_quiet`] see a message that arrived while it looked.
    pub(super) enqueued: u64,
    pub(super) consumer_idle: bool,
    pub(super) closed: bool,
    pub(super) abandon: bool,
}

pub(super) enum Next {
    Item(Arc<Envelope>),
    Idle,
    Finished,
}

pub(super) enum Enqueued {
    Queued,
    Displaced(Arc<Envelope>),
    Full,
    Closed,
}

pub(super) struct Subscription {
    pub(super) id: SubscriptionId,
    pub(super) name: String,
    pub(super) patterns: Vec<TopicPattern>,
    pub(super) filter: Option<Filter>,
    pub(super) overflow: OverflowPolicy,
    pub(super) state: Mutex<QueueState>,
    pub(super) doorbell: flume::Sender<()>,
    pub(super) done: flume::Receiver<()>,
    pub(super) space: Notify,
    pub(super) blocked_publishers: AtomicUsize,
    /// Written only by the consumer; padded away from the queue lock.
    pub(super) consumed: CachePadded<ConsumerCounters>,
    /// The breaker's state as last published by the consumer (for stats).
    pub(super) circuit: AtomicU8,
    pub(super) drops: DropCounters,
    pub(super) latency: SharedLatency,
    /// The name under which the durable store tracks this subscription's
    /// pending messages: set for named subscriptions of a durable bus.
    pub(super) durable: Option<Arc<str>>,
    /// Ids of exactly-once messages handled (locked only for those).
    pub(super) dedupe: Mutex<DedupeWindow>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks can only come from our own code
    // between lock and unlock (handlers never run under them); the data is
    // still consistent, so carry on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Subscription {
    pub(super) fn try_enqueue(&self, envelope: &Arc<Envelope>) -> Enqueued {
        let displace = self.overflow == OverflowPolicy::DropOldestLowest;
        let mut state = lock(&self.state);
        if state.closed {
            return Enqueued::Closed;
        }
        let result = match state
            .queue
            .push(envelope.clone(), envelope.priority, displace)
        {
            PushOutcome::Queued => Enqueued::Queued,
            PushOutcome::Displaced(old, _) => Enqueued::Displaced(old),
            PushOutcome::Full(_) => return Enqueued::Full,
        };
        state.enqueued += 1;
        let wake = std::mem::take(&mut state.consumer_idle);
        drop(state);
        if wake {
            let _ = self.doorbell.try_send(());
        }
        result
    }

    /// Pops the next message. With `may_idle` false an empty queue answers
    /// `Idle` without telling publishers to ring (the consumer will look again).
    pub(super) fn next(&self, may_idle: bool) -> Next {
        let mut state = lock(&self.state);
        if state.abandon {
            return Next::Finished;
        }
        match state.queue.pop() {
            Some((envelope, _)) => {
                // Counted as running from the moment it leaves the queue, so
                // `in_flight` never sees it in neither place.
                self.consumed.running.store(1, Ordering::Relaxed);
                drop(state);
                if self.blocked_publishers.load(Ordering::SeqCst) > 0 {
                    self.space.notify_waiters();
                }
                Next::Item(envelope)
            }
            None if state.closed => Next::Finished,
            None => {
                state.consumer_idle = may_idle;
                Next::Idle
            }
        }
    }

    /// Puts a redelivery back in the queue. It was accepted once already,
    /// so capacity does not apply. False when the queue is closed.
    pub(super) fn requeue(&self, envelope: Arc<Envelope>) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        let priority = envelope.priority;
        state.queue.push_unbounded(envelope, priority);
        state.enqueued += 1;
        let wake = std::mem::take(&mut state.consumer_idle);
        drop(state);
        if wake {
            let _ = self.doorbell.try_send(());
        }
        true
    }

    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        let _ = self.doorbell.try_send(());
    }

    /// Closes and empties the queue; returns what was in it.
    pub(super) fn abandon(&self) -> Vec<Arc<Envelope>> {
        let mut state = lock(&self.state);
        state.closed = true;
        state.abandon = true;
        let left = state.queue.drain().into_iter().map(|(e, _)| e).collect();
        drop(state);
        let _ = self.doorbell.try_send(());
        self.space.notify_waiters();
        left
    }

    pub(super) fn queue_depth(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.queue.len(), state.queue.high_water())
    }

    pub(super) fn stats(&self) -> SubscriptionStats {
        let (queue_depth, queue_high_water) = self.queue_depth();
        SubscriptionStats {
            id: self.id,
            name: self.name.clone(),
            pattern: self
                .patterns
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            queue_depth,
            queue_high_water,
            delivered: self.consumed.delivered.load(Ordering::Relaxed),
            failed: self.consumed.failed.load(Ordering::Relaxed),
            panicked: self.consumed.panicked.load(Ordering::Relaxed),
            expired: self.consumed.expired.load(Ordering::Relaxed),
            retries: self.consumed.retries.load(Ordering::Relaxed),
            dead_lettered: self.consumed.dead_lettered.load(Ordering::Relaxed),
            duplicates: self.consumed.duplicates.load(Ordering::Relaxed),
            dropped: self.drops.snapshot(),
            circuit: circuit_from_u8(self.circuit.load(Ordering::Relaxed)),
            latency: self.latency.summary(),
        }
    }
}

pub(super) fn circuit_to_u8(state: CircuitState) -> u8 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

pub(super) fn circuit_from_u8(value: u8) -> CircuitState {
    match value {
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        _ => CircuitState::Closed,
    }
}
