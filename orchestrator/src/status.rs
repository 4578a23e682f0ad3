//! The live status page (off unless `run.status` or `--status` names a
//! loopback address): one small page with no build step, `status.html`,
//! that polls `/status.json` and shows the agents and their states,
//! message rates, positions, open orders, recent fills, risk limits and
//! how close each is, and the equity curve, while the run goes on.
//!
//! The agents write into a shared [`StatusBoard`] (the report agent the
//! account, the trader its open orders, the bus sampler the messages); the
//! page reads a copy.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agent_trader::OpenOrder;
use bus_core::model::payload::Side;
use serde::Serialize;

/// The page.
pub const PAGE: &str = include_str!("status.html");

/// Fills the page lists.
const RECENT_FILLS: usize = 20;

/// What the page shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// `run`.
    pub mode: String,
    /// The run has ended (the page stays up until the process exits).
    pub finished: bool,
    /// Candles so far.
    pub candles: u64,
    /// Market time of the last step closed.
    pub market_time_ms: i64,
    /// Equity at the last step closed.
    pub equity: f64,
    /// (market time, equity), downsampled.
    pub equity_curve: Vec<(i64, f64)>,
    /// The curve as it is gathered (`equity_curve` is read from it).
    #[serde(skip)]
    pub curve: crate::charts::Downsampled,
    /// Agent -> its last state heard (`started`, `paused`, `resumed`).
    pub agents: BTreeMap<String, String>,
    /// Bus totals.
    pub bus: BusTotals,
    /// Per subscription.
    pub subscriptions: Vec<SubscriptionLine>,
    /// Open positions.
    pub positions: Vec<PositionLine>,
    /// Orders waiting for risk or for their fill.
    pub open_orders: Vec<OrderLine>,
    /// The last fills, oldest first.
    pub recent_fills: VecDeque<FillLine>,
    /// Risk limits and how close each is.
    pub risk: Vec<LimitLine>,
    /// The live feed, when there is one.
    pub feed: Option<agent_collector::FeedStatus>,
}

impl Status {
    /// Adds a point to the equity curve.
    pub fn push_equity(&mut self, time_ms: i64, equity: f64) {
        self.equity = equity;
        self.market_time_ms = time_ms;
        self.curve.push(time_ms, equity);
    }

    /// Adds a fill to the recent ones.
    pub fn push_fill(&mut self, fill: FillLine) {
        self.recent_fills.push_back(fill);
        while self.recent_fills.len() > RECENT_FILLS {
            self.recent_fills.pop_front();
        }
    }
}

/// Bus totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BusTotals {
    /// Published.
    pub published: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dropped.
    pub dropped: u64,
    /// Failed.
    pub failed: u64,
}

/// One subscription.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionLine {
    /// Its name.
    pub name: String,
    /// Delivered so far.
    pub delivered: u64,
    /// Waiting now.
    pub queue_depth: usize,
}

/// One position.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PositionLine {
    /// Market.
    pub symbol: String,
    /// Signed quantity.
    pub quantity: String,
    /// Average entry.
    pub average_price: String,
    /// Last mark.
    pub mark: String,
    /// Unrealised PnL.
    pub unrealised_pnl: String,
}

/// One open order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OrderLine {
    /// Its id.
    pub order_id: String,
    /// Market.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Quantity.
    pub quantity: String,
    /// `awaiting risk` or `approved, fills at the next open`.
    pub state: String,
}

impl OrderLine {
    fn of(order: &OpenOrder) -> Self {
        Self {
            order_id: order.order_id.clone(),
            symbol: order.symbol.clone(),
            side: side(order.side).into(),
            quantity: order.quantity.to_string(),
            state: match order.approved {
                true => "approved, fills at the next open".into(),
                false => "awaiting risk".into(),
            },
        }
    }
}

/// `buy` or `sell`.
pub fn side(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// One fill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FillLine {
    /// Market time.
    pub time_ms: i64,
    /// Market.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Quantity.
    pub quantity: String,
    /// Price.
    pub price: String,
}

/// One risk limit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LimitLine {
    /// Which.
    pub limit: String,
    /// Where the account is.
    pub value: f64,
    /// The limit.
    pub threshold: f64,
    /// value / threshold.
    pub used: f64,
}

/// The shared status (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<Status>>);

impl StatusBoard {
    /// A board for a run in `mode`.
    pub fn new(mode: &str) -> Self {
        let board = Self::default();
        board.update(|s| s.mode = mode.into());
        board
    }

    /// Changes the status.
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        if let Ok(mut status) = self.0.lock() {
            change(&mut status);
        }
    }

    /// A copy of the status.
    pub fn read(&self) -> Status {
        let mut status = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        status.equity_curve = status.curve.points();
        status
    }

    /// Records the bus's figures.
    pub fn record_bus(&self, stats: &bus_core::BusStats) {
        self.update(|s| {
            s.bus = BusTotals {
                published: stats.published,
                delivered: stats.delivered,
                dropped: stats.total_dropped(),
                failed: stats.failed,
            };
            s.subscriptions = (stats.subscriptions.iter())
                .map(|sub| SubscriptionLine {
                    name: sub.name.clone(),
                    delivered: sub.delivered,
                    queue_depth: sub.queue_depth,
                })
                .collect();
        });
    }
}

/// Serves the page and `/status.json` on `address` until the runtime ends.
pub fn serve(
    address: SocketAddr,
    board: StatusBoard,
    feed: Option<Arc<Mutex<agent_collector::FeedStatus>>>,
    orders: Arc<Mutex<Vec<OpenOrder>>>,
) -> Result<(), String> {
    use axum::http::header;
    use axum::routing::get;
    let listener = std::net::TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let json = move || {
        let mut status = board.read();
        status.feed = feed.as_ref().and_then(|f| f.lock().ok().map(|f| f.clone()));
        if let Ok(orders) = orders.lock() {
            status.open_orders = orders.iter().map(OrderLine::of).collect();
        }
        let body = serde_json::to_string(&status).unwrap_or_else(|_| "{}".into());
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    };
    let page = || async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) };
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/status.json", get(json));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "status page stopped");
        }
    });
    Ok(())
}
