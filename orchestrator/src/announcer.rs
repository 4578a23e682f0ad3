//! The orchestrator's voice on the bus: `system.startup` once every agent
//! of a run has started, `system.shutdown` before any of them stops.

use bus_core::model::payload::{Shutdown, Startup};
use bus_core::prelude::*;

/// The announcer's agent id.
pub const NAME: &str = "orchestrator";

/// Announces a run's start and end. Started last and so stopped first (a
/// run stops its agents in reverse start order): its startup comes when
/// the others are running, its shutdown while they still are.
pub struct Announcer {
    id: AgentId,
    agents: Vec<AgentId>,
    factory: MessageFactory,
}

impl Announcer {
    /// Announces a run of `agents` (in start order).
    pub fn new(agents: Vec<AgentId>, deterministic: bool) -> Self {
        let id = AgentId::new(NAME);
        Self {
            factory: MessageFactory::new(id.clone(), deterministic),
            id,
            agents,
        }
    }
}

impl Agent for Announcer {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        Vec::new()
    }

    fn on_start(&mut self, out: &mut Outbox) -> HandlerResult {
        let startup = Startup {
            version: env!("CARGO_PKG_VERSION").into(),
            agents: self.agents.clone(),
        };
        out.publish(self.factory.make(
            Topic::from_static("system.startup"),
            Payload::SystemStartup(startup),
            0,
        ));
        Ok(())
    }

    fn on_message(&mut self, _: &Envelope, _: &mut Outbox) -> HandlerResult {
        Ok(())
    }

    fn on_stop(&mut self, out: &mut Outbox) -> HandlerResult {
        let shutdown = Shutdown {
            reason: "the run is over".into(),
        };
        out.publish(self.factory.make_critical(
            Topic::from_static("system.shutdown"),
            Payload::SystemShutdown(shutdown),
            0,
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::agent::supervision::AgentSpec;
    use bus_core::runtime::run_inline;
    use bus_core::runtime::script::Recorder;

    /// Around two agents (a recorder and another), the startup comes after
    /// both started and the shutdown before either stopped.
    #[test]
    fn startup_after_every_start_and_shutdown_before_any_stop() {
        let (recorder, seen) = Recorder::new(&["system", "agent"]).unwrap();
        let (other, _) = Recorder::new(&["nothing"]).unwrap();
        struct Named(AgentId, Recorder);
        impl Agent for Named {
            fn id(&self) -> &AgentId {
                &self.0
            }
            fn subscriptions(&self) -> Vec<TopicPattern> {
                self.1.subscriptions()
            }
            fn on_message(&mut self, e: &Envelope, out: &mut Outbox) -> HandlerResult {
                self.1.on_message(e, out)
            }
        }
        let other = Named(AgentId::new("other"), other);
        let names = vec![AgentId::new("recorder"), AgentId::new("other")];
        let specs = vec![
            AgentSpec::new(Box::new(recorder)),
            AgentSpec::new(Box::new(other)),
            AgentSpec::new(Box::new(Announcer::new(names.clone(), true))),
        ];
        run_inline(specs).unwrap();
        let seen = seen.lock().unwrap();
        let events: Vec<String> = seen
            .iter()
            .map(|e| format!("{} {}", e.message_type().as_str(), e.sender))
            .filter(|e| !e.ends_with("orchestrator") || e.starts_with("system"))
            .collect();
        assert_eq!(
            events,
            vec![
                "agent.started recorder",
                "agent.started other",
                "system.startup orchestrator",
                "system.shutdown orchestrator",
                "agent.stopped other",
                "agent.stopped recorder",
            ],
            "{seen:#?}"
        );
        match seen[2].payload() {
            Payload::SystemStartup(s) => assert_eq!(s.agents, names),
            other => panic!("{other:?}"),
        }
    }
}
