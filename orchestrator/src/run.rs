//! Wiring: builds the agents from the configuration and runs them, either
//! inline (backtest: deterministic, as fast as possible) or on the queued
//! bus (run: every agent on its own queue and thread).

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_collector::venue::feed::LiveFeed;
use agent_collector::{
    CandleSource, Collected, CollectorAgent, FeedStatus, FileSource, MemoryCandles, ReadAhead,
    SyntheticMarket,
};
use agent_risk::{RiskAgent, RiskStateStore, SharedState, StateFile};
use agent_signals::llm::advisor::SharedAdvisor;
use agent_signals::{SignalAgent, StrategyRegistry};
use agent_trader::{FillJournal, Traded, TraderAgent};
use bus_core::agent::health::HealthCheckSettings;
use bus_core::agent::supervision::{AgentSpec, Rebuild};
use bus_core::bus::tick_to_order::TickToOrder;
use bus_core::runtime::{
    run_inline_until, run_queued_until, Finished, QueuedOptions, RunError, StopSignal,
};
use bus_core::{Agent, AgentId, MessageBus, Outcome};
use serde::Serialize;

use crate::agents::AgentKind;
use crate::announcer::Announcer;
use crate::bus_summary::BusSummary;
use crate::config::{BistouryConfig, DataSource, Latency};
use crate::report::{AccountView, Report, ReportAgent, StatusLimits};
use crate::status::StatusBoard;
use agent_trader::OpenOrder;
use bus_core::model::decimal_to_f64;

/// How the agents are dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Inline bus, deterministic.
    Backtest,
    /// Queued bus, concurrent.
    Run,
    /// Every agent its own process, over NATS.
    Processes,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The market data could not be opened.
    #[error(transparent)]
    Data(#[from] agent_collector::CollectorError),
    /// The trade log could not be created.
    #[error("cannot create trade log {path}: {source}")]
    TradeLog {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The agents could not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The agent wiring in the configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// Collection stopped on bad data (policy `stop`).
    #[error("market data: {0}")]
    Collection(String),
    /// The trade journal could not be opened or read.
    #[error("trade journal: {0}")]
    Journal(String),
    /// The model strategy could not start, or a replay met a question its
    /// recording has no answer for.
    #[error("model strategy: {0}")]
    Model(String),
    /// Distributed mode (agents as processes over NATS) failed.
    #[error("distributed run: {0}")]
    Distributed(String),
    /// An agent ended without handing back what it owes the report (it
    /// never stopped cleanly).
    #[error("agent {0} ended without handing back its results")]
    NoOutcome(AgentKind),
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Dispatch mode.
    pub mode: Mode,
    /// The report.
    pub report: Report,
    /// Trade log path.
    pub trade_log: PathBuf,
    /// Rows in the trade log.
    pub trade_log_rows: u64,
    /// Messages published on the bus.
    pub messages_published: u64,
    /// Agent restarts after panics.
    pub restarts: u32,
    /// True when the run was stopped early (Ctrl-C) and drained gracefully.
    pub stopped_early: bool,
    /// Agents that missed a heartbeat during the run.
    pub unhealthy_agents: Vec<String>,
    /// Wall-clock duration.
    #[serde(skip)]
    pub elapsed: Duration,
    /// Why the run stopped before its end although a (partial) report
    /// could still be made (a server that could not be had back...).
    pub failure: Option<String>,
    /// What this run spent on the model (`[signals.llm]`), for the console.
    #[serde(skip)]
    pub model_spent: Option<agent_signals::llm::client::Spent>,
}

/// Where a risk agent keeps the state a restart must not lose.
#[derive(Clone)]
pub enum RiskMemory {
    /// Nowhere: a backtest, or an agent that is never restarted.
    None,
    /// In memory shared with the agent's rebuild (restart in process).
    Shared(SharedState),
    /// In a file (an agent process, restarted as a new process).
    File(PathBuf),
}

impl RiskMemory {
    /// The file an agent process of `config` keeps its risk state in.
    pub fn file(config: &BistouryConfig) -> Self {
        Self::File(config.run.output_dir.join(RISK_STATE_FILE))
    }
}

/// The risk agent's state file, under `run.output_dir`.
pub const RISK_STATE_FILE: &str = "risk-state.json";

/// What the orchestrator gives the agents it builds, and gets back from
/// them when they stop.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// The collector counts published candles here (a progress display).
    pub progress: Option<Arc<AtomicU64>>,
    /// A live collector keeps its feed's state here (a progress display).
    pub feed_status: Option<Arc<Mutex<FeedStatus>>>,
    /// The report shows the account here (a progress display).
    pub account: Option<Arc<Mutex<AccountView>>>,
    /// The status page's board, when it is served.
    pub status: Option<StatusBoard>,
    /// The trader keeps its open orders here (the status page).
    pub open_orders: Option<Arc<Mutex<Vec<OpenOrder>>>>,
    /// What the collector collected.
    pub collected: Outcome<Collected>,
    /// What the trader traded.
    pub traded: Outcome<Traded>,
    /// The report.
    pub report: Outcome<Report>,
    /// Strategies the program adds, turned on by `[signals.custom.<name>]`.
    pub strategies: StrategyRegistry,
    /// The run's model (`[signals.llm]`), shared by its signal agents.
    pub model: Option<SharedAdvisor>,
    /// Candles already loaded, replayed instead of reading `[data]`.
    pub candles: Option<MemoryCandles>,
    /// No trade log is written (a parameter search's trials).
    pub without_trade_log: bool,
    /// Times each order from its bar's candle (a run in process).
    pub tick_to_order: Option<TickToOrder>,
}

impl Hooks {
    /// Hooks for a run under `control`: its progress counter and strategies.
    pub fn of(control: &RunControl) -> Self {
        Self {
            progress: control.progress.clone(),
            feed_status: control.feed_status.clone(),
            account: control.account.clone(),
            status: control.status.clone(),
            open_orders: control.open_orders.clone(),
            strategies: control.strategies.clone(),
            candles: control.candles.clone(),
            without_trade_log: control.without_trade_log,
            ..Self::default()
        }
    }
}

/// The trade journal's directory under `run.output_dir`.
pub const TRADE_JOURNAL_DIR: &str = "trade-journal";

/// Where a run of `config` journals its fills: live runs only (a replay
/// starts over from its first bar, so there is nothing to resume).
pub fn trade_journal(config: &BistouryConfig) -> Option<PathBuf> {
    let live = config.data.source().is_ok_and(|s| s.is_live());
    live.then(|| config.run.output_dir.join(TRADE_JOURNAL_DIR))
}

/// Why a live market cannot be backtested.
pub const LIVE_IS_NOT_BACKTESTED: &str = "data.kind: a live market cannot be backtested \
     (a backtest replays recorded data as fast as it can): paper-trade it with `bistoury run`, \
     or `bistoury record` it and backtest the file";

/// The recorded market `config` replays: its candle file, or the
/// synthetic market it describes (a live market is not one).
pub fn recorded_source(config: &BistouryConfig) -> Result<Box<dyn CandleSource>, WiringError> {
    let source = config
        .data
        .source()
        .map_err(|e| agent_collector::CollectorError::BadSpec(e.join("; ")))?;
    Ok(match source {
        DataSource::Synthetic(spec) => Box::new(SyntheticMarket::new(spec)?),
        DataSource::File(file) => {
            Box::new(FileSource::open(&file.path, &file.interval, file.bad_rows)?)
        }
        DataSource::Live(_) => return Err(WiringError::Config(LIVE_IS_NOT_BACKTESTED.into())),
    })
}

/// Builds one agent; `risk` keeps its state in `risk_memory`.
pub fn build_agent(
    kind: AgentKind,
    config: &BistouryConfig,
    deterministic: bool,
    trade_log: &std::path::Path,
    hooks: &Hooks,
    risk_memory: &RiskMemory,
) -> Result<Box<dyn Agent>, WiringError> {
    Ok(match kind {
        AgentKind::Collector => {
            if let Some(candles) = &hooks.candles {
                let collector = CollectorAgent::new(
                    AgentId::new(kind.name()),
                    Box::new(candles.clone()),
                    deterministic,
                );
                return Ok(Box::new(collector.with_outcome(hooks.collected.clone())));
            }
            if let Ok(DataSource::Live(market)) = config.data.source() {
                if deterministic {
                    return Err(WiringError::Config(LIVE_IS_NOT_BACKTESTED.into()));
                }
                let stall_after = market.settings.stall_after;
                let feed = LiveFeed::start(Arc::new(market.venue), market.settings)?;
                let id = AgentId::new(kind.name());
                let mut collector = CollectorAgent::live(id, feed, stall_after)
                    .with_outcome(hooks.collected.clone());
                if let Some(status) = &hooks.feed_status {
                    collector = collector.with_feed_status(status.clone());
                }
                if let Some(counter) = &hooks.progress {
                    collector = collector.with_progress(counter.clone());
                }
                return Ok(Box::new(collector));
            }
            let source = recorded_source(config)?;
            // Generating or parsing runs a few thousand bars ahead on its own
            // thread; the batches are the same, in the same order.
            let source = Box::new(ReadAhead::new(source, 4));
            let mut collector =
                CollectorAgent::new(AgentId::new(kind.name()), source, deterministic);
            // Pacing is wall-clock time: never in a (deterministic) backtest.
            if !deterministic && config.data.speed > 0.0 {
                collector = collector.with_speed(config.data.speed);
                if config.data.stagger {
                    let interval_ms = config.data.bar_interval_ms().map_err(WiringError::Config)?;
                    collector = collector.staggered(interval_ms);
                }
            }
            let collector = collector.with_outcome(hooks.collected.clone());
            Box::new(match &hooks.progress {
                Some(counter) => collector.with_progress(counter.clone()),
                None => collector,
            })
        }
        AgentKind::Signals | AgentKind::Risk => {
            restartable_agent(kind, config, deterministic, risk_memory, hooks)?
                .expect("signals and risk are restartable")
        }
        AgentKind::Trader => {
            let id = AgentId::new(kind.name());
            let log_error = |source| WiringError::TradeLog {
                path: trade_log.to_path_buf(),
                source,
            };
            let trader = TraderAgent::new(
                id.clone(),
                config.trader.clone(),
                (!hooks.without_trade_log).then_some(trade_log),
                deterministic,
            )
            .map_err(log_error)?
            .with_max_symbols(config.signals.max_symbols)
            .with_outcome(hooks.traded.clone());
            let trader = match &hooks.open_orders {
                Some(view) => trader.with_open_orders(view.clone()),
                None => trader,
            };
            let trader = match &hooks.tick_to_order {
                Some(clock) => trader.with_tick_to_order(clock.clone()),
                None => trader,
            };
            Box::new(match trade_journal(config) {
                None => trader,
                Some(dir) => {
                    let (journal, restored) = FillJournal::open(&dir, id)
                        .map_err(|e| WiringError::Journal(e.to_string()))?;
                    if !restored.is_empty() {
                        eprintln!(
                            "resuming from the trade journal {} ({} fills); \
                             another run.output_dir starts afresh",
                            dir.display(),
                            restored.len()
                        );
                    }
                    trader.with_journal(journal, restored).map_err(log_error)?
                }
            })
        }
        AgentKind::Report => {
            let report = ReportAgent::new(
                config.trader.initial_cash,
                config.data.bar_interval_ms().map_err(WiringError::Config)?,
                config.report.year_days,
            )
            .with_max_symbols(config.signals.max_symbols)
            .with_outcome(hooks.report.clone());
            let report = match trade_journal(config) {
                None => report,
                Some(dir) => {
                    let journaled =
                        FillJournal::read(&dir).map_err(|e| WiringError::Journal(e.to_string()))?;
                    let fills: Vec<_> = journaled.into_iter().map(|j| j.fill).collect();
                    report.resumed(&fills)
                }
            };
            let report = match config.run.metrics_address() {
                Some(_) if !deterministic => report.with_metrics(),
                _ => report,
            };
            let report = match &hooks.status {
                Some(board) => {
                    let risk = &config.risk;
                    let limits = StatusLimits {
                        max_drawdown: risk.max_drawdown.map(decimal_to_f64),
                        max_daily_loss: risk.max_daily_loss.map(decimal_to_f64),
                        max_open_positions: risk.max_open_positions,
                    };
                    report.with_status(board.clone(), limits)
                }
                None => report,
            };
            let report = match &hooks.account {
                Some(view) => report.with_account_view(view.clone()),
                None => report,
            };
            // Inline, or in lockstep in process, messages come in market
            // time order: nothing need be held for late ones.
            let in_order = deterministic
                || (config.run.lockstep
                    && config.bus.transport == crate::config::Transport::InProcess);
            Box::new(match in_order {
                true => report.in_market_time_order(),
                false => report,
            })
        }
    })
}

/// The agents that can start over from their configuration (and, for
/// risk, the state it saved in `risk_memory`), built fresh; `None` for
/// others.
fn restartable_agent(
    kind: AgentKind,
    config: &BistouryConfig,
    deterministic: bool,
    risk_memory: &RiskMemory,
    hooks: &Hooks,
) -> Result<Option<Box<dyn Agent>>, WiringError> {
    Ok(match kind {
        AgentKind::Signals => {
            let agent = SignalAgent::with_strategies(
                AgentId::new(kind.name()),
                config.signals.clone(),
                deterministic,
                hooks.strategies.clone(),
            )
            .map_err(|errors| WiringError::Config(errors.join("; ")))?;
            Some(Box::new(match &hooks.model {
                Some(advisor) => agent.with_model(advisor.clone()),
                None => agent,
            }))
        }
        AgentKind::Risk => {
            let agent = RiskAgent::new(
                AgentId::new(kind.name()),
                config.risk.clone(),
                deterministic,
            );
            let store: Option<Box<dyn RiskStateStore>> = match risk_memory {
                RiskMemory::None => None,
                RiskMemory::Shared(shared) => Some(Box::new(shared.clone())),
                RiskMemory::File(path) => Some(Box::new(StateFile::new(path))),
            };
            Some(Box::new(match store {
                None => agent,
                Some(store) => agent
                    .with_state_store(store)
                    .map_err(|e| WiringError::Config(e.to_string()))?,
            }))
        }
        AgentKind::Collector | AgentKind::Trader | AgentKind::Report => None,
    })
}

/// The agents in dependency order, each with its supervision policy.
/// Agents that may restart get a rebuild function from their config.
pub fn build_agents(
    config: &BistouryConfig,
    deterministic: bool,
    trade_log: &std::path::Path,
    hooks: &Hooks,
) -> Result<Vec<AgentSpec>, WiringError> {
    let order = config.agents.start_order().map_err(WiringError::Config)?;
    let mut specs = Vec::with_capacity(order.len());
    // A backtest never restarts an agent; a run may, and its risk agent
    // then carries on from where the one it replaces was.
    let risk_memory = match deterministic {
        true => RiskMemory::None,
        false => RiskMemory::Shared(SharedState::default()),
    };
    for kind in order {
        let agent = build_agent(kind, config, deterministic, trade_log, hooks, &risk_memory)?;
        let policy = config.agents.get(kind).policy();
        let rebuild: Option<Rebuild> = kind.restartable().then(|| {
            let (config, memory) = (config.clone(), risk_memory.clone());
            let hooks = Hooks {
                strategies: hooks.strategies.clone(),
                model: hooks.model.clone(),
                ..Hooks::default()
            };
            Box::new(move || {
                restartable_agent(kind, &config, deterministic, &memory, &hooks)
                    .ok()
                    .flatten()
                    .expect("built once already with the same inputs")
            }) as Rebuild
        });
        specs.push(AgentSpec::new(agent).with_policy(policy, rebuild));
    }
    let agents = specs.iter().map(|s| s.agent.id().clone()).collect();
    specs.push(AgentSpec::new(Box::new(Announcer::new(
        agents,
        deterministic,
    ))));
    Ok(specs)
}

/// What the agents handed back, and the bus's figures, as the run's outcome.
fn conclude(
    config: &BistouryConfig,
    mode: Mode,
    finished: Finished,
    bus: BusSummary,
    hooks: &Hooks,
    trade_log: PathBuf,
    started: Instant,
) -> Result<RunOutcome, WiringError> {
    let collected = hooks
        .collected
        .take()
        .ok_or(WiringError::NoOutcome(AgentKind::Collector))?;
    if let Some(failure) = collected.failure {
        return Err(WiringError::Collection(failure));
    }
    let model = hooks.model.as_ref().map(|advisor| {
        let advisor = advisor.lock().unwrap_or_else(|p| p.into_inner());
        (advisor.failure().map(str::to_string), advisor.spent())
    });
    if let Some((Some(failure), _)) = model {
        return Err(WiringError::Model(failure));
    }
    let trade_log_rows = hooks
        .traded
        .take()
        .and_then(|t| t.trade_log_rows)
        .unwrap_or(0);
    let mut report = hooks
        .report
        .take()
        .ok_or(WiringError::NoOutcome(AgentKind::Report))?;
    report.data_rows_skipped = collected.skipped_rows;
    // The agents in start order, as built (the announcer last).
    let mut names: Vec<String> = (config.agents.start_order())
        .map_err(WiringError::Config)?
        .into_iter()
        .map(|kind| kind.name().to_string())
        .collect();
    names.push(crate::announcer::NAME.into());
    let restarts: Vec<(String, u32)> = names.into_iter().zip(finished.restarts.clone()).collect();
    report.bus = Some(bus.with_agents(&restarts, &report.agent_state_changes));
    let model_spent = model.map(|(_, spent)| spent);
    if let (Some(llm), Some(spent)) = (config.signals.model(), &model_spent) {
        report.model = Some(crate::model::ModelUsage::of(&llm.model, spent));
    }
    Ok(RunOutcome {
        mode,
        report,
        trade_log,
        trade_log_rows,
        messages_published: finished.published,
        restarts: finished.restarts.iter().sum(),
        stopped_early: false,
        unhealthy_agents: Vec::new(),
        elapsed: started.elapsed(),
        failure: None,
        model_spent,
    })
}

/// The hooks of a run of `config` under `control`, with the run's model.
fn hooks_for(config: &BistouryConfig, control: &RunControl) -> Result<Hooks, WiringError> {
    let mut hooks = Hooks::of(control);
    hooks.model = crate::model::advisor(config, &control.stop).map_err(WiringError::Model)?;
    Ok(hooks)
}

/// Runs every agent inline: deterministic, as fast as the CPU allows.
pub fn backtest(config: &BistouryConfig) -> Result<RunOutcome, WiringError> {
    backtest_with(config, &RunControl::default())
}

/// How a caller watches and stops a run.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Counts published candles (for a progress display).
    pub progress: Option<Arc<AtomicU64>>,
    /// A live feed's state (for a progress display).
    pub feed_status: Option<Arc<Mutex<FeedStatus>>>,
    /// The account as the report sees it (for a progress display).
    pub account: Option<Arc<Mutex<AccountView>>>,
    /// The status page's board, when it is served.
    pub status: Option<StatusBoard>,
    /// The trader's open orders (for the status page).
    pub open_orders: Option<Arc<Mutex<Vec<OpenOrder>>>>,
    /// Raised to stop early and gracefully (Ctrl-C).
    pub stop: StopSignal,
    /// Strategies the program adds, turned on by `[signals.custom.<name>]`.
    pub strategies: StrategyRegistry,
    /// Candles already loaded, replayed instead of reading `[data]` (a
    /// parameter search loads its data once for all its trials).
    pub candles: Option<MemoryCandles>,
    /// Writes no trade log (a parameter search's trials).
    pub without_trade_log: bool,
}

/// [`backtest`] under a [`RunControl`].
pub fn backtest_with(
    config: &BistouryConfig,
    control: &RunControl,
) -> Result<RunOutcome, WiringError> {
    let hooks = hooks_for(config, control)?;
    let started = Instant::now();
    let trade_log = config.run.output_dir.join("trades.csv");
    let agents = build_agents(config, true, &trade_log, &hooks)?;
    let run = run_inline_until(agents, &control.stop)?;
    let bus = BusSummary::inline(&run);
    let finished = run.finished;
    let mut outcome = conclude(
        config,
        Mode::Backtest,
        finished,
        bus,
        &hooks,
        trade_log,
        started,
    )?;
    outcome.stopped_early = control.stop.is_stopped();
    Ok(outcome)
}

/// Runs every agent on the queued in-process bus.
pub async fn run(config: &BistouryConfig) -> Result<RunOutcome, WiringError> {
    run_with(config, &RunControl::default()).await
}

/// How a run in process drives its agents on the queued bus, from
/// `config`; `clock` times tick to order.
fn queued_options(config: &BistouryConfig, clock: &TickToOrder) -> QueuedOptions {
    let health = (config.run.health_check_interval_ms > 0).then(|| HealthCheckSettings {
        interval: Duration::from_millis(config.run.health_check_interval_ms),
        ttl: Duration::from_millis(config.run.heartbeat_ttl_ms),
    });
    QueuedOptions {
        health,
        lockstep: config.run.lockstep,
        tick_to_order: Some(clock.clone()),
        one_thread: config.bus.latency == Latency::Low,
    }
}

/// [`run`] under a [`RunControl`].
pub async fn run_with(
    config: &BistouryConfig,
    control: &RunControl,
) -> Result<RunOutcome, WiringError> {
    let mut hooks = hooks_for(config, control)?;
    let clock = TickToOrder::new();
    hooks.tick_to_order = Some(clock.clone());
    let started = Instant::now();
    let trade_log = config.run.output_dir.join("trades.csv");
    let agents = build_agents(config, false, &trade_log, &hooks)?;
    let bus = MessageBus::new();
    let deadline = Duration::from_secs(config.run.shutdown_timeout_secs);
    let options = queued_options(config, &clock);
    let metrics = config.run.metrics_address().is_some();
    let sampler = (metrics || control.status.is_some()).then(|| {
        let every = Duration::from_millis(250);
        crate::metrics::sample_bus(bus.clone(), every, metrics, control.status.clone())
    });
    let run = run_queued_until(bus, agents, deadline, control.stop.clone(), options).await;
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let run = run?;
    crate::metrics::record_bus(&run.stats);
    if let Some(board) = &control.status {
        board.record_bus(&run.stats);
        board.update(|s| s.finished = true);
    }
    let unhealthy = run.unhealthy.clone();
    let mut bus = BusSummary::queued(&run.stats);
    bus.tick_to_order = Some(clock.summary());
    let mut outcome = conclude(
        config,
        Mode::Run,
        run.finished,
        bus,
        &hooks,
        trade_log,
        started,
    )?;
    outcome.stopped_early = control.stop.is_stopped();
    outcome.unhealthy_agents = unhealthy;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_mode_puts_a_runs_agents_on_one_thread() {
        let clock = TickToOrder::new();
        let mut config = BistouryConfig::embedded_default();
        let options = queued_options(&config, &clock);
        assert!(!options.one_thread, "a thread per agent by default");
        assert!(options.lockstep && options.tick_to_order.is_some());
        config.bus.latency = Latency::Low;
        config.run.lockstep = false;
        let options = queued_options(&config, &clock);
        assert!(options.one_thread && !options.lockstep);
    }
}
