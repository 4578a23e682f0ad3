//! Candles from a file, streamed line by line (memory stays flat).
//!
//! Two formats, chosen by extension:
//!
//! * CSV (`.csv`), with a header naming these columns in any order:
//!   `open_time_ms,symbol,open,high,low,close,volume`.
//! * JSON lines (`.jsonl`, `.ndjson`), one object per line with the same keys;
//!   prices may be strings or numbers.
//!
//! `open_time_ms` is the bar's open time: milliseconds since the Unix
//! epoch, or an ISO-8601 UTC time (`2023-11-14`, `2023-11-14T22:13:20Z`).
//!
//! Rows come in time order: consecutive rows with the same time form one
//! batch (one time step), each symbol at most once. A malformed row, a row
//! earlier than the one before it, or a symbol's second row at one time is
//! reported with its line number; with [`BadRowPolicy::Skip`] it is counted
//! and skipped, with [`BadRowPolicy::Stop`] reading stops with an error. A
//! file with no candle at all (a header only) is reported as a warning.

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
    /// The time of the last candle read, the symbols read at it, and the
    /// line each came from (for out-of-order and duplicate rows).
    current: Option<(i64, Vec<(Symbol, usize)>)>,
    /// Candles read.
    read: usize,
    /// The end of the file was reached.
    ended: bool,
    /// Bad rows and an empty file are logged (not when only peeking).
    logs: bool,
}

/// A time as a number of milliseconds or an ISO-8601 text.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTime {
    Millis(i64),
    Text(String),
}

/// `text` as a bar's open time: milliseconds, or ISO-8601 UTC.
fn open_time(text: &str) -> Result<i64, String> {
    text.parse()
        .ok()
        .or_else(|| bus_core::model::time::parse_iso8601_utc(text))
        .ok_or_else(|| {
            format!(
                "column `open_time_ms`: {text:?} is neither milliseconds nor an ISO-8601 UTC time"
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    open_time_ms: JsonTime,
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
            current: None,
            read: 0,
            ended: false,
            logs: true,
        })
    }

    /// Logs nothing (a caller peeking at the first rows, before the run
    /// that reads and reports them).
    pub fn quiet(mut self) -> Self {
        self.logs = false;
        self
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
                CandleFields {
                    open_time_ms: open_time(cell(0)?)?,
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
                    open_time_ms: match row.open_time_ms {
                        JsonTime::Millis(ms) => ms,
                        JsonTime::Text(text) => open_time(&text)?,
                    },
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

    /// `candle` if it comes after what was read (time order, each symbol
    /// once per time); else why not.
    fn in_order(&mut self, candle: Candle) -> Result<Candle, String> {
        let time = candle.open_time_ms;
        let when = bus_core::model::time::iso8601_utc;
        match &mut self.current {
            Some((last, _)) if time < *last => Err(format!(
                "out of order: {} at {} comes after a row at {} (rows must be in time order)",
                candle.symbol,
                when(time),
                when(*last)
            )),
            Some((last, seen)) if time == *last => {
                if let Some((_, line)) = seen.iter().find(|(s, _)| *s == candle.symbol) {
                    return Err(format!(
                        "duplicate: {} at {} again (first on line {line})",
                        candle.symbol,
                        when(time)
                    ));
                }
                seen.push((candle.symbol.clone(), self.line));
                Ok(candle)
            }
            _ => {
                self.current = Some((time, vec![(candle.symbol.clone(), self.line)]));
                Ok(candle)
            }
        }
    }

    /// The next good candle, applying the bad-row policy.
    fn next_candle(&mut self) -> Result<Option<Candle>, CollectorError> {
        loop {
            let Some(line) = self.lines.next() else {
                if self.read == 0 && !self.ended && self.logs {
                    tracing::warn!(path = %self.path.display(), lines = self.line, "no candle in the file");
                }
                self.ended = true;
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
            match self.parse(&text).and_then(|candle| self.in_order(candle)) {
                Ok(candle) => {
                    self.read += 1;
                    return Ok(Some(candle));
                }
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
                            if self.logs {
                                tracing::warn!(%error, "skipping bad row");
                            }
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
    fn out_of_order_and_duplicate_rows_are_bad_rows() {
        let text = "open_time_ms,symbol,open,high,low,close,volume\n\
            60000,BTC,1,1,1,1,1\n\
            60000,ETH,1,1,1,1,1\n\
            0,BTC,1,1,1,1,1\n\
            60000,BTC,1,1,1,1,1\n\
            120000,BTC,1,1,1,1,1\n\
            120000,ETH,1,1,1,1,1\n";
        let (_d, path) = write("c.csv", text);
        let error = drain(&mut FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("c.csv:4:") && error.contains("out of order"),
            "{error}"
        );
        let mut skip = FileSource::open(&path, "1m", BadRowPolicy::Skip).unwrap();
        let batches = drain(&mut skip).unwrap();
        assert_eq!(
            skip.skipped_rows(),
            2,
            "the earlier row and the repeated one"
        );
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
        let text = "open_time_ms,symbol,open,high,low,close,volume\n\
            0,BTC,1,1,1,1,1\n0,ETH,1,1,1,1,1\n0,BTC,2,2,2,2,1\n";
        let (_d, path) = write("d.csv", text);
        let error = drain(&mut FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("d.csv:4:") && error.contains("duplicate") && error.contains("line 2"),
            "{error}"
        );
    }

    #[test]
    fn times_in_milliseconds_or_iso_8601() {
        let text = "open_time_ms,symbol,open,high,low,close,volume\n\
            2023-11-14,BTC,1,1,1,1,1\n\
            2023-11-14T00:01:00Z,BTC,1,1,1,1,1\n\
            1699920120000,BTC,1,1,1,1,1\n";
        let (_d, path) = write("c.csv", text);
        let mut s = FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap();
        let times: Vec<i64> = drain(&mut s)
            .unwrap()
            .iter()
            .map(|b| b[0].open_time_ms)
            .collect();
        assert_eq!(
            times,
            vec![1_699_920_000_000, 1_699_920_060_000, 1_699_920_120_000]
        );
        let text = "{\"open_time_ms\":\"2023-11-14T00:00:00Z\",\"symbol\":\"BTC\",\"open\":1,\"high\":1,\"low\":1,\"close\":1,\"volume\":1}\n";
        let (_d, path) = write("c.jsonl", text);
        let mut s = FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap();
        assert_eq!(drain(&mut s).unwrap()[0][0].open_time_ms, 1_699_920_000_000);
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
