//! Drivers: run a set of supervised agents on a bus until their sources
//! are done.
//!
//! * [`run_inline`] uses the [`InlineBus`]: one thread, deterministic, as
//!   fast as the CPU allows (backtests).
//! * [`run_queued`] uses the [`MessageBus`]: every agent gets its own
//!   subscription, queue and thread, sources run on threads of their own,
//!   and publishing waits for room rather than dropping (`bistoury run`).
//!
//! Both start agents in the given order (the orchestrator passes the
//! registry's dependency order), announce each lifecycle transition with an
//! `agent.*` message on `agent.<event>.<agent id>`, apply each agent's
//! [`RestartPolicy`](crate::agent::supervision::RestartPolicy) when it panics, and
//! stop agents in reverse order.

use std::cell::RefCell;
use std::rc::Rc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::health::{HealthCheckSettings, HealthMonitor};
use crate::agent::supervision::{AgentSpec, Supervised};
use crate::agent::{Agent, Produce};
use crate::bus::error::{HandlerError, HandlerResult, PublishError};
use crate::bus::handler::Handler;
use crate::bus::inline::{InlineBus, InlineStats};
use crate::bus::stats::BusStats;
use crate::bus::Outbox;
use crate::bus::{MessageBus, OverflowPolicy, SubscribeError, SubscribeOptions};
use crate::model::ids::AgentId;
use crate::runtime::StopSignal;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An agent refused to start.
    #[error("agent {agent} failed to start: {error}")]
    StartFailed {
        /// The agent.
        agent: AgentId,
        /// Its error.
        #[source]
        error: HandlerError,
    },
    /// An agent failed and its policy is to stop the run.
    #[error("{0}; the run was stopped (restart policy)")]
    AgentFailed(String),
    /// An agent subscription was refused.
    #[error("agent {agent}: {error}")]
    Subscribe {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        error: SubscribeError,
    },
    /// An agent was still held by a consumer long after shutdown.
    #[error("agent {agent} did not come back after shutdown")]
    AgentStuck {
        /// The agent.
        agent: AgentId,
    },
    /// Publishing failed where nothing may be lost.
    #[error("publishing for agent {agent} failed: {error}")]
    Publish {
        /// The agent.
        agent: AgentId,
        /// Why.
        #[source]
        error: PublishError,
    },
}

pub(crate) fn health_check_pattern() -> crate::model::topic::TopicPattern {
    crate::model::topic::TopicPattern::from_static("system.health_check")
}

/// What a run leaves behind.
pub struct Finished {
    /// The agents, stopped, in start order (for reports).
    pub agents: Vec<Box<dyn Agent>>,
    /// Restarts per agent, in start order.
    pub restarts: Vec<u32>,
    /// Messages published.
    pub published: u64,
}

/// What an inline run leaves behind.
pub struct InlineRun {
    /// Agents and restarts.
    pub finished: Finished,
    /// Bus counters.
    pub stats: InlineStats,
}

fn finish(supervised: Vec<Supervised>, published: u64) -> Result<Finished, RunError> {
    if let Some(failure) = supervised.iter().find_map(|s| s.failure()) {
        return Err(RunError::AgentFailed(failure.to_string()));
    }
    let restarts = supervised.iter().map(Supervised::restarts).collect();
    Ok(Finished {
        agents: supervised.into_iter().map(Supervised::into_agent).collect(),
        restarts,
        published,
    })
}

/// Runs `agents` on an inline bus until every source is done.
pub fn run_inline(agents: Vec<AgentSpec>) -> Result<InlineRun, RunError> {
    run_inline_until(agents, &StopSignal::new())
}

/// [`run_inline`], ending early (gracefully) when `stop` is raised.
pub fn run_inline_until(agents: Vec<AgentSpec>, stop: &StopSignal) -> Result<InlineRun, RunError> {
    let mut bus = InlineBus::new();
    let shared: Vec<Rc<RefCell<Supervised>>> = agents
        .into_iter()
        .map(|spec| Rc::new(RefCell::new(Supervised::new(spec, true))))
        .collect();
    for agent in &shared {
        let (id, mut patterns) = {
            let a = agent.borrow();
            (a.id().to_string(), a.agent().subscriptions())
        };
        patterns.push(health_check_pattern());
        for pattern in patterns {
            let target = agent.clone();
            bus.subscribe(&id, pattern.as_str(), None, move |e, out| {
                target.borrow_mut().deliver(e, out)
            })
            .map_err(|e| RunError::Subscribe {
                agent: AgentId::new(id.as_str()),
                error: e.into(),
            })?;
        }
    }
    let mut out = Outbox::new();
    for agent in &shared {
        let started = agent.borrow_mut().start(&mut out);
        bus.publish_all(&mut out);
        if let Err(error) = started {
            return Err(RunError::StartFailed {
                agent: agent.borrow().id().clone(),
                error,
            });
        }
    }
    let failed =
        |agents: &[Rc<RefCell<Supervised>>]| agents.iter().any(|a| a.borrow().failure().is_some());
    let mut live: Vec<usize> = (0..shared.len()).collect();
    while !live.is_empty() && !failed(&shared) && !stop.is_stopped() {
        live.retain(|&i| {
            let step = shared[i].borrow_mut().produce(&mut out);
            bus.publish_all(&mut out);
            step != Produce::Done
        });
    }
    for agent in shared.iter().rev() {
        agent.borrow_mut().stop(&mut out);
        bus.publish_all(&mut out);
    }
    let stats = bus.stats();
    drop(bus);
    let supervised: Vec<Supervised> = shared
        .into_iter()
        .map(|rc| match Rc::try_unwrap(rc) {
            Ok(cell) => cell.into_inner(),
            Err(_) => unreachable!("the bus, the only other owner, is gone"),
        })
        .collect();
    Ok(InlineRun {
        finished: finish(supervised, stats.published)?,
        stats,
    })
}

/// What a queued run leaves behind.
pub struct QueuedRun {
    /// Agents and restarts.
    pub finished: Finished,
    /// Bus figures after shutdown.
    pub stats: BusStats,
    /// Agents that missed a heartbeat at some point (health checks on).
    pub unhealthy: Vec<String>,
}

type SharedAgent = Arc<Mutex<Supervised>>;

fn lock(agent: &SharedAgent) -> std::sync::MutexGuard<'_, Supervised> {
    agent.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes from a plain thread, waiting for room (never dropping).
fn publish_blocking(bus: &MessageBus, agent: &str, out: &mut Outbox) -> Result<(), RunError> {
    for message in out.drain() {
        bus.publish_blocking(message)
            .map_err(|error| RunError::Publish {
                agent: AgentId::new(agent),
                error,
            })?;
    }
    Ok(())
}

async fn publish_queued(bus: &MessageBus, agent: &str, out: &mut Outbox) -> Result<(), RunError> {
    for message in out.drain() {
        bus.publish(message)
            .await
            .map_err(|error| RunError::Publish {
                agent: AgentId::new(agent),
                error,
            })?;
    }
    Ok(())
}

/// How a queued run goes, beyond its agents.
#[derive(Debug, Clone, Default)]
pub struct QueuedOptions {
    /// Ask every agent for its health this often; those that do not answer
    /// in time are reported unhealthy.
    pub health: Option<HealthCheckSettings>,
    /// Sources wait for the bus to be quiet (every message handled,
    /// everything that caused handled too) before each step. A step of
    /// market data is then fully worked through — signals, orders, risk
    /// checks, fills, a risk stop — before the next one is published, as in
    /// a backtest, while the agents still run on their own threads.
    /// Without it a fast source runs ahead of its consumers, and feedback
    /// such as an emergency stop lands late.
    pub lockstep: bool,
}

/// Waits until the bus is quiet or `abort` is raised.
fn wait_until_quiet(bus: &MessageBus, abort: &StopSignal) {
    let mut looks = 0u32;
    while !bus.is_quiet() && !abort.is_stopped() {
        looks += 1;
        if looks < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// Waits until no message is queued or being handled, twice in a row.
async fn settle(bus: &MessageBus) {
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if bus.is_quiet() {
            quiet += 1;
        } else {
            quiet = 0;
        }
    }
}

/// Runs `agents` on the queued bus until every source is done and every
/// queue has drained, then stops them and shuts the bus down.
pub async fn run_queued(
    bus: MessageBus,
    agents: Vec<AgentSpec>,
    shutdown_deadline: Duration,
) -> Result<QueuedRun, RunError> {
    let options = QueuedOptions::default();
    run_queued_until(bus, agents, shutdown_deadline, StopSignal::new(), options).await
}

/// [`run_queued`], ending early (gracefully) when `stop` is raised: sources
/// stop, queues drain, agents stop, the bus shuts down.
pub async fn run_queued_until(
    bus: MessageBus,
    agents: Vec<AgentSpec>,
    shutdown_deadline: Duration,
    stop: StopSignal,
    options: QueuedOptions,
) -> Result<QueuedRun, RunError> {
    let QueuedOptions { health, lockstep } = options;
    // Raised by a failing agent (policy `shutdown`) or by the caller.
    let abort = stop.clone();
    let shared: Vec<SharedAgent> = agents
        .into_iter()
        .map(|spec| Arc::new(Mutex::new(Supervised::new(spec, false))))
        .collect();
    for agent in &shared {
        let (id, patterns) = {
            let a = lock(agent);
            (a.id().to_string(), a.agent().subscriptions())
        };
        // Health checks get their own small subscription so the agent's
        // messages keep one queue with one pattern where possible.
        let health_target = agent.clone();
        let (health_bus, health_name) = (bus.clone(), id.clone());
        bus.subscribe(
            health_check_pattern().as_str(),
            Handler::blocking(move |e| {
                let mut out = Outbox::new();
                let result = lock(&health_target).deliver(e, &mut out);
                publish_blocking(&health_bus, &health_name, &mut out).map_err(HandlerError::new)?;
                result
            }),
            SubscribeOptions::named(format!("{id} health")),
        )
        .map_err(|e| RunError::Subscribe {
            agent: AgentId::new(id.as_str()),
            error: e,
        })?;
        if patterns.is_empty() {
            continue;
        }
        // One subscription per agent keeps its messages in one FIFO queue.
        let patterns: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
        let (target, bus_for_handler, name, abort) =
            (agent.clone(), bus.clone(), id.clone(), abort.clone());
        let handler = Handler::blocking(move |e| -> HandlerResult {
            let mut out = Outbox::new();
            let (result, backoff, failed) = {
                let mut supervised = lock(&target);
                let result = supervised.deliver(e, &mut out);
                (
                    result,
                    supervised.pending_backoff.take(),
                    supervised.failure().is_some(),
                )
            };
            if failed {
                abort.stop();
            }
            publish_blocking(&bus_for_handler, &name, &mut out).map_err(HandlerError::new)?;
            if let Some(wait) = backoff {
                // Only this agent's queue waits; the others carry on.
                std::thread::sleep(wait);
            }
            result
        });
        let options = SubscribeOptions::named(id.clone()).with_overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(3600),
        });
        bus.subscribe_many(&patterns, handler, options)
            .map_err(|e| RunError::Subscribe {
                agent: AgentId::new(id.as_str()),
                error: e,
            })?;
    }
    for agent in &shared {
        let mut out = Outbox::new();
        let (id, started) = {
            let mut a = lock(agent);
            (a.id().to_string(), a.start(&mut out))
        };
        publish_queued(&bus, &id, &mut out).await?;
        started.map_err(|error| RunError::StartFailed {
            agent: AgentId::new(id),
            error,
        })?;
    }
    let monitor = match health {
        Some(settings) => {
            let agents = shared
                .iter()
                .map(|a| {
                    let a = lock(a);
                    (a.id().clone(), a.agent().capabilities())
                })
                .collect();
            Some(
                HealthMonitor::start(&bus, agents, settings).map_err(|e| RunError::Subscribe {
                    agent: "health monitor".into(),
                    error: e,
                })?,
            )
        }
        None => None,
    };
    let mut sources = Vec::new();
    for agent in &shared {
        let (target, bus, abort) = (agent.clone(), bus.clone(), abort.clone());
        let id = lock(agent).id().to_string();
        sources.push(tokio::task::spawn_blocking(
            move || -> Result<(), RunError> {
                let mut out = Outbox::new();
                loop {
                    if lockstep {
                        wait_until_quiet(&bus, &abort);
                    }
                    if abort.is_stopped() {
                        return Ok(());
                    }
                    let (step, backoff) = {
                        let mut supervised = lock(&target);
                        let step = supervised.produce(&mut out);
                        if supervised.failure().is_some() {
                            abort.stop();
                        }
                        (step, supervised.pending_backoff.take())
                    };
                    publish_blocking(&bus, &id, &mut out)?;
                    if let Some(wait) = backoff {
                        std::thread::sleep(wait);
                    }
                    match step {
                        Produce::Done => return Ok(()),
                        Produce::Idle => std::thread::sleep(Duration::from_millis(1)),
                        Produce::More => {}
                    }
                }
            },
        ));
    }
    for source in sources {
        source.await.expect("source thread panicked")?;
    }
    settle(&bus).await;
    for agent in shared.iter().rev() {
        let mut out = Outbox::new();
        let id = {
            let mut a = lock(agent);
            a.stop(&mut out);
            a.id().to_string()
        };
        publish_queued(&bus, &id, &mut out).await?;
        settle(&bus).await;
    }
    let unhealthy = monitor.map(HealthMonitor::stop).unwrap_or_default();
    let report = bus.shutdown(shutdown_deadline).await;
    let mut supervised = Vec::with_capacity(shared.len());
    for mut arc in shared {
        // A consumer thread may hold its clone for a moment after shutdown.
        let give_up = std::time::Instant::now() + shutdown_deadline + Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(arc) {
                Ok(mutex) => {
                    supervised.push(mutex.into_inner().unwrap_or_else(|p| p.into_inner()));
                    break;
                }
                Err(back) if std::time::Instant::now() < give_up => {
                    arc = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(back) => {
                    return Err(RunError::AgentStuck {
                        agent: lock(&back).id().clone(),
                    })
                }
            }
        }
    }
    Ok(QueuedRun {
        finished: finish(supervised, report.stats.published)?,
        stats: report.stats,
        unhealthy,
    })
}
