//! # agent-signals
//!
//! Candles in, signals out. Each strategy is its own module and keeps its
//! own state per symbol; the [`Aggregator`] combines one bar's strategy
//! signals with configured weights and publishes `signal.aggregated` when
//! the combined confidence clears a threshold. Indicators compute in `f64`.

#![forbid(unsafe_code)]

pub mod agent;
pub mod aggregator;
pub mod config;
pub mod indicators;
pub mod strategies;
pub mod strategy;

pub use agent::SignalAgent;
pub use aggregator::Aggregator;
pub use config::{SignalsConfig, StrategyConfig};
pub use strategy::{Bar, Strategy, StrategySignal};
