//! Market time as people read it: ISO-8601 in UTC, from milliseconds since
//! the Unix epoch (the one time representation inside messages).

/// `2023-11-14T22:13:20.000Z` for `1_700_000_000_000`; proleptic Gregorian
/// calendar, any `i64` of milliseconds within years -9999..=9999.
pub fn iso8601_utc(ms: i64) -> String {
    let mut text = String::with_capacity(24);
    push_iso8601_utc(&mut text, ms);
    text
}

/// Appends [`iso8601_utc`]'s text of `ms` to `out`, digit by digit for
/// years 0 to 9999 (a trade log writes one per fill).
pub fn push_iso8601_utc(out: &mut String, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hours, minutes) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (seconds, millis) = (in_day / 1000 % 60, in_day % 1000);
    if !(0..=9999).contains(&year) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z"
        );
        return;
    }
    let mut digits = |value: i64, width: u32, after: u8| {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10_i64.pow(place) % 10) as u8));
        }
        out.push(char::from(after));
    };
    digits(year, 4, b'-');
    digits(i64::from(month), 2, b'-');
    digits(i64::from(day), 2, b'T');
    digits(hours, 2, b':');
    digits(minutes, 2, b':');
    digits(seconds, 2, b'.');
    digits(millis, 3, b'Z');
}

/// Milliseconds since the epoch of an ISO-8601 UTC time: a date
/// (`2023-11-14`, midnight), or a date and time (`2023-11-14T22:13:20`,
/// `T` or a space between), with optional fractional seconds (to the
/// millisecond) and an optional `Z` or `+00:00`. Other offsets are refused
/// (candle times are UTC); `None` when it is not such a time.
pub fn parse_iso8601_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    let (date, time) = match text.find(['T', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let number = |s: &str, digits: usize| -> Option<i64> {
        (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4)?;
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&month) || day < 1 {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    if civil_from_days(days) != (year, month as u32, day as u32) {
        return None; // 2023-02-30
    }
    let mut ms = days * 86_400_000;
    if let Some(time) = time {
        let (clock, fraction) = match time.split_once('.') {
            Some((clock, fraction)) => (clock, Some(fraction)),
            None => (time, None),
        };
        let mut parts = clock.split(':');
        let hours = number(parts.next()?, 2)?;
        let minutes = number(parts.next()?, 2)?;
        let seconds = match parts.next() {
            Some(s) => number(s, 2)?,
            None => 0,
        };
        if parts.next().is_some() || hours > 23 || minutes > 59 || seconds > 59 {
            return None;
        }
        let millis = match fraction {
            None => 0,
            Some(f) if !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()) => {
                f.parse::<i64>().ok()? * 10_i64.pow(3 - f.len() as u32)
            }
            Some(_) => return None,
        };
        ms += hours * 3_600_000 + minutes * 60_000 + seconds * 1000 + millis;
    }
    Some(ms)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`,
/// the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`: eras of 400 years, March-based
/// years so that the leap day comes last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written digit by digit as `format!` writes it, for instants of
    /// every era (negative years and years past 9999 included).
    #[test]
    fn written_text_is_the_formatted_text() {
        let formatted = |ms: i64| {
            let days = ms.div_euclid(86_400_000);
            let in_day = ms.rem_euclid(86_400_000);
            let (year, month, day) = civil_from_days(days);
            let (hours, minutes) = (in_day / 3_600_000, in_day / 60_000 % 60);
            let (seconds, millis) = (in_day / 1000 % 60, in_day % 1000);
            format!(
                "{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z"
            )
        };
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Up to about ±290,000 years, mostly near the present.
            let ms = (state as i64) >> (20 + state % 24);
            assert_eq!(iso8601_utc(ms), formatted(ms), "{ms}");
        }
        for ms in [
            0,
            -1,
            1,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_000,
            -62_167_219_200_001,
        ] {
            assert_eq!(iso8601_utc(ms), formatted(ms), "{ms}");
        }
    }

    #[test]
    fn known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(iso8601_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso8601_utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_prints_and_common_forms() {
        for ms in [
            0,
            1_700_000_000_000,
            951_782_400_000,
            1_709_251_199_999,
            -1,
            4_107_542_400_000,
        ] {
            assert_eq!(parse_iso8601_utc(&iso8601_utc(ms)), Some(ms), "{ms}");
        }
        assert_eq!(parse_iso8601_utc("2023-11-14"), Some(1_699_920_000_000));
        assert_eq!(
            parse_iso8601_utc("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_iso8601_utc("2023-11-14 22:13:20"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_iso8601_utc("2023-11-14T22:13"),
            Some(1_699_999_980_000)
        );
        assert_eq!(
            parse_iso8601_utc("2023-11-14T22:13:20.5+00:00"),
            Some(1_700_000_000_500)
        );
        for bad in [
            "",
            "1700000000000",
            "2023-13-01",
            "2023-02-30",
            "2023-11-14T24:00:00",
            "2023-11-14T22:13:20+01:00",
            "2023-11-14T22:13:20.1234",
            "23-11-14",
            "2023-11-14T",
        ] {
            assert_eq!(parse_iso8601_utc(bad), None, "{bad:?}");
        }
    }

    /// Day by day over four centuries, the date advances as a calendar
    /// counted by hand does (month lengths, leap years by the 4/100/400
    /// rule).
    #[test]
    fn agrees_with_counting_days() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let length = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1900_i64, 1_u32, 1_u32);
        let start = -25_567; // 1900-01-01
        for days in start..start + 146_097 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > length(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
