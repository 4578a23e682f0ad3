//! Per-handler circuit breaker.
//!
//! After `failure_threshold` consecutive failures the circuit opens and
//! messages for that handler are dropped (and counted) instead of being fed to
//! a handler that keeps failing. After `cooldown` one trial message goes
//! through (half-open): success closes the circuit, failure opens it again.

use std::time::{Duration, Instant};

use serde::Serialize;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit; 0 disables the breaker.
    pub failure_threshold: u32,
    /// Time open before a trial message is let through.
    pub cooldown: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(1),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Messages flow.
    Closed,
    /// Messages are refused until the cooldown ends.
    Open,
    /// One trial message is allowed.
    HalfOpen,
}

/// A circuit breaker; the caller supplies the time, which keeps it testable.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    state: CircuitState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            state: CircuitState::Closed,
            consecutive_failures: 0,
            opened_at: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// May a message go to the handler now?
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            CircuitState::Closed | CircuitState::HalfOpen => true,
            CircuitState::Open => {
                let opened = self.opened_at.unwrap_or(now);
                if now.saturating_duration_since(opened) >= self.config.cooldown {
                    self.state = CircuitState::HalfOpen;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// The handler succeeded.
    pub fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.state = CircuitState::Closed;
        self.opened_at = None;
    }

    /// The handler failed.
    pub fn record_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let threshold = self.config.failure_threshold;
        let trip = self.state == CircuitState::HalfOpen
            || (threshold > 0 && self.consecutive_failures >= threshold);
        if trip && self.state != CircuitState::Open {
            self.state = CircuitState::Open;
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_recovers_after_cooldown() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_millis(100),
        });
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.record_failure(t0);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        b.record_failure(t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow(t0 + Duration::from_millis(50)));
        assert!(b.allow(t0 + Duration::from_millis(100)));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        // The trial fails: open again, cooldown restarts.
        b.record_failure(t0 + Duration::from_millis(100));
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow(t0 + Duration::from_millis(150)));
        assert!(b.allow(t0 + Duration::from_millis(200)));
        b.record_success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_secs(1),
        });
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn zero_threshold_never_opens() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 0,
            cooldown: Duration::from_secs(1),
        });
        for _ in 0..100 {
            b.record_failure(t0);
        }
        assert!(b.allow(t0));
    }
}
