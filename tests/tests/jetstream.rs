//! The reliable modes over NATS: JetStream streams and durable consumers,
//! against a real `nats-server -js` started here (its store in a temp dir)
//! and killed in the middle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::agent::supervision::AgentSpec;
use bus_core::agent::Agent;
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::nats::jetstream::JetStreamSettings;
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::runtime::StopSignal;
use bus_core::Outbox;
use bus_core::{
    AgentId, DeliveryMode, Envelope, HandlerResult, MessageId, Payload, Topic, TopicPattern,
};
use rust_decimal::Decimal;

mod support;
use support::{NatsCluster, NatsServer};

fn settings(server: &NatsServer, prefix: &str) -> NatsSettings {
    settings_for(server.url(), prefix)
}

fn settings_for(url: String, prefix: &str) -> NatsSettings {
    NatsSettings {
        url,
        prefix: prefix.into(),
        token: None,
        when_disconnected: Default::default(),
        wire_format: Default::default(),
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

/// Records every message it handles: id -> times handled; with `echo`,
/// answers each on `data.echo.BTC` (correlated), so that its deliveries
/// are settled only once the answer is stored.
struct Recorder {
    id: AgentId,
    pattern: &'static str,
    handled: Handled,
    echo: bool,
}

impl Agent for Recorder {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new(self.pattern).unwrap()]
    }
    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        *self.handled.lock().unwrap().entry(envelope.id).or_default() += 1;
        if self.echo {
            out.publish(
                Envelope::new(
                    self.id.clone(),
                    Topic::new("data.echo.BTC").unwrap(),
                    envelope.payload().clone(),
                )
                .with_correlation_id(envelope.id)
                .with_delivery_mode(DeliveryMode::AtLeastOnce),
            );
        }
        Ok(())
    }
}

/// Times each message was handled.
type Handled = Arc<Mutex<BTreeMap<MessageId, u32>>>;

/// Waits until every one of `ids` has been handled; after `limit`, fails
/// saying how many of them never were (`what`).
async fn wait_until_handled(handled: &Handled, ids: &[MessageId], limit: Duration, what: &str) {
    let started = Instant::now();
    loop {
        let missing = {
            let handled = handled.lock().unwrap();
            ids.iter().filter(|id| !handled.contains_key(id)).count()
        };
        if missing == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{missing} of {} {what}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_recorder(
    settings: &NatsSettings,
    echo: bool,
) -> (
    Handled,
    StopSignal,
    tokio::task::JoinHandle<bus_core::nats::NatsRunStats>,
) {
    let handled = Arc::new(Mutex::new(BTreeMap::new()));
    let recorder = Recorder {
        id: AgentId::new("recorder"),
        pattern: "data.price.>",
        handled: handled.clone(),
        echo,
    };
    let (stop, task) = start_agent(settings, recorder, None);
    (handled, stop, task)
}

/// Runs `agent` on its own connection; `subscribed`, if given, is told
/// once its consumers exist.
fn start_agent(
    settings: &NatsSettings,
    agent: impl Agent + 'static,
    subscribed: Option<tokio::sync::oneshot::Sender<()>>,
) -> (
    StopSignal,
    tokio::task::JoinHandle<bus_core::nats::NatsRunStats>,
) {
    let (stop, settings) = (StopSignal::new(), settings.clone());
    let stop_agent = stop.clone();
    let task = tokio::spawn(async move {
        let bus = NatsBus::connect(&settings).await.unwrap();
        let (_agent, stats) = bus_core::nats::run_agent(
            AgentSpec::new(Box::new(agent)),
            &bus,
            stop_agent,
            subscribed,
        )
        .await
        .unwrap();
        stats
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_loses_no_acknowledged_message_and_exactly_once_stays_once() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start_jetstream(store.path());
    let settings = settings(&server, "js1");
    // The recorder answers every message into the same family: its
    // deliveries are acknowledged only once their answers are stored, so
    // across the server's restart it holds handled, unsettled deliveries
    // while their redelivered copies arrive.
    let (handled, stop_recorder, recorder) = start_recorder(&settings, true);
    let publisher = NatsBus::connect(&settings).await.unwrap();
    // Let the consumer exist before publishing (interest retention keeps
    // messages for the consumers there when they arrive).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut published = Published::default();
    published.prices(&publisher, 0..1200).await;
    // SIGKILL, half a second without a server, a fresh process on the
    // same port and store.
    tokio::task::block_in_place(|| server.restart_after(Duration::from_millis(500)));
    published.prices(&publisher, 1200..3000).await;
    assert!(published.republished > 100);
    // Well within 20 s: the consumer pulls afresh once its client has
    // reconnected, and the acknowledgements the dead server owed are not
    // waited for (stalls of 30-60 s under load before).
    published
        .check_handled(&handled, Duration::from_secs(20), stop_recorder, recorder)
        .await;
}

/// What a test published: every id acknowledged by the stream, and the
/// exactly-once ones.
#[derive(Default)]
struct Published {
    acknowledged: Vec<MessageId>,
    exactly_once: BTreeSet<MessageId>,
    republished: usize,
}

impl Published {
    /// Publishes prices `range`, at-least-once and exactly-once in turn;
    /// every tenth exactly-once one twice, as a publisher retrying after a
    /// lost acknowledgement would (the stream drops the copy). Each publish
    /// blocks (retrying with the same Nats-Msg-Id) while no server takes it.
    async fn prices(&mut self, publisher: &NatsBus, range: std::ops::Range<i64>) {
        let stop = StopSignal::new();
        for n in range {
            let mode = match n % 2 {
                0 => DeliveryMode::AtLeastOnce,
                _ => DeliveryMode::ExactlyOnce,
            };
            let envelope = price(n, mode);
            publisher.publish(&envelope, &stop).await.unwrap();
            self.acknowledged.push(envelope.id);
            if mode == DeliveryMode::ExactlyOnce {
                self.exactly_once.insert(envelope.id);
                if n % 10 == 1 {
                    publisher.publish(&envelope, &stop).await.unwrap();
                    self.republished += 1;
                }
            }
        }
    }

    /// Waits (at most `limit`) until every acknowledged message was
    /// handled, lets late redeliveries arrive, stops the recorder, and
    /// checks no exactly-once message was handled twice.
    async fn check_handled(
        &self,
        handled: &Handled,
        limit: Duration,
        stop_recorder: StopSignal,
        recorder: tokio::task::JoinHandle<bus_core::nats::NatsRunStats>,
    ) {
        wait_until_handled(
            handled,
            &self.acknowledged,
            limit,
            "acknowledged messages never reached the consumer",
        )
        .await;
        // Acks lost with a dead server bring redeliveries, a little later.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop_recorder.stop();
        let stats = recorder.await.unwrap();
        let handled = handled.lock().unwrap();
        for id in &self.exactly_once {
            assert_eq!(handled[id], 1, "exactly-once message {id} handled twice");
        }
        assert_eq!(
            handled.len(),
            self.acknowledged.len(),
            "nothing unexpected handled"
        );
        eprintln!(
            "handled {} messages, {} at-least-once repeats, {} exactly-once duplicates suppressed",
            handled.len(),
            handled.values().map(|&n| n as u64 - 1).sum::<u64>(),
            stats.duplicates
        );
    }
}

/// A three-node cluster, streams kept on all three: one node killed mid-run,
/// then, once it is back, another. Publishers and consumers fail over to
/// the nodes left; nothing acknowledged is lost, no exactly-once message
/// is handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_losing_one_node_then_another_loses_no_acknowledged_message() {
    let _machine = support::alone().await;
    let store = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(3, store.path()).await;
    let mut settings = settings_for(cluster.urls(), "cl1");
    if let Some(js) = &mut settings.jetstream {
        js.replicas = 3;
    }
    let (handled, stop_recorder, recorder) = start_recorder(&settings, true);
    let publisher = NatsBus::connect(&settings).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stream = publisher
        .reliable()
        .unwrap()
        .context()
        .get_stream("CL1_DATA")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .num_replicas;
    assert_eq!(stream, 3, "the stream is kept on every node");

    let mut published = Published::default();
    published.prices(&publisher, 0..800).await;
    cluster.nodes[0].kill();
    published.prices(&publisher, 800..1400).await;
    tokio::task::block_in_place(|| cluster.nodes[0].respawn());
    cluster.wait_until_ready().await;
    cluster.wait_until_caught_up().await;
    published.prices(&publisher, 1400..2000).await;
    cluster.nodes[1].kill();
    published.prices(&publisher, 2000..3000).await;
    published
        .check_handled(&handled, Duration::from_secs(60), stop_recorder, recorder)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_messages_wait_for_a_stopped_agent_keeps_them() {
    let _machine = support::beside_others().await;
    // One family stream, two agents' durable consumers on different
    // subjects of it: the recorder keeps up with prices (acknowledging
    // them), while the quotes wait for an agent that is stopped. After a
    // SIGKILL of the server, every quote must still be there for it.
    // nats-server 2.9.10 fails this (it dropped most waiting quotes on
    // its restart: interest retention judged by the other consumer's ack
    // floor); 2.10.25 and 2.12.8 pass; `scripts/test` installs 2.12.8 when
    // the server found is older than 2.10.
    let store = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start_jetstream(store.path());
    let settings = settings(&server, "js5");
    let late = || {
        let handled: Handled = Arc::new(Mutex::new(BTreeMap::new()));
        let agent = Recorder {
            id: AgentId::new("late"),
            pattern: "data.quote.>",
            handled: handled.clone(),
            echo: false,
        };
        (handled, agent)
    };
    // The late agent's durable consumer comes into being, then the agent stops.
    let (_, agent) = late();
    let (subscribed, consumer_exists) = tokio::sync::oneshot::channel();
    let (stop_late, late_task) = start_agent(&settings, agent, Some(subscribed));
    consumer_exists.await.unwrap();
    stop_late.stop();
    late_task.await.unwrap();

    let (prices_handled, stop_recorder, recorder) = start_recorder(&settings, false);
    let publisher = NatsBus::connect(&settings).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stop = StopSignal::new();
    let (mut prices, mut quotes) = (Vec::new(), Vec::new());
    for n in 0..1000 {
        let price = price(n, DeliveryMode::AtLeastOnce);
        let mut quote = price.clone();
        quote.id = MessageId::new();
        quote.topic = Topic::new("data.quote.BTC").unwrap();
        publisher.publish(&price, &stop).await.unwrap();
        publisher.publish(&quote, &stop).await.unwrap();
        prices.push(price.id);
        quotes.push(quote.id);
    }
    wait_until_handled(
        &prices_handled,
        &prices,
        Duration::from_secs(30),
        "prices not handled",
    )
    .await;
    // Give the recorder's acks time to reach the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_recorder.stop();
    recorder.await.unwrap();

    tokio::task::block_in_place(|| server.restart_after(Duration::from_millis(300)));

    let (handled, agent) = late();
    let (stop_late, late_task) = start_agent(&settings, agent, None);
    wait_until_handled(
        &handled,
        &quotes,
        Duration::from_secs(20),
        "acknowledged quotes lost with the server's SIGKILL",
    )
    .await;
    stop_late.stop();
    late_task.await.unwrap();
    assert_eq!(handled.lock().unwrap().len(), quotes.len());
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

/// The stream of the `data` family under `prefix`, with a durable
/// consumer that reads nothing: interest retention keeps messages only for
/// consumers that exist, so the stream's count says what was stored.
async fn kept_data_stream(bus: &NatsBus, prefix: &str) -> async_nats::jetstream::stream::Stream {
    let context = bus.reliable().unwrap().context().clone();
    let stream_name = bus_core::nats::jetstream::stream_name(prefix, "data");
    let stream = context.get_stream(&stream_name).await.unwrap();
    stream
        .get_or_create_consumer(
            "keep",
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("keep".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stream
}

/// A publisher retrying after a lost acknowledgement sends the same
/// envelope again: the stream stores it once when the publish carries its
/// id (`Nats-Msg-Id`), as exactly-once publishes always do and
/// at-least-once ones do unless `deduplicate_publishes` is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_envelope_is_stored_once_unless_at_least_once_goes_without_its_id() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let stop = StopSignal::new();
    for (deduplicate, prefix, expected) in [(true, "dedup_on", 2), (false, "dedup_off", 3)] {
        let mut settings = settings(&server, prefix);
        if let Some(js) = settings.jetstream.as_mut() {
            js.deduplicate_publishes = deduplicate;
        }
        let bus = NatsBus::connect(&settings).await.unwrap();
        let mut stream = kept_data_stream(&bus, prefix).await;
        let at_least_once = price(1, DeliveryMode::AtLeastOnce);
        let exactly_once = price(2, DeliveryMode::ExactlyOnce);
        for envelope in [&at_least_once, &at_least_once, &exactly_once, &exactly_once] {
            bus.publish(envelope, &stop).await.unwrap();
        }
        let stored = stream.info().await.unwrap().state.messages;
        assert_eq!(
            stored, expected,
            "deduplicate_publishes = {deduplicate}: two envelopes each published twice"
        );
    }
}

/// A publish the server took down with it unacknowledged is sent again as
/// soon as the client has reconnected, not after the 5 s the client waits
/// for an acknowledgement (which the old server never sends), and stored
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_killed_server_never_acknowledged_is_sent_again_on_reconnection() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start_jetstream(store.path());
    let settings = settings(&server, "js_resend");
    let bus = NatsBus::connect(&settings).await.unwrap();
    let mut stream = kept_data_stream(&bus, "js_resend").await;

    // The frozen server takes the publish off the socket's hands but
    // never reads it; then it dies and a fresh one takes its place.
    server.pause();
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        let envelope = price(1, DeliveryMode::AtLeastOnce);
        bus.publish(&envelope, &StopSignal::new()).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| server.restart_after(Duration::ZERO));
    publishing.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "confirmed {took:?} after publishing: the publish waited for the dead server's acknowledgement"
    );
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

/// Agents start together and each makes sure its families' streams exist:
/// however their looks and creates interleave, every one connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_connecting_at_once_all_find_their_streams() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    for round in 0..40 {
        let mut settings = settings(&server, &format!("race{round}"));
        if let Some(js) = settings.jetstream.as_mut() {
            js.families = vec!["data".into(), "signal".into(), "trade".into()];
        }
        let connects: Vec<_> = (0..8)
            .map(|_| {
                let settings = settings.clone();
                tokio::spawn(async move { NatsBus::connect(&settings).await.map(|_| ()) })
            })
            .collect();
        for connect in connects {
            connect
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_redelivered_with_backoff_then_dead_lettered_after_max_deliver() {
    let _machine = support::beside_others().await;
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

/// Doubles prices onto `derived.price.<SYM>`; the first delivery of every
/// fifth price fails (so both transports must redeliver).
struct Doubler {
    id: AgentId,
    failed_once: BTreeSet<MessageId>,
}

impl Agent for Doubler {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("data.price.>").unwrap()]
    }
    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        let Payload::DataPriceUpdate(p) = envelope.payload() else {
            return Ok(());
        };
        if p.timestamp_ms % 5 == 0 && self.failed_once.insert(envelope.id) {
            return Err(bus_core::HandlerError::new("first try fails"));
        }
        let doubled = PriceUpdate::new(PriceUpdateFields {
            symbol: p.symbol.clone(),
            price: p.price * Decimal::TWO,
            timestamp_ms: p.timestamp_ms,
        })
        .unwrap();
        out.publish(Envelope::new(
            self.id.clone(),
            Topic::new(format!("derived.price.{}", p.symbol)).unwrap(),
            Payload::DataPriceUpdate(doubled),
        ));
        Ok(())
    }
}

fn doubler() -> AgentSpec {
    AgentSpec::new(Box::new(Doubler {
        id: AgentId::new("doubler"),
        failed_once: BTreeSet::new(),
    }))
}

fn timestamps_and_prices(envelopes: &[Envelope]) -> Vec<(i64, Decimal)> {
    let mut seen: Vec<(i64, Decimal)> = envelopes
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::DataPriceUpdate(p) => Some((p.timestamp_ms, p.price)),
            _ => None,
        })
        .collect();
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_agent_runs_unchanged_on_either_transport() {
    let _machine = support::beside_others().await;
    use bus_core::runtime::transport::{run_agent, InProcess};
    let inputs: Vec<Envelope> = (1..=40)
        .map(|n| price(n, DeliveryMode::AtLeastOnce))
        .collect();
    let expected: Vec<(i64, Decimal)> = (1..=40)
        .map(|n| (n, Decimal::new(1000 + n, 0) * Decimal::TWO))
        .collect();

    // In process: the queued bus, redelivery by the bus's retry policy.
    let bus = bus_core::MessageBus::new();
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let seen = outputs.clone();
    bus.subscribe(
        "derived.>",
        bus_core::Handler::blocking(move |e| {
            seen.lock().unwrap().push(e.clone());
            Ok(())
        }),
        bus_core::bus::SubscribeOptions::named("watch"),
    )
    .unwrap();
    let transport = InProcess::new(bus.clone());
    let stop = StopSignal::new();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let agent = {
        let stop = stop.clone();
        tokio::spawn(async move { run_agent(doubler(), &transport, stop, Some(ready)).await })
    };
    subscribed.await.unwrap();
    for input in &inputs {
        bus.publish(input.clone()).await.unwrap();
    }
    let started = Instant::now();
    while outputs.lock().unwrap().len() < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "in-process outputs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.stop();
    let (_, in_process) = agent.await.unwrap().unwrap();
    assert_eq!(timestamps_and_prices(&outputs.lock().unwrap()), expected);
    assert_eq!(in_process.received, 48, "40 prices + 8 redeliveries");

    // NATS, with `data` on JetStream: redelivery by the consumer.
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let settings = settings(&server, "tr");
    let nats = NatsBus::connect(&settings).await.unwrap();
    let mut derived = nats.client().subscribe("tr.derived.>").await.unwrap();
    nats.client().flush().await.unwrap();
    let stop = StopSignal::new();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let agent = {
        let (nats, stop) = (nats.clone(), stop.clone());
        tokio::spawn(
            async move { bus_core::nats::run_agent(doubler(), &nats, stop, Some(ready)).await },
        )
    };
    subscribed.await.unwrap();
    nats.publish_many(&inputs, &StopSignal::new())
        .await
        .unwrap();
    let mut outputs = Vec::new();
    while outputs.len() < 40 {
        let message = tokio::time::timeout(
            Duration::from_secs(20),
            futures_util::StreamExt::next(&mut derived),
        )
        .await
        .expect("NATS outputs")
        .unwrap();
        outputs.push(Envelope::from_json(&message.payload).unwrap());
    }
    stop.stop();
    let (_, over_nats) = agent.await.unwrap().unwrap();
    assert_eq!(timestamps_and_prices(&outputs), expected);
    assert_eq!(over_nats.received, 48, "40 prices + 8 redeliveries");
    assert_eq!(over_nats.redeliveries_requested, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_away_core_publishes_buffer_or_block_per_policy() {
    let _machine = support::beside_others().await;
    use bus_core::nats::WhenDisconnected;
    let mut server = NatsServer::start();
    let connect = |policy: WhenDisconnected| {
        let settings = NatsSettings {
            url: server.url(),
            prefix: "wd".into(),
            token: None,
            jetstream: None,
            when_disconnected: policy,
            wire_format: Default::default(),
        };
        async move { NatsBus::connect(&settings).await.unwrap() }
    };
    let buffering = connect(WhenDisconnected::Buffer).await;
    let blocking = connect(WhenDisconnected::Block).await;
    let connected =
        |bus: &NatsBus| bus.client().connection_state() == async_nats::connection::State::Connected;

    tokio::task::block_in_place(|| server.kill());
    let started = Instant::now();
    while connected(&buffering) || connected(&blocking) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "disconnection unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Buffer: handed to the client at once; the agent carries on.
    let stop = StopSignal::new();
    tokio::time::timeout(
        Duration::from_secs(1),
        buffering.publish(&price(1, DeliveryMode::FireAndForget), &stop),
    )
    .await
    .expect("a buffering publish returns while the server is away")
    .unwrap();
    // Block: waits for the reconnection.
    let waiting = {
        let (blocking, stop) = (blocking.clone(), stop.clone());
        tokio::spawn(async move {
            blocking
                .publish(&price(2, DeliveryMode::FireAndForget), &stop)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a blocking publish waits for the server"
    );
    tokio::task::block_in_place(|| server.respawn());
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the blocking publish goes once reconnected")
        .unwrap()
        .unwrap();
    assert!(connected(&blocking));

    // Both resume: what they publish now arrives.
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut seen = watcher.subscribe("wd.data.>").await.unwrap();
    watcher.flush().await.unwrap();
    let started = Instant::now();
    while !connected(&buffering) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no reconnection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Core NATS promises nothing for a message caught in a connection's
    // change (one such was once not seen here, on a loaded machine): each
    // bus publishes the same envelope until the watcher sees it.
    for bus in [&buffering, &blocking] {
        let envelope = price(3, DeliveryMode::FireAndForget);
        let started = Instant::now();
        'seen: loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nothing published after the reconnection arrived"
            );
            bus.publish(&envelope, &stop).await.unwrap();
            bus.client().flush().await.unwrap();
            while let Ok(Some(message)) = tokio::time::timeout(
                Duration::from_millis(500),
                futures_util::StreamExt::next(&mut seen),
            )
            .await
            {
                if Envelope::from_wire(&message.payload).is_ok_and(|e| e.id == envelope.id) {
                    break 'seen;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_in_a_jetstream_family_is_dead_lettered_and_terminated() {
    let _machine = support::beside_others().await;
    let store = tempfile::tempdir().unwrap();
    let server = NatsServer::start_jetstream(store.path());
    let settings = settings(&server, "js3");
    let (handled, stop, recorder) = start_recorder(&settings, false);
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut dead = raw.subscribe("js3.system.dead_letter").await.unwrap();
    raw.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Published straight into the stream with a plain client, as another
    // program might: not JSON, an unknown type, then a good one.
    let js = async_nats::jetstream::new(raw.clone());
    for body in [
        b"{not json".to_vec(),
        br#"{"type":"data.nonsense","id":"x"}"#.to_vec(),
        price(7, DeliveryMode::AtLeastOnce).to_json_bytes(),
    ] {
        js.publish("js3.data.price.BTC", body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for expected in ["{not json", "data.nonsense"] {
        let letter = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut dead),
        )
        .await
        .expect("a dead letter")
        .unwrap();
        let letter: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
        assert!(
            letter["payload"]["raw"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{letter}"
        );
        assert!(!letter["payload"]["error"].as_str().unwrap().is_empty());
    }
    let started = Instant::now();
    while handled.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the good one is handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Terminated, not redelivered: nothing is left in the stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut stream = js.get_stream("JS3_DATA").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    stop.stop();
    let stats = recorder.await.unwrap();
    assert_eq!(stats.undecodable, 2, "{stats:?}");
    assert_eq!(stats.received, 1, "{stats:?}");
}
