#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Tick-to-order latency in process: `bistoury run` (queued bus, one
//! thread per agent, in lockstep) of the lone crossover on a small
//! synthetic market; each iteration is a whole run, and the percentiles of
//! the time from each candle handed to the bus to the order request
//! decided on it (the report's `tick to order` line) are printed for the
//! last run.
//!
//! Run: `cargo bench -p orchestrator --bench tick_to_order`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orchestrator::config::BistouryConfig;

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

criterion_group!(benches, tick_to_order);
criterion_main!(benches);
