//! The strategies, one module each.

pub mod bollinger;
pub mod candlestick;
pub mod ma_crossover;
pub mod macd;
pub mod rsi;

pub use bollinger::BollingerReversion;
pub use candlestick::{CandlestickPatterns, Pattern, PatternSet};
pub use ma_crossover::MovingAverageCrossover;
pub use macd::MacdCrossover;
pub use rsi::RsiReversal;
