#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Criterion benchmarks of the bus against a raw flume channel measured in
//! the same run. Results and ratios are recorded in BENCHMARKS.md.
//!
//! Run: `cargo bench -p bus-core --bench bus`

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rust_decimal::Decimal;

fn price(topic: &str) -> Envelope {
    let p = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::new(6_500_012, 2),
        timestamp_ms: 1,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("collector"),
        Topic::new(topic).unwrap(),
        Payload::DataPriceUpdate(p),
    )
}

const BATCH: u64 = 100_000;

/// Baseline: 64-byte messages through flume bounded(4096), one producer
/// thread, one consumer thread.
fn raw_flume(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput_1_to_1");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.bench_function("raw_flume_bounded_4096", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = flume::bounded::<[u8; 64]>(4096);
                let consumer = std::thread::spawn(move || {
                    let mut sum = 0u64;
                    while let Ok(m) = rx.recv() {
                        sum += u64::from(m[0]);
                    }
                    sum
                });
                let start = Instant::now();
                for i in 0..BATCH {
                    tx.send([i as u8; 64]).unwrap();
                }
                drop(tx);
                black_box(consumer.join().unwrap());
                total += start.elapsed();
            }
            total
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    group.bench_function("bus_queued_async_handler", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let bus = MessageBus::new();
                let handled = Arc::new(AtomicU64::new(0));
                let h = handled.clone();
                bus.subscribe(
                    "data.price_update.>",
                    Handler::from_async(move |_e: Arc<Envelope>| {
                        h.fetch_add(1, Ordering::Relaxed);
                        async { Ok(()) }
                    }),
                    SubscribeOptions::named("counter").with_capacity(4096),
                )
                .unwrap();
                let message = Arc::new(price("data.price_update.BTC"));
                let mut total = Duration::ZERO;
                for round in 1..=iters {
                    let start = Instant::now();
                    let publisher = {
                        let bus = bus.clone();
                        let message = message.clone();
                        tokio::spawn(async move {
                            for _ in 0..BATCH {
                                bus.publish_shared(message.clone()).await.unwrap();
                            }
                        })
                    };
                    publisher.await.unwrap();
                    while handled.load(Ordering::Relaxed) < round * BATCH {
                        tokio::task::yield_now().await;
                    }
                    total += start.elapsed();
                }
                bus.shutdown(Duration::from_secs(5)).await;
                total
            })
        })
    });
    group.finish();
}

/// Inline publish of a prebuilt message to 1 and 10 handlers.
fn inline_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("inline_publish");
    for handlers in [1usize, 10] {
        let mut bus = InlineBus::new();
        let count = Rc::new(Cell::new(0u64));
        for i in 0..handlers {
            let count = count.clone();
            bus.subscribe(
                &format!("h{i}"),
                "data.price_update.BTC",
                None,
                move |_, _| {
                    count.set(count.get() + 1);
                    Ok(())
                },
            )
            .unwrap();
        }
        let message = price("data.price_update.BTC");
        group.bench_with_input(BenchmarkId::new("handlers", handlers), &handlers, |b, _| {
            b.iter(|| bus.publish(black_box(&message)))
        });
    }
    group.finish();
}

/// Publish cost with 10 versus 10,000 subscriptions that do not match.
fn non_matching_subscriptions(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_with_non_matching_subscriptions");
    for others in [10usize, 10_000] {
        let mut bus = InlineBus::new();
        bus.subscribe("target", "data.price_update.BTC", None, |_, _| Ok(()))
            .unwrap();
        for i in 0..others {
            // A mix of literal, single-wildcard and tail patterns elsewhere in the tree.
            let pattern = match i % 3 {
                0 => format!("data.price_update.S{i}"),
                1 => format!("data.*.S{i}"),
                _ => format!("signal.S{i}.>"),
            };
            bus.subscribe("other", &pattern, None, |_, _| Ok(()))
                .unwrap();
        }
        let message = price("data.price_update.BTC");
        group.bench_with_input(BenchmarkId::new("others", others), &others, |b, _| {
            b.iter(|| bus.publish(black_box(&message)))
        });
    }
    group.finish();
}

const CHANNELS: [&str; 5] = ["candle", "price", "trade", "book", "funding"];

/// 100 subscriptions on hierarchical topics; each published message matches 15.
fn fan_out_patterns() -> (Vec<String>, Vec<String>) {
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i}")).collect();
    let mut patterns = Vec::new();
    for _ in 0..9 {
        patterns.push("data.>".to_string());
    }
    for c in CHANNELS {
        for _ in 0..3 {
            patterns.push(format!("data.{c}"));
        }
    }
    for s in &symbols {
        for _ in 0..2 {
            patterns.push(format!("data.*.{s}"));
        }
    }
    let mut topics = Vec::new();
    for (i, s) in symbols.iter().enumerate() {
        for c in CHANNELS.iter().skip(i % 2).step_by(2).take(2) {
            if patterns.len() < 100 {
                patterns.push(format!("data.{c}.{s}"));
                topics.push(format!("data.{c}.{s}"));
            }
        }
    }
    assert_eq!(patterns.len(), 100);
    (patterns, topics)
}

fn fan_out(c: &mut Criterion) {
    let (patterns, topics) = fan_out_patterns();
    let messages: Vec<Envelope> = topics.iter().map(|t| price(t)).collect();
    // Check the workload: every message matches exactly 15 subscriptions.
    for t in &topics {
        let topic = Topic::new(t).unwrap();
        let n = patterns
            .iter()
            .filter(|p| TopicPattern::new(p).unwrap().matches(&topic))
            .count();
        assert_eq!(n, 15, "{t}");
    }
    let mut group = c.benchmark_group("fan_out_100_subs_15_match");
    let per_round = messages.len() as u64;
    group.throughput(Throughput::Elements(per_round * 15));

    let mut inline = InlineBus::new();
    let count = Rc::new(Cell::new(0u64));
    for p in &patterns {
        let count = count.clone();
        inline
            .subscribe("h", p, None, move |_, _| {
                count.set(count.get() + 1);
                Ok(())
            })
            .unwrap();
    }
    group.bench_function("inline", |b| {
        b.iter(|| {
            for m in &messages {
                inline.publish(m);
            }
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    group.sample_size(20);
    group.bench_function("queued", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let bus = MessageBus::new();
                let delivered = Arc::new(AtomicU64::new(0));
                for p in &patterns {
                    let d = delivered.clone();
                    bus.subscribe(
                        p,
                        Handler::from_async(move |_e: Arc<Envelope>| {
                            d.fetch_add(1, Ordering::Relaxed);
                            async { Ok(()) }
                        }),
                        SubscribeOptions::named("h").with_capacity(4096),
                    )
                    .unwrap();
                }
                let shared: Vec<Arc<Envelope>> = messages.iter().cloned().map(Arc::new).collect();
                let rounds = 200u64;
                let mut total = Duration::ZERO;
                let mut expected = 0;
                for _ in 0..iters {
                    let start = Instant::now();
                    for _ in 0..rounds {
                        for m in &shared {
                            bus.publish_shared(m.clone()).await.unwrap();
                        }
                    }
                    expected += rounds * per_round * 15;
                    while delivered.load(Ordering::Relaxed) < expected {
                        tokio::task::yield_now().await;
                    }
                    total += start.elapsed() / rounds as u32;
                }
                bus.shutdown(Duration::from_secs(5)).await;
                total
            })
        })
    });
    group.finish();
}

/// One message in flight: publish -> async handler (the time the handler
/// sees it), the consumer parking when idle (the default) or spinning
/// first (latency mode, `SubscribeOptions::idle_spin`).
fn latency(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("latency_one_in_flight");
    for (name, spin) in [
        ("publish_to_async_handler", Duration::ZERO),
        (
            "publish_to_async_handler_spinning",
            Duration::from_micros(200),
        ),
    ] {
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let bus = MessageBus::new();
                    let (tx, rx) = flume::bounded::<Instant>(1);
                    bus.subscribe(
                        "lat",
                        Handler::from_async(move |_e: Arc<Envelope>| {
                            let _ = tx.try_send(Instant::now());
                            async { Ok(()) }
                        }),
                        SubscribeOptions::named("lat").with_idle_spin(spin),
                    )
                    .unwrap();
                    let message = Arc::new(price("lat"));
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        bus.publish_shared(message.clone()).await.unwrap();
                        let arrived = rx.recv_async().await.unwrap();
                        let one_way = arrived - start;
                        histogram.record(one_way.as_nanos() as u64).unwrap();
                        total += one_way;
                    }
                    bus.shutdown(Duration::from_secs(5)).await;
                    total
                })
            })
        });
        println!(
            "latency_one_in_flight/{name}: p50 {:.2} us, p99 {:.2} us, over {} samples",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.len()
        );
    }
    group.finish();
}

/// The hardware's floor, same run: two threads handing a number back and
/// forth through one atomic, each spinning; a round trip (two hand-overs).
fn spinning_ping_pong(c: &mut Criterion) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut group = c.benchmark_group("spinning_ping_pong");
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    group.bench_function("round_trip", |b| {
        b.iter_custom(|iters| {
            let ball = Arc::new(AtomicU64::new(0));
            let other = ball.clone();
            let partner = std::thread::spawn(move || {
                // Odd numbers are the partner's to answer, with the next even.
                let mut expect = 1;
                while expect < 2 * iters {
                    while other.load(Ordering::Acquire) != expect {
                        std::hint::spin_loop();
                    }
                    other.store(expect + 1, Ordering::Release);
                    expect += 2;
                }
            });
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let start = Instant::now();
                ball.store(2 * i + 1, Ordering::Release);
                while ball.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
                let round_trip = start.elapsed();
                histogram.record(round_trip.as_nanos() as u64).unwrap();
                total += round_trip;
            }
            partner.join().unwrap();
            total
        })
    });
    group.finish();
    println!(
        "spinning_ping_pong/round_trip: p50 {:.2} us, p99 {:.2} us, over {} samples",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.len()
    );
}

criterion_group!(
    benches,
    raw_flume,
    inline_publish,
    non_matching_subscriptions,
    fan_out,
    latency,
    spinning_ping_pong
);
criterion_main!(benches);
