//! Behaviour of the queued in-process bus: routing, ordering, overflow,
//! failures, request/response, stats and shutdown.

mod common;
use common::eventually;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::model::payload::*;
use bus_core::prelude::*;
use bus_core::{CircuitBreakerConfig, CircuitState, DropReason, PublishError, RequestError};
use rust_decimal::Decimal;

fn price(topic: &str, n: i64) -> Envelope {
    let p = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::new(n.max(1), 0),
        timestamp_ms: n,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("collector"),
        Topic::new(topic).unwrap(),
        Payload::DataPriceUpdate(p),
    )
}

fn tag_of(e: &Envelope) -> i64 {
    match e.payload() {
        Payload::DataPriceUpdate(p) => p.timestamp_ms,
        _ => -1,
    }
}

/// A handler that records what it saw, in order.
fn recorder() -> (Handler, Arc<Mutex<Vec<i64>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let handler = Handler::from_async(move |e: Arc<Envelope>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(tag_of(&e));
            Ok(())
        }
    });
    (handler, out)
}

/// A handler that waits for the gate to open before handling anything, so
/// tests can fill its queue deterministically.
fn gated_recorder() -> (Handler, Arc<Mutex<Vec<i64>>>, Arc<tokio::sync::Semaphore>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (out, g) = (seen.clone(), gate.clone());
    let handler = Handler::from_async(move |e: Arc<Envelope>| {
        let (seen, gate) = (seen.clone(), gate.clone());
        async move {
            gate.acquire().await.unwrap().forget();
            seen.lock().unwrap().push(tag_of(&e));
            Ok(())
        }
    });
    (handler, out, g)
}

#[tokio::test]
async fn topics_route_by_segment() {
    let bus = MessageBus::new();
    let (signals, signals_seen) = recorder();
    let (btc, btc_seen) = recorder();
    let (all, all_seen) = recorder();
    bus.subscribe("signals", signals, SubscribeOptions::named("signals"))
        .unwrap();
    bus.subscribe("data.*.BTC", btc, SubscribeOptions::named("btc"))
        .unwrap();
    bus.subscribe(">", all, SubscribeOptions::named("all"))
        .unwrap();

    bus.publish(price("signals.BTC", 1)).await.unwrap();
    bus.publish(price("signalsfoo", 2)).await.unwrap();
    bus.publish(price("data.price.BTC", 3)).await.unwrap();
    bus.publish(price("data.price.ETH", 4)).await.unwrap();
    bus.publish(price("signals", 5)).await.unwrap();

    eventually("all four deliveries", || {
        all_seen.lock().unwrap().len() == 5
    })
    .await;
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(*signals_seen.lock().unwrap(), vec![1, 5]);
    assert_eq!(*btc_seen.lock().unwrap(), vec![3]);
    assert_eq!(*all_seen.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    assert_eq!(report.stats.published, 5);
    assert_eq!(report.stats.delivered, 8);
}

#[tokio::test]
async fn invalid_patterns_are_refused() {
    let bus = MessageBus::new();
    let (h, _) = recorder();
    let error = bus
        .subscribe("a..b", h, SubscribeOptions::default())
        .unwrap_err();
    assert!(error.to_string().contains("segment 2 is empty"), "{error}");
}

#[tokio::test]
async fn queue_delivers_by_priority_then_fifo() {
    let bus = MessageBus::new();
    let (handler, seen, gate) = gated_recorder();
    bus.subscribe("p", handler, SubscribeOptions::named("p"))
        .unwrap();
    // The first message occupies the handler (waiting at the gate); the rest queue up.
    bus.publish(price("p", 0)).await.unwrap();
    eventually("consumer busy", || {
        bus.stats().subscriptions[0].queue_depth == 0
    })
    .await;
    let plan = [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::Critical),
        (4, Priority::High),
        (5, Priority::Normal),
        (6, Priority::Critical),
        (7, Priority::Low),
    ];
    for (n, p) in plan {
        bus.publish(price("p", n).with_priority(p)).await.unwrap();
    }
    gate.add_permits(100);
    eventually("all delivered", || seen.lock().unwrap().len() == 8).await;
    assert_eq!(*seen.lock().unwrap(), vec![0, 3, 6, 4, 2, 5, 1, 7]);
}

#[tokio::test]
async fn drop_oldest_lowest_counts_every_drop_and_keeps_critical() {
    let bus = MessageBus::new();
    let (handler, seen, gate) = gated_recorder();
    let id = bus
        .subscribe(
            "d.>",
            handler,
            SubscribeOptions::named("dropper")
                .with_capacity(3)
                .with_overflow(OverflowPolicy::DropOldestLowest),
        )
        .unwrap();
    bus.publish(price("d.busy", 0)).await.unwrap();
    eventually("consumer busy", || {
        bus.stats().subscriptions[0].queue_depth == 0
    })
    .await;
    bus.publish(price("d.low", 1).with_priority(Priority::Low))
        .await
        .unwrap();
    bus.publish(price("d.normal", 2)).await.unwrap();
    bus.publish(price("d.normal", 3)).await.unwrap();
    // Full: a HIGH displaces the oldest LOW.
    let receipt = bus
        .publish(price("d.high", 4).with_priority(Priority::High))
        .await
        .unwrap();
    assert_eq!(receipt.displaced, 1);
    // Full: CRITICALs always get in, displacing nothing.
    for n in 10..15 {
        let r = bus
            .publish(price("d.crit", n).with_priority(Priority::Critical))
            .await
            .unwrap();
        assert_eq!((r.queued, r.displaced, r.dropped), (1, 0, 0));
    }
    // Full, and a LOW has nothing lower to displace: it is dropped itself.
    let r = bus
        .publish(price("d.low", 5).with_priority(Priority::Low))
        .await
        .unwrap();
    assert_eq!(r.dropped, 1);

    let stats = bus.stats();
    assert_eq!(stats.dropped.get(&DropReason::Overflow), Some(&2));
    assert_eq!(stats.dropped_by_topic.get("d.low"), Some(&2));
    let sub = stats.subscriptions.iter().find(|s| s.id == id).unwrap();
    assert_eq!(sub.dropped.get(&DropReason::Overflow), Some(&2));
    assert_eq!(sub.queue_depth, 8);

    gate.add_permits(100);
    eventually("drained", || seen.lock().unwrap().len() == 9).await;
    assert_eq!(*seen.lock().unwrap(), vec![0, 10, 11, 12, 13, 14, 4, 2, 3]);
    let stats = bus.shutdown(Duration::from_secs(1)).await.stats;
    // Nothing lost silently: every publish is accounted for.
    assert_eq!(stats.delivered + stats.total_dropped(), stats.published);
}

#[tokio::test]
async fn reject_policy_tells_the_publisher_and_others_still_receive() {
    let bus = MessageBus::new();
    let (full, _, _gate) = gated_recorder();
    let (other, other_seen) = recorder();
    let full_id = bus
        .subscribe(
            "r",
            full,
            SubscribeOptions::named("full")
                .with_capacity(1)
                .with_overflow(OverflowPolicy::Reject),
        )
        .unwrap();
    bus.subscribe("r", other, SubscribeOptions::named("other"))
        .unwrap();
    bus.publish(price("r", 0)).await.unwrap();
    eventually("consumer busy", || {
        bus.stats().subscriptions[0].queue_depth == 0
    })
    .await;
    bus.publish(price("r", 1)).await.unwrap();
    let error = bus.publish(price("r", 2)).await.unwrap_err();
    assert_eq!(
        error,
        PublishError::Rejected {
            rejected_by: vec![full_id],
            accepted_by: 1
        }
    );
    // Even CRITICAL is never refused.
    bus.publish(price("r", 3).with_priority(Priority::Critical))
        .await
        .unwrap();
    eventually("other got all", || other_seen.lock().unwrap().len() == 4).await;
    assert_eq!(bus.stats().dropped.get(&DropReason::Rejected), Some(&1));
}

#[tokio::test]
async fn block_policy_waits_for_room_then_times_out() {
    let bus = MessageBus::new();
    let (handler, seen, gate) = gated_recorder();
    bus.subscribe(
        "b",
        handler,
        SubscribeOptions::named("blocker")
            .with_capacity(1)
            .with_overflow(OverflowPolicy::Block {
                timeout: Duration::from_millis(100),
            }),
    )
    .unwrap();
    bus.publish(price("b", 0)).await.unwrap();
    eventually("consumer busy", || {
        bus.stats().subscriptions[0].queue_depth == 0
    })
    .await;
    bus.publish(price("b", 1)).await.unwrap();

    // Full: the publisher waits, and gets in once the consumer makes room.
    let releaser = {
        let gate = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            gate.add_permits(1);
        })
    };
    let started = Instant::now();
    bus.publish(price("b", 2)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20));
    releaser.await.unwrap();

    // Full again and nobody makes room: timeout, counted.
    let error = bus.publish(price("b", 3)).await.unwrap_err();
    assert!(
        matches!(error, PublishError::BlockedTimeout { waited, .. } if waited >= Duration::from_millis(100)),
        "{error:?}"
    );
    assert_eq!(bus.stats().dropped.get(&DropReason::BlockTimeout), Some(&1));
    // try_publish never waits.
    assert!(matches!(
        bus.try_publish(price("b", 4)),
        Err(PublishError::BlockedTimeout { .. })
    ));
    gate.add_permits(100);
    eventually("drained", || seen.lock().unwrap().len() == 3).await;
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test]
async fn failing_and_panicking_handlers_are_isolated_and_counted() {
    let bus = MessageBus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let flaky = bus
        .subscribe(
            "f",
            Handler::from_async(move |e: Arc<Envelope>| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    match tag_of(&e) % 3 {
                        0 => Ok(()),
                        1 => Err(HandlerError::new("refused")),
                        _ => panic!("handler bug on {}", e.id),
                    }
                }
            }),
            SubscribeOptions::named("flaky").with_circuit_breaker(CircuitBreakerConfig {
                failure_threshold: 0,
                cooldown: Duration::from_secs(1),
            }),
        )
        .unwrap();
    let (healthy, healthy_seen) = recorder();
    bus.subscribe("f", healthy, SubscribeOptions::named("healthy"))
        .unwrap();
    for n in 0..30 {
        bus.publish(price("f", n)).await.unwrap();
    }
    eventually("all handled", || {
        calls.load(Ordering::SeqCst) == 30 && healthy_seen.lock().unwrap().len() == 30
    })
    .await;
    let stats = bus.stats();
    let sub = stats.subscriptions.iter().find(|s| s.id == flaky).unwrap();
    assert_eq!(sub.delivered, 10);
    assert_eq!(sub.failed, 20);
    assert_eq!(sub.panicked, 10);
    assert_eq!(stats.panicked, 10);
    assert_eq!(stats.delivered, 40);
}

#[tokio::test]
async fn circuit_breaker_opens_then_recovers() {
    let bus = MessageBus::new();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, c) = (fail.clone(), calls.clone());
    bus.subscribe(
        "cb",
        Handler::from_async(move |_e: Arc<Envelope>| {
            let (f, c) = (f.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    Err(HandlerError::new("down"))
                } else {
                    Ok(())
                }
            }
        }),
        SubscribeOptions::named("cb").with_circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_millis(150),
        }),
    )
    .unwrap();
    for n in 0..10 {
        bus.publish(price("cb", n)).await.unwrap();
    }
    eventually("processed", || bus.stats().in_flight == 0).await;
    let s = bus.stats();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "opened after 3 failures");
    assert_eq!(s.subscriptions[0].circuit, CircuitState::Open);
    assert_eq!(s.dropped.get(&DropReason::CircuitOpen), Some(&7));

    fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.publish(price("cb", 99)).await.unwrap();
    eventually("trial delivered", || bus.stats().delivered == 1).await;
    assert_eq!(bus.stats().subscriptions[0].circuit, CircuitState::Closed);
}

#[tokio::test]
async fn unsubscribe_removes_exactly_one_subscription() {
    let bus = MessageBus::new();
    let (a, a_seen) = recorder();
    let (b, b_seen) = recorder();
    let a_id = bus.subscribe("u", a, SubscribeOptions::named("a")).unwrap();
    bus.subscribe("u", b, SubscribeOptions::named("b")).unwrap();
    bus.publish(price("u", 1)).await.unwrap();
    eventually("both", || {
        a_seen.lock().unwrap().len() == 1 && b_seen.lock().unwrap().len() == 1
    })
    .await;
    assert!(bus.unsubscribe(a_id));
    assert!(!bus.unsubscribe(a_id));
    bus.publish(price("u", 2)).await.unwrap();
    eventually("b", || b_seen.lock().unwrap().len() == 2).await;
    assert_eq!(*a_seen.lock().unwrap(), vec![1]);
    assert_eq!(bus.stats().subscriptions.len(), 1);
}

#[tokio::test]
async fn request_gets_the_correlated_response_or_times_out() {
    let bus = MessageBus::new();
    let responder = bus.clone();
    bus.subscribe(
        "trade.order_request",
        Handler::from_async(move |req: Arc<Envelope>| {
            let bus = responder.clone();
            async move {
                // An unrelated response first: must not be taken for ours.
                let stray = req
                    .reply(
                        AgentId::new("risk"),
                        Payload::ResponseSuccess(Success {
                            detail: "stray".into(),
                        }),
                    )
                    .with_correlation_id(MessageId::new());
                bus.publish(stray).await?;
                let ok = req.reply(
                    AgentId::new("risk"),
                    Payload::ResponseSuccess(Success {
                        detail: "approved".into(),
                    }),
                );
                bus.publish(ok).await?;
                Ok(())
            }
        }),
        SubscribeOptions::named("risk"),
    )
    .unwrap();
    let request = price("trade.order_request", 1);
    let id = request.id;
    let response = bus.request(request, Duration::from_secs(5)).await.unwrap();
    assert_eq!(response.correlation_id, Some(id));
    assert!(matches!(response.payload(), Payload::ResponseSuccess(s) if s.detail == "approved"));

    let started = Instant::now();
    let error = bus
        .request(price("nobody.listens", 2), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(error, RequestError::Timeout(Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_does_not_delay_another_subscription() {
    let bus = MessageBus::new();
    bus.subscribe(
        "s",
        Handler::from_async(|_e: Arc<Envelope>| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }),
        SubscribeOptions::named("slow"),
    )
    .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let l = latencies.clone();
    bus.subscribe(
        "s",
        Handler::from_async(move |e: Arc<Envelope>| {
            let l = l.clone();
            async move {
                let sent = Duration::from_micros(tag_of(&e) as u64);
                l.lock().unwrap().push(sent);
                Ok(())
            }
        }),
        SubscribeOptions::named("fast"),
    )
    .unwrap();
    let origin = Instant::now();
    let mut sent_at = Vec::new();
    for _ in 0..10 {
        let t = origin.elapsed();
        sent_at.push(t);
        bus.publish(price("s", t.as_micros() as i64)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // All ten reach the fast handler long before the slow one has handled two.
    eventually("fast handler got all", || {
        latencies.lock().unwrap().len() == 10
    })
    .await;
    assert!(
        origin.elapsed() < Duration::from_millis(400),
        "fast handler was held up: {:?}",
        origin.elapsed()
    );
    let slow = bus
        .stats()
        .subscriptions
        .iter()
        .find(|s| s.name == "slow")
        .unwrap()
        .delivered;
    assert!(slow <= 2, "slow handler finished {slow}");
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_handlers_do_not_block_the_runtime() {
    // On a single-threaded runtime, a blocking handler that sleeps would
    // freeze every async handler if it ran on the runtime.
    let bus = MessageBus::new();
    let blocking_done = Arc::new(AtomicUsize::new(0));
    let b = blocking_done.clone();
    bus.subscribe(
        "x",
        Handler::blocking(move |_e| {
            std::thread::sleep(Duration::from_millis(100));
            b.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
        SubscribeOptions::named("blocking"),
    )
    .unwrap();
    let (fast, fast_seen) = recorder();
    bus.subscribe("x", fast, SubscribeOptions::named("async"))
        .unwrap();
    for n in 0..5 {
        bus.publish(price("x", n)).await.unwrap();
    }
    eventually("async got all", || fast_seen.lock().unwrap().len() == 5).await;
    assert!(
        blocking_done.load(Ordering::SeqCst) < 5,
        "async handler should not wait for the blocking one"
    );
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
    assert_eq!(blocking_done.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn filters_refine_routing() {
    let bus = MessageBus::new();
    let (h, seen) = recorder();
    bus.subscribe(
        "data.>",
        h,
        SubscribeOptions::named("urgent")
            .with_filter(Filter::min_priority(Priority::High).and(Filter::tag("live"))),
    )
    .unwrap();
    bus.publish(price("data.p", 1)).await.unwrap();
    bus.publish(price("data.p", 2).with_priority(Priority::High))
        .await
        .unwrap();
    bus.publish(
        price("data.p", 3)
            .with_priority(Priority::High)
            .with_tag("live"),
    )
    .await
    .unwrap();
    let stats = bus.shutdown(Duration::from_secs(1)).await.stats;
    assert_eq!(*seen.lock().unwrap(), vec![3]);
    assert_eq!(stats.unrouted, 2);
}

#[tokio::test]
async fn expired_messages_are_not_delivered() {
    let bus = MessageBus::new();
    let (handler, seen, gate) = gated_recorder();
    bus.subscribe("e", handler, SubscribeOptions::named("e"))
        .unwrap();
    bus.publish(price("e", 0)).await.unwrap();
    bus.publish(price("e", 1).with_ttl(Duration::from_millis(20)))
        .await
        .unwrap();
    bus.publish(price("e", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    gate.add_permits(10);
    eventually("processed", || bus.stats().in_flight == 0).await;
    assert_eq!(*seen.lock().unwrap(), vec![0, 2]);
    assert_eq!(bus.stats().expired, 1);
    // Already expired at publish time: refused.
    let stale = price("e", 3)
        .with_identity(MessageId::new(), 0)
        .with_ttl(Duration::from_millis(1));
    assert_eq!(bus.publish(stale).await.unwrap_err(), PublishError::Expired);
}

#[tokio::test]
async fn shutdown_drains_then_refuses_and_reports_leftovers() {
    let bus = MessageBus::new();
    let (h, seen) = recorder();
    bus.subscribe("z", h, SubscribeOptions::named("quick"))
        .unwrap();
    let (stuck, _, _gate) = gated_recorder();
    bus.subscribe("z", stuck, SubscribeOptions::named("stuck"))
        .unwrap();
    for n in 0..20 {
        bus.publish(price("z", n)).await.unwrap();
    }
    let report = bus.shutdown(Duration::from_millis(200)).await;
    assert!(!report.drained);
    assert_eq!(seen.lock().unwrap().len(), 20, "the healthy queue drained");
    // One message is stuck in the handler; the other 19 were still queued.
    assert_eq!(report.left.get("stuck"), Some(&19));
    assert_eq!(report.stats.dropped.get(&DropReason::Shutdown), Some(&19));
    assert_eq!(
        bus.publish(price("z", 99)).await.unwrap_err(),
        PublishError::BusClosed
    );
    let (h, _) = recorder();
    assert!(bus.subscribe("z", h, SubscribeOptions::default()).is_err());
}

#[tokio::test]
async fn stats_report_latency_and_queue_depth() {
    let bus = MessageBus::new();
    bus.subscribe(
        "lat",
        Handler::from_async(|_e: Arc<Envelope>| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        }),
        SubscribeOptions::named("lat"),
    )
    .unwrap();
    for n in 0..20 {
        bus.publish(price("lat", n)).await.unwrap();
    }
    assert!(bus.stats().in_flight > 0);
    eventually("done", || bus.stats().subscriptions[0].latency.count == 20).await;
    let s = bus.stats();
    let lat = &s.subscriptions[0].latency;
    assert_eq!(lat.count, 20);
    assert!(lat.p50_us >= 2000.0, "{lat:?}");
    assert!(lat.p99_us >= lat.p50_us && lat.max_us >= lat.p99_us);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.subscriptions[0].queue_depth, 0);
}

/// A miniature of the real flow: prices -> a signal agent -> a trader.
#[tokio::test]
async fn end_to_end_flow_through_the_bus() {
    let bus = MessageBus::new();
    let signal_bus = bus.clone();
    bus.subscribe(
        "data.price_update.>",
        Handler::from_async(move |e: Arc<Envelope>| {
            let bus = signal_bus.clone();
            async move {
                let Payload::DataPriceUpdate(p) = e.payload() else {
                    return Ok(());
                };
                let direction = if p.price > Decimal::new(50, 0) {
                    SignalDirection::Short
                } else {
                    SignalDirection::Long
                };
                let signal = Signal::new(SignalFields {
                    symbol: p.symbol.clone(),
                    strategy: "threshold".into(),
                    direction,
                    confidence: 0.9,
                    price: p.price,
                    timestamp_ms: p.timestamp_ms,
                    reason: "test".into(),
                })?;
                let topic = Topic::new(format!("signal.generated.{}", p.symbol))?;
                bus.publish(Envelope::new(
                    AgentId::new("signals"),
                    topic,
                    Payload::SignalGenerated(signal),
                ))
                .await?;
                Ok(())
            }
        }),
        SubscribeOptions::named("signals"),
    )
    .unwrap();
    let (longs, shorts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (l, s) = (longs.clone(), shorts.clone());
    bus.subscribe(
        "signal.generated",
        Handler::blocking(move |e| {
            if let Payload::SignalGenerated(sig) = e.payload() {
                match sig.direction {
                    SignalDirection::Long => l.fetch_add(1, Ordering::SeqCst),
                    _ => s.fetch_add(1, Ordering::SeqCst),
                };
            }
            Ok(())
        }),
        SubscribeOptions::named("trader"),
    )
    .unwrap();
    for n in 1..=100 {
        bus.publish(price("data.price_update.BTC", n))
            .await
            .unwrap();
    }
    eventually("trader saw 100", || {
        longs.load(Ordering::SeqCst) + shorts.load(Ordering::SeqCst) == 100
    })
    .await;
    assert_eq!(longs.load(Ordering::SeqCst), 50);
    let report = bus.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.stats.published, 200);
    assert_eq!(report.stats.delivered, 200);
    assert_eq!(report.stats.failed, 0);
}

#[tokio::test]
async fn one_subscription_with_several_patterns_gets_each_message_once() {
    let bus = MessageBus::new();
    let (h, seen) = recorder();
    let id = bus
        .subscribe_many(
            &["data.>", "data.price.*", "signals"],
            h,
            SubscribeOptions::named("many"),
        )
        .unwrap();
    bus.publish(price("data.price.BTC", 1)).await.unwrap();
    bus.publish(price("signals.x", 2)).await.unwrap();
    bus.publish(price("other", 3)).await.unwrap();
    eventually("two delivered", || seen.lock().unwrap().len() == 2).await;
    assert_eq!(
        bus.stats().subscriptions[0].pattern,
        "data.>, data.price.*, signals"
    );
    assert!(bus.unsubscribe(id));
    bus.publish(price("data.price.BTC", 4)).await.unwrap();
    assert_eq!(bus.stats().unrouted, 2, "gone from every pattern");
    assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_means_everything_caused_was_handled_too() {
    // a -> b -> c, each handler publishing the next hop before returning;
    // b waits for the test's go-ahead (a slow handler, without racing the
    // clock). Once the bus says it is quiet, the whole chain is done.
    let bus = MessageBus::new();
    let reached_c = Arc::new(AtomicUsize::new(0));
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let forward =
        |bus: &MessageBus,
         to: &'static str,
         wait: Option<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>| {
            let bus = bus.clone();
            Handler::blocking(move |e| {
                if let Some(gate) = &wait {
                    gate.lock().unwrap().recv().map_err(HandlerError::new)?;
                }
                bus.publish_blocking(price(to, tag_of(e)))
                    .map(|_| ())
                    .map_err(HandlerError::new)
            })
        };
    bus.subscribe("a", forward(&bus, "b", None), SubscribeOptions::named("a"))
        .unwrap();
    bus.subscribe(
        "b",
        forward(&bus, "c", Some(gate)),
        SubscribeOptions::named("b"),
    )
    .unwrap();
    let c = reached_c.clone();
    bus.subscribe(
        "c",
        Handler::blocking(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
        SubscribeOptions::named("c"),
    )
    .unwrap();
    assert!(bus.is_quiet(), "nothing published yet");
    for n in 1..=200 {
        bus.publish(price("a", n)).await.unwrap();
        assert!(!bus.is_quiet(), "just published {n}");
        go.send(()).unwrap();
        while !bus.is_quiet() {
            tokio::task::yield_now().await;
        }
        assert_eq!(reached_c.load(Ordering::SeqCst), n as usize);
    }
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_subscription_hands_over_one_message_at_a_time_in_priority_order() {
    use bus_core::bus::Pull;
    let bus = MessageBus::new();
    let mut pulled = bus
        .subscribe_pulled(&["prices"], SubscribeOptions::named("puller"))
        .unwrap();
    assert!(matches!(pulled.next(true), Pull::Empty));
    bus.publish(price("prices.low", 1).with_priority(Priority::Low))
        .await
        .unwrap();
    bus.publish(price("prices.high", 2).with_priority(Priority::High))
        .await
        .unwrap();
    // Asked to idle above: the first publish rang the doorbell.
    assert!(pulled.doorbell().try_recv().is_ok());
    let Pull::Message(first) = pulled.next(false) else {
        panic!("a message is waiting");
    };
    assert_eq!(tag_of(&first), 2, "HIGH before LOW");
    // Taken and not settled: nothing more is handed over, and the bus is
    // not quiet (the message is being handled).
    assert!(matches!(pulled.next(false), Pull::Empty));
    assert!(!bus.is_quiet());
    pulled.settle(&Ok(()));
    let Pull::Message(second) = pulled.next(false) else {
        panic!("the second message is waiting");
    };
    assert_eq!(tag_of(&second), 1);
    pulled.settle(&Ok(()));
    assert!(bus.is_quiet());
    assert_eq!(bus.stats().subscriptions[0].delivered, 2);
    // Dropping it unsubscribes.
    drop(pulled);
    bus.publish(price("prices.after", 3)).await.unwrap();
    assert_eq!(bus.stats().subscriptions.len(), 0);
    bus.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_message_settled_as_failed_is_redelivered_when_reliable() {
    use bus_core::bus::reliability::RetryPolicy;
    use bus_core::bus::Pull;
    let bus = MessageBus::new();
    let retry = RetryPolicy {
        base: Duration::from_millis(1),
        factor: 2.0,
        cap: Duration::from_millis(5),
        jitter: 0.0,
    };
    let mut pulled = bus
        .subscribe_pulled(
            &["prices"],
            SubscribeOptions::named("puller").with_retry(retry),
        )
        .unwrap();
    bus.publish(price("prices.a", 7).with_delivery_mode(DeliveryMode::AtLeastOnce))
        .await
        .unwrap();
    let Pull::Message(first) = pulled.next(false) else {
        panic!("a message is waiting");
    };
    pulled.settle(&Err(HandlerError::new("not yet")));
    let mut again = None;
    eventually("the redelivery", || {
        if let Pull::Message(m) = pulled.next(false) {
            again = Some(m);
        }
        again.is_some()
    })
    .await;
    assert_eq!(again.unwrap().id, first.id, "the same message, redelivered");
    pulled.settle(&Ok(()));
    bus.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_consumers_take_every_message_and_still_park_and_wake() {
    // Latency mode: async and blocking consumers spin 1 ms on an empty
    // queue; messages come in bursts and after pauses longer than the spin
    // (the consumers park, and the doorbell wakes them).
    let bus = MessageBus::new();
    let spin = Duration::from_millis(1);
    let (fast, fast_seen) = recorder();
    bus.subscribe(
        "x",
        fast,
        SubscribeOptions::named("async").with_idle_spin(spin),
    )
    .unwrap();
    let blocking_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = blocking_seen.clone();
    bus.subscribe(
        "x",
        Handler::blocking(move |e| {
            seen.lock().unwrap().push(tag_of(e));
            Ok(())
        }),
        SubscribeOptions::named("blocking").with_idle_spin(spin),
    )
    .unwrap();
    let mut n = 0;
    for burst in [1, 50, 3, 200] {
        for _ in 0..burst {
            bus.publish(price("x", n)).await.unwrap();
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all: Vec<i64> = (0..n).collect();
    eventually("both got all", || {
        *fast_seen.lock().unwrap() == all && *blocking_seen.lock().unwrap() == all
    })
    .await;
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained);
}
