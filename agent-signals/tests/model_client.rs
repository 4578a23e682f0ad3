//! The model client against a local stub that speaks the chat-completions
//! API: good and bad answers, a slow one, HTTP 429 and 500, the budget,
//! and record then replay.

mod common;

use std::time::Duration;

use agent_signals::llm::cache::{AnswerCache, CacheMode};
use agent_signals::llm::client::{Asked, ModelClient, ModelSettings};
use bus_core::model::payload::SignalDirection;
use common::{stub, Reply, GOOD};

fn settings(url: &str) -> ModelSettings {
    ModelSettings {
        base_url: url.into(),
        model: "stub-model".into(),
        api_key: Some("sk-test-secret".into()),
        timeout: Duration::from_millis(500),
        min_interval: Duration::from_millis(1),
        max_calls: 100,
        max_tokens: 1_000_000,
        retries: 2,
    }
}

fn live() -> AnswerCache {
    AnswerCache::open(std::path::Path::new("unused"), CacheMode::Live).unwrap()
}

#[test]
fn a_good_answer_is_asked_for_with_the_key_and_the_schema_and_counted() {
    let (url, seen) = stub(vec![Reply::Answer(GOOD)]);
    let mut client = ModelClient::start(settings(&url)).unwrap();
    let asked = client.ask("market BTC ...", &mut live()).unwrap();
    let Asked::Answer(answer) = asked else {
        panic!("{asked:?}")
    };
    assert_eq!(
        (answer.direction, answer.confidence),
        (SignalDirection::Long, 0.75)
    );
    let (head, body) = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("authorization: bearer sk-test-secret"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["model"], "stub-model");
    assert_eq!(body["messages"][1]["content"], "market BTC ...");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!((client.spent().calls, client.spent().tokens), (1, 350));
    let shown = format!("{:?}", settings(&url));
    assert!(
        !shown.contains("sk-test-secret") && shown.contains("<set>"),
        "{shown}"
    );
}

#[test]
fn busy_and_failing_servers_are_retried_within_the_budget_then_given_up() {
    let (url, _) = stub(vec![
        Reply::Status(429),
        Reply::Answer(GOOD),
        Reply::Status(500),
        Reply::Status(503),
        Reply::Status(500),
    ]);
    let mut client = ModelClient::start(settings(&url)).unwrap();
    assert!(matches!(
        client.ask("one", &mut live()).unwrap(),
        Asked::Answer(_)
    ));
    assert_eq!(client.spent().calls, 2, "the 429 counted");
    let failed = client.ask("two", &mut live()).unwrap();
    assert!(
        matches!(&failed, Asked::Failed(why) if why.contains("HTTP 500")),
        "{failed:?}"
    );
    assert_eq!(
        client.spent().calls,
        5,
        "three attempts: one and two retries"
    );
    assert_eq!(client.spent().failed, 1);
}

#[test]
fn a_slow_answer_times_out_and_bad_answers_are_refusals() {
    let (url, _) = stub(vec![
        Reply::Slow(Duration::from_millis(1500)),
        Reply::Body("{not json".into()),
        Reply::Answer(r#"{"direction":"sideways","confidence":0.5,"rationale":"?"}"#),
        Reply::Body(serde_json::json!({"choices": [], "usage": {"prompt_tokens": 10}}).to_string()),
    ]);
    let mut client = ModelClient::start(settings(&url)).unwrap();
    let slow = client.ask("slow", &mut live()).unwrap();
    assert_eq!(slow, Asked::Failed("timed out".into()));
    for prompt in ["malformed", "wrong shape", "no choice"] {
        let asked = client.ask(prompt, &mut live()).unwrap();
        assert!(matches!(asked, Asked::Refused(_)), "{prompt}: {asked:?}");
    }
    assert_eq!(client.spent().refused, 3);
    assert_eq!(
        client.spent().tokens,
        350 + 10,
        "refused answers still cost tokens"
    );
}

#[test]
fn the_budget_stops_the_calls() {
    let (url, _) = stub(vec![
        Reply::Answer(GOOD),
        Reply::Answer(GOOD),
        Reply::Answer(GOOD),
    ]);
    let mut client = ModelClient::start(ModelSettings {
        max_calls: 2,
        ..settings(&url)
    })
    .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            client.ask("q", &mut live()).unwrap(),
            Asked::Answer(_)
        ));
    }
    assert_eq!(client.ask("q", &mut live()).unwrap(), Asked::OverBudget);
    let mut tokens = ModelClient::start(ModelSettings {
        max_tokens: 300,
        ..settings(&url)
    })
    .unwrap();
    assert!(matches!(
        tokens.ask("q", &mut live()).unwrap(),
        Asked::Answer(_)
    ));
    assert_eq!(
        tokens.ask("q", &mut live()).unwrap(),
        Asked::OverBudget,
        "350 tokens spent"
    );
}

#[test]
fn recorded_answers_replay_without_a_server_and_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answers.jsonl");
    let (url, _) = stub(vec![
        Reply::Answer(GOOD),
        Reply::Answer(r#"{"direction":"short","confidence":0.4,"rationale":"rolling over"}"#),
    ]);
    let mut record = AnswerCache::open(&file, CacheMode::Record).unwrap();
    let mut client = ModelClient::start(settings(&url)).unwrap();
    let first: Vec<Asked> = ["bar 1", "bar 2"]
        .iter()
        .map(|p| client.ask(p, &mut record).unwrap())
        .collect();
    drop(record);
    // No server at all now: port 9 on loopback answers nothing.
    let mut replay = AnswerCache::open(&file, CacheMode::Replay).unwrap();
    let mut offline = ModelClient::start(settings("http://127.0.0.1:9/v1")).unwrap();
    let again: Vec<Asked> = ["bar 1", "bar 2"]
        .iter()
        .map(|p| offline.ask(p, &mut replay).unwrap())
        .collect();
    assert_eq!(again, first);
    assert_eq!((offline.spent().calls, offline.spent().cached), (0, 2));
    let miss = offline.ask("bar 3", &mut replay).unwrap_err().to_string();
    assert!(miss.contains("no answer"), "{miss}");
}

#[test]
fn calls_are_spaced_by_the_least_interval() {
    let (url, _) = stub((0..3).map(|_| Reply::Answer(GOOD)).collect());
    let mut client = ModelClient::start(ModelSettings {
        min_interval: Duration::from_millis(150),
        ..settings(&url)
    })
    .unwrap();
    let started = std::time::Instant::now();
    for prompt in ["a", "b", "c"] {
        assert!(matches!(
            client.ask(prompt, &mut live()).unwrap(),
            Asked::Answer(_)
        ));
    }
    // Three calls: two waits of at least the interval between them.
    assert!(started.elapsed() >= Duration::from_millis(300));
}
