//! # agent-risk
//!
//! Pre-trade checks and portfolio watch. Every `trade.order_request` gets a
//! decision as a correlated response: `response.success` (approved) or
//! `response.error` with code `risk_refused` (plus a `risk.limit_breach`).
//! Watching `trade.pnl_update`, it warns as drawdown or daily loss
//! approaches its limit and, at the limit, publishes a CRITICAL
//! `risk.emergency_stop`, after which every order is refused.
//!
//! ```
//! use agent_risk::{RiskState, RiskConfig};
//! use rust_decimal::Decimal;
//!
//! let mut state = RiskState::default();
//! state.observe_equity(Decimal::new(1000, 0), 0);
//! let (drawdown, _) = state.observe_equity(Decimal::new(900, 0), 1);
//! assert_eq!(drawdown, Decimal::new(1, 1)); // 10 % below the peak
//! # let _ = RiskConfig { max_position_notional: None, max_order_notional: None, max_open_positions: None,
//! #     max_orders_per_minute: None, max_drawdown: None, max_daily_loss: None, warning_fraction: Decimal::ONE,
//! #     halt_on_stale_feed: true };
//! ```

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod limits;
pub mod state;

pub use agent::RiskAgent;
pub use config::RiskConfig;
pub use limits::{Decision, Limit, Refusal, RiskState};
pub use state::{RiskSnapshot, RiskStateStore, SharedState, StateFile};
