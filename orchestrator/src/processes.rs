//! `bistoury run` with `[bus] transport = "nats"`: every agent in its own
//! process (`bistoury agent NAME`), talking over one NATS server, with the
//! report made in this process.
//!
//! Order of events:
//!
//! 1. start `nats-server` if `[bus] nats_server` names one, on the
//!    loopback port of `nats_url`: the port must be free (a busy port is an
//!    error, never a server to borrow), the server answering must prove to
//!    be the child started here, and it requires a token from every client
//!    (the configured one, or one generated for the run and handed to the
//!    agents in their environment);
//! 2. subscribe the report agent here, and a counter of all traffic;
//! 3. start the agents in dependency order, the collector last, each once
//!    the previous one says its subscriptions are in place (so nothing the
//!    collector publishes goes to a subscriber that is not there yet);
//! 4. supervise: an agent process that dies (a crash, `kill -9`) is started
//!    again per its `[agents.<name>]` policy (restart with backoff, up to
//!    the maximum, for the signals and risk agents; otherwise the run stops
//!    with an error naming it); the server started here is started again
//!    (same port, same JetStream store) up to `bus.server_restarts` times,
//!    after which the run stops with an error and the partial report;
//! 5. when the collector has published everything, or on Ctrl-C or
//!    SIGTERM (the collector is stopped first, so no more data comes),
//!    wait until the traffic has been quiet for half a second, stop every
//!    agent with SIGINT (each drains and exits), and finish the report.
//!
//! Agent processes run in a process group of their own, so a Ctrl-C at the
//! terminal reaches this process alone and the shutdown keeps its order.
//! They stop when this process dies, whatever the cause: they hold a pipe
//! from it and stop when it closes, and exit outright if stopping takes
//! longer than a grace period.
//!
//! Core NATS is fire-and-forget: an agent restarted after a crash misses
//! what was published while it was down (the report says how many candles
//! it saw).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::agent::supervision::{AgentSpec, RestartPolicy};
use bus_core::nats::local_server::{jetstream_args, LocalServer};
use bus_core::nats::NatsRunStats;
use bus_core::runtime::Partition;
use bus_core::runtime::StopSignal;
use futures_util::StreamExt;

use crate::agents::AgentKind;
use crate::announcer::Announcer;
use crate::bus_summary::BusSummary;
use crate::config::BistouryConfig;
use crate::run::{build_agent, Mode, RunControl, RunOutcome, WiringError};

/// How long an agent process may take to say it is subscribed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time after which the pipeline counts as drained.
const QUIET: Duration = Duration::from_millis(500);
/// Longest wait for the pipeline to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

fn failed(message: impl Into<String>) -> WiringError {
    WiringError::Distributed(message.into())
}

/// The environment variable that hands a token generated for the run to
/// its agent processes.
const RUN_TOKEN_VARIABLE: &str = "BISTOURY_RUN_NATS_TOKEN";

/// Waits before starting a dead server again.
const SERVER_RESTART_WAIT: Duration = Duration::from_millis(500);

/// The loopback port in `url`, for a server started here; an error naming
/// `bus.nats_url` for a URL that is not on this machine's loopback.
fn loopback_port(url: &str) -> Result<u16, WiringError> {
    if url.contains(',') {
        return Err(failed(format!(
            "bus.nats_url: {url:?} names several servers; bistoury run starts one \
             (bus.nats_server): name its one URL, or leave bus.nats_server empty to use \
             a cluster that is already running"
        )));
    }
    let no_port = || {
        failed(format!(
            "bus.nats_url: no port in {url:?} to start nats-server on"
        ))
    };
    let rest = url
        .strip_prefix("nats://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(no_port)?;
    if !matches!(host, "127.0.0.1" | "localhost") {
        return Err(failed(format!(
            "bus.nats_url: {url:?} is not on 127.0.0.1; a server started by bistoury run \
             (bus.nats_server) listens on loopback only"
        )));
    }
    port.parse().map_err(|_| no_port())
}

/// Starts `nats-server` on the loopback port of `url`, requiring `token`;
/// with `store`, with JetStream keeping its streams there.
fn start_server(
    path: &str,
    url: &str,
    store: Option<&Path>,
    token: &str,
    generated: bool,
) -> Result<LocalServer, WiringError> {
    let port = loopback_port(url)?;
    let args = store.map(jetstream_args).unwrap_or_default();
    let server = LocalServer::start_with_token(path, port, &args, Some(token))
        .map_err(|e| failed(format!("bus.nats_server: {e}")))?;
    println!(
        "started nats-server on 127.0.0.1:{port} (pid {}; clients need {})",
        server.pid(),
        match generated {
            true => "the token generated for this run",
            false => "the configured token",
        }
    );
    Ok(server)
}

/// The server this run started, watched: started again when it dies, up
/// to a limit.
struct ServerWatch {
    server: Option<LocalServer>,
    restarts: u32,
    limit: u32,
}

impl ServerWatch {
    /// Checks the server; restarts it if it died. An error once it cannot
    /// be had back.
    async fn check(&mut self) -> Result<(), WiringError> {
        let Some(server) = &mut self.server else {
            return Ok(());
        };
        let Some(status) = server.exited() else {
            return Ok(());
        };
        if self.restarts >= self.limit {
            return Err(failed(format!(
                "nats-server (pid {}) exited ({status}) and was already restarted {} times \
                 (bus.server_restarts = {}); stopping the run",
                server.pid(),
                self.restarts,
                self.limit
            )));
        }
        self.restarts += 1;
        println!(
            "nats-server (pid {}) exited ({status}); starting it again ({} of {})",
            server.pid(),
            self.restarts,
            self.limit
        );
        tokio::time::sleep(SERVER_RESTART_WAIT).await;
        tokio::task::block_in_place(|| server.respawn()).map_err(|e| {
            failed(format!(
                "nats-server exited ({status}) and could not be started again: {e}; stopping the run"
            ))
        })?;
        println!("restarted nats-server (pid {})", server.pid());
        Ok(())
    }
}

/// One agent process.
struct AgentProcess {
    kind: AgentKind,
    /// Which instance, when the agent runs as several.
    instance: Partition,
    child: Child,
    restarts: u32,
    /// Died, and its policy said to carry on without it.
    isolated: bool,
}

/// How to start agent processes: this executable, the same configuration.
struct Launcher {
    exe: PathBuf,
    config_file: Option<PathBuf>,
    output_dir: PathBuf,
    /// A token generated for the run, handed over in the environment.
    run_token: Option<String>,
    /// With metrics on (`run.metrics`, this process's address), each agent
    /// process serves its own on the ports after it, in launch order.
    metrics: Option<std::net::SocketAddr>,
    /// The launch order, for those ports.
    order: Vec<(AgentKind, Partition)>,
    /// What each agent process counted on its bus, said as it stopped
    /// (added up over its restarts).
    figures: Arc<Mutex<BTreeMap<String, NatsRunStats>>>,
}

/// How an agent process starts the line of its bus figures (JSON).
pub const BUS_FIGURES: &str = "bus figures ";

impl Launcher {
    /// Where agent `kind` (`instance`) serves its metrics, if they are on.
    fn metrics_address(
        &self,
        kind: AgentKind,
        instance: Partition,
    ) -> Option<std::net::SocketAddr> {
        let base = self.metrics?;
        let at = self
            .order
            .iter()
            .position(|&(k, i)| k == kind && i == instance)?;
        let port = base.port().checked_add(1 + u16::try_from(at).ok()?)?;
        Some(std::net::SocketAddr::new(base.ip(), port))
    }

    /// Starts `bistoury agent NAME` and waits until it is subscribed.
    fn start(&self, kind: AgentKind, instance: Partition) -> Result<Child, WiringError> {
        let mut command = Command::new(&self.exe);
        command.arg("agent").arg(kind.name());
        let name = &label(kind, instance);
        if instance.count > 1 {
            command
                .arg("--instance")
                .arg(format!("{}/{}", instance.index + 1, instance.count));
        }
        if let Some(file) = &self.config_file {
            command.arg("--config").arg(file);
        }
        if let Some(address) = self.metrics_address(kind, instance) {
            command.arg("--metrics").arg(address.to_string());
        }
        if let Some(token) = &self.run_token {
            command
                .env("BISTOURY__BUS__TOKEN_ENV", RUN_TOKEN_VARIABLE)
                .env(RUN_TOKEN_VARIABLE, token);
        }
        // Its own process group: a Ctrl-C at the terminal reaches this
        // process only, which stops the agents in order.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .arg("--output-dir")
            .arg(&self.output_dir)
            .arg("--exit-with-parent")
            // We hold the other end of its stdin: if this process dies, the
            // agent sees the pipe close and stops.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot start agent {name}: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let label = name.to_string();
        let figures = self.figures.clone();
        std::thread::spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !announced && line.contains("connected") {
                    announced = true;
                    let _ = tx.send(());
                }
                let said = line.strip_prefix(BUS_FIGURES);
                if let Some(stats) = said.and_then(|j| serde_json::from_str::<NatsRunStats>(j).ok())
                {
                    if let Ok(mut figures) = figures.lock() {
                        *figures.entry(label.clone()).or_default() += stats;
                    }
                    continue;
                }
                tracing::info!(agent = %label, "{line}");
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(()) => {
                println!("started agent {name} (pid {})", child.id());
                Ok(child)
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(failed(format!(
                    "agent {name} did not subscribe within {START_TIMEOUT:?} (exit: {status:?})"
                )))
            }
        }
    }
}

/// `signals`, or `signals[2of4]` for one of several instances.
fn label(kind: AgentKind, instance: Partition) -> String {
    match instance.count {
        1 => kind.to_string(),
        _ => format!("{kind}[{}]", instance.label()),
    }
}

/// Asks the processes to stop (SIGINT: each drains and exits), all at once,
/// then waits; those that do not exit within `grace` are killed. Returns
/// each one's exit status, in order.
fn stop_processes(agents: &mut [&mut AgentProcess], grace: Duration) -> Vec<Option<ExitStatus>> {
    for agent in agents.iter_mut() {
        if let Ok(None) = agent.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &agent.child.id().to_string()])
                .status();
        }
    }
    let started = Instant::now();
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; agents.len()];
    loop {
        for (agent, status) in agents.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = agent.child.try_wait().ok().flatten();
            }
        }
        if statuses.iter().all(Option::is_some) || started.elapsed() >= grace {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (agent, status) in agents.iter_mut().zip(statuses.iter_mut()) {
        if status.is_none() {
            let name = label(agent.kind, agent.instance);
            tracing::warn!(agent = %name, "did not stop within {grace:?}; killed");
            let _ = agent.child.kill();
            *status = agent.child.wait().ok();
        }
    }
    statuses
}

/// Runs every agent as its own process over NATS; see the module docs.
/// `fresh`: delete the family streams even when they do not carry
/// Bistoury's mark (someone else's streams of the same name).
pub async fn run_processes(
    config: &BistouryConfig,
    config_file: Option<&Path>,
    control: &RunControl,
    fresh: bool,
) -> Result<RunOutcome, WiringError> {
    let started = Instant::now();
    if config.run.lockstep && config.data.speed == 0.0 {
        println!(
            "note: run.lockstep holds for the in-process transport only; over NATS the \
             collector does not wait for the other agents, so signals, orders and risk \
             stops act later than in a backtest (pace the data with data.speed and \
             data.stagger for a run that matches the backtest)"
        );
    }
    // A run starts from the beginning of its data: the risk state an
    // earlier run's agent saved is not this run's.
    let risk_state = config.run.output_dir.join(crate::run::RISK_STATE_FILE);
    agent_risk::StateFile::discard(&risk_state).map_err(|e| failed(e.to_string()))?;
    let mut nats = config.bus.nats().map_err(WiringError::Config)?;
    let mut run_token = None;
    let server = match config.bus.nats_server.trim() {
        "" => None,
        path => {
            // Secure by default: a server started here always wants a
            // token, the configured one or one made for this run.
            let generated = nats.token.is_none();
            let token = nats
                .token
                .get_or_insert_with(bus_core::nats::local_server::generate_token)
                .clone();
            let store = config.run.output_dir.join("jetstream");
            let jetstream = !config.bus.jetstream.families.is_empty();
            let server = start_server(
                path,
                &config.bus.nats_url,
                jetstream.then_some(store.as_path()),
                &token,
                generated,
            )?;
            run_token = generated.then_some(token);
            Some(server)
        }
    };
    let mut server = ServerWatch {
        server,
        restarts: 0,
        limit: config.bus.server_restarts,
    };
    let client = bus_core::nats::connect(&nats)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if let Some(js) = &nats.jetstream {
        if let Some(warning) =
            bus_core::nats::jetstream::server_warning(&client.server_info().version)
        {
            println!("warning: {warning}");
        }
        // A run replays its data from the start: nothing an earlier run
        // left in the streams (messages, consumers of agents configured
        // differently then) may reach it. Only streams with our mark go,
        // unless --fresh says otherwise.
        let deleted = bus_core::nats::jetstream::Reliable::reset(
            client.clone(),
            &nats.prefix,
            &js.families,
            fresh,
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
        if !deleted.is_empty() {
            println!(
                "JetStream: deleted {}, left by an earlier run (a run starts from empty streams)",
                deleted.join(", ")
            );
        }
    }
    let bus = bus_core::nats::NatsBus::with_client(client.clone(), &nats)
        .await
        .map_err(|e| failed(e.to_string()))?;

    // All traffic, to know when the pipeline has drained; candles, for the
    // progress line.
    let traffic = Arc::new(AtomicU64::new(0));
    let mut everything = client
        .subscribe(format!("{}.>", nats.prefix))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let counter = traffic.clone();
    let candle_subjects = format!("{}.data.candle.", nats.prefix);
    let progress = control.progress.clone();
    let watcher = tokio::spawn(async move {
        while let Some(message) = everything.next().await {
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(progress) = &progress {
                if message.subject.starts_with(candle_subjects.as_str()) {
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });

    // The report agent, here.
    let trade_log = config.run.output_dir.join("trades.csv");
    let report_hooks = crate::run::Hooks::default();
    let report = build_agent(
        AgentKind::Report,
        config,
        false,
        &trade_log,
        &report_hooks,
        &crate::run::RiskMemory::None,
    )?;
    let report_stop = StopSignal::new();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let report_task = {
        let (bus, stop) = (bus.clone(), report_stop.clone());
        tokio::spawn(async move {
            bus_core::nats::run_agent(AgentSpec::new(report), &bus, stop, Some(ready)).await
        })
    };
    subscribed
        .await
        .map_err(|_| failed("the report agent could not subscribe"))?;

    // The agents, in dependency order, the collector last.
    let mut order = config.agents.start_order().map_err(WiringError::Config)?;
    order.retain(|kind| *kind != AgentKind::Report);
    order.sort_by_key(|kind| kind.is_source());
    let order: Vec<(AgentKind, Partition)> = order
        .into_iter()
        .flat_map(|kind| {
            let count = config.agents.get(kind).instances.max(1);
            (0..count).map(move |index| {
                let instance = Partition::new(index, count).expect("index < count");
                (kind, instance)
            })
        })
        .collect();
    let launcher = Launcher {
        exe: std::env::current_exe().map_err(|e| failed(format!("cannot find bistoury: {e}")))?,
        config_file: config_file.map(Path::to_path_buf),
        output_dir: config.run.output_dir.clone(),
        run_token,
        metrics: config.run.metrics_address(),
        order: order.clone(),
        figures: Arc::default(),
    };
    for &(kind, instance) in &order {
        if let Some(address) = launcher.metrics_address(kind, instance) {
            println!(
                "metrics:   http://{address}/metrics (agent {})",
                label(kind, instance)
            );
        }
    }
    let policies: std::collections::BTreeMap<AgentKind, RestartPolicy> = config
        .agents
        .all()
        .into_iter()
        .map(|(kind, s)| (kind, s.policy()))
        .collect();
    let mut agents: Vec<AgentProcess> = Vec::new();
    let mut names: Vec<bus_core::AgentId> = order
        .iter()
        .map(|(kind, instance)| bus_core::AgentId::new(label(*kind, *instance)))
        .collect();
    names.push(bus_core::AgentId::new(AgentKind::Report.name()));
    let mut announcer = Announcer::new(names, false);
    let mut outcome = supervise(
        &launcher,
        &order,
        &policies,
        &mut agents,
        control,
        &mut server,
        (&bus, &mut announcer),
    )
    .await;

    // Stopped early: the data stops first, so that what is left to drain
    // is what was already published.
    if control.stop.is_stopped() {
        let mut collectors: Vec<&mut AgentProcess> =
            agents.iter_mut().filter(|a| a.kind.is_source()).collect();
        tokio::task::block_in_place(|| stop_processes(&mut collectors, STOP_GRACE));
    }
    // Drain: wait for quiet, say the run is over (a trader closing at the
    // end trades once more), wait for quiet again, then stop everyone.
    if outcome.is_ok() {
        outcome = drain(&bus, &traffic, &mut server).await;
    }
    if outcome.is_ok() {
        announce(&bus, &mut announcer, false).await;
        outcome = drain(&bus, &traffic, &mut server).await;
    }
    let restarts: u32 = agents.iter().map(|a| a.restarts).sum();
    let mut all: Vec<&mut AgentProcess> = agents.iter_mut().collect();
    let statuses = tokio::task::block_in_place(|| stop_processes(&mut all, STOP_GRACE));
    for (agent, status) in agents.iter().zip(statuses) {
        if outcome.is_ok() && !agent.isolated && !status.is_some_and(|s| s.success()) {
            outcome = Err(failed(format!(
                "agent {} did not stop cleanly ({status:?})",
                label(agent.kind, agent.instance)
            )));
        }
    }
    report_stop.stop();
    let (_, report_figures) = report_task
        .await
        .map_err(|e| failed(format!("report agent: {e}")))?
        .map_err(|e| failed(format!("report agent: {e}")))?;
    watcher.abort();
    let mut report = report_hooks
        .report
        .take()
        .ok_or(WiringError::NoOutcome(AgentKind::Report))?;
    // Every process's figures: the agents' as they said when they
    // stopped, the report agent's (this process) as it stopped here.
    let mut figures = launcher
        .figures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    figures.insert(AgentKind::Report.name().into(), report_figures);
    let restarts_by_agent: Vec<(String, u32)> = (agents.iter())
        .map(|a| (label(a.kind, a.instance), a.restarts))
        .chain([(AgentKind::Report.name().into(), 0)])
        .collect();
    let bus = BusSummary::distributed(&figures);
    report.bus = Some(bus.with_agents(&restarts_by_agent, &report.agent_state_changes));
    let trade_log_rows = std::fs::read_to_string(&trade_log)
        .map(|t| t.lines().count().saturating_sub(1) as u64)
        .unwrap_or(0);
    Ok(RunOutcome {
        mode: Mode::Processes,
        report,
        trade_log,
        trade_log_rows,
        messages_published: traffic.load(Ordering::Relaxed),
        restarts,
        stopped_early: control.stop.is_stopped(),
        unhealthy_agents: Vec::new(),
        elapsed: started.elapsed(),
        failure: outcome.err().map(|e| e.to_string()),
        model_spent: None,
    })
}

/// How long a stopping agent process may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Waits until the traffic has been quiet (and, with JetStream families,
/// every consumer has acknowledged everything), watching the server.
async fn drain(
    bus: &bus_core::nats::NatsBus,
    traffic: &AtomicU64,
    server: &mut ServerWatch,
) -> Result<(), WiringError> {
    let drain_started = Instant::now();
    let mut last = traffic.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while drain_started.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.check().await?;
        let now = traffic.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        if quiet_since.elapsed() >= QUIET {
            // JetStream families: quiet is not enough (a redelivery may
            // be waiting out its ack wait); every consumer must have
            // acknowledged everything.
            match bus.reliable() {
                None => return Ok(()),
                Some(reliable) => match reliable.unacknowledged().await {
                    Ok(0) => return Ok(()),
                    Ok(n) => tracing::info!(unacknowledged = n, "waiting for JetStream consumers"),
                    Err(error) => tracing::warn!(%error, "cannot read JetStream streams"),
                },
            }
        }
    }
    Ok(())
}

/// Starts the agents and watches them until the collector has finished (or
/// the run is stopped); restarts crashed ones per policy.
/// Publishes the announcer's `system.startup` (`start`) or
/// `system.shutdown`; a failure is logged (the run goes on without it).
async fn announce(bus: &bus_core::nats::NatsBus, announcer: &mut Announcer, start: bool) {
    use bus_core::Agent;
    let mut out = bus_core::Outbox::new();
    let _ = match start {
        true => announcer.on_start(&mut out),
        false => announcer.on_stop(&mut out),
    };
    for envelope in out.drain() {
        if let Err(error) = bus.publish(&envelope, &StopSignal::new()).await {
            tracing::warn!(topic = %envelope.topic, %error, "cannot announce");
        }
    }
}

async fn supervise(
    launcher: &Launcher,
    order: &[(AgentKind, Partition)],
    policies: &std::collections::BTreeMap<AgentKind, RestartPolicy>,
    agents: &mut Vec<AgentProcess>,
    control: &RunControl,
    server: &mut ServerWatch,
    (bus, announcer): (&bus_core::nats::NatsBus, &mut Announcer),
) -> Result<(), WiringError> {
    for &(kind, instance) in order {
        let child = tokio::task::block_in_place(|| launcher.start(kind, instance))?;
        agents.push(AgentProcess {
            kind,
            instance,
            child,
            restarts: 0,
            isolated: false,
        });
    }
    announce(bus, announcer, true).await;
    loop {
        if control.stop.is_stopped() {
            return Ok(());
        }
        server.check().await?;
        for agent in agents.iter_mut().filter(|a| !a.isolated) {
            let Ok(Some(status)) = agent.child.try_wait() else {
                continue;
            };
            if agent.kind.is_source() && status.success() {
                return Ok(());
            }
            let policy = policies
                .get(&agent.kind)
                .copied()
                .unwrap_or(RestartPolicy::Shutdown);
            let restartable = agent.kind.restartable();
            match policy {
                RestartPolicy::Restart { max_restarts, .. }
                    if restartable && agent.restarts < max_restarts =>
                {
                    agent.restarts += 1;
                    let wait = policy.backoff(agent.restarts);
                    println!(
                        "agent {} exited ({status}); restart {} of {max_restarts} in {wait:?}",
                        label(agent.kind, agent.instance),
                        agent.restarts
                    );
                    tokio::time::sleep(wait).await;
                    agent.child =
                        tokio::task::block_in_place(|| launcher.start(agent.kind, agent.instance))?;
                }
                RestartPolicy::Isolate if !agent.kind.is_source() => {
                    println!(
                        "agent {} exited ({status}); isolated, the run carries on",
                        label(agent.kind, agent.instance)
                    );
                    agent.isolated = true;
                }
                _ => {
                    return Err(failed(format!(
                        "agent {} exited ({status}) and its policy does not restart it",
                        label(agent.kind, agent.instance)
                    )))
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
