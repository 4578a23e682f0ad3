//! Shared by the test files that need a real `nats-server`.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use std::time::Instant;

use bus_core::local_server::LocalServer;

/// A free loopback port.
pub fn free_port() -> u16 {
    bus_core::local_server::free_port().expect("a free loopback port")
}

/// A nats-server on a free loopback port, stopped on drop.
pub struct NatsServer(LocalServer);

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new())
    }

    /// A server with JetStream, keeping its streams under `store`.
    pub fn start_jetstream(store: &Path) -> Self {
        Self::start_with(free_port(), bus_core::local_server::jetstream_args(store))
    }

    /// A server that wants `token` from its clients.
    pub fn start_with_token(token: &str) -> Self {
        match LocalServer::start_with_token("nats-server", free_port(), &[], Some(token)) {
            Ok(server) => Self(server),
            Err(e) => panic!("{e}: is nats-server on PATH? The README's test command installs it"),
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
}

impl NatsCluster {
    pub async fn start(n: usize, store: &Path) -> Self {
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Vec<NatsServer> = route_ports
            .iter()
            .enumerate()
            .map(|(i, route_port)| {
                let mut args = bus_core::local_server::jetstream_args(&store.join(format!("n{i}")));
                args.extend([
                    "--cluster_name".into(),
                    "bistoury-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route_port}"),
                    "--routes".into(),
                    routes.clone(),
                ]);
                NatsServer::start_with(free_port(), args)
            })
            .collect();
        let cluster = Self { nodes };
        cluster.wait_until_ready().await;
        cluster
    }

    /// Every node's URL, comma-separated (what `bus.nats_url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
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
                panic!("still running after {limit:?}: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        let stderr = self.stderr.join().unwrap();
        (status, format!("{}\n{stderr}", self.seen.join("\n")))
    }
}
