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

use std::time::Duration;

use crate::agent::health::{HealthCheckSettings, HealthMonitor};
use crate::agent::supervision::{AgentSpec, Supervised};
use crate::agent::Produce;
use crate::bus::error::{HandlerError, PublishError};
use crate::bus::inline::{InlineBus, InlineStats};
use crate::bus::stats::BusStats;
use crate::bus::Outbox;
use crate::bus::{MessageBus, OverflowPolicy, SubscribeError};
use crate::model::ids::AgentId;
use crate::runtime::transport::{
    run_agent_with, AgentRunError, Coordination, InProcess, InProcessError, Transport,
};
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
    /// Per subscription: name, successful and failed handler runs.
    pub subscriptions: Vec<(String, u64, u64)>,
}

fn finish(supervised: Vec<Supervised>, published: u64) -> Result<Finished, RunError> {
    if let Some(failure) = supervised.iter().find_map(|s| s.failure()) {
        return Err(RunError::AgentFailed(failure.to_string()));
    }
    let restarts = supervised.iter().map(Supervised::restarts).collect();
    Ok(Finished {
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
    let subscriptions = bus.subscriptions();
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
        subscriptions,
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
    /// Told when each candle a source produced is published (tick-to-order
    /// latency; the trader says when its orders are).
    pub tick_to_order: Option<crate::bus::tick_to_order::TickToOrder>,
    /// Every agent runs as a task on one thread instead of a thread of its
    /// own (see [`InProcess::one_thread`]): a message from one agent to the
    /// next wakes no other thread, and an agent busy in its handler holds
    /// the others meanwhile (latency mode).
    pub one_thread: bool,
}

/// Where a queued run's agents run: each on a thread of its own, or all as
/// tasks on one thread.
enum AgentThreads {
    Own(Vec<std::thread::JoinHandle<()>>),
    One {
        agents: tokio::sync::mpsc::UnboundedSender<StartAgent>,
        thread: std::thread::JoinHandle<()>,
    },
}

/// Makes an agent's run, on the thread it runs on.
type StartAgent =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send>;

impl AgentThreads {
    fn new(one_thread: bool) -> Result<Self, RunError> {
        if !one_thread {
            return Ok(Self::Own(Vec::new()));
        }
        let (agents, mut arriving) = tokio::sync::mpsc::unbounded_channel::<StartAgent>();
        let thread = std::thread::Builder::new()
            .name("agents".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the agents' thread");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let mut running = Vec::new();
                    while let Some(start) = arriving.recv().await {
                        running.push(tokio::task::spawn_local(start()));
                    }
                    for run in running {
                        let _ = run.await;
                    }
                });
            })
            .map_err(|_| RunError::AgentFailed("cannot start the agents' thread".into()))?;
        Ok(Self::One { agents, thread })
    }

    /// Runs `start`'s agent (named `id`).
    fn run(&mut self, id: &AgentId, start: StartAgent) -> Result<(), RunError> {
        match self {
            Self::Own(threads) => {
                let thread = std::thread::Builder::new()
                    .name(format!("agent {id}"))
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime for the agent's thread");
                        runtime.block_on(start());
                    })
                    .map_err(|_| {
                        RunError::AgentFailed(format!("cannot start a thread for agent {id}"))
                    })?;
                threads.push(thread);
            }
            Self::One { agents, .. } => {
                if agents.send(start).is_err() {
                    return Err(RunError::AgentFailed(format!(
                        "the agents' thread is gone: cannot start agent {id}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Waits for the threads to end (their agents have).
    async fn join(self) {
        let threads = match self {
            Self::Own(threads) => threads,
            Self::One { agents, thread } => {
                drop(agents);
                vec![thread]
            }
        };
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Waits until no message is queued, being handled or held for a next
/// generation, twice in a row.
async fn settle(transport: &InProcess) {
    let mut quiet = 0;
    while quiet < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        transport.flush().await;
        if transport.is_quiet() {
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
///
/// Each agent runs on a thread of its own through the one agent driver
/// ([`run_agent_with`](crate::runtime::transport::run_agent_with)) on the
/// [`InProcess`] transport: subscribed in order, started once all are
/// subscribed, stopped in reverse order once every source is done and the
/// bus is quiet.
pub async fn run_queued_until(
    bus: MessageBus,
    agents: Vec<AgentSpec>,
    shutdown_deadline: Duration,
    stop: StopSignal,
    options: QueuedOptions,
) -> Result<QueuedRun, RunError> {
    let QueuedOptions {
        health,
        lockstep,
        tick_to_order,
        one_thread,
    } = options;
    // Raised by a failing agent (policy `shutdown`) or by the caller.
    let abort = stop.clone();
    let transport = InProcess::new(bus.clone())
        .with_overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(3600),
        })
        .lockstep(lockstep)
        .with_tick_to_order(tick_to_order)
        .one_thread(one_thread);
    let capabilities: Vec<(AgentId, Vec<String>)> = agents
        .iter()
        .map(|spec| (spec.agent.id().clone(), spec.agent.capabilities()))
        .collect();
    let mut threads = AgentThreads::new(one_thread)?;
    let mut running = Vec::with_capacity(agents.len());
    let mut starts = Vec::with_capacity(agents.len());
    let mut sources = Vec::with_capacity(agents.len());
    for spec in agents {
        let id = spec.agent.id().clone();
        let (subscribed, is_subscribed) = tokio::sync::oneshot::channel();
        let (start, may_start) = tokio::sync::oneshot::channel();
        let (produced_all, source_done) = tokio::sync::oneshot::channel();
        // A run stopped early (Ctrl-C, a failing agent) stops its sources
        // only; the others drain what is under way and are stopped in turn
        // below, as at the end of the data.
        let coordination = Coordination {
            subscribed: Some(subscribed),
            start: Some(may_start),
            produced_all: Some(produced_all),
            stay_after_producing: true,
            stop_producing: Some(abort.clone()),
        };
        let own_stop = StopSignal::new();
        let (transport, agent_stop, abort) = (transport.clone(), own_stop.clone(), abort.clone());
        let (ended, outcome) = tokio::sync::oneshot::channel();
        threads.run(
            &id,
            Box::new(move || {
                Box::pin(async move {
                    let ran = run_agent_with(spec, &transport, agent_stop, coordination).await;
                    if ran.is_err() {
                        abort.stop();
                    }
                    let _ = ended.send(ran);
                })
            }),
        )?;
        running.push((id.clone(), own_stop, outcome));
        starts.push(start);
        sources.push(source_done);
        if is_subscribed.await.is_err() {
            // It ended before subscribing: its error comes out of the join.
            break;
        }
    }
    let monitor = match health {
        Some(settings) => Some(HealthMonitor::start(&bus, capabilities, settings).map_err(
            |error| RunError::Subscribe {
                agent: AgentId::new("health monitor"),
                error,
            },
        )?),
        None => None,
    };
    for start in starts {
        let _ = start.send(());
    }
    for source in sources {
        // An agent that ended (failed, or the run stopped) drops its sender.
        let _ = source.await;
    }
    settle(&transport).await;
    let mut finished = Vec::with_capacity(running.len());
    for (id, own_stop, outcome) in running.into_iter().rev() {
        own_stop.stop();
        let ran = outcome
            .await
            .map_err(|_| RunError::AgentFailed(format!("agent {id}'s run panicked")))?;
        finished.push((id, ran));
        settle(&transport).await;
    }
    finished.reverse();
    threads.join().await;
    let unhealthy = monitor.map(HealthMonitor::stop).unwrap_or_default();
    let report = bus.shutdown(shutdown_deadline).await;
    let mut supervised = Vec::with_capacity(finished.len());
    for (agent, ran) in finished {
        match ran {
            Ok((agent, _stats)) => supervised.push(agent),
            Err(AgentRunError::Run(error)) => return Err(error),
            Err(AgentRunError::Transport(InProcessError::Publish(error))) => {
                return Err(RunError::Publish { agent, error })
            }
            Err(AgentRunError::Transport(InProcessError::Subscribe { agent, error })) => {
                return Err(RunError::Subscribe { agent, error })
            }
        }
    }
    Ok(QueuedRun {
        finished: finish(supervised, report.stats.published)?,
        stats: report.stats,
        unhealthy,
    })
}
