//! What `bistoury optimize` writes: every trial as CSV, the best
//! configurations as ready-to-run TOML, a heatmap of two parameters (SVG),
//! the walk-forward folds (CSV), and one HTML page with all of it. Numbers
//! are written with fixed decimals so that the same search gives the same
//! bytes.

use std::fmt::Write as _;

use agent_trader::trade_log::push_field;
use serde_json::Value;

use super::search::{show, Search};
use super::{ranking, Base, Figures, Fold, Trial};
use crate::charts::escape;

fn fixed(x: f64) -> String {
    match x.is_finite() {
        true => format!("{x:.6}"),
        false => "nan".into(),
    }
}

fn row(fields: &[String]) -> String {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        push_field(&mut line, field);
    }
    line.push('\n');
    line
}

const FIGURES: [&str; 9] = [
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "round_trips",
    "win_rate",
    "profit_factor",
    "fills",
    "final_equity",
];

fn figures_fields(figures: Option<&Figures>) -> Vec<String> {
    match figures {
        None => vec![String::new(); FIGURES.len()],
        Some(f) => vec![
            fixed(f.total_return),
            fixed(f.sharpe),
            fixed(f.sortino),
            fixed(f.max_drawdown),
            f.round_trips.to_string(),
            fixed(f.win_rate),
            f.profit_factor.map(fixed).unwrap_or_default(),
            f.fills.to_string(),
            f.final_equity.to_string(),
        ],
    }
}

/// Every trial: `fold` (walk-forward only), `trial`, the parameters,
/// `status` (`ranked` or why not), `objective` (the search's, when
/// ranked), the key figures.
pub fn trials_csv(search: &Search, folds: &[(Option<usize>, &[Trial])]) -> String {
    let mut header: Vec<String> = Vec::new();
    let walked = folds.iter().any(|(fold, _)| fold.is_some());
    if walked {
        header.push("fold".into());
    }
    header.push("trial".into());
    header.extend(search.parameters.iter().map(|p| p.key.clone()));
    header.push("status".into());
    header.push("objective".into());
    header.extend(FIGURES.iter().map(|f| f.to_string()));
    let mut s = row(&header);
    for (fold, trials) in folds {
        for trial in trials.iter() {
            let mut fields = Vec::new();
            if let Some(fold) = fold {
                fields.push(fold.to_string());
            }
            fields.push(trial.number.to_string());
            fields.extend(trial.values.iter().map(show));
            match trial.score(search) {
                Ok(score) => fields.extend(["ranked".to_string(), fixed(score)]),
                Err(why) => fields.extend([why, String::new()]),
            }
            fields.extend(figures_fields(trial.outcome.as_ref().ok()));
            s.push_str(&row(&fields));
        }
    }
    s
}

/// The base configuration with a trial's values, as a TOML file that
/// runs on its own (the data file's path made absolute).
pub fn config_toml(base: &Base, search: &Search, trial: &Trial, score: f64) -> String {
    let keys = search.keys();
    let mut tree = base.tree_with(&keys, &trial.values);
    let folder = base.file.as_deref().and_then(std::path::Path::parent);
    if let (Some(folder), Some(Value::String(path))) =
        (folder, tree.get_mut("data").and_then(|d| d.get_mut("path")))
    {
        let resolved = folder.join(&*path);
        let resolved = std::path::absolute(&resolved).unwrap_or(resolved);
        *path = resolved.display().to_string();
    }
    let mut s = format!(
        "# bistoury optimize: trial {} of {}, {} = {}\n",
        trial.number,
        base.file
            .as_deref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "the embedded default".into()),
        search.objective.name(),
        fixed(score)
    );
    for (key, value) in keys.iter().zip(&trial.values) {
        let _ = writeln!(s, "#   {key} = {}", show(value));
    }
    s.push('\n');
    s.push_str(&toml::to_string_pretty(&tree).unwrap_or_default());
    s
}

/// Each cell of parameters `a` × `b`: the best objective of the ranked
/// trials with those two values, or `None`.
pub fn heatmap_cells(
    search: &Search,
    trials: &[Trial],
    (a, b): (usize, usize),
) -> Vec<Vec<Option<f64>>> {
    let (pa, pb) = (&search.parameters[a], &search.parameters[b]);
    let mut cells = vec![vec![None; pb.values.len()]; pa.values.len()];
    for trial in trials {
        let Ok(score) = trial.score(search) else {
            continue;
        };
        let i = pa.values.iter().position(|v| *v == trial.values[a]);
        let j = pb.values.iter().position(|v| *v == trial.values[b]);
        if let (Some(i), Some(j)) = (i, j) {
            let cell: &mut Option<f64> = &mut cells[i][j];
            *cell = Some(cell.map_or(score, |best: f64| best.max(score)));
        }
    }
    cells
}

/// The heatmap as SVG: rows parameter `a`, columns parameter `b`, red
/// (lowest) to green (highest), grey where no trial was ranked.
pub fn heatmap_svg(search: &Search, trials: &[Trial], (a, b): (usize, usize)) -> String {
    let cells = heatmap_cells(search, trials, (a, b));
    let (pa, pb) = (&search.parameters[a], &search.parameters[b]);
    let scores: Vec<f64> = cells.iter().flatten().flatten().copied().collect();
    let low = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let high = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (cell_w, cell_h, left, top) = (56.0, 24.0, 120.0, 50.0);
    let width = left + cell_w * pb.values.len() as f64 + 20.0;
    let height = top + cell_h * pa.values.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<text x=\"{left:.0}\" y=\"16\" font-size=\"13\">{}: best per cell (rows {}, columns {})</text>",
        escape(search.objective.name()),
        escape(&pa.key),
        escape(&pb.key)
    );
    for (j, value) in pb.values.iter().enumerate() {
        let x = left + cell_w * (j as f64 + 0.5);
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            top - 6.0,
            escape(&show(value))
        );
    }
    for (i, value) in pa.values.iter().enumerate() {
        let y = top + cell_h * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + cell_h * 0.65,
            escape(&show(value))
        );
        for (j, cell) in cells[i].iter().enumerate() {
            let x = left + cell_w * j as f64;
            let fill = match cell {
                None => "#dddddd".to_string(),
                Some(score) => {
                    let t = match high > low {
                        true => (score - low) / (high - low),
                        false => 1.0,
                    };
                    let (r, g) = ((220.0 * (1.0 - t)) as u8, (180.0 * t) as u8 + 40);
                    format!("#{r:02x}{g:02x}50")
                }
            };
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell_w:.1}\" height=\"{cell_h:.1}\" \
                 fill=\"{fill}\" stroke=\"#ffffff\"/>"
            );
            if let Some(score) = cell {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#ffffff\">{score:.2}</text>",
                    x + cell_w / 2.0,
                    y + cell_h * 0.65
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The best `top` trials, for people.
pub fn best_table(search: &Search, trials: &[Trial], top: usize) -> String {
    let mut s = String::new();
    let ranked = ranking(search, trials);
    let unranked = trials.len() - ranked.len();
    let _ = writeln!(
        s,
        "{} trials, {} ranked by {} ({} not: too few round trips, no value or failed)",
        trials.len(),
        ranked.len(),
        search.objective.name(),
        unranked
    );
    for (place, (trial, score)) in ranked.iter().take(top).enumerate() {
        let values: Vec<String> = (search.parameters.iter().zip(&trial.values))
            .map(|(p, v)| format!("{}={}", p.key, show(v)))
            .collect();
        let figures = trial.outcome.as_ref().expect("ranked trials ran");
        let _ = writeln!(
            s,
            "  #{} trial {}: {} {:.4}; return {:.2}%, max drawdown {:.2}%, {} round trips; {}",
            place + 1,
            trial.number,
            search.objective.name(),
            score,
            figures.total_return * 100.0,
            figures.max_drawdown * 100.0,
            figures.round_trips,
            values.join(" ")
        );
    }
    s
}

/// The walk-forward summary: per fold the window, the chosen values, the
/// objective in and out of sample; then all folds together, and how much
/// of the in-sample edge held out of sample.
pub struct WalkForward<'a> {
    /// The search.
    pub search: &'a Search,
    /// The folds.
    pub folds: &'a [Fold],
    /// Open time of each time step of the data.
    pub step_time: &'a dyn Fn(usize) -> Option<i64>,
}

impl WalkForward<'_> {
    fn date(&self, step: usize) -> String {
        (self.step_time)(step)
            .map(bus_core::model::time::iso8601_utc)
            .map(|t| t[..16].to_string())
            .unwrap_or_default()
    }

    /// The per-fold table, as CSV.
    pub fn csv(&self) -> String {
        let mut header: Vec<String> = [
            "fold",
            "in_sample_from",
            "in_sample_to",
            "out_of_sample_from",
            "out_of_sample_to",
            "chosen_trial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        header.extend(self.search.parameters.iter().map(|p| p.key.clone()));
        header.push("in_sample_objective".into());
        header.push("out_of_sample_objective".into());
        header.extend(FIGURES.iter().map(|f| format!("out_of_sample_{f}")));
        let mut s = row(&header);
        for fold in self.folds {
            let mut fields = vec![
                fold.number.to_string(),
                self.date(fold.in_sample.start),
                self.date(fold.in_sample.end.saturating_sub(1)),
                self.date(fold.out_of_sample.start),
                self.date(fold.out_of_sample.end.saturating_sub(1)),
            ];
            match &fold.tested {
                None => {
                    fields.push(String::new());
                    fields.extend(self.search.parameters.iter().map(|_| String::new()));
                    fields.extend([String::new(), String::new()]);
                    fields.extend(figures_fields(None));
                }
                Some((number, in_sample, out)) => {
                    fields.push(number.to_string());
                    let trial = &fold.trials[number - 1];
                    fields.extend(trial.values.iter().map(show));
                    fields.push(fixed(*in_sample));
                    let score = out
                        .as_ref()
                        .ok()
                        .and_then(|f| f.objective(self.search.objective).ok());
                    fields.push(score.map(fixed).unwrap_or_default());
                    fields.extend(figures_fields(out.as_ref().ok()));
                }
            }
            s.push_str(&row(&fields));
        }
        s
    }

    /// In-sample and out-of-sample objectives of the folds where both
    /// have one.
    fn pairs(&self) -> Vec<(f64, f64)> {
        (self.folds.iter())
            .filter_map(|f| {
                let (_, in_sample, out) = f.tested.as_ref()?;
                let out = out.as_ref().ok()?.objective(self.search.objective).ok()?;
                Some((*in_sample, out))
            })
            .collect()
    }

    /// The summary, for people.
    pub fn text(&self) -> String {
        let name = self.search.objective.name();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "walk-forward, {} folds (fit on one window, tested on the next):",
            self.folds.len()
        );
        for fold in self.folds {
            let window = format!(
                "fit {}..{}, test {}..{}",
                self.date(fold.in_sample.start),
                self.date(fold.in_sample.end.saturating_sub(1)),
                self.date(fold.out_of_sample.start),
                self.date(fold.out_of_sample.end.saturating_sub(1))
            );
            match &fold.tested {
                None => {
                    let _ = writeln!(
                        s,
                        "  fold {}: {window}: no trial ranked in sample",
                        fold.number
                    );
                }
                Some((number, in_sample, out)) => {
                    let values: Vec<String> = (self.search.parameters.iter())
                        .zip(&fold.trials[number - 1].values)
                        .map(|(p, v)| format!("{}={}", p.key, show(v)))
                        .collect();
                    let out = match out {
                        Ok(f) => match f.objective(self.search.objective) {
                            Ok(score) => format!(
                                "{name} {score:.4}, return {:.2}%, {} round trips",
                                f.total_return * 100.0,
                                f.round_trips
                            ),
                            Err(why) => format!("no {name} ({why})"),
                        },
                        Err(e) => format!("failed: {e}"),
                    };
                    let _ = writeln!(
                        s,
                        "  fold {}: {window}: trial {number} ({}) {name} {in_sample:.4} in sample; out of sample {out}",
                        fold.number,
                        values.join(" ")
                    );
                }
            }
        }
        let returns: Vec<f64> = (self.folds.iter())
            .filter_map(|f| f.tested.as_ref()?.2.as_ref().ok().map(|f| f.total_return))
            .collect();
        let compounded = returns.iter().fold(1.0, |acc, r| acc * (1.0 + r)) - 1.0;
        let pairs = self.pairs();
        if pairs.is_empty() {
            let _ = writeln!(s, "no fold has an {name} in and out of sample to compare");
            return s;
        }
        let n = pairs.len() as f64;
        let in_mean = pairs.iter().map(|p| p.0).sum::<f64>() / n;
        let out_mean = pairs.iter().map(|p| p.1).sum::<f64>() / n;
        let _ = writeln!(
            s,
            "out of sample, all folds: return {:.2}% compounded over {} windows; mean {name} {out_mean:.4} against {in_mean:.4} in sample",
            compounded * 100.0,
            returns.len()
        );
        let verdict = if in_mean <= 0.0 {
            format!("the in-sample search found no edge (mean {name} {in_mean:.4}): there was none to keep")
        } else {
            format!(
                "out of sample kept {:.0}% of the in-sample {name} ({out_mean:.4} of {in_mean:.4})",
                100.0 * out_mean / in_mean
            )
        };
        let _ = writeln!(s, "{verdict}");
        s
    }
}

/// The page: the summary, the heatmaps.
pub fn html(summary: &str, heatmaps: &[(String, String)]) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Bistoury optimize</title>\n\
         <style>body{font-family:sans-serif;margin:2em;max-width:1100px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>\n\
         </head><body>\n<h1>Bistoury optimize</h1>\n",
    );
    let _ = writeln!(s, "<pre>{}</pre>", escape(summary));
    for (title, svg) in heatmaps {
        let _ = writeln!(s, "<h2>{}</h2>", escape(title));
        s.push_str(svg);
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn search() -> Search {
        let tree = serde_json::json!({"a": {"x": 1, "y": 1, "z": 1}});
        let text = "min_round_trips = 2\n\
            [[parameter]]\nkey = \"a.x\"\nvalues = [1, 2]\n\
            [[parameter]]\nkey = \"a.y\"\nvalues = [10, 20, 30]\n\
            [[parameter]]\nkey = \"a.z\"\nvalues = [0, 1]\n";
        Search::parse(text, &tree, &|_, _| Ok(())).unwrap()
    }

    fn trial(number: usize, values: [i64; 3], sharpe: f64, round_trips: u64) -> Trial {
        Trial {
            number,
            values: values.iter().map(|v| Value::from(*v)).collect(),
            outcome: Ok(Figures {
                total_return: 0.1,
                sharpe,
                sortino: sharpe,
                max_drawdown: 0.05,
                round_trips,
                win_rate: 0.5,
                profit_factor: None,
                fills: 2 * round_trips,
                final_equity: Decimal::ONE,
            }),
        }
    }

    #[test]
    fn a_heatmap_cell_is_the_best_ranked_trial_with_its_two_values() {
        let search = search();
        let trials = [
            trial(1, [1, 10, 0], 0.5, 5),
            trial(2, [1, 10, 1], 1.5, 5),
            trial(3, [1, 20, 0], 9.0, 1),
            trial(4, [2, 30, 1], -0.25, 5),
            Trial {
                number: 5,
                values: [2, 10, 0].iter().map(|v| Value::from(*v)).collect(),
                outcome: Err("failed".into()),
            },
        ];
        let cells = heatmap_cells(&search, &trials, (0, 1));
        assert_eq!(
            cells,
            [
                // Trial 3 has too few round trips: not ranked.
                [Some(1.5), None, None],
                [None, None, Some(-0.25)],
            ]
        );
        let svg = heatmap_svg(&search, &trials, (0, 1));
        assert_eq!(svg.matches("<rect").count(), 6);
        assert_eq!(svg.matches("#dddddd").count(), 4, "unranked cells grey");
        // The best cell is the greenest, the worst the reddest.
        assert!(
            svg.contains("fill=\"#00dc50\"") && svg.contains("fill=\"#dc2850\""),
            "{svg}"
        );
        let ranked: Vec<usize> = ranking(&search, &trials)
            .iter()
            .map(|(t, _)| t.number)
            .collect();
        assert_eq!(ranked, [2, 1, 4]);
    }
}
