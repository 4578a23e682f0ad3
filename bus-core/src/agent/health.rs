//! Liveness on the queued bus: every interval the monitor publishes
//! `system.health_check`; each agent's answer (`agent.health_update`) is its
//! heartbeat. An agent is answered for by its supervisor only when it is
//! not busy inside a handler, so an agent stuck in a handler stops
//! heartbeating and, once its TTL runs out, is marked unhealthy in the
//! [`Registry`] and logged.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::registry::Registry;
use crate::bus::handler::Handler;
use crate::bus::{MessageBus, SubscribeError, SubscribeOptions};
use crate::model::ids::{AgentId, SubscriptionId};
use crate::model::payload::HealthCheck;
use crate::model::topic::Topic;
use crate::model::{now_ms, Envelope, Payload};

/// How often to check, and how long an answer vouches for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// Time between health checks.
    pub interval: Duration,
    /// An agent that has not answered for this long is unhealthy.
    pub ttl: Duration,
}

/// The running monitor.
pub struct HealthMonitor {
    bus: MessageBus,
    subscription: SubscriptionId,
    task: tokio::task::JoinHandle<()>,
    unhealthy: Arc<Mutex<BTreeSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HealthMonitor {
    /// Starts watching `agents` on `bus`.
    pub fn start(
        bus: &MessageBus,
        agents: Vec<(AgentId, Vec<String>)>,
        settings: HealthCheckSettings,
    ) -> Result<Self, SubscribeError> {
        let ttl_ms = settings.ttl.as_millis() as u64;
        let mut registry = Registry::new();
        let started = now_ms();
        for (id, capabilities) in agents {
            // Duplicates cannot happen: agent ids are unique in a run.
            let _ = registry.register(id.clone(), capabilities, Vec::new());
            registry.heartbeat(&id, started, ttl_ms);
        }
        let registry = Arc::new(Mutex::new(registry));
        let heartbeats = registry.clone();
        let subscription = bus.subscribe(
            "agent.health_update",
            Handler::from_async(move |e: Arc<Envelope>| {
                if let Payload::AgentHealthUpdate(health) = e.payload() {
                    if health.healthy {
                        lock(&heartbeats).heartbeat(&health.agent, now_ms(), ttl_ms);
                    }
                }
                async { Ok(()) }
            }),
            SubscribeOptions::named("health monitor"),
        )?;
        let unhealthy = Arc::new(Mutex::new(BTreeSet::new()));
        let (seen, check_bus) = (unhealthy.clone(), bus.clone());
        let task = tokio::spawn(async move {
            let topic = Topic::from_static("system.health_check");
            let monitor = AgentId::new("supervisor");
            loop {
                tokio::time::sleep(settings.interval).await;
                let check = Envelope::new(
                    monitor.clone(),
                    topic.clone(),
                    Payload::SystemHealthCheck(HealthCheck {}),
                );
                if check_bus.publish(check).await.is_err() {
                    return;
                }
                let late: Vec<String> = lock(&registry)
                    .unhealthy(now_ms())
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                for agent in late {
                    if lock(&seen).insert(agent.clone()) {
                        tracing::warn!(%agent, ttl = ?settings.ttl, "agent missed its heartbeat: unhealthy");
                    }
                }
            }
        });
        Ok(Self {
            bus: bus.clone(),
            subscription,
            task,
            unhealthy,
        })
    }

    /// Stops the monitor; returns the agents that were unhealthy at some point.
    pub fn stop(self) -> Vec<String> {
        self.task.abort();
        self.bus.unsubscribe(self.subscription);
        let seen = lock(&self.unhealthy).iter().cloned().collect();
        seen
    }
}
