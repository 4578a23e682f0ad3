//! Instruction-count probe for core NATS, each side alone:
//! `valgrind --tool=callgrind
//! target/release/examples/nats_receive_probe MODE N` with MODE `raw` (a
//! raw client publishes N ready binary `data.price_update` envelopes to a
//! subscriber that only counts), `agent` (the same publisher; an agent run
//! by `nats::run_agent` receives: decode, deliver, count) or `publisher`
//! (`NatsBus::publish` encodes and sends the envelopes to the counting
//! subscriber), against a `nats-server` started here. A mode's total minus
//! `raw`'s, over N, is what that side costs per message beyond raw
//! async-nats.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bus_core::agent::Agent;
use bus_core::driver::StopSignal;
use bus_core::inline::Outbox;
use bus_core::local_server::LocalServer;
use bus_core::message::WireFormat;
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::prelude::*;
use bus_core::supervision::AgentSpec;
use futures_util::StreamExt;

mod common;

struct Counter {
    id: AgentId,
    seen: Arc<AtomicU64>,
}

impl Agent for Counter {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("prices").unwrap()]
    }
    fn on_message(&mut self, _: &Envelope, _: &mut Outbox) -> HandlerResult {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn main() {
    let (mode, n) = common::mode_and_count();
    let store = tempfile::tempdir().unwrap();
    let server = LocalServer::jetstream(store.path()).expect("nats-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let envelopes: Vec<Envelope> = (0..n).map(|i| common::price_update(i, "prices")).collect();
    let bodies: Vec<bytes::Bytes> = envelopes
        .iter()
        .map(|e| WireFormat::Binary.encode(e).into())
        .collect();
    let seen = Arc::new(AtomicU64::new(0));
    let stop = StopSignal::new();
    rt.block_on(async {
        let url = server.url();
        let publisher = async_nats::connect(&url).await.unwrap();
        let settings = NatsSettings {
            url: url.clone(),
            prefix: "probe".into(),
            token: None,
            when_disconnected: Default::default(),
            wire_format: WireFormat::Binary,
            jetstream: None,
        };
        let bus = NatsBus::connect(&settings).await.unwrap();
        if mode == "agent" {
            let counter = Counter {
                id: AgentId::new("counter"),
                seen: seen.clone(),
            };
            let (ready, subscribed) = tokio::sync::oneshot::channel();
            let (stop, bus) = (stop.clone(), bus.clone());
            tokio::spawn(async move {
                let _ = bus_core::nats::run_agent(
                    AgentSpec::new(Box::new(counter)),
                    &bus,
                    stop,
                    Some(ready),
                )
                .await;
            });
            subscribed.await.unwrap();
        } else {
            let client = async_nats::connect(&url).await.unwrap();
            let mut sub = client.subscribe("probe.prices").await.unwrap();
            client.flush().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let _client = client;
                while sub.next().await.is_some() {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        if mode == "publisher" {
            for envelope in &envelopes {
                bus.publish(envelope, &stop).await.unwrap();
            }
            bus.client().flush().await.unwrap();
        } else {
            for body in &bodies {
                publisher
                    .publish("probe.prices", body.clone())
                    .await
                    .unwrap();
            }
            publisher.flush().await.unwrap();
        }
        while seen.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    stop.stop();
    println!("{mode}: {} messages received", seen.load(Ordering::Relaxed));
}
