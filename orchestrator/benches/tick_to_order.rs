#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Tick-to-order latency:
//!
//! * in process: `bistoury run` (queued bus, in lockstep) of the lone
//!   crossover on a small synthetic market, its agents each on a thread of
//!   its own (`run_lockstep`) and all on one (`[bus] latency = "low"`,
//!   `run_lockstep_one_thread`); each iteration is a whole run, and the
//!   percentiles of the time from each candle handed to the bus to the
//!   order request decided on it (the report's `tick to order` line) are
//!   printed for the last run of each;
//! * over NATS: the signal, trader and risk agents as `bistoury agent`
//!   processes on a `nats-server` started here, with `[bus] latency`
//!   `default` and `low`; this process publishes one candle at a time (as
//!   the collector would) and times it to the trader's order request
//!   arriving back here: three hops (candle to signals, aggregated signal
//!   to trader, order request to here). The raw hops, timed the same way
//!   in the same run, interleaved candle by candle: the same bytes sent
//!   through three raw async-nats processes (this binary again), each
//!   forwarding what it reads to the next, the last back here. Printed:
//!   the percentiles of both and their ratio.
//!
//! Run: `cargo bench -p orchestrator --bench tick_to_order`

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bus_core::model::payload::{Candle, CandleFields, Symbol};
use bus_core::{AgentId, Envelope, Payload, Topic};
use criterion::{criterion_group, Criterion, Throughput};
use futures_util::StreamExt;
use orchestrator::config::{BistouryConfig, Latency};
use rust_decimal::Decimal;

mod common;

const CANDLES_PER_SYMBOL: usize = 2_000;

fn tick_to_order(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lone_crossover.toml");
    let mut config = BistouryConfig::load(Some(std::path::Path::new(example)), &[]).unwrap();
    config.run.output_dir = dir.path().to_path_buf();
    config.data.candles = Some(CANDLES_PER_SYMBOL);
    // Orders often: a 2/4 crossover.
    if let Some(crossover) = config.signals.ma_crossover.as_mut() {
        (crossover.fast, crossover.slow) = (2, 4);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let symbols = config.data.symbols.as_ref().map_or(0, Vec::len);
    let mut group = c.benchmark_group("tick_to_order_in_process");
    group.sample_size(10);
    group.throughput(Throughput::Elements((CANDLES_PER_SYMBOL * symbols) as u64));
    let mut last = Vec::new();
    for latency in [Latency::Default, Latency::Low] {
        config.bus.latency = latency;
        let name = match latency {
            Latency::Default => "run_lockstep",
            Latency::Low => "run_lockstep_one_thread",
        };
        let mut timed = None;
        group.bench_function(name, |b| {
            b.iter(|| {
                let outcome = runtime.block_on(orchestrator::run(&config)).unwrap();
                timed = outcome.report.bus.and_then(|bus| bus.tick_to_order);
            })
        });
        last.push((name, timed));
    }
    group.finish();
    for (name, timed) in last {
        if let Some(t) = timed {
            println!(
                "tick to order, {name} (last run): {} orders, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
                t.orders, t.p50_us, t.p99_us, t.p999_us, t.max_us
            );
        }
    }
}

/// Set when this binary runs as a raw forwarding process: the server's
/// URL, the subject it reads and the subject it forwards to, separated by
/// spaces.
const FORWARD: &str = "BISTOURY_BENCH_FORWARD";
const PREFIX: &str = "t2o";
/// Candles published (one at a time) over NATS.
const NATS_CANDLES: i64 = 2_000;

/// A process this bench started (an agent, a raw forwarder), killed on
/// drop.
struct ChildProcess(Child);

impl ChildProcess {
    /// Starts `command` (its output piped) and waits for its first line,
    /// which it says once it is ready; the process and that line.
    fn ready(command: &mut Command) -> (Self, String) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        (Self(child), first)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bistoury agent NAME` and waits for its "connected" line.
fn agent_process(name: &str, config: &std::path::Path) -> ChildProcess {
    let (agent, first) = ChildProcess::ready(Command::new(env!("CARGO_BIN_EXE_bistoury")).args([
        "agent",
        name,
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(first.contains("connected"), "{name}: {first}");
    agent
}

/// The candle of bar `bar`: a zigzag (two up, two down), so a 2/4
/// crossover turns every few bars.
fn candle(bar: i64) -> Envelope {
    let step = [0, 1, 2, 1][(bar % 4) as usize];
    let close = Decimal::new(10_000 + 40 * step + bar % 7, 2);
    let candle = Candle::new(CandleFields {
        symbol: Symbol::new("BTC").unwrap(),
        interval: "1m".into(),
        open_time_ms: 1_700_000_000_000 + bar * 60_000,
        open: close,
        high: close + Decimal::ONE,
        low: close - Decimal::ONE,
        close,
        volume: Decimal::ONE,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("collector"),
        Topic::new("data.candle.BTC.1m").unwrap(),
        Payload::DataCandle(candle),
    )
}

/// p50, p99 and max of `samples` in µs.
fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(at(0.5)), us(at(0.99)), us(samples[samples.len() - 1]))
}

/// What one session timed, each a sample per candle (the agents') or per
/// probe (the raw chain's).
#[derive(Default)]
struct Timings {
    /// Candle sent to its order request arriving here.
    to_order: Vec<Duration>,
    /// Candle sent to its aggregated signal arriving here.
    to_signal: Vec<Duration>,
    /// Through the three raw forwarders, and through the first two.
    raw_three: Vec<Duration>,
    raw_two: Vec<Duration>,
}

/// Sends `bytes` on `subject` and flushes, as the collector publishes a
/// candle: the instant it was sent. Each send comes after the same quiet
/// pause (as a market's candles come apart), so none starts with the
/// processes still awake from the one before.
async fn send(client: &async_nats::Client, subject: &str, bytes: bytes::Bytes) -> Instant {
    tokio::time::sleep(Duration::from_millis(2)).await;
    let sent = Instant::now();
    client.publish(subject.to_string(), bytes).await.unwrap();
    client.flush().await.unwrap();
    sent
}

/// The agents on `url` writing `wire_format`, fed `NATS_CANDLES` candles
/// one at a time in that format; before each candle, the same bytes sent
/// through the raw forwarders' chain (which `raw_chain` started).
fn session(
    rt: &tokio::runtime::Runtime,
    url: &str,
    wire_format: bus_core::model::WireFormat,
    latency: &str,
) -> Timings {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lone_crossover.toml");
    let lone = std::fs::read_to_string(example)
        .unwrap()
        .replace("fast = 10", "fast = 2")
        .replace("slow = 20", "slow = 4");
    let format_name = match wire_format {
        bus_core::model::WireFormat::Json => "json",
        bus_core::model::WireFormat::Binary => "binary",
    };
    let config = dir.path().join("agents.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ntransport = \"nats\"\nnats_url = \"{url}\"\nsubject_prefix = \"{PREFIX}\"\n\
             wire_format = \"{format_name}\"\nlatency = \"{latency}\"\n\n[run]\noutput_dir = {:?}\n\n{lone}",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let _agents: Vec<ChildProcess> = ["risk", "trader", "signals"]
        .iter()
        .map(|name| agent_process(name, &config))
        .collect();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let subscribe = |family: &str| client.subscribe(format!("{PREFIX}.{family}.>"));
        let mut orders = subscribe("trade.order_request").await.unwrap();
        let mut analysed = subscribe("signal.analysis_complete").await.unwrap();
        let mut aggregated = subscribe("signal.aggregated").await.unwrap();
        let mut raw_two = client.subscribe(raw_subject(2)).await.unwrap();
        let mut raw_three = client.subscribe(raw_subject(3)).await.unwrap();
        client.flush().await.unwrap();
        let subject = format!("{PREFIX}.data.candle.BTC.1m");
        let mut timings = Timings::default();
        for bar in 0..NATS_CANDLES {
            let bytes = bytes::Bytes::from(wire_format.encode(&candle(bar)));
            let sent = send(&client, &raw_subject(0), bytes.clone()).await;
            raw_two.next().await.unwrap();
            timings.raw_two.push(sent.elapsed());
            raw_three.next().await.unwrap();
            timings.raw_three.push(sent.elapsed());
            let sent = send(&client, &subject, bytes).await;
            // The order on this bar, if it makes one: it comes before the
            // signals' "analysed" or within a few hops after it.
            let mut deadline = None;
            loop {
                let wait = deadline.map_or(Duration::from_secs(5), |d: Instant| {
                    d.saturating_duration_since(Instant::now())
                });
                tokio::select! {
                    Some(_) = orders.next() => {
                        timings.to_order.push(sent.elapsed());
                        break;
                    }
                    Some(_) = aggregated.next() => timings.to_signal.push(sent.elapsed()),
                    Some(_) = analysed.next(), if deadline.is_none() => {
                        deadline = Some(Instant::now() + Duration::from_millis(3));
                    }
                    _ = tokio::time::sleep(wait) => break,
                }
            }
        }
        timings
    })
}

/// The subject raw forwarder `hop` reads (`hop` 3: what the last one
/// forwards, read here).
fn raw_subject(hop: usize) -> String {
    format!("{PREFIX}-raw.{hop}")
}

/// Three raw forwarding processes (this binary again), one per hop of the
/// agents' chain: each reads what the one before forwarded and publishes
/// it on, as an agent would its answer.
fn raw_chain(url: &str) -> Vec<ChildProcess> {
    (0..3)
        .map(|hop| {
            let spec = format!("{url} {} {}", raw_subject(hop), raw_subject(hop + 1));
            let (forwarder, _ready) = ChildProcess::ready(
                Command::new(std::env::current_exe().unwrap()).env(FORWARD, spec),
            );
            forwarder
        })
        .collect()
}

fn over_nats(_c: &mut Criterion) {
    let Some((server, rt)) = common::nats_server_and_runtime("tick to order over NATS") else {
        return;
    };
    let _forwarders = raw_chain(&server.url());
    use bus_core::model::WireFormat;
    for (format, latency) in [
        (WireFormat::Json, "default"),
        (WireFormat::Binary, "default"),
        (WireFormat::Json, "low"),
        (WireFormat::Binary, "low"),
    ] {
        let mut t = session(&rt, &server.url(), format, latency);
        assert!(!t.to_order.is_empty(), "no order request came back");
        let (r50, r99, _) = percentiles(&mut t.raw_three);
        let (o50, o99, omax) = percentiles(&mut t.to_order);
        println!(
            "tick to order over NATS, {format:?}, latency {latency}: {} orders of {NATS_CANDLES} candles, p50 {o50:.1} µs, p99 {o99:.1} µs, max {omax:.1} µs; \
             three raw hops (same run, interleaved): p50 {r50:.1} µs, p99 {r99:.1} µs; ratio p50 {:.2}x, p99 {:.2}x (goal <= 1.2x)",
            t.to_order.len(),
            o50 / r50,
            o99 / r99
        );
        if !t.to_signal.is_empty() {
            let (s50, s99, _) = percentiles(&mut t.to_signal);
            let (r50, r99, _) = percentiles(&mut t.raw_two);
            println!(
                "  of which candle to aggregated signal back here (two hops): p50 {s50:.1} µs, p99 {s99:.1} µs; \
                 two raw hops p50 {r50:.1} µs, p99 {r99:.1} µs; ratio p50 {:.2}x, p99 {:.2}x",
                s50 / r50,
                s99 / r99
            );
        }
    }
}

/// This binary as a raw forwarding process: publishes everything that
/// arrives on `from` to `to`, until killed.
fn forward(url: &str, from: &str, to: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let mut arrivals = client.subscribe(from.to_string()).await.unwrap();
        client.flush().await.unwrap();
        println!("ready");
        let to = async_nats::Subject::from(to);
        while let Some(message) = arrivals.next().await {
            client.publish(to.clone(), message.payload).await.unwrap();
        }
    });
}

criterion_group!(benches, tick_to_order, over_nats);

fn main() {
    if let Ok(spec) = std::env::var(FORWARD) {
        let mut parts = spec.split(' ');
        let (Some(url), Some(from), Some(to)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("{FORWARD}: expected `url from to`, got {spec:?}");
        };
        forward(url, from, to);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
