//! Agents: the trait every Bistoury agent implements, its lifecycle, and the
//! factory agents use to stamp the messages they send.
//!
//! An agent is a state machine driven by messages: the bus (inline,
//! queued, or later NATS) calls [`Agent::on_message`] and publishes whatever
//! the agent put in its [`Outbox`]. Agents never hold a bus handle, so the
//! same agent code runs unchanged in a backtest, in one process, or
//! distributed. Agents that bring data in (the collector) are *sources*: the
//! driver also calls [`Agent::produce`] until it reports [`Produce::Done`].
//!
//! Besides the contract: the [`registry`] of running agents, [`health`]
//! checks, and [`supervision`] (restart policies around an agent).
//! Imports the model and the buses; the runtime above drives agents.

use std::fmt;

use serde::Serialize;

pub mod health;
mod outcome;
pub mod registry;
pub mod supervision;

pub use outcome::Outcome;

use crate::bus::error::HandlerResult;
pub use crate::bus::Outbox;
use crate::model::ids::{AgentId, MessageId};
use crate::model::payload::{AgentState, AgentTransition};
use crate::model::topic::{Topic, TopicPattern};
use crate::model::{Envelope, Payload, Priority};

/// What a source agent's `produce` step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produce {
    /// It published something and has more.
    More,
    /// It has nothing right now (live feeds); ask again later.
    Idle,
    /// It has nothing more, ever.
    Done,
}

/// A Bistoury agent.
pub trait Agent: Send + 'static {
    /// Its identity.
    fn id(&self) -> &AgentId;

    /// What it can do (`market_data`, `signals`, `execution`, `risk`...).
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }

    /// Topic patterns it wants delivered to `on_message`.
    fn subscriptions(&self) -> Vec<TopicPattern>;

    /// Called once before any message.
    fn on_start(&mut self, _out: &mut Outbox) -> HandlerResult {
        Ok(())
    }

    /// Handles one message.
    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult;

    /// Sources publish their next batch here; others are `Done` at once.
    fn produce(&mut self, _out: &mut Outbox) -> Produce {
        Produce::Done
    }

    /// Called once after the last message.
    fn on_stop(&mut self, _out: &mut Outbox) -> HandlerResult {
        Ok(())
    }

    /// Which topic segment keys this agent's state (from 0: the symbol
    /// of `data.candle.BTC.1m` is segment 2), for running several
    /// instances side by side: each instance handles the messages whose
    /// key falls in its partition (see `nats::Partition`), so everything
    /// with one key goes to one instance, in order, and an instance can
    /// tell from the subject alone, before decoding, whether a message is
    /// its own. Topics too short to have the segment go to every instance.
    /// `None` (the default): the agent cannot be split into instances.
    fn partition_segment(&self) -> Option<usize> {
        None
    }

    /// Whether it is healthy, and a short detail.
    fn health(&self) -> Health {
        Health::ok("")
    }

    /// Whether it has paused its work (a trader told to stop trading): its
    /// supervisor announces `agent.paused` and `agent.resumed` as this
    /// changes.
    fn is_paused(&self) -> bool {
        false
    }
}

/// What an agent says when asked how it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Able to do its work.
    pub healthy: bool,
    /// A short detail for people (`"halted by emergency stop"`).
    pub detail: String,
}

impl Health {
    /// Healthy, with a detail.
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            healthy: true,
            detail: detail.into(),
        }
    }

    /// Not healthy, and why.
    pub fn failing(detail: impl Into<String>) -> Self {
        Self {
            healthy: false,
            detail: detail.into(),
        }
    }
}

/// An illegal lifecycle transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent {agent}: cannot go from {from:?} to {to:?}")]
pub struct TransitionError {
    /// The agent.
    pub agent: AgentId,
    /// Its state.
    pub from: AgentState,
    /// The refused target.
    pub to: AgentState,
}

/// The lifecycle state machine: created -> starting -> running <-> paused ->
/// stopping -> stopped, with error and crashed reachable from the live
/// states and a restart (-> starting) allowed from stopped, error and crashed.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    agent: AgentId,
    state: AgentState,
}

impl Lifecycle {
    /// A lifecycle in `Created`.
    pub fn new(agent: AgentId) -> Self {
        Self {
            agent,
            state: AgentState::Created,
        }
    }

    /// The current state.
    pub fn state(&self) -> AgentState {
        self.state
    }

    /// Is `from -> to` allowed?
    pub fn allowed(from: AgentState, to: AgentState) -> bool {
        use AgentState::*;
        matches!(
            (from, to),
            (Created, Starting)
                | (Starting, Running)
                | (Running, Paused)
                | (Paused, Running)
                | (Running | Paused, Stopping)
                | (Stopping, Stopped)
                | (Starting | Running | Paused | Stopping, Error | Crashed)
                | (Stopped | Error | Crashed, Starting)
        )
    }

    /// Moves to `to`, returning the `agent.*` message that announces it
    /// (none for transitions that have no message type of their own).
    pub fn transition(&mut self, to: AgentState) -> Result<Option<Payload>, TransitionError> {
        if !Self::allowed(self.state, to) {
            return Err(TransitionError {
                agent: self.agent.clone(),
                from: self.state,
                to,
            });
        }
        let transition = AgentTransition {
            agent: self.agent.clone(),
            from: self.state,
            to,
        };
        let resumed = self.state == AgentState::Paused && to == AgentState::Running;
        self.state = to;
        Ok(match to {
            AgentState::Running if resumed => Some(Payload::AgentResumed(transition)),
            AgentState::Running => Some(Payload::AgentStarted(transition)),
            AgentState::Paused => Some(Payload::AgentPaused(transition)),
            AgentState::Stopped => Some(Payload::AgentStopped(transition)),
            _ => None,
        })
    }
}

/// Stamps an agent's outgoing messages: sender, id and time.
///
/// In deterministic mode (backtests) ids are derived from the sender and a
/// sequence number, so the same run produces the same ids; times always come
/// from the caller (market time), never from the wall clock.
#[derive(Debug, Clone)]
pub struct MessageFactory {
    sender: AgentId,
    sender_hash: u64,
    sequence: u64,
    deterministic: bool,
}

impl MessageFactory {
    /// A factory for `sender`.
    pub fn new(sender: AgentId, deterministic: bool) -> Self {
        Self::for_stream(sender, "", deterministic)
    }

    /// A factory for one of several independent message streams of the
    /// same sender (the supervisor's lifecycle messages and the agent's own
    /// messages): deterministic ids stay distinct across streams.
    pub fn for_stream(sender: AgentId, stream: &str, deterministic: bool) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in sender.as_str().bytes().chain([0xff]).chain(stream.bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            sender,
            sender_hash: hash,
            sequence: 0,
            deterministic,
        }
    }

    /// The sender.
    pub fn sender(&self) -> &AgentId {
        &self.sender
    }

    /// A message on `topic` stamped with `time_ms`.
    #[inline]
    pub fn make(&mut self, topic: Topic, payload: Payload, time_ms: i64) -> Envelope {
        self.sequence += 1;
        let id = if self.deterministic {
            MessageId::from_u128((u128::from(self.sender_hash) << 64) | u128::from(self.sequence))
        } else {
            MessageId::new()
        };
        Envelope::stamped(id, time_ms, self.sender.clone(), topic, payload)
    }

    /// A response to `request`: correlated, addressed to its sender, on its
    /// `reply_to` topic (or `response.<family>`), at its priority.
    pub fn reply(&mut self, request: &Envelope, payload: Payload, time_ms: i64) -> Envelope {
        let topic = request.reply_to.clone().unwrap_or_else(|| {
            Topic::new(format!("response.{}", request.message_type().family()))
                .expect("`response.<family>` is a valid topic")
        });
        self.make(topic, payload, time_ms)
            .with_correlation_id(request.id)
            .with_recipient(request.sender.clone())
            .with_priority(request.priority)
    }

    /// A CRITICAL message.
    pub fn make_critical(&mut self, topic: Topic, payload: Payload, time_ms: i64) -> Envelope {
        self.make(topic, payload, time_ms)
            .with_priority(Priority::Critical)
    }
}

/// A symbol-free description of an agent for registries and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// Identity.
    pub id: AgentId,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Subscribed patterns.
    pub subscriptions: Vec<String>,
}

impl AgentInfo {
    /// Describes `agent`.
    pub fn of(agent: &dyn Agent) -> Self {
        Self {
            id: agent.id().clone(),
            capabilities: agent.capabilities(),
            subscriptions: agent
                .subscriptions()
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

impl fmt::Display for AgentInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.id, self.capabilities.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_follows_the_state_machine() {
        let mut l = Lifecycle::new(AgentId::new("a"));
        assert!(
            l.transition(AgentState::Running).is_err(),
            "must start first"
        );
        assert_eq!(l.transition(AgentState::Starting).unwrap(), None);
        assert!(matches!(
            l.transition(AgentState::Running).unwrap(),
            Some(Payload::AgentStarted(_))
        ));
        assert!(matches!(
            l.transition(AgentState::Paused).unwrap(),
            Some(Payload::AgentPaused(_))
        ));
        assert!(matches!(
            l.transition(AgentState::Running).unwrap(),
            Some(Payload::AgentResumed(_))
        ));
        assert!(l.transition(AgentState::Created).is_err());
        assert_eq!(l.transition(AgentState::Stopping).unwrap(), None);
        assert!(
            matches!(l.transition(AgentState::Stopped).unwrap(), Some(Payload::AgentStopped(t)) if t.from == AgentState::Stopping)
        );
        let error = l.transition(AgentState::Paused).unwrap_err();
        assert_eq!(
            (error.from, error.to),
            (AgentState::Stopped, AgentState::Paused)
        );
        assert!(
            l.transition(AgentState::Starting).is_ok(),
            "restart after stop"
        );
    }

    #[test]
    fn deterministic_factory_repeats_ids() {
        let topic = Topic::new("t").unwrap();
        let payload = Payload::SystemHealthCheck(Default::default());
        let mut a = MessageFactory::new(AgentId::new("x"), true);
        let mut b = MessageFactory::new(AgentId::new("x"), true);
        let (ea, eb) = (
            a.make(topic.clone(), payload.clone(), 5),
            b.make(topic.clone(), payload.clone(), 5),
        );
        assert_eq!(ea.id, eb.id);
        assert_eq!(ea.created_at_ms, 5);
        assert_ne!(a.make(topic.clone(), payload.clone(), 6).id, ea.id);
        let mut c = MessageFactory::new(AgentId::new("y"), true);
        assert_ne!(c.make(topic.clone(), payload.clone(), 5).id, ea.id);
        let mut d = MessageFactory::for_stream(AgentId::new("x"), "lifecycle", true);
        assert_ne!(
            d.make(topic, payload, 5).id,
            ea.id,
            "streams of one sender do not collide"
        );
    }
}
