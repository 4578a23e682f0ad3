//! The pieces of a strategy that asks a language model, none of which
//! touches a network:
//!
//! * [`prompt`]: the compact, documented market summary a model reads for
//!   one symbol and bar, and the chat-completions request that carries it
//!   (JSON output required by a JSON schema, temperature 0);
//! * [`answer`]: the model's answer, validated — `direction` long, short
//!   or flat, `confidence` within 0..=1, a `rationale` — or a refusal that
//!   says why (never a trade);
//! * [`cache`]: answers kept by a hash of (model, prompt) in a JSON-lines
//!   file, so a backtest can record them once and replay them byte for
//!   byte, failing clearly on a prompt it has no answer for.
//!
//! The client that sends the request, the budget and the strategy that
//! uses these are not here yet.

pub mod answer;
pub mod cache;
pub mod prompt;
