//! # agent-risk
//!
//! Pre-trade checks and portfolio watch. Every `trade.order_request` gets a
//! decision as a correlated response: `response.success` (approved) or
//! `response.error` with code `risk_refused` (plus a `risk.limit_breach`).
//! Watching `trade.pnl_update`, it warns as drawdown or daily loss
//! approaches its limit and, at the limit, publishes a CRITICAL
//! `risk.emergency_stop`, after which every order is refused.

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod limits;

pub use agent::RiskAgent;
pub use config::RiskConfig;
pub use limits::{Decision, RiskState};
