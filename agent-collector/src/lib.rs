//! # agent-collector
//!
//! Market data in. The collector turns a [`CandleSource`] (a seeded
//! synthetic market, or a file) into `data.candle.<SYMBOL>.<interval>`
//! messages, and obeys `command.start_collection` / `command.stop_collection`.
//!
//! ```
//! use agent_collector::{CandleSource, SymbolSpec, SyntheticMarket, SyntheticSpec};
//! use bus_core::model::payload::Symbol;
//!
//! let mut market = SyntheticMarket::new(SyntheticSpec {
//!     symbols: vec![SymbolSpec { symbol: Symbol::new("BTC").unwrap(), start_price: 30_000.0 }],
//!     candles: 3,
//!     interval_ms: 60_000,
//!     interval: "1m".into(),
//!     start_time_ms: 0,
//!     seed: 42,
//!     volatility: 0.002,
//!     regime_change_probability: 0.01,
//! })
//! .unwrap();
//! let mut bars = 0;
//! while let Some(batch) = market.next_batch().unwrap() {
//!     bars += batch.len();
//! }
//! assert_eq!(bars, 3);
//! ```

#![forbid(unsafe_code)]

pub mod agent;
pub mod error;
pub mod file;
pub mod memory;
pub mod random;
pub mod source;
pub mod synthetic;
pub mod venue;

pub use agent::{Collected, CollectorAgent, FeedStatus};
pub use error::CollectorError;
pub use file::{BadRowPolicy, FileSource};
pub use memory::MemoryCandles;
pub use source::{CandleSource, ReadAhead};
pub use synthetic::{SymbolSpec, SyntheticMarket, SyntheticSpec};
