//! The wire formats (JSON, and the compact binary codec): every message
//! type round-trips, and bad input gives an error naming the field, never
//! a panic.

use std::time::Duration;

use bus_core::model::payload::*;
use bus_core::model::wire::binary;
use bus_core::model::WireFormat;
use bus_core::prelude::*;
use bus_core::DecodeError;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn btc() -> Symbol {
    Symbol::new("BTC").unwrap()
}

fn sample(t: MessageType) -> Payload {
    let agent = AgentId::new("trader");
    let transition = AgentTransition {
        agent: agent.clone(),
        from: AgentState::Starting,
        to: AgentState::Running,
    };
    let alert = RiskAlert {
        limit: "max_drawdown".into(),
        symbol: Some(btc()),
        value: dec!(0.12),
        threshold: dec!(0.10),
        message: "drawdown 12% > 10%".into(),
    };
    let command = Command {
        symbols: vec![btc()],
        reason: "operator".into(),
    };
    match t {
        MessageType::SystemStartup => Payload::SystemStartup(Startup {
            version: "0.1.0".into(),
            agents: vec![agent],
        }),
        MessageType::SystemShutdown => Payload::SystemShutdown(Shutdown {
            reason: "done".into(),
        }),
        MessageType::SystemHealthCheck => Payload::SystemHealthCheck(HealthCheck {}),
        MessageType::SystemConfigUpdate => Payload::SystemConfigUpdate(
            ConfigUpdate::new(ConfigUpdateFields {
                key: "risk.max_drawdown".into(),
                value: "0.2".into(),
            })
            .unwrap(),
        ),
        MessageType::SystemHeartbeat => Payload::SystemHeartbeat(
            Heartbeat::new(HeartbeatFields {
                agent,
                sequence: 7,
                ttl_ms: 5000,
            })
            .unwrap(),
        ),
        MessageType::SystemDeadLetter => Payload::SystemDeadLetter(DeadLetter {
            original: Some(Box::new(Envelope::new(
                AgentId::new("collector"),
                Topic::new("data.price_update.BTC").unwrap(),
                sample(MessageType::DataPriceUpdate),
            ))),
            raw: None,
            subscription: "trader".into(),
            error: "refused".into(),
            attempts: 5,
            dead_lettered_at_ms: 9,
        }),
        MessageType::AgentStarted => Payload::AgentStarted(transition),
        MessageType::AgentStopped => Payload::AgentStopped(transition),
        MessageType::AgentPaused => Payload::AgentPaused(transition),
        MessageType::AgentResumed => Payload::AgentResumed(transition),
        MessageType::AgentError => Payload::AgentError(AgentErrorReport {
            agent,
            error: "boom".into(),
            fatal: false,
        }),
        MessageType::AgentHealthUpdate => Payload::AgentHealthUpdate(AgentHealth {
            agent,
            state: AgentState::Running,
            healthy: true,
            detail: "ok".into(),
        }),
        MessageType::DataCandle => Payload::DataCandle(
            Candle::new(CandleFields {
                symbol: btc(),
                interval: "1m".into(),
                open_time_ms: 1_700_000_000_000,
                open: dec!(100.5),
                high: dec!(101),
                low: dec!(99.9),
                close: dec!(100.7),
                volume: dec!(12.5),
            })
            .unwrap(),
        ),
        MessageType::DataPriceUpdate => Payload::DataPriceUpdate(
            PriceUpdate::new(PriceUpdateFields {
                symbol: btc(),
                price: dec!(65000.01),
                timestamp_ms: 1,
            })
            .unwrap(),
        ),
        MessageType::DataTrade => Payload::DataTrade(
            MarketTrade::new(MarketTradeFields {
                symbol: btc(),
                price: dec!(1.5),
                quantity: dec!(0.001),
                side: Side::Sell,
                timestamp_ms: 2,
            })
            .unwrap(),
        ),
        MessageType::DataOrderbook => Payload::DataOrderbook(
            OrderBook::new(OrderBookFields {
                symbol: btc(),
                bids: vec![
                    BookLevel {
                        price: dec!(99),
                        quantity: dec!(1),
                    },
                    BookLevel {
                        price: dec!(98),
                        quantity: dec!(2),
                    },
                ],
                asks: vec![BookLevel {
                    price: dec!(100),
                    quantity: dec!(3),
                }],
                timestamp_ms: 3,
            })
            .unwrap(),
        ),
        MessageType::DataFundingRate => Payload::DataFundingRate(FundingRate {
            symbol: btc(),
            rate: dec!(-0.0001),
            next_funding_ms: 4,
        }),
        MessageType::SignalGenerated => Payload::SignalGenerated(
            Signal::new(SignalFields {
                symbol: btc(),
                strategy: "rsi".into(),
                direction: SignalDirection::Long,
                confidence: 0.75,
                price: dec!(100),
                timestamp_ms: 5,
                reason: "rsi 25 < 30".into(),
            })
            .unwrap(),
        ),
        MessageType::SignalAggregated => Payload::SignalAggregated(
            AggregatedSignal::new(AggregatedSignalFields {
                symbol: btc(),
                direction: SignalDirection::Short,
                confidence: 0.5,
                price: dec!(100),
                timestamp_ms: 6,
                contributions: vec![SignalContribution {
                    strategy: "macd".into(),
                    direction: SignalDirection::Short,
                    confidence: 0.5,
                    weight: 1.0,
                }],
                rationale: Some("trend up, RSI not stretched".into()),
            })
            .unwrap(),
        ),
        MessageType::SignalAnalysisComplete => Payload::SignalAnalysisComplete(AnalysisComplete {
            symbol: btc(),
            timestamp_ms: 7,
            strategies: 5,
            signals: 2,
        }),
        MessageType::TradeOrderRequest => Payload::TradeOrderRequest(
            OrderRequest::new(OrderRequestFields {
                order_id: OrderId("o-1".into()),
                symbol: btc(),
                side: Side::Buy,
                quantity: dec!(0.5),
                order_type: OrderType::Limit,
                limit_price: Some(dec!(99.5)),
                reference_price: dec!(100),
                reason: "signal".into(),
            })
            .unwrap(),
        ),
        MessageType::TradeOrderFilled => Payload::TradeOrderFilled(
            Fill::new(FillFields {
                order_id: OrderId("o-1".into()),
                symbol: btc(),
                side: Side::Buy,
                quantity: dec!(0.5),
                price: dec!(99.5),
                fee: dec!(0.04975),
                timestamp_ms: 8,
            })
            .unwrap(),
        ),
        MessageType::TradeOrderCancelled => Payload::TradeOrderCancelled(OrderCancelled {
            order_id: OrderId("o-2".into()),
            symbol: btc(),
            reason: "refused".into(),
        }),
        MessageType::TradePositionUpdate => Payload::TradePositionUpdate(
            PositionUpdate::new(PositionUpdateFields {
                symbol: btc(),
                quantity: dec!(-0.5),
                average_price: dec!(99.5),
                mark_price: dec!(100),
                realised_pnl: dec!(0),
                unrealised_pnl: dec!(-0.25),
            })
            .unwrap(),
        ),
        MessageType::TradePnlUpdate => Payload::TradePnlUpdate(
            PnlUpdate::new(PnlUpdateFields {
                timestamp_ms: 9,
                cash: dec!(10000),
                realised_pnl: dec!(1.5),
                unrealised_pnl: dec!(-0.25),
                fees: dec!(0.1),
                equity: dec!(10001.15),
            })
            .unwrap(),
        ),
        MessageType::RiskLimitBreach => Payload::RiskLimitBreach(alert),
        MessageType::RiskWarning => Payload::RiskWarning(alert),
        MessageType::RiskEmergencyStop => Payload::RiskEmergencyStop(EmergencyStop {
            reason: "drawdown".into(),
            triggered_by: "max_drawdown".into(),
        }),
        MessageType::CommandStartCollection => Payload::CommandStartCollection(command),
        MessageType::CommandStopCollection => Payload::CommandStopCollection(command),
        MessageType::CommandPauseTrading => Payload::CommandPauseTrading(command),
        MessageType::CommandResumeTrading => Payload::CommandResumeTrading(command),
        MessageType::ResponseSuccess => Payload::ResponseSuccess(Success {
            detail: "approved".into(),
        }),
        MessageType::ResponseError => Payload::ResponseError(ErrorResponse {
            code: "risk_refused".into(),
            message: "too big".into(),
        }),
        MessageType::ResponseAck => Payload::ResponseAck(Ack {
            message_id: MessageId::new(),
        }),
    }
}

fn envelope(t: MessageType) -> Envelope {
    Envelope::new(
        AgentId::new("tester"),
        Topic::new(format!("{}.BTC", t.as_str())).unwrap(),
        sample(t),
    )
    .with_priority(Priority::High)
    .with_delivery_mode(DeliveryMode::AtLeastOnce)
    .with_ttl(Duration::from_secs(30))
    .with_reply_to(Topic::new("reply.tester").unwrap())
    .with_correlation_id(MessageId::new())
    .with_recipient(AgentId::new("risk"))
    .with_header("trace", "abc")
    .with_tag("paper")
}

#[test]
fn every_message_type_round_trips_through_json() {
    assert!(MessageType::ALL.len() >= 34);
    for t in MessageType::ALL {
        let original = envelope(*t);
        assert_eq!(original.message_type(), *t);
        let json = original.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["type"],
            t.as_str(),
            "type is the snake_case wire name"
        );
        let decoded = Envelope::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(decoded, original, "{t}");
        // Encoding the decoded message gives the same bytes: the format is stable.
        assert_eq!(decoded.to_json(), json);
        // The payload before the type (decoded once the type is known)
        // gives the same envelope as the type first (decoded in place).
        let payload_first = payload_first(&value);
        assert!(payload_first.find("\"payload\"") < payload_first.find("\"type\""));
        assert_eq!(
            Envelope::from_json(payload_first.as_bytes()).unwrap_or_else(|e| panic!("{t}: {e}")),
            original,
            "{t}"
        );
    }
}

/// Every message type, with and without its optional fields, with names
/// that need escaping: the JSON written is the bytes serde writes, and
/// reading it (or any mangled copy of it) gives what serde reads.
#[test]
fn json_written_and_read_as_serde_does() {
    let odd = AgentId::new("a \"quoted\" \\ name\nwith é and \u{1}");
    let mut envelopes = Vec::new();
    for t in MessageType::ALL {
        envelopes.push(envelope(*t));
        envelopes.push(Envelope::new(
            AgentId::new("tester"),
            Topic::new("x.y").unwrap(),
            sample(*t),
        ));
        envelopes.push(
            Envelope::new(odd.clone(), Topic::new("odd").unwrap(), sample(*t))
                .with_recipient(odd.clone())
                .with_header("k\"ey", "va\nlue")
                .with_tag("t\u{7f}ag\\")
                .with_identity(MessageId::from_u128(u128::MAX), -1_234_567)
                .with_priority(Priority::Critical)
                .with_delivery_mode(DeliveryMode::ExactlyOnce)
                .with_max_attempts(u32::MAX),
        );
    }
    let serde_read = |bytes: &[u8]| serde_json::from_slice::<Envelope>(bytes).ok();
    // A seeded stream of edits: bytes JSON gives meaning to, and others.
    let mut numbers = xorshift(0x2545_f491_4f6c_dd1d);
    let mut next = move |n: usize| (numbers() % n as u64) as usize;
    let alphabet = b"{}[]:,\"\\ \n0-19.eEnul\x01\xc3a";
    for envelope in &envelopes {
        let json = envelope.to_json_bytes();
        assert_eq!(json, serde_json::to_vec(envelope).unwrap(), "{envelope:?}");
        assert_eq!(Envelope::from_json(&json).ok().as_ref(), Some(envelope));
        for _ in 0..300 {
            let mut mangled = json.clone();
            let at = next(mangled.len());
            match next(3) {
                0 => mangled[at] = alphabet[next(alphabet.len())],
                1 => {
                    mangled.remove(at);
                }
                _ => mangled.insert(at, alphabet[next(alphabet.len())]),
            }
            assert_eq!(
                as_bytes(Envelope::from_json(&mangled).ok()),
                as_bytes(serde_read(&mangled)),
                "{}",
                String::from_utf8_lossy(&mangled)
            );
        }
    }
}

/// A seeded stream of pseudo-random numbers (xorshift64).
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// An envelope read, as the JSON it writes: decimals equal in value may
/// differ in scale (1.50 and 1.5), which the text keeps.
fn as_bytes(envelope: Option<Envelope>) -> Option<Vec<u8>> {
    envelope.map(|e| e.to_json_bytes())
}

/// Market data (written and read by hand) with values of every shape:
/// the JSON written is serde's bytes, and reading it, or a mangled copy,
/// gives what serde reads.
#[test]
fn market_data_json_written_and_read_as_serde_does() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    // A positive decimal of any scale and size (some huge, some tiny).
    let price = |next: &mut dyn FnMut() -> u64| {
        let bits = next() % 97;
        let mantissa = ((next() as u128) << 64 | next() as u128) >> (128 - bits.max(1));
        let scale = (next() % 29) as u32;
        Decimal::from_i128_with_scale(mantissa.max(1) as i128, scale)
    };
    let symbols = ["BTC", "ETH-USD", "a_b/c", "Z9"];
    let intervals = ["1m", "1h", "4h \"q\" \\ é\u{1}", "x"];
    let serde_read = |bytes: &[u8]| serde_json::from_slice::<Envelope>(bytes).ok();
    let alphabet = b"{}[]:,\"\\ \n0-19.eEnul\x01\xc3a";
    for i in 0..600 {
        let symbol = Symbol::new(symbols[i % symbols.len()]).unwrap();
        let mut values: Vec<Decimal> = (0..4).map(|_| price(&mut next)).collect();
        values.sort();
        let volume = match i % 5 {
            0 => Decimal::ZERO,
            _ => price(&mut next),
        };
        let time = (next() as i64) >> (next() % 64);
        let payload = match i % 2 {
            0 => Payload::DataCandle(
                Candle::new(CandleFields {
                    symbol: symbol.clone(),
                    interval: intervals[i % intervals.len()].into(),
                    open_time_ms: time,
                    open: values[1],
                    high: values[3],
                    low: values[0],
                    close: values[2],
                    volume,
                })
                .unwrap(),
            ),
            _ => Payload::DataPriceUpdate(
                PriceUpdate::new(PriceUpdateFields {
                    symbol: symbol.clone(),
                    price: values[0],
                    timestamp_ms: time,
                })
                .unwrap(),
            ),
        };
        let topic = Topic::new(format!("data.market.{symbol}")).unwrap();
        let envelope = Envelope::new(AgentId::new("collector"), topic, payload);
        let json = envelope.to_json_bytes();
        assert_eq!(json, serde_json::to_vec(&envelope).unwrap(), "{envelope:?}");
        // Compared as bytes too (see `as_bytes`).
        let read = Envelope::from_json(&json).unwrap();
        assert_eq!((&read, read.to_json_bytes()), (&envelope, json.clone()));
        for _ in 0..50 {
            let mut mangled = json.clone();
            let at = next() as usize % mangled.len();
            match next() % 3 {
                0 => mangled[at] = alphabet[next() as usize % alphabet.len()],
                1 => {
                    mangled.remove(at);
                }
                _ => mangled.insert(at, alphabet[next() as usize % alphabet.len()]),
            }
            assert_eq!(
                as_bytes(Envelope::from_json(&mangled).ok()),
                as_bytes(serde_read(&mangled)),
                "{}",
                String::from_utf8_lossy(&mangled)
            );
        }
    }
}

/// `value` (an envelope) as JSON text with its fields in the given order
/// of the keys named first; the others after, as they come.
fn ordered(value: &serde_json::Value, first: &[&str]) -> String {
    let object = value.as_object().unwrap();
    let mut keys: Vec<&str> = first.to_vec();
    keys.extend(
        object
            .keys()
            .map(String::as_str)
            .filter(|k| !first.contains(k)),
    );
    let fields: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            object
                .get(*k)
                .map(|v| format!("{}:{v}", serde_json::Value::from(*k)))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn payload_first(value: &serde_json::Value) -> String {
    ordered(value, &["payload", "type"])
}

fn type_first(value: &serde_json::Value) -> String {
    ordered(value, &["type", "payload"])
}

#[test]
fn decimals_travel_as_strings() {
    let json = envelope(MessageType::DataCandle).to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["payload"]["close"], "100.7");
    assert_eq!(value["priority"], "high");
    assert_eq!(value["delivery_mode"], "at_least_once");
}

#[test]
fn minimal_envelope_from_another_language_decodes_with_defaults() {
    let json = br#"{"id":"67e55044-10b1-426f-9247-bb680e5fe0c8","type":"data.price_update",
        "topic":"data.price_update.ETH","sender":"python-feed","created_at_ms":5,
        "payload":{"symbol":"ETH","price":"3000.5","timestamp_ms":5}}"#;
    let e = Envelope::from_json(json).unwrap();
    assert_eq!(e.priority, Priority::Normal);
    assert_eq!(e.delivery_mode, DeliveryMode::FireAndForget);
    assert_eq!(e.max_attempts, 5);
    let Payload::DataPriceUpdate(p) = e.payload() else {
        panic!("wrong payload")
    };
    assert_eq!(p.price, dec!(3000.5));
}

#[test]
fn an_omitted_optional_decimal_decodes_as_none() {
    let mut v: serde_json::Value =
        serde_json::from_str(&envelope(MessageType::TradeOrderRequest).to_json()).unwrap();
    v["payload"]["order_type"] = "market".into();
    v["payload"].as_object_mut().unwrap().remove("limit_price");
    let e = Envelope::from_json(v.to_string().as_bytes()).unwrap();
    let Payload::TradeOrderRequest(order) = e.payload() else {
        panic!("wrong payload")
    };
    assert_eq!(order.limit_price, None);
}

fn decode_error(json: &str) -> DecodeError {
    Envelope::from_json(json.as_bytes()).expect_err("should not decode")
}

fn valid_json() -> serde_json::Value {
    serde_json::from_str(&envelope(MessageType::DataCandle).to_json()).unwrap()
}

#[test]
fn json_that_is_not_utf8_is_refused_with_where() {
    let text = envelope(MessageType::DataCandle).to_json();
    let at = text.find("\"sender\":\"").unwrap() + 10;
    let mut bytes = text.into_bytes();
    bytes[at] = 0xff;
    let e = Envelope::from_json(&bytes).expect_err("not UTF-8");
    assert!(e.to_string().contains("unicode"), "{e}");
    assert!(e.to_string().contains("column"), "{e}");
    // The same text with a valid byte there decodes.
    bytes[at] = b'x';
    assert!(Envelope::from_json(&bytes).is_ok());
}

#[test]
fn decoding_errors_name_the_field() {
    // Payload errors, with the payload after the type (decoded in place,
    // as our encoder writes it) and before it (decoded afterwards).
    for order in [type_first, payload_first] {
        let mut v = valid_json();
        v["payload"]["close"] = "-3".into();
        let e = decode_error(&order(&v));
        assert!(e.to_string().contains("close"), "{e}");
        assert!(e.path.starts_with("payload"), "{e:?}");

        let mut v = valid_json();
        v["payload"]["volume"] = "lots".into();
        let e = decode_error(&order(&v));
        assert_eq!(e.path, "payload.volume", "{e:?}");

        let mut v = valid_json();
        v["payload"].as_object_mut().unwrap().remove("high");
        let e = decode_error(&order(&v));
        assert!(e.reason.contains("high"), "{e:?}");

        let mut v = valid_json();
        v["payload"]["symbol"] = "BTC USD".into();
        assert_eq!(decode_error(&order(&v)).path, "payload.symbol");

        let mut v = valid_json();
        v["payload"] = 7.into();
        assert_eq!(decode_error(&order(&v)).path, "payload");
    }

    // Required fields missing, fields given twice.
    for field in ["id", "type", "topic", "sender", "created_at_ms", "payload"] {
        let mut v = valid_json();
        v.as_object_mut().unwrap().remove(field);
        let e = decode_error(&type_first(&v));
        assert!(
            e.reason.contains(&format!("missing field `{field}`")),
            "{e:?}"
        );
    }
    let v = valid_json();
    let text = type_first(&v);
    for field in ["id", "type", "payload", "priority"] {
        let twice = format!("{{\"{field}\":{},{}", v[field], &text[1..]);
        let e = decode_error(&twice);
        assert!(
            e.reason.contains(&format!("duplicate field `{field}`")),
            "{e:?}"
        );
    }

    let mut v = valid_json();
    v["type"] = "data.nonsense".into();
    let e = decode_error(&v.to_string());
    assert_eq!(e.path, "type");
    assert!(e.reason.contains("data.nonsense"));

    let mut v = valid_json();
    v["topic"] = "data..x".into();
    assert_eq!(decode_error(&v.to_string()).path, "topic");

    let mut v = valid_json();
    v["priority"] = "urgent".into();
    assert_eq!(decode_error(&v.to_string()).path, "priority");

    let mut v = valid_json();
    v["surprise"] = 1.into();
    assert!(decode_error(&v.to_string()).reason.contains("surprise"));

    let mut v = valid_json();
    v["payload"]["symbol"] = "BTC USD".into();
    assert_eq!(decode_error(&v.to_string()).path, "payload.symbol");

    assert!(!decode_error("{").reason.is_empty());
    assert!(!decode_error("").reason.is_empty());
    assert!(!decode_error("[]").reason.is_empty());
    assert!(!decode_error(&format!("{} trailing", valid_json()))
        .reason
        .is_empty());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::from_json(&bytes);
    }

    #[test]
    fn mutated_valid_json_never_panics(cut in 0usize..600, byte in any::<u8>()) {
        let mut json = envelope(MessageType::TradeOrderRequest).to_json().into_bytes();
        let at = cut.min(json.len() - 1);
        json[at] = byte;
        let _ = Envelope::from_json(&json);
        let _ = Envelope::from_json(&json[..at]);
    }
}

#[test]
fn every_message_type_round_trips_through_binary() {
    for t in MessageType::ALL {
        let original = envelope(*t);
        let bytes = WireFormat::Binary.encode(&original);
        let decoded = Envelope::from_wire(&bytes).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(decoded, original, "{t}");
        assert_eq!(WireFormat::Binary.encode(&decoded), bytes, "{t}: stable");
        let shared = Envelope::from_wire_shared(&bytes).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(*shared, original, "{t}: decoded to share");
        let mut encoded = Vec::new();
        WireFormat::Binary.encode_into(&original, &mut encoded);
        assert_eq!(encoded, bytes, "{t}: appended as encoded");
        if *t == MessageType::SystemDeadLetter {
            assert!(!binary::is_binary(&bytes), "dead letters travel as JSON");
        } else {
            assert_eq!(bytes[..2], binary::MAGIC, "{t}");
            assert!(
                bytes.len() < original.to_json_bytes().len(),
                "{t}: binary is smaller"
            );
        }
    }
}

#[test]
fn binary_round_trips_without_optional_fields() {
    let plain = Envelope::new(
        AgentId::new("feed"),
        Topic::new("data.price_update.ETH").unwrap(),
        sample(MessageType::DataPriceUpdate),
    );
    let decoded = binary::decode(&binary::encode(&plain)).unwrap();
    assert_eq!(decoded, plain);
    assert_eq!(decoded.expires_at_ms, None);
    assert_eq!(decoded.reply_to, None);
}

/// A valid binary candle, with its close price (a 16-byte decimal) found.
fn binary_candle() -> (Vec<u8>, usize) {
    let bytes = binary::encode(&envelope(MessageType::DataCandle));
    let close = dec!(100.7).serialize();
    let at = bytes
        .windows(16)
        .position(|w| w == close)
        .expect("close in the payload");
    (bytes, at)
}

#[test]
fn binary_decoding_errors_name_the_field() {
    let error = |bytes: &[u8]| Envelope::from_wire(bytes).expect_err("should not decode");

    // A negative close breaks the candle's rules.
    let (mut bytes, at) = binary_candle();
    bytes[at..at + 16].copy_from_slice(&dec!(-3).serialize());
    let e = error(&bytes);
    assert!(e.path.starts_with("payload"), "{e:?}");
    assert!(e.to_string().contains("close"), "{e}");

    // A malformed decimal (scale 40).
    let (mut bytes, at) = binary_candle();
    bytes[at + 2] = 40;
    assert_eq!(error(&bytes).path, "payload.close");

    // Unknown type, bad topic, unknown priority.
    let good = binary::encode(&envelope(MessageType::DataCandle));
    let type_at = 2 + 16 + 1; // magic, id, the type's length byte
    let mut bytes = good.clone();
    bytes[type_at] = b'x';
    let e = error(&bytes);
    assert_eq!(e.path, "type");
    assert!(e.reason.contains("xata.candle"), "{e:?}");

    let topic = b"data.candle.BTC";
    let topic_at = good.windows(topic.len()).position(|w| w == topic).unwrap();
    let mut bytes = good.clone();
    bytes[topic_at + 4] = b'*';
    assert_eq!(error(&bytes).path, "topic");

    // Bytes after the payload are refused, not ignored.
    let mut bytes = good.clone();
    bytes.push(0);
    let e = error(&bytes);
    assert_eq!(e.path, "payload");
    assert!(e.reason.contains("after the payload"), "{e:?}");

    // Every truncation is an error, never a panic.
    for len in 0..good.len() {
        assert!(Envelope::from_wire(&good[..len]).is_err(), "{len} bytes");
    }
    assert!(binary::decode(b"{}").is_err(), "JSON is not binary");
}

proptest! {
    #[test]
    fn arbitrary_binary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = binary::MAGIC.to_vec();
        framed.extend(bytes);
        let _ = Envelope::from_wire(&framed);
    }

    #[test]
    fn mutated_valid_binary_never_panics(cut in 0usize..400, byte in any::<u8>()) {
        let mut bytes = binary::encode(&envelope(MessageType::TradeOrderRequest));
        let at = cut.min(bytes.len() - 1);
        bytes[at] = byte;
        let _ = Envelope::from_wire(&bytes);
        let _ = Envelope::from_wire(&bytes[..at]);
    }
}

#[test]
fn reply_is_correlated_and_addressed_back() {
    let request = envelope(MessageType::TradeOrderRequest);
    let response = request.reply(AgentId::new("risk"), sample(MessageType::ResponseSuccess));
    assert_eq!(response.correlation_id, Some(request.id));
    assert_eq!(response.recipient, Some(request.sender.clone()));
    assert_eq!(response.topic, request.reply_to.clone().unwrap());
    assert_eq!(response.priority, request.priority);

    let bare = Envelope::new(
        AgentId::new("t"),
        Topic::new("trade.orders").unwrap(),
        sample(MessageType::TradeOrderRequest),
    );
    let response = bare.reply(AgentId::new("risk"), sample(MessageType::ResponseError));
    assert_eq!(response.topic.as_str(), "response.trade");
}

#[test]
fn ttl_sets_expiry() {
    let e = Envelope::new(
        AgentId::new("t"),
        Topic::new("a").unwrap(),
        sample(MessageType::SystemHealthCheck),
    )
    .with_identity(MessageId::from_u128(1), 1000)
    .with_ttl(Duration::from_millis(500));
    assert_eq!(e.expires_at_ms, Some(1500));
    assert!(!e.is_expired_at(1499));
    assert!(e.is_expired_at(1500));
}

proptest! {
    /// A message with a TTL is expired exactly from `created + ttl` on, and
    /// re-stamping its identity keeps the TTL.
    #[test]
    fn ttl_expires_exactly_at_creation_plus_ttl(created in 0i64..1_000_000_000, ttl_ms in 0u64..10_000_000, probe in -10_000i64..10_000) {
        let e = Envelope::new(
            AgentId::new("t"),
            Topic::new("a").unwrap(),
            sample(MessageType::SystemHealthCheck),
        )
        .with_ttl(Duration::from_millis(ttl_ms))
        .with_identity(MessageId::from_u128(1), created);
        let at = created + ttl_ms as i64;
        prop_assert_eq!(e.expires_at_ms, Some(at));
        prop_assert_eq!(e.is_expired_at(at + probe), probe >= 0);
    }
}
