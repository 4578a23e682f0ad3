//! The in-memory index rebuilt from the journal: what is pending for
//! whom, the processed-id windows, the dead letters.

use super::*;

pub(super) struct PendingEntry {
    pub(super) seq: u64,
    pub(super) segment: u64,
    pub(super) expires_at_ms: Option<i64>,
    pub(super) subs: Vec<Arc<str>>,
}

/// The processed ids of one subscription, each with the segment holding
/// its record (so cleanup knows which to carry forward).
#[derive(Default)]
pub(super) struct ProcessedWindow {
    pub(super) order: VecDeque<(MessageId, u64)>,
    pub(super) set: HashSet<MessageId>,
}

impl ProcessedWindow {
    pub(super) fn insert(&mut self, id: MessageId, segment: u64, capacity: usize) {
        if capacity == 0 || !self.set.insert(id) {
            return;
        }
        if self.order.len() >= capacity {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back((id, segment));
    }
}

#[derive(Default)]
pub(super) struct Index {
    pub(super) pending: HashMap<MessageId, PendingEntry>,
    /// (expiry, id) of pending messages with a time to live.
    pub(super) expiring: BTreeSet<(i64, MessageId)>,
    /// Pending messages per segment.
    pub(super) live: BTreeMap<u64, usize>,
    pub(super) processed: HashMap<Arc<str>, ProcessedWindow>,
    pub(super) dead_letters: VecDeque<DeadLetter>,
    /// Envelopes read back at open, per subscription, not yet replayed.
    pub(super) replay: HashMap<Arc<str>, Vec<(u64, Arc<Envelope>)>>,
}

/// Dead letters kept in memory for inspection.
pub(super) const DEAD_LETTERS_KEPT: usize = 10_000;

impl Index {
    pub(super) fn add_message(
        &mut self,
        id: MessageId,
        seq: u64,
        segment: u64,
        expires_at_ms: Option<i64>,
        subs: Vec<Arc<str>>,
    ) {
        if let Some(entry) = self.pending.get_mut(&id) {
            if entry.seq == seq {
                // A copy carried forward by cleanup: what is pending in both.
                entry.subs.retain(|s| subs.contains(s));
                self.move_segment(id, segment);
                self.drop_if_done(id);
            } else {
                // The same message published again while still pending.
                for sub in subs {
                    if !entry.subs.contains(&sub) {
                        entry.subs.push(sub);
                    }
                }
            }
            return;
        }
        if subs.is_empty() {
            return;
        }
        if let Some(at) = expires_at_ms {
            self.expiring.insert((at, id));
        }
        *self.live.entry(segment).or_default() += 1;
        self.pending.insert(
            id,
            PendingEntry {
                seq,
                segment,
                expires_at_ms,
                subs,
            },
        );
    }

    pub(super) fn move_segment(&mut self, id: MessageId, segment: u64) {
        let Some(entry) = self.pending.get_mut(&id) else {
            return;
        };
        if entry.segment != segment {
            if let Some(n) = self.live.get_mut(&entry.segment) {
                *n = n.saturating_sub(1);
            }
            entry.segment = segment;
            *self.live.entry(segment).or_default() += 1;
        }
    }

    /// Resolves `id` for `sub` (empty: for everyone). True if it was pending.
    pub(super) fn resolve(&mut self, id: MessageId, sub: &str) -> bool {
        let Some(entry) = self.pending.get_mut(&id) else {
            return false;
        };
        let before = entry.subs.len();
        if sub.is_empty() {
            entry.subs.clear();
        } else {
            entry.subs.retain(|s| &**s != sub);
        }
        let changed = entry.subs.len() != before;
        self.drop_if_done(id);
        changed
    }

    pub(super) fn drop_if_done(&mut self, id: MessageId) {
        if self.pending.get(&id).is_some_and(|e| e.subs.is_empty()) {
            let entry = self.pending.remove(&id).expect("present");
            if let Some(at) = entry.expires_at_ms {
                self.expiring.remove(&(at, id));
            }
            if let Some(n) = self.live.get_mut(&entry.segment) {
                *n = n.saturating_sub(1);
            }
        }
    }

    pub(super) fn mark_processed(&mut self, sub: &str, id: MessageId, segment: u64, window: usize) {
        let name = match self.processed.get_key_value(sub) {
            Some((name, _)) => name.clone(),
            None => Arc::from(sub),
        };
        self.processed
            .entry(name)
            .or_default()
            .insert(id, segment, window);
    }

    pub(super) fn keep_dead_letter(&mut self, letter: DeadLetter) {
        if self.dead_letters.len() >= DEAD_LETTERS_KEPT {
            self.dead_letters.pop_front();
        }
        self.dead_letters.push_back(letter);
    }
}
