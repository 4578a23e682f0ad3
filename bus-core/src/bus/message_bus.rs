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
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::bus::error::{PublishError, RequestError};
use crate::bus::handler::Handler;
use crate::bus::queue::PriorityQueue;
use crate::bus::reliability::DedupeWindow;
use crate::bus::routing::RouteIndex;
use crate::bus::stats::{
    BusStats, CachePadded, DropCounters, DropReason, PublishCounters, SharedLatency,
    SubscriptionStats,
};
use crate::model::ids::{MessageId, SubscriptionId};
use crate::model::payload::DeadLetter;
use crate::model::topic::{Topic, TopicPattern};
use crate::model::DeliveryMode;
use crate::model::{now_ms, Envelope};
use crate::store::Store;

use super::consumer::*;
use super::pulled::Pulled;
use super::subscription::*;

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

/// Dead letters kept for `MessageBus::dead_letters`.
pub(super) const DEAD_LETTERS_KEPT: usize = 10_000;

/// Where one subscription's copy of a message went.
pub(super) enum Placed {
    Queued,
    Displaced,
    Dropped,
    Skipped,
}

/// Collects the per-subscription results of one publish.
#[derive(Default)]
pub(super) struct FanOut {
    pub(super) receipt: PublishReceipt,
    pub(super) rejected_by: Vec<SubscriptionId>,
    pub(super) first_error: Option<PublishError>,
}

impl FanOut {
    pub(super) fn add(&mut self, id: SubscriptionId, result: Result<Placed, PublishError>) {
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

    pub(super) fn finish(self, bus: &BusInner) -> Result<PublishReceipt, PublishError> {
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

pub(super) struct BusInner {
    pub(super) routes: RwLock<RouteIndex<Arc<Subscription>>>,
    pub(super) subscriptions: Mutex<BTreeMap<SubscriptionId, Arc<Subscription>>>,
    pub(super) consumers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) next_id: AtomicU64,
    pub(super) accepting: AtomicBool,
    pub(super) counters: CachePadded<PublishCounters>,
    /// The most recent dead letters, for inspection.
    pub(super) dead_letters: Mutex<VecDeque<DeadLetter>>,
    /// Figures of removed subscriptions, so bus totals never go backwards.
    pub(super) retired: Mutex<Vec<SubscriptionStats>>,
    pub(super) dropped_by_topic: Mutex<HashMap<Topic, u64>>,
    pub(super) pending_requests: Mutex<HashMap<MessageId, oneshot::Sender<Envelope>>>,
    pub(super) pending_count: AtomicUsize,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) store: Option<Store>,
    /// Messages read back from the store and queued again.
    pub(super) replayed: AtomicU64,
}

impl BusInner {
    pub(super) fn record_drop(
        &self,
        sub: &Subscription,
        topic: &Topic,
        reason: DropReason,
        n: u64,
    ) {
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

/// A subscription made, with its consumer's state, before it is routed to.
struct Prepared {
    sub: Arc<Subscription>,
    consumer: Consumer,
    doorbell: flume::Receiver<()>,
    done: flume::Sender<()>,
}

/// The in-process message bus; clone it freely (clones share one bus).
#[derive(Clone)]
pub struct MessageBus {
    pub(super) inner: Arc<BusInner>,
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
        let Prepared {
            sub,
            consumer,
            doorbell: doorbell_rx,
            done: done_tx,
        } = self.prepare(patterns, options)?;
        let id = sub.id;
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
        self.route(&sub);
        Ok(id)
    }

    /// A subscription whose messages its owner takes one at a time (see
    /// [`Pulled`]) instead of a consumer calling a handler.
    pub fn subscribe_pulled(
        &self,
        patterns: &[&str],
        options: SubscribeOptions,
    ) -> Result<Pulled, SubscribeError> {
        let Prepared {
            sub,
            consumer,
            doorbell,
            done,
        } = self.prepare(patterns, options)?;
        self.route(&sub);
        Ok(Pulled::new(consumer, doorbell, done, self.clone()))
    }

    /// Makes a subscription and its consumer's state, not yet routed to.
    fn prepare(
        &self,
        patterns: &[&str],
        options: SubscribeOptions,
    ) -> Result<Prepared, SubscribeError> {
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
            options.idle_spin,
        );
        Ok(Prepared {
            sub,
            consumer,
            doorbell: doorbell_rx,
            done: done_tx,
        })
    }

    /// Routes what is published to `sub`'s patterns to it.
    fn route(&self, sub: &Arc<Subscription>) {
        lock(&self.inner.subscriptions).insert(sub.id, sub.clone());
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        for pattern in &sub.patterns {
            routes.insert(pattern, sub.id, sub.clone());
        }
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

    pub(super) fn routes(&self, topic: &Topic) -> Arc<[Arc<Subscription>]> {
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

    pub(super) fn accept(&self, envelope: &Envelope) -> Result<(), PublishError> {
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
    pub(super) fn publish_now(
        &self,
        envelope: Envelope,
        wait: bool,
    ) -> Result<PublishReceipt, PublishError> {
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
    pub(super) fn persist(
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
    pub(super) fn give_up(
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
    pub(super) fn enqueue_once(
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

    pub(super) async fn enqueue(
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
            removed_subscriptions: retired.clone(),
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
        // Looked at under the map's lock (as `stats` does, map then each
        // subscription's state): no copy of the map per look, which lockstep
        // takes after every message.
        let subscriptions = lock(&self.inner.subscriptions);
        let mut enqueued = 0u64;
        for s in subscriptions.values() {
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
        let again: u64 = subscriptions
            .values()
            .map(|s| lock(&s.state).enqueued)
            .sum();
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
