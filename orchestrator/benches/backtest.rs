#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Backtest throughput: candles per second through collector ->
//! strategies -> aggregator -> trader -> risk -> report, inline:
//!
//! * `backtest_default_pipeline`: the embedded default configuration
//!   (three symbols, five strategies);
//! * `backtest_candle_file`: a candle CSV of one market, 50,000 hourly
//!   bars, the lone 10/20 crossover of `examples/lone_crossover.toml`:
//!   reading and parsing the file, the run and its report in each
//!   iteration. `benchmarks/backtest.sh` runs it on the bars it gives
//!   backtesting.py (`BISTOURY_BENCH_BARS=FILE`); without that variable
//!   it writes bars of its own.
//!
//! Run: `cargo bench -p orchestrator --bench backtest`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orchestrator::config::BistouryConfig;

const CANDLES_PER_SYMBOL: usize = 20_000;

fn backtest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("backtest_default_pipeline");
    group.sample_size(10);
    for details in [true, false] {
        let mut config = BistouryConfig::embedded_default();
        config.run.output_dir = dir.path().to_path_buf();
        config.data.candles = Some(CANDLES_PER_SYMBOL);
        config.signals.publish_details = details;
        let symbols = config.data.symbols.as_ref().map_or(0, Vec::len);
        group.throughput(Throughput::Elements((CANDLES_PER_SYMBOL * symbols) as u64));
        let name = if details {
            "with_signal_details"
        } else {
            "aggregated_only"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let outcome = orchestrator::backtest(&config).unwrap();
                assert!(outcome.report.accounting_identity_holds);
                outcome.report.fills
            })
        });
    }
    group.finish();
}

/// `bars` hourly candles of one market: a seeded random walk with a slow
/// trend (`benchmarks/write_bars.py` writes the same kind).
fn write_bars(path: &std::path::Path, bars: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "open_time_ms,symbol,open,high,low,close,volume").unwrap();
    let (mut state, mut price) = (17_u64, 100.0_f64);
    for i in 0..bars {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let trend = 0.002 * (i as f64 / 200.0).sin();
        let open = price;
        let close = (open * (1.0 + trend + noise * 0.01) * 100.0).round() / 100.0;
        let time = 1_577_836_800_000_i64 + i as i64 * 3_600_000;
        let (high, low) = (open.max(close) * 1.002, open.min(close) * 0.998);
        writeln!(out, "{time},BTC,{open:.2},{high:.2},{low:.2},{close:.2},10").unwrap();
        price = close;
    }
}

fn backtest_candle_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let bars = match std::env::var_os("BISTOURY_BENCH_BARS") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let path = dir.path().join("bars.csv");
            write_bars(&path, 50_000);
            path
        }
    };
    let rows = std::fs::read_to_string(&bars).unwrap().lines().count() - 1;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lone_crossover.toml");
    let text = format!(
        "[data]\nkind = \"file\"\npath = {:?}\ninterval = \"1h\"\n\n[run]\noutput_dir = {:?}\n{}",
        bars.display().to_string(),
        dir.path().display().to_string(),
        std::fs::read_to_string(example).unwrap()
    );
    let file = dir.path().join("base.toml");
    std::fs::write(&file, text).unwrap();
    let mut config = BistouryConfig::load(Some(&file), &[]).unwrap();
    config.signals.publish_details = false;
    let mut group = c.benchmark_group("backtest_candle_file");
    group.sample_size(20);
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("lone_crossover", |b| {
        b.iter(|| {
            let outcome = orchestrator::backtest(&config).unwrap();
            assert_eq!(outcome.report.candles, rows as u64);
            outcome.report.fills
        })
    });
    group.finish();
}

criterion_group!(benches, backtest, backtest_candle_file);
criterion_main!(benches);
