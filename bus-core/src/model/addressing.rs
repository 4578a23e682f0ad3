//! Whether an envelope is addressed as it claims: for input from outside
//! the process (the NATS transport checks every envelope it decodes).
//!
//! Inside a process, agents build their topics from their payloads. On the
//! wire, anyone can write an envelope, so three things are checked before
//! an agent sees it: names are of a bounded size; a topic that names a
//! market-data, signal or trade message type carries that type (a price
//! update sent on a `data.candle...` topic is refused, not silently
//! dropped by the agent that expected a candle); and when that topic
//! names a market (`data.candle.<symbol>...`), it is the payload's (an ETH
//! candle on a BTC topic is refused, not traded as ETH). Replies,
//! commands, risk and system messages travel on topics chosen by their
//! senders and are not held to a type, nor are topics that name no
//! message type (`data.quotes.BTC` may carry what its users agree on).

use super::kind::{MessageType, Payload};
use super::payload::Symbol;
use super::Envelope;

/// The longest sender name accepted from outside, in bytes.
pub const MAX_SENDER_BYTES: usize = 128;
/// The longest topic accepted from outside, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;

/// The market a payload is about, if it is about one.
fn symbol_of(payload: &Payload) -> Option<&Symbol> {
    Some(match payload {
        Payload::DataCandle(p) => &p.symbol,
        Payload::DataPriceUpdate(p) => &p.symbol,
        Payload::DataTrade(p) => &p.symbol,
        Payload::DataOrderbook(p) => &p.symbol,
        Payload::DataFundingRate(p) => &p.symbol,
        Payload::SignalGenerated(p) => &p.symbol,
        Payload::SignalAggregated(p) => &p.symbol,
        Payload::SignalAnalysisComplete(p) => &p.symbol,
        Payload::TradeOrderRequest(p) => &p.symbol,
        Payload::TradeOrderFilled(p) => &p.symbol,
        Payload::TradeOrderCancelled(p) => &p.symbol,
        Payload::TradePositionUpdate(p) => &p.symbol,
        _ => return None,
    })
}

/// `Ok` when `envelope` is addressed consistently (see the module docs);
/// otherwise what is wrong, for a dead letter.
pub fn check_addressing(envelope: &Envelope) -> Result<(), String> {
    let sender = envelope.sender.as_str();
    if sender.len() > MAX_SENDER_BYTES {
        return Err(format!(
            "sender: {} bytes, more than the {MAX_SENDER_BYTES} allowed",
            sender.len()
        ));
    }
    let topic = envelope.topic.as_str();
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "topic: {} bytes, more than the {MAX_TOPIC_BYTES} allowed",
            topic.len()
        ));
    }
    // A topic that names a market-data, signal or trade message type
    // (`data.candle...`) carries that type, about the market it names.
    // (Looked up from the topic's own first two segments: no allocation
    // per message on the transport's receiving path.)
    if !matches!(topic.split('.').next(), Some("data" | "signal" | "trade")) {
        return Ok(());
    }
    let mut segments = topic.split('.');
    let type_end = match (segments.next(), segments.next()) {
        (Some(family), Some(kind)) => family.len() + 1 + kind.len(),
        _ => return Ok(()),
    };
    let Some(named) = MessageType::from_wire_name(&topic.as_bytes()[..type_end]) else {
        return Ok(());
    };
    let kind = envelope.message_type();
    if kind != named {
        return Err(format!(
            "a {kind} message on topic {topic}, which is for {named} messages"
        ));
    }
    if let (Some(symbol), Some(market)) = (symbol_of(envelope.payload()), segments.next()) {
        if symbol.as_str() != market {
            return Err(format!(
                "topic {topic} is about {market}, the payload's symbol is {symbol}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::AgentId;
    use crate::model::payload::{Candle, CandleFields};
    use crate::model::topic::Topic;
    use rust_decimal::Decimal;

    fn candle(symbol: &str, topic: &str, sender: &str) -> Envelope {
        let candle = Candle::new(CandleFields {
            symbol: Symbol::new(symbol).unwrap(),
            interval: "1m".into(),
            open_time_ms: 0,
            open: Decimal::ONE,
            high: Decimal::ONE,
            low: Decimal::ONE,
            close: Decimal::ONE,
            volume: Decimal::ONE,
        })
        .unwrap();
        Envelope::new(
            AgentId::new(sender),
            Topic::new(topic).unwrap(),
            Payload::DataCandle(candle),
        )
    }

    #[test]
    fn consistent_envelopes_pass() {
        assert_eq!(
            check_addressing(&candle("BTC", "data.candle.BTC.1m", "feed")),
            Ok(())
        );
        assert_eq!(
            check_addressing(&candle("BTC", "data.candle", "feed")),
            Ok(())
        );
        // Topics that name no message type are the users' to agree on.
        assert_eq!(
            check_addressing(&candle("BTC", "data.bars.BTC", "feed")),
            Ok(())
        );
        assert_eq!(check_addressing(&candle("BTC", "latency", "bench")), Ok(()));
    }

    #[test]
    fn inconsistent_envelopes_are_refused_with_the_reason() {
        let cases = [
            (candle("ETH", "data.candle.BTC.1m", "feed"), "about BTC"),
            (
                candle("BTC", "data.price_update.BTC", "feed"),
                "which is for data.price_update messages",
            ),
            (
                candle("BTC", "signal.generated.BTC", "feed"),
                "which is for signal.generated messages",
            ),
            (
                candle("BTC", "data.candle.BTC.1m", &"x".repeat(999)),
                "sender: 999 bytes",
            ),
        ];
        for (envelope, reason) in cases {
            let error = check_addressing(&envelope).unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
    }
}
