//! A backtest from your own program: load a configuration (the embedded
//! default, or a TOML file layered on it), run every agent inline, read
//! the report.
//!
//! ```text
//! cargo run --release -p orchestrator --example backtest [-- config.toml]
//! ```

use std::error::Error;
use std::path::PathBuf;

use orchestrator::config::BistouryConfig;
use orchestrator::run::backtest;

fn main() -> Result<(), Box<dyn Error>> {
    let file = std::env::args().nth(1).map(PathBuf::from);
    let mut config = BistouryConfig::load(file.as_deref(), &[])?;
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(problems.join("\n").into());
    }
    // The trade log goes here; the report stays in memory.
    config.run.output_dir = std::env::temp_dir().join("bistoury-example-backtest");
    std::fs::create_dir_all(&config.run.output_dir)?;

    let outcome = backtest(&config)?;
    let report = &outcome.report;
    print!("{}", report.to_table());
    println!(
        "{} candles in {:.2?}; trade log: {} ({} rows)",
        report.candles,
        outcome.elapsed,
        outcome.trade_log.display(),
        outcome.trade_log_rows
    );
    Ok(())
}
