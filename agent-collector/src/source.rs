//! Where candles come from.

use bus_core::message::payload::Candle;

use crate::error::CollectorError;

/// A stream of candles, one batch per time step (one candle per symbol).
pub trait CandleSource: Send {
    /// The next batch, `Ok(None)` when the data is exhausted.
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError>;

    /// The bar interval label (`1m`), used in topics.
    fn interval(&self) -> &str;

    /// Rows skipped as malformed so far (file sources).
    fn skipped_rows(&self) -> usize {
        0
    }
}
