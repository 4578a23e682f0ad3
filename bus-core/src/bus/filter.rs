//! Message filters: predicates over envelopes, composable with all / any / not.
//!
//! A subscription's topic pattern does the coarse routing through the index;
//! a filter refines what reaches the handler (only HIGH and above, only one
//! sender, only messages tagged `live`).

use crate::model::ids::AgentId;
use crate::model::topic::TopicPattern;
use crate::model::{Envelope, MessageType, Priority};

/// A predicate over envelopes.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches every message.
    Everything,
    /// The message type is one of these.
    MessageTypes(Vec<MessageType>),
    /// The message type is in this family (`data`, `trade`...).
    Family(String),
    /// Sent by this agent.
    Sender(AgentId),
    /// Published on a topic matching this pattern.
    Topic(TopicPattern),
    /// Priority at least this.
    MinPriority(Priority),
    /// Carries this tag.
    Tag(String),
    /// Every inner filter matches (true when empty).
    All(Vec<Filter>),
    /// At least one inner filter matches (false when empty).
    Any(Vec<Filter>),
    /// The inner filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// Only this message type.
    pub fn message_type(t: MessageType) -> Self {
        Filter::MessageTypes(vec![t])
    }

    /// Only this family.
    pub fn family(family: impl Into<String>) -> Self {
        Filter::Family(family.into())
    }

    /// Only from this sender.
    pub fn sender(sender: impl Into<AgentId>) -> Self {
        Filter::Sender(sender.into())
    }

    /// Only priority at least `p`.
    pub fn min_priority(p: Priority) -> Self {
        Filter::MinPriority(p)
    }

    /// Only messages carrying `tag`.
    pub fn tag(tag: impl Into<String>) -> Self {
        Filter::Tag(tag.into())
    }

    /// Only topics matching `pattern`.
    pub fn topic(pattern: TopicPattern) -> Self {
        Filter::Topic(pattern)
    }

    /// This and `other`.
    pub fn and(self, other: Filter) -> Self {
        match self {
            Filter::All(mut filters) => {
                filters.push(other);
                Filter::All(filters)
            }
            first => Filter::All(vec![first, other]),
        }
    }

    /// This or `other`.
    pub fn or(self, other: Filter) -> Self {
        match self {
            Filter::Any(mut filters) => {
                filters.push(other);
                Filter::Any(filters)
            }
            first => Filter::Any(vec![first, other]),
        }
    }

    /// The opposite of this.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Does the envelope pass?
    pub fn matches(&self, envelope: &Envelope) -> bool {
        match self {
            Filter::Everything => true,
            Filter::MessageTypes(types) => types.contains(&envelope.message_type()),
            Filter::Family(family) => envelope.message_type().family() == family,
            Filter::Sender(sender) => &envelope.sender == sender,
            Filter::Topic(pattern) => pattern.matches(&envelope.topic),
            Filter::MinPriority(p) => envelope.priority >= *p,
            Filter::Tag(tag) => envelope.has_tag(tag),
            Filter::All(filters) => filters.iter().all(|f| f.matches(envelope)),
            Filter::Any(filters) => filters.iter().any(|f| f.matches(envelope)),
            Filter::Not(inner) => !inner.matches(envelope),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::payload::Shutdown;
    use crate::model::topic::Topic;
    use crate::model::Payload;

    fn env(sender: &str, topic: &str, priority: Priority, tags: &[&str]) -> Envelope {
        let mut e = Envelope::new(
            AgentId::new(sender),
            Topic::new(topic).unwrap(),
            Payload::SystemShutdown(Shutdown { reason: "x".into() }),
        )
        .with_priority(priority);
        for t in tags {
            e = e.with_tag(*t);
        }
        e
    }

    #[test]
    fn leaf_filters() {
        let e = env("risk", "system.control", Priority::High, &["live"]);
        assert!(Filter::message_type(MessageType::SystemShutdown).matches(&e));
        assert!(!Filter::message_type(MessageType::DataCandle).matches(&e));
        assert!(Filter::family("system").matches(&e));
        assert!(!Filter::family("sys").matches(&e));
        assert!(Filter::sender("risk").matches(&e));
        assert!(!Filter::sender("trader").matches(&e));
        assert!(Filter::min_priority(Priority::Normal).matches(&e));
        assert!(Filter::min_priority(Priority::High).matches(&e));
        assert!(!Filter::min_priority(Priority::Critical).matches(&e));
        assert!(Filter::tag("live").matches(&e));
        assert!(!Filter::tag("paper").matches(&e));
        assert!(Filter::topic(TopicPattern::new("system.*").unwrap()).matches(&e));
        assert!(!Filter::topic(TopicPattern::new("sys").unwrap()).matches(&e));
    }

    #[test]
    fn composition() {
        let e = env("risk", "system.control", Priority::Low, &[]);
        let high_from_risk = Filter::sender("risk").and(Filter::min_priority(Priority::High));
        assert!(!high_from_risk.matches(&e));
        let either = Filter::sender("risk").or(Filter::min_priority(Priority::High));
        assert!(either.matches(&e));
        assert!(!Filter::sender("risk").not().matches(&e));
        assert!(Filter::All(vec![]).matches(&e));
        assert!(!Filter::Any(vec![]).matches(&e));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const SENDERS: [&str; 2] = ["risk", "trader"];
        const TAGS: [&str; 2] = ["live", "paper"];
        const TOPICS: [&str; 3] = ["data.candle.BTC", "data.price.ETH", "signal.x"];
        const PATTERNS: [&str; 4] = ["data", "data.*.BTC", "signal.>", "*"];
        const PRIORITIES: [Priority; 4] = [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ];

        fn leaf() -> impl Strategy<Value = Filter> {
            prop_oneof![
                Just(Filter::Everything),
                (0..2usize).prop_map(|i| Filter::sender(SENDERS[i])),
                (0..2usize).prop_map(|i| Filter::tag(TAGS[i])),
                (0..4usize).prop_map(|i| Filter::min_priority(PRIORITIES[i])),
                (0..4usize).prop_map(|i| Filter::topic(TopicPattern::new(PATTERNS[i]).unwrap())),
                Just(Filter::family("system")),
                Just(Filter::family("data")),
                Just(Filter::message_type(MessageType::SystemShutdown)),
            ]
        }

        fn filter() -> impl Strategy<Value = Filter> {
            leaf().prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Filter::All),
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Filter::Any),
                    inner.prop_map(|f| f.not()),
                ]
            })
        }

        fn envelope() -> impl Strategy<Value = Envelope> {
            (
                0..2usize,
                0..3usize,
                0..4usize,
                proptest::collection::vec(0..2usize, 0..3),
            )
                .prop_map(|(s, t, p, tags)| {
                    env(
                        SENDERS[s],
                        TOPICS[t],
                        PRIORITIES[p],
                        &tags.iter().map(|i| TAGS[*i]).collect::<Vec<_>>(),
                    )
                })
        }

        /// Reference: the filter as a postfix program run on an explicit
        /// stack, with leaves answered from first principles (string
        /// comparisons on the envelope's wire fields).
        fn reference(filter: &Filter, e: &Envelope) -> bool {
            enum Op<'a> {
                Leaf(&'a Filter),
                All(usize),
                Any(usize),
                Not,
            }
            fn compile<'a>(f: &'a Filter, ops: &mut Vec<Op<'a>>) {
                match f {
                    Filter::All(v) => {
                        v.iter().for_each(|x| compile(x, ops));
                        ops.push(Op::All(v.len()))
                    }
                    Filter::Any(v) => {
                        v.iter().for_each(|x| compile(x, ops));
                        ops.push(Op::Any(v.len()))
                    }
                    Filter::Not(x) => {
                        compile(x, ops);
                        ops.push(Op::Not)
                    }
                    leaf => ops.push(Op::Leaf(leaf)),
                }
            }
            let leaf = |f: &Filter| -> bool {
                let wire: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
                let rank = |p: &str| {
                    ["low", "normal", "high", "critical"]
                        .iter()
                        .position(|x| *x == p)
                        .unwrap()
                };
                match f {
                    Filter::Everything => true,
                    Filter::Sender(s) => wire["sender"] == s.as_str(),
                    Filter::Tag(t) => wire["tags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == t.as_str()),
                    Filter::MinPriority(p) => {
                        rank(wire["priority"].as_str().unwrap()) >= rank(p.as_str())
                    }
                    Filter::Family(fam) => {
                        wire["type"].as_str().unwrap().split('.').next() == Some(fam.as_str())
                    }
                    Filter::MessageTypes(ts) => ts.iter().any(|t| wire["type"] == t.as_str()),
                    Filter::Topic(p) => {
                        let ps: Vec<&str> = p.as_str().split('.').collect();
                        let ts: Vec<&str> = wire["topic"].as_str().unwrap().split('.').collect();
                        if ps.iter().all(|s| *s != "*" && *s != ">") {
                            ts.len() >= ps.len() && ps.iter().zip(&ts).all(|(a, b)| a == b)
                        } else if ps.last() == Some(&">") {
                            ts.len() >= ps.len()
                                && ps[..ps.len() - 1]
                                    .iter()
                                    .zip(&ts)
                                    .all(|(a, b)| *a == "*" || a == b)
                        } else {
                            ts.len() == ps.len()
                                && ps.iter().zip(&ts).all(|(a, b)| *a == "*" || a == b)
                        }
                    }
                    _ => unreachable!(),
                }
            };
            let mut ops = Vec::new();
            compile(filter, &mut ops);
            let mut stack: Vec<bool> = Vec::new();
            for op in ops {
                match op {
                    Op::Leaf(f) => stack.push(leaf(f)),
                    Op::All(n) => {
                        let v = stack.split_off(stack.len() - n);
                        stack.push(v.iter().all(|b| *b))
                    }
                    Op::Any(n) => {
                        let v = stack.split_off(stack.len() - n);
                        stack.push(v.iter().any(|b| *b))
                    }
                    Op::Not => {
                        let v = stack.pop().unwrap();
                        stack.push(!v)
                    }
                }
            }
            stack.pop().unwrap()
        }

        proptest! {
            #[test]
            fn filter_matches_reference(f in filter(), e in envelope()) {
                prop_assert_eq!(f.matches(&e), reference(&f, &e));
            }

            #[test]
            fn de_morgan_holds(a in filter(), b in filter(), e in envelope()) {
                let lhs = a.clone().and(b.clone()).not().matches(&e);
                let rhs = a.not().or(b.not()).matches(&e);
                prop_assert_eq!(lhs, rhs);
            }
        }
    }
}
