//! Configuration of the signal agent: which strategies run, their
//! parameters and weights, and the aggregation threshold.

use std::collections::BTreeMap;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::llm::advisor::Consulting;
use crate::llm::cache::CacheMode;
use crate::llm::client::ModelSettings;

fn one() -> f64 {
    1.0
}

/// Moving-average crossover settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaCrossoverConfig {
    /// Fast SMA period.
    pub fast: usize,
    /// Slow SMA period.
    pub slow: usize,
    /// Runs (default); `false` switches it off while keeping its settings.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Aggregation weight.
    #[serde(default = "one")]
    pub weight: f64,
}

/// RSI settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsiConfig {
    /// RSI period.
    pub period: usize,
    /// Oversold level.
    pub oversold: f64,
    /// Overbought level.
    pub overbought: f64,
    /// Runs (default); `false` switches it off while keeping its settings.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Aggregation weight.
    #[serde(default = "one")]
    pub weight: f64,
}

/// MACD settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacdConfig {
    /// Fast EMA period.
    pub fast: usize,
    /// Slow EMA period.
    pub slow: usize,
    /// Signal EMA period.
    pub signal: usize,
    /// Runs (default); `false` switches it off while keeping its settings.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Aggregation weight.
    #[serde(default = "one")]
    pub weight: f64,
}

/// Bollinger settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BollingerConfig {
    /// SMA period.
    pub period: usize,
    /// Band width in standard deviations.
    pub k: f64,
    /// Runs (default); `false` switches it off while keeping its settings.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Aggregation weight.
    #[serde(default = "one")]
    pub weight: f64,
}

/// Candlestick pattern settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandlestickConfig {
    /// Runs (default); `false` switches it off while keeping its settings.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Aggregation weight.
    #[serde(default = "one")]
    pub weight: f64,
}

/// The `[signals]` section. A strategy runs when its table is present.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// Minimum combined confidence for `signal.aggregated`.
    pub threshold: f64,
    /// Publish every strategy's `signal.generated` and a
    /// `signal.analysis_complete` per bar (off saves messages in backtests).
    #[serde(default = "yes")]
    pub publish_details: bool,
    /// Most symbols followed (indicators are kept per symbol); candles of
    /// further symbols are refused and counted.
    #[serde(default = "default_max_symbols")]
    pub max_symbols: usize,
    /// `[signals.ma_crossover]`.
    pub ma_crossover: Option<MaCrossoverConfig>,
    /// `[signals.rsi]`.
    pub rsi: Option<RsiConfig>,
    /// `[signals.macd]`.
    pub macd: Option<MacdConfig>,
    /// `[signals.bollinger]`.
    pub bollinger: Option<BollingerConfig>,
    /// `[signals.candlestick]`.
    pub candlestick: Option<CandlestickConfig>,
    /// `[signals.custom.<name>]`: strategies this crate does not ship,
    /// built by the factory registered under `<name>` in a
    /// [`StrategyRegistry`](crate::StrategyRegistry).
    #[serde(default)]
    pub custom: BTreeMap<String, CustomStrategyConfig>,
    /// `[signals.llm]`: a language model's view, weighed with the others
    /// (off unless `enabled = true`).
    #[serde(default)]
    pub llm: Option<LlmConfig>,
}

/// `[signals.llm]`: ask an OpenAI-compatible chat-completions endpoint for
/// a view on a market every `ask_every_bars` bars and when the technical
/// strategies disagree; its answer is one more weighted signal. See
/// [`crate::llm`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Asks the model (`false` by default: no run calls a model unless told).
    #[serde(default)]
    pub enabled: bool,
    /// The API's base URL, up to `/chat/completions`
    /// (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`).
    pub base_url: String,
    /// The model's name, as the API knows it.
    pub model: String,
    /// The environment variable holding the API key (none: no key sent).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A file holding the API key (its first line), instead.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Longest wait for one answer, ms.
    #[serde(default = "default_llm_timeout_ms")]
    pub timeout_ms: u64,
    /// Least time between two calls, ms (a rate limit).
    #[serde(default)]
    pub min_interval_ms: u64,
    /// Calls a run may make, retries included.
    #[serde(default = "default_llm_max_calls")]
    pub max_calls: u64,
    /// Tokens a run may spend (prompt and completion, as the API reports).
    #[serde(default = "default_llm_max_tokens")]
    pub max_tokens: u64,
    /// Retries after HTTP 429 or 5xx, with backoff.
    #[serde(default = "default_llm_retries")]
    pub retries: u32,
    /// Asks every this many bars of a market (0: only on disagreement).
    #[serde(default = "default_llm_every")]
    pub ask_every_bars: u32,
    /// Asks too when the technical strategies point both ways on a bar.
    #[serde(default = "yes")]
    pub ask_on_disagreement: bool,
    /// Bars the model is shown (and needed before the first question).
    #[serde(default = "default_llm_history")]
    pub history_bars: usize,
    /// Weight in the aggregate, like any strategy's.
    #[serde(default = "one")]
    pub weight: f64,
    /// The answer file (default: next to the data file,
    /// `<data file>.llm-answers.jsonl`, or `<output_dir>/llm-answers.jsonl`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// `record` (default: answers from the file, the model asked for the
    /// others and its answers kept), `replay` (the file only; a question it
    /// has no answer for stops the run) or `live` (always ask, keep nothing).
    #[serde(default = "default_llm_cache_mode")]
    pub cache_mode: CacheMode,
}

fn default_llm_timeout_ms() -> u64 {
    20_000
}

fn default_llm_max_calls() -> u64 {
    200
}

fn default_llm_max_tokens() -> u64 {
    200_000
}

fn default_llm_retries() -> u32 {
    2
}

fn default_llm_every() -> u32 {
    60
}

fn default_llm_history() -> usize {
    20
}

fn default_llm_cache_mode() -> CacheMode {
    CacheMode::Record
}

impl LlmConfig {
    /// The client's settings, with the API key the run found (if any).
    pub fn client_settings(&self, api_key: Option<String>) -> ModelSettings {
        ModelSettings {
            base_url: self.base_url.trim().to_string(),
            model: self.model.clone(),
            api_key,
            timeout: Duration::from_millis(self.timeout_ms),
            min_interval: Duration::from_millis(self.min_interval_ms),
            max_calls: self.max_calls,
            max_tokens: self.max_tokens,
            retries: self.retries,
        }
    }

    /// When the model is asked, on bars `interval_ms` long.
    pub fn consulting(&self, interval_ms: i64) -> Consulting {
        Consulting {
            every_bars: self.ask_every_bars,
            on_disagreement: self.ask_on_disagreement,
            history_bars: self.history_bars,
            interval_ms,
        }
    }

    /// Every problem, each naming its key under `prefix` (`signals.llm`).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(format!("{prefix}.{key}: {message}"));
            }
        };
        let url = self.base_url.trim();
        check(
            url.starts_with("http://") || url.starts_with("https://"),
            "base_url",
            "must be an http:// or https:// URL (e.g. https://api.openai.com/v1)",
        );
        check(!self.model.trim().is_empty(), "model", "must name a model");
        check(
            !(self.api_key_env.is_some() && self.api_key_file.is_some()),
            "api_key_file",
            "give api_key_env or api_key_file, not both",
        );
        if let Some(name) = &self.api_key_env {
            check(
                !name.is_empty() && !name.contains('='),
                "api_key_env",
                "must be the name of an environment variable",
            );
        }
        check(self.timeout_ms >= 1, "timeout_ms", "must be at least 1");
        check(self.max_calls >= 1, "max_calls", "must be at least 1");
        check(self.max_tokens >= 1, "max_tokens", "must be at least 1");
        check(
            self.ask_every_bars > 0 || self.ask_on_disagreement,
            "ask_every_bars",
            "0 asks only on disagreement, and ask_on_disagreement is false: the model would never be asked",
        );
        check(
            (1..=500).contains(&self.history_bars),
            "history_bars",
            "must be within 1..=500",
        );
        check(
            self.weight.is_finite() && self.weight >= 0.0,
            "weight",
            "must be >= 0",
        );
        errors
    }
}

/// `[signals.custom.<name>]`: a strategy registered by the program that
/// runs the agent. Every key but `weight` is a numeric parameter handed to
/// its factory (`period = 20`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CustomStrategyConfig {
    /// Runs (default); `false` switches it off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Weight in the aggregate (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Its parameters, by name.
    #[serde(flatten)]
    pub params: BTreeMap<String, f64>,
}

impl CustomStrategyConfig {
    /// Parameter `name`, or a message naming it when it is missing.
    pub fn param(&self, name: &str) -> Result<f64, String> {
        self.params
            .get(name)
            .copied()
            .ok_or_else(|| format!("parameter {name:?} is missing"))
    }
}

fn default_max_symbols() -> usize {
    bus_core::model::candle_sequence::DEFAULT_MAX_SYMBOLS
}

fn yes() -> bool {
    true
}

/// One strategy's settings, for building it.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategyConfig {
    /// See [`MaCrossoverConfig`].
    MaCrossover(MaCrossoverConfig),
    /// See [`RsiConfig`].
    Rsi(RsiConfig),
    /// See [`MacdConfig`].
    Macd(MacdConfig),
    /// See [`BollingerConfig`].
    Bollinger(BollingerConfig),
    /// See [`CandlestickConfig`].
    Candlestick(CandlestickConfig),
    /// A registered strategy, by name.
    Custom(String, CustomStrategyConfig),
}

impl SignalsConfig {
    /// `[signals.llm]` when it is enabled.
    pub fn model(&self) -> Option<&LlmConfig> {
        self.llm.as_ref().filter(|c| c.enabled)
    }

    /// The enabled strategies, in a fixed order (the model is not one of
    /// them: see [`model`](Self::model)).
    pub fn strategies(&self) -> Vec<StrategyConfig> {
        let mut all = Vec::new();
        let on = |enabled: Option<bool>| enabled == Some(true);
        if on(self.ma_crossover.as_ref().map(|c| c.enabled)) {
            all.extend(self.ma_crossover.clone().map(StrategyConfig::MaCrossover));
        }
        if on(self.rsi.as_ref().map(|c| c.enabled)) {
            all.extend(self.rsi.clone().map(StrategyConfig::Rsi));
        }
        if on(self.macd.as_ref().map(|c| c.enabled)) {
            all.extend(self.macd.clone().map(StrategyConfig::Macd));
        }
        if on(self.bollinger.as_ref().map(|c| c.enabled)) {
            all.extend(self.bollinger.clone().map(StrategyConfig::Bollinger));
        }
        if on(self.candlestick.as_ref().map(|c| c.enabled)) {
            all.extend(self.candlestick.clone().map(StrategyConfig::Candlestick));
        }
        all.extend(
            self.custom
                .iter()
                .filter(|(_, c)| c.enabled)
                .map(|(name, c)| StrategyConfig::Custom(name.clone(), c.clone())),
        );
        all
    }

    /// Every problem, each naming its key under `prefix` (e.g. `signals`).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(format!("{prefix}.{key}: {message}"));
            }
        };
        check(
            (0.0..=1.0).contains(&self.threshold),
            "threshold",
            "must be within 0..=1",
        );
        check(self.max_symbols >= 1, "max_symbols", "must be at least 1");
        let weight_ok = |w: f64| w.is_finite() && w >= 0.0;
        if let Some(c) = &self.ma_crossover {
            check(c.fast >= 1, "ma_crossover.fast", "must be at least 1");
            check(
                c.fast < c.slow,
                "ma_crossover.slow",
                "must be greater than fast",
            );
            check(weight_ok(c.weight), "ma_crossover.weight", "must be >= 0");
        }
        if let Some(c) = &self.rsi {
            check(c.period >= 2, "rsi.period", "must be at least 2");
            check(
                0.0 < c.oversold && c.oversold < c.overbought && c.overbought < 100.0,
                "rsi.oversold",
                "need 0 < oversold < overbought < 100",
            );
            check(weight_ok(c.weight), "rsi.weight", "must be >= 0");
        }
        if let Some(c) = &self.macd {
            check(
                c.fast >= 1 && c.fast < c.slow,
                "macd.slow",
                "must be greater than fast (fast >= 1)",
            );
            check(c.signal >= 1, "macd.signal", "must be at least 1");
            check(weight_ok(c.weight), "macd.weight", "must be >= 0");
        }
        if let Some(c) = &self.bollinger {
            check(c.period >= 2, "bollinger.period", "must be at least 2");
            check(
                c.k > 0.0 && c.k.is_finite(),
                "bollinger.k",
                "must be positive",
            );
            check(weight_ok(c.weight), "bollinger.weight", "must be >= 0");
        }
        if let Some(c) = &self.candlestick {
            check(weight_ok(c.weight), "candlestick.weight", "must be >= 0");
        }
        for (name, c) in &self.custom {
            check(
                weight_ok(c.weight),
                &format!("custom.{name}.weight"),
                "must be >= 0",
            );
        }
        if let Some(c) = &self.llm {
            errors.extend(c.validate(&format!("{prefix}.llm")));
        }
        if self.strategies().is_empty() && self.model().is_none() {
            errors.push(format!("{prefix}: enable at least one strategy"));
        }
        errors
    }
}
