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

/// An entry of `data.symbols`: a live market's name (`"BTC"`), or a
/// synthetic market with its first price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SymbolEntry {
    /// A market by name.
    Name(String),
    /// A synthetic market.
    Synthetic(SymbolConfig),
}

impl SymbolEntry {
    /// The market's name.
    pub fn name(&self) -> &str {
        match self {
            SymbolEntry::Name(name) => name,
            SymbolEntry::Synthetic(config) => &config.symbol,
        }
    }
}

/// `[data]`: where candles come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic`, `file` or `hyperliquid` (also given as `source`).
    pub kind: DataKind,
    /// Bar interval (`30s`, `1m`, `4h`, `1d`, `1w`): the bar length the
    /// report annualises with, and the topics' last segment.
    pub interval: String,
    /// Bar length in ms, for an `interval` label that is not a length;
    /// must agree with one that is.
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
    /// Synthetic: symbols and start prices; live: the markets' names.
    pub symbols: Option<Vec<SymbolEntry>>,
    /// Live: `mainnet` (the default) or `testnet`.
    pub network: Option<String>,
    /// Live: the WebSocket URL, instead of the network's.
    pub url: Option<String>,
    /// Live: the REST info endpoint back-fills ask, instead of the
    /// network's.
    pub info_url: Option<String>,
    /// Live: seconds without market data before the feed counts as stalled
    /// (a `risk.warning.stale_feed`, and a new connection).
    pub stall_seconds: Option<f64>,
    /// Live: also publish the markets' trades (`data.trade`).
    pub trades: Option<bool>,
    /// Live: also publish their order books (`data.orderbook`).
    pub book: Option<bool>,
    /// Live: publish mid prices (`data.price_update`; default true).
    pub mids: Option<bool>,
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
    /// HyperLiquid's live market (paper trading).
    Hyperliquid,
}

/// Where the candles of a run come from, checked: what `[data]` describes
/// once its kind has picked the keys that matter.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The seeded synthetic market.
    Synthetic(SyntheticSpec),
    /// A CSV or JSON-lines file of candles.
    File(CandleFile),
    /// A venue's live market.
    Live(LiveMarket),
}

/// `[data]` with a live venue.
#[derive(Debug, Clone)]
pub struct LiveMarket {
    /// The venue and where to reach it.
    pub venue: HyperLiquid,
    /// What to follow, and when to call it stalled.
    pub settings: FeedSettings,
}

impl PartialEq for LiveMarket {
    fn eq(&self, other: &Self) -> bool {
        let key = |m: &Self| {
            let s = &m.settings;
            (
                m.venue.clone(),
                s.symbols.clone(),
                s.interval.clone(),
                s.interval_ms,
                s.channels,
                s.stall_after,
            )
        };
        key(self) == key(other)
    }
}

/// The candle intervals HyperLiquid streams.
pub const HYPERLIQUID_INTERVALS: [&str; 14] = [
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "3d", "1w", "1M",
];

/// `[data]` with `kind = "file"`.
#[derive(Debug, Clone, PartialEq)]
pub struct CandleFile {
    /// The file (relative paths were resolved against the config file).
    pub path: PathBuf,
    /// What to do with malformed rows.
    pub bad_rows: BadRowPolicy,
    /// The bar interval label for topics (`1m`).
    pub interval: String,
    /// The bar length (a loaded configuration checked the file's bars
    /// have it).
    pub interval_ms: i64,
}

impl DataSource {
    /// Candles it will produce, when known before reading (a synthetic
    /// market's bars times its symbols).
    pub fn known_candles(&self) -> Option<u64> {
        match self {
            DataSource::Synthetic(spec) => Some((spec.candles * spec.symbols.len()) as u64),
            DataSource::File(_) | DataSource::Live(_) => None,
        }
    }

    /// Whether it is a live market (it never ends by itself, and cannot be
    /// backtested).
    pub fn is_live(&self) -> bool {
        matches!(self, DataSource::Live(_))
    }
}

impl DataConfig {
    /// The checked source, or every problem with `[data]`'s keys for its
    /// kind.
    pub fn source(&self) -> Result<DataSource, Vec<String>> {
        match self.kind {
            DataKind::Synthetic => self.synthetic_spec().map(DataSource::Synthetic),
            DataKind::Hyperliquid => self.live_market().map(DataSource::Live),
            DataKind::File => match &self.path {
                None => Err(vec!["data.path: required when data.kind = \"file\"".into()]),
                Some(path) => match readable_file(path) {
                    Err(problem) => Err(vec![format!("data.path: {}: {problem}", path.display())]),
                    Ok(()) => Ok(DataSource::File(CandleFile {
                        path: path.clone(),
                        bad_rows: self.bad_rows.unwrap_or(BadRowPolicy::Skip),
                        interval: self.interval.clone(),
                        interval_ms: self.bar_interval_ms().map_err(|e| vec![e])?,
                    })),
                },
            },
        }
    }

    /// The bar length: the `interval` label's, or `interval_ms` for a label
    /// that is not a length; an error names the key when the two disagree.
    pub fn bar_interval_ms(&self) -> Result<i64, String> {
        match (interval_label_ms(&self.interval), self.interval_ms) {
            (Some(label), Some(given)) if label != given => Err(format!(
                "data.interval_ms: {given} disagrees with data.interval = {:?} ({label} ms); \
                 give one of them",
                self.interval
            )),
            (_, Some(given)) if given <= 0 => {
                Err(format!("data.interval_ms: {given} must be positive"))
            }
            (Some(ms), _) | (None, Some(ms)) => Ok(ms),
            (None, None) => Err(format!(
                "data.interval: {:?} is not a bar length (e.g. \"30s\", \"1m\", \"4h\", \"1d\", \"1w\"); \
                 give data.interval_ms",
                self.interval
            )),
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
        need(self.candles.is_some(), "candles");
        need(self.seed.is_some(), "seed");
        need(self.volatility.is_some(), "volatility");
        need(self.symbols.is_some(), "symbols");
        let mut symbols = Vec::new();
        for (i, s) in self.symbols.iter().flatten().enumerate() {
            let SymbolEntry::Synthetic(s) = s else {
                errors.push(format!(
                    "data.symbols[{i}]: a synthetic market needs {{ symbol = \"...\", start_price = ... }}"
                ));
                continue;
            };
            match Symbol::new(&s.symbol) {
                Ok(symbol) => symbols.push(SymbolSpec {
                    symbol,
                    start_price: s.start_price,
                }),
                Err(e) => errors.push(format!("data.symbols[{i}].symbol: {e}")),
            }
        }
        let interval_ms = self.bar_interval_ms().unwrap_or_else(|e| {
            errors.push(e);
            0
        });
        let spec = SyntheticSpec {
            symbols,
            candles: self.candles.unwrap_or(0),
            interval_ms,
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

    /// The live market `[data]` describes, or every problem with its keys.
    fn live_market(&self) -> Result<LiveMarket, Vec<String>> {
        let mut errors = Vec::new();
        let mut symbols = Vec::new();
        match &self.symbols {
            None => errors.push("data.symbols: required for a live market, e.g. [\"BTC\"]".into()),
            Some(list) if list.is_empty() => {
                errors.push("data.symbols: name at least one market, e.g. [\"BTC\"]".into())
            }
            Some(list) => {
                for (i, entry) in list.iter().enumerate() {
                    match Symbol::new(entry.name()) {
                        Ok(symbol) => symbols.push(symbol),
                        Err(e) => errors.push(format!("data.symbols[{i}]: {e}")),
                    }
                }
            }
        }
        if !HYPERLIQUID_INTERVALS.contains(&self.interval.as_str()) {
            errors.push(format!(
                "data.interval: {:?} is not one of HyperLiquid's candle intervals ({})",
                self.interval,
                HYPERLIQUID_INTERVALS.join(", ")
            ));
        }
        let interval_ms = self.bar_interval_ms().unwrap_or_else(|e| {
            errors.push(e);
            0
        });
        let mut venue = match self.network.as_deref() {
            None | Some("mainnet") => HyperLiquid::mainnet(),
            Some("testnet") => HyperLiquid::testnet(),
            Some(other) => {
                errors.push(format!(
                    "data.network: {other:?} is neither \"mainnet\" nor \"testnet\""
                ));
                HyperLiquid::mainnet()
            }
        };
        let mut url = |key: &str, given: &Option<String>, schemes: [&str; 2], into: &mut String| {
            if let Some(given) = given {
                match schemes
                    .iter()
                    .any(|s| given.starts_with(&format!("{s}://")))
                {
                    true => *into = given.clone(),
                    false => errors.push(format!(
                        "data.{key}: {given:?} must start with {}:// or {}://",
                        schemes[0], schemes[1]
                    )),
                }
            }
        };
        url("url", &self.url, ["wss", "ws"], &mut venue.stream_url);
        url(
            "info_url",
            &self.info_url,
            ["https", "http"],
            &mut venue.info_url,
        );
        let mut settings = FeedSettings::new(symbols, &self.interval, interval_ms);
        if let Some(seconds) = self.stall_seconds {
            match seconds.is_finite() && seconds > 0.0 {
                true => settings.stall_after = Duration::from_secs_f64(seconds),
                false => errors.push(format!(
                    "data.stall_seconds: {seconds} must be a positive number of seconds"
                )),
            }
        }
        // Pings keep a quiet connection open, well inside the stall time.
        settings.ping_every = settings.ping_every.min(settings.stall_after / 2);
        settings.channels = Channels {
            trades: self.trades.unwrap_or(false),
            book: self.book.unwrap_or(false),
            mids: self.mids.unwrap_or(true),
        };
        match errors.is_empty() {
            true => Ok(LiveMarket { venue, settings }),
            false => Err(errors),
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
        match self.source() {
            Err(problems) => errors.extend(problems),
            // Read once, at load: the wiring asks for the source again.
            Ok(DataSource::File(file)) => errors.extend(file.check_spacing().err()),
            Ok(DataSource::Synthetic(_) | DataSource::Live(_)) => {}
        }
        errors
    }
}

/// The length of a bar labelled `label` (`30s`, `1m`, `4h`, `1d`, `1w`), in
/// ms; `None` when the label is not a length.
pub fn interval_label_ms(label: &str) -> Option<i64> {
    let unit_at = label.find(|c: char| !c.is_ascii_digit())?;
    let count: i64 = label[..unit_at].parse().ok().filter(|n| *n > 0)?;
    let unit = match &label[unit_at..] {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    count.checked_mul(unit)
}

/// The shortest label for a bar length (`86400000` -> `1d`).
pub fn interval_label(ms: i64) -> String {
    for (unit, length) in [
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % length == 0 {
            return format!("{}{unit}", ms / length);
        }
    }
    format!("{ms} ms")
}

/// Time steps of a file read to learn its bar length.
const STEPS_CHECKED: usize = 200;

impl CandleFile {
    /// Refuses a file whose bars are not `interval_ms` apart: the shortest
    /// gap between its first time steps is its bar length (a longer gap is
    /// a hole in the data, a weekend, a halt). A report would otherwise
    /// annualise daily bars as if they were minutes.
    fn check_spacing(&self) -> Result<(), String> {
        use agent_collector::CandleSource;
        let opened =
            agent_collector::FileSource::open(&self.path, &self.interval, BadRowPolicy::Skip);
        let Ok(mut source) = opened.map(agent_collector::FileSource::quiet) else {
            // Opening it again for the run reports what is wrong.
            return Ok(());
        };
        let mut times = Vec::with_capacity(STEPS_CHECKED);
        while times.len() < STEPS_CHECKED {
            match source.next_batch() {
                Ok(Some(batch)) => times.extend(batch.first().map(|c| c.open_time_ms)),
                _ => break,
            }
        }
        let shortest = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|gap| *gap > 0)
            .min();
        match shortest {
            Some(gap) if gap != self.interval_ms => Err(format!(
                "data.interval: {:?} ({} ms), but the bars of {} are {gap} ms apart ({}): \
                 set data.interval = {:?}",
                self.interval,
                self.interval_ms,
                self.path.display(),
                interval_label(gap),
                interval_label(gap)
            )),
            _ => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_labels_are_bar_lengths() {
        assert_eq!(interval_label_ms("30s"), Some(30_000));
        assert_eq!(interval_label_ms("1m"), Some(60_000));
        assert_eq!(interval_label_ms("15m"), Some(900_000));
        assert_eq!(interval_label_ms("4h"), Some(14_400_000));
        assert_eq!(interval_label_ms("1d"), Some(86_400_000));
        assert_eq!(interval_label_ms("1w"), Some(604_800_000));
        for not_a_length in ["", "m", "0m", "1x", "1M", "daily", "-1m", "1.5h"] {
            assert_eq!(interval_label_ms(not_a_length), None, "{not_a_length:?}");
        }
        for ms in [1_000, 60_000, 900_000, 14_400_000, 86_400_000, 604_800_000] {
            assert_eq!(interval_label_ms(&interval_label(ms)), Some(ms));
        }
        assert_eq!(interval_label(90_000), "90s");
    }
}
