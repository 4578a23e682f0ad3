//! `trade.*`: orders, fills, cancellations, positions.

use super::*;

validated_payload! {
    /// `trade.order_request`: the trader asks risk to approve an order.
    pub struct OrderRequest(OrderRequestFields) as "trade.order_request" {
        /// Order identity.
        pub order_id: OrderId,
        /// Market.
        pub symbol: Symbol,
        /// Side.
        pub side: Side,
        /// Quantity, positive.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Market or limit.
        pub order_type: OrderType,
        /// Limit price, required for limit orders.
        #[serde(default, with = "crate::model::wire::decimal::option")]
        pub limit_price: Option<Decimal>,
        /// Price the order was sized at.
        #[serde(with = "crate::model::wire::decimal")]
        pub reference_price: Decimal,
        /// Why the order is placed.
        pub reason: String,
    }
    check(f) {
        positive(P, "quantity", f.quantity)?;
        positive(P, "reference_price", f.reference_price)?;
        match (f.order_type, f.limit_price) {
            (OrderType::Limit, Some(price)) => positive(P, "limit_price", price)?,
            (OrderType::Limit, None) => rule(P, "limit_price", false, "is required for a limit order")?,
            (OrderType::Market, Some(_)) => rule(P, "limit_price", false, "must be absent for a market order")?,
            (OrderType::Market, None) => {}
        }
    }
}

validated_payload! {
    /// `trade.order_filled`: an order was executed.
    pub struct Fill(FillFields) as "trade.order_filled" {
        /// Order identity.
        pub order_id: OrderId,
        /// Market.
        pub symbol: Symbol,
        /// Side.
        pub side: Side,
        /// Filled quantity.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Fill price (after slippage).
        #[serde(with = "crate::model::wire::decimal")]
        pub price: Decimal,
        /// Fee paid.
        #[serde(with = "crate::model::wire::decimal")]
        pub fee: Decimal,
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
    }
    check(f) {
        positive(P, "quantity", f.quantity)?;
        positive(P, "price", f.price)?;
        non_negative(P, "fee", f.fee)?;
    }
}

/// `trade.order_cancelled`: an order will not be filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelled {
    /// Order identity.
    pub order_id: OrderId,
    /// Market.
    pub symbol: Symbol,
    /// Why (refused by risk, emergency stop...).
    pub reason: String,
}

validated_payload! {
    /// `trade.position_update`: the position in one market after a change.
    pub struct PositionUpdate(PositionUpdateFields) as "trade.position_update" {
        /// Market.
        pub symbol: Symbol,
        /// Signed quantity: positive long, negative short.
        #[serde(with = "crate::model::wire::decimal")]
        pub quantity: Decimal,
        /// Average entry price (zero when flat).
        #[serde(with = "crate::model::wire::decimal")]
        pub average_price: Decimal,
        /// Price the position is marked at.
        #[serde(with = "crate::model::wire::decimal")]
        pub mark_price: Decimal,
        /// Realised PnL in this market so far.
        #[serde(with = "crate::model::wire::decimal")]
        pub realised_pnl: Decimal,
        /// Unrealised PnL at the mark price.
        #[serde(with = "crate::model::wire::decimal")]
        pub unrealised_pnl: Decimal,
    }
    check(f) {
        non_negative(P, "average_price", f.average_price)?;
        positive(P, "mark_price", f.mark_price)?;
    }
}

validated_payload! {
    /// `trade.pnl_update`: the portfolio's accounts.
    pub struct PnlUpdate(PnlUpdateFields) as "trade.pnl_update" {
        /// Time, ms since the Unix epoch.
        pub timestamp_ms: i64,
        /// Cash balance.
        #[serde(with = "crate::model::wire::decimal")]
        pub cash: Decimal,
        /// Realised PnL (before fees).
        #[serde(with = "crate::model::wire::decimal")]
        pub realised_pnl: Decimal,
        /// Unrealised PnL.
        #[serde(with = "crate::model::wire::decimal")]
        pub unrealised_pnl: Decimal,
        /// Fees paid.
        #[serde(with = "crate::model::wire::decimal")]
        pub fees: Decimal,
        /// Equity: initial cash + realised + unrealised - fees.
        #[serde(with = "crate::model::wire::decimal")]
        pub equity: Decimal,
    }
    check(f) {
        non_negative(P, "fees", f.fees)?;
    }
}
