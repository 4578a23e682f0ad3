//! A queued run in lockstep, its agents each on a thread of its own or all
//! on one: a step's candles are published one at a time, each once the one
//! before is worked through, and each is timed (tick to order) from its
//! own publication.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_core::agent::supervision::AgentSpec;
use bus_core::bus::tick_to_order::{TickToOrder, TickToOrderSummary};
use bus_core::model::payload::{Candle, CandleFields, Symbol};
use bus_core::prelude::*;
use bus_core::runtime::{run_queued_until, QueuedOptions, StopSignal};
use rust_decimal::Decimal;

/// One step: a candle for each of two markets, then done.
struct Market {
    id: AgentId,
    stepped: bool,
    factory: MessageFactory,
}

impl Agent for Market {
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
        if std::mem::replace(&mut self.stepped, true) {
            return Produce::Done;
        }
        for symbol in ["BTC", "ETH"] {
            let price = Decimal::new(100, 0);
            let candle = Candle::new(CandleFields {
                symbol: Symbol::new(symbol).unwrap(),
                interval: "1m".into(),
                open_time_ms: 60_000,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: Decimal::ONE,
            })
            .unwrap();
            out.publish(self.factory.make(
                Topic::new(format!("data.candle.{symbol}.1m")).unwrap(),
                Payload::DataCandle(candle),
                60_000,
            ));
        }
        Produce::More
    }
}

/// Orders on every candle at once, then takes `busy` over BTC's (without
/// a clock, only watches); notes the thread it ran on.
struct Trader {
    id: AgentId,
    clock: Option<TickToOrder>,
    busy: Duration,
    threads: Threads,
}

/// The threads agents handled messages on.
type Threads = Arc<Mutex<HashSet<std::thread::ThreadId>>>;

impl Agent for Trader {
    fn id(&self) -> &AgentId {
        &self.id
    }
    fn subscriptions(&self) -> Vec<TopicPattern> {
        vec![TopicPattern::new("data.candle").unwrap()]
    }
    fn on_message(&mut self, e: &Envelope, _: &mut Outbox) -> HandlerResult {
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        if let (Payload::DataCandle(candle), Some(clock)) = (e.payload(), &self.clock) {
            clock.order(candle.symbol.as_str(), candle.open_time_ms);
            if candle.symbol.as_str() == "BTC" {
                std::thread::sleep(self.busy);
            }
        }
        Ok(())
    }
}

/// Runs the market, a trader and a watcher in lockstep (`one_thread`: all
/// as tasks on one thread); the clock's figures and the threads the
/// trader and the watcher ran on.
async fn run(one_thread: bool, busy: Duration) -> (TickToOrderSummary, Threads) {
    let clock = TickToOrder::new();
    let threads = Threads::default();
    let trader = |name: &str, clock: Option<TickToOrder>| {
        AgentSpec::new(Box::new(Trader {
            id: AgentId::new(name),
            clock,
            busy,
            threads: threads.clone(),
        }))
    };
    let agents = vec![
        trader("trader", Some(clock.clone())),
        trader("watcher", None),
        AgentSpec::new(Box::new(Market {
            id: AgentId::new("market"),
            stepped: false,
            factory: MessageFactory::new(AgentId::new("market"), true),
        })),
    ];
    let options = QueuedOptions {
        lockstep: true,
        tick_to_order: Some(clock.clone()),
        one_thread,
        ..Default::default()
    };
    let bus = MessageBus::new();
    let stop = StopSignal::new();
    run_queued_until(bus, agents, Duration::from_secs(5), stop, options)
        .await
        .unwrap();
    (clock.summary(), threads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_candle_of_a_step_is_timed_from_its_own_publication() {
    let busy = Duration::from_millis(200);
    for one_thread in [false, true] {
        let (timed, _) = run(one_thread, busy).await;
        assert_eq!((timed.orders, timed.untimed), (2, 0), "{timed:?}");
        // ETH's candle waited for BTC's to be worked through (`busy`)
        // before it was published: timed from the step it came in, its
        // orders would take that long.
        assert!(
            timed.max_us < busy.as_secs_f64() * 1e6 / 4.0,
            "an order timed from before its candle was published: {timed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_on_threads_of_their_own_or_all_on_one() {
    let (_, threads) = run(false, Duration::ZERO).await;
    assert_eq!(threads.lock().unwrap().len(), 2, "a thread per agent");
    let (timed, threads) = run(true, Duration::ZERO).await;
    assert_eq!(threads.lock().unwrap().len(), 1, "one thread for all");
    assert_eq!(timed.orders, 2, "{timed:?}");
}
