#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Tick-to-order latency:
//!
//! * in process: `bistoury run` (queued bus, one thread per agent, in
//!   lockstep) of the lone crossover on a small synthetic market; each
//!   iteration is a whole run, and the percentiles of the time from each
//!   candle handed to the bus to the order request decided on it (the
//!   report's `tick to order` line) are printed for the last run;
//! * over NATS: the signal, trader and risk agents as `bistoury agent`
//!   processes on a `nats-server` started here; this process publishes
//!   one candle at a time (as the collector would) and times it to the
//!   trader's order request arriving back here: three hops (candle to
//!   signals, aggregated signal to trader, order request to here). In the
//!   same run, the raw hop: a raw async-nats client's round trip to an
//!   echoing process of its own (this binary again), halved. Printed:
//!   the percentiles of both and their ratio to three raw hops.
//!
//! Run: `cargo bench -p orchestrator --bench tick_to_order`

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bus_core::model::payload::{Candle, CandleFields, Symbol};
use bus_core::nats::local_server::{free_port, LocalServer};
use bus_core::{AgentId, Envelope, Payload, Topic};
use criterion::{criterion_group, Criterion, Throughput};
use futures_util::StreamExt;
use orchestrator::config::BistouryConfig;
use rust_decimal::Decimal;

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
    let mut last = None;
    group.bench_function("run_lockstep", |b| {
        b.iter(|| {
            let outcome = runtime.block_on(orchestrator::run(&config)).unwrap();
            last = outcome.report.bus.and_then(|bus| bus.tick_to_order);
        })
    });
    group.finish();
    if let Some(t) = last {
        println!(
            "tick to order (last run): {} orders, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            t.orders, t.p50_us, t.p99_us, t.p999_us, t.max_us
        );
    }
}

/// Set to a server's URL when this binary runs as the raw echo process.
const ECHO: &str = "BISTOURY_BENCH_ECHO_URL";
const PREFIX: &str = "t2o";
/// Candles published (one at a time) over NATS.
const NATS_CANDLES: i64 = 600;

/// A process this bench started (an agent, the echo), killed on drop.
struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bistoury agent NAME` and waits for its "connected" line.
fn agent_process(name: &str, config: &std::path::Path) -> ChildProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bistoury"))
        .args(["agent", name, "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("connected"), "{name}: {first}");
    ChildProcess(child)
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

/// The agents on `url` writing `wire_format`, fed `NATS_CANDLES` candles
/// one at a time in that format: the time from each candle sent to its
/// order request arriving here, and to its aggregated signal arriving here.
fn session(
    rt: &tokio::runtime::Runtime,
    url: &str,
    wire_format: bus_core::model::WireFormat,
) -> (Vec<Duration>, Vec<Duration>) {
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
             wire_format = \"{format_name}\"\n\n[run]\noutput_dir = {:?}\n\n{lone}",
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
        client.flush().await.unwrap();
        let subject = format!("{PREFIX}.data.candle.BTC.1m");
        let (mut ours, mut signalled) = (Vec::new(), Vec::new());
        for bar in 0..NATS_CANDLES {
            let bytes = wire_format.encode(&candle(bar));
            let sent = Instant::now();
            client.publish(subject.clone(), bytes.into()).await.unwrap();
            client.flush().await.unwrap();
            // The order on this bar, if it makes one: it comes before the
            // signals' "analysed" or within a few hops after it.
            let mut deadline = None;
            loop {
                let wait = deadline.map_or(Duration::from_secs(5), |d: Instant| {
                    d.saturating_duration_since(Instant::now())
                });
                tokio::select! {
                    Some(_) = orders.next() => {
                        ours.push(sent.elapsed());
                        break;
                    }
                    Some(_) = aggregated.next() => signalled.push(sent.elapsed()),
                    Some(_) = analysed.next(), if deadline.is_none() => {
                        deadline = Some(Instant::now() + Duration::from_millis(3));
                    }
                    _ = tokio::time::sleep(wait) => break,
                }
            }
        }
        (ours, signalled)
    })
}

/// The raw hop on `url`: round trips to the echoing process, halved.
fn raw_hops(rt: &tokio::runtime::Runtime, url: &str) -> Vec<Duration> {
    let echo = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ECHO, url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut echo = ChildProcess(echo);
    let mut ready = String::new();
    std::io::BufReader::new(echo.0.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let bytes = bytes::Bytes::from(candle(0).to_json_bytes());
        let mut raw = Vec::new();
        for _ in 0..2_000 {
            let sent = Instant::now();
            client.request("t2o-echo", bytes.clone()).await.unwrap();
            raw.push(sent.elapsed() / 2);
        }
        raw
    })
}

fn over_nats(_c: &mut Criterion) {
    let port = free_port().unwrap();
    let server = match LocalServer::start("nats-server", port, &[]) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{e}: tick to order over NATS skipped");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut raw = raw_hops(&rt, &server.url());
    let (r50, r99, rmax) = percentiles(&mut raw);
    println!(
        "raw async-nats hop (round trip / 2, same run): p50 {r50:.1} µs, p99 {r99:.1} µs, max {rmax:.1} µs"
    );
    use bus_core::model::WireFormat;
    for format in [WireFormat::Json, WireFormat::Binary] {
        let (mut ours, mut signalled) = session(&rt, &server.url(), format);
        assert!(!ours.is_empty(), "no order request came back");
        let (o50, o99, omax) = percentiles(&mut ours);
        println!(
            "tick to order over NATS, {format:?}: {} orders of {NATS_CANDLES} candles, p50 {o50:.1} µs, p99 {o99:.1} µs, max {omax:.1} µs; against three raw hops p50 {:.2}x, p99 {:.2}x (goal <= 1.2x)",
            ours.len(),
            o50 / (3.0 * r50),
            o99 / (3.0 * r99)
        );
        if !signalled.is_empty() {
            let (s50, s99, _) = percentiles(&mut signalled);
            println!(
                "  of which candle to aggregated signal back here (two hops): p50 {s50:.1} µs, p99 {s99:.1} µs; against two raw hops p50 {:.2}x",
                s50 / (2.0 * r50)
            );
        }
    }
}

/// This binary as the raw echo process: answers every request on
/// `t2o-echo` with its own bytes, until killed.
fn echo(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let mut requests = client.subscribe("t2o-echo").await.unwrap();
        client.flush().await.unwrap();
        println!("ready");
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                client.publish(reply, request.payload).await.unwrap();
            }
        }
    });
}

criterion_group!(benches, tick_to_order, over_nats);

fn main() {
    if let Ok(url) = std::env::var(ECHO) {
        echo(&url);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
