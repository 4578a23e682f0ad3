//! HyperLiquid frames in their documented format (fixtures in
//! `tests/fixtures/hyperliquid/`) decode into Bistoury's market messages,
//! bad frames are refused with a reason, and forming-candle snapshots
//! become one candle per closed interval, gaps named and back-filled with
//! no duplicate and none missing.

use agent_collector::venue::closing::{CandleCloser, Gap};
use agent_collector::venue::hyperliquid::{decode, Subscription, PING};
use agent_collector::venue::Frame;
use bus_core::model::payload::{Candle, CandleFields, Side, Symbol};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn frames() -> Vec<Frame> {
    include_str!("fixtures/hyperliquid/frames.jsonl")
        .lines()
        .map(|line| decode(line, &[]).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn every_channel_decodes() {
    let frames = frames();
    assert!(matches!(&frames[0], Frame::Subscribed(s) if s.contains("\"candle\"")));
    let Frame::Candle(first) = &frames[1] else {
        panic!("{:?}", frames[1])
    };
    assert_eq!(first.symbol.as_str(), "BTC");
    assert_eq!(&*first.interval, "1m");
    assert_eq!(first.open_time_ms, 1_733_529_600_000);
    assert_eq!((first.open, first.close), (dec!(99850.0), dec!(99871.0)));
    assert_eq!(first.volume, dec!(3.21456));
    let Frame::Trades(trades) = &frames[3] else {
        panic!("{:?}", frames[3])
    };
    assert_eq!(trades.len(), 2);
    assert_eq!(
        (trades[0].side, trades[0].quantity),
        (Side::Buy, dec!(0.01234))
    );
    assert_eq!(
        (trades[1].side, trades[1].price),
        (Side::Sell, dec!(99901.0))
    );
    let Frame::Book(book) = &frames[5] else {
        panic!("{:?}", frames[5])
    };
    assert_eq!(book.bids[0].price, dec!(99890.0));
    assert_eq!(book.asks[1].quantity, dec!(2.0));
    let Frame::Mids(mids) = &frames[6] else {
        panic!("{:?}", frames[6])
    };
    // Spot pairs are not coins: passed by.
    let names: Vec<&str> = mids.iter().map(|m| m.symbol.as_str()).collect();
    assert_eq!(names, ["BTC", "ETH"]);
    assert_eq!(frames[7], Frame::Pong);
    let line = include_str!("fixtures/hyperliquid/frames.jsonl")
        .lines()
        .nth(6)
        .unwrap();
    let Ok(Frame::Mids(followed)) = decode(line, &[Symbol::new("ETH").unwrap()]) else {
        panic!()
    };
    assert_eq!(followed.len(), 1);
}

#[test]
fn requests_are_the_documented_json() {
    let candle = Subscription::Candle {
        coin: "BTC".into(),
        interval: "1m".into(),
    };
    let request: serde_json::Value = serde_json::from_str(&candle.request()).unwrap();
    assert_eq!(
        request,
        serde_json::json!({"method":"subscribe","subscription":{"type":"candle","coin":"BTC","interval":"1m"}})
    );
    let book: serde_json::Value =
        serde_json::from_str(&Subscription::Book { coin: "ETH".into() }.request()).unwrap();
    assert_eq!(book["subscription"]["type"], "l2Book");
    assert_eq!(PING, r#"{"method":"ping"}"#);
}

#[test]
fn bad_frames_are_refused_with_the_reason() {
    for (frame, says) in [
        ("not json", "not JSON"),
        (r#"{"data":{}}"#, "no `channel`"),
        (r#"{"channel":"weather","data":{}}"#, "unknown channel"),
        (r#"{"channel":"candle"}"#, "no `data`"),
        (
            r#"{"channel":"candle","data":{"t":1,"T":2,"s":"BTC","i":"1m","o":"x","c":"1","h":"1","l":"1","v":"1","n":1}}"#,
            "`o`: \"x\" is not a decimal",
        ),
        (
            r#"{"channel":"candle","data":{"t":"soon","T":2,"s":"BTC","i":"1m","o":"1","c":"1","h":"1","l":"1","v":"1","n":1}}"#,
            "`t` is not an integer",
        ),
        (
            r#"{"channel":"trades","data":[{"coin":"BTC","side":"X","px":"1","sz":"1","time":1}]}"#,
            "neither B nor A",
        ),
        (
            r#"{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[]]}}"#,
            "[bids, asks]",
        ),
    ] {
        let error = decode(frame, &[]).expect_err(frame).to_string();
        assert!(error.contains(says), "{frame}: {error}");
    }
}

fn bar(minute: i64, close: i64) -> Candle {
    let price = Decimal::new(close, 0);
    Candle::new(CandleFields {
        symbol: Symbol::new("BTC").unwrap(),
        interval: "1m".into(),
        open_time_ms: minute * 60_000,
        open: price,
        high: price,
        low: price,
        close: price,
        volume: Decimal::ONE,
    })
    .unwrap()
}

fn minutes(candles: &[Candle]) -> Vec<i64> {
    candles.iter().map(|c| c.open_time_ms / 60_000).collect()
}

#[test]
fn a_candle_is_let_out_once_when_the_next_interval_begins() {
    let mut closer = CandleCloser::new(60_000);
    assert!(closer.snapshot(bar(0, 100)).candles.is_empty());
    assert!(
        closer.snapshot(bar(0, 101)).candles.is_empty(),
        "still forming"
    );
    assert_eq!(
        closer.forming(&Symbol::new("BTC").unwrap()).unwrap().close,
        dec!(101)
    );
    let closed = closer.snapshot(bar(1, 102));
    assert_eq!(minutes(&closed.candles), [0]);
    assert_eq!(
        closed.candles[0].close,
        dec!(101),
        "as its last snapshot had it"
    );
    assert!(closed.gap.is_none());
    assert!(
        closer.snapshot(bar(0, 99)).candles.is_empty(),
        "a late snapshot"
    );
    assert_eq!(closer.stale, 1);
}

#[test]
fn a_gap_is_named_filled_from_history_without_duplicates_and_what_followed_waits() {
    let mut closer = CandleCloser::new(60_000);
    closer.snapshot(bar(0, 100));
    closer.snapshot(bar(1, 101));
    // A reconnection: minutes 2-4 were never sent.
    let closed = closer.snapshot(bar(5, 105));
    assert_eq!(minutes(&closed.candles), [1]);
    assert_eq!(
        closed.gap,
        Some(Gap {
            from_ms: 120_000,
            until_ms: 300_000
        })
    );
    // Minute 5 closes before the back-fill comes: it waits.
    assert!(closer.snapshot(bar(6, 106)).candles.is_empty());
    // History overlaps what was let out (minute 1) and the forming one.
    let history = vec![
        bar(4, 104),
        bar(1, 101),
        bar(2, 102),
        bar(3, 103),
        bar(5, 105),
    ];
    let filled = closer.backfill(&Symbol::new("BTC").unwrap(), history);
    assert_eq!(minutes(&filled.candles), [2, 3, 4, 5]);
    assert_eq!(minutes(&closer.snapshot(bar(7, 107)).candles), [6]);
}

#[test]
fn a_gap_given_up_lets_out_what_waited() {
    let mut closer = CandleCloser::new(60_000);
    closer.snapshot(bar(0, 100));
    assert!(closer.snapshot(bar(3, 103)).gap.is_some());
    assert!(closer.snapshot(bar(4, 104)).candles.is_empty());
    let released = closer.give_up(&Symbol::new("BTC").unwrap());
    assert_eq!(minutes(&released.candles), [3]);
    assert_eq!(minutes(&closer.snapshot(bar(5, 105)).candles), [4]);
}

#[test]
fn back_fill_requests_page_the_range_and_answers_decode() {
    use agent_collector::venue::hyperliquid::{
        candle_snapshot_requests, decode_candle_snapshot, CANDLES_PER_SNAPSHOT,
    };
    let minute = 60_000;
    // 12,000 minutes: three pages of at most 5,000, ends inclusive, no
    // overlap, nothing past the range.
    let requests = candle_snapshot_requests("BTC", "1m", minute, 0, 12_000 * minute);
    let ranges: Vec<(i64, i64)> = requests
        .iter()
        .map(|r| {
            let r: serde_json::Value = serde_json::from_str(r).unwrap();
            assert_eq!(r["type"], "candleSnapshot");
            assert_eq!(r["req"]["coin"], "BTC");
            assert_eq!(r["req"]["interval"], "1m");
            (
                r["req"]["startTime"].as_i64().unwrap(),
                r["req"]["endTime"].as_i64().unwrap(),
            )
        })
        .collect();
    let page = CANDLES_PER_SNAPSHOT * minute;
    assert_eq!(
        ranges,
        [
            (0, page - 1),
            (page, 2 * page - 1),
            (2 * page, 12_000 * minute - 1)
        ]
    );
    assert!(candle_snapshot_requests("BTC", "1m", minute, 5, 5).is_empty());

    let candles =
        decode_candle_snapshot(include_str!("fixtures/hyperliquid/candle_snapshot.json")).unwrap();
    assert_eq!(minutes(&candles), [28_892_162, 28_892_163]);
    assert_eq!(candles[1].low, dec!(99851.5));
    let error = decode_candle_snapshot(r#"{"error":"bad request"}"#).unwrap_err();
    assert!(error.to_string().contains("not a list"), "{error}");
}
