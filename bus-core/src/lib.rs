//! # bus-core
//!
//! Bistoury's message bus. Agents talk only through it; it never knows what
//! the agents do.
//!
//! Six subsystems, each a folder with a module doc saying what it owns;
//! each imports only the ones before it in this list:
//!
//! | module | what it owns |
//! |---|---|
//! | [`model`] | ids, topics and patterns, the [`Envelope`] and its typed [`Payload`]s (35 message types in eight families), priorities, delivery modes, headers, the wire codecs |
//! | [`store`] | the durable journal: record format, group commit, recovery, cleanup |
//! | [`bus`] | the concurrent in-process [`MessageBus`], the deterministic [`InlineBus`], routing, filters, the priority queue, circuit breakers, retries, dead letters, statistics |
//! | [`agent`] | the [`Agent`] contract, its [`Outbox`], lifecycle, [`MessageFactory`], registry, health checks, supervision |
//! | [`runtime`] | the drivers that run agents: on the inline bus (backtests), the queued bus, or any [`Transport`](runtime::transport::Transport); [`StopSignal`](runtime::StopSignal), [`Partition`](runtime::Partition) |
//! | `nats` (feature `nats`) | agents in separate processes: core NATS, JetStream, a local `nats-server` launcher |
//!
//! ## Example
//!
//! ```
//! use bus_core::prelude::*;
//! use rust_decimal::Decimal;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bus = MessageBus::new();
//! let (tx, rx) = flume::unbounded();
//! bus.subscribe(
//!     "data.price_update",
//!     Handler::from_async(move |envelope| {
//!         let tx = tx.clone();
//!         async move {
//!             tx.send(envelope.id).ok();
//!             Ok(())
//!         }
//!     }),
//!     SubscribeOptions::named("printer"),
//! )
//! .unwrap();
//!
//! let price = PriceUpdate::new(PriceUpdateFields {
//!     symbol: Symbol::new("BTC").unwrap(),
//!     price: Decimal::new(65_000, 0),
//!     timestamp_ms: 0,
//! })
//! .unwrap();
//! let message = Envelope::new(
//!     AgentId::new("collector"),
//!     Topic::new("data.price_update.BTC").unwrap(),
//!     Payload::DataPriceUpdate(price),
//! );
//! let id = message.id;
//! bus.publish(message).await.unwrap();
//! assert_eq!(rx.recv_async().await.unwrap(), id);
//! bus.shutdown(std::time::Duration::from_secs(1)).await;
//! # }
//! ```
//!
//! ## Wire format
//!
//! An envelope travels as one JSON object:
//!
//! ```json
//! {"id":"6f1c...","type":"data.candle","topic":"data.candle.BTC.1m",
//!  "sender":"collector","recipient":null,"correlation_id":null,"reply_to":null,
//!  "priority":"normal","delivery_mode":"fire_and_forget",
//!  "created_at_ms":1700000000000,"expires_at_ms":null,"attempt":0,"max_attempts":5,
//!  "headers":{},"tags":[],
//!  "payload":{"symbol":"BTC","interval":"1m","open_time_ms":1700000000000,
//!             "open":"100.5","high":"101","low":"99.9","close":"100.7","volume":"12.5"}}
//! ```
//!
//! `type` names the payload's schema (the snake_case names of
//! [`MessageType`]); decimals are strings; times are milliseconds since the
//! Unix epoch. On decoding, `recipient`, `correlation_id`, `reply_to`,
//! `priority` (default `normal`), `delivery_mode` (default
//! `fire_and_forget`), `expires_at_ms`, `attempt`, `max_attempts` (default 5),
//! `headers` and `tags` may be omitted; unknown fields are errors. A decoding
//! error names the failing field's path (`payload.close`).
//!
//! Between Bistoury processes the same envelope may travel in the compact
//! binary layout of [`model::wire::binary`] (about a third of the size,
//! several times cheaper to encode and decode); a writer chooses with
//! [`model::WireFormat`], and [`Envelope::from_wire`] reads either.
//!
//! ## Priority and causality
//!
//! Priority may reorder *independent* streams, never a causal chain.
//! In a backtest ([`InlineBus`]) and in `bistoury run` in lockstep (the
//! queued bus through [`InProcess::lockstep`](runtime::transport::InProcess::lockstep))
//! each message a source publishes — one candle — is worked through before
//! the source's next, generation by generation: generation 0 is the
//! message, generation *n + 1* what handlers published while handling
//! generation *n*, and nothing of generation *n + 1* is handled before all
//! of generation *n* has been handled by every subscriber. Within a generation a subscriber takes its
//! messages by priority (CRITICAL first), then by the publisher's place in
//! the run, then in publish order ([`bus::generation`]). What that covers:
//!
//! * a signal, the order request it leads to, the risk decision and the
//!   fill are each a generation after the candle that caused them: a HIGH
//!   approval never overtakes its own NORMAL candle, so an order decided on
//!   a bar's close fills at a later bar's open;
//! * a candle's whole chain (signal, order, decision, fill, marks, risk
//!   checks, a stop) is done before the next candle, of any symbol, is
//!   handled;
//! * a CRITICAL emergency stop is handled before the HIGH approvals
//!   published in the same generation;
//! * the order depends only on what was published, never on which thread
//!   ran first: `run` in lockstep gives the backtest's trade log and report
//!   byte for byte (`tests/tests/run_is_backtest.rs`).
//!
//! Without lockstep, and between processes over NATS, there is no step:
//! each subscriber's queue hands over by priority, then arrival. Agents do
//! not rely on arrival order for what must hold anyway — the trader fills
//! an order only at a bar strictly after the one that decided it, and
//! passes by repeated or late candles — so a free-running or distributed
//! run trades later or less than the backtest, never on a price it could
//! not have had (`tests/tests/no_look_ahead.rs`).
//!
//! ## Delivery guarantees
//!
//! | mode | in process | with a durable store ([`MessageBus::durable`]) |
//! |---|---|---|
//! | `fire_and_forget` | at most once; overflow drops are counted | the same (never written) |
//! | `at_least_once` | retried with backoff until a handler acks, then dead-lettered | written (and fsync'd) before `publish` returns; replayed after a restart until acked |
//! | `exactly_once` | at-least-once + a per-subscription window of handled ids | the window is persisted with each ack |
//!
//! A handler acknowledges by returning `Ok`, or, for
//! [`Handler::manual_ack`] handlers, by calling `ack()` on the
//! [`Acknowledgement`](bus::Acknowledgement) it was given (possibly later; a nack, a
//! dropped acknowledgement or `ack_wait` passing counts as a failure).
//!
//! Durable tracking is per *named* subscription: the store records, with
//! each durable message, the names of the named subscriptions it was routed
//! to; a subscription with the same name picks up what is pending for it
//! when it subscribes again (after a restart), before anything new, in
//! publication order. Messages past their TTL are never delivered (counted
//! as expired, at delivery, by background cleanup, or at recovery).
//!
//! Backpressure on a durable bus: the store refuses a new durable message
//! while `max_pending` messages are pending (`PublishError::Store`, "durable
//! store full"), before anything is written or queued. A durable message
//! that a full queue then refuses or drops (per the subscription's overflow
//! policy) is still pending in the store: it is not lost, and is replayed
//! when the subscription next subscribes. Durable subscriptions should keep
//! the default `Block` policy. Shutdown leaves whatever was not handled
//! pending in the store, for the next start.
//!
//! ### When exactly-once can still call a handler twice
//!
//! Exactly-once means: a message whose handler *completed and whose ack
//! reached the store* is never handed to that subscription again, even
//! across restarts (while its id is inside the de-dup window, 100,000 ids
//! by default). Handler completion and the ack write are two steps, so
//! these crash points can still lead to a second call:
//!
//! 1. **The process dies after the handler returned `Ok` but before its ack
//!    record was written.** Acks are group-committed by the store's writer
//!    thread a moment after the handler returns (the consumer does not wait
//!    for them, which is what keeps throughput up); a SIGKILL inside that
//!    window — typically the acks of the last few hundred microseconds —
//!    replays the message after the restart. The crash tests
//!    (`tests/tests/durable.rs`) kill the process at random points and
//!    check that every repeated call was of this kind: handled before the
//!    kill, yet not recorded as processed in the store the dead process left.
//! 2. **The handler had side effects and then failed or panicked**, or a
//!    manual-ack handler did its work but its ack came after `ack_wait`:
//!    the delivery counts as failed and is retried, as it must be.
//! 3. **Power loss with `fsync` off**: acks (and messages) in the page cache
//!    are lost. With `fsync` on (the default), each commit is synced.
//!
//! A handler makes itself idempotent by recording its effect keyed by the
//! message id (`envelope.id`, stable across redeliveries and replays)
//! together with the effect, in one transaction of its own store, and
//! skipping ids it has already recorded; or by making the effect naturally
//! idempotent (set a position to a value rather than add to it). A
//! producer that retries a publish after its own crash should reuse the
//! message id (`Envelope::with_identity`), so the retry is de-duplicated.

#![forbid(unsafe_code)]

pub mod agent;
pub mod bus;
pub mod model;
#[cfg(feature = "nats")]
pub mod nats;
pub mod runtime;
pub mod store;

pub use agent::{Agent, Health, Lifecycle, MessageFactory, Outbox, Outcome, Produce};
pub use bus::error::{HandlerError, HandlerResult, PublishError, RequestError};
pub use bus::filter::Filter;
pub use bus::handler::Handler;
pub use bus::inline::InlineBus;
pub use bus::stats::{BusStats, DropReason};
pub use bus::{
    CircuitBreakerConfig, CircuitState, MessageBus, OverflowPolicy, PublishReceipt, ShutdownReport,
    SubscribeError, SubscribeOptions,
};
pub use model::error::{DecodeError, PayloadError, TopicError};
pub use model::ids::{AgentId, MessageId, SubscriptionId};
pub use model::topic::{Topic, TopicPattern};
pub use model::{DeliveryMode, Envelope, MessageType, Payload, Priority};

/// Everything an agent usually needs, in one import.
pub mod prelude {
    pub use crate::model::payload::*;
    pub use crate::{
        Agent, AgentId, DeliveryMode, Envelope, Filter, Handler, HandlerError, HandlerResult,
        Health, InlineBus, MessageBus, MessageFactory, MessageId, MessageType, Outbox, Outcome,
        OverflowPolicy, Payload, Priority, Produce, SubscribeOptions, Topic, TopicPattern,
    };
}
