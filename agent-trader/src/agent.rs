//! The trader agent.
//!
//! Flow per market: `signal.aggregated` -> size an order -> publish
//! `trade.order_request.<SYM>` with `reply_to = trade.decision.<trader>` ->
//! risk answers `response.success` (approved) or `response.error`
//! (refused, the order is cancelled) -> the approved order fills at the next
//! candle's open, slipped against the trader, paying the fee. Exits by
//! stop-loss, take-profit or emergency close reduce risk and are not sent
//! for approval. After `risk.emergency_stop` no new order is sent and
//! orders not yet filled are cancelled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::path::Path;

use bus_core::model::payload::*;
use bus_core::model::{CandleSequence, SymbolMap, SymbolTopics};
use bus_core::prelude::*;
use rust_decimal::Decimal;

use crate::config::TraderConfig;
use crate::journal::{FillJournal, JournaledFill};
use crate::portfolio::Portfolio;
use crate::trade_log::TradeLog;

#[derive(Debug, Clone)]
struct Order {
    id: OrderId,
    symbol: Symbol,
    side: Side,
    quantity: Decimal,
    reason: String,
    /// Open time of the bar whose close decided it (exits decided on a
    /// bar fill on that bar, at the price that triggered them).
    decided_on_bar_ms: i64,
}

struct Topics {
    request: SymbolTopics,
    filled: SymbolTopics,
    cancelled: SymbolTopics,
    position: SymbolTopics,
}

/// What a trader hands back when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traded {
    /// Fills executed.
    pub fills: u64,
    /// Rows written to the trade log, if one is written.
    pub trade_log_rows: Option<u64>,
}

/// Counters of what the trader did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraderCounters {
    /// Order requests sent to risk.
    pub requested: u64,
    /// Orders risk refused.
    pub refused: u64,
    /// Fills executed.
    pub filled: u64,
    /// Orders cancelled (refused, or halted before filling).
    pub cancelled: u64,
    /// Signals ignored because trading was halted or paused.
    pub ignored_while_halted: u64,
    /// Buys cut (or cancelled) to what cash could pay at the fill price.
    pub cut_to_cash: u64,
}

/// The paper trader.
pub struct TraderAgent {
    id: AgentId,
    config: TraderConfig,
    factory: MessageFactory,
    portfolio: Portfolio,
    log: Option<TradeLog>,
    decision_topic: Topic,
    pnl_topic: Topic,
    topics: Topics,
    awaiting_decision: BTreeMap<MessageId, Order>,
    approved: SymbolMap<Vec<Order>>,
    next_order: u64,
    time_ms: i64,
    /// Which candles are news: a repeated candle must not fill an order or
    /// trigger an exit a second time.
    sequence: CandleSequence,
    halted: bool,
    paused: bool,
    counters: TraderCounters,
    first_fill_after_halt: Option<i64>,
    outcome: Option<Outcome<Traded>>,
    halted_at: Option<i64>,
    /// Where each fill is written before it counts, if anywhere.
    journal: Option<FillJournal>,
    /// Fills taken back from the journal at start.
    resumed_fills: u64,
    /// Where to show the orders not yet filled, if anywhere.
    open_orders: Option<Arc<Mutex<Vec<OpenOrder>>>>,
    /// Says when each order request goes out (tick-to-order latency).
    tick_to_order: Option<bus_core::bus::tick_to_order::TickToOrder>,
}

/// An order not yet filled, for a status display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    /// Its id.
    pub order_id: String,
    /// Market.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity asked.
    pub quantity: Decimal,
    /// Risk approved it; it fills at the next bar's open.
    pub approved: bool,
}

impl TraderAgent {
    /// A trader; `trade_log` is the CSV file to write fills to.
    pub fn new(
        id: AgentId,
        config: TraderConfig,
        trade_log: Option<&Path>,
        deterministic: bool,
    ) -> std::io::Result<Self> {
        let log = trade_log.map(TradeLog::create).transpose()?;
        let decision_topic = Topic::under("trade.decision", id.as_str());
        Ok(Self {
            factory: MessageFactory::new(id.clone(), deterministic),
            portfolio: Portfolio::new(config.initial_cash),
            id,
            config,
            log,
            decision_topic,
            pnl_topic: Topic::from_static("trade.pnl_update"),
            topics: Topics {
                request: SymbolTopics::new("trade.order_request"),
                filled: SymbolTopics::new("trade.order_filled"),
                cancelled: SymbolTopics::new("trade.order_cancelled"),
                position: SymbolTopics::new("trade.position_update"),
            },
            awaiting_decision: BTreeMap::new(),
            approved: SymbolMap::new(),
            next_order: 0,
            time_ms: 0,
            sequence: CandleSequence::new(),
            halted: false,
            paused: false,
            counters: TraderCounters::default(),
            first_fill_after_halt: None,
            outcome: None,
            halted_at: None,
            journal: None,
            resumed_fills: 0,
            open_orders: None,
            tick_to_order: None,
        })
    }

    /// Tells `clock` when each order request decided on a bar is handed to
    /// the bus.
    pub fn with_tick_to_order(mut self, clock: bus_core::bus::tick_to_order::TickToOrder) -> Self {
        self.tick_to_order = Some(clock);
        self
    }

    /// Keeps the orders not yet filled in `view` (for a status display).
    pub fn with_open_orders(mut self, view: Arc<Mutex<Vec<OpenOrder>>>) -> Self {
        self.open_orders = Some(view);
        self
    }

    fn show_open_orders(&self) {
        let Some(Ok(mut view)) = self.open_orders.as_ref().map(|v| v.lock()) else {
            return;
        };
        let line = |order: &Order, approved: bool| OpenOrder {
            order_id: order.id.to_string(),
            symbol: order.symbol.to_string(),
            side: order.side,
            quantity: order.quantity,
            approved,
        };
        view.clear();
        view.extend(self.awaiting_decision.values().map(|o| line(o, false)));
        for orders in self.approved.values() {
            view.extend(orders.iter().map(|o| line(o, true)));
        }
    }

    /// Journals every fill in `journal` (synced) before it changes the
    /// portfolio, after taking back `restored`, the fills it already holds:
    /// the portfolio and the trade log are rebuilt from them, and new orders
    /// are numbered after theirs. See [`crate::journal`].
    pub fn with_journal(
        mut self,
        journal: FillJournal,
        restored: Vec<JournaledFill>,
    ) -> std::io::Result<Self> {
        for entry in restored {
            let fill = &entry.fill;
            self.book(fill, entry.decided_on_bar_ms, &entry.reason)?;
            self.time_ms = self.time_ms.max(fill.timestamp_ms);
            self.next_order = self.next_order.max(entry.next_order);
            self.resumed_fills += 1;
        }
        self.journal = Some(journal);
        Ok(self)
    }

    /// Applies `fill` to the portfolio and writes its trade-log row: what a
    /// fill does to the book, whether it happens now or is taken back
    /// from the journal.
    fn book(&mut self, fill: &Fill, decided_on_bar_ms: i64, reason: &str) -> std::io::Result<()> {
        let effect = (self.portfolio).apply_fill(
            &fill.symbol,
            fill.side,
            fill.quantity,
            fill.price,
            fill.fee,
        );
        match self.log.as_mut() {
            Some(log) => log.record(fill, decided_on_bar_ms, effect.realised, reason),
            None => Ok(()),
        }
    }

    /// Fills taken back from the journal at start.
    pub fn resumed_fills(&self) -> u64 {
        self.resumed_fills
    }

    /// Publishes `symbol`'s position, marked at `mark`.
    fn publish_position(
        &mut self,
        symbol: &Symbol,
        mark: Decimal,
        out: &mut Outbox,
    ) -> HandlerResult {
        let p = &self.portfolio.positions[symbol];
        let update = PositionUpdate::new(PositionUpdateFields {
            symbol: symbol.clone(),
            quantity: p.quantity,
            average_price: p.average_price(),
            mark_price: mark,
            realised_pnl: p.realised,
            unrealised_pnl: p.unrealised(),
        })?;
        let topic = self.topics.position.topic(symbol)?;
        let time = self.time_ms;
        out.publish(
            self.factory
                .make(topic, Payload::TradePositionUpdate(update), time),
        );
        Ok(())
    }

    /// Follows up to `max_symbols` symbols (candles of others are passed
    /// by, counted).
    pub fn with_max_symbols(mut self, max_symbols: usize) -> Self {
        self.sequence = CandleSequence::with_limit(max_symbols);
        self
    }

    /// The portfolio.
    pub fn portfolio(&self) -> &Portfolio {
        &self.portfolio
    }

    /// Decision counters.
    pub fn counters(&self) -> TraderCounters {
        self.counters
    }

    /// True after an emergency stop.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Hands what it traded to `outcome` when it stops.
    pub fn with_outcome(mut self, outcome: Outcome<Traded>) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// Rows in the trade log, if one is written.
    pub fn trade_log_rows(&self) -> Option<u64> {
        self.log.as_ref().map(TradeLog::rows)
    }

    fn on_signal(&mut self, signal: &AggregatedSignal, out: &mut Outbox) -> HandlerResult {
        if self.halted || self.paused {
            self.counters.ignored_while_halted += 1;
            return Ok(());
        }
        if signal.confidence < self.config.min_confidence {
            return Ok(());
        }
        let symbol = &signal.symbol;
        let busy = self.awaiting_decision.values().any(|o| &o.symbol == symbol)
            || self.approved.get(symbol).is_some_and(|v| !v.is_empty());
        if busy {
            return Ok(());
        }
        let held = self.portfolio.quantity(symbol);
        let size =
            self.whole_lots(self.portfolio.equity() * self.config.position_fraction / signal.price);
        let target = match signal.direction {
            SignalDirection::Long => size,
            SignalDirection::Short if self.config.allow_short => -size,
            SignalDirection::Short => Decimal::ZERO,
            SignalDirection::Neutral => return Ok(()),
        };
        // Already on the signalled side: hold rather than resize on every signal.
        if (held > Decimal::ZERO && target > Decimal::ZERO)
            || (held < Decimal::ZERO && target < Decimal::ZERO)
        {
            return Ok(());
        }
        let delta = target - held;
        if delta.is_zero() {
            return Ok(());
        }
        self.next_order += 1;
        let order = Order {
            id: OrderId(format!("{}-{}", self.id, self.next_order)),
            symbol: symbol.clone(),
            side: if delta > Decimal::ZERO {
                Side::Buy
            } else {
                Side::Sell
            },
            quantity: delta.abs(),
            reason: match &signal.rationale {
                None => format!(
                    "{:?} signal, confidence {:.2}",
                    signal.direction, signal.confidence
                ),
                Some(why) => format!(
                    "{:?} signal, confidence {:.2}; model: {why}",
                    signal.direction, signal.confidence
                ),
            },
            decided_on_bar_ms: signal.timestamp_ms,
        };
        let request = OrderRequest::new(OrderRequestFields {
            order_id: order.id.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            quantity: order.quantity,
            order_type: OrderType::Market,
            limit_price: None,
            reference_price: signal.price,
            reason: order.reason.clone(),
        })?;
        let topic = self.topics.request.topic(symbol)?;
        let message = self
            .factory
            .make(topic, Payload::TradeOrderRequest(request), self.time_ms)
            .with_reply_to(self.decision_topic.clone())
            .with_priority(Priority::High);
        if let Some(clock) = &self.tick_to_order {
            clock.order(symbol.as_str(), order.decided_on_bar_ms);
        }
        self.awaiting_decision.insert(message.id, order);
        self.counters.requested += 1;
        out.publish(message);
        Ok(())
    }

    fn cancel(&mut self, order: &Order, reason: &str, out: &mut Outbox) -> HandlerResult {
        let payload = OrderCancelled {
            order_id: order.id.clone(),
            symbol: order.symbol.clone(),
            reason: reason.to_string(),
        };
        let topic = self.topics.cancelled.topic(&order.symbol)?;
        out.publish(
            self.factory
                .make(topic, Payload::TradeOrderCancelled(payload), self.time_ms),
        );
        self.counters.cancelled += 1;
        Ok(())
    }

    fn on_decision(&mut self, response: &Envelope, out: &mut Outbox) -> HandlerResult {
        let Some(request_id) = response.correlation_id else {
            return Ok(());
        };
        let Some(order) = self.awaiting_decision.remove(&request_id) else {
            return Ok(());
        };
        match response.payload() {
            Payload::ResponseSuccess(_) if !self.halted => {
                self.approved.get_or_default(&order.symbol).push(order);
            }
            Payload::ResponseSuccess(_) => self.cancel(&order, "emergency stop", out)?,
            Payload::ResponseError(e) => {
                self.counters.refused += 1;
                self.cancel(&order, &format!("refused by risk: {}", e.message), out)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `quantity` cut down to the order quantity's decimal places (never
    /// rounded up: more than was sized or can be paid).
    fn whole_lots(&self, quantity: Decimal) -> Decimal {
        quantity.round_dp_with_strategy(
            self.config.quantity_scale,
            rust_decimal::RoundingStrategy::ToZero,
        )
    }

    /// The part of a buy of `quantity` at `price` that cash can pay, fee
    /// included: all of what covers a short (it reduces risk), and of what
    /// opens or adds to a long only what the cash left after covering pays
    /// for (orders are sized at the signal's close; the fill comes at a
    /// later open, which may be higher).
    fn affordable(&self, symbol: &Symbol, quantity: Decimal, price: Decimal) -> Decimal {
        let held = self.portfolio.quantity(symbol);
        let cover = (-held).max(Decimal::ZERO).min(quantity);
        let opening = quantity - cover;
        if opening.is_zero() {
            return quantity;
        }
        if self.config.max_leverage > Decimal::ONE {
            return cover + self.within_leverage(symbol, opening, price);
        }
        let cost = |q: Decimal| q * price + (q * price * self.config.fee_rate).round_dp(8);
        let cash = self.portfolio.cash - cost(cover);
        let unit = price * (Decimal::ONE + self.config.fee_rate);
        let step = Decimal::new(1, self.config.quantity_scale);
        let mut most = self.whole_lots(cash / unit).max(Decimal::ZERO).min(opening);
        // The fee is rounded to 8 places: one step less if that tips it over.
        while most > Decimal::ZERO && cost(cover + most) > self.portfolio.cash {
            most = (most - step).max(Decimal::ZERO);
        }
        cover + most
    }

    /// Of `opening` more exposure in `symbol` at `price`, what keeps the
    /// account's gross exposure within `max_leverage` times its equity.
    fn within_leverage(&self, symbol: &Symbol, opening: Decimal, price: Decimal) -> Decimal {
        let others: Decimal = self
            .portfolio
            .positions
            .iter()
            .filter(|(s, _)| *s != symbol)
            .map(|(_, p)| p.quantity.abs() * p.mark)
            .sum();
        let held = self.portfolio.quantity(symbol).abs() * price;
        let room = self.config.max_leverage * self.portfolio.equity() - others - held;
        let fees = Decimal::ONE + self.config.fee_rate;
        self.whole_lots(room / (price * fees))
            .max(Decimal::ZERO)
            .min(opening)
    }

    /// The part of a sell of `quantity` at `price` the account may take:
    /// all of what closes a long, and of what opens or adds to a short only
    /// what stays within `max_leverage` (1: the short's value within what
    /// equity covers).
    fn sellable(&self, symbol: &Symbol, quantity: Decimal, price: Decimal) -> Decimal {
        let held = self.portfolio.quantity(symbol);
        let closing = held.max(Decimal::ZERO).min(quantity);
        let opening = quantity - closing;
        if opening.is_zero() {
            return quantity;
        }
        closing + self.within_leverage(symbol, opening, price)
    }

    fn fill(&mut self, order: &Order, base_price: Decimal, out: &mut Outbox) -> HandlerResult {
        let slip = match order.side {
            Side::Buy => Decimal::ONE + self.config.slippage,
            Side::Sell => Decimal::ONE - self.config.slippage,
        };
        let price = (base_price * slip).round_dp(8).max(Decimal::new(1, 8));
        let quantity = match order.side {
            Side::Buy => self.affordable(&order.symbol, order.quantity, price),
            Side::Sell => self.sellable(&order.symbol, order.quantity, price),
        };
        if quantity.is_zero() {
            self.counters.cut_to_cash += 1;
            return self.cancel(
                order,
                "cash or margin cannot cover it at the fill price",
                out,
            );
        }
        if quantity < order.quantity {
            self.counters.cut_to_cash += 1;
        }
        let order = &Order {
            quantity,
            ..order.clone()
        };
        let fee = (order.quantity * price * self.config.fee_rate).round_dp(8);
        let fill = Fill::new(FillFields {
            order_id: order.id.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            quantity: order.quantity,
            price,
            fee,
            timestamp_ms: self.time_ms,
        })?;
        // On disk before it counts: a crash from here on loses nothing.
        if let Some(journal) = &self.journal {
            let entry = JournaledFill {
                fill: fill.clone(),
                decided_on_bar_ms: order.decided_on_bar_ms,
                reason: order.reason.clone(),
                next_order: self.next_order,
            };
            journal
                .record(&entry)
                .map_err(|e| HandlerError::new(format!("trade journal: {e}")))?;
        }
        self.book(&fill, order.decided_on_bar_ms, &order.reason)
            .map_err(|e| HandlerError::new(format!("trade log: {e}")))?;
        if self.halted && self.first_fill_after_halt.is_none() {
            self.first_fill_after_halt = Some(self.time_ms);
        }
        self.counters.filled += 1;
        metrics::counter!("bistoury_trader_fills_total").increment(1);
        let topic = self.topics.filled.topic(&order.symbol)?;
        out.publish(
            self.factory
                .make(topic, Payload::TradeOrderFilled(fill), self.time_ms)
                .with_priority(Priority::High),
        );
        Ok(())
    }

    fn exit_order(&mut self, symbol: &Symbol, reason: &str) -> Option<Order> {
        let held = self.portfolio.quantity(symbol);
        if held.is_zero() {
            return None;
        }
        self.next_order += 1;
        Some(Order {
            id: OrderId(format!("{}-{}", self.id, self.next_order)),
            symbol: symbol.clone(),
            side: if held > Decimal::ZERO {
                Side::Sell
            } else {
                Side::Buy
            },
            quantity: held.abs(),
            reason: reason.to_string(),
            decided_on_bar_ms: self.time_ms,
        })
    }

    /// Stop-loss / take-profit: the exit price if this candle touches one.
    /// When both could trigger in one candle the stop is assumed first.
    fn protective_exit(&self, symbol: &Symbol, candle: &Candle) -> Option<(Decimal, &'static str)> {
        if self.config.stop_loss.is_none() && self.config.take_profit.is_none() {
            return None;
        }
        let position = self.portfolio.positions.get(symbol)?;
        if position.quantity.is_zero() {
            return None;
        }
        // A division: only when a stop or a target needs it.
        let entry = position.average_price();
        let long = position.quantity > Decimal::ZERO;
        if let Some(stop) = self.config.stop_loss {
            let level = if long {
                entry * (Decimal::ONE - stop)
            } else {
                entry * (Decimal::ONE + stop)
            };
            if long && candle.low <= level {
                return Some((candle.open.min(level), "stop-loss"));
            }
            if !long && candle.high >= level {
                return Some((candle.open.max(level), "stop-loss"));
            }
        }
        if let Some(take) = self.config.take_profit {
            let level = if long {
                entry * (Decimal::ONE + take)
            } else {
                entry * (Decimal::ONE - take)
            };
            if long && candle.high >= level {
                return Some((candle.open.max(level), "take-profit"));
            }
            if !long && candle.low <= level {
                return Some((candle.open.min(level), "take-profit"));
            }
        }
        None
    }

    fn on_candle(&mut self, candle: &Candle, out: &mut Outbox) -> HandlerResult {
        if !self.sequence.is_new(candle) {
            return Ok(());
        }
        self.time_ms = self.time_ms.max(candle.open_time_ms);
        let symbol = &candle.symbol;
        let before = self.counters.filled;
        // Most candles find nothing approved, and after a stop no position:
        // each check below is skipped when it cannot apply (one map lookup
        // per candle instead of five).
        if !self.approved.is_empty() {
            // An approved order fills at the open of a bar strictly after
            // the bar whose close made its signal, whatever order the
            // messages came in (a signal and its approval may overtake
            // their own bar's candle on a queued bus): never at an open
            // that was already past when it was decided.
            let orders = self.approved.remove(symbol).unwrap_or_default();
            let (due, early): (Vec<Order>, Vec<Order>) = orders
                .into_iter()
                .partition(|o| o.decided_on_bar_ms < candle.open_time_ms);
            if !early.is_empty() {
                self.approved.insert(symbol.clone(), early);
            }
            for order in due {
                self.fill(&order, candle.open, out)?;
            }
        }
        if !self.portfolio.quantity(symbol).is_zero() {
            if self.halted && self.config.close_on_emergency_stop {
                if let Some(order) = self.exit_order(symbol, "emergency stop") {
                    self.fill(&order, candle.open, out)?;
                }
            }
            if let Some((price, why)) = self.protective_exit(symbol, candle) {
                if let Some(order) = self.exit_order(symbol, why) {
                    self.fill(&order, price, out)?;
                }
            }
        }
        let holding = !self.portfolio.mark(symbol, candle.close).is_zero();
        let filled = self.counters.filled > before;
        if filled {
            self.publish_position(symbol, candle.close, out)?;
        }
        if filled || holding {
            let totals = self.portfolio.totals();
            let pnl = PnlUpdate::new(PnlUpdateFields {
                timestamp_ms: self.time_ms,
                cash: self.portfolio.cash,
                realised_pnl: totals.realised,
                unrealised_pnl: totals.unrealised,
                fees: totals.fees,
                equity: totals.equity,
            })?;
            out.publish(self.factory.make(
                self.pnl_topic.clone(),
                Payload::TradePnlUpdate(pnl),
                self.time_ms,
            ));
        }
        Ok(())
    }

    /// Closes every position at its last close (the run is over).
    fn close_all(&mut self, out: &mut Outbox) -> HandlerResult {
        let held: Vec<(Symbol, Decimal)> = self
            .portfolio
            .positions
            .iter()
            .filter(|(_, p)| !p.quantity.is_zero())
            .map(|(symbol, p)| (symbol.clone(), p.mark))
            .collect();
        for (symbol, mark) in held {
            if let Some(order) = self.exit_order(&symbol, "end of data") {
                self.fill(&order, mark, out)?;
            }
        }
        Ok(())
    }

    fn halt(&mut self, out: &mut Outbox) -> HandlerResult {
        if self.halted {
            return Ok(());
        }
        self.halted = true;
        self.halted_at = Some(self.time_ms);
        let waiting: Vec<Order> = std::mem::take(&mut self.awaiting_decision)
            .into_values()
            .collect();
        let approved: Vec<Order> = std::mem::take(&mut self.approved)
            .into_values()
            .flatten()
            .collect();
        for order in waiting.iter().chain(&approved) {
            self.cancel(order, "emergency stop", out)?;
        }
        tracing::warn!(agent = %self.id, "emergency stop: no new orders");
        Ok(())
    }
}

impl TraderAgent {
    fn handle(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        match envelope.payload() {
            Payload::DataCandle(candle) => self.on_candle(candle, out),
            Payload::SignalAggregated(signal) => self.on_signal(signal, out),
            Payload::ResponseSuccess(_) | Payload::ResponseError(_) => {
                self.on_decision(envelope, out)
            }
            Payload::RiskEmergencyStop(_) => self.halt(out),
            Payload::CommandPauseTrading(_) => {
                self.paused = true;
                Ok(())
            }
            Payload::CommandResumeTrading(_) => {
                self.paused = false;
                Ok(())
            }
            Payload::SystemShutdown(_) if self.config.close_at_end => self.close_all(out),
            _ => Ok(()),
        }
    }
}

impl Agent for TraderAgent {
    fn id(&self) -> &AgentId {
        &self.id
    }

    /// A trader resumed from its journal tells risk the positions it holds
    /// (risk limits count them), each marked at its average price until
    /// the next candle.
    fn on_start(&mut self, out: &mut Outbox) -> HandlerResult {
        if self.resumed_fills == 0 {
            return Ok(());
        }
        let held: Vec<(Symbol, Decimal)> = (self.portfolio.positions.iter())
            .filter(|(_, p)| !p.quantity.is_zero())
            .map(|(symbol, p)| (symbol.clone(), p.average_price()))
            .collect();
        tracing::info!(
            agent = %self.id,
            fills = self.resumed_fills,
            cash = %self.portfolio.cash,
            positions = held.len(),
            "resumed from the trade journal"
        );
        for (symbol, mark) in held {
            self.publish_position(&symbol, mark, out)?;
        }
        Ok(())
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["execution".into()]
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        let mut patterns: Vec<TopicPattern> = [
            "data.candle",
            "signal.aggregated",
            // (its own decision topic goes here)
            "risk.emergency_stop",
            "command.pause_trading",
            "command.resume_trading",
            "system.shutdown",
        ]
        .into_iter()
        .map(TopicPattern::from_static)
        .collect();
        patterns.insert(2, TopicPattern::from(&self.decision_topic));
        patterns
    }

    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        let handled = self.handle(envelope, out);
        if self.open_orders.is_some() {
            self.show_open_orders();
        }
        handled
    }

    fn on_stop(&mut self, _out: &mut Outbox) -> HandlerResult {
        if let Some(log) = self.log.as_mut() {
            log.flush()
                .map_err(|e| HandlerError::new(format!("trade log: {e}")))?;
        }
        if let Some(outcome) = &self.outcome {
            outcome.set(Traded {
                fills: self.counters.filled,
                trade_log_rows: self.trade_log_rows(),
            });
        }
        Ok(())
    }

    fn is_paused(&self) -> bool {
        self.paused
    }

    fn health(&self) -> Health {
        if self.halted {
            Health::ok("halted by emergency stop")
        } else {
            Health::ok(format!("{} fills", self.counters.filled))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn config() -> TraderConfig {
        TraderConfig {
            initial_cash: dec!(10000),
            fee_rate: dec!(0.001),
            slippage: dec!(0.0005),
            position_fraction: dec!(0.5),
            quantity_scale: 4,
            allow_short: false,
            min_confidence: 0.0,
            stop_loss: Some(dec!(0.05)),
            take_profit: None,
            close_on_emergency_stop: false,
            close_at_end: false,
            max_leverage: Decimal::ONE,
        }
    }

    fn others() -> MessageFactory {
        MessageFactory::new(AgentId::new("script"), true)
    }

    fn candle(
        f: &mut MessageFactory,
        t: i64,
        open: Decimal,
        low: Decimal,
        close: Decimal,
    ) -> Envelope {
        let c = Candle::new(CandleFields {
            symbol: Symbol::new("BTC").unwrap(),
            interval: "1m".into(),
            open_time_ms: t,
            open,
            high: open.max(close) + dec!(1),
            low,
            close,
            volume: dec!(1),
        })
        .unwrap();
        f.make(
            Topic::new("data.candle.BTC.1m").unwrap(),
            Payload::DataCandle(c),
            t,
        )
    }

    fn long_signal(f: &mut MessageFactory, price: Decimal) -> Envelope {
        let s = AggregatedSignal::new(AggregatedSignalFields {
            symbol: Symbol::new("BTC").unwrap(),
            direction: SignalDirection::Long,
            confidence: 0.9,
            price,
            timestamp_ms: 0,
            contributions: vec![],
            rationale: None,
        })
        .unwrap();
        f.make(
            Topic::new("signal.aggregated.BTC").unwrap(),
            Payload::SignalAggregated(s),
            0,
        )
    }

    fn find(out: &mut Outbox, t: MessageType) -> Vec<Envelope> {
        out.drain().filter(|e| e.message_type() == t).collect()
    }

    #[test]
    fn approved_order_fills_at_next_open_with_fee_and_slippage_then_stops_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("trades.csv");
        let mut trader =
            TraderAgent::new(AgentId::new("trader"), config(), Some(&log), true).unwrap();
        let mut f = others();
        let mut out = Outbox::new();
        trader
            .on_message(&candle(&mut f, 0, dec!(100), dec!(99), dec!(100)), &mut out)
            .unwrap();
        trader
            .on_message(&long_signal(&mut f, dec!(100)), &mut out)
            .unwrap();
        let requests = find(&mut out, MessageType::TradeOrderRequest);
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(
            request.reply_to.as_ref().unwrap().as_str(),
            "trade.decision.trader"
        );
        let Payload::TradeOrderRequest(r) = request.payload() else {
            unreachable!()
        };
        assert_eq!(r.quantity, dec!(50), "half of 10000 at 100");
        // A second signal while the first waits for risk is ignored.
        trader
            .on_message(&long_signal(&mut f, dec!(100)), &mut out)
            .unwrap();
        assert!(find(&mut out, MessageType::TradeOrderRequest).is_empty());

        let approval = f.reply(
            request,
            Payload::ResponseSuccess(Success {
                detail: "ok".into(),
            }),
            0,
        );
        trader.on_message(&approval, &mut out).unwrap();
        assert_eq!(trader.counters().filled, 0, "fills wait for the next price");
        trader
            .on_message(
                &candle(&mut f, 60_000, dec!(110), dec!(109), dec!(111)),
                &mut out,
            )
            .unwrap();
        let fills = find(&mut out, MessageType::TradeOrderFilled);
        assert_eq!(fills.len(), 1);
        let Payload::TradeOrderFilled(fill) = fills[0].payload() else {
            unreachable!()
        };
        assert_eq!(fill.price, dec!(110.055), "open 110 plus 5 bp slippage");
        assert_eq!(fill.fee, dec!(5.50275));

        // Entry 110.055; 5 % stop at 104.55225; the candle's low reaches it.
        trader
            .on_message(
                &candle(&mut f, 120_000, dec!(108), dec!(100), dec!(101)),
                &mut out,
            )
            .unwrap();
        let fills = find(&mut out, MessageType::TradeOrderFilled);
        assert_eq!(fills.len(), 1);
        let Payload::TradeOrderFilled(exit) = fills[0].payload() else {
            unreachable!()
        };
        assert_eq!(exit.side, Side::Sell);
        assert_eq!(exit.price, (dec!(104.55225) * dec!(0.9995)).round_dp(8));
        let p = trader.portfolio();
        assert!(p.quantity(&Symbol::new("BTC").unwrap()).is_zero());
        assert_eq!(
            p.equity(),
            p.initial_cash + p.realised() + p.unrealised() - p.fees()
        );
        assert!(p.equity() < dec!(10000));
        trader.on_stop(&mut out).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 3, "header and two fills:\n{text}");
        assert!(text.lines().nth(2).unwrap().contains("stop-loss"));
    }

    /// Signal, approval, and the next candle's fill.
    fn signal_and_fill(
        trader: &mut TraderAgent,
        f: &mut MessageFactory,
        t: i64,
        direction: SignalDirection,
    ) -> Outbox {
        let mut out = Outbox::new();
        let open = Decimal::from(100 + t / 60_000);
        trader
            .on_message(&candle(f, t, open, open - dec!(1), open), &mut out)
            .unwrap();
        let mut signal = long_signal(f, open);
        if let Payload::SignalAggregated(s) = signal.payload() {
            let mut fields = s.clone().into_fields();
            fields.direction = direction;
            let payload = Payload::SignalAggregated(AggregatedSignal::new(fields).unwrap());
            signal = f.make(signal.topic.clone(), payload, t);
        }
        trader.on_message(&signal, &mut out).unwrap();
        let request = find(&mut out, MessageType::TradeOrderRequest).remove(0);
        let approval = f.reply(
            &request,
            Payload::ResponseSuccess(Success {
                detail: "ok".into(),
            }),
            t,
        );
        trader.on_message(&approval, &mut out).unwrap();
        let next = candle(f, t + 60_000, open, open - dec!(1), open);
        trader.on_message(&next, &mut out).unwrap();
        out
    }

    #[test]
    fn a_trader_resumed_from_its_journal_has_the_same_book_log_and_order_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        let (log, log2) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        let id = AgentId::new("trader");
        let mut f = others();
        let config = TraderConfig {
            position_fraction: dec!(0.1),
            stop_loss: None,
            ..config()
        };
        let (journal, none) = FillJournal::open(&journal_dir, id.clone()).unwrap();
        let mut trader = TraderAgent::new(id.clone(), config.clone(), Some(&log), true)
            .unwrap()
            .with_journal(journal, none)
            .unwrap();
        for (t, direction) in [
            (0, SignalDirection::Long),
            (120_000, SignalDirection::Short),
            (240_000, SignalDirection::Long),
        ] {
            signal_and_fill(&mut trader, &mut f, t, direction);
        }
        assert_eq!(trader.counters().filled, 3);
        let (cash, btc) = (
            trader.portfolio().cash,
            trader.portfolio().quantity(&Symbol::new("BTC").unwrap()),
        );
        let before = std::fs::read_to_string(&log).unwrap();
        // As if killed here: the journal is all that is left.
        drop(trader);
        let (journal, restored) = FillJournal::open(&journal_dir, id.clone()).unwrap();
        assert_eq!(restored.len(), 3);
        let mut resumed = TraderAgent::new(id, config, Some(&log2), true)
            .unwrap()
            .with_journal(journal, restored)
            .unwrap();
        assert_eq!(resumed.resumed_fills(), 3);
        assert_eq!(resumed.portfolio().cash, cash);
        assert_eq!(
            resumed.portfolio().quantity(&Symbol::new("BTC").unwrap()),
            btc
        );
        assert_eq!(std::fs::read_to_string(&log2).unwrap(), before);
        let mut out = Outbox::new();
        resumed.on_start(&mut out).unwrap();
        let positions = find(&mut out, MessageType::TradePositionUpdate);
        assert_eq!(positions.len(), 1, "risk hears of the position held");
        // The next order is numbered after the journaled ones.
        let mut out = signal_and_fill(&mut resumed, &mut f, 360_000, SignalDirection::Short);
        let fills = find(&mut out, MessageType::TradeOrderFilled);
        let Payload::TradeOrderFilled(fill) = fills[0].payload() else {
            unreachable!()
        };
        assert_eq!(fill.order_id.to_string(), "trader-4");
        assert_eq!(FillJournal::read(&journal_dir).unwrap().len(), 4);
    }

    #[test]
    fn refused_order_is_cancelled_and_emergency_stop_halts_orders() {
        let mut trader = TraderAgent::new(AgentId::new("trader"), config(), None, true).unwrap();
        let mut f = others();
        let mut out = Outbox::new();
        trader
            .on_message(&candle(&mut f, 0, dec!(100), dec!(99), dec!(100)), &mut out)
            .unwrap();
        trader
            .on_message(&long_signal(&mut f, dec!(100)), &mut out)
            .unwrap();
        let request = find(&mut out, MessageType::TradeOrderRequest).remove(0);
        let refusal = f.reply(
            &request,
            Payload::ResponseError(ErrorResponse {
                code: "risk_refused".into(),
                message: "too big".into(),
            }),
            0,
        );
        trader.on_message(&refusal, &mut out).unwrap();
        assert_eq!(find(&mut out, MessageType::TradeOrderCancelled).len(), 1);
        assert_eq!(trader.counters().refused, 1);

        let stop = f.make_critical(
            Topic::new("risk.emergency_stop").unwrap(),
            Payload::RiskEmergencyStop(EmergencyStop {
                reason: "test".into(),
                triggered_by: "test".into(),
            }),
            0,
        );
        trader.on_message(&stop, &mut out).unwrap();
        trader
            .on_message(&long_signal(&mut f, dec!(100)), &mut out)
            .unwrap();
        assert!(find(&mut out, MessageType::TradeOrderRequest).is_empty());
        assert_eq!(trader.counters().ignored_while_halted, 1);
    }
}
