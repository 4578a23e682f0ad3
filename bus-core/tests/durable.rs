//! The durable bus: messages written before `publish` returns, replayed in
//! order after a restart, acknowledged (or not) explicitly, expired,
//! dead-lettered, bounded, and read back from damaged files.

mod common;
use common::eventually;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_core::bus::handler::Acknowledgement;
use bus_core::bus::reliability::RetryPolicy;
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use bus_core::store::{Store, StoreConfig, StoreError};
use bus_core::PublishError;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn message(index: u64, mode: DeliveryMode) -> Envelope {
    let update = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::from(index + 1),
        timestamp_ms: index as i64,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("t"),
        Topic::new("prices.btc").unwrap(),
        Payload::DataPriceUpdate(update),
    )
    .with_delivery_mode(mode)
}

fn index_of(envelope: &Envelope) -> u64 {
    match envelope.payload() {
        Payload::DataPriceUpdate(u) => u.timestamp_ms as u64,
        other => panic!("unexpected {other:?}"),
    }
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.cleanup_interval = Duration::from_millis(20);
    config
}

fn open(config: StoreConfig) -> (MessageBus, Store, bus_core::store::Recovery) {
    let (store, recovery) = Store::open(config).expect("store opens");
    (MessageBus::durable(store.clone()), store, recovery)
}

/// A subscription that takes messages and never settles them (it keeps the
/// acknowledgements, so they are not dropped), as a process that dies
/// before handling would.
fn stuck(bus: &MessageBus, name: &str) -> Arc<Mutex<Vec<Acknowledgement>>> {
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    bus.subscribe(
        "prices.>",
        Handler::manual_ack(Duration::from_secs(3600), move |_e, ack| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(ack);
                Ok(())
            }
        }),
        SubscribeOptions::named(name),
    )
    .unwrap();
    held
}

/// A subscription recording the indexes it handles.
fn recorder(bus: &MessageBus, name: &str) -> Arc<Mutex<Vec<u64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bus.subscribe(
        "prices.>",
        Handler::from_async(move |e: Arc<Envelope>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(index_of(&e));
                Ok(())
            }
        }),
        SubscribeOptions::named(name),
    )
    .unwrap();
    seen
}

#[tokio::test]
async fn unacknowledged_messages_are_replayed_in_publish_order_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (bus, store, _) = open(config(dir.path()));
        let held = stuck(&bus, "worker");
        for i in 0..100 {
            bus.publish(message(i, DeliveryMode::AtLeastOnce))
                .await
                .unwrap();
        }
        // Fire-and-forget messages are not durable.
        bus.publish(message(1000, DeliveryMode::FireAndForget))
            .await
            .unwrap();
        eventually("all taken", || held.lock().unwrap().len() == 101).await;
        assert_eq!(store.stats().pending, 100);
        store.close(); // the process dies: nothing was acknowledged
        std::mem::forget(held);
    }
    let (bus, store, recovery) = open(config(dir.path()));
    assert_eq!(recovery.pending, 100);
    assert!(recovery.issues.is_empty(), "{:?}", recovery.issues);
    let seen = recorder(&bus, "worker");
    eventually("replayed", || seen.lock().unwrap().len() == 100).await;
    assert_eq!(*seen.lock().unwrap(), (0..100).collect::<Vec<_>>());
    assert_eq!(bus.stats().replayed, 100);
    eventually("acked", || store.stats().pending == 0).await;
    store.sync().unwrap();
    store.close();
    let (_bus, _store, recovery) = open(config(dir.path()));
    assert_eq!(recovery.pending, 0, "acks were persisted");
}

#[tokio::test]
async fn exactly_once_remembers_processed_ids_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = message(7, DeliveryMode::ExactlyOnce);
    {
        let (bus, store, _) = open(config(dir.path()));
        let seen = recorder(&bus, "worker");
        bus.publish(first.clone()).await.unwrap();
        eventually("handled", || seen.lock().unwrap().len() == 1).await;
        eventually("acked", || store.stats().pending == 0).await;
        bus.shutdown(Duration::from_secs(1)).await;
        store.close();
    }
    let (bus, store, recovery) = open(config(dir.path()));
    assert_eq!(recovery.pending, 0);
    assert_eq!(store.processed("worker"), vec![first.id]);
    let seen = recorder(&bus, "worker");
    // The producer retries the same message after its own crash.
    bus.publish(first.clone()).await.unwrap();
    bus.publish(message(8, DeliveryMode::ExactlyOnce))
        .await
        .unwrap();
    eventually("second handled", || seen.lock().unwrap().len() == 1).await;
    eventually("duplicate counted", || bus.stats().duplicates == 1).await;
    assert_eq!(*seen.lock().unwrap(), vec![8]);
    eventually("all resolved", || store.stats().pending == 0).await;
}

#[tokio::test]
async fn expired_messages_are_not_replayed_and_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (bus, store, _) = open(config(dir.path()));
        let held = stuck(&bus, "worker");
        for i in 0..10 {
            bus.publish(message(i, DeliveryMode::AtLeastOnce).with_ttl(Duration::from_millis(60)))
                .await
                .unwrap();
        }
        for i in 10..15 {
            bus.publish(message(i, DeliveryMode::AtLeastOnce))
                .await
                .unwrap();
        }
        eventually("taken", || held.lock().unwrap().len() == 15).await;
        // Background cleanup expires them while the process lives...
        eventually("expired by cleanup", || store.stats().pending == 5).await;
        assert_eq!(store.stats().expired, 10);
        store.close();
        std::mem::forget(held);
    }
    let (bus, _store, recovery) = open(config(dir.path()));
    assert_eq!(recovery.pending, 5);
    let seen = recorder(&bus, "worker");
    eventually("replayed", || seen.lock().unwrap().len() == 5).await;
    assert_eq!(*seen.lock().unwrap(), (10..15).collect::<Vec<_>>());
}

#[tokio::test]
async fn messages_that_expire_while_the_process_is_down_are_counted_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (bus, store, _) = open(config(dir.path()));
        let held = stuck(&bus, "worker");
        for i in 0..4 {
            bus.publish(message(i, DeliveryMode::AtLeastOnce).with_ttl(Duration::from_secs(1)))
                .await
                .unwrap();
        }
        eventually("taken", || held.lock().unwrap().len() == 4).await;
        store.close();
        std::mem::forget(held);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_bus, store, recovery) = open(config(dir.path()));
    assert_eq!((recovery.pending, recovery.expired), (0, 4));
    assert_eq!(store.stats().expired, 4);
}

#[tokio::test]
async fn a_full_store_refuses_with_a_clear_error_and_keeps_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_pending = 10;
    let (bus, store, _) = open(cfg);
    let held = stuck(&bus, "worker");
    for i in 0..10 {
        bus.publish(message(i, DeliveryMode::AtLeastOnce))
            .await
            .unwrap();
    }
    let error = bus
        .publish(message(10, DeliveryMode::AtLeastOnce))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        PublishError::Store(StoreError::Full {
            pending: 10,
            limit: 10
        })
    );
    assert!(error.to_string().contains("durable store full"), "{error}");
    eventually("taken", || held.lock().unwrap().len() == 10).await;
    // Acknowledging makes room.
    for ack in held.lock().unwrap().drain(..) {
        ack.ack();
    }
    eventually("room", || store.stats().pending == 0).await;
    bus.publish(message(10, DeliveryMode::AtLeastOnce))
        .await
        .unwrap();
}

#[tokio::test]
async fn manual_acks_settle_later_and_unsettled_deliveries_are_retried_then_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, store, _) = open(config(dir.path()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    let retry = RetryPolicy {
        base: Duration::from_millis(10),
        factor: 2.0,
        cap: Duration::from_millis(100),
        jitter: 0.0,
    };
    bus.subscribe(
        "prices.>",
        Handler::manual_ack(Duration::from_millis(100), move |e: Arc<Envelope>, ack| {
            let log = log.clone();
            async move {
                let index = index_of(&e);
                log.lock().unwrap().push((index, e.attempt));
                match index {
                    // Acked later, from another task.
                    0 => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            ack.ack();
                        });
                    }
                    // Nacked once, then acked.
                    1 if e.attempt == 0 => ack.nack("not yet"),
                    1 => ack.ack(),
                    // Never settled: held past ack_wait every time.
                    _ => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            drop(ack);
                        });
                    }
                }
                Ok(())
            }
        }),
        SubscribeOptions::named("worker").with_retry(retry),
    )
    .unwrap();
    for i in 0..3 {
        bus.publish(message(i, DeliveryMode::AtLeastOnce).with_max_attempts(3))
            .await
            .unwrap();
    }
    eventually("settled", || store.stats().pending == 0).await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|(i, _)| *i == 0).count(), 1);
    assert_eq!(calls.iter().filter(|(i, _)| *i == 1).count(), 2);
    assert_eq!(
        calls
            .iter()
            .filter(|(i, _)| *i == 2)
            .map(|(_, a)| *a)
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].error.contains("not acknowledged within"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[0].attempts, 3);
    let stats = bus.stats();
    assert_eq!(stats.delivered, 2);
    assert_eq!(stats.dead_lettered, 1);
}

#[tokio::test]
async fn dead_letters_stay_inspectable_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (bus, store, _) = open(config(dir.path()));
        bus.subscribe(
            "prices.>",
            Handler::from_async(|_e| async { Err(HandlerError::new("exchange down")) }),
            SubscribeOptions::named("worker").with_retry(RetryPolicy {
                base: Duration::from_millis(1),
                factor: 2.0,
                cap: Duration::from_millis(5),
                jitter: 0.0,
            }),
        )
        .unwrap();
        let m = message(1, DeliveryMode::AtLeastOnce).with_max_attempts(2);
        let id = m.id;
        bus.publish(m).await.unwrap();
        eventually("dead-lettered", || store.stats().pending == 0).await;
        store.sync().unwrap();
        store.close();
        id
    };
    let (bus, _store, recovery) = open(config(dir.path()));
    assert_eq!((recovery.pending, recovery.dead_letters), (0, 1));
    let letters = bus.dead_letters();
    assert_eq!(letters[0].original.as_ref().unwrap().id, id);
    assert_eq!(letters[0].error, "exchange down");
    assert_eq!(letters[0].subscription, "worker");
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn corrupted_and_truncated_files_are_reported_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (bus, store, _) = open(config(dir.path()));
        let held = stuck(&bus, "worker");
        for i in 0..50 {
            bus.publish(message(i, DeliveryMode::AtLeastOnce))
                .await
                .unwrap();
        }
        eventually("taken", || held.lock().unwrap().len() == 50).await;
        store.close();
        std::mem::forget(held);
    }
    let files = segments(dir.path());
    let file = files.last().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end / 2] ^= 0xFF; // a flipped bit inside one record
    bytes.truncate(end - 20); // and a torn final record
    std::fs::write(file, &bytes).unwrap();
    // A segment of garbage from some other crash.
    std::fs::write(dir.path().join("seg-0000000099.log"), vec![0xABu8; 300]).unwrap();

    let (bus, store, recovery) = open(config(dir.path()));
    assert_eq!(recovery.pending, 48, "all but the two damaged records");
    assert_eq!(recovery.issues.len(), 3, "{:#?}", recovery.issues);
    let text: Vec<String> = recovery.issues.iter().map(|i| i.to_string()).collect();
    assert!(text[0].contains("checksum mismatch"), "{text:?}");
    assert!(text[1].contains("cut short"), "{text:?}");
    assert!(text[2].contains("seg-0000000099.log at byte 0"), "{text:?}");
    let seen = recorder(&bus, "worker");
    eventually("kept ones replayed", || seen.lock().unwrap().len() == 48).await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    eventually("acked", || store.stats().pending == 0).await;
}

#[tokio::test]
async fn cleanup_keeps_disk_use_bounded_and_carries_pending_messages_forward() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 4096;
    {
        let (bus, store, _) = open(cfg.clone());
        // "slow" never settles the first 20 messages and acks the rest.
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        bus.subscribe(
            "prices.>",
            Handler::manual_ack(Duration::from_secs(3600), move |e: Arc<Envelope>, ack| {
                let keep = keep.clone();
                async move {
                    if index_of(&e) < 20 {
                        keep.lock().unwrap().push(ack);
                    } else {
                        ack.ack();
                    }
                    Ok(())
                }
            }),
            SubscribeOptions::named("slow"),
        )
        .unwrap();
        let seen = recorder(&bus, "fast");
        for i in 0..2000 {
            bus.publish(message(i, DeliveryMode::AtLeastOnce))
                .await
                .unwrap();
        }
        eventually("fast done", || seen.lock().unwrap().len() == 2000).await;
        eventually("only the first 20 pending", || store.stats().pending == 20).await;
        eventually("segments retired", || segments(dir.path()).len() <= 4).await;
        assert!(store.stats().segments_retired > 10, "{:?}", store.stats());
        store.close();
        std::mem::forget(held);
    }
    let (bus, _store, recovery) = open(cfg);
    assert_eq!(recovery.pending, 20);
    assert!(recovery.issues.is_empty(), "{:?}", recovery.issues);
    let seen = recorder(&bus, "slow");
    eventually("carried ones replayed", || seen.lock().unwrap().len() == 20).await;
    assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

#[derive(Debug, Clone)]
enum Op {
    Publish { to_a: bool, to_b: bool },
    Ack { sub_b: bool, nth: usize },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), any::<bool>()).prop_map(|(to_a, to_b)| Op::Publish { to_a, to_b }),
        3 => (any::<bool>(), 0usize..8).prop_map(|(sub_b, nth)| Op::Ack { sub_b, nth }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Publishing to two durable subscriptions, acking in any order and
    /// restarting at any point: what the store replays is exactly what the
    /// model says is pending, per subscription, in publication order.
    #[test]
    fn store_replays_exactly_the_unacknowledged(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.fsync = false;
        cfg.segment_bytes = 2048;
        let names: [Arc<str>; 2] = [Arc::from("a"), Arc::from("b")];
        let mut model: [Vec<Envelope>; 2] = [Vec::new(), Vec::new()];
        let (mut store, _) = Store::open(cfg.clone()).unwrap();
        let mut next = 0;
        for op in ops {
            match op {
                Op::Publish { to_a, to_b } => {
                    let m = message(next, DeliveryMode::AtLeastOnce);
                    next += 1;
                    let mut subs = Vec::new();
                    for (k, on) in [to_a, to_b].into_iter().enumerate() {
                        if on {
                            subs.push(names[k].clone());
                            model[k].push(m.clone());
                        }
                    }
                    store.append(&m, subs).unwrap().wait().unwrap();
                }
                Op::Ack { sub_b, nth } => {
                    let k = usize::from(sub_b);
                    if !model[k].is_empty() {
                        let m = model[k].remove(nth % model[k].len());
                        store.ack(m.id, &names[k], false);
                    }
                }
                Op::Restart => {
                    store.close();
                    let (reopened, recovery) = Store::open(cfg.clone()).unwrap();
                    prop_assert!(recovery.issues.is_empty(), "{:?}", recovery.issues);
                    store = reopened;
                }
            }
        }
        store.close();
        let (store, _) = Store::open(cfg).unwrap();
        for k in 0..2 {
            let replayed: Vec<_> = store.take_replay(&names[k]).iter().map(|e| e.id).collect();
            let expected: Vec<_> = model[k].iter().map(|e| e.id).collect();
            prop_assert_eq!(replayed, expected);
        }
        store.close();
    }
}
