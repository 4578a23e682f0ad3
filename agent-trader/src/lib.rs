//! # agent-trader
//!
//! Paper execution. The trader turns aggregated signals into orders sized
//! by configuration, asks risk to approve each one (request/response over
//! the bus), fills approved orders at the next candle's open with fee and
//! slippage, checks stop-loss and take-profit against each candle's range,
//! and keeps positions and PnL in `Decimal` through [`Portfolio`], whose
//! accounting identity (equity = initial cash + realised + unrealised -
//! fees) holds exactly.
//!
//! ```
//! use agent_trader::Portfolio;
//! use bus_core::model::payload::{Side, Symbol};
//! use rust_decimal::Decimal;
//!
//! let btc = Symbol::new("BTC").unwrap();
//! let mut book = Portfolio::new(Decimal::new(1000, 0));
//! book.apply_fill(&btc, Side::Buy, Decimal::new(2, 0), Decimal::new(100, 0), Decimal::new(2, 1));
//! book.apply_fill(&btc, Side::Sell, Decimal::ONE, Decimal::new(120, 0), Decimal::new(12, 2));
//! book.mark(&btc, Decimal::new(110, 0));
//! assert_eq!(book.realised(), Decimal::new(20, 0));
//! assert_eq!(book.equity(), book.initial_cash + book.realised() + book.unrealised() - book.fees());
//! ```

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod journal;
pub mod portfolio;
pub mod trade_log;

pub use agent::{OpenOrder, Traded, TraderAgent};
pub use config::TraderConfig;
pub use journal::{FillJournal, JournalError, JournaledFill};
pub use portfolio::{FillEffect, Portfolio, Position, Totals};
pub use trade_log::TradeLog;
