//! Fast paths of the JSON wire format, for the envelopes Bistoury writes:
//! the envelope's fields written and read by hand, and the payloads of
//! market data (candles and price updates: most of the traffic); other
//! payloads through serde.
//!
//! Writing gives the same bytes as serde (names and enums are written as
//! serde names them; a string that needs escaping goes through
//! `serde_json`). Reading takes exactly the layout writing gives (fields
//! in its order, no spaces, no escapes in the envelope's strings, empty
//! headers and tags, integers as plain digits) and gives up on anything
//! else (`None`), as another language's JSON may be: the caller then decodes with
//! serde, which accepts what it accepts and names the failing field. So
//! what decodes, and how, is serde's; only the cost changes (serde's
//! escape scanning and visitor machinery were most of a message's cost
//! over NATS).

use crate::model::delivery::{DeliveryMode, Priority};
use crate::model::envelope::Envelope;
use crate::model::headers::Headers;
use crate::model::ids::MessageId;
use crate::model::intern;
use crate::model::kind::{MessageType, Payload};

/// Appends `envelope` as JSON, the bytes serde writes for it.
pub(super) fn write(envelope: &Envelope, out: &mut Vec<u8>) {
    out.reserve(512);
    out.extend_from_slice(b"{\"id\":");
    uuid(out, envelope.id);
    out.extend_from_slice(b",\"type\":");
    string(out, envelope.message_type().as_str());
    out.extend_from_slice(b",\"topic\":");
    string(out, envelope.topic.as_str());
    out.extend_from_slice(b",\"sender\":");
    string(out, envelope.sender.as_str());
    out.extend_from_slice(b",\"recipient\":");
    match &envelope.recipient {
        Some(recipient) => string(out, recipient.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"correlation_id\":");
    match envelope.correlation_id {
        Some(id) => uuid(out, id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"reply_to\":");
    match &envelope.reply_to {
        Some(topic) => string(out, topic.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"priority\":");
    string(out, priority_name(envelope.priority));
    out.extend_from_slice(b",\"delivery_mode\":");
    string(out, delivery_mode_name(envelope.delivery_mode));
    out.extend_from_slice(b",\"created_at_ms\":");
    integer(out, envelope.created_at_ms);
    out.extend_from_slice(b",\"expires_at_ms\":");
    match envelope.expires_at_ms {
        Some(at) => integer(out, at),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attempt\":");
    integer(out, envelope.attempt.into());
    out.extend_from_slice(b",\"max_attempts\":");
    integer(out, envelope.max_attempts.into());
    out.extend_from_slice(b",\"headers\":");
    match envelope.headers.is_empty() {
        true => out.extend_from_slice(b"{}"),
        false => serde(out, &envelope.headers),
    }
    out.extend_from_slice(b",\"tags\":");
    match envelope.tags.is_empty() {
        true => out.extend_from_slice(b"[]"),
        false => serde(out, &envelope.tags),
    }
    out.extend_from_slice(b",\"payload\":");
    match &envelope.payload {
        Payload::DataCandle(candle) => {
            out.extend_from_slice(b"{\"symbol\":");
            string(out, candle.symbol.as_str());
            out.extend_from_slice(b",\"interval\":");
            string(out, &candle.interval);
            out.extend_from_slice(b",\"open_time_ms\":");
            integer(out, candle.open_time_ms);
            out.extend_from_slice(b",\"open\":");
            decimal(out, candle.open);
            out.extend_from_slice(b",\"high\":");
            decimal(out, candle.high);
            out.extend_from_slice(b",\"low\":");
            decimal(out, candle.low);
            out.extend_from_slice(b",\"close\":");
            decimal(out, candle.close);
            out.extend_from_slice(b",\"volume\":");
            decimal(out, candle.volume);
            out.push(b'}');
        }
        Payload::DataPriceUpdate(update) => {
            out.extend_from_slice(b"{\"symbol\":");
            string(out, update.symbol.as_str());
            out.extend_from_slice(b",\"price\":");
            decimal(out, update.price);
            out.extend_from_slice(b",\"timestamp_ms\":");
            integer(out, update.timestamp_ms);
            out.push(b'}');
        }
        payload => serde(out, payload),
    }
    out.push(b'}');
}

/// A payload decimal as serde writes it: its text, quoted.
fn decimal(out: &mut Vec<u8>, value: rust_decimal::Decimal) {
    let mut buffer = [0; crate::model::DECIMAL_TEXT];
    out.push(b'"');
    out.extend_from_slice(crate::model::write_decimal(value, &mut buffer).as_bytes());
    out.push(b'"');
}

fn serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("envelopes always serialize");
}

/// `text` as a JSON string: as it is when nothing in it needs escaping
/// (the envelope's names never do), else as serde escapes it.
fn string(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde(out, text);
    }
}

/// Whether `bytes` hold a control character, `"` or `\\` (what JSON
/// escapes), eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is below `n` (n <= 128) where this sets its high bit.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1) != 0 {
            return true;
        }
    }
    (chunks.remainder().iter()).any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn uuid(out: &mut Vec<u8>, id: MessageId) {
    let mut buffer = uuid::Uuid::encode_buffer();
    out.push(b'"');
    out.extend_from_slice(
        id.as_uuid()
            .hyphenated()
            .encode_lower(&mut buffer)
            .as_bytes(),
    );
    out.push(b'"');
}

/// Every integer an envelope writes is an `i64` or narrower: worked in
/// 64 bits (128-bit division by ten costs a call per digit).
fn integer(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    out.extend_from_slice(&digits[at..]);
}

fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Low => "low",
        Priority::Normal => "normal",
        Priority::High => "high",
        Priority::Critical => "critical",
    }
}

fn delivery_mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::FireAndForget => "fire_and_forget",
        DeliveryMode::AtLeastOnce => "at_least_once",
        DeliveryMode::ExactlyOnce => "exactly_once",
    }
}

/// `json` as an envelope when it is laid out as [`write`] lays it out
/// (fields in that order, no spaces, no escapes in the envelope's
/// strings, no headers or tags) and valid; `None` for anything else
/// (serde decides then).
pub(super) fn read(json: &[u8]) -> Option<Envelope> {
    let text = std::str::from_utf8(json).ok()?;
    let mut r = Reader { text, at: 0 };
    r.literal(b"{\"id\":")?;
    let id = r.message_id()?;
    r.literal(b",\"type\":")?;
    let message_type = MessageType::from_wire_name(r.string()?.as_bytes())?;
    r.literal(b",\"topic\":")?;
    let topic = intern::topic(r.string()?).ok()?;
    r.literal(b",\"sender\":")?;
    let sender = intern::agent(r.string()?);
    r.literal(b",\"recipient\":")?;
    let recipient = r.nullable(|r| Some(intern::agent(r.string()?)))?;
    r.literal(b",\"correlation_id\":")?;
    let correlation_id = r.nullable(Reader::message_id)?;
    r.literal(b",\"reply_to\":")?;
    let reply_to = r.nullable(|r| intern::topic(r.string()?).ok())?;
    r.literal(b",\"priority\":")?;
    let priority = match r.string()? {
        "low" => Priority::Low,
        "normal" => Priority::Normal,
        "high" => Priority::High,
        "critical" => Priority::Critical,
        _ => return None,
    };
    r.literal(b",\"delivery_mode\":")?;
    let delivery_mode = match r.string()? {
        "fire_and_forget" => DeliveryMode::FireAndForget,
        "at_least_once" => DeliveryMode::AtLeastOnce,
        "exactly_once" => DeliveryMode::ExactlyOnce,
        _ => return None,
    };
    r.literal(b",\"created_at_ms\":")?;
    let created_at_ms = i64::try_from(r.integer()?).ok()?;
    r.literal(b",\"expires_at_ms\":")?;
    let expires_at_ms = r.nullable(|r| i64::try_from(r.integer()?).ok())?;
    r.literal(b",\"attempt\":")?;
    let attempt = u32::try_from(r.integer()?).ok()?;
    r.literal(b",\"max_attempts\":")?;
    let max_attempts = u32::try_from(r.integer()?).ok()?;
    r.literal(b",\"headers\":{},\"tags\":[],\"payload\":")?;
    if !text.ends_with('}') {
        return None;
    }
    let start = r.at;
    let payload = match super::market::read(&mut r, message_type) {
        // Read by hand, and nothing but the envelope's brace after it.
        Some(payload) if r.at == text.len() - 1 => payload,
        _ => {
            // The payload runs to the envelope's closing brace; serde
            // reads it and refuses anything left over.
            let payload = text.get(start..text.len() - 1)?;
            let mut de = serde_json::Deserializer::from_str(payload);
            let payload = Payload::deserialize_as(message_type, &mut de).ok()?;
            de.end().ok()?;
            payload
        }
    };
    Some(Envelope {
        id,
        correlation_id,
        reply_to,
        sender,
        recipient,
        topic,
        priority,
        delivery_mode,
        created_at_ms,
        expires_at_ms,
        attempt,
        max_attempts,
        headers: Headers::default(),
        tags: Vec::new(),
        payload,
    })
}

/// Where the first quote, backslash or control character is in `bytes`
/// from `at` on. Eight bytes a step (each byte compared at once; the
/// lowest flag of each test is exact, a carry only flags bytes after a
/// true one): strings are most of an envelope's bytes.
fn first_special(bytes: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let flags = zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    let found = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(at + found)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn literal(&mut self, wanted: &[u8]) -> Option<()> {
        let end = self.at + wanted.len();
        if self.bytes().get(self.at..end)? != wanted {
            return None;
        }
        self.at = end;
        Some(())
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        let bytes = self.bytes();
        if bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let at = first_special(bytes, start)?;
        if bytes[at] != b'"' {
            return None;
        }
        self.at = at + 1;
        self.text.get(start..at)
    }

    /// A decimal in a string, as plain digits (what [`write`] writes;
    /// anything else, such as scientific notation, is serde's).
    fn decimal(&mut self) -> Option<rust_decimal::Decimal> {
        crate::model::parse_decimal(self.string()?)
    }

    fn message_id(&mut self) -> Option<MessageId> {
        let id = uuid::Uuid::try_parse(self.string()?).ok()?;
        Some(MessageId::from_u128(id.as_u128()))
    }

    /// `null` as `Some(None)`, else what `read` makes of the value.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.bytes().get(self.at) == Some(&b'n') {
            self.literal(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// An integer in plain digits (`-` allowed; no leading zero, fraction
    /// or exponent).
    fn integer(&mut self) -> Option<i128> {
        let bytes = self.bytes();
        let mut at = self.at;
        let negative = bytes.get(at) == Some(&b'-');
        if negative {
            at += 1;
        }
        let start = at;
        let mut value: u64 = 0;
        while let Some(&b) = bytes.get(at) {
            if !b.is_ascii_digit() {
                break;
            }
            // Past u64 no field fits: serde then says so.
            value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            at += 1;
        }
        let digits = at - start;
        if digits == 0 || digits > 20 || (digits > 1 && bytes[start] == b'0') {
            return None;
        }
        if matches!(bytes.get(at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at = at;
        let value = i128::from(value);
        Some(if negative { -value } else { value })
    }
}

/// The JSON of a candle or a price update as [`write`] lays it out:
/// `{"name":value,...}`, decimals as plain digits in strings.
impl<'a> super::market::FieldReader<'a> for Reader<'a> {
    #[inline(always)]
    fn read_start(&mut self, _fields: usize) -> Option<()> {
        self.literal(b"{")
    }

    #[inline(always)]
    fn read_name(&mut self, name: &str, first: bool) -> Option<()> {
        if !first {
            self.literal(b",")?;
        }
        self.literal(b"\"")?;
        self.literal(name.as_bytes())?;
        self.literal(b"\":")
    }

    #[inline(always)]
    fn read_text(&mut self) -> Option<&'a str> {
        self.string()
    }

    #[inline(always)]
    fn read_integer(&mut self) -> Option<i64> {
        i64::try_from(self.integer()?).ok()
    }

    #[inline(always)]
    fn read_decimal(&mut self) -> Option<rust_decimal::Decimal> {
        self.decimal()
    }

    #[inline(always)]
    fn read_end(&mut self) -> Option<()> {
        self.literal(b"}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::AgentId;
    use crate::model::payload::{Candle, CandleFields, PriceUpdate, PriceUpdateFields, Symbol};
    use crate::model::topic::Topic;
    use rust_decimal::Decimal;

    fn price_update() -> Envelope {
        let update = PriceUpdate::new(PriceUpdateFields {
            symbol: Symbol::new("BTC").unwrap(),
            price: Decimal::new(6_512_345, 2),
            timestamp_ms: 7,
        })
        .unwrap();
        Envelope::new(
            AgentId::new("collector"),
            Topic::new("data.price_update.BTC").unwrap(),
            Payload::DataPriceUpdate(update),
        )
    }

    #[test]
    fn what_write_lays_out_is_read_here() {
        let envelope = price_update();
        let json = envelope.to_json_bytes();
        assert_eq!(
            json,
            serde_json::to_vec(&envelope).unwrap(),
            "serde's bytes"
        );
        assert_eq!(read(&json), Some(envelope.clone()));
        let full = envelope
            .with_recipient(AgentId::new("risk"))
            .with_correlation_id(MessageId::new())
            .with_reply_to(Topic::new("answers").unwrap())
            .with_ttl(std::time::Duration::from_secs(5))
            .with_priority(Priority::High)
            .with_delivery_mode(DeliveryMode::AtLeastOnce);
        assert_eq!(read(&full.to_json_bytes()), Some(full));
    }

    #[test]
    fn market_data_payloads_are_read_by_hand() {
        let price = Decimal::new(6_512_345, 2);
        let candle = Candle::new(CandleFields {
            symbol: Symbol::new("ETH").unwrap(),
            interval: "1m".into(),
            open_time_ms: -5,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Decimal::ZERO,
        })
        .unwrap();
        let candle = Envelope::new(
            AgentId::new("collector"),
            Topic::new("data.candle.ETH.1m").unwrap(),
            Payload::DataCandle(candle),
        );
        for envelope in [price_update(), candle] {
            let json = envelope.to_json_bytes();
            let text = std::str::from_utf8(&json).unwrap();
            let at = text.find("\"payload\":").unwrap() + "\"payload\":".len();
            let mut r = Reader { text, at };
            let payload = super::super::market::read(&mut r, envelope.message_type());
            assert_eq!(payload.as_ref(), Some(&envelope.payload));
            assert_eq!(r.at, text.len() - 1, "up to the envelope's brace");
        }
    }

    /// The eight-at-a-time scan finds what a byte-by-byte scan finds,
    /// whatever the bytes around, wherever it starts.
    #[test]
    fn special_bytes_are_found_as_one_at_a_time_finds_them() {
        let naive = |bytes: &[u8], at: usize| {
            (at..bytes.len()).find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
        };
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Mostly plain bytes, each special one now and then, and bytes
        // next to them in value (0x1f/0x20, 0x21/0x23, 0x5b/0x5d, 0x80+).
        let near = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff, 0x01,
        ];
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    0 => near[(next() % near.len() as u64) as usize],
                    _ => b'a' + (next() % 26) as u8,
                })
                .collect();
            for at in 0..=len {
                assert_eq!(
                    first_special(&bytes, at),
                    naive(&bytes, at),
                    "{bytes:?} from {at}"
                );
            }
        }
    }

    #[test]
    fn escapes_are_found_wherever_they_are() {
        for len in 0..20 {
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{bytes:?}");
                }
                for plain in [0x20u8, b'!', b'#', 0x5b, 0x5d, 0x7f, 0x80, 0xff] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = plain;
                    assert!(!needs_escape(&bytes), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let json = String::from_utf8(price_update().to_json_bytes()).unwrap();
        let variants = [
            json.replace("\"sender\"", "\"send\\u0065r\""),
            json.replace(
                "\"created_at_ms\":",
                "\"created_at_ms\":1,\"created_at_ms\":",
            ),
            json.replace("\"attempt\":0", "\"attempt\":0.0"),
            json.replace("\"attempt\":0", "\"attempt\":00"),
            json.replace("\"attempt\":0", "\"attempt\":-1"),
            json.replace("\"headers\":{}", "\"headers\":{\"a\":\"b\"}"),
            json.replace("\"tags\":[]", "\"tags\":[\"x\"]"),
            json.replace("\"tags\":[]", "\"tags\":[],\"extra\":1"),
            json.replace("\"priority\":\"normal\"", "\"priority\":\"urgent\""),
            format!("{json}x"),
            json[..json.len() - 1].to_string(),
            json.replace("\"type\"", " \"type\""),
            json.replace(",\"attempt\":0", ""),
            "{}".to_string(),
            "[]".to_string(),
        ];
        for text in variants {
            assert_eq!(read(text.as_bytes()), None, "{text}");
        }
    }
}
