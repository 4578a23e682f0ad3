//! The documented JSON wire format (see the crate docs for the schema):
//! encoding, decoding with the failing field's path, and the choice between
//! JSON and [`binary`](super::binary) on reading.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::delivery::{DeliveryMode, Priority};
use crate::model::envelope::{Envelope, DEFAULT_MAX_ATTEMPTS};
use crate::model::error::DecodeError;
use crate::model::headers::Headers;
use crate::model::ids::{AgentId, MessageId};
use crate::model::kind::{MessageType, Payload};
use crate::model::topic::Topic;

impl Envelope {
    /// Encodes to the JSON wire format (see the crate docs for the schema).
    pub fn to_json(&self) -> String {
        String::from_utf8(self.to_json_bytes()).expect("JSON is UTF-8")
    }

    /// Encodes to JSON bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON wire format of this envelope to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        super::json_fast::write(self, out);
    }

    /// Decodes from the JSON wire format; the error names the failing field.
    pub fn from_json(json: &[u8]) -> Result<Envelope, DecodeError> {
        // The envelopes we write, read by hand; anything else by serde.
        if let Some(envelope) = super::json_fast::read(json) {
            return Ok(envelope);
        }
        // Plain serde first, on text checked to be UTF-8 once (reading
        // bytes, serde_json checks every string again: about a seventh of
        // the decoding); on failure decode again, tracking the path of the
        // failing field for the error.
        if let Ok(text) = std::str::from_utf8(json) {
            if let Ok(wire) = serde_json::from_str::<WireIn>(text) {
                return wire.into_envelope();
            }
        }
        let mut de = serde_json::Deserializer::from_slice(json);
        let wire: WireIn = serde_path_to_error::deserialize(&mut de).map_err(|e| DecodeError {
            path: e.path().to_string(),
            reason: e.into_inner().to_string(),
        })?;
        de.end().map_err(|e| DecodeError {
            path: ".".into(),
            reason: e.to_string(),
        })?;
        wire.into_envelope()
    }

    /// Decodes either wire format: binary when the bytes start with
    /// [`binary::MAGIC`](super::binary::MAGIC), else JSON.
    pub fn from_wire(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if super::binary::is_binary(bytes) {
            super::binary::decode(bytes)
        } else {
            Envelope::from_json(bytes)
        }
    }

    /// [`Envelope::from_wire`], shared (binary is decoded straight into
    /// its shared place).
    pub fn from_wire_shared(bytes: &[u8]) -> Result<std::sync::Arc<Envelope>, DecodeError> {
        if super::binary::is_binary(bytes) {
            super::binary::decode_shared(bytes)
        } else {
            Envelope::from_json(bytes).map(std::sync::Arc::new)
        }
    }

    fn wire(&self) -> WireOut<'_> {
        WireOut {
            id: self.id,
            message_type: self.message_type(),
            topic: &self.topic,
            sender: &self.sender,
            recipient: self.recipient.as_ref(),
            correlation_id: self.correlation_id,
            reply_to: self.reply_to.as_ref(),
            priority: self.priority,
            delivery_mode: self.delivery_mode,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            headers: &self.headers,
            tags: &self.tags,
            payload: &self.payload,
        }
    }
}

/// Envelopes nest inside other payloads (dead letters) in the same format.
impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(serializer)
    }
}

/// Decoding through serde works with `serde_json` only: the payload is
/// decoded by type where it stands when `type` came first, else read as
/// raw JSON and decoded once the type is known, as in
/// [`Envelope::from_json`].
impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WireIn::deserialize(deserializer)?
            .into_envelope()
            .map_err(serde::de::Error::custom)
    }
}

impl WireIn {
    fn into_envelope(self) -> Result<Envelope, DecodeError> {
        let wire = self;
        let payload = match wire.payload {
            PayloadIn::Decoded(payload) => payload,
            PayloadIn::Raw(raw) => {
                Payload::from_json(wire.message_type, raw.get()).map_err(|e| {
                    DecodeError {
                        path: e.path().to_string(),
                        reason: e.into_inner().to_string(),
                    }
                    .in_payload()
                })?
            }
        };
        Ok(Envelope {
            id: wire.id,
            correlation_id: wire.correlation_id,
            reply_to: wire.reply_to,
            sender: wire.sender,
            recipient: wire.recipient,
            topic: wire.topic,
            priority: wire.priority,
            delivery_mode: wire.delivery_mode,
            created_at_ms: wire.created_at_ms,
            expires_at_ms: wire.expires_at_ms,
            attempt: wire.attempt,
            max_attempts: wire.max_attempts,
            headers: wire.headers,
            tags: wire.tags,
            payload,
        })
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    id: MessageId,
    #[serde(rename = "type")]
    message_type: MessageType,
    topic: &'a Topic,
    sender: &'a AgentId,
    recipient: Option<&'a AgentId>,
    correlation_id: Option<MessageId>,
    reply_to: Option<&'a Topic>,
    priority: Priority,
    delivery_mode: DeliveryMode,
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
    attempt: u32,
    max_attempts: u32,
    headers: &'a Headers,
    tags: &'a [String],
    payload: &'a Payload,
}

/// The decoding side accepts omitted optional fields so that clients in other
/// languages need only send `id`, `type`, `topic`, `sender`, `created_at_ms`
/// and `payload`; unknown and repeated fields are refused.
struct WireIn {
    id: MessageId,
    message_type: MessageType,
    topic: Topic,
    sender: AgentId,
    recipient: Option<AgentId>,
    correlation_id: Option<MessageId>,
    reply_to: Option<Topic>,
    priority: Priority,
    delivery_mode: DeliveryMode,
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
    attempt: u32,
    max_attempts: u32,
    headers: Headers,
    tags: Vec<String>,
    payload: PayloadIn,
}

/// The payload as read: decoded in place when `type` came before it (as
/// every envelope we write has it), else kept as raw JSON to decode once
/// the type is known.
enum PayloadIn {
    Decoded(Payload),
    Raw(Box<RawValue>),
}

/// The envelope's JSON fields.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Id,
    #[serde(rename = "type")]
    Type,
    Topic,
    Sender,
    Recipient,
    CorrelationId,
    ReplyTo,
    Priority,
    DeliveryMode,
    CreatedAtMs,
    ExpiresAtMs,
    Attempt,
    MaxAttempts,
    Headers,
    Tags,
    Payload,
}

const FIELDS: &[&str] = &[
    "id",
    "type",
    "topic",
    "sender",
    "recipient",
    "correlation_id",
    "reply_to",
    "priority",
    "delivery_mode",
    "created_at_ms",
    "expires_at_ms",
    "attempt",
    "max_attempts",
    "headers",
    "tags",
    "payload",
];

/// Decodes a payload of a known type where it stands.
struct PayloadSeed(MessageType);

impl<'de> serde::de::DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Payload, D::Error> {
        Payload::deserialize_as(self.0, deserializer)
    }
}

impl<'de> Deserialize<'de> for WireIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Envelope", FIELDS, WireInVisitor)
    }
}

struct WireInVisitor;

impl<'de> serde::de::Visitor<'de> for WireInVisitor {
    type Value = WireIn;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an envelope (a JSON object)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<WireIn, A::Error> {
        use serde::de::Error;
        let (mut id, mut message_type, mut topic, mut sender) = (None, None, None, None);
        let (mut recipient, mut correlation_id, mut reply_to) = (None, None, None);
        let (mut priority, mut delivery_mode, mut created_at_ms) = (None, None, None);
        let (mut expires_at_ms, mut attempt, mut max_attempts) = (None, None, None);
        let (mut headers, mut tags, mut payload) = (None, None, None);
        // Each field once: a repeated one is an error, as serde's derive has it.
        macro_rules! once {
            ($slot:ident, $name:literal) => {{
                if $slot.is_some() {
                    return Err(A::Error::duplicate_field($name));
                }
                $slot = Some(map.next_value()?);
            }};
        }
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Id => once!(id, "id"),
                Field::Type => once!(message_type, "type"),
                Field::Topic => once!(topic, "topic"),
                Field::Sender => once!(sender, "sender"),
                Field::Recipient => once!(recipient, "recipient"),
                Field::CorrelationId => once!(correlation_id, "correlation_id"),
                Field::ReplyTo => once!(reply_to, "reply_to"),
                Field::Priority => once!(priority, "priority"),
                Field::DeliveryMode => once!(delivery_mode, "delivery_mode"),
                Field::CreatedAtMs => once!(created_at_ms, "created_at_ms"),
                Field::ExpiresAtMs => once!(expires_at_ms, "expires_at_ms"),
                Field::Attempt => once!(attempt, "attempt"),
                Field::MaxAttempts => once!(max_attempts, "max_attempts"),
                Field::Headers => once!(headers, "headers"),
                Field::Tags => once!(tags, "tags"),
                Field::Payload => {
                    if payload.is_some() {
                        return Err(A::Error::duplicate_field("payload"));
                    }
                    payload = Some(match message_type {
                        Some(kind) => PayloadIn::Decoded(map.next_value_seed(PayloadSeed(kind))?),
                        None => PayloadIn::Raw(map.next_value()?),
                    });
                }
            }
        }
        Ok(WireIn {
            id: id.ok_or_else(|| A::Error::missing_field("id"))?,
            message_type: message_type.ok_or_else(|| A::Error::missing_field("type"))?,
            topic: topic.ok_or_else(|| A::Error::missing_field("topic"))?,
            sender: sender.ok_or_else(|| A::Error::missing_field("sender"))?,
            recipient: recipient.flatten(),
            correlation_id: correlation_id.flatten(),
            reply_to: reply_to.flatten(),
            priority: priority.unwrap_or_default(),
            delivery_mode: delivery_mode.unwrap_or_default(),
            created_at_ms: created_at_ms.ok_or_else(|| A::Error::missing_field("created_at_ms"))?,
            expires_at_ms: expires_at_ms.flatten(),
            attempt: attempt.unwrap_or_default(),
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            headers: headers.unwrap_or_default(),
            tags: tags.unwrap_or_default(),
            payload: payload.ok_or_else(|| A::Error::missing_field("payload"))?,
        })
    }
}
