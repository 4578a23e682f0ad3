//! Errors of the message model: a malformed topic, a payload that breaks
//! its rules, a wire message that cannot be decoded. They name what was
//! wrong and where, and know nothing of buses or stores.

use thiserror::Error;

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
