//! The risk agent.
//!
//! Its view of positions comes from `trade.position_update`, so an order
//! approved but not yet filled is not counted against the next request; the
//! trader keeps at most one order in flight per market, which bounds that gap.

use bus_core::model::payload::*;
use bus_core::prelude::*;
use rust_decimal::Decimal;

use crate::config::RiskConfig;
use crate::limits::{Decision, Limit, Refusal, RiskState, DAY_MS};
use crate::state::{RiskSnapshot, RiskStateStore, StateError};

/// Counters of risk decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RiskCounters {
    /// Orders approved.
    pub approved: u64,
    /// Orders refused.
    pub refused: u64,
    /// Warnings sent.
    pub warnings: u64,
    /// Days trading was paused by the daily-loss limit.
    pub daily_pauses: u64,
}

fn risk_alert(
    limit: Limit,
    value: Decimal,
    threshold: Decimal,
    symbol: Option<Symbol>,
) -> RiskAlert {
    RiskAlert {
        limit: limit.to_string(),
        symbol,
        value,
        threshold,
        message: format!("{limit}: {value} against a limit of {threshold}"),
    }
}

/// The risk manager.
pub struct RiskAgent {
    id: AgentId,
    config: RiskConfig,
    state: RiskState,
    factory: MessageFactory,
    counters: RiskCounters,
    warned: Vec<Limit>,
    emergency_stop_at: Option<i64>,
    /// Where the state is saved after each change, if anywhere.
    store: Option<Box<dyn RiskStateStore>>,
    /// What the live feed said when it turned stale, until it is live
    /// again.
    stale_feed: Option<String>,
}

impl RiskAgent {
    /// A risk manager; `config` should have passed `validate`.
    pub fn new(id: AgentId, config: RiskConfig, deterministic: bool) -> Self {
        Self {
            factory: MessageFactory::new(id.clone(), deterministic),
            id,
            config,
            state: RiskState::default(),
            counters: RiskCounters::default(),
            warned: Vec::new(),
            emergency_stop_at: None,
            store: None,
            stale_feed: None,
        }
    }

    /// Saves its state in `store` after every change, starting from the
    /// snapshot already there, if any (see [`crate::state`]).
    pub fn with_state_store(
        mut self,
        mut store: Box<dyn RiskStateStore>,
    ) -> Result<Self, StateError> {
        if let Some(snapshot) = store.load()? {
            tracing::info!(
                agent = %self.id, halted = snapshot.halted, day_start = ?snapshot.day_start,
                peak = ?snapshot.peak_equity, "risk state restored"
            );
            self.restore(snapshot);
        }
        self.store = Some(store);
        Ok(self)
    }

    /// The state as saved.
    pub fn snapshot(&self) -> RiskSnapshot {
        RiskSnapshot {
            format: RiskSnapshot::format(),
            limits: self.config.clone(),
            positions: self.state.positions.clone(),
            recent_orders: self.state.recent_orders.clone(),
            peak_equity: self.state.peak_equity,
            day_start: self.state.day_start,
            halted: self.state.halted,
            emergency_stop_at: self.emergency_stop_at,
            paused_until_day: self.state.paused_until_day,
            warned: self.warned.iter().map(|w| w.to_string()).collect(),
        }
    }

    fn restore(&mut self, snapshot: RiskSnapshot) {
        self.config = snapshot.limits;
        self.state = RiskState {
            positions: snapshot.positions,
            recent_orders: snapshot.recent_orders,
            peak_equity: snapshot.peak_equity,
            day_start: snapshot.day_start,
            halted: snapshot.halted,
            paused_until_day: snapshot.paused_until_day,
        };
        self.emergency_stop_at = snapshot.emergency_stop_at;
        self.warned = Limit::WATCHED
            .into_iter()
            .filter(|limit| snapshot.warned.iter().any(|w| w == limit.key()))
            .collect();
    }

    /// What a pnl update may change (compared before and after, to save
    /// only when something did).
    #[allow(clippy::type_complexity)]
    fn watch_marks(
        &self,
    ) -> (
        Option<Decimal>,
        Option<(i64, Decimal)>,
        bool,
        Option<i64>,
        usize,
    ) {
        (
            self.state.peak_equity,
            self.state.day_start,
            self.state.halted,
            self.state.paused_until_day,
            self.warned.len(),
        )
    }

    fn save(&mut self) -> HandlerResult {
        if self.store.is_none() {
            return Ok(());
        }
        let snapshot = self.snapshot();
        self.store
            .as_mut()
            .map_or(Ok(()), |store| store.save(&snapshot))
            .map_err(|e| HandlerError::new(e.to_string()))
    }

    /// Publishes a CRITICAL `risk.emergency_stop` at market time `time`.
    fn announce_stop(&mut self, reason: String, triggered_by: &str, time: i64, out: &mut Outbox) {
        metrics::gauge!("bistoury_risk_halted").set(1.0);
        let stop = EmergencyStop {
            reason,
            triggered_by: triggered_by.to_string(),
        };
        let topic = Topic::from_static("risk.emergency_stop");
        out.publish(
            self.factory
                .make_critical(topic, Payload::RiskEmergencyStop(stop), time),
        );
    }

    /// Decision counters.
    pub fn counters(&self) -> RiskCounters {
        self.counters
    }

    /// Market time of the emergency stop, if one happened.
    pub fn emergency_stop_at(&self) -> Option<i64> {
        self.emergency_stop_at
    }

    fn alert(&mut self, kind: MessageType, alert: RiskAlert, time: i64, out: &mut Outbox) {
        let limit = alert.limit.clone();
        let (topic, payload, priority) = match kind {
            MessageType::RiskWarning => (
                format!("risk.warning.{limit}"),
                Payload::RiskWarning(alert),
                Priority::Normal,
            ),
            _ => (
                format!("risk.limit_breach.{limit}"),
                Payload::RiskLimitBreach(alert),
                Priority::High,
            ),
        };
        let topic = Topic::new(topic).expect("limit names are valid topic segments");
        out.publish(
            self.factory
                .make(topic, payload, time)
                .with_priority(priority),
        );
    }

    fn on_order(&mut self, request: &Envelope, order: &OrderRequest, out: &mut Outbox) {
        let time = request.created_at_ms;
        let decision = match &self.stale_feed {
            Some(reason) if self.config.halt_on_stale_feed => {
                Decision::Refused(Refusal::StaleFeed {
                    reason: reason.clone(),
                })
            }
            _ => self.state.decide(&self.config, order, time),
        };
        match decision {
            Decision::Approved => {
                self.counters.approved += 1;
                metrics::counter!("bistoury_risk_orders_approved_total").increment(1);
                let ok = Payload::ResponseSuccess(Success {
                    detail: format!("order {} approved", order.order_id),
                });
                out.publish(self.factory.reply(request, ok, time));
            }
            Decision::Refused(refusal) => {
                self.counters.refused += 1;
                metrics::counter!("bistoury_risk_orders_refused_total").increment(1);
                let refused = Payload::ResponseError(ErrorResponse {
                    code: "risk_refused".into(),
                    message: refusal.to_string(),
                });
                out.publish(self.factory.reply(request, refused, time));
                // A halt was announced when it happened; a breach is news.
                if let Refusal::Limit {
                    limit,
                    value,
                    threshold,
                } = refusal
                {
                    self.alert(
                        MessageType::RiskLimitBreach,
                        risk_alert(limit, value, threshold, Some(order.symbol.clone())),
                        time,
                        out,
                    );
                }
            }
        }
    }

    /// Warns once per approach, stops at the limit (a limit that is set).
    fn watch(
        &mut self,
        limit: Limit,
        value: Decimal,
        threshold: Decimal,
        time: i64,
        out: &mut Outbox,
    ) {
        if value >= threshold && limit == Limit::MaxDailyLoss {
            // As desks use it: no new orders for the rest of the UTC day
            // (each is refused; the next day's are decided as usual).
            let today = time.div_euclid(DAY_MS);
            let paused = self.state.paused_until_day.is_some_and(|d| today < d);
            if !self.state.halted && !paused {
                self.state.paused_until_day = Some(today + 1);
                self.counters.daily_pauses += 1;
                self.alert(
                    MessageType::RiskLimitBreach,
                    risk_alert(limit, value, threshold, None),
                    time,
                    out,
                );
                tracing::warn!(agent = %self.id, limit = limit.key(), %value, %threshold, "trading paused until the next UTC day");
            }
        } else if value >= threshold {
            if !self.state.halted {
                self.state.halted = true;
                self.emergency_stop_at = Some(time);
                self.alert(
                    MessageType::RiskLimitBreach,
                    risk_alert(limit, value, threshold, None),
                    time,
                    out,
                );
                self.announce_stop(
                    format!("{limit} reached: {value} >= {threshold}"),
                    limit.key(),
                    time,
                    out,
                );
                tracing::warn!(agent = %self.id, limit = limit.key(), %value, %threshold, "emergency stop");
            }
        } else if value >= threshold * self.config.warning_fraction {
            if !self.warned.contains(&limit) {
                self.warned.push(limit);
                self.counters.warnings += 1;
                self.alert(
                    MessageType::RiskWarning,
                    risk_alert(limit, value, threshold, None),
                    time,
                    out,
                );
            }
        } else {
            self.warned.retain(|l| *l != limit);
        }
    }
}

impl RiskAgent {
    /// Applies `risk.<limit> = value` at run time (`none` lifts a limit).
    /// The new limits are validated first; a bad update changes nothing.
    /// Keys of other sections are not the risk agent's and are ignored.
    pub fn apply_config_update(&mut self, key: &str, value: &str) -> HandlerResult {
        let Some(field) = key.strip_prefix("risk.") else {
            return Ok(());
        };
        let bad =
            |what: &str| HandlerError::new(format!("config update {key} = {value:?}: {what}"));
        let decimal = || -> Result<Option<Decimal>, HandlerError> {
            if value == "none" {
                return Ok(None);
            }
            value
                .parse()
                .map(Some)
                .map_err(|_| bad("not a decimal number"))
        };
        let count = || -> Result<Option<usize>, HandlerError> {
            if value == "none" {
                return Ok(None);
            }
            value
                .parse()
                .map(Some)
                .map_err(|_| bad("not a whole number"))
        };
        let mut next = self.config.clone();
        match field.parse::<Limit>() {
            Ok(Limit::MaxPositionNotional) => next.max_position_notional = decimal()?,
            Ok(Limit::MaxOrderNotional) => next.max_order_notional = decimal()?,
            Ok(Limit::MaxDrawdown) => next.max_drawdown = decimal()?,
            Ok(Limit::MaxDailyLoss) => next.max_daily_loss = decimal()?,
            Ok(Limit::MaxOpenPositions) => next.max_open_positions = count()?,
            Ok(Limit::MaxOrdersPerMinute) => next.max_orders_per_minute = count()?,
            Err(_) if field == "warning_fraction" => {
                next.warning_fraction = decimal()?.ok_or_else(|| bad("cannot be none"))?
            }
            Err(_) => return Err(bad("unknown risk setting")),
        }
        let errors = next.validate("risk");
        if !errors.is_empty() {
            return Err(bad(&errors.join("; ")));
        }
        tracing::info!(agent = %self.id, key, value, "risk limit changed at run time");
        self.config = next;
        Ok(())
    }
}

impl Agent for RiskAgent {
    fn id(&self) -> &AgentId {
        &self.id
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["risk".into()]
    }

    fn subscriptions(&self) -> Vec<TopicPattern> {
        [
            "trade.order_request",
            "trade.position_update",
            "trade.pnl_update",
            "system.config_update",
            "risk.warning.stale_feed",
        ]
        .into_iter()
        .map(TopicPattern::from_static)
        .collect()
    }

    /// A restored agent that was halted says so again: its state is saved
    /// before its messages go out, so the stop it decided may never have
    /// been published (a trader that heard it already is halted anyway).
    fn on_start(&mut self, out: &mut Outbox) -> HandlerResult {
        if let (true, Some(at)) = (self.state.halted, self.emergency_stop_at) {
            self.announce_stop(
                "trading was halted before the risk agent restarted".into(),
                "restored_state",
                at,
                out,
            );
        }
        Ok(())
    }

    fn on_message(&mut self, envelope: &Envelope, out: &mut Outbox) -> HandlerResult {
        let changed = match envelope.payload() {
            Payload::TradeOrderRequest(order) => {
                let approved = self.counters.approved;
                self.on_order(envelope, order, out);
                self.counters.approved != approved
            }
            Payload::SystemConfigUpdate(update) => {
                let before = self.config.clone();
                self.apply_config_update(&update.key, &update.value)?;
                self.config != before
            }
            // Seconds without market data, against the stall threshold.
            Payload::RiskWarning(alert) if alert.limit == "stale_feed" => {
                let stale = alert.value >= alert.threshold;
                if stale != self.stale_feed.is_some() {
                    tracing::warn!(agent = %self.id, message = %alert.message, stale, "live feed");
                }
                self.stale_feed = stale.then(|| alert.message.clone());
                metrics::gauge!("bistoury_risk_stale_feed").set(f64::from(u8::from(stale)));
                false
            }
            Payload::TradePositionUpdate(p) => {
                let before = self.state.positions.insert(p.symbol.clone(), p.quantity);
                before != Some(p.quantity)
            }
            Payload::TradePnlUpdate(pnl) => {
                // Every pnl update passes here: only what a limit or the
                // store uses is computed.
                let before = self.store.is_some().then(|| self.watch_marks());
                self.state.record_equity(pnl.equity, pnl.timestamp_ms);
                if let Some(limit) = self.config.max_drawdown {
                    let drawdown = self.state.drawdown(pnl.equity);
                    self.watch(Limit::MaxDrawdown, drawdown, limit, pnl.timestamp_ms, out);
                }
                if let Some(limit) = self.config.max_daily_loss {
                    let day_loss = self.state.day_loss(pnl.equity);
                    self.watch(Limit::MaxDailyLoss, day_loss, limit, pnl.timestamp_ms, out);
                }
                before.is_some_and(|before| self.watch_marks() != before)
            }
            _ => false,
        };
        // Saved before the message counts as handled: a crash before this
        // point has the message handled again (JetStream redelivers it).
        if changed {
            self.save()?;
        }
        Ok(())
    }

    fn health(&self) -> Health {
        Health::ok(if self.state.halted {
            "trading halted"
        } else {
            "watching"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn pnl(f: &mut MessageFactory, equity: Decimal, t: i64) -> Envelope {
        let p = PnlUpdate::new(PnlUpdateFields {
            timestamp_ms: t,
            cash: equity,
            realised_pnl: dec!(0),
            unrealised_pnl: dec!(0),
            fees: dec!(0),
            equity,
        })
        .unwrap();
        f.make(
            Topic::new("trade.pnl_update").unwrap(),
            Payload::TradePnlUpdate(p),
            t,
        )
    }

    fn request(f: &mut MessageFactory, quantity: Decimal) -> Envelope {
        let o = OrderRequest::new(OrderRequestFields {
            order_id: OrderId("t-1".into()),
            symbol: Symbol::new("BTC").unwrap(),
            side: Side::Buy,
            quantity,
            order_type: OrderType::Market,
            limit_price: None,
            reference_price: dec!(100),
            reason: String::new(),
        })
        .unwrap();
        f.make(
            Topic::new("trade.order_request.BTC").unwrap(),
            Payload::TradeOrderRequest(o),
            0,
        )
        .with_reply_to(Topic::new("trade.decision.trader").unwrap())
    }

    fn agent() -> RiskAgent {
        RiskAgent::new(
            AgentId::new("risk"),
            RiskConfig {
                max_position_notional: None,
                max_order_notional: Some(dec!(1000)),
                max_open_positions: None,
                max_orders_per_minute: None,
                max_drawdown: Some(dec!(0.1)),
                max_daily_loss: None,
                warning_fraction: dec!(0.5),
                halt_on_stale_feed: true,
            },
            true,
        )
    }

    #[test]
    fn answers_requests_with_correlated_decisions() {
        let mut risk = agent();
        let mut f = MessageFactory::new(AgentId::new("trader"), true);
        let mut out = Outbox::new();
        let small = request(&mut f, dec!(5));
        risk.on_message(&small, &mut out).unwrap();
        let big = request(&mut f, dec!(50));
        risk.on_message(&big, &mut out).unwrap();
        let messages: Vec<Envelope> = out.drain().collect();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].correlation_id, Some(small.id));
        assert_eq!(messages[0].topic.as_str(), "trade.decision.trader");
        assert!(matches!(messages[0].payload(), Payload::ResponseSuccess(_)));
        assert_eq!(messages[1].correlation_id, Some(big.id));
        assert!(
            matches!(messages[1].payload(), Payload::ResponseError(e) if e.message.contains("max_order_notional"))
        );
        assert_eq!(
            messages[2].topic.as_str(),
            "risk.limit_breach.max_order_notional"
        );
    }

    fn stale_feed(f: &mut MessageFactory, silent: Decimal) -> Envelope {
        let alert = RiskAlert {
            limit: "stale_feed".into(),
            symbol: None,
            value: silent,
            threshold: dec!(30),
            message: format!("no market data for {silent} s"),
        };
        f.make(
            Topic::new("risk.warning.stale_feed").unwrap(),
            Payload::RiskWarning(alert),
            0,
        )
    }

    fn approved(risk: &mut RiskAgent, f: &mut MessageFactory) -> bool {
        let mut out = Outbox::new();
        risk.on_message(&request(f, dec!(1)), &mut out).unwrap();
        let answers: Vec<Envelope> = out.drain().collect();
        matches!(answers[..], [ref answer] if matches!(answer.payload(), Payload::ResponseSuccess(_)))
    }

    #[test]
    fn a_stale_feed_holds_orders_until_market_data_flows_again() {
        let mut f = MessageFactory::new(AgentId::new("collector"), true);
        let mut risk = agent();
        let mut out = Outbox::new();
        assert!(risk
            .subscriptions()
            .iter()
            .any(|p| p.matches(&Topic::new("risk.warning.stale_feed").unwrap())));
        assert!(approved(&mut risk, &mut f));
        risk.on_message(&stale_feed(&mut f, dec!(31.5)), &mut out)
            .unwrap();
        let mut refused = Outbox::new();
        risk.on_message(&request(&mut f, dec!(1)), &mut refused)
            .unwrap();
        let answer = refused.drain().next().unwrap();
        assert!(
            matches!(answer.payload(), Payload::ResponseError(e) if e.message.contains("stale_feed: no market data for 31.5 s")),
            "{answer:?}"
        );
        risk.on_message(&stale_feed(&mut f, dec!(0)), &mut out)
            .unwrap();
        assert!(approved(&mut risk, &mut f));
        // Turned off, a stale feed holds nothing.
        risk.config.halt_on_stale_feed = false;
        risk.on_message(&stale_feed(&mut f, dec!(40)), &mut out)
            .unwrap();
        assert!(approved(&mut risk, &mut f));
    }

    #[test]
    fn drawdown_warns_then_stops_once_and_refuses_after() {
        let mut risk = agent();
        let mut f = MessageFactory::new(AgentId::new("trader"), true);
        let mut out = Outbox::new();
        for (equity, t) in [
            (dec!(1000), 1),
            (dec!(960), 2),
            (dec!(950), 3),
            (dec!(899), 4),
            (dec!(850), 5),
        ] {
            risk.on_message(&pnl(&mut f, equity, t), &mut out).unwrap();
        }
        let types: Vec<MessageType> = out.drain().map(|m| m.message_type()).collect();
        assert_eq!(
            types,
            vec![
                MessageType::RiskWarning,
                MessageType::RiskLimitBreach,
                MessageType::RiskEmergencyStop
            ]
        );
        assert_eq!(risk.emergency_stop_at(), Some(4));
        risk.on_message(&request(&mut f, dec!(1)), &mut out)
            .unwrap();
        let reply = out.drain().next().unwrap();
        assert!(
            matches!(reply.payload(), Payload::ResponseError(e) if e.message.contains("emergency_stop"))
        );
    }

    #[test]
    fn config_updates_apply_only_when_valid() {
        let mut risk = agent();
        assert!(risk
            .apply_config_update("risk.max_order_notional", "10")
            .is_ok());
        assert_eq!(risk.config.max_order_notional, Some(dec!(10)));
        assert!(risk
            .apply_config_update("risk.max_order_notional", "none")
            .is_ok());
        assert_eq!(risk.config.max_order_notional, None);
        let error = risk
            .apply_config_update("risk.max_drawdown", "3")
            .unwrap_err();
        assert!(error.to_string().contains("risk.max_drawdown"), "{error}");
        assert_eq!(
            risk.config.max_drawdown,
            Some(dec!(0.1)),
            "unchanged after a bad update"
        );
        assert!(risk.apply_config_update("risk.nonsense", "1").is_err());
        assert!(
            risk.apply_config_update("trader.fee_rate", "1").is_ok(),
            "not ours: ignored"
        );
    }

    #[test]
    fn config_validation_names_keys() {
        let mut c = agent().config;
        c.max_drawdown = Some(dec!(1.5));
        c.max_order_notional = Some(dec!(-1));
        let errors = c.validate("risk");
        assert!(errors.iter().any(|e| e.starts_with("risk.max_drawdown")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("risk.max_order_notional")));
    }
}
