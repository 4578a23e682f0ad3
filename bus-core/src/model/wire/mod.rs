//! The wire codecs: the documented JSON format (the envelope's own
//! `to_json`/`from_json`), the compact [`binary`] layout between Bistoury
//! processes, and the MessagePack reader the binary layout's payloads use.

pub mod binary;
mod json;
mod json_fast;
mod market;
pub(crate) mod msgpack;

use crate::model::Envelope;

/// How payload decimals are written: as text in human-readable formats
/// (JSON: `"65123.45"`, exact), as their 16-byte binary form (flags, then
/// the 96-bit mantissa, little-endian; what `Decimal::serialize` gives) in
/// the binary codec, where formatting and parsing text dominated the cost.
pub(crate) mod decimal {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            // rust_decimal's text, written without its general machinery.
            let mut buffer = [0; crate::model::DECIMAL_TEXT];
            s.serialize_str(crate::model::write_decimal(*value, &mut buffer))
        } else {
            s.serialize_bytes(&value.serialize())
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        if d.is_human_readable() {
            return d.deserialize_any(Text);
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

    /// What rust_decimal's own visitor accepts, with the same results
    /// and errors (text as `Decimal::from_str`, else scientific notation;
    /// integers; floats through their text), plain numbers in text read
    /// by [`crate::model::parse_decimal`].
    struct Text;

    impl serde::de::Visitor<'_> for Text {
        type Value = Decimal;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a Decimal type representing a fixed-point number")
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(value))
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(value))
        }
        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Decimal, E> {
            <Decimal as std::str::FromStr>::from_str(&value.to_string())
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Float(value), &self))
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Decimal, E> {
            crate::model::parse_decimal(value)
                .or_else(|| Decimal::from_scientific(value).ok())
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(value), &self))
        }
    }

    /// The decimal in `bytes`, if they are a well-formed 16-byte decimal
    /// (scale at most 28, no stray flag bits).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Decimal> {
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

        /// In JSON, what rust_decimal's own serde reads, read alike, and
        /// what it refuses refused with its words.
        #[test]
        fn json_text_reads_as_rust_decimal_reads_it() {
            #[derive(serde::Deserialize)]
            struct Ours(#[serde(deserialize_with = "deserialize")] Decimal);
            for json in [
                "\"65123.45\"",
                "\"-0\"",
                "\"007.50\"",
                "\"1e5\"",
                "\"1.5E-3\"",
                "\".5\"",
                "\"abc\"",
                "\"\"",
                "\"1,5\"",
                "12",
                "-12",
                "18446744073709551615",
                "1.25",
                "1e400",
                "true",
                "null",
                "[1]",
                "{\"a\":1}",
                "\"79228162514264337593543950335\"",
                "\"79228162514264337593543950336\"",
            ] {
                let ours = serde_json::from_str::<Ours>(json).map(|d| d.0);
                let theirs = serde_json::from_str::<Decimal>(json);
                match (&ours, &theirs) {
                    (Ok(a), Ok(b)) => assert_eq!(
                        (a, a.scale(), a.is_sign_negative()),
                        (b, b.scale(), b.is_sign_negative()),
                        "{json}"
                    ),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{json}"),
                    _ => panic!("{json}: {ours:?} vs {theirs:?}"),
                }
            }
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
