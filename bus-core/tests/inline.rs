//! The inline bus: synchronous, deterministic delivery for backtests.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bus_core::model::payload::*;
use bus_core::prelude::*;
use rust_decimal::Decimal;

fn price(topic: &str, n: i64) -> Envelope {
    let p = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::new(n.max(1), 0),
        timestamp_ms: n,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("c"),
        Topic::new(topic).unwrap(),
        Payload::DataPriceUpdate(p),
    )
    .with_identity(MessageId::from_u128(n as u128), n)
}

fn n_of(e: &Envelope) -> i64 {
    match e.payload() {
        Payload::DataPriceUpdate(p) => p.timestamp_ms,
        _ => -1,
    }
}

/// Builds a bus whose handlers log "name:n" and publish follow-ups, and runs
/// a fixed script through it.
fn run_script() -> Vec<String> {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut bus = InlineBus::new();
    let l = log.clone();
    bus.subscribe("a", "in.>", None, move |e, out| {
        l.borrow_mut().push(format!("a:{}", n_of(e)));
        out.publish(price("mid.x", n_of(e) * 10));
        out.publish(price("mid.y", n_of(e) * 10 + 1));
        Ok(())
    })
    .unwrap();
    let l = log.clone();
    bus.subscribe("b", "in", None, move |e, _| {
        l.borrow_mut().push(format!("b:{}", n_of(e)));
        Ok(())
    })
    .unwrap();
    let l = log.clone();
    bus.subscribe("c", "mid.*", None, move |e, out| {
        l.borrow_mut().push(format!("c:{}", n_of(e)));
        if n_of(e) % 10 == 0 {
            out.publish(price("out", n_of(e) + 5));
        }
        Ok(())
    })
    .unwrap();
    let l = log.clone();
    bus.subscribe("d", "out", None, move |e, _| {
        l.borrow_mut().push(format!("d:{}", n_of(e)));
        Ok(())
    })
    .unwrap();
    for n in 1..=3 {
        bus.publish(&price("in.q", n));
    }
    let stats = bus.stats();
    assert_eq!(stats.published, 3 + 6 + 3);
    assert_eq!(stats.failed, 0);
    let result = log.borrow().clone();
    result
}

#[test]
fn delivery_order_is_publish_order_and_identical_every_run() {
    let first = run_script();
    assert_eq!(
        &first[..7],
        &["a:1", "b:1", "c:10", "c:11", "d:15", "a:2", "b:2"],
        "a message reaches all its handlers, then its follow-ups go out in order"
    );
    for _ in 0..20 {
        assert_eq!(run_script(), first);
    }
}

/// Follow-ups go out first in, first out, however deep the cascade; a
/// batch (`publish_all`) works through each message's cascade before the
/// next; a panicking handler's follow-ups are dropped, its siblings' kept.
#[test]
fn follow_ups_are_first_in_first_out_at_every_depth() {
    // Message n publishes n*10+1 and n*10+2 below depth 3; 7 panics after
    // publishing (its two follow-ups are dropped).
    let children = |n: i64| -> Vec<i64> {
        if n < 100 {
            vec![n * 10 + 1, n * 10 + 2]
        } else {
            vec![]
        }
    };
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut bus = InlineBus::new();
    let l = log.clone();
    bus.subscribe("tree", "t", None, move |e, out| {
        let n = n_of(e);
        l.borrow_mut().push(n);
        for child in children(n) {
            out.publish(price("t", child));
        }
        if n == 12 {
            panic!("twelve");
        }
        Ok(())
    })
    .unwrap();
    let mut out = Outbox::new();
    out.publish(price("t", 1));
    out.publish(price("t", 2));
    bus.publish_all(&mut out);
    assert!(out.is_empty());
    // The model: a queue per top-level message.
    let mut expected = Vec::new();
    for root in [1, 2] {
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(n) = queue.pop_front() {
            expected.push(n);
            if n != 12 {
                queue.extend(children(n));
            }
        }
    }
    assert_eq!(*log.borrow(), expected);
    assert_eq!(&expected[..7], &[1, 11, 12, 111, 112, 2, 21]);
    assert_eq!(bus.stats().panicked, 1);
}

#[test]
fn failures_and_panics_are_contained() {
    let mut bus = InlineBus::new();
    let bad = bus
        .subscribe("bad", "t", None, |e, _| match n_of(e) % 2 {
            0 => Err(HandlerError::new("nope")),
            _ => panic!("bug"),
        })
        .unwrap();
    let seen = Rc::new(RefCell::new(0));
    let s = seen.clone();
    let good = bus
        .subscribe("good", "t", None, move |_, _| {
            *s.borrow_mut() += 1;
            Ok(())
        })
        .unwrap();
    for n in 0..10 {
        bus.publish(&price("t", n));
    }
    assert_eq!(*seen.borrow(), 10);
    let stats = bus.stats();
    assert_eq!((stats.delivered, stats.failed, stats.panicked), (10, 10, 5));
    assert_eq!(bus.subscription_counts(bad), Some((0, 10)));
    assert_eq!(bus.subscription_counts(good), Some((10, 0)));
}

#[test]
fn simulated_clock_expires_messages_and_filters_apply() {
    let mut bus = InlineBus::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe(
        "f",
        "t",
        Some(Filter::min_priority(Priority::High)),
        move |e, _| {
            s.borrow_mut().push(n_of(e));
            Ok(())
        },
    )
    .unwrap();
    bus.set_clock(100);
    bus.publish(
        &price("t", 1)
            .with_priority(Priority::High)
            .with_ttl(Duration::from_millis(50)),
    );
    bus.publish(
        &price("t", 200)
            .with_priority(Priority::High)
            .with_ttl(Duration::from_millis(50)),
    );
    bus.publish(&price("t", 300));
    assert_eq!(*seen.borrow(), vec![200]);
    assert_eq!(bus.stats().expired, 1);
    assert_eq!(bus.stats().unrouted, 1);
}

#[test]
fn unsubscribe_removes_one() {
    let mut bus = InlineBus::new();
    let count = Rc::new(RefCell::new((0, 0)));
    let (c1, c2) = (count.clone(), count.clone());
    let first = bus
        .subscribe("1", "t", None, move |_, _| {
            c1.borrow_mut().0 += 1;
            Ok(())
        })
        .unwrap();
    bus.subscribe("2", "t", None, move |_, _| {
        c2.borrow_mut().1 += 1;
        Ok(())
    })
    .unwrap();
    bus.publish(&price("t", 1));
    let pattern = TopicPattern::new("t").unwrap();
    assert!(bus.unsubscribe(first, &pattern));
    assert!(!bus.unsubscribe(first, &pattern));
    bus.publish(&price("t", 2));
    assert_eq!(*count.borrow(), (1, 2));
}
