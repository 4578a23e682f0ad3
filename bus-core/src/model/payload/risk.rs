//! `risk.*`: alerts and the emergency stop.

use super::*;

/// `risk.limit_breach` and `risk.warning`: a limit was crossed or approached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAlert {
    /// Which limit (`max_drawdown`, `max_position`...).
    pub limit: String,
    /// Market, when the limit is per market.
    pub symbol: Option<Symbol>,
    /// Observed value.
    #[serde(with = "crate::model::wire::decimal")]
    pub value: Decimal,
    /// The limit's threshold.
    #[serde(with = "crate::model::wire::decimal")]
    pub threshold: Decimal,
    /// Human-readable text.
    pub message: String,
}

/// `risk.emergency_stop`: stop sending new orders now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyStop {
    /// Why.
    pub reason: String,
    /// The limit or component that triggered it.
    pub triggered_by: String,
}
