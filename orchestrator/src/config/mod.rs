//! Configuration: one TOML file layered on the embedded default, then
//! `BISTOURY__SECTION__KEY` environment variables (`BISTOURY__TRADER__FEE_RATE=0.002`).
//!
//! Unknown keys are errors. Loading does not stop at the first problem:
//! it keeps deserializing with each offending key set aside, then runs every
//! section's validation, and reports everything together with its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_collector::venue::feed::FeedSettings;
use agent_collector::venue::hyperliquid::HyperLiquid;
use agent_collector::venue::Channels;
use agent_collector::{BadRowPolicy, SymbolSpec, SyntheticSpec};
use agent_risk::RiskConfig;
use agent_signals::SignalsConfig;
use agent_trader::TraderConfig;
use bus_core::model::payload::Symbol;
use serde::Deserialize;

use crate::agents::AgentKind;

mod data;

pub use data::{
    interval_label, interval_label_ms, CandleFile, DataConfig, DataKind, DataSource, LiveMarket,
    SymbolConfig, SymbolEntry, HYPERLIQUID_INTERVALS,
};

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BistouryConfig {
    /// `[run]`.
    pub run: RunConfig,
    /// `[data]`.
    pub data: DataConfig,
    /// `[signals]`.
    pub signals: SignalsConfig,
    /// `[trader]`.
    pub trader: TraderConfig,
    /// `[risk]`.
    pub risk: RiskConfig,
    /// `[agents.<name>]`.
    pub agents: AgentsConfig,
    /// `[bus]`.
    pub bus: BusConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[report]`.
    pub report: ReportConfig,
    /// The merged configuration as loaded (default, file, environment),
    /// keys sorted: what a report's configuration hash is taken of.
    #[serde(skip)]
    pub effective: serde_json::Value,
}

/// Where `bistoury run` runs the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// All agents in this process, on the queued in-process bus.
    InProcess,
    /// Every agent in its own child process, talking over the NATS server
    /// at `nats_url` (the report is made in this process).
    Nats,
}

/// `[bus]`: how agents talk, and the NATS server for distributed mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `in_process` or `nats`.
    pub transport: Transport,
    /// A `nats-server` executable `bistoury run` starts itself (on the
    /// loopback port of `nats_url`) and stops at the end; empty: use a
    /// server that is already running.
    pub nats_server: String,
    /// Times `bistoury run` starts the server it started (`nats_server`)
    /// again after it died, before stopping the run.
    pub server_restarts: u32,
    /// Server URL, or several (a NATS cluster's seed servers, as a list
    /// or comma-separated): the client connects to one and fails over to
    /// the others.
    #[serde(deserialize_with = "one_or_many_urls")]
    pub nats_url: String,
    /// Subjects are `<subject_prefix>.<topic>`.
    pub subject_prefix: String,
    /// Environment variable holding the NATS token, if the server needs one.
    pub token_env: Option<String>,
    /// File holding the NATS token (used when the variable is not set);
    /// empty: none.
    pub token_file: String,
    /// `[bus.jetstream]`: the topic families carried by JetStream.
    pub jetstream: JetStreamConfig,
    /// What core-NATS publishing does while the server is unreachable
    /// (`buffer` or `block`).
    pub when_disconnected: bus_core::nats::WhenDisconnected,
    /// How agents write envelopes (`json` or `binary`; they read both).
    pub wire_format: bus_core::model::WireFormat,
    /// `default`, or `low`: fewer threads on a message's way (see
    /// [`Latency::Low`]).
    #[serde(default)]
    pub latency: Latency,
}

/// `[bus] latency`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// Every agent of a run in process on a thread of its own; an agent
    /// process's NATS connection on the runtime's workers and its agent on
    /// a thread of its own: agents work in parallel.
    #[default]
    Default,
    /// Every agent of a run in process as a task on one thread; an agent
    /// process's connection and agent on one thread: a message from one
    /// agent to the next wakes no other thread (in process: tick to order
    /// about half at p50, BENCHMARKS.md). An agent busy in its handler holds
    /// the others (in process) or its connection's reading (a process)
    /// meanwhile: a paced collector's wait for its next bar, an LLM
    /// strategy's call.
    Low,
}

/// A URL, or a list of them, as one comma-separated text.
fn one_or_many_urls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(d)? {
        Urls::One(url) => url,
        Urls::Many(urls) => urls.join(","),
    })
}

/// `[bus.jetstream]`: which topic families travel through JetStream
/// (at-least-once, durable consumers) when the transport is NATS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// First topic segments (`data`, `signal`, `trade`, `risk`...); empty:
    /// everything on core NATS.
    pub families: Vec<String>,
    /// A delivered message not acknowledged within this is delivered again.
    pub ack_wait_ms: u64,
    /// Deliveries before a message is dead-lettered.
    pub max_deliver: i64,
    /// Waits before successive redeliveries after a failure.
    pub backoff_ms: Vec<u64>,
    /// How long a stream drops a republished message id.
    pub duplicate_window_secs: u64,
    /// Messages a consumer may hold unacknowledged.
    pub max_ack_pending: i64,
    /// At-least-once publishes carry the envelope id so a retried one is
    /// stored once (exactly-once ones always do).
    pub deduplicate_publishes: bool,
    /// Copies of each stream a cluster keeps (1 to 5; 3 survives the loss
    /// of one node of three).
    pub replicas: usize,
}

impl JetStreamConfig {
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (i, family) in self.families.iter().enumerate() {
            let valid = !family.is_empty()
                && family
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                errors.push(format!(
                    "bus.jetstream.families[{i}]: {family:?} must be one topic segment (letters, digits, _ or -)"
                ));
            }
        }
        if self.ack_wait_ms == 0 {
            errors.push("bus.jetstream.ack_wait_ms: must be positive".into());
        }
        if self.max_deliver < 1 {
            errors.push("bus.jetstream.max_deliver: must be at least 1".into());
        }
        if self.duplicate_window_secs == 0 {
            errors.push("bus.jetstream.duplicate_window_secs: must be positive".into());
        }
        if self.max_ack_pending < 1 {
            errors.push("bus.jetstream.max_ack_pending: must be at least 1".into());
        }
        if !(1..=5).contains(&self.replicas) {
            errors.push(
                "bus.jetstream.replicas: must be 1 to 5 (NATS keeps at most 5 copies)".into(),
            );
        }
        errors
    }

    /// The settings the NATS transport takes; `None` with no families.
    pub fn settings(&self) -> Option<bus_core::nats::jetstream::JetStreamSettings> {
        (!self.families.is_empty()).then(|| bus_core::nats::jetstream::JetStreamSettings {
            families: self.families.clone(),
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            max_deliver: self.max_deliver,
            backoff: self
                .backoff_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
            max_ack_pending: self.max_ack_pending,
            deduplicate_publishes: self.deduplicate_publishes,
            replicas: self.replicas,
            ..Default::default()
        })
    }
}

impl BusConfig {
    /// The NATS settings, with the token read from the environment variable
    /// `token_env` or else from `token_file`. The token is never logged or
    /// printed (`NatsSettings`'s `Debug` hides it).
    pub fn nats(&self) -> Result<bus_core::nats::NatsSettings, String> {
        let from_env = self
            .token_env
            .as_ref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|t| !t.is_empty());
        let token = match (from_env, self.token_file.trim()) {
            (Some(token), _) => Some(token),
            (None, "") => None,
            (None, path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("bus.token_file: cannot read {path}: {e}"))?
                    .trim()
                    .to_string(),
            ),
        };
        Ok(bus_core::nats::NatsSettings {
            url: self.nats_url.clone(),
            prefix: self.subject_prefix.clone(),
            token,
            jetstream: self.jetstream.settings(),
            when_disconnected: self.when_disconnected,
            wire_format: self.wire_format,
        })
    }
}

/// What happens when an agent panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPanic {
    /// Start a fresh instance.
    Restart,
    /// Carry on without it.
    Isolate,
    /// Stop the run.
    Shutdown,
}

/// One agent's supervision and dependencies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// Policy on panic.
    pub on_panic: OnPanic,
    /// Restarts allowed (policy `restart`).
    #[serde(default = "default_restarts")]
    pub max_restarts: u32,
    /// First wait before a restart, ms.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// Longest wait before a restart, ms.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Agents that must start first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Processes running this agent side by side (distributed mode; agents
    /// that key their state, such as signals by symbol, split the keys).
    #[serde(default = "one")]
    pub instances: u32,
}

fn one() -> u32 {
    1
}

fn default_restarts() -> u32 {
    3
}
fn default_backoff() -> u64 {
    100
}
fn default_max_backoff() -> u64 {
    5000
}

impl AgentSettings {
    /// The bus-core policy.
    pub fn policy(&self) -> bus_core::agent::supervision::RestartPolicy {
        use bus_core::agent::supervision::RestartPolicy;
        match self.on_panic {
            OnPanic::Restart => RestartPolicy::Restart {
                max_restarts: self.max_restarts,
                backoff: std::time::Duration::from_millis(self.backoff_ms),
                max_backoff: std::time::Duration::from_millis(
                    self.max_backoff_ms.max(self.backoff_ms),
                ),
            },
            OnPanic::Isolate => RestartPolicy::Isolate,
            OnPanic::Shutdown => RestartPolicy::Shutdown,
        }
    }
}

/// `[agents]`: one table per agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// The collector.
    pub collector: AgentSettings,
    /// The signal agent.
    pub signals: AgentSettings,
    /// The risk manager.
    pub risk: AgentSettings,
    /// The trader.
    pub trader: AgentSettings,
    /// The report.
    pub report: AgentSettings,
}

impl AgentsConfig {
    /// `(agent, settings)` in declaration order.
    pub fn all(&self) -> [(AgentKind, &AgentSettings); 5] {
        [
            (AgentKind::Collector, &self.collector),
            (AgentKind::Signals, &self.signals),
            (AgentKind::Risk, &self.risk),
            (AgentKind::Trader, &self.trader),
            (AgentKind::Report, &self.report),
        ]
    }

    /// One agent's settings.
    pub fn get(&self, kind: AgentKind) -> &AgentSettings {
        match kind {
            AgentKind::Collector => &self.collector,
            AgentKind::Signals => &self.signals,
            AgentKind::Risk => &self.risk,
            AgentKind::Trader => &self.trader,
            AgentKind::Report => &self.report,
        }
    }

    /// Start order, or the configuration error (unknown dependency, cycle).
    pub fn start_order(&self) -> Result<Vec<AgentKind>, String> {
        let mut registry = bus_core::agent::registry::Registry::new();
        for (name, settings) in self.all() {
            let deps = settings
                .depends_on
                .iter()
                .map(bus_core::AgentId::new)
                .collect();
            registry
                .register(bus_core::AgentId::new(name.name()), Vec::new(), deps)
                .map_err(|e| format!("agents.{name}: {e}"))?;
        }
        registry
            .start_order()
            .map(|order| {
                order
                    .iter()
                    .map(|a| a.as_str().parse().expect("registered from AgentKind names"))
                    .collect()
            })
            .map_err(|e| format!("agents: {e}"))
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, settings) in self.all() {
            if settings.on_panic == OnPanic::Restart && !name.restartable() {
                errors.push(format!(
                    "agents.{name}.on_panic: \"restart\" would lose the {name}'s state (positions, data position, figures); use \"shutdown\" or \"isolate\""
                ));
            }
            if settings.backoff_ms == 0 && settings.on_panic == OnPanic::Restart {
                errors.push(format!("agents.{name}.backoff_ms: must be positive"));
            }
        }
        if let Err(e) = self.start_order() {
            errors.push(e);
        }
        errors
    }
}

/// `[run]`: where output goes and how long shutdown may take.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Output directory for report.json, trades.csv and logs.
    pub output_dir: PathBuf,
    /// Seconds to drain queues at shutdown.
    pub shutdown_timeout_secs: u64,
    /// `run` only: ms between health checks (0 = off).
    #[serde(default)]
    pub health_check_interval_ms: u64,
    /// `run` only: an agent silent for this long is unhealthy.
    #[serde(default)]
    pub heartbeat_ttl_ms: u64,
    /// `run` only: the collector publishes the next time step only once
    /// every agent has worked through the last one (see
    /// [`QueuedOptions::lockstep`](bus_core::runtime::QueuedOptions)).
    pub lockstep: bool,
    /// `run` only: serve Prometheus metrics at `http://<this>/metrics`, a
    /// loopback address (`127.0.0.1:9464`); `off` by default.
    #[serde(default = "off")]
    pub metrics: String,
    /// `run` only: serve the live status page at `http://<this>/`, a
    /// loopback address (`127.0.0.1:8080`); `off` by default.
    #[serde(default = "off")]
    pub status: String,
}

fn off() -> String {
    "off".into()
}

impl RunConfig {
    /// Where Prometheus metrics are served, if anywhere (`run.metrics`,
    /// checked when the configuration was loaded).
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        crate::metrics::listen_address(&self.metrics).ok().flatten()
    }
}

/// `[report]`: how the report reads the run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Days in a year of returns, for annualised ratios: 365 for markets
    /// that trade every day (crypto), 252 for exchange trading days
    /// (equities). Bars a year = this many days of bars of the data's
    /// interval.
    pub year_days: u32,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Console level (`error`, `warn`, `info`, `debug`, `trace`) unless `RUST_LOG` is set.
    pub level: String,
    /// Directory of rolling log files; relative paths are under `run.output_dir`.
    pub directory: Option<PathBuf>,
}

/// The environment variable that sets `key` (`trader.fee_rate` ->
/// `BISTOURY__TRADER__FEE_RATE`).
fn variable_for(key: &str) -> String {
    format!("BISTOURY__{}", key.replace('.', "__").to_uppercase())
}

/// Everything wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration{}:\n  - {}", source_name.as_ref().map(|s| format!(" in {s}")).unwrap_or_default(), errors.join("\n  - "))]
pub struct ConfigError {
    /// The file, when one was given.
    pub source_name: Option<String>,
    /// Each problem, naming its key.
    pub errors: Vec<String>,
}

impl BistouryConfig {
    /// The embedded default (environment overrides not applied).
    pub fn embedded_default() -> Self {
        Self::load(None, &[]).expect("the embedded default configuration is valid")
    }

    /// Loads the default, layers `file` and the given environment
    /// variables (`(name, value)` pairs; pass `std::env::vars()` in
    /// production), and validates everything.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let source_name = file.map(|f| f.display().to_string());
        let fail = |errors: Vec<String>| ConfigError {
            source_name: source_name.clone(),
            errors,
        };
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            if !path.exists() {
                return Err(fail(vec![format!("{}: no such file", path.display())]));
            }
            if path.is_dir() {
                return Err(fail(vec![format!(
                    "{}: is a directory, not a configuration file",
                    path.display()
                )]));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let overrides: std::collections::HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("BISTOURY__"))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("BISTOURY")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides.clone())),
        );
        let merged = builder.build().map_err(|e| fail(vec![e.to_string()]))?;
        let tree: serde_json::Value = merged
            .try_deserialize()
            .map_err(|e| fail(vec![e.to_string()]))?;
        Self::from_tree(tree, file, &overrides)
    }

    /// A configuration from its merged tree (the embedded default, a file
    /// and the environment's `overrides` layered), relative paths resolved
    /// against `file`'s folder; every problem at once, as [`load`](Self::load)
    /// says them.
    pub fn from_tree(
        mut tree: serde_json::Value,
        file: Option<&Path>,
        overrides: &std::collections::HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let source_name = file.map(|f| f.display().to_string());
        let fail = |errors: Vec<String>| ConfigError {
            source_name: source_name.clone(),
            errors,
        };
        // `data.source` is `data.kind`'s other name: given, it wins over
        // the kind the default sets.
        if let Some(data) = tree.get_mut("data").and_then(|d| d.as_object_mut()) {
            if let Some(source) = data.remove("source") {
                data.insert("kind".into(), source);
            }
        }
        let defaults = default_tree();
        let mut errors = Vec::new();
        let config = loop {
            match serde_path_to_error::deserialize::<_, BistouryConfig>(&tree) {
                Ok(config) => break Some(config),
                Err(e) => {
                    let path = e.path().to_string();
                    let message = e.into_inner().to_string();
                    let unknown = unknown_field(&message).map(|f| {
                        // The path may or may not already end with the field.
                        if path == "." {
                            f.to_string()
                        } else if path == f || path.ends_with(&format!(".{f}")) {
                            path.clone()
                        } else {
                            format!("{path}.{f}")
                        }
                    });
                    // Set the offending key aside (an unknown key is dropped, a
                    // bad value goes back to its default) and look for more.
                    let recovered = match &unknown {
                        Some(key) => remove_path(&mut tree, key),
                        None => match value_at(&defaults, &path).cloned() {
                            Some(default) => set_path(&mut tree, &path, default),
                            None => remove_path(&mut tree, &path),
                        },
                    };
                    errors.push(format!("{}: {message}", unknown.unwrap_or(path)));
                    if !recovered || errors.len() > 100 {
                        break None;
                    }
                }
            }
        };
        // A problem with a key an environment variable set says so.
        let from_environment = |errors: Vec<String>| -> Vec<String> {
            errors
                .into_iter()
                .map(|error| {
                    let key = error.split(':').next().unwrap_or_default();
                    let key = key.split('[').next().unwrap_or_default();
                    let variable = variable_for(key);
                    match overrides.contains_key(&variable) {
                        true => format!("{error} (set by the environment variable {variable})"),
                        false => error,
                    }
                })
                .collect()
        };
        let Some(config) = config else {
            return Err(fail(from_environment(errors)));
        };
        let mut config = config.resolve_paths(file);
        errors.extend(config.validate());
        if errors.is_empty() {
            config.effective = tree;
            Ok(config)
        } else {
            Err(fail(from_environment(errors)))
        }
    }

    /// Every semantic problem, by key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        errors.extend(self.data.validate());
        for (key, value) in [("metrics", &self.run.metrics), ("status", &self.run.status)] {
            if let Err(problem) = crate::metrics::listen_address(value) {
                errors.push(format!("run.{key}: {problem}"));
            }
        }
        if bus_core::Topic::new(&self.bus.subject_prefix).is_err() {
            errors.push(format!(
                "bus.subject_prefix: {:?} must be dot-separated segments without wildcards or spaces",
                self.bus.subject_prefix
            ));
        }
        errors.extend(self.bus.jetstream.validate());
        for (name, settings) in self.agents.all() {
            let key = format!("agents.{name}.instances");
            if settings.instances == 0 {
                errors.push(format!("{key}: must be at least 1"));
            } else if settings.instances > 1 {
                if !name.partitioned() {
                    errors.push(format!(
                        "{key}: {name} keeps state that instances cannot split; only {} can run as several instances",
                        AgentKind::names_where(AgentKind::partitioned)
                    ));
                } else if self.bus.transport != Transport::Nats {
                    errors.push(format!(
                        "{key}: several instances need bus.transport = \"nats\" (one process each)"
                    ));
                }
            }
        }
        if !(1..=366).contains(&self.report.year_days) {
            errors.push(format!(
                "report.year_days: {} must be a number of days in a year (365 for crypto, 252 for equities)",
                self.report.year_days
            ));
        }
        if self.run.health_check_interval_ms > 0
            && self.run.heartbeat_ttl_ms <= self.run.health_check_interval_ms
        {
            errors.push(
                "run.heartbeat_ttl_ms: must be longer than run.health_check_interval_ms".into(),
            );
        }
        errors.extend(self.signals.validate("signals"));
        if self.signals.model().is_some() && self.bus.transport == Transport::Nats {
            errors.push(
                "signals.llm: the model strategy runs in process (backtest, or run with \
                 bus.transport = \"in_process\"): one advisor keeps a run's budget and answers, \
                 which agents in processes of their own would not share"
                    .to_string(),
            );
        }
        errors.extend(self.trader.validate("trader"));
        errors.extend(self.risk.validate("risk"));
        errors.extend(self.agents.validate());
        if !["error", "warn", "info", "debug", "trace", "off"].contains(&self.log.level.as_str()) {
            errors.push(format!(
                "log.level: {:?} is not one of error, warn, info, debug, trace, off",
                self.log.level
            ));
        }
        errors
    }

    /// Input paths (the data file, the model's answer file and key file)
    /// are relative to the config file's folder.
    fn resolve_paths(mut self, file: Option<&Path>) -> Self {
        let Some(dir) = file.and_then(Path::parent) else {
            return self;
        };
        let llm = self.signals.llm.as_mut();
        let (cache, key) = match llm {
            Some(llm) => (llm.cache.as_mut(), llm.api_key_file.as_mut()),
            None => (None, None),
        };
        for path in [self.data.path.as_mut(), cache, key].into_iter().flatten() {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        self
    }
}

/// The embedded default as a tree, for putting back a bad value's default.
fn default_tree() -> serde_json::Value {
    config::Config::builder()
        .add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ))
        .build()
        .and_then(|c| c.try_deserialize())
        .unwrap_or_default()
}

pub(crate) fn value_at<'a>(
    tree: &'a serde_json::Value,
    path: &str,
) -> Option<&'a serde_json::Value> {
    let mut node = tree;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, index) = split_index(part);
        node = node.get(name)?;
        if let Some(i) = index {
            node = node.get(i)?;
        }
    }
    Some(node)
}

/// The node at a dotted path (`data.symbols[1].symbol`), for changing it.
fn node_mut<'a>(
    tree: &'a mut serde_json::Value,
    parts: &[&str],
) -> Option<&'a mut serde_json::Value> {
    let mut node = tree;
    for part in parts {
        let (name, index) = split_index(part);
        node = node.get_mut(name)?;
        if let Some(i) = index {
            node = node.get_mut(i)?;
        }
    }
    Some(node)
}

fn path_parts(path: &str) -> Vec<&str> {
    path.split('.').filter(|p| !p.is_empty()).collect()
}

pub(crate) fn set_path(tree: &mut serde_json::Value, path: &str, value: serde_json::Value) -> bool {
    match node_mut(tree, &path_parts(path)) {
        Some(node) => {
            *node = value;
            true
        }
        None => false,
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Removes the value at a dotted path (`trader.fee_rate`, `data.symbols[1].x`).
fn remove_path(tree: &mut serde_json::Value, path: &str) -> bool {
    let parts = path_parts(path);
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let Some(parent) = node_mut(tree, parents) else {
        return false;
    };
    let (name, index) = split_index(last);
    match index {
        Some(i) => parent
            .get_mut(name)
            .and_then(|v| v.as_array_mut())
            .filter(|a| i < a.len())
            .map(|a| a.remove(i))
            .is_some(),
        None => parent
            .as_object_mut()
            .and_then(|o| o.remove(name))
            .is_some(),
    }
}

fn split_index(part: &str) -> (&str, Option<usize>) {
    match part.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (part, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_keys_reach_the_transport_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("js.toml");
        std::fs::write(
            &file,
            "[bus.jetstream]\nfamilies = [\"data\"]\nmax_deliver = 7\n",
        )
        .unwrap();
        let settings = |env: &[(String, String)]| {
            BistouryConfig::load(Some(&file), env)
                .unwrap()
                .bus
                .jetstream
                .settings()
                .unwrap()
        };
        let defaults = settings(&[]);
        assert_eq!(defaults.families, ["data"]);
        assert_eq!(defaults.max_deliver, 7);
        assert!(defaults.deduplicate_publishes, "on unless configured off");
        let off = settings(&[(
            "BISTOURY__BUS__JETSTREAM__DEDUPLICATE_PUBLISHES".into(),
            "false".into(),
        )]);
        assert!(!off.deduplicate_publishes);
    }
}
