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

use crate::circuit::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use crate::error::{PublishError, RequestError, TopicError};
use crate::filter::Filter;
use crate::handler::{call_blocking, AsyncHandler, BlockingHandler, CatchUnwind, Handler, Outcome};
use crate::ids::{AgentId, MessageId, SubscriptionId};
use crate::message::payload::DeadLetter;
use crate::message::{now_ms, Envelope};
use crate::message::{DeliveryMode, Payload, Priority};
use crate::queue::{PriorityQueue, PushOutcome};
use crate::reliability::{DedupeWindow, RetryPolicy};
use crate::routing::RouteIndex;
use crate::stats::{
    BusStats, CachePadded, ConsumerCounters, DropCounters, DropReason, PublishCounters,
    SharedLatency, SubscriptionStats,
};
use crate::topic::{Topic, TopicPattern};

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

/// What a consumer keeps to itself: its breaker (only the consumer touches
/// it, so the hot path takes no lock for it) and its clock.
struct Consumer {
    bus: Arc<BusInner>,
    sub: Arc<Subscription>,
    breaker: CircuitBreaker,
    /// When the previous handler run ended, if the consumer went straight on
    /// to the next message: reused as that message's start time, which saves
    /// one clock read per message under load. Latency is therefore measured
    /// from dequeue to handler completion.
    last_finish: Option<Instant>,
    retry: RetryPolicy,
    dedupe: DedupeWindow,
}

impl Consumer {
    fn new(
        bus: Arc<BusInner>,
        sub: Arc<Subscription>,
        breaker: CircuitBreakerConfig,
        retry: RetryPolicy,
        dedupe_window: usize,
    ) -> Self {
        Self {
            bus,
            sub,
            breaker: CircuitBreaker::new(breaker),
            last_finish: None,
            retry,
            dedupe: DedupeWindow::new(dedupe_window),
        }
    }

    fn reliable(envelope: &Envelope) -> bool {
        envelope.delivery_mode != DeliveryMode::FireAndForget
    }

    /// An exactly-once message this subscription already handled.
    fn is_duplicate(&self, envelope: &Envelope) -> bool {
        let duplicate = envelope.delivery_mode == DeliveryMode::ExactlyOnce
            && self.dedupe.contains(&envelope.id);
        if duplicate {
            self.sub.consumed.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        duplicate
    }

    /// A reliable delivery failed: redeliver later, or give up.
    fn retry_or_dead_letter(&mut self, envelope: &Arc<Envelope>, error: &str) {
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
                sub.consumed.retrying.fetch_sub(1, Ordering::Relaxed);
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

    /// Start time for the message just dequeued.
    fn start_clock(&mut self) -> Instant {
        self.last_finish.take().unwrap_or_else(Instant::now)
    }

    /// Checks expiry and the breaker; false means "do not call the handler".
    fn admit(&mut self, envelope: &Arc<Envelope>, now: Instant) -> bool {
        if envelope.expires_at_ms.is_some() && envelope.is_expired_at(now_ms()) {
            self.sub.consumed.expired.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !self.breaker.allow(now) {
            self.publish_circuit();
            if Self::reliable(envelope) {
                self.retry_or_dead_letter(envelope, "circuit breaker open");
            } else {
                self.bus
                    .record_drop(&self.sub, &envelope.topic, DropReason::CircuitOpen, 1);
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
                sub.consumed.delivered.fetch_add(1, Ordering::Relaxed);
                self.breaker.record_success();
                if envelope.delivery_mode == DeliveryMode::ExactlyOnce {
                    self.dedupe.insert(envelope.id);
                }
            }
            Outcome::Failed(error) => {
                sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
                self.breaker.record_failure(finished);
                tracing::warn!(subscription = %sub.name, message_id = %envelope.id, topic = %envelope.topic, %error, "handler failed");
                if Self::reliable(envelope) {
                    self.retry_or_dead_letter(envelope, &error.message);
                }
            }
            Outcome::Panicked(panic) => {
                let sub = &self.sub;
                sub.consumed.failed.fetch_add(1, Ordering::Relaxed);
                sub.consumed.panicked.fetch_add(1, Ordering::Relaxed);
                self.breaker.record_failure(finished);
                tracing::error!(subscription = %sub.name, message_id = %envelope.id, topic = %envelope.topic, %panic, "handler panicked");
                if Self::reliable(envelope) {
                    self.retry_or_dead_letter(envelope, &format!("panicked: {panic}"));
                }
            }
        }
        let sub = &self.sub;
        self.publish_circuit();
        sub.consumed.running.store(0, Ordering::Relaxed);
    }

    fn publish_circuit(&self) {
        let state = circuit_to_u8(self.breaker.state());
        if self.sub.circuit.load(Ordering::Relaxed) != state {
            self.sub.circuit.store(state, Ordering::Relaxed);
        }
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

async fn consume_async(
    mut consumer: Consumer,
    handler: Arc<dyn AsyncHandler>,
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
                    let outcome = CatchUnwind::new(handler.call(envelope.clone())).await;
                    consumer.finish(&envelope, started, outcome);
                }
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
            }),
        }
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
        });
        let consumer = Consumer::new(
            self.inner.clone(),
            sub.clone(),
            options.circuit_breaker,
            options.retry,
            options.dedupe_window,
        );
        match handler {
            Handler::Async(handler) => {
                let task = self.inner.runtime.spawn(consume_async(
                    consumer,
                    handler,
                    doorbell_rx,
                    done_tx,
                ));
                lock(&self.inner.consumers).push(task);
            }
            Handler::Blocking(handler) => {
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

    /// The most recent dead letters (up to 10,000), oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.inner.dead_letters).iter().cloned().collect()
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
