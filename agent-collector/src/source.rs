//! Where candles come from.

use bus_core::model::payload::Candle;

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

/// What the read-ahead thread hands over: batches, then the end (or error).
struct Chunk {
    batches: Vec<Vec<Candle>>,
    /// `Some` once the source is exhausted (`Ok`) or failed (`Err`).
    end: Option<Result<(), CollectorError>>,
    skipped_rows: usize,
}

/// Batches the read-ahead thread sends at a time.
const READ_AHEAD_CHUNK: usize = 256;

/// Runs a source on its own thread, a few chunks ahead of its reader, so
/// generating or parsing candles overlaps with the work on them (on a
/// second core). The batches come out exactly as the source made them, in
/// order, so a deterministic source stays deterministic. Dropping the
/// reader stops the thread.
pub struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<Chunk>,
    ready: std::collections::VecDeque<Vec<Candle>>,
    end: Option<Result<(), CollectorError>>,
    finished: bool,
    interval: String,
    skipped_rows: usize,
}

impl ReadAhead {
    /// Starts reading `source` ahead, at most `depth` chunks of 256 batches.
    pub fn new(mut source: Box<dyn CandleSource>, depth: usize) -> Self {
        let interval = source.interval().to_string();
        let (tx, chunks) = std::sync::mpsc::sync_channel(depth.max(1));
        let spawned = std::thread::Builder::new()
            .name("collector-read-ahead".into())
            .spawn(move || loop {
                let mut chunk = Chunk {
                    batches: Vec::with_capacity(READ_AHEAD_CHUNK),
                    end: None,
                    skipped_rows: 0,
                };
                while chunk.batches.len() < READ_AHEAD_CHUNK && chunk.end.is_none() {
                    match source.next_batch() {
                        Ok(Some(batch)) => chunk.batches.push(batch),
                        Ok(None) => chunk.end = Some(Ok(())),
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
            ready: std::collections::VecDeque::new(),
            end,
            finished: false,
            interval,
            skipped_rows: 0,
        }
    }
}

impl CandleSource for ReadAhead {
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            if let Some(end) = self.end.take() {
                self.finished = true;
                return end.map(|()| None);
            }
            if self.finished {
                return Ok(None);
            }
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.ready.extend(chunk.batches);
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
        }
    }
}
