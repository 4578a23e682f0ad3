//! Inline dispatch for backtests: synchronous, deterministic, no queues, no
//! threads, no clock reads.
//!
//! `publish` delivers a message and everything it causes before it
//! returns, one generation at a time, in the order the
//! [`generation`](crate::bus::generation) module defines: every message of
//! a generation reaches all its handlers (in subscription order) before any
//! message of the next; within a generation, by priority, then publisher,
//! then publish order. Handlers do not publish directly: they push
//! follow-up messages into an [`Outbox`], which becomes the next
//! generation. `publish_all` publishes a source's messages this way one
//! after the other. So the order of deliveries depends only on what was
//! published, and the same input gives the same run every time — and the
//! same order as the queued bus in lockstep.
//!
//! Messages are moved once, into the outbox, and dropped where they lie: the
//! bus swaps the outbox's buffer with its own per generation, so no message
//! is copied into a queue and out again and no buffer is allocated per
//! publish.
//!
//! Expiry is checked against a simulated clock the driver sets with
//! [`InlineBus::set_clock`]; without one nothing expires. There is no
//! circuit breaker (it needs a clock) and no request/response (a response is
//! an ordinary message with a correlation id, delivered through the outbox).

use crate::bus::error::HandlerResult;
use crate::bus::filter::Filter;
use crate::bus::generation::Publishers;
use crate::bus::handler::panic_message;
use crate::bus::routing::RouteIndex;
use crate::bus::Outbox;
use crate::model::error::TopicError;
use crate::model::ids::{AgentId, SubscriptionId};
use crate::model::topic::TopicPattern;
use crate::model::Envelope;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A handler for the inline bus.
pub type InlineHandler = Box<dyn FnMut(&Envelope, &mut Outbox) -> HandlerResult>;

struct Slot {
    id: SubscriptionId,
    name: String,
    filter: Option<Filter>,
    handler: InlineHandler,
    delivered: u64,
    failed: u64,
}

/// Counters of an inline bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InlineStats {
    /// Messages published (including outbox messages).
    pub published: u64,
    /// Handler runs that succeeded.
    pub delivered: u64,
    /// Handler runs that failed or panicked.
    pub failed: u64,
    /// Handler runs that panicked.
    pub panicked: u64,
    /// Messages past their TTL on the simulated clock.
    pub expired: u64,
    /// Messages that matched no subscription.
    pub unrouted: u64,
}

/// The parts of the bus one delivery works on.
struct Dispatch<'a> {
    slots: &'a mut [Option<Slot>],
    outbox: &'a mut Outbox,
    stats: &'a mut InlineStats,
}

impl Dispatch<'_> {
    /// Calls each target's handler in order. One `catch_unwind` covers the
    /// whole loop (it is not free, and panics are rare); after a panic the
    /// loop resumes with the next target.
    fn deliver(&mut self, targets: &[usize], envelope: &Envelope) {
        if targets.is_empty() {
            self.stats.unrouted += 1;
            return;
        }
        let mut reached = 0;
        let mut next = 0;
        // Where the current handler started, and how full its outbox was then.
        let progress = Cell::new((0, 0));
        while next < targets.len() {
            let result = catch_unwind(AssertUnwindSafe(|| {
                self.run(targets, next, envelope, &progress)
            }));
            match result {
                Ok(n) => {
                    reached += n;
                    break;
                }
                Err(panic) => {
                    let (at, outbox_mark) = progress.get();
                    reached += 1;
                    // What the panicking handler put in the outbox is not sent.
                    self.outbox.messages.truncate(outbox_mark);
                    self.stats.failed += 1;
                    self.stats.panicked += 1;
                    if let Some(slot) = self.slots[targets[at]].as_mut() {
                        slot.failed += 1;
                        tracing::error!(subscription = %slot.name, id = %slot.id, message_id = %envelope.id, panic = %panic_message(&*panic), "inline handler panicked");
                    }
                    next = at + 1;
                }
            }
        }
        if reached == 0 {
            self.stats.unrouted += 1;
        }
    }

    /// Runs the handlers of `targets[start..]`; returns how many it reached.
    /// `progress` tells the caller where a panic happened.
    #[inline]
    fn run(
        &mut self,
        targets: &[usize],
        start: usize,
        envelope: &Envelope,
        progress: &Cell<(usize, usize)>,
    ) -> usize {
        let mut reached = 0;
        for (i, &target) in targets.iter().enumerate().skip(start) {
            let Some(slot) = self.slots[target].as_mut() else {
                continue;
            };
            if slot.filter.as_ref().is_some_and(|f| !f.matches(envelope)) {
                continue;
            }
            progress.set((i, self.outbox.len()));
            reached += 1;
            match (slot.handler)(envelope, self.outbox) {
                Ok(()) => slot.delivered += 1,
                Err(error) => {
                    self.stats.failed += 1;
                    slot.failed += 1;
                    tracing::warn!(subscription = %slot.name, id = %slot.id, message_id = %envelope.id, %error, "inline handler failed");
                }
            }
        }
        reached
    }
}

/// The synchronous, deterministic bus.
#[derive(Default)]
pub struct InlineBus {
    routes: RouteIndex<usize>,
    slots: Vec<Option<Slot>>,
    /// What handlers publish while a generation is delivered.
    outbox: Outbox,
    /// The generation being delivered (the outbox's previous buffer).
    generation: Vec<Envelope>,
    /// The messages of a [`publish_all`](Self::publish_all).
    batch: Vec<Envelope>,
    clock_ms: Option<i64>,
    stats: InlineStats,
    delivered_by_removed: u64,
    /// Subscribers by name, in the order they first subscribed: a
    /// generation's publishers are ordered by it.
    publishers: Publishers,
}

impl InlineBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes a handler; subscription order is delivery order, and
    /// the order of `name`'s first subscription is its place among a
    /// generation's publishers.
    pub fn subscribe(
        &mut self,
        name: &str,
        pattern: &str,
        filter: Option<Filter>,
        handler: impl FnMut(&Envelope, &mut Outbox) -> HandlerResult + 'static,
    ) -> Result<SubscriptionId, TopicError> {
        let pattern = TopicPattern::new(pattern)?;
        self.publishers.register(&AgentId::new(name));
        let slot = self.slots.len();
        let id = SubscriptionId(slot as u64 + 1);
        self.slots.push(Some(Slot {
            id,
            name: name.to_string(),
            filter,
            handler: Box::new(handler),
            delivered: 0,
            failed: 0,
        }));
        self.routes.insert(&pattern, id, slot);
        Ok(id)
    }

    /// Removes exactly one subscription.
    pub fn unsubscribe(&mut self, id: SubscriptionId, pattern: &TopicPattern) -> bool {
        let slot = (id.0 - 1) as usize;
        let known = self.slots.get(slot).is_some_and(|s| s.is_some());
        if known && self.routes.remove(pattern, id) {
            if let Some(removed) = self.slots[slot].take() {
                self.delivered_by_removed += removed.delivered;
            }
            true
        } else {
            false
        }
    }

    /// Sets the simulated time used for expiry.
    pub fn set_clock(&mut self, now_ms: i64) {
        self.clock_ms = Some(now_ms);
    }

    /// Delivers `envelope` and everything its handlers publish, generation
    /// by generation, before returning.
    pub fn publish(&mut self, envelope: &Envelope) {
        self.dispatch(envelope);
        self.work_through();
    }

    /// Publishes the messages in `out`, in order, each with everything it
    /// causes (generation by generation) before the next; leaves `out`
    /// empty.
    pub fn publish_all(&mut self, out: &mut Outbox) {
        let mut batch = std::mem::take(&mut self.batch);
        std::mem::swap(&mut batch, &mut out.messages);
        for message in &batch {
            self.publish(message);
        }
        batch.clear();
        self.batch = batch;
    }

    /// Delivers what the handlers published, one generation at a time.
    fn work_through(&mut self) {
        let mut generation = std::mem::take(&mut self.generation);
        while !self.outbox.is_empty() {
            std::mem::swap(&mut generation, &mut self.outbox.messages);
            self.publishers.order(&mut generation);
            for message in &generation {
                self.dispatch(message);
            }
            generation.clear();
        }
        self.generation = generation;
    }

    fn dispatch(&mut self, envelope: &Envelope) {
        self.stats.published += 1;
        if let (Some(expires), Some(now)) = (envelope.expires_at_ms, self.clock_ms) {
            if expires <= now {
                self.stats.expired += 1;
                return;
            }
        }
        let Self {
            routes,
            slots,
            outbox,
            stats,
            ..
        } = self;
        let mut run = Dispatch {
            slots,
            outbox,
            stats,
        };
        if let Some(targets) = routes.cached(&envelope.topic) {
            run.deliver(targets, envelope);
        } else {
            let targets = routes.resolve(&envelope.topic);
            run.deliver(&targets, envelope);
        }
    }

    /// The counters.
    pub fn stats(&self) -> InlineStats {
        InlineStats {
            delivered: self.delivered_by_removed
                + self
                    .slots
                    .iter()
                    .flatten()
                    .map(|s| s.delivered)
                    .sum::<u64>(),
            ..self.stats
        }
    }

    /// Every subscription still there: its name, successful and failed
    /// handler runs, in subscription order.
    pub fn subscriptions(&self) -> Vec<(String, u64, u64)> {
        (self.slots.iter().flatten())
            .map(|slot| (slot.name.clone(), slot.delivered, slot.failed))
            .collect()
    }

    /// Successful and failed handler runs of one subscription.
    pub fn subscription_counts(&self, id: SubscriptionId) -> Option<(u64, u64)> {
        let slot = self.slots.get((id.0 - 1) as usize)?.as_ref()?;
        Some((slot.delivered, slot.failed))
    }
}
