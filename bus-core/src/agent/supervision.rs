//! Supervision: what happens when an agent panics.
//!
//! Every agent runs inside a [`Supervised`] wrapper that catches a panic in
//! `on_start`, `on_message` or `produce`, announces it (`agent.error`, state
//! `crashed`) and applies the agent's [`RestartPolicy`]:
//!
//! * `Restart`: build a fresh agent (the supervisor needs a `rebuild`
//!   function; state is lost, so only agents that can start over are given
//!   this policy), wait the backoff (queued bus only: the inline bus has no
//!   clock), start it, carry on. After `max_restarts` the agent is shut down.
//! * `Isolate`: keep the run going without it; its messages are ignored
//!   and counted.
//! * `Shutdown`: stop the whole run with an error naming the agent.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::agent::{Agent, Health, Lifecycle, MessageFactory, Produce};
use crate::bus::error::{HandlerError, HandlerResult};
use crate::bus::handler::panic_message;
use crate::bus::Outbox;
use crate::model::ids::AgentId;
use crate::model::payload::{AgentErrorReport, AgentHealth, AgentState};
use crate::model::topic::Topic;
use crate::model::{Envelope, Payload, Priority};

/// What to do when an agent panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Start a fresh instance, at most `max_restarts` times, waiting
    /// `backoff * 2^(n-1)` (capped at `max_backoff`) before restart n.
    Restart {
        /// Restarts allowed before the agent is shut down.
        max_restarts: u32,
        /// First wait.
        backoff: Duration,
        /// Longest wait.
        max_backoff: Duration,
    },
    /// Leave it out and carry on.
    Isolate,
    /// Stop the run.
    Shutdown,
}

impl RestartPolicy {
    /// The wait before restart number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        match self {
            RestartPolicy::Restart {
                backoff,
                max_backoff,
                ..
            } => backoff
                .saturating_mul(1u32 << n.saturating_sub(1).min(20))
                .min(*max_backoff),
            _ => Duration::ZERO,
        }
    }
}

/// Builds a fresh agent for a restart.
pub type Rebuild = Box<dyn FnMut() -> Box<dyn Agent> + Send>;

/// An agent with its supervision settings, as handed to a driver.
pub struct AgentSpec {
    /// The agent.
    pub agent: Box<dyn Agent>,
    /// Its policy.
    pub policy: RestartPolicy,
    /// How to build a fresh one (needed by `Restart`).
    pub rebuild: Option<Rebuild>,
}

impl AgentSpec {
    /// An agent whose panic stops the run.
    pub fn new(agent: Box<dyn Agent>) -> Self {
        Self {
            agent,
            policy: RestartPolicy::Shutdown,
            rebuild: None,
        }
    }

    /// Sets the policy; `rebuild` is required for `Restart`.
    pub fn with_policy(mut self, policy: RestartPolicy, rebuild: Option<Rebuild>) -> Self {
        self.policy = policy;
        self.rebuild = rebuild;
        self
    }
}

/// A running agent under supervision.
pub struct Supervised {
    agent: Box<dyn Agent>,
    id: AgentId,
    policy: RestartPolicy,
    rebuild: Option<Rebuild>,
    lifecycle: Lifecycle,
    factory: MessageFactory,
    restarts: u32,
    isolated: bool,
    ignored: u64,
    failure: Option<String>,
    /// Set after a restart: how long the driver should wait (queued bus).
    pub(crate) pending_backoff: Option<Duration>,
    time_ms: i64,
}

impl Supervised {
    /// Wraps a spec; `deterministic` as for [`MessageFactory`].
    pub fn new(spec: AgentSpec, deterministic: bool) -> Self {
        let id = spec.agent.id().clone();
        Self {
            lifecycle: Lifecycle::new(id.clone()),
            factory: MessageFactory::for_stream(id.clone(), "lifecycle", deterministic),
            id,
            agent: spec.agent,
            policy: spec.policy,
            rebuild: spec.rebuild,
            restarts: 0,
            isolated: false,
            ignored: 0,
            failure: None,
            pending_backoff: None,
            time_ms: 0,
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The agent.
    pub fn agent(&self) -> &dyn Agent {
        self.agent.as_ref()
    }

    /// Gives the agent back.
    pub fn into_agent(self) -> Box<dyn Agent> {
        self.agent
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// True once isolated.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// Messages ignored while isolated.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Why the agent stopped the run, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The lifecycle state.
    pub fn state(&self) -> AgentState {
        self.lifecycle.state()
    }

    fn live(&self) -> bool {
        !self.isolated && self.failure.is_none()
    }

    fn announce(&mut self, to: AgentState, out: &mut Outbox) {
        match self.lifecycle.transition(to) {
            Ok(Some(payload)) => {
                let event = payload.message_type().as_str().trim_start_matches("agent.");
                let topic = Topic::new(format!("agent.{event}.{}", self.id))
                    .or_else(|_| Topic::new(format!("agent.{event}")))
                    .expect("agent.<event> is a valid topic");
                out.publish(self.factory.make(topic, payload, self.time_ms));
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "lifecycle"),
        }
    }

    /// Announces a pause or a resume the agent made while handling a
    /// message (running <-> paused).
    fn follow_pause(&mut self, out: &mut Outbox) {
        let paused = self.agent.is_paused();
        match self.lifecycle.state() {
            AgentState::Running if paused => self.announce(AgentState::Paused, out),
            AgentState::Paused if !paused => self.announce(AgentState::Running, out),
            _ => {}
        }
    }

    /// Starts the agent (created -> starting -> running).
    pub fn start(&mut self, out: &mut Outbox) -> HandlerResult {
        self.announce(AgentState::Starting, out);
        match catch_unwind(AssertUnwindSafe(|| self.agent.on_start(out))) {
            Ok(Ok(())) => {
                self.announce(AgentState::Running, out);
                Ok(())
            }
            Ok(Err(error)) => {
                self.announce(AgentState::Error, out);
                self.failure = Some(error.to_string());
                Err(error)
            }
            Err(panic) => {
                let text = panic_message(&*panic);
                self.crashed(&text, out);
                self.failure
                    .clone()
                    .map_or(Ok(()), |f| Err(HandlerError::new(f)))
            }
        }
    }

    /// Delivers one message. A `system.health_check` is answered here, for
    /// every agent, with an `agent.health_update.<id>` carrying the lifecycle
    /// state and the agent's own view of its health.
    #[inline]
    pub fn deliver(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        if let Payload::SystemHealthCheck(_) = envelope.payload() {
            self.answer_health_check(envelope, out);
            return Ok(());
        }
        if !self.live() {
            self.ignored += 1;
            return Ok(());
        }
        self.time_ms = self.time_ms.max(envelope.created_at_ms);
        let mark = out.len();
        match catch_unwind(AssertUnwindSafe(|| self.agent.on_message(envelope, out))) {
            Ok(result) => {
                self.follow_pause(out);
                result
            }
            Err(panic) => {
                out.truncate(mark);
                let text = panic_message(&*panic);
                self.crashed(&text, out);
                Err(HandlerError::new(format!(
                    "agent {} panicked: {text}",
                    self.id
                )))
            }
        }
    }

    fn answer_health_check(&mut self, check: &Envelope, out: &mut Outbox) {
        let Health { healthy, detail } = if self.isolated {
            Health::failing("isolated after a panic")
        } else if let Some(failure) = &self.failure {
            Health::failing(failure.clone())
        } else {
            match catch_unwind(AssertUnwindSafe(|| self.agent.health())) {
                Ok(health) => health,
                Err(panic) => {
                    Health::failing(format!("health check panicked: {}", panic_message(&*panic)))
                }
            }
        };
        let health = AgentHealth {
            agent: self.id.clone(),
            state: self.lifecycle.state(),
            healthy,
            detail,
        };
        let topic = Topic::under("agent.health_update", self.id.as_str());
        let time = self.time_ms.max(check.created_at_ms);
        out.publish(
            self.factory
                .make(topic, Payload::AgentHealthUpdate(health), time)
                .with_correlation_id(check.id),
        );
    }

    /// Asks a source for its next batch.
    pub fn produce(&mut self, out: &mut Outbox) -> Produce {
        if !self.live() {
            return Produce::Done;
        }
        let mark = out.len();
        match catch_unwind(AssertUnwindSafe(|| self.agent.produce(out))) {
            Ok(step) => step,
            Err(panic) => {
                out.truncate(mark);
                let text = panic_message(&*panic);
                self.crashed(&text, out);
                if self.live() {
                    Produce::More
                } else {
                    Produce::Done
                }
            }
        }
    }

    /// Stops the agent (running -> stopping -> stopped).
    pub fn stop(&mut self, out: &mut Outbox) {
        if self.isolated || self.lifecycle.state() != AgentState::Running {
            return;
        }
        self.announce(AgentState::Stopping, out);
        match catch_unwind(AssertUnwindSafe(|| self.agent.on_stop(out))) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(agent = %self.id, %error, "stop failed"),
            Err(panic) => {
                tracing::error!(agent = %self.id, panic = %panic_message(&*panic), "panicked while stopping")
            }
        }
        self.announce(AgentState::Stopped, out);
    }

    fn crashed(&mut self, panic: &str, out: &mut Outbox) {
        tracing::error!(agent = %self.id, %panic, policy = ?self.policy, "agent panicked");
        self.announce(AgentState::Crashed, out);
        let can_restart = matches!(self.policy, RestartPolicy::Restart { max_restarts, .. } if self.restarts < max_restarts)
            && self.rebuild.is_some();
        let report = AgentErrorReport {
            agent: self.id.clone(),
            error: format!("panicked: {panic}"),
            fatal: !can_restart && self.policy != RestartPolicy::Isolate,
        };
        let topic = Topic::under("agent.error", self.id.as_str());
        out.publish(
            self.factory
                .make(topic, Payload::AgentError(report), self.time_ms)
                .with_priority(Priority::High),
        );
        if can_restart {
            self.restarts += 1;
            self.pending_backoff = Some(self.policy.backoff(self.restarts));
            if let Some(rebuild) = self.rebuild.as_mut() {
                self.agent = rebuild();
            }
            // A fresh instance that fails to start ends the agent's run.
            let _ = self.start(out);
        } else if self.policy == RestartPolicy::Isolate {
            self.isolated = true;
        } else {
            self.failure = Some(format!("agent {} panicked: {panic}", self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RestartPolicy::Restart {
            max_restarts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let waits: Vec<u64> = (1..=5).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
    }
}
