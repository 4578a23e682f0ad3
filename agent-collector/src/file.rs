//! Candles from a file, streamed line by line (memory stays flat).
//!
//! Two formats, chosen by extension:
//!
//! * CSV (`.csv`), with a header naming these columns in any order:
//!   `open_time_ms,symbol,open,high,low,close,volume`.
//! * JSON lines (`.jsonl`, `.ndjson`), one object per line with the same keys;
//!   prices may be strings or numbers.
//!
//! Consecutive rows with the same `open_time_ms` form one batch (one time
//! step). A malformed row is reported with its line number; with
//! [`BadRowPolicy::Skip`] it is counted and skipped, with
//! [`BadRowPolicy::Stop`] reading stops with an error.

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bus_core::model::payload::{Candle, CandleFields, Symbol};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::error::CollectorError;
use crate::source::CandleSource;

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRowPolicy {
    /// Report it, count it, go on.
    Skip,
    /// Report it and stop reading.
    Stop,
}

const COLUMNS: [&str; 7] = [
    "open_time_ms",
    "symbol",
    "open",
    "high",
    "low",
    "close",
    "volume",
];

enum Format {
    Csv { columns: [usize; 7] },
    JsonLines,
}

/// A file of candles.
pub struct FileSource {
    path: PathBuf,
    lines: Lines<BufReader<File>>,
    line: usize,
    format: Format,
    interval: std::sync::Arc<str>,
    policy: BadRowPolicy,
    skipped: usize,
    held: Option<Candle>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    open_time_ms: i64,
    symbol: String,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
}

impl FileSource {
    /// Opens `path`; the format follows the extension.
    pub fn open(path: &Path, interval: &str, policy: BadRowPolicy) -> Result<Self, CollectorError> {
        let io = |source| CollectorError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut lines = BufReader::new(file).lines();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (format, line) = match extension {
            "jsonl" | "ndjson" => (Format::JsonLines, 0),
            _ => {
                let header = lines.next().transpose().map_err(io)?.unwrap_or_default();
                let names: Vec<&str> = header.trim().split(',').map(str::trim).collect();
                let mut columns = [0; 7];
                for (slot, wanted) in columns.iter_mut().zip(COLUMNS) {
                    *slot = names.iter().position(|n| *n == wanted).ok_or_else(|| {
                        CollectorError::BadHeader {
                            path: path.to_path_buf(),
                            reason: format!(
                                "missing column `{wanted}`; expected {} (found {header:?})",
                                COLUMNS.join(",")
                            ),
                        }
                    })?;
                }
                (Format::Csv { columns }, 1)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            lines,
            line,
            format,
            interval: interval.into(),
            policy,
            skipped: 0,
            held: None,
        })
    }

    fn parse(&self, text: &str) -> Result<Candle, String> {
        let fields = match &self.format {
            Format::Csv { columns } => {
                let cells: Vec<&str> = text.split(',').map(str::trim).collect();
                let cell = |i: usize| -> Result<&str, String> {
                    cells
                        .get(columns[i])
                        .copied()
                        .ok_or_else(|| format!("missing column `{}`", COLUMNS[i]))
                };
                let decimal = |i: usize| -> Result<Decimal, String> {
                    let raw = cell(i)?;
                    Decimal::from_str(raw)
                        .map_err(|_| format!("column `{}`: {raw:?} is not a number", COLUMNS[i]))
                };
                let time = cell(0)?;
                CandleFields {
                    open_time_ms: time.parse().map_err(|_| {
                        format!("column `open_time_ms`: {time:?} is not an integer")
                    })?,
                    symbol: Symbol::new(cell(1)?).map_err(|e| e.to_string())?,
                    interval: self.interval.clone(),
                    open: decimal(2)?,
                    high: decimal(3)?,
                    low: decimal(4)?,
                    close: decimal(5)?,
                    volume: decimal(6)?,
                }
            }
            Format::JsonLines => {
                let row: JsonRow = serde_json::from_str(text).map_err(|e| e.to_string())?;
                CandleFields {
                    open_time_ms: row.open_time_ms,
                    symbol: Symbol::new(row.symbol).map_err(|e| e.to_string())?,
                    interval: self.interval.clone(),
                    open: row.open,
                    high: row.high,
                    low: row.low,
                    close: row.close,
                    volume: row.volume,
                }
            }
        };
        Candle::new(fields).map_err(|e| e.to_string())
    }

    /// The next good candle, applying the bad-row policy.
    fn next_candle(&mut self) -> Result<Option<Candle>, CollectorError> {
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            self.line += 1;
            let text = line.map_err(|source| CollectorError::Io {
                path: self.path.clone(),
                source,
            })?;
            if text.trim().is_empty() {
                continue;
            }
            match self.parse(&text) {
                Ok(candle) => return Ok(Some(candle)),
                Err(reason) => {
                    let error = CollectorError::BadRow {
                        path: self.path.clone(),
                        line: self.line,
                        reason,
                    };
                    match self.policy {
                        BadRowPolicy::Stop => return Err(error),
                        BadRowPolicy::Skip => {
                            self.skipped += 1;
                            tracing::warn!(%error, "skipping bad row");
                        }
                    }
                }
            }
        }
    }
}

impl CandleSource for FileSource {
    fn next_batch(&mut self) -> Result<Option<Vec<Candle>>, CollectorError> {
        let first = match self.held.take() {
            Some(candle) => candle,
            None => match self.next_candle()? {
                Some(candle) => candle,
                None => return Ok(None),
            },
        };
        let time = first.open_time_ms;
        let mut batch = vec![first];
        while let Some(candle) = self.next_candle()? {
            if candle.open_time_ms == time {
                batch.push(candle);
            } else {
                self.held = Some(candle);
                break;
            }
        }
        Ok(Some(batch))
    }

    fn interval(&self) -> &str {
        &self.interval
    }

    fn skipped_rows(&self) -> usize {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, path)
    }

    fn drain(source: &mut FileSource) -> Result<Vec<Vec<Candle>>, CollectorError> {
        let mut all = Vec::new();
        while let Some(batch) = source.next_batch()? {
            all.push(batch);
        }
        Ok(all)
    }

    const GOOD: &str = "symbol,open_time_ms,open,high,low,close,volume\n\
        BTC,0,100,101,99,100.5,3\n\
        ETH,0,10,11,9,10.5,30\n\
        BTC,60000,100.5,102,100,101,4\n";

    #[test]
    fn csv_rows_group_into_time_steps() {
        let (_d, path) = write("c.csv", GOOD);
        let mut s = FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap();
        let batches = drain(&mut s).unwrap();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(batches[1][0].close, Decimal::new(101, 0));
    }

    #[test]
    fn bad_rows_are_reported_with_line_numbers() {
        let text = format!("{GOOD}BTC,120000,abc,1,1,1,1\nBTC,180000,100,90,95,96,1\nBTC,240000,100,101,99,100,1\n");
        let (_d, path) = write("c.csv", &text);
        let mut stop = FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap();
        let error = drain(&mut stop).unwrap_err().to_string();
        assert!(
            error.contains("c.csv:5:") && error.contains("open"),
            "{error}"
        );

        let mut skip = FileSource::open(&path, "1m", BadRowPolicy::Skip).unwrap();
        let batches = drain(&mut skip).unwrap();
        assert_eq!(
            skip.skipped_rows(),
            2,
            "the non-number and the high-below-open rows"
        );
        assert_eq!(batches.len(), 3);
    }

    #[test]
    fn missing_column_and_missing_file_are_clear_errors() {
        let (_d, path) = write("c.csv", "symbol,open,high\nBTC,1,2\n");
        let error = FileSource::open(&path, "1m", BadRowPolicy::Stop)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("missing column `open_time_ms`"), "{error}");
        let error = FileSource::open(Path::new("/no/such/file.csv"), "1m", BadRowPolicy::Stop)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("/no/such/file.csv"), "{error}");
    }

    #[test]
    fn json_lines() {
        let text = "{\"open_time_ms\":0,\"symbol\":\"BTC\",\"open\":\"1\",\"high\":2,\"low\":\"0.5\",\"close\":1.5,\"volume\":1}\n\n{\"bad\":1}\n";
        let (_d, path) = write("c.jsonl", text);
        let mut s = FileSource::open(&path, "1m", BadRowPolicy::Skip).unwrap();
        let batches = drain(&mut s).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0][0].high, Decimal::new(2, 0));
        assert_eq!(s.skipped_rows(), 1);
    }
}
