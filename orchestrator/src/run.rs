//! Wiring: builds the agents from the configuration and runs them, either
//! inline (backtest: deterministic, as fast as possible) or on the queued
//! bus (run: every agent on its own queue and thread).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_collector::{CandleSource, CollectorAgent, FileSource, SyntheticMarket};
use agent_risk::RiskAgent;
use agent_signals::SignalAgent;
use agent_trader::TraderAgent;
use bus_core::driver::{run_inline, run_queued, RunError};
use bus_core::{Agent, AgentId, MessageBus};
use serde::Serialize;

use crate::config::{BistouryConfig, DataKind};
use crate::report::{Report, ReportAgent};

/// How the agents are dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Inline bus, deterministic.
    Backtest,
    /// Queued bus, concurrent.
    Run,
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
    /// Collection stopped on bad data (policy `stop`).
    #[error("market data: {0}")]
    Collection(String),
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
    /// Malformed data rows skipped.
    pub skipped_rows: usize,
    /// Messages published on the bus.
    pub messages_published: u64,
    /// Wall-clock duration.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// The agents in start order: every agent starts after what it depends on.
pub fn build_agents(
    config: &BistouryConfig,
    deterministic: bool,
    trade_log: &std::path::Path,
) -> Result<Vec<Box<dyn Agent>>, WiringError> {
    let source: Box<dyn CandleSource> = match config.data.kind {
        DataKind::Synthetic => {
            let spec = config
                .data
                .synthetic_spec()
                .map_err(|e| agent_collector::CollectorError::BadSpec(e.join("; ")))?;
            Box::new(SyntheticMarket::new(spec)?)
        }
        DataKind::File => {
            let path = config.data.path.clone().unwrap_or_default();
            let policy = config
                .data
                .bad_rows
                .unwrap_or(agent_collector::BadRowPolicy::Skip);
            Box::new(FileSource::open(&path, &config.data.interval, policy)?)
        }
    };
    let trader = TraderAgent::new(
        AgentId::new("trader"),
        config.trader.clone(),
        Some(trade_log),
        deterministic,
    )
    .map_err(|source| WiringError::TradeLog {
        path: trade_log.to_path_buf(),
        source,
    })?;
    let interval_ms = config.data.interval_ms.unwrap_or(60_000);
    Ok(vec![
        Box::new(ReportAgent::new(config.trader.initial_cash, interval_ms)),
        Box::new(RiskAgent::new(
            AgentId::new("risk"),
            config.risk.clone(),
            deterministic,
        )),
        Box::new(trader),
        Box::new(SignalAgent::new(
            AgentId::new("signals"),
            config.signals.clone(),
            deterministic,
        )),
        Box::new(CollectorAgent::new(
            AgentId::new("collector"),
            source,
            deterministic,
        )),
    ])
}

fn find<T: 'static>(agents: &mut [Box<dyn Agent>]) -> Option<&mut T> {
    agents
        .iter_mut()
        .find_map(|a| a.as_mut().as_any_mut().downcast_mut::<T>())
}

fn conclude(
    mode: Mode,
    mut agents: Vec<Box<dyn Agent>>,
    trade_log: PathBuf,
    published: u64,
    started: Instant,
) -> Result<RunOutcome, WiringError> {
    let collector = find::<CollectorAgent>(&mut agents).expect("the collector is wired");
    if let Some(failure) = collector.failure() {
        return Err(WiringError::Collection(failure.to_string()));
    }
    let skipped_rows = collector.skipped_rows();
    let trade_log_rows = find::<TraderAgent>(&mut agents)
        .and_then(|t| t.trade_log_rows())
        .unwrap_or(0);
    let report = find::<ReportAgent>(&mut agents)
        .expect("the report is wired")
        .finish();
    Ok(RunOutcome {
        mode,
        report,
        trade_log,
        trade_log_rows,
        skipped_rows,
        messages_published: published,
        elapsed: started.elapsed(),
    })
}

/// Runs every agent inline: deterministic, as fast as the CPU allows.
pub fn backtest(config: &BistouryConfig) -> Result<RunOutcome, WiringError> {
    let started = Instant::now();
    let trade_log = config.run.output_dir.join("trades.csv");
    let agents = build_agents(config, true, &trade_log)?;
    let run = run_inline(agents, Vec::new())?;
    conclude(
        Mode::Backtest,
        run.agents,
        trade_log,
        run.stats.published,
        started,
    )
}

/// Runs every agent on the queued in-process bus.
pub async fn run(config: &BistouryConfig) -> Result<RunOutcome, WiringError> {
    let started = Instant::now();
    let trade_log = config.run.output_dir.join("trades.csv");
    let agents = build_agents(config, false, &trade_log)?;
    let bus = MessageBus::new();
    let deadline = Duration::from_secs(config.run.shutdown_timeout_secs);
    let run = run_queued(bus, agents, deadline).await?;
    conclude(
        Mode::Run,
        run.agents,
        trade_log,
        run.stats.published,
        started,
    )
}
