//! Connecting to NATS: settings, errors, topic-to-subject mapping, and the
//! client's reconnection count.

use std::time::Duration;

use std::sync::Arc;

use crate::model::topic::TopicPattern;
use crate::model::WireFormat;
use crate::nats::jetstream::JetStreamSettings;
use crate::runtime::RunError;

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
