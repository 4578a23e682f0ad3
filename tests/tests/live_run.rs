//! Live paper trading end to end: `bistoury run` on a live market served by
//! a local venue that speaks HyperLiquid's protocols, stopped with Ctrl-C;
//! `bistoury record` of the same market; and the backtest of the bars the
//! venue streamed, which must trade exactly as the live run did.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::mock_venue::{stream, Bar, MockVenue};

const MINUTE: i64 = 60_000;
const START: i64 = 1_733_529_600_000;

/// One 3/8 moving-average crossover, nothing else, no stops: trades often
/// on a short market.
fn strategy() -> String {
    support::lone_crossover(3, 8, "")
}

fn live_config(venue: &MockVenue, output_dir: &str) -> String {
    format!(
        r#"
[data]
source = "hyperliquid"
symbols = ["BTC"]
interval = "1m"
url = "{}"
info_url = "{}"
[run]
output_dir = "{output_dir}"
[log]
level = "error"
directory = "logs"
{strategy}"#,
        venue.ws_url,
        venue.info_url,
        strategy = strategy()
    )
}

/// The bars as a candle file: the oracle of what a recording holds.
fn bars_csv(bars: &[Bar]) -> String {
    let mut text = String::from("open_time_ms,symbol,open,high,low,close,volume\n");
    for bar in bars {
        let v = bar.json("BTC", "1m", MINUTE);
        let field = |k: &str| v[k].as_str().unwrap().to_string();
        text.push_str(&format!(
            "{},BTC,{},{},{},{},{}\n",
            bar.t,
            field("o"),
            field("h"),
            field("l"),
            field("c"),
            field("v")
        ));
    }
    text
}

/// Waits until the run's log says the candle opening at `open_time_ms`
/// has closed (published).
fn wait_for_candle_in_log(logs: &Path, open_time_ms: i64) {
    let needle = format!("open_time_ms={open_time_ms}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = std::fs::read_dir(logs).ok().is_some_and(|entries| {
            entries.flatten().any(|entry| {
                std::fs::read_to_string(entry.path()).is_ok_and(|text| text.contains(&needle))
            })
        });
        if seen {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the live run never published the candle at {open_time_ms}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_live_paper_trading_run_stopped_with_ctrl_c_reports_and_trades_as_the_backtest_of_its_bars() {
    let dir = tempfile::tempdir().unwrap();
    let bars = Bar::walk(11, 240, START, MINUTE, 998_500);
    let closed = &bars[..bars.len() - 1];
    let history = || bars.iter().map(|b| b.json("BTC", "1m", MINUTE));
    let script = || stream(&bars, "BTC", "1m", MINUTE, Duration::ZERO);

    // Live paper trading until Ctrl-C.
    let venue = MockVenue::start(script()).with_history("BTC", history());
    std::fs::write(dir.path().join("live.toml"), live_config(&venue, "live")).unwrap();
    let (mut child, stdout) = support::bistoury(&["run", "--config", "live.toml"], dir.path());
    let last = closed.last().unwrap().t;
    wait_for_candle_in_log(&dir.path().join("live/logs"), last);
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = wait_for_exit(&mut child);
    let printed: Vec<String> = stdout.iter().collect();
    assert!(status.success(), "{status:?}: {printed:#?}");
    assert!(
        printed.iter().any(|l| l.contains("Bistoury report")),
        "{printed:#?}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("live/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["candles"], closed.len() as u64, "{report:#}");
    assert_eq!(report["accounting_identity_holds"], true, "{report:#}");
    assert_eq!(report["provenance"]["mode"], "run");
    let live_trades = std::fs::read_to_string(dir.path().join("live/trades.csv")).unwrap();
    assert!(
        live_trades.lines().count() > 5,
        "the crossover traded: {live_trades}"
    );

    // The same bars, backtested from a file.
    std::fs::write(dir.path().join("bars.csv"), bars_csv(closed)).unwrap();
    let backtest = format!(
        "[data]\nkind = \"file\"\npath = \"bars.csv\"\ninterval = \"1m\"\n[run]\noutput_dir = \"bt\"\n{}",
        strategy()
    );
    std::fs::write(dir.path().join("backtest.toml"), backtest).unwrap();
    support::bistoury_succeeds(&["backtest", "--config", "backtest.toml"], dir.path());
    let backtest_trades = std::fs::read_to_string(dir.path().join("bt/trades.csv")).unwrap();
    assert_eq!(live_trades, backtest_trades);

    // A recording of the same market is that file, row for row: replayed,
    // it trades as the live run did.
    let venue = MockVenue::start(script()).with_history("BTC", history());
    std::fs::write(dir.path().join("record.toml"), live_config(&venue, "rec")).unwrap();
    let candles = closed.len().to_string();
    let args = ["record", "--config", "record.toml", "--out", "rec.csv"];
    support::bistoury_succeeds(&[&args[..], &["--candles", &candles]].concat(), dir.path());
    let recorded = std::fs::read_to_string(dir.path().join("rec.csv")).unwrap();
    assert_eq!(recorded, bars_csv(closed));
    // Never over what exists.
    let again = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rec.csv")).unwrap(),
        recorded
    );
}

#[test]
fn a_live_market_is_refused_by_backtest_and_its_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let venue = MockVenue::start(Vec::new());
    std::fs::write(dir.path().join("live.toml"), live_config(&venue, "out")).unwrap();
    let backtest = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["backtest", "--config", "live.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(backtest.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&backtest.stderr).contains("bistoury record"));
    let bad = "[data]\nsource = \"hyperliquid\"\nsymbols = [\"BTC\", \"not a coin\"]\ninterval = \"7m\"\n\
               network = \"moon\"\nurl = \"http://127.0.0.1:1/ws\"\nstall_seconds = -1\n";
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let checked = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["validate-config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(2));
    let errors = String::from_utf8_lossy(&checked.stderr);
    for key in [
        "data.symbols[1]",
        "data.interval",
        "data.network",
        "data.url",
        "data.stall_seconds",
    ] {
        assert!(errors.contains(key), "{key} not named: {errors}");
    }
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../orchestrator/examples/live_btc.toml"
    );
    support::bistoury_succeeds(&["validate-config", example], dir.path());
    let record = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args(["record", "--out", "x.csv"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(record.status.code(), Some(2), "the default is not live");
    assert!(!dir.path().join("x.csv").exists());
}

/// Rows of a trade log: (order id, signed quantity, price, fee).
fn fills_in_log(
    text: &str,
) -> Vec<(
    String,
    rust_decimal::Decimal,
    rust_decimal::Decimal,
    rust_decimal::Decimal,
)> {
    use std::str::FromStr;
    let number = |s: &str| rust_decimal::Decimal::from_str(s).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            // timestamp_ms,time_utc,decided_on_bar_ms,order_id,symbol,side,quantity,price,fee,...
            let f: Vec<&str> = line.split(',').collect();
            let sign = if f[5] == "buy" { 1 } else { -1 };
            (
                f[3].to_string(),
                number(f[6]) * rust_decimal::Decimal::from(sign),
                number(f[7]),
                number(f[8]),
            )
        })
        .collect()
}

/// The value of `key=` in the log line holding `message`, if any.
fn logged(logs: &Path, message: &str, key: &str) -> Option<String> {
    let entries = std::fs::read_dir(logs).ok()?;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(message)) {
            let at = line.find(&format!("{key}="))? + key.len() + 1;
            return line[at..].split_whitespace().next().map(str::to_string);
        }
    }
    None
}

#[test]
fn a_live_run_killed_at_seeded_moments_resumes_with_the_same_book_and_no_fill_lost_or_doubled() {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    for seed in [3_u64, 8] {
        let dir = tempfile::tempdir().unwrap();
        let bars = Bar::walk(seed, 240, START, MINUTE, 998_500);
        let closed = &bars[..bars.len() - 1];
        // Slow enough that the kill lands mid-stream.
        let script = stream(&bars, "BTC", "1m", MINUTE, Duration::from_millis(4));
        let history = bars.iter().map(|b| b.json("BTC", "1m", MINUTE));
        let venue = MockVenue::start(script).with_history("BTC", history);
        std::fs::write(dir.path().join("live.toml"), live_config(&venue, "live")).unwrap();
        let (mut first, _) = support::bistoury(&["run", "--config", "live.toml"], dir.path());
        let log = dir.path().join("live/trades.csv");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 3 {
            assert!(Instant::now() < deadline, "no fill before the kill");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(seed * 37 % 200));
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        assert!(venue.steps_left() > 0, "killed mid-stream");
        let logged_at_kill = fills_in_log(&std::fs::read_to_string(&log).unwrap());
        let journal_dir = dir.path().join("live/trade-journal");
        let journaled_at_kill: Vec<String> = agent_trader::FillJournal::read(&journal_dir)
            .unwrap()
            .iter()
            .map(|j| j.fill.order_id.to_string())
            .collect();
        // What the killed run left can be inspected without changing it.
        let untouched = support::files_in(&journal_dir);
        let inspected = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
            .args(["inspect", journal_dir.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&inspected.stdout);
        let pending = format!(
            "trader.journal           {} pending",
            journaled_at_kill.len()
        );
        assert!(text.contains(&pending), "{text}");
        assert_eq!(support::files_in(&journal_dir), untouched);
        // Journaled before it counts: every fill logged is journaled.
        assert!(logged_at_kill.len() <= journaled_at_kill.len());
        for (i, (id, ..)) in logged_at_kill.iter().enumerate() {
            assert_eq!(*id, journaled_at_kill[i]);
        }

        // Restarted on the same output: it resumes, then runs to Ctrl-C.
        let mut restart = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"));
        restart
            .args(["run", "--config", "live.toml"])
            .current_dir(dir.path())
            .env("RUST_LOG", "error")
            .env("BISTOURY__LOG__DIRECTORY", "logs-after")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut second = restart.spawn().unwrap();
        let logs = dir.path().join("live/logs-after");
        wait_for_candle_in_log(&logs, closed.last().unwrap().t);
        let interrupted = Command::new("kill")
            .args(["-INT", &second.id().to_string()])
            .status()
            .unwrap();
        assert!(interrupted.success());
        assert!(wait_for_exit(&mut second).success());

        // The trader took back exactly the journal: its cash is the
        // journal's fills replayed from the initial cash.
        let initial = Decimal::from(100_000);
        let journaled = agent_trader::FillJournal::read(&journal_dir).unwrap();
        let cash_of = |fills: &[(String, Decimal, Decimal, Decimal)]| {
            fills
                .iter()
                .fold(initial, |cash, (_, q, price, fee)| cash - q * price - fee)
        };
        let resumed: Vec<_> = journaled[..journaled_at_kill.len()]
            .iter()
            .map(|j| {
                let sign = j.fill.side.sign();
                let f = &j.fill;
                (f.order_id.to_string(), sign * f.quantity, f.price, f.fee)
            })
            .collect();
        let resumed_cash = logged(&logs, "resumed from the trade journal", "cash")
            .expect("the trader says it resumed");
        assert_eq!(Decimal::from_str(&resumed_cash).unwrap(), cash_of(&resumed));

        // No fill lost or applied twice: the trade log is the journal, the
        // fills before the kill first, each order once.
        let fills = fills_in_log(&std::fs::read_to_string(&log).unwrap());
        let ids: Vec<String> = journaled
            .iter()
            .map(|j| j.fill.order_id.to_string())
            .collect();
        let logged_ids: Vec<String> = fills.iter().map(|f| f.0.clone()).collect();
        assert_eq!(logged_ids, ids);
        assert_eq!(ids[..journaled_at_kill.len()], journaled_at_kill[..]);
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "an order filled twice: {ids:?}");
        assert!(
            ids.len() > journaled_at_kill.len(),
            "it traded after the restart"
        );

        // The report agrees with the fills replayed by hand.
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("live/report.json")).unwrap(),
        )
        .unwrap();
        let decimal = |v: &serde_json::Value| Decimal::from_str(v.as_str().unwrap()).unwrap();
        let position: Decimal = fills.iter().map(|f| f.1).sum();
        let last_close = Decimal::new(closed.last().unwrap().c, 1);
        assert_eq!(report["fills"], ids.len() as u64);
        assert_eq!(report["fills_resumed"], journaled_at_kill.len() as u64);
        assert_eq!(
            decimal(&report["final_equity"]),
            cash_of(&fills) + position * last_close,
            "{report:#}"
        );
        let open = report["open_positions"].as_array().unwrap();
        let reported: Decimal = open.iter().map(|p| decimal(&p["quantity"])).sum();
        assert_eq!(reported, position);
        assert_eq!(report["accounting_identity_holds"], true);
    }
}
