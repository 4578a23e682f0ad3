//! What the risk agent must not forget when it is restarted: the book it
//! knows, the day's starting equity, the peak, the halt, and limits changed
//! at run time. Without it a restarted agent would begin a new "day" at
//! its restart and stop trading only at about twice the daily-loss limit.
//!
//! The agent saves a [`RiskSnapshot`] after every message that changed its
//! state, before the message counts as handled (over JetStream: before it
//! is acknowledged, so a message whose effect was not saved comes again),
//! and a new agent given the same [`RiskStateStore`] starts from it.
//!
//! * [`StateFile`]: a JSON file, replaced whole by a rename. It survives
//!   the process (`kill -9`), not a power loss (no fsync per change: one
//!   per change would cap the agent at a few thousand messages a second).
//! * [`SharedState`]: memory shared with whoever rebuilds the agent in the
//!   same process (restart after a panic).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bus_core::model::SymbolMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::RiskConfig;

/// Marks a file as a risk snapshot of this format.
const FORMAT: &str = "bistoury-risk-state/1";

/// The risk agent's state, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskSnapshot {
    /// Always [`FORMAT`]: what tells our file from any other.
    pub format: String,
    /// The limits in force (run-time changes included).
    pub limits: RiskConfig,
    /// Signed quantity per market.
    pub positions: SymbolMap<Decimal>,
    /// Market times of recent approved orders.
    pub recent_orders: VecDeque<i64>,
    /// Highest equity seen.
    pub peak_equity: Option<Decimal>,
    /// (UTC day, equity at its first update).
    pub day_start: Option<(i64, Decimal)>,
    /// Trading halted by an emergency stop.
    pub halted: bool,
    /// Market time of the emergency stop.
    pub emergency_stop_at: Option<i64>,
    /// Trading paused by the daily-loss limit until this UTC day (days
    /// since the epoch).
    #[serde(default)]
    pub paused_until_day: Option<i64>,
    /// Limits warned about and not yet back below their warning level.
    pub warned: Vec<String>,
}

impl RiskSnapshot {
    /// The format mark a snapshot carries.
    pub fn format() -> String {
        FORMAT.to_string()
    }
}

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("risk state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a risk snapshot of this format.
    #[error(
        "risk state {path}: not a Bistoury risk snapshot ({reason}); refusing to use or replace it"
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where the risk agent keeps its snapshot.
pub trait RiskStateStore: Send {
    /// The last snapshot saved, if any.
    fn load(&mut self) -> Result<Option<RiskSnapshot>, StateError>;
    /// Replaces the snapshot.
    fn save(&mut self, snapshot: &RiskSnapshot) -> Result<(), StateError>;
}

/// A snapshot file, replaced whole (write beside it, rename).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    partial: PathBuf,
}

impl StateFile {
    /// The snapshot kept at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        Self { path, partial }
    }

    /// Removes the snapshot at `path`, if there is one: for a run that
    /// starts from the beginning of its data. A file there that is not a
    /// risk snapshot is not ours to remove: an error.
    pub fn discard(path: &Path) -> Result<bool, StateError> {
        let mut file = Self::new(path);
        match file.load()? {
            None => Ok(false),
            Some(_) => std::fs::remove_file(path)
                .map(|()| true)
                .map_err(|source| StateError::Io {
                    path: path.to_path_buf(),
                    source,
                }),
        }
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl RiskStateStore for StateFile {
    fn load(&mut self) -> Result<Option<RiskSnapshot>, StateError> {
        let foreign = |reason: String| StateError::Foreign {
            path: self.path.clone(),
            reason,
        };
        match self.path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
            Ok(meta) if !meta.is_file() => return Err(foreign("not a regular file".into())),
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?;
        let snapshot: RiskSnapshot =
            serde_json::from_str(&text).map_err(|e| foreign(e.to_string()))?;
        if snapshot.format != FORMAT {
            return Err(foreign(format!("format {:?}", snapshot.format)));
        }
        Ok(Some(snapshot))
    }

    fn save(&mut self, snapshot: &RiskSnapshot) -> Result<(), StateError> {
        let text = serde_json::to_vec(snapshot).map_err(|e| self.io(std::io::Error::other(e)))?;
        std::fs::write(&self.partial, text).map_err(|e| self.io(e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| self.io(e))
    }
}

/// A snapshot in memory, shared by the agent and whoever rebuilds it.
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<Mutex<Option<RiskSnapshot>>>);

impl RiskStateStore for SharedState {
    fn load(&mut self) -> Result<Option<RiskSnapshot>, StateError> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn save(&mut self, snapshot: &RiskSnapshot) -> Result<(), StateError> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        Ok(())
    }
}
