//! Prometheus metrics of a run (off unless `run.metrics` or `--metrics`
//! names a loopback address): the bus's counters and latencies, what the
//! agents announced, the account (equity, PnL, fees, drawdown, exposure),
//! the live feed's health and the risk state, served at `/metrics` by
//! `metrics-exporter-prometheus`, every agent recording through the
//! `metrics` facade (a no-op when no exporter is installed).

use std::net::SocketAddr;
use std::time::Duration;

use bus_core::{BusStats, MessageBus};
use metrics::{counter, gauge};

/// The address `run.metrics` / `--metrics` gives, checked: `off` (or
/// empty) is none; anything else must be a loopback socket address.
pub fn listen_address(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address with a port, e.g. 127.0.0.1:9464"))?;
    match address.ip().is_loopback() {
        true => Ok(Some(address)),
        false => Err(format!(
            "{address} is not a loopback address: metrics are served on this machine only \
             (127.0.0.1 or ::1)"
        )),
    }
}

/// Serves `/metrics` on `address` (the port must be free).
pub fn serve(address: SocketAddr) -> Result<(), String> {
    // The exporter binds in the background: a busy port is said here.
    std::net::TcpListener::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(address)
        .install()
        .map_err(|e| format!("cannot serve metrics on {address}: {e}"))
}

/// Records the bus's figures (counters as totals so far).
pub fn record_bus(stats: &BusStats) {
    counter!("bistoury_bus_published_total").absolute(stats.published);
    counter!("bistoury_bus_delivered_total").absolute(stats.delivered);
    counter!("bistoury_bus_failed_total").absolute(stats.failed);
    counter!("bistoury_bus_dropped_total").absolute(stats.total_dropped());
    counter!("bistoury_bus_retries_total").absolute(stats.retries);
    counter!("bistoury_bus_dead_lettered_total").absolute(stats.dead_lettered);
    counter!("bistoury_bus_expired_total").absolute(stats.expired);
    counter!("bistoury_bus_unrouted_total").absolute(stats.unrouted);
    gauge!("bistoury_bus_in_flight").set(stats.in_flight as f64);
    for s in &stats.subscriptions {
        let name = s.name.clone();
        let sub = [("subscription", name)];
        counter!("bistoury_subscription_delivered_total", &sub).absolute(s.delivered);
        counter!("bistoury_subscription_failed_total", &sub).absolute(s.failed);
        let dropped: u64 = s.dropped.values().sum();
        counter!("bistoury_subscription_dropped_total", &sub).absolute(dropped);
        counter!("bistoury_subscription_retries_total", &sub).absolute(s.retries);
        gauge!("bistoury_subscription_queue_depth", &sub).set(s.queue_depth as f64);
        gauge!("bistoury_subscription_queue_high_water", &sub).set(s.queue_high_water as f64);
        for (quantile, value) in [("0.5", s.latency.p50_us), ("0.99", s.latency.p99_us)] {
            let labels = [
                ("subscription", s.name.clone()),
                ("quantile", quantile.into()),
            ];
            gauge!("bistoury_handler_latency_microseconds", &labels).set(value);
        }
    }
}

/// Records the bus's figures every `every` (as metrics when `metrics`, on
/// the status board when there is one) until the task is aborted.
pub fn sample_bus(
    bus: MessageBus,
    every: Duration,
    metrics: bool,
    board: Option<crate::status::StatusBoard>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stats = bus.stats();
            if metrics {
                record_bus(&stats);
            }
            if let Some(board) = &board {
                board.record_bus(&stats);
            }
            tokio::time::sleep(every).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_or_off() {
        assert_eq!(listen_address("off"), Ok(None));
        assert_eq!(listen_address(""), Ok(None));
        assert_eq!(
            listen_address("127.0.0.1:9464"),
            Ok(Some("127.0.0.1:9464".parse().unwrap()))
        );
        assert!(listen_address("[::1]:9464").unwrap().is_some());
        let open = listen_address("0.0.0.0:9464").unwrap_err();
        assert!(open.contains("not a loopback address"), "{open}");
        assert!(listen_address("localhost")
            .unwrap_err()
            .contains("with a port"));
    }
}
