//! Reliable delivery on the queued bus, in process: retries with
//! exponential backoff and jitter, dead letters, and de-duplication.
//!
//! * `at_least_once`: a handler returning `Ok` acknowledges the message. A
//!   failure (error, panic, or an open circuit breaker) schedules a
//!   redelivery to the same subscription only, after [`RetryPolicy::delay`].
//!   When `max_attempts` deliveries have failed, the message goes to the
//!   dead-letter topic `system.dead_letter.<subscription>` as a
//!   [`DeadLetter`](crate::model::payload::DeadLetter) with the last error, and stays listed by
//!   `MessageBus::dead_letters`.
//! * `exactly_once`: the same, plus a per-subscription window of the ids of
//!   messages already handled successfully; a message whose id is in the
//!   window is not handed to the handler again (counted as a duplicate).
//!
//! On their own these guarantees hold while the process lives; on a bus
//! with a durable [`crate::store::Store`] they hold across crashes (see the
//! crate docs, *Delivery guarantees*).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::model::ids::MessageId;

/// When to retry a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub base: Duration,
    /// Growth per further retry (2 doubles).
    pub factor: f64,
    /// Longest delay.
    pub cap: Duration,
    /// Spread, as a fraction: 0.2 gives delays within ±20 %.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            factor: 2.0,
            cap: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based) of message `id`.
    /// The jitter is derived from the id and the retry number, so it
    /// spreads retries of different messages apart yet is reproducible.
    pub fn delay(&self, id: MessageId, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let nominal = (self.base.as_secs_f64() * self.factor.max(1.0).powi(exponent))
            .min(self.cap.as_secs_f64());
        let unit = spread(id, retry) * 2.0 - 1.0; // within [-1, 1)
        let jittered = nominal * (1.0 + self.jitter.clamp(0.0, 1.0) * unit);
        Duration::from_secs_f64(jittered.clamp(0.0, self.cap.as_secs_f64()))
    }
}

/// A number in [0, 1) mixed from the id and the retry number.
fn spread(id: MessageId, retry: u32) -> f64 {
    let mut x = (id.as_uuid().as_u128() as u64)
        ^ ((id.as_uuid().as_u128() >> 64) as u64)
        ^ u64::from(retry).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The ids of the last `capacity` messages handled, for de-duplication.
#[derive(Debug, Clone)]
pub struct DedupeWindow {
    capacity: usize,
    ids: HashSet<MessageId>,
    order: VecDeque<MessageId>,
}

impl DedupeWindow {
    /// A window of `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Was `id` handled within the window?
    pub fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`, forgetting the oldest beyond capacity.
    pub fn insert(&mut self, id: MessageId) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_grow_then_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(10),
            factor: 2.0,
            cap: Duration::from_millis(100),
            jitter: 0.0,
        };
        let id = MessageId::from_u128(7);
        let delays: Vec<u128> = (1..=6).map(|n| p.delay(id, n).as_millis()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 100, 100]);
    }

    #[test]
    fn dedupe_window_forgets_the_oldest() {
        let mut w = DedupeWindow::new(2);
        let ids: Vec<MessageId> = (1..=3).map(MessageId::from_u128).collect();
        w.insert(ids[0]);
        w.insert(ids[1]);
        w.insert(ids[1]);
        assert_eq!(w.len(), 2);
        w.insert(ids[2]);
        assert!(!w.contains(&ids[0]));
        assert!(w.contains(&ids[1]) && w.contains(&ids[2]));
    }

    proptest! {
        /// Every delay lies within the jitter band around the capped
        /// exponential schedule, and jitter is reproducible.
        #[test]
        fn delay_within_band(id in any::<u128>(), retry in 1u32..30, base_ms in 1u64..1000, factor in 1.0f64..4.0, jitter in 0.0f64..0.5) {
            let p = RetryPolicy { base: Duration::from_millis(base_ms), factor, cap: Duration::from_secs(30), jitter };
            let id = MessageId::from_u128(id);
            let nominal = (base_ms as f64 / 1000.0 * factor.powi(retry as i32 - 1)).min(30.0);
            let d = p.delay(id, retry).as_secs_f64();
            prop_assert!(d >= nominal * (1.0 - jitter) - 1e-9, "{d} < band for {nominal}");
            prop_assert!(d <= (nominal * (1.0 + jitter)).min(30.0) + 1e-9, "{d} > band for {nominal}");
            prop_assert_eq!(p.delay(id, retry), p.delay(id, retry));
        }

        /// Delays never shrink from one retry to the next (without jitter)
        /// and never exceed the cap.
        #[test]
        fn delays_grow_until_the_cap(base_ms in 1u64..500, factor in 1.0f64..4.0, cap_ms in 1u64..20_000) {
            let p = RetryPolicy { base: Duration::from_millis(base_ms), factor, cap: Duration::from_millis(cap_ms), jitter: 0.0 };
            let id = MessageId::from_u128(7);
            let delays: Vec<Duration> = (1..20).map(|r| p.delay(id, r)).collect();
            prop_assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
            prop_assert!(delays.iter().all(|d| *d <= p.cap));
        }

        /// The window holds exactly the last `capacity` distinct ids inserted.
        #[test]
        fn dedupe_window_remembers_the_last_distinct_ids(capacity in 1usize..20, ids in prop::collection::vec(0u128..40, 0..200)) {
            let mut window = DedupeWindow::new(capacity);
            let mut model: Vec<u128> = Vec::new();
            for id in &ids {
                window.insert(MessageId::from_u128(*id));
                if !model.contains(id) {
                    model.push(*id);
                    if model.len() > capacity {
                        model.remove(0);
                    }
                }
            }
            for id in 0u128..40 {
                prop_assert_eq!(window.contains(&MessageId::from_u128(id)), model.contains(&id), "id {}", id);
            }
            prop_assert_eq!(window.len(), model.len());
        }
    }
}
