//! The counting agent the NATS probe and the NATS bench run (included by
//! each with `#[path]`; it needs the `nats` feature, which the codec probe
//! does not have).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bus_core::agent::supervision::AgentSpec;
use bus_core::agent::Agent;
use bus_core::nats::NatsBus;
use bus_core::prelude::*;
use bus_core::runtime::StopSignal;
use bus_core::Outbox;

/// Counts what it receives (on `prices`); with `echo`, answers requests
/// (on `echo`) with a copy; with `arrivals`, tells it of each message (on
/// `latency`).
pub struct Counter {
    id: AgentId,
    seen: Arc<AtomicU64>,
    echo: bool,
    arrivals: Option<flume::Sender<()>>,
}

impl Agent for Counter {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        let topic = match (self.echo, &self.arrivals) {
            (true, _) => "echo",
            (false, Some(_)) => "latency",
            (false, None) => "prices",
        };
        vec![TopicPattern::new(topic).unwrap()]
    }
    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        self.seen.fetch_add(1, Ordering::Relaxed);
        if let Some(arrivals) = &self.arrivals {
            let _ = arrivals.send(());
        }
        if self.echo {
            let reply = Envelope::new(
                self.id.clone(),
                Topic::new("answers.echo").unwrap(),
                envelope.payload().clone(),
            )
            .with_correlation_id(envelope.id);
            out.publish(reply);
        }
        Ok(())
    }
}

/// Starts a [`Counter`] on `bus` (run by `nats::run_agent` on a task of
/// the current runtime); returns once it is subscribed, with its count
/// and what stops it.
pub async fn start(
    bus: NatsBus,
    echo: bool,
    arrivals: Option<flume::Sender<()>>,
) -> (Arc<AtomicU64>, StopSignal) {
    let seen = Arc::new(AtomicU64::new(0));
    let stop = StopSignal::new();
    let counter = Counter {
        id: AgentId::new("counter"),
        seen: seen.clone(),
        echo,
        arrivals,
    };
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let stop_agent = stop.clone();
    tokio::spawn(async move {
        let _ = bus_core::nats::run_agent(
            AgentSpec::new(Box::new(counter)),
            &bus,
            stop_agent,
            Some(ready),
        )
        .await;
    });
    subscribed.await.unwrap();
    (seen, stop)
}
