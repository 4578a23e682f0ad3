//! Distributed runs fail safe: a run never takes over a server or streams
//! that are not its own, the server it starts is closed to strangers, a
//! dying server is started again or ends the run with its partial report,
//! and no agent process outlives the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{free_port, NatsServer, Running};

/// The next message on `subscription` as JSON (at most 10 s away).
async fn next_json(subscription: &mut async_nats::Subscriber, what: &str) -> Value {
    let message = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(subscription),
    )
    .await
    .unwrap_or_else(|_| panic!("no {what}"))
    .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("bistoury-output/report.json")).expect("report written"),
    )
    .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// Waits until none of `pids` runs (zombies count as gone).
fn wait_gone(pids: &[u32], limit: Duration) {
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        let left: Vec<&u32> = pids.iter().filter(|&&p| alive(p)).collect();
        assert!(
            started.elapsed() < limit,
            "processes still running after {limit:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stream of the name `bistoury run` would give its `data` family under
/// `prefix`, made by someone else, holding 3 messages.
async fn someone_elses_stream(server: &NatsServer, prefix: &str) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: bus_core::nats::jetstream::stream_name(prefix, "data"),
        subjects: vec![format!("{prefix}.data.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..3 {
        js.publish(format!("{prefix}.data.mine"), format!("mine {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js
}

async fn messages_in(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_refused_and_streams_without_our_mark_are_never_deleted() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let mine = NatsServer::start_jetstream(store.path());
    let js = someone_elses_stream(&mine, "mine").await;
    let dir = tempfile::tempdir().unwrap();
    let run = |nats_server: &str, extra_args: &[&str]| {
        let config = write_config(
            dir.path(),
            &format!(
                "[bus]\ntransport = \"nats\"\nnats_server = \"{nats_server}\"\n\
                 nats_url = \"{}\"\nsubject_prefix = \"mine\"\n\n\
                 [bus.jetstream]\nfamilies = [\"data\"]\n\n[data]\ncandles = 50\n",
                mine.url()
            ),
        );
        let mut args = vec!["run", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        tokio::task::block_in_place(|| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Running::start(&args, dir.path(), &[]).finish(Duration::from_secs(60))
        })
    };

    // Told to start its own server on a port where mine listens: refused
    // before anything else happens.
    let (status, output) = run("nats-server", &[]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("already in use"), "{output}");
    assert!(!output.contains("started nats-server"), "{output}");
    assert_eq!(messages_in(&js, "MINE_DATA").await, 3, "{output}");

    // On my server, my stream of the same name is not Bistoury's to use
    // or delete.
    let (status, output) = run("", &[]);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("MINE_DATA exists but was not created by Bistoury"),
        "{output}"
    );
    assert!(output.contains("--fresh"), "{output}");
    assert_eq!(messages_in(&js, "MINE_DATA").await, 3, "{output}");

    // Unless told to with --fresh.
    let (status, output) = run("", &["--fresh"]);
    assert!(status.success(), "{output}");
    assert!(output.contains("deleted MINE_DATA"), "{output}");
    assert_eq!(report(dir.path())["candles"], 150, "{output}");

    // The stream Bistoury made in its place carries its mark: the next run
    // may start it afresh without being told.
    let (status, output) = run("", &[]);
    assert!(status.success(), "{output}");
    assert!(output.contains("deleted MINE_DATA"), "{output}");
}

/// A long distributed run on a server `bistoury run` starts itself.
fn long_distributed_run(dir: &Path, extra: &str, env: &[(&str, &str)]) -> (Running, u16) {
    let port = free_port();
    let config = write_config(
        dir,
        &format!(
            "[bus]\ntransport = \"nats\"\nnats_server = \"nats-server\"\n\
             nats_url = \"nats://127.0.0.1:{port}\"\nsubject_prefix = \"secure\"\n{extra}\n\n\
             [data]\ncandles = 100000\nspeed = 60000.0\n"
        ),
    );
    let run = Running::start(&["run", "--config", config.to_str().unwrap()], dir, env);
    (run, port)
}

/// The arguments of a running process.
fn command_line(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Checks that the server behind `pid` on `port` takes no client without
/// the token, that the token is not on its command line, and that the
/// file holding it is its owner's only.
async fn check_closed_to_strangers(pid: u32, port: u16, token: Option<&str>) {
    let url = format!("nats://127.0.0.1:{port}");
    let stranger = async_nats::connect(&url).await;
    assert!(stranger.is_err(), "a client without a token got in");
    let wrong = async_nats::ConnectOptions::with_token("guess".into())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "a client with a wrong token got in");
    if let Some(token) = token {
        async_nats::ConnectOptions::with_token(token.into())
            .connect(&url)
            .await
            .expect("the configured token lets a client in");
    }
    let args = command_line(pid);
    assert!(!args.iter().any(|a| a == "--auth"), "{args:?}");
    if let Some(token) = token {
        assert!(!args.iter().any(|a| a.contains(token)), "{args:?}");
    }
    let file = args
        .iter()
        .position(|a| a == "-c")
        .map(|i| &args[i + 1])
        .expect("a configuration file");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(file).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_a_run_starts_wants_a_token_and_ctrl_c_stops_the_data_first() {
    let _machine = support::beside_others().await;
    // No token configured: one is generated for the run.
    let dir = tempfile::tempdir().unwrap();
    let (mut run, port) = long_distributed_run(dir.path(), "", &[]);
    let server = tokio::task::block_in_place(|| run.pid_after("started nats-server on"));
    let collector = tokio::task::block_in_place(|| run.pid_after("started agent collector"));
    check_closed_to_strangers(server, port, None).await;
    assert!(alive(collector));

    // Ctrl-C: 100,000 candles a symbol at one a millisecond would take 100 s;
    // the collector stops first, the rest drains, the report is written.
    let interrupted = Instant::now();
    run.signal("-INT");
    let (status, output) = tokio::task::block_in_place(|| run.finish(Duration::from_secs(30)));
    assert!(status.success(), "{output}");
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "{:?} to stop: {output}",
        interrupted.elapsed()
    );
    assert!(output.contains("stopped early"), "{output}");
    let candles = report(dir.path())["candles"].as_u64().unwrap();
    assert!(candles > 0 && candles < 300_000, "{candles}: {output}");
    assert!(!alive(server), "the server outlived its run");

    // A configured token: the server wants it, and it shows nowhere.
    let token = "s3cret-run-token-4c9e";
    let dir = tempfile::tempdir().unwrap();
    let (mut run, port) = long_distributed_run(
        dir.path(),
        "token_env = \"TEST_RUN_TOKEN\"",
        &[("TEST_RUN_TOKEN", token)],
    );
    let server = tokio::task::block_in_place(|| run.pid_after("started nats-server on"));
    tokio::task::block_in_place(|| run.pid_after("started agent collector"));
    check_closed_to_strangers(server, port, Some(token)).await;
    run.signal("-TERM");
    let (status, output) = tokio::task::block_in_place(|| run.finish(Duration::from_secs(30)));
    assert!(status.success(), "{output}");
    assert!(!output.contains(token), "{output}");
}

/// A distributed run whose server dies: `kill -9` it once the collector
/// runs. With `hold_port`, the test takes the port at once so that the
/// server cannot come back.
fn run_with_dying_server(
    dir: &Path,
    hold_port: bool,
) -> (std::process::ExitStatus, String, Vec<u32>) {
    let port = free_port();
    let config = write_config(
        dir,
        &format!(
            "[bus]\ntransport = \"nats\"\nnats_server = \"nats-server\"\n\
             nats_url = \"nats://127.0.0.1:{port}\"\nsubject_prefix = \"dying\"\n\n\
             [bus.jetstream]\nfamilies = [\"data\"]\nack_wait_ms = 2000\n\n\
             [data]\ncandles = 3000\nspeed = 60000.0\n"
        ),
    );
    let mut run = Running::start(&["run", "--config", config.to_str().unwrap()], dir, &[]);
    let server = run.pid_after("started nats-server on");
    let mut agents = Vec::new();
    for name in ["signals", "risk", "trader", "collector"] {
        agents.push(run.pid_after(&format!("started agent {name}")));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(Command::new("kill")
        .args(["-9", &server.to_string()])
        .status()
        .unwrap()
        .success());
    let _held = hold_port.then(|| {
        let started = Instant::now();
        loop {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(_) if started.elapsed() < Duration::from_millis(400) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("cannot take the dead server's port: {e}"),
            }
        }
    });
    let (status, output) = run.finish(Duration::from_secs(60));
    (status, output, agents)
}

#[test]
fn a_server_that_dies_is_started_again_and_the_run_completes() {
    let _machine = support::beside_others_blocking();
    let dir = tempfile::tempdir().unwrap();
    let (status, output, agents) = run_with_dying_server(dir.path(), false);
    assert!(status.success(), "{output}");
    assert!(
        output.contains("exited (signal: 9") && output.contains("starting it again (1 of 3)"),
        "{output}"
    );
    // Candles travel through JetStream, kept in the server's store across
    // its death: every one reaches the report. Some may come twice (acks
    // the dead server never stored) or late (sent by the dead server, never
    // received, delivered again after newer ones): those are passed by,
    // counted, never handled twice or out of order.
    let report = report(dir.path());
    let candles = report["candles"].as_u64().unwrap();
    let passed_by = report["candles_late_or_repeated"].as_u64().unwrap();
    assert!(candles <= 9000, "{candles}: {output}");
    assert!(
        candles + passed_by >= 9000,
        "{candles} + {passed_by}: {output}"
    );
    assert_eq!(report["accounting_identity_holds"], true);
    wait_gone(&agents, Duration::from_secs(5));
}

#[test]
fn a_server_that_cannot_come_back_ends_the_run_with_its_partial_report() {
    let _machine = support::beside_others_blocking();
    let dir = tempfile::tempdir().unwrap();
    let (status, output, agents) = run_with_dying_server(dir.path(), true);
    assert!(!status.success(), "{output}");
    assert!(output.contains("could not be started again"), "{output}");
    assert!(output.contains("already in use"), "{output}");
    let report = report(dir.path());
    let candles = report["candles"].as_u64().unwrap();
    assert!(candles > 0 && candles < 9000, "{candles}: {output}");
    assert_eq!(report["accounting_identity_holds"], true);
    wait_gone(&agents, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_exit_when_their_parent_and_the_server_die_together() {
    let _machine = support::beside_others().await;
    // The test runs the server, so that it can kill it without the run
    // noticing first.
    let store = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start_jetstream(store.path());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[bus]\ntransport = \"nats\"\nnats_url = \"{}\"\nsubject_prefix = \"orphans\"\n\n\
             [bus.jetstream]\nfamilies = [\"data\"]\n\n\
             [data]\ncandles = 100000\nspeed = 60000.0\n",
            server.url()
        ),
    );
    let mut run = Running::start(
        &["run", "--config", config.to_str().unwrap()],
        dir.path(),
        &[],
    );
    let mut agents = Vec::new();
    for name in ["signals", "risk", "trader", "collector"] {
        agents.push(tokio::task::block_in_place(|| {
            run.pid_after(&format!("started agent {name}"))
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The collector is now stuck publishing into JetStream for ever.
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    tokio::task::block_in_place(|| wait_gone(&agents, Duration::from_secs(15)));
}

/// A `trade.pnl_update` envelope as any client would write it.
fn pnl_update(i: i64, equity: i64) -> String {
    let t = DAY + i * 60_000;
    serde_json::json!({
        "id": format!("00000000-0000-4000-8000-{i:012}"),
        "type": "trade.pnl_update",
        "topic": "trade.pnl_update",
        "sender": "trader",
        "created_at_ms": t,
        "payload": {
            "timestamp_ms": t, "cash": equity.to_string(), "realised_pnl": "0",
            "unrealised_pnl": "0", "fees": "0", "equity": equity.to_string()
        }
    })
    .to_string()
}

/// 2023-11-15 00:00 UTC.
const DAY: i64 = 1_700_006_400_000;

/// Publishes updates `range` (equity 100,000 at the day's start, 1,000 less
/// a minute) into JetStream and waits until the risk agent has handled
/// and acknowledged every one (interest retention: the stream is empty).
async fn publish_day(js: &async_nats::jetstream::Context, range: std::ops::Range<i64>) {
    for i in range {
        js.publish(
            "rs.trade.pnl_update",
            pnl_update(i, 100_000 - 1000 * i).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let started = Instant::now();
    while messages_in(js, "RS_TRADE").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_risk_agent_killed_mid_run_stops_trading_at_the_same_drawdown() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[bus]\nnats_url = \"{}\"\nsubject_prefix = \"rs\"\n\n\
             [bus.jetstream]\nfamilies = [\"trade\"]\nack_wait_ms = 1000\n\n\
             [risk]\nmax_drawdown = \"0.15\"\nmax_daily_loss = \"off\"\n",
            server.url()
        ),
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut stops = client.subscribe("rs.risk.emergency_stop").await.unwrap();
    let start_risk = || {
        tokio::task::block_in_place(|| {
            let mut risk = Running::start(
                &["agent", "risk", "--config", config.to_str().unwrap()],
                dir.path(),
                &[],
            );
            risk.wait_for("agent risk connected");
            risk
        })
    };

    // The day goes to a loss of 10,000; the agent is killed.
    let mut risk = start_risk();
    publish_day(&js, 0..11).await;
    risk.child.kill().unwrap();
    risk.child.wait().unwrap();

    // Restarted, it stops trading when equity is 15 % below its peak, as it
    // would have without the kill (not 15 % below where it restarted).
    let mut risk = start_risk();
    publish_day(&js, 11..20).await;
    let stop = next_json(&mut stops, "emergency stop").await;
    assert_eq!(stop["created_at_ms"], DAY + 15 * 60_000, "{stop}");
    assert!(
        stop["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("0.15 >= 0.15"),
        "{stop}"
    );

    // Killed once more: it comes back halted, says so again, and fires no
    // second stop however far the equity falls.
    risk.child.kill().unwrap();
    risk.child.wait().unwrap();
    let risk = start_risk();
    let again = next_json(&mut stops, "halt announced again").await;
    assert_eq!(
        again["payload"]["triggered_by"], "restored_state",
        "{again}"
    );
    publish_day(&js, 20..30).await;
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            futures_util::StreamExt::next(&mut stops)
        )
        .await
        .is_err(),
        "a second emergency stop"
    );
    risk.signal("-INT");
    let (status, output) = tokio::task::block_in_place(|| risk.finish(Duration::from_secs(15)));
    assert!(status.success(), "{output}");
}

// Ignored: on this project's 2-core machines the run crawls after the
// second node loss in about one clean CI run in three (2 of 3 on
// 2026-12-07): the surviving nodes keep a stream leader and log no lost
// quorum, yet the first publish of each candle waits out its 5 s
// acknowledgement timeout and its retry is acknowledged at once, so 18,000
// candles cannot finish in time. Run it with `cargo test -p tests --test
// fail_safe -- --ignored`. The message-level guarantee through the loss of
// two nodes stays tested in `jetstream.rs`.
#[ignore = "stalls after the second node loss in about 1 CI run in 3; see the comment"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_run_on_a_cluster_finishes_through_the_loss_of_two_nodes() {
    let _machine = support::alone().await;
    let store = tempfile::tempdir().unwrap();
    let mut cluster = support::NatsCluster::start(3, store.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = cluster
        .urls()
        .split(',')
        .map(|u| format!("{u:?}"))
        .collect();
    let config = write_config(
        dir.path(),
        &format!(
            "[bus]\ntransport = \"nats\"\nnats_url = [{}]\nsubject_prefix = \"clustered\"\n\n\
             [bus.jetstream]\nfamilies = [\"data\"]\nreplicas = 3\nack_wait_ms = 2000\n\n\
             [data]\ncandles = 6000\nspeed = 30000.0\n",
            urls.join(", ")
        ),
    );
    let mut run = Running::start(
        &["run", "--config", config.to_str().unwrap()],
        dir.path(),
        &[("RUST_LOG", "warn,bus_core=info,orchestrator=info")],
    );
    tokio::task::block_in_place(|| run.pid_after("started agent collector"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.nodes[0].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| cluster.nodes[0].respawn());
    cluster.wait_until_ready().await;
    cluster.wait_until_caught_up().await;
    cluster.nodes[1].kill();
    let (status, output) = tokio::task::block_in_place(|| run.finish(Duration::from_secs(120)));
    assert!(status.success(), "{output}");
    let report = report(dir.path());
    assert_eq!(report["accounting_identity_holds"], true, "{output}");
    let candles = report["candles"].as_u64().unwrap();
    let passed_by = report["candles_late_or_repeated"].as_u64().unwrap();
    assert!(candles <= 18_000, "{candles}");
    assert!(
        candles + passed_by >= 18_000,
        "{candles} + {passed_by}: {output}"
    );
}
