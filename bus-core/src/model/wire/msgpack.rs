//! A lean MessagePack reader for the binary codec's payloads, tried before
//! `rmp_serde` (which stays the reference: whatever this reader refuses,
//! `rmp_serde` reads again, and explains when it refuses too).
//!
//! It reads what `rmp_serde::encode::write_named` writes, from a borrowed
//! slice: structs as maps keyed by field name, unit variants as their name,
//! other variants as a one-entry map `{name: value}`, `None` as nil. Field
//! and variant names are matched as bytes (no UTF-8 check: a name that is
//! not one of the type's own is ignored or refused either way), and a
//! failure carries no message (the fallback explains it), so refusing
//! costs nothing. Anything else (extension types, nesting deeper than
//! [`MAX_DEPTH`]) is refused and left to `rmp_serde`.

use serde::de::{self, DeserializeSeed, Visitor};

use crate::model::kind::{MessageType, Payload};

/// Nested arrays and maps this reader follows (payloads nest a few levels;
/// deeper input goes to the reference decoder, which has its own limit).
pub(crate) const MAX_DEPTH: u32 = 32;

/// Why this reader gave up; deliberately empty (see the module docs).
#[derive(Debug)]
pub(crate) struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused by the fast MessagePack reader")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Refused
    }
}

type Result<T> = std::result::Result<T, Refused>;

/// Reads MessagePack values from a slice.
pub(crate) struct Deserializer<'de> {
    bytes: &'de [u8],
    at: usize,
    depth: u32,
}

impl<'de> Deserializer<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            depth: 0,
        }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Result<u8> {
        self.bytes.get(self.at).copied().ok_or(Refused)
    }

    fn byte(&mut self) -> Result<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        let end = self.at.checked_add(n).ok_or(Refused)?;
        let taken = self.bytes.get(self.at..end).ok_or(Refused)?;
        self.at = end;
        Ok(taken)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// A length of 1, 2 or 4 big-endian bytes.
    fn length(&mut self, size: u8) -> Result<usize> {
        Ok(match size {
            1 => usize::from(self.byte()?),
            2 => usize::from(u16::from_be_bytes(self.fixed()?)),
            _ => u32::from_be_bytes(self.fixed()?) as usize,
        })
    }

    /// The length of a string at the cursor (its marker consumed), if it
    /// is one.
    fn str_length(&mut self, marker: u8) -> Result<Option<usize>> {
        Ok(Some(match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.length(1)?,
            0xda => self.length(2)?,
            0xdb => self.length(4)?,
            _ => return Ok(None),
        }))
    }

    /// The entry count of a map at the cursor (its marker consumed), if it
    /// is one.
    fn map_length(&mut self, marker: u8) -> Result<Option<usize>> {
        Ok(Some(match marker {
            0x80..=0x8f => usize::from(marker & 0x0f),
            0xde => self.length(2)?,
            0xdf => self.length(4)?,
            _ => return Ok(None),
        }))
    }

    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(Refused);
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    /// Reads past one value.
    fn skip(&mut self) -> Result<()> {
        let marker = self.byte()?;
        if let Some(len) = self.str_length(marker)? {
            return self.take(len).map(drop);
        }
        if let Some(len) = self.map_length(marker)? {
            return self.nested(|de| (0..len * 2).try_for_each(|_| de.skip()));
        }
        let fixed = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 | 0xca => 4,
            0xcf | 0xd3 | 0xcb => 8,
            0xc4 => self.length(1)?,
            0xc5 => self.length(2)?,
            0xc6 => self.length(4)?,
            0x90..=0x9f | 0xdc | 0xdd => {
                let len = match marker {
                    0xdc => self.length(2)?,
                    0xdd => self.length(4)?,
                    _ => usize::from(marker & 0x0f),
                };
                return self.nested(|de| (0..len).try_for_each(|_| de.skip()));
            }
            _ => return Err(Refused),
        };
        self.take(fixed).map(drop)
    }
}

/// A candle's or a price update's payload laid out exactly as the binary
/// codec writes it (`rmp_serde::encode::write_named`: a map of the
/// fields in declaration order, decimals as 16-byte bin), valid, and
/// nothing after it; `None` for anything else and for other types, which
/// then go through serde. Market data is most of the traffic, and serde's
/// visitors were most of the cost of reading it.
pub(crate) fn market_data(message_type: MessageType, bytes: &[u8]) -> Option<Payload> {
    let mut de = Deserializer::new(bytes);
    let payload = super::market::read(&mut de, message_type)?;
    de.is_done().then_some(payload)
}

/// The pieces [`market_data`] reads, each `None` unless the bytes at the
/// cursor are one.
impl<'de> super::market::FieldReader<'de> for Deserializer<'de> {
    /// A map of `fields` entries.
    #[inline(always)]
    fn read_start(&mut self, fields: usize) -> Option<()> {
        let marker = self.byte().ok()?;
        (self.map_length(marker).ok()?? == fields).then_some(())
    }

    /// A string: the key `name`.
    #[inline(always)]
    fn read_name(&mut self, name: &str, _first: bool) -> Option<()> {
        let marker = self.byte().ok()?;
        let len = self.str_length(marker).ok()??;
        (self.take(len).ok()? == name.as_bytes()).then_some(())
    }

    /// A UTF-8 string.
    #[inline(always)]
    fn read_text(&mut self) -> Option<&'de str> {
        let marker = self.byte().ok()?;
        let len = self.str_length(marker).ok()??;
        std::str::from_utf8(self.take(len).ok()?).ok()
    }

    /// An integer of any width that fits an `i64`.
    #[inline(always)]
    fn read_integer(&mut self) -> Option<i64> {
        let marker = self.byte().ok()?;
        match marker {
            0x00..=0x7f => Some(i64::from(marker)),
            0xe0..=0xff => Some(i64::from(marker as i8)),
            0xcc => Some(i64::from(self.byte().ok()?)),
            0xcd => Some(i64::from(u16::from_be_bytes(self.fixed().ok()?))),
            0xce => Some(i64::from(u32::from_be_bytes(self.fixed().ok()?))),
            0xcf => i64::try_from(u64::from_be_bytes(self.fixed().ok()?)).ok(),
            0xd0 => Some(i64::from(self.byte().ok()? as i8)),
            0xd1 => Some(i64::from(i16::from_be_bytes(self.fixed().ok()?))),
            0xd2 => Some(i64::from(i32::from_be_bytes(self.fixed().ok()?))),
            0xd3 => Some(i64::from_be_bytes(self.fixed().ok()?)),
            _ => None,
        }
    }

    /// A decimal as the codec writes it: bin 8 of 16 bytes.
    #[inline(always)]
    fn read_decimal(&mut self) -> Option<rust_decimal::Decimal> {
        if self.fixed::<2>().ok()? != [0xc4, 16] {
            return None;
        }
        crate::model::wire::decimal::from_bytes(self.take(16).ok()?)
    }

    /// Nothing: a map's end is its count.
    #[inline(always)]
    fn read_end(&mut self) -> Option<()> {
        Some(())
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let marker = self.byte()?;
        if let Some(len) = self.str_length(marker)? {
            let text = std::str::from_utf8(self.take(len)?).map_err(|_| Refused)?;
            return visitor.visit_borrowed_str(text);
        }
        if let Some(len) = self.map_length(marker)? {
            return self.nested(|de| visitor.visit_map(Items { de, left: len }));
        }
        match marker {
            0x00..=0x7f => visitor.visit_u64(u64::from(marker)),
            0xe0..=0xff => visitor.visit_i64(i64::from(marker as i8)),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xcc => visitor.visit_u64(u64::from(self.byte()?)),
            0xcd => visitor.visit_u64(u64::from(u16::from_be_bytes(self.fixed()?))),
            0xce => visitor.visit_u64(u64::from(u32::from_be_bytes(self.fixed()?))),
            0xcf => visitor.visit_u64(u64::from_be_bytes(self.fixed()?)),
            0xd0 => visitor.visit_i64(i64::from(self.byte()? as i8)),
            0xd1 => visitor.visit_i64(i64::from(i16::from_be_bytes(self.fixed()?))),
            0xd2 => visitor.visit_i64(i64::from(i32::from_be_bytes(self.fixed()?))),
            0xd3 => visitor.visit_i64(i64::from_be_bytes(self.fixed()?)),
            0xca => visitor.visit_f32(f32::from_be_bytes(self.fixed()?)),
            0xcb => visitor.visit_f64(f64::from_be_bytes(self.fixed()?)),
            0xc4..=0xc6 => {
                let len = self.length(1 << (marker - 0xc4))?;
                visitor.visit_borrowed_bytes(self.take(len)?)
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let len = match marker {
                    0xdc => self.length(2)?,
                    0xdd => self.length(4)?,
                    _ => usize::from(marker & 0x0f),
                };
                self.nested(|de| visitor.visit_seq(Items { de, left: len }))
            }
            _ => Err(Refused),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == 0xc0 {
            self.at += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let marker = self.peek()?;
        if (0xa0..=0xbf).contains(&marker) || (0xd9..=0xdb).contains(&marker) {
            return visitor.visit_enum(Variant {
                de: self,
                unit: true,
            });
        }
        self.at += 1;
        match self.map_length(marker)? {
            Some(1) => self.nested(|de| visitor.visit_enum(Variant { de, unit: false })),
            _ => Err(Refused),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let marker = self.byte()?;
        match self.str_length(marker)? {
            Some(len) => visitor.visit_borrowed_bytes(self.take(len)?),
            None => {
                self.at -= 1;
                self.deserialize_any(visitor)
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

/// What is left of an array (its elements) or of a map (its entries:
/// `left` counts keys, each followed by its value).
struct Items<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> Items<'_, 'de> {
    /// The next element or key, if any is left.
    fn next_item<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        self.next_item(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        self.next_item(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An enum's variant: its name alone (`unit`), or the name of a one-entry
/// map followed by the variant's content.
struct Variant<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    unit: bool,
}

impl<'de> de::EnumAccess<'de> for Variant<'_, 'de> {
    type Error = Refused;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self)> {
        // The variant's name is an identifier (read as bytes), as
        // `rmp_serde` reads it.
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Refused;

    fn unit_variant(self) -> Result<()> {
        if self.unit {
            return Ok(());
        }
        // `{name: nil}`
        match self.de.byte()? {
            0xc0 => Ok(()),
            _ => Err(Refused),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        if self.unit {
            return Err(Refused);
        }
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        if self.unit {
            return Err(Refused);
        }
        de::Deserializer::deserialize_seq(&mut *self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if self.unit {
            return Err(Refused);
        }
        de::Deserializer::deserialize_map(&mut *self.de, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::payload::{Candle, CandleFields, PriceUpdate, PriceUpdateFields};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Side {
        Buy,
        Sell,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(i32),
        Tuple(u8, String),
        Struct { x: f64, y: Option<bool> },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Inner {
        name: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        small: u8,
        negative: i64,
        wide: u64,
        ratio: f64,
        single: f32,
        flag: bool,
        side: Side,
        shapes: Vec<Shape>,
        inner: Inner,
        maybe: Option<Inner>,
        text: String,
        #[serde(with = "serde_bytes_like")]
        raw: Vec<u8>,
        table: BTreeMap<String, i32>,
        #[serde(with = "crate::model::wire::decimal")]
        price: rust_decimal::Decimal,
    }

    /// Bytes as MessagePack bin (as the decimal adapter writes them).
    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, b: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(b.to_vec())
                }
            }
            d.deserialize_bytes(V)
        }
    }

    fn sample(i: i64) -> Sample {
        Sample {
            small: (i & 0x7f) as u8,
            negative: -i * 1_000_003,
            wide: u64::MAX - i as u64,
            ratio: i as f64 / 7.0,
            single: 1.5,
            flag: i % 2 == 0,
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(-(i as i32)),
                Shape::Tuple(3, "t".repeat((i % 40) as usize)),
                Shape::Struct {
                    x: 0.25,
                    y: Some(true),
                },
                Shape::Struct { x: -1.0, y: None },
            ],
            inner: Inner {
                name: "BTC".into(),
                note: None,
            },
            maybe: (i % 3 == 0).then(|| Inner {
                name: "é".repeat((i % 20) as usize).into(),
                note: Some("n".repeat((i % 300) as usize)),
            }),
            text: "x".repeat((i % 70_000) as usize),
            raw: vec![7; (i % 300) as usize],
            table: (0..(i % 20)).map(|k| (format!("k{k}"), k as i32)).collect(),
            price: rust_decimal::Decimal::new(6_512_345 * i, (i % 29) as u32),
        }
    }

    fn fast<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
        let mut de = Deserializer::new(bytes);
        let value = T::deserialize(&mut de)?;
        if de.is_done() {
            Ok(value)
        } else {
            Err(Refused)
        }
    }

    #[test]
    fn reads_what_rmp_serde_writes() {
        for i in [0, 1, 2, 3, 5, 17, 128, 255, 256, 65_535, 65_536, 70_001] {
            let value = sample(i);
            let bytes = rmp_serde::to_vec_named(&value).unwrap();
            assert_eq!(fast::<Sample>(&bytes).unwrap(), value, "sample {i}");
        }
    }

    #[test]
    fn refuses_extensions_trailing_bytes_and_deep_nesting() {
        let bytes = rmp_serde::to_vec_named(&sample(1)).unwrap();
        let mut longer = bytes.clone();
        longer.push(0xc0);
        assert!(fast::<Sample>(&longer).is_err());
        assert!(fast::<Sample>(&bytes[..bytes.len() - 1]).is_err());
        // fixext 1
        assert!(fast::<serde::de::IgnoredAny>(&[0xd4, 1, 0]).is_err());
        let mut deep = vec![0x91; MAX_DEPTH as usize + 1];
        deep.push(0xc0);
        assert!(fast::<serde::de::IgnoredAny>(&deep).is_err());
        let mut shallow = vec![0x91; MAX_DEPTH as usize];
        shallow.push(0xc0);
        assert!(fast::<serde::de::IgnoredAny>(&shallow).is_ok());
    }

    /// `rmp_serde`'s reading of a payload of `message_type` that must end
    /// the bytes: the reference for [`market_data`].
    fn by_rmp_serde(message_type: MessageType, bytes: &[u8]) -> Option<Payload> {
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        let payload = Payload::deserialize_as(message_type, &mut de).ok()?;
        match serde::de::IgnoredAny::deserialize(&mut de) {
            Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Some(payload)
            }
            _ => None,
        }
    }

    /// Candles and price updates with values of every shape, as the binary
    /// codec writes them: read by hand exactly (scales too), and wherever
    /// a mangled copy is read by hand, `rmp_serde` reads the same.
    #[test]
    fn market_data_is_read_as_rmp_serde_reads_it() {
        use crate::model::payload::Symbol;
        use rust_decimal::Decimal;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // A positive decimal of any scale and size (some huge, some tiny).
        let price = |next: &mut dyn FnMut() -> u64| {
            let bits = next() % 97;
            let mantissa = ((next() as u128) << 64 | next() as u128) >> (128 - bits.max(1));
            Decimal::from_i128_with_scale(mantissa.max(1) as i128, (next() % 29) as u32)
        };
        let symbols = ["BTC", "ETH-USD", "a_b/c", "Z9"];
        let intervals = ["1m", "1h", "4h \"q\" é\u{1}", "x"];
        let encode = |payload: &Payload| rmp_serde::to_vec_named(payload).unwrap();
        let (mut read_by_hand, mut left_to_serde) = (0, 0);
        for i in 0..600 {
            let symbol = Symbol::new(symbols[i % symbols.len()]).unwrap();
            let mut values: Vec<Decimal> = (0..4).map(|_| price(&mut next)).collect();
            values.sort();
            let volume = match i % 5 {
                0 => Decimal::ZERO,
                _ => price(&mut next),
            };
            let time = (next() as i64) >> (next() % 64);
            let payload = match i % 2 {
                0 => Payload::DataCandle(
                    Candle::new(CandleFields {
                        symbol,
                        interval: intervals[i % intervals.len()].into(),
                        open_time_ms: time,
                        open: values[1],
                        high: values[3],
                        low: values[0],
                        close: values[2],
                        volume,
                    })
                    .unwrap(),
                ),
                _ => Payload::DataPriceUpdate(
                    PriceUpdate::new(PriceUpdateFields {
                        symbol,
                        price: values[0],
                        timestamp_ms: time,
                    })
                    .unwrap(),
                ),
            };
            let message_type = payload.message_type();
            let bytes = encode(&payload);
            let read = market_data(message_type, &bytes).expect("read by hand");
            assert_eq!(encode(&read), bytes, "{payload:?}");
            for _ in 0..50 {
                let mut mangled = bytes.clone();
                let at = next() as usize % mangled.len();
                match next() % 3 {
                    0 => mangled[at] = next() as u8,
                    1 => {
                        mangled.remove(at);
                    }
                    _ => mangled.insert(at, next() as u8),
                }
                match market_data(message_type, &mangled) {
                    Some(ours) => {
                        read_by_hand += 1;
                        let theirs = by_rmp_serde(message_type, &mangled);
                        assert_eq!(
                            theirs.map(|p| encode(&p)),
                            Some(encode(&ours)),
                            "{mangled:?}"
                        );
                    }
                    None => left_to_serde += 1,
                }
            }
        }
        assert!(
            read_by_hand > 1_000 && left_to_serde > 1_000,
            "{read_by_hand} {left_to_serde}"
        );
    }

    proptest::proptest! {
        /// On any input, where this reader accepts, `rmp_serde` accepts
        /// and reads the same value.
        #[test]
        fn agrees_with_rmp_serde_wherever_it_accepts(
            i in 0i64..100_000,
            at in 0usize..4096,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..4096,
        ) {
            let mut bytes = rmp_serde::to_vec_named(&sample(i)).unwrap();
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = byte;
                bytes.truncate(bytes.len() - cut % bytes.len().clamp(1, 8));
            }
            if let Ok(ours) = fast::<Sample>(&bytes) {
                let mut de = rmp_serde::Deserializer::from_read_ref(&bytes);
                let theirs = Sample::deserialize(&mut de);
                proptest::prop_assert_eq!(theirs.ok(), Some(ours));
            }
        }
    }
}
