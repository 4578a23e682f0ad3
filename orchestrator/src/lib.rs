//! # orchestrator
//!
//! The `bistoury` binary's library: configuration ([`config`]), wiring of
//! the agents ([`run`]), the run report ([`report`]) and logging
//! ([`logging`]). `main.rs` is only the command line.

#![forbid(unsafe_code)]

pub mod config;
pub mod logging;
pub mod report;
pub mod run;

pub use config::{BistouryConfig, ConfigError};
pub use report::Report;
pub use run::{backtest, run, Mode, RunOutcome};
