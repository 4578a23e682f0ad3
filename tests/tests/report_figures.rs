//! End-to-end: the report's figures mean what a trader expects, checked
//! against an independent recomputation from the candle file and the trade
//! log (an oracle written here, not the report's own code): equity marked
//! at every bar's close, Sharpe and Sortino annualised with the data's real
//! bar length and the configured year; a config whose interval disagrees
//! with the file is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

mod support;

use support::run_bistoury as bistoury;

/// Daily bars of one symbol, trending up and down; returns (time, close).
fn daily_file(path: &Path, bars: usize) -> Vec<(i64, f64)> {
    let market = support::TrendingMarket {
        symbol: "SPY",
        start_ms: 1_577_836_800_000,
        step_ms: 86_400_000,
        seed: 7,
        leg: 60,
        drift: 0.004,
        noise: 0.03,
        wick: 0.01,
        volume: 1000,
    };
    market.write(path, bars)
}

/// Per-bar equity from the trade log replayed against the closes: cash
/// moves by each fill (price, fee); positions are valued at each bar's
/// close, fills of a bar included.
fn equity_curve(trades: &str, closes: &[(i64, f64)], cash: f64) -> Vec<f64> {
    let mut by_bar: BTreeMap<i64, Vec<(f64, f64)>> = BTreeMap::new();
    for line in trades.lines().skip(1) {
        let f: Vec<&str> = line.splitn(11, ',').collect();
        let sign = if f[5] == "buy" { 1.0 } else { -1.0 };
        let quantity: f64 = f[6].parse().unwrap();
        let price: f64 = f[7].parse().unwrap();
        let fee: f64 = f[8].parse().unwrap();
        by_bar
            .entry(f[0].parse().unwrap())
            .or_default()
            .push((sign * quantity, price + fee / quantity * sign));
    }
    let (mut cash, mut held) = (cash, 0.0);
    closes
        .iter()
        .map(|(time, close)| {
            for (quantity, cost) in by_bar.get(time).into_iter().flatten() {
                cash -= quantity * cost;
                held += quantity;
            }
            cash + held * close
        })
        .collect()
}

/// Sharpe (sample standard deviation) and Sortino (downside root mean
/// square) of per-bar returns, times √periods.
fn ratios(equity: &[f64], periods: f64) -> (f64, f64) {
    let r: Vec<f64> = equity.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
    let n = r.len() as f64;
    let mean = r.iter().sum::<f64>() / n;
    let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let down = (r.iter().map(|x| x.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
    (mean / sd * periods.sqrt(), mean / down * periods.sqrt())
}

fn report(dir: &Path, out: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("report.json")).unwrap())
        .unwrap()
}

fn close_to(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

#[test]
fn daily_bars_are_annualised_as_days_and_equity_is_marked_at_every_close() {
    let dir = tempfile::tempdir().unwrap();
    let closes = daily_file(&dir.path().join("spy-1d.csv"), 600);
    // The lone crossover, no stops: every fill comes from a signal.
    let base = "[data]\nkind = \"file\"\npath = \"spy-1d.csv\"\ninterval = \"1d\"\n\n\
                [signals.rsi]\nenabled = false\n[signals.macd]\nenabled = false\n\
                [signals.bollinger]\nenabled = false\n[signals.candlestick]\nenabled = false\n\n\
                [trader]\nstop_loss = \"off\"\ntake_profit = \"off\"\n";
    for (year_days, out) in [(365u32, "crypto-year"), (252, "trading-year")] {
        let config = format!("{base}\n[report]\nyear_days = {year_days}\n");
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let run = bistoury(
            &["backtest", "--config", "config.toml", "--output-dir", out],
            dir.path(),
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report = report(dir.path(), out);
        let a = &report["annualisation"];
        assert_eq!(a["bar_interval_ms"], 86_400_000);
        assert_eq!(a["year_days"], year_days);
        assert_eq!(a["periods_per_year"].as_f64(), Some(f64::from(year_days)));
        let trades = std::fs::read_to_string(dir.path().join(out).join("trades.csv")).unwrap();
        assert!(
            trades.lines().count() > 6,
            "the crossover trades:\n{trades}"
        );
        let cash = report["initial_cash"].as_str().unwrap().parse().unwrap();
        let equity = equity_curve(&trades, &closes, cash);
        let (sharpe, sortino) = ratios(&equity, f64::from(year_days));
        let got = report["sharpe_ratio"].as_f64().unwrap();
        assert!(close_to(got, sharpe), "Sharpe {got}, recomputed {sharpe}");
        let got = report["sortino_ratio"].as_f64().unwrap();
        assert!(
            close_to(got, sortino),
            "Sortino {got}, recomputed {sortino}"
        );
        // A daily Sharpe of a strategy on this walk is a few units at
        // most; annualised as minutes it would be ~38 times larger.
        assert!(sharpe.abs() < 10.0, "{sharpe}");
        let last = *equity.last().unwrap();
        let final_equity: f64 = report["final_equity"].as_str().unwrap().parse().unwrap();
        assert!(close_to(final_equity, last), "{final_equity} vs {last}");
    }
}

#[test]
fn an_interval_that_disagrees_with_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    daily_file(&dir.path().join("spy-1d.csv"), 30);
    for (config, says) in [
        (
            "[data]\nkind = \"file\"\npath = \"spy-1d.csv\"\ninterval = \"1m\"\n",
            "set data.interval = \"1d\"",
        ),
        (
            "[data]\nkind = \"file\"\npath = \"spy-1d.csv\"\ninterval = \"1d\"\ninterval_ms = 60000\n",
            "data.interval_ms: 60000 disagrees with data.interval = \"1d\"",
        ),
        (
            "[data]\nkind = \"file\"\npath = \"spy-1d.csv\"\ninterval = \"daily\"\n",
            "data.interval: \"daily\" is not a bar length",
        ),
        ("[report]\nyear_days = 0\n", "report.year_days"),
    ] {
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        for args in [
            &["validate-config", "config.toml"][..],
            &["backtest", "--config", "config.toml"],
        ] {
            let command = args[0];
            let out = bistoury(args, dir.path());
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{command} {config}: {text}");
            assert!(text.contains(says), "{command} {config}: {text}");
        }
    }
}

/// Long only, all equity in each position, fees and slippage: orders are
/// sized at a signal's close and fill at a later open, so an order may cost
/// more than the cash there is. Replayed from the trade log, cash never
/// goes below zero, on random markets.
#[test]
fn cash_never_goes_negative_long_only() {
    for seed in 1..=4u64 {
        // Up a little more often than down: fills at a higher open than
        // the close the order was sized at.
        let trades = all_in_crossover_trades(seed, 0.001, false);
        let mut cash = rust_decimal::Decimal::new(100_000, 0);
        let mut buys = 0;
        for line in trades.lines().skip(1) {
            let f: Vec<&str> = line.splitn(11, ',').collect();
            let quantity: rust_decimal::Decimal = f[6].parse().unwrap();
            let price: rust_decimal::Decimal = f[7].parse().unwrap();
            let fee: rust_decimal::Decimal = f[8].parse().unwrap();
            if f[5] == "buy" {
                buys += 1;
                cash -= quantity * price + fee;
            } else {
                cash += quantity * price - fee;
            }
            assert!(
                cash >= rust_decimal::Decimal::ZERO,
                "seed {seed}: cash {cash} after {line}"
            );
        }
        assert!(buys > 10, "seed {seed}: {buys} buys");
    }
}

/// With `close_at_end`, what is open when the data ends is closed at its
/// last close: the report has no open position and no unrealised PnL, its
/// round trips count those last ones, and the trade log ends with them.
/// Without it, the open positions are listed with their marks.
#[test]
fn positions_open_at_the_end_are_listed_or_closed_at_the_last_close() {
    let dir = tempfile::tempdir().unwrap();
    // No slippage: the closing fills are at the last close exactly.
    let config = "[data]\ncandles = 3000\n[trader]\nslippage = \"0\"\n";
    std::fs::write(dir.path().join("open.toml"), config).unwrap();
    std::fs::write(
        dir.path().join("closed.toml"),
        format!("{config}close_at_end = true\n"),
    )
    .unwrap();
    let run = |file: &str, out: &str| {
        let run = bistoury(
            &["backtest", "--config", file, "--output-dir", out],
            dir.path(),
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        report(dir.path(), out)
    };
    let open = run("open.toml", "open");
    let positions = open["open_positions"].as_array().unwrap();
    assert!(
        !positions.is_empty(),
        "the default strategies hold something at the end"
    );
    for p in positions {
        let symbol = p["symbol"].as_str().unwrap();
        assert_eq!(p["mark"], open["symbols"][symbol]["last_price"], "{p}");
        assert_eq!(
            p["quantity"], open["symbols"][symbol]["final_position"],
            "{p}"
        );
    }
    let closed = run("closed.toml", "closed");
    assert_eq!(closed["open_positions"].as_array().unwrap().len(), 0);
    let unrealised: rust_decimal::Decimal =
        closed["unrealised_pnl"].as_str().unwrap().parse().unwrap();
    assert!(unrealised.is_zero(), "{unrealised}");
    assert_eq!(closed["accounting_identity_holds"], true);
    let trades = std::fs::read_to_string(dir.path().join("closed/trades.csv")).unwrap();
    let last: Vec<&str> = trades.lines().rev().take(positions.len()).collect();
    for (row, p) in last.iter().zip(positions.iter().rev()) {
        assert!(row.ends_with("end of data"), "{row}");
        let f: Vec<&str> = row.splitn(11, ',').collect();
        assert_eq!(f[4], p["symbol"].as_str().unwrap(), "{row}");
        // At the last close.
        assert_eq!(
            f[7].parse::<f64>().unwrap(),
            p["mark"].as_str().unwrap().parse::<f64>().unwrap(),
            "{row}"
        );
    }
    assert_eq!(
        closed["round_trips"]["count"].as_u64().unwrap(),
        open["round_trips"]["count"].as_u64().unwrap() + positions.len() as u64,
        "the closed positions are round trips too"
    );
}

/// Long and short, all equity in each position, reversals at every
/// crossing, fees and slippage, `max_leverage = 1` (the default): replayed
/// from the trade log, cash never goes below zero and no position is
/// worth more than the equity behind it, on random markets.
#[test]
fn shorts_stay_within_equity_and_cash_never_goes_negative() {
    use rust_decimal::Decimal;
    for seed in 5..=8u64 {
        let trades = all_in_crossover_trades(seed, 0.0, true);
        let (mut cash, mut held) = (Decimal::new(100_000, 0), Decimal::ZERO);
        let mut shorts = 0;
        for line in trades.lines().skip(1) {
            let f: Vec<&str> = line.splitn(11, ',').collect();
            let quantity: Decimal = f[6].parse().unwrap();
            let price: Decimal = f[7].parse().unwrap();
            let fee: Decimal = f[8].parse().unwrap();
            let signed = if f[5] == "buy" { quantity } else { -quantity };
            cash -= signed * price + fee;
            held += signed;
            if held < Decimal::ZERO {
                shorts += 1;
            }
            let equity = cash + held * price;
            assert!(
                cash >= Decimal::ZERO,
                "seed {seed}: cash {cash} after {line}"
            );
            assert!(
                held.abs() * price <= equity,
                "seed {seed}: {held} at {price} against equity {equity} after {line}"
            );
        }
        assert!(shorts > 5, "seed {seed}: {shorts} short fills");
    }
}

/// Backtests a lone 3/8 crossover acting on every crossing with all the
/// equity, fees and slippage, no stops and no risk limits (`allow_short`
/// as given), on a seeded random hourly market of one symbol whose bars
/// drift by `drift`; returns the trade log.
fn all_in_crossover_trades(seed: u64, drift: f64, allow_short: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("open_time_ms,symbol,open,high,low,close,volume\n");
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut price = 50.0_f64;
    for i in 0..800 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        // Each bar opens where the last closed.
        let open = price;
        let close = ((open * (1.0 + drift + noise * 0.02)) * 100.0).round() / 100.0;
        text.push_str(&format!(
            "{},XYZ,{open:.2},{:.2},{:.2},{close:.2},10\n",
            1_600_000_000_000_i64 + i * 3_600_000,
            open.max(close) * 1.002,
            open.min(close) * 0.998
        ));
        price = close;
    }
    std::fs::write(dir.path().join("xyz-1h.csv"), text).unwrap();
    let config = format!(
        "[data]\nkind = \"file\"\npath = \"xyz-1h.csv\"\ninterval = \"1h\"\n\n\
         [signals]\nthreshold = 0.0\n[signals.ma_crossover]\nfast = 3\nslow = 8\n\
         [signals.rsi]\nenabled = false\n[signals.macd]\nenabled = false\n\
         [signals.bollinger]\nenabled = false\n[signals.candlestick]\nenabled = false\n\n\
         [trader]\nposition_fraction = \"1\"\nallow_short = {allow_short}\nmin_confidence = 0.0\n\
         fee_rate = \"0.001\"\nslippage = \"0.0005\"\nstop_loss = \"off\"\ntake_profit = \"off\"\n\n\
         [risk]\nmax_position_notional = \"off\"\nmax_order_notional = \"off\"\n\
         max_drawdown = \"off\"\nmax_daily_loss = \"off\"\n"
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let run = bistoury(
        &["backtest", "--config", "config.toml", "--output-dir", "out"],
        dir.path(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(dir.path().join("out/trades.csv")).unwrap()
}

/// The report keeps the bus's own figures: per subscription what was
/// delivered (the signals agent gets each candle once, and nothing else),
/// queue high-water marks and handler latency on the queued bus, and per
/// agent its restarts and the state changes it announced.
#[test]
fn the_report_keeps_the_bus_figures_of_a_backtest_and_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[data]\ncandles = 400\n";
    std::fs::write(dir.path().join("small.toml"), config).unwrap();
    for (command, kind) in [("backtest", "inline"), ("run", "queued")] {
        let out = bistoury(
            &[command, "--config", "small.toml", "--output-dir", command],
            dir.path(),
        );
        assert!(out.status.success(), "{out:?}");
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains(&format!("bus ({kind}):")), "{table}");
        let report = report(dir.path(), command);
        let bus = &report["bus"];
        assert_eq!(bus["kind"], kind, "{bus:#}");
        let subscriptions = bus["subscriptions"].as_array().unwrap();
        let named = |name: &str| {
            subscriptions
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no {name} subscription: {bus:#}"))
        };
        assert_eq!(named("signals")["delivered"], report["candles"], "{bus:#}");
        let delivered: u64 = subscriptions
            .iter()
            .map(|s| s["delivered"].as_u64().unwrap())
            .sum();
        assert_eq!(bus["delivered"].as_u64().unwrap(), delivered);
        assert_eq!(bus["dropped"], 0);
        let trader = named("trader");
        match kind {
            "queued" => {
                assert!(trader["queue_high_water"].as_u64().unwrap() >= 1);
                let latency = &trader["latency"];
                let (p50, p99, max) = (
                    latency["p50_us"].as_f64().unwrap(),
                    latency["p99_us"].as_f64().unwrap(),
                    latency["max_us"].as_f64().unwrap(),
                );
                assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
                // Every order timed from its bar's candle (in lockstep no
                // candle runs far ahead of the orders).
                let timed = &bus["tick_to_order"];
                assert!(timed["orders"].as_u64().unwrap() > 0, "{timed}");
                assert_eq!(timed["untimed"], 0, "{timed}");
                let [p50, p99, p999, max] =
                    ["p50_us", "p99_us", "p999_us", "max_us"].map(|q| timed[q].as_f64().unwrap());
                assert!(
                    0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
                    "{timed}"
                );
                assert!(table.contains("tick to order: "), "{table}");
            }
            _ => {
                assert!(trader["latency"].is_null() && trader["queue_high_water"].is_null());
                assert!(
                    bus["tick_to_order"].is_null(),
                    "a backtest's times mean nothing"
                );
            }
        }
        // The charts and the page beside the report.
        let folder = dir.path().join(command);
        let page = std::fs::read_to_string(folder.join("report.html")).unwrap();
        let fills = report["fills"].as_u64().unwrap() as usize;
        assert!(fills > 0 && fills < 2_000);
        assert_eq!(
            page.matches("<tr>").count(),
            fills + 1,
            "every fill, and the header"
        );
        assert!(page.contains(&format!("Bistoury report: {} candles", report["candles"])));
        let symbols = report["symbols"].as_object().unwrap();
        assert_eq!(page.matches("<svg").count(), 1 + symbols.len());
        for name in
            std::iter::once("equity".to_string()).chain(symbols.keys().map(|s| format!("pnl-{s}")))
        {
            let chart = std::fs::read_to_string(folder.join(format!("{name}.svg"))).unwrap();
            assert!(
                chart.starts_with("<svg") && chart.contains("<polyline"),
                "{name}"
            );
            assert!(page.contains(&chart), "{name} is in the page");
        }
        let agents = bus["agents"].as_array().unwrap();
        let mut names: Vec<&str> = agents.iter().map(|a| a["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "collector",
                "orchestrator",
                "report",
                "risk",
                "signals",
                "trader"
            ]
        );
        for agent in agents.iter().filter(|a| a["name"] != "orchestrator") {
            assert_eq!(agent["restarts"], 0);
            assert_eq!(agent["state_changes"]["started"], 1, "{agent}");
        }
    }
}
