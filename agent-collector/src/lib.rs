//! # agent-collector
//!
//! Market data in. The collector turns a [`CandleSource`] (a seeded
//! synthetic market, or a file) into `data.candle.<SYMBOL>.<interval>`
//! messages, and obeys `command.start_collection` / `command.stop_collection`.

#![forbid(unsafe_code)]

pub mod agent;
pub mod error;
pub mod file;
pub mod random;
pub mod source;
pub mod synthetic;

pub use agent::CollectorAgent;
pub use error::CollectorError;
pub use file::{BadRowPolicy, FileSource};
pub use source::CandleSource;
pub use synthetic::{SymbolSpec, SyntheticMarket, SyntheticSpec};
