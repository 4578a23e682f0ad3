//! Where candles come from.

use bus_core::model::payload::Candle;

use crate::error::CollectorError;

/// A stream of candles, one batch per time step (one candle per symbol).
pub trait CandleSource: Send {
    /// The next batch, `Ok(None)` when the data is exhausted.
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError>;

    /// Appends the next batch to `batch`; `false` (nothing appended) when
    /// the data is exhausted. A reader calling this with one buffer again
    /// and again spares an allocation per time step; sources that can fill
    /// it directly override it.
    fn next_batch_into(&mut self, batch: &mut Vec<Candle>) -> Result<bool, CollectorError> {
        Ok(match self.next_batch()? {
            Some(next) => {
                batch.extend(next);
                true
            }
            None => false,
        })
    }

    /// The bar interval label (`1m`), used in topics.
    fn interval(&self) -> &str;

    /// Rows skipped as malformed so far (file sources).
    fn skipped_rows(&self) -> usize {
        0
    }
}

/// What the read-ahead thread hands over: time steps, then the end (or
/// error). The steps' candles travel in one vector, so a chunk costs two
/// allocations however many steps it holds (memory freed on the other
/// thread is the slow case of the allocator).
struct Chunk {
    candles: Vec<Candle>,
    /// Candles in each step, in order.
    steps: Vec<u32>,
    /// `Some` once the source is exhausted (`Ok`) or failed (`Err`).
    end: Option<Result<(), CollectorError>>,
    skipped_rows: usize,
}

/// Time steps the read-ahead thread sends at a time.
const READ_AHEAD_CHUNK: usize = 256;

/// Runs a source on its own thread, a few chunks ahead of its reader, so
/// generating or parsing candles overlaps with the work on them (on a
/// second core). The batches come out exactly as the source made them, in
/// order, so a deterministic source stays deterministic. Dropping the
/// reader stops the thread.
pub struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<Chunk>,
    candles: std::vec::IntoIter<Candle>,
    steps: std::vec::IntoIter<u32>,
    end: Option<Result<(), CollectorError>>,
    finished: bool,
    interval: String,
    skipped_rows: usize,
}

impl ReadAhead {
    /// Starts reading `source` ahead, at most `depth` chunks of 256 time
    /// steps.
    pub fn new(mut source: Box<dyn CandleSource>, depth: usize) -> Self {
        let interval = source.interval().to_string();
        let (tx, chunks) = std::sync::mpsc::sync_channel(depth.max(1));
        let spawned = std::thread::Builder::new()
            .name("collector-read-ahead".into())
            .spawn(move || loop {
                let mut chunk = Chunk {
                    candles: Vec::with_capacity(READ_AHEAD_CHUNK),
                    steps: Vec::with_capacity(READ_AHEAD_CHUNK),
                    end: None,
                    skipped_rows: 0,
                };
                while chunk.steps.len() < READ_AHEAD_CHUNK && chunk.end.is_none() {
                    let before = chunk.candles.len();
                    match source.next_batch_into(&mut chunk.candles) {
                        Ok(true) => chunk.steps.push((chunk.candles.len() - before) as u32),
                        Ok(false) => chunk.end = Some(Ok(())),
                        Err(error) => chunk.end = Some(Err(error)),
                    }
                }
                chunk.skipped_rows = source.skipped_rows();
                let last = chunk.end.is_some();
                if tx.send(chunk).is_err() || last {
                    break;
                }
            });
        let end = spawned.err().map(|e| {
            Err(CollectorError::BadSpec(format!(
                "cannot start the read-ahead thread: {e}"
            )))
        });
        Self {
            chunks,
            candles: Vec::new().into_iter(),
            steps: Vec::new().into_iter(),
            end,
            finished: false,
            interval,
            skipped_rows: 0,
        }
    }
}

impl CandleSource for ReadAhead {
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError> {
        let mut batch = Vec::new();
        Ok(self.next_batch_into(&mut batch)?.then_some(batch))
    }

    fn next_batch_into(&mut self, batch: &mut Vec<Candle>) -> Result<bool, CollectorError> {
        loop {
            if let Some(size) = self.steps.next() {
                batch.extend(self.candles.by_ref().take(size as usize));
                return Ok(true);
            }
            if let Some(end) = self.end.take() {
                self.finished = true;
                return end.map(|()| false);
            }
            if self.finished {
                return Ok(false);
            }
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.candles = chunk.candles.into_iter();
                    self.steps = chunk.steps.into_iter();
                    self.end = chunk.end;
                    self.skipped_rows = chunk.skipped_rows;
                }
                Err(_) => {
                    self.finished = true;
                    return Err(CollectorError::BadSpec(
                        "the read-ahead thread stopped (its source panicked)".into(),
                    ));
                }
            }
        }
    }

    fn interval(&self) -> &str {
        &self.interval
    }

    fn skipped_rows(&self) -> usize {
        self.skipped_rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{test_spec, SyntheticMarket};

    fn market(candles: usize) -> Box<dyn CandleSource> {
        Box::new(SyntheticMarket::new(test_spec(candles, 9)).unwrap())
    }

    #[test]
    fn read_ahead_yields_exactly_what_the_source_yields() {
        for candles in [0, 1, 255, 256, 257, 1000] {
            let mut direct = market(candles);
            let mut ahead = ReadAhead::new(market(candles), 2);
            assert_eq!(ahead.interval(), direct.interval());
            loop {
                let (a, b) = (direct.next_batch().unwrap(), ahead.next_batch().unwrap());
                assert_eq!(a, b);
                if a.is_none() {
                    break;
                }
            }
            assert_eq!(ahead.next_batch().unwrap(), None, "stays exhausted");
            // Filling one buffer: the same steps, appended.
            let mut ahead = ReadAhead::new(market(candles), 2);
            let mut direct = market(candles);
            let mut buffer = Vec::new();
            while let Some(batch) = direct.next_batch().unwrap() {
                buffer.clear();
                assert!(ahead.next_batch_into(&mut buffer).unwrap());
                assert_eq!(buffer, batch);
            }
            assert!(!ahead.next_batch_into(&mut buffer).unwrap());
            assert!(!ahead.next_batch_into(&mut buffer).unwrap());
        }
    }
}
