//! # agent-trader
//!
//! Paper execution. The trader turns aggregated signals into orders sized
//! by configuration, asks risk to approve each one (request/response over
//! the bus), fills approved orders at the next candle's open with fee and
//! slippage, checks stop-loss and take-profit against each candle's range,
//! and keeps positions and PnL in `Decimal` through [`Portfolio`], whose
//! accounting identity (equity = initial cash + realised + unrealised -
//! fees) holds exactly.

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod portfolio;
pub mod trade_log;

pub use agent::TraderAgent;
pub use config::TraderConfig;
pub use portfolio::{FillEffect, Portfolio, Position};
pub use trade_log::TradeLog;
