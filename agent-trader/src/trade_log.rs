//! The trade log: one CSV row per fill, written as fills happen, readable
//! by a spreadsheet.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bus_core::message::payload::Fill;

/// Column names, in order.
pub const HEADER: &str = "timestamp_ms,order_id,symbol,side,quantity,price,fee,realised_pnl,reason";

/// A CSV trade log.
pub struct TradeLog {
    path: PathBuf,
    out: BufWriter<File>,
    rows: u64,
}

impl TradeLog {
    /// Creates (truncates) the file and writes the header.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{HEADER}")?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            rows: 0,
        })
    }

    /// Appends one fill.
    pub fn record(
        &mut self,
        fill: &Fill,
        realised: rust_decimal::Decimal,
        reason: &str,
    ) -> std::io::Result<()> {
        let side = match fill.side {
            bus_core::message::payload::Side::Buy => "buy",
            bus_core::message::payload::Side::Sell => "sell",
        };
        let reason = reason.replace([',', '\n'], " ");
        writeln!(
            self.out,
            "{},{},{},{},{},{},{},{},{}",
            fill.timestamp_ms,
            fill.order_id,
            fill.symbol,
            side,
            fill.quantity,
            fill.price,
            fill.fee,
            realised,
            reason
        )?;
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
        self.out.flush()
    }
}
