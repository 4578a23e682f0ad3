//! A `nats-server` run as a child process on a loopback port: what
//! `bistoury run` starts when configured to, and what the tests and
//! benchmarks start for themselves.
//!
//! A server we start must be *ours* before anyone talks to it: the port
//! must be free before the child starts (a busy port is an error, never a
//! server to borrow), and the process answering on it must be the child we
//! started (it is alive, and the `server_name` in its `INFO` greeting is
//! the unique name we gave it). Otherwise a run could take over somebody
//! else's server and, worse, its streams.
//!
//! With a token, the server requires it from every client. The token goes
//! to the server in a configuration file readable by its owner only, never
//! on the command line (which every local user can read in `/proc`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Why a local `nats-server` could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    /// Something already listens on the port: we never borrow a server.
    #[error(
        "port {port} on 127.0.0.1 is already in use (another nats-server, or another program): \
         refusing to start nats-server there; choose a free port, or leave bus.nats_server \
         empty to use a server that is already running"
    )]
    PortBusy {
        /// The port.
        port: u16,
    },
    /// The executable could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The executable.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The child exited before it accepted connections.
    #[error("{program} exited at start ({status})")]
    ExitedAtStart {
        /// The executable.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The child never accepted connections.
    #[error("{program} did not accept connections on port {port} within {START_LIMIT:?}")]
    NotListening {
        /// The executable.
        program: String,
        /// The port.
        port: u16,
    },
    /// Something else answered on the port while our child ran.
    #[error(
        "the server answering on port {port} is not the one started here (it calls itself \
         {found:?}, ours is {expected:?}): refusing to use it"
    )]
    NotOurs {
        /// The port.
        port: u16,
        /// The name given to our child.
        expected: String,
        /// The name the answering server gave.
        found: String,
    },
    /// The token cannot be written into nats-server's configuration syntax.
    #[error(
        "the NATS token contains characters a nats-server configuration file cannot carry \
         (quotes, backslashes, control characters or spaces)"
    )]
    UnusableToken,
    /// The server's configuration file could not be written.
    #[error("cannot write the server's configuration file {path}: {source}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A free loopback port (free when asked; the caller binds it soon after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The arguments that give `nats-server` JetStream, its streams kept under
/// `store`.
pub fn jetstream_args(store: &std::path::Path) -> Vec<String> {
    vec!["-js".into(), "-sd".into(), store.display().to_string()]
}

/// A token fit for a run: 244 random bits as 64 hex digits.
pub fn generate_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A running `nats-server`, listening on 127.0.0.1 only; killed (and
/// reaped) when dropped.
#[derive(Debug)]
pub struct LocalServer {
    child: Child,
    program: String,
    port: u16,
    /// Our arguments and the caller's.
    args: Vec<String>,
    /// The unique `server_name` given to it.
    name: String,
    /// The owner-only configuration file holding the token, removed on drop.
    auth_file: Option<PathBuf>,
}

impl LocalServer {
    /// Starts `program` (a `nats-server` executable) on `port` with `args`
    /// added (`-js -sd DIR` for JetStream...), and waits up to 10 s until
    /// it accepts connections and has proven to be the child started here.
    pub fn start(program: &str, port: u16, args: &[String]) -> Result<Self, LocalServerError> {
        Self::start_with_token(program, port, args, None)
    }

    /// [`start`](Self::start), the server requiring `token` (when given)
    /// from every client.
    pub fn start_with_token(
        program: &str,
        port: u16,
        args: &[String],
        token: Option<&str>,
    ) -> Result<Self, LocalServerError> {
        let name = format!("bistoury-{}", uuid::Uuid::new_v4().simple());
        let auth_file = token.map(|t| write_auth_file(&name, t)).transpose()?;
        let mut all = vec!["--name".to_string(), name.clone()];
        if let Some(file) = &auth_file {
            all.extend(["-c".to_string(), file.display().to_string()]);
        }
        all.extend_from_slice(args);
        let child = match spawn(program, port, &all, &name) {
            Ok(child) => child,
            Err(error) => {
                if let Some(file) = &auth_file {
                    let _ = std::fs::remove_file(file);
                }
                return Err(error);
            }
        };
        Ok(Self {
            child,
            program: program.to_string(),
            port,
            args: all,
            name,
            auth_file,
        })
    }

    /// `nats-server` (from PATH) with JetStream keeping its streams under
    /// `store`, on a free port.
    pub fn jetstream(store: &std::path::Path) -> Result<Self, LocalServerError> {
        let port = free_port().map_err(|source| LocalServerError::Spawn {
            program: "nats-server".into(),
            source,
        })?;
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

    /// The unique name it was given (its `server_name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `Some(status)` once the process has exited (it is then reaped).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the server (SIGKILL), waits `outage`, and starts it again on
    /// the same port with the same arguments (so the same JetStream store).
    pub fn restart_after(&mut self, outage: Duration) -> Result<(), LocalServerError> {
        self.kill();
        std::thread::sleep(outage);
        self.respawn()
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again (after [`kill`](Self::kill), or after it died) on
    /// the same port with the same arguments, and proves it is ours again.
    pub fn respawn(&mut self) -> Result<(), LocalServerError> {
        self.child = spawn(&self.program, self.port, &self.args, &self.name)?;
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(file) = &self.auth_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Writes `authorization { token: "..." }` into a new file only its owner
/// can read.
fn write_auth_file(name: &str, token: &str) -> Result<PathBuf, LocalServerError> {
    let printable = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if !printable {
        return Err(LocalServerError::UnusableToken);
    }
    let path = std::env::temp_dir().join(format!("{name}.conf"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&path).and_then(|mut file| {
        writeln!(file, "authorization {{\n  token: \"{token}\"\n}}")?;
        file.sync_all()
    });
    written.map_err(|source| LocalServerError::ConfigFile {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn spawn(program: &str, port: u16, args: &[String], name: &str) -> Result<Child, LocalServerError> {
    // A listener already there would make our child fail to bind while the
    // other server answers our probes: refuse before starting anything.
    // (Rust's listener sets SO_REUSEADDR, so a port left in TIME_WAIT by
    // a server we killed counts as free, as it is for nats-server.)
    if TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Err(LocalServerError::PortBusy { port });
    }
    let mut child = Command::new(program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| LocalServerError::Spawn {
            program: program.to_string(),
            source,
        })?;
    let started = Instant::now();
    let refuse = |child: &mut Child, error: LocalServerError| {
        let _ = child.kill();
        let _ = child.wait();
        Err(error)
    };
    loop {
        // The child first: a port that answers while our child has died is
        // somebody else's server.
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LocalServerError::ExitedAtStart {
                program: program.to_string(),
                status,
            });
        }
        if let Some(found) = server_name_on(port) {
            if found != name {
                return refuse(
                    &mut child,
                    LocalServerError::NotOurs {
                        port,
                        expected: name.to_string(),
                        found,
                    },
                );
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LocalServerError::ExitedAtStart {
                    program: program.to_string(),
                    status,
                });
            }
            return Ok(child);
        }
        if started.elapsed() > START_LIMIT {
            return refuse(
                &mut child,
                LocalServerError::NotListening {
                    program: program.to_string(),
                    port,
                },
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `server_name` a NATS server on `port` announces in the `INFO` line
/// it sends every new connection (before any authentication); `None` when
/// nothing answers there (yet) with such a line.
pub fn server_name_on(port: u16) -> Option<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()?;
    Some(info.get("server_name")?.as_str()?.to_string())
}
