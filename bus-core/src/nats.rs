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
//! deliver is gone — the reliable modes need JetStream.
//!
//! What is not here yet (issue 6): JetStream for the reliable modes, queue
//! groups, a reconnection policy of our own (buffer or block), starting
//! agents as child processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{select_all, StreamExt};

use crate::agent::Produce;
use crate::driver::{RunError, StopSignal};
use crate::ids::MessageId;
use crate::inline::Outbox;
use crate::message::payload::DeadLetter;
use crate::message::{Envelope, Payload, Priority};
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
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
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

/// Connects to the server named in `settings`.
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
}

/// A request that arrived with a NATS reply inbox: answers to it (by
/// correlation id) go to the inbox too.
type Requester = (MessageId, async_nats::Subject);

async fn publish_all(
    client: &async_nats::Client,
    prefix: &str,
    out: &mut Outbox,
    published: &AtomicU64,
    requester: Option<&Requester>,
) -> Result<(), NatsError> {
    for message in out.drain() {
        let json = message.to_json_bytes();
        if let Some((request_id, inbox)) = requester {
            if message.correlation_id == Some(*request_id) {
                send(client, inbox.clone(), json.clone()).await?;
            }
        }
        send(client, subject(prefix, message.topic.as_str()).into(), json).await?;
        published.fetch_add(1, Ordering::Relaxed);
    }
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

/// Runs one agent against a NATS server until it is a finished source, or
/// `stop` is raised. The agent is supervised as on the other buses.
/// `ready`, if given, is told once the agent's subscriptions are in place
/// on the server (before the agent starts), so a caller can start the
/// agents that publish to it.
pub async fn run_agent(
    spec: AgentSpec,
    client: async_nats::Client,
    prefix: &str,
    stop: StopSignal,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(crate::supervision::Supervised, NatsRunStats), NatsError> {
    let mut agent = Supervised::new(spec, false);
    let published = AtomicU64::new(0);
    let mut stats = NatsRunStats::default();
    let mut patterns = agent.agent().subscriptions();
    patterns.push(TopicPattern::new("system.health_check").expect("valid pattern"));
    let mut streams = Vec::new();
    for pattern in &patterns {
        for subject in subjects(prefix, pattern) {
            let subscriber =
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| NatsError::Subscribe {
                        subject: subject.clone(),
                        reason: e.to_string(),
                    })?;
            streams.push(subscriber);
        }
    }
    // Make sure the server has the subscriptions before anything is produced.
    let _ = client.flush().await;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut incoming = select_all(streams);
    let mut out = Outbox::new();
    let started = agent.start(&mut out);
    publish_all(&client, prefix, &mut out, &published, None).await?;
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
            let step = agent.produce(&mut out);
            publish_all(&client, prefix, &mut out, &published, None).await?;
            if step == Produce::Done {
                producing = false;
                let _ = client.flush().await;
                // A source that has finished has nothing left to do in its
                // own process (its commands would start nothing): it exits.
                // (An agent that never produced is not a source.)
                if produced || agent.agent().subscriptions().is_empty() {
                    break;
                }
            } else {
                produced = true;
            }
            while let Some(Some(message)) = futures_util::FutureExt::now_or_never(incoming.next()) {
                let requester = handle(&mut agent, &message, &mut out, &mut stats);
                publish_all(&client, prefix, &mut out, &published, requester.as_ref()).await?;
            }
            if step == Produce::Idle {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            continue;
        }
        tokio::select! {
            message = incoming.next() => match message {
                Some(message) => {
                    let requester = handle(&mut agent, &message, &mut out, &mut stats);
                    publish_all(&client, prefix, &mut out, &published, requester.as_ref()).await?;
                }
                None => break,
            },
            _ = tick.tick() => {}
        }
    }
    agent.stop(&mut out);
    publish_all(&client, prefix, &mut out, &published, None).await?;
    let _ = client.flush().await;
    stats.published = published.load(Ordering::Relaxed);
    if let Some(failure) = agent.failure() {
        return Err(RunError::AgentFailed(failure.to_string()).into());
    }
    Ok((agent, stats))
}

/// Hands one wire message to the agent; returns the requester to answer
/// when the message came with a reply inbox.
fn handle(
    agent: &mut Supervised,
    message: &async_nats::Message,
    out: &mut Outbox,
    stats: &mut NatsRunStats,
) -> Option<Requester> {
    match Envelope::from_json(&message.payload) {
        Ok(envelope) => {
            stats.received += 1;
            if let Err(error) = agent.deliver(&envelope, out) {
                tracing::warn!(agent = %agent.id(), message_id = %envelope.id, %error, "handler failed");
            }
            message.reply.clone().map(|inbox| (envelope.id, inbox))
        }
        Err(error) => {
            stats.undecodable += 1;
            tracing::warn!(agent = %agent.id(), subject = %message.subject, %error, "undecodable message dead-lettered");
            let mut raw = String::from_utf8_lossy(&message.payload).into_owned();
            if raw.len() > 4096 {
                let mut cut = 4096;
                while !raw.is_char_boundary(cut) {
                    cut -= 1;
                }
                raw.truncate(cut);
            }
            let letter = DeadLetter {
                original: None,
                raw: Some(raw),
                subscription: format!("{} on {}", agent.id(), message.subject),
                error: error.to_string(),
                attempts: 1,
                dead_lettered_at_ms: crate::message::now_ms(),
            };
            let topic = Topic::new("system.dead_letter").expect("valid topic");
            out.publish(
                Envelope::new(agent.id().clone(), topic, Payload::SystemDeadLetter(letter))
                    .with_priority(Priority::High),
            );
            None
        }
    }
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
