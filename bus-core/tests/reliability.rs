//! At-least-once and exactly-once on the queued bus: retries with growing
//! delays, dead letters, duplicate suppression.

mod common;
use common::eventually;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::bus::reliability::RetryPolicy;
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use rust_decimal::Decimal;

fn message(mode: DeliveryMode, max_attempts: u32) -> Envelope {
    let p = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::ONE,
        timestamp_ms: 1,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("t"),
        Topic::new("r").unwrap(),
        Payload::DataPriceUpdate(p),
    )
    .with_delivery_mode(mode)
    .with_max_attempts(max_attempts)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        factor: 2.0,
        cap: Duration::from_secs(1),
        jitter: 0.2,
    }
}

/// A handler failing its first `k` calls, recording when each call came.
fn flaky(k: u32) -> (Handler, Arc<Mutex<Vec<Instant>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let handler = Handler::from_async(move |_e: Arc<Envelope>| {
        let calls = calls.clone();
        async move {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(Instant::now());
                c.len() as u32
            };
            if n <= k {
                Err(HandlerError::new(format!("failure {n}")))
            } else {
                Ok(())
            }
        }
    });
    (handler, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_is_retried_with_growing_delays_then_succeeds() {
    let bus = MessageBus::new();
    let (handler, calls) = flaky(3);
    bus.subscribe(
        "r",
        handler,
        SubscribeOptions::named("flaky").with_retry(policy()),
    )
    .unwrap();
    bus.publish(message(DeliveryMode::AtLeastOnce, 5))
        .await
        .unwrap();
    eventually("success on the fourth attempt", || {
        bus.stats().delivered == 1
    })
    .await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    // Nominal 20, 40, 80 ms with ±20 % jitter: the bands do not overlap.
    assert!(gaps[0] >= Duration::from_millis(16), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays grow: {gaps:?}"
    );
    let stats = bus.stats();
    assert_eq!(
        (stats.retries, stats.failed, stats.dead_lettered),
        (3, 3, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_always_fails_ends_in_the_dead_letter_topic() {
    let bus = MessageBus::new();
    let (handler, calls) = flaky(u32::MAX);
    bus.subscribe(
        "r",
        handler,
        SubscribeOptions::named("hopeless").with_retry(policy()),
    )
    .unwrap();
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    bus.subscribe(
        "system.dead_letter",
        Handler::from_async(move |e: Arc<Envelope>| {
            let l = l.clone();
            async move {
                l.lock().unwrap().push(e);
                Ok(())
            }
        }),
        SubscribeOptions::named("dead letters"),
    )
    .unwrap();
    let original = message(DeliveryMode::AtLeastOnce, 3);
    let id = original.id;
    bus.publish(original).await.unwrap();
    eventually("dead letter", || letters.lock().unwrap().len() == 1).await;
    assert_eq!(calls.lock().unwrap().len(), 3, "max_attempts deliveries");
    let kept = bus.dead_letters();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].original.as_ref().unwrap().id, id);
    assert_eq!(kept[0].attempts, 3);
    assert_eq!(kept[0].subscription, "hopeless");
    assert_eq!(kept[0].error, "failure 3");
    let published = letters.lock().unwrap()[0].clone();
    assert!(
        matches!(published.payload(), Payload::SystemDeadLetter(d) if d.original.as_ref().is_some_and(|o| o.id == id))
    );
    let stats = bus.stats();
    assert_eq!((stats.retries, stats.dead_lettered), (2, 1));
}

#[tokio::test]
async fn fire_and_forget_is_not_retried() {
    let bus = MessageBus::new();
    let (handler, calls) = flaky(1);
    bus.subscribe(
        "r",
        handler,
        SubscribeOptions::named("once").with_retry(policy()),
    )
    .unwrap();
    bus.publish(message(DeliveryMode::FireAndForget, 5))
        .await
        .unwrap();
    eventually("handled", || bus.stats().failed == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(bus.stats().retries, 0);
}

#[tokio::test]
async fn exactly_once_suppresses_a_republished_message() {
    let bus = MessageBus::new();
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    bus.subscribe(
        "r",
        Handler::from_async(move |_e: Arc<Envelope>| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }),
        SubscribeOptions::named("once only"),
    )
    .unwrap();
    let m = message(DeliveryMode::ExactlyOnce, 5);
    bus.publish(m.clone()).await.unwrap();
    bus.publish(m.clone()).await.unwrap();
    bus.publish(message(DeliveryMode::ExactlyOnce, 5))
        .await
        .unwrap();
    // At-least-once does not de-duplicate.
    let twice = message(DeliveryMode::AtLeastOnce, 5);
    bus.publish(twice.clone()).await.unwrap();
    bus.publish(twice).await.unwrap();
    eventually("all processed", || {
        bus.stats().in_flight == 0 && bus.stats().delivered + bus.stats().duplicates == 5
    })
    .await;
    assert_eq!(handled.load(Ordering::SeqCst), 4);
    assert_eq!(bus.stats().duplicates, 1);
}
