//! What every part of the NATS transport shares: its error type, the
//! mapping of topics to subjects, and the client's reconnection count.

use std::sync::Arc;
use std::time::Duration;

use crate::model::topic::TopicPattern;
use crate::runtime::RunError;

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

pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
