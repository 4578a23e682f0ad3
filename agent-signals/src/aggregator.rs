//! Combines one bar's strategy signals into one view.
//!
//! score = sum(weight * confidence * direction) / sum(weight), over the
//! strategies that spoke on this bar (direction +1 long, -1 short, 0
//! neutral). Agreeing strategies reinforce each other, disagreeing ones
//! cancel. When |score| reaches the threshold the aggregate points the way
//! of the score with confidence |score|.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bus_core::model::payload::{SignalContribution, SignalDirection};

use crate::strategy::StrategySignal;

/// Weighted signal aggregation.
#[derive(Debug, Clone)]
pub struct Aggregator {
    weights: BTreeMap<String, f64>,
    threshold: f64,
}

/// One strategy's signal on a bar, with the strategy's weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    /// The strategy's name.
    pub strategy: &'static str,
    /// Its weight in the aggregate.
    pub weight: f64,
    /// What it said.
    pub signal: StrategySignal,
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

    /// The weight of `strategy` (1 for one without a configured weight).
    pub fn weight(&self, strategy: &str) -> f64 {
        self.weights.get(strategy).copied().unwrap_or(1.0)
    }

    /// Combines one bar's signals (each weighed with [`weight`](Self::weight)
    /// when the strategy was built); `None` below the threshold.
    pub fn combine(&self, signals: &[Weighted]) -> Option<Aggregate> {
        let mut total_weight = 0.0;
        let mut score = 0.0;
        for Weighted { weight, signal, .. } in signals {
            let weight = *weight;
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
                .map(|w| SignalContribution {
                    strategy: Cow::Borrowed(w.strategy),
                    direction: w.signal.direction,
                    confidence: w.signal.confidence,
                    weight: w.weight,
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

    /// `strategy`'s signal, weighed as `agg` weighs it.
    fn w(agg: &Aggregator, strategy: &'static str, signal: StrategySignal) -> Weighted {
        Weighted {
            strategy,
            weight: agg.weight(strategy),
            signal,
        }
    }

    #[test]
    fn weights_and_threshold() {
        let weights = BTreeMap::from([("a".to_string(), 3.0), ("b".to_string(), 1.0)]);
        let agg = Aggregator::new(weights, 0.35);
        assert_eq!(agg.weight("a"), 3.0);
        assert_eq!(agg.weight("unknown"), 1.0);
        let both = agg
            .combine(&[
                w(&agg, "a", s(SignalDirection::Long, 0.8)),
                w(&agg, "b", s(SignalDirection::Short, 0.8)),
            ])
            .unwrap();
        assert_eq!(both.contributions[0].weight, 3.0);
        assert_eq!(both.direction, SignalDirection::Long);
        assert!((both.confidence - (3.0 * 0.8 - 0.8) / 4.0).abs() < 1e-12);
        // Equal and opposite cancel out.
        let even = Aggregator::new(BTreeMap::new(), 0.1);
        assert!(even
            .combine(&[
                w(&even, "a", s(SignalDirection::Long, 0.7)),
                w(&even, "b", s(SignalDirection::Short, 0.7))
            ])
            .is_none());
        // Below threshold.
        assert!(agg
            .combine(&[w(&agg, "b", s(SignalDirection::Short, 0.3))])
            .is_none());
        assert_eq!(
            agg.combine(&[w(&agg, "b", s(SignalDirection::Short, 0.4))])
                .unwrap()
                .direction,
            SignalDirection::Short
        );
        assert!(agg.combine(&[]).is_none());
    }
}
