//! The NATS transport: one agent per process, the bus carried by a NATS
//! server (core NATS, fire-and-forget).
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
//! (see [`crate::jetstream`]): publishing there blocks, retrying, until the
//! stream has the message, and consumers resume from their last ack.

use std::time::Duration;

use futures_util::stream::{select_all, StreamExt};

use crate::agent::Produce;
use crate::driver::{RunError, StopSignal};
use crate::ids::MessageId;
use crate::inline::Outbox;
use crate::jetstream::{consumer_name, plan, JetStreamSettings, Reliable};
use crate::message::payload::DeadLetter;
use crate::message::{DeliveryMode, Envelope, Payload, Priority};
use crate::reliability::DedupeWindow;
use crate::supervision::{AgentSpec, Supervised};
use crate::topic::{Topic, TopicPattern};

/// How to reach the NATS server.
#[derive(Clone)]
pub struct NatsSettings {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject prefix (one or more segments, no wildcards).
    pub prefix: String,
    /// Authentication token, if the server wants one. Never logged.
    pub token: Option<String>,
    /// The topic families carried by JetStream, and how (none: everything
    /// on core NATS).
    pub jetstream: Option<JetStreamSettings>,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("jetstream", &self.jetstream)
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
    format!("{prefix}.{topic}")
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
}

impl NatsBus {
    /// Connects and, when JetStream families are configured, makes sure
    /// their streams exist.
    pub async fn connect(settings: &NatsSettings) -> Result<Self, NatsError> {
        let client = connect(settings).await?;
        let reliable = match &settings.jetstream {
            Some(js) if !js.families.is_empty() => {
                Some(Reliable::open(client.clone(), &settings.prefix, js.clone()).await?)
            }
            _ => None,
        };
        Ok(Self {
            client,
            prefix: settings.prefix.clone(),
            reliable,
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
        let mut in_flight = Vec::new();
        for envelope in envelopes {
            let subject = subject(&self.prefix, envelope.topic.as_str());
            let json = envelope.to_json_bytes();
            match &self.reliable {
                Some(reliable) if reliable.settings().carries(envelope.topic.as_str()) => {
                    in_flight.push(
                        reliable
                            .start_publish(subject, envelope.id, json.into())
                            .await,
                    );
                }
                _ => send(&self.client, subject.into(), json).await?,
            }
        }
        if let Some(reliable) = &self.reliable {
            for publish in in_flight {
                reliable.confirm(publish, stop).await?;
            }
        }
        Ok(())
    }

    /// Publishes one envelope: through JetStream (waiting for the stream's
    /// acknowledgement, retrying until `stop`) when its family is reliable,
    /// else on core NATS.
    pub async fn publish(&self, envelope: &Envelope, stop: &StopSignal) -> Result<(), NatsError> {
        match &self.reliable {
            Some(reliable) if reliable.settings().carries(envelope.topic.as_str()) => {
                reliable.publish(envelope, stop).await.map(|_| ())
            }
            _ => publish(&self.client, &self.prefix, envelope).await,
        }
    }
}

/// Connects to the server named in `settings` (core NATS only).
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, NatsError> {
    let options = match &settings.token {
        Some(token) => async_nats::ConnectOptions::with_token(token.clone()),
        None => async_nats::ConnectOptions::new(),
    };
    options
        .name("bistoury")
        .connect(settings.url.as_str())
        .await
        .map_err(|e| NatsError::Connect {
            url: settings.url.clone(),
            reason: e.to_string(),
        })
}

/// Which share of a keyed message stream one instance of an agent takes:
/// instance `index` of `count` handles the messages whose key — the topic
/// segment named by
/// [`Agent::partition_segment`](crate::agent::Agent::partition_segment) —
/// hashes (FNV-1a) to `index` modulo `count`; unkeyed messages go to every
/// instance. The check reads the subject only: another instance's
/// messages are skipped without being decoded. So several processes running one agent share the load, each
/// message is handled by exactly one of them, and everything with one key
/// (one symbol) is handled by the same instance in order — what a plain
/// NATS queue group cannot promise for an agent that keeps state per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// This instance, from 0.
    pub index: u32,
    /// Instances in all (at least 1).
    pub count: u32,
}

impl Partition {
    /// The only instance: everything.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// Instance `index` of `count`; `None` unless `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Whether this instance handles messages with `key`.
    pub fn owns(&self, key: &str) -> bool {
        use std::hash::Hasher;
        if self.count <= 1 {
            return true;
        }
        let mut hasher = crate::ids::Fnv1a::default();
        hasher.write(key.as_bytes());
        hasher.finish() % u64::from(self.count) == u64::from(self.index)
    }

    /// `index/count`, 1-based, for names and logs: `1of2`.
    pub fn label(&self) -> String {
        format!("{}of{}", self.index + 1, self.count)
    }
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

/// A request that arrived with a NATS reply inbox: answers to it (by
/// correlation id) go to the inbox too.
type Requester = (MessageId, async_nats::Subject);

async fn publish_all(
    bus: &NatsBus,
    out: &mut Outbox,
    stats: &mut NatsRunStats,
    requester: Option<&Requester>,
    stop: &StopSignal,
) -> Result<(), NatsError> {
    if out.is_empty() {
        return Ok(());
    }
    let messages: Vec<Envelope> = out.drain().collect();
    if let Some((request_id, inbox)) = requester {
        for answer in messages
            .iter()
            .filter(|m| m.correlation_id == Some(*request_id))
        {
            send(&bus.client, inbox.clone(), answer.to_json_bytes()).await?;
        }
    }
    bus.publish_many(&messages, stop).await?;
    stats.published += messages.len() as u64;
    Ok(())
}

/// Publishes bytes on a subject.
async fn send(
    client: &async_nats::Client,
    subject: async_nats::Subject,
    bytes: Vec<u8>,
) -> Result<(), NatsError> {
    client
        .publish(subject.clone(), bytes.into())
        .await
        .map_err(|e| NatsError::Publish {
            subject: subject.to_string(),
            reason: e.to_string(),
        })
}

/// Sends `request` with NATS request-reply and waits up to `timeout` for
/// the answer, decoded as an envelope.
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
    Envelope::from_json(&answer.payload).map_err(|e| failed(format!("undecodable answer: {e}")))
}

/// A message as it arrived: from a core subscription or a durable
/// JetStream consumer (to be acknowledged).
enum Incoming {
    Core(async_nats::Message),
    Durable(Box<async_nats::jetstream::Message>),
}

/// Subscribes to everything `agent` wants: core subscriptions, and one
/// durable consumer per subject of a JetStream family, each read by a task
/// feeding `durable` (the tasks are returned, to be aborted at the end).
async fn subscribe(
    bus: &NatsBus,
    agent: &str,
    partition: Partition,
    mut patterns: Vec<TopicPattern>,
    durable: flume::Sender<Incoming>,
    stop: &StopSignal,
) -> Result<
    (
        Vec<async_nats::Subscriber>,
        Vec<tokio::task::JoinHandle<()>>,
    ),
    NatsError,
> {
    patterns.push(TopicPattern::new("system.health_check").expect("valid pattern"));
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
                    durable.clone(),
                    stop.clone(),
                )));
            }
        }
    }
    Ok((core, readers))
}

/// Pulls from a durable consumer into `to`, starting over after errors (the
/// server restarting, missed heartbeats) with backoff.
async fn read_consumer(
    consumer: async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
    name: String,
    to: flume::Sender<Incoming>,
    stop: StopSignal,
) {
    let mut wait = Duration::from_millis(50);
    while !stop.is_stopped() {
        match consumer.messages().await {
            Ok(mut messages) => {
                while let Some(item) = messages.next().await {
                    match item {
                        Ok(message) => {
                            wait = Duration::from_millis(50);
                            if to
                                .send_async(Incoming::Durable(Box::new(message)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(consumer = %name, %error, "JetStream consumer interrupted");
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
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Runs one agent against a NATS server until it is a finished source, or
/// `stop` is raised. The agent is supervised as on the other buses.
/// `ready`, if given, is told once the agent's subscriptions are in place
/// on the server (before the agent starts), so a caller can start the
/// agents that publish to it.
pub async fn run_agent(
    spec: AgentSpec,
    bus: &NatsBus,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(crate::supervision::Supervised, NatsRunStats), NatsError> {
    run_agent_instance(spec, bus, Partition::WHOLE, stop, ready).await
}

/// [`run_agent`] for one instance of an agent run as several: it handles
/// only the keyed messages of its [`Partition`].
pub async fn run_agent_instance(
    spec: AgentSpec,
    bus: &NatsBus,
    partition: Partition,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(crate::supervision::Supervised, NatsRunStats), NatsError> {
    let mut agent = Supervised::new(spec, false);
    let mut stats = NatsRunStats::default();
    let (durable_tx, durable_rx) = flume::bounded(256);
    let (id, patterns) = (agent.id().to_string(), agent.agent().subscriptions());
    let (core, readers) = subscribe(bus, &id, partition, patterns, durable_tx, &stop).await?;
    // Make sure the server has the subscriptions before anything is produced.
    let _ = bus.client.flush().await;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut incoming = futures_util::stream::select(
        select_all(core).map(Incoming::Core),
        durable_rx.into_stream(),
    );
    let mut runner = Runner {
        bus,
        partition,
        partition_segment: agent.agent().partition_segment(),
        stop: &stop,
        processed: DedupeWindow::new(
            bus.reliable
                .as_ref()
                .map_or(1, |r| r.settings().dedupe_window.max(1)),
        ),
        stats: &mut stats,
        out: Outbox::new(),
    };
    let result = runner.drive(&mut agent, &mut incoming).await;
    for reader in readers {
        reader.abort();
    }
    result?;
    if let Some(failure) = agent.failure() {
        return Err(RunError::AgentFailed(failure.to_string()).into());
    }
    Ok((agent, stats))
}

/// What one agent's run on NATS works with.
struct Runner<'a> {
    bus: &'a NatsBus,
    partition: Partition,
    /// The topic segment that keys the agent's state, if any.
    partition_segment: Option<usize>,
    stop: &'a StopSignal,
    /// Ids of exactly-once JetStream messages handled.
    processed: DedupeWindow,
    stats: &'a mut NatsRunStats,
    out: Outbox,
}

impl Runner<'_> {
    async fn publish(&mut self, requester: Option<&Requester>) -> Result<(), NatsError> {
        publish_all(self.bus, &mut self.out, self.stats, requester, self.stop).await
    }

    async fn drive(
        &mut self,
        agent: &mut Supervised,
        incoming: &mut (impl futures_util::Stream<Item = Incoming> + Unpin),
    ) -> Result<(), NatsError> {
        let (bus, stop) = (self.bus, self.stop);
        let started = agent.start(&mut self.out);
        self.publish(None).await?;
        started.map_err(|error| RunError::StartFailed {
            agent: agent.id().to_string(),
            error,
        })?;
        let mut producing = true;
        let mut produced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            if stop.is_stopped() || agent.failure().is_some() {
                break;
            }
            if producing {
                // A source: produce a step, then take whatever arrived meanwhile.
                let step = agent.produce(&mut self.out);
                self.publish(None).await?;
                if step == Produce::Done {
                    producing = false;
                    let _ = bus.client.flush().await;
                    // A source that has finished has nothing left to do in its
                    // own process (its commands would start nothing): it exits.
                    // (An agent that never produced is not a source.)
                    if produced || agent.agent().subscriptions().is_empty() {
                        break;
                    }
                } else {
                    produced = true;
                }
                while let Some(Some(message)) =
                    futures_util::FutureExt::now_or_never(incoming.next())
                {
                    self.take(agent, message).await?;
                }
                if step == Produce::Idle {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            tokio::select! {
                message = incoming.next() => match message {
                    Some(message) => self.take(agent, message).await?,
                    None => break,
                },
                _ = tick.tick() => {}
            }
        }
        agent.stop(&mut self.out);
        self.publish(None).await?;
        let _ = bus.client.flush().await;
        Ok(())
    }

    /// Hands one arrival to the agent, publishes what it answered, and settles
    /// a JetStream delivery (ack, nak with backoff, or dead letter).
    async fn take(&mut self, agent: &mut Supervised, message: Incoming) -> Result<(), NatsError> {
        let bus = self.bus;
        let message = match message {
            Incoming::Core(message) => {
                if let Some(reliable) = &bus.reliable {
                    // A wildcard subscription also hears JetStream families;
                    // their consumers deliver those.
                    let topic = message
                        .subject
                        .strip_prefix(bus.prefix.as_str())
                        .and_then(|t| t.strip_prefix('.'))
                        .unwrap_or("");
                    if reliable.settings().carries(topic) {
                        return Ok(());
                    }
                }
                if !self.mine(&message.subject) {
                    self.stats.other_partitions += 1;
                    return Ok(());
                }
                let requester = self.handle(agent, &message);
                return self.publish(requester.as_ref()).await;
            }
            Incoming::Durable(message) => message,
        };
        if !self.mine(&message.subject) {
            self.stats.other_partitions += 1;
            settle(&message, AckKind::Ack, false).await;
            return Ok(());
        }
        let settings = bus
            .reliable
            .as_ref()
            .expect("durable messages need JetStream")
            .settings();
        let envelope = match Envelope::from_json(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.stats.undecodable += 1;
                tracing::warn!(agent = %agent.id(), subject = %message.subject, %error, "undecodable message dead-lettered");
                self.out.publish(dead_letter(
                    agent,
                    &message.subject,
                    &message.payload,
                    None,
                    error.to_string(),
                    1,
                ));
                self.publish(None).await?;
                settle(&message, AckKind::Term, false).await;
                return Ok(());
            }
        };
        let exactly_once = envelope.delivery_mode == DeliveryMode::ExactlyOnce;
        if exactly_once && self.processed.contains(&envelope.id) {
            self.stats.duplicates += 1;
            settle(&message, AckKind::Ack, true).await;
            return Ok(());
        }
        self.stats.received += 1;
        let handled = agent.deliver(&envelope, &mut self.out);
        // What the agent published is safe before its cause is acknowledged.
        self.publish(None).await?;
        match handled {
            Ok(()) => {
                if exactly_once {
                    self.processed.insert(envelope.id);
                }
                settle(&message, AckKind::Ack, exactly_once).await;
            }
            Err(error) => {
                let delivered = message.info().map_or(1, |info| info.delivered);
                if delivered >= settings.max_deliver {
                    self.stats.dead_lettered += 1;
                    tracing::warn!(agent = %agent.id(), message_id = %envelope.id, %error, delivered, "dead-lettered after max deliveries");
                    let letter = dead_letter(
                        agent,
                        &message.subject,
                        &message.payload,
                        Some(envelope),
                        error.to_string(),
                        delivered as u32,
                    );
                    self.out.publish(letter);
                    self.publish(None).await?;
                    settle(&message, AckKind::Term, false).await;
                } else {
                    self.stats.redeliveries_requested += 1;
                    tracing::warn!(agent = %agent.id(), message_id = %envelope.id, %error, delivered, "handler failed; redelivery requested");
                    let delay = settings.redelivery_delay(delivered);
                    settle(&message, AckKind::Nak(Some(delay)), false).await;
                }
            }
        }
        Ok(())
    }

    /// Whether this instance handles what arrives on `subject` (see
    /// [`Partition`]).
    fn mine(&self, subject: &str) -> bool {
        if self.partition.count <= 1 {
            return true;
        }
        let Some(segment) = self.partition_segment else {
            return true;
        };
        let topic = subject
            .strip_prefix(self.bus.prefix.as_str())
            .and_then(|t| t.strip_prefix('.'))
            .unwrap_or(subject);
        match topic.split('.').nth(segment) {
            Some(key) => self.partition.owns(key),
            None => true,
        }
    }

    /// Hands one wire message to the agent; returns the requester to answer
    /// when the message came with a reply inbox.
    fn handle(
        &mut self,
        agent: &mut Supervised,
        message: &async_nats::Message,
    ) -> Option<Requester> {
        match Envelope::from_json(&message.payload) {
            Ok(envelope) => {
                self.stats.received += 1;
                if let Err(error) = agent.deliver(&envelope, &mut self.out) {
                    tracing::warn!(agent = %agent.id(), message_id = %envelope.id, %error, "handler failed");
                }
                message.reply.clone().map(|inbox| (envelope.id, inbox))
            }
            Err(error) => {
                self.stats.undecodable += 1;
                tracing::warn!(agent = %agent.id(), subject = %message.subject, %error, "undecodable message dead-lettered");
                self.out.publish(dead_letter(
                    agent,
                    &message.subject,
                    &message.payload,
                    None,
                    error.to_string(),
                    1,
                ));
                None
            }
        }
    }
}

use async_nats::jetstream::AckKind;

/// Acknowledges (or naks, or terminates) a JetStream delivery. `confirmed`
/// waits for the server to confirm it has the ack (double ack). A lost ack
/// means a redelivery, which at-least-once allows and exactly-once's id
/// window absorbs: it is logged, not fatal.
async fn settle(message: &async_nats::jetstream::Message, kind: AckKind, confirmed: bool) {
    let result = if confirmed {
        message.double_ack_with(kind).await
    } else {
        message.ack_with(kind).await
    };
    if let Err(error) = result {
        tracing::warn!(subject = %message.subject, %error, "JetStream ack not delivered; the message will come again");
    }
}

/// A dead letter for a message an agent could not take.
fn dead_letter(
    agent: &Supervised,
    subject: &async_nats::Subject,
    payload: &[u8],
    original: Option<Envelope>,
    error: String,
    attempts: u32,
) -> Envelope {
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
        subscription: format!("{} on {}", agent.id(), subject),
        error,
        attempts,
        dead_lettered_at_ms: crate::message::now_ms(),
    };
    let topic = Topic::new("system.dead_letter").expect("valid topic");
    Envelope::new(agent.id().clone(), topic, Payload::SystemDeadLetter(letter))
        .with_priority(Priority::High)
}

/// Publishes one envelope on the subject of its topic (for tools and tests).
pub async fn publish(
    client: &async_nats::Client,
    prefix: &str,
    envelope: &Envelope,
) -> Result<(), NatsError> {
    send(
        client,
        subject(prefix, envelope.topic.as_str()).into(),
        envelope.to_json_bytes(),
    )
    .await
}
