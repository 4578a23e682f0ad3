//! The reliable modes over NATS: JetStream streams and durable consumers,
//! against a real `nats-server -js` started here (its store in a temp dir)
//! and killed in the middle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::agent::Agent;
use bus_core::driver::StopSignal;
use bus_core::inline::Outbox;
use bus_core::jetstream::JetStreamSettings;
use bus_core::message::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::supervision::AgentSpec;
use bus_core::{
    AgentId, DeliveryMode, Envelope, HandlerResult, MessageId, Payload, Topic, TopicPattern,
};
use rust_decimal::Decimal;

mod support;
use support::NatsServer;

fn settings(server: &NatsServer, prefix: &str) -> NatsSettings {
    NatsSettings {
        url: server.url(),
        prefix: prefix.into(),
        token: None,
        jetstream: Some(JetStreamSettings {
            families: vec!["data".into()],
            ack_wait: Duration::from_secs(1),
            max_deliver: 1000,
            backoff: vec![Duration::from_millis(50)],
            ..Default::default()
        }),
    }
}

fn price(n: i64, mode: DeliveryMode) -> Envelope {
    let payload = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::new(1000 + n, 0),
        timestamp_ms: n,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("feed"),
        Topic::new("data.price.BTC").unwrap(),
        Payload::DataPriceUpdate(payload),
    )
    .with_delivery_mode(mode)
}

/// Records every message it handles: id -> times handled.
struct Recorder {
    id: AgentId,
    handled: Handled,
}

impl Agent for Recorder {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("data.price.>").unwrap()]
    }
    fn on_message(&mut self, envelope: &Envelope, _out: &mut Outbox) -> HandlerResult {
        *self.handled.lock().unwrap().entry(envelope.id).or_default() += 1;
        Ok(())
    }
}

/// Times each message was handled.
type Handled = Arc<Mutex<BTreeMap<MessageId, u32>>>;

fn start_recorder(
    settings: &NatsSettings,
) -> (
    Handled,
    StopSignal,
    tokio::task::JoinHandle<bus_core::nats::NatsRunStats>,
) {
    let handled = Arc::new(Mutex::new(BTreeMap::new()));
    let recorder = Recorder {
        id: AgentId::new("recorder"),
        handled: handled.clone(),
    };
    let (stop, settings) = (StopSignal::new(), settings.clone());
    let stop_agent = stop.clone();
    let task = tokio::spawn(async move {
        let bus = NatsBus::connect(&settings).await.unwrap();
        let (_agent, stats) =
            bus_core::nats::run_agent(AgentSpec::new(Box::new(recorder)), &bus, stop_agent, None)
                .await
                .unwrap();
        stats
    });
    (handled, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_loses_no_acknowledged_message_and_exactly_once_stays_once() {
    let store = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start_jetstream(store.path());
    let settings = settings(&server, "js1");
    let (handled, stop_recorder, recorder) = start_recorder(&settings);
    let publisher = NatsBus::connect(&settings).await.unwrap();
    // Let the consumer exist before publishing (interest retention keeps
    // messages for the consumers there when they arrive).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stop = StopSignal::new();
    let (mut acknowledged, mut exactly_once) = (Vec::new(), BTreeSet::new());
    let mut republished = 0;
    for n in 0..3000 {
        if n == 1200 {
            // SIGKILL, half a second without a server, a fresh process on
            // the same port and store.
            tokio::task::block_in_place(|| server.restart_after(Duration::from_millis(500)));
        }
        let mode = if n % 2 == 0 {
            DeliveryMode::AtLeastOnce
        } else {
            DeliveryMode::ExactlyOnce
        };
        let envelope = price(n, mode);
        // Blocks (retrying with the same Nats-Msg-Id) while the server is away.
        publisher.publish(&envelope, &stop).await.unwrap();
        acknowledged.push(envelope.id);
        if mode == DeliveryMode::ExactlyOnce {
            exactly_once.insert(envelope.id);
            if n % 10 == 1 {
                // A publisher retrying after a lost ack: the stream drops it.
                publisher.publish(&envelope, &stop).await.unwrap();
                republished += 1;
            }
        }
    }
    assert!(republished > 100);

    let started = Instant::now();
    loop {
        let missing = {
            let handled = handled.lock().unwrap();
            acknowledged
                .iter()
                .filter(|id| !handled.contains_key(id))
                .count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{missing} acknowledged messages never reached the consumer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let late redeliveries (acks lost with the server) arrive, then stop.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop_recorder.stop();
    let stats = recorder.await.unwrap();
    let handled = handled.lock().unwrap();
    for id in &exactly_once {
        assert_eq!(handled[id], 1, "exactly-once message {id} handled twice");
    }
    assert_eq!(
        handled.len(),
        acknowledged.len(),
        "nothing unexpected handled"
    );
    eprintln!(
        "handled {} messages, {} at-least-once repeats, {} exactly-once duplicates suppressed",
        handled.len(),
        handled.values().map(|&n| n as u64 - 1).sum::<u64>(),
        stats.duplicates
    );
}

/// A failing handler: each message fails `fail_times` times, then works.
struct Flaky {
    id: AgentId,
    fail_times: u32,
    attempts: Handled,
}

impl Agent for Flaky {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("data.price.>").unwrap()]
    }
    fn on_message(&mut self, envelope: &Envelope, _out: &mut Outbox) -> HandlerResult {
        let mut attempts = self.attempts.lock().unwrap();
        let n = attempts.entry(envelope.id).or_default();
        *n += 1;
        if *n <= self.fail_times {
            return Err(bus_core::HandlerError::new(format!("attempt {n} fails")));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_redelivered_with_backoff_then_dead_lettered_after_max_deliver() {
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let mut settings = settings(&server, "js2");
    if let Some(js) = settings.jetstream.as_mut() {
        js.max_deliver = 3;
    }
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut dead = watcher.subscribe("js2.system.dead_letter").await.unwrap();
    watcher.flush().await.unwrap();

    let run = |fail_times: u32| {
        let attempts = Arc::new(Mutex::new(BTreeMap::new()));
        let agent = Flaky {
            id: AgentId::new(format!("flaky{fail_times}")),
            fail_times,
            attempts: attempts.clone(),
        };
        let (stop, settings) = (StopSignal::new(), settings.clone());
        let stop_agent = stop.clone();
        let task = tokio::spawn(async move {
            let bus = NatsBus::connect(&settings).await.unwrap();
            bus_core::nats::run_agent(AgentSpec::new(Box::new(agent)), &bus, stop_agent, None)
                .await
                .unwrap()
                .1
        });
        (attempts, stop, task)
    };
    // Fails twice then works: third delivery of three succeeds.
    let (recovers, stop_recovers, recovers_task) = run(2);
    // Always fails: dead-lettered after three deliveries.
    let (hopeless, stop_hopeless, hopeless_task) = run(u32::MAX);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publisher = NatsBus::connect(&settings).await.unwrap();
    let envelope = price(1, DeliveryMode::AtLeastOnce);
    publisher
        .publish(&envelope, &StopSignal::new())
        .await
        .unwrap();

    let letter = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::StreamExt::next(&mut dead),
    )
    .await
    .expect("a dead letter within 20 s")
    .unwrap();
    let letter: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(letter["type"], "system.dead_letter");
    assert_eq!(letter["payload"]["attempts"], 3);
    assert_eq!(letter["payload"]["original"]["id"], envelope.id.to_string());
    assert!(
        letter["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("attempt 3 fails"),
        "{letter}"
    );
    let started = Instant::now();
    while recovers.lock().unwrap().get(&envelope.id) != Some(&3) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_recovers.stop();
    stop_hopeless.stop();
    let (recovered, gave_up) = (recovers_task.await.unwrap(), hopeless_task.await.unwrap());
    assert_eq!(
        recovers.lock().unwrap()[&envelope.id],
        3,
        "not handled after success"
    );
    assert_eq!(hopeless.lock().unwrap()[&envelope.id], 3, "max_deliver = 3");
    assert_eq!(recovered.redeliveries_requested, 2);
    assert_eq!(recovered.dead_lettered, 0);
    assert_eq!(gave_up.redeliveries_requested, 2);
    assert_eq!(gave_up.dead_lettered, 1);
}
