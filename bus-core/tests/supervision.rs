//! Drivers and supervision: agents that panic are restarted, isolated or
//! stop the run, per policy, on both the inline and the queued bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_core::agent::supervision::{AgentSpec, RestartPolicy};
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use bus_core::runtime::{run_inline, run_queued, RunError};
use rust_decimal::Decimal;

/// A source publishing `1..=n` as prices on `n`.
struct Counter {
    id: AgentId,
    next: i64,
    last: i64,
    factory: MessageFactory,
}

impl Counter {
    fn new(last: i64) -> Self {
        Self {
            id: AgentId::new("counter"),
            next: 1,
            last,
            factory: MessageFactory::new(AgentId::new("counter"), true),
        }
    }
}

impl Agent for Counter {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        Vec::new()
    }
    fn on_message(&mut self, _: &Envelope, _: &mut Outbox) -> HandlerResult {
        Ok(())
    }
    fn produce(&mut self, out: &mut Outbox) -> Produce {
        if self.next > self.last {
            return Produce::Done;
        }
        let p = PriceUpdate::new(PriceUpdateFields {
            symbol: Symbol::new("X").unwrap(),
            price: Decimal::new(self.next, 0),
            timestamp_ms: self.next,
        })
        .unwrap();
        out.publish(self.factory.make(
            Topic::new("n").unwrap(),
            Payload::DataPriceUpdate(p),
            self.next,
        ));
        self.next += 1;
        Produce::More
    }
}

/// Panics on the values in `panic_on`; counts what it handled.
struct Fragile {
    id: AgentId,
    panic_on: Vec<i64>,
    handled: Arc<AtomicU64>,
}

impl Agent for Fragile {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("n").unwrap()]
    }
    fn on_message(&mut self, e: &Envelope, _: &mut Outbox) -> HandlerResult {
        let Payload::DataPriceUpdate(p) = e.payload() else {
            return Ok(());
        };
        if self.panic_on.contains(&p.timestamp_ms) || self.panic_on.contains(&-1) {
            panic!("cannot handle {}", p.timestamp_ms);
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Records the lifecycle and error messages it sees.
struct Watcher {
    id: AgentId,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Agent for Watcher {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("agent.*.fragile").unwrap()]
    }
    fn on_message(&mut self, e: &Envelope, _: &mut Outbox) -> HandlerResult {
        self.seen
            .lock()
            .unwrap()
            .push(e.message_type().as_str().to_string());
        Ok(())
    }
}

struct Setup {
    specs: Vec<AgentSpec>,
    handled: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<String>>>,
}

fn setup(n: i64, panic_on: Vec<i64>, policy: RestartPolicy) -> Setup {
    let handled = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let make = {
        let (handled, panic_on) = (handled.clone(), panic_on.clone());
        move || {
            Box::new(Fragile {
                id: AgentId::new("fragile"),
                panic_on: panic_on.clone(),
                handled: handled.clone(),
            }) as Box<dyn Agent>
        }
    };
    let fragile = make();
    let specs = vec![
        AgentSpec::new(Box::new(Watcher {
            id: AgentId::new("watcher"),
            seen: seen.clone(),
        })),
        AgentSpec::new(fragile).with_policy(policy, Some(Box::new(make))),
        AgentSpec::new(Box::new(Counter::new(n))),
    ];
    Setup {
        specs,
        handled,
        seen,
    }
}

fn restart(max_restarts: u32) -> RestartPolicy {
    RestartPolicy::Restart {
        max_restarts,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
    }
}

#[test]
fn inline_restart_replaces_the_agent_and_the_run_completes() {
    let s = setup(20, vec![5, 9], restart(3));
    let run = run_inline(s.specs).unwrap();
    assert_eq!(
        s.handled.load(Ordering::SeqCst),
        18,
        "every message but the two that panicked"
    );
    assert_eq!(run.finished.restarts, vec![0, 2, 0]);
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "agent.started",
            "agent.error",
            "agent.started",
            "agent.error",
            "agent.started",
            "agent.stopped"
        ],
    );
}

#[test]
fn inline_isolate_keeps_the_run_going_without_the_agent() {
    let s = setup(20, vec![5], RestartPolicy::Isolate);
    let run = run_inline(s.specs).unwrap();
    assert_eq!(s.handled.load(Ordering::SeqCst), 4);
    assert_eq!(run.finished.restarts, vec![0, 0, 0]);
}

#[test]
fn inline_shutdown_stops_the_run_and_names_the_agent() {
    let s = setup(1000, vec![5], RestartPolicy::Shutdown);
    let error = run_inline(s.specs).err().expect("the run stops");
    assert!(
        matches!(&error, RunError::AgentFailed(m) if m.contains("fragile") && m.contains("cannot handle 5")),
        "{error}"
    );
    assert!(
        s.handled.load(Ordering::SeqCst) < 10,
        "production stopped soon after"
    );
}

#[test]
fn restarts_are_limited() {
    let s = setup(20, vec![-1], restart(2));
    let error = run_inline(s.specs)
        .err()
        .expect("gives up after two restarts");
    assert!(error.to_string().contains("fragile"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_restart_with_backoff_completes() {
    let s = setup(50, vec![10, 30], restart(3));
    let run = run_queued(MessageBus::new(), s.specs, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s.handled.load(Ordering::SeqCst), 48);
    assert_eq!(run.finished.restarts, vec![0, 2, 0]);
    assert!(
        run.stats.failed >= 2,
        "the bus counted the failed deliveries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_shutdown_policy_fails_the_run() {
    let s = setup(200, vec![3], RestartPolicy::Shutdown);
    let error = run_queued(MessageBus::new(), s.specs, Duration::from_secs(5))
        .await
        .err()
        .expect("fails");
    assert!(error.to_string().contains("fragile"), "{error}");
}

#[test]
fn every_agent_answers_a_health_check() {
    let check = MessageFactory::new(AgentId::new("operator"), true).make(
        Topic::new("system.health_check").unwrap(),
        Payload::SystemHealthCheck(Default::default()),
        1,
    );
    let handled = Arc::new(AtomicU64::new(0));
    let fragile = Fragile {
        id: AgentId::new("fragile"),
        panic_on: vec![],
        handled,
    };
    let seen = bus_core::runtime::script::run_script(
        Box::new(fragile),
        vec![check.clone()],
        &["agent.health_update"],
    )
    .unwrap();
    let agents: Vec<String> = seen
        .iter()
        .filter_map(|e| match e.payload() {
            Payload::AgentHealthUpdate(h) if e.correlation_id == Some(check.id) => {
                assert!(h.healthy);
                assert_eq!(h.state, bus_core::model::payload::AgentState::Running);
                Some(h.agent.to_string())
            }
            _ => None,
        })
        .collect();
    assert!(agents.contains(&"fragile".to_string()), "{agents:?}");
    assert!(agents.contains(&"recorder".to_string()));
}

/// Sleeps inside its handler on one message, as a stuck agent would.
struct Sleeper {
    id: AgentId,
}

impl Agent for Sleeper {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("n").unwrap()]
    }
    fn on_message(&mut self, e: &Envelope, _: &mut Outbox) -> HandlerResult {
        if let Payload::DataPriceUpdate(p) = e.payload() {
            if p.timestamp_ms == 3 {
                std::thread::sleep(Duration::from_millis(800));
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stuck_in_a_handler_misses_its_heartbeat() {
    let handled = Arc::new(AtomicU64::new(0));
    let specs = vec![
        AgentSpec::new(Box::new(Sleeper {
            id: AgentId::new("sleeper"),
        })),
        AgentSpec::new(Box::new(Fragile {
            id: AgentId::new("fragile"),
            panic_on: vec![],
            handled,
        })),
        AgentSpec::new(Box::new(Counter::new(10))),
    ];
    let settings = bus_core::agent::health::HealthCheckSettings {
        interval: Duration::from_millis(50),
        ttl: Duration::from_millis(250),
    };
    let run = bus_core::runtime::run_queued_until(
        MessageBus::new(),
        specs,
        Duration::from_secs(5),
        bus_core::runtime::StopSignal::new(),
        bus_core::runtime::QueuedOptions {
            health: Some(settings),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(run.unhealthy, vec!["sleeper".to_string()]);
}
