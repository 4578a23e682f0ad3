//! End-to-end: the `llm` strategy in `bistoury backtest`, against a local
//! server (axum) speaking the OpenAI chat-completions API. A recorded
//! backtest replays byte for byte with no server and no key; recording
//! again costs nothing; a replay that meets a question it has no answer
//! for stops with the reason; a model that fails, is slow or answers
//! nonsense leaves the trading to the technical strategies; the API key
//! reaches the server and nothing else; the trade log says why a trade
//! was taken when the model spoke.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

mod support;

const KEY_VARIABLE: &str = "BISTOURY_TEST_LLM_KEY";
const SECRET: &str = "sk-e2e-7c1f0a9d-never-print-me";

/// How the stub model behaves.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Long when the summary's closes rose, short when they fell.
    Reads,
    /// HTTP 500 every time.
    Fails,
    /// Answers after the client's timeout.
    Slow,
    /// A body that is not JSON.
    Malformed,
    /// HTTP 429 every time.
    Busy,
    /// Valid JSON content of the wrong shape.
    WrongShape,
    /// An empty choice list.
    NoChoice,
}

/// (Authorization header, request body) of every request a stub saw.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone)]
struct Stub {
    behaviour: Behaviour,
    seen: Seen,
}

/// The closes the summary shows, oldest first (documented format: the
/// lines between the `candles` line and the `indicators` line, close the
/// fourth number).
fn closes(summary: &str) -> Vec<f64> {
    summary
        .lines()
        .skip_while(|l| !l.starts_with("candles"))
        .skip(1)
        .take_while(|l| !l.starts_with("indicators"))
        .map(|l| l.split(' ').nth(3).unwrap().parse().unwrap())
        .collect()
}

async fn chat(State(stub): State<Stub>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let auth = (headers.get("authorization"))
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    stub.seen.lock().unwrap().push((auth, body.clone()));
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    let summary = request["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let content = match stub.behaviour {
        Behaviour::Fails => return (StatusCode::INTERNAL_SERVER_ERROR, "{}".into()),
        Behaviour::Malformed => return (StatusCode::OK, "{\"choices\": [".into()),
        Behaviour::Busy => return (StatusCode::TOO_MANY_REQUESTS, "{}".into()),
        Behaviour::NoChoice => {
            let empty = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 400}});
            return (StatusCode::OK, empty.to_string());
        }
        Behaviour::WrongShape => r#"{"signal":"buy","size":3}"#.to_string(),
        Behaviour::Slow => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            r#"{"direction":"long","confidence":1,"rationale":"late"}"#.to_string()
        }
        Behaviour::Reads => {
            let closes = closes(&summary);
            let (first, last) = (closes[0], closes[closes.len() - 1]);
            let direction = if last > first { "long" } else { "short" };
            serde_json::json!({
                "direction": direction,
                "confidence": 0.9,
                "rationale": format!("closes went from {first} to {last}"),
            })
            .to_string()
        }
    };
    let response = serde_json::json!({
        "id": "chatcmpl-e2e", "object": "chat.completion", "created": 1733529600,
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 400, "completion_tokens": 40, "total_tokens": 440}
    });
    (StatusCode::OK, response.to_string())
}

/// A stub model server on a loopback port, served from its own thread
/// until the test ends.
fn serve(behaviour: Behaviour) -> (u16, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stub = Stub {
        behaviour,
        seen: seen.clone(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new()
                .route("/v1/chat/completions", post(chat))
                .with_state(stub);
            axum::serve(listener, app).await.unwrap();
        });
    });
    (port, seen)
}

/// Hourly bars of one market, up for 50 bars then down for 50, with noise.
fn market(path: &Path, bars: usize) {
    let market = support::TrendingMarket {
        symbol: "ETH",
        start_ms: 1_704_067_200_000,
        step_ms: 3_600_000,
        seed: 11,
        leg: 50,
        drift: 0.004,
        noise: 0.02,
        wick: 0.002,
        volume: 10,
    };
    market.write(path, bars);
}

/// A config in `dir` trading `bars.csv` with the model at `port` (or
/// without it: `llm` false), answers kept in `answers.jsonl`.
fn config(dir: &Path, name: &str, port: u16, mode: &str, llm: bool, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        r#"
[data]
kind = "file"
path = "bars.csv"
interval = "1h"

[signals]
threshold = 0.3

[signals.llm]
enabled = {llm}
base_url = "http://127.0.0.1:{port}/v1"
model = "stub-model"
api_key_env = "{KEY_VARIABLE}"
timeout_ms = 500
ask_every_bars = 8
history_bars = 12
weight = 3
cache = "answers.jsonl"
cache_mode = "{mode}"
{extra}

[trader]
position_fraction = "0.2"
min_confidence = 0.3
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `bistoury COMMAND --config CONFIG --output-dir OUT` in `dir`, with the
/// key variable set to `key` (or unset), logging at `log` to the console.
fn bistoury(
    command: &str,
    dir: &Path,
    config: &Path,
    out: &str,
    key: Option<&str>,
    log: &str,
) -> Output {
    let mut run = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"));
    run.args([command, "--config"])
        .arg(config)
        .args(["--output-dir", out])
        .current_dir(dir)
        .env_remove(KEY_VARIABLE)
        .env("RUST_LOG", log);
    if let Some(key) = key {
        run.env(KEY_VARIABLE, key);
    }
    run.output().expect("the binary runs")
}

fn backtest(dir: &Path, config: &Path, out: &str, key: Option<&str>) -> Output {
    bistoury("backtest", dir, config, out, key, "error")
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn succeeded(output: &Output) -> String {
    let text = said(output);
    assert!(output.status.success(), "{text}");
    text
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(all_files(&path)),
            false => files.push(path),
        }
    }
    files
}

#[test]
fn a_recorded_backtest_replays_byte_for_byte_without_a_server_and_records_again_for_free() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 300);
    let (port, seen) = serve(Behaviour::Reads);
    let record = config(dir, "record.toml", port, "record", true, "");
    // Every log line at the console, and the daily log file.
    let text = std::fs::read_to_string(&record).unwrap()
        + "\n[log]\nlevel = \"trace\"\ndirectory = \"logs\"\n";
    std::fs::write(&record, text).unwrap();
    let recorded = bistoury("backtest", dir, &record, "recorded", Some(SECRET), "trace");
    let console = succeeded(&recorded);
    assert!(
        !all_files(&dir.join("recorded/logs")).is_empty(),
        "a log file"
    );
    let asked = seen.lock().unwrap().len();
    // 300 bars, 12 before the first question, then every 8 bars (and on
    // disagreements): dozens of questions.
    assert!(asked >= 30, "{asked} questions");
    for (auth, body) in seen.lock().unwrap().iter() {
        assert_eq!(auth, &format!("Bearer {SECRET}"));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["model"], "stub-model");
        assert_eq!(body["temperature"], 0);
    }
    assert!(
        console.contains("model:     stub-model at http://127.0.0.1:")
            && console.contains("budget 200 calls and 200000 tokens"),
        "the run names its model and budget: {console}"
    );
    assert!(
        console.contains(&format!("model cost: {asked} calls")),
        "{console}"
    );
    // The key reached the server and nothing else.
    assert!(!console.contains(SECRET), "the key in the console");
    for file in all_files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "the key in {}",
            file.display()
        );
    }
    let figures = report(&dir.join("recorded"));
    let model = &figures["model"];
    assert_eq!(model["questions"], asked as u64);
    assert_eq!(model["answers"], asked as u64);
    assert_eq!(model["tokens"], 440 * asked as u64);
    // The model's words are in the trade log where it spoke.
    let trades = std::fs::read_to_string(dir.join("recorded/trades.csv")).unwrap();
    assert!(
        trades.contains("; model: long 0.90, closes went from")
            || trades.contains("; model: short 0.90, closes went from"),
        "{trades}"
    );

    // Replay: no key, and no call to the server (the same URL, for the
    // same configuration but its cache mode).
    let replay = std::fs::read_to_string(&record)
        .unwrap()
        .replace("cache_mode = \"record\"", "cache_mode = \"replay\"");
    std::fs::write(dir.join("replay.toml"), replay).unwrap();
    let replay = dir.join("replay.toml");
    let replayed = succeeded(&backtest(dir, &replay, "replayed", None));
    assert!(
        replayed.contains("model cost: 0 calls, 0 tokens"),
        "{replayed}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        asked,
        "the replay asked nothing"
    );
    for file in ["report.json", "trades.csv"] {
        assert_eq!(
            std::fs::read(dir.join("recorded").join(file)).unwrap(),
            std::fs::read(dir.join("replayed").join(file)).unwrap(),
            "{file} differs between the recording and its replay"
        );
    }
    // `bistoury run` (queued bus, in lockstep) trades as the backtest did.
    let queued = bistoury("run", dir, &replay, "run-replayed", None, "error");
    let queued = succeeded(&queued);
    assert!(
        queued.contains("model:     stub-model at ")
            && queued.contains("budget 200 calls and 200000 tokens")
            && queued.contains("answers replayed from"),
        "{queued}"
    );
    assert_eq!(
        std::fs::read(dir.join("recorded/trades.csv")).unwrap(),
        std::fs::read(dir.join("run-replayed/trades.csv")).unwrap(),
        "run trades as backtest with the model's answers"
    );
    // Replayed again: the same bytes again.
    succeeded(&backtest(dir, &replay, "replayed-again", None));
    assert_eq!(
        std::fs::read(dir.join("replayed/report.json")).unwrap(),
        std::fs::read(dir.join("replayed-again/report.json")).unwrap()
    );
    // Recording again asks nothing: every question has its answer.
    let again = succeeded(&backtest(dir, &record, "recorded-again", Some(SECRET)));
    assert!(again.contains("model cost: 0 calls"), "{again}");
    assert_eq!(seen.lock().unwrap().len(), asked, "no new question");
    assert_eq!(
        std::fs::read(dir.join("recorded/report.json")).unwrap(),
        std::fs::read(dir.join("recorded-again/report.json")).unwrap()
    );

    // Another prompt (more history shown) is a question the recording
    // lacks: the replay stops and says which.
    let other = config(dir, "other.toml", 9, "replay", true, "");
    let text = std::fs::read_to_string(&other)
        .unwrap()
        .replace("history_bars = 12", "history_bars = 13");
    std::fs::write(&other, text).unwrap();
    let missed = backtest(dir, &other, "missed", None);
    let text = said(&missed);
    assert!(!missed.status.success(), "{text}");
    assert!(
        text.contains("no answer for model \"stub-model\" and prompt")
            && text.contains("record it first"),
        "{text}"
    );
    assert!(
        !dir.join("missed/report.json").exists(),
        "no report from a failed replay"
    );
}

#[test]
fn a_model_that_fails_is_busy_slow_or_answers_nonsense_leaves_the_technical_trades() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 200);
    // The technical strategies alone.
    let alone = config(dir, "alone.toml", 9, "live", false, "");
    succeeded(&backtest(dir, &alone, "alone", None));
    let technical = std::fs::read(dir.join("alone/trades.csv")).unwrap();
    assert!(
        technical.iter().filter(|b| **b == b'\n').count() > 3,
        "the technical strategies trade"
    );
    for (behaviour, name, counted) in [
        (Behaviour::Fails, "fails", "failed"),
        (Behaviour::Slow, "slow", "failed"),
        (Behaviour::Malformed, "malformed", "refused"),
        (Behaviour::Busy, "busy", "failed"),
        (Behaviour::WrongShape, "wrong-shape", "refused"),
        (Behaviour::NoChoice, "no-choice", "refused"),
    ] {
        let (port, seen) = serve(behaviour);
        let extra = "retries = 1\nmin_interval_ms = 0";
        let live = config(dir, &format!("{name}.toml"), port, "live", true, extra);
        let output = succeeded(&backtest(dir, &live, name, Some(SECRET)));
        let traded = std::fs::read(dir.join(name).join("trades.csv")).unwrap();
        assert!(
            traded == technical,
            "{name}: the trades differ from the technical strategies' alone\n{output}"
        );
        let model = &report(&dir.join(name))["model"];
        let questions = model["questions"].as_u64().unwrap();
        assert!(questions >= 15, "{name}: {model}");
        assert_eq!(model[counted], questions, "{name}: {model}");
        assert_eq!(model["answers"], 0, "{name}: {model}");
        let calls = seen.lock().unwrap().len() as u64;
        match behaviour {
            // HTTP 500 and 429 are retried once: two calls a question.
            Behaviour::Fails | Behaviour::Busy => assert_eq!(calls, 2 * questions, "{name}"),
            _ => assert_eq!(calls, questions, "{name}"),
        }
    }
}

#[test]
fn the_budget_bounds_the_calls_and_the_rest_is_technical() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 200);
    let (port, seen) = serve(Behaviour::Reads);
    let capped = config(dir, "capped.toml", port, "record", true, "max_calls = 5");
    let output = succeeded(&backtest(dir, &capped, "capped", Some(SECRET)));
    assert_eq!(seen.lock().unwrap().len(), 5, "{output}");
    let model = &report(&dir.join("capped"))["model"];
    assert_eq!(model["answers"], 5);
    assert!(model["over_budget"].as_u64().unwrap() > 5, "{model}");
    // A replay of a recording that ran out of budget gives its figures.
    let replay = config(dir, "replay.toml", port, "replay", true, "max_calls = 5");
    succeeded(&backtest(dir, &replay, "replayed", None));
    assert_eq!(
        std::fs::read(dir.join("capped/report.json")).unwrap(),
        std::fs::read(dir.join("replayed/report.json")).unwrap()
    );
}

#[test]
fn a_missing_key_or_a_distributed_run_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 50);
    let live = config(dir, "live.toml", 9, "live", true, "");
    let refused = backtest(dir, &live, "out", None);
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(
        said(&refused).contains(&format!(
            "signals.llm.api_key_env: the environment variable {KEY_VARIABLE} is not set"
        )),
        "{}",
        said(&refused)
    );
    let validate = |file: &Path, key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"));
        command
            .arg("validate-config")
            .arg(file)
            .env_remove(KEY_VARIABLE);
        if let Some(key) = key {
            command.env(KEY_VARIABLE, key);
        }
        command.output().unwrap()
    };
    assert_eq!(validate(&live, None).status.code(), Some(2));
    assert!(validate(&live, Some(SECRET)).status.success());
    let replay = config(dir, "replay.toml", 9, "replay", true, "");
    let missing = validate(&replay, None);
    assert!(
        said(&missing).contains("answers.jsonl does not exist"),
        "{}",
        said(&missing)
    );
    let text = std::fs::read_to_string(&live).unwrap() + "\n[bus]\ntransport = \"nats\"\n";
    std::fs::write(dir.join("nats.toml"), text).unwrap();
    let distributed = validate(&dir.join("nats.toml"), Some(SECRET));
    assert!(
        said(&distributed).contains("signals.llm: the model strategy runs in process"),
        "{}",
        said(&distributed)
    );
    // The key from a file: its first line, sent in the header.
    let (port, seen) = serve(Behaviour::Reads);
    std::fs::write(dir.join("key.txt"), format!("{SECRET}\n")).unwrap();
    let text = std::fs::read_to_string(config(dir, "file.toml", port, "live", true, ""))
        .unwrap()
        .replace(
            &format!("api_key_env = \"{KEY_VARIABLE}\""),
            "api_key_file = \"key.txt\"",
        );
    std::fs::write(dir.join("file.toml"), text).unwrap();
    let from_file = backtest(dir, &dir.join("file.toml"), "from-file", None);
    assert!(!said(&from_file).contains(SECRET));
    succeeded(&from_file);
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(seen
        .iter()
        .all(|(auth, _)| auth == &format!("Bearer {SECRET}")));
    // The section is off unless enabled: the default never asks a model.
    let off = config(dir, "off.toml", 9, "replay", false, "");
    assert!(validate(&off, None).status.success());
}

#[test]
fn the_example_config_records_then_replays_as_its_comments_say() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../orchestrator/examples/llm_model.toml");
    let (port, seen) = serve(Behaviour::Reads);
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let run = |mode: Option<&str>, key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"));
        command
            .args(["backtest", "--config"])
            .arg(&example)
            .current_dir(dir)
            .env_remove("OPENAI_API_KEY")
            .env("BISTOURY__SIGNALS__LLM__BASE_URL", &base_url)
            .env("RUST_LOG", "error");
        if let Some(mode) = mode {
            command.env("BISTOURY__SIGNALS__LLM__CACHE_MODE", mode);
        }
        if let Some(key) = key {
            command.env("OPENAI_API_KEY", key);
        }
        command.output().unwrap()
    };
    let recorded = succeeded(&run(None, Some(SECRET)));
    let asked = seen.lock().unwrap().len();
    // Three markets, 2,000 bars, every 60 bars once 20 are seen: 33 each.
    assert_eq!(asked, 3 * 33, "{recorded}");
    let answers = dir.join("bistoury-llm/llm-answers.jsonl");
    assert_eq!(
        std::fs::read_to_string(&answers).unwrap().lines().count(),
        asked
    );
    let report = std::fs::read(dir.join("bistoury-llm/report.json")).unwrap();
    let replayed = succeeded(&run(Some("replay"), None));
    assert!(replayed.contains("model cost: 0 calls"), "{replayed}");
    assert_eq!(seen.lock().unwrap().len(), asked);
    assert_eq!(
        std::fs::read(dir.join("bistoury-llm/report.json")).unwrap(),
        report
    );
}
