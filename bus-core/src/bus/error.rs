//! Errors of the buses: a publish not (fully) accepted, a request left
//! unanswered, a handler that failed.

use std::time::Duration;

use thiserror::Error;

use crate::model::error::{PayloadError, TopicError};
use crate::model::ids::SubscriptionId;

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
