//! The payloads of market data (candles and price updates: most of the
//! traffic) read field by field, in the order Bistoury writes them, by
//! either codec's reader. Anything else (another order, other types) is
//! `None` here and left to serde, which decides what decodes; only the
//! cost changes.

use rust_decimal::Decimal;

use crate::model::intern;
use crate::model::kind::{MessageType, Payload};
use crate::model::payload::{Candle, CandleFields, PriceUpdate, PriceUpdateFields};

/// A codec's reader of a payload laid out as its writer lays it out: each
/// step `None` unless the bytes at the cursor are what it reads.
pub(super) trait FieldReader<'a> {
    /// The payload's start: a map (an object) of `fields` fields.
    fn read_start(&mut self, fields: usize) -> Option<()>;
    /// The next field's name (`first`: nothing separates it from the start).
    fn read_name(&mut self, name: &str, first: bool) -> Option<()>;
    /// A string value.
    fn read_text(&mut self) -> Option<&'a str>;
    /// An integer value that fits an `i64`.
    fn read_integer(&mut self) -> Option<i64>;
    /// A decimal value, in the codec's form.
    fn read_decimal(&mut self) -> Option<Decimal>;
    /// The payload's end.
    fn read_end(&mut self) -> Option<()>;
}

/// A candle's or a price update's payload, valid; `None` for anything
/// else and for other types.
#[inline(always)]
pub(super) fn read<'a>(r: &mut impl FieldReader<'a>, message_type: MessageType) -> Option<Payload> {
    let payload = match message_type {
        MessageType::DataCandle => {
            r.read_start(8)?;
            r.read_name("symbol", true)?;
            let symbol = intern::symbol(r.read_text()?).ok()?;
            r.read_name("interval", false)?;
            let interval = std::sync::Arc::from(r.read_text()?);
            r.read_name("open_time_ms", false)?;
            let open_time_ms = r.read_integer()?;
            let fields = CandleFields {
                symbol,
                interval,
                open_time_ms,
                open: decimal(r, "open")?,
                high: decimal(r, "high")?,
                low: decimal(r, "low")?,
                close: decimal(r, "close")?,
                volume: decimal(r, "volume")?,
            };
            Payload::DataCandle(Candle::new(fields).ok()?)
        }
        MessageType::DataPriceUpdate => {
            r.read_start(3)?;
            r.read_name("symbol", true)?;
            let symbol = intern::symbol(r.read_text()?).ok()?;
            let price = decimal(r, "price")?;
            r.read_name("timestamp_ms", false)?;
            let fields = PriceUpdateFields {
                symbol,
                price,
                timestamp_ms: r.read_integer()?,
            };
            Payload::DataPriceUpdate(PriceUpdate::new(fields).ok()?)
        }
        _ => return None,
    };
    r.read_end()?;
    Some(payload)
}

/// The decimal field `name` (not the first).
#[inline(always)]
fn decimal<'a>(r: &mut impl FieldReader<'a>, name: &str) -> Option<Decimal> {
    r.read_name(name, false)?;
    r.read_decimal()
}
