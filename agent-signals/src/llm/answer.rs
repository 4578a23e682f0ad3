//! A chat-completions answer, validated into a trading view.
//!
//! The response is the OpenAI chat-completions format
//! (`{"choices": [{"message": {"content": "..."}}], "usage": {...}}`);
//! the content must be the JSON object the request's schema asks for:
//! `{"direction": "long" | "short" | "flat", "confidence": 0..=1,
//! "rationale": "..."}`. Anything else is a [`Refusal`] naming what is
//! wrong.

use bus_core::model::payload::SignalDirection;
use serde_json::Value;

/// The model's view, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Long, short or flat.
    pub direction: SignalDirection,
    /// Within 0..=1.
    pub confidence: f64,
    /// Why, in the model's words (on one line, at most 500 characters kept).
    pub rationale: String,
}

/// Tokens a call used, from the response's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Why an answer is not used (counted and logged; the strategy falls back
/// to the technical signals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model answer refused: {0}")]
pub struct Refusal(pub String);

/// Rationale characters kept.
const RATIONALE_CHARS: usize = 500;

/// Reads a chat-completions response body: the answer and the tokens used
/// (the usage is returned with a refusal too: a refused answer still cost
/// its tokens).
pub fn parse_response(body: &str) -> (Result<Answer, Refusal>, Usage) {
    let refuse = |why: String| Err(Refusal(why));
    let response: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(e) => {
            return (
                refuse(format!("the response is not JSON: {e}")),
                Usage::default(),
            )
        }
    };
    let usage = Usage {
        prompt_tokens: response["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: response["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    };
    let content = match response["choices"].as_array() {
        None => return (refuse("no `choices` list".into()), usage),
        Some(choices) if choices.is_empty() => {
            return (refuse("an empty `choices` list".into()), usage)
        }
        Some(choices) => &choices[0]["message"]["content"],
    };
    let Some(content) = content.as_str() else {
        return (
            refuse("`choices[0].message.content` is not text".into()),
            usage,
        );
    };
    (parse_content(content), usage)
}

/// Validates the JSON object the model wrote.
pub fn parse_content(content: &str) -> Result<Answer, Refusal> {
    let refuse = |why: String| Err(Refusal(why));
    let view: Value = match serde_json::from_str(content.trim()) {
        Ok(value) => value,
        Err(e) => return refuse(format!("the content is not JSON: {e}")),
    };
    let Some(fields) = view.as_object() else {
        return refuse("the content is not a JSON object".into());
    };
    if let Some(extra) = fields
        .keys()
        .find(|k| !["direction", "confidence", "rationale"].contains(&k.as_str()))
    {
        return refuse(format!("unexpected field `{extra}`"));
    }
    let direction = match fields.get("direction").and_then(Value::as_str) {
        Some("long") => SignalDirection::Long,
        Some("short") => SignalDirection::Short,
        Some("flat") => SignalDirection::Neutral,
        Some(other) => return refuse(format!("`direction` {other:?} is not long, short or flat")),
        None => return refuse("no `direction` text".into()),
    };
    let confidence = match fields.get("confidence").and_then(Value::as_f64) {
        Some(c) if (0.0..=1.0).contains(&c) => c,
        Some(c) => return refuse(format!("`confidence` {c} is outside 0..=1")),
        None => return refuse("no `confidence` number".into()),
    };
    let rationale = match fields.get("rationale").and_then(Value::as_str) {
        // One line: it goes into trade-log rows and log lines.
        Some(text) => {
            let words: Vec<&str> = text.split_whitespace().collect();
            words.join(" ").chars().take(RATIONALE_CHARS).collect()
        }
        None => return refuse("no `rationale` text".into()),
    };
    Ok(Answer {
        direction,
        confidence,
        rationale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content: &str) -> String {
        serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1733529600, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 310, "completion_tokens": 42, "total_tokens": 352}
        })
        .to_string()
    }

    #[test]
    fn a_good_answer_is_read_with_its_usage() {
        let body = response(
            r#"{"direction":"long","confidence":0.7,"rationale":"trend up, RSI not stretched"}"#,
        );
        let (answer, usage) = parse_response(&body);
        assert_eq!(
            answer,
            Ok(Answer {
                direction: SignalDirection::Long,
                confidence: 0.7,
                rationale: "trend up, RSI not stretched".into()
            })
        );
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 310,
                completion_tokens: 42
            }
        );
        let flat = parse_content(r#"{"direction":"flat","confidence":0,"rationale":""}"#).unwrap();
        assert_eq!(flat.direction, SignalDirection::Neutral);
        let lines = parse_content(
            r#"{"direction":"short","confidence":0.5,"rationale":"  Lower highs.\n\nVolume  fading. "}"#,
        )
        .unwrap();
        assert_eq!(lines.rationale, "Lower highs. Volume fading.");
    }

    #[test]
    fn anything_else_is_refused_with_the_reason_and_still_costs_its_tokens() {
        for (body, says) in [
            ("not json".to_string(), "not JSON"),
            (
                serde_json::json!({"choices": [], "usage": {"prompt_tokens": 5}}).to_string(),
                "empty `choices`",
            ),
            (
                serde_json::json!({"error": {"message": "x"}}).to_string(),
                "no `choices`",
            ),
            (response("I think you should buy."), "content is not JSON"),
            (response(r#"["long", 0.5]"#), "not a JSON object"),
            (
                response(r#"{"direction":"up","confidence":0.5,"rationale":"r"}"#),
                "is not long, short or flat",
            ),
            (
                response(r#"{"direction":"long","confidence":1.5,"rationale":"r"}"#),
                "outside 0..=1",
            ),
            (
                response(r#"{"direction":"long","confidence":"high","rationale":"r"}"#),
                "no `confidence` number",
            ),
            (
                response(r#"{"direction":"long","confidence":0.5}"#),
                "no `rationale`",
            ),
            (
                response(r#"{"direction":"long","confidence":0.5,"rationale":"r","size":3}"#),
                "unexpected field `size`",
            ),
        ] {
            let (answer, _) = parse_response(&body);
            let refusal = answer.expect_err(&body).to_string();
            assert!(refusal.contains(says), "{body}: {refusal}");
        }
        let (_, usage) = parse_response(&response("nonsense"));
        assert_eq!(
            usage.prompt_tokens, 310,
            "a refused answer still cost its tokens"
        );
    }
}
