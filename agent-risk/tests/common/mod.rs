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

/// An order request (id `id`) to buy `quantity` BTC at 100, placed at
/// market time `t`, answered on `trade.decision.trader`.
pub fn buy_btc(f: &mut MessageFactory, id: &str, quantity: Decimal, t: i64) -> Envelope {
    let o = OrderRequest::new(OrderRequestFields {
        order_id: OrderId(id.into()),
        symbol: Symbol::new("BTC").unwrap(),
        side: Side::Buy,
        quantity,
        order_type: OrderType::Market,
        limit_price: None,
        reference_price: Decimal::new(100, 0),
        reason: String::new(),
    })
    .unwrap();
    f.make(
        Topic::new("trade.order_request.BTC").unwrap(),
        Payload::TradeOrderRequest(o),
        t,
    )
    .with_reply_to(Topic::new("trade.decision.trader").unwrap())
}
