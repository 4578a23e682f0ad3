//! The message types and the [`Payload`] enum that carries one of them.
//!
//! One table below declares every type: its Rust name, its wire name
//! (`family.name`, snake_case) and the struct its payload holds. Both the
//! fieldless [`MessageType`] and the [`Payload`] enum are generated from it, so
//! the two can never disagree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::payload::*;

macro_rules! message_types {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal => $payload:ty ),* $(,)?) => {
        /// The type of a message, named on the wire as `family.name`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MessageType {
            $( $(#[$doc])* $variant ),*
        }

        impl MessageType {
            /// Every message type, in declaration order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant),*];

            /// The wire name, e.g. `data.price_update`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( MessageType::$variant => $wire ),*
                }
            }

            /// The message type whose wire name is `bytes`, if any (no
            /// UTF-8 check needed: every wire name is ASCII).
            pub(crate) fn from_wire_name(bytes: &[u8]) -> Option<Self> {
                $( if bytes == $wire.as_bytes() {
                    return Some(MessageType::$variant);
                } )*
                None
            }
        }

        impl FromStr for MessageType {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $( $wire => Ok(MessageType::$variant), )*
                    other => Err(format!("unknown message type {other:?}")),
                }
            }
        }

        /// The content of a message: exactly one typed payload.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Payload {
            $( $(#[$doc])* $variant($payload) ),*
        }

        impl Payload {
            /// The message type this payload belongs to.
            pub fn message_type(&self) -> MessageType {
                match self {
                    $( Payload::$variant(_) => MessageType::$variant ),*
                }
            }

            /// Decodes a payload of the given type with `deserializer`.
            pub(crate) fn deserialize_as<'de, D: Deserializer<'de>>(
                message_type: MessageType,
                deserializer: D,
            ) -> Result<Payload, D::Error> {
                match message_type {
                    $( MessageType::$variant => Deserialize::deserialize(deserializer).map(Payload::$variant) ),*
                }
            }

            /// Decodes a payload of the given type from JSON.
            pub(crate) fn from_json(
                message_type: MessageType,
                json: &str,
            ) -> Result<Payload, serde_path_to_error::Error<serde_json::Error>> {
                // Plain serde first: tracking the path costs on every field,
                // and it is only needed to explain a failure.
                let mut de = serde_json::Deserializer::from_str(json);
                if let Ok(payload) = Payload::deserialize_as(message_type, &mut de) {
                    if de.end().is_ok() {
                        return Ok(payload);
                    }
                }
                let mut de = serde_json::Deserializer::from_str(json);
                let payload = match message_type {
                    $( MessageType::$variant => Payload::$variant(serde_path_to_error::deserialize(&mut de)?) ),*
                };
                Ok(payload)
            }
        }

        impl Payload {
            /// Decodes a payload of the given type from MessagePack (the
            /// binary codec's payload section, which must end with it); the
            /// error's path is relative to the payload (`.` for itself).
            pub(crate) fn from_msgpack(
                message_type: MessageType,
                bytes: &[u8],
            ) -> Result<Payload, crate::model::error::DecodeError> {
                // Market data read by hand; then the lean reader;
                // `rmp_serde` for whatever it refuses (and to explain a
                // failure).
                if let Some(payload) = crate::model::wire::msgpack::market_data(message_type, bytes) {
                    return Ok(payload);
                }
                let mut de = crate::model::wire::msgpack::Deserializer::new(bytes);
                if let Ok(payload) = Payload::deserialize_as(message_type, &mut de) {
                    if de.is_done() {
                        return Ok(payload);
                    }
                }
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                let payload = match Payload::deserialize_as(message_type, &mut de) {
                    Ok(payload) => payload,
                    Err(_) => {
                        // Again, tracking the failing field's path.
                        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                        let tracked = match message_type {
                            $( MessageType::$variant => serde_path_to_error::deserialize(&mut de).map(Payload::$variant) ),*
                        };
                        return Err(match tracked {
                            Err(e) => crate::model::error::DecodeError {
                                path: e.path().to_string(),
                                reason: e.into_inner().to_string(),
                            },
                            Ok(_) => crate::model::error::DecodeError {
                                path: ".".into(),
                                reason: "undecodable payload".into(),
                            },
                        });
                    }
                };
                // The payload must end the message: reading one more value
                // has to find the end of the bytes.
                match serde::de::IgnoredAny::deserialize(&mut de) {
                    Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
                        if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                    _ => {
                        return Err(crate::model::error::DecodeError {
                            path: ".".into(),
                            reason: "bytes after the payload".into(),
                        })
                    }
                }
                Ok(payload)
            }
        }

        impl Serialize for Payload {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Payload::$variant(inner) => inner.serialize(serializer) ),*
                }
            }
        }
    };
}

message_types! {
    /// The system is starting.
    SystemStartup = "system.startup" => Startup,
    /// The system is stopping.
    SystemShutdown = "system.shutdown" => Shutdown,
    /// Every agent reports its health.
    SystemHealthCheck = "system.health_check" => HealthCheck,
    /// A setting changes at run time.
    SystemConfigUpdate = "system.config_update" => ConfigUpdate,
    /// An agent is alive.
    SystemHeartbeat = "system.heartbeat" => Heartbeat,
    /// A message that could not be delivered.
    SystemDeadLetter = "system.dead_letter" => DeadLetter,

    /// An agent started.
    AgentStarted = "agent.started" => AgentTransition,
    /// An agent stopped.
    AgentStopped = "agent.stopped" => AgentTransition,
    /// An agent paused.
    AgentPaused = "agent.paused" => AgentTransition,
    /// An agent resumed.
    AgentResumed = "agent.resumed" => AgentTransition,
    /// An agent hit an error.
    AgentError = "agent.error" => AgentErrorReport,
    /// An agent's health.
    AgentHealthUpdate = "agent.health_update" => AgentHealth,

    /// One OHLCV bar.
    DataCandle = "data.candle" => Candle,
    /// A price.
    DataPriceUpdate = "data.price_update" => PriceUpdate,
    /// A market trade.
    DataTrade = "data.trade" => MarketTrade,
    /// An order book snapshot.
    DataOrderbook = "data.orderbook" => OrderBook,
    /// A funding rate.
    DataFundingRate = "data.funding_rate" => FundingRate,

    /// One strategy's signal.
    SignalGenerated = "signal.generated" => Signal,
    /// The combined signal.
    SignalAggregated = "signal.aggregated" => AggregatedSignal,
    /// All strategies ran on a bar.
    SignalAnalysisComplete = "signal.analysis_complete" => AnalysisComplete,

    /// An order asking for risk approval.
    TradeOrderRequest = "trade.order_request" => OrderRequest,
    /// An order was filled.
    TradeOrderFilled = "trade.order_filled" => Fill,
    /// An order was cancelled or refused.
    TradeOrderCancelled = "trade.order_cancelled" => OrderCancelled,
    /// A position changed.
    TradePositionUpdate = "trade.position_update" => PositionUpdate,
    /// The portfolio's accounts changed.
    TradePnlUpdate = "trade.pnl_update" => PnlUpdate,

    /// A limit was breached.
    RiskLimitBreach = "risk.limit_breach" => RiskAlert,
    /// A limit is close.
    RiskWarning = "risk.warning" => RiskAlert,
    /// Stop trading now.
    RiskEmergencyStop = "risk.emergency_stop" => EmergencyStop,

    /// Start collecting market data.
    CommandStartCollection = "command.start_collection" => Command,
    /// Stop collecting market data.
    CommandStopCollection = "command.stop_collection" => Command,
    /// Stop placing orders.
    CommandPauseTrading = "command.pause_trading" => Command,
    /// Resume placing orders.
    CommandResumeTrading = "command.resume_trading" => Command,

    /// A request succeeded.
    ResponseSuccess = "response.success" => Success,
    /// A request failed or was refused.
    ResponseError = "response.error" => ErrorResponse,
    /// A message was received.
    ResponseAck = "response.ack" => Ack,
}

impl MessageType {
    /// The family: the part before the dot (`data` for `data.candle`).
    pub fn family(self) -> &'static str {
        let name = self.as_str();
        name.split_once('.').map_or(name, |(family, _)| family)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_at_least_the_seed_families() {
        let count = |family: &str| {
            MessageType::ALL
                .iter()
                .filter(|t| t.family() == family)
                .count()
        };
        assert_eq!(count("system"), 6, "the seed's five plus dead_letter");
        assert_eq!(count("agent"), 6);
        assert_eq!(count("data"), 5);
        assert_eq!(count("signal"), 3);
        assert_eq!(count("trade"), 5);
        assert_eq!(count("risk"), 3);
        assert_eq!(count("command"), 4);
        assert_eq!(count("response"), 3);
        assert_eq!(MessageType::ALL.len(), 35);
    }

    #[test]
    fn wire_names_round_trip_and_are_snake_case() {
        for t in MessageType::ALL {
            assert_eq!(t.as_str().parse::<MessageType>().unwrap(), *t);
            assert!(
                t.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{t}"
            );
        }
        assert!("data.nonsense".parse::<MessageType>().is_err());
    }
}
