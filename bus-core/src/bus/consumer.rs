//! The consumer of one subscription: a Tokio task for async handlers, an
//! OS thread for blocking ones, draining its queue in priority order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::circuit::{CircuitBreaker, CircuitBreakerConfig};
use crate::bus::handler::{
    call_blocking, AsyncHandler, BlockingHandler, CatchUnwind, ManualAckHandler, Outcome,
};
use crate::bus::reliability::RetryPolicy;
use crate::bus::stats::DropReason;
use crate::model::DeliveryMode;
use crate::model::{now_ms, Envelope};

use super::message_bus::*;
use super::settlement::*;
use super::subscription::*;
use super::SPINS_BEFORE_SLEEP;

/// What a consumer keeps to itself: its breaker (only the consumer touches
/// it, so the hot path takes no lock for it) and its clock.
pub(super) struct Consumer {
    pub(super) settler: Settler,
    pub(super) sub: Arc<Subscription>,
    pub(super) breaker: CircuitBreaker,
    /// When the previous handler run ended, if the consumer went straight on
    /// to the next message: reused as that message's start time, which saves
    /// one clock read per message under load. Latency is therefore measured
    /// from dequeue to handler completion.
    pub(super) last_finish: Option<Instant>,
    /// Latency mode's spin on an empty queue, and when it began.
    pub(super) idle_spin: std::time::Duration,
    pub(super) empty_since: Option<Instant>,
}

impl Consumer {
    pub(super) fn new(
        bus: Arc<BusInner>,
        sub: Arc<Subscription>,
        breaker: CircuitBreakerConfig,
        retry: RetryPolicy,
        idle_spin: std::time::Duration,
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
            idle_spin,
            empty_since: None,
        }
    }

    /// Latency mode: whether to look again at once (spinning) rather than
    /// yield or park, the queue being empty.
    fn spins(&mut self) -> bool {
        if self.idle_spin.is_zero() {
            return false;
        }
        let since = *self.empty_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.idle_spin {
            return false;
        }
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        true
    }

    pub(super) fn reliable(envelope: &Envelope) -> bool {
        envelope.delivery_mode != DeliveryMode::FireAndForget
    }

    /// An exactly-once message this subscription already handled: counted,
    /// and acknowledged again so the store stops holding it.
    pub(super) fn is_duplicate(&self, envelope: &Envelope) -> bool {
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
    pub(super) fn start_clock(&mut self) -> Instant {
        self.last_finish.take().unwrap_or_else(Instant::now)
    }

    /// Checks expiry and the breaker; false means "do not call the handler".
    pub(super) fn admit(&mut self, envelope: &Arc<Envelope>, now: Instant) -> bool {
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

    pub(super) fn finish(&mut self, envelope: &Arc<Envelope>, started: Instant, outcome: Outcome) {
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
    pub(super) fn finish_manual(
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

    pub(super) fn publish_circuit(&self) {
        let state = circuit_to_u8(self.breaker.state());
        if self.sub.circuit.load(Ordering::Relaxed) != state {
            self.sub.circuit.store(state, Ordering::Relaxed);
        }
    }

    /// The item taken by `next` is settled (handled, skipped as a
    /// duplicate, expired, or refused by the breaker).
    pub(super) fn done_with_item(&self) {
        // Release: what the handler queued elsewhere is visible to an
        // `is_quiet` that sees this.
        self.sub.consumed.running.store(0, Ordering::Release);
    }

    /// Next message; an empty queue resets the clock reuse.
    pub(super) fn next(&mut self, may_idle: bool) -> Next {
        let next = self.sub.next(may_idle);
        match next {
            Next::Item(_) => self.empty_since = None,
            _ => self.last_finish = None,
        }
        next
    }
}

/// The handler of an async consumer.
pub(super) enum AsyncKind {
    /// Returning Ok acknowledges.
    Auto(Arc<dyn AsyncHandler>),
    /// The handler acknowledges through an [`Acknowledgement`].
    Manual(Arc<dyn ManualAckHandler>, Duration),
}

pub(super) async fn consume_async(
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
            Next::Idle if consumer.spins() => {}
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

pub(super) fn consume_blocking(
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
            Next::Idle if consumer.spins() => {}
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
