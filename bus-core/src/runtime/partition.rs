//! Instances of one agent that split its keyed work between them.

/// Which share of a keyed message stream one instance of an agent takes:
/// instance `index` of `count` handles the messages whose key — the topic
/// segment named by
/// [`Agent::partition_segment`](crate::agent::Agent::partition_segment) —
/// hashes (FNV-1a) to `index` modulo `count`; unkeyed messages go to every
/// instance. The check reads the subject only: another instance's
/// messages are skipped without being decoded. So several processes
/// running one agent share the load, each message is handled by exactly
/// one of them, and everything with one key
/// (one symbol) is handled by the same instance in order — what a plain
/// NATS queue group cannot promise for an agent that keeps state per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// This instance, from 0.
    pub index: u32,
    /// Instances in all (at least 1).
    pub count: u32,
}

impl Partition {
    /// The only instance: everything.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// Instance `index` of `count`; `None` unless `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Whether this instance handles messages with `key`.
    pub fn owns(&self, key: &str) -> bool {
        use std::hash::Hasher;
        if self.count <= 1 {
            return true;
        }
        let mut hasher = crate::model::ids::Fnv1a::default();
        hasher.write(key.as_bytes());
        hasher.finish() % u64::from(self.count) == u64::from(self.index)
    }

    /// `index/count`, 1-based, for names and logs: `1of2`.
    pub fn label(&self) -> String {
        format!("{}of{}", self.index + 1, self.count)
    }
}
