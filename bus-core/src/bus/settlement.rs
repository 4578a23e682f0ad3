//! Settling a delivery: acknowledge it, retry it with backoff, or
//! dead-letter it; and the [`Acknowledgement`] a manual-ack handler holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::reliability::RetryPolicy;
use crate::bus::stats::DropReason;
use crate::model::ids::AgentId;
use crate::model::payload::DeadLetter;
use crate::model::topic::Topic;
use crate::model::{now_ms, Envelope};
use crate::model::{DeliveryMode, Payload, Priority};
use crate::store::Store;

use super::message_bus::*;
use super::subscription::*;

/// Settles deliveries: acknowledges, retries or dead-letters them. The
/// consumer owns one; a manual-ack handler's settlement carries a clone.
#[derive(Clone)]
pub(super) struct Settler {
    pub(super) bus: Arc<BusInner>,
    pub(super) sub: Arc<Subscription>,
    pub(super) retry: RetryPolicy,
}

impl Settler {
    /// The handler finished the message.
    pub(super) fn acknowledge(&self, envelope: &Envelope) {
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
    pub(super) fn journal(&self, envelope: &Envelope) -> Option<(&Store, &Arc<str>)> {
        let store = self.bus.store.as_ref()?;
        let name = self.sub.durable.as_ref()?;
        (envelope.delivery_mode != DeliveryMode::FireAndForget).then_some((store, name))
    }

    /// A reliable delivery failed: redeliver later, or give up.
    pub(super) fn retry_or_dead_letter(&self, envelope: &Arc<Envelope>, error: &str) {
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
            Topic::from_static("system.dead_letter"),
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
    pub(super) fn failed(&self, envelope: &Arc<Envelope>, error: &str) {
        if envelope.delivery_mode != DeliveryMode::FireAndForget {
            self.retry_or_dead_letter(envelope, error);
        }
    }

    /// The message ran out of time before its handler ran.
    pub(super) fn expired(&self, envelope: &Envelope) {
        self.sub.consumed.expired.fetch_add(1, Ordering::Relaxed);
        if let Some((store, name)) = self.journal(envelope) {
            store.expire(envelope.id, name);
        }
    }

    /// Settles a manual-ack delivery whose handler returned: waits (on a
    /// task of its own) for the handler's ack or nack, up to `ack_wait`.
    pub(super) fn await_settlement(
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
pub(super) enum Settlement {
    Ack,
    Nack(String),
}

/// The right (and duty) to settle one delivery, handed to a manual-ack
/// handler (see [`Handler::manual_ack`](crate::bus::handler::Handler::manual_ack)). Call [`ack`](Self::ack) once the
/// work is done, [`nack`](Self::nack) to have it redelivered (with the
/// subscription's backoff) or dead-lettered after the last attempt.
/// Dropping it unsettled counts as a nack; not settling it within the
/// handler's `ack_wait` counts as a failure too.
#[derive(Debug)]
pub struct Acknowledgement {
    pub(super) settle: Option<flume::Sender<Settlement>>,
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
