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
        // A lone message (most generations of a backtest: a candle's
        // effects are mostly one message) is in order without a look.
        if generation.len() > 1 && !self.in_order(generation) {
            generation.sort_by_cached_key(|m| self.key(m.priority, &m.sender));
        }
    }

    /// Whether `generation` is in delivery order already, as it mostly is
    /// (handlers run in subscription order, which is the publishers'):
    /// a sender's place is looked up once per run of its messages.
    fn in_order(&self, generation: &[Envelope]) -> bool {
        let mut previous: Option<(&AgentId, usize)> = None;
        let mut last_key = None;
        generation.iter().all(|m| {
            let place = match previous {
                Some((sender, place)) if *sender == m.sender => place,
                _ => self.place(&m.sender),
            };
            previous = Some((&m.sender, place));
            let key = (std::cmp::Reverse(m.priority), place);
            let ordered = last_key.is_none_or(|last| last <= key);
            last_key = Some(key);
            ordered
        })
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

    /// Generations in order already (left as they are) and not (sorted)
    /// come out as a stable sort by key puts them, whatever their mix.
    #[test]
    fn ordering_is_a_stable_sort_by_key() {
        let mut publishers = Publishers::new();
        for agent in ["collector", "signals", "trader"] {
            publishers.register(&AgentId::new(agent));
        }
        let senders = ["collector", "signals", "trader", "outsider"];
        let priorities = [Priority::Low, Priority::Normal, Priority::High];
        let mut state = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut sorted_already, mut resorted) = (0, 0);
        for _ in 0..2_000 {
            let len = next(8);
            let mut generation: Vec<Envelope> = (0..len)
                .map(|n| {
                    // Mostly one priority, so that many come in order.
                    let priority = match next(4) {
                        0 => priorities[next(3)],
                        _ => Priority::Normal,
                    };
                    message(senders[next(4)], priority, n as u32)
                })
                .collect();
            let mut expected = generation.clone();
            expected.sort_by_cached_key(|m| publishers.key(m.priority, &m.sender));
            match publishers.in_order(&generation) {
                true => sorted_already += 1,
                false => resorted += 1,
            }
            publishers.order(&mut generation);
            let ids = |g: &[Envelope]| g.iter().map(|m| m.id).collect::<Vec<_>>();
            assert_eq!(ids(&generation), ids(&expected));
        }
        assert!(
            sorted_already > 200 && resorted > 200,
            "{sorted_already} {resorted}"
        );
    }
}
