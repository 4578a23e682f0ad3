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
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

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
    /// For each column of a row up to the last one read, the index in
    /// [`COLUMNS`] of the field it holds (`None`: a column not read).
    Csv {
        field_at: Vec<Option<u8>>,
    },
    JsonLines,
}

/// A file of candles.
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    /// The line being read (one buffer, reused: no allocation per row).
    text: Vec<u8>,
    line: usize,
    format: Format,
    interval: std::sync::Arc<str>,
    policy: BadRowPolicy,
    skipped: usize,
    held: Option<Candle>,
    /// The time of the last candle read, the symbols read at it, and the
    /// line each came from (for out-of-order and duplicate rows).
    current: Option<i64>,
    seen: Vec<(u32, usize)>,
    /// Every symbol met so far, by number: a row's symbol is a clone of
    /// the first one's (one allocation per market, and the agents' symbol
    /// maps find it by pointer).
    symbols: Vec<Symbol>,
    numbers: std::collections::HashMap<Box<str>, u32>,
    /// The number of the last row's symbol (rows usually name the markets
    /// in the same order at every time: the next one is tried first).
    last_symbol: u32,
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
/// The comma-separated cells of a row, as `text.split(',')` gives them:
/// a byte scan (a row's cells are a few bytes each, shorter than what a
/// `memchr` call per cell pays off on).
fn cells_of(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let row = rest?;
        match row.bytes().position(|b| b == b',') {
            // A comma is one byte: both sides are whole UTF-8 text.
            Some(at) => {
                rest = Some(&row[at + 1..]);
                Some(&row[..at])
            }
            None => {
                rest = None;
                Some(row)
            }
        }
    })
}

/// `text.trim()`, ASCII whitespace first: Unicode's rules are only
/// needed when what is left starts or ends with a byte outside ASCII, or
/// with a vertical tab (whitespace to `char`, not to `u8`).
fn trim(text: &str) -> &str {
    let ascii = text.trim_ascii();
    match (ascii.as_bytes().first(), ascii.as_bytes().last()) {
        (Some(&first), Some(&last))
            if first.is_ascii() && last.is_ascii() && first != 0x0b && last != 0x0b =>
        {
            ascii
        }
        _ => ascii.trim(),
    }
}

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
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (format, line) = match extension {
            "jsonl" | "ndjson" => (Format::JsonLines, 0),
            _ => {
                let mut header = String::new();
                reader.read_line(&mut header).map_err(io)?;
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
                let width = columns.iter().max().map_or(0, |last| last + 1);
                let mut field_at = vec![None; width];
                for (field, &column) in columns.iter().enumerate() {
                    field_at[column] = Some(field as u8);
                }
                (Format::Csv { field_at }, 1)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            text: Vec::with_capacity(128),
            line,
            format,
            interval: interval.into(),
            policy,
            skipped: 0,
            held: None,
            current: None,
            seen: Vec::new(),
            symbols: Vec::new(),
            numbers: std::collections::HashMap::new(),
            last_symbol: 0,
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

    /// The number of the symbol named `text`: the one already met, or a
    /// new one.
    fn symbol(&mut self, text: &str) -> Result<u32, String> {
        let next = (self.last_symbol as usize + 1) % self.symbols.len().max(1);
        let number = match self.symbols.get(next) {
            Some(symbol) if symbol.as_str() == text => next as u32,
            _ => match self.numbers.get(text) {
                Some(number) => *number,
                None => {
                    let symbol = Symbol::new(text).map_err(|e| e.to_string())?;
                    let number = self.symbols.len() as u32;
                    self.symbols.push(symbol);
                    self.numbers.insert(text.into(), number);
                    number
                }
            },
        };
        self.last_symbol = number;
        Ok(number)
    }

    fn parse(&mut self, text: &str) -> Result<(Candle, u32), String> {
        let (symbol_number, fields) = match &self.format {
            Format::Csv { field_at } => {
                let mut cells = [""; 7];
                let mut present = 0u8;
                for (cell, field) in cells_of(text).zip(field_at) {
                    if let Some(field) = field {
                        cells[usize::from(*field)] = trim(cell);
                        present |= 1 << field;
                    }
                }
                let cell = |i: usize| -> Result<&str, String> {
                    if present & (1 << i) == 0 {
                        return Err(format!("missing column `{}`", COLUMNS[i]));
                    }
                    Ok(cells[i])
                };
                let number = |i: usize| -> Result<Decimal, String> {
                    let raw = cell(i)?;
                    bus_core::model::parse_decimal(raw)
                        .ok_or_else(|| format!("column `{}`: {raw:?} is not a number", COLUMNS[i]))
                };
                let open_time_ms = open_time(cell(0)?)?;
                let symbol = cell(1)?;
                let (open, high, low, close, volume) =
                    (number(2)?, number(3)?, number(4)?, number(5)?, number(6)?);
                let symbol = self.symbol(symbol)?;
                (
                    symbol,
                    CandleFields {
                        open_time_ms,
                        symbol: self.symbols[symbol as usize].clone(),
                        interval: self.interval.clone(),
                        open,
                        high,
                        low,
                        close,
                        volume,
                    },
                )
            }
            Format::JsonLines => {
                let row: JsonRow = serde_json::from_str(text).map_err(|e| e.to_string())?;
                let open_time_ms = match row.open_time_ms {
                    JsonTime::Millis(ms) => ms,
                    JsonTime::Text(text) => open_time(&text)?,
                };
                let symbol = self.symbol(&row.symbol)?;
                (
                    symbol,
                    CandleFields {
                        open_time_ms,
                        symbol: self.symbols[symbol as usize].clone(),
                        interval: self.interval.clone(),
                        open: row.open,
                        high: row.high,
                        low: row.low,
                        close: row.close,
                        volume: row.volume,
                    },
                )
            }
        };
        let candle = Candle::new(fields).map_err(|e| e.to_string())?;
        Ok((candle, symbol_number))
    }

    /// `candle` if it comes after what was read (time order, each symbol
    /// once per time); else why not.
    fn in_order(&mut self, (candle, number): (Candle, u32)) -> Result<Candle, String> {
        let time = candle.open_time_ms;
        let when = bus_core::model::time::iso8601_utc;
        match self.current {
            Some(last) if time < last => Err(format!(
                "out of order: {} at {} comes after a row at {} (rows must be in time order)",
                candle.symbol,
                when(time),
                when(last)
            )),
            Some(last) if time == last => {
                if let Some((_, line)) = self.seen.iter().find(|(seen, _)| *seen == number) {
                    return Err(format!(
                        "duplicate: {} at {} again (first on line {line})",
                        candle.symbol,
                        when(time)
                    ));
                }
                self.seen.push((number, self.line));
                Ok(candle)
            }
            _ => {
                self.current = Some(time);
                self.seen.clear();
                self.seen.push((number, self.line));
                Ok(candle)
            }
        }
    }

    /// The next line without its end (`\n` or `\r\n`) into `self.text`;
    /// `false` at the end of the file.
    fn next_line(&mut self) -> Result<bool, CollectorError> {
        self.text.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.text)
            .map_err(|source| CollectorError::Io {
                path: self.path.clone(),
                source,
            })?;
        if self.text.last() == Some(&b'\n') {
            self.text.pop();
            if self.text.last() == Some(&b'\r') {
                self.text.pop();
            }
        }
        Ok(read > 0)
    }

    /// The next good candle, applying the bad-row policy.
    fn next_candle(&mut self) -> Result<Option<Candle>, CollectorError> {
        loop {
            if !self.next_line()? {
                if self.read == 0 && !self.ended && self.logs {
                    tracing::warn!(path = %self.path.display(), lines = self.line, "no candle in the file");
                }
                self.ended = true;
                return Ok(None);
            }
            self.line += 1;
            let bytes = std::mem::take(&mut self.text);
            let parsed = match std::str::from_utf8(&bytes) {
                Ok(text) if trim(text).is_empty() => None,
                Ok(text) => Some(self.parse(text).and_then(|candle| self.in_order(candle))),
                Err(error) => Some(Err(format!("not UTF-8 text ({error})"))),
            };
            self.text = bytes;
            match parsed {
                None => continue,
                Some(Ok(candle)) => {
                    self.read += 1;
                    return Ok(Some(candle));
                }
                Some(Err(reason)) => {
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
        let mut batch = Vec::new();
        Ok(self.next_batch_into(&mut batch)?.then_some(batch))
    }

    fn next_batch_into(&mut self, batch: &mut Vec<Candle>) -> Result<bool, CollectorError> {
        let first = match self.held.take() {
            Some(candle) => candle,
            None => match self.next_candle()? {
                Some(candle) => candle,
                None => return Ok(false),
            },
        };
        let time = first.open_time_ms;
        batch.push(first);
        while let Some(candle) = self.next_candle()? {
            if candle.open_time_ms == time {
                batch.push(candle);
            } else {
                self.held = Some(candle);
                break;
            }
        }
        Ok(true)
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

    /// The row splitter and the trim give what `split(',')` and `trim()`
    /// give, on text with every kind of whitespace and separator around.
    #[test]
    fn cells_and_trims_are_the_standard_ones() {
        let pieces = [
            "", ",", ",,", " ", "\t", "\u{b}", "\u{c}", "\r", "\n", "\u{a0}", "\u{3000}",
            "\u{2028}", "é", "x", "12.5", "BTC", "\u{85}", "日本",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % pieces.len() as u64) as usize
        };
        for _ in 0..50_000 {
            let text: String = (0..next() % 9).map(|_| pieces[next()]).collect();
            let ours: Vec<&str> = cells_of(&text).collect();
            let standard: Vec<&str> = text.split(',').collect();
            assert_eq!(ours, standard, "{text:?}");
            assert_eq!(trim(&text), text.trim(), "{text:?}");
        }
    }

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
    fn crlf_lines_repeated_symbols_and_bytes_that_are_not_text() {
        let mut text = b"open_time_ms,symbol,open,high,low,close,volume\r\n\
            0,BTC,1,2,0.5,1.5,10\r\n\
            0,ETH,1,2,0.5,1.5,10\r\n"
            .to_vec();
        text.extend_from_slice(b"60000,BT\xffC,1,2,0.5,1.5,10\r\n");
        text.extend_from_slice(b"60000,BTC,1,2,0.5,1.5,10\r\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        std::fs::write(&path, &text).unwrap();
        let error = drain(&mut FileSource::open(&path, "1m", BadRowPolicy::Stop).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("c.csv:4:") && error.contains("UTF-8"),
            "{error}"
        );
        let mut skip = FileSource::open(&path, "1m", BadRowPolicy::Skip).unwrap();
        let batches = drain(&mut skip).unwrap();
        assert_eq!(skip.skipped_rows(), 1);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(batches[1][0].volume, Decimal::new(10, 0), "no \\r left");
        assert!(
            std::ptr::eq(batches[0][0].symbol.as_str(), batches[1][0].symbol.as_str()),
            "one symbol shared by its rows"
        );
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
