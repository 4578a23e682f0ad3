//! The trader's journal: every fill written to the durable store (synced)
//! before it changes the portfolio, so that a trader killed at any moment
//! (SIGKILL, power loss) restarts with the same positions and cash, no fill
//! lost and none applied twice.
//!
//! A journal is a [`Store`] directory whose messages are pending for one
//! subscription, [`JOURNAL`], and never acknowledged: reopened, the store
//! hands them back in the order they were written. Each is the fill as
//! published (`trade.order_filled.<SYMBOL>`), with what the trade log also
//! needs in its headers (the bar that decided the order, the reason) and
//! the trader's order counter, so a resumed trader rebuilds its portfolio
//! and trade log exactly and numbers new orders after the journaled ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bus_core::model::payload::Fill;
use bus_core::store::{Store, StoreConfig, StoreError};
use bus_core::{AgentId, Envelope, Payload, Topic};

/// The subscription a journal's fills are pending for.
pub const JOURNAL: &str = "trader.journal";

const DECIDED_ON: &str = "decided_on_bar_ms";
const REASON: &str = "reason";
const NEXT_ORDER: &str = "next_order";

/// One journaled fill.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledFill {
    /// The fill.
    pub fill: Fill,
    /// Open time of the bar whose close decided the order.
    pub decided_on_bar_ms: i64,
    /// Why the order was placed.
    pub reason: String,
    /// The trader's order counter after this order.
    pub next_order: u64,
}

/// What is wrong with a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A journal entry is not a journaled fill.
    #[error("trade journal {dir}: entry {index} ({id}) is not a journaled fill: {reason}")]
    Entry {
        /// The journal.
        dir: PathBuf,
        /// Its place (from 0).
        index: usize,
        /// The message id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// A journal open for writing (one trader at a time).
pub struct FillJournal {
    store: Store,
    subscription: Arc<str>,
    sender: AgentId,
}

impl FillJournal {
    /// Opens (or creates) the journal in `dir` for the trader `sender`;
    /// with it, the fills it holds, oldest first.
    pub fn open(dir: &Path, sender: AgentId) -> Result<(Self, Vec<JournaledFill>), JournalError> {
        let (store, recovery) = Store::open(StoreConfig::new(dir))?;
        for issue in &recovery.issues {
            tracing::warn!(journal = %dir.display(), %issue, "trade journal: a damaged record was skipped");
        }
        let fills = store
            .take_replay(JOURNAL)
            .iter()
            .enumerate()
            .map(|(index, envelope)| decode(dir, index, envelope))
            .collect::<Result<Vec<_>, _>>()?;
        let journal = Self {
            store,
            subscription: Arc::from(JOURNAL),
            sender,
        };
        Ok((journal, fills))
    }

    /// The fills journaled in `dir`, read without changing anything (for a
    /// report, a tool, a test); none when there is no journal.
    pub fn read(dir: &Path) -> Result<Vec<JournaledFill>, JournalError> {
        let snapshot = Store::inspect(dir, 1)?;
        snapshot
            .pending
            .iter()
            .filter(|m| m.pending_for.iter().any(|s| s == JOURNAL))
            .enumerate()
            .map(|(index, m)| decode(dir, index, &m.envelope))
            .collect()
    }

    /// Writes `entry` and returns once it is on disk.
    pub fn record(&self, entry: &JournaledFill) -> Result<(), JournalError> {
        let topic = Topic::under("trade.order_filled", entry.fill.symbol.as_str());
        let mut envelope = Envelope::new(
            self.sender.clone(),
            topic,
            Payload::TradeOrderFilled(entry.fill.clone()),
        );
        envelope.created_at_ms = entry.fill.timestamp_ms;
        let headers = &mut envelope.headers;
        headers.insert(DECIDED_ON.into(), entry.decided_on_bar_ms.to_string());
        headers.insert(REASON.into(), entry.reason.clone());
        headers.insert(NEXT_ORDER.into(), entry.next_order.to_string());
        let subscriptions = vec![self.subscription.clone()];
        self.store.append(&envelope, subscriptions)?.wait()?;
        Ok(())
    }
}

impl Drop for FillJournal {
    fn drop(&mut self) {
        self.store.close();
    }
}

fn decode(dir: &Path, index: usize, envelope: &Envelope) -> Result<JournaledFill, JournalError> {
    let bad = |reason: String| JournalError::Entry {
        dir: dir.to_path_buf(),
        index,
        id: envelope.id.to_string(),
        reason,
    };
    let Payload::TradeOrderFilled(fill) = envelope.payload() else {
        return Err(bad(format!("a {} message", envelope.message_type())));
    };
    let header = |key: &str| {
        envelope
            .headers
            .get(key)
            .ok_or_else(|| bad(format!("no `{key}` header")))
    };
    let number = |key: &str| -> Result<i64, JournalError> {
        let raw = header(key)?;
        raw.parse()
            .map_err(|_| bad(format!("`{key}` header {raw:?} is not a whole number")))
    };
    Ok(JournaledFill {
        fill: fill.clone(),
        decided_on_bar_ms: number(DECIDED_ON)?,
        reason: header(REASON)?.to_string(),
        next_order: u64::try_from(number(NEXT_ORDER)?)
            .map_err(|_| bad("`next_order` is negative".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::model::payload::{FillFields, OrderId, Side, Symbol};
    use rust_decimal::Decimal;

    fn entry(n: u64) -> JournaledFill {
        JournaledFill {
            fill: Fill::new(FillFields {
                order_id: OrderId(format!("trader-{n}")),
                symbol: Symbol::new("BTC").unwrap(),
                side: if n.is_multiple_of(2) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                quantity: Decimal::new(5, 2),
                price: Decimal::new(998_500 + n as i64, 1),
                fee: Decimal::new(4, 2),
                timestamp_ms: 60_000 * n as i64,
            })
            .unwrap(),
            decided_on_bar_ms: 60_000 * (n as i64 - 1),
            reason: format!("signal, with a comma {n}"),
            next_order: n,
        }
    }

    #[test]
    fn a_reopened_journal_hands_back_every_fill_in_order_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let id = AgentId::new("trader");
        let (journal, none) = FillJournal::open(&path, id.clone()).unwrap();
        assert!(none.is_empty());
        for n in 1..=3 {
            journal.record(&entry(n)).unwrap();
        }
        // Read while open, then reopened (as after a crash): the same.
        let expected: Vec<JournaledFill> = (1..=3).map(entry).collect();
        assert_eq!(FillJournal::read(&path).unwrap(), expected);
        drop(journal);
        let (journal, fills) = FillJournal::open(&path, id.clone()).unwrap();
        assert_eq!(fills, expected);
        journal.record(&entry(4)).unwrap();
        drop(journal);
        let (_, fills) = FillJournal::open(&path, id).unwrap();
        assert_eq!(fills.len(), 4, "still there after a second reopening");
        assert!(FillJournal::read(&dir.path().join("none"))
            .unwrap()
            .is_empty());
    }
}
