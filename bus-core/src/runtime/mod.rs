//! Running agents: the drivers that start, feed, supervise and stop them.
//!
//! * [`driver`]: a set of agents on the inline bus (backtests, one thread,
//!   deterministic) or on the queued bus (`bistoury run`);
//! * [`transport`]: the [`Transport`](transport::Transport) trait and the
//!   driver that runs one agent on any transport (the in-process bus,
//!   NATS);
//! * [`script`]: an agent fed scripted input, for tests;
//! * [`StopSignal`] ends a run gracefully; a [`Partition`] is one
//!   instance's share of an agent's keyed work.
//!
//! Imports the agents' contract ([`agent`](crate::agent)) and the buses.

pub mod driver;
mod partition;
pub mod script;
mod stop;
pub mod transport;

pub use driver::{
    run_inline, run_inline_until, run_queued, run_queued_until, Finished, InlineRun, QueuedOptions,
    QueuedRun, RunError,
};
pub use partition::Partition;
pub use stop::StopSignal;
