//! Per-thread caches of the validated names decoded from the wire (topics,
//! agent ids, symbols). A stream of messages repeats a handful of names:
//! checking and allocating each once, then sharing it (they are `Arc`s),
//! saves a validation pass and an allocation per name per message.
//! Bounded: a cache that reaches [`LIMIT`] names starts over. Keyed by the
//! name's bytes, so a decoder holding raw bytes finds a known name without
//! checking that they are UTF-8 again (they were, when it was cached).

use std::cell::RefCell;

use crate::model::error::PayloadError;
use crate::model::error::TopicError;
use crate::model::ids::{AgentId, NameMap};
use crate::model::payload::Symbol;
use crate::model::topic::Topic;

/// Names one thread keeps per kind before starting over.
pub(crate) const LIMIT: usize = 1024;

/// A cached name's text (what its cache is keyed by).
trait Named: Clone {
    fn text(&self) -> &str;
}

impl Named for Topic {
    fn text(&self) -> &str {
        self.as_str()
    }
}

impl Named for AgentId {
    fn text(&self) -> &str {
        self.as_str()
    }
}

impl Named for Symbol {
    fn text(&self) -> &str {
        self.as_str()
    }
}

struct Cache<T> {
    map: NameMap<Box<[u8]>, T>,
    /// The name found last: a stream of messages often repeats it (one
    /// topic, one sender), and comparing a few bytes is cheaper than
    /// hashing and probing.
    last: Option<T>,
}

impl<T: Named> Cache<T> {
    fn new() -> Self {
        Self {
            map: NameMap::default(),
            last: None,
        }
    }

    /// The value cached for `key`, or `make`'s (cached if it is `Ok`).
    fn get<E>(&mut self, key: &[u8], make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        if let Some(last) = &self.last {
            if last.text().as_bytes() == key {
                return Ok(last.clone());
            }
        }
        let value = match self.map.get(key) {
            Some(value) => value.clone(),
            None => {
                let value = make()?;
                if self.map.len() >= LIMIT {
                    self.map.clear();
                }
                self.map.insert(key.into(), value.clone());
                value
            }
        };
        self.last = Some(value.clone());
        Ok(value)
    }
}

thread_local! {
    static TOPICS: RefCell<Cache<Topic>> = RefCell::new(Cache::new());
    static AGENTS: RefCell<Cache<AgentId>> = RefCell::new(Cache::new());
    static SYMBOLS: RefCell<Cache<Symbol>> = RefCell::new(Cache::new());
}

/// The topic named `text`, validated once per thread.
pub(crate) fn topic(text: &str) -> Result<Topic, TopicError> {
    TOPICS.with(|cache| cache.borrow_mut().get(text.as_bytes(), || Topic::new(text)))
}

/// The topic named by `bytes` (checked to be UTF-8 and a valid topic the
/// first time); the error says which check failed.
pub(crate) fn topic_from_bytes(bytes: &[u8]) -> Result<Topic, String> {
    TOPICS.with(|cache| {
        cache.borrow_mut().get(bytes, || {
            Topic::new(utf8(bytes)?).map_err(|e| e.to_string())
        })
    })
}

/// The agent id named by `bytes` (checked to be UTF-8 the first time).
pub(crate) fn agent_from_bytes(bytes: &[u8]) -> Result<AgentId, String> {
    AGENTS.with(|cache| {
        cache
            .borrow_mut()
            .get(bytes, || Ok(AgentId::new(utf8(bytes)?)))
    })
}

/// `bytes` as text, or why not (the binary codec's wording).
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

/// The agent id `text`.
pub(crate) fn agent(text: &str) -> AgentId {
    AGENTS.with(|cache| {
        cache
            .borrow_mut()
            .get(text.as_bytes(), || {
                Ok::<_, std::convert::Infallible>(AgentId::new(text))
            })
            .unwrap_or_else(|never| match never {})
    })
}

/// The symbol `text`, validated once per thread.
pub(crate) fn symbol(text: &str) -> Result<Symbol, PayloadError> {
    SYMBOLS.with(|cache| {
        cache
            .borrow_mut()
            .get(text.as_bytes(), || Symbol::new(text))
    })
}

/// Deserializes a name from a string, borrowed where the format allows,
/// through `make` (an interner above): the one visitor behind the
/// `Deserialize` impls of [`Topic`], [`AgentId`] and [`Symbol`].
pub(crate) fn deserialize_name<'de, D, T, E>(
    deserializer: D,
    expecting: &'static str,
    make: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    E: std::fmt::Display,
{
    struct Visitor<T, E> {
        expecting: &'static str,
        make: fn(&str) -> Result<T, E>,
    }
    impl<T, E: std::fmt::Display> serde::de::Visitor<'_> for Visitor<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<Er: serde::de::Error>(self, text: &str) -> Result<T, Er> {
            (self.make)(text).map_err(Er::custom)
        }
    }
    deserializer.deserialize_str(Visitor { expecting, make })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_shared_and_still_checked() {
        let a = topic("data.candle.BTC.1m").unwrap();
        let b = topic("data.candle.BTC.1m").unwrap();
        assert_eq!(a, b);
        assert!(topic("data..candle").is_err());
        assert!(topic("data.*").is_err());
        // A refused name is not cached: it fails every time.
        assert!(topic("data..candle").is_err());
        assert!(symbol("BTC").is_ok());
        assert!(symbol("B TC").is_err());
        assert_eq!(agent("signals").as_str(), "signals");
    }

    #[test]
    fn names_from_bytes_are_checked_once_and_shared() {
        let a = topic_from_bytes(b"prices.btc").unwrap();
        assert_eq!(a, topic("prices.btc").unwrap());
        assert_eq!(
            topic_from_bytes(b"pri\xffces")
                .unwrap_err()
                .split(':')
                .next(),
            Some("not UTF-8")
        );
        assert!(topic_from_bytes(b"a..b").unwrap_err().contains("segment 2"));
        assert_eq!(agent_from_bytes(b"feed").unwrap(), agent("feed"));
        assert!(agent_from_bytes(b"\xc3").is_err());
        // A refused name is not cached.
        assert!(topic_from_bytes(b"a..b").is_err());
    }

    #[test]
    fn the_last_name_found_answers_only_for_itself() {
        let btc = symbol("BTC").unwrap();
        assert_eq!(symbol("BTC").unwrap(), btc);
        // Right after BTC: a longer name sharing its start, a shorter one,
        // a refused one; then BTC again.
        assert_eq!(symbol("BTCUSD").unwrap().as_str(), "BTCUSD");
        assert_eq!(symbol("BT").unwrap().as_str(), "BT");
        assert!(symbol("B TC").is_err());
        assert_eq!(symbol("BTC").unwrap().as_str(), "BTC");
        assert_eq!(topic_from_bytes(b"a.b").unwrap().as_str(), "a.b");
        assert!(topic_from_bytes(b"a.b.").is_err());
        assert_eq!(topic_from_bytes(b"a.b").unwrap().as_str(), "a.b");
        assert_eq!(agent_from_bytes(b"x").unwrap().as_str(), "x");
        assert_eq!(agent_from_bytes(b"xy").unwrap().as_str(), "xy");
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        for i in 0..(LIMIT + 10) {
            let name = format!("t.n{i}");
            assert_eq!(topic(&name).unwrap().as_str(), name);
        }
        TOPICS.with(|cache| assert!(cache.borrow().map.len() <= LIMIT));
    }
}
