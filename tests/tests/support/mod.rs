//! Shared by the test files that need a real `nats-server`.
#![allow(dead_code)] // each test file uses its own part

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server on a free loopback port, stopped on drop.
pub struct NatsServer {
    child: Child,
    port: u16,
    args: Vec<String>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(free_port(), Vec::new())
    }

    /// A server with JetStream, keeping its streams under `store`.
    pub fn start_jetstream(store: &Path) -> Self {
        let args = vec!["-js".into(), "-sd".into(), store.display().to_string()];
        Self::start_with(free_port(), args)
    }

    /// A server that wants `token` from its clients.
    pub fn start_with_token(token: &str) -> Self {
        Self::start_with(free_port(), vec!["--auth".into(), token.into()])
    }

    pub fn start_with(port: u16, args: Vec<String>) -> Self {
        Self {
            child: Self::spawn(port, &args),
            port,
            args,
        }
    }

    /// Stops the server (SIGKILL) and starts a fresh one on the same port.
    pub fn restart_after(&mut self, outage: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(outage);
        self.child = Self::spawn(self.port, &self.args);
    }

    /// Starts nats-server on `port` and waits until it accepts connections.
    fn spawn(port: u16, args: &[String]) -> Child {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "nats-server not found on PATH: run the README's test command, which installs it",
            );
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
