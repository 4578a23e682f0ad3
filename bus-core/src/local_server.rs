//! A `nats-server` run as a child process on a loopback port: what
//! `bistoury run` starts when configured to, and what the tests and
//! benchmarks start for themselves.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (free when asked; the caller binds it soon after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The arguments that give `nats-server` JetStream, its streams kept under
/// `store`.
pub fn jetstream_args(store: &std::path::Path) -> Vec<String> {
    vec!["-js".into(), "-sd".into(), store.display().to_string()]
}

/// A running `nats-server`, listening on 127.0.0.1 only; killed (and
/// reaped) when dropped.
#[derive(Debug)]
pub struct LocalServer {
    child: Child,
    program: String,
    port: u16,
    args: Vec<String>,
}

impl LocalServer {
    /// Starts `program` (a `nats-server` executable) on `port` with `args`
    /// added (`-js -sd DIR` for JetStream, `--auth TOKEN`...), and waits
    /// up to 10 s until it accepts connections.
    pub fn start(program: &str, port: u16, args: &[String]) -> Result<Self, String> {
        let child = spawn(program, port, args)?;
        Ok(Self {
            child,
            program: program.to_string(),
            port,
            args: args.to_vec(),
        })
    }

    /// `nats-server` (from PATH) with JetStream keeping its streams under
    /// `store`, on a free port.
    pub fn jetstream(store: &std::path::Path) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        Self::start("nats-server", port, &jetstream_args(store))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL), waits `outage`, and starts it again on
    /// the same port with the same arguments (so the same JetStream store).
    pub fn restart_after(&mut self, outage: Duration) -> Result<(), String> {
        self.kill();
        std::thread::sleep(outage);
        self.respawn()
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again (after [`kill`](Self::kill)) on the same port with
    /// the same arguments.
    pub fn respawn(&mut self) -> Result<(), String> {
        self.child = spawn(&self.program, self.port, &self.args)?;
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &str, port: u16, args: &[String]) -> Result<Child, String> {
    let mut child = Command::new(program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{program} exited at start ({status})"));
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} did not accept connections on port {port} within 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}
