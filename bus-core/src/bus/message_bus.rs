//! The queued, concurrent in-process bus.
//!
//! Every subscription owns a bounded [`PriorityQueue`] and one consumer: a
//! Tokio task for async handlers, an OS thread for blocking ones. Publishing
//! resolves the topic through the [`RouteIndex`] (cached), applies each
//! subscription's filter and pushes one shared `Arc<Envelope>` into each
//! queue. Consumers never share a queue, so a slow or failing handler delays
//! only its own subscription.
//!
//! Waking is done with a flume channel of capacity one per subscription (the
//! "doorbell"): a publisher rings only when the consumer has said, under the
//! queue lock, that it found the queue empty. Under load the consumer never
//! sleeps and publishers never ring.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::bus::circuit::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use crate::bus::error::{PublishError, RequestError};
use crate::bus::filter::Filter;
use crate::bus::handler::{
    call_blocking, AsyncHandler, BlockingHandler, CatchUnwind, Handler, ManualAckHandler, Outcome,
};
use crate::bus::queue::{PriorityQueue, PushOutcome};
use crate::bus::reliability::{DedupeWindow, RetryPolicy};
use crate::bus::routing::RouteIndex;
use crate::bus::stats::{
    BusStats, CachePadded, ConsumerCounters, DropCounters, DropReason, PublishCounters,
    SharedLatency, SubscriptionStats,
};
use crate::model::error::TopicError;
use crate::model::ids::{AgentId, MessageId, SubscriptionId};
use crate::model::payload::DeadLetter;
use crate::model::topic::{Topic, TopicPattern};
use crate::model::{now_ms, Envelope};
use crate::model::{DeliveryMode, Payload, Priority};
use crate::store::Store;

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

/// What `publish` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishReceipt {
    /// Subscriptions that queued it.
    pub queued: usize,
    /// Older messages dropped to make room (drop-oldest policy).
    pub displaced: usize,
    /// Subscriptions that dropped it because they were full (drop-oldest policy).
    pub dropped: usize,
}

/// What was left when the bus shut down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShutdownReport {
    /// True when every queue drained before the deadline.
    pub drained: bool,
    /// Messages still queued at the deadline, by subscription name; they are
    /// counted as dropped with reason `shutdown`.
    pub left: BTreeMap<String, usize>,
    /// Final figures.
    pub stats: BusStats,
}

struct QueueState {
    queue: PriorityQueue<Arc<Envelope>>,
    /// Messages ever queued here (first deliveries and redeliveries): lets
    /// [`MessageBus::is_quiet`] see a message that arrived while it looked.
    enqueued: u64,
    consumer_idle: bool,
    closed: bool,
    abandon: bool,
}

enum Next {
    Item(Arc<Envelope>),
    Idle,
    Finished,
}

enum Enqueued {
    Queued,
    Displaced(Arc<Envelope>),
    Full,
    Closed,
}

struct Subscription {
    id: SubscriptionId,
    name: String,
    patterns: Vec<TopicPattern>,
    filter: Option<Filter>,
    overflow: OverflowPolicy,
    state: Mutex<QueueState>,
    doorbell: flume::Sender<()>,
    done: flume::Receiver<()>,
    space: Notify,
    blocked_publishers: AtomicUsize,
    /// Written only by the consumer; padded away from the queue lock.
    consumed: CachePadded<ConsumerCounters>,
    /// The breaker's state as last published by the consumer (for stats).
    circuit: AtomicU8,
    drops: DropCounters,
    latency: SharedLatency,
    /// The name under which the durable store tracks this subscription's
    /// pending messages: set for named subscriptions of a durable bus.
    durable: Option<Arc<str>>,
    /// Ids of exactly-once messages handled (locked only for those).
    dedupe: Mutex<DedupeWindow>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks can only come from our own code
    // between lock and unlock (handlers never run under them); the data is
    // still consistent, so carry on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Subscription {
    fn try_enqueue(&self, envelope: &Arc<Envelope>) -> Enqueued {
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
    fn next(&self, may_idle: bool) -> Next {
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
    fn requeue(&self, envelope: Arc<Envelope>) -> bool {
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

    fn close(&self) {
        lock(&self.state).closed = true;
        let _ = self.doorbell.try_send(());
    }

    /// Closes and empties the queue; returns what was in it.
    fn abandon(&self) -> Vec<Arc<Envelope>> {
        let mut state = lock(&self.state);
        state.closed = true;
        state.abandon = true;
        let left = state.queue.drain().into_iter().map(|(e, _)| e).collect();
        drop(state);
        let _ = self.doorbell.try_send(());
        self.space.notify_waiters();
        left
    }

    fn queue_depth(&self) -> usize {
        lock(&self.state).queue.len()
    }

    fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            id: self.id,
            name: self.name.clone(),
            pattern: self
                .patterns
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            queue_depth: self.queue_depth(),
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

fn circuit_to_u8(state: CircuitState) -> u8 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

fn circuit_from_u8(value: u8) -> CircuitState {
    match value {
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        _ => CircuitState::Closed,
    }
}

/// Dead letters kept for `MessageBus::dead_letters`.
const DEAD_LETTERS_KEPT: usize = 10_000;

/// Where one subscription's copy of a message went.
enum Placed {
    Queued,
    Displaced,
    Dropped,
    Skipped,
}

/// Collects the per-subscription results of one publish.
#[derive(Default)]
struct FanOut {
    receipt: PublishReceipt,
    rejected_by: Vec<SubscriptionId>,
    first_error: Option<PublishError>,
}

impl FanOut {
    fn add(&mut self, id: SubscriptionId, result: Result<Placed, PublishError>) {
        match result {
            Ok(Placed::Queued) => self.receipt.queued += 1,
            Ok(Placed::Displaced) => {
                self.receipt.queued += 1;
                self.receipt.displaced += 1;
            }
            Ok(Placed::Dropped) => self.receipt.dropped += 1,
            Ok(Placed::Skipped) => {}
            Err(PublishError::Rejected { .. }) => self.rejected_by.push(id),
            Err(other) => {
                self.first_error.get_or_insert(other);
            }
        }
    }

    fn finish(self, bus: &BusInner) -> Result<PublishReceipt, PublishError> {
        let reached = self.receipt.queued + self.receipt.dropped + self.rejected_by.len();
        if reached == 0 && self.first_error.is_none() {
            bus.counters.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        if !self.rejected_by.is_empty() {
            return Err(PublishError::Rejected {
                rejected_by: self.rejected_by,
                accepted_by: self.receipt.queued,
            });
        }
        match self.first_error {
            Some(error) => Err(error),
            None => Ok(self.receipt),
        }
    }
}

struct BusInner {
    routes: RwLock<RouteIndex<Arc<Subscription>>>,
    subscriptions: Mutex<BTreeMap<SubscriptionId, Arc<Subscription>>>,
    consumers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next_id: AtomicU64,
    accepting: AtomicBool,
    counters: CachePadded<PublishCounters>,
    /// The most recent dead letters, for inspection.
    dead_letters: Mutex<VecDeque<DeadLetter>>,
    /// Figures of removed subscriptions, so bus totals never go backwards.
    retired: Mutex<Vec<SubscriptionStats>>,
    dropped_by_topic: Mutex<HashMap<Topic, u64>>,
    pending_requests: Mutex<HashMap<MessageId, oneshot::Sender<Envelope>>>,
    pending_count: AtomicUsize,
    runtime: tokio::runtime::Handle,
    store: Option<Store>,
    /// Messages read back from the store and queued again.
    replayed: AtomicU64,
}

impl BusInner {
    fn record_drop(&self, sub: &Subscription, topic: &Topic, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        sub.drops.add(reason, n);
        *lock(&self.dropped_by_topic)
            .entry(topic.clone())
            .or_default() += n;
        tracing::debug!(subscription = %sub.name, %topic, ?reason, n, "messages dropped");
    }
}

/// Settles deliveries: acknowledges, retries or dead-letters them. The
/// consumer owns one; a manual-ack handler's settlement carries a clone.
#[derive(Clone)]
struct Settler {
    bus: Arc<BusInner>,
    sub: Arc<Subscription>,
    retry: RetryPolicy,
}

impl Settler {
    /// The handler finished the message.
    fn acknowledge(&self, envelope: &Envelope) {
        let sub = &self.sub;
        sub.consumed.delivered.fetch_add(1, Ordering::Relaxed);
        let exactly_once = envelope.delivery_mode == DeliveryMode::ExactlyOnce;
        if exactly_once {
            lock(&sub.dedupe).insert(envelope.id);
        }
        if let Some((store, name)) = self.journal(envelope) {
            store.ack(envelope.id, name, exactly_once);
        }
    }

    /// The store and this subscription's durable name, when what happens
    /// to `envelope` here must be journaled: a durable bus, a named
    /// subscription, a reliable message.
    fn journal(&self, envelope: &Envelope) -> Option<(&Store, &Arc<str>)> {
        let store = self.bus.store.as_ref()?;
        let name = self.sub.durable.as_ref()?;
        (envelope.delivery_mode != DeliveryMode::FireAndForget).then_some((store, name))
    }

    /// A reliable delivery failed: redeliver later, or give up.
    fn retry_or_dead_letter(&self, envelope: &Arc<Envelope>, error: &str) {
        let attempts = envelope.attempt.saturating_add(1);
        if attempts < envelope.max_attempts {
            let mut again = (**envelope).clone();
            again.attempt = attempts;
            let delay = self.retry.delay(envelope.id, attempts);
            let (bus, sub) = (self.bus.clone(), self.sub.clone());
            sub.consumed.retries.fetch_add(1, Ordering::Relaxed);
            sub.consumed.retrying.fetch_add(1, Ordering::Relaxed);
            self.bus.runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                let topic = again.topic.clone();
                if !sub.requeue(Arc::new(again)) {
                    bus.record_drop(&sub, &topic, DropReason::Shutdown, 1);
                }
                sub.consumed.retrying.fetch_sub(1, Ordering::Release);
            });
            return;
        }
        self.sub
            .consumed
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        let letter = DeadLetter {
            original: Some(Box::new((**envelope).clone())),
            raw: None,
            subscription: self.sub.name.clone(),
            error: error.to_string(),
            attempts,
            dead_lettered_at_ms: now_ms(),
        };
        tracing::error!(subscription = %self.sub.name, message_id = %envelope.id, attempts, %error, "dead-lettered");
        if let Some((store, name)) = self.journal(envelope) {
            store.dead_letter(envelope.id, name, &letter);
        }
        {
            let mut letters = lock(&self.bus.dead_letters);
            if letters.len() >= DEAD_LETTERS_KEPT {
                letters.pop_front();
            }
            letters.push_back(letter.clone());
        }
        let notice = Envelope::new(
            AgentId::new("bus"),
            Topic::new("system.dead_letter").expect("valid topic"),
            Payload::SystemDeadLetter(letter),
        )
        .with_priority(Priority::High);
        // Best effort: the letter is kept in `dead_letters` either way.
        let _ = MessageBus {
            inner: self.bus.clone(),
        }
        .try_publish(notice);
    }

    /// A handler failed (or never acknowledged): retry or drop per mode.
    fn failed(&self, envelope: &Arc<Envelope>, error: &str) {
        if envelope.delivery_mode != DeliveryMode::FireAndForget {
            self.retry_or_dead_letter(envelope, error);
        }
    }

    /// The message ran out of time before its handler ran.
    fn expired(&self, envelope: &Envelope) {
        self.sub.consumed.expired.fetch_add(1, Ordering::Relaxed);
        if let Some((store, name)) = self.journal(envelope) {
            store.expire(envelope.id, name);
        }
    }

    /// Settles a manual-ack delivery whose handler returned: waits (on a
    /// task of its own) for the handler's ack or nack, up to `ack_wait`.
    fn await_settlement(
        &self,
        envelope: Arc<Envelope>,
        settlement: flume::Receiver<Settlement>,
        ack_wait: Duration,
    ) {
        let settler = self.clone();
        settler
            .sub
            .consumed
            .retrying
            .fetch_add(1, Ordering::Relaxed);
        self.bus.runtime.spawn(async move {
            let verdict = tokio::time::timeout(ack_wait, settlement.recv_async()).await;
            match verdict {
                Ok(Ok(Settlement::Ack)) => settler.acknowledge(&envelope),
                Ok(Ok(Settlement::Nack(reason))) => {
                    settler.sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
                    settler.failed(&envelope, &reason);
                }
                Ok(Err(_)) | Err(_) => {
                    settler.sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
                    let reason = format!("not acknowledged within {ack_wait:?}");
                    tracing::warn!(subscription = %settler.sub.name, message_id = %envelope.id, %reason, "delivery unacknowledged");
                    settler.failed(&envelope, &reason);
                }
            }
            settler.sub.consumed.retrying.fetch_sub(1, Ordering::Release);
        });
    }
}

/// How a manual-ack handler settled a message.
enum Settlement {
    Ack,
    Nack(String),
}

/// The right (and duty) to settle one delivery, handed to a manual-ack
/// handler (see [`Handler::manual_ack`]). Call [`ack`](Self::ack) once the
/// work is done, [`nack`](Self::nack) to have it redelivered (with the
/// subscription's backoff) or dead-lettered after the last attempt.
/// Dropping it unsettled counts as a nack; not settling it within the
/// handler's `ack_wait` counts as a failure too.
#[derive(Debug)]
pub struct Acknowledgement {
    settle: Option<flume::Sender<Settlement>>,
}

impl Acknowledgement {
    /// The work is done: the message is acknowledged.
    pub fn ack(mut self) {
        if let Some(settle) = self.settle.take() {
            let _ = settle.send(Settlement::Ack);
        }
    }

    /// The work failed: redeliver (or dead-letter) with this reason.
    pub fn nack(mut self, reason: impl Into<String>) {
        if let Some(settle) = self.settle.take() {
            let _ = settle.send(Settlement::Nack(reason.into()));
        }
    }
}

impl Drop for Acknowledgement {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            let _ = settle.send(Settlement::Nack(
                "acknowledgement dropped unsettled".to_string(),
            ));
        }
    }
}

impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Settlement::Ack => f.write_str("ack"),
            Settlement::Nack(reason) => write!(f, "nack({reason})"),
        }
    }
}

/// What a consumer keeps to itself: its breaker (only the consumer touches
/// it, so the hot path takes no lock for it) and its clock.
struct Consumer {
    settler: Settler,
    sub: Arc<Subscription>,
    breaker: CircuitBreaker,
    /// When the previous handler run ended, if the consumer went straight on
    /// to the next message: reused as that message's start time, which saves
    /// one clock read per message under load. Latency is therefore measured
    /// from dequeue to handler completion.
    last_finish: Option<Instant>,
}

impl Consumer {
    fn new(
        bus: Arc<BusInner>,
        sub: Arc<Subscription>,
        breaker: CircuitBreakerConfig,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            settler: Settler {
                bus,
                sub: sub.clone(),
                retry,
            },
            sub,
            breaker: CircuitBreaker::new(breaker),
            last_finish: None,
        }
    }

    fn reliable(envelope: &Envelope) -> bool {
        envelope.delivery_mode != DeliveryMode::FireAndForget
    }

    /// An exactly-once message this subscription already handled: counted,
    /// and acknowledged again so the store stops holding it.
    fn is_duplicate(&self, envelope: &Envelope) -> bool {
        let duplicate = envelope.delivery_mode == DeliveryMode::ExactlyOnce
            && lock(&self.sub.dedupe).contains(&envelope.id);
        if duplicate {
            self.sub.consumed.duplicates.fetch_add(1, Ordering::Relaxed);
            if let Some((store, name)) = self.settler.journal(envelope) {
                store.ack(envelope.id, name, true);
            }
        }
        duplicate
    }

    /// Start time for the message just dequeued.
    fn start_clock(&mut self) -> Instant {
        self.last_finish.take().unwrap_or_else(Instant::now)
    }

    /// Checks expiry and the breaker; false means "do not call the handler".
    fn admit(&mut self, envelope: &Arc<Envelope>, now: Instant) -> bool {
        if envelope.expires_at_ms.is_some() && envelope.is_expired_at(now_ms()) {
            self.settler.expired(envelope);
            return false;
        }
        if !self.breaker.allow(now) {
            self.publish_circuit();
            if Self::reliable(envelope) {
                self.settler
                    .retry_or_dead_letter(envelope, "circuit breaker open");
            } else {
                self.settler.bus.record_drop(
                    &self.sub,
                    &envelope.topic,
                    DropReason::CircuitOpen,
                    1,
                );
            }
            return false;
        }
        self.sub.consumed.running.store(1, Ordering::Relaxed);
        true
    }

    fn finish(&mut self, envelope: &Arc<Envelope>, started: Instant, outcome: Outcome) {
        let finished = Instant::now();
        self.last_finish = Some(finished);
        let sub = &self.sub;
        sub.latency.record(finished - started);
        match outcome {
            Outcome::Ok => {
                self.breaker.record_success();
                self.settler.acknowledge(envelope);
            }
            Outcome::Failed(error) => {
                sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
                self.breaker.record_failure(finished);
                tracing::warn!(subscription = %sub.name, message_id = %envelope.id, topic = %envelope.topic, %error, "handler failed");
                self.settler.failed(envelope, &error.message);
            }
            Outcome::Panicked(panic) => {
                let sub = &self.sub;
                sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
                sub.consumed.panicked.fetch_add(1, Ordering::Relaxed);
                self.breaker.record_failure(finished);
                tracing::error!(subscription = %sub.name, message_id = %envelope.id, topic = %envelope.topic, %panic, "handler panicked");
                self.settler.failed(envelope, &format!("panicked: {panic}"));
            }
        }
        let sub = &self.sub;
        self.publish_circuit();
        sub.consumed.running.store(0, Ordering::Relaxed);
    }

    /// A manual-ack handler returned: its settlement decides the outcome.
    fn finish_manual(
        &mut self,
        envelope: &Arc<Envelope>,
        started: Instant,
        outcome: Outcome,
        settlement: flume::Receiver<Settlement>,
        ack_wait: Duration,
    ) {
        let finished = Instant::now();
        self.last_finish = Some(finished);
        self.sub.latency.record(finished - started);
        let error = match outcome {
            Outcome::Ok => {
                self.breaker.record_success();
                self.settler
                    .await_settlement(envelope.clone(), settlement, ack_wait);
                self.publish_circuit();
                self.sub.consumed.running.store(0, Ordering::Relaxed);
                return;
            }
            Outcome::Failed(error) => error.message,
            Outcome::Panicked(panic) => {
                self.sub.consumed.panicked.fetch_add(1, Ordering::Relaxed);
                format!("panicked: {panic}")
            }
        };
        if matches!(settlement.try_recv(), Ok(Settlement::Ack)) {
            self.breaker.record_success();
            self.settler.acknowledge(envelope);
        } else {
            self.sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
            self.breaker.record_failure(finished);
            tracing::warn!(subscription = %self.sub.name, message_id = %envelope.id, %error, "handler failed");
            self.settler.failed(envelope, &error);
        }
        self.publish_circuit();
        self.sub.consumed.running.store(0, Ordering::Relaxed);
    }

    fn publish_circuit(&self) {
        let state = circuit_to_u8(self.breaker.state());
        if self.sub.circuit.load(Ordering::Relaxed) != state {
            self.sub.circuit.store(state, Ordering::Relaxed);
        }
    }

    /// The item taken by `next` is settled (handled, skipped as a
    /// duplicate, expired, or refused by the breaker).
    fn done_with_item(&self) {
        // Release: what the handler queued elsewhere is visible to an
        // `is_quiet` that sees this.
        self.sub.consumed.running.store(0, Ordering::Release);
    }

    /// Next message; an empty queue resets the clock reuse.
    fn next(&mut self, may_idle: bool) -> Next {
        let next = self.sub.next(may_idle);
        if !matches!(next, Next::Item(_)) {
            self.last_finish = None;
        }
        next
    }
}

/// Times an async consumer that found its queue empty looks again, yielding
/// to the runtime in between, before it goes to sleep. Under a steady stream
/// this saves a wake-up (a doorbell ring and a task schedule) per message.
const SPINS_BEFORE_SLEEP: u32 = 4;

/// The handler of an async consumer.
enum AsyncKind {
    /// Returning Ok acknowledges.
    Auto(Arc<dyn AsyncHandler>),
    /// The handler acknowledges through an [`Acknowledgement`].
    Manual(Arc<dyn ManualAckHandler>, Duration),
}

async fn consume_async(
    mut consumer: Consumer,
    handler: AsyncKind,
    doorbell: flume::Receiver<()>,
    _done: flume::Sender<()>,
) {
    let mut empty_looks = 0;
    loop {
        match consumer.next(empty_looks >= SPINS_BEFORE_SLEEP) {
            Next::Item(envelope) => {
                empty_looks = 0;
                let started = consumer.start_clock();
                if !consumer.is_duplicate(&envelope) && consumer.admit(&envelope, started) {
                    match &handler {
                        AsyncKind::Auto(handler) => {
                            let outcome = CatchUnwind::new(handler.call(envelope.clone())).await;
                            consumer.finish(&envelope, started, outcome);
                        }
                        AsyncKind::Manual(handler, ack_wait) => {
                            let (settle, settlement) = flume::bounded(1);
                            let ack = Acknowledgement {
                                settle: Some(settle),
                            };
                            let outcome =
                                CatchUnwind::new(handler.call(envelope.clone(), ack)).await;
                            consumer
                                .finish_manual(&envelope, started, outcome, settlement, *ack_wait);
                        }
                    }
                }
                consumer.done_with_item();
            }
            Next::Idle if empty_looks < SPINS_BEFORE_SLEEP => {
                empty_looks += 1;
                tokio::task::yield_now().await;
            }
            Next::Idle => {
                empty_looks = 0;
                if doorbell.recv_async().await.is_err() {
                    break;
                }
            }
            Next::Finished => break,
        }
    }
}

fn consume_blocking(
    mut consumer: Consumer,
    mut handler: BlockingHandler,
    doorbell: flume::Receiver<()>,
    _done: flume::Sender<()>,
) {
    // Like the async consumer, look a few times (yielding the CPU) before
    // sleeping: a thread wake-up per message dominated `bistoury run`.
    let mut empty_looks = 0;
    loop {
        match consumer.next(empty_looks >= SPINS_BEFORE_SLEEP) {
            Next::Item(envelope) => {
                empty_looks = 0;
                let started = consumer.start_clock();
                if !consumer.is_duplicate(&envelope) && consumer.admit(&envelope, started) {
                    let outcome = call_blocking(|| handler(&envelope));
                    consumer.finish(&envelope, started, outcome);
                }
                consumer.done_with_item();
            }
            Next::Idle if empty_looks < SPINS_BEFORE_SLEEP => {
                empty_looks += 1;
                std::thread::yield_now();
            }
            Next::Idle => {
                empty_looks = 0;
                if doorbell.recv().is_err() {
                    break;
                }
            }
            Next::Finished => break,
        }
    }
}

/// The in-process message bus; clone it freely (clones share one bus).
#[derive(Clone)]
pub struct MessageBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for MessageBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBus")
            .field("subscriptions", &lock(&self.inner.subscriptions).len())
            .finish()
    }
}

impl MessageBus {
    /// A bus whose async consumers run on the current Tokio runtime.
    ///
    /// # Panics
    /// When called outside a Tokio runtime; use [`MessageBus::with_runtime`] there.
    pub fn new() -> Self {
        Self::with_runtime(tokio::runtime::Handle::current())
    }

    /// A bus whose async consumers run on `runtime`.
    pub fn with_runtime(runtime: tokio::runtime::Handle) -> Self {
        Self::with_runtime_and_store(runtime, None)
    }

    /// A bus whose async consumers run on `runtime`, durable with `store`.
    pub fn with_runtime_and_store(runtime: tokio::runtime::Handle, store: Option<Store>) -> Self {
        Self {
            inner: Arc::new(BusInner {
                routes: RwLock::new(RouteIndex::new()),
                subscriptions: Mutex::new(BTreeMap::new()),
                consumers: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                accepting: AtomicBool::new(true),
                counters: CachePadded::default(),
                retired: Mutex::new(Vec::new()),
                dead_letters: Mutex::new(VecDeque::new()),
                dropped_by_topic: Mutex::new(HashMap::new()),
                pending_requests: Mutex::new(HashMap::new()),
                pending_count: AtomicUsize::new(0),
                runtime,
                store,
                replayed: AtomicU64::new(0),
            }),
        }
    }

    /// A durable bus on the current Tokio runtime: at-least-once and
    /// exactly-once messages are written to `store` before `publish`
    /// returns, and a *named* subscription picks up, when it subscribes,
    /// the messages the store still holds for that name (see
    /// [`crate::store`] and the crate docs on delivery guarantees).
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn durable(store: Store) -> Self {
        Self::with_runtime_and_store(tokio::runtime::Handle::current(), Some(store))
    }

    /// The durable store, if this bus has one.
    pub fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }

    /// Subscribes `handler` to topics matching `pattern`.
    pub fn subscribe(
        &self,
        pattern: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        self.subscribe_many(&[pattern], handler, options)
    }

    /// Subscribes one handler, with one queue, to several patterns: a
    /// message matching more than one is still delivered once, and the
    /// subscription keeps publish order across all of them.
    pub fn subscribe_many(
        &self,
        patterns: &[&str],
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        let mut patterns = patterns
            .iter()
            .map(TopicPattern::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = std::collections::HashSet::new();
        patterns.retain(|p| seen.insert(p.clone()));
        let pattern = patterns
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(SubscribeError::BusClosed);
        }
        let id = SubscriptionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let (doorbell_tx, doorbell_rx) = flume::bounded(1);
        let (done_tx, done_rx) = flume::bounded(1);
        let durable = match &self.inner.store {
            Some(_) if !options.name.is_empty() => Some(Arc::<str>::from(options.name.as_str())),
            _ => None,
        };
        let mut dedupe = DedupeWindow::new(options.dedupe_window);
        if let (Some(store), Some(name)) = (&self.inner.store, &durable) {
            for id in store.processed(name) {
                dedupe.insert(id);
            }
        }
        let name = if options.name.is_empty() {
            format!("{id} {pattern}")
        } else {
            options.name
        };
        let sub = Arc::new(Subscription {
            id,
            name,
            patterns: patterns.clone(),
            filter: options.filter,
            overflow: options.overflow,
            state: Mutex::new(QueueState {
                queue: PriorityQueue::new(options.capacity),
                enqueued: 0,
                consumer_idle: false,
                closed: false,
                abandon: false,
            }),
            doorbell: doorbell_tx,
            done: done_rx,
            space: Notify::new(),
            blocked_publishers: AtomicUsize::new(0),
            consumed: CachePadded::default(),
            circuit: AtomicU8::new(0),
            drops: DropCounters::default(),
            latency: SharedLatency::default(),
            durable,
            dedupe: Mutex::new(dedupe),
        });
        // What the store still holds for this name goes first, in the order
        // it was published.
        if let (Some(store), Some(name)) = (&self.inner.store, &sub.durable) {
            let replay = store.take_replay(name);
            self.inner
                .replayed
                .fetch_add(replay.len() as u64, Ordering::Relaxed);
            for envelope in replay {
                sub.requeue(envelope);
            }
        }
        let consumer = Consumer::new(
            self.inner.clone(),
            sub.clone(),
            options.circuit_breaker,
            options.retry,
        );
        let kind = match handler {
            Handler::Async(handler) => Ok(AsyncKind::Auto(handler)),
            Handler::ManualAck { handler, ack_wait } => Ok(AsyncKind::Manual(handler, ack_wait)),
            Handler::Blocking(handler) => Err(handler),
        };
        match kind {
            Ok(kind) => {
                let task =
                    self.inner
                        .runtime
                        .spawn(consume_async(consumer, kind, doorbell_rx, done_tx));
                lock(&self.inner.consumers).push(task);
            }
            Err(handler) => {
                std::thread::Builder::new()
                    .name(format!("bus-{id}"))
                    .spawn(move || consume_blocking(consumer, handler, doorbell_rx, done_tx))
                    .map_err(|_| SubscribeError::BusClosed)?;
            }
        }
        lock(&self.inner.subscriptions).insert(id, sub.clone());
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        for pattern in &patterns {
            routes.insert(pattern, id, sub.clone());
        }
        Ok(id)
    }

    /// Removes exactly one subscription. Messages still in its queue are
    /// dropped and counted (reason `unsubscribed`). Returns false if unknown.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let Some(sub) = lock(&self.inner.subscriptions).remove(&id) else {
            return false;
        };
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        for pattern in &sub.patterns {
            routes.remove(pattern, id);
        }
        drop(routes);
        for envelope in sub.abandon() {
            self.inner
                .record_drop(&sub, &envelope.topic, DropReason::Unsubscribed, 1);
        }
        lock(&self.inner.retired).push(sub.stats());
        true
    }

    fn routes(&self, topic: &Topic) -> Arc<[Arc<Subscription>]> {
        {
            let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = routes.cached(topic) {
                return hit.clone();
            }
        }
        self.inner
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .resolve(topic)
    }

    fn accept(&self, envelope: &Envelope) -> Result<(), PublishError> {
        if !self.inner.accepting.load(Ordering::Relaxed) {
            return Err(PublishError::BusClosed);
        }
        if envelope.expires_at_ms.is_some() && envelope.is_expired_at(now_ms()) {
            self.inner.counters.expired.fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::Expired);
        }
        self.inner
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        if let Some(request_id) = envelope.correlation_id {
            if self.inner.pending_count.load(Ordering::SeqCst) > 0 {
                if let Some(waiter) = lock(&self.inner.pending_requests).remove(&request_id) {
                    self.inner.pending_count.fetch_sub(1, Ordering::SeqCst);
                    let _ = waiter.send(envelope.clone());
                }
            }
        }
        Ok(())
    }

    /// Publishes a message to every matching subscription, waiting for room
    /// where a subscription's policy is `Block`.
    ///
    /// With fan-out, one full subscription does not stop the others: the
    /// message is queued everywhere it fits, and the error (if any) says which
    /// subscriptions refused it and how many accepted it.
    pub async fn publish(&self, envelope: Envelope) -> Result<PublishReceipt, PublishError> {
        self.publish_shared(Arc::new(envelope)).await
    }

    /// [`publish`](Self::publish) for a message already behind an `Arc`, so a
    /// relay or a benchmark can publish the same message repeatedly without
    /// copying it.
    pub async fn publish_shared(
        &self,
        envelope: Arc<Envelope>,
    ) -> Result<PublishReceipt, PublishError> {
        self.accept(&envelope)?;
        let routes = self.routes(&envelope.topic);
        if let Some(durable) = self.persist(&routes, &envelope)? {
            durable.wait_async().await?;
        }
        let mut outcome = FanOut::default();
        for sub in routes.iter() {
            if sub.filter.as_ref().is_some_and(|f| !f.matches(&envelope)) {
                continue;
            }
            let result = self.enqueue(sub, &envelope).await;
            outcome.add(sub.id, result);
        }
        outcome.finish(&self.inner)
    }

    /// Publishes from a plain (non-async) thread, such as a blocking
    /// handler's: queues synchronously and enters the runtime only to wait
    /// for room in a full `Block` subscription. Must not be called from
    /// inside an async task (use [`publish`](Self::publish) there).
    pub fn publish_blocking(&self, envelope: Envelope) -> Result<PublishReceipt, PublishError> {
        self.publish_now(envelope, true)
    }

    /// Publishes without ever waiting: a full `Block` subscription counts as
    /// a block timeout at once. For blocking handlers and other synchronous code.
    pub fn try_publish(&self, envelope: Envelope) -> Result<PublishReceipt, PublishError> {
        self.publish_now(envelope, false)
    }

    /// The synchronous publish; `wait` says whether a full `Block`
    /// subscription is waited for (blocking this thread) or given up on.
    fn publish_now(&self, envelope: Envelope, wait: bool) -> Result<PublishReceipt, PublishError> {
        self.accept(&envelope)?;
        let envelope = Arc::new(envelope);
        let routes = self.routes(&envelope.topic);
        if let Some(durable) = self.persist(&routes, &envelope)? {
            durable.wait()?;
        }
        let mut outcome = FanOut::default();
        for sub in routes.iter() {
            if sub.filter.as_ref().is_some_and(|f| !f.matches(&envelope)) {
                continue;
            }
            let result = match self.enqueue_once(sub, &envelope) {
                Some(result) => result,
                None if wait => self.inner.runtime.block_on(self.enqueue(sub, &envelope)),
                None => self.give_up(sub, &envelope, Duration::ZERO),
            };
            outcome.add(sub.id, result);
        }
        outcome.finish(&self.inner)
    }

    /// Starts writing a durable message to the store, with the names of the
    /// durable subscriptions it goes to. `None` when nothing is written
    /// (no store, or a fire-and-forget message).
    fn persist(
        &self,
        routes: &[Arc<Subscription>],
        envelope: &Envelope,
    ) -> Result<Option<crate::store::Durable>, PublishError> {
        let Some(store) = &self.inner.store else {
            return Ok(None);
        };
        if envelope.delivery_mode == DeliveryMode::FireAndForget {
            return Ok(None);
        }
        let subs = routes
            .iter()
            .filter(|sub| sub.filter.as_ref().is_none_or(|f| f.matches(envelope)))
            .filter_map(|sub| sub.durable.clone())
            .collect();
        Ok(Some(store.append(envelope, subs)?))
    }

    /// Counts a block-policy timeout.
    fn give_up(
        &self,
        sub: &Subscription,
        envelope: &Arc<Envelope>,
        waited: Duration,
    ) -> Result<Placed, PublishError> {
        self.inner
            .record_drop(sub, &envelope.topic, DropReason::BlockTimeout, 1);
        Err(PublishError::BlockedTimeout {
            subscription: sub.id,
            waited,
        })
    }

    /// Tries once. `None` means "full, and the policy says wait".
    fn enqueue_once(
        &self,
        sub: &Subscription,
        envelope: &Arc<Envelope>,
    ) -> Option<Result<Placed, PublishError>> {
        match sub.try_enqueue(envelope) {
            Enqueued::Queued => Some(Ok(Placed::Queued)),
            Enqueued::Displaced(old) => {
                self.inner
                    .record_drop(sub, &old.topic, DropReason::Overflow, 1);
                Some(Ok(Placed::Displaced))
            }
            // Unsubscribed between routing and enqueue: as if never matched.
            Enqueued::Closed => Some(Ok(Placed::Skipped)),
            Enqueued::Full => match sub.overflow {
                OverflowPolicy::Block { .. } => None,
                OverflowPolicy::DropOldestLowest => {
                    self.inner
                        .record_drop(sub, &envelope.topic, DropReason::Overflow, 1);
                    Some(Ok(Placed::Dropped))
                }
                OverflowPolicy::Reject => {
                    self.inner
                        .record_drop(sub, &envelope.topic, DropReason::Rejected, 1);
                    Some(Err(PublishError::Rejected {
                        rejected_by: vec![sub.id],
                        accepted_by: 0,
                    }))
                }
            },
        }
    }

    async fn enqueue(
        &self,
        sub: &Subscription,
        envelope: &Arc<Envelope>,
    ) -> Result<Placed, PublishError> {
        if let Some(result) = self.enqueue_once(sub, envelope) {
            return result;
        }
        let OverflowPolicy::Block { timeout } = sub.overflow else {
            unreachable!("only the block policy asks to wait");
        };
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        sub.blocked_publishers.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            let notified = sub.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = self.enqueue_once(sub, envelope) {
                break result;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self
                    .enqueue_once(sub, envelope)
                    .unwrap_or_else(|| self.give_up(sub, envelope, started.elapsed()));
            }
        };
        sub.blocked_publishers.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Publishes `request` and waits up to `timeout` for the first message
    /// whose correlation id is the request's id. Sets `reply_to` to
    /// `reply.<request id>` when the request has none.
    pub async fn request(
        &self,
        mut request: Envelope,
        timeout: Duration,
    ) -> Result<Envelope, RequestError> {
        if request.reply_to.is_none() {
            let topic = Topic::new(format!("reply.{}", request.id))
                .expect("`reply.<uuid>` is a valid topic");
            request.reply_to = Some(topic);
        }
        let id = request.id;
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending_requests).insert(id, tx);
        self.inner.pending_count.fetch_add(1, Ordering::SeqCst);
        let forget = || {
            if lock(&self.inner.pending_requests).remove(&id).is_some() {
                self.inner.pending_count.fetch_sub(1, Ordering::SeqCst);
            }
        };
        if let Err(error) = self.publish(request).await {
            forget();
            return Err(error.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => Ok(response),
            _ => {
                forget();
                Err(RequestError::Timeout(timeout))
            }
        }
    }

    /// A snapshot of every counter. Bus-wide handler figures are the sums
    /// over subscriptions (removed ones included), so consumers never contend
    /// on a shared counter.
    pub fn stats(&self) -> BusStats {
        let c = &self.inner.counters;
        let subscriptions: Vec<SubscriptionStats> = lock(&self.inner.subscriptions)
            .values()
            .map(|s| s.stats())
            .collect();
        // Handlers running and redeliveries waiting out their backoff.
        let running: i64 = lock(&self.inner.subscriptions)
            .values()
            .map(|s| {
                (s.consumed.running.load(Ordering::Relaxed)
                    + s.consumed.retrying.load(Ordering::Relaxed)) as i64
            })
            .sum();
        let retired = lock(&self.inner.retired);
        let all = || subscriptions.iter().chain(retired.iter());
        let mut dropped = BTreeMap::new();
        for s in all() {
            for (reason, n) in &s.dropped {
                *dropped.entry(*reason).or_insert(0) += n;
            }
        }
        BusStats {
            published: c.published.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
            delivered: all().map(|s| s.delivered).sum(),
            failed: all().map(|s| s.failed).sum(),
            panicked: all().map(|s| s.panicked).sum(),
            expired: c.expired.load(Ordering::Relaxed) + all().map(|s| s.expired).sum::<u64>(),
            retries: all().map(|s| s.retries).sum(),
            dead_lettered: all().map(|s| s.dead_lettered).sum(),
            duplicates: all().map(|s| s.duplicates).sum(),
            replayed: self.inner.replayed.load(Ordering::Relaxed),
            in_flight: subscriptions
                .iter()
                .map(|s| s.queue_depth as i64)
                .sum::<i64>()
                + running,
            dropped,
            dropped_by_topic: lock(&self.inner.dropped_by_topic)
                .iter()
                .map(|(t, n)| (t.to_string(), *n))
                .collect(),
            subscriptions,
        }
    }

    /// True when no message is queued or being handled anywhere on the bus
    /// (redeliveries waiting out their backoff and manual acks outstanding
    /// count as being handled). Cheaper than [`stats`](Self::stats): no
    /// histograms are copied.
    ///
    /// Exact, not a sample: a handler's publications are queued before the
    /// handler counts as finished, and a message queued anywhere while the
    /// subscriptions are being looked at changes a queue's `enqueued`
    /// count, which is read twice. So after `true`, nothing is left but
    /// what a source (or a timer) publishes next.
    pub fn is_quiet(&self) -> bool {
        let subscriptions: Vec<Arc<Subscription>> =
            lock(&self.inner.subscriptions).values().cloned().collect();
        let mut enqueued = 0u64;
        for s in &subscriptions {
            let state = lock(&s.state);
            if !state.queue.is_empty() {
                return false;
            }
            enqueued += state.enqueued;
            drop(state);
            if s.consumed.running.load(Ordering::Acquire) != 0
                || s.consumed.retrying.load(Ordering::Acquire) != 0
            {
                return false;
            }
        }
        let again: u64 = subscriptions.iter().map(|s| lock(&s.state).enqueued).sum();
        again == enqueued
    }

    /// The most recent dead letters (up to 10,000), oldest first.
    ///
    /// On a durable bus these come from the store, so they include dead
    /// letters of earlier runs.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        match &self.inner.store {
            Some(store) => store.dead_letters(),
            None => lock(&self.inner.dead_letters).iter().cloned().collect(),
        }
    }

    /// True until shutdown starts.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Stops accepting messages, lets every consumer drain its queue until
    /// `deadline`, then drops (and counts) whatever is left.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let subs: Vec<Arc<Subscription>> =
            lock(&self.inner.subscriptions).values().cloned().collect();
        for sub in &subs {
            sub.close();
        }
        let wait_all = async {
            for sub in &subs {
                let _ = sub.done.recv_async().await;
            }
        };
        let drained = tokio::time::timeout(deadline, wait_all).await.is_ok();
        let mut left = BTreeMap::new();
        for sub in &subs {
            let remaining = sub.abandon();
            if !remaining.is_empty() {
                left.insert(sub.name.clone(), remaining.len());
            }
            for envelope in remaining {
                self.inner
                    .record_drop(sub, &envelope.topic, DropReason::Shutdown, 1);
            }
        }
        if !drained {
            for task in lock(&self.inner.consumers).drain(..) {
                task.abort();
            }
        }
        // Durable messages left behind stay pending in the store for the
        // next start; what was settled is written now.
        if let Some(store) = &self.inner.store {
            if let Err(error) = store.sync() {
                tracing::error!(%error, "durable store: final sync failed");
            }
        }
        ShutdownReport {
            drained,
            left,
            stats: self.stats(),
        }
    }
}

impl Default for MessageBus {
    fn default() -> Self {
        Self::new()
    }
}
