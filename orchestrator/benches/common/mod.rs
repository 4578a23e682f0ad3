//! What the NATS benches share.

use bus_core::nats::local_server::{free_port, LocalServer};

/// A `nats-server` started on a free loopback port, and a two-worker
/// runtime for the bench's own clients; `None`, said on stderr, when no
/// server can be started (the part named `what` is then skipped).
pub fn nats_server_and_runtime(what: &str) -> Option<(LocalServer, tokio::runtime::Runtime)> {
    let port = free_port().unwrap();
    let server = match LocalServer::start("nats-server", port, &[]) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{e}: {what} skipped");
            return None;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Some((server, runtime))
}
