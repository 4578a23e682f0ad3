//! A subscription whose owner takes its messages one at a time, on its own
//! thread, instead of a consumer calling a handler: the agent driver pulls
//! an agent's deliveries this way, with no hand-over between threads per
//! message. Everything else is the subscription's as usual: its priority
//! queue and overflow policy, de-duplication, expiry, the breaker, retries
//! and dead letters, latency and counters.

use std::sync::Arc;
use std::time::Instant;

use crate::bus::error::HandlerResult;
use crate::bus::handler::Outcome;
use crate::model::ids::SubscriptionId;
use crate::model::Envelope;

use super::consumer::Consumer;
use super::message_bus::MessageBus;
use super::subscription::Next;

/// What [`Pulled::next`] found.
#[derive(Debug)]
pub enum Pull {
    /// A message to handle, then [`settle`](Pulled::settle).
    Message(Arc<Envelope>),
    /// Nothing now; with `may_idle` the doorbell rings when something comes.
    Empty,
    /// The subscription is closed (the bus shut down or it was removed).
    Closed,
}

/// A pulled subscription (see the module docs); dropping it unsubscribes.
pub struct Pulled {
    consumer: Consumer,
    doorbell: flume::Receiver<()>,
    /// Held while the owner may still take messages (shutdown waits for it).
    _done: flume::Sender<()>,
    bus: MessageBus,
    /// The message taken and not yet settled, and when it was taken.
    taken: Option<(Arc<Envelope>, Instant)>,
}

impl std::fmt::Debug for Pulled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulled")
            .field("subscription", &self.id())
            .finish_non_exhaustive()
    }
}

impl Pulled {
    pub(super) fn new(
        consumer: Consumer,
        doorbell: flume::Receiver<()>,
        done: flume::Sender<()>,
        bus: MessageBus,
    ) -> Self {
        Self {
            consumer,
            doorbell,
            _done: done,
            bus,
            taken: None,
        }
    }

    /// Its id.
    pub fn id(&self) -> SubscriptionId {
        self.consumer.sub.id
    }

    /// The doorbell: a message is sent on it when something is queued
    /// after [`next`](Self::next) was called with `may_idle` and found
    /// nothing.
    pub fn doorbell(&self) -> &flume::Receiver<()> {
        &self.doorbell
    }

    /// Whether a taken message waits to be settled.
    pub fn is_holding(&self) -> bool {
        self.taken.is_some()
    }

    /// The next message to handle, in priority order. One at a time: while
    /// one is taken and not settled, this returns [`Pull::Empty`] (the
    /// subscription counts as busy meanwhile, so [`MessageBus::is_quiet`]
    /// stays exact). Duplicates, expired messages and messages an open
    /// breaker refuses are settled here and skipped.
    pub fn next(&mut self, may_idle: bool) -> Pull {
        if self.taken.is_some() {
            return Pull::Empty;
        }
        loop {
            match self.consumer.next(may_idle) {
                Next::Item(envelope) => {
                    let started = self.consumer.start_clock();
                    if !self.consumer.is_duplicate(&envelope)
                        && self.consumer.admit(&envelope, started)
                    {
                        self.taken = Some((envelope.clone(), started));
                        return Pull::Message(envelope);
                    }
                    self.consumer.done_with_item();
                }
                Next::Idle => return Pull::Empty,
                Next::Finished => return Pull::Closed,
            }
        }
    }

    /// Settles the taken message: acknowledged when `outcome` is `Ok`,
    /// else retried or dead-lettered per the subscription's retry policy.
    pub fn settle(&mut self, outcome: &HandlerResult) {
        let Some((envelope, started)) = self.taken.take() else {
            return;
        };
        let outcome = match outcome {
            Ok(()) => Outcome::Ok,
            Err(error) => Outcome::Failed(error.clone()),
        };
        self.consumer.finish(&envelope, started, outcome);
        self.consumer.done_with_item();
    }
}

impl Drop for Pulled {
    fn drop(&mut self) {
        // A message taken and never settled counts as failed (retried or
        // dead-lettered), as a handler that never returned would.
        if self.taken.is_some() {
            self.settle(&Err(crate::bus::error::HandlerError::new(
                "dropped before it was handled",
            )));
        }
        self.bus.unsubscribe(self.consumer.sub.id);
    }
}
