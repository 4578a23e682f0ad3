//! The buses: how a published envelope reaches the handlers subscribed to
//! its topic.
//!
//! * [`MessageBus`]: the concurrent in-process bus, one bounded priority
//!   `queue` and one consumer per subscription, overflow policies,
//!   circuit breakers, retries and dead letters ([`reliability`]),
//!   request/response, graceful shutdown, and (with a [`Store`](crate::store::Store))
//!   durable delivery;
//! * [`InlineBus`](inline::InlineBus): the synchronous, deterministic bus
//!   for backtests;
//! * `routing` (the segment-trie index both use), [`filter`]s over
//!   envelopes, [`stats`], [`handler`]s and the [`Outbox`] a handler fills.
//!
//! Imports the [`model`](crate::model) and the [`store`](crate::store); knows
//! nothing of agents.

pub(crate) mod circuit;
mod consumer;
pub mod error;
pub mod filter;
pub mod generation;
pub mod handler;
pub mod inline;
mod message_bus;
mod outbox;
mod pulled;
pub(crate) mod queue;
pub mod reliability;
pub(crate) mod routing;
mod settlement;
pub mod stats;
mod subscription;
pub mod tick_to_order;

pub use circuit::{CircuitBreakerConfig, CircuitState};

/// Times a consumer that found its queue empty looks again, yielding in
/// between, before it sleeps until its doorbell rings (the bus's own
/// consumers and the agent driver's pulled inboxes alike). Under a steady
/// stream this saves a wake-up per message.
pub(crate) const SPINS_BEFORE_SLEEP: u32 = 4;
pub use message_bus::{MessageBus, PublishReceipt, ShutdownReport};
pub use outbox::Outbox;
pub use pulled::{Pull, Pulled};
pub use settlement::Acknowledgement;
pub use subscription::{OverflowPolicy, SubscribeError, SubscribeOptions};
