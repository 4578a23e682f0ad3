//! `bistoury optimize`: a parameter search over backtests, optionally
//! walked forward.
//!
//! The data is read once ([`MemoryCandles`]); every trial is the same
//! inline, deterministic backtest `bistoury backtest` runs, of the base
//! configuration with the trial's values set, on a window of that data,
//! writing no file. Trials run on every core (scoped threads taking the
//! next trial from a shared counter) and their results are kept by trial
//! number, so the results are the same bytes whatever the thread count.
//!
//! Walk-forward (`--walk-forward N`): the data's time steps are cut into
//! N + 1 equal consecutive windows; fold k searches window k alone (the
//! in-sample window) and backtests its best trial on window k + 1 (out of
//! sample), which the search never saw. Each window's backtest starts flat,
//! its indicators warming up on its own bars.

pub mod command;
pub mod results;
pub mod search;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use agent_collector::MemoryCandles;
use bus_core::runtime::StopSignal;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::config::{BistouryConfig, ConfigError};
use crate::report::Report;
use crate::run::RunControl;
use search::{Objective, Search};

/// The configuration trials start from.
#[derive(Debug, Clone)]
pub struct Base {
    /// Its effective tree (default, file and environment merged).
    pub tree: Value,
    /// The file it came from (relative paths are resolved against it).
    pub file: Option<PathBuf>,
    /// The environment's `BISTOURY__*` variables it was loaded with.
    pub overrides: std::collections::HashMap<String, String>,
}

impl Base {
    /// The base configuration of `config`, loaded from `file` with the
    /// environment's `overrides`.
    pub fn of(
        config: &BistouryConfig,
        file: Option<&Path>,
        overrides: std::collections::HashMap<String, String>,
    ) -> Self {
        Self {
            tree: config.effective.clone(),
            file: file.map(Path::to_path_buf),
            overrides,
        }
    }

    /// The tree with `keys` set to `values`.
    pub fn tree_with(&self, keys: &[&str], values: &[Value]) -> Value {
        let mut tree = self.tree.clone();
        for (key, value) in keys.iter().zip(values) {
            crate::config::set_path(&mut tree, key, value.clone());
        }
        tree
    }

    /// The configuration with `keys` set to `values`, checked like a file.
    pub fn with(&self, keys: &[&str], values: &[Value]) -> Result<BistouryConfig, ConfigError> {
        BistouryConfig::from_tree(
            self.tree_with(keys, values),
            self.file.as_deref(),
            &self.overrides,
        )
    }

    /// What is wrong with the configuration whose `keys` hold `values`.
    pub fn check(&self, keys: &[&str], values: &[Value]) -> Result<(), Vec<String>> {
        self.with(keys, values).map(|_| ()).map_err(|e| e.errors)
    }
}

/// A trial's figures, from its report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Total return (a fraction).
    pub total_return: f64,
    /// Annualised Sharpe ratio.
    pub sharpe: f64,
    /// Annualised Sortino ratio.
    pub sortino: f64,
    /// Largest drawdown (a fraction).
    pub max_drawdown: f64,
    /// Round trips closed.
    pub round_trips: u64,
    /// Won round trips over all, net of fees.
    pub win_rate: f64,
    /// Gross profit over gross loss (`None`: no losing round trip).
    pub profit_factor: Option<f64>,
    /// Fills.
    pub fills: u64,
    /// Final equity.
    pub final_equity: Decimal,
}

impl Figures {
    /// From a backtest's report.
    pub fn of(report: &Report) -> Self {
        Self {
            total_return: report.total_return,
            sharpe: report.sharpe_ratio,
            sortino: report.sortino_ratio,
            max_drawdown: report.max_drawdown,
            round_trips: report.round_trips.count,
            win_rate: report.round_trips.win_rate,
            profit_factor: report.round_trips.profit_factor,
            fills: report.fills,
            final_equity: report.final_equity,
        }
    }

    /// The objective's value, or why there is none.
    pub fn objective(&self, objective: Objective) -> Result<f64, &'static str> {
        let value = match objective {
            Objective::Sharpe => self.sharpe,
            Objective::Sortino => self.sortino,
            Objective::Return => self.total_return,
            Objective::ReturnOverDrawdown if self.max_drawdown > 0.0 => {
                self.total_return / self.max_drawdown
            }
            Objective::ReturnOverDrawdown => return Err("no drawdown to divide by"),
            Objective::ProfitFactor => self.profit_factor.ok_or("no losing round trip")?,
        };
        match value.is_finite() {
            true => Ok(value),
            false => Err("not a finite number"),
        }
    }
}

/// One trial's values and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its number, from 1, in the order the search lists them.
    pub number: usize,
    /// The parameters' values.
    pub values: Vec<Value>,
    /// Its figures, or why it did not run to its end.
    pub outcome: Result<Figures, String>,
}

impl Trial {
    /// Its objective, when it is ranked: it ran, closed enough round
    /// trips, and the objective has a value.
    pub fn score(&self, search: &Search) -> Result<f64, String> {
        let figures = self.outcome.as_ref().map_err(Clone::clone)?;
        if figures.round_trips < search.min_round_trips {
            return Err(format!(
                "{} round trips, fewer than min_round_trips = {}",
                figures.round_trips, search.min_round_trips
            ));
        }
        figures
            .objective(search.objective)
            .map_err(|why| format!("no {}: {why}", search.objective.name()))
    }
}

/// The ranked trials, best first (ties: the lower number first).
pub fn ranking<'a>(search: &Search, trials: &'a [Trial]) -> Vec<(&'a Trial, f64)> {
    let mut ranked: Vec<(&Trial, f64)> = (trials.iter())
        .filter_map(|t| t.score(search).ok().map(|s| (t, s)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.number.cmp(&b.0.number)));
    ranked
}

/// Runs one backtest of `config` on `candles`, writing nothing.
pub fn backtest(config: &BistouryConfig, candles: &MemoryCandles) -> Result<Figures, String> {
    let control = RunControl {
        candles: Some(candles.clone()),
        without_trade_log: true,
        ..RunControl::default()
    };
    let outcome = crate::run::backtest_with(config, &control).map_err(|e| e.to_string())?;
    Ok(Figures::of(&outcome.report))
}

/// Progress of a search, as trials finish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Trials finished.
    pub done: usize,
    /// Trials in the search.
    pub total: usize,
    /// The best so far: its number and objective.
    pub best: Option<(usize, f64)>,
}

/// Runs `trials` (value indices) of `search` from `base` on `candles`,
/// on `threads` threads; stops taking new trials once `stop` is raised
/// (those under way finish). The finished trials, by number.
pub fn run_trials(
    base: &Base,
    search: &Search,
    trials: &[Vec<usize>],
    candles: &MemoryCandles,
    threads: usize,
    stop: &StopSignal,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<Trial> {
    let keys = search.keys();
    let next = AtomicUsize::new(0);
    let finished: Mutex<(Vec<Option<Trial>>, Progress)> = Mutex::new((
        vec![None; trials.len()],
        Progress {
            done: 0,
            total: trials.len(),
            best: None,
        },
    ));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if stop.is_stopped() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(indices) = trials.get(i) else {
                    return;
                };
                let values = search.values(indices);
                let outcome = base
                    .with(&keys, &values)
                    .map_err(|e| e.errors.join("; "))
                    .and_then(|config| backtest(&config, candles));
                let trial = Trial {
                    number: i + 1,
                    values,
                    outcome,
                };
                let score = trial.score(search).ok();
                let mut guard = finished.lock().unwrap_or_else(|p| p.into_inner());
                let (slots, state) = &mut *guard;
                state.done += 1;
                if let Some(score) = score {
                    let better = match state.best {
                        None => true,
                        Some((number, best)) => {
                            score > best || (score == best && trial.number < number)
                        }
                    };
                    if better {
                        state.best = Some((trial.number, score));
                    }
                }
                slots[i] = Some(trial);
                let now = *state;
                drop(guard);
                progress(now);
            });
        }
    });
    let (slots, _) = finished.into_inner().unwrap_or_else(|p| p.into_inner());
    slots.into_iter().flatten().collect()
}

/// One walk-forward fold.
#[derive(Debug, Clone)]
pub struct Fold {
    /// Its number, from 1.
    pub number: usize,
    /// The in-sample window's time steps.
    pub in_sample: Range<usize>,
    /// The out-of-sample window's time steps.
    pub out_of_sample: Range<usize>,
    /// The in-sample search's trials.
    pub trials: Vec<Trial>,
    /// The best in-sample trial backtested out of sample (`None` when no
    /// trial was ranked in sample).
    pub tested: Option<(usize, f64, Result<Figures, String>)>,
}

/// The windows of `folds` folds over `steps` time steps: N + 1 equal
/// windows (the last takes the remainder), fold k fitting on window k and
/// tested on window k + 1.
pub fn fold_windows(steps: usize, folds: usize) -> Vec<(Range<usize>, Range<usize>)> {
    let width = steps / (folds + 1);
    (0..folds)
        .map(|k| {
            let test_end = if k + 1 == folds {
                steps
            } else {
                (k + 2) * width
            };
            (k * width..(k + 1) * width, (k + 1) * width..test_end)
        })
        .collect()
}
