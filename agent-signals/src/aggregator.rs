//! Combines one bar's strategy signals into one view.
//!
//! score = sum(weight * confidence * direction) / sum(weight), over the
//! strategies that spoke on this bar (direction +1 long, -1 short, 0
//! neutral). Agreeing strategies reinforce each other, disagreeing ones
//! cancel. When |score| reaches the threshold the aggregate points the way
//! of the score with confidence |score|.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bus_core::message::payload::{SignalContribution, SignalDirection};

use crate::strategy::StrategySignal;

/// Weighted signal aggregation.
#[derive(Debug, Clone)]
pub struct Aggregator {
    weights: BTreeMap<String, f64>,
    threshold: f64,
}

/// The aggregate view.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Direction.
    pub direction: SignalDirection,
    /// Confidence within 0..=1.
    pub confidence: f64,
    /// What went into it.
    pub contributions: Vec<SignalContribution>,
}

impl Aggregator {
    /// An aggregator with per-strategy weights (unknown strategies weigh 1).
    pub fn new(weights: BTreeMap<String, f64>, threshold: f64) -> Self {
        Self { weights, threshold }
    }

    /// Combines `(strategy, signal)` pairs; `None` below the threshold.
    pub fn combine(&self, signals: &[(&'static str, StrategySignal)]) -> Option<Aggregate> {
        let weight_of = |strategy: &str| self.weights.get(strategy).copied().unwrap_or(1.0);
        let mut total_weight = 0.0;
        let mut score = 0.0;
        for (strategy, signal) in signals {
            let weight = weight_of(strategy);
            let sign = match signal.direction {
                SignalDirection::Long => 1.0,
                SignalDirection::Short => -1.0,
                SignalDirection::Neutral => 0.0,
            };
            total_weight += weight;
            score += weight * signal.confidence * sign;
        }
        if total_weight <= 0.0 {
            return None;
        }
        let score = score / total_weight;
        if score.abs() < self.threshold || score == 0.0 {
            return None;
        }
        Some(Aggregate {
            direction: if score > 0.0 {
                SignalDirection::Long
            } else {
                SignalDirection::Short
            },
            confidence: score.abs().min(1.0),
            // Built only for a signal that passes: most bars end above.
            contributions: signals
                .iter()
                .map(|(strategy, signal)| SignalContribution {
                    strategy: Cow::Borrowed(strategy),
                    direction: signal.direction,
                    confidence: signal.confidence,
                    weight: weight_of(strategy),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(direction: SignalDirection, confidence: f64) -> StrategySignal {
        StrategySignal {
            direction,
            confidence,
            reason: "",
        }
    }

    #[test]
    fn weights_and_threshold() {
        let weights = BTreeMap::from([("a".to_string(), 3.0), ("b".to_string(), 1.0)]);
        let agg = Aggregator::new(weights, 0.35);
        let both = agg
            .combine(&[
                ("a", s(SignalDirection::Long, 0.8)),
                ("b", s(SignalDirection::Short, 0.8)),
            ])
            .unwrap();
        assert_eq!(both.direction, SignalDirection::Long);
        assert!((both.confidence - (3.0 * 0.8 - 0.8) / 4.0).abs() < 1e-12);
        // Equal and opposite cancel out.
        let even = Aggregator::new(BTreeMap::new(), 0.1);
        assert!(even
            .combine(&[
                ("a", s(SignalDirection::Long, 0.7)),
                ("b", s(SignalDirection::Short, 0.7))
            ])
            .is_none());
        // Below threshold.
        assert!(agg
            .combine(&[("b", s(SignalDirection::Short, 0.3))])
            .is_none());
        assert_eq!(
            agg.combine(&[("b", s(SignalDirection::Short, 0.4))])
                .unwrap()
                .direction,
            SignalDirection::Short
        );
        assert!(agg.combine(&[]).is_none());
    }
}
