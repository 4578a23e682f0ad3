//! `[data]`: where the candles of a run come from, and the checked
//! [`DataSource`] it becomes.

use super::*;

/// One synthetic symbol.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolConfig {
    /// Symbol.
    pub symbol: String,
    /// First price.
    pub start_price: f64,
}

/// `[data]`: where candles come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic` or `file`.
    pub kind: DataKind,
    /// Bar interval label, used in topics (`1m`).
    pub interval: String,
    /// Synthetic: bar length in ms.
    pub interval_ms: Option<i64>,
    /// Synthetic: bars per symbol.
    pub candles: Option<usize>,
    /// Synthetic: random seed.
    pub seed: Option<u64>,
    /// Synthetic: per-bar volatility.
    pub volatility: Option<f64>,
    /// Synthetic: chance of a regime change per bar.
    pub regime_change_probability: Option<f64>,
    /// Synthetic: first bar's open time.
    pub start_time_ms: Option<i64>,
    /// Synthetic: symbols and start prices.
    pub symbols: Option<Vec<SymbolConfig>>,
    /// File: CSV or JSON-lines path (relative to the config file).
    pub path: Option<PathBuf>,
    /// File: what to do with malformed rows.
    pub bad_rows: Option<BadRowPolicy>,
    /// `run` only: replay at this many times real time; 0 = as fast as
    /// possible. A backtest always runs as fast as possible.
    #[serde(default)]
    pub speed: f64,
    /// `run` with `speed` > 0: publish each step's candles one at a time,
    /// spread evenly over the step (`interval_ms` apart, or one minute).
    /// Paced slowly enough, every candle is worked through by every agent
    /// before the next, in the order a backtest uses, so a distributed run
    /// reproduces the backtest's trade log.
    #[serde(default)]
    pub stagger: bool,
}

/// Kinds of data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// The seeded synthetic market.
    Synthetic,
    /// A CSV or JSON-lines file.
    File,
}

/// Where the candles of a run come from, checked: what `[data]` describes
/// once its kind has picked the keys that matter.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The seeded synthetic market.
    Synthetic(SyntheticSpec),
    /// A CSV or JSON-lines file of candles.
    File(CandleFile),
}

/// `[data]` with `kind = "file"`.
#[derive(Debug, Clone, PartialEq)]
pub struct CandleFile {
    /// The file (relative paths were resolved against the config file).
    pub path: PathBuf,
    /// What to do with malformed rows.
    pub bad_rows: BadRowPolicy,
    /// The bar interval label for topics (`1m`).
    pub interval: String,
}

impl DataSource {
    /// Candles it will produce, when known before reading (a synthetic
    /// market's bars times its symbols).
    pub fn known_candles(&self) -> Option<u64> {
        match self {
            DataSource::Synthetic(spec) => Some((spec.candles * spec.symbols.len()) as u64),
            DataSource::File(_) => None,
        }
    }
}

impl DataConfig {
    /// The checked source, or every problem with `[data]`'s keys for its
    /// kind.
    pub fn source(&self) -> Result<DataSource, Vec<String>> {
        match self.kind {
            DataKind::Synthetic => self.synthetic_spec().map(DataSource::Synthetic),
            DataKind::File => match &self.path {
                None => Err(vec!["data.path: required when data.kind = \"file\"".into()]),
                Some(path) => match readable_file(path) {
                    Err(problem) => Err(vec![format!("data.path: {}: {problem}", path.display())]),
                    Ok(()) => Ok(DataSource::File(CandleFile {
                        path: path.clone(),
                        bad_rows: self.bad_rows.unwrap_or(BadRowPolicy::Skip),
                        interval: self.interval.clone(),
                    })),
                },
            },
        }
    }

    /// The synthetic market spec, or the errors that prevent it.
    fn synthetic_spec(&self) -> Result<SyntheticSpec, Vec<String>> {
        let mut errors = Vec::new();
        let mut need = |present: bool, key: &str| {
            if !present {
                errors.push(format!(
                    "data.{key}: required when data.kind = \"synthetic\""
                ));
            }
        };
        need(self.interval_ms.is_some(), "interval_ms");
        need(self.candles.is_some(), "candles");
        need(self.seed.is_some(), "seed");
        need(self.volatility.is_some(), "volatility");
        need(self.symbols.is_some(), "symbols");
        let mut symbols = Vec::new();
        for (i, s) in self.symbols.iter().flatten().enumerate() {
            match Symbol::new(&s.symbol) {
                Ok(symbol) => symbols.push(SymbolSpec {
                    symbol,
                    start_price: s.start_price,
                }),
                Err(e) => errors.push(format!("data.symbols[{i}].symbol: {e}")),
            }
        }
        let spec = SyntheticSpec {
            symbols,
            candles: self.candles.unwrap_or(0),
            interval_ms: self.interval_ms.unwrap_or(0),
            interval: self.interval.as_str().into(),
            start_time_ms: self.start_time_ms.unwrap_or(0),
            seed: self.seed.unwrap_or(0),
            volatility: self.volatility.unwrap_or(0.0),
            regime_change_probability: self.regime_change_probability.unwrap_or(0.0),
        };
        if errors.is_empty() {
            if let Err(e) = spec.validate() {
                errors.push(format!("data: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }

    pub(super) fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if bus_core::Topic::new(&self.interval).is_err() || self.interval.contains('.') {
            errors.push(format!(
                "data.interval: {:?} must be one topic segment, e.g. \"1m\"",
                self.interval
            ));
        }
        if !(self.speed.is_finite() && self.speed >= 0.0) {
            errors.push("data.speed: must be 0 (as fast as possible) or a positive factor".into());
        }
        if let Err(problems) = self.source() {
            errors.extend(problems);
        }
        errors
    }
}

/// `Ok` when `path` is a regular file this process can open for reading.
fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".into()),
        Err(e) => Err(e.to_string()),
        Ok(meta) if meta.is_dir() => Err("is a directory, not a file".into()),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| format!("cannot be read: {e}")),
    }
}
