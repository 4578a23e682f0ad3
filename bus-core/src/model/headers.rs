//! Free-form string headers of an envelope.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An envelope's headers: keys unique, kept in key order (so they encode the
/// same way every time). A sorted vector rather than a `BTreeMap`: most
/// messages carry none, and an empty vector costs nothing to create or drop,
/// where an empty map walks its tree on drop, once per message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`; returns the value it replaces, if any.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.position(key).ok()?;
        Some(&self.0[at].1)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.position(key).ok()?;
        Some(self.0.remove(at).1)
    }

    /// How many headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(String, String)> for Headers {
    /// Later pairs replace earlier ones with the same key.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut headers = Headers::new();
        for (key, value) in pairs {
            headers.insert(key, value);
        }
        headers
    }
}

/// A JSON object (or any serde map) of strings.
impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;

        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of string headers")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Headers, A::Error> {
                let mut headers = Headers::new();
                while let Some((key, value)) = access.next_entry::<String, String>()? {
                    headers.insert(key, value);
                }
                Ok(headers)
            }
        }

        deserializer.deserialize_map(HeadersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_unique_and_ordered() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        assert_eq!(h.insert("b".into(), "1".into()), None);
        assert_eq!(h.insert("a".into(), "2".into()), None);
        assert_eq!(h.insert("c".into(), "3".into()), None);
        assert_eq!(h.insert("b".into(), "4".into()), Some("1".into()));
        let pairs: Vec<(&String, &String)> = h.iter().collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(h.get("b"), Some("4"));
        assert_eq!(h.get("z"), None);
        assert_eq!(h.remove("a"), Some("2".into()));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn json_is_an_object_and_the_last_duplicate_wins() {
        let h: Headers = [("x", "1"), ("a", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(serde_json::to_string(&h).unwrap(), r#"{"a":"2","x":"1"}"#);
        let back: Headers = serde_json::from_str(r#"{"x":"1","a":"2","x":"3"}"#).unwrap();
        assert_eq!(back.get("x"), Some("3"));
        assert_eq!(back.len(), 2);
        let error = serde_json::from_str::<Headers>(r#"{"x":1}"#).unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
