//! End-to-end: the `bistoury` command line with config files, checked
//! through its report, trade log and exit codes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rust_decimal::Decimal;
use serde_json::Value;

const SMALL: &str = r#"
[data]
candles = 3000
symbols = [
    { symbol = "BTC", start_price = 35000.0 },
    { symbol = "ETH", start_price = 2000.0 },
]
"#;

fn bistoury(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env_remove("BISTOURY__TRADER__FEE_RATE")
        .output()
        .expect("the binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn decimal(v: &Value) -> Decimal {
    v.as_str().expect("decimals are strings").parse().unwrap()
}

/// The rows of an RFC 4180 CSV text, header first (the oracle for the
/// trade log's quoting: fields in quotes may hold commas, doubled quotes
/// and line breaks).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    assert!(
        field.is_empty() && row.is_empty(),
        "the last row is not terminated: {row:?} {field:?}"
    );
    rows
}

/// The trade log's rows as maps from column name to field.
fn trade_rows(dir: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("bistoury-output/trades.csv")).unwrap();
    let mut rows = csv_rows(&text).into_iter();
    let header = rows.next().expect("a header");
    rows.map(|row| {
        assert_eq!(row.len(), header.len(), "{row:?}");
        header.iter().cloned().zip(row).collect()
    })
    .collect()
}

fn run_report(mode: &str, config: &str, report: &str) -> (Value, tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config.toml", config);
    let out = bistoury(
        &[
            mode,
            "--config",
            config.to_str().unwrap(),
            "--report",
            report,
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let json = std::fs::read_to_string(dir.path().join(report)).unwrap();
    (serde_json::from_str(&json).unwrap(), dir, out)
}

fn check_report(report: &Value, dir: &Path) {
    let initial = decimal(&report["initial_cash"]);
    let equity = decimal(&report["final_equity"]);
    let realised = decimal(&report["realised_pnl"]);
    let unrealised = decimal(&report["unrealised_pnl"]);
    let fees = decimal(&report["fees"]);
    assert_eq!(
        equity,
        initial + realised + unrealised - fees,
        "accounting identity"
    );
    assert_eq!(report["accounting_identity_holds"], true);
    let fills = trade_rows(dir);
    let rows = fills.len();
    assert_eq!(
        report["fills"].as_u64().unwrap() as usize,
        rows,
        "trade count matches the trade log"
    );
    assert!(rows > 0, "the default strategies trade");
    // The trade log alone reproduces realised PnL and fees.
    let (mut realised_log, mut fees_log) = (Decimal::ZERO, Decimal::ZERO);
    for fill in &fills {
        fees_log += fill["fee"].parse::<Decimal>().unwrap();
        realised_log += fill["realised_pnl"].parse::<Decimal>().unwrap();
    }
    assert_eq!(realised_log, realised);
    assert_eq!(fees_log, fees);
    // Reasons keep their commas (quoted), and each fill's UTC time is the
    // one `date` gives for its timestamp.
    assert!(
        fills.iter().any(|f| f["reason"].contains(", confidence")),
        "{:?}",
        fills[0]
    );
    for fill in [&fills[0], &fills[rows - 1]] {
        let ms: i64 = fill["timestamp_ms"].parse().unwrap();
        let date = Command::new("date")
            .args(["-u", "-d", &format!("@{}", ms / 1000), "+%Y-%m-%dT%H:%M:%S"])
            .output()
            .expect("date runs");
        let date = String::from_utf8(date.stdout).unwrap();
        assert_eq!(
            fill["time_utc"],
            format!("{}.{:03}Z", date.trim(), ms % 1000)
        );
    }
    let candles = report["candles"].as_u64().unwrap();
    assert_eq!(candles, 6000);
}

#[test]
fn backtest_report_is_consistent_and_byte_identical_for_the_same_seed() {
    let (report, dir, out) = run_report("backtest", SMALL, "r.json");
    check_report(&report, dir.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("final equity"),
        "the table is printed"
    );
    let first = std::fs::read(dir.path().join("r.json")).unwrap();
    let (_, dir2, _) = run_report("backtest", SMALL, "r.json");
    let second = std::fs::read(dir2.path().join("r.json")).unwrap();
    assert_eq!(first, second, "same seed, byte-identical report");
    let other_seed = format!("{SMALL}seed = 7\n");
    let (_, dir3, _) = run_report("backtest", &other_seed, "r.json");
    assert_ne!(std::fs::read(dir3.path().join("r.json")).unwrap(), first);
}

#[test]
fn run_mode_on_the_queued_bus_completes_with_a_consistent_report() {
    let (report, dir, _) = run_report("run", SMALL, "r.json");
    check_report(&report, dir.path());
}

#[test]
fn tight_drawdown_limit_stops_trading() {
    tight_drawdown_limit_stops_trading_in("backtest");
}

/// In `run` the agents work concurrently; lockstep (the default) still
/// makes the emergency stop take effect before the next candle.
#[test]
fn tight_drawdown_limit_stops_trading_in_run_mode() {
    tight_drawdown_limit_stops_trading_in("run");
}

fn tight_drawdown_limit_stops_trading_in(mode: &str) {
    let config = format!(
        "{SMALL}\n[risk]\nmax_drawdown = \"0.002\"\n\n[trader]\nclose_on_emergency_stop = false\n"
    );
    let (report, dir, _) = run_report(mode, &config, "r.json");
    let stop = report["emergency_stop_at_ms"]
        .as_i64()
        .expect("the emergency stop fired");
    // Protective exits are still allowed after the stop; new orders are not.
    for fill in trade_rows(dir.path()) {
        let time: i64 = fill["timestamp_ms"].parse().unwrap();
        if time > stop {
            let reason = &fill["reason"];
            assert!(
                reason == "stop-loss" || reason == "take-profit",
                "order filled after the emergency stop: {fill:?}"
            );
        }
    }
    check_report(&report, dir.path());
}

#[test]
fn bad_configs_exit_2_and_name_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        "[trader]\nfee_rate = \"-0.1\"\nsurprise = 1\nposition_fraction = \"abc\"\n\n[risk]\nmax_drawdown = \"2\"\n\n[nonsense]\nx = 1\n",
    );
    for args in [
        vec!["backtest", "--config", config.to_str().unwrap()],
        vec!["validate-config", config.to_str().unwrap()],
    ] {
        let out = bistoury(&args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let message = text(&out);
        for key in [
            "trader.surprise",
            "nonsense",
            "trader.fee_rate",
            "trader.position_fraction",
            "risk.max_drawdown",
        ] {
            assert!(message.contains(key), "{key} not reported in:\n{message}");
        }
    }
    let distributed = write(
        dir.path(),
        "distributed.toml",
        "[agents.trader]\ninstances = 2\n\n[agents.signals]\ninstances = 3\n\n\
         [bus.jetstream]\nfamilies = [\"data.x\"]\nmax_deliver = 0\n",
    );
    let out = bistoury(
        &["validate-config", distributed.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for key in [
        "agents.trader.instances: trader keeps state",
        "agents.signals.instances: several instances need bus.transport = \"nats\"",
        "bus.jetstream.families[0]",
        "bus.jetstream.max_deliver",
    ] {
        assert!(
            text(&out).contains(key),
            "{key} not reported in:\n{}",
            text(&out)
        );
    }
    let bad_instance = bistoury(&["agent", "signals", "--instance", "3/2"], dir.path());
    assert_eq!(bad_instance.status.code(), Some(2));
    assert!(
        text(&bad_instance).contains("--instance: \"3/2\""),
        "{}",
        text(&bad_instance)
    );
    let missing = bistoury(&["backtest", "--config", "/no/such.toml"], dir.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("/no/such.toml"));
    let good = write(dir.path(), "good.toml", SMALL);
    let ok = bistoury(&["validate-config", good.to_str().unwrap()], dir.path());
    assert!(ok.status.success(), "{}", text(&ok));
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", SMALL);
    let out = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["validate-config", config.to_str().unwrap()])
        .env("BISTOURY__TRADER__FEE_RATE", "-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("(set by the environment variable BISTOURY__TRADER__FEE_RATE)"),
        "{}",
        text(&out)
    );
    // A value of the wrong type, and a key that does not exist.
    let out = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["validate-config", config.to_str().unwrap()])
        .env("BISTOURY__DATA__CANDLES", "lots")
        .env("BISTOURY__RISK__MAX_LEVERAGE", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for variable in ["BISTOURY__DATA__CANDLES", "BISTOURY__RISK__MAX_LEVERAGE"] {
        assert!(
            text(&out).contains(&format!("(set by the environment variable {variable})")),
            "{}",
            text(&out)
        );
    }
}

fn csv_market(rows: usize) -> String {
    let mut s = String::from("open_time_ms,symbol,open,high,low,close,volume\n");
    let mut price = 100.0f64;
    for i in 0..rows {
        let open = price;
        price *= 1.0 + 0.01 * ((i * 7919 % 17) as f64 - 8.0) / 8.0;
        let (high, low) = (open.max(price) * 1.002, open.min(price) * 0.998);
        s.push_str(&format!(
            "{},BTC,{open:.2},{high:.2},{low:.2},{price:.2},1\n",
            i as i64 * 60_000
        ));
    }
    s
}

#[test]
fn rows_out_of_time_order_stop_a_run_and_a_header_only_file_warns() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = csv_market(50);
    // Two rows swapped: the second goes back in time.
    let mut lines: Vec<&str> = data.lines().collect();
    lines.swap(20, 21);
    data = lines.join("\n") + "\n";
    write(dir.path(), "swapped.csv", &data);
    let config = write(
        dir.path(),
        "stop.toml",
        "[data]\nkind = \"file\"\npath = \"swapped.csv\"\nbad_rows = \"stop\"\n",
    );
    let out = bistoury(
        &["backtest", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("swapped.csv:22:") && text(&out).contains("out of order"),
        "{}",
        text(&out)
    );

    write(
        dir.path(),
        "empty.csv",
        "open_time_ms,symbol,open,high,low,close,volume\n",
    );
    let config = write(
        dir.path(),
        "empty.toml",
        "[data]\nkind = \"file\"\npath = \"empty.csv\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["backtest", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no candle in the file"),
        "{}",
        text(&out)
    );
}

#[test]
fn file_data_with_malformed_rows_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = csv_market(500);
    data.push_str("30000000,BTC,not-a-price,1,1,1,1\n");
    data.push_str("30060000,BTC,100,90,95,96,1\n");
    // Line 504 goes back in time; line 505 repeats line 501's bar.
    data.push_str("29880000,BTC,100,101,99,100,1\n");
    data.push_str("29940000,BTC,100,101,99,100,1\n");
    data.push_str("30120000,BTC,100,101,99,100,1\n");
    write(dir.path(), "market.csv", &data);
    let skip = write(
        dir.path(),
        "skip.toml",
        "[data]\nkind = \"file\"\npath = \"market.csv\"\nbad_rows = \"skip\"\n",
    );
    let out = bistoury(
        &["backtest", "--config", skip.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 data rows skipped"), "{}", text(&out));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("bistoury-output/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["data_rows_skipped"], 4);
    assert_eq!(report["candles"], 501);

    let stop = write(
        dir.path(),
        "stop.toml",
        "[data]\nkind = \"file\"\npath = \"market.csv\"\nbad_rows = \"stop\"\n",
    );
    let out = bistoury(
        &["backtest", "--config", stop.to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("market.csv:502:"), "{}", text(&out));

    let missing = write(
        dir.path(),
        "missing.toml",
        "[data]\nkind = \"file\"\npath = \"nowhere.csv\"\n",
    );
    let out = bistoury(
        &["backtest", "--config", missing.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    assert!(
        text(&out).contains("data.path:") && text(&out).contains("nowhere.csv: no such file"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("panicked"));
    // validate-config finds it too, and a folder where a file should be.
    std::fs::create_dir(dir.path().join("folder.csv")).unwrap();
    let folder = write(
        dir.path(),
        "folder.toml",
        "[data]\nkind = \"file\"\npath = \"folder.csv\"\n",
    );
    for (config, problem) in [(&missing, "no such file"), (&folder, "is a directory")] {
        let out = bistoury(&["validate-config", config.to_str().unwrap()], dir.path());
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out).contains("data.path:") && text(&out).contains(problem),
            "{}",
            text(&out)
        );
    }
    // --config naming a folder says so.
    let out = bistoury(
        &["backtest", "--config", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is a directory"), "{}", text(&out));
}

#[test]
fn output_paths_are_checked_before_the_run_and_never_written_through_links() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", SMALL);
    let config = config.to_str().unwrap();
    let trades = dir.path().join("bistoury-output/trades.csv");
    for (report, problem) in [
        ("missing/r.json", "does not exist"),
        (".", "is a directory"),
    ] {
        let out = bistoury(
            &["backtest", "--config", config, "--report", report],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("--report") && text(&out).contains(problem),
            "{}",
            text(&out)
        );
        assert!(!trades.exists(), "the run started");
    }
    let precious = write(dir.path(), "precious.txt", "keep me");
    std::os::unix::fs::symlink(&precious, dir.path().join("linked.json")).unwrap();
    let out = bistoury(
        &["backtest", "--config", config, "--report", "linked.json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));
    std::fs::create_dir_all(dir.path().join("bistoury-output")).unwrap();
    std::os::unix::fs::symlink(&precious, &trades).unwrap();
    let out = bistoury(&["backtest", "--config", config], dir.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("symbolic link"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}

#[test]
fn a_report_records_its_inputs_and_a_failed_run_leaves_no_older_report() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "market.csv", &csv_market(500));
    let good = write(
        dir.path(),
        "good.toml",
        "[data]\nkind = \"file\"\npath = \"market.csv\"\n",
    );
    let out = bistoury(
        &["backtest", "--config", good.to_str().unwrap()],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = dir.path().join("bistoury-output/report.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let provenance = &json["provenance"];
    assert_eq!(provenance["mode"], "backtest");
    assert_eq!(provenance["bistoury_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(provenance["seed"], Value::Null, "file data has no seed");
    let config_hash = provenance["config_sha256"].as_str().unwrap();
    assert_eq!(config_hash.len(), 64);
    // The data file's hash is the one sha256sum gives.
    let data = &provenance["data_files"][0];
    let sum = Command::new("sha256sum")
        .arg(dir.path().join("market.csv"))
        .output()
        .expect("sha256sum runs");
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(data["sha256"], sum.split_whitespace().next().unwrap());
    assert_eq!(data["bytes"], csv_market(500).len());
    // The same inputs into another output folder: the same hash; another
    // fee: another hash.
    let out = bistoury(
        &[
            "backtest",
            "--config",
            good.to_str().unwrap(),
            "--output-dir",
            "other",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let other: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("other/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(other["provenance"]["config_sha256"], config_hash);
    let out = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args([
            "backtest",
            "--config",
            good.to_str().unwrap(),
            "--output-dir",
            "fee",
        ])
        .current_dir(dir.path())
        .env("BISTOURY__TRADER__FEE_RATE", "0.002")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let fee: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("fee/report.json")).unwrap())
            .unwrap();
    assert_ne!(fee["provenance"]["config_sha256"], config_hash);

    // A run that fails part-way (a bad row under the `stop` policy) leaves
    // its own trade log and no report, not the earlier run's.
    let mut data = csv_market(500);
    data.push_str("30000000,BTC,not-a-price,1,1,1,1\n");
    write(dir.path(), "bad.csv", &data);
    let bad = write(
        dir.path(),
        "bad.toml",
        "[data]\nkind = \"file\"\npath = \"bad.csv\"\nbad_rows = \"stop\"\n",
    );
    let out = bistoury(&["backtest", "--config", bad.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    assert!(!report.exists(), "an older report beside a newer trade log");
    assert!(dir.path().join("bistoury-output/trades.csv").exists());
}

#[test]
fn dependency_cycles_and_unsafe_restart_policies_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "cycle.toml",
        "[agents.collector]\non_panic = \"shutdown\"\ndepends_on = [\"trader\"]\n\n[agents.trader]\non_panic = \"restart\"\ndepends_on = [\"signals\", \"risk\"]\n",
    );
    let out = bistoury(
        &["backtest", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let message = text(&out);
    assert!(
        message.contains("dependency cycle: collector -> trader -> signals -> collector"),
        "{message}"
    );
    assert!(message.contains("agents.trader.on_panic"), "{message}");
    let unknown = write(
        dir.path(),
        "unknown.toml",
        "[agents.signals]\non_panic = \"isolate\"\ndepends_on = [\"oracle\"]\n",
    );
    let out = bistoury(&["validate-config", unknown.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("oracle"), "{}", text(&out));
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", SMALL);
    let plain = bistoury(
        &["backtest", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert!(plain.status.success());
    assert!(
        !String::from_utf8_lossy(&plain.stderr).contains('\r'),
        "no progress line when not a terminal"
    );
    // `script` (util-linux) gives the command a pseudo-terminal.
    let Ok(under_tty) = Command::new("script")
        .args([
            "-qec",
            &format!(
                "{} backtest --config {}",
                env!("CARGO_BIN_EXE_bistoury-e2e"),
                config.display()
            ),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .env("BISTOURY__DATA__CANDLES", "60000")
        .output()
    else {
        eprintln!("`script` is not installed: the terminal half of this test is skipped");
        return;
    };
    assert!(under_tty.status.success(), "{}", text(&under_tty));
    assert!(
        String::from_utf8_lossy(&under_tty.stdout).contains("\rcandles "),
        "{}",
        text(&under_tty)
    );
}

/// Starts a long in-process `bistoury run` in a fresh directory.
fn long_run() -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "long.toml", "[data]\ncandles = 5000000\n");
    let child = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--report",
            "r.json",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, dir)
}

fn send(signal: &str, child: &std::process::Child) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// SIGINT (Ctrl-C) and SIGTERM (systemd, Docker, Kubernetes) both stop a
/// run gracefully: exit 0, the report of what was processed, a trade log
/// of whole rows matching it.
fn stops_gracefully_on(signal: &str) {
    let (child, dir) = long_run();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    send(signal, &child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stopped early (Ctrl-C or SIGTERM)"),
        "{}",
        text(&out)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let candles = report["candles"].as_u64().unwrap();
    assert!(candles > 0 && candles < 15_000_000, "{candles}");
    assert_eq!(report["accounting_identity_holds"], true);
    assert_eq!(
        report["fills"].as_u64().unwrap() as usize,
        trade_rows(dir.path()).len()
    );
}

#[test]
fn log_lines_on_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.toml",
        &format!("{SMALL}\n[risk]\nmax_drawdown = \"0.002\"\n"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["backtest", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("emergency stop"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn ctrl_c_stops_gracefully_and_writes_the_report() {
    stops_gracefully_on("-INT");
}

#[test]
fn sigterm_stops_gracefully_and_writes_the_report() {
    stops_gracefully_on("-TERM");
}

/// However a run is killed, the trade log holds whole rows only.
#[test]
fn a_killed_run_leaves_no_torn_row_in_the_trade_log() {
    for after_ms in [700, 1300, 2100] {
        let (mut child, dir) = long_run();
        std::thread::sleep(std::time::Duration::from_millis(after_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // csv_rows refuses a last row without its line end; trade_rows
        // checks every row has every column.
        let rows = trade_rows(dir.path());
        assert!(!rows.is_empty(), "killed after {after_ms} ms: no fills yet");
        for row in rows {
            row["price"].parse::<Decimal>().expect("a whole price");
        }
    }
}

/// Logs go to a file of the day (named by its UTC date) under
/// `run.output_dir/logs`, info and above, appended by each run that day;
/// the console shows only the configured level.
#[test]
fn runs_log_to_a_daily_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = csv_market(100);
    data.push_str("6000000,BTC,not-a-price,1,1,1,1\n");
    write(dir.path(), "market.csv", &data);
    let config = write(
        dir.path(),
        "c.toml",
        "[data]\nkind = \"file\"\npath = \"market.csv\"\nbad_rows = \"skip\"\n[log]\nlevel = \"error\"\n",
    );
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
            .args(["backtest", "--config", config.to_str().unwrap()])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let before = utc_date();
    let first = run();
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        !text(&first).contains("skipping bad row"),
        "console is at error level"
    );
    let after = utc_date();
    let logs = dir.path().join("bistoury-output/logs");
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        [before.clone(), after.clone()]
            .contains(&names[0].trim_start_matches("bistoury.log.").to_string()),
        "{names:?} on {before}"
    );
    let path = logs.join(&names[0]);
    let once = std::fs::read_to_string(&path).unwrap();
    assert!(
        once.contains("skipping bad row") && once.contains("market.csv:102"),
        "{once}"
    );
    assert!(run().status.success());
    let twice = std::fs::read_to_string(&path).unwrap();
    assert!(twice.starts_with(&once), "appended, not replaced");
    assert_eq!(twice.matches("skipping bad row").count(), 2);
}

fn utc_date() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn inspect_shows_a_stores_dead_letters_without_changing_it_and_replays_one_when_asked() {
    use bus_core::bus::reliability::RetryPolicy;
    use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
    use bus_core::prelude::*;
    use bus_core::store::{Store, StoreConfig};
    use bus_core::{HandlerError, MessageBus, SubscribeOptions};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let price = |n: i64| {
        let update = PriceUpdate::new(PriceUpdateFields {
            symbol: Symbol::new("BTC").unwrap(),
            price: Decimal::from(n),
            timestamp_ms: n,
        })
        .unwrap();
        Envelope::new(
            AgentId::new("feed"),
            Topic::new("prices.BTC").unwrap(),
            Payload::DataPriceUpdate(update),
        )
        .with_delivery_mode(DeliveryMode::AtLeastOnce)
        .with_max_attempts(2)
    };
    let quick = RetryPolicy {
        base: Duration::from_millis(1),
        factor: 2.0,
        cap: Duration::from_millis(5),
        jitter: 0.0,
    };
    // A worker that cannot handle a price: it is dead-lettered.
    let dead = runtime.block_on(async {
        let (store, _) = Store::open(StoreConfig::new(&store_dir)).unwrap();
        let bus = MessageBus::durable(store.clone());
        bus.subscribe(
            "prices.>",
            Handler::from_async(|_e| async { Err(HandlerError::new("exchange down")) }),
            SubscribeOptions::named("worker").with_retry(quick),
        )
        .unwrap();
        let message = price(7);
        let id = message.id;
        bus.publish(message).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.stats().pending > 0 || bus.dead_letters().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never dead-lettered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.sync().unwrap();
        store.close();
        id
    });
    let before = support::files_in(&store_dir);
    let shown = bistoury(&["inspect", store_dir.to_str().unwrap()], dir.path());
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("dead letters: 1"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(&dead.to_string()))
        .unwrap_or_else(|| panic!("the dead letter is listed: {text}"));
    for part in ["worker", "prices.BTC", "after 2 attempts", "exchange down"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(text.contains("pending messages: 0"), "{text}");
    assert_eq!(
        support::files_in(&store_dir),
        before,
        "inspect changed the store"
    );

    let unknown = bistoury(
        &[
            "inspect",
            store_dir.to_str().unwrap(),
            "--replay-dead-letter",
            "nope",
        ],
        dir.path(),
    );
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(support::files_in(&store_dir), before);
    let replayed = bistoury(
        &[
            "inspect",
            store_dir.to_str().unwrap(),
            "--replay-dead-letter",
            &dead.to_string(),
        ],
        dir.path(),
    );
    assert!(replayed.status.success(), "{replayed:?}");
    let shown = bistoury(&["inspect", store_dir.to_str().unwrap()], dir.path());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("worker                   1 pending"),
        "{text}"
    );

    // The worker, back and able, gets it: the same price, a new id that
    // names the old one.
    let got = runtime.block_on(async {
        let (store, _) = Store::open(StoreConfig::new(&store_dir)).unwrap();
        let bus = MessageBus::durable(store.clone());
        let (tx, rx) = flume::unbounded();
        bus.subscribe(
            "prices.>",
            Handler::from_async(move |e: std::sync::Arc<Envelope>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((*e).clone());
                    Ok(())
                }
            }),
            SubscribeOptions::named("worker").with_retry(quick),
        )
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv_async())
            .await
            .expect("the replayed message arrives")
            .unwrap();
        store.close();
        got
    });
    assert_ne!(got.id, dead);
    assert_eq!(
        got.headers.get("replayed_from"),
        Some(dead.to_string().as_str())
    );
    assert!(matches!(got.payload(), Payload::DataPriceUpdate(p) if p.price == Decimal::from(7)));
}

/// The value of the sample `name` (with exactly these labels, `{...}` or
/// none) in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_run_serves_prometheus_metrics_on_loopback_while_it_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["run", "--metrics", &address])
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Scraped while the run goes on: the account and the bus move.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        if let Some(text) = support::http_get(port, "/metrics") {
            let steps = sample(&text, "bistoury_time_steps_total").unwrap_or(0.0);
            if steps > 100.0 && sample(&text, "bistoury_bus_published_total").unwrap_or(0.0) > 0.0 {
                break text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics during the run"
        );
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before a scrape"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let equity = sample(&text, "bistoury_equity").expect("equity");
    assert!(equity > 50_000.0 && equity < 150_000.0, "{equity}");
    let drawdown = sample(&text, "bistoury_drawdown").expect("drawdown");
    assert!((0.0..1.0).contains(&drawdown));
    for name in [
        "bistoury_bus_delivered_total",
        "bistoury_subscription_delivered_total{subscription=\"signals\"}",
        "bistoury_subscription_queue_high_water{subscription=\"trader\"}",
        "bistoury_handler_latency_microseconds{subscription=\"trader\",quantile=\"0.99\"}",
        "bistoury_agent_running{agent=\"trader\"}",
        "bistoury_risk_orders_approved_total",
    ] {
        assert!(sample(&text, name).is_some(), "{name} missing:\n{text}");
    }
    let status = run.wait().unwrap();
    assert!(status.success());

    // Never on an open address; a busy port is said at once.
    for (bad, says) in [("0.0.0.0:9464", "loopback"), ("here", "with a port")] {
        let out = bistoury(&["run", "--metrics", bad], dir.path());
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says));
    }
    let backtest = bistoury(&["backtest", "--metrics", &address], dir.path());
    assert_eq!(backtest.status.code(), Some(2), "a backtest is not watched");
    assert!(String::from_utf8_lossy(&backtest.stderr).contains("a backtest is over too fast"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
    let out = bistoury(&["run", "--metrics", &busy], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
