//! Drivers: run a set of [`Agent`]s on a bus until their sources are done.
//!
//! * [`run_inline`] uses the [`InlineBus`]: one thread, deterministic, as
//!   fast as the CPU allows (backtests).
//! * [`run_queued`] uses the [`MessageBus`]: every agent gets its own
//!   subscription, queue and thread, sources run on threads of their own,
//!   and publishing waits for room rather than dropping (`bistoury run`).
//!
//! Both start agents in the given order (the orchestrator passes a
//! dependency order), announce each lifecycle transition with an `agent.*`
//! message on `agent.<event>.<agent id>`, and stop agents in reverse order.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::{Agent, Lifecycle, MessageFactory, Produce};
use crate::bus::{MessageBus, OverflowPolicy, SubscribeOptions};
use crate::error::{HandlerError, HandlerResult, PublishError};
use crate::filter::Filter;
use crate::handler::Handler;
use crate::inline::{InlineBus, InlineStats, Outbox};
use crate::message::payload::AgentState;
use crate::message::Envelope;
use crate::stats::BusStats;
use crate::topic::Topic;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An agent refused to start.
    #[error("agent {agent} failed to start: {error}")]
    StartFailed {
        /// The agent.
        agent: String,
        /// Its error.
        error: HandlerError,
    },
    /// An agent subscription was refused.
    #[error("agent {agent}: {error}")]
    Subscribe {
        /// The agent.
        agent: String,
        /// Why.
        error: String,
    },
    /// An agent was still held by a consumer long after shutdown.
    #[error("agent {agent} did not come back after shutdown")]
    AgentStuck {
        /// The agent.
        agent: String,
    },
    /// Publishing failed where nothing may be lost.
    #[error("publishing for agent {agent} failed: {error}")]
    Publish {
        /// The agent.
        agent: String,
        /// Why.
        error: PublishError,
    },
}

fn lifecycle_messages(
    lifecycle: &mut Lifecycle,
    factory: &mut MessageFactory,
    states: &[AgentState],
    time_ms: i64,
    out: &mut Outbox,
) {
    for state in states {
        match lifecycle.transition(*state) {
            Ok(Some(payload)) => {
                let event = payload.message_type().as_str().trim_start_matches("agent.");
                let topic = Topic::new(format!("agent.{event}.{}", factory.sender()))
                    .or_else(|_| Topic::new(format!("agent.{event}")))
                    .expect("agent.<event> is a valid topic");
                out.publish(factory.make(topic, payload, time_ms));
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "lifecycle"),
        }
    }
}

/// What an inline run leaves behind.
pub struct InlineRun {
    /// The agents, stopped, in start order (for reports).
    pub agents: Vec<Box<dyn Agent>>,
    /// Bus counters.
    pub stats: InlineStats,
}

/// Runs `agents` on an inline bus until every source is done.
/// `observers` are extra handlers (reports, logs) subscribed before the agents.
pub fn run_inline(
    agents: Vec<Box<dyn Agent>>,
    observers: Vec<(String, String, crate::inline::InlineHandler)>,
) -> Result<InlineRun, RunError> {
    let mut bus = InlineBus::new();
    for (name, pattern, handler) in observers {
        bus.subscribe(&name, &pattern, None, handler)
            .map_err(|e| RunError::Subscribe {
                agent: name.clone(),
                error: e.to_string(),
            })?;
    }
    let shared: Vec<Rc<RefCell<Box<dyn Agent>>>> = agents
        .into_iter()
        .map(|a| Rc::new(RefCell::new(a)))
        .collect();
    for agent in &shared {
        let (id, patterns) = {
            let a = agent.borrow();
            (a.id().to_string(), a.subscriptions())
        };
        for pattern in patterns {
            let target = agent.clone();
            bus.subscribe(&id, pattern.as_str(), None, move |e, out| {
                target.borrow_mut().on_message(e, out)
            })
            .map_err(|e| RunError::Subscribe {
                agent: id.clone(),
                error: e.to_string(),
            })?;
        }
    }
    let mut lifecycles: Vec<(Lifecycle, MessageFactory)> = shared
        .iter()
        .map(|a| {
            let id = a.borrow().id().clone();
            (Lifecycle::new(id.clone()), MessageFactory::new(id, true))
        })
        .collect();
    let mut out = Outbox::new();
    for (agent, (lifecycle, factory)) in shared.iter().zip(&mut lifecycles) {
        lifecycle_messages(lifecycle, factory, &[AgentState::Starting], 0, &mut out);
        let started = agent.borrow_mut().on_start(&mut out);
        if let Err(error) = started {
            return Err(RunError::StartFailed {
                agent: agent.borrow().id().to_string(),
                error,
            });
        }
        lifecycle_messages(lifecycle, factory, &[AgentState::Running], 0, &mut out);
        publish_all(&mut bus, &mut out);
    }
    let mut live: Vec<usize> = (0..shared.len()).collect();
    while !live.is_empty() {
        live.retain(|&i| {
            let step = shared[i].borrow_mut().produce(&mut out);
            publish_all(&mut bus, &mut out);
            step != Produce::Done
        });
    }
    for (agent, (lifecycle, factory)) in shared.iter().zip(&mut lifecycles).rev() {
        lifecycle_messages(lifecycle, factory, &[AgentState::Stopping], 0, &mut out);
        if let Err(error) = agent.borrow_mut().on_stop(&mut out) {
            tracing::warn!(agent = %agent.borrow().id(), %error, "stop failed");
        }
        lifecycle_messages(lifecycle, factory, &[AgentState::Stopped], 0, &mut out);
        publish_all(&mut bus, &mut out);
    }
    let stats = bus.stats();
    drop(bus);
    let agents = shared
        .into_iter()
        .map(|rc| match Rc::try_unwrap(rc) {
            Ok(cell) => cell.into_inner(),
            Err(_) => unreachable!("the bus, the only other owner, is gone"),
        })
        .collect();
    Ok(InlineRun { agents, stats })
}

fn publish_all(bus: &mut InlineBus, out: &mut Outbox) {
    let messages: Vec<Envelope> = out.drain().collect();
    for message in &messages {
        bus.publish(message);
    }
}

/// What a queued run leaves behind.
pub struct QueuedRun {
    /// The agents, stopped, in start order.
    pub agents: Vec<Box<dyn Agent>>,
    /// Bus figures after shutdown.
    pub stats: BusStats,
}

type SharedAgent = Arc<Mutex<Box<dyn Agent>>>;

fn lock(agent: &SharedAgent) -> std::sync::MutexGuard<'_, Box<dyn Agent>> {
    agent.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes from a plain thread, waiting for room (never dropping).
fn publish_blocking(
    runtime: &tokio::runtime::Handle,
    bus: &MessageBus,
    agent: &str,
    out: &mut Outbox,
) -> Result<(), RunError> {
    for message in out.drain() {
        runtime
            .block_on(bus.publish(message))
            .map_err(|error| RunError::Publish {
                agent: agent.to_string(),
                error,
            })?;
    }
    Ok(())
}

/// Waits until no message is queued or being handled, twice in a row.
async fn settle(bus: &MessageBus) {
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if bus.stats().in_flight == 0 {
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
    agents: Vec<Box<dyn Agent>>,
    shutdown_deadline: Duration,
) -> Result<QueuedRun, RunError> {
    let runtime = tokio::runtime::Handle::current();
    let shared: Vec<SharedAgent> = agents
        .into_iter()
        .map(|a| Arc::new(Mutex::new(a)))
        .collect();
    for agent in &shared {
        let (id, patterns) = {
            let a = lock(agent);
            (a.id().to_string(), a.subscriptions())
        };
        if patterns.is_empty() {
            continue;
        }
        // One subscription per agent keeps its messages in one FIFO queue.
        let (pattern, filter) = match patterns.as_slice() {
            [one] => (one.to_string(), None),
            many => (
                ">".to_string(),
                Some(Filter::Any(
                    many.iter().cloned().map(Filter::Topic).collect(),
                )),
            ),
        };
        let (target, bus_for_handler, rt, name) =
            (agent.clone(), bus.clone(), runtime.clone(), id.clone());
        let handler = Handler::blocking(move |e| -> HandlerResult {
            let mut out = Outbox::new();
            let result = lock(&target).on_message(e, &mut out);
            publish_blocking(&rt, &bus_for_handler, &name, &mut out).map_err(HandlerError::new)?;
            result
        });
        let mut options =
            SubscribeOptions::named(id.clone()).with_overflow(OverflowPolicy::Block {
                timeout: Duration::from_secs(3600),
            });
        options.filter = filter;
        bus.subscribe(&pattern, handler, options)
            .map_err(|e| RunError::Subscribe {
                agent: id.clone(),
                error: e.to_string(),
            })?;
    }
    let mut lifecycles: Vec<(Lifecycle, MessageFactory)> = shared
        .iter()
        .map(|a| {
            let id = lock(a).id().clone();
            (Lifecycle::new(id.clone()), MessageFactory::new(id, false))
        })
        .collect();
    let now = crate::message::now_ms();
    for (agent, (lifecycle, factory)) in shared.iter().zip(&mut lifecycles) {
        let mut out = Outbox::new();
        lifecycle_messages(lifecycle, factory, &[AgentState::Starting], now, &mut out);
        let id = lock(agent).id().to_string();
        lock(agent)
            .on_start(&mut out)
            .map_err(|error| RunError::StartFailed {
                agent: id.clone(),
                error,
            })?;
        lifecycle_messages(lifecycle, factory, &[AgentState::Running], now, &mut out);
        publish_out(&bus, &id, &mut out).await?;
    }
    let mut sources = Vec::new();
    for agent in &shared {
        let (target, bus, rt) = (agent.clone(), bus.clone(), runtime.clone());
        let id = lock(agent).id().to_string();
        sources.push(tokio::task::spawn_blocking(
            move || -> Result<(), RunError> {
                let mut out = Outbox::new();
                loop {
                    let step = lock(&target).produce(&mut out);
                    publish_blocking(&rt, &bus, &id, &mut out)?;
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
    for (agent, (lifecycle, factory)) in shared.iter().zip(&mut lifecycles).rev() {
        let mut out = Outbox::new();
        let now = crate::message::now_ms();
        lifecycle_messages(lifecycle, factory, &[AgentState::Stopping], now, &mut out);
        let id = lock(agent).id().to_string();
        if let Err(error) = lock(agent).on_stop(&mut out) {
            tracing::warn!(agent = %id, %error, "stop failed");
        }
        lifecycle_messages(lifecycle, factory, &[AgentState::Stopped], now, &mut out);
        publish_out(&bus, &id, &mut out).await?;
        settle(&bus).await;
    }
    let report = bus.shutdown(shutdown_deadline).await;
    let mut agents = Vec::with_capacity(shared.len());
    for mut arc in shared {
        // A consumer thread may hold its clone for a moment after shutdown.
        let give_up = std::time::Instant::now() + shutdown_deadline + Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(arc) {
                Ok(mutex) => {
                    agents.push(mutex.into_inner().unwrap_or_else(|p| p.into_inner()));
                    break;
                }
                Err(back) if std::time::Instant::now() < give_up => {
                    arc = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(back) => {
                    return Err(RunError::AgentStuck {
                        agent: lock(&back).id().to_string(),
                    })
                }
            }
        }
    }
    Ok(QueuedRun {
        agents,
        stats: report.stats,
    })
}

async fn publish_out(bus: &MessageBus, agent: &str, out: &mut Outbox) -> Result<(), RunError> {
    for message in out.drain() {
        bus.publish(message)
            .await
            .map_err(|error| RunError::Publish {
                agent: agent.to_string(),
                error,
            })?;
    }
    Ok(())
}
