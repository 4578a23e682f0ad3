//! The run report, computed from the trade log and the market data that
//! flowed over the bus.
//!
//! [`ReportAgent`] is an ordinary agent: it listens to candles (marks),
//! fills (the trade log) and emergency stops, replays the fills through its
//! own [`Portfolio`] and samples equity once per time step. So the report
//! does not trust the trader's own figures; the end-to-end tests compare
//! the two.
//!
//! Every candle and fill counts for the market time it belongs to, not
//! for when its message arrived: a time step is held open until
//! [`STEPS_HELD`] later steps have begun (one, where messages come in
//! market-time order: a backtest, `run` in lockstep), then closed — its
//! fills applied (in the order they came), its markets marked at their
//! closes, its equity sampled. A fill that reaches the report even later
//! still counts (from the next step on) and is counted as late.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use agent_trader::Portfolio;
use bus_core::model::payload::{Candle, Fill};
use bus_core::model::{decimal_to_f64, CandleSequence, SymbolMap};
use bus_core::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;

/// Round trips: a position from flat (or a reversal) back to flat (or the
/// next reversal). Its net PnL is its realised PnL less every fee paid on
/// the way in and out (a reversing fill's fee is split by quantity).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundTrips {
    /// Round trips closed.
    pub count: u64,
    /// Round trips with a positive net PnL.
    pub won: u64,
    /// Round trips with a positive PnL before fees.
    pub won_before_fees: u64,
    /// won / count.
    pub win_rate: f64,
    /// won_before_fees / count.
    pub win_rate_before_fees: f64,
    /// Net PnL of the winners, summed.
    pub gross_profit: Decimal,
    /// Net PnL of the others, summed (zero or negative).
    pub gross_loss: Decimal,
    /// Mean net PnL of a winner.
    pub average_win: Decimal,
    /// Mean net PnL of a loser (zero or negative).
    pub average_loss: Decimal,
    /// gross_profit / -gross_loss; `None` without a losing round trip.
    pub profit_factor: Option<f64>,
    /// Mean net PnL per round trip.
    pub expectancy: Decimal,
}

/// The round trip under way in one market.
#[derive(Debug, Clone, Default)]
struct OpenTrip {
    /// Realised PnL so far (partial closes).
    realised: Decimal,
    /// Fees paid so far, in and out.
    fees: Decimal,
}

#[derive(Debug, Clone, Default)]
struct TripTally {
    count: u64,
    won: u64,
    won_before_fees: u64,
    /// Net PnL of winners, and of the others.
    profit: Decimal,
    loss: Decimal,
}

impl TripTally {
    fn close(&mut self, trip: OpenTrip) {
        let net = trip.realised - trip.fees;
        self.count += 1;
        if net > Decimal::ZERO {
            self.won += 1;
            self.profit += net;
        } else {
            self.loss += net;
        }
        if trip.realised > Decimal::ZERO {
            self.won_before_fees += 1;
        }
    }

    fn add(&mut self, other: &TripTally) {
        self.count += other.count;
        self.won += other.won;
        self.won_before_fees += other.won_before_fees;
        self.profit += other.profit;
        self.loss += other.loss;
    }

    fn report(&self) -> RoundTrips {
        let mean = |sum: Decimal, n: u64| {
            if n == 0 {
                Decimal::ZERO
            } else {
                (sum / Decimal::from(n)).round_dp(8)
            }
        };
        let lost = self.count - self.won;
        RoundTrips {
            count: self.count,
            won: self.won,
            won_before_fees: self.won_before_fees,
            win_rate: ratio(self.won, self.count),
            win_rate_before_fees: ratio(self.won_before_fees, self.count),
            gross_profit: self.profit,
            gross_loss: self.loss,
            average_win: mean(self.profit, self.won),
            average_loss: mean(self.loss, lost),
            profit_factor: (self.loss < Decimal::ZERO)
                .then(|| round6(decimal_to_f64(self.profit) / -decimal_to_f64(self.loss))),
            expectancy: mean(self.profit + self.loss, self.count),
        }
    }
}

/// A position still open when the data ended, valued at its last mark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenPosition {
    /// Market.
    pub symbol: String,
    /// Signed quantity.
    pub quantity: Decimal,
    /// Average entry price.
    pub average_price: Decimal,
    /// Last close.
    pub mark: Decimal,
    /// Unrealised PnL at that mark (before the fee closing would cost).
    pub unrealised_pnl: Decimal,
}

/// Per-market figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SymbolReport {
    /// Fills.
    pub fills: u64,
    /// Round trips closed, and how they went.
    pub round_trips: RoundTrips,
    /// Realised PnL before fees.
    pub realised_pnl: Decimal,
    /// Unrealised PnL at the last price.
    pub unrealised_pnl: Decimal,
    /// Fees paid.
    pub fees: Decimal,
    /// Position at the end.
    pub final_position: Decimal,
    /// Last price.
    pub last_price: Decimal,
    /// Fraction of time steps with a position open.
    pub exposure: f64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Candles that moved market time on (each counted once).
    pub candles: u64,
    /// Candles passed by: repeats of one already seen (an at-least-once
    /// redelivery) or late (older than the last of their symbol).
    pub candles_late_or_repeated: u64,
    /// Data rows skipped (malformed, out of order or repeated) under
    /// `data.bad_rows = "skip"`, each logged with its file and line.
    pub data_rows_skipped: usize,
    /// Time steps (distinct candle times).
    pub time_steps: u64,
    /// First and last candle time.
    pub period_ms: (i64, i64),
    /// Starting cash.
    pub initial_cash: Decimal,
    /// Cash plus marked positions at the end.
    pub final_equity: Decimal,
    /// Realised PnL before fees.
    pub realised_pnl: Decimal,
    /// Unrealised PnL at the end.
    pub unrealised_pnl: Decimal,
    /// Fees paid.
    pub fees: Decimal,
    /// (final - initial) / initial.
    pub total_return: f64,
    /// Fills (a round trip takes two or more).
    pub fills: u64,
    /// Round trips closed, and how they went, net of fees.
    pub round_trips: RoundTrips,
    /// Positions still open at the end (not in `round_trips`).
    pub open_positions: Vec<OpenPosition>,
    /// Largest fall from a peak of equity, as a fraction of the peak.
    pub max_drawdown: f64,
    /// Longest time (market time) equity spent below a previous peak,
    /// recovered or not.
    pub longest_drawdown_ms: i64,
    /// How the ratios are annualised.
    pub annualisation: Annualisation,
    /// Annualised Sharpe ratio of per-step returns (risk-free rate 0).
    pub sharpe_ratio: f64,
    /// Annualised Sortino ratio of per-step returns.
    pub sortino_ratio: f64,
    /// Fraction of time steps with any position open.
    pub exposure: f64,
    /// Market time of the emergency stop, if any.
    pub emergency_stop_at_ms: Option<i64>,
    /// Market times the daily-loss limit paused trading (until the next
    /// UTC day).
    pub daily_loss_pauses_at_ms: Vec<i64>,
    /// Fills after the emergency stop (only risk-reducing exits are allowed).
    pub fills_after_emergency_stop: u64,
    /// Fills that reached the report after their time step had closed (more
    /// steps late than the report holds): counted from the next step on.
    pub fills_counted_late: u64,
    /// Fills taken back from the trade journal at start (a live run
    /// resumed after a crash or a stop): in the positions, cash, fills and
    /// round trips; the equity curve starts after them.
    pub fills_resumed: u64,
    /// final equity == initial cash + realised + unrealised - fees, exactly.
    pub accounting_identity_holds: bool,
    /// Per market.
    pub symbols: BTreeMap<String, SymbolReport>,
    /// The bus's own figures (set by the run once the bus has stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<crate::bus_summary::BusSummary>,
    /// The model strategy's questions and answers (`[signals.llm]`, set by
    /// the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::model::ModelUsage>,
    /// Per agent, the state changes it announced, as the report heard them
    /// (they go into [`bus`](Self::bus)).
    #[serde(skip)]
    pub agent_state_changes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Equity at each time step with every fill, then each market's profit
    /// and loss net of its fees with its fills: what the charts draw.
    #[serde(skip)]
    pub curves: Vec<crate::charts::Curve>,
}

/// How per-bar ratios become yearly ones: returns are per bar of
/// `bar_interval_ms`, `periods_per_year` of them make a year of
/// `year_days` days; a ratio is multiplied by √`periods_per_year`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Annualisation {
    /// The data's bar length.
    pub bar_interval_ms: i64,
    /// Days in a year (365 crypto, 252 equities).
    pub year_days: u32,
    /// Bars in a year.
    pub periods_per_year: f64,
}

impl Annualisation {
    /// For bars of `bar_interval_ms` and a year of `year_days`.
    pub fn new(bar_interval_ms: i64, year_days: u32) -> Self {
        Self {
            bar_interval_ms,
            year_days,
            periods_per_year: f64::from(year_days) * 86_400_000.0 / bar_interval_ms.max(1) as f64,
        }
    }
}

/// Time steps a report holds open for what comes late, where messages
/// may come out of market-time order (agents running free, or as
/// processes): a fill or a candle of a step still open counts for its own
/// step, whatever came between.
pub const STEPS_HELD: usize = 256;

/// A time step not closed yet: its candles' closes and its fills.
#[derive(Debug)]
struct OpenStep {
    time: i64,
    marks: Vec<(bus_core::model::payload::Symbol, Decimal)>,
    fills: Vec<Fill>,
}

impl OpenStep {
    fn new(time: i64) -> Self {
        Self {
            time,
            marks: Vec::new(),
            fills: Vec::new(),
        }
    }
}

/// One market's PnL net of fees, step by step.
#[derive(Default)]
struct MarketCurve {
    points: crate::charts::Downsampled,
    /// Realised PnL less the cost basis and fees, as of the last fill: the
    /// PnL is this plus the position's marked value.
    settled: f64,
}

#[derive(Default)]
struct SymbolTally {
    fills: u64,
    trips: TripTally,
    open: Option<OpenTrip>,
    exposed_steps: u64,
}

/// Builds the report from the messages it sees.
pub struct ReportAgent {
    id: AgentId,
    portfolio: Portfolio,
    tallies: SymbolMap<SymbolTally>,
    candles: u64,
    first_time: Option<i64>,
    last_time: i64,
    /// Time steps not closed yet, oldest first.
    open_steps: VecDeque<OpenStep>,
    /// Closed steps kept for their buffers (a step a bar, allocated once).
    spare_steps: Vec<OpenStep>,
    /// Steps held open behind the newest.
    steps_held: usize,
    /// The last step closed.
    closed_up_to: Option<i64>,
    fills_late: u64,
    steps: u64,
    exposed_steps: u64,
    equity: EquityStats,
    annualisation: Annualisation,
    emergency_stop_at: Option<i64>,
    daily_loss_pauses: Vec<i64>,
    /// Highest equity sampled, and the market time of its step.
    peak: Option<(f64, i64)>,
    longest_drawdown_ms: i64,
    fills_after_stop: u64,
    /// Which candles are news (a redelivered one is not counted again).
    sequence: CandleSequence,
    outcome: Option<Outcome<Report>>,
    account: Option<Arc<Mutex<AccountView>>>,
    fills_resumed: u64,
    /// Per agent, the state changes it announced.
    agent_state_changes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Equity at each closed step (downsampled: bounded memory).
    equity_curve: crate::charts::Downsampled,
    /// Per market, its PnL net of fees at each closed step.
    market_curves: SymbolMap<MarketCurve>,
    /// Fills: time, market, buy.
    fill_marks: Vec<(i64, Symbol, bool)>,
    /// Record the account as Prometheus metrics.
    metrics: bool,
    /// Where the status page reads the account, and the limits it shows.
    status: Option<(crate::status::StatusBoard, StatusLimits)>,
    /// The UTC day of the last step and the equity it started with.
    day_start: Option<(i64, f64)>,
}

/// The risk limits the status page measures the account against.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusLimits {
    /// Largest drawdown, a fraction.
    pub max_drawdown: Option<f64>,
    /// Largest loss within a UTC day.
    pub max_daily_loss: Option<f64>,
    /// Most markets with a position.
    pub max_open_positions: Option<usize>,
}

/// The account as of the last step closed, for a progress display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountView {
    /// Equity.
    pub equity: Decimal,
    /// Open positions (signed quantities), by market.
    pub positions: Vec<(Symbol, Decimal)>,
}

impl ReportAgent {
    /// A report starting from `initial_cash`, for bars of `interval_ms`,
    /// annualised over years of `year_days`.
    pub fn new(initial_cash: Decimal, interval_ms: i64, year_days: u32) -> Self {
        Self {
            id: AgentId::new(crate::agents::AgentKind::Report.name()),
            portfolio: Portfolio::new(initial_cash),
            tallies: SymbolMap::new(),
            candles: 0,
            first_time: None,
            last_time: 0,
            open_steps: VecDeque::new(),
            spare_steps: Vec::new(),
            steps_held: STEPS_HELD,
            closed_up_to: None,
            fills_late: 0,
            steps: 0,
            exposed_steps: 0,
            equity: EquityStats::default(),
            annualisation: Annualisation::new(interval_ms, year_days),
            account: None,
            fills_resumed: 0,
            agent_state_changes: BTreeMap::new(),
            equity_curve: Default::default(),
            market_curves: SymbolMap::new(),
            fill_marks: Vec::new(),
            metrics: false,
            status: None,
            day_start: None,
            emergency_stop_at: None,
            daily_loss_pauses: Vec::new(),
            peak: None,
            longest_drawdown_ms: 0,
            fills_after_stop: 0,
            sequence: CandleSequence::new(),
            outcome: None,
        }
    }

    /// The open step of market time `time` (opened if need be); `None`
    /// when that step is closed already.
    fn step_at(&mut self, time: i64) -> Option<&mut OpenStep> {
        if self.closed_up_to.is_some_and(|closed| time <= closed) {
            return None;
        }
        let at = match self.open_steps.binary_search_by_key(&time, |s| s.time) {
            Ok(at) => at,
            Err(at) => {
                let step = match self.spare_steps.pop() {
                    Some(mut spare) => {
                        spare.time = time;
                        spare
                    }
                    None => OpenStep::new(time),
                };
                // Mostly the newest step: a push, not a general insert.
                if at == self.open_steps.len() {
                    self.open_steps.push_back(step);
                } else {
                    self.open_steps.insert(at, step);
                }
                at
            }
        };
        self.open_steps.get_mut(at)
    }

    /// Closes the oldest steps until at most `keep` are open.
    fn close_steps(&mut self, keep: usize) {
        while self.open_steps.len() > keep {
            let Some(mut step) = self.open_steps.pop_front() else {
                break;
            };
            for fill in &step.fills {
                self.apply_fill(fill);
            }
            for (symbol, close) in &step.marks {
                self.portfolio.mark(symbol, *close);
            }
            self.closed_up_to = Some(step.time);
            self.close_step(step.time);
            step.fills.clear();
            step.marks.clear();
            self.spare_steps.push(step);
        }
    }

    fn close_step(&mut self, time: i64) {
        self.steps += 1;
        // One pass: each position's marked value once, for its market's
        // curve and for the equity (the sums `Portfolio::equity` makes).
        let mut value = Decimal::ZERO;
        let mut any = false;
        for (symbol, position) in &self.portfolio.positions {
            let marked = position.quantity * position.mark;
            value += marked;
            // A chart's point: the part that moves with the mark is added
            // to the rest, converted when a fill changed it.
            let curve = self.market_curves.get_or_default(symbol);
            curve
                .points
                .push(time, curve.settled + decimal_to_f64(marked));
            if !position.quantity.is_zero() {
                any = true;
                self.tallies.get_or_default(symbol).exposed_steps += 1;
            }
        }
        if any {
            self.exposed_steps += 1;
        }
        let exact_equity = self.portfolio.cash + value;
        let equity = decimal_to_f64(exact_equity);
        self.equity.push(equity);
        match self.peak {
            Some((peak, since)) if equity < peak => {
                self.longest_drawdown_ms = self.longest_drawdown_ms.max(time - since);
            }
            _ => self.peak = Some((equity, time)),
        }
        self.equity_curve.push(time, equity);
        if self.metrics {
            self.record_metrics(equity);
        }
        if self.status.is_some() {
            self.show_status(time, equity);
        }
        if let Some(Ok(mut view)) = self.account.as_ref().map(|a| a.lock()) {
            view.equity = exact_equity;
            view.positions = (self.portfolio.positions.iter())
                .filter(|(_, p)| !p.quantity.is_zero())
                .map(|(symbol, p)| (symbol.clone(), p.quantity))
                .collect();
        }
    }

    /// Starts from the fills a resumed trader took back from its journal
    /// (oldest first): in the book, not in the equity curve.
    pub fn resumed(mut self, fills: &[Fill]) -> Self {
        for fill in fills {
            self.apply_fill(fill);
            self.fills_resumed += 1;
        }
        self
    }

    /// Shows the account on `board` at each step it closes, measured against
    /// `limits`.
    pub fn with_status(mut self, board: crate::status::StatusBoard, limits: StatusLimits) -> Self {
        self.status = Some((board, limits));
        self
    }

    fn show_status(&mut self, time: i64, equity: f64) {
        let day = time.div_euclid(86_400_000);
        let day_equity = match self.day_start {
            Some((d, start)) if d == day => start,
            _ => {
                self.day_start = Some((day, equity));
                equity
            }
        };
        let Some((board, limits)) = &self.status else {
            return;
        };
        let p = &self.portfolio;
        let drawdown = self.drawdown_at(equity);
        let mut risk = Vec::new();
        let mut limit = |name: &str, value: f64, threshold: Option<f64>| {
            if let Some(threshold) = threshold.filter(|t| *t > 0.0) {
                risk.push(crate::status::LimitLine {
                    limit: name.into(),
                    value,
                    threshold,
                    used: value / threshold,
                });
            }
        };
        limit("max_drawdown", drawdown, limits.max_drawdown);
        limit(
            "max_daily_loss",
            (day_equity - equity).max(0.0),
            limits.max_daily_loss,
        );
        let open = p.open_positions();
        limit(
            "max_open_positions",
            open as f64,
            limits.max_open_positions.map(|n| n as f64),
        );
        let positions = (p.positions.iter())
            .filter(|(_, position)| !position.quantity.is_zero())
            .map(|(symbol, position)| crate::status::PositionLine {
                symbol: symbol.to_string(),
                quantity: position.quantity.to_string(),
                average_price: position.average_price().round_dp(4).to_string(),
                mark: position.mark.to_string(),
                unrealised_pnl: position.unrealised().round_dp(2).to_string(),
            })
            .collect();
        let candles = self.candles;
        board.update(|s| {
            s.push_equity(time, equity);
            s.candles = candles;
            s.positions = positions;
            s.risk = risk;
        });
    }

    /// Records the account as Prometheus metrics at each step it closes.
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// The fall of `equity` from the highest equity sampled, as a fraction.
    fn drawdown_at(&self, equity: f64) -> f64 {
        let peak = self.peak.map_or(equity, |(peak, _)| peak.max(equity));
        if peak > 0.0 {
            (peak - equity) / peak
        } else {
            0.0
        }
    }

    fn record_metrics(&self, equity: f64) {
        let p = &self.portfolio;
        metrics::gauge!("bistoury_equity").set(equity);
        metrics::gauge!("bistoury_realised_pnl").set(decimal_to_f64(p.realised()));
        metrics::gauge!("bistoury_unrealised_pnl").set(decimal_to_f64(p.unrealised()));
        metrics::gauge!("bistoury_fees").set(decimal_to_f64(p.fees()));
        metrics::gauge!("bistoury_open_positions").set(p.open_positions() as f64);
        metrics::gauge!("bistoury_drawdown").set(self.drawdown_at(equity));
        metrics::counter!("bistoury_time_steps_total").increment(1);
        metrics::counter!("bistoury_candles_total").absolute(self.candles);
    }

    /// Shows the account in `view` at each step it closes.
    pub fn with_account_view(mut self, view: Arc<Mutex<AccountView>>) -> Self {
        self.account = Some(view);
        self
    }

    /// Holds one step open only: for messages that come in market-time
    /// order (a backtest, `run` in lockstep).
    pub fn in_market_time_order(mut self) -> Self {
        self.steps_held = 1;
        self
    }

    /// Follows up to `max_symbols` symbols.
    pub fn with_max_symbols(mut self, max_symbols: usize) -> Self {
        self.sequence = CandleSequence::with_limit(max_symbols);
        self
    }

    fn on_candle(&mut self, candle: &Candle) {
        if !self.sequence.is_new(candle) {
            return;
        }
        let time = candle.open_time_ms;
        self.first_time = Some(self.first_time.map_or(time, |t| t.min(time)));
        self.last_time = self.last_time.max(time);
        self.candles += 1;
        self.tallies.get_or_default(&candle.symbol);
        match self.step_at(time) {
            Some(step) => step.marks.push((candle.symbol.clone(), candle.close)),
            // Behind every open step: it marks from the next one on.
            None => {
                self.portfolio.mark(&candle.symbol, candle.close);
            }
        }
        self.close_steps(self.steps_held);
    }

    fn on_fill(&mut self, fill: &Fill) {
        if self.emergency_stop_at.is_some() {
            self.fills_after_stop += 1;
        }
        match self.step_at(fill.timestamp_ms) {
            Some(step) => step.fills.push(fill.clone()),
            None => {
                self.fills_late += 1;
                self.apply_fill(fill);
            }
        }
        self.close_steps(self.steps_held);
    }

    /// Replays one fill through the report's portfolio and round trips.
    fn apply_fill(&mut self, fill: &Fill) {
        let buy = fill.side == bus_core::model::payload::Side::Buy;
        (self.fill_marks).push((fill.timestamp_ms, fill.symbol.clone(), buy));
        if let Some((board, _)) = &self.status {
            let line = crate::status::FillLine {
                time_ms: fill.timestamp_ms,
                symbol: fill.symbol.to_string(),
                side: crate::status::side(fill.side).into(),
                quantity: fill.quantity.to_string(),
                price: fill.price.to_string(),
            };
            board.update(|s| s.push_fill(line));
        }
        let held = self.portfolio.quantity(&fill.symbol);
        let effect =
            self.portfolio
                .apply_fill(&fill.symbol, fill.side, fill.quantity, fill.price, fill.fee);
        if let Some(p) = self.portfolio.positions.get(&fill.symbol) {
            (self.market_curves.get_or_default(&fill.symbol)).settled =
                decimal_to_f64(p.realised - p.cost_basis - p.fees);
        }
        let tally = self.tallies.get_or_default(&fill.symbol);
        tally.fills += 1;
        // The part of the fill that closes the position held, and the part
        // that opens (or adds to) one; the fee is split between them.
        let signed = fill.side.sign() * fill.quantity;
        let closing = if held.is_zero() || held.is_sign_positive() == signed.is_sign_positive() {
            Decimal::ZERO
        } else {
            fill.quantity.min(held.abs())
        };
        let closing_fee = match fill.quantity.is_zero() {
            true => Decimal::ZERO,
            false => fill.fee * closing / fill.quantity,
        };
        if !closing.is_zero() {
            let trip = tally.open.get_or_insert_with(OpenTrip::default);
            trip.realised += effect.realised;
            trip.fees += closing_fee;
            if closing == held.abs() {
                let trip = tally.open.take().unwrap_or_default();
                tally.trips.close(trip);
            }
        }
        if closing < fill.quantity {
            tally.open.get_or_insert_with(OpenTrip::default).fees += fill.fee - closing_fee;
        }
    }

    /// The charts' data: total equity, then each market's PnL.
    fn curves(&self) -> Vec<crate::charts::Curve> {
        // In market-time order, whatever order the fills came in.
        let mut sorted = self.fill_marks.clone();
        sorted.sort();
        let marks = |of: Option<&Symbol>| {
            (sorted.iter())
                .filter(|(_, symbol, _)| of.is_none_or(|s| s == symbol))
                .map(|(t, _, buy)| (*t, *buy))
                .collect()
        };
        let mut curves = vec![crate::charts::Curve {
            title: "Equity, all markets (fills marked: ▲ buy, ▼ sell)".into(),
            name: "equity".into(),
            points: self.equity_curve.points(),
            fills: marks(None),
        }];
        for (symbol, curve) in self.market_curves.iter() {
            curves.push(crate::charts::Curve {
                title: format!("{symbol}: profit and loss net of fees"),
                name: format!("pnl-{symbol}"),
                points: curve.points.points(),
                fills: marks(Some(symbol)),
            });
        }
        curves
    }

    fn heard_state_change(&mut self, agent: &AgentId, envelope: &Envelope) {
        let change = envelope
            .message_type()
            .as_str()
            .trim_start_matches("agent.");
        let changes = self
            .agent_state_changes
            .entry(agent.to_string())
            .or_default();
        *changes.entry(change.to_string()).or_default() += 1;
        if let Some((board, _)) = &self.status {
            board.update(|s| {
                s.agents.insert(agent.to_string(), change.to_string());
            });
        }
        if self.metrics && change != "error" {
            let running = f64::from(u8::from(change != "paused"));
            metrics::gauge!("bistoury_agent_running", "agent" => agent.to_string()).set(running);
        }
    }

    /// Hands the finished report to `outcome` when it stops.
    pub fn with_outcome(mut self, outcome: Outcome<Report>) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// The finished report (closes the last time step).
    pub fn finish(&mut self) -> Report {
        self.close_steps(0);
        let p = &self.portfolio;
        let symbols: BTreeMap<String, SymbolReport> = self
            .tallies
            .iter()
            .map(|(symbol, t)| {
                let position = p.positions.get(symbol).cloned().unwrap_or_default();
                (
                    symbol.to_string(),
                    SymbolReport {
                        fills: t.fills,
                        round_trips: t.trips.report(),
                        realised_pnl: position.realised,
                        unrealised_pnl: position.unrealised(),
                        fees: position.fees,
                        final_position: position.quantity,
                        last_price: position.mark,
                        exposure: ratio(t.exposed_steps, self.steps),
                    },
                )
            })
            .collect();
        let mut trips = TripTally::default();
        for tally in self.tallies.values() {
            trips.add(&tally.trips);
        }
        let open_positions = p
            .positions
            .iter()
            .filter(|(_, position)| !position.quantity.is_zero())
            .map(|(symbol, position)| OpenPosition {
                symbol: symbol.to_string(),
                quantity: position.quantity,
                average_price: position.average_price().round_dp(8),
                mark: position.mark,
                unrealised_pnl: position.unrealised(),
            })
            .collect();
        let final_equity = p.equity();
        let (sharpe, sortino) = self.equity.ratios(self.annualisation.periods_per_year);
        Report {
            candles: self.candles,
            candles_late_or_repeated: self.sequence.repeats(),
            data_rows_skipped: 0,
            time_steps: self.steps,
            period_ms: (self.first_time.unwrap_or(0), self.last_time),
            initial_cash: p.initial_cash,
            final_equity,
            realised_pnl: p.realised(),
            unrealised_pnl: p.unrealised(),
            fees: p.fees(),
            total_return: round6(decimal_to_f64(
                (final_equity - p.initial_cash) / p.initial_cash,
            )),
            fills: self.tallies.values().map(|t| t.fills).sum(),
            round_trips: trips.report(),
            open_positions,
            max_drawdown: round6(self.equity.max_drawdown),
            longest_drawdown_ms: self.longest_drawdown_ms,
            annualisation: self.annualisation,
            sharpe_ratio: round6(sharpe),
            sortino_ratio: round6(sortino),
            exposure: ratio(self.exposed_steps, self.steps),
            emergency_stop_at_ms: self.emergency_stop_at,
            daily_loss_pauses_at_ms: self.daily_loss_pauses.clone(),
            fills_after_emergency_stop: self.fills_after_stop,
            fills_counted_late: self.fills_late,
            fills_resumed: self.fills_resumed,
            accounting_identity_holds: final_equity
                == p.initial_cash + p.realised() + p.unrealised() - p.fees(),
            symbols,
            bus: None,
            model: None,
            agent_state_changes: self.agent_state_changes.clone(),
            curves: self.curves(),
        }
    }
}

/// `ms` of market time for people: `3d 4h`, `2h 5m`, `45m`, `30s`.
fn duration(ms: i64) -> String {
    let (d, h, m, sec) = (
        ms / 86_400_000,
        ms / 3_600_000 % 24,
        ms / 60_000 % 60,
        ms / 1000 % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `a / b` to six places; 0 when `b` is.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        round6(a as f64 / b as f64)
    }
}

fn round6(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        0.0
    }
}

/// Equity statistics computed as the samples arrive, so the report's memory
/// does not grow with the length of the run (Welford's running variance).
#[derive(Debug, Clone, Default)]
pub struct EquityStats {
    peak: Option<f64>,
    /// Largest fall from a peak so far, as a fraction of the peak.
    pub max_drawdown: f64,
    previous: Option<f64>,
    returns: u64,
    mean: f64,
    m2: f64,
    downside_squares: f64,
}

impl EquityStats {
    /// Adds one equity sample.
    pub fn push(&mut self, equity: f64) {
        let peak = self.peak.map_or(equity, |p| p.max(equity));
        self.peak = Some(peak);
        if peak > 0.0 {
            self.max_drawdown = self.max_drawdown.max((peak - equity) / peak);
        }
        if let Some(previous) = self.previous.filter(|p| *p > 0.0) {
            let r = equity / previous - 1.0;
            self.returns += 1;
            let delta = r - self.mean;
            self.mean += delta / self.returns as f64;
            self.m2 += delta * (r - self.mean);
            self.downside_squares += r.min(0.0).powi(2);
        }
        self.previous = Some(equity);
    }

    /// Annualised Sharpe and Sortino ratios of the per-sample returns.
    pub fn ratios(&self, periods_per_year: f64) -> (f64, f64) {
        if self.returns < 2 {
            return (0.0, 0.0);
        }
        let n = self.returns as f64;
        let sd = (self.m2 / (n - 1.0)).sqrt();
        let downside = (self.downside_squares / n).sqrt();
        let annual = periods_per_year.sqrt();
        let sharpe = if sd > 0.0 {
            self.mean / sd * annual
        } else {
            0.0
        };
        let sortino = if downside > 0.0 {
            self.mean / downside * annual
        } else {
            0.0
        };
        (sharpe, sortino)
    }
}

/// Largest peak-to-trough fall as a fraction of the peak.
pub fn max_drawdown(equity: &[f64]) -> f64 {
    let mut peak = f64::MIN;
    let mut worst: f64 = 0.0;
    for &e in equity {
        peak = peak.max(e);
        if peak > 0.0 {
            worst = worst.max((peak - e) / peak);
        }
    }
    worst
}

/// Annualised Sharpe and Sortino ratios of per-step returns.
pub fn ratios(equity: &[f64], periods_per_year: f64) -> (f64, f64) {
    let returns: Vec<f64> = equity
        .windows(2)
        .filter(|w| w[0] > 0.0)
        .map(|w| w[1] / w[0] - 1.0)
        .collect();
    if returns.len() < 2 {
        return (0.0, 0.0);
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let sd = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let downside = (returns.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
    let annual = periods_per_year.sqrt();
    let sharpe = if sd > 0.0 { mean / sd * annual } else { 0.0 };
    let sortino = if downside > 0.0 {
        mean / downside * annual
    } else {
        0.0
    };
    (sharpe, sortino)
}

impl Agent for ReportAgent {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["report".into()]
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        [
            "data.candle",
            "trade.order_filled",
            "risk.emergency_stop",
            "risk.limit_breach.max_daily_loss",
            // Not `agent.stopped`: the report stops before most agents
            // (reverse start order), and one would be left in its queue.
            "agent.started",
            "agent.paused",
            "agent.resumed",
            "agent.error",
        ]
        .into_iter()
        .map(TopicPattern::from_static)
        .collect()
    }

    fn on_message(&mut self, envelope: &Envelope, _out: &mut Outbox) -> HandlerResult {
        match envelope.payload() {
            Payload::DataCandle(candle) => self.on_candle(candle),
            Payload::TradeOrderFilled(fill) => self.on_fill(fill),
            Payload::RiskEmergencyStop(_) => {
                self.emergency_stop_at.get_or_insert(envelope.created_at_ms);
            }
            // The account-wide breach (a refused order's names its market).
            Payload::RiskLimitBreach(alert) if alert.symbol.is_none() => {
                self.daily_loss_pauses.push(envelope.created_at_ms);
            }
            Payload::AgentStarted(t) | Payload::AgentPaused(t) | Payload::AgentResumed(t) => {
                self.heard_state_change(&t.agent, envelope)
            }
            Payload::AgentError(e) => self.heard_state_change(&e.agent, envelope),
            _ => {}
        }
        Ok(())
    }

    fn on_stop(&mut self, _out: &mut Outbox) -> HandlerResult {
        if let Some(outcome) = self.outcome.clone() {
            outcome.set(self.finish());
        }
        Ok(())
    }
}

impl Report {
    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Bistoury report: {} candles over {} time steps",
            self.candles, self.time_steps
        );
        if self.data_rows_skipped > 0 {
            let _ = writeln!(
                s,
                "({} data rows skipped: malformed, out of order or repeated; each is in the log with its line)",
                self.data_rows_skipped
            );
        }
        if self.candles_late_or_repeated > 0 {
            let _ = writeln!(
                s,
                "({} candles came again or late, after the market had moved on: passed by)",
                self.candles_late_or_repeated
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<8} {:>6} {:>6} {:>9} {:>15} {:>12} {:>15} {:>9}",
            "symbol",
            "fills",
            "trips",
            "won (net)",
            "realised PnL",
            "fees",
            "unrealised PnL",
            "exposure"
        );
        let row = |s: &mut String,
                   name: &str,
                   fills: u64,
                   trips: &RoundTrips,
                   pnl: [Decimal; 3],
                   exposure: f64| {
            let _ = writeln!(
                s,
                "{:<8} {:>6} {:>6} {:>8.1}% {:>15} {:>12} {:>15} {:>8.1}%",
                name,
                fills,
                trips.count,
                trips.win_rate * 100.0,
                pnl[0].round_dp(2),
                pnl[1].round_dp(2),
                pnl[2].round_dp(2),
                exposure * 100.0
            );
        };
        for (symbol, r) in &self.symbols {
            let pnl = [r.realised_pnl, r.fees, r.unrealised_pnl];
            row(&mut s, symbol, r.fills, &r.round_trips, pnl, r.exposure);
        }
        let pnl = [self.realised_pnl, self.fees, self.unrealised_pnl];
        row(
            &mut s,
            "total",
            self.fills,
            &self.round_trips,
            pnl,
            self.exposure,
        );
        let t = &self.round_trips;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "round trips      {} closed ({} fills): {:.1}% won net of fees, {:.1}% before fees",
            t.count,
            self.fills,
            t.win_rate * 100.0,
            t.win_rate_before_fees * 100.0
        );
        let _ = writeln!(
            s,
            "                 average win {}, average loss {}, expectancy {} a trip, profit factor {}",
            t.average_win.round_dp(2),
            t.average_loss.round_dp(2),
            t.expectancy.round_dp(2),
            t.profit_factor.map_or("-".into(), |f| format!("{f:.2}"))
        );
        for open in &self.open_positions {
            let _ = writeln!(
                s,
                "open at the end  {} {} at {} (entry {}), unrealised {}",
                open.symbol,
                open.quantity,
                open.mark,
                open.average_price.round_dp(4),
                open.unrealised_pnl.round_dp(2)
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "initial cash     {:>16}", self.initial_cash.round_dp(2));
        let _ = writeln!(s, "final equity     {:>16}", self.final_equity.round_dp(2));
        let _ = writeln!(s, "total return     {:>15.2}%", self.total_return * 100.0);
        let _ = writeln!(
            s,
            "max drawdown     {:>15.2}%  (longest {} below a peak)",
            self.max_drawdown * 100.0,
            duration(self.longest_drawdown_ms)
        );
        let _ = writeln!(s, "Sharpe ratio     {:>16.3}", self.sharpe_ratio);
        let _ = writeln!(s, "Sortino ratio    {:>16.3}", self.sortino_ratio);
        let a = &self.annualisation;
        let _ = writeln!(
            s,
            "annualised       over {}-day years of {} bars ({} bars a year)",
            a.year_days,
            crate::config::interval_label(a.bar_interval_ms),
            round6(a.periods_per_year)
        );
        if let Some(first) = self.daily_loss_pauses_at_ms.first() {
            let _ = writeln!(
                s,
                "daily-loss limit reached {} time(s), first at {}; no new orders until the next UTC day",
                self.daily_loss_pauses_at_ms.len(),
                bus_core::model::time::iso8601_utc(*first)
            );
        }
        if let Some(at) = self.emergency_stop_at_ms {
            let _ = writeln!(
                s,
                "emergency stop   at {}; fills after it: {} (exits only)",
                bus_core::model::time::iso8601_utc(at),
                self.fills_after_emergency_stop
            );
        }
        if self.fills_resumed > 0 {
            let _ = writeln!(
                s,
                "resumed          {} fills taken back from the trade journal (the equity curve starts after them)",
                self.fills_resumed
            );
        }
        if self.fills_counted_late > 0 {
            let _ = writeln!(
                s,
                "late fills       {} reached the report after their time step closed (counted from the next)",
                self.fills_counted_late
            );
        }
        let _ = writeln!(
            s,
            "accounting       final equity = initial + realised + unrealised - fees: {}",
            if self.accounting_identity_holds {
                "holds"
            } else {
                "BROKEN"
            }
        );
        if let Some(model) = &self.model {
            let _ = writeln!(s, "{}", model.to_line());
        }
        if let Some(bus) = &self.bus {
            s.push_str(&bus.to_table());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::model::payload::Symbol;

    #[test]
    fn drawdown_and_ratios() {
        assert_eq!(max_drawdown(&[100.0, 120.0, 90.0, 130.0, 117.0]), 0.25);
        assert_eq!(max_drawdown(&[]), 0.0);
        let (sharpe, sortino) = ratios(&[100.0, 101.0, 100.5, 102.0], 1.0);
        assert!(sharpe > 0.0 && sortino > sharpe);
        assert_eq!(ratios(&[100.0, 100.0, 100.0], 1.0), (0.0, 0.0));
    }

    /// The step a position is opened in is marked at that bar's close, as
    /// every other step, not at the fill price (the candle reaches the
    /// report before the fill its own open caused).
    #[test]
    fn the_first_step_of_a_position_is_marked_at_the_close() {
        use bus_core::model::payload::{CandleFields, FillFields, OrderId, Side};
        let btc = Symbol::new("BTC").unwrap();
        let mut report = ReportAgent::new(Decimal::new(1_000, 0), 60_000, 365);
        let candle = |t: i64, open: i64, close: i64| {
            Candle::new(CandleFields {
                symbol: btc.clone(),
                interval: "1m".into(),
                open_time_ms: t * 60_000,
                open: Decimal::new(open, 0),
                high: Decimal::new(open.max(close), 0),
                low: Decimal::new(open.min(close), 0),
                close: Decimal::new(close, 0),
                volume: Decimal::ONE,
            })
            .unwrap()
        };
        report.on_candle(&candle(0, 100, 110));
        report.on_fill(
            &Fill::new(FillFields {
                order_id: OrderId("o-1".into()),
                symbol: btc.clone(),
                side: Side::Buy,
                quantity: Decimal::ONE,
                price: Decimal::new(100, 0),
                fee: Decimal::ZERO,
                timestamp_ms: 0,
            })
            .unwrap(),
        );
        report.on_candle(&candle(1, 110, 101));
        let r = report.finish();
        // Equity 1010 at the first close (not 1000 at the fill price), then
        // 1001: a drawdown of 9/1010.
        assert_eq!(r.max_drawdown, round6(9.0 / 1010.0));
        assert_eq!(r.final_equity, Decimal::new(1_001, 0));
    }

    /// One market in one step: close in cents, and maybe a fill (buy?, quantity).
    type MarketStep = (u32, Option<(bool, u32)>);

    /// Feeds `steps` (per step, one [`MarketStep`] per market) to a report
    /// and to a book beside it (the same candles and fills), calling
    /// `step_done` with each step and the book once the step's last
    /// message is in; the report, finished.
    fn report_beside_book(
        steps: &[Vec<MarketStep>],
        mut step_done: impl FnMut(usize, &Portfolio),
    ) -> ReportAgent {
        let cash = Decimal::new(100_000, 0);
        let mut report = ReportAgent::new(cash, 60_000, 365);
        let mut book = Portfolio::new(cash);
        let all = messages(steps);
        for (i, (t, message)) in all.iter().enumerate() {
            match message {
                Ok(candle) => {
                    report.on_candle(candle);
                    book.mark(&candle.symbol, candle.close);
                }
                Err(fill) => {
                    report.on_fill(fill);
                    book.apply_fill(&fill.symbol, fill.side, fill.quantity, fill.price, fill.fee);
                }
            }
            if all.get(i + 1).is_none_or(|(next, _)| next != t) {
                step_done(*t, &book);
            }
        }
        report.finish();
        report
    }

    /// Feeds `steps` to a report and returns its equity statistics, and
    /// the same statistics from equity recomputed at every step (what the
    /// report did before it kept equity between moves).
    fn equity_both_ways(steps: &[Vec<MarketStep>]) -> (EquityStats, EquityStats) {
        let mut expected = EquityStats::default();
        let report = report_beside_book(steps, |_, book| {
            expected.push(decimal_to_f64(book.equity()));
        });
        (report.equity, expected)
    }

    /// The messages of `steps` (per step, one [`MarketStep`] per market):
    /// each step's candles, then its fills; with the step each belongs to.
    fn messages(steps: &[Vec<MarketStep>]) -> Vec<(usize, Result<Candle, Fill>)> {
        use bus_core::model::payload::{CandleFields, FillFields, OrderId, Side};
        let symbols = [Symbol::new("BTC").unwrap(), Symbol::new("ETH").unwrap()];
        let mut all = Vec::new();
        for (t, step) in steps.iter().enumerate() {
            let mut fills = Vec::new();
            for (symbol, (cents, fill)) in symbols.iter().zip(step) {
                let close = Decimal::new(i64::from(*cents), 2);
                let candle = Candle::new(CandleFields {
                    symbol: symbol.clone(),
                    interval: "1m".into(),
                    open_time_ms: t as i64 * 60_000,
                    open: close,
                    high: close,
                    low: close,
                    close,
                    volume: Decimal::ONE,
                })
                .unwrap();
                all.push((t, Ok(candle)));
                if let Some((buy, quantity)) = fill {
                    let fill = Fill::new(FillFields {
                        order_id: OrderId(format!("o-{t}")),
                        symbol: symbol.clone(),
                        side: if *buy { Side::Buy } else { Side::Sell },
                        quantity: Decimal::new(i64::from(*quantity), 3),
                        price: close,
                        fee: Decimal::new(1, 2),
                        timestamp_ms: t as i64 * 60_000,
                    })
                    .unwrap();
                    fills.push((t, Err(fill)));
                }
            }
            all.extend(fills);
        }
        all
    }

    fn report_of<'a>(messages: impl Iterator<Item = &'a Result<Candle, Fill>>) -> Report {
        let mut report = ReportAgent::new(Decimal::new(100_000, 0), 60_000, 365);
        for message in messages {
            match message {
                Ok(candle) => report.on_candle(candle),
                Err(fill) => report.on_fill(fill),
            }
        }
        report.finish()
    }

    proptest::proptest! {
        /// Fills reach the report early (before their bar's candles, as a
        /// more urgent message may) or late (after later bars' candles, as
        /// from a trader running behind): every figure is the report of the
        /// messages in market-time order.
        #[test]
        fn fills_count_for_their_own_step_whenever_they_arrive(
            steps in proptest::collection::vec(
                proptest::collection::vec(
                    (1u32..1_000_000, proptest::option::weighted(0.3, (proptest::bool::ANY, 1u32..5_000))),
                    2,
                ),
                1..80,
            ),
            shifts in proptest::collection::vec(-1i64..12, 80 * 2),
        ) {
            let in_order = messages(&steps);
            let expected = report_of(in_order.iter().map(|(_, m)| m));
            // Each fill moves to just before the candles of its step plus
            // its shift (-1: ahead of its own bar's candles).
            let mut shifted: Vec<(i64, usize, &Result<Candle, Fill>)> = Vec::new();
            let mut k = 0;
            for (i, (step, message)) in in_order.iter().enumerate() {
                let at = match message {
                    Ok(_) => *step as i64 * 2 + 1,
                    Err(_) => {
                        k += 1;
                        (*step as i64 + shifts[k % shifts.len()].max(0)) * 2
                            + i64::from(shifts[k % shifts.len()] >= 0) * 2
                    }
                };
                shifted.push((at, i, message));
            }
            shifted.sort_by_key(|(at, i, _)| (*at, *i));
            let got = report_of(shifted.iter().map(|(_, _, m)| *m));
            proptest::prop_assert_eq!(got, expected);
        }
    }

    proptest::proptest! {
        /// Each market's chart holds, step by step, its PnL net of fees as
        /// a book recomputes it from scratch (realised + unrealised - fees).
        #[test]
        fn market_curves_are_each_markets_pnl_net_of_fees(
            steps in proptest::collection::vec(
                proptest::collection::vec(
                    (1u32..1_000_000, proptest::option::weighted(0.3, (proptest::bool::ANY, 1u32..5_000))),
                    2,
                ),
                1..120,
            )
        ) {
            let mut expected: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
            let report = report_beside_book(&steps, |t, book| {
                for (symbol, p) in &book.positions {
                    let pnl = p.realised + p.unrealised() - p.fees;
                    (expected.entry(format!("pnl-{symbol}")).or_default())
                        .push((t as i64 * 60_000, decimal_to_f64(pnl)));
                }
            });
            let curves = report.curves();
            proptest::prop_assert_eq!(curves.len(), 1 + expected.len());
            for curve in &curves[1..] {
                let want = &expected[&curve.name];
                proptest::prop_assert_eq!(curve.points.len(), want.len());
                for (got, want) in curve.points.iter().zip(want) {
                    proptest::prop_assert_eq!(got.0, want.0);
                    proptest::prop_assert!((got.1 - want.1).abs() <= 1e-9 * want.1.abs().max(1.0), "{:?} {:?}", got, want);
                }
            }
        }
    }

    proptest::proptest! {
        /// Equity kept between moves (recomputed only after a fill or a
        /// price move in a held market) gives exactly the statistics of
        /// equity recomputed at every step.
        #[test]
        fn kept_equity_matches_recomputed_equity(
            steps in proptest::collection::vec(
                proptest::collection::vec(
                    (1u32..1_000_000, proptest::option::weighted(0.2, (proptest::bool::ANY, 1u32..5_000))),
                    2,
                ),
                1..120,
            )
        ) {
            let (kept, recomputed) = equity_both_ways(&steps);
            proptest::prop_assert_eq!(kept.max_drawdown, recomputed.max_drawdown);
            proptest::prop_assert_eq!(kept.ratios(525_600.0), recomputed.ratios(525_600.0));
        }
    }

    proptest::proptest! {
        /// The streaming statistics agree with the plain formulas over the whole series.
        #[test]
        fn streaming_matches_batch(series in proptest::collection::vec(50.0f64..150.0, 0..200)) {
            let mut stats = EquityStats::default();
            series.iter().for_each(|e| stats.push(*e));
            proptest::prop_assert!((stats.max_drawdown - max_drawdown(&series)).abs() < 1e-12);
            let (a, b) = stats.ratios(252.0);
            let (c, d) = ratios(&series, 252.0);
            proptest::prop_assert!((a - c).abs() < 1e-6 * (1.0 + c.abs()), "{a} vs {c}");
            proptest::prop_assert!((b - d).abs() < 1e-6 * (1.0 + d.abs()), "{b} vs {d}");
        }
    }
}
