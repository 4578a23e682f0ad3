#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Scaling out the signal agent over NATS: candles per second through 1, 2
//! and 4 instances (`bus_core::nats::run_agent_instance`, each with its own
//! connection and its share of the symbols), on a `nats-server` started
//! here. 8 symbols x 500 bars per sample, published by a raw client; a
//! sample ends when every candle's `signal.analysis_complete` has arrived.
//!
//! Run: `cargo bench -p orchestrator --bench instances`
//!
//! Each instance runs on a thread of its own (as `run_agent_instance` runs
//! every agent), their connections on one 2-worker runtime, with
//! nats-server and the publisher on the same 2 cores: this measures how the
//! work splits, not what more machines would add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_signals::SignalAgent;
use bus_core::agent::supervision::AgentSpec;
use bus_core::model::payload::{Candle, CandleFields, Symbol};
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::runtime::Partition;
use bus_core::runtime::StopSignal;
use bus_core::{AgentId, Envelope, Payload, Topic};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::StreamExt;
use rust_decimal::Decimal;

mod common;

const SYMBOLS: [&str; 8] = ["BTC", "ETH", "SOL", "ADA", "XRP", "DOT", "AVAX", "LINK"];
const BARS: i64 = 500;

/// One sample's candles, bar by bar, starting at bar `from`.
fn candles(from: i64) -> Vec<(String, bytes::Bytes)> {
    let mut out = Vec::new();
    for bar in from..from + BARS {
        for (n, symbol) in SYMBOLS.iter().enumerate() {
            let base = 100 + 10 * n as i64;
            let wiggle = ((bar as f64) * 0.37 + n as f64).sin();
            let close = Decimal::new(base * 100 + (wiggle * 150.0) as i64, 2);
            let candle = Candle::new(CandleFields {
                symbol: Symbol::new(*symbol).unwrap(),
                interval: "1m".into(),
                open_time_ms: bar * 60_000,
                open: close,
                high: close + Decimal::ONE,
                low: close - Decimal::ONE,
                close,
                volume: Decimal::ONE,
            })
            .unwrap();
            let topic = format!("data.candle.{symbol}.1m");
            let envelope = Envelope::new(
                AgentId::new("feed"),
                Topic::new(topic.clone()).unwrap(),
                Payload::DataCandle(candle),
            );
            out.push((format!("scale.{topic}"), envelope.to_json_bytes().into()));
        }
    }
    out
}

fn instances(c: &mut Criterion) {
    let Some((server, rt)) = common::nats_server_and_runtime("instance scaling bench") else {
        return;
    };
    let settings = NatsSettings {
        url: server.url(),
        prefix: "scale".into(),
        token: None,
        when_disconnected: Default::default(),
        wire_format: Default::default(),
        jetstream: None,
    };
    let signals = orchestrator::BistouryConfig::embedded_default().signals;
    let publisher = rt.block_on(async_nats::connect(server.url())).unwrap();
    let done = Arc::new(AtomicU64::new(0));
    {
        let mut complete = rt
            .block_on(publisher.subscribe("scale.signal.analysis_complete.>"))
            .unwrap();
        let done = done.clone();
        rt.spawn(async move {
            while complete.next().await.is_some() {
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
        rt.block_on(publisher.flush()).unwrap();
    }
    let mut group = c.benchmark_group("signal_instances");
    group.throughput(Throughput::Elements(BARS as u64 * SYMBOLS.len() as u64));
    group.sample_size(10);
    let mut next_bar = 0;
    for count in [1u32, 2, 4] {
        let stop = StopSignal::new();
        let mut tasks = Vec::new();
        for index in 0..count {
            let agent = SignalAgent::new(AgentId::new("signals"), signals.clone(), false);
            let (settings, stop) = (settings.clone(), stop.clone());
            let (ready, subscribed) = tokio::sync::oneshot::channel();
            tasks.push(rt.spawn(async move {
                let bus = NatsBus::connect(&settings).await.unwrap();
                let partition = Partition::new(index, count).unwrap();
                bus_core::nats::run_agent_instance(
                    AgentSpec::new(Box::new(agent)),
                    &bus,
                    partition,
                    stop,
                    Some(ready),
                )
                .await
                .map(|(_, stats)| stats)
            }));
            rt.block_on(subscribed).unwrap();
        }
        group.bench_function(format!("{count}_instances"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = candles(next_bar);
                    next_bar += BARS;
                    let target = done.load(Ordering::Relaxed) + batch.len() as u64;
                    let start = Instant::now();
                    rt.block_on(async {
                        for (subject, body) in batch {
                            publisher.publish(subject, body).await.unwrap();
                        }
                        publisher.flush().await.unwrap();
                        while done.load(Ordering::Relaxed) < target {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    });
                    total += start.elapsed();
                }
                total
            })
        });
        stop.stop();
        let mut handled = 0;
        for task in tasks {
            handled += rt.block_on(task).unwrap().unwrap().received;
        }
        // Every candle handled by exactly one instance.
        assert_eq!(handled % (BARS as u64 * SYMBOLS.len() as u64), 0);
    }
    group.finish();
}

criterion_group!(benches, instances);
criterion_main!(benches);
