//! Priority, delivery mode and status of a message.

use serde::{Deserialize, Serialize};

/// How urgent a message is. Queues deliver CRITICAL before HIGH before NORMAL
/// before LOW, FIFO within one priority; CRITICAL is never dropped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background information.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Time-sensitive (orders, fills).
    High = 2,
    /// Must get through (emergency stop, shutdown).
    Critical = 3,
}

impl Priority {
    /// All priorities from highest to lowest.
    pub const HIGHEST_FIRST: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Index 0 (LOW) to 3 (CRITICAL).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// What the bus promises about delivery of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Delivered at most once; may be dropped under overflow (and counted).
    #[default]
    FireAndForget,
    /// Redelivered until a handler acknowledges it or attempts run out.
    AtLeastOnce,
    /// At-least-once plus de-duplication by message id.
    ExactlyOnce,
}
