//! The trader's configuration.

use rust_decimal::Decimal;
use serde::Deserialize;

/// The `[trader]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraderConfig {
    /// Starting cash.
    pub initial_cash: Decimal,
    /// Fee as a fraction of notional (0.001 = 10 bp).
    pub fee_rate: Decimal,
    /// Slippage as a fraction of price, against the trader.
    pub slippage: Decimal,
    /// Position size as a fraction of equity at the signal.
    pub position_fraction: Decimal,
    /// Decimal places of order quantities.
    #[serde(default = "default_quantity_scale")]
    pub quantity_scale: u32,
    /// Open short positions on short signals (otherwise only go flat).
    #[serde(default)]
    pub allow_short: bool,
    /// Minimum aggregated confidence to act on.
    #[serde(default)]
    pub min_confidence: f64,
    /// Close a position when it loses this fraction of its entry price;
    /// `"off"` (or `"none"`, `false`): never.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub stop_loss: Option<Decimal>,
    /// Close a position when it gains this fraction of its entry price;
    /// `"off"` (or `"none"`, `false`): never.
    #[serde(default, deserialize_with = "bus_core::model::setting::value_or_off")]
    pub take_profit: Option<Decimal>,
    /// After an emergency stop, close every position at the next price.
    #[serde(default)]
    pub close_on_emergency_stop: bool,
    /// Most gross exposure (the sum of every position's |quantity| x price)
    /// a fill may take the account to, as a multiple of equity: 1 (the
    /// default) trades without borrowing — a buy is cut to what cash pays,
    /// a short to what equity covers, so cash never goes below zero by
    /// accident; above 1 a fill may borrow up to that leverage.
    #[serde(default = "one")]
    pub max_leverage: Decimal,
    /// When the run ends (`system.shutdown`), close every position at its
    /// last close, paying slippage and fees, so that the report holds only
    /// closed round trips.
    #[serde(default)]
    pub close_at_end: bool,
}

fn one() -> Decimal {
    Decimal::ONE
}

fn default_quantity_scale() -> u32 {
    6
}

impl TraderConfig {
    /// Every problem, each naming its key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(format!("{prefix}.{key}: {message}"));
            }
        };
        let one = Decimal::ONE;
        check(
            self.initial_cash > Decimal::ZERO,
            "initial_cash",
            "must be positive",
        );
        check(
            self.fee_rate >= Decimal::ZERO && self.fee_rate < one,
            "fee_rate",
            "must be within 0..1",
        );
        check(
            self.slippage >= Decimal::ZERO && self.slippage < one,
            "slippage",
            "must be within 0..1",
        );
        check(
            self.position_fraction > Decimal::ZERO && self.position_fraction <= one,
            "position_fraction",
            "must be within (0, 1]",
        );
        check(
            self.quantity_scale <= 12,
            "quantity_scale",
            "must be at most 12",
        );
        check(
            (0.0..=1.0).contains(&self.min_confidence),
            "min_confidence",
            "must be within 0..=1",
        );
        if let Some(v) = self.stop_loss {
            check(
                v > Decimal::ZERO && v < one,
                "stop_loss",
                "must be within (0, 1)",
            );
        }
        check(
            self.max_leverage >= one && self.max_leverage <= Decimal::from(100),
            "max_leverage",
            "must be within 1..=100",
        );
        if let Some(v) = self.take_profit {
            check(v > Decimal::ZERO, "take_profit", "must be positive");
        }
        errors
    }
}
