//! Risk limits.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The `[risk]` section. Omitted limits are not enforced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// Largest position notional per market (|quantity| x price).
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub max_position_notional: Option<Decimal>,
    /// Largest single order notional.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub max_order_notional: Option<Decimal>,
    /// Most markets with an open position at once.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub max_open_positions: Option<usize>,
    /// Most orders per minute of market time.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub max_orders_per_minute: Option<usize>,
    /// Drawdown from peak equity (fraction) that stops trading.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub max_drawdown: Option<Decimal>,
    /// Loss within one UTC day (currency) that stops trading.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub max_daily_loss: Option<Decimal>,
    /// Fraction of a limit at which a `risk.warning` is sent.
    #[serde(default = "default_warning")]
    pub warning_fraction: Decimal,
    /// Refuse orders while the live feed says the market is stale
    /// (`risk.warning.stale_feed`), until it is live again.
    #[serde(default = "default_halt_on_stale_feed")]
    pub halt_on_stale_feed: bool,
}

fn default_halt_on_stale_feed() -> bool {
    true
}

fn default_warning() -> Decimal {
    Decimal::new(8, 1)
}

impl RiskConfig {
    /// Every problem, each naming its key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let mut positive = |value: Option<Decimal>, key: &str| {
            if value.is_some_and(|v| v <= Decimal::ZERO) {
                errors.push(format!("{prefix}.{key}: must be positive"));
            }
        };
        positive(self.max_position_notional, "max_position_notional");
        positive(self.max_order_notional, "max_order_notional");
        positive(self.max_daily_loss, "max_daily_loss");
        positive(self.max_drawdown, "max_drawdown");
        if self.max_drawdown.is_some_and(|v| v >= Decimal::ONE) {
            errors.push(format!(
                "{prefix}.max_drawdown: must be below 1 (a fraction of peak equity)"
            ));
        }
        if self.max_open_positions == Some(0) {
            errors.push(format!("{prefix}.max_open_positions: must be at least 1"));
        }
        if self.max_orders_per_minute == Some(0) {
            errors.push(format!(
                "{prefix}.max_orders_per_minute: must be at least 1"
            ));
        }
        if self.warning_fraction <= Decimal::ZERO || self.warning_fraction > Decimal::ONE {
            errors.push(format!("{prefix}.warning_fraction: must be within (0, 1]"));
        }
        errors
    }
}
