//! End-to-end: `bistoury optimize`. The best trial is what a separate
//! backtest of its written configuration gives; the thread count changes
//! no byte of the results; a walk-forward fold fits on its in-sample
//! window alone (data whose second half mirrors the first, checked against
//! searches and backtests of each half on its own); bad search files are
//! refused with every problem named; Ctrl-C keeps the trials that finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;

use support::run_bistoury as bistoury;

fn succeeded(output: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

/// Hourly bars of one market: legs of 60 bars up and down.
fn market(path: &Path, bars: usize) -> Vec<(i64, f64)> {
    support::TrendingMarket {
        symbol: "BTC",
        start_ms: 1_704_067_200_000,
        step_ms: 3_600_000,
        seed: 5,
        leg: 60,
        drift: 0.003,
        noise: 0.02,
        wick: 0.003,
        volume: 5,
    }
    .write(path, bars)
}

/// A lone moving-average crossover on `data`, no stops, no risk halt.
fn base(dir: &Path, name: &str, data: &str) -> PathBuf {
    let path = dir.join(name);
    let strategy = support::lone_crossover(10, 20, "position_fraction = \"0.2\"");
    let text = format!("[data]\nkind = \"file\"\npath = \"{data}\"\ninterval = \"1h\"\n{strategy}");
    std::fs::write(&path, text).unwrap();
    path
}

const GRID: &str = r#"
objective = "sharpe"
min_round_trips = 3
constraints = ["signals.ma_crossover.fast < signals.ma_crossover.slow"]
top = 2

[[parameter]]
key = "signals.ma_crossover.fast"
values = [3, 5, 8, 12]

[[parameter]]
key = "signals.ma_crossover.slow"
from = 10
to = 40
step = 10
"#;

/// The rows of a CSV file by its header's names (no quoted commas here).
fn rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            (header.iter().zip(line.split(',')))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn fixed(value: &serde_json::Value) -> String {
    format!("{:.6}", value.as_f64().unwrap())
}

/// The best ranked row (highest objective, the lower trial on ties),
/// computed here from the CSV.
fn best_row(rows: &[BTreeMap<String, String>]) -> &BTreeMap<String, String> {
    let ranked = rows.iter().filter(|r| r["status"] == "ranked");
    ranked
        .max_by(|a, b| {
            let (x, y): (f64, f64) = (
                a["objective"].parse().unwrap(),
                b["objective"].parse().unwrap(),
            );
            let (m, n): (u64, u64) = (a["trial"].parse().unwrap(), b["trial"].parse().unwrap());
            x.total_cmp(&y).then(n.cmp(&m))
        })
        .expect("a ranked trial")
}

#[test]
fn the_best_trial_is_a_backtest_of_its_config_and_threads_change_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 1500);
    base(dir, "base.toml", "bars.csv");
    std::fs::write(dir.join("search.toml"), GRID).unwrap();
    let optimize = |threads: &str, out: &str| {
        succeeded(bistoury(
            &[
                "optimize",
                "--config",
                "base.toml",
                "--search",
                "search.toml",
            ]
            .into_iter()
            .chain(["--threads", threads, "--out", out])
            .collect::<Vec<_>>(),
            dir,
        ))
    };
    let said = optimize("1", "one");
    optimize("4", "four");
    let files = support::files_in(&dir.join("one"));
    let names: Vec<String> = (files.iter())
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "best-1.toml",
            "best-2.toml",
            "heatmap.svg",
            "optimize.html",
            "trials.csv"
        ]
    );
    for (path, bytes) in &files {
        let other = dir.join("four").join(path.file_name().unwrap());
        assert!(
            std::fs::read(&other).unwrap() == *bytes,
            "{} differs with 4 threads",
            path.display()
        );
    }
    let trials = rows(&dir.join("one/trials.csv"));
    // 4 fast × 4 slow, fast < slow: 3 + 4 + 4 + 4 combinations minus (12, 10).
    let expected: Vec<(String, String)> = [3, 5, 8, 12]
        .iter()
        .flat_map(|f| [10, 20, 30, 40].map(move |s| (*f, s)))
        .filter(|(f, s)| f < s)
        .map(|(f, s)| (f.to_string(), s.to_string()))
        .collect();
    let got: Vec<(String, String)> = (trials.iter())
        .map(|r| {
            let value = |key: &str| r[key].clone();
            (
                value("signals.ma_crossover.fast"),
                value("signals.ma_crossover.slow"),
            )
        })
        .collect();
    assert_eq!(got, expected, "the grid, first parameter slowest");
    let best = best_row(&trials);
    let written = std::fs::read_to_string(dir.join("one/best-1.toml")).unwrap();
    assert!(
        written.starts_with(&format!("# bistoury optimize: trial {} of", best["trial"])),
        "{written}"
    );
    assert!(
        said.contains(&format!("#1 trial {}:", best["trial"])),
        "{said}"
    );
    // A separate backtest of the written configuration (from another
    // folder: the data path in it is absolute).
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let best_config = dir.join("one/best-1.toml");
    succeeded(bistoury(
        &[
            "backtest",
            "--config",
            best_config.to_str().unwrap(),
            "--output-dir",
            "bt",
        ],
        &elsewhere,
    ));
    let figures = report(&elsewhere.join("bt"));
    assert_eq!(fixed(&figures["sharpe_ratio"]), best["sharpe"]);
    assert_eq!(best["objective"], best["sharpe"]);
    assert_eq!(fixed(&figures["total_return"]), best["total_return"]);
    assert_eq!(fixed(&figures["max_drawdown"]), best["max_drawdown"]);
    assert_eq!(
        figures["round_trips"]["count"].to_string(),
        best["round_trips"]
    );
    assert_eq!(figures["fills"].to_string(), best["fills"]);
    assert_eq!(
        figures["final_equity"].as_str().unwrap(),
        best["final_equity"]
    );
}

/// Writes a candle file of `lines` (data lines, without the header).
fn part(path: &Path, lines: &[String]) {
    let mut text = String::from("open_time_ms,symbol,open,high,low,close,volume\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_walk_forward_fold_fits_on_its_in_sample_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // The first half as generated; the second its mirror: the same bars
    // in reverse order (open and close swapped), on the following hours.
    let half = 800;
    market(&dir.join("first.csv"), half);
    let first: Vec<String> = (std::fs::read_to_string(dir.join("first.csv")).unwrap())
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    let mirrored: Vec<String> = (first.iter().rev().enumerate())
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let time = 1_704_067_200_000_i64 + (half + i) as i64 * 3_600_000;
            format!(
                "{time},{},{},{},{},{},{}",
                f[1], f[5], f[3], f[4], f[2], f[6]
            )
        })
        .collect();
    part(&dir.join("second.csv"), &mirrored);
    part(&dir.join("whole.csv"), &[first.clone(), mirrored].concat());
    for (name, data) in [
        ("whole.toml", "whole.csv"),
        ("first.toml", "first.csv"),
        ("second.toml", "second.csv"),
    ] {
        base(dir, name, data);
    }
    std::fs::write(dir.join("search.toml"), GRID).unwrap();
    let search = |config: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "optimize",
            "--config",
            config,
            "--search",
            "search.toml",
            "--out",
            out,
        ];
        args.extend(extra);
        succeeded(bistoury(&args, dir))
    };
    search("whole.toml", "walked", &["--walk-forward", "1"]);
    search("first.toml", "first", &[]);
    search("second.toml", "second", &[]);
    let fold = &rows(&dir.join("walked/walk-forward.csv"))[0];
    let fitted = best_row(&rows(&dir.join("first/trials.csv"))).clone();
    let keys = ["signals.ma_crossover.fast", "signals.ma_crossover.slow"];
    for key in keys {
        assert_eq!(
            fold[key], fitted[key],
            "fold 1 chose what the first half alone chooses"
        );
    }
    assert_eq!(fold["in_sample_objective"], fitted["objective"]);
    // The in-sample trials are the first half's, row for row.
    let walked = rows(&dir.join("walked/trials.csv"));
    let alone = rows(&dir.join("first/trials.csv"));
    assert_eq!(walked.len(), alone.len());
    for (w, a) in walked.iter().zip(&alone) {
        assert_eq!(
            (&w["objective"], &w["total_return"]),
            (&a["objective"], &a["total_return"])
        );
    }
    // The mirror prefers other parameters: a fit that saw it would differ.
    let mirror_best = best_row(&rows(&dir.join("second/trials.csv"))).clone();
    assert_ne!(
        keys.map(|k| &mirror_best[k]),
        keys.map(|k| &fitted[k]),
        "the data should tell the halves apart"
    );
    // Out of sample is a backtest of the chosen values on the second half.
    let chosen = dir.join("walked/fold-1-best.toml");
    let text = std::fs::read_to_string(&chosen)
        .unwrap()
        .replace("whole.csv", "second.csv");
    std::fs::write(dir.join("chosen-on-second.toml"), text).unwrap();
    succeeded(bistoury(
        &[
            "backtest",
            "--config",
            "chosen-on-second.toml",
            "--output-dir",
            "oos",
        ],
        dir,
    ));
    let figures = report(&dir.join("oos"));
    assert_eq!(
        fixed(&figures["sharpe_ratio"]),
        fold["out_of_sample_objective"]
    );
    assert_eq!(
        fixed(&figures["total_return"]),
        fold["out_of_sample_total_return"]
    );
}

#[test]
fn bad_search_files_are_refused_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 100);
    base(dir, "base.toml", "bars.csv");
    std::fs::write(
        dir.join("bad.toml"),
        r#"
objective = "sharp"
min_round_trip = 3

[[parameter]]
key = "signals.ma_crossover.fastest"
values = [3]

[[parameter]]
key = "signals.ma_crossover.fast"
values = [0, 5]

[[parameter]]
key = "trader.stop_loss"
from = "0.05"
to = "0.01"
step = "0.01"
"#,
    )
    .unwrap();
    let refused = bistoury(
        &["optimize", "--config", "base.toml", "--search", "bad.toml"],
        dir,
    );
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(2), "{said}");
    for problem in [
        "objective: \"sharp\" is not one of sharpe, sortino, return, return_over_drawdown, profit_factor",
        "min_round_trip: unknown key",
        "parameter[1].key: signals.ma_crossover.fastest is not a key of the configuration",
        "parameter[2].values: 0 for signals.ma_crossover.fast: must be at least 1",
        "parameter[3].to: 0.01 is below from = 0.05",
    ] {
        assert!(said.contains(problem), "{problem:?} missing:\n{said}");
    }
    assert!(
        !dir.join("bistoury-output/optimize").exists(),
        "nothing ran"
    );
    std::fs::write(dir.join("search.toml"), GRID).unwrap();
    let folds = bistoury(
        &[
            "optimize",
            "--config",
            "base.toml",
            "--search",
            "search.toml",
            "--walk-forward",
            "0",
        ],
        dir,
    );
    assert_eq!(folds.status.code(), Some(2));
}

#[test]
fn ctrl_c_keeps_the_trials_that_finished() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    market(&dir.join("bars.csv"), 20_000);
    base(dir, "base.toml", "bars.csv");
    std::fs::write(
        dir.join("search.toml"),
        GRID.replace("values = [3, 5, 8, 12]", "from = 2\nto = 9\nstep = 1"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_bistoury-e2e"))
        .args([
            "optimize",
            "--config",
            "base.toml",
            "--search",
            "search.toml",
            "--threads",
            "1",
            "--out",
            "out",
        ])
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first trials take a while each: stop within the search.
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let said = succeeded(output);
    let trials = rows(&dir.join("out/trials.csv"));
    assert!(trials.len() < 32, "{} trials: {said}", trials.len());
    assert!(
        said.contains(&format!("stopped early: {} of 32 trials ran", trials.len())),
        "{said}"
    );
    // What finished is whole: numbered from 1 without a gap.
    for (i, row) in trials.iter().enumerate() {
        assert_eq!(row["trial"], (i + 1).to_string());
    }
}
