//! Topics and topic patterns.
//!
//! A topic is a dot-separated list of segments (`data.candle.BTC.1m`).
//! Matching is always by segment, never by raw string prefix, and patterns use
//! the NATS subject syntax so the same names work unchanged on a NATS server:
//!
//! * `*` matches exactly one segment (`data.candle.*.1m`);
//! * `>` as the last segment matches one or more trailing segments (`data.>`);
//! * a pattern without wildcards is a *subtree* pattern: `signals` matches
//!   `signals` and every topic below it (`signals.BTC`), but not `signalsfoo`.
//!   On NATS such a pattern is subscribed as the two subjects `signals` and
//!   `signals.>`.
//!
//! A [`Topic`] carries a hash computed once when it is built, so the router's
//! cache lookup on publish costs one integer comparison and, on a hit, one
//! pointer comparison.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::error::TopicError;

/// A concrete topic a message is published on; cheap to clone.
#[derive(Clone)]
pub struct Topic(Arc<TopicInner>);

struct TopicInner {
    text: Box<str>,
    hash: u64,
}

/// FNV-1a: tiny, deterministic across runs and platforms, good enough for
/// short ASCII topic names.
fn fnv1a(text: &str) -> u64 {
    let mut hasher = crate::model::ids::Fnv1a::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

fn check_segments(text: &str, allow_wildcards: bool) -> Result<(), TopicError> {
    let error = |reason| TopicError {
        topic: text.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(error("is empty".into()));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(error(format!(
            "contains whitespace or control character {c:?}"
        )));
    }
    let count = text.split('.').count();
    for (index, segment) in text.split('.').enumerate() {
        if segment.is_empty() {
            return Err(error(format!("segment {} is empty", index + 1)));
        }
        let has_wildcard = segment.contains('*') || segment.contains('>');
        if !has_wildcard {
            continue;
        }
        if !allow_wildcards {
            return Err(error(format!(
                "segment {} ({segment:?}) has a wildcard; wildcards belong in patterns, not in published topics",
                index + 1
            )));
        }
        match segment {
            "*" => {}
            ">" if index + 1 == count => {}
            ">" => return Err(error("`>` may only be the last segment".into())),
            _ => {
                return Err(error(format!(
                    "segment {} ({segment:?}) mixes a wildcard with other characters",
                    index + 1
                )))
            }
        }
    }
    Ok(())
}

impl Topic {
    /// Parses and validates a topic: no empty segment, no whitespace, no wildcard.
    pub fn new(text: impl AsRef<str>) -> Result<Self, TopicError> {
        let text = text.as_ref();
        check_segments(text, false)?;
        Ok(Self(Arc::new(TopicInner {
            hash: fnv1a(text),
            text: text.into(),
        })))
    }

    /// A topic written in the source. Panics, naming it, when it is not a
    /// valid topic: a literal is checked by the first test that reaches it.
    #[track_caller]
    pub fn from_static(text: &'static str) -> Self {
        match Self::new(text) {
            Ok(topic) => topic,
            Err(error) => panic!("{error}"),
        }
    }

    /// `<base>.<segment>`, or `base` alone when `segment` cannot be a topic
    /// segment (an id with a dot or a space): an agent's own reply or
    /// status topic, still on its family.
    pub fn under(base: &'static str, segment: &str) -> Self {
        Self::new(format!("{base}.{segment}")).unwrap_or_else(|_| Self::from_static(base))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.text.split('.')
    }

    /// A child topic: `data.candle` + `BTC` = `data.candle.BTC`.
    pub fn child(&self, segment: &str) -> Result<Self, TopicError> {
        Self::new(format!("{}.{segment}", self.as_str()))
    }

    /// The hash computed at construction.
    #[inline]
    pub(crate) fn precomputed_hash(&self) -> u64 {
        self.0.hash
    }
}

impl PartialEq for Topic {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.text == other.0.text)
    }
}

impl Eq for Topic {}

impl Hash for Topic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.precomputed_hash());
    }
}

impl PartialOrd for Topic {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Topic {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Topic {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::model::intern::deserialize_name(deserializer, "a topic", crate::model::intern::topic)
    }
}

/// One segment of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternSegment {
    /// Matches this exact segment.
    Literal(Box<str>),
    /// `*`: any one segment.
    AnyOne,
    /// `>`: one or more trailing segments (always last).
    AnyTail,
}

/// A subscription pattern in NATS syntax; see the module docs for the rules.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    text: Box<str>,
    segments: Box<[PatternSegment]>,
}

impl TopicPattern {
    /// A pattern written in the source. Panics, naming it, when it is not a
    /// valid pattern: a literal is checked by the first test that reaches it.
    #[track_caller]
    pub fn from_static(text: &'static str) -> Self {
        match Self::new(text) {
            Ok(pattern) => pattern,
            Err(error) => panic!("{error}"),
        }
    }

    /// Parses and validates a pattern.
    pub fn new(text: impl AsRef<str>) -> Result<Self, TopicError> {
        let text = text.as_ref();
        check_segments(text, true)?;
        let segments = text
            .split('.')
            .map(|segment| match segment {
                "*" => PatternSegment::AnyOne,
                ">" => PatternSegment::AnyTail,
                literal => PatternSegment::Literal(literal.into()),
            })
            .collect();
        Ok(Self {
            text: text.into(),
            segments,
        })
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[PatternSegment] {
        &self.segments
    }

    /// True when the pattern has no wildcard and so matches a whole subtree.
    pub fn is_subtree(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, PatternSegment::Literal(_)))
    }

    /// The NATS subjects that together match exactly what this pattern matches.
    pub fn nats_subjects(&self) -> Vec<String> {
        if self.is_subtree() {
            vec![self.text.to_string(), format!("{}.>", self.text)]
        } else {
            vec![self.text.to_string()]
        }
    }

    /// Does `topic` match this pattern?
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic_segments = topic.segments();
        for pattern_segment in self.segments.iter() {
            match pattern_segment {
                PatternSegment::AnyTail => return topic_segments.next().is_some(),
                PatternSegment::AnyOne => {
                    if topic_segments.next().is_none() {
                        return false;
                    }
                }
                PatternSegment::Literal(literal) => match topic_segments.next() {
                    Some(segment) if segment == &**literal => {}
                    _ => return false,
                },
            }
        }
        // Every pattern segment matched. A subtree pattern accepts whatever
        // follows; a wildcard pattern needs the topic to end here.
        self.is_subtree() || topic_segments.next().is_none()
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPattern({})", self.text)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The pattern that matches exactly this topic and the ones below it.
impl From<&Topic> for TopicPattern {
    fn from(topic: &Topic) -> Self {
        TopicPattern::new(topic.as_str()).expect("a topic is a valid pattern")
    }
}

impl FromStr for TopicPattern {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TopicPattern::new(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }
    fn p(s: &str) -> TopicPattern {
        TopicPattern::new(s).unwrap()
    }

    #[test]
    fn subtree_pattern_matches_by_segment_not_by_string_prefix() {
        assert!(p("signals").matches(&t("signals")));
        assert!(p("signals").matches(&t("signals.BTC")));
        assert!(p("signals").matches(&t("signals.BTC.rsi")));
        assert!(!p("signals").matches(&t("signalsfoo")));
        assert!(!p("signals.BTC").matches(&t("signals.BTCUSD")));
        assert!(!p("signals.BTC").matches(&t("signals")));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(p("data.candle.*.1m").matches(&t("data.candle.BTC.1m")));
        assert!(!p("data.candle.*.1m").matches(&t("data.candle.BTC.5m")));
        assert!(!p("data.*").matches(&t("data.candle.BTC")));
        assert!(p("data.*").matches(&t("data.candle")));
        assert!(!p("data.*").matches(&t("data")));
        assert!(p("*").matches(&t("anything")));
        assert!(!p("*").matches(&t("any.thing")));
    }

    #[test]
    fn tail_matches_one_or_more_segments() {
        assert!(p("data.>").matches(&t("data.candle")));
        assert!(p("data.>").matches(&t("data.candle.BTC.1m")));
        assert!(!p("data.>").matches(&t("data")));
        assert!(!p("data.>").matches(&t("database.x")));
        assert!(p(">").matches(&t("a.b.c")));
        assert!(p("*.candle.>").matches(&t("data.candle.ETH")));
    }

    #[test]
    fn invalid_topics_are_rejected_with_a_reason() {
        for (bad, needle) in [
            ("", "empty"),
            ("a..b", "segment 2 is empty"),
            (".a", "segment 1 is empty"),
            ("a.", "segment 2 is empty"),
            ("a b", "whitespace"),
            ("a.\tb", "whitespace"),
            ("data.*", "wildcard"),
            ("data.>", "wildcard"),
        ] {
            let error = Topic::new(bad).unwrap_err();
            assert!(error.to_string().contains(needle), "{bad:?}: {error}");
        }
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        for bad in ["a.>.b", "a*", "a.b>", "", "a..b", "a .b"] {
            assert!(
                TopicPattern::new(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn nats_subjects_cover_subtree_patterns() {
        assert_eq!(p("signals").nats_subjects(), vec!["signals", "signals.>"]);
        assert_eq!(p("data.*.BTC").nats_subjects(), vec!["data.*.BTC"]);
    }

    #[test]
    fn equal_topics_hash_equal() {
        assert_eq!(t("a.b"), t("a.b"));
        assert_eq!(t("a.b").precomputed_hash(), t("a.b").precomputed_hash());
        assert_ne!(t("a.b"), t("a.c"));
    }
}
