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

use std::time::Duration;

use futures_util::stream::StreamExt;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::agent::supervision::AgentSpec;
use crate::bus::error::HandlerResult;
use crate::bus::reliability::DedupeWindow;
use crate::model::ids::{AgentId, MessageId};
use crate::model::payload::DeadLetter;
use crate::model::topic::{Topic, TopicPattern};
use crate::model::{DeliveryMode, Envelope, Payload, Priority, WireFormat};
use crate::nats::jetstream::{consumer_name, plan, JetStreamSettings, Reliable};
use crate::runtime::transport::{AgentRunError, Channel, Deliveries, Inbox, Transport, MAX_TAKE};
use crate::runtime::{Partition, RunError, StopSignal};

/// How to reach the NATS server.
#[derive(Clone)]
pub struct NatsSettings {
    /// Server URL, e.g. `nats://127.0.0.1:4222`, or several separated by
    /// commas (a cluster's seed servers).
    pub url: String,
    /// Subject prefix (one or more segments, no wildcards).
    pub prefix: String,
    /// Authentication token, if the server wants one. Never logged.
    pub token: Option<String>,
    /// The topic families carried by JetStream, and how (none: everything
    /// on core NATS).
    pub jetstream: Option<JetStreamSettings>,
    /// What a core-NATS publish does while the server is unreachable.
    pub when_disconnected: WhenDisconnected,
    /// How this connection writes envelopes (it reads both formats).
    pub wire_format: WireFormat,
}

/// What publishing on core NATS does while the client is disconnected
/// (it reconnects with backoff meanwhile). JetStream families always
/// block: their publishes wait, retrying, until the stream has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenDisconnected {
    /// Hand messages to the client, which keeps them (up to its buffer) and
    /// sends them once reconnected: the agent carries on.
    #[default]
    Buffer,
    /// Wait until the client is connected again before publishing: the
    /// agent pauses with the server.
    Block,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("jetstream", &self.jetstream)
            .field("when_disconnected", &self.when_disconnected)
            .field("wire_format", &self.wire_format)
            .finish()
    }
}

/// Why the NATS transport failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// No connection to the server.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A subscription was refused.
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A publish failed.
    #[error("cannot publish to {subject}: {reason}")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A JetStream stream or consumer could not be set up.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// The stream or consumer.
        what: String,
        /// Why.
        reason: String,
    },
    /// A stream of the name a family's stream would have exists, but was
    /// not created by Bistoury for these subjects: it is someone else's.
    #[error(
        "JetStream stream {stream} exists but was not created by Bistoury for {subjects} \
         ({found}): refusing to use or delete it; remove it yourself, choose another \
         bus.subject_prefix, or run with --fresh to delete it"
    )]
    ForeignStream {
        /// The stream.
        stream: String,
        /// The subjects it would be ours for.
        subjects: String,
        /// The mark it carries, if any.
        found: String,
    },
    /// A request got no usable answer.
    #[error("request on {subject} failed: {reason}")]
    Request {
        /// The request's subject.
        subject: String,
        /// Why: no responders, timeout, or an undecodable answer.
        reason: String,
    },
    /// The agent could not run.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The subject a topic travels on.
pub fn subject(prefix: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + 1 + topic.len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(topic);
    subject
}

/// The subjects that together carry what `pattern` matches.
pub fn subjects(prefix: &str, pattern: &TopicPattern) -> Vec<String> {
    pattern
        .nats_subjects()
        .iter()
        .map(|s| subject(prefix, s))
        .collect()
}

/// A connection to the NATS server as the agents' bus: core NATS, plus the
/// JetStream streams of the families configured to be reliable.
#[derive(Clone, Debug)]
pub struct NatsBus {
    client: async_nats::Client,
    prefix: String,
    reliable: Option<Reliable>,
    when_disconnected: WhenDisconnected,
    wire_format: WireFormat,
    outgoing: Arc<std::sync::Mutex<Outgoing>>,
    reconnections: Reconnections,
}

/// What a [`NatsBus`] reuses from one publication to the next (behind one
/// lock, taken once per message).
#[derive(Debug, Default)]
struct Outgoing {
    /// The core subject of each topic published on, made once: building
    /// it (and handing a fresh string to the client) cost an allocation
    /// or two per message.
    subjects: crate::model::ids::NameMap<Topic, async_nats::Subject>,
    /// The topic published on last, and its subject: a stream often
    /// repeats it (comparing is cheaper than a lookup).
    last: Option<(Topic, async_nats::Subject)>,
    /// Encoded envelopes, each cut off as the shared bytes handed to the
    /// client: one allocation serves hundreds of messages. (A buffer of its
    /// own per message, freed on the client's writing thread, cost ~600
    /// instructions a message in the allocator.)
    buffer: bytes::BytesMut,
    /// Where an envelope is encoded before it is copied into `buffer`.
    /// (Encoding straight into `buffer` cost more than the copy: appending
    /// to a `BytesMut` is dearer than to a `Vec`, field by field.)
    scratch: Vec<u8>,
}

/// The size of each block [`Outgoing::buffer`] takes from the allocator.
const OUTGOING_BLOCK: usize = 64 * 1024;

impl Outgoing {
    /// `envelope` encoded in `format`, as bytes sharing the buffer's block.
    fn encode(&mut self, format: WireFormat, envelope: &Envelope) -> bytes::Bytes {
        self.scratch.clear();
        format.encode_into(envelope, &mut self.scratch);
        if self.buffer.capacity() < self.scratch.len() {
            self.buffer.reserve(OUTGOING_BLOCK.max(self.scratch.len()));
        }
        self.buffer.extend_from_slice(&self.scratch);
        self.buffer.split().freeze()
    }

    /// The core NATS subject of `topic` (shared: cloning it is a count).
    fn subject_of(&mut self, prefix: &str, topic: &Topic) -> async_nats::Subject {
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
const SUBJECTS_KEPT: usize = 4096;

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
    async fn wait_until_connected(&self, stop: &StopSignal) -> Result<(), NatsError> {
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
    async fn send_core(&self, envelope: &Envelope) -> Result<(), NatsError> {
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

/// Connects to the server named in `settings` (core NATS only).
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, NatsError> {
    let options = match &settings.token {
        Some(token) => async_nats::ConnectOptions::with_token(token.clone()),
        None => async_nats::ConnectOptions::new(),
    };
    let failed = |reason: String| NatsError::Connect {
        url: settings.url.clone(),
        reason,
    };
    // Several servers (a cluster's seeds), comma-separated: the client
    // connects to one and fails over to the others.
    let servers = settings
        .url
        .split(',')
        .map(|url| {
            url.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| failed(format!("{url:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    options
        .name("bistoury")
        .connect(servers)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// What a NATS run saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    /// Keyed messages left to the other instances (see [`Partition`]).
    pub other_partitions: u64,
}

/// Publishes bytes on a subject; `name` spells the subject for an error.
/// (The subject moves into the client: cloning it to keep it for the error
/// cost an allocation per message.)
async fn send(
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

/// A message as it arrived: from a core subscription or a durable
/// JetStream consumer (to be acknowledged).
enum Incoming {
    Core(CoreMessage),
    Durable(Box<async_nats::jetstream::Message>),
}

/// What the agent's side needs of a core NATS message. (The whole message
/// is about twice the size, and the delivery holding it is moved several
/// times on its way to the agent: a copy each time.)
struct CoreMessage {
    subject: async_nats::Subject,
    payload: bytes::Bytes,
    /// The inbox of a request.
    reply: Option<async_nats::Subject>,
}

impl From<async_nats::Message> for CoreMessage {
    fn from(message: async_nats::Message) -> Self {
        Self {
            subject: message.subject,
            payload: message.payload,
            reply: message.reply,
        }
    }
}

/// Subscribes to everything `agent` wants: core subscriptions (returned,
/// read by the agent's task), and one durable consumer per subject of a
/// JetStream family, read by tasks (returned, to be aborted at the end)
/// that feed what arrives to `to`.
async fn subscribe(
    bus: &NatsBus,
    agent: &str,
    mut patterns: Vec<TopicPattern>,
    to: flume::Sender<NatsDelivery>,
    screen: &Screen,
    stop: &StopSignal,
) -> Result<(CoreSubscriptions, Vec<tokio::task::JoinHandle<()>>), NatsError> {
    patterns.push(crate::runtime::driver::health_check_pattern());
    let partition = screen.partition;
    let settings = bus.reliable.as_ref().map(|r| r.settings());
    let (mut core, mut readers) = (Vec::new(), Vec::new());
    for pattern in &patterns {
        for nats_subject in subjects(&bus.prefix, pattern) {
            let plan = plan(settings, &bus.prefix, &nats_subject);
            if let Some(subject) = plan.core {
                let subscriber = bus.client.subscribe(subject.clone()).await.map_err(|e| {
                    NatsError::Subscribe {
                        subject: subject.clone(),
                        reason: e.to_string(),
                    }
                })?;
                core.push(subscriber);
            }
            for (family, filter) in plan.durable {
                let reliable = bus.reliable.as_ref().expect("durable plans need JetStream");
                // Every instance sees every message (and keeps its own
                // share), so each needs a consumer of its own.
                let name = match partition.count {
                    1 => consumer_name(agent, &filter),
                    _ => consumer_name(&format!("{agent}_{}", partition.label()), &filter),
                };
                let consumer = reliable.consumer(&family, &name, &filter).await?;
                readers.push(tokio::spawn(read_consumer(
                    consumer,
                    name,
                    bus.reconnections.clone(),
                    to.clone(),
                    screen.clone(),
                    stop.clone(),
                )));
            }
        }
    }
    Ok((CoreSubscriptions::new(core, screen.clone()), readers))
}

/// An agent's core NATS subscriptions, read together by the agent's task,
/// in the order they woke it (messages from different subscriptions then
/// keep the order the server sent them in; a paced distributed run depends
/// on it). Each subscription is polled with a waker of its own, which
/// queues it: a poll reads only the subscriptions that may have something.
/// (`select_all` did the same at ~650 instructions a message more than
/// reading a subscription alone, allocating a task node per message;
/// polling every subscription each time saved nothing, the idle ones'
/// polls costing as much, and lost the order.)
struct CoreSubscriptions {
    /// By index; `None` once ended.
    subscribers: Vec<Option<async_nats::Subscriber>>,
    screen: Screen,
    wakers: Vec<std::task::Waker>,
    flags: Vec<Arc<ReadyFlag>>,
    live: usize,
    woken: Arc<Woken>,
}

/// The subscriptions that may have a message, in the order they woke;
/// and the agent's task, woken with them.
#[derive(Default)]
struct Woken {
    queue: std::sync::Mutex<VecDeque<usize>>,
    task: futures_util::task::AtomicWaker,
}

/// One subscription's waker: queues it (once) and wakes the task.
struct ReadyFlag {
    index: usize,
    /// Whether the subscription is queued.
    queued: std::sync::atomic::AtomicBool,
    woken: Arc<Woken>,
}

impl ReadyFlag {
    /// Queues the subscription unless it is queued already.
    fn queue(&self) {
        if !self.queued.swap(true, std::sync::atomic::Ordering::AcqRel) {
            lock(&self.woken.queue).push_back(self.index);
        }
    }
}

impl std::task::Wake for ReadyFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue();
        self.woken.task.wake();
    }
}

impl CoreSubscriptions {
    fn new(subscribers: Vec<async_nats::Subscriber>, screen: Screen) -> Self {
        let woken = Arc::new(Woken::default());
        let flags: Vec<Arc<ReadyFlag>> = (0..subscribers.len())
            .map(|index| {
                Arc::new(ReadyFlag {
                    index,
                    queued: false.into(),
                    woken: woken.clone(),
                })
            })
            .collect();
        // Each may have something at first.
        flags.iter().for_each(|flag| flag.queue());
        Self {
            live: subscribers.len(),
            subscribers: subscribers.into_iter().map(Some).collect(),
            screen,
            wakers: flags.iter().map(|flag| flag.clone().into()).collect(),
            flags,
            woken,
        }
    }

    /// Takes what is waiting, up to [`MAX_TAKE`] messages, onto the back
    /// of `into`: one from each woken subscription in turn, as long as any
    /// has one. Pending when none has; ready with `false` once every
    /// subscription has ended (after the messages taken, if any).
    fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<NatsDelivery>,
    ) -> std::task::Poll<bool> {
        use std::sync::atomic::Ordering;
        use std::task::Poll;
        // Before reading: a message arriving meanwhile wakes the task.
        self.woken.task.register(cx.waker());
        let mut taken = 0;
        while self.live > 0 && taken < MAX_TAKE {
            let Some(index) = lock(&self.woken.queue).pop_front() else {
                break;
            };
            self.flags[index].queued.store(false, Ordering::Release);
            let Some(subscriber) = &mut self.subscribers[index] else {
                continue;
            };
            let mut own = std::task::Context::from_waker(&self.wakers[index]);
            match subscriber.poll_next_unpin(&mut own) {
                Poll::Ready(Some(message)) => {
                    into.push_back(NatsDelivery::core(message, &self.screen));
                    taken += 1;
                    // There may be more: its turn comes after the others'.
                    self.flags[index].queue();
                }
                Poll::Ready(None) => {
                    // Ended (only when the client goes).
                    self.subscribers[index] = None;
                    self.live -= 1;
                }
                Poll::Pending => {}
            }
        }
        match (taken, self.live) {
            (1.., live) => Poll::Ready(live > 0),
            (0, 0) => Poll::Ready(false),
            (0, _) => Poll::Pending,
        }
    }
}

/// Counts a client's connections (the first and every reconnection), so
/// that what waits on the server can tell when the connection it sent on
/// has been replaced: an answer the old server owed will never come.
#[derive(Clone)]
pub(crate) struct Reconnections(Arc<async_nats::Statistics>);

impl std::fmt::Debug for Reconnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Reconnections").field(&self.count()).finish()
    }
}

impl Reconnections {
    /// How often [`Reconnections::since`] looks.
    const CHECK: Duration = Duration::from_millis(200);

    pub(crate) fn of(client: &async_nats::Client) -> Self {
        Self(client.statistics())
    }

    /// Connections so far.
    pub(crate) fn count(&self) -> u64 {
        self.0.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves once the client has connected again after `seen`
    /// connections.
    pub(crate) async fn since(&self, seen: u64) {
        while self.count() == seen {
            tokio::time::sleep(Self::CHECK).await;
        }
    }
}

/// How long one pull request waits at the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often the server says a pull is alive while it has nothing.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// Pulls from a durable consumer into `to`, starting over after errors
/// (missed heartbeats, a consumer the server does not have yet) with
/// backoff, and after every reconnection of the client.
///
/// The client's own pull stream re-issues its pull request when it sees
/// the connection come back, but it can miss a reconnection that happens
/// while it is not watching; it then waits for its request to expire (35
/// s) before pulling from the new server, and the consumer stalls
/// meanwhile (test
/// `a_server_killed_mid_run_loses_no_acknowledged_message_and_exactly_once_stays_once`
/// saw stalls of 30-60 s under load). A fresh pull stream after each
/// reconnection never waits on that. A pull request the old stream left on
/// the server goes away with its subscription: the server skips requests
/// nobody listens to, and a message already sent to one comes back after
/// `ack_wait`.
async fn read_consumer(
    consumer: async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
    name: String,
    reconnections: Reconnections,
    to: flume::Sender<NatsDelivery>,
    screen: Screen,
    stop: StopSignal,
) {
    let mut wait = Duration::from_millis(50);
    while !stop.is_stopped() {
        let connected_as = reconnections.count();
        // Short pulls with frequent heartbeats: a pull waiting at a server
        // (or, in a cluster, at a consumer leader) that died is noticed
        // within seconds by its missing heartbeats and made again, where
        // the client's defaults (30 s, 15 s) left the agent idle for most
        // of a minute.
        let pull = consumer
            .stream()
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages();
        match pull.await {
            Ok(mut messages) => {
                let reconnected = reconnections.since(connected_as);
                tokio::pin!(reconnected);
                loop {
                    tokio::select! {
                        biased;
                        item = messages.next() => match item {
                            Some(Ok(message)) => {
                                wait = Duration::from_millis(50);
                                let delivery = NatsDelivery::new(
                                    Incoming::Durable(Box::new(message)),
                                    &screen,
                                );
                                if to.send_async(delivery).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(error)) => {
                                tracing::warn!(consumer = %name, %error, "JetStream consumer interrupted");
                                break;
                            }
                            None => break,
                        },
                        () = &mut reconnected => {
                            tracing::info!(consumer = %name, "reconnected; pulling from the server afresh");
                            wait = Duration::ZERO;
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(consumer = %name, %error, retry_in = ?wait, "cannot read JetStream consumer");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
    }
}

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
/// other way round. (Measured: an agent sharing the two workers of its
/// process with the connection received 0.78x raw async-nats throughput
/// cross-process, on a thread of its own 0.84x.) Dropping the returned
/// future stops the agent as `stop` would.
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
            agent: agent.clone(),
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
            let run = drive_agent(spec, &bus, partition, own, ready);
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

/// Runs the agent (on its thread).
async fn drive_agent(
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
    bus: NatsBus,
    screen: Screen,
    /// Ends retries of JetStream publishes while the server is away.
    stop: StopSignal,
    /// Ids of exactly-once JetStream messages handled.
    processed: std::sync::Mutex<DedupeWindow>,
    /// Ids of exactly-once JetStream messages handled but not yet settled
    /// (their answers' confirmations pending): a redelivered copy arriving
    /// meanwhile is left to the original's settling.
    in_hand: std::sync::Mutex<std::collections::HashSet<MessageId>>,
    stats: std::sync::Mutex<NatsRunStats>,
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

    fn count(&self, f: impl FnOnce(&mut NatsRunStats)) {
        f(&mut lock(&self.stats));
    }

    /// Refuses an arrival `agent` cannot take (undecodable, misaddressed):
    /// a dead letter with its raw bytes and `reason`, and a JetStream
    /// delivery terminated (never redelivered).
    async fn refuse(
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
    async fn dead_letter(
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
        let topic = Topic::new("system.dead_letter").expect("valid topic");
        let letter = Envelope::new(agent.clone(), topic, Payload::SystemDeadLetter(letter))
            .with_priority(Priority::High);
        self.bus.publish_many(&[letter], &self.stop).await
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decides from the subject alone what an arrival is to one agent
/// instance, so that what it will skip is never decoded.
#[derive(Clone)]
struct Screen {
    prefix: String,
    partition: Partition,
    /// The topic segment that keys the agent's state, if any.
    segment: Option<usize>,
    reliable: Option<JetStreamSettings>,
}

/// What a [`Screen`] made of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The agent's to handle.
    Take,
    /// A JetStream family heard on a core wildcard subscription: its
    /// consumer delivers it.
    JetStreamFamily,
    /// Another instance's share (see [`Partition`]).
    OtherPartition,
}

impl Screen {
    fn topic_of<'s>(&self, subject: &'s str) -> &'s str {
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|t| t.strip_prefix('.'))
            .unwrap_or(subject)
    }

    fn look(&self, subject: &str, core: bool) -> Verdict {
        let topic = self.topic_of(subject);
        if core && self.reliable.as_ref().is_some_and(|r| r.carries(topic)) {
            return Verdict::JetStreamFamily;
        }
        if self.partition.count > 1 {
            if let Some(key) = self.segment.and_then(|n| topic.split('.').nth(n)) {
                if !self.partition.owns(key) {
                    return Verdict::OtherPartition;
                }
            }
        }
        Verdict::Take
    }
}

/// A NATS message as it arrived, screened as it is taken (decoded only
/// when opened, for the agent). (Measured, with a reading task between the
/// subscriptions and the agent: decoding there was 25 % slower end to end
/// than on the agent's task.)
pub struct NatsDelivery {
    incoming: Incoming,
    verdict: Verdict,
}

impl NatsDelivery {
    /// A core message taken from a subscription.
    fn core(message: async_nats::Message, screen: &Screen) -> Self {
        Self::new(Incoming::Core(message.into()), screen)
    }

    fn new(incoming: Incoming, screen: &Screen) -> Self {
        let verdict = match &incoming {
            Incoming::Core(m) => screen.look(&m.subject, true),
            Incoming::Durable(m) => screen.look(&m.subject, false),
        };
        Self { incoming, verdict }
    }
}

/// What reaches an agent: its core subscriptions, read by its own task, and
/// what the readers of its durable consumers pass on, if it has any.
struct NatsDeliveries {
    core: CoreSubscriptions,
    core_open: bool,
    durable: Option<Channel<NatsDelivery>>,
}

impl Deliveries<NatsDelivery> for NatsDeliveries {
    fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        into: &mut VecDeque<NatsDelivery>,
    ) -> std::task::Poll<bool> {
        use std::task::Poll;
        let before = into.len();
        if self.core_open {
            if let Poll::Ready(open) = self.core.poll_take(cx, into) {
                self.core_open = open;
            }
        }
        let mut durable_open = false;
        if let Some(durable) = &mut self.durable {
            durable_open = match durable.poll_take(cx, into) {
                Poll::Ready(open) => open,
                Poll::Pending => true,
            };
            if !durable_open {
                self.durable = None;
            }
        }
        let open = self.core_open || durable_open;
        match into.len() > before || !open {
            true => Poll::Ready(open),
            false => Poll::Pending,
        }
    }

    fn try_take(&mut self, into: &mut VecDeque<NatsDelivery>) -> bool {
        let before = into.len();
        if self.core_open {
            // Polled without the task's waker: the next `poll_take`
            // registers it again before looking (what arrives meanwhile
            // stays queued).
            let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
            if let std::task::Poll::Ready(open) = self.core.poll_take(&mut cx, into) {
                self.core_open = open;
            }
        }
        if let Some(durable) = &mut self.durable {
            durable.try_take(into);
        }
        into.len() > before
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

/// Longest wait for the server to take what the client has buffered.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

use async_nats::jetstream::AckKind;

impl NatsBus {
    /// Acknowledges (or naks, or terminates) a JetStream delivery.
    /// `confirmed` waits for the server to confirm it has the ack (double
    /// ack), but not past a reconnection of the client (the old server's
    /// confirmation never comes; waiting out its 5 s timeout stalled the
    /// agent). A lost ack means a redelivery, which at-least-once allows
    /// and exactly-once's id window absorbs: it is logged, not fatal.
    async fn ack(&self, message: &async_nats::jetstream::Message, kind: AckKind, confirmed: bool) {
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
