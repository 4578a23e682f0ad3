//! A bounded priority queue: CRITICAL before HIGH before NORMAL before LOW,
//! FIFO within one priority.
//!
//! This is the plain data structure; the bus wraps one per subscription in a
//! mutex and decides what to do when it is full. CRITICAL items are always
//! accepted, even past capacity: a queue may hold more than its capacity only
//! by the number of CRITICAL items it holds, and never drops one.

use std::collections::VecDeque;

use crate::model::Priority;

/// What `push` did.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome<T> {
    /// Queued; nothing was dropped.
    Queued,
    /// Queued, and to make room the oldest item of the lowest priority was
    /// removed and is returned here.
    Displaced(T, Priority),
    /// The queue is full and nothing of equal or lower priority could make
    /// room: the item was not queued and is handed back.
    Full(T),
}

/// A bounded queue with four FIFO lanes, one per priority.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    lanes: [VecDeque<T>; 4],
    len: usize,
    capacity: usize,
    /// The most items it has held at once.
    high_water: usize,
}

impl<T> PriorityQueue<T> {
    /// A queue that holds up to `capacity` non-critical items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            lanes: Default::default(),
            len: 0,
            capacity: capacity.max(1),
            high_water: 0,
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The most items it has held at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` if there is room (CRITICAL always fits); when full and
    /// `displace` is set, removes the oldest item of the lowest priority not
    /// above `priority` to make room.
    pub fn push(&mut self, item: T, priority: Priority, displace: bool) -> PushOutcome<T> {
        if priority == Priority::Critical || self.len < self.capacity {
            self.lanes[priority.index()].push_back(item);
            self.len += 1;
            self.high_water = self.high_water.max(self.len);
            return PushOutcome::Queued;
        }
        if displace {
            for lane in Priority::Low.index()..=priority.index() {
                if let Some(old) = self.lanes[lane].pop_front() {
                    self.lanes[priority.index()].push_back(item);
                    return PushOutcome::Displaced(old, Priority::HIGHEST_FIRST[3 - lane]);
                }
            }
        }
        PushOutcome::Full(item)
    }

    /// Queues `item` regardless of capacity (for redeliveries of messages
    /// the queue had already accepted once).
    pub fn push_unbounded(&mut self, item: T, priority: Priority) {
        self.lanes[priority.index()].push_back(item);
        self.len += 1;
        self.high_water = self.high_water.max(self.len);
    }

    /// Removes the next item: highest priority first, oldest first within it.
    pub fn pop(&mut self) -> Option<(T, Priority)> {
        for priority in Priority::HIGHEST_FIRST {
            if let Some(item) = self.lanes[priority.index()].pop_front() {
                self.len -= 1;
                return Some((item, priority));
            }
        }
        None
    }

    /// Removes everything, highest priority first.
    pub fn drain(&mut self) -> Vec<(T, Priority)> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(next) = self.pop() {
            all.push(next);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn priority_order_then_fifo() {
        let mut q = PriorityQueue::new(10);
        q.push(1, Priority::Low, false);
        q.push(2, Priority::Normal, false);
        q.push(3, Priority::Critical, false);
        q.push(4, Priority::High, false);
        q.push(5, Priority::Normal, false);
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(i, _)| i)).collect();
        assert_eq!(order, vec![3, 4, 2, 5, 1]);
    }

    #[test]
    fn full_queue_without_displacement_hands_the_item_back() {
        let mut q = PriorityQueue::new(2);
        assert_eq!(q.push(1, Priority::Normal, false), PushOutcome::Queued);
        assert_eq!(q.push(2, Priority::Normal, false), PushOutcome::Queued);
        assert_eq!(q.push(3, Priority::High, false), PushOutcome::Full(3));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn displacement_drops_oldest_of_lowest_priority() {
        let mut q = PriorityQueue::new(3);
        q.push(1, Priority::Normal, true);
        q.push(2, Priority::Low, true);
        q.push(3, Priority::Low, true);
        assert_eq!(
            q.push(4, Priority::High, true),
            PushOutcome::Displaced(2, Priority::Low)
        );
        assert_eq!(
            q.push(5, Priority::High, true),
            PushOutcome::Displaced(3, Priority::Low)
        );
        assert_eq!(
            q.push(6, Priority::High, true),
            PushOutcome::Displaced(1, Priority::Normal)
        );
        // Nothing at or below LOW is left to displace for a LOW item.
        assert_eq!(q.push(7, Priority::Low, true), PushOutcome::Full(7));
    }

    #[test]
    fn critical_is_never_dropped_and_always_fits() {
        let mut q = PriorityQueue::new(2);
        for i in 0..5 {
            assert_eq!(q.push(i, Priority::Critical, true), PushOutcome::Queued);
        }
        assert_eq!(q.len(), 5);
        // A HIGH push may not displace CRITICAL items.
        assert_eq!(q.push(9, Priority::High, true), PushOutcome::Full(9));
        assert_eq!(q.drain().len(), 5);
    }

    fn priority() -> impl Strategy<Value = Priority> {
        prop_oneof![
            Just(Priority::Low),
            Just(Priority::Normal),
            Just(Priority::High),
            Just(Priority::Critical)
        ]
    }

    /// Reference model: a plain list; pop takes the first item of the highest
    /// priority present; displacement removes the first item of the lowest
    /// priority present that is not above the incoming one.
    #[derive(Default)]
    struct Reference {
        items: Vec<(u32, Priority)>,
    }

    impl Reference {
        fn push(&mut self, capacity: usize, item: u32, p: Priority, displace: bool) -> Option<u32> {
            let non_full = self.items.len() < capacity.max(1);
            if p == Priority::Critical || non_full {
                self.items.push((item, p));
                return None;
            }
            if displace {
                let lowest = self.items.iter().map(|(_, q)| *q).filter(|q| *q <= p).min();
                if let Some(lowest) = lowest {
                    let at = self.items.iter().position(|(_, q)| *q == lowest).unwrap();
                    let (old, _) = self.items.remove(at);
                    self.items.push((item, p));
                    return Some(old);
                }
            }
            Some(item)
        }

        fn pop(&mut self) -> Option<u32> {
            let highest = self.items.iter().map(|(_, q)| *q).max()?;
            let at = self.items.iter().position(|(_, q)| *q == highest).unwrap();
            Some(self.items.remove(at).0)
        }
    }

    proptest! {
        #[test]
        fn queue_matches_reference(
            capacity in 1usize..8,
            displace in any::<bool>(),
            ops in proptest::collection::vec(proptest::option::of(priority()), 0..200),
        ) {
            let mut q = PriorityQueue::new(capacity);
            let mut r = Reference::default();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Some(p) => {
                        let lost = match q.push(i as u32, p, displace) {
                            PushOutcome::Queued => None,
                            PushOutcome::Displaced(old, _) => Some(old),
                            PushOutcome::Full(item) => Some(item),
                        };
                        prop_assert_eq!(lost, r.push(capacity, i as u32, p, displace));
                    }
                    None => prop_assert_eq!(q.pop().map(|(i, _)| i), r.pop()),
                }
                prop_assert_eq!(q.len(), r.items.len());
            }
        }
    }
}
