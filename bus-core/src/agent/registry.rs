//! The agent registry: who is there, what they can do, what they need,
//! the order to start them in, and who has gone quiet.
//!
//! Start order is a topological sort of the dependencies, stable in
//! registration order; a cycle is an error that names the cycle. Liveness
//! comes from heartbeats: an agent whose last heartbeat is older than the
//! TTL it announced is unhealthy.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ids::AgentId;

/// What the registry knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Identity.
    pub id: AgentId,
    /// Capabilities (`market_data`, `signals`, `execution`, `risk`...).
    pub capabilities: Vec<String>,
    /// Agents that must start before this one.
    pub depends_on: Vec<AgentId>,
    /// (time of last heartbeat, its TTL), in ms.
    pub heartbeat: Option<(i64, u64)>,
}

/// Registry errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two agents with one name.
    #[error("agent {0} is registered twice")]
    Duplicate(AgentId),
    /// A dependency on an agent nobody registered.
    #[error("agent {agent} depends on {dependency}, which is not configured")]
    UnknownDependency {
        /// The dependent agent.
        agent: AgentId,
        /// The missing one.
        dependency: AgentId,
    },
    /// Dependencies that go round in a circle.
    #[error("dependency cycle: {}", cycle.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The agents on the cycle, first repeated at the end.
        cycle: Vec<AgentId>,
    },
}

/// The registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    agents: Vec<Registration>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent.
    pub fn register(
        &mut self,
        id: AgentId,
        capabilities: Vec<String>,
        depends_on: Vec<AgentId>,
    ) -> Result<(), RegistryError> {
        if self.get(&id).is_some() {
            return Err(RegistryError::Duplicate(id));
        }
        self.agents.push(Registration {
            id,
            capabilities,
            depends_on,
            heartbeat: None,
        });
        Ok(())
    }

    /// One agent's registration.
    pub fn get(&self, id: &AgentId) -> Option<&Registration> {
        self.agents.iter().find(|a| &a.id == id)
    }

    /// Agents offering `capability`, in registration order.
    pub fn with_capability(&self, capability: &str) -> Vec<&AgentId> {
        self.agents
            .iter()
            .filter(|a| a.capabilities.iter().any(|c| c == capability))
            .map(|a| &a.id)
            .collect()
    }

    /// Every agent after all it depends on; ties keep registration order.
    pub fn start_order(&self) -> Result<Vec<AgentId>, RegistryError> {
        for agent in &self.agents {
            for dependency in &agent.depends_on {
                if self.get(dependency).is_none() {
                    return Err(RegistryError::UnknownDependency {
                        agent: agent.id.clone(),
                        dependency: dependency.clone(),
                    });
                }
            }
        }
        let mut started: BTreeSet<&AgentId> = BTreeSet::new();
        let mut order = Vec::with_capacity(self.agents.len());
        while order.len() < self.agents.len() {
            let next = self.agents.iter().find(|a| {
                !started.contains(&a.id) && a.depends_on.iter().all(|d| started.contains(d))
            });
            match next {
                Some(agent) => {
                    started.insert(&agent.id);
                    order.push(agent.id.clone());
                }
                None => {
                    return Err(RegistryError::Cycle {
                        cycle: self.find_cycle(&started),
                    })
                }
            }
        }
        Ok(order)
    }

    /// Walks unmet dependencies from a blocked agent until one repeats.
    fn find_cycle(&self, started: &BTreeSet<&AgentId>) -> Vec<AgentId> {
        let Some(mut current) = self.agents.iter().find(|a| !started.contains(&a.id)) else {
            return Vec::new();
        };
        let mut path: Vec<AgentId> = Vec::new();
        loop {
            if let Some(at) = path.iter().position(|a| a == &current.id) {
                let mut cycle = path[at..].to_vec();
                cycle.push(current.id.clone());
                return cycle;
            }
            path.push(current.id.clone());
            let blocker = current
                .depends_on
                .iter()
                .find(|d| !started.contains(d))
                .and_then(|d| self.get(d));
            match blocker {
                Some(next) => current = next,
                None => return path,
            }
        }
    }

    /// Records a heartbeat.
    pub fn heartbeat(&mut self, id: &AgentId, at_ms: i64, ttl_ms: u64) {
        if let Some(agent) = self.agents.iter_mut().find(|a| &a.id == id) {
            agent.heartbeat = Some((at_ms, ttl_ms));
        }
    }

    /// Agents with no heartbeat, or whose last one expired by `now_ms`.
    pub fn unhealthy(&self, now_ms: i64) -> Vec<&AgentId> {
        self.agents
            .iter()
            .filter(|a| match a.heartbeat {
                None => true,
                Some((at, ttl)) => at.saturating_add(ttl as i64) < now_ms,
            })
            .map(|a| &a.id)
            .collect()
    }

    /// Capabilities by agent, for reports.
    pub fn capabilities(&self) -> BTreeMap<String, Vec<String>> {
        self.agents
            .iter()
            .map(|a| (a.id.to_string(), a.capabilities.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<AgentId> {
        names.iter().map(AgentId::new).collect()
    }

    fn registry(edges: &[(&str, &[&str])]) -> Registry {
        let mut r = Registry::new();
        for (name, deps) in edges {
            r.register(AgentId::new(name), vec![format!("cap-{name}")], ids(deps))
                .unwrap();
        }
        r
    }

    #[test]
    fn start_order_respects_dependencies_and_registration_order() {
        let r = registry(&[
            ("report", &[]),
            ("trader", &["signals", "risk"]),
            ("risk", &[]),
            ("signals", &["collector"]),
            ("collector", &[]),
        ]);
        assert_eq!(
            r.start_order().unwrap(),
            ids(&["report", "risk", "collector", "signals", "trader"])
        );
        assert_eq!(r.with_capability("cap-risk"), vec![&AgentId::new("risk")]);
    }

    #[test]
    fn a_cycle_is_named() {
        let r = registry(&[("a", &[]), ("b", &["c"]), ("c", &["d"]), ("d", &["b"])]);
        let error = r.start_order().unwrap_err();
        assert_eq!(
            error,
            RegistryError::Cycle {
                cycle: ids(&["b", "c", "d", "b"])
            }
        );
        assert_eq!(error.to_string(), "dependency cycle: b -> c -> d -> b");
    }

    #[test]
    fn unknown_dependency_and_duplicates() {
        let r = registry(&[("a", &["ghost"])]);
        assert!(matches!(
            r.start_order(),
            Err(RegistryError::UnknownDependency { .. })
        ));
        let mut r = registry(&[("a", &[])]);
        assert_eq!(
            r.register(AgentId::new("a"), vec![], vec![]),
            Err(RegistryError::Duplicate(AgentId::new("a")))
        );
    }

    #[test]
    fn heartbeats_expire_after_their_ttl() {
        let mut r = registry(&[("a", &[]), ("b", &[])]);
        assert_eq!(r.unhealthy(0).len(), 2);
        r.heartbeat(&AgentId::new("a"), 1000, 500);
        r.heartbeat(&AgentId::new("b"), 1000, 5000);
        assert!(r.unhealthy(1400).is_empty());
        assert_eq!(r.unhealthy(1501), vec![&AgentId::new("a")]);
    }
}
