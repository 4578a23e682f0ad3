//! The message model: envelope, types, payloads, priority and delivery.

pub mod delivery;
pub mod envelope;
pub mod kind;
pub mod payload;

pub use delivery::{DeliveryMode, MessageStatus, Priority};
pub use envelope::{now_ms, Envelope, DEFAULT_MAX_ATTEMPTS};
pub use kind::{MessageType, Payload};
