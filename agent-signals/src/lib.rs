//! # agent-signals
//!
//! Candles in, signals out. Each strategy is its own module and keeps its
//! own state per symbol; the [`Aggregator`] combines one bar's strategy
//! signals with configured weights and publishes `signal.aggregated` when
//! the combined confidence clears a threshold. Indicators compute in `f64`.
//!
//! ```
//! use agent_signals::strategies::MovingAverageCrossover;
//! use agent_signals::{Bar, Strategy};
//!
//! let mut crossover = MovingAverageCrossover::new(2, 4);
//! let closes = [10.0, 10.0, 10.0, 9.0, 9.0, 12.0];
//! let signals: Vec<_> = closes.iter().filter_map(|c| crossover.on_bar(&Bar::flat(*c))).collect();
//! assert_eq!(signals.len(), 1, "one crossing up");
//! ```

#![forbid(unsafe_code)]

pub mod agent;
pub mod aggregator;
pub mod config;
pub mod indicators;
pub mod llm;
pub mod registry;
pub mod strategies;
pub mod strategy;

pub use agent::SignalAgent;
pub use aggregator::{Aggregator, Weighted};
pub use config::{CustomStrategyConfig, SignalsConfig, StrategyConfig};
pub use registry::{StrategyFactory, StrategyRegistry};
pub use strategy::{Bar, Strategy, StrategySignal};
