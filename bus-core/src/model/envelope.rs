//! The envelope: routing and delivery metadata around one typed payload.
//!
//! The payload is held inline: building a message allocates nothing for the
//! envelope itself (the inline bus moves it once, into an outbox, and drops
//! it in place). Sharing is done a level up: the queued bus shares one
//! `Arc<Envelope>` between all its subscriptions, so fan-out never copies a
//! payload; an explicit `clone` (a retry, a dead letter) does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::delivery::{DeliveryMode, Priority};
use super::headers::Headers;
use super::kind::{MessageType, Payload};
use crate::model::error::DecodeError;
use crate::model::ids::{AgentId, MessageId};
use crate::model::topic::Topic;

/// Default number of delivery attempts for reliable modes.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Milliseconds since the Unix epoch, read from the system clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A message: metadata plus one typed payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique id.
    pub id: MessageId,
    /// For responses: the id of the request this answers.
    pub correlation_id: Option<MessageId>,
    /// Where responses should go.
    pub reply_to: Option<Topic>,
    /// Who sent it.
    pub sender: AgentId,
    /// Intended recipient, when addressed to one agent.
    pub recipient: Option<AgentId>,
    /// Where it is published.
    pub topic: Topic,
    /// Urgency.
    pub priority: Priority,
    /// Delivery promise.
    pub delivery_mode: DeliveryMode,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// After this time (ms since the Unix epoch) it is not delivered.
    pub expires_at_ms: Option<i64>,
    /// Delivery attempts made so far.
    pub attempt: u32,
    /// Attempts allowed before dead-lettering (reliable modes).
    pub max_attempts: u32,
    /// Free-form string headers.
    pub headers: Headers,
    /// Labels filters can select on.
    pub tags: Vec<String>,
    payload: Payload,
}

impl Envelope {
    /// A new message with a fresh id, created now, normal priority, fire-and-forget.
    pub fn new(sender: AgentId, topic: Topic, payload: Payload) -> Self {
        Self::stamped(MessageId::new(), now_ms(), sender, topic, payload)
    }

    /// A new message with the given id and creation time (no clock read, no
    /// random id: deterministic runs and message factories use this).
    #[inline]
    pub fn stamped(
        id: MessageId,
        created_at_ms: i64,
        sender: AgentId,
        topic: Topic,
        payload: Payload,
    ) -> Self {
        Self {
            id,
            correlation_id: None,
            reply_to: None,
            sender,
            recipient: None,
            topic,
            priority: Priority::Normal,
            delivery_mode: DeliveryMode::FireAndForget,
            created_at_ms,
            expires_at_ms: None,
            attempt: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            headers: Headers::new(),
            tags: Vec::new(),
            payload,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The message type, derived from the payload.
    pub fn message_type(&self) -> MessageType {
        self.payload.message_type()
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the delivery mode.
    pub fn with_delivery_mode(mut self, mode: DeliveryMode) -> Self {
        self.delivery_mode = mode;
        self
    }

    /// Expires `ttl` after creation.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.expires_at_ms = Some(self.created_at_ms.saturating_add(ttl.as_millis() as i64));
        self
    }

    /// Sets id and creation time explicitly (deterministic runs use this).
    pub fn with_identity(mut self, id: MessageId, created_at_ms: i64) -> Self {
        if let Some(expires) = self.expires_at_ms {
            let ttl = expires - self.created_at_ms;
            self.expires_at_ms = Some(created_at_ms.saturating_add(ttl));
        }
        self.id = id;
        self.created_at_ms = created_at_ms;
        self
    }

    /// Addresses it to one agent.
    pub fn with_recipient(mut self, recipient: AgentId) -> Self {
        self.recipient = Some(recipient);
        self
    }

    /// Asks for responses on `topic`.
    pub fn with_reply_to(mut self, topic: Topic) -> Self {
        self.reply_to = Some(topic);
        self
    }

    /// Marks it as answering `request`.
    pub fn with_correlation_id(mut self, request: MessageId) -> Self {
        self.correlation_id = Some(request);
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the attempts allowed.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// True when the message has a TTL that ended at or before `now_ms`.
    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Does it carry this tag?
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Builds a response: correlated with this message, addressed to its
    /// sender, published on its `reply_to` topic (or `response.<type family>`
    /// when it has none), at the same priority.
    pub fn reply(&self, sender: AgentId, payload: Payload) -> Envelope {
        let topic = self.reply_to.clone().unwrap_or_else(|| {
            Topic::new(format!("response.{}", self.message_type().family()))
                .expect("`response.<family>` is a valid topic")
        });
        let mut response = Envelope::new(sender, topic, payload)
            .with_correlation_id(self.id)
            .with_recipient(self.sender.clone())
            .with_priority(self.priority);
        response.created_at_ms = response.created_at_ms.max(self.created_at_ms);
        response
    }

    /// Encodes to the JSON wire format (see the crate docs for the schema).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.wire()).expect("envelopes always serialize")
    }

    /// Encodes to JSON bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON wire format of this envelope to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.wire()).expect("envelopes always serialize")
    }

    /// Decodes from the JSON wire format; the error names the failing field.
    pub fn from_json(json: &[u8]) -> Result<Envelope, DecodeError> {
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
    /// [`binary::MAGIC`](super::wire::binary::MAGIC), else JSON.
    pub fn from_wire(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if super::wire::binary::is_binary(bytes) {
            super::wire::binary::decode(bytes)
        } else {
            Envelope::from_json(bytes)
        }
    }

    /// [`Envelope::from_wire`], shared (binary is decoded straight into
    /// its shared place).
    pub fn from_wire_shared(bytes: &[u8]) -> Result<std::sync::Arc<Envelope>, DecodeError> {
        if super::wire::binary::is_binary(bytes) {
            super::wire::binary::decode_shared(bytes)
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
