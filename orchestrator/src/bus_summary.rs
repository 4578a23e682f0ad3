//! The bus's own figures at the end of a run, kept in the report: what was
//! published, delivered, dropped, retried and dead-lettered, per
//! subscription with its queue's high-water mark and handler latency, and
//! per agent its restarts and the state changes it announced.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bus_core::bus::stats::{LatencySummary, SubscriptionStats};
use bus_core::bus::tick_to_order::TickToOrderSummary;
use bus_core::runtime::InlineRun;
use bus_core::BusStats;
use serde::Serialize;

/// The bus at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BusSummary {
    /// `inline` (a backtest: handlers run in the publisher's call, no
    /// queue), `queued` (every subscription its own queue and consumer) or
    /// `distributed` (one row per agent process, each on its own bus).
    pub kind: &'static str,
    /// Messages published.
    pub published: u64,
    /// Successful handler runs.
    pub delivered: u64,
    /// Handler runs that failed or panicked.
    pub failed: u64,
    /// Messages dropped, whatever the reason.
    pub dropped: u64,
    /// Redeliveries after failures.
    pub retries: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages that expired before a handler took them.
    pub expired: u64,
    /// Messages no subscription wanted.
    pub unrouted: u64,
    /// Per subscription, in subscription order.
    pub subscriptions: Vec<SubscriptionSummary>,
    /// Per agent, in start order.
    pub agents: Vec<AgentSummary>,
    /// Wall-clock time from a candle handed to the bus to the order
    /// request decided on it handed to the bus (`run` in process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_to_order: Option<TickToOrderSummary>,
}

/// One subscription's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SubscriptionSummary {
    /// Its name (the agent's).
    pub name: String,
    /// Its patterns (queued bus).
    pub pattern: String,
    /// Successful handler runs.
    pub delivered: u64,
    /// Failed handler runs.
    pub failed: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Redeliveries.
    pub retries: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// The most messages its queue held at once (queued bus).
    pub queue_high_water: Option<usize>,
    /// Handler latency (queued bus).
    pub latency: Option<LatencySummary>,
}

/// One agent's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentSummary {
    /// Its name.
    pub name: String,
    /// Restarts after panics.
    pub restarts: u32,
    /// The state changes it announced (`started`, `paused`, `resumed`,
    /// `error`), counted as the report heard them.
    pub state_changes: BTreeMap<String, u64>,
}

/// The inline bus keeps one subscription per pattern: one row per
/// subscriber, in the order they subscribed, adds them up.
fn by_subscriber(slots: &[(String, u64, u64)]) -> Vec<SubscriptionSummary> {
    let mut rows: Vec<SubscriptionSummary> = Vec::new();
    for (name, delivered, failed) in slots {
        let at = match rows.iter().position(|r| r.name == *name) {
            Some(at) => at,
            None => {
                rows.push(SubscriptionSummary {
                    name: name.clone(),
                    ..SubscriptionSummary::default()
                });
                rows.len() - 1
            }
        };
        rows[at].delivered += delivered;
        rows[at].failed += failed;
    }
    rows
}

impl BusSummary {
    /// From a queued bus's figures (its subscriptions, live and removed,
    /// in subscription order).
    pub fn queued(stats: &BusStats) -> Self {
        let mut all: Vec<&SubscriptionStats> = (stats.subscriptions.iter())
            .chain(&stats.removed_subscriptions)
            .collect();
        all.sort_by_key(|s| s.id);
        Self {
            kind: "queued",
            published: stats.published,
            delivered: stats.delivered,
            failed: stats.failed,
            dropped: stats.total_dropped(),
            retries: stats.retries,
            dead_lettered: stats.dead_lettered,
            expired: stats.expired,
            unrouted: stats.unrouted,
            subscriptions: (all.into_iter())
                .map(|s| SubscriptionSummary {
                    name: s.name.clone(),
                    pattern: s.pattern.clone(),
                    delivered: s.delivered,
                    failed: s.failed,
                    dropped: s.dropped.values().sum(),
                    retries: s.retries,
                    dead_lettered: s.dead_lettered,
                    queue_high_water: Some(s.queue_high_water),
                    latency: Some(s.latency.clone()),
                })
                .collect(),
            ..Self::default()
        }
    }

    /// From the figures each process of a distributed run counted on its
    /// own bus (by process): what it received and published, what it
    /// dead-lettered (undecodable, misaddressed, or past `max_deliver`),
    /// the redeliveries it asked for. No queue or handler latency: NATS
    /// holds the queues.
    pub fn distributed(figures: &BTreeMap<String, bus_core::nats::NatsRunStats>) -> Self {
        let dead =
            |f: &bus_core::nats::NatsRunStats| f.dead_lettered + f.undecodable + f.misaddressed;
        Self {
            kind: "distributed",
            published: figures.values().map(|f| f.published).sum(),
            delivered: figures.values().map(|f| f.received).sum(),
            retries: figures.values().map(|f| f.redeliveries_requested).sum(),
            dead_lettered: figures.values().map(dead).sum(),
            subscriptions: (figures.iter())
                .map(|(name, f)| SubscriptionSummary {
                    name: name.clone(),
                    pattern: String::new(),
                    delivered: f.received,
                    retries: f.redeliveries_requested,
                    dead_lettered: dead(f),
                    ..SubscriptionSummary::default()
                })
                .collect(),
            ..Self::default()
        }
    }

    /// From an inline bus's figures.
    pub fn inline(run: &InlineRun) -> Self {
        let stats = &run.stats;
        Self {
            kind: "inline",
            published: stats.published,
            delivered: stats.delivered,
            failed: stats.failed,
            expired: stats.expired,
            unrouted: stats.unrouted,
            subscriptions: by_subscriber(&run.subscriptions),
            ..Self::default()
        }
    }

    /// Adds the agents: their names and restarts in start order, and the
    /// state changes the report heard.
    pub fn with_agents(
        mut self,
        restarts: &[(String, u32)],
        heard: &BTreeMap<String, BTreeMap<String, u64>>,
    ) -> Self {
        self.agents = (restarts.iter())
            .map(|(name, restarts)| AgentSummary {
                name: name.clone(),
                restarts: *restarts,
                state_changes: heard.get(name).cloned().unwrap_or_default(),
            })
            .collect();
        self
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bus ({}): {} published, {} delivered, {} failed, {} dropped, {} retried, {} dead-lettered, {} expired, {} unrouted",
            self.kind,
            self.published,
            self.delivered,
            self.failed,
            self.dropped,
            self.retries,
            self.dead_lettered,
            self.expired,
            self.unrouted
        );
        if let Some(t) = &self.tick_to_order {
            let _ = writeln!(
                s,
                "  tick to order: {} orders timed from their bar's candle, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs ({} on bars sent too long before to time)",
                t.orders, t.p50_us, t.p99_us, t.p999_us, t.max_us, t.untimed
            );
        }
        let _ = writeln!(
            s,
            "  {:<12} {:>10} {:>7} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10}",
            "subscription",
            "delivered",
            "failed",
            "dropped",
            "retried",
            "dead",
            "queue max",
            "p50 µs",
            "p99 µs",
            "max µs"
        );
        let dash = || "-".to_string();
        for sub in &self.subscriptions {
            let latency = |f: fn(&LatencySummary) -> f64| {
                sub.latency
                    .as_ref()
                    .map_or_else(dash, |l| format!("{:.1}", f(l)))
            };
            let _ = writeln!(
                s,
                "  {:<12} {:>10} {:>7} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10}",
                sub.name,
                sub.delivered,
                sub.failed,
                sub.dropped,
                sub.retries,
                sub.dead_lettered,
                sub.queue_high_water.map_or_else(dash, |n| n.to_string()),
                latency(|l| l.p50_us),
                latency(|l| l.p99_us),
                latency(|l| l.max_us),
            );
        }
        for agent in &self.agents {
            let changes: Vec<String> = (agent.state_changes.iter())
                .map(|(what, n)| format!("{what} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "  agent {:<10} restarts {}; {}",
                agent.name,
                agent.restarts,
                match changes.is_empty() {
                    true => "no state change heard".to_string(),
                    false => changes.join(", "),
                }
            );
        }
        s
    }
}
