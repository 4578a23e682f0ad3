//! [`NatsBus`]: publishing envelopes on NATS (batched, in either wire
//! format; JetStream for reliable families) and NATS request-reply.

use std::time::Duration;

use std::sync::Arc;

use crate::model::topic::Topic;
use crate::model::{Envelope, WireFormat};
use crate::nats::jetstream::Reliable;
use crate::runtime::StopSignal;

use super::client::*;
use super::connection::*;

/// A connection to the NATS server as the agents' bus: core NATS, plus the
/// JetStream streams of the families configured to be reliable.
#[derive(Clone, Debug)]
pub struct NatsBus {
    pub(super) client: async_nats::Client,
    pub(super) prefix: String,
    pub(super) reliable: Option<Reliable>,
    pub(super) when_disconnected: WhenDisconnected,
    pub(super) wire_format: WireFormat,
    pub(super) outgoing: Arc<std::sync::Mutex<Outgoing>>,
    pub(super) reconnections: Reconnections,
}

/// What a [`NatsBus`] reuses from one publication to the next (behind one
/// lock, taken once per message).
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    /// The core subject of each topic published on, made once: building
    /// it (and handing a fresh string to the client) cost an allocation
    /// or two per message.
    pub(super) subjects: crate::model::ids::NameMap<Topic, async_nats::Subject>,
    /// The topic published on last, and its subject: a stream often
    /// repeats it (comparing is cheaper than a lookup).
    pub(super) last: Option<(Topic, async_nats::Subject)>,
    /// Encoded envelopes, each cut off as the shared bytes handed to the
    /// client: one allocation serves hundreds of messages. (A buffer of its
    /// own per message, freed on the client's writing thread, cost ~600
    /// instructions a message in the allocator.)
    pub(super) buffer: bytes::BytesMut,
    /// Where an envelope is encoded before it is copied into `buffer`.
    /// (Encoding straight into `buffer` cost more than the copy: appending
    /// to a `BytesMut` is dearer than to a `Vec`, field by field.)
    pub(super) scratch: Vec<u8>,
}

/// The size of each block [`Outgoing::buffer`] takes from the allocator.
pub(super) const OUTGOING_BLOCK: usize = 64 * 1024;

impl Outgoing {
    /// `envelope` encoded in `format`, as bytes sharing the buffer's block.
    pub(super) fn encode(&mut self, format: WireFormat, envelope: &Envelope) -> bytes::Bytes {
        self.scratch.clear();
        format.encode_into(envelope, &mut self.scratch);
        if self.buffer.capacity() < self.scratch.len() {
            self.buffer.reserve(OUTGOING_BLOCK.max(self.scratch.len()));
        }
        self.buffer.extend_from_slice(&self.scratch);
        self.buffer.split().freeze()
    }

    /// The core NATS subject of `topic` (shared: cloning it is a count).
    pub(super) fn subject_of(&mut self, prefix: &str, topic: &Topic) -> async_nats::Subject {
        if let Some((last, subject)) = &self.last {
            if last == topic {
                return subject.clone();
            }
        }
        let subject = match self.subjects.get(topic) {
            Some(subject) => subject.clone(),
            None => {
                if self.subjects.len() >= SUBJECTS_KEPT {
                    self.subjects.clear();
                }
                let subject = async_nats::Subject::from(subject(prefix, topic.as_str()));
                self.subjects.insert(topic.clone(), subject.clone());
                subject
            }
        };
        self.last = Some((topic.clone(), subject.clone()));
        subject
    }
}

/// Publications sent to JetStream families, not yet acknowledged by their
/// stream.
pub struct Unconfirmed(Vec<crate::nats::jetstream::InFlight>);

impl Unconfirmed {
    /// Whether nothing waits for an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Topics whose subjects a [`NatsBus`] keeps before starting over.
pub(super) const SUBJECTS_KEPT: usize = 4096;

impl NatsBus {
    /// Connects and, when JetStream families are configured, makes sure
    /// their streams exist.
    pub async fn connect(settings: &NatsSettings) -> Result<Self, NatsError> {
        Self::with_client(connect(settings).await?, settings).await
    }

    /// [`NatsBus::connect`] on a client already connected to the server
    /// `settings` name.
    pub async fn with_client(
        client: async_nats::Client,
        settings: &NatsSettings,
    ) -> Result<Self, NatsError> {
        let reliable = match &settings.jetstream {
            Some(js) if !js.families.is_empty() => {
                Some(Reliable::open(client.clone(), &settings.prefix, js.clone()).await?)
            }
            _ => None,
        };
        Ok(Self {
            reconnections: Reconnections::of(&client),
            client,
            prefix: settings.prefix.clone(),
            reliable,
            when_disconnected: settings.when_disconnected,
            wire_format: settings.wire_format,
            outgoing: Arc::default(),
        })
    }

    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How this connection writes envelopes.
    pub fn wire_format(&self) -> WireFormat {
        self.wire_format
    }

    /// The JetStream side, if any family is reliable.
    pub fn reliable(&self) -> Option<&Reliable> {
        self.reliable.as_ref()
    }

    /// Publishes envelopes in order, all sent before any acknowledgement is
    /// awaited (as an agent's outbox is): JetStream families are confirmed
    /// (retrying until `stop`), core ones flushed.
    pub async fn publish_many(
        &self,
        envelopes: &[Envelope],
        stop: &StopSignal,
    ) -> Result<(), NatsError> {
        let unconfirmed = self.send_many(envelopes, stop).await?;
        self.confirm(unconfirmed, stop).await
    }

    /// Sends envelopes in order; what went to JetStream families is
    /// returned unconfirmed (see [`NatsBus::confirm`]).
    pub async fn send_many(
        &self,
        envelopes: &[Envelope],
        stop: &StopSignal,
    ) -> Result<Unconfirmed, NatsError> {
        if self.when_disconnected == WhenDisconnected::Block {
            self.wait_until_connected(stop).await?;
        }
        let mut in_flight = Vec::new();
        for envelope in envelopes {
            match &self.reliable {
                Some(reliable) if reliable.settings().carries(envelope.topic.as_str()) => {
                    let bytes = lock(&self.outgoing).encode(self.wire_format, envelope);
                    let subject = subject(&self.prefix, envelope.topic.as_str());
                    in_flight.push(
                        reliable
                            .start_publish(subject, envelope.id, envelope.delivery_mode, bytes)
                            .await,
                    );
                }
                _ => self.send_core(envelope).await?,
            }
        }
        Ok(Unconfirmed(in_flight))
    }

    /// Waits until the streams have stored what [`NatsBus::send_many`]
    /// sent to them (sending again while the server is away; gives up only
    /// when `stop` is raised).
    pub async fn confirm(
        &self,
        unconfirmed: Unconfirmed,
        stop: &StopSignal,
    ) -> Result<(), NatsError> {
        if let Some(reliable) = &self.reliable {
            for publish in unconfirmed.0 {
                reliable.confirm(publish, stop).await?;
            }
        }
        Ok(())
    }

    /// Waits until the client is connected (or `stop`: an error).
    pub(super) async fn wait_until_connected(&self, stop: &StopSignal) -> Result<(), NatsError> {
        let mut warned = false;
        while self.client.connection_state() != async_nats::connection::State::Connected {
            if stop.is_stopped() {
                return Err(NatsError::Publish {
                    subject: format!("{}.>", self.prefix),
                    reason: "stopped while waiting for the NATS server".into(),
                });
            }
            if !warned {
                tracing::warn!("NATS server unreachable: publishing waits for the reconnection");
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Publishes one envelope: through JetStream (waiting for the stream's
    /// acknowledgement, retrying until `stop`) when its family is reliable,
    /// else on core NATS (per [`WhenDisconnected`]).
    pub async fn publish(&self, envelope: &Envelope, stop: &StopSignal) -> Result<(), NatsError> {
        let reliable = self
            .reliable
            .as_ref()
            .is_some_and(|r| r.settings().carries(envelope.topic.as_str()));
        if reliable || self.when_disconnected == WhenDisconnected::Block {
            // Boxed: inline, its future made every core publication's
            // bigger (and futures are copied as they are handed on).
            return Box::pin(self.publish_many(std::slice::from_ref(envelope), stop)).await;
        }
        self.send_core(envelope).await
    }

    /// Sends `envelope` on core NATS (handed to the client).
    pub(super) async fn send_core(&self, envelope: &Envelope) -> Result<(), NatsError> {
        let (subject, bytes) = {
            let mut outgoing = lock(&self.outgoing);
            let subject = outgoing.subject_of(&self.prefix, &envelope.topic);
            (subject, outgoing.encode(self.wire_format, envelope))
        };
        self.client
            .publish(subject, bytes)
            .await
            .map_err(|e| NatsError::Publish {
                subject: self::subject(&self.prefix, envelope.topic.as_str()),
                reason: e.to_string(),
            })
    }
}

/// What a NATS run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatsRunStats {
    /// Messages received and handed to the agent.
    pub received: u64,
    /// Messages the agent published.
    pub published: u64,
    /// Messages that could not be decoded (bad JSON, unknown type, invalid
    /// payload); each is logged and dead-lettered on
    /// `<prefix>.system.dead_letter` with the reason and the raw bytes.
    pub undecodable: u64,
    /// Messages that decoded but were not what they said they were (on
    /// another topic's subject, a payload at odds with its topic, an
    /// oversized name); each is dead-lettered with the reason.
    pub misaddressed: u64,
    /// JetStream deliveries of exactly-once messages this consumer had
    /// already handled (acknowledged, not handled again).
    pub duplicates: u64,
    /// JetStream messages handed back for redelivery after a failure.
    pub redeliveries_requested: u64,
    /// JetStream messages dead-lettered after `max_deliver` deliveries.
    pub dead_lettered: u64,
    /// Keyed messages left to the other instances (see [`Partition`](crate::runtime::Partition)).
    pub other_partitions: u64,
}

impl std::ops::AddAssign for NatsRunStats {
    /// Adds another run's figures (an agent restarted as a new process).
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.published += other.published;
        self.undecodable += other.undecodable;
        self.misaddressed += other.misaddressed;
        self.duplicates += other.duplicates;
        self.redeliveries_requested += other.redeliveries_requested;
        self.dead_lettered += other.dead_lettered;
        self.other_partitions += other.other_partitions;
    }
}

/// Publishes bytes on a subject; `name` spells the subject for an error.
/// (The subject moves into the client: cloning it to keep it for the error
/// cost an allocation per message.)
pub(super) async fn send(
    client: &async_nats::Client,
    subject: async_nats::Subject,
    bytes: bytes::Bytes,
    name: impl FnOnce() -> String,
) -> Result<(), NatsError> {
    client
        .publish(subject, bytes)
        .await
        .map_err(|e| NatsError::Publish {
            subject: name(),
            reason: e.to_string(),
        })
}

/// Sends `request` (as JSON) with NATS request-reply and waits up to
/// `timeout` for the answer, decoded as an envelope (either format).
pub async fn request(
    client: &async_nats::Client,
    prefix: &str,
    request: &Envelope,
    timeout: Duration,
) -> Result<Envelope, NatsError> {
    let subject = subject(prefix, request.topic.as_str());
    let failed = |reason: String| NatsError::Request {
        subject: subject.clone(),
        reason,
    };
    let answer = tokio::time::timeout(
        timeout,
        client.request(subject.clone(), request.to_json_bytes().into()),
    )
    .await
    .map_err(|_| failed(format!("no answer within {timeout:?}")))?
    .map_err(|e| failed(e.to_string()))?;
    Envelope::from_wire(&answer.payload).map_err(|e| failed(format!("undecodable answer: {e}")))
}

/// Longest wait for the server to take what the client has buffered.
pub(super) const FLUSH_LIMIT: Duration = Duration::from_secs(2);

use async_nats::jetstream::AckKind;

impl NatsBus {
    /// Acknowledges (or naks, or terminates) a JetStream delivery.
    /// `confirmed` waits for the server to confirm it has the ack (double
    /// ack), but not past a reconnection of the client (the old server's
    /// confirmation never comes; waiting out its 5 s timeout stalled the
    /// agent). A lost ack means a redelivery, which at-least-once allows
    /// and exactly-once's id window absorbs: it is logged, not fatal.
    pub(super) async fn ack(
        &self,
        message: &async_nats::jetstream::Message,
        kind: AckKind,
        confirmed: bool,
    ) {
        let result = if confirmed {
            let connected_as = self.reconnections.count();
            tokio::select! {
                biased;
                result = message.double_ack_with(kind) => result.map_err(|e| e.to_string()),
                () = self.reconnections.since(connected_as) => {
                    Err("the connection was replaced before the server confirmed it".to_string())
                }
            }
        } else {
            message.ack_with(kind).await.map_err(|e| e.to_string())
        };
        if let Err(error) = result {
            tracing::warn!(subject = %message.subject, %error, "JetStream ack not delivered; the message will come again");
        }
    }
}

/// Publishes one envelope on the subject of its topic (for tools and tests).
pub async fn publish(
    client: &async_nats::Client,
    prefix: &str,
    envelope: &Envelope,
) -> Result<(), NatsError> {
    let topic = envelope.topic.as_str();
    send(
        client,
        subject(prefix, topic).into(),
        envelope.to_json_bytes().into(),
        || subject(prefix, topic),
    )
    .await
}
