//! The routing index: which subscriptions does a topic reach?
//!
//! Patterns live in a segment trie, so resolving a topic walks at most
//! (segments x wildcard branches) nodes however many subscriptions exist; the
//! resolved list for each topic is then cached until the subscriptions
//! change. Publishing a prebuilt message is one cache probe keyed by the
//! topic's precomputed hash. Results are ordered by subscription id, which
//! makes dispatch order deterministic.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::model::ids::SubscriptionId;
use crate::model::topic::{PatternSegment, Topic, TopicPattern};

/// Most topics the cache remembers before it starts over.
const CACHE_LIMIT: usize = 65_536;

/// Slots of the direct-mapped front cache (a power of two).
const FRONT_SLOTS: usize = 256;

#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    star: Option<Box<Node<V>>>,
    /// Literal-only patterns ending here: match this topic and all below.
    subtree: Vec<(SubscriptionId, V)>,
    /// Wildcard patterns ending here: match topics ending exactly here.
    exact: Vec<(SubscriptionId, V)>,
    /// `>` after this node: match one or more further segments.
    tail: Vec<(SubscriptionId, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            star: None,
            subtree: Vec::new(),
            exact: Vec::new(),
            tail: Vec::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.subtree.is_empty()
            && self.exact.is_empty()
            && self.tail.is_empty()
    }
}

/// Uses the hash a [`Topic`] computed when it was built.
#[derive(Default)]
pub struct TopicHasher(u64);

impl Hasher for TopicHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A topic and the subscriptions it reaches.
type Resolved<V> = (Topic, Arc<[V]>);

type TopicMap<T> = HashMap<Topic, T, BuildHasherDefault<TopicHasher>>;

/// Segment trie of patterns plus a cache of resolved topics.
#[derive(Debug)]
pub struct RouteIndex<V> {
    root: Node<V>,
    cache: TopicMap<Arc<[V]>>,
    /// Direct-mapped by the topic's hash: a hit costs one index and one
    /// pointer comparison, cheaper than a hash-map probe on the hot path.
    front: Box<[Option<Resolved<V>>]>,
}

impl<V: Clone> Default for RouteIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RouteIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            cache: TopicMap::default(),
            front: (0..FRONT_SLOTS).map(|_| None).collect(),
        }
    }

    /// Adds a subscription.
    pub fn insert(&mut self, pattern: &TopicPattern, id: SubscriptionId, value: V) {
        let mut node = &mut self.root;
        let segments = pattern.segments();
        for segment in segments {
            match segment {
                PatternSegment::Literal(text) => {
                    node = node.children.entry(text.clone()).or_default();
                }
                PatternSegment::AnyOne => {
                    node = node.star.get_or_insert_with(Default::default);
                }
                PatternSegment::AnyTail => break,
            }
        }
        let list = if matches!(segments.last(), Some(PatternSegment::AnyTail)) {
            &mut node.tail
        } else if pattern.is_subtree() {
            &mut node.subtree
        } else {
            &mut node.exact
        };
        list.push((id, value));
        self.forget_resolutions();
    }

    /// Removes one subscription; returns whether it was there.
    pub fn remove(&mut self, pattern: &TopicPattern, id: SubscriptionId) -> bool {
        let removed = Self::remove_in(&mut self.root, pattern, pattern.segments(), id);
        if removed {
            self.forget_resolutions();
        }
        removed
    }

    fn forget_resolutions(&mut self) {
        self.cache.clear();
        self.front.iter_mut().for_each(|slot| *slot = None);
    }

    fn front_slot(topic: &Topic) -> usize {
        topic.precomputed_hash() as usize & (FRONT_SLOTS - 1)
    }

    fn remove_in(
        node: &mut Node<V>,
        pattern: &TopicPattern,
        rest: &[PatternSegment],
        id: SubscriptionId,
    ) -> bool {
        let take = |list: &mut Vec<(SubscriptionId, V)>| {
            let before = list.len();
            list.retain(|(sid, _)| *sid != id);
            list.len() != before
        };
        match rest.first() {
            None if pattern.is_subtree() => take(&mut node.subtree),
            None => take(&mut node.exact),
            Some(PatternSegment::AnyTail) => take(&mut node.tail),
            Some(PatternSegment::AnyOne) => {
                let Some(star) = node.star.as_mut() else {
                    return false;
                };
                let removed = Self::remove_in(star, pattern, &rest[1..], id);
                if star.is_empty() {
                    node.star = None;
                }
                removed
            }
            Some(PatternSegment::Literal(text)) => {
                let Some(child) = node.children.get_mut(text) else {
                    return false;
                };
                let removed = Self::remove_in(child, pattern, &rest[1..], id);
                if child.is_empty() {
                    node.children.remove(text);
                }
                removed
            }
        }
    }

    /// The subscriptions `topic` reaches, in subscription order; cached.
    pub fn resolve(&mut self, topic: &Topic) -> Arc<[V]> {
        let resolved = match self.cache.get(topic) {
            Some(hit) => hit.clone(),
            None => {
                let resolved: Arc<[V]> = self.walk(topic).into();
                if self.cache.len() >= CACHE_LIMIT {
                    self.cache.clear();
                }
                self.cache.insert(topic.clone(), resolved.clone());
                resolved
            }
        };
        self.front[Self::front_slot(topic)] = Some((topic.clone(), resolved.clone()));
        resolved
    }

    /// The cached resolution, if any, without computing it.
    #[inline]
    pub fn cached(&self, topic: &Topic) -> Option<&Arc<[V]>> {
        match &self.front[Self::front_slot(topic)] {
            Some((known, routes)) if known == topic => Some(routes),
            _ => self.cache.get(topic),
        }
    }

    /// Resolves without touching the cache.
    pub fn walk(&self, topic: &Topic) -> Vec<V> {
        let segments: Vec<&str> = topic.segments().collect();
        let mut found = Vec::new();
        Self::walk_node(&self.root, &segments, &mut found);
        found.sort_by_key(|(id, _)| *id);
        // A subscription with several patterns is reached once.
        found.dedup_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, v)| v).collect()
    }

    fn walk_node(node: &Node<V>, segments: &[&str], found: &mut Vec<(SubscriptionId, V)>) {
        found.extend(node.subtree.iter().cloned());
        let Some((first, rest)) = segments.split_first() else {
            found.extend(node.exact.iter().cloned());
            return;
        };
        found.extend(node.tail.iter().cloned());
        if let Some(child) = node.children.get(*first) {
            Self::walk_node(child, rest, found);
        }
        if let Some(star) = &node.star {
            Self::walk_node(star, rest, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index(patterns: &[&str]) -> RouteIndex<usize> {
        let mut index = RouteIndex::new();
        for (i, p) in patterns.iter().enumerate() {
            index.insert(&TopicPattern::new(p).unwrap(), SubscriptionId(i as u64), i);
        }
        index
    }

    #[test]
    fn resolves_in_subscription_order() {
        let mut idx = index(&[
            "data.>",
            "data.candle.*.1m",
            "data",
            "signals",
            "data.candle.BTC.1m",
        ]);
        let topic = Topic::new("data.candle.BTC.1m").unwrap();
        assert_eq!(&*idx.resolve(&topic), &[0, 1, 2, 4]);
        assert_eq!(
            &*idx.resolve(&Topic::new("signalsfoo").unwrap()),
            &[] as &[usize]
        );
    }

    #[test]
    fn removing_one_subscription_keeps_the_others() {
        let mut idx = index(&["a.b", "a.b", "a.*"]);
        let topic = Topic::new("a.b").unwrap();
        assert_eq!(&*idx.resolve(&topic), &[0, 1, 2]);
        assert!(idx.remove(&TopicPattern::new("a.b").unwrap(), SubscriptionId(0)));
        assert_eq!(&*idx.resolve(&topic), &[1, 2]);
        assert!(!idx.remove(&TopicPattern::new("a.b").unwrap(), SubscriptionId(0)));
        assert!(idx.remove(&TopicPattern::new("a.*").unwrap(), SubscriptionId(2)));
        assert!(idx.remove(&TopicPattern::new("a.b").unwrap(), SubscriptionId(1)));
        assert!(idx.root.is_empty(), "empty branches are pruned");
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("ab".to_string())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 1..5).prop_map(|s| s.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        let seg = prop_oneof![4 => segment(), 1 => Just("*".to_string())];
        (proptest::collection::vec(seg, 1..4), any::<bool>()).prop_map(|(mut s, tail)| {
            if tail {
                s.push(">".into());
            }
            s.join(".")
        })
    }

    proptest! {
        /// The trie agrees with matching each pattern one by one.
        #[test]
        fn index_matches_linear_scan(patterns in proptest::collection::vec(pattern(), 0..20), topics in proptest::collection::vec(topic(), 1..20)) {
            let parsed: Vec<TopicPattern> = patterns.iter().map(|p| TopicPattern::new(p).unwrap()).collect();
            let mut idx = RouteIndex::new();
            for (i, p) in parsed.iter().enumerate() {
                idx.insert(p, SubscriptionId(i as u64), i);
            }
            for t in topics {
                let topic = Topic::new(&t).unwrap();
                let expected: Vec<usize> = parsed.iter().enumerate().filter(|(_, p)| p.matches(&topic)).map(|(i, _)| i).collect();
                prop_assert_eq!(&*idx.resolve(&topic), expected.as_slice());
                // Second time through the cache.
                prop_assert_eq!(&*idx.resolve(&topic), expected.as_slice());
            }
        }

        /// The pattern matcher agrees with a regex-free reference written from the rules.
        #[test]
        fn pattern_matches_reference(p in pattern(), t in topic()) {
            let ps: Vec<&str> = p.split('.').collect();
            let ts: Vec<&str> = t.split('.').collect();
            let reference = if ps.iter().all(|s| *s != "*" && *s != ">") {
                ts.len() >= ps.len() && ps.iter().zip(&ts).all(|(a, b)| a == b)
            } else if ps.last() == Some(&">") {
                ts.len() > ps.len() - 1
                    && ps[..ps.len() - 1].iter().zip(&ts).all(|(a, b)| *a == "*" || a == b)
            } else {
                ts.len() == ps.len() && ps.iter().zip(&ts).all(|(a, b)| *a == "*" || a == b)
            };
            let pattern = TopicPattern::new(&p).unwrap();
            prop_assert_eq!(pattern.matches(&Topic::new(&t).unwrap()), reference);
        }
    }
}
