//! Distributed mode, first slice: `bistoury agent NAME` runs one agent in
//! its own process against a real `nats-server` (started here on a free
//! loopback port), and a plain NATS client that knows only the documented
//! JSON wire format drives it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

mod support;
use support::{bistoury, free_port, NatsServer, Running};

/// A configuration naming `server` and a subject prefix, plus `extra` TOML.
fn nats_config(dir: &Path, server: &NatsServer, prefix: &str, extra: &str) -> std::path::PathBuf {
    let config = dir.join(format!("{prefix}.toml"));
    std::fs::write(
        &config,
        format!(
            "[bus]\nnats_url = \"{}\"\nsubject_prefix = \"{prefix}\"\n{extra}",
            server.url()
        ),
    )
    .unwrap();
    config
}

/// Starts `bistoury agent NAME` and waits until it says it is connected.
fn start_agent(
    name: &str,
    config: &Path,
    dir: &Path,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let (child, rx) = bistoury(&["agent", name, "--config", config.to_str().unwrap()], dir);
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the agent starts");
    assert!(first.contains("connected"), "{first}");
    (child, rx)
}

/// Stops an agent process with SIGINT; returns what it printed (its
/// closing summary last) once it has exited successfully.
fn interrupt_agent(child: Child, lines: std::sync::mpsc::Receiver<String>) -> String {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let summary: Vec<String> = lines.iter().collect();
    summary.join("\n")
}

/// A candle envelope built by hand, as a client in another language would.
fn raw_candle(i: i64, close: f64) -> Vec<u8> {
    raw_candle_for("BTC", i, close)
}

fn raw_candle_for(symbol: &str, i: i64, close: f64) -> Vec<u8> {
    json!({
        "id": uuid_like(i, symbol),
        "type": "data.candle",
        "topic": format!("data.candle.{symbol}.1m"),
        "sender": "python-feed",
        "created_at_ms": i * 60_000,
        "payload": {
            "symbol": symbol, "interval": "1m", "open_time_ms": i * 60_000,
            "open": format!("{close:.2}"), "high": format!("{:.2}", close + 1.0),
            "low": format!("{:.2}", close - 1.0), "close": format!("{close:.2}"), "volume": "1"
        }
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_agent_process_reacts_to_raw_json_over_nats() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(dir.path(), &server, "test", "");
    let (child, lines) = start_agent("signals", &config, dir.path());

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut signals = client.subscribe("test.signal.>").await.unwrap();
    let mut dead_letters = client.subscribe("test.system.dead_letter").await.unwrap();
    client.flush().await.unwrap();
    // Bad input first: it must be counted and skipped, not crash the agent.
    client
        .publish("test.data.candle.BTC.1m", "{not json".into())
        .await
        .unwrap();
    client.publish("test.data.candle.BTC.1m", r#"{"id":"00000000-0000-4000-8000-000000000000","type":"data.nonsense","topic":"data.candle.BTC.1m","sender":"x","created_at_ms":0,"payload":{}}"#.into()).await.unwrap();
    let candles = 60;
    for i in 0..candles {
        let close = 100.0 + 10.0 * ((i as f64) / 6.0).sin();
        client
            .publish("test.data.candle.BTC.1m", raw_candle(i, close).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    let mut complete = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while complete < candles {
        let message = tokio::time::timeout_at(deadline, signals.next())
            .await
            .expect("signals arrive")
            .unwrap();
        let value: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(value["sender"], "signals");
        assert!(message.subject.as_str().starts_with("test.signal."));
        assert_eq!(
            value["topic"].as_str().map(|t| format!("test.{t}")),
            Some(message.subject.to_string())
        );
        if value["type"] == "signal.analysis_complete" {
            assert_eq!(value["payload"]["symbol"], "BTC");
            complete += 1;
        }
    }

    for expected in ["{not json", "data.nonsense"] {
        let letter = tokio::time::timeout(Duration::from_secs(10), dead_letters.next())
            .await
            .expect("dead letter")
            .unwrap();
        let value: Value = serde_json::from_slice(&letter.payload).unwrap();
        assert_eq!(value["type"], "system.dead_letter");
        assert!(
            value["payload"]["raw"].as_str().unwrap().contains(expected),
            "{value}"
        );
        assert!(!value["payload"]["error"].as_str().unwrap().is_empty());
    }

    let summary = interrupt_agent(child, lines);
    assert!(
        summary.contains(&format!("{candles} messages received")),
        "{summary}"
    );
    assert!(summary.contains("2 undecodable"), "{summary}");
}

/// Hostile input: envelopes that decode but are not what they claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_envelopes_are_dead_lettered_with_the_reason() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(dir.path(), &server, "hostile", "");
    let (child, lines) = start_agent("signals", &config, dir.path());
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut dead_letters = client
        .subscribe("hostile.system.dead_letter")
        .await
        .unwrap();
    let mut signals = client.subscribe("hostile.signal.>").await.unwrap();
    client.flush().await.unwrap();

    let with = |mut candle: Value, edit: &dyn Fn(&mut Value)| {
        edit(&mut candle);
        candle.to_string()
    };
    let btc = || serde_json::from_slice::<Value>(&raw_candle(1, 100.0)).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        // An ETH candle on the BTC topic and subject.
        (
            "hostile.data.candle.BTC.1m",
            with(btc(), &|c| c["payload"]["symbol"] = "ETH".into()),
            "the payload's symbol is ETH",
        ),
        // A BTC candle envelope sent on the ETH subject.
        (
            "hostile.data.candle.ETH.1m",
            btc().to_string(),
            "on subject hostile.data.candle.ETH.1m",
        ),
        // A price update on a candle topic.
        (
            "hostile.data.candle.BTC.1m",
            with(btc(), &|c| {
                c["type"] = "data.price_update".into();
                c["payload"] = json!({"symbol": "BTC", "price": "100", "timestamp_ms": 60000});
            }),
            "for data.candle messages",
        ),
        // A sender of a million characters.
        (
            "hostile.data.candle.BTC.1m",
            with(btc(), &|c| c["sender"] = "x".repeat(1_000_000).into()),
            "sender: 1000000 bytes",
        ),
    ];
    for (subject, body, _) in &cases {
        client
            .publish(subject.to_string(), body.clone().into())
            .await
            .unwrap();
    }
    for (_, _, reason) in &cases {
        let letter = tokio::time::timeout(Duration::from_secs(10), dead_letters.next())
            .await
            .expect("a dead letter")
            .unwrap();
        let value: Value = serde_json::from_slice(&letter.payload).unwrap();
        let error = value["payload"]["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error} / {reason}");
    }
    // Nothing of it reached the strategies.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), signals.next())
            .await
            .is_err(),
        "a misaddressed candle was analysed"
    );
    let summary = interrupt_agent(child, lines);
    assert!(summary.contains("4 misaddressed"), "{summary}");
    assert!(summary.contains("0 messages received"), "{summary}");
}

fn order_request(quantity: i64) -> bus_core::Envelope {
    use bus_core::model::payload::{OrderId, OrderRequest, OrderRequestFields, OrderType, Side};
    use bus_core::prelude::*;
    let order = OrderRequest::new(OrderRequestFields {
        order_id: OrderId(format!("req-{quantity}")),
        symbol: Symbol::new("BTC").unwrap(),
        side: Side::Buy,
        quantity: rust_decimal::Decimal::from(quantity),
        order_type: OrderType::Market,
        limit_price: None,
        reference_price: rust_decimal::Decimal::from(100),
        reason: "test".into(),
    })
    .unwrap();
    Envelope::new(
        AgentId::new("remote-trader"),
        Topic::new("trade.order_request.BTC").unwrap(),
        Payload::TradeOrderRequest(order),
    )
}

/// A distinct, valid UUID per (candle, symbol).
fn uuid_like(i: i64, symbol: &str) -> String {
    let tag: u64 = symbol.bytes().fold(0, |h, b| h * 131 + u64::from(b)) % 0xffff;
    format!("00000000-{tag:04x}-4000-8000-{i:012}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_signal_instances_split_the_symbols_and_handle_every_candle_once() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(dir.path(), &server, "part", "");
    let start = |k: u32| {
        let (child, rx) = bistoury(
            &[
                "agent",
                "signals",
                "--config",
                config.to_str().unwrap(),
                "--instance",
                &format!("{k}/2"),
            ],
            dir.path(),
        );
        let first = rx.recv_timeout(Duration::from_secs(20)).expect("starts");
        assert!(first.contains("connected"), "{first}");
        (child, rx)
    };
    let instances = [start(1), start(2)];
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut complete = client
        .subscribe("part.signal.analysis_complete.>")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let symbols = ["BTC", "ETH", "SOL", "ADA", "XRP", "DOT"];
    let bars = 30;
    for i in 0..bars {
        for (n, symbol) in symbols.iter().enumerate() {
            let subject = format!("part.data.candle.{symbol}.1m");
            let close = 100.0 + (n as f64) * 10.0 + (i as f64 * 0.7).sin();
            client
                .publish(subject, raw_candle_for(symbol, i, close).into())
                .await
                .unwrap();
        }
    }
    client.flush().await.unwrap();
    let mut per_symbol = std::collections::BTreeMap::<String, i64>::new();
    let total = bars * symbols.len() as i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for _ in 0..total {
        let message = tokio::time::timeout_at(deadline, complete.next())
            .await
            .expect("one analysis per candle")
            .unwrap();
        let value: Value = serde_json::from_slice(&message.payload).unwrap();
        let symbol = value["payload"]["symbol"].as_str().unwrap().to_string();
        *per_symbol.entry(symbol).or_default() += 1;
    }
    // Nothing more: no candle was handled by both.
    let extra = tokio::time::timeout(Duration::from_millis(500), complete.next()).await;
    assert!(extra.is_err(), "a candle was analysed twice");
    assert_eq!(per_symbol.len(), symbols.len());
    assert!(per_symbol.values().all(|&n| n == bars), "{per_symbol:?}");

    let mut received = Vec::new();
    for (child, lines) in instances {
        let summary = interrupt_agent(child, lines);
        let count = |what: &str| -> i64 {
            let at = summary.find(what).unwrap_or_else(|| panic!("{summary}"));
            summary[..at]
                .rsplit(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())
                .unwrap()
                .parse()
                .unwrap()
        };
        let (mine, others) = (
            count(" messages received"),
            count(" left to other instances"),
        );
        assert_eq!(
            mine + others,
            total,
            "every instance sees every candle: {summary}"
        );
        received.push(mine);
    }
    assert_eq!(received.iter().sum::<i64>(), total, "{received:?}");
    assert!(
        received.iter().all(|&n| n > 0),
        "both share the load: {received:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_risk_agent_process_answers_nats_requests() {
    use bus_core::model::Payload;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(dir.path(), &server, "rr", "");
    let (mut child, _lines) = start_agent("risk", &config, dir.path());
    let client = async_nats::connect(server.url()).await.unwrap();
    let timeout = Duration::from_secs(10);

    // Within the default limits (order notional 60,000): approved.
    let small = order_request(10);
    let answer = bus_core::nats::request(&client, "rr", &small, timeout)
        .await
        .expect("risk answers");
    assert_eq!(answer.correlation_id, Some(small.id));
    assert_eq!(answer.sender.as_str(), "risk");
    assert!(
        matches!(answer.payload(), Payload::ResponseSuccess(s) if s.detail.contains("req-10")),
        "{answer:?}"
    );

    // 1,000 x 100 = 100,000 is over the order limit: refused, with the reason.
    let large = order_request(1000);
    let answer = bus_core::nats::request(&client, "rr", &large, timeout)
        .await
        .expect("risk answers");
    assert_eq!(answer.correlation_id, Some(large.id));
    match answer.payload() {
        Payload::ResponseError(e) => assert_eq!(e.code, "risk_refused", "{e:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Nobody listens: a prompt error, not a wait for the timeout.
    let mut nobody = order_request(1);
    nobody.topic = bus_core::Topic::new("nobody.listens").unwrap();
    let started = Instant::now();
    let error = bus_core::nats::request(&client, "rr", &nobody, timeout)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{error}");
    assert!(error.to_string().contains("rr.nobody.listens"), "{error}");

    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_process_survives_a_nats_server_restart_and_resumes() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(dir.path(), &server, "rc", "");
    let (mut child, _lines) = start_agent("signals", &config, dir.path());

    // Candles in, one analysis_complete out per candle.
    async fn round(url: &str, from: i64, n: i64, wait: Duration) -> i64 {
        let client = async_nats::connect(url).await.unwrap();
        let mut done = client
            .subscribe("rc.signal.analysis_complete.>")
            .await
            .unwrap();
        client.flush().await.unwrap();
        for i in from..from + n {
            client
                .publish(
                    "rc.data.candle.BTC.1m",
                    raw_candle(i, 100.0 + i as f64).into(),
                )
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + wait;
        while seen < n {
            match tokio::time::timeout_at(deadline, done.next()).await {
                Ok(Some(_)) => seen += 1,
                _ => break,
            }
        }
        seen
    }

    assert_eq!(
        round(&server.url(), 0, 20, Duration::from_secs(10)).await,
        20
    );
    server.restart_after(Duration::from_millis(500));
    // The agent's client reconnects with backoff and re-subscribes; until it
    // has, candles published on the fresh server reach nobody (core NATS is
    // fire-and-forget), so keep offering rounds until one is answered.
    let started = Instant::now();
    let mut from = 20;
    loop {
        let seen = round(&server.url(), from, 5, Duration::from_millis(500)).await;
        from += 5;
        if seen == 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent did not come back after the server restart"
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent kept running"
    );
    assert_eq!(
        round(&server.url(), from, 20, Duration::from_secs(10)).await,
        20
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_writing_binary_reads_both_formats_and_dead_letters_bad_binary() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(dir.path(), &server, "bin", "wire_format = \"binary\"\n");
    let (child, lines) = start_agent("signals", &config, dir.path());

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut signals = client
        .subscribe("bin.signal.analysis_complete.>")
        .await
        .unwrap();
    let mut dead_letters = client.subscribe("bin.system.dead_letter").await.unwrap();
    client.flush().await.unwrap();
    // Bad binary: the marker, then a type that is not one.
    let mut bad = bus_core::model::wire::binary::MAGIC.to_vec();
    bad.extend_from_slice(&[0; 16]);
    bad.extend_from_slice(b"\x0bdata.bogus!");
    client
        .publish("bin.data.candle.BTC.1m", bad.into())
        .await
        .unwrap();
    // Candles alternately as JSON and as binary: the agent reads both.
    let candles = 40;
    for i in 0..candles {
        let close = 100.0 + 10.0 * ((i as f64) / 6.0).sin();
        let json = raw_candle(i, close);
        let bytes = if i % 2 == 0 {
            json
        } else {
            bus_core::model::wire::binary::encode(&bus_core::Envelope::from_json(&json).unwrap())
        };
        client
            .publish("bin.data.candle.BTC.1m", bytes.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    for i in 0..candles {
        let message = tokio::time::timeout(Duration::from_secs(20), signals.next())
            .await
            .expect("signals arrive")
            .unwrap();
        assert!(
            bus_core::model::wire::binary::is_binary(&message.payload),
            "the agent writes binary"
        );
        let envelope = bus_core::Envelope::from_wire(&message.payload).unwrap();
        assert_eq!(envelope.sender.as_str(), "signals");
        let bus_core::Payload::SignalAnalysisComplete(done) = envelope.payload() else {
            panic!("{envelope:?}")
        };
        assert_eq!(done.timestamp_ms, i * 60_000, "in order");
    }
    let letter = tokio::time::timeout(Duration::from_secs(10), dead_letters.next())
        .await
        .expect("dead letter")
        .unwrap();
    // Dead letters are JSON whatever the writer's format (they nest the
    // original, which may not have decoded).
    let value: Value = serde_json::from_slice(&letter.payload).unwrap();
    let error = value["payload"]["error"].as_str().unwrap();
    assert!(
        error.contains("type") && error.contains("data.bogus"),
        "{value}"
    );

    let summary = interrupt_agent(child, lines);
    assert!(
        summary.contains(&format!("{candles} messages received")),
        "{summary}"
    );
    assert!(summary.contains("1 undecodable"), "{summary}");
}

/// `bistoury run` in distributed mode: it starts nats-server itself (on a
/// free loopback port) and every agent as a process.
fn distributed_config(dir: &Path, candles: usize, speed: f64) -> std::path::PathBuf {
    let config = dir.join("distributed.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ntransport = \"nats\"\nnats_server = \"nats-server\"\n\
             nats_url = \"nats://127.0.0.1:{}\"\nsubject_prefix = \"dist\"\n\n\
             [data]\ncandles = {candles}\nspeed = {speed}\n",
            free_port()
        ),
    )
    .unwrap();
    config
}

fn run_distributed(dir: &Path, config: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    bistoury(&["run", "--config", config.to_str().unwrap()], dir)
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("bistoury-output/report.json")).expect("report written"),
    )
    .unwrap()
}

#[test]
fn bistoury_run_starts_every_agent_as_its_own_process_over_nats() {
    let dir = tempfile::tempdir().unwrap();
    let config = distributed_config(dir.path(), 300, 0.0);
    let (mut child, lines) = run_distributed(dir.path(), &config);
    let status = child.wait().unwrap();
    let output: Vec<String> = lines.iter().collect();
    let output = output.join("\n");
    assert!(status.success(), "{output}");
    assert!(
        output.contains("started nats-server on 127.0.0.1:"),
        "{output}"
    );
    for agent in ["signals", "risk", "trader", "collector"] {
        assert!(
            output.contains(&format!("started agent {agent} (pid ")),
            "{agent}: {output}"
        );
    }
    assert!(output.contains("Processes mode"), "{output}");
    assert!(
        output.contains("run.lockstep holds for the in-process transport only"),
        "a free-running distributed run says it is not in lockstep: {output}"
    );
    let report = report(dir.path());
    assert_eq!(report["candles"], 900, "every candle reached the report");
    assert_eq!(report["accounting_identity_holds"], true);
}

#[test]
fn the_progress_line_counts_candles_in_a_distributed_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = distributed_config(dir.path(), 3000, 60_000.0);
    // `script` (util-linux) gives the command a pseudo-terminal.
    let Ok(under_tty) = Command::new("script")
        .args([
            "-qec",
            &format!(
                "{} run --config {}",
                env!("CARGO_BIN_EXE_bistoury-e2e"),
                config.display()
            ),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .output()
    else {
        eprintln!("`script` is not installed: this test is skipped");
        return;
    };
    let output = String::from_utf8_lossy(&under_tty.stdout);
    assert!(under_tty.status.success(), "{output}");
    let counted: Vec<u64> = output
        .split("\rcandles ")
        .skip(1)
        .filter_map(|l| l.split('/').next()?.parse().ok())
        .collect();
    assert!(
        counted.iter().any(|&n| n > 0 && n <= 9000),
        "no progress counted: {output:?}"
    );
}

/// Runs `bistoury run` distributed, kills the signals process with
/// SIGKILL `after` the collector has started, waits for its restart and
/// for the run to end; returns the killed and the new pid, and the output.
fn kill_signals_mid_run(dir: &Path, config: &Path, after: Duration) -> (u32, u32, String) {
    let mut run = Running::start(&["run", "--config", config.to_str().unwrap()], dir, &[]);
    let signals = run.pid_after("started agent signals");
    run.pid_after("started agent collector");
    std::thread::sleep(after);
    assert!(Command::new("kill")
        .args(["-9", &signals.to_string()])
        .status()
        .unwrap()
        .success());
    let again = run.pid_after("started agent signals");
    assert_ne!(again, signals);
    let (status, output) = run.finish(Duration::from_secs(120));
    assert!(status.success(), "{output}");
    assert!(output.contains("agent signals exited"), "{output}");
    assert!(output.contains("restart 1 of 3"), "{output}");
    (signals, again, output)
}

#[test]
fn a_killed_agent_process_is_restarted_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    // 1-minute bars replayed 60,000x: one bar per millisecond, ~4 s in all.
    let config = distributed_config(dir.path(), 4000, 60_000.0);
    let (signals, again, _) = kill_signals_mid_run(dir.path(), &config, Duration::from_millis(800));
    let report = report(dir.path());
    assert_eq!(
        report["candles"], 12_000,
        "the collector and report were unaffected"
    );
    assert_eq!(report["accounting_identity_holds"], true);
    // The killed process is gone, and so is every other agent process.
    assert!(!Path::new(&format!("/proc/{signals}")).exists());
    assert!(!Path::new(&format!("/proc/{again}")).exists());
}

#[test]
fn agent_processes_do_not_outlive_a_killed_bistoury_run() {
    // The test runs the server: one `bistoury run` starts would outlive a
    // SIGKILLed parent (nats-server cannot watch its parent).
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = nats_config(
        dir.path(),
        &server,
        "orph",
        "transport = \"nats\"\n\n[data]\ncandles = 100000\nspeed = 60000.0\n",
    );
    let (mut child, lines) = run_distributed(dir.path(), &config);
    let mut pids = Vec::new();
    while pids.len() < 4 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("agents start");
        if let Some(rest) = line.strip_prefix("started agent ") {
            let pid = rest.split("(pid ").nth(1).unwrap().trim_end_matches(')');
            pids.push(pid.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL: no chance to stop its agents itself
    child.wait().unwrap();
    let started = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        // A zombie (exited, not yet reaped by init) counts as gone.
        let alive: Vec<&String> = pids
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|stat| !stat.contains(") Z "))
                    .unwrap_or(false)
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "agent processes outlived their parent: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn agents_authenticate_with_a_token_from_the_environment_or_a_file_and_never_show_it() {
    let token = "s3cret-token-8d2f";
    let server = NatsServer::start_with_token(token);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("nats.token");

    // From a file.
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let config = nats_config(
        dir.path(),
        &server,
        "auth",
        &format!(
            "token_env = \"UNSET_TOKEN_VARIABLE\"\ntoken_file = {:?}\n",
            token_file
        ),
    );
    let (mut child, _lines) = start_agent("signals", &config, dir.path());
    child.kill().unwrap();
    child.wait().unwrap();

    let run = |config: &Path, env_token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"));
        command
            .args(["agent", "signals", "--config", config.to_str().unwrap()])
            .current_dir(dir.path())
            .env("RUST_LOG", "debug")
            .env_remove("TEST_NATS_TOKEN")
            .stdin(Stdio::null());
        if let Some(value) = env_token {
            command.env("TEST_NATS_TOKEN", value);
        }
        command
    };

    // From the environment (the variable wins over the file).
    std::fs::write(&token_file, "wrong-token").unwrap();
    let env_config = nats_config(
        dir.path(),
        &server,
        "authenv",
        &format!(
            "token_env = \"TEST_NATS_TOKEN\"\ntoken_file = {:?}\n",
            token_file
        ),
    );
    let mut child = run(&env_config, Some(token))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("connected"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();

    // A wrong token: a clear error, exit status non-zero, the token nowhere.
    let output = run(&env_config, None).output().unwrap();
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("cannot connect to NATS"), "{text}");
    assert!(
        !text.contains("wrong-token") && !text.contains(token),
        "{text}"
    );

    // An unreadable token file is a configuration error naming the key.
    std::fs::remove_file(&token_file).unwrap();
    let output = run(&env_config, None).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("bus.token_file"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A JetStream stream on `server`, its state and the names of its consumers.
async fn stream_and_consumers(
    server: &NatsServer,
    name: &str,
) -> (
    async_nats::jetstream::stream::Stream,
    async_nats::jetstream::stream::State,
    Vec<String>,
) {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut names = stream.consumer_names();
    let mut consumers = Vec::new();
    while let Some(name) = names.next().await {
        consumers.push(name.unwrap());
    }
    (stream, state, consumers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_resumes_its_durable_jetstream_consumer_without_loss() {
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jetstream.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ntransport = \"nats\"\nnats_url = \"{}\"\nsubject_prefix = \"jsrun\"\n\n\
             [bus.jetstream]\nfamilies = [\"data\", \"signal\"]\nack_wait_ms = 2000\n\n\
             [data]\ncandles = 4000\nspeed = 60000.0\n",
            server.url()
        ),
    )
    .unwrap();
    let (_, _, output) = tokio::task::block_in_place(|| {
        kill_signals_mid_run(dir.path(), &config, Duration::from_millis(1000))
    });
    let report = report(dir.path());
    assert_eq!(report["candles"], 12_000, "{output}");
    assert_eq!(report["accounting_identity_holds"], true);

    // Every candle is in the stream, and every durable consumer — the
    // restarted signals agent's among them — acknowledged all of them.
    let (stream, state, consumers) = stream_and_consumers(&server, "JSRUN_DATA").await;
    assert!(state.last_sequence >= 12_000, "{state:?}");
    assert_eq!(state.messages, 0, "unacknowledged messages left: {state:?}");
    assert!(
        consumers.iter().any(|c| c.starts_with("signals_")),
        "{consumers:?}"
    );
    for name in consumers {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&name).await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(info.num_pending, 0, "{name}");
        assert_eq!(info.num_ack_pending, 0, "{name}");
        if name.ends_with("_data_candle_G") {
            // Subscribed to `data.candle.>`: every candle, acknowledged.
            assert_eq!(
                info.ack_floor.stream_sequence, state.last_sequence,
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_run_starts_from_empty_streams_whatever_an_earlier_run_left() {
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let dir = tempfile::tempdir().unwrap();
    let run = |instances: u32| {
        let config = dir.path().join(format!("run{instances}.toml"));
        std::fs::write(
            &config,
            format!(
                "[bus]\ntransport = \"nats\"\nnats_url = \"{}\"\nsubject_prefix = \"again\"\n\n\
                 [bus.jetstream]\nfamilies = [\"data\"]\n\n\
                 [agents.signals]\ninstances = {instances}\n\n[data]\ncandles = 100\n",
                server.url()
            ),
        )
        .unwrap();
        tokio::task::block_in_place(|| {
            let (mut child, lines) =
                bistoury(&["run", "--config", config.to_str().unwrap()], dir.path());
            let status = child.wait().unwrap();
            let output = lines.iter().collect::<Vec<_>>().join("\n");
            assert!(status.success(), "{output}");
            assert_eq!(report(dir.path())["candles"], 300, "{output}");
            output
        })
    };
    // Two signal instances, then one: the first run's consumers
    // (`signals_1of2`, `signals_2of2`) would otherwise stay on the stream,
    // holding every later candle for readers that never come.
    let first = run(2);
    assert!(!first.contains("left by an earlier run"), "{first}");
    let second = run(1);
    assert!(
        second.contains("JetStream: deleted AGAIN_DATA, left by an earlier run"),
        "{second}"
    );

    let (_, state, consumers) = stream_and_consumers(&server, "AGAIN_DATA").await;
    assert_eq!(state.messages, 0, "everything acknowledged: {state:?}");
    assert!(
        state.first_sequence <= 301 && state.last_sequence <= 300,
        "only the second run's candles went through this stream: {state:?}"
    );
    assert!(
        consumers.iter().any(|c| c.starts_with("signals_")),
        "{consumers:?}"
    );
    assert!(
        !consumers.iter().any(|c| c.contains("of2")),
        "the first run's consumers are gone: {consumers:?}"
    );
}

/// Backtests `data`, then runs it paced with every agent in its own
/// process (`bus` adds to the `[bus]` section); returns both output dirs.
fn backtest_and_paced_run(
    dir: &Path,
    data: &str,
    bus: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let backtest = dir.join("backtest.toml");
    std::fs::write(&backtest, data).unwrap();
    let (mut child, _) = bistoury(
        &[
            "backtest",
            "--config",
            backtest.to_str().unwrap(),
            "--output-dir",
            "bt",
        ],
        dir,
    );
    assert!(child.wait().unwrap().success());
    // Paced: a bar every 100 ms, far longer than a step's whole chain
    // (candle -> signals -> trader -> risk -> trader -> risk) takes.
    let distributed = dir.join("distributed.toml");
    std::fs::write(
        &distributed,
        format!(
            "[bus]\ntransport = \"nats\"\nnats_server = \"nats-server\"\n\
             nats_url = \"nats://127.0.0.1:{}\"\nsubject_prefix = \"paced\"\n{bus}\n{}\nspeed = 600.0\n",
            free_port(),
            data.trim_end()
        ),
    )
    .unwrap();
    let (mut child, lines) = bistoury(
        &[
            "run",
            "--config",
            distributed.to_str().unwrap(),
            "--output-dir",
            "dist",
        ],
        dir,
    );
    let status = child.wait().unwrap();
    let output: Vec<String> = lines.iter().collect();
    assert!(status.success(), "{}", output.join("\n"));
    assert!(output.iter().any(|l| l.contains("Processes mode")));
    (dir.join("bt"), dir.join("dist"))
}

#[test]
fn a_paced_distributed_run_reproduces_the_backtest() {
    // One symbol: every agent in its own process (writing the binary wire
    // format, in latency mode: connection and agent on one thread), and
    // still the very same trade log and report, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let (bt, dist) = backtest_and_paced_run(
        dir.path(),
        "[data]\ncandles = 120\nsymbols = [ { symbol = \"BTC\", start_price = 35000.0 } ]\n",
        "wire_format = \"binary\"\nlatency = \"low\"\n",
    );
    let trades = |d: &Path| std::fs::read_to_string(d.join("trades.csv")).unwrap();
    assert!(trades(&bt).lines().count() > 5, "the strategies trade");
    assert_eq!(trades(&bt), trades(&dist), "trade logs differ");
    assert_eq!(support::traded_figures(&bt), support::traded_figures(&dist));
    // Every process's bus figures are in the report: the collector
    // published each candle, the signals agent received each once.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dist.join("report.json")).unwrap()).unwrap();
    let bus = &report["bus"];
    assert_eq!(bus["kind"], "distributed", "{bus:#}");
    let row = |name: &str| {
        bus["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {bus:#}"))
            .clone()
    };
    for name in ["collector", "signals", "risk", "trader", "report"] {
        row(name);
    }
    assert_eq!(row("signals")["delivered"], report["candles"], "{bus:#}");
    assert!(bus["published"].as_u64().unwrap() >= report["candles"].as_u64().unwrap());
    assert_eq!(bus["dead_lettered"], 0);

    // Several symbols, each step's candles staggered (published one at a
    // time over the step): each candle is worked through before the next,
    // as in the backtest, so again the same fills, byte for byte. (Without
    // `stagger` a step's candles reach the trader together, ahead of the
    // signals they cause, while the backtest works each candle through
    // before the next: orders are then sized with the other positions
    // marked one bar apart, and quantities differ in the last digits.)
    let dir = tempfile::tempdir().unwrap();
    let (bt, dist) = backtest_and_paced_run(
        dir.path(),
        "[data]\ncandles = 100\nstagger = true\nsymbols = [\n  { symbol = \"BTC\", start_price = 35000.0 },\n  \
         { symbol = \"ETH\", start_price = 2000.0 },\n  { symbol = \"SOL\", start_price = 60.0 },\n]\n",
        "",
    );
    assert!(trades(&bt).lines().count() > 5, "the strategies trade");
    assert_eq!(trades(&bt), trades(&dist), "trade logs differ");
    assert_eq!(support::traded_figures(&bt), support::traded_figures(&dist));
}

/// A stand-in for a NATS server that says it is `version`: it sends its
/// INFO, answers each PING with PONG and ignores everything else (so
/// JetStream requests go unanswered). Returns its port.
fn server_claiming_version(version: &str) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let info = format!(
        "INFO {{\"server_id\":\"stand-in\",\"server_name\":\"stand-in\",\"version\":\"{version}\",\
         \"proto\":1,\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\"max_payload\":1048576}}\r\n"
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let info = info.clone();
            std::thread::spawn(move || {
                if stream.write_all(info.as_bytes()).is_err() {
                    return;
                }
                let lines = BufReader::new(stream.try_clone().unwrap()).lines();
                for line in lines.map_while(Result::ok) {
                    if line.starts_with("PING") && stream.write_all(b"PONG\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn bistoury_run_warns_about_a_nats_server_before_2_10_with_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let port = server_claiming_version("2.9.10");
    let config = dir.path().join("old-server.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ntransport = \"nats\"\nnats_url = \"nats://127.0.0.1:{port}\"\n\n\
             [bus.jetstream]\nfamilies = [\"data\"]\n"
        ),
    )
    .unwrap();
    let (mut child, lines) = bistoury(&["run", "--config", config.to_str().unwrap()], dir.path());
    let started = Instant::now();
    let warning = loop {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("warning: nats-server") => break line,
            Ok(_) => {}
            Err(_) => panic!("no warning about the server's version"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(warning.contains("2.9.10"), "{warning}");
    assert!(warning.contains("2.10 or newer"), "{warning}");
}

/// A distributed run says when it starts and ends: `system.startup` once
/// its agent processes are up, `system.shutdown` after the data is worked
/// through and before they stop; a trader closing at the end
/// (`close_at_end`) hears it and closes, and the report has those fills.
/// (A lone crossover without stops is always in the market.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_run_announces_its_start_and_end_and_closes_at_the_end() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        format!(
            "[bus]\ntransport = \"nats\"\nnats_server = \"\"\nnats_url = \"{}\"\n\
             subject_prefix = \"announce\"\n\n[data]\ncandles = 1500\n\n\
             [signals]\nthreshold = 0.0\n[signals.rsi]\nenabled = false\n\
             [signals.macd]\nenabled = false\n[signals.bollinger]\nenabled = false\n\
             [signals.candlestick]\nenabled = false\n\n\
             [trader]\nclose_at_end = true\nmin_confidence = 0.0\n\
             stop_loss = \"off\"\ntake_profit = \"off\"\n\n\
             [risk]\nmax_drawdown = \"off\"\nmax_daily_loss = \"off\"\n",
            server.url()
        ),
    )
    .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut system = client.subscribe("announce.system.>").await.unwrap();
    client.flush().await.unwrap();
    let (mut child, lines) = bistoury(&["run", "--config", "c.toml"], dir.path());
    let status = tokio::task::block_in_place(|| child.wait().unwrap());
    let output: Vec<String> = lines.iter().collect();
    assert!(status.success(), "{}", output.join("\n"));
    let mut seen = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), system.next()).await
    {
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        seen.push(envelope["type"].as_str().unwrap().to_string());
    }
    let announced: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|t| *t == "system.startup" || *t == "system.shutdown")
        .collect();
    assert_eq!(announced, ["system.startup", "system.shutdown"], "{seen:?}");
    let report = report(dir.path());
    assert_eq!(
        report["open_positions"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    assert_eq!(report["accounting_identity_holds"], true);
    let trades = std::fs::read_to_string(dir.path().join("bistoury-output/trades.csv")).unwrap();
    let closing: Vec<&str> = trades
        .lines()
        .filter(|l| l.ends_with("end of data"))
        .collect();
    assert!(
        !closing.is_empty(),
        "something was open at the end:\n{trades}"
    );
    let last: Vec<&str> = trades.lines().rev().take(closing.len()).collect();
    assert!(
        closing.iter().all(|row| last.contains(row)),
        "the closing fills come last: {closing:?}"
    );
    assert_eq!(
        report["fills"].as_u64().unwrap() as usize,
        trades.lines().count() - 1
    );
}

#[test]
fn every_agent_process_of_a_distributed_run_serves_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // Five ports in a row: this process's, then one per agent process.
    let base = loop {
        let port = free_port();
        let all_free = (port..port.saturating_add(5))
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free && port < u16::MAX - 5 {
            break port;
        }
    };
    let config = dir.path().join("metered.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ntransport = \"nats\"\nnats_server = \"nats-server\"\n\
             nats_url = \"nats://127.0.0.1:{}\"\nsubject_prefix = \"metered\"\n\
             [data]\ncandles = 800\nspeed = 6000.0\n",
            free_port()
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{base}");
    let (mut child, lines) = bistoury(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--metrics",
            &address,
        ],
        dir.path(),
    );
    // `metrics:   http://ADDR/metrics (agent NAME)`, one per agent process.
    let mut agents: Vec<(String, u16)> = Vec::new();
    while agents.len() < 4 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the agents' metrics addresses are printed");
        let Some(rest) = line.strip_prefix("metrics:   http://127.0.0.1:") else {
            continue;
        };
        if let Some(name) = rest.split("(agent ").nth(1) {
            let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
            agents.push((name.trim_end_matches(')').to_string(), port));
        }
    }
    let wanted = |name: &str| -> (&str, u16) {
        let (_, port) = agents.iter().find(|(n, _)| n == name).expect(name);
        let metric = match name {
            "risk" => "bistoury_risk_orders_approved_total",
            "trader" => "bistoury_trader_fills_total",
            _ => "",
        };
        (metric, *port)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (metric, port) in [wanted("risk"), wanted("trader"), ("bistoury_equity", base)] {
        loop {
            let text = support::http_get(port, "/metrics").unwrap_or_default();
            let seen = text
                .lines()
                .any(|l| l.strip_prefix(metric).is_some_and(|v| v.starts_with(' ')));
            if seen {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{metric} never served on port {port}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (_, collector) = agents.iter().find(|(n, _)| n == "collector").unwrap();
    assert!(
        support::http_get(*collector, "/metrics").is_some(),
        "the collector serves too"
    );
    assert!(child.wait().unwrap().success());
}
