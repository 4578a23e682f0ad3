//! Recording a live feed to the candle file format the replay source
//! reads (CSV: `open_time_ms,symbol,open,high,low,close,volume`), so that
//! what was traded live can be backtested.
//!
//! A file is in time order across markets, and a market's candle can
//! close late (back-filled after a reconnection): a candle is written once
//! every market has closed its interval (or a later one), so rows never go
//! back in time; what is held when recording stops is written then, in
//! order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bus_core::model::payload::{Candle, Symbol};

/// The header of a recording.
pub const HEADER: &str = "open_time_ms,symbol,open,high,low,close,volume";

/// Writes closed candles to a new CSV file (see the module docs).
pub struct CandleRecorder {
    path: PathBuf,
    out: BufWriter<File>,
    /// Per market followed, the open time of its last closed candle.
    closed: Vec<(Symbol, Option<i64>)>,
    held: BTreeMap<(i64, Symbol), Candle>,
    written: u64,
}

impl CandleRecorder {
    /// Creates `path` for the candles of `symbols`; an existing file is
    /// never overwritten.
    pub fn create(path: &Path, symbols: &[Symbol]) -> std::io::Result<Self> {
        let file = File::options().write(true).create_new(true).open(path)?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{HEADER}")?;
        out.flush()?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            closed: symbols.iter().map(|s| (s.clone(), None)).collect(),
            held: BTreeMap::new(),
            written: 0,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Takes a closed candle; writes (and flushes) every row that can no
    /// longer be preceded by another.
    pub fn push(&mut self, candle: Candle) -> std::io::Result<()> {
        if let Some((_, last)) = self.closed.iter_mut().find(|(s, _)| *s == candle.symbol) {
            *last = Some(last.map_or(candle.open_time_ms, |l| l.max(candle.open_time_ms)));
        }
        self.held
            .insert((candle.open_time_ms, candle.symbol.clone()), candle);
        let ready = self.closed.iter().map(|(_, last)| *last).min().flatten();
        let Some(ready) = ready else {
            return Ok(());
        };
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > ready {
                break;
            }
            let candle = entry.remove();
            self.write(&candle)?;
        }
        self.out.flush()
    }

    fn write(&mut self, c: &Candle) -> std::io::Result<()> {
        self.written += 1;
        writeln!(
            self.out,
            "{},{},{},{},{},{},{}",
            c.open_time_ms, c.symbol, c.open, c.high, c.low, c.close, c.volume
        )
    }

    /// Writes what is held, in order, and closes the file; the rows
    /// written in all.
    pub fn finish(mut self) -> std::io::Result<u64> {
        for candle in std::mem::take(&mut self.held).into_values() {
            self.write(&candle)?;
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::model::payload::CandleFields;
    use rust_decimal::Decimal;

    fn candle(symbol: &str, minute: i64) -> Candle {
        let price = Decimal::new(1000 + minute, 1);
        Candle::new(CandleFields {
            symbol: Symbol::new(symbol).unwrap(),
            interval: "1m".into(),
            open_time_ms: minute * 60_000,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Decimal::ONE,
        })
        .unwrap()
    }

    #[test]
    fn rows_are_written_in_time_order_across_markets_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.csv");
        let symbols = [Symbol::new("BTC").unwrap(), Symbol::new("ETH").unwrap()];
        let mut recorder = CandleRecorder::create(&path, &symbols).unwrap();
        // ETH runs ahead; BTC's minute 1 comes late (a back-fill).
        for c in [
            candle("BTC", 0),
            candle("ETH", 0),
            candle("ETH", 1),
            candle("ETH", 2),
        ] {
            recorder.push(c).unwrap();
        }
        assert_eq!(recorder.written(), 2, "minute 1 waits for BTC");
        recorder.push(candle("BTC", 1)).unwrap();
        recorder.push(candle("BTC", 2)).unwrap();
        recorder.push(candle("ETH", 3)).unwrap();
        assert_eq!(recorder.finish().unwrap(), 7);
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<(i64, &str)> = text
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.split(',');
                (f.next().unwrap().parse().unwrap(), f.next().unwrap())
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (0, "BTC"),
                (0, "ETH"),
                (60_000, "BTC"),
                (60_000, "ETH"),
                (120_000, "BTC"),
                (120_000, "ETH"),
                (180_000, "ETH"),
            ]
        );
        assert!(text.starts_with(HEADER));
        let again = CandleRecorder::create(&path, &symbols);
        assert_eq!(
            again.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "untouched");
    }
}
