//! Errors of the collector.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong bringing market data in.
#[derive(Debug, Error)]
pub enum CollectorError {
    /// The data file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A row is malformed and the policy is to stop.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The header does not name the documented columns.
    #[error("{path}:1: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A synthetic market spec is invalid.
    #[error("invalid synthetic market: {0}")]
    BadSpec(String),
}
