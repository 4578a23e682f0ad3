//! The order in which one generation of a step is delivered.
//!
//! Each message a source publishes (one candle) is worked through before
//! the source's next, generation by generation: generation 0 is the
//! message itself; generation *n + 1* is what handlers published while
//! handling generation *n*. No message is handled before every message of
//! the generations before it has been handled by every subscriber: a cause
//! is always handled before its effects, whatever their priorities (a HIGH
//! risk approval never overtakes the NORMAL candle whose close led to it).
//!
//! Within one generation a subscriber takes its messages by priority,
//! highest first (CRITICAL pre-empts), then by the publisher's place in
//! the run (the order its agents were subscribed in; senders that are not
//! agents of the run come last), then in the order each publisher
//! published them. That order depends only on what was published, never
//! on which thread ran first, so the inline bus (backtests) and the queued
//! bus in lockstep (`bistoury run`) deliver the same messages to each agent
//! in the same order.

use crate::model::ids::AgentId;
use crate::model::{Envelope, Priority};

/// The agents of a run, in their place order.
#[derive(Debug, Clone, Default)]
pub struct Publishers {
    agents: Vec<AgentId>,
}

impl Publishers {
    /// No publisher known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `agent` the next place, unless it has one.
    pub fn register(&mut self, agent: &AgentId) {
        if !self.agents.contains(agent) {
            self.agents.push(agent.clone());
        }
    }

    /// The place of `sender`; senders that are not agents of the run share
    /// the last.
    fn place(&self, sender: &AgentId) -> usize {
        self.agents
            .iter()
            .position(|a| a == sender)
            .unwrap_or(self.agents.len())
    }

    /// Puts one generation in delivery order (stable: publish order is kept
    /// among messages of one priority and one publisher).
    pub fn order(&self, generation: &mut [Envelope]) {
        let Some(first) = generation.first() else {
            return;
        };
        // Most generations have one publisher and one priority: already in
        // order, and checked with one comparison per message.
        let (priority, sender) = (first.priority, &first.sender);
        if generation[1..]
            .iter()
            .all(|m| m.priority == priority && &m.sender == sender)
        {
            return;
        }
        generation.sort_by_cached_key(|m| self.key(m.priority, &m.sender));
    }

    /// The delivery key of a message: lower first.
    pub fn key(
        &self,
        priority: Priority,
        sender: &AgentId,
    ) -> (std::cmp::Reverse<Priority>, usize) {
        (std::cmp::Reverse(priority), self.place(sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::payload::{Heartbeat, HeartbeatFields};
    use crate::prelude::{Payload, Topic};

    fn message(sender: &str, priority: Priority, n: u32) -> Envelope {
        let payload = Payload::SystemHeartbeat(
            Heartbeat::new(HeartbeatFields {
                agent: AgentId::new(sender),
                sequence: u64::from(n),
                ttl_ms: 1,
            })
            .unwrap(),
        );
        Envelope::new(
            AgentId::new(sender),
            Topic::new("agent.heartbeat").unwrap(),
            payload,
        )
        .with_priority(priority)
    }

    #[test]
    fn priority_then_place_then_publish_order() {
        let mut publishers = Publishers::new();
        for agent in ["collector", "signals", "trader"] {
            publishers.register(&AgentId::new(agent));
        }
        let mut generation = vec![
            message("trader", Priority::Normal, 0),
            message("outsider", Priority::High, 1),
            message("signals", Priority::Normal, 2),
            message("trader", Priority::Critical, 3),
            message("signals", Priority::High, 4),
            message("trader", Priority::Normal, 5),
            message("collector", Priority::Normal, 6),
        ];
        publishers.order(&mut generation);
        let order: Vec<u64> = generation
            .iter()
            .map(|m| match m.payload() {
                Payload::SystemHeartbeat(h) => h.sequence,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, vec![3, 4, 1, 6, 2, 0, 5]);
    }
}
