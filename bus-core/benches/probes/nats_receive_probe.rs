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

use bus_core::model::WireFormat;
use bus_core::nats::local_server::LocalServer;
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::prelude::*;
use bus_core::runtime::StopSignal;
use futures_util::StreamExt;

mod common;
#[path = "common/counter.rs"]
mod counter;

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
    let stop = StopSignal::new();
    let received = rt.block_on(async {
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
        let (seen, agent) = if mode == "agent" {
            let (seen, stop) = counter::start(bus.clone(), false, None).await;
            (seen, Some(stop))
        } else {
            let client = async_nats::connect(&url).await.unwrap();
            let mut sub = client.subscribe("probe.prices").await.unwrap();
            client.flush().await.unwrap();
            let seen = Arc::new(AtomicU64::new(0));
            let counted = seen.clone();
            tokio::spawn(async move {
                let _client = client;
                while sub.next().await.is_some() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            });
            (seen, None)
        };
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
        if let Some(agent) = agent {
            agent.stop();
        }
        seen.load(Ordering::Relaxed)
    });
    println!("{mode}: {received} messages received");
}
