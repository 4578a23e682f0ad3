//! # orchestrator
//!
//! The `bistoury` binary's library: configuration ([`config`]), wiring of
//! the agents ([`run`](mod@run)), the run report ([`report`]) and logging
//! ([`logging`]) and the command line ([`cli`]); `main.rs` only calls
//! [`cli::main`].

#![forbid(unsafe_code)]

pub mod agents;
pub mod announcer;
pub mod bus_summary;
pub mod charts;
pub mod cli;
pub mod config;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod optimize;
pub mod output;
pub mod processes;
pub mod progress;
pub mod report;
pub mod run;
pub mod status;

pub use config::{BistouryConfig, ConfigError};
pub use report::Report;
pub use run::{backtest, run, Mode, RunOutcome};
