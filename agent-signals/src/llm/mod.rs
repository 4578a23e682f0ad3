//! The `llm` strategy: a language model's view on a market, asked through
//! an OpenAI-compatible chat-completions API, weighed with the technical
//! strategies' signals. Its pieces:
//!
//! * [`advisor`]: when the model is asked (every N bars, when the technical
//!   signals disagree), what it is shown, and what its answer adds (one
//!   more signal, or nothing: the technical aggregate decides alone);
//! * [`prompt`]: the compact, documented market summary a model reads for
//!   one symbol and bar, and the chat-completions request that carries it
//!   (JSON output required by a JSON schema, temperature 0);
//! * [`answer`]: the model's answer, validated — `direction` long, short
//!   or flat, `confidence` within 0..=1, a `rationale` — or a refusal that
//!   says why (never a trade);
//! * [`cache`]: answers kept by a hash of (model, prompt) in a JSON-lines
//!   file, so a backtest can record them once and replay them byte for
//!   byte, failing clearly on a prompt it has no answer for.
//! * [`client`]: the OpenAI-compatible chat-completions client, bounded: a
//!   timeout per call, a least interval between calls, a budget of calls
//!   and tokens per run, retries with backoff on HTTP 429 and 5xx (each
//!   counted against the budget), the API key never printed.

pub mod advisor;
pub mod answer;
pub mod cache;
pub mod client;
pub mod prompt;
