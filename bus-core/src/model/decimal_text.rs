//! Decimals to and from text, exactly as `rust_decimal` reads and writes
//! them, without its general machinery for the plain numbers prices and
//! quantities are (candle files, JSON payloads): that machinery was most
//! of the cost of a decimal field in either place.

use std::str::FromStr;

use rust_decimal::Decimal;

/// `text` as a decimal, exactly as [`Decimal::from_str`] reads it. Plain
/// numbers of up to 18 digits (`-?[0-9]+(.[0-9]+)?`) are read here;
/// anything else goes to it.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let fast = || {
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        let mut mantissa: i64 = 0;
        let mut count = 0;
        let mut point = None;
        for (k, &b) in digits.iter().enumerate() {
            match b {
                b'0'..=b'9' if count < 18 => {
                    mantissa = mantissa * 10 + i64::from(b - b'0');
                    count += 1;
                }
                b'.' if point.is_none() && k > 0 && k + 1 < digits.len() => point = Some(k),
                _ => return None,
            }
        }
        // A negative zero keeps its sign in `from_str`; leave it to it.
        if negative && mantissa == 0 {
            return None;
        }
        let scale = point.map_or(0, |k| digits.len() - k - 1) as u32;
        Some(Decimal::new(
            if negative { -mantissa } else { mantissa },
            scale,
        ))
    };
    fast().or_else(|| Decimal::from_str(text).ok())
}

/// Room for any decimal's text (29 digits, a sign, a point, leading zeros).
pub(crate) const DECIMAL_TEXT: usize = 64;

/// `value` as `rust_decimal` writes it (`Display`, and its serde text),
/// in `buffer`. Mantissas that fit 64 bits are written here; others (and
/// zero, whose sign `rust_decimal` may keep) by `rust_decimal`.
pub(crate) fn write_decimal(value: Decimal, buffer: &mut [u8; DECIMAL_TEXT]) -> &str {
    let mantissa = value.mantissa();
    let scale = value.scale() as usize;
    let Ok(magnitude) = u64::try_from(mantissa.unsigned_abs()) else {
        return slow(value, buffer);
    };
    if magnitude == 0 {
        return slow(value, buffer);
    }
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = magnitude;
    while rest > 0 {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let digits = &digits[start..];
    let mut at = 0;
    let mut put = |byte: u8| {
        buffer[at] = byte;
        at += 1;
    };
    if mantissa < 0 {
        put(b'-');
    }
    if scale == 0 {
        digits.iter().for_each(|&d| put(d));
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        whole.iter().for_each(|&d| put(d));
        put(b'.');
        fraction.iter().for_each(|&d| put(d));
    } else {
        put(b'0');
        put(b'.');
        (0..scale - digits.len()).for_each(|_| put(b'0'));
        digits.iter().for_each(|&d| put(d));
    }
    std::str::from_utf8(&buffer[..at]).expect("ASCII digits")
}

/// Appends `value` as `rust_decimal` writes it (`value.to_string()`),
/// without its formatting machinery (a trade log writes four per fill).
pub fn push_decimal(out: &mut String, value: Decimal) {
    let mut buffer = [0; DECIMAL_TEXT];
    out.push_str(write_decimal(value, &mut buffer));
}

fn slow(value: Decimal, buffer: &mut [u8; DECIMAL_TEXT]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    write!(cursor, "{value}").expect("a decimal fits its buffer");
    let len = cursor.position() as usize;
    std::str::from_utf8(&buffer[..len]).expect("a decimal's text")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded xorshift stream.
    fn numbers(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn parsed_as_from_str_parses() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.00",
            "1",
            "-1",
            "100.00",
            "007.50",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567890",
            "0.000000000000000001",
            "99999999999999999.9",
            "-42.4200",
            "1.",
            ".5",
            "-.5",
            "+3",
            "1e5",
            "1.2.3",
            "",
            "-",
            ".",
            "abc",
            "1,5",
            " 1",
            "79228162514264337593543950335",
            "0.1234567890123456789012345678",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let mut next = numbers(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let digits = 1 + (next() % 22) as usize;
            let mut text: String = (0..digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            if next().is_multiple_of(2) && digits > 1 {
                text.insert(1 + (next() as usize % (digits - 1)), '.');
            }
            if next().is_multiple_of(3) {
                text.insert(0, '-');
            }
            texts.push(text);
        }
        for text in &texts {
            let ours = parse_decimal(text);
            let theirs = Decimal::from_str(text).ok();
            assert_eq!(ours, theirs, "{text:?}");
            if let (Some(a), Some(b)) = (ours, theirs) {
                assert_eq!(
                    (a.scale(), a.is_sign_negative(), a.to_string()),
                    (b.scale(), b.is_sign_negative(), b.to_string()),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn written_as_rust_decimal_writes() {
        let mut next = numbers(0x2545_F491_4F6C_DD1D);
        let mut values = vec![
            Decimal::ZERO,
            Decimal::from_parts(0, 0, 0, true, 3),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(1, 28),
            Decimal::new(-5, 0),
            Decimal::new(u64::MAX as i64, 3),
        ];
        for _ in 0..20_000 {
            let (lo, mid, hi) = (next() as u32, next() as u32, next() as u32);
            let wide = next() % 4;
            let (mid, hi) = match wide {
                0 => (mid, hi),
                1 => (mid, 0),
                _ => (0, 0),
            };
            values.push(Decimal::from_parts(
                lo,
                mid,
                hi,
                next().is_multiple_of(2),
                (next() % 29) as u32,
            ));
        }
        let mut buffer = [0; DECIMAL_TEXT];
        for value in values {
            assert_eq!(
                write_decimal(value, &mut buffer),
                value.to_string(),
                "{value:?}"
            );
            assert_eq!(
                serde_json::to_string(&value).unwrap(),
                format!("\"{}\"", write_decimal(value, &mut buffer)),
                "serde's text, {value:?}"
            );
        }
    }
}
