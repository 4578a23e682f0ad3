#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! The NATS transport against raw async-nats, on a `nats-server` started
//! here on a free loopback port.
//!
//! `cargo bench -p bus-core --features nats --bench nats`
//!
//! * `fire_and_forget/*`: 20,000 `data.price_update` envelopes from one
//!   client to an agent run by `bus_core::nats::run_agent` (decode, deliver,
//!   count) vs the same JSON bytes from one raw client to one raw
//!   subscriber that only counts them.
//! * `fire_and_forget/raw_async_nats_binary_with_headers`: the raw binary
//!   row with two NATS headers per message (what priority and delivery
//!   mode in headers would cost).
//! * `fire_and_forget_cross_process/*`: the same, with the receiver (raw
//!   subscriber or agent) in a process of its own (this bench binary run
//!   again as a receiver), as agents run in distributed mode. Two binary
//!   rows mix the sides, to tell what each costs:
//!   `split_bus_core_publisher_raw_receiver` (`NatsBus::publish` to the
//!   raw subscriber) and `split_raw_publisher_bus_core_receiver` (ready
//!   bytes from the raw client to the agent).
//! * `fire_and_forget_interleaved` (printed): the cross-process rows
//!   again, raw and ours alternating round by round (40 rounds each of
//!   JSON and binary, each side first in every other round, both
//!   receiving processes up throughout), so that
//!   each ratio compares rounds a few milliseconds apart rather than rows
//!   a minute apart on a machine whose speed drifts.
//! * Request round trips (p50/p99, printed): `bus_core::nats::request` to
//!   an echoing agent vs `Client::request` to a raw echo responder.
//! * `jetstream_publish/*`: 5,000 at-least-once envelopes published into a
//!   file-backed stream and confirmed, 256 in flight at a time:
//!   `NatsBus::publish_many` (JSON, `Nats-Msg-Id`, retry on failure) vs
//!   raw `jetstream::Context::publish` of the same bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::model::WireFormat;
use bus_core::nats::local_server::LocalServer;
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::prelude::*;
use bus_core::runtime::StopSignal;
use criterion::{criterion_group, Criterion, Throughput};
use futures_util::StreamExt;
use hdrhistogram::Histogram;

const N: u64 = 20_000;

#[path = "probes/common/mod.rs"]
#[allow(dead_code)] // The probes' command line is not the bench's.
mod common;

fn message(i: u64) -> Envelope {
    common::price_update(i, "prices.btc")
}

#[path = "probes/common/counter.rs"]
mod counter;

/// A counting agent on `bus` (see `counter::start`), started on `rt`.
fn agent(
    rt: &tokio::runtime::Runtime,
    bus: NatsBus,
    echo: bool,
    arrivals: Option<flume::Sender<()>>,
) -> (Arc<AtomicU64>, StopSignal) {
    rt.block_on(counter::start(bus, echo, arrivals))
}

/// Times `iters` rounds of: `send` (publishing `N` messages), then waiting
/// until `seen` has counted them all.
fn delivered_rounds<F: std::future::Future<Output = ()>>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    seen: &AtomicU64,
    send: impl Fn() -> F,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let base = seen.load(Ordering::Relaxed);
        let start = Instant::now();
        rt.block_on(async {
            send().await;
            wait_for(seen, base + N).await;
        });
        total += start.elapsed();
    }
    total
}

/// Publishes ready bytes with the raw client.
async fn publish_raw(client: &async_nats::Client, subject: &'static str, bodies: &[Vec<u8>]) {
    for body in bodies {
        client.publish(subject, body.clone().into()).await.unwrap();
    }
    client.flush().await.unwrap();
}

/// Publishes envelopes through `NatsBus` (encoding each).
async fn publish_ours(bus: &NatsBus, envelopes: &[Envelope], stop: &StopSignal) {
    for envelope in envelopes {
        bus.publish(envelope, stop).await.unwrap();
    }
    bus.client().flush().await.unwrap();
}

async fn wait_for(seen: &AtomicU64, n: u64) {
    while seen.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A bus on core NATS only, subjects under `prefix`, writing `wire_format`.
fn core_bus(
    rt: &tokio::runtime::Runtime,
    url: &str,
    prefix: &str,
    wire_format: WireFormat,
) -> NatsBus {
    let settings = NatsSettings {
        url: url.to_string(),
        prefix: prefix.into(),
        token: None,
        when_disconnected: Default::default(),
        wire_format,
        jetstream: None,
    };
    rt.block_on(NatsBus::connect(&settings)).unwrap()
}

fn name(format: WireFormat) -> &'static str {
    match format {
        WireFormat::Json => "json",
        WireFormat::Binary => "binary",
    }
}

fn transport(c: &mut Criterion) {
    let store = tempfile::tempdir().unwrap();
    let server = match LocalServer::jetstream(store.path()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{e}: NATS benches skipped");
            return;
        }
    };
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let connect = || rt.block_on(async_nats::connect(&url)).unwrap();
    let core_bus = |wire_format| core_bus(&rt, &url, "bench", wire_format);
    let publisher = connect();

    let mut group = c.benchmark_group("fire_and_forget");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    // Single 5 s runs swung by +-0.15 in their ratios on this machine;
    // 15 s runs agreed within a few hundredths.
    group.measurement_time(Duration::from_secs(15));

    // Raw: pre-encoded bytes (JSON, and the binary format), counted by a
    // raw subscriber.
    let raw_seen = Arc::new(AtomicU64::new(0));
    {
        let mut sub = rt
            .block_on(connect().subscribe("bench.raw.prices.btc"))
            .unwrap();
        let seen = raw_seen.clone();
        rt.spawn(async move {
            while sub.next().await.is_some() {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        });
        rt.block_on(publisher.flush()).unwrap();
    }
    for format in [WireFormat::Json, WireFormat::Binary] {
        let bodies: Vec<Vec<u8>> = (0..N).map(|i| format.encode(&message(i))).collect();
        group.bench_function(format!("raw_async_nats_{}", name(format)), |b| {
            b.iter_custom(|iters| {
                delivered_rounds(&rt, iters, &raw_seen, || {
                    publish_raw(&publisher, "bench.raw.prices.btc", &bodies)
                })
            })
        });
    }
    // What carrying an envelope's priority and delivery mode in NATS
    // headers as well would cost: the same binary bytes, raw, with two
    // such headers on every message (the subscriber gets them parsed).
    let bodies: Vec<bytes::Bytes> = (0..N)
        .map(|i| WireFormat::Binary.encode(&message(i)).into())
        .collect();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Bistoury-Priority", "normal");
    headers.insert("Bistoury-Delivery-Mode", "fire_and_forget");
    group.bench_function("raw_async_nats_binary_with_headers", |b| {
        b.iter_custom(|iters| {
            delivered_rounds(&rt, iters, &raw_seen, || async {
                for body in &bodies {
                    publisher
                        .publish_with_headers("bench.raw.prices.btc", headers.clone(), body.clone())
                        .await
                        .unwrap();
                }
                publisher.flush().await.unwrap();
            })
        })
    });

    // Ours: envelopes encoded by `NatsBus::publish`, decoded and delivered
    // to an agent by `nats::run_agent`.
    let (seen, stop) = agent(&rt, core_bus(WireFormat::Json), false, None);
    let envelopes: Vec<Envelope> = (0..N).map(message).collect();
    let publish_stop = StopSignal::new();
    for format in [WireFormat::Json, WireFormat::Binary] {
        let bus = core_bus(format);
        group.bench_function(format!("bus_core_nats_{}", name(format)), |b| {
            b.iter_custom(|iters| {
                delivered_rounds(&rt, iters, &seen, || {
                    publish_ours(&bus, &envelopes, &publish_stop)
                })
            })
        });
    }
    // Each side alone (binary): where the difference is, publisher or agent.
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| WireFormat::Binary.encode(&message(i)))
        .collect();
    group.bench_function("raw_publisher_to_bus_core_agent_binary", |b| {
        b.iter_custom(|iters| {
            delivered_rounds(&rt, iters, &seen, || {
                publish_raw(&publisher, "bench.prices.btc", &bodies)
            })
        })
    });
    let bus = core_bus(WireFormat::Binary);
    let to_raw: Vec<Envelope> = (0..N)
        .map(|i| {
            let mut e = message(i);
            e.topic = Topic::new("raw.prices.btc").unwrap();
            e
        })
        .collect();
    group.bench_function("bus_core_publisher_to_raw_subscriber_binary", |b| {
        b.iter_custom(|iters| {
            delivered_rounds(&rt, iters, &raw_seen, || {
                publish_ours(&bus, &to_raw, &publish_stop)
            })
        })
    });
    stop.stop();
    group.finish();

    cross_process(c, &rt, &url, &publisher);
    interleaved(&rt, &url, &publisher);
    one_way_latencies(&rt, &publisher, &core_bus(WireFormat::Binary), &connect());

    // Round trips, printed.
    let rounds = 2_000;
    let (_echo_seen, echo_stop) = agent(&rt, core_bus(WireFormat::Json), true, None);
    let responder = connect();
    let mut raw_requests = rt.block_on(responder.subscribe("bench.raw.echo")).unwrap();
    // The server must have the subscription before the first request.
    rt.block_on(responder.flush()).unwrap();
    rt.spawn(async move {
        while let Some(request) = raw_requests.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, request.payload).await;
            }
        }
    });
    let request = message(1).with_delivery_mode(DeliveryMode::FireAndForget);
    let mut echo_request = request.clone();
    echo_request.topic = Topic::new("echo").unwrap();
    let body = request.to_json_bytes();
    for (name, ours) in [("raw_async_nats", false), ("bus_core_nats", true)] {
        let mut h = Histogram::<u64>::new(3).unwrap();
        rt.block_on(async {
            for _ in 0..rounds {
                let t = Instant::now();
                if ours {
                    bus_core::nats::request(
                        &publisher,
                        "bench",
                        &echo_request,
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                } else {
                    publisher
                        .request("bench.raw.echo", body.clone().into())
                        .await
                        .unwrap();
                }
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        });
        println!(
            "request_round_trip/{name}: p50 {:.1} us, p99 {:.1} us ({rounds} requests)",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3
        );
    }
    echo_stop.stop();
    jetstream_publish(c, &rt, &url);
    drop(server);
}

/// Fire-and-forget latency, printed: one message at a time from publish
/// (no flush: the client writes it out on its own) to the receiver's
/// hands (raw: a subscriber that signals each arrival; ours: an agent run
/// by `run_agent` that does the same from `on_message`), binary bytes
/// both ways.
fn one_way_latencies(
    rt: &tokio::runtime::Runtime,
    raw_publisher: &async_nats::Client,
    bus: &NatsBus,
    raw_subscriber: &async_nats::Client,
) {
    const ROUNDS: u64 = 5_000;
    let (raw_arrived, raw_arrivals) = flume::unbounded();
    let mut sub = rt
        .block_on(raw_subscriber.subscribe("bench.raw.latency"))
        .unwrap();
    rt.block_on(raw_subscriber.flush()).unwrap();
    let reader = rt.spawn(async move {
        while sub.next().await.is_some() {
            let _ = raw_arrived.send(());
        }
    });
    let (arrived, arrivals) = flume::unbounded();
    let (_, stop) = agent(rt, bus.clone(), false, Some(arrived));
    let stop_publishing = StopSignal::new();
    for ours in [false, true] {
        let mut h = Histogram::<u64>::new(3).unwrap();
        rt.block_on(async {
            for i in 0..ROUNDS {
                let mut envelope = message(i);
                envelope.topic = Topic::new("latency").unwrap();
                // The raw side publishes ready bytes, as in the throughput
                // rows (encoded here, before the clock starts).
                let body = (!ours).then(|| WireFormat::Binary.encode(&envelope));
                let t = Instant::now();
                if let Some(body) = body {
                    raw_publisher
                        .publish("bench.raw.latency", body.into())
                        .await
                        .unwrap();
                    raw_arrivals.recv_async().await.unwrap();
                } else {
                    bus.publish(&envelope, &stop_publishing).await.unwrap();
                    arrivals.recv_async().await.unwrap();
                }
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
        });
        println!(
            "fire_and_forget_latency/{}: p50 {:.1} us, p99 {:.1} us ({ROUNDS} messages, one at a time)",
            if ours { "bus_core_nats_binary" } else { "raw_async_nats_binary" },
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3
        );
    }
    stop.stop();
    reader.abort();
}

/// Confirmed publishes into a stream: ours vs raw, same bytes, same window.
fn jetstream_publish(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    const JS_N: u64 = 5_000;
    const WINDOW: usize = 256;
    let settings = NatsSettings {
        url: url.to_string(),
        prefix: "bench".into(),
        token: None,
        when_disconnected: Default::default(),
        wire_format: Default::default(),
        jetstream: Some(bus_core::nats::jetstream::JetStreamSettings {
            families: vec!["js".into()],
            ..Default::default()
        }),
    };
    // Connecting creates the stream of the `js` family.
    let _streams = rt.block_on(NatsBus::connect(&settings)).unwrap();
    let raw =
        rt.block_on(async { async_nats::jetstream::new(async_nats::connect(url).await.unwrap()) });
    // The raw stream is configured as ours (`Reliable::open`): file
    // storage, interest retention, the same duplicate window, so that the
    // server stores both under the same rules.
    rt.block_on(
        raw.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "RAW_JS".into(),
            duplicate_window: Duration::from_secs(120),
            subjects: vec!["raw.js.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            retention: async_nats::jetstream::stream::RetentionPolicy::Interest,
            ..Default::default()
        }),
    )
    .unwrap();
    // Interest retention keeps nothing without consumers: give both
    // streams one, so every message is really stored.
    for (stream, name) in [("BENCH_JS", "keep"), ("RAW_JS", "keep")] {
        let stream = rt.block_on(raw.get_stream(stream)).unwrap();
        rt.block_on(stream.get_or_create_consumer(
            name,
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(name.into()),
                ..Default::default()
            },
        ))
        .unwrap();
    }
    let stop = StopSignal::new();
    let mut group = c.benchmark_group("jetstream_publish");
    group.throughput(Throughput::Elements(JS_N));
    group.sample_size(10);
    let fresh = |i: u64| {
        let mut e = message(i).with_delivery_mode(DeliveryMode::AtLeastOnce);
        e.topic = Topic::new("js.prices.btc").unwrap();
        e
    };
    // Raw, plain; and raw with a `Nats-Msg-Id` per message (the stream
    // then checks each against its duplicate window, as it does ours); the
    // bytes of either wire format.
    for format in [WireFormat::Json, WireFormat::Binary] {
        for (name, with_id) in [("raw_async_nats", false), ("raw_async_nats_msg_id", true)] {
            group.bench_function(format!("{name}_{}", self::name(format)), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // New messages each round, encoded untimed.
                        let bodies: Vec<(bytes::Bytes, String)> = (0..JS_N)
                            .map(|i| {
                                let e = fresh(i);
                                (format.encode(&e).into(), e.id.to_string())
                            })
                            .collect();
                        let start = Instant::now();
                        rt.block_on(async {
                            for chunk in bodies.chunks(WINDOW) {
                                let mut acks = Vec::with_capacity(WINDOW);
                                for (body, id) in chunk {
                                    let mut message =
                                        async_nats::jetstream::message::PublishMessage::build()
                                            .payload(body.clone());
                                    if with_id {
                                        message = message.message_id(id);
                                    }
                                    acks.push(
                                        raw.send_publish("raw.js.prices.btc", message)
                                            .await
                                            .unwrap(),
                                    );
                                }
                                for ack in acks {
                                    ack.await.unwrap();
                                }
                            }
                        });
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }
    // Ours as configured by default (at-least-once publishes carry their
    // id, like the raw `_msg_id` rows), and with `deduplicate_publishes`
    // off (no id, like the plain raw rows).
    let rows = [WireFormat::Json, WireFormat::Binary]
        .into_iter()
        .flat_map(|format| [(format, true), (format, false)]);
    for (format, deduplicate) in rows {
        let mut jetstream = settings.jetstream.clone();
        if let Some(js) = jetstream.as_mut() {
            js.deduplicate_publishes = deduplicate;
        }
        let bus = rt
            .block_on(NatsBus::connect(&NatsSettings {
                wire_format: format,
                jetstream,
                ..settings.clone()
            }))
            .unwrap();
        let suffix = if deduplicate { "" } else { "_without_ids" };
        group.bench_function(format!("bus_core_nats_{}{suffix}", name(format)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let envelopes: Vec<Envelope> = (0..JS_N).map(fresh).collect();
                    let start = Instant::now();
                    rt.block_on(async {
                        for chunk in envelopes.chunks(WINDOW) {
                            bus.publish_many(chunk, &stop).await.unwrap();
                        }
                    });
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

/// Set (to `raw` or `agent`) when this binary runs as the receiving
/// process of `fire_and_forget_cross_process`; the server's URL in
/// `RECEIVER_URL`.
const RECEIVER: &str = "BISTOURY_BENCH_RECEIVER";
const RECEIVER_URL: &str = "BISTOURY_BENCH_RECEIVER_URL";
/// Subjects of the cross-process rows: the raw receiver's, and the prefix
/// of the agent's (neither is read by anything else in this bench).
const CROSS_RAW_SUBJECT: &str = "cross.raw.prices.btc";
const CROSS_PREFIX: &str = "cross";
/// The subject of [`message`]'s topic under [`CROSS_PREFIX`].
const CROSS_AGENT_SUBJECT: &str = "cross.prices.btc";

/// A receiving process: started, subscribed (`ready` read), told its
/// counts on a channel; killed on drop.
struct ReceiverProcess {
    child: std::process::Child,
    counts: flume::Receiver<u64>,
    /// Messages sent to it so far (what it must have counted).
    sent: u64,
}

impl ReceiverProcess {
    fn start(mode: &str, url: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(RECEIVER, mode)
            .env(RECEIVER_URL, url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready, subscribed) = flume::bounded(1);
        let (tell, counts) = flume::unbounded();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                match line.parse::<u64>() {
                    Ok(count) => {
                        let _ = tell.send(count);
                    }
                    Err(_) if line == "ready" => {
                        let _ = ready.send(());
                    }
                    Err(_) => eprintln!("receiver: {line}"),
                }
            }
        });
        subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("the receiving process subscribed");
        Self {
            child,
            counts,
            sent: 0,
        }
    }

    /// Times `iters` rounds of: `send` (publishing `N` messages to the
    /// receiver), then waiting until it has counted them all.
    fn rounds<F: std::future::Future<Output = ()>>(
        &mut self,
        rt: &tokio::runtime::Runtime,
        iters: u64,
        send: impl Fn() -> F,
    ) -> Duration {
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..iters {
                send().await;
                self.sent += N;
                while self.counts.recv_async().await.unwrap() < self.sent {}
            }
        });
        start.elapsed()
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This binary as a receiving process: counts what arrives (a raw
/// subscriber, or an agent run by `run_agent`), says `ready` once
/// subscribed, then prints its count each time it passes a multiple of
/// `N`, until killed.
fn receiver(mode: &str) {
    let url = std::env::var(RECEIVER_URL).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (seen, _stop) = match mode {
        "agent" => {
            let bus = core_bus(&rt, &url, CROSS_PREFIX, WireFormat::Binary);
            let (seen, stop) = agent(&rt, bus, false, None);
            (seen, Some(stop))
        }
        _ => {
            let client = rt.block_on(async_nats::connect(&url)).unwrap();
            let mut sub = rt.block_on(client.subscribe(CROSS_RAW_SUBJECT)).unwrap();
            rt.block_on(client.flush()).unwrap();
            let seen = Arc::new(AtomicU64::new(0));
            let counter = seen.clone();
            rt.spawn(async move {
                let _client = client;
                while sub.next().await.is_some() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            (seen, None)
        }
    };
    println!("ready");
    rt.block_on(async {
        let mut told = 0;
        loop {
            let count = seen.load(Ordering::Relaxed);
            if count / N > told / N {
                println!("{count}");
                told = count;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
}

/// Fire-and-forget with the receiver in its own process.
fn cross_process(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    url: &str,
    publisher: &async_nats::Client,
) {
    let mut group = c.benchmark_group("fire_and_forget_cross_process");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    {
        let mut receiver = ReceiverProcess::start("raw", url);
        {
            // On the raw receiver's subject (the prefix and this topic).
            let envelopes: Vec<Envelope> = (0..N)
                .map(|i| {
                    let mut e = message(i);
                    e.topic = Topic::new("raw.prices.btc").unwrap();
                    e
                })
                .collect();
            let stop = StopSignal::new();
            let bus = core_bus(rt, url, CROSS_PREFIX, WireFormat::Binary);
            group.bench_function("split_bus_core_publisher_raw_receiver", |b| {
                b.iter_custom(|iters| {
                    receiver.rounds(rt, iters, || publish_ours(&bus, &envelopes, &stop))
                })
            });
        }
        for format in [WireFormat::Json, WireFormat::Binary] {
            let bodies: Vec<Vec<u8>> = (0..N).map(|i| format.encode(&message(i))).collect();
            group.bench_function(format!("raw_async_nats_{}", name(format)), |b| {
                b.iter_custom(|iters| {
                    receiver.rounds(rt, iters, || {
                        publish_raw(publisher, CROSS_RAW_SUBJECT, &bodies)
                    })
                })
            });
        }
    }
    {
        let mut receiver = ReceiverProcess::start("agent", url);
        let envelopes: Vec<Envelope> = (0..N).map(message).collect();
        let stop = StopSignal::new();
        // The subject the agent's topic travels on.
        let bodies: Vec<Vec<u8>> = (0..N)
            .map(|i| WireFormat::Binary.encode(&message(i)))
            .collect();
        group.bench_function("split_raw_publisher_bus_core_receiver", |b| {
            b.iter_custom(|iters| {
                receiver.rounds(rt, iters, || {
                    publish_raw(publisher, CROSS_AGENT_SUBJECT, &bodies)
                })
            })
        });
        for format in [WireFormat::Json, WireFormat::Binary] {
            let bus = core_bus(rt, url, CROSS_PREFIX, format);
            group.bench_function(format!("bus_core_nats_{}", name(format)), |b| {
                b.iter_custom(|iters| {
                    receiver.rounds(rt, iters, || publish_ours(&bus, &envelopes, &stop))
                })
            });
        }
    }
    group.finish();
}

/// Raw and ours alternating round by round, with the receivers in their
/// own processes; prints each row's median throughput and the ratios.
fn interleaved(rt: &tokio::runtime::Runtime, url: &str, publisher: &async_nats::Client) {
    const ROUNDS: usize = 40;
    let mut raw_receiver = ReceiverProcess::start("raw", url);
    let mut agent_receiver = ReceiverProcess::start("agent", url);
    let stop = StopSignal::new();
    let envelopes: Vec<Envelope> = (0..N).map(message).collect();
    let rate = |elapsed: Duration| N as f64 / elapsed.as_secs_f64() / 1e3;
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let mut line = Vec::new();
    for format in [WireFormat::Json, WireFormat::Binary] {
        let bodies: Vec<Vec<u8>> = envelopes.iter().map(|e| format.encode(e)).collect();
        let bus = core_bus(rt, url, CROSS_PREFIX, format);
        let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut raw_round = || {
                rate(
                    raw_receiver
                        .rounds(rt, 1, || publish_raw(publisher, CROSS_RAW_SUBJECT, &bodies)),
                )
            };
            let mut our_round =
                || rate(agent_receiver.rounds(rt, 1, || publish_ours(&bus, &envelopes, &stop)));
            // Each goes first in every other round: neither always finds
            // the server and the cores as the other left them.
            let (r, o) = match round % 2 {
                0 => (raw_round(), our_round()),
                _ => {
                    let o = our_round();
                    (raw_round(), o)
                }
            };
            raw.push(r);
            ours.push(o);
            ratios.push(o / r);
        }
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        line.push(format!(
            "{}: raw {:.1} k/s, ours {:.1} k/s, ratio of medians {:.2}x (rounds {low:.2}-{high:.2}x)",
            name(format),
            median(raw.clone()),
            median(ours.clone()),
            median(ours) / median(raw)
        ));
    }
    println!(
        "fire_and_forget_interleaved ({ROUNDS} rounds of {N}, receivers in their own processes): {}",
        line.join("; ")
    );
}

criterion_group!(benches, transport);

fn main() {
    if let Ok(mode) = std::env::var(RECEIVER) {
        receiver(&mode);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
