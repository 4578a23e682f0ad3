//! Settings an agent's configuration can switch off.
//!
//! Configurations are layered (an embedded default, a file, environment
//! variables): a later layer cannot remove a key an earlier one set, so a
//! limit or a level that may be absent says so with a word instead.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An optional setting: a value (`"0.03"`, `0.03`, `30`), or `"off"`,
/// `"none"` or `false` for none. For `#[serde(deserialize_with)]`, with
/// `#[serde(default)]` so that a missing key is none too.
pub fn value_or_off<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Switch(bool),
        Whole(i64),
        Number(f64),
        Text(String),
    }
    let text = match Option::<Given>::deserialize(deserializer)? {
        None | Some(Given::Switch(false)) => return Ok(None),
        Some(Given::Switch(true)) => {
            return Err(D::Error::custom("expected a value, or \"off\""));
        }
        Some(Given::Whole(n)) => n.to_string(),
        Some(Given::Number(x)) => x.to_string(),
        Some(Given::Text(text)) => text.trim().to_string(),
    };
    if ["off", "none"].iter().any(|w| text.eq_ignore_ascii_case(w)) {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| D::Error::custom(format!("{text:?}: {e} (or \"off\")")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[derive(Deserialize, Debug)]
    struct Limits {
        #[serde(default, deserialize_with = "value_or_off")]
        level: Option<Decimal>,
        #[serde(default, deserialize_with = "value_or_off")]
        count: Option<usize>,
    }

    fn parse(json: &str) -> Result<Limits, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_value_or_a_word_for_none() {
        let l = parse(r#"{"level": "0.03", "count": 30}"#).unwrap();
        assert_eq!((l.level, l.count), (Some(Decimal::new(3, 2)), Some(30)));
        let l = parse(r#"{"level": 0.25, "count": "7"}"#).unwrap();
        assert_eq!((l.level, l.count), (Some(Decimal::new(25, 2)), Some(7)));
        for off in [r#""off""#, r#""None""#, "false"] {
            let l = parse(&format!(r#"{{"level": {off}, "count": {off}}}"#)).unwrap();
            assert_eq!((l.level, l.count), (None, None));
        }
        assert!(parse("{}").unwrap().level.is_none());
        assert!(parse(r#"{"level": null}"#).unwrap().level.is_none());
        for bad in [
            r#"{"level": true}"#,
            r#"{"level": "cheap"}"#,
            r#"{"count": -1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
