//! The envelope: routing and delivery metadata around one typed payload.
//!
//! The payload is held inline: building a message allocates nothing for the
//! envelope itself (the inline bus moves it once, into an outbox, and drops
//! it in place). Sharing is done a level up: the queued bus shares one
//! `Arc<Envelope>` between all its subscriptions, so fan-out never copies a
//! payload; an explicit `clone` (a retry, a dead letter) does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::delivery::{DeliveryMode, Priority};
use super::headers::Headers;
use super::kind::{MessageType, Payload};
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
    pub(in crate::model) payload: Payload,
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
}
