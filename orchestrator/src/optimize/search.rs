//! The search file of `bistoury optimize`: which configuration keys vary
//! and over what, how the trials are picked, what they are judged by.
//!
//! ```toml
//! method = "grid"            # or "random" (then `trials` and `seed`)
//! objective = "sharpe"       # sortino | return | return_over_drawdown | profit_factor
//! min_round_trips = 5        # a trial with fewer is not ranked
//! constraints = ["signals.ma_crossover.fast < signals.ma_crossover.slow"]
//!
//! [[parameter]]
//! key = "signals.ma_crossover.fast"
//! from = 5
//! to = 30
//! step = 5
//!
//! [[parameter]]
//! key = "trader.stop_loss"
//! values = ["off", "0.02", "0.05"]
//! ```
//!
//! A parameter is any number, decimal text or choice of the configuration
//! (`bistoury config show` lists them), given a range (`from`, `to`,
//! `step`: numbers, or decimal text for keys that hold decimal text) or a
//! list of `values`. Every value is checked against the configuration's own
//! rules before anything runs.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::Value;

/// Most trials a grid may hold.
pub const MAX_TRIALS: usize = 1_000_000;

/// What is wrong with a configuration whose keys hold these values.
pub type Check<'a> = dyn Fn(&[&str], &[Value]) -> Result<(), Vec<String>> + 'a;

/// How trials are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Every combination of the parameters' values that meets the
    /// constraints, first parameter slowest.
    Grid,
    /// `trials` distinct combinations of the grid, drawn with `seed`.
    Random {
        /// Trials drawn (all of the grid when it has fewer).
        trials: usize,
        /// The draw's seed.
        seed: u64,
    },
}

/// What a trial is judged by (higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Annualised Sharpe ratio.
    Sharpe,
    /// Annualised Sortino ratio.
    Sortino,
    /// Total return.
    Return,
    /// Total return over the largest drawdown.
    ReturnOverDrawdown,
    /// Gross profit over gross loss of the round trips.
    ProfitFactor,
}

impl Objective {
    /// Its name in the search file and the results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sharpe => "sharpe",
            Self::Sortino => "sortino",
            Self::Return => "return",
            Self::ReturnOverDrawdown => "return_over_drawdown",
            Self::ProfitFactor => "profit_factor",
        }
    }

    const ALL: [Objective; 5] = [
        Self::Sharpe,
        Self::Sortino,
        Self::Return,
        Self::ReturnOverDrawdown,
        Self::ProfitFactor,
    ];
}

/// A comparison between two parameters, or a parameter and a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// As written.
    pub text: String,
    left: Operand,
    op: Op,
    right: Operand,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// The value of parameter `i`.
    Parameter(usize),
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

/// One varying key and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// Its place among the file's `[[parameter]]` tables, from 1.
    pub entry: usize,
    /// The configuration key (`signals.ma_crossover.fast`).
    pub key: String,
    /// Its values, as the configuration holds them.
    pub values: Vec<Value>,
}

/// A whole search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// How trials are picked.
    pub method: Method,
    /// What they are judged by.
    pub objective: Objective,
    /// Fewest round trips for a trial to be ranked.
    pub min_round_trips: u64,
    /// What every trial must meet.
    pub constraints: Vec<Constraint>,
    /// The parameters, in the file's order.
    pub parameters: Vec<Parameter>,
    /// Best configurations written.
    pub top: usize,
    /// The two parameters of the heatmap (indices), when there are two.
    pub heatmap: Option<(usize, usize)>,
}

/// A value as a number, for constraints and charts (decimal text reads
/// as its number; other text and booleans have none).
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    }
}

/// A value as the results show it.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn toml_to_json(value: &toml::Value) -> Option<Value> {
    Some(match value {
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number)?,
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Boolean(b) => Value::Bool(*b),
        _ => return None,
    })
}

/// A range bound as a decimal (numbers and decimal text).
fn decimal(value: &toml::Value) -> Option<Decimal> {
    match value {
        toml::Value::Integer(i) => Some(Decimal::from(*i)),
        toml::Value::Float(f) => f.to_string().parse().ok(),
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Constraint {
    fn parse(text: &str, parameters: &[Parameter]) -> Result<Self, String> {
        let ops = [
            ("<=", Op::LessOrEqual),
            (">=", Op::GreaterOrEqual),
            ("==", Op::Equal),
            ("!=", Op::NotEqual),
            ("<", Op::Less),
            (">", Op::Greater),
        ];
        let Some((symbol, op)) = ops.iter().find(|(symbol, _)| text.contains(symbol)) else {
            return Err("needs a comparison: <, <=, >, >=, == or !=".into());
        };
        let (left, right) = text.split_once(symbol).expect("found");
        let operand = |side: &str| -> Result<Operand, String> {
            let side = side.trim();
            if let Some(i) = parameters.iter().position(|p| p.key == side) {
                return Ok(Operand::Parameter(i));
            }
            side.parse::<f64>().map(Operand::Number).map_err(|_| {
                format!("{side:?} is neither a number nor one of the parameters' keys")
            })
        };
        Ok(Self {
            text: text.trim().to_string(),
            left: operand(left)?,
            op: *op,
            right: operand(right)?,
        })
    }

    /// Whether the trial with these values meets it (a value without a
    /// number never does).
    pub fn holds(&self, values: &[&Value]) -> bool {
        let side = |operand: &Operand| match operand {
            Operand::Parameter(i) => number(values[*i]),
            Operand::Number(x) => Some(*x),
        };
        let (Some(a), Some(b)) = (side(&self.left), side(&self.right)) else {
            return false;
        };
        match self.op {
            Op::Less => a < b,
            Op::LessOrEqual => a <= b,
            Op::Greater => a > b,
            Op::GreaterOrEqual => a >= b,
            Op::Equal => a == b,
            Op::NotEqual => a != b,
        }
    }
}

/// The values of a range, exactly (decimal steps), as the configuration
/// holds the key: numbers for a number, decimal text for text.
fn range(from: Decimal, to: Decimal, step: Decimal, base: &Value) -> Vec<Value> {
    let mut values = Vec::new();
    let mut x = from;
    while x <= to && values.len() <= MAX_TRIALS {
        values.push(match base {
            Value::String(_) => Value::String(x.normalize().to_string()),
            // Whole numbers were checked whole.
            Value::Number(n) if n.is_i64() || n.is_u64() => Value::from(x.to_i64().unwrap_or(0)),
            // The float nearest the exact decimal (0.3, not 0.1 + 0.2).
            _ => Value::from(x.to_f64().unwrap_or(f64::NAN)),
        });
        x += step;
    }
    values
}

impl Search {
    /// Reads a search file's text against the configuration `tree` (the
    /// effective configuration: which keys exist and what they hold);
    /// `check` says what is wrong with a configuration whose `keys` hold
    /// `values`. A value is refused when no trial holding it makes a valid
    /// configuration (a trial that is invalid only with the other values
    /// it meets is run and reported as such: a constraint keeps it out).
    /// Every problem at once, each naming its key.
    pub fn parse(text: &str, tree: &Value, check: &Check) -> Result<Self, Vec<String>> {
        let file: toml::Table = text.parse().map_err(|e| vec![format!("{e}")])?;
        let mut errors = Vec::new();
        for key in file.keys() {
            let known = [
                "method",
                "trials",
                "seed",
                "objective",
                "min_round_trips",
                "constraints",
                "parameter",
                "top",
                "heatmap",
            ];
            if !known.contains(&key.as_str()) {
                errors.push(format!("{key}: unknown key (known: {})", known.join(", ")));
            }
        }
        let text_of = |key: &str, default: &str| -> Result<String, String> {
            match file.get(key) {
                None => Ok(default.to_string()),
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("{key}: {other} is not text")),
            }
        };
        let count_of = |key: &str, default: u64| -> Result<u64, String> {
            match file.get(key) {
                None => Ok(default),
                Some(toml::Value::Integer(i)) if *i >= 0 => Ok(*i as u64),
                Some(other) => Err(format!("{key}: {other} is not a whole number >= 0")),
            }
        };
        let objective = match text_of("objective", "sharpe") {
            Ok(name) => match Objective::ALL.iter().find(|o| o.name() == name) {
                Some(o) => *o,
                None => {
                    let names: Vec<&str> = Objective::ALL.iter().map(|o| o.name()).collect();
                    errors.push(format!(
                        "objective: {name:?} is not one of {}",
                        names.join(", ")
                    ));
                    Objective::Sharpe
                }
            },
            Err(e) => {
                errors.push(e);
                Objective::Sharpe
            }
        };
        let mut take = |result: Result<u64, String>, default: u64| {
            result.unwrap_or_else(|e| {
                errors.push(e);
                default
            })
        };
        let min_round_trips = take(count_of("min_round_trips", 1), 1);
        let top = take(count_of("top", 3), 3) as usize;
        let trials = take(count_of("trials", 0), 0) as usize;
        let seed = take(count_of("seed", 0), 0);
        let method = match text_of("method", "grid").as_deref() {
            Ok("grid") => {
                for key in ["trials", "seed"] {
                    if file.contains_key(key) {
                        errors.push(format!("{key}: only for method = \"random\""));
                    }
                }
                Method::Grid
            }
            Ok("random") => {
                if trials == 0 {
                    errors.push("trials: method = \"random\" needs trials >= 1".into());
                }
                Method::Random { trials, seed }
            }
            Ok(other) => {
                errors.push(format!("method: {other:?} is not \"grid\" or \"random\""));
                Method::Grid
            }
            Err(e) => {
                errors.push(e.clone());
                Method::Grid
            }
        };
        let mut parameters = Vec::new();
        let entries = match file.get("parameter") {
            Some(toml::Value::Array(entries)) if !entries.is_empty() => entries.as_slice(),
            Some(toml::Value::Array(_)) | None => {
                errors.push("parameter: no [[parameter]] to vary".into());
                &[]
            }
            Some(_) => {
                errors.push("parameter: must be [[parameter]] tables".into());
                &[]
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("parameter[{}]", i + 1);
            match parameter(entry, tree) {
                Ok(p) if parameters.iter().any(|q: &Parameter| q.key == p.key) => {
                    errors.push(format!("{at}: {} is already a parameter", p.key));
                }
                Ok(p) => parameters.push(Parameter { entry: i + 1, ..p }),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|e| format!("{at}.{e}")));
                }
            }
        }
        let mut constraints = Vec::new();
        match file.get("constraints") {
            None => {}
            Some(toml::Value::Array(list)) => {
                for (i, item) in list.iter().enumerate() {
                    let at = format!("constraints[{}]", i + 1);
                    match item.as_str().map(|t| Constraint::parse(t, &parameters)) {
                        Some(Ok(c)) => constraints.push(c),
                        Some(Err(e)) => errors.push(format!("{at}: {e}")),
                        None => errors.push(format!("{at}: must be text like \"a < b\"")),
                    }
                }
            }
            Some(_) => errors.push("constraints: must be a list of texts like \"a < b\"".into()),
        }
        let heatmap = match file.get("heatmap") {
            None => (parameters.len() >= 2).then_some((0, 1)),
            Some(toml::Value::Array(pair)) if pair.len() == 2 => {
                let index = |v: &toml::Value| {
                    let key = v.as_str().unwrap_or_default();
                    parameters.iter().position(|p| p.key == key)
                };
                match (index(&pair[0]), index(&pair[1])) {
                    (Some(a), Some(b)) if a != b => Some((a, b)),
                    _ => {
                        errors.push("heatmap: must name two different parameters' keys".into());
                        None
                    }
                }
            }
            Some(_) => {
                errors.push("heatmap: must be two parameters' keys, [\"a\", \"b\"]".into());
                None
            }
        };
        let search = Self {
            method,
            objective,
            min_round_trips,
            constraints,
            parameters,
            top,
            heatmap,
        };
        // The parameters and constraints that were read are checked
        // together even when others were not: every problem at once.
        if !search.parameters.is_empty() {
            let size: usize = (search.parameters.iter())
                .map(|p| p.values.len())
                .try_fold(1usize, |a, n| a.checked_mul(n))
                .unwrap_or(usize::MAX);
            if size > MAX_TRIALS {
                errors.push(format!(
                    "parameter: the grid holds {size} combinations, more than {MAX_TRIALS}"
                ));
            } else if search.combinations().is_empty() {
                errors.push("constraints: no combination of the parameters meets them".into());
            } else {
                errors.extend(search.refused_values(check));
            }
        }
        match errors.is_empty() {
            true => Ok(search),
            false => Err(errors),
        }
    }

    /// Every combination meeting the constraints, as value indices, first
    /// parameter slowest.
    pub fn combinations(&self) -> Vec<Vec<usize>> {
        let mut all = Vec::new();
        let mut index = vec![0usize; self.parameters.len()];
        if self.parameters.iter().any(|p| p.values.is_empty()) {
            return all;
        }
        loop {
            let values: Vec<&Value> = (index.iter().enumerate())
                .map(|(p, &i)| &self.parameters[p].values[i])
                .collect();
            if self.constraints.iter().all(|c| c.holds(&values)) {
                all.push(index.clone());
            }
            // The next index, last parameter fastest.
            let mut p = self.parameters.len();
            loop {
                if p == 0 {
                    return all;
                }
                p -= 1;
                index[p] += 1;
                if index[p] < self.parameters[p].values.len() {
                    break;
                }
                index[p] = 0;
            }
        }
    }

    /// The trials: the grid, or the random draw from it, in grid order.
    pub fn trials(&self) -> Vec<Vec<usize>> {
        let grid = self.combinations();
        match self.method {
            Method::Grid => grid,
            Method::Random { trials, seed } => {
                let mut order: Vec<usize> = (0..grid.len()).collect();
                let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
                let draws = trials.min(grid.len());
                // A partial Fisher-Yates shuffle with splitmix64.
                for i in 0..draws {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    let j = i + (z % (grid.len() - i) as u64) as usize;
                    order.swap(i, j);
                }
                let mut chosen: Vec<usize> = order[..draws].to_vec();
                chosen.sort_unstable();
                chosen.into_iter().map(|i| grid[i].clone()).collect()
            }
        }
    }

    /// The values no trial holding them makes valid: each with the
    /// problems of the first trial holding it.
    fn refused_values(&self, check: &Check) -> Vec<String> {
        let keys = self.keys();
        let grid = self.combinations();
        let mut refused = Vec::new();
        for (p, parameter) in self.parameters.iter().enumerate() {
            for (v, value) in parameter.values.iter().enumerate() {
                let mut first_problems = None;
                let mut valid = false;
                for trial in grid.iter().filter(|t| t[p] == v) {
                    match check(&keys, &self.values(trial)) {
                        Ok(()) => {
                            valid = true;
                            break;
                        }
                        Err(problems) => {
                            first_problems.get_or_insert(problems);
                        }
                    }
                }
                if let (false, Some(problems)) = (valid, first_problems) {
                    // The problems named under this key, else all of them.
                    let own: Vec<String> = (problems.iter())
                        .filter_map(|e| e.strip_prefix(&format!("{}:", parameter.key)))
                        .map(|e| e.trim().to_string())
                        .collect();
                    let said = match own.is_empty() {
                        true => problems.join("; "),
                        false => own.join("; "),
                    };
                    refused.push(format!(
                        "parameter[{}].values: {} for {}: {said}",
                        parameter.entry,
                        show(value),
                        parameter.key
                    ));
                }
            }
        }
        refused
    }

    /// The parameters' configuration keys, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.parameters.iter().map(|p| p.key.as_str()).collect()
    }

    /// A trial's values.
    pub fn values(&self, trial: &[usize]) -> Vec<Value> {
        (trial.iter().enumerate())
            .map(|(p, &i)| self.parameters[p].values[i].clone())
            .collect()
    }
}

/// One `[[parameter]]`, or its problems (each starting with its key).
fn parameter(entry: &toml::Value, tree: &Value) -> Result<Parameter, Vec<String>> {
    let Some(table) = entry.as_table() else {
        return Err(vec![
            "must be a table with key and values, or key, from, to and step".into(),
        ]);
    };
    let mut errors = Vec::new();
    for key in table.keys() {
        if !["key", "from", "to", "step", "values"].contains(&key.as_str()) {
            errors.push(format!(
                "{key}: unknown key (known: key, from, to, step, values)"
            ));
        }
    }
    let Some(key) = table.get("key").and_then(|k| k.as_str()) else {
        errors.push("key: the configuration key to vary is missing".into());
        return Err(errors);
    };
    let base = crate::config::value_at(tree, key);
    let base = match base {
        Some(v @ (Value::Number(_) | Value::String(_) | Value::Bool(_))) => v.clone(),
        Some(_) => {
            errors.push(format!(
                "key: {key} is a section or a list, not a number or a choice"
            ));
            return Err(errors);
        }
        None => {
            errors.push(format!(
                "key: {key} is not a key of the configuration (`bistoury config show` lists them)"
            ));
            return Err(errors);
        }
    };
    let values = match (
        table.get("values"),
        table.get("from"),
        table.get("to"),
        table.get("step"),
    ) {
        (Some(toml::Value::Array(list)), None, None, None) if !list.is_empty() => {
            let mut values = Vec::new();
            for (i, v) in list.iter().enumerate() {
                match toml_to_json(v) {
                    Some(v) => values.push(v),
                    None => errors.push(format!(
                        "values[{}]: {v} is not a number, text or boolean",
                        i + 1
                    )),
                }
            }
            values
        }
        (Some(_), None, None, None) => {
            errors.push("values: must be a non-empty list".into());
            Vec::new()
        }
        (None, Some(from), Some(to), Some(step)) => {
            // Text may hold a decimal or a word (`"off"`): the values are
            // written as decimal text, and the configuration says if that
            // is what the key takes.
            if matches!(&base, Value::Bool(_)) {
                errors.push(format!(
                    "from: {key} holds {base}, not a number: give its choices as values = [...]"
                ));
                return Err(errors);
            }
            match (decimal(from), decimal(to), decimal(step)) {
                (Some(from), Some(to), Some(step)) => {
                    if step <= Decimal::ZERO {
                        errors.push(format!("step: {step} must be above 0"));
                    } else if from > to {
                        errors.push(format!("to: {to} is below from = {from}"));
                    } else if matches!(&base, Value::Number(n) if n.is_i64() || n.is_u64())
                        && [from, to, step].iter().any(|d| !d.fract().is_zero())
                    {
                        errors.push(format!(
                            "step: {key} holds whole numbers: from, to and step must be whole"
                        ));
                    } else if (to - from) / step >= Decimal::from(MAX_TRIALS) {
                        errors.push(format!(
                            "step: more than {MAX_TRIALS} values from {from} to {to}"
                        ));
                    }
                    if errors.is_empty() {
                        range(from, to, step, &base)
                    } else {
                        Vec::new()
                    }
                }
                _ => {
                    errors.push("from: from, to and step must be numbers".into());
                    Vec::new()
                }
            }
        }
        _ => {
            errors.push(
                "values: give values = [...], or from, to and step (not both, not part)".into(),
            );
            Vec::new()
        }
    };
    match errors.is_empty() {
        true => Ok(Parameter {
            entry: 0,
            key: key.to_string(),
            values,
        }),
        false => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration tree with an integer, a float, decimal text and a
    /// choice; `check` refuses 0 for `a.n` (as a configuration would).
    fn tree() -> Value {
        serde_json::json!({"a": {"n": 10, "x": 0.5, "d": "0.03", "mode": "on", "flag": true}})
    }

    fn check(keys: &[&str], values: &[Value]) -> Result<(), Vec<String>> {
        let zero = (keys.iter().zip(values)).any(|(k, v)| *k == "a.n" && v == &Value::from(0));
        match zero {
            true => Err(vec!["a.n: must be at least 1".to_string()]),
            false => Ok(()),
        }
    }

    fn parse(text: &str) -> Result<Search, Vec<String>> {
        Search::parse(text, &tree(), &check)
    }

    /// A small xorshift for the property tests' inputs.
    struct Draw(u64);
    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn ranges_are_exact_and_keep_the_keys_kind() {
        let s = parse(
            "[[parameter]]\nkey = \"a.n\"\nfrom = 2\nto = 10\nstep = 4\n\
             [[parameter]]\nkey = \"a.x\"\nfrom = 0.1\nto = 0.3\nstep = 0.1\n\
             [[parameter]]\nkey = \"a.d\"\nfrom = \"0.01\"\nto = \"0.03\"\nstep = \"0.01\"\n\
             [[parameter]]\nkey = \"a.mode\"\nvalues = [\"on\", \"off\"]\n",
        )
        .unwrap();
        let values: Vec<Vec<String>> = (s.parameters.iter())
            .map(|p| p.values.iter().map(|v| v.to_string()).collect())
            .collect();
        assert_eq!(values[0], ["2", "6", "10"]);
        assert_eq!(values[1], ["0.1", "0.2", "0.3"], "no 0.30000000000000004");
        assert_eq!(values[2], ["\"0.01\"", "\"0.02\"", "\"0.03\""]);
        assert_eq!(values[3], ["\"on\"", "\"off\""]);
        assert_eq!(s.heatmap, Some((0, 1)));
        assert_eq!(s.trials().len(), 3 * 3 * 3 * 2);
    }

    #[test]
    fn every_problem_is_named() {
        let errors = parse(
            "methd = \"grid\"\nobjective = \"luck\"\nconstraints = [\"a.n < b.q\"]\n\
             [[parameter]]\nkey = \"a.nope\"\nvalues = [1]\n\
             [[parameter]]\nkey = \"a.n\"\nfrom = 5\nto = 1\nstep = 1\n\
             [[parameter]]\nkey = \"a.x\"\nfrom = 0\nto = 1\nstep = 0\n\
             [[parameter]]\nkey = \"a.flag\"\nfrom = 1\nto = 2\nstep = 1\n\
             [[parameter]]\nkey = \"a\"\nvalues = [1]\n",
        )
        .unwrap_err();
        let all = errors.join("\n");
        for says in [
            "methd: unknown key",
            "objective: \"luck\" is not one of",
            "parameter[1].key: a.nope is not a key of the configuration",
            "parameter[2].to: 1 is below from = 5",
            "parameter[3].step: 0 must be above 0",
            "parameter[4].from: a.flag holds true, not a number",
            "parameter[5].key: a is a section",
            "constraints[1]: \"a.n\" is neither",
        ] {
            assert!(all.contains(says), "{says:?} missing from:\n{all}");
        }
        let refused = parse("[[parameter]]\nkey = \"a.n\"\nvalues = [0, 5]\n").unwrap_err();
        assert_eq!(
            refused,
            ["parameter[1].values: 0 for a.n: must be at least 1"]
        );
        let random = parse("method = \"random\"\n[[parameter]]\nkey = \"a.n\"\nvalues = [1]\n");
        assert!(random.unwrap_err()[0].contains("trials >= 1"));
    }

    #[test]
    fn grid_and_random_enumerate_exactly_what_they_should() {
        let mut draw = Draw(0x5EED);
        for case in 0..200 {
            // Two to three parameters of 1..6 values, one constraint or none.
            let counts: Vec<u64> = (0..2 + draw.below(2)).map(|_| 1 + draw.below(5)).collect();
            let keys = ["a.n", "a.x", "a.d"];
            let mut text = String::new();
            let constrained = draw.below(2) == 1;
            if constrained {
                text.push_str("constraints = [\"a.n < a.x\"]\n");
            }
            for (key, count) in keys.iter().zip(&counts) {
                let values: Vec<String> = match *key {
                    "a.n" => (1..=*count).map(|v| v.to_string()).collect(),
                    "a.x" => (1..=*count).map(|v| format!("{}.5", v - 1)).collect(),
                    _ => (1..=*count).map(|v| format!("\"0.0{v}\"")).collect(),
                };
                text.push_str(&format!(
                    "[[parameter]]\nkey = \"{key}\"\nvalues = [{}]\n",
                    values.join(", ")
                ));
            }
            let Ok(search) = parse(&text) else {
                // Only a constraint no combination meets is refused.
                assert!(constrained, "case {case}: {text}");
                continue;
            };
            // The oracle: nested loops, first parameter slowest.
            let mut expected: Vec<Vec<usize>> = vec![vec![]];
            for count in &counts {
                expected = expected
                    .into_iter()
                    .flat_map(|prefix| {
                        (0..*count as usize).map(move |i| {
                            let mut next = prefix.clone();
                            next.push(i);
                            next
                        })
                    })
                    .collect();
            }
            // n = i + 1 and x = j + 0.5: n < x when i < j + 0.5 - 1, i.e. i < j.
            expected.retain(|t| !constrained || t[0] < t[1]);
            assert_eq!(search.trials(), expected, "case {case}: {text}");
            for trials in [1, 3, 1000] {
                for seed in [0, 7] {
                    let random = Search {
                        method: Method::Random { trials, seed },
                        ..search.clone()
                    };
                    let drawn = random.trials();
                    assert_eq!(drawn.len(), trials.min(expected.len()));
                    assert!(drawn.iter().all(|t| expected.contains(t)), "from the grid");
                    assert!(
                        drawn.windows(2).all(|w| w[0] < w[1]),
                        "distinct, in grid order"
                    );
                    assert_eq!(drawn, random.trials(), "the same draw for the same seed");
                }
            }
        }
    }
}
