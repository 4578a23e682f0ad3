//! Message filters: predicates over envelopes, composable with all / any / not.
//!
//! A subscription's topic pattern does the coarse routing through the index;
//! a filter refines what reaches the handler (only HIGH and above, only one
//! sender, only messages tagged `live`).

use crate::ids::AgentId;
use crate::message::{Envelope, MessageType, Priority};
use crate::topic::TopicPattern;

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
    use crate::message::payload::Shutdown;
    use crate::message::Payload;
    use crate::topic::Topic;

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
}
