//! Candles held in memory, read once and replayed as often as wanted: a
//! parameter search runs hundreds of backtests on the same data, each
//! from a window of it, without reading or parsing the file again.

use std::ops::Range;
use std::sync::Arc;

use bus_core::model::payload::Candle;

use crate::error::CollectorError;
use crate::source::CandleSource;

/// A window of loaded time steps (each a batch of candles of one time),
/// itself a [`CandleSource`]; clones share the candles.
#[derive(Debug, Clone)]
pub struct MemoryCandles {
    steps: Arc<[Vec<Candle>]>,
    interval: String,
    next: usize,
    end: usize,
}

impl MemoryCandles {
    /// Reads `source` to its end; returns the candles and the rows it
    /// skipped.
    pub fn load(mut source: Box<dyn CandleSource>) -> Result<(Self, usize), CollectorError> {
        let mut steps = Vec::new();
        while let Some(batch) = source.next_batch()? {
            steps.push(batch);
        }
        let end = steps.len();
        let candles = Self {
            steps: steps.into(),
            interval: source.interval().to_string(),
            next: 0,
            end,
        };
        Ok((candles, source.skipped_rows()))
    }

    /// The time steps of this window.
    pub fn steps(&self) -> usize {
        self.end - self.next
    }

    /// The same candles, steps `range` of this window only (clamped to it).
    pub fn window(&self, range: Range<usize>) -> Self {
        let start = (self.next + range.start).min(self.end);
        let end = (self.next + range.end).clamp(start, self.end);
        Self {
            steps: self.steps.clone(),
            interval: self.interval.clone(),
            next: start,
            end,
        }
    }

    /// The open time of this window's step `i`.
    pub fn step_time_ms(&self, i: usize) -> Option<i64> {
        let step = self
            .steps
            .get(self.next + i)
            .filter(|_| self.next + i < self.end)?;
        step.first().map(|c| c.open_time_ms)
    }
}

impl CandleSource for MemoryCandles {
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError> {
        if self.next >= self.end {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(self.steps[self.next - 1].clone()))
    }

    fn next_batch_into(&mut self, batch: &mut Vec<Candle>) -> Result<bool, CollectorError> {
        if self.next >= self.end {
            return Ok(false);
        }
        self.next += 1;
        batch.extend_from_slice(&self.steps[self.next - 1]);
        Ok(true)
    }

    fn interval(&self) -> &str {
        &self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{test_spec, SyntheticMarket};

    fn drain(mut source: impl CandleSource) -> Vec<Vec<Candle>> {
        std::iter::from_fn(|| source.next_batch().unwrap()).collect()
    }

    #[test]
    fn windows_replay_the_loaded_steps_as_the_source_gave_them() {
        let spec = || test_spec(50, 3);
        let all = drain(SyntheticMarket::new(spec()).unwrap());
        let (loaded, skipped) =
            MemoryCandles::load(Box::new(SyntheticMarket::new(spec()).unwrap())).unwrap();
        assert_eq!((loaded.steps(), skipped), (50, 0));
        assert_eq!(drain(loaded.clone()), all, "replayed whole, twice");
        assert_eq!(drain(loaded.clone()), all);
        let middle = loaded.window(10..20);
        assert_eq!(middle.steps(), 10);
        assert_eq!(drain(middle.clone()), all[10..20].to_vec());
        assert_eq!(middle.step_time_ms(0), Some(all[10][0].open_time_ms));
        assert_eq!(middle.step_time_ms(10), None);
        // A window of a window counts from its start; beyond the end is empty.
        assert_eq!(drain(middle.window(5..50)), all[15..20].to_vec());
        assert_eq!(middle.window(30..40).steps(), 0);
    }
}
