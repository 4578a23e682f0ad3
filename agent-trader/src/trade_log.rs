//! The trade log: one CSV row per fill, written as fills happen, readable
//! by a spreadsheet.
//!
//! RFC 4180: fields holding a comma, a quote or a line break are quoted,
//! quotes doubled. Each row reaches the file in one `write` call, so a
//! process killed at any moment (SIGKILL included) leaves whole rows only;
//! a power loss may still lose the last ones (rows are not fsynced).
//! The file is created new: an existing regular file is replaced, a
//! symbolic link is refused (never written through).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bus_core::model::payload::Fill;
use bus_core::model::push_decimal;
use bus_core::model::time::push_iso8601_utc;

/// Column names, in order.
///
/// `timestamp_ms` is the open time of the bar the fill happened on;
/// `decided_on_bar_ms` the open time of the bar whose close decided the
/// order (a signal's bar: always an earlier bar; a stop-loss or
/// take-profit's: the bar that touched its level, the fill's own).
pub const HEADER: &str = "timestamp_ms,time_utc,decided_on_bar_ms,order_id,symbol,side,quantity,price,fee,realised_pnl,reason";

/// A CSV trade log.
pub struct TradeLog {
    path: PathBuf,
    out: File,
    /// The row being formatted (kept to reuse its allocation).
    row: String,
    rows: u64,
}

/// Clears the way for a new output file at `path`: refuses a symbolic
/// link or a directory there, removes a regular file (an earlier run's).
pub fn clear_output_path(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.file_type().is_symlink() => Err(std::io::Error::other(
            "it is a symbolic link: refusing to write through it",
        )),
        Ok(meta) if meta.is_dir() => Err(std::io::Error::other("it is a directory")),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Creates `path` afresh for writing (see [`clear_output_path`]). The
/// creation itself refuses to follow a link (`O_EXCL`), so one put in
/// place between the check and the creation fails it too.
pub fn create_output_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    clear_output_path(path)?;
    File::options().write(true).create_new(true).open(path)
}

/// Appends `field` to `row`, quoted per RFC 4180 when it must be.
pub fn push_field(row: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        row.push('"');
        row.push_str(&field.replace('"', "\"\""));
        row.push('"');
    } else {
        row.push_str(field);
    }
}

impl TradeLog {
    /// Creates the file (see [`create_output_file`]) and writes the header.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = create_output_file(path)?;
        out.write_all(format!("{HEADER}\n").as_bytes())?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            row: String::with_capacity(160),
            rows: 0,
        })
    }

    /// Appends one fill of an order decided on the bar opening at
    /// `decided_on_bar_ms`, in one write.
    pub fn record(
        &mut self,
        fill: &Fill,
        decided_on_bar_ms: i64,
        realised: rust_decimal::Decimal,
        reason: &str,
    ) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let side = match fill.side {
            bus_core::model::payload::Side::Buy => "buy",
            bus_core::model::payload::Side::Sell => "sell",
        };
        let row = &mut self.row;
        row.clear();
        // Written piece by piece: `format!`'s machinery, decimals' above
        // all, was most of a fill's cost.
        let _ = write!(row, "{},", fill.timestamp_ms);
        push_iso8601_utc(row, fill.timestamp_ms);
        let _ = write!(row, ",{decided_on_bar_ms},");
        push_field(row, &fill.order_id.0);
        row.push(',');
        push_field(row, fill.symbol.as_str());
        row.push(',');
        row.push_str(side);
        for value in [fill.quantity, fill.price, fill.fee, realised] {
            row.push(',');
            push_decimal(row, value);
        }
        row.push(',');
        push_field(row, reason);
        row.push('\n');
        self.out.write_all(row.as_bytes())?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes to disk.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::model::time::iso8601_utc;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let mut row = String::new();
        for field in ["plain", "a, b", "say \"hi\"", "two\nlines"] {
            push_field(&mut row, field);
            row.push('|');
        }
        assert_eq!(row, "plain|\"a, b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|");
    }

    /// Each row holds what `format!` makes of the fill: decimals of every
    /// sign and scale as `Decimal` displays them, the time in ISO 8601,
    /// fields quoted where they must be.
    #[test]
    fn rows_are_the_fills_as_text() {
        use bus_core::model::payload::{FillFields, OrderId, Side, Symbol};
        use rust_decimal::Decimal;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trades.csv");
        let mut log = TradeLog::create(&path).unwrap();
        let mut expected = format!("{HEADER}\n");
        let decimals = [
            Decimal::new(15, 1),
            Decimal::new(1_000_000_000_000_000, 12),
            Decimal::new(7, 9),
            Decimal::from_i128_with_scale(123_456_789_012_345_678_901_234_567, 5),
            Decimal::ONE,
        ];
        for (i, order) in ["o-1", "o,2", "o\"3"].into_iter().enumerate() {
            for (k, &value) in decimals.iter().enumerate() {
                let fill = Fill::new(FillFields {
                    order_id: OrderId(order.into()),
                    symbol: Symbol::new("BTC").unwrap(),
                    side: if k % 2 == 0 { Side::Buy } else { Side::Sell },
                    quantity: value,
                    price: decimals[(k + 1) % decimals.len()],
                    fee: [Decimal::ZERO, Decimal::new(25, 3)][k % 2],
                    timestamp_ms: 1_700_000_000_123 + (i * 5 + k) as i64 * 3_600_000,
                })
                .unwrap();
                let realised = [-value, value, Decimal::ZERO, Decimal::new(-1, 28)][k % 4];
                let reason = ["signal", "stop, loss"][i % 2];
                log.record(&fill, fill.timestamp_ms - 60_000, realised, reason)
                    .unwrap();
                let side = ["buy", "sell"][k % 2];
                let quote = |field: &str| {
                    let mut quoted = String::new();
                    push_field(&mut quoted, field);
                    quoted
                };
                expected += &format!(
                    "{},{},{},{},BTC,{side},{},{},{},{realised},{}\n",
                    fill.timestamp_ms,
                    iso8601_utc(fill.timestamp_ms),
                    fill.timestamp_ms - 60_000,
                    quote(order),
                    fill.quantity,
                    fill.price,
                    fill.fee,
                    quote(reason),
                );
            }
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        assert_eq!(log.rows(), 15);
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious.txt");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("trades.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = TradeLog::create(&link).err().expect("refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
}
