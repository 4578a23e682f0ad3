//! Shared by the risk agent's integration tests.

use bus_core::model::payload::*;
use bus_core::prelude::*;
use rust_decimal::Decimal;

/// A `trade.pnl_update` at market time `t`: all cash, no PnL yet.
pub fn pnl(f: &mut MessageFactory, equity: Decimal, t: i64) -> Envelope {
    let p = PnlUpdate::new(PnlUpdateFields {
        timestamp_ms: t,
        cash: equity,
        realised_pnl: Decimal::ZERO,
        unrealised_pnl: Decimal::ZERO,
        fees: Decimal::ZERO,
        equity,
    })
    .unwrap();
    f.make(
        Topic::new("trade.pnl_update").unwrap(),
        Payload::TradePnlUpdate(p),
        t,
    )
}
