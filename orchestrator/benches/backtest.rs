#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Backtest throughput: candles per second through collector -> all five
//! strategies -> aggregator -> trader -> risk -> report, inline, with the
//! embedded default configuration (three symbols).
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

criterion_group!(benches, backtest);
criterion_main!(benches);
