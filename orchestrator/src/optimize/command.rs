//! `bistoury optimize --config BASE --search SEARCH [--walk-forward N]
//! [--threads N] [--out DIR]`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent_collector::MemoryCandles;
use bus_core::runtime::StopSignal;

use super::results::{self, WalkForward};
use super::search::Search;
use super::{backtest, fold_windows, ranking, run_trials, Base, Fold, Progress, Trial};

/// What the command was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The base configuration (`--config`).
    pub config: Option<PathBuf>,
    /// The search file (`--search`).
    pub search: PathBuf,
    /// Folds (`--walk-forward`).
    pub walk_forward: Option<usize>,
    /// Threads (`--threads`; default: every core).
    pub threads: Option<usize>,
    /// Where the results go (`--out`; default `<output_dir>/optimize`).
    pub out: Option<PathBuf>,
}

fn refuse(problems: &[String], what: &str) -> ExitCode {
    eprintln!("{what}:\n  - {}", problems.join("\n  - "));
    ExitCode::from(2)
}

/// Prints progress on a terminal, at most every 200 ms.
struct Printer {
    started: Instant,
    last: Mutex<Option<Instant>>,
    terminal: bool,
    objective: &'static str,
    /// Trials of earlier folds, and of the whole walk.
    before: usize,
    whole: usize,
}

impl Printer {
    fn show(&self, p: Progress) {
        if !self.terminal {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) && p.done < p.total {
            return;
        }
        *last = Some(Instant::now());
        let done = self.before + p.done;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / done.max(1) as f64 * (self.whole - done) as f64;
        let best = match p.best {
            Some((number, score)) => format!("best {} {score:.4} (trial {number})", self.objective),
            None => "none ranked yet".into(),
        };
        eprint!(
            "\r  trials {done}/{} · {best} · ETA {eta:.0}s   ",
            self.whole
        );
    }
}

/// Runs the command.
pub fn main(request: Request) -> ExitCode {
    // Loaded and checked as every other command loads it.
    let config = match crate::cli::load(request.config.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut problems = Vec::new();
    if config.data.source().is_ok_and(|s| s.is_live()) {
        problems.push(format!(
            "{} (optimize backtests it)",
            crate::run::LIVE_IS_NOT_BACKTESTED
        ));
    }
    if config.signals.model().is_some() {
        problems.push(
            "signals.llm: optimize runs hundreds of backtests whose questions differ with every \
             trial's signals; optimize without the model strategy (enabled = false)"
                .into(),
        );
    }
    if request.walk_forward == Some(0) {
        problems.push("--walk-forward: must be at least 1 fold".into());
    }
    if request.threads == Some(0) {
        problems.push("--threads: must be at least 1".into());
    }
    if !problems.is_empty() {
        return refuse(&problems, "cannot optimize");
    }
    let overrides = std::env::vars()
        .filter(|(k, _)| k.starts_with("BISTOURY__"))
        .collect();
    let base = Base::of(&config, request.config.as_deref(), overrides);
    let text = match std::fs::read_to_string(&request.search) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("--search {}: {e}", request.search.display());
            return ExitCode::from(2);
        }
    };
    let search = match Search::parse(&text, &base.tree, &|keys, values| base.check(keys, values)) {
        Ok(search) => search,
        Err(problems) => {
            let what = format!("invalid search in {}", request.search.display());
            return refuse(&problems, &what);
        }
    };
    let _logging = crate::logging::init("error", None);
    let source = match crate::run::recorded_source(&config) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("bistoury optimize: {e}");
            return ExitCode::FAILURE;
        }
    };
    let candles = match MemoryCandles::load(source) {
        Ok((candles, _)) => candles,
        Err(e) => {
            eprintln!("bistoury optimize: {e}");
            return ExitCode::FAILURE;
        }
    };
    let trials = search.trials();
    let folds = request.walk_forward.unwrap_or(0);
    if folds > 0 && candles.steps() / (folds + 1) < 2 {
        return refuse(
            &[format!(
                "--walk-forward {folds}: {} time steps make windows of fewer than 2",
                candles.steps()
            )],
            "cannot optimize",
        );
    }
    let threads = request
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let out = (request.out.clone()).unwrap_or_else(|| config.run.output_dir.join("optimize"));
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("--out {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "optimize: {} trials of {} parameters by {} on {} threads, {} time steps{}",
        trials.len(),
        search.parameters.len(),
        search.objective.name(),
        threads,
        candles.steps(),
        match folds {
            0 => String::new(),
            n => format!(", walked forward over {n} folds"),
        }
    );
    let stop = StopSignal::new();
    crate::cli::stop_on_signals(
        stop.clone(),
        Some("finishing the trials under way, then writing what finished"),
    );
    let started = Instant::now();
    let mut printer = Printer {
        started,
        last: Mutex::new(None),
        terminal: std::io::stderr().is_terminal(),
        objective: search.objective.name(),
        before: 0,
        whole: trials.len() * folds.max(1),
    };
    let mut written = Vec::new();
    let (summary, ran) = if folds == 0 {
        let done = run_trials(&base, &search, &trials, &candles, threads, &stop, &|p| {
            printer.show(p)
        });
        let mut summary = results::best_table(&search, &done, search.top.max(1));
        if done.len() < trials.len() {
            summary.push_str(&format!(
                "stopped early: {} of {} trials ran\n",
                done.len(),
                trials.len()
            ));
        }
        if let Err(e) = write_search(&out, &base, &search, &done, &summary, &mut written) {
            eprintln!("cannot write the results in {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        (summary, done.len())
    } else {
        let mut walked: Vec<Fold> = Vec::new();
        for (k, (in_sample, out_of_sample)) in
            fold_windows(candles.steps(), folds).into_iter().enumerate()
        {
            if stop.is_stopped() {
                break;
            }
            printer.before = k * trials.len();
            let window = candles.window(in_sample.clone());
            let done = run_trials(&base, &search, &trials, &window, threads, &stop, &|p| {
                printer.show(p)
            });
            let complete = done.len() == trials.len();
            let tested = match (complete, ranking(&search, &done).first()) {
                (true, Some((best, score))) => {
                    let outcome = base
                        .with(&search.keys(), &best.values)
                        .map_err(|e| e.errors.join("; "))
                        .and_then(|c| backtest(&c, &candles.window(out_of_sample.clone())));
                    Some((best.number, *score, outcome))
                }
                _ => None,
            };
            walked.push(Fold {
                number: k + 1,
                in_sample,
                out_of_sample,
                trials: done,
                tested,
            });
        }
        let step_time = |i: usize| candles.step_time_ms(i);
        let walk = WalkForward {
            search: &search,
            folds: &walked,
            step_time: &step_time,
        };
        let mut summary = walk.text();
        if walked.len() < folds || walked.last().is_some_and(|f| f.trials.len() < trials.len()) {
            summary.push_str("stopped early: the folds above are those that finished\n");
        }
        if let Err(e) = write_walk(&out, &base, &search, &walk, &summary, &mut written) {
            eprintln!("cannot write the results in {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        (summary, walked.iter().map(|f| f.trials.len()).sum())
    };
    if printer.terminal {
        eprintln!();
    }
    print!("{summary}");
    println!(
        "{ran} trials in {:.2?} on {threads} threads",
        started.elapsed()
    );
    for path in &written {
        println!("wrote     {}", path.display());
    }
    ExitCode::SUCCESS
}

fn write(path: PathBuf, text: &str, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = agent_trader::trade_log::create_output_file(&path)?;
    file.write_all(text.as_bytes())?;
    written.push(path);
    Ok(())
}

/// A whole-data search's results: trials, best configurations, heatmap,
/// page.
fn write_search(
    out: &Path,
    base: &Base,
    search: &Search,
    trials: &[Trial],
    summary: &str,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    write(
        out.join("trials.csv"),
        &results::trials_csv(search, &[(None, trials)]),
        written,
    )?;
    for (place, (trial, score)) in ranking(search, trials).iter().take(search.top).enumerate() {
        let name = format!("best-{}.toml", place + 1);
        write(
            out.join(name),
            &results::config_toml(base, search, trial, *score),
            written,
        )?;
    }
    let mut heatmaps = Vec::new();
    if let Some(pair) = search.heatmap {
        let svg = results::heatmap_svg(search, trials, pair);
        write(out.join("heatmap.svg"), &svg, written)?;
        heatmaps.push((String::from("Heatmap"), svg));
    }
    write(
        out.join("optimize.html"),
        &results::html(summary, &heatmaps),
        written,
    )
}

/// A walk-forward's results: every fold's trials, each fold's chosen
/// configuration, the folds' table, a heatmap per fold, the page.
fn write_walk(
    out: &Path,
    base: &Base,
    search: &Search,
    walk: &WalkForward,
    summary: &str,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let folds: Vec<(Option<usize>, &[Trial])> = (walk.folds.iter())
        .map(|f| (Some(f.number), f.trials.as_slice()))
        .collect();
    write(
        out.join("trials.csv"),
        &results::trials_csv(search, &folds),
        written,
    )?;
    write(out.join("walk-forward.csv"), &walk.csv(), written)?;
    let mut heatmaps = Vec::new();
    for fold in walk.folds {
        if let Some((number, score, _)) = &fold.tested {
            let trial = &fold.trials[number - 1];
            let name = format!("fold-{}-best.toml", fold.number);
            write(
                out.join(name),
                &results::config_toml(base, search, trial, *score),
                written,
            )?;
        }
        if let Some(pair) = search.heatmap {
            let svg = results::heatmap_svg(search, &fold.trials, pair);
            write(
                out.join(format!("heatmap-fold-{}.svg", fold.number)),
                &svg,
                written,
            )?;
            heatmaps.push((format!("Fold {} in sample", fold.number), svg));
        }
    }
    write(
        out.join("optimize.html"),
        &results::html(summary, &heatmaps),
        written,
    )
}
