//! Instruction-count probe for the wire codecs:
//! `valgrind --tool=callgrind target/release/examples/codec_probe MODE N`
//! with MODE `json-encode`, `json-decode`, `bin-encode` or `bin-decode`
//! (N `data.price_update` envelopes; setup included, so compare the
//! inclusive cost of `encode_into` / `binary::decode` / `from_json`).
//! Prints the encoded size in both formats.
use bus_core::message::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use rust_decimal::Decimal;
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let msgs: Vec<Envelope> = (0..n)
        .map(|i| {
            let update = PriceUpdate::new(PriceUpdateFields {
                symbol: Symbol::new("BTC").unwrap(),
                price: Decimal::new(6_512_345 + i as i64, 2),
                timestamp_ms: i as i64,
            })
            .unwrap();
            Envelope::new(
                AgentId::new("bench"),
                Topic::new("prices.btc").unwrap(),
                Payload::DataPriceUpdate(update),
            )
        })
        .collect();
    let format = if mode.starts_with("bin") {
        bus_core::message::WireFormat::Binary
    } else {
        bus_core::message::WireFormat::Json
    };
    let bodies: Vec<Vec<u8>> = msgs.iter().map(|m| format.encode(m)).collect();
    let mut k = 0;
    if mode.ends_with("decode") {
        for b in &bodies {
            k += Envelope::from_wire(b).unwrap().attempt;
        }
    } else {
        for m in &msgs {
            k += format.encode(m).len() as u32;
        }
    }
    println!(
        "{k} (sizes: JSON {} bytes, binary {} bytes)",
        msgs[0].to_json_bytes().len(),
        bus_core::message::binary::encode(&msgs[0]).len()
    );
}
