//! Connecting to NATS: settings, errors, topic-to-subject mapping, and the
//! client's reconnection count.

use crate::model::WireFormat;
use crate::nats::client::NatsError;
use crate::nats::jetstream::JetStreamSettings;

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
