//! `system.*`, `agent.*`, `command.*` and `response.*`: the system's own
//! messages, agents' lifecycle, and commands with their answers.

use super::*;

/// `system.startup`: the system is starting these agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Startup {
    /// Software version.
    pub version: String,
    /// Agents being started, in start order.
    pub agents: Vec<AgentId>,
}

/// `system.shutdown`: the system is stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// Why.
    pub reason: String,
}

/// `system.health_check`: every agent answers with `agent.health_update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {}

validated_payload! {
    /// `system.config_update`: change one setting at run time.
    pub struct ConfigUpdate(ConfigUpdateFields) as "system.config_update" {
        /// Dotted key, e.g. `risk.max_drawdown`.
        pub key: String,
        /// New value, as text (parsed by the agent that owns the key).
        pub value: String,
    }
    check(f) {
        not_blank(P, "key", &f.key)?;
    }
}

validated_payload! {
    /// `system.heartbeat`: an agent is alive; it is unhealthy if none arrives within `ttl_ms`.
    pub struct Heartbeat(HeartbeatFields) as "system.heartbeat" {
        /// Who is alive.
        pub agent: AgentId,
        /// Increases by one per heartbeat.
        pub sequence: u64,
        /// How long this heartbeat vouches for.
        pub ttl_ms: u64,
    }
    check(f) {
        rule(P, "ttl_ms", f.ttl_ms > 0, "must be positive")?;
    }
}

/// `system.dead_letter`: a message that could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// The message, as it was on its last attempt; absent when it could
    /// not even be decoded (see `raw`).
    pub original: Option<Box<crate::model::Envelope>>,
    /// The bytes as received (lossy UTF-8, at most 4 KiB) when they could
    /// not be decoded into an envelope.
    #[serde(default)]
    pub raw: Option<String>,
    /// The subscription that could not handle it.
    pub subscription: String,
    /// The last error.
    pub error: String,
    /// Deliveries attempted.
    pub attempts: u32,
    /// When it was given up, ms since the Unix epoch.
    pub dead_lettered_at_ms: i64,
}

/// `agent.started` / `stopped` / `paused` / `resumed`: a lifecycle transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTransition {
    /// The agent.
    pub agent: AgentId,
    /// State before.
    pub from: AgentState,
    /// State after.
    pub to: AgentState,
}

/// `agent.error`: an agent hit an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentErrorReport {
    /// The agent.
    pub agent: AgentId,
    /// What happened.
    pub error: String,
    /// True when the agent cannot continue.
    pub fatal: bool,
}

/// `agent.health_update`: an agent's health, e.g. in answer to a health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// The agent.
    pub agent: AgentId,
    /// Its lifecycle state.
    pub state: AgentState,
    /// Whether it considers itself healthy.
    pub healthy: bool,
    /// Free-form detail.
    pub detail: String,
}

/// `command.*`: start/stop collection, pause/resume trading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Markets concerned; empty means all.
    pub symbols: Vec<Symbol>,
    /// Why.
    pub reason: String,
}

/// `response.success`: a request was carried out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Success {
    /// What was done.
    pub detail: String,
}

/// `response.error`: a request was refused or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// Machine-readable code, e.g. `risk_refused`.
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

/// `response.ack`: a message was received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The acknowledged message.
    pub message_id: MessageId,
}
