//! What the model is asked: a compact market summary for one symbol and
//! bar, and the chat-completions request carrying it.
//!
//! The summary, line by line (numbers with at most 8 significant digits,
//! so the same market gives the same text on every machine):
//!
//! ```text
//! market BTC, bar 1m closing 2024-03-01T13:00:00.000Z
//! candles (oldest first): open high low close volume
//! 61150.5 61420 61010.2 61388.1 152.3
//! ...
//! indicators: rsi_14=61.2 sma_10=61201.4 ...
//! signals: ma_crossover=long 0.80, rsi=flat 0.00, ...
//! ```

use bus_core::model::payload::SignalDirection;
use bus_core::model::time::iso8601_utc;

use crate::strategy::Bar;

/// What the model is told it is for, and how to answer.
pub const SYSTEM: &str = "You are a cautious crypto trading analyst. From the market summary, \
say whether to be long, short or flat on this market for the next bar, how confident you are \
(0 to 1), and why in one or two sentences. Answer only with the JSON object the schema asks for.";

/// One market at one bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<'a> {
    /// The market.
    pub symbol: &'a str,
    /// Bar interval label (`1m`).
    pub interval: &'a str,
    /// Open time of the bar just closed, ms since the epoch.
    pub bar_open_ms: i64,
    /// The bar's length, ms.
    pub interval_ms: i64,
    /// Recent bars, oldest first, the last one the bar just closed.
    pub candles: &'a [Bar],
    /// Indicator values, named.
    pub indicators: &'a [(&'a str, f64)],
    /// The other strategies' signals on this bar.
    pub signals: &'a [(&'a str, SignalDirection, f64)],
}

/// A number in at most 8 significant digits, no trailing zeros.
fn number(x: f64) -> String {
    if !x.is_finite() {
        return "nan".into();
    }
    let digits = if x == 0.0 {
        0
    } else {
        x.abs().log10().floor() as i32 + 1
    };
    let decimals = (8 - digits).clamp(0, 8) as usize;
    let text = format!("{x:.decimals$}");
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

/// A direction as the model reads and writes it: `long`, `short`, `flat`.
pub fn direction_word(d: SignalDirection) -> &'static str {
    match d {
        SignalDirection::Long => "long",
        SignalDirection::Short => "short",
        SignalDirection::Neutral => "flat",
    }
}

impl Summary<'_> {
    /// The text the model reads (see the module docs).
    pub fn text(&self) -> String {
        let mut s = format!(
            "market {}, bar {} closing {}\ncandles (oldest first): open high low close volume\n",
            self.symbol,
            self.interval,
            iso8601_utc(self.bar_open_ms + self.interval_ms)
        );
        for bar in self.candles {
            let fields = [bar.open, bar.high, bar.low, bar.close, bar.volume];
            let line: Vec<String> = fields.iter().map(|x| number(*x)).collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        let indicators: Vec<String> = (self.indicators.iter())
            .map(|(name, value)| format!("{name}={}", number(*value)))
            .collect();
        s.push_str(&format!("indicators: {}\n", indicators.join(" ")));
        let signals: Vec<String> = (self.signals.iter())
            .map(|(name, d, confidence)| format!("{name}={} {confidence:.2}", direction_word(*d)))
            .collect();
        s.push_str(&format!("signals: {}\n", signals.join(", ")));
        s
    }
}

/// The chat-completions request body: the system message, the summary,
/// temperature 0 and a JSON schema the answer must follow.
pub fn request(model: &str, summary: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": summary},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "trading_view",
                "strict": true,
                "schema": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["direction", "confidence", "rationale"],
                    "properties": {
                        "direction": {"type": "string", "enum": ["long", "short", "flat"]},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                        "rationale": {"type": "string"},
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_eight_significant_digits_and_no_trailing_zeros() {
        assert_eq!(number(61388.1), "61388.1");
        assert_eq!(number(61388.123456789), "61388.123");
        assert_eq!(number(0.000123456789), "0.00012346");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-2.5), "-2.5");
    }

    #[test]
    fn the_summary_is_the_documented_text() {
        let candles = [
            Bar {
                volume: 152.3,
                ..Bar::flat(61150.5)
            },
            Bar {
                open: 61150.5,
                high: 61420.0,
                low: 61010.2,
                close: 61388.1,
                volume: 98.1,
                close_units: 0,
            },
        ];
        let summary = Summary {
            symbol: "BTC",
            interval: "1h",
            bar_open_ms: 1_709_294_400_000,
            interval_ms: 3_600_000,
            candles: &candles,
            indicators: &[("rsi_14", 61.2), ("sma_10", 61201.43)],
            signals: &[
                ("ma_crossover", SignalDirection::Long, 0.8),
                ("rsi", SignalDirection::Neutral, 0.0),
            ],
        };
        assert_eq!(
            summary.text(),
            "market BTC, bar 1h closing 2024-03-01T13:00:00.000Z\n\
             candles (oldest first): open high low close volume\n\
             61150.5 61150.5 61150.5 61150.5 152.3\n\
             61150.5 61420 61010.2 61388.1 98.1\n\
             indicators: rsi_14=61.2 sma_10=61201.43\n\
             signals: ma_crossover=long 0.80, rsi=flat 0.00\n"
        );
        let body = request("local-model", &summary.text());
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["messages"][1]["content"], summary.text());
        let schema = &body["response_format"]["json_schema"]["schema"];
        assert_eq!(
            schema["required"],
            serde_json::json!(["direction", "confidence", "rationale"])
        );
    }
}
