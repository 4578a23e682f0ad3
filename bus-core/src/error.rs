//! Errors of bus-core, one type per subsystem, each saying what went wrong and where.

use std::time::Duration;

use thiserror::Error;

use crate::ids::SubscriptionId;

/// A topic or pattern that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid topic {topic:?}: {reason}")]
pub struct TopicError {
    /// The text that was rejected.
    pub topic: String,
    /// Why.
    pub reason: String,
}

/// A payload whose values break its rules (negative price, zero quantity...).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {payload} payload: field `{field}` {reason}")]
pub struct PayloadError {
    /// The payload type, e.g. `data.candle`.
    pub payload: &'static str,
    /// The offending field.
    pub field: &'static str,
    /// What rule it broke.
    pub reason: String,
}

/// A wire message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot decode message: at `{path}`: {reason}")]
pub struct DecodeError {
    /// Dotted path of the field that failed (`payload.close`), or `.` for the document.
    pub path: String,
    /// What was wrong there.
    pub reason: String,
}

impl DecodeError {
    /// This error, found inside the envelope's payload: its path made
    /// relative to the envelope (`close` -> `payload.close`, `.` ->
    /// `payload`).
    pub(crate) fn in_payload(self) -> DecodeError {
        DecodeError {
            path: if self.path == "." {
                "payload".into()
            } else {
                format!("payload.{}", self.path)
            },
            reason: self.reason,
        }
    }
}

/// Why a publish was not (fully) accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// The bus is shutting down or stopped and accepts nothing new.
    #[error("the bus is closed")]
    BusClosed,
    /// Subscriptions with the reject policy were full; the others received the message.
    #[error("rejected by {} full subscription(s) {rejected_by:?}; accepted by {accepted_by}", rejected_by.len())]
    Rejected {
        /// The subscriptions that refused the message.
        rejected_by: Vec<SubscriptionId>,
        /// How many subscriptions queued it.
        accepted_by: usize,
    },
    /// A subscription with the block policy stayed full past its timeout.
    #[error("subscription {subscription} stayed full for {waited:?}; message not queued there")]
    BlockedTimeout {
        /// The full subscription.
        subscription: SubscriptionId,
        /// How long the publisher waited.
        waited: Duration,
    },
    /// The message had already expired when it was published.
    #[error("message expired before it was published")]
    Expired,
    /// The durable store could not take the message (full, closed, or a
    /// write failed); it was not delivered anywhere.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// No correlated response arrived in time.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The request itself could not be published.
    #[error("request not published: {0}")]
    Publish(#[from] PublishError),
}

/// An error returned by a message handler. Handlers decide the text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
}

impl HandlerError {
    /// Builds an error from anything printable.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }
}

impl From<PayloadError> for HandlerError {
    fn from(value: PayloadError) -> Self {
        Self::new(value)
    }
}

impl From<TopicError> for HandlerError {
    fn from(value: TopicError) -> Self {
        Self::new(value)
    }
}

impl From<PublishError> for HandlerError {
    fn from(value: PublishError) -> Self {
        Self::new(value)
    }
}

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;
