//! A map keyed by market symbol, for the handful of markets an agent
//! follows.

use std::ops::Index;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::TopicError;
use super::payload::Symbol;
use super::topic::Topic;

/// Up to this many entries, a lookup first looks for the very same symbol
/// (one pointer comparison per entry) before comparing text.
const SCAN: usize = 8;

/// A map from [`Symbol`] to `V`, in symbol order (as a `BTreeMap` would
/// iterate). A sorted vector: an agent follows a few markets, and the
/// symbol it looks up is nearly always a clone of the key (the same
/// allocation), found by comparing pointers; otherwise by binary search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolMap<V> {
    entries: Vec<(Symbol, V)>,
}

impl<V> Default for SymbolMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> SymbolMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, symbol: &Symbol) -> Result<usize, usize> {
        if self.entries.len() <= SCAN {
            if let Some(at) = self
                .entries
                .iter()
                .position(|(key, _)| key.same_allocation(symbol))
            {
                return Ok(at);
            }
        }
        self.entries.binary_search_by(|(key, _)| key.cmp(symbol))
    }

    /// The value for `symbol`.
    pub fn get(&self, symbol: &Symbol) -> Option<&V> {
        let at = self.find(symbol).ok()?;
        Some(&self.entries[at].1)
    }

    /// The value for `symbol`, to change.
    pub fn get_mut(&mut self, symbol: &Symbol) -> Option<&mut V> {
        let at = self.find(symbol).ok()?;
        Some(&mut self.entries[at].1)
    }

    /// Is there a value for `symbol`?
    pub fn contains_key(&self, symbol: &Symbol) -> bool {
        self.find(symbol).is_ok()
    }

    /// Sets the value for `symbol`; returns the one it replaces.
    pub fn insert(&mut self, symbol: Symbol, value: V) -> Option<V> {
        match self.find(&symbol) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                self.entries.insert(at, (symbol, value));
                None
            }
        }
    }

    /// Removes `symbol`'s value.
    pub fn remove(&mut self, symbol: &Symbol) -> Option<V> {
        let at = self.find(symbol).ok()?;
        Some(self.entries.remove(at).1)
    }

    /// The value for `symbol`, inserting `make()` first when there is none.
    pub fn get_or_insert_with(&mut self, symbol: &Symbol, make: impl FnOnce() -> V) -> &mut V {
        let at = match self.find(symbol) {
            Ok(at) => at,
            Err(at) => {
                self.entries.insert(at, (symbol.clone(), make()));
                at
            }
        };
        &mut self.entries[at].1
    }

    /// Entries in symbol order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Symbol, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Values in symbol order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Every value, mutably, in symbol order.
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// The values, in symbol order, taking the map.
    pub fn into_values(self) -> impl ExactSizeIterator<Item = V> {
        self.entries.into_iter().map(|(_, v)| v)
    }

    /// How many symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<V: Default> SymbolMap<V> {
    /// The value for `symbol`, inserting the default first when there is none.
    pub fn get_or_default(&mut self, symbol: &Symbol) -> &mut V {
        self.get_or_insert_with(symbol, V::default)
    }
}

impl<V> Index<&Symbol> for SymbolMap<V> {
    type Output = V;

    /// Panics when `symbol` has no value, like a map's index.
    fn index(&self, symbol: &Symbol) -> &V {
        self.get(symbol)
            .unwrap_or_else(|| panic!("no entry for symbol {symbol}"))
    }
}

impl<'a, V> IntoIterator for &'a SymbolMap<V> {
    type Item = (&'a Symbol, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Symbol, V)>,
        fn(&'a (Symbol, V)) -> (&'a Symbol, &'a V),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

/// A map from symbol to value, as a `BTreeMap` serializes.
impl<V: Serialize> Serialize for SymbolMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, value) in &self.entries {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SymbolMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let sorted = std::collections::BTreeMap::<Symbol, V>::deserialize(deserializer)?;
        Ok(sorted.into_iter().collect())
    }
}

impl<V> FromIterator<(Symbol, V)> for SymbolMap<V> {
    fn from_iter<I: IntoIterator<Item = (Symbol, V)>>(entries: I) -> Self {
        let mut map = Self::new();
        for (symbol, value) in entries {
            map.insert(symbol, value);
        }
        map
    }
}

/// One family's topics per symbol, `<family>.<symbol>` (or
/// `<family>.<symbol>.<last>`), each made once and cloned after (a clone
/// is a reference count): what agents publish on per market.
#[derive(Debug, Clone)]
pub struct SymbolTopics {
    family: &'static str,
    topics: SymbolMap<Vec<(Box<str>, Topic)>>,
}

impl SymbolTopics {
    /// Topics under `family` (e.g. `trade.order_filled`).
    pub fn new(family: &'static str) -> Self {
        Self {
            family,
            topics: SymbolMap::new(),
        }
    }

    /// `<family>.<symbol>`; an error when the symbol cannot be a topic
    /// segment.
    pub fn topic(&mut self, symbol: &Symbol) -> Result<Topic, TopicError> {
        self.topic_with(symbol, "")
    }

    /// `<family>.<symbol>.<last>` (`<family>.<symbol>` when `last` is
    /// empty).
    pub fn topic_with(&mut self, symbol: &Symbol, last: &str) -> Result<Topic, TopicError> {
        let known = self.topics.get_or_default(symbol);
        if let Some((_, topic)) = known.iter().find(|(l, _)| &**l == last) {
            return Ok(topic.clone());
        }
        let topic = match last {
            "" => Topic::new(format!("{}.{symbol}", self.family))?,
            _ => Topic::new(format!("{}.{symbol}.{last}", self.family))?,
        };
        known.push((last.into(), topic.clone()));
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    proptest::proptest! {
        /// Behaves as a `BTreeMap` keyed by symbol, whether the symbols
        /// looked up share the keys' allocations or not, for small maps
        /// (pointer scan first) and large ones (binary search only).
        #[test]
        fn behaves_as_a_btree_map(
            ops in proptest::collection::vec((0u8..4, 0usize..20, proptest::bool::ANY, 0u32..100), 0..200)
        ) {
            let names: Vec<Symbol> = (0..20).map(|i| Symbol::new(format!("S{i:02}")).unwrap()).collect();
            let mut ours = SymbolMap::new();
            let mut model = BTreeMap::new();
            for (op, which, shared, value) in ops {
                // The same allocation as the name's first use, or a fresh one.
                let symbol = if shared { names[which].clone() } else { Symbol::new(names[which].as_str()).unwrap() };
                match op {
                    0 => proptest::prop_assert_eq!(ours.insert(symbol.clone(), value), model.insert(symbol, value)),
                    1 => proptest::prop_assert_eq!(ours.remove(&symbol), model.remove(&symbol)),
                    2 => {
                        *ours.get_or_default(&symbol) += value;
                        *model.entry(symbol).or_default() += value;
                    }
                    _ => proptest::prop_assert_eq!(ours.get(&symbol), model.get(&symbol)),
                }
                proptest::prop_assert_eq!(ours.len(), model.len());
                proptest::prop_assert!(ours.iter().eq(model.iter()));
            }
            proptest::prop_assert_eq!(
                serde_json::to_string(&ours).unwrap(),
                serde_json::to_string(&model).unwrap()
            );
        }
    }

    #[test]
    fn indexing_a_missing_symbol_names_it() {
        let map: SymbolMap<u32> = SymbolMap::new();
        let btc = Symbol::new("BTC").unwrap();
        let panic = std::panic::catch_unwind(|| map[&btc]).unwrap_err();
        assert_eq!(
            panic.downcast_ref::<String>().unwrap(),
            "no entry for symbol BTC"
        );
    }

    #[test]
    fn symbol_topics_are_made_once_and_refuse_a_bad_segment() {
        let mut topics = SymbolTopics::new("trade.order_filled");
        let btc = Symbol::new("BTC").unwrap();
        let first = topics.topic(&btc).unwrap();
        assert_eq!(first.as_str(), "trade.order_filled.BTC");
        assert_eq!(first, topics.topic(&btc).unwrap());
        assert_eq!(topics.topics[&btc].len(), 1, "made once");
        let mut candles = SymbolTopics::new("data.candle");
        assert_eq!(
            candles.topic_with(&btc, "1m").unwrap().as_str(),
            "data.candle.BTC.1m"
        );
        assert_eq!(
            candles.topic_with(&btc, "1h").unwrap().as_str(),
            "data.candle.BTC.1h"
        );
        assert!(candles.topic_with(&btc, "1 m").is_err());
    }
}
