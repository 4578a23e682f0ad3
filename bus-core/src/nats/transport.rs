//! The NATS transport: one agent per process, the bus carried by a NATS
//! server — core NATS for fire-and-forget, JetStream for the topic families
//! configured reliable. [`run_agent`] is the generic driver of
//! [`crate::runtime::transport`] on a [`NatsTransport`].
//!
//! Topics map one-to-one to subjects under a prefix: topic
//! `data.candle.BTC.1m` is subject `<prefix>.data.candle.BTC.1m`. Patterns
//! keep their meaning: `*` and `>` are NATS's own, and a subtree pattern
//! (no wildcard) is subscribed as the two subjects `p` and `p.>`. Messages
//! travel as the JSON wire format documented in the crate root, so a client
//! in any language can publish market data or read signals.
//!
//! Request/response uses NATS request-reply: [`request`] publishes the
//! request envelope with a reply inbox and waits (with a timeout) for the
//! first answer; an agent run by [`run_agent`] that answers a message
//! carrying a reply inbox (any envelope it publishes whose
//! `correlation_id` is the request's id) sends the answer to that inbox as
//! well as to the answer's own topic. A request nobody subscribes to fails
//! at once ("no responders") rather than at the timeout.
//!
//! When the server goes away the client reconnects with backoff and
//! re-subscribes; the agent keeps running meanwhile. Core NATS is
//! fire-and-forget: what is published while no server is reachable is
//! buffered by the client (up to its buffer) and what the server could not
//! deliver is gone. Topic families listed in
//! [`JetStreamSettings::families`] travel through JetStream instead
//! (see [`crate::nats::jetstream`]): publishing there blocks, retrying, until the
//! stream has the message, and consumers resume from their last ack.

use async_nats::jetstream::AckKind;

use std::sync::Arc;

use crate::agent::supervision::AgentSpec;
use crate::bus::error::HandlerResult;
use crate::bus::reliability::DedupeWindow;
use crate::model::ids::{AgentId, MessageId};
use crate::model::payload::DeadLetter;
use crate::model::topic::{Topic, TopicPattern};
use crate::model::{DeliveryMode, Envelope, Payload, Priority};
use crate::runtime::transport::{AgentRunError, Channel, Inbox, Transport};
use crate::runtime::{Partition, RunError, StopSignal};

use super::bus::*;
use super::client::*;
use super::incoming::*;

/// Runs one agent against a NATS server until it is a finished source, or
/// `stop` is raised. The agent is supervised as on the other buses (it is
/// [`transport::run_agent`](crate::runtime::transport::run_agent) on a
/// [`NatsTransport`]). `ready`, if given, is told once the agent's
/// subscriptions are in place on the server (before the agent starts), so
/// a caller can start the agents that publish to it.
pub async fn run_agent(
    spec: AgentSpec,
    bus: &NatsBus,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(crate::agent::supervision::Supervised, NatsRunStats), NatsError> {
    run_agent_instance(spec, bus, Partition::WHOLE, stop, ready).await
}

/// [`run_agent`] for one instance of an agent run as several: it handles
/// only the keyed messages of its [`Partition`].
///
/// The agent runs on a thread of its own (with a single-threaded runtime
/// for its tasks), the client's connection on the caller's runtime: the
/// agent's work never waits for a worker busy reading the socket, nor the
/// other way round (an agent sharing the workers with the connection
/// received measurably less; BENCHMARKS.md). Dropping the returned future
/// stops the agent as `stop` would.
pub async fn run_agent_instance(
    spec: AgentSpec,
    bus: &NatsBus,
    partition: Partition,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(crate::agent::supervision::Supervised, NatsRunStats), NatsError> {
    /// Stops the agent's thread when the caller stops waiting for it.
    struct StopOnDrop(StopSignal);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let own = stop.child();
    let _stop_on_drop = StopOnDrop(own.clone());
    let agent = spec.agent.id().to_string();
    let (done, outcome) = tokio::sync::oneshot::channel();
    let bus = bus.clone();
    let cannot = |reason: String| {
        NatsError::Run(RunError::StartFailed {
            agent: AgentId::new(agent.as_str()),
            error: crate::bus::error::HandlerError::new(reason),
        })
    };
    std::thread::Builder::new()
        .name(format!("agent {agent}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = done.send(Err(error.to_string()));
                    return;
                }
            };
            let run = run_agent_instance_in_place(spec, &bus, partition, own, ready);
            let _ = done.send(Ok(runtime.block_on(run)));
        })
        .map_err(|e| cannot(format!("cannot start its thread: {e}")))?;
    match outcome.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reason)) => Err(cannot(format!("cannot start its runtime: {reason}"))),
        Err(_) => Err(NatsError::Run(RunError::AgentFailed(format!(
            "agent {agent}: its thread ended without a result"
        )))),
    }
}

/// [`run_agent_instance`] with the agent on the caller's task instead of a
/// thread of its own: for a process that runs its connection and its agent
/// on one single-threaded runtime (`[bus] latency = "low"`), so that a
/// message's way through the process is one thread woken, as for a plain
/// client, instead of a hand-over from the connection's thread to the
/// agent's and back (BENCHMARKS.md, tick to order over NATS). On a runtime
/// with several workers the connection and the agent share them.
pub async fn run_agent_instance_in_place(
    spec: AgentSpec,
    bus: &NatsBus,
    partition: Partition,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(crate::agent::supervision::Supervised, NatsRunStats), NatsError> {
    let segment = spec.agent.partition_segment();
    let transport = NatsTransport::new(bus.clone(), partition, segment, stop.clone());
    let (agent, run) = crate::runtime::transport::run_agent(spec, &transport, stop, ready)
        .await
        .map_err(|e| match e {
            AgentRunError::Transport(e) => e,
            AgentRunError::Run(e) => NatsError::Run(e),
        })?;
    let mut stats = transport.stats();
    stats.received = run.received;
    stats.published = run.published;
    Ok((agent, stats))
}

/// NATS as the [`Transport`] of one agent (or one instance of it): core
/// NATS, and JetStream for the families configured reliable.
pub struct NatsTransport {
    pub(super) bus: NatsBus,
    pub(super) screen: Screen,
    /// Ends retries of JetStream publishes while the server is away.
    pub(super) stop: StopSignal,
    /// Ids of exactly-once JetStream messages handled.
    pub(super) processed: std::sync::Mutex<DedupeWindow>,
    /// Ids of exactly-once JetStream messages handled but not yet settled
    /// (their answers' confirmations pending): a redelivered copy arriving
    /// meanwhile is left to the original's settling.
    pub(super) in_hand: std::sync::Mutex<std::collections::HashSet<MessageId>>,
    pub(super) stats: std::sync::Mutex<NatsRunStats>,
}

impl NatsTransport {
    /// Carries one agent (instance `partition`, keyed by topic segment
    /// `partition_segment`) on `bus`.
    pub fn new(
        bus: NatsBus,
        partition: Partition,
        partition_segment: Option<usize>,
        stop: StopSignal,
    ) -> Self {
        let window = bus
            .reliable
            .as_ref()
            .map_or(1, |r| r.settings().dedupe_window.max(1));
        let screen = Screen {
            prefix: bus.prefix.clone(),
            partition,
            segment: partition_segment,
            reliable: bus.reliable.as_ref().map(|r| r.settings().clone()),
        };
        Self {
            bus,
            screen,
            stop,
            processed: std::sync::Mutex::new(DedupeWindow::new(window)),
            in_hand: std::sync::Mutex::default(),
            stats: std::sync::Mutex::new(NatsRunStats::default()),
        }
    }

    /// What the transport counted (received and published are the driver's).
    pub fn stats(&self) -> NatsRunStats {
        *lock(&self.stats)
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut NatsRunStats)) {
        f(&mut lock(&self.stats));
    }

    /// Refuses an arrival `agent` cannot take (undecodable, misaddressed):
    /// a dead letter with its raw bytes and `reason`, and a JetStream
    /// delivery terminated (never redelivered).
    pub(super) async fn refuse(
        &self,
        agent: &AgentId,
        subject: &async_nats::Subject,
        payload: &[u8],
        durable: Option<&async_nats::jetstream::Message>,
        reason: String,
    ) -> Result<(), NatsError> {
        self.dead_letter(agent, subject, payload, None, reason, 1)
            .await?;
        if let Some(message) = durable {
            self.bus.ack(message, AckKind::Term, false).await;
        }
        Ok(())
    }

    /// Publishes a dead letter for what `agent` could not take.
    pub(super) async fn dead_letter(
        &self,
        agent: &AgentId,
        subject: &async_nats::Subject,
        payload: &[u8],
        original: Option<Envelope>,
        error: String,
        attempts: u32,
    ) -> Result<(), NatsError> {
        let raw = original.is_none().then(|| {
            let mut raw = String::from_utf8_lossy(payload).into_owned();
            if raw.len() > 4096 {
                let mut cut = 4096;
                while !raw.is_char_boundary(cut) {
                    cut -= 1;
                }
                raw.truncate(cut);
            }
            raw
        });
        let letter = DeadLetter {
            original: original.map(Box::new),
            raw,
            subscription: format!("{agent} on {subject}"),
            error,
            attempts,
            dead_lettered_at_ms: crate::model::now_ms(),
        };
        let topic = Topic::from_static("system.dead_letter");
        let letter = Envelope::new(agent.clone(), topic, Payload::SystemDeadLetter(letter))
            .with_priority(Priority::High);
        self.bus.publish_many(&[letter], &self.stop).await
    }
}
impl Transport for NatsTransport {
    type Delivery = NatsDelivery;
    type Error = NatsError;
    type Unconfirmed = Unconfirmed;

    async fn subscribe(
        &self,
        agent: &AgentId,
        patterns: Vec<TopicPattern>,
    ) -> Result<Inbox<NatsDelivery>, NatsError> {
        // At most 64 JetStream deliveries wait for the agent.
        let (tx, rx) = flume::bounded(64);
        let (core, readers) = subscribe(
            &self.bus,
            agent.as_str(),
            patterns,
            tx,
            &self.screen,
            &self.stop,
        )
        .await?;
        // Make sure the server has the subscriptions before anything is produced.
        let _ = self.bus.client.flush().await;
        let deliveries = NatsDeliveries {
            core,
            core_open: true,
            durable: (!readers.is_empty()).then(|| Channel::new(rx)),
        };
        Ok(Inbox::new(deliveries, move || {
            for reader in readers {
                reader.abort();
            }
        }))
    }

    async fn send(&self, envelopes: &[Envelope]) -> Result<Option<Unconfirmed>, NatsError> {
        let unconfirmed = self.bus.send_many(envelopes, &self.stop).await?;
        Ok((!unconfirmed.is_empty()).then_some(unconfirmed))
    }

    async fn send_produced(
        &self,
        envelopes: &[Envelope],
    ) -> Result<Option<Unconfirmed>, NatsError> {
        let sent = self.send(envelopes).await;
        // A source's next step may hold its thread (pacing sleeps, a live
        // feed's wait for the next trade): a connection sharing that thread
        // (`run_agent_instance_in_place`) writes this step first.
        tokio::task::yield_now().await;
        sent
    }

    async fn confirm(&self, unconfirmed: Unconfirmed) -> Result<(), NatsError> {
        self.bus.confirm(unconfirmed, &self.stop).await
    }

    async fn open(
        &self,
        delivery: &NatsDelivery,
        agent: &AgentId,
    ) -> Result<Option<Arc<Envelope>>, NatsError> {
        let durable = match &delivery.incoming {
            Incoming::Durable(m) => Some(m),
            Incoming::Core(_) => None,
        };
        match delivery.verdict {
            Verdict::Take => {}
            Verdict::JetStreamFamily => return Ok(None),
            Verdict::OtherPartition => {
                self.count(|s| s.other_partitions += 1);
                if let Some(message) = durable {
                    self.bus.ack(message, AckKind::Ack, false).await;
                }
                return Ok(None);
            }
        }
        let (subject, payload) = match &delivery.incoming {
            Incoming::Core(m) => (&m.subject, &m.payload),
            Incoming::Durable(m) => (&m.subject, &m.payload),
        };
        let envelope = match Envelope::from_wire_shared(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.count(|s| s.undecodable += 1);
                tracing::warn!(agent = %agent, %subject, %error, "undecodable message dead-lettered");
                self.refuse(
                    agent,
                    subject,
                    payload,
                    durable.map(|m| &**m),
                    error.to_string(),
                )
                .await?;
                return Ok(None);
            }
        };
        // What came from outside must be what it says it is: on the
        // subject of its own topic, addressed consistently.
        let topic = self.screen.topic_of(subject);
        let misaddressed = if topic != envelope.topic.as_str() {
            Some(format!(
                "an envelope for topic {} on subject {subject}",
                envelope.topic
            ))
        } else {
            crate::model::addressing::check_addressing(&envelope).err()
        };
        if let Some(reason) = misaddressed {
            self.count(|s| s.misaddressed += 1);
            tracing::warn!(agent = %agent, %subject, %reason, "misaddressed message dead-lettered");
            self.refuse(agent, subject, payload, durable.map(|m| &**m), reason)
                .await?;
            return Ok(None);
        }
        let exactly_once = envelope.delivery_mode == DeliveryMode::ExactlyOnce;
        if let Some(message) = durable {
            if exactly_once && lock(&self.processed).contains(&envelope.id) {
                self.count(|s| s.duplicates += 1);
                self.bus.ack(message, AckKind::Ack, true).await;
                return Ok(None);
            }
            if exactly_once && !lock(&self.in_hand).insert(envelope.id) {
                // Redelivered while the first copy waits for its answers'
                // confirmation: that copy's settling (ack, or nak and a
                // later redelivery) decides.
                self.count(|s| s.duplicates += 1);
                return Ok(None);
            }
        }
        Ok(Some(envelope))
    }

    fn settles(&self, delivery: &NatsDelivery) -> bool {
        match &delivery.incoming {
            Incoming::Core(message) => message.reply.is_some(),
            Incoming::Durable(_) => true,
        }
    }

    async fn settle(
        &self,
        delivery: NatsDelivery,
        envelope: &Envelope,
        agent: &AgentId,
        outcome: &HandlerResult,
        answers: &[Envelope],
    ) -> Result<(), NatsError> {
        let id = envelope.id;
        let exactly_once = envelope.delivery_mode == DeliveryMode::ExactlyOnce;
        let message = match delivery.incoming {
            Incoming::Core(message) => {
                // A request with a reply inbox: its answers go there too.
                if let Some(inbox) = &message.reply {
                    for answer in answers.iter().filter(|a| a.correlation_id == Some(id)) {
                        send(
                            &self.bus.client,
                            inbox.clone(),
                            self.bus.wire_format.encode(answer).into(),
                            || inbox.to_string(),
                        )
                        .await?;
                    }
                }
                return Ok(());
            }
            Incoming::Durable(message) => message,
        };
        if exactly_once {
            lock(&self.in_hand).remove(&id);
        }
        let error = match outcome {
            Ok(()) => {
                if exactly_once {
                    lock(&self.processed).insert(id);
                }
                self.bus.ack(&message, AckKind::Ack, exactly_once).await;
                return Ok(());
            }
            Err(error) => error,
        };
        let settings = self
            .bus
            .reliable
            .as_ref()
            .expect("durable messages need JetStream")
            .settings();
        let delivered = message.info().map_or(1, |info| info.delivered);
        if delivered >= settings.max_deliver {
            self.count(|s| s.dead_lettered += 1);
            tracing::warn!(%agent, message_id = %id, %error, delivered, "dead-lettered after max deliveries");
            let original = Envelope::from_wire(&message.payload).ok();
            self.dead_letter(
                agent,
                &message.subject,
                &message.payload,
                original,
                error.to_string(),
                delivered as u32,
            )
            .await?;
            self.bus.ack(&message, AckKind::Term, false).await;
        } else {
            self.count(|s| s.redeliveries_requested += 1);
            tracing::warn!(%agent, message_id = %id, %error, delivered, "handler failed; redelivery requested");
            let delay = settings.redelivery_delay(delivered);
            self.bus
                .ack(&message, AckKind::Nak(Some(delay)), false)
                .await;
        }
        Ok(())
    }

    async fn flush(&self) {
        // Bounded: while the server is away a flush would wait for its
        // return, and an agent asked to stop must stop.
        let _ = tokio::time::timeout(FLUSH_LIMIT, self.bus.client.flush()).await;
    }
}
