//! What a handler (an agent) wants published once it returns: its only
//! output. It sits with the buses because the inline bus hands one to
//! every handler; agents see it as `agent::Outbox`.

use crate::model::Envelope;

/// Messages a handler wants published once it returns.
#[derive(Debug, Default)]
pub struct Outbox {
    pub(crate) messages: Vec<Envelope>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a message for publishing.
    #[inline]
    pub fn publish(&mut self, envelope: Envelope) {
        self.messages.push(envelope);
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Drops messages after the first `len` (what a failed handler added).
    pub fn truncate(&mut self, len: usize) {
        self.messages.truncate(len);
    }

    /// Takes the messages out, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Envelope> {
        self.messages.drain(..)
    }
}
