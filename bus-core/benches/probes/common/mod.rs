//! The message the codec probe, the NATS probe and the NATS and durable
//! benches all send (one module, included by each: `mod common;` in the
//! examples, `#[path]` in the benches).
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use rust_decimal::Decimal;

/// The `i`-th `data.price_update` envelope on `topic`: BTC, its price a
/// cent higher than the one before, its time `i` ms.
pub fn price_update(i: u64, topic: &str) -> Envelope {
    let update = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").unwrap(),
        price: Decimal::new(6_512_345 + i as i64, 2),
        timestamp_ms: i as i64,
    })
    .unwrap();
    Envelope::new(
        AgentId::new("bench"),
        Topic::new(topic).unwrap(),
        Payload::DataPriceUpdate(update),
    )
}

/// A probe's command line: `MODE [N]` (N messages, 20,000 if not given).
pub fn mode_and_count() -> (String, u64) {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    (mode, n)
}
