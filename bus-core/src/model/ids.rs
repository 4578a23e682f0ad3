//! Identifier newtypes, so an [`AgentId`] can never be passed where a
//! [`MessageId`] or a topic is expected.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Unique identity of one message (a UUID v4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh random (version 4) id.
    ///
    /// Bits come from a per-thread SplitMix64 generator seeded once from
    /// the operating system: asking the OS for every id cost a system call
    /// per message. Unique, unpredictable enough for message ids; not for
    /// secrets.
    pub fn new() -> Self {
        thread_local! {
            static STATE: std::cell::Cell<u64> = std::cell::Cell::new(Uuid::new_v4().as_u128() as u64);
        }
        let next = || {
            STATE.with(|state| {
                let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
                state.set(z);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            })
        };
        let bits = (u128::from(next()) << 64) | u128::from(next());
        Self(uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid())
    }

    /// An id made from a known 128-bit value; deterministic runs (backtests) use this.
    pub fn from_u128(value: u128) -> Self {
        Self(Uuid::from_u128(value))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Orders short names byte by byte: names (symbols, agent ids) usually
/// differ in their first bytes, and this loop settles that in a few
/// instructions where `str::cmp` calls `memcmp`. Same order as `str::cmp`.
#[inline]
pub(crate) fn compare_short_text(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Comparisons for a name held in an `Arc<str>`: two handles on the same
/// allocation (a cloned or interned name, the usual case on a hot path) are
/// equal without comparing the text; otherwise the text decides, so equality,
/// order and hash are those of the text.
macro_rules! shared_name_comparisons {
    ($name:ident) => {
        impl PartialEq for $name {
            #[inline]
            fn eq(&self, other: &Self) -> bool {
                std::sync::Arc::ptr_eq(&self.0, &other.0)
                    || (self.0.len() == other.0.len()
                        && $crate::model::ids::compare_short_text(&self.0, &other.0).is_eq())
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            #[inline]
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if std::sync::Arc::ptr_eq(&self.0, &other.0) {
                    std::cmp::Ordering::Equal
                } else {
                    $crate::model::ids::compare_short_text(&self.0, &other.0)
                }
            }
        }

        impl std::hash::Hash for $name {
            #[inline]
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state)
            }
        }
    };
}
pub(crate) use shared_name_comparisons;

/// Name of an agent (`collector`, `signals.rsi`, `trader`); cheap to clone.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct AgentId(Arc<str>);

shared_name_comparisons!(AgentId);

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::model::intern::deserialize_name(deserializer, "an agent name", |text| {
            Ok::<_, std::convert::Infallible>(crate::model::intern::agent(text))
        })
    }
}

impl AgentId {
    /// Wraps a name. Agent names are free text but should be short and stable.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AgentId {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// Identity of one subscription on a bus; `unsubscribe` takes exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(pub(crate) u64);

impl SubscriptionId {
    /// The numeric value, unique within one bus.
    pub fn get(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<MessageId> =
            (0..10_000).map(|_| MessageId::new()).collect();
        assert_eq!(ids.len(), 10_000);
        let one = MessageId::new().as_uuid();
        assert_eq!(one.get_version_num(), 4);
        assert_eq!(one.get_variant(), uuid::Variant::RFC4122);
        let other_thread = std::thread::spawn(MessageId::new).join().unwrap();
        assert!(!ids.contains(&other_thread));
    }

    proptest::proptest! {
        /// Names compare, order and hash as their text does, whether or
        /// not they share an allocation.
        #[test]
        fn names_compare_as_their_text(a in "[a-zA-Z0-9._-]{0,6}", b in "[a-zA-Z0-9._-]{0,6}") {
            use std::hash::BuildHasher;
            let (x, y) = (AgentId::new(&a), AgentId::new(&b));
            proptest::prop_assert_eq!(compare_short_text(&a, &b), a.cmp(&b));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x == y, a == b);
            proptest::prop_assert_eq!(x.clone(), x.clone());
            proptest::prop_assert_eq!(x.cmp(&x.clone()), std::cmp::Ordering::Equal);
            let hasher = std::hash::BuildHasherDefault::<Fnv1a>::default();
            if a == b {
                proptest::prop_assert_eq!(hasher.hash_one(&x), hasher.hash_one(&y));
            }
        }
    }
}

/// FNV-1a as a [`std::hash::Hasher`]: a few instructions per byte where
/// SipHash spends about a hundred per key. For maps keyed by short names
/// the process chose itself (symbols, topics); not for keys an attacker
/// controls (no HashDoS resistance).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by short names, hashed with [`Fnv1a`].
pub type NameMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Fnv1a>>;
