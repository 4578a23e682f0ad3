//! End-to-end: `bistoury run` (every agent on its own thread, lockstep on,
//! as by default) trades exactly as `bistoury backtest` does: the same trade
//! log and the same report, byte for byte, run after run.

use std::path::Path;

mod support;
use support::{bistoury_succeeds, traded_figures};

/// Runs `config` (empty: the embedded default) as a backtest once and as a
/// run `runs` times; every run's trade log and report must be the
/// backtest's.
fn run_matches_backtest(dir: &Path, config: &str, runs: usize) {
    let mut args = vec![];
    if !config.is_empty() {
        std::fs::write(dir.join("config.toml"), config).unwrap();
        args = vec!["--config", "config.toml"];
    }
    let with = |command: &str, out: &str| {
        let mut all = vec![command, "--output-dir", out];
        all.extend(&args);
        bistoury_succeeds(&all, dir);
    };
    with("backtest", "backtest");
    let trades = std::fs::read_to_string(dir.join("backtest/trades.csv")).unwrap();
    assert!(
        trades.lines().count() > 20,
        "the strategies trade:\n{trades}"
    );
    let expected = traded_figures(&dir.join("backtest"));
    for n in 0..runs {
        let out = format!("run-{n}");
        with("run", &out);
        let run = dir.join(&out);
        let got = std::fs::read_to_string(run.join("trades.csv")).unwrap();
        assert!(
            got == trades,
            "run {n}: the trade log differs from the backtest's"
        );
        assert_eq!(
            traded_figures(&run),
            expected,
            "run {n}: the report differs"
        );
        std::fs::remove_dir_all(&run).unwrap();
    }
}

#[test]
fn run_gives_the_backtests_trade_log_and_report_on_the_default_data_20_times() {
    let dir = tempfile::tempdir().unwrap();
    run_matches_backtest(dir.path(), "", 20);
}

/// Hourly bars of one symbol: a seeded random walk with trends, written as
/// a user's candle file.
fn one_symbol_file(path: &Path, bars: usize) {
    let mut text = String::from("open_time_ms,symbol,open,high,low,close,volume\n");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut price = 20_000.0_f64;
    for i in 0..bars {
        let drift = if (i / 300) % 2 == 0 { 0.0004 } else { -0.0004 };
        let open = price;
        let close = open * (1.0 + drift + (next() - 0.5) * 0.02);
        let high = open.max(close) * (1.0 + next() * 0.005);
        let low = open.min(close) * (1.0 - next() * 0.005);
        let time = 1_600_000_000_000_i64 + i as i64 * 3_600_000;
        text.push_str(&format!(
            "{time},BTC,{open:.2},{high:.2},{low:.2},{close:.2},{:.3}\n",
            10.0 + next() * 5.0
        ));
        price = close;
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn run_gives_the_backtests_trade_log_and_report_on_a_one_symbol_file_20_times() {
    let dir = tempfile::tempdir().unwrap();
    one_symbol_file(&dir.path().join("btc-1h.csv"), 4000);
    run_matches_backtest(
        dir.path(),
        "[data]\nkind = \"file\"\npath = \"btc-1h.csv\"\ninterval = \"1h\"\ninterval_ms = 3600000\n",
        20,
    );
}

#[test]
fn run_in_latency_mode_trades_as_the_backtest() {
    // Agents spin before parking; what they do is unchanged.
    let dir = tempfile::tempdir().unwrap();
    one_symbol_file(&dir.path().join("btc-1h.csv"), 2000);
    run_matches_backtest(
        dir.path(),
        "[data]\nkind = \"file\"\npath = \"btc-1h.csv\"\ninterval = \"1h\"\n[bus]\nlatency = \"low\"\n",
        3,
    );
}
