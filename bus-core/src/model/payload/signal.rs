//! `signal.*`: what the strategies conclude.

use super::*;

validated_payload! {
    /// `signal.generated`: one strategy's view of one market.
    pub struct Signal(SignalFields) as "signal.generated" {
        /// Market.
        pub symbol: Symbol,
        /// Strategy name, e.g. `rsi` (a strategy's own names are static
        /// text: no allocation per signal).
        pub strategy: Cow<'static, str>,
        /// Direction.
        pub direction: SignalDirection,
        /// Confidence within 0..=1.
        pub confidence: f64,
        /// Price the signal was computed at.
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Time of the data it was computed from, ms since the Unix epoch.
        pub timestamp_ms: i64,
        /// Human-readable reason.
        pub reason: Cow<'static, str>,
    }
    check(f) {
        not_blank(P, "strategy", &f.strategy)?;
        unit_interval(P, "confidence", f.confidence)?;
        positive(P, "price", f.price)?;
    }
}

/// One strategy's part in an aggregated signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalContribution {
    /// Strategy name.
    pub strategy: Cow<'static, str>,
    /// Its direction.
    pub direction: SignalDirection,
    /// Its confidence.
    pub confidence: f64,
    /// Its configured weight.
    pub weight: f64,
}

validated_payload! {
    /// `signal.aggregated`: the weighted combination of strategy signals.
    pub struct AggregatedSignal(AggregatedSignalFields) as "signal.aggregated" {
        /// Market.
        pub symbol: Symbol,
        /// Combined direction.
        pub direction: SignalDirection,
        /// Combined confidence within 0..=1.
        pub confidence: f64,
        /// Price at the time of aggregation.
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
        /// What went into it.
        pub contributions: Vec<SignalContribution>,
        /// Why, in a language model's words, when its view went into it.
        #[serde(default)]
        pub rationale: Option<String>,
    }
    check(f) {
        unit_interval(P, "confidence", f.confidence)?;
        positive(P, "price", f.price)?;
        for c in f.contributions.iter() {
            unit_interval(P, "contributions", c.confidence)?;
            rule(P, "contributions", c.weight.is_finite() && c.weight >= 0.0, "weights must be finite and >= 0")?;
        }
    }
}

/// `signal.analysis_complete`: all strategies ran on one bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisComplete {
    /// Market.
    pub symbol: Symbol,
    /// Time of the bar, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Strategies that ran.
    pub strategies: u32,
    /// Signals they produced.
    pub signals: u32,
}
