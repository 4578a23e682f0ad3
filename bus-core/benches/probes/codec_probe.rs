//! Instruction-count probe for the wire codecs:
//! `valgrind --tool=callgrind target/release/examples/codec_probe MODE N`
//! with MODE `json-encode`, `json-decode`, `bin-encode` or `bin-decode`
//! (N `data.price_update` envelopes; setup included, so compare the
//! inclusive cost of `encode_into` / `binary::decode` / `from_json`).
//! Prints the encoded size in both formats.
use bus_core::prelude::*;

mod common;

fn main() {
    let (mode, n) = common::mode_and_count();
    let msgs: Vec<Envelope> = (0..n)
        .map(|i| common::price_update(i, "prices.btc"))
        .collect();
    let format = if mode.starts_with("bin") {
        bus_core::model::WireFormat::Binary
    } else {
        bus_core::model::WireFormat::Json
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
        bus_core::model::wire::binary::encode(&msgs[0]).len()
    );
}
