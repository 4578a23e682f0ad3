//! Configuration of the signal agent: which strategies run, their
//! parameters and weights, and the aggregation threshold.

use std::collections::BTreeMap;

use serde::Deserialize;

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
    /// The enabled strategies, in a fixed order.
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
        check(
            !self.strategies().is_empty(),
            "",
            "enable at least one strategy",
        );
        errors
    }
}
