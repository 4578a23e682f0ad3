//! Publishes a prebuilt message to 1 and 10 handlers on the inline bus, many
//! times: a fixed workload for instruction-count profiling (`valgrind
//! --tool=callgrind`), which, unlike wall-clock time, repeats exactly.
//!
//! Run: `cargo run --release -p bus-core --example inline_publish_probe -- 10 1000000`

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;

use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use rust_decimal::Decimal;

fn main() {
    let mut args = std::env::args().skip(1);
    let handlers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let publishes: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut bus = InlineBus::new();
    let count = Rc::new(Cell::new(0u64));
    for i in 0..handlers {
        let count = count.clone();
        bus.subscribe(
            &format!("h{i}"),
            "data.price_update.BTC",
            None,
            move |_, _| {
                count.set(count.get() + 1);
                Ok(())
            },
        )
        .expect("valid pattern");
    }
    let price = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").expect("valid symbol"),
        price: Decimal::new(6_500_012, 2),
        timestamp_ms: 1,
    })
    .expect("valid price");
    let message = Envelope::new(
        AgentId::new("collector"),
        Topic::new("data.price_update.BTC").expect("valid topic"),
        Payload::DataPriceUpdate(price),
    );
    for _ in 0..publishes {
        bus.publish(black_box(&message));
    }
    println!("{} handler calls", count.get());
}
