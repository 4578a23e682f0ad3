//! Scripted runs: test one agent alone on a real (inline) bus by feeding it
//! a fixed list of messages and recording what comes out.
//!
//! ```
//! # use bus_core::prelude::*;
//! # use bus_core::runtime::script::run_script;
//! # struct Echo(AgentId);
//! # impl Agent for Echo {
//! #     fn id(&self) -> &AgentId { &self.0 }
//! #     fn subscriptions(&self) -> Vec<TopicPattern> { vec![TopicPattern::new("in").unwrap()] }
//! #     fn on_message(&mut self, e: &Envelope, out: &mut Outbox) -> HandlerResult {
//! #         out.publish(Envelope::new(self.0.clone(), Topic::new("out").unwrap(), e.payload().clone()));
//! #         Ok(())
//! #     }
//! # }
//! let input = Envelope::new(AgentId::new("test"), Topic::new("in").unwrap(),
//!     Payload::SystemShutdown(bus_core::model::payload::Shutdown { reason: "test".into() }));
//! let seen = run_script(Box::new(Echo(AgentId::new("echo"))), vec![input], &["out"]).unwrap();
//! assert_eq!(seen.len(), 1);
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::agent::supervision::AgentSpec;
use crate::agent::{Agent, Produce};
use crate::bus::error::HandlerResult;
use crate::bus::Outbox;
use crate::model::ids::AgentId;
use crate::model::topic::TopicPattern;
use crate::model::Envelope;
use crate::runtime::driver::{run_inline, RunError};

/// A source that publishes its messages one per step, in order.
pub struct ScriptedSource {
    id: AgentId,
    messages: VecDeque<Envelope>,
}

impl ScriptedSource {
    /// A source named `script` for `messages`.
    pub fn new(messages: Vec<Envelope>) -> Self {
        Self {
            id: AgentId::new("script"),
            messages: messages.into(),
        }
    }
}

impl Agent for ScriptedSource {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        Vec::new()
    }

    fn on_message(&mut self, _: &Envelope, _: &mut Outbox) -> HandlerResult {
        Ok(())
    }

    fn produce(&mut self, out: &mut Outbox) -> Produce {
        match self.messages.pop_front() {
            Some(message) => {
                out.publish(message);
                Produce::More
            }
            None => Produce::Done,
        }
    }
}

/// The messages a [`Recorder`] saw, shared with the test.
pub type Recording = Arc<Mutex<Vec<Envelope>>>;

/// Records every message on its patterns.
pub struct Recorder {
    id: AgentId,
    patterns: Vec<TopicPattern>,
    seen: Recording,
}

impl Recorder {
    /// A recorder of `patterns`, and the list it fills.
    pub fn new(patterns: &[&str]) -> Result<(Self, Recording), crate::model::error::TopicError> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let patterns = patterns
            .iter()
            .map(TopicPattern::new)
            .collect::<Result<_, _>>()?;
        Ok((
            Self {
                id: AgentId::new("recorder"),
                patterns,
                seen: seen.clone(),
            },
            seen,
        ))
    }
}

impl Agent for Recorder {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        self.patterns.clone()
    }

    fn on_message(&mut self, envelope: &Envelope, _: &mut Outbox) -> HandlerResult {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(envelope.clone());
        Ok(())
    }
}

/// Runs `agent` alone on an inline bus, feeding it `script`, and returns
/// every message published on `record` patterns (inputs included, if they
/// match), in delivery order.
pub fn run_script(
    agent: Box<dyn Agent>,
    script: Vec<Envelope>,
    record: &[&str],
) -> Result<Vec<Envelope>, RunError> {
    run_script_with(vec![agent], script, record)
}

/// [`run_script`] with several agents (the one under test and the stand-ins
/// it talks to), started in the given order.
pub fn run_script_with(
    agents: Vec<Box<dyn Agent>>,
    script: Vec<Envelope>,
    record: &[&str],
) -> Result<Vec<Envelope>, RunError> {
    let (recorder, seen) = Recorder::new(record).map_err(|e| RunError::Subscribe {
        agent: "recorder".into(),
        error: e.into(),
    })?;
    let mut specs = vec![AgentSpec::new(Box::new(recorder))];
    specs.extend(agents.into_iter().map(AgentSpec::new));
    specs.push(AgentSpec::new(Box::new(ScriptedSource::new(script))));
    run_inline(specs)?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(seen)
}
