//! Core NATS through `NatsBus`, against a real `nats-server` started here:
//! what it publishes arrives whole and in order, in either wire format; an
//! agent run by `nats::run_agent` runs on a thread of its own and stops
//! when its run is dropped; everything it publishes for one message
//! leaves at once, also when it shares one thread with its connection.

use std::time::Duration;

use bus_core::agent::supervision::AgentSpec;
use bus_core::agent::Agent;
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::model::WireFormat;
use bus_core::nats::{NatsBus, NatsSettings};
use bus_core::runtime::StopSignal;
use bus_core::Outbox;
use bus_core::{AgentId, Envelope, Payload, Topic};
use bus_core::{HandlerResult, TopicPattern};
use futures_util::StreamExt;
use rust_decimal::Decimal;

mod support;
use support::NatsServer;

/// Core NATS only, subjects under `prefix`, writing `wire_format`.
fn core_settings(server: &NatsServer, prefix: &str, wire_format: WireFormat) -> NatsSettings {
    NatsSettings {
        url: server.url(),
        prefix: prefix.into(),
        token: None,
        when_disconnected: Default::default(),
        wire_format,
        jetstream: None,
    }
}

/// Runs `agent` on `bus` (`nats::run_agent`, on a task); returns once it
/// is subscribed, with the task (aborting it drops the run).
async fn start_agent(agent: AgentSpec, bus: NatsBus) -> tokio::task::JoinHandle<()> {
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let run = tokio::spawn(async move {
        let _ = bus_core::nats::run_agent(agent, &bus, StopSignal::new(), Some(ready)).await;
    });
    subscribed.await.unwrap();
    run
}

fn price(n: i64) -> Envelope {
    let symbol = ["BTC", "ETH"][n as usize % 2];
    let payload = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new(symbol).unwrap(),
        price: Decimal::new(6_512_345 + n, 2),
        timestamp_ms: n,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("feed"),
        Topic::new(format!("data.price.{symbol}")).unwrap(),
        Payload::DataPriceUpdate(payload),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publications_arrive_whole_and_in_order_in_either_format() {
    let server = NatsServer::start();
    let stop = StopSignal::new();
    for format in [WireFormat::Json, WireFormat::Binary] {
        let settings = core_settings(&server, "many", format);
        let bus = NatsBus::connect(&settings).await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut arrivals = client.subscribe("many.data.>").await.unwrap();
        client.flush().await.unwrap();
        // Several blocks of the publisher's encode buffer (64 KiB) worth,
        // on two topics, one at a time and in batches.
        let sent: Vec<Envelope> = (0..3000).map(price).collect();
        let (singly, batched) = sent.split_at(1000);
        for envelope in singly {
            bus.publish(envelope, &stop).await.unwrap();
        }
        for batch in batched.chunks(7) {
            bus.publish_many(batch, &stop).await.unwrap();
        }
        bus.client().flush().await.unwrap();
        for expected in &sent {
            let message = tokio::time::timeout(Duration::from_secs(10), arrivals.next())
                .await
                .expect("every publication arrives")
                .unwrap();
            assert_eq!(message.subject.as_str(), format!("many.{}", expected.topic));
            assert_eq!(
                format == WireFormat::Binary,
                bus_core::model::wire::binary::is_binary(&message.payload)
            );
            let decoded = Envelope::from_wire(&message.payload).unwrap();
            assert_eq!(&decoded, expected, "{format:?}");
        }
    }
}

/// Tells the name of the thread each message was handled on.
struct ThreadTeller {
    id: AgentId,
    threads: tokio::sync::mpsc::UnboundedSender<Option<String>>,
}

impl Agent for ThreadTeller {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("data.price.>").unwrap()]
    }
    fn on_message(&mut self, _envelope: &Envelope, _out: &mut Outbox) -> HandlerResult {
        let _ = self
            .threads
            .send(std::thread::current().name().map(str::to_string));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_on_a_thread_of_its_own_and_stops_when_its_run_is_dropped() {
    let server = NatsServer::start();
    let settings = core_settings(&server, "own", WireFormat::Binary);
    let bus = NatsBus::connect(&settings).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut lifecycle = client.subscribe("own.agent.>").await.unwrap();
    client.flush().await.unwrap();
    let (threads, mut told) = tokio::sync::mpsc::unbounded_channel();
    let agent = AgentSpec::new(Box::new(ThreadTeller {
        id: AgentId::new("teller"),
        threads,
    }));
    let run = start_agent(agent, bus.clone()).await;
    let stop = StopSignal::new();
    bus.publish(&price(1), &stop).await.unwrap();
    let thread = tokio::time::timeout(Duration::from_secs(10), told.recv())
        .await
        .expect("the agent handles the message")
        .unwrap();
    assert_eq!(thread.as_deref(), Some("agent teller"));
    // Dropping the run (here: aborting the task awaiting it) stops the
    // agent: it says so, as it would when stopped.
    run.abort();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = lifecycle.next().await {
            if message.subject.as_str() == "own.agent.stopped.teller" {
                return;
            }
        }
    })
    .await;
    assert!(stopped.is_ok(), "the agent announced it stopped");
    // And handles nothing more.
    bus.publish(&price(2), &stop).await.unwrap();
    bus.client().flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        told.try_recv().is_err(),
        "a stopped agent handled a message"
    );
}

/// Answers each message with three of its own.
struct Burst {
    id: AgentId,
}

impl Agent for Burst {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("data.price.>").unwrap()]
    }
    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        for k in 0..3 {
            let topic = Topic::new(format!("burst.out.{k}")).unwrap();
            out.publish(Envelope::new(
                self.id.clone(),
                topic,
                envelope.payload().clone(),
            ));
        }
        Ok(())
    }
}

fn burst() -> AgentSpec {
    AgentSpec::new(Box::new(Burst {
        id: AgentId::new("burst"),
    }))
}

/// Messages of [`BURSTS`] sent one at a time, each followed by a quiet
/// pause: asserts each one's three answers arrive promptly (none waits for
/// the next message in).
async fn every_burst_leaves_at_once(server: &NatsServer, settings: &NatsSettings) {
    let bus = NatsBus::connect(settings).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut answers = client.subscribe("burst.burst.out.>").await.unwrap();
    client.flush().await.unwrap();
    let stop = StopSignal::new();
    let mut slowest = Duration::ZERO;
    for n in 0..BURSTS {
        let sent = std::time::Instant::now();
        bus.publish(&price(n), &stop).await.unwrap();
        bus.client().flush().await.unwrap();
        for k in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(2), answers.next())
                .await
                .unwrap_or_else(|_| panic!("answer {k} to message {n} still waits"))
                .unwrap();
            assert_eq!(answer.subject.as_str(), format!("burst.burst.out.{k}"));
        }
        slowest = slowest.max(sent.elapsed());
        // Quiet before the next: nothing else to wake anything.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        slowest < Duration::from_millis(100),
        "the slowest burst took {slowest:?}"
    );
}

/// Messages [`every_burst_leaves_at_once`] sends.
const BURSTS: i64 = 50;

/// Everything an agent publishes for one message leaves at once, with no
/// other traffic to wake the connection: none of it waits for the next
/// message in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_answers_all_leave_without_waiting_for_more_traffic() {
    let server = NatsServer::start();
    let settings = core_settings(&server, "burst", WireFormat::Binary);
    let _run = start_agent(burst(), NatsBus::connect(&settings).await.unwrap()).await;
    every_burst_leaves_at_once(&server, &settings).await;
}

/// An agent run in place with its connection on one single-threaded
/// runtime (an agent process in latency mode) takes every message and
/// sends every answer at once, and stops when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sharing_one_thread_with_its_connection_answers_every_message_at_once() {
    let server = NatsServer::start();
    let settings = core_settings(&server, "burst", WireFormat::Binary);
    let stop = StopSignal::new();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let agent_thread = {
        let (settings, stop) = (settings.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let bus = NatsBus::connect(&settings).await.unwrap();
                let partition = bus_core::runtime::Partition::WHOLE;
                let run = bus_core::nats::run_agent_instance_in_place(
                    burst(),
                    &bus,
                    partition,
                    stop,
                    Some(ready),
                );
                run.await.unwrap().1
            })
        })
    };
    subscribed.await.unwrap();
    every_burst_leaves_at_once(&server, &settings).await;
    stop.stop();
    let stats = tokio::task::spawn_blocking(move || agent_thread.join().unwrap())
        .await
        .unwrap();
    assert_eq!(stats.received, BURSTS as u64);
    // Its answers, and the notices of its start and stop.
    assert_eq!(stats.published, 3 * BURSTS as u64 + 2);
}
