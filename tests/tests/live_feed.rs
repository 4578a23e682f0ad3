//! The live feed against a local venue that speaks HyperLiquid's
//! protocols (`tests::mock_venue`): one candle per closed interval, the
//! reconnection and back-fill of a dropped connection, stall detection,
//! and bad frames that never stop the feed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_collector::venue::feed::{FeedCounters, FeedEvent, FeedHealth, FeedSettings, LiveFeed};
use agent_collector::venue::hyperliquid::{self, HyperLiquid};
use agent_collector::venue::Channels;
use bus_core::model::payload::{Candle, Symbol};
use serde_json::Value;
use tests::mock_venue::{frame, stream, Bar, MockVenue, Step};

const MINUTE: i64 = 60_000;
const START: i64 = 1_733_529_600_000;

fn btc() -> Symbol {
    Symbol::new("BTC").unwrap()
}

fn settings(stall: Duration) -> FeedSettings {
    let mut settings = FeedSettings::new(vec![btc()], "1m", MINUTE);
    settings.stall_after = stall;
    settings.ping_every = Duration::from_millis(100);
    settings.reconnect.base = Duration::from_millis(20);
    settings.reconnect.cap = Duration::from_millis(200);
    settings.request_timeout = Duration::from_secs(5);
    settings
}

fn start(venue: &MockVenue, settings: FeedSettings) -> LiveFeed {
    let hyperliquid = HyperLiquid {
        stream_url: venue.ws_url.clone(),
        info_url: venue.info_url.clone(),
    };
    LiveFeed::start(Arc::new(hyperliquid), settings).expect("the feed starts")
}

/// The venue's history of final candles, for back-fill.
fn history(bars: &[Bar]) -> Vec<Value> {
    bars.iter().map(|b| b.json("BTC", "1m", MINUTE)).collect()
}

/// Eight bars of a seeded market (with their history), the stream going
/// silent after the first three until the client reconnects.
fn silent_after_three_bars(seed: u64) -> (Vec<Bar>, MockVenue) {
    let bars = Bar::walk(seed, 8, START, MINUTE, 998_500);
    let mut script = stream(&bars[..3], "BTC", "1m", MINUTE, Duration::ZERO);
    script.push(Step::Silence);
    script.extend(stream(&bars[3..], "BTC", "1m", MINUTE, Duration::ZERO));
    let venue = MockVenue::start(script).with_history("BTC", history(&bars));
    (bars, venue)
}

/// What the venue's final snapshot of `bar` is, decoded: the candle the
/// feed must let out for its interval.
fn final_candle(bar: &Bar) -> Candle {
    let text = frame("candle", bar.json("BTC", "1m", MINUTE));
    match hyperliquid::decode(&text, &[]) {
        Ok(agent_collector::venue::Frame::Candle(candle)) => candle,
        other => panic!("{other:?}"),
    }
}

/// Events (with when they came) until `enough` holds of them.
fn collect(feed: &LiveFeed, enough: impl Fn(&[FeedEvent]) -> bool) -> Vec<(Instant, FeedEvent)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<(Instant, FeedEvent)> = Vec::new();
    let mut events: Vec<FeedEvent> = Vec::new();
    while !enough(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; got {events:#?}");
        if let Ok(event) = feed
            .events()
            .recv_timeout(left.min(Duration::from_millis(100)))
        {
            events.push(event.clone());
            got.push((Instant::now(), event));
        }
    }
    got
}

fn candles(events: &[FeedEvent]) -> Vec<Candle> {
    events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::Candle(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn just_events(got: &[(Instant, FeedEvent)]) -> Vec<FeedEvent> {
    got.iter().map(|(_, e)| e.clone()).collect()
}

#[test]
fn forming_updates_become_exactly_one_candle_per_closed_interval() {
    let bars = Bar::walk(1, 12, START, MINUTE, 998_500);
    let venue = MockVenue::start(stream(&bars, "BTC", "1m", MINUTE, Duration::ZERO));
    let mut settings = settings(Duration::from_secs(10));
    settings.channels = Channels {
        trades: true,
        book: true,
        mids: true,
    };
    let feed = start(&venue, settings);
    // The last bar never closes: nothing later comes.
    let got = collect(&feed, |events| candles(events).len() == bars.len() - 1);
    let events = just_events(&got);
    let expected: Vec<Candle> = bars[..bars.len() - 1].iter().map(final_candle).collect();
    assert_eq!(candles(&events), expected);
    // The forming bar's price goes out with each snapshot.
    let forming = events
        .iter()
        .filter(|e| matches!(e, FeedEvent::Forming(_)))
        .count();
    assert!(forming >= 3 * (bars.len() - 1), "{forming} forming prices");
    assert_eq!(events[0], FeedEvent::Health(FeedHealth::Live));
    // Subscribed to what was asked, once.
    let requests: Vec<Value> = venue
        .requests()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .filter(|r: &Value| r["method"] == "subscribe")
        .map(|r| r["subscription"].clone())
        .collect();
    assert_eq!(
        requests,
        vec![
            serde_json::json!({"type": "candle", "coin": "BTC", "interval": "1m"}),
            serde_json::json!({"type": "trades", "coin": "BTC"}),
            serde_json::json!({"type": "l2Book", "coin": "BTC"}),
            serde_json::json!({"type": "allMids"}),
        ]
    );
    // Keep-alive pings went out while it waited.
    std::thread::sleep(Duration::from_millis(350));
    let pings = venue
        .requests()
        .iter()
        .filter(|r| r.contains("\"ping\""))
        .count();
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(FeedCounters::get(&feed.counters().malformed), 0);
    assert_eq!(venue.connections(), 1);
}

#[test]
fn a_dropped_connection_reconnects_resubscribes_and_backfills_the_gap_without_duplicates() {
    let bars = Bar::walk(2, 20, START, MINUTE, 998_500);
    let mut script = stream(&bars[..6], "BTC", "1m", MINUTE, Duration::ZERO);
    // Bar 6 has begun forming when the connection drops; the stream comes
    // back in bar 10.
    let partial = bars[6].forming()[1];
    script.push(Step::Send(frame(
        "candle",
        partial.json("BTC", "1m", MINUTE),
    )));
    script.push(Step::Drop);
    script.extend(stream(&bars[10..], "BTC", "1m", MINUTE, Duration::ZERO));
    // The first back-fill answer fails: retried.
    let venue = MockVenue::start(script)
        .with_history("BTC", history(&bars))
        .failing_snapshots(1);
    let feed = start(&venue, settings(Duration::from_secs(10)));
    let got = collect(&feed, |events| candles(events).len() == bars.len() - 1);
    let events = just_events(&got);
    let expected: Vec<Candle> = bars[..bars.len() - 1].iter().map(final_candle).collect();
    // Every interval once, in order; bar 6 as it closed, not as it was when
    // the connection dropped.
    assert_eq!(candles(&events), expected);
    assert!(events
        .iter()
        .any(|e| matches!(e, FeedEvent::Health(FeedHealth::Disconnected { .. }))));
    assert_eq!(venue.connections(), 2);
    let subscriptions = venue
        .requests()
        .iter()
        .filter(|r| r.contains("\"subscribe\"") && r.contains("candle"))
        .count();
    assert_eq!(subscriptions, 2, "re-subscribed after reconnecting");
    let asked = venue.snapshot_requests();
    assert_eq!(asked.len(), 2, "one failure, one retry: {asked:?}");
    for req in &asked {
        assert_eq!(req["coin"], "BTC");
        assert_eq!(req["startTime"], START + 6 * MINUTE);
        assert_eq!(req["endTime"], START + 10 * MINUTE - 1);
    }
    assert_eq!(FeedCounters::get(&feed.counters().backfilled), 4);
    assert_eq!(FeedCounters::get(&feed.counters().disconnections), 1);
}

#[test]
fn a_silent_feed_is_reported_stalled_in_time_then_recovers_with_no_bar_missing() {
    let stall = Duration::from_millis(400);
    let (bars, venue) = silent_after_three_bars(3);
    let feed = start(&venue, settings(stall));
    let got = collect(&feed, |events| candles(events).len() == bars.len() - 1);
    let last_data_before_stall = got
        .iter()
        .take_while(|(_, e)| !matches!(e, FeedEvent::Health(FeedHealth::Stalled { .. })))
        .filter(|(_, e)| !matches!(e, FeedEvent::Health(_)))
        .last()
        .map(|(at, _)| *at)
        .expect("data before the stall");
    let (stalled_at, _) = got
        .iter()
        .find(|(_, e)| matches!(e, FeedEvent::Health(FeedHealth::Stalled { .. })))
        .expect("a stall reported");
    let waited = stalled_at.duration_since(last_data_before_stall);
    assert!(
        waited >= stall.mul_f64(0.9) && waited <= stall + Duration::from_secs(2),
        "stall reported after {waited:?}"
    );
    let events = just_events(&got);
    let health: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| matches!(e, FeedEvent::Health(_)))
        .collect();
    assert!(
        matches!(
            health[..],
            [
                FeedEvent::Health(FeedHealth::Live),
                FeedEvent::Health(FeedHealth::Stalled { .. }),
                FeedEvent::Health(FeedHealth::Disconnected { .. }),
                FeedEvent::Health(FeedHealth::Live),
            ]
        ),
        "{health:?}"
    );
    let expected: Vec<Candle> = bars[..bars.len() - 1].iter().map(final_candle).collect();
    assert_eq!(candles(&events), expected);
    assert_eq!(venue.connections(), 2);
    assert_eq!(FeedCounters::get(&feed.counters().stalls), 1);
}

#[test]
fn malformed_truncated_unknown_and_out_of_order_frames_are_counted_and_the_feed_goes_on() {
    let bars = Bar::walk(4, 10, START, MINUTE, 998_500);
    let mut script = stream(&bars[..4], "BTC", "1m", MINUTE, Duration::ZERO);
    let late = bars[1].json("BTC", "1m", MINUTE);
    let mut bad_price = bars[4].json("BTC", "1m", MINUTE);
    bad_price["c"] = Value::from("ninety");
    for text in [
        "not json at all".to_string(),
        r#"{"channel":"candle","data":{"t":17335"#.to_string(),
        frame("somethingNew", serde_json::json!({"x": 1})),
        frame("candle", bad_price),
        // A snapshot of an interval already closed.
        frame("candle", late),
    ] {
        script.push(Step::Send(text));
    }
    script.extend(stream(&bars[4..], "BTC", "1m", MINUTE, Duration::ZERO));
    let venue = MockVenue::start(script);
    let feed = start(&venue, settings(Duration::from_secs(10)));
    let got = collect(&feed, |events| candles(events).len() == bars.len() - 1);
    let expected: Vec<Candle> = bars[..bars.len() - 1].iter().map(final_candle).collect();
    assert_eq!(candles(&just_events(&got)), expected);
    assert_eq!(FeedCounters::get(&feed.counters().malformed), 4);
    assert_eq!(FeedCounters::get(&feed.counters().stale_snapshots), 1);
    assert_eq!(
        venue.connections(),
        1,
        "bad frames never cost the connection"
    );
}

#[test]
fn a_gap_the_venue_cannot_fill_is_reported_and_later_candles_still_go_out() {
    let bars = Bar::walk(5, 10, START, MINUTE, 998_500);
    let mut script = stream(&bars[..3], "BTC", "1m", MINUTE, Duration::ZERO);
    script.push(Step::Drop);
    script.extend(stream(&bars[6..], "BTC", "1m", MINUTE, Duration::ZERO));
    let venue = MockVenue::start(script).failing_snapshots(100);
    let mut settings = settings(Duration::from_secs(10));
    settings.backfill_attempts = 2;
    let feed = start(&venue, settings);
    // Bars 0 and 1 closed before the drop; 6, 7 and 8 after.
    let got = collect(&feed, |events| candles(events).len() == 5);
    let events = just_events(&got);
    let times: Vec<i64> = candles(&events)
        .iter()
        .map(|c| (c.open_time_ms - START) / MINUTE)
        .collect();
    assert_eq!(times, vec![0, 1, 6, 7, 8]);
    let unfilled = events.iter().find_map(|e| match e {
        FeedEvent::Health(FeedHealth::GapUnfilled { gap, .. }) => Some(*gap),
        _ => None,
    });
    let gap = unfilled.expect("the gap reported");
    assert_eq!(
        (gap.from_ms, gap.until_ms),
        (START + 2 * MINUTE, START + 6 * MINUTE)
    );
    assert_eq!(venue.snapshot_requests().len(), 2, "tried twice");
    assert_eq!(FeedCounters::get(&feed.counters().gaps_unfilled), 1);
}

#[test]
fn the_live_collector_warns_risk_of_a_stale_feed_and_clears_it_when_data_flows_again() {
    use agent_collector::CollectorAgent;
    use bus_core::prelude::*;
    let stall = Duration::from_millis(300);
    let (bars, venue) = silent_after_three_bars(6);
    let feed = start(&venue, settings(stall));
    let mut collector = CollectorAgent::live(AgentId::new("collector"), feed, stall);
    let status = collector
        .feed_status()
        .expect("a live collector has a status");
    let mut out = Outbox::new();
    let mut published: Vec<Envelope> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let warnings = |published: &[Envelope]| {
        published
            .iter()
            .filter_map(|e| match e.payload() {
                Payload::RiskWarning(alert) => Some((e.topic.to_string(), alert.clone())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let candles = |published: &[Envelope]| {
        published
            .iter()
            .filter(|e| e.topic.as_str() == "data.candle.BTC.1m")
            .count()
    };
    while warnings(&published).len() < 2 || candles(&published) < bars.len() - 1 {
        assert!(Instant::now() < deadline, "{published:#?}");
        assert_ne!(collector.produce(&mut out), Produce::Done);
        published.extend(out.drain());
    }
    let warnings = warnings(&published);
    let (topic, stale) = &warnings[0];
    assert_eq!(topic, "risk.warning.stale_feed");
    assert!(stale.value >= stale.threshold, "{stale:?}");
    assert_eq!(stale.threshold, rust_decimal::Decimal::new(3, 1));
    let (_, live) = &warnings[1];
    assert!(live.value.is_zero() && live.message.contains("flowing again"));
    assert!(published
        .iter()
        .any(|e| e.topic.as_str() == "data.price_update.BTC"));
    let status = status.lock().unwrap().clone();
    assert_eq!(status.health, "live");
    assert_eq!(status.prices[0].0, btc());
}
