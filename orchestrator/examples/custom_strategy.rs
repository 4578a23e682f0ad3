//! Writing your own strategy: implement `Strategy`, register a factory
//! under its name, and turn it on in the configuration with
//! `[signals.custom.<name>]` (its weight and numeric parameters). No
//! change to bus-core or to the agents: the signal agent builds one per
//! symbol and aggregates its signals with the others.
//!
//! ```text
//! cargo run --release -p orchestrator --example custom_strategy \
//!     [-- orchestrator/examples/custom_strategy.toml]
//! ```

use std::collections::VecDeque;
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_signals::{Bar, Strategy, StrategyRegistry, StrategySignal};
use bus_core::model::payload::SignalDirection;
use orchestrator::config::BistouryConfig;
use orchestrator::run::{backtest_with, RunControl};

/// Long when a bar closes above the highest high of the `period` bars
/// before it, short below the lowest low.
struct Breakout {
    period: usize,
    window: VecDeque<Bar>,
    /// Signals given, counted across symbols (for the printout).
    spoken: Arc<AtomicU64>,
}

impl Strategy for Breakout {
    fn name(&self) -> &'static str {
        "breakout"
    }

    fn on_bar(&mut self, bar: &Bar) -> Option<StrategySignal> {
        let full = self.window.len() == self.period;
        let signal = full.then(|| {
            let high = self.window.iter().map(|b| b.high).fold(f64::MIN, f64::max);
            let low = self.window.iter().map(|b| b.low).fold(f64::MAX, f64::min);
            if bar.close > high {
                Some((SignalDirection::Long, "close above the channel"))
            } else if bar.close < low {
                Some((SignalDirection::Short, "close below the channel"))
            } else {
                None
            }
        });
        if full {
            self.window.pop_front();
        }
        self.window.push_back(*bar);
        let (direction, reason) = signal.flatten()?;
        self.spoken.fetch_add(1, Ordering::Relaxed);
        Some(StrategySignal {
            direction,
            confidence: 0.8,
            reason,
        })
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let file = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/custom_strategy.toml")
        });
    let mut config = BistouryConfig::load(Some(&file), &[])?;
    config.run.output_dir = std::env::temp_dir().join("bistoury-example-custom-strategy");
    std::fs::create_dir_all(&config.run.output_dir)?;

    let spoken = Arc::new(AtomicU64::new(0));
    let counter = spoken.clone();
    let strategies = StrategyRegistry::new().register("breakout", move |settings| {
        let period = settings.param("period")?;
        if !(period >= 2.0 && period.fract() == 0.0) {
            return Err(format!("period must be a whole number >= 2, not {period}"));
        }
        Ok(Box::new(Breakout {
            period: period as usize,
            window: VecDeque::new(),
            spoken: counter.clone(),
        }))
    });
    let control = RunControl {
        strategies,
        ..RunControl::default()
    };
    let outcome = backtest_with(&config, &control)?;
    print!("{}", outcome.report.to_table());
    println!(
        "breakout signals: {} (over {} candles)",
        spoken.load(Ordering::Relaxed),
        outcome.report.candles
    );
    Ok(())
}
