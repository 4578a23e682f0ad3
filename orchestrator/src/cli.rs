//! The command line: `bistoury run | backtest | optimize | record | agent | inspect | validate-config | config`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::agents::AgentKind;
use crate::config::BistouryConfig;
use crate::run::{RunOutcome, WiringError};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bistoury",
    version,
    about = "Multi-agent crypto trading: collector -> signals -> trader, with risk checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every agent on the in-process bus (the default command).
    Run(RunArgs),
    /// Run every agent inline: deterministic and as fast as possible.
    Backtest(RunArgs),
    /// Run one agent (collector, signals, risk, trader, report) in this
    /// process against the NATS server in `[bus]`, until its data ends or Ctrl-C.
    Agent {
        /// The agent.
        name: String,
        /// TOML configuration, layered on the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output directory (overrides run.output_dir).
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// Stop (gracefully) when standard input closes: `bistoury run`
        /// holds the other end, so its agents never outlive it.
        #[arg(long, hide = true)]
        exit_with_parent: bool,
        /// Run as instance K of N (`K/N`, from 1) of an agent run as
        /// several: it handles only its share of the keyed messages (signals:
        /// its share of the symbols).
        #[arg(long, value_name = "K/N")]
        instance: Option<String>,
        /// Serve this agent's Prometheus metrics at http://ADDR/metrics (a
        /// loopback address; `bistoury run` gives each agent its own).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Record a live market's closed candles (`[data] source =
    /// "hyperliquid"`) to a CSV candle file that `backtest` replays, until
    /// Ctrl-C or `--candles`.
    Record {
        /// TOML configuration, layered on the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The CSV file to write; it must not exist yet.
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many candles (all markets together).
        #[arg(long)]
        candles: Option<u64>,
    },
    /// Search parameters over backtests of the data loaded once, on every
    /// core; `--walk-forward N` fits on each window and tests on the next.
    Optimize {
        /// The base TOML configuration, layered on the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The search file: parameters with ranges or values, method,
        /// objective, constraints (see `orchestrator/examples/search.toml`).
        #[arg(long)]
        search: PathBuf,
        /// Walk forward over N folds: the data cut into N + 1 windows, each
        /// fold fitting on one window and tested on the next.
        #[arg(long, value_name = "N")]
        walk_forward: Option<usize>,
        /// Threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// Where the results go (default: <output_dir>/optimize).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show what a durable store holds (pending messages per subscription,
    /// dead letters with their reasons, processed-id windows, damage found)
    /// without changing it; `--replay-dead-letter ID` republishes one dead
    /// letter to its subscription, which gets it when it next subscribes.
    Inspect {
        /// The store's directory.
        store: PathBuf,
        /// Republish the dead letter of this message id (a new message with
        /// a new id, its header `replayed_from` naming the old one).
        #[arg(long, value_name = "ID")]
        replay_dead_letter: Option<String>,
    },
    /// Check a configuration file and report every problem.
    ValidateConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Work with the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the effective configuration, as TOML: the embedded default,
    /// the file and the `BISTOURY__*` variables merged (what a run would
    /// use, after the same checks).
    Show {
        /// TOML configuration, layered on the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// TOML configuration, layered on the embedded default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where to write the JSON report (default: <output_dir>/report.json).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Output directory (overrides run.output_dir).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Distributed run with JetStream families: delete the family streams
    /// at start even when Bistoury did not create them (without it, a
    /// stream of the same name that lacks Bistoury's mark stops the run).
    #[arg(long)]
    fresh: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the run goes
    /// on (a loopback address, e.g. 127.0.0.1:9464; overrides run.metrics).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Serve the live status page at http://ADDR/ while the run goes on (a
    /// loopback address, e.g. 127.0.0.1:8080; overrides run.status).
    #[arg(long, value_name = "ADDR")]
    status: Option<String>,
}

/// Loads `file` layered on the default and the environment, and checks
/// it (custom strategies included); the problems are printed.
pub(crate) fn load(file: Option<&std::path::Path>) -> Result<BistouryConfig, ExitCode> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = BistouryConfig::load(file, &env).map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(2)
    })?;
    // This program adds no strategy: `[signals.custom.*]` is for programs
    // that register theirs (see orchestrator/examples/custom_strategy.rs).
    let unknown = agent_signals::StrategyRegistry::new().check(&config.signals, "signals");
    if !unknown.is_empty() {
        let error = crate::config::ConfigError {
            source_name: file.map(|f| f.display().to_string()),
            errors: unknown,
        };
        eprintln!("{error}");
        return Err(ExitCode::from(2));
    }
    Ok(config)
}

/// Parses the arguments and runs the command; the `bistoury` binary is this
/// function and nothing else.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, backtest) = match cli.command {
        None => (RunArgs::default(), false),
        Some(Command::Run(args)) => (args, false),
        Some(Command::Backtest(args)) => (args, true),
        Some(Command::Agent {
            name,
            config,
            output_dir,
            exit_with_parent,
            instance,
            metrics,
        }) => {
            let kind = match name.parse::<AgentKind>() {
                Ok(kind) => kind,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            };
            let partition = match instance.as_deref().map(parse_instance) {
                None => bus_core::runtime::Partition::WHOLE,
                Some(Ok(partition)) => partition,
                Some(Err(message)) => {
                    eprintln!("--instance: {message}");
                    return ExitCode::from(2);
                }
            };
            return run_one_agent(
                kind,
                config.as_deref(),
                output_dir,
                exit_with_parent,
                partition,
                metrics,
            );
        }
        Some(Command::Config {
            action: ConfigAction::Show { config },
        }) => {
            return match load(config.as_deref()) {
                Ok(config) => match toml::to_string_pretty(&config.effective) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("cannot show the configuration as TOML: {error}");
                        ExitCode::FAILURE
                    }
                },
                Err(code) => code,
            };
        }
        Some(Command::Record {
            config,
            out,
            candles,
        }) => return record(config.as_deref(), &out, candles),
        Some(Command::Optimize {
            config,
            search,
            walk_forward,
            threads,
            out,
        }) => {
            return crate::optimize::command::main(crate::optimize::command::Request {
                config,
                search,
                walk_forward,
                threads,
                out,
            })
        }
        Some(Command::Inspect {
            store,
            replay_dead_letter,
        }) => {
            return match replay_dead_letter {
                None => crate::inspect::show(&store),
                Some(id) => crate::inspect::replay_dead_letter(&store, &id),
            }
        }
        Some(Command::ValidateConfig { file }) => {
            return match load(Some(&file)).and_then(|config| check_model(&config, Some(&file))) {
                Ok(()) => {
                    println!("{}: configuration is valid", file.display());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            };
        }
    };
    let (mut config, _guard) = match prepare(args.config.as_deref(), args.output_dir) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    if let Err(code) = check_model(&config, args.config.as_deref()) {
        return code;
    }
    if let Some(address) = args.metrics {
        config.run.metrics = address;
    }
    if let Some(address) = args.status {
        config.run.status = address;
    }
    let (metrics, status) = match (
        crate::metrics::listen_address(&config.run.metrics),
        crate::metrics::listen_address(&config.run.status),
    ) {
        (Ok(metrics), Ok(status)) => (metrics, status),
        (Err(problem), _) => {
            eprintln!("--metrics: {problem}");
            return ExitCode::from(2);
        }
        (_, Err(problem)) => {
            eprintln!("--status: {problem}");
            return ExitCode::from(2);
        }
    };
    // The outputs are checked before the run, not found wrong after it.
    let report_path = args
        .report
        .unwrap_or_else(|| config.run.output_dir.join("report.json"));
    let report_path = match crate::output::ReportPath::claim(&report_path) {
        Ok(claimed) => claimed,
        Err(problem) => {
            eprintln!("--report: {problem}");
            return ExitCode::from(2);
        }
    };
    let mode = match (backtest, config.bus.transport) {
        (true, _) => crate::run::Mode::Backtest,
        (false, crate::config::Transport::InProcess) => crate::run::Mode::Run,
        (false, crate::config::Transport::Nats) => crate::run::Mode::Processes,
    };
    let provenance = match crate::output::Provenance::of(&config, mode) {
        Ok(provenance) => provenance,
        Err(error) => {
            eprintln!("cannot read the inputs to record them in the report: {error}");
            return ExitCode::FAILURE;
        }
    };
    let source = config.data.source().ok();
    let live = source.as_ref().is_some_and(|s| s.is_live());
    if live && backtest {
        eprintln!("{}", crate::run::LIVE_IS_NOT_BACKTESTED);
        return ExitCode::from(2);
    }
    let total = source.and_then(|source| source.known_candles());
    let live_view = live.then(crate::progress::LiveView::default);
    let progress = crate::progress::Progress::start(total, live_view.clone());
    if backtest && (metrics.is_some() || status.is_some()) {
        eprintln!(
            "--metrics and --status watch a `bistoury run`: a backtest is over too fast to watch"
        );
        return ExitCode::from(2);
    }
    if status.is_some() && config.bus.transport == crate::config::Transport::Nats {
        eprintln!(
            "--status shows an in-process run: a distributed run's agents are processes of their \
             own (each serves its metrics with --metrics)"
        );
        return ExitCode::from(2);
    }
    if let Some(line) = crate::model::describe(&config) {
        println!("{line}");
    }
    let board = status.map(|_| crate::status::StatusBoard::new("run"));
    let open_orders = status.map(|_| std::sync::Arc::default());
    let control = crate::run::RunControl {
        status: board.clone(),
        open_orders: open_orders.clone(),
        feed_status: live_view.as_ref().map(|v| v.feed.clone()),
        account: live_view.as_ref().map(|v| v.account.clone()),
        progress: progress.as_ref().map(|p| p.counter()),
        stop: bus_core::runtime::StopSignal::new(),
        strategies: Default::default(),
        ..Default::default()
    };
    stop_on_signals(
        control.stop.clone(),
        Some("draining queues and writing the report (Ctrl-C again to quit now)"),
    );
    let outcome = if backtest {
        crate::run::backtest_with(&config, &control)
    } else {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("cannot start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(address) = metrics {
            let _inside = runtime.enter();
            if let Err(problem) = crate::metrics::serve(address) {
                eprintln!("--metrics: {problem}");
                return ExitCode::from(2);
            }
            println!("metrics:   http://{address}/metrics");
        }
        if let (Some(address), Some(board), Some(orders)) = (status, board, open_orders) {
            let _inside = runtime.enter();
            let feed = control.feed_status.clone();
            if let Err(problem) = crate::status::serve(address, board, feed, orders) {
                eprintln!("--status: {problem}");
                return ExitCode::from(2);
            }
            println!("status:    http://{address}/");
        }
        match config.bus.transport {
            crate::config::Transport::InProcess => {
                runtime.block_on(crate::run::run_with(&config, &control))
            }
            crate::config::Transport::Nats => runtime.block_on(crate::processes::run_processes(
                &config,
                args.config.as_deref(),
                &control,
                args.fresh,
            )),
        }
    };
    if let Some(progress) = progress {
        progress.finish();
    }
    finish(outcome, &report_path, &provenance)
}

/// Loads the configuration, applies `--output-dir`, creates the output
/// directory and starts logging; keep the guard until exit.
fn prepare(
    file: Option<&std::path::Path>,
    output_dir: Option<PathBuf>,
) -> Result<
    (
        BistouryConfig,
        Option<tracing_appender::non_blocking::WorkerGuard>,
    ),
    ExitCode,
> {
    let mut config = load(file)?;
    if let Some(dir) = output_dir {
        config.run.output_dir = dir;
    }
    if let Err(error) = std::fs::create_dir_all(&config.run.output_dir) {
        eprintln!(
            "cannot create output directory {}: {error}",
            config.run.output_dir.display()
        );
        return Err(ExitCode::FAILURE);
    }
    let log_dir = config
        .log
        .directory
        .as_ref()
        .map(|d| config.run.output_dir.join(d));
    match crate::logging::init(&config.log.level, log_dir.as_deref()) {
        Ok(guard) => Ok((config, guard)),
        Err(error) => {
            eprintln!("cannot set up logging: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `bistoury record`: the live feed's closed candles to `out`, until
/// Ctrl-C or `limit` candles.
fn record(file: Option<&std::path::Path>, out: &std::path::Path, limit: Option<u64>) -> ExitCode {
    use agent_collector::venue::feed::{FeedEvent, LiveFeed};
    use agent_collector::venue::record::CandleRecorder;
    let (config, _guard) = match prepare(file, None) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let market = match config.data.source() {
        Ok(crate::config::DataSource::Live(market)) => market,
        _ => {
            eprintln!(
                "record: [data] is not a live market; set data.source = \"hyperliquid\" and data.symbols"
            );
            return ExitCode::from(2);
        }
    };
    let mut recorder = match CandleRecorder::create(out, &market.settings.symbols) {
        Ok(recorder) => recorder,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "--out: {} exists; record never overwrites a file: give another path",
                out.display()
            );
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("--out: cannot create {}: {error}", out.display());
            return ExitCode::from(2);
        }
    };
    let feed = match LiveFeed::start(std::sync::Arc::new(market.venue), market.settings) {
        Ok(feed) => feed,
        Err(error) => {
            eprintln!("bistoury: {error}");
            return ExitCode::FAILURE;
        }
    };
    let stop = bus_core::runtime::StopSignal::new();
    stop_on_signals(stop.clone(), Some("writing what was recorded"));
    let mut failure = None;
    while !stop.is_stopped() && limit.is_none_or(|n| recorder.written() < n) {
        let wait = std::time::Duration::from_millis(100);
        match feed.events().recv_timeout(wait) {
            Ok(FeedEvent::Candle(candle)) => {
                if let Err(error) = recorder.push(candle) {
                    failure = Some(error);
                    break;
                }
            }
            Ok(_) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(feed);
    let path = recorder.path().display().to_string();
    match (failure, recorder.finish()) {
        (None, Ok(rows)) => {
            println!("recorded {rows} candles to {path}");
            ExitCode::SUCCESS
        }
        (Some(error), _) | (None, Err(error)) => {
            eprintln!("cannot write {path}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `K/N`, 1 <= K <= N.
fn parse_instance(text: &str) -> Result<bus_core::runtime::Partition, String> {
    let parse = |part: &str| part.trim().parse::<u32>().ok();
    text.split_once('/')
        .and_then(|(k, n)| Some((parse(k)?, parse(n)?)))
        .filter(|&(k, _)| k >= 1)
        .and_then(|(k, n)| bus_core::runtime::Partition::new(k - 1, n))
        .ok_or_else(|| format!("{text:?} is not K/N with 1 <= K <= N (e.g. 2/4)"))
}

fn run_one_agent(
    kind: AgentKind,
    file: Option<&std::path::Path>,
    output_dir: Option<PathBuf>,
    exit_with_parent: bool,
    partition: bus_core::runtime::Partition,
    metrics: Option<String>,
) -> ExitCode {
    let (mut config, _guard) = match prepare(file, output_dir) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    if let Some(address) = metrics {
        config.run.metrics = address;
    }
    let metrics = match crate::metrics::listen_address(&config.run.metrics) {
        Ok(address) => address,
        Err(problem) => {
            eprintln!("--metrics: {problem}");
            return ExitCode::from(2);
        }
    };
    let trade_log = config.run.output_dir.join("trades.csv");
    // A risk agent process keeps its state in a file: restarted (by
    // `bistoury run`, or by hand), it carries on from it.
    let risk_memory = crate::run::RiskMemory::file(&config);
    let name = kind.name();
    let hooks = crate::run::Hooks::default();
    let agent =
        match crate::run::build_agent(kind, &config, false, &trade_log, &hooks, &risk_memory) {
            Ok(agent) => agent,
            Err(crate::run::WiringError::Config(message)) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
            Err(error) => {
                eprintln!("bistoury: {error}");
                return ExitCode::FAILURE;
            }
        };
    let spec = bus_core::agent::supervision::AgentSpec::new(agent)
        .with_policy(config.agents.get(kind).policy(), None);
    let stop = bus_core::runtime::StopSignal::new();
    stop_on_signals(
        stop.clone(),
        (!exit_with_parent).then_some("finishing the message in hand (Ctrl-C again to quit now)"),
    );
    if exit_with_parent {
        let watched = stop.clone();
        let _ = std::thread::Builder::new()
            .name("parent-watch".into())
            .spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                watched.stop();
            });
        // Whatever holds the graceful stop up (a JetStream publish waiting
        // for a server that is gone...), an agent of a run does not
        // outlive it by more than this.
        exit_when_stuck(stop.clone(), name.to_string(), AGENT_STOP_LIMIT);
    }
    // In latency mode the connection and the agent share one thread (see
    // `run_agent_instance_in_place`); otherwise the connection has the
    // runtime's workers and the agent a thread of its own.
    let low_latency = config.bus.latency == crate::config::Latency::Low;
    let runtime = match match low_latency {
        true => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        false => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    } {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(address) = metrics {
        let _inside = runtime.enter();
        if let Err(problem) = crate::metrics::serve(address) {
            eprintln!("--metrics: {problem}");
            return ExitCode::from(2);
        }
    }
    let nats = match config.bus.nats() {
        Ok(nats) => nats,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let bus = bus_core::nats::NatsBus::connect(&nats).await?;
        // Started by `bistoury run`, which has said it once already.
        if nats.jetstream.is_some() && !exit_with_parent {
            let version = bus.client().server_info().version;
            if let Some(warning) = bus_core::nats::jetstream::server_warning(&version) {
                eprintln!("warning: {warning}");
            }
        }
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let announce = async {
            // Said once the subscriptions are in place: `bistoury run`
            // waits for this line before starting the next agent.
            if subscribed.await.is_ok() {
                println!(
                    "agent {name} connected to {} (subjects {}.>)",
                    nats.url, nats.prefix
                );
            }
        };
        let ready = Some(ready);
        let agent = async {
            match low_latency {
                true => {
                    bus_core::nats::run_agent_instance_in_place(spec, &bus, partition, stop, ready)
                        .await
                }
                false => {
                    bus_core::nats::run_agent_instance(spec, &bus, partition, stop, ready).await
                }
            }
        };
        let (result, ()) = tokio::join!(agent, announce);
        result
    });
    match result {
        Ok((_agent, stats)) => {
            use std::io::Write;
            // Written, not printed: an agent whose parent is gone (its
            // stdout a broken pipe) still exits cleanly.
            let mut stdout = std::io::stdout();
            let _ = writeln!(
                stdout,
                "agent {name} stopped: {} messages received, {} published, {} undecodable, \
                 {} misaddressed, {} duplicates, {} redeliveries requested, {} dead-lettered, \
                 {} left to other instances",
                stats.received,
                stats.published,
                stats.undecodable,
                stats.misaddressed,
                stats.duplicates,
                stats.redeliveries_requested,
                stats.dead_lettered,
                stats.other_partitions
            );
            // For `bistoury run`, which keeps every process's figures in
            // the report.
            if let Ok(json) = serde_json::to_string(&stats) {
                let _ = writeln!(stdout, "{}{json}", crate::processes::BUS_FIGURES);
            }
            if let Some(report) = hooks.report.take() {
                let _ = write!(stdout, "{}", report.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bistoury agent {name}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// How long an agent process of a run may take to stop once asked.
const AGENT_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(8);

/// The first Ctrl-C (SIGINT) or SIGTERM (what systemd, Docker and
/// Kubernetes send) raises `stop`: the run stops gracefully (sources stop,
/// queues drain, the report is written) and `message` says so (none for
/// an agent process stopped by `bistoury run`, which speaks for it); a
/// second signal exits at once (130 after SIGINT, 143 after SIGTERM).
pub(crate) fn stop_on_signals(stop: bus_core::runtime::StopSignal, message: Option<&'static str>) {
    use tokio::signal::unix::{signal, SignalKind};
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let (Ok(mut interrupt), Ok(mut terminate)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    tracing::warn!("no signal handling");
                    return;
                };
                let first = tokio::select! {
                    _ = interrupt.recv() => "Ctrl-C",
                    _ = terminate.recv() => "SIGTERM",
                };
                if let Some(message) = message {
                    eprintln!("\nstopping ({first}): {message}");
                }
                stop.stop();
                let code = tokio::select! {
                    _ = interrupt.recv() => 130,
                    _ = terminate.recv() => 143,
                };
                std::process::exit(code);
            });
        });
    if let Err(error) = watcher {
        tracing::warn!(%error, "no signal handling");
    }
}

/// Once `stop` is raised, exits the process if it is still running after
/// `limit`.
fn exit_when_stuck(stop: bus_core::runtime::StopSignal, name: String, limit: std::time::Duration) {
    let _ = std::thread::Builder::new()
        .name("stop-limit".into())
        .spawn(move || {
            while !stop.is_stopped() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            std::thread::sleep(limit);
            eprintln!(
                "bistoury agent {name}: did not stop within {limit:?} of being asked; exiting"
            );
            std::process::exit(1);
        });
}

/// `[signals.llm]`'s problems that loading cannot see (an API key that
/// is not there, a replay's missing answer file), said like the others.
fn check_model(config: &BistouryConfig, file: Option<&std::path::Path>) -> Result<(), ExitCode> {
    match crate::model::settings(config) {
        Ok(_) => Ok(()),
        Err(errors) => {
            let error = crate::config::ConfigError {
                source_name: file.map(|f| f.display().to_string()),
                errors,
            };
            eprintln!("{error}");
            Err(ExitCode::from(2))
        }
    }
}

fn finish(
    outcome: Result<RunOutcome, WiringError>,
    report_path: &crate::output::ReportPath,
    provenance: &crate::output::Provenance,
) -> ExitCode {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("bistoury: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = report_path.write(&outcome.report, provenance) {
        eprintln!(
            "cannot write report {}: {error}",
            report_path.path().display()
        );
        return ExitCode::FAILURE;
    }
    print!("{}", outcome.report.to_table());
    println!();
    println!(
        "{:?} mode: {} messages in {:.2?}; {} candles/s",
        outcome.mode,
        outcome.messages_published,
        outcome.elapsed,
        (outcome.report.candles as f64 / outcome.elapsed.as_secs_f64().max(1e-9)) as u64
    );
    if let Some(spent) = &outcome.model_spent {
        println!("{}", crate::model::spent_line(spent));
    }
    if outcome.stopped_early {
        println!(
            "stopped early (Ctrl-C or SIGTERM): the report covers the data processed until then"
        );
    }
    if !outcome.unhealthy_agents.is_empty() {
        println!(
            "agents that missed a heartbeat: {}",
            outcome.unhealthy_agents.join(", ")
        );
    }
    if outcome.restarts > 0 {
        println!(
            "agents restarted after panics: {} (see the log)",
            outcome.restarts
        );
    }
    println!("report:    {}", report_path.path().display());
    match report_path.write_charts(&outcome.report, &outcome.trade_log) {
        Ok(page) => println!("charts:    {} (and the SVGs beside it)", page.display()),
        Err(error) => {
            eprintln!("cannot write the charts beside the report: {error}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "trade log: {} ({} fills)",
        outcome.trade_log.display(),
        outcome.trade_log_rows
    );
    if let Some(failure) = &outcome.failure {
        eprintln!("bistoury: {failure}");
        eprintln!("the report covers the data processed until then");
        return ExitCode::FAILURE;
    }
    if outcome.report.accounting_identity_holds {
        ExitCode::SUCCESS
    } else {
        eprintln!("accounting identity broken: this is a bug");
        ExitCode::FAILURE
    }
}
