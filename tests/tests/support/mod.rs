//! Shared by the end-to-end test files: running `bistoury`, and a real
//! `nats-server`.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use std::time::Instant;

use bus_core::nats::local_server::LocalServer;

/// Tests of a binary run side by side; a 3-node cluster losing nodes on
/// these 2 cores needs the machine to itself: starved of CPU next to the
/// other NATS tests, its JetStream groups have been seen to stall after the
/// second node loss. A cluster test holds [`alone`], the others
/// [`beside_others`].
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs with no other test of this binary (see [`MACHINE`]).
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Runs beside other tests, never beside one that runs [`alone`].
pub async fn beside_others() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// [`beside_others`], for a test that is not async.
pub fn beside_others_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    MACHINE.blocking_read()
}

/// `GET path` on a loopback `port`: the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Every file in `dir` with its bytes, to see that nothing changed.
pub fn files_in(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut all: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    all.sort();
    all
}

/// What a run traded, from its `report.json` in `dir`: the report without
/// its provenance (mode, configuration) and without the bus's own figures
/// (how the agents were dispatched, not what they did).
pub fn traded_figures(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let mut report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fields = report.as_object_mut().expect("a JSON object");
    assert!(fields.remove("provenance").is_some(), "a provenance");
    fields.remove("bus");
    serde_json::to_string_pretty(&report).unwrap()
}

/// One market's candle file: legs of `leg` bars drifting up by `drift`
/// per bar then down, with seeded noise (xorshift) of `noise` around it and
/// wicks `wick` beyond open and close.
pub struct TrendingMarket {
    /// The market.
    pub symbol: &'static str,
    /// The first bar's open time, ms.
    pub start_ms: i64,
    /// The bars' length, ms.
    pub step_ms: i64,
    /// The noise's seed.
    pub seed: u64,
    /// Bars a leg.
    pub leg: usize,
    /// Drift a bar (a fraction).
    pub drift: f64,
    /// Width of the noise (a fraction).
    pub noise: f64,
    /// Wicks beyond the body (a fraction).
    pub wick: f64,
    /// Every bar's volume.
    pub volume: u32,
}

impl TrendingMarket {
    /// Writes `bars` bars to `path`; returns each bar's (time, close).
    pub fn write(&self, path: &Path, bars: usize) -> Vec<(i64, f64)> {
        let mut text = String::from("open_time_ms,symbol,open,high,low,close,volume\n");
        let mut closes = Vec::new();
        let mut state = self.seed;
        let mut price = 100.0_f64;
        for i in 0..bars {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let trend = match (i / self.leg) % 2 {
                0 => self.drift,
                _ => -self.drift,
            };
            let open = price;
            let close = ((open * (1.0 + trend + noise * self.noise)) * 100.0).round() / 100.0;
            let time = self.start_ms + i as i64 * self.step_ms;
            text.push_str(&format!(
                "{time},{},{open:.2},{:.2},{:.2},{close:.2},{}\n",
                self.symbol,
                open.max(close) * (1.0 + self.wick),
                open.min(close) * (1.0 - self.wick),
                self.volume
            ));
            closes.push((time, close));
            price = close;
        }
        std::fs::write(path, text).unwrap();
        closes
    }
}

/// `bistoury ARGS` in `dir` to its end, errors logged only.
pub fn run_bistoury(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs")
}

/// `orchestrator/examples/lone_crossover.toml` (one moving-average
/// crossover, no stops, no risk halt) with the periods `fast`/`slow` and
/// `trader` lines added to its `[trader]` table.
pub fn lone_crossover(fast: usize, slow: usize, trader: &str) -> String {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../orchestrator/examples/lone_crossover.toml");
    std::fs::read_to_string(example)
        .unwrap()
        .replace(
            "fast = 10\nslow = 20",
            &format!("fast = {fast}\nslow = {slow}"),
        )
        .replace("[trader]\n", &format!("[trader]\n{trader}\n"))
}

/// Runs `bistoury ARGS` in `dir` to its end (errors logged only) and
/// checks that it succeeded.
pub fn bistoury_succeeds(args: &[&str], dir: &Path) {
    let output = run_bistoury(args, dir);
    assert!(
        output.status.success(),
        "bistoury {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free loopback port.
pub fn free_port() -> u16 {
    bus_core::nats::local_server::free_port().expect("a free loopback port")
}

/// `n` distinct free loopback ports (held together while chosen, so that
/// the kernel cannot hand out one of them twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A nats-server on a free loopback port, stopped on drop.
pub struct NatsServer(LocalServer);

impl NatsServer {
    pub fn start() -> Self {
        Self::start_on_a_free_port(&[], None)
    }

    /// A server with JetStream, keeping its streams under `store`.
    pub fn start_jetstream(store: &Path) -> Self {
        Self::start_on_a_free_port(&bus_core::nats::local_server::jetstream_args(store), None)
    }

    /// A server that wants `token` from its clients.
    pub fn start_with_token(token: &str) -> Self {
        Self::start_on_a_free_port(&[], Some(token))
    }

    /// On a port free when chosen; tests run side by side, so another may
    /// take it first: then on another.
    fn start_on_a_free_port(args: &[String], token: Option<&str>) -> Self {
        let mut tries = 0;
        loop {
            match LocalServer::start_with_token("nats-server", free_port(), args, token) {
                Ok(server) => return Self(server),
                Err(bus_core::nats::local_server::LocalServerError::PortBusy { .. })
                    if tries < 5 =>
                {
                    tries += 1
                }
                Err(e) => {
                    panic!("{e}: is nats-server on PATH? The README's test command installs it")
                }
            }
        }
    }

    pub fn start_with(port: u16, args: Vec<String>) -> Self {
        match LocalServer::start("nats-server", port, &args) {
            Ok(server) => Self(server),
            Err(e) => panic!("{e}: is nats-server on PATH? The README's test command installs it"),
        }
    }

    /// Stops the server (SIGKILL) and starts a fresh one on the same port.
    pub fn restart_after(&mut self, outage: Duration) {
        self.0.restart_after(outage).unwrap();
    }

    /// Stops the server (SIGSTOP): connections stay open, and what clients
    /// send waits unread.
    pub fn pause(&self) {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &self.0.pid().to_string()])
            .status()
            .expect("kill -STOP");
        assert!(status.success(), "kill -STOP failed");
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Starts it again on the same port.
    pub fn respawn(&mut self) {
        self.0.respawn().unwrap();
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

/// Starts `bistoury ARGS` in `dir`; its stdout lines arrive on the channel,
/// which closes when the process's stdout does (so after the process has
/// exited, `iter()` yields every remaining line and ends).
pub fn bistoury(args: &[&str], dir: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// A NATS cluster on loopback: `n` servers with JetStream, routed to each
/// other, each with its store under `store`.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    logs: Vec<std::path::PathBuf>,
}

impl Drop for NatsCluster {
    /// A test failing with a cluster shows the end of each node's log.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, log) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // A lost peer's route retries, once a second, would fill it.
            let lines: Vec<&str> = (text.lines())
                .filter(|l| !l.contains("Error trying to connect to route"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- node {i} log ({}), last lines:\n{}",
                log.display(),
                tail.join("\n")
            );
        }
    }
}

impl NatsCluster {
    pub async fn start(n: usize, store: &Path) -> Self {
        // Tests run side by side: a port free when chosen may be taken by
        // another before its node starts; then the cluster starts again on
        // other ports.
        for _ in 0..5 {
            if let Some(cluster) = Self::try_start(n, store) {
                cluster.wait_until_ready().await;
                return cluster;
            }
        }
        panic!("could not start a {n}-node cluster: is nats-server on PATH?")
    }

    fn try_start(n: usize, store: &Path) -> Option<Self> {
        let ports = free_ports(2 * n);
        let (route_ports, client_ports) = ports.split_at(n);
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        let mut logs = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let dir = store.join(format!("{}-n{i}", client_ports[0]));
            logs.push(dir.with_extension("log"));
            let mut args = bus_core::nats::local_server::jetstream_args(&dir);
            args.extend([
                // Kept for a failing test to show (see `Drop`).
                "--log".into(),
                format!("{}.log", dir.display()),
                "--cluster_name".into(),
                "bistoury-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{route_port}"),
                "--routes".into(),
                routes.clone(),
            ]);
            match LocalServer::start("nats-server", client_ports[i], &args) {
                Ok(server) => nodes.push(NatsServer(server)),
                Err(error) => {
                    eprintln!("cluster node {i}: {error}; starting again on other ports");
                    return None;
                }
            }
        }
        Some(Self { nodes, logs })
    }

    /// Every node's URL, comma-separated (what `bus.nats_url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every stream and consumer has a leader and all its
    /// replicas are current (a node that came back has caught up), at most 60 s: only
    /// then may another node go without the streams losing their quorum.
    pub async fn wait_until_caught_up(&self) {
        use futures_util::StreamExt;
        let started = std::time::Instant::now();
        loop {
            let mut caught_up = false;
            for node in &self.nodes {
                let Ok(client) = async_nats::connect(node.url()).await else {
                    continue;
                };
                let js = async_nats::jetstream::new(client);
                let names: Vec<String> = js
                    .stream_names()
                    .filter_map(|n| async move { n.ok() })
                    .collect()
                    .await;
                let healthy = |c: Option<async_nats::jetstream::stream::ClusterInfo>| {
                    c.is_some_and(|c| {
                        c.leader.is_some()
                            && c.replicas
                                .iter()
                                .all(|p| p.current && !p.offline && p.lag.unwrap_or(0) == 0)
                    })
                };
                let mut all = true;
                for name in names {
                    let Ok(mut stream) = js.get_stream(&name).await else {
                        all = false;
                        continue;
                    };
                    all &= healthy(stream.info().await.ok().and_then(|i| i.cluster.clone()));
                    // Its consumers are replicated groups of their own.
                    let consumers: Vec<_> = stream.consumers().collect().await;
                    for consumer in consumers {
                        all &= consumer.is_ok_and(|c| healthy(c.cluster));
                    }
                }
                caught_up = all;
                break;
            }
            if caught_up {
                // A moment more for the leaders to settle in.
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the cluster's streams did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until JetStream answers through every node (its cluster has
    /// elected a leader), at most 30 s.
    pub async fn wait_until_ready(&self) {
        let started = std::time::Instant::now();
        for node in &self.nodes {
            loop {
                let ready = match async_nats::connect(node.url()).await {
                    Ok(client) => async_nats::jetstream::new(client)
                        .query_account()
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the cluster's JetStream did not come up"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Every node answering is not yet a cluster that can place a stream
        // on all of them (the meta group may still be electing or missing a
        // peer): create a probe stream on every node, then remove it.
        loop {
            if self.probe_stream_on_every_node().await {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster could not place a stream on all {} nodes",
                self.nodes.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn probe_stream_on_every_node(&self) -> bool {
        let Ok(client) = async_nats::connect(self.nodes[0].url()).await else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        let created = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "TEST_CLUSTER_PROBE".into(),
                subjects: vec!["test-cluster-probe".into()],
                num_replicas: self.nodes.len(),
                ..Default::default()
            })
            .await
            .is_ok();
        created && js.delete_stream("TEST_CLUSTER_PROBE").await.is_ok()
    }
}

/// A `bistoury` process whose stdout lines arrive on a channel and whose
/// stderr is collected.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    pub fn start(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"));
        command
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "error")
            .env_remove("BISTOURY_NATS_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line {prefix:?}: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    /// The pid in `... (pid N)` or `... (pid N; ...)` after `prefix`.
    pub fn pid_after(&mut self, prefix: &str) -> u32 {
        let rest = self.wait_for(prefix);
        let pid = rest.split("(pid ").nth(1).expect("a pid");
        pid.split([')', ';']).next().unwrap().parse().unwrap()
    }

    pub fn signal(&self, signal: &str) {
        assert!(Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// Waits for the exit (at most `limit`); returns the status and all the
    /// output, stdout then stderr.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.seen.extend(self.lines.iter());
                let stderr = self.stderr.join().unwrap_or_default();
                let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
                panic!(
                    "still running after {limit:?}: {:?}\nstderr (last lines first): {tail:#?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        let stderr = self.stderr.join().unwrap();
        (status, format!("{}\n{stderr}", self.seen.join("\n")))
    }
}
