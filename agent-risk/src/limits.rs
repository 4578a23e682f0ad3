//! The risk rules as plain data and functions: what the agent knows about
//! the book, and the decision for one order. Decisions are values, not
//! booleans, so a refusal always says which limit and by how much.

use std::collections::VecDeque;

use bus_core::model::payload::OrderRequest;
use bus_core::model::SymbolMap;
use rust_decimal::Decimal;

use crate::config::RiskConfig;

/// A risk limit. Its `Display` is its config key (`max_daily_loss`), which
/// is also the last segment of its `risk.warning.*` and
/// `risk.limit_breach.*` topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// Largest notional of one position.
    MaxPositionNotional,
    /// Largest notional of one order.
    MaxOrderNotional,
    /// Most positions open at once.
    MaxOpenPositions,
    /// Most orders approved in a minute of market time.
    MaxOrdersPerMinute,
    /// Largest fall from peak equity, as a fraction: stops trading for good.
    MaxDrawdown,
    /// Largest loss since the start of the UTC day: stops trading.
    MaxDailyLoss,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 6] = [
        Limit::MaxPositionNotional,
        Limit::MaxOrderNotional,
        Limit::MaxOpenPositions,
        Limit::MaxOrdersPerMinute,
        Limit::MaxDrawdown,
        Limit::MaxDailyLoss,
    ];

    /// The limits watched on every equity update (warned about on the
    /// approach, an emergency stop at the limit).
    pub const WATCHED: [Limit; 2] = [Limit::MaxDrawdown, Limit::MaxDailyLoss];

    /// Its config key.
    pub const fn key(self) -> &'static str {
        match self {
            Limit::MaxPositionNotional => "max_position_notional",
            Limit::MaxOrderNotional => "max_order_notional",
            Limit::MaxOpenPositions => "max_open_positions",
            Limit::MaxOrdersPerMinute => "max_orders_per_minute",
            Limit::MaxDrawdown => "max_drawdown",
            Limit::MaxDailyLoss => "max_daily_loss",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl std::str::FromStr for Limit {
    type Err = String;

    fn from_str(key: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|limit| limit.key() == key)
            .ok_or_else(|| format!("{key:?} is not a risk limit"))
    }
}

/// Why an order was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The order would take `limit` to `value`, past `threshold`.
    Limit {
        /// Which limit.
        limit: Limit,
        /// Value the order would reach.
        value: Decimal,
        /// The limit's setting.
        threshold: Decimal,
    },
    /// Trading is halted (an emergency stop): every order is refused.
    Halted,
    /// The live feed is stale: no order until market data flows again.
    StaleFeed {
        /// What the feed said.
        reason: String,
    },
    /// The day's loss reached its limit: orders are refused until the
    /// next UTC day, which starts at `until_ms`.
    PausedForTheDay {
        /// Start of the day trading resumes on (ms since the epoch).
        until_ms: i64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Limit {
                limit,
                value,
                threshold,
            } => write!(f, "{limit}: {value} against a limit of {threshold}"),
            Refusal::Halted => f.write_str("emergency_stop: trading is halted"),
            Refusal::StaleFeed { reason } => write!(f, "stale_feed: {reason}"),
            Refusal::PausedForTheDay { until_ms } => write!(
                f,
                "max_daily_loss: trading is paused until the next UTC day ({})",
                bus_core::model::time::iso8601_utc(*until_ms)
            ),
        }
    }
}

/// The decision on one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Approved,
    /// Do not.
    Refused(Refusal),
}

/// What risk knows about the book.
#[derive(Debug, Clone, Default)]
pub struct RiskState {
    /// Signed quantity per market, from `trade.position_update`.
    pub positions: SymbolMap<Decimal>,
    /// Market times of recent approved orders.
    pub recent_orders: VecDeque<i64>,
    /// Highest equity seen.
    pub peak_equity: Option<Decimal>,
    /// (UTC day, equity at its first update).
    pub day_start: Option<(i64, Decimal)>,
    /// Set by an emergency stop; refuses everything after.
    pub halted: bool,
    /// Set when the day's loss reached its limit: the UTC day (days since
    /// the epoch) trading resumes on; orders before it are refused.
    pub paused_until_day: Option<i64>,
}

const MINUTE_MS: i64 = 60_000;
/// A UTC day in ms.
pub const DAY_MS: i64 = 86_400_000;

impl RiskState {
    /// Decides on `order` placed at market time `now_ms`.
    pub fn decide(&mut self, config: &RiskConfig, order: &OrderRequest, now_ms: i64) -> Decision {
        if self.halted {
            return Decision::Refused(Refusal::Halted);
        }
        if let Some(day) = self.paused_until_day {
            if now_ms.div_euclid(DAY_MS) < day {
                return Decision::Refused(Refusal::PausedForTheDay {
                    until_ms: day * DAY_MS,
                });
            }
        }
        let price = order.limit_price.unwrap_or(order.reference_price);
        let order_notional = order.quantity * price;
        if let Some(max) = config.max_order_notional {
            if order_notional > max {
                return refuse(Limit::MaxOrderNotional, order_notional, max);
            }
        }
        let held = self
            .positions
            .get(&order.symbol)
            .copied()
            .unwrap_or_default();
        let after = held + order.side.sign() * order.quantity;
        if let Some(max) = config.max_position_notional {
            let notional = after.abs() * price;
            // An order that shrinks the position is always allowed.
            if notional > max && after.abs() > held.abs() {
                return refuse(Limit::MaxPositionNotional, notional, max);
            }
        }
        if let Some(max) = config.max_open_positions {
            let opening = held.is_zero() && !after.is_zero();
            let open = self.positions.values().filter(|q| !q.is_zero()).count();
            if opening && open + 1 > max {
                return refuse(
                    Limit::MaxOpenPositions,
                    Decimal::from(open + 1),
                    Decimal::from(max),
                );
            }
        }
        if let Some(max) = config.max_orders_per_minute {
            while self
                .recent_orders
                .front()
                .is_some_and(|t| *t <= now_ms - MINUTE_MS)
            {
                self.recent_orders.pop_front();
            }
            if self.recent_orders.len() + 1 > max {
                return refuse(
                    Limit::MaxOrdersPerMinute,
                    Decimal::from(self.recent_orders.len() + 1),
                    Decimal::from(max),
                );
            }
        }
        self.recent_orders.push_back(now_ms);
        Decision::Approved
    }

    /// Updates peak and day-start equity; returns drawdown (fraction of
    /// peak) and loss since the start of the UTC day.
    pub fn observe_equity(&mut self, equity: Decimal, now_ms: i64) -> (Decimal, Decimal) {
        self.record_equity(equity, now_ms);
        (self.drawdown(equity), self.day_loss(equity))
    }

    /// Updates peak and day-start equity.
    pub fn record_equity(&mut self, equity: Decimal, now_ms: i64) {
        let peak = self.peak_equity.map_or(equity, |p| p.max(equity));
        self.peak_equity = Some(peak);
        let day = now_ms.div_euclid(DAY_MS);
        match self.day_start {
            Some((d, _)) if d == day => {}
            _ => self.day_start = Some((day, equity)),
        }
    }

    /// How far `equity` is below the peak recorded, as a fraction of it
    /// (zero at or above it). A division: asked only where a limit uses it.
    pub fn drawdown(&self, equity: Decimal) -> Decimal {
        match self.peak_equity {
            Some(peak) if peak > Decimal::ZERO && equity < peak => (peak - equity) / peak,
            _ => Decimal::ZERO,
        }
    }

    /// Loss since the start of the UTC day recorded (zero for a gain).
    pub fn day_loss(&self, equity: Decimal) -> Decimal {
        self.day_start
            .map_or(Decimal::ZERO, |(_, start)| start - equity)
            .max(Decimal::ZERO)
    }
}

fn refuse(limit: Limit, value: Decimal, threshold: Decimal) -> Decision {
    Decision::Refused(Refusal::Limit {
        limit,
        value,
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::model::payload::{OrderId, OrderRequestFields, OrderType, Side, Symbol};
    use rust_decimal_macros::dec;

    fn order(side: Side, quantity: Decimal, price: Decimal, symbol: &str) -> OrderRequest {
        OrderRequest::new(OrderRequestFields {
            order_id: OrderId("o".into()),
            symbol: Symbol::new(symbol).unwrap(),
            side,
            quantity,
            order_type: OrderType::Market,
            limit_price: None,
            reference_price: price,
            reason: String::new(),
        })
        .unwrap()
    }

    fn config() -> RiskConfig {
        RiskConfig {
            max_position_notional: Some(dec!(1000)),
            max_order_notional: Some(dec!(600)),
            max_open_positions: Some(1),
            max_orders_per_minute: Some(2),
            max_drawdown: Some(dec!(0.1)),
            max_daily_loss: None,
            warning_fraction: dec!(0.8),
            halt_on_stale_feed: true,
        }
    }

    #[test]
    fn each_limit_refuses_with_its_name() {
        let c = config();
        let mut s = RiskState::default();
        assert_eq!(
            s.decide(&c, &order(Side::Buy, dec!(7), dec!(100), "BTC"), 0),
            refuse(Limit::MaxOrderNotional, dec!(700), dec!(600))
        );
        s.positions.insert(Symbol::new("BTC").unwrap(), dec!(5));
        assert_eq!(
            s.decide(&c, &order(Side::Buy, dec!(6), dec!(100), "BTC"), 0),
            refuse(Limit::MaxPositionNotional, dec!(1100), dec!(1000))
        );
        // Reducing is fine even above the limit.
        s.positions.insert(Symbol::new("BTC").unwrap(), dec!(12));
        assert_eq!(
            s.decide(&c, &order(Side::Sell, dec!(1), dec!(100), "BTC"), 0),
            Decision::Approved
        );
        assert!(matches!(
            s.decide(&c, &order(Side::Buy, dec!(1), dec!(10), "ETH"), 0),
            Decision::Refused(Refusal::Limit {
                limit: Limit::MaxOpenPositions,
                ..
            })
        ));
        assert_eq!(
            s.decide(&c, &order(Side::Sell, dec!(1), dec!(100), "BTC"), 10),
            Decision::Approved
        );
        assert!(matches!(
            s.decide(&c, &order(Side::Sell, dec!(1), dec!(100), "BTC"), 20),
            Decision::Refused(Refusal::Limit {
                limit: Limit::MaxOrdersPerMinute,
                ..
            })
        ));
        // A minute later the window has moved on.
        assert_eq!(
            s.decide(&c, &order(Side::Sell, dec!(1), dec!(100), "BTC"), 60_011),
            Decision::Approved
        );
        s.halted = true;
        assert!(matches!(
            s.decide(&c, &order(Side::Sell, dec!(1), dec!(100), "BTC"), 200_000),
            Decision::Refused(Refusal::Halted)
        ));
    }

    #[test]
    fn every_limit_is_named_by_its_config_key() {
        for limit in Limit::ALL {
            assert_eq!(limit.to_string().parse::<Limit>(), Ok(limit));
        }
        assert_eq!(Limit::MaxDailyLoss.to_string(), "max_daily_loss");
        assert!("emergency_stop".parse::<Limit>().is_err());
    }

    #[test]
    fn drawdown_and_daily_loss() {
        let mut s = RiskState::default();
        assert_eq!(s.observe_equity(dec!(100), 0), (dec!(0), dec!(0)));
        assert_eq!(s.observe_equity(dec!(120), 1), (dec!(0), dec!(0)));
        assert_eq!(s.observe_equity(dec!(90), 2), (dec!(0.25), dec!(10)));
        // Next UTC day: the daily loss starts again.
        assert_eq!(s.observe_equity(dec!(90), DAY_MS).1, dec!(0));
    }
}
