//! Agents in separate processes (feature `nats`): the NATS transport
//! ([`NatsBus`], [`NatsTransport`]), JetStream for the families that must
//! not lose messages ([`jetstream`]), and the launcher of a local
//! `nats-server` that proves it owns what it started ([`local_server`]).
//!
//! Imports the runtime (agents on NATS run on its one driver) and
//! everything below it.

mod bus;
mod client;
mod connection;
mod incoming;
pub mod jetstream;
pub mod local_server;
mod transport;

pub use bus::*;
pub use client::*;
pub use connection::*;
pub use transport::*;
