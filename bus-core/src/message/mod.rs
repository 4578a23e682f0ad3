//! The message model: envelope, types, payloads, priority and delivery.

pub mod addressing;
pub mod binary;
pub mod candle_sequence;
pub mod delivery;
pub mod envelope;
pub mod headers;
pub mod kind;
mod msgpack;
pub mod payload;
pub mod symbol_map;
pub mod time;

pub use candle_sequence::{CandleAdmission, CandleSequence};
pub use delivery::{DeliveryMode, MessageStatus, Priority};
pub use envelope::{now_ms, Envelope, DEFAULT_MAX_ATTEMPTS};
pub use headers::Headers;
pub use kind::{MessageType, Payload};
pub use symbol_map::SymbolMap;

/// How payload decimals are written: as text in human-readable formats
/// (JSON: `"65123.45"`, exact), as their 16-byte binary form (flags, then
/// the 96-bit mantissa, little-endian; what `Decimal::serialize` gives) in
/// the binary codec, where formatting and parsing text dominated the cost.
pub(crate) mod wire_decimal {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            Serialize::serialize(value, s)
        } else {
            s.serialize_bytes(&value.serialize())
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        if d.is_human_readable() {
            return <Decimal as Deserialize>::deserialize(d);
        }
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal as 16 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Decimal, E> {
                from_bytes(bytes).ok_or_else(|| E::custom("not a valid 16-byte decimal"))
            }
        }
        d.deserialize_bytes(Visitor)
    }

    /// The decimal in `bytes`, if they are a well-formed 16-byte decimal
    /// (scale at most 28, no stray flag bits).
    fn from_bytes(bytes: &[u8]) -> Option<Decimal> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let flags = word(0);
        let scale = (flags >> 16) & 0xff;
        if flags & !0x80ff_0000 != 0 || scale > 28 {
            return None;
        }
        Some(Decimal::from_parts(
            word(4),
            word(8),
            word(12),
            flags & 0x8000_0000 != 0,
            scale,
        ))
    }

    /// `Option<Decimal>` the same way.
    pub(crate) mod option {
        use rust_decimal::Decimal;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            value: &Option<Decimal>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => super::serialize(value, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Decimal>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Decimal);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(value)| value))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn bytes_round_trip_and_bad_bytes_are_refused() {
            for text in [
                "0",
                "65123.45",
                "-0.000001",
                "79228162514264337593543950335",
            ] {
                let d: Decimal = text.parse().unwrap();
                assert_eq!(from_bytes(&d.serialize()), Some(d));
            }
            let mut bad = Decimal::ONE.serialize();
            bad[2] = 29; // scale 29
            assert_eq!(from_bytes(&bad), None);
            let mut bad = Decimal::ONE.serialize();
            bad[0] = 1; // stray flag bit
            assert_eq!(from_bytes(&bad), None);
            assert_eq!(from_bytes(&[0; 15]), None);
        }
    }
}

/// How envelopes are written on the wire. Readers take both (a binary
/// envelope starts with [`binary::MAGIC`]); the choice is the writer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// The documented JSON format: what clients in other languages read.
    #[default]
    Json,
    /// The compact binary format ([`binary`]): smaller and cheaper, for
    /// links between Bistoury processes.
    Binary,
}

impl WireFormat {
    /// Encodes `envelope` in this format (dead letters are always JSON).
    pub fn encode(self, envelope: &Envelope) -> Vec<u8> {
        match self {
            WireFormat::Json => envelope.to_json_bytes(),
            WireFormat::Binary => binary::encode(envelope),
        }
    }

    /// Appends `envelope`, encoded in this format, to `out`.
    pub fn encode_into(self, envelope: &Envelope, out: &mut Vec<u8>) {
        match self {
            WireFormat::Json => envelope.write_json(out),
            WireFormat::Binary => binary::encode_into(envelope, out),
        }
    }
}

/// A decimal as `f64` through its mantissa and scale, for indicators and
/// statistics (never for money). `Decimal::to_f64` goes through text, which
/// dominated backtest profiles.
#[inline]
pub fn decimal_to_f64(value: rust_decimal::Decimal) -> f64 {
    /// Exact powers of ten (to 1e22 doubles are exact).
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let scale = value.scale() as usize;
    let mantissa = value.mantissa();
    // Prices fit an i64 mantissa: converting that is one instruction, where
    // an i128 goes through a slow software routine. That routine sits in a
    // function of its own: written inline, the compiler ran it on every
    // call (a conversion looks cheap to it) and picked the result after.
    #[cold]
    #[inline(never)]
    fn wide(mantissa: i128) -> f64 {
        mantissa as f64
    }
    let small = mantissa as i64;
    let mantissa = if i128::from(small) == mantissa {
        small as f64
    } else {
        wide(mantissa)
    };
    match POW10.get(scale) {
        Some(power) => mantissa / power,
        None => mantissa / 10f64.powi(scale as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_to_f64_is_close() {
        for (text, expected) in [
            ("35000.12", 35000.12),
            ("0.0001", 0.0001),
            ("-2.5", -2.5),
            ("0", 0.0),
        ] {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            assert!((decimal_to_f64(d) - expected).abs() < 1e-9);
        }
        // Mantissas wider than an i64 take the slow path.
        for (text, expected) in [
            ("123456789012345678901234.5", 1.234_567_890_123_456_8e23),
            (
                "-0.0000000012345678901234567890",
                -1.234_567_890_123_456_8e-9,
            ),
        ] {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            assert!(d.mantissa().abs() > i128::from(i64::MAX), "{text}");
            let relative = (decimal_to_f64(d) - expected).abs() / expected.abs();
            assert!(relative < 1e-15, "{text}: {}", decimal_to_f64(d));
        }
    }
}
