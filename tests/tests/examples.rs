//! The examples a user copies (`orchestrator/examples`) do what they say:
//! run, built by `cargo test --workspace`, as a user would run them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bus_core::model::payload::{Candle, CandleFields, Symbol};
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::runtime::StopSignal;
use bus_core::{AgentId, Envelope, Payload, Topic};
use futures_util::StreamExt;
use rust_decimal::Decimal;

mod support;
use support::NatsServer;

/// The example binary `name`, built beside this test's binary.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (it builds the examples)",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str]) -> Output {
    let output = Command::new(example(name))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn line<'a>(text: &'a str, starting: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(starting))
        .unwrap_or_else(|| panic!("no line starting {starting:?} in:\n{text}"))
}

#[test]
fn the_library_backtest_and_a_custom_strategy_run_and_the_strategy_changes_the_trading() {
    let plain = run("backtest", &[]);
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(line(&plain, "accounting").ends_with("holds"), "{plain}");
    assert!(plain.contains("60000 candles in"), "{plain}");

    let custom = run("custom_strategy", &[]);
    let custom = String::from_utf8(custom.stdout).unwrap();
    let spoken: u64 = line(&custom, "breakout signals: ")
        .trim_start_matches("breakout signals: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(spoken > 0, "the registered strategy never spoke:\n{custom}");
    assert!(line(&custom, "accounting").ends_with("holds"), "{custom}");
    // Same data and agents; only the added strategy differs.
    assert_ne!(
        line(&plain, "final equity"),
        line(&custom, "final equity"),
        "a strategy weighed 2 must change some trade"
    );
}

#[test]
fn bistoury_refuses_a_custom_strategy_nothing_registered() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../orchestrator/examples/custom_strategy.toml");
    let search =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../orchestrator/examples/search.toml");
    let dir = tempfile::tempdir().unwrap();
    let config = config.to_str().unwrap();
    for args in [
        vec!["backtest", "--config", config],
        vec![
            "optimize",
            "--config",
            config,
            "--search",
            search.to_str().unwrap(),
        ],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
            .args(&args)
            .current_dir(dir.path())
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("signals.custom.breakout: no strategy is registered under this name"),
            "{args:?}: {stderr}"
        );
    }
}

fn candle(symbol: &str, minute: i64, close: i64) -> Envelope {
    let close = Decimal::from(close);
    let payload = Candle::new(CandleFields {
        symbol: Symbol::new(symbol).unwrap(),
        interval: "1m".into(),
        open_time_ms: minute * 60_000,
        open: close,
        high: close,
        low: close,
        close,
        volume: Decimal::ONE,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("test"),
        Topic::new(format!("data.candle.{symbol}.1m")).unwrap(),
        Payload::DataCandle(payload),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_agent_example_publishes_each_symbols_average() {
    let server = NatsServer::start();
    let mut child = Command::new(example("nats_agent"))
        .args([&server.url(), "ex", "5"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::task::block_in_place(|| lines.next())
        .unwrap()
        .unwrap();
    assert_eq!(first, "subscribed");

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut averages = client.subscribe("ex.data.price_update.>").await.unwrap();
    client.flush().await.unwrap();
    let settings = NatsSettings {
        url: server.url(),
        prefix: "ex".into(),
        token: None,
        when_disconnected: Default::default(),
        wire_format: Default::default(),
        jetstream: None,
    };
    let bus = NatsBus::connect(&settings).await.unwrap();
    let stop = StopSignal::new();
    // Five candles of each symbol: one average each, the mean of its closes.
    let closes = [(100, 200), (102, 210), (104, 190), (106, 220), (108, 230)];
    for (minute, (btc, eth)) in closes.iter().enumerate() {
        bus.publish(&candle("BTC", minute as i64, *btc), &stop)
            .await
            .unwrap();
        bus.publish(&candle("ETH", minute as i64, *eth), &stop)
            .await
            .unwrap();
    }
    bus.client().flush().await.unwrap();
    let mean = |values: Vec<i64>| Decimal::from(values.iter().sum::<i64>()) / Decimal::from(5);
    let mut expected = std::collections::BTreeMap::from([
        (
            "BTC".to_string(),
            mean(closes.iter().map(|c| c.0).collect()),
        ),
        (
            "ETH".to_string(),
            mean(closes.iter().map(|c| c.1).collect()),
        ),
    ]);
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(10), averages.next())
            .await
            .expect("an average within 10 s")
            .unwrap();
        let envelope = Envelope::from_wire(&message.payload).unwrap();
        let Payload::DataPriceUpdate(update) = envelope.payload() else {
            panic!("not a price update: {envelope:?}");
        };
        assert_eq!(
            expected.remove(update.symbol.as_str()),
            Some(update.price),
            "{}",
            update.symbol
        );
    }
    drop(child.stdin.take());
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.starts_with("stopped: 10 received,")),
        "{rest:?}"
    );
}

#[test]
fn the_lone_crossover_config_trades_crossings_only() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../orchestrator/examples/lone_crossover.toml")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bistoury = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let config = config.to_str().unwrap();
    let shown = bistoury(&["config", "show", "--config", config]);
    let shown: toml::Value = toml::from_str(&shown).unwrap();
    assert_eq!(shown["signals"]["rsi"]["enabled"].as_bool(), Some(false));
    assert_eq!(shown["trader"]["stop_loss"].as_str(), Some("off"));
    assert_eq!(
        shown["signals"]["ma_crossover"]["slow"].as_integer(),
        Some(20)
    );
    bistoury(&["backtest", "--config", config, "--output-dir", "out"]);
    let trades = std::fs::read_to_string(dir.path().join("out/trades.csv")).unwrap();
    let rows: Vec<&str> = trades.lines().skip(1).collect();
    assert!(rows.len() > 50, "{} fills", rows.len());
    for row in rows {
        // Every fill is a crossing's, a bar after it; none from a stop.
        let f: Vec<&str> = row.splitn(11, ',').collect();
        assert!(f[10].contains("signal"), "{row}");
        assert!(
            f[0].parse::<i64>().unwrap() > f[2].parse::<i64>().unwrap(),
            "{row}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["accounting_identity_holds"], true);
}
