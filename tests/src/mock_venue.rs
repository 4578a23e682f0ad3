//! A venue on loopback that speaks HyperLiquid's protocols, for tests: the
//! WebSocket (`subscribe` acknowledged with `subscriptionResponse`,
//! `ping` answered with `pong`, frames played from a script) and the info
//! endpoint's `candleSnapshot` (answered from the venue's candle history).
//!
//! The script is shared by every connection: a connection plays steps
//! until one ends it (a dropped connection, or silence until the client
//! gives up), and the next connection goes on from there.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// One step of the script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send this text frame.
    Send(String),
    /// Wait before the next step (pings are still answered).
    Wait(Duration),
    /// Drop the connection (no close frame), once what was sent has
    /// arrived.
    Drop,
    /// Send nothing more on this connection, not even pongs, until the
    /// client leaves.
    Silence,
}

/// One bar of the venue's market.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Open time, ms.
    pub t: i64,
    /// Prices, in tenths.
    pub o: i64,
    /// High.
    pub h: i64,
    /// Low.
    pub l: i64,
    /// Close.
    pub c: i64,
    /// Volume, in thousandths.
    pub v: i64,
}

fn tenths(x: i64) -> String {
    format!("{}.{}", x / 10, x % 10)
}

fn thousandths(x: i64) -> String {
    format!("{}.{:03}", x / 1000, x % 1000)
}

impl Bar {
    /// A seeded random walk of `n` bars from `start_ms`, `interval_ms`
    /// apart, starting near `price` (tenths).
    pub fn walk(seed: u64, n: usize, start_ms: i64, interval_ms: i64, price: i64) -> Vec<Bar> {
        let mut state = seed | 1;
        let mut next = move |m: i64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as i64
        };
        let mut close = price;
        (0..n)
            .map(|i| {
                let o = close;
                let c = (o + next(41) - 20).max(10);
                let h = o.max(c) + next(8);
                let l = (o.min(c) - next(8)).max(1);
                close = c;
                Bar {
                    t: start_ms + i as i64 * interval_ms,
                    o,
                    h,
                    l,
                    c,
                    v: 1 + next(5000),
                }
            })
            .collect()
    }

    /// The candle as the venue sends it (`candle` channel data and
    /// `candleSnapshot` items).
    pub fn json(&self, coin: &str, interval: &str, interval_ms: i64) -> Value {
        json!({
            "t": self.t, "T": self.t + interval_ms - 1, "s": coin, "i": interval,
            "o": tenths(self.o), "c": tenths(self.c), "h": tenths(self.h), "l": tenths(self.l),
            "v": thousandths(self.v), "n": 1 + self.v % 97,
        })
    }

    /// The snapshots a venue streams while the bar forms, the last one the
    /// final bar: the first trade at the open, then halfway, then all.
    pub fn forming(&self) -> Vec<Bar> {
        let first = Bar {
            h: self.o,
            l: self.o,
            c: self.o,
            v: self.v / 3,
            ..*self
        };
        let mid = (self.o + self.c) / 2;
        let halfway = Bar {
            h: self.o.max(mid),
            l: self.o.min(mid),
            c: mid,
            v: self.v * 2 / 3,
            ..*self
        };
        vec![first, halfway, *self]
    }
}

/// A `{"channel": .., "data": ..}` frame.
pub fn frame(channel: &str, data: Value) -> String {
    json!({"channel": channel, "data": data}).to_string()
}

/// Script steps streaming `bars` of `coin` as they form (three snapshots
/// each), `pause` between frames.
pub fn stream(
    bars: &[Bar],
    coin: &str,
    interval: &str,
    interval_ms: i64,
    pause: Duration,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for bar in bars {
        for snapshot in bar.forming() {
            steps.push(Step::Send(frame(
                "candle",
                snapshot.json(coin, interval, interval_ms),
            )));
            if !pause.is_zero() {
                steps.push(Step::Wait(pause));
            }
        }
    }
    steps
}

#[derive(Default)]
struct State {
    script: VecDeque<Step>,
    /// Per coin, the venue's history of final candles (`candleSnapshot`).
    history: Vec<(String, Value)>,
    requests: Vec<String>,
    connections: usize,
    snapshot_requests: Vec<Value>,
    /// `candleSnapshot` answers to fail with HTTP 500 before answering.
    failing_snapshots: usize,
}

/// The venue (see the module docs); stops when dropped.
pub struct MockVenue {
    /// The WebSocket URL.
    pub ws_url: String,
    /// The info endpoint's URL.
    pub info_url: String,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MockVenue {
    /// Starts on two free loopback ports with `script`.
    pub fn start(script: Vec<Step>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            ..State::default()
        }));
        let (ws, info) = runtime.block_on(async {
            let ws = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            let info = TcpListener::bind("127.0.0.1:0").await.expect("a port");
            (ws, info)
        });
        let (ws_addr, info_addr): (SocketAddr, SocketAddr) =
            (ws.local_addr().unwrap(), info.local_addr().unwrap());
        let s = state.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                tokio::spawn(connection(stream, s.clone()));
            }
        });
        let s = state.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = info.accept().await {
                tokio::spawn(info_request(stream, s.clone()));
            }
        });
        Self {
            ws_url: format!("ws://{ws_addr}/ws"),
            info_url: format!("http://{info_addr}/info"),
            state,
            runtime: Some(runtime),
        }
    }

    /// The venue's history of `coin`'s final candles, for back-fill.
    pub fn with_history(self, coin: &str, candles: impl IntoIterator<Item = Value>) -> Self {
        let mut state = self.state.lock().unwrap();
        state
            .history
            .extend(candles.into_iter().map(|c| (coin.to_string(), c)));
        drop(state);
        self
    }

    /// Fails the next `n` `candleSnapshot` requests with HTTP 500.
    pub fn failing_snapshots(self, n: usize) -> Self {
        self.state.lock().unwrap().failing_snapshots = n;
        self
    }

    /// Adds steps to the script.
    pub fn play(&self, steps: impl IntoIterator<Item = Step>) {
        self.state.lock().unwrap().script.extend(steps);
    }

    /// Text frames clients sent, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// `candleSnapshot` requests received (their `req`).
    pub fn snapshot_requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().snapshot_requests.clone()
    }

    /// Steps not yet played.
    pub fn steps_left(&self) -> usize {
        self.state.lock().unwrap().script.len()
    }
}

impl Drop for MockVenue {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn connection(stream: TcpStream, state: Arc<Mutex<State>>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    state.lock().unwrap().connections += 1;
    let (mut sink, mut source) = socket.split();
    let (replies, mut to_send) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (subscribed, mut is_subscribed) = tokio::sync::watch::channel(false);
    let s = state.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            s.lock().unwrap().requests.push(text.to_string());
            let request: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            let reply = match request["method"].as_str() {
                Some("subscribe") => {
                    let _ = subscribed.send(true);
                    frame("subscriptionResponse", request)
                }
                Some("ping") => json!({"channel": "pong"}).to_string(),
                _ => continue,
            };
            if replies.send(reply).is_err() {
                break;
            }
        }
    });
    // Nothing plays before the client has subscribed.
    if is_subscribed.wait_for(|s| *s).await.is_err() {
        return;
    }
    let mut silent = false;
    loop {
        let step = match silent {
            true => None,
            false => state.lock().unwrap().script.pop_front(),
        };
        match step {
            Some(Step::Send(text)) => {
                while let Ok(reply) = to_send.try_recv() {
                    if sink.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            Some(Step::Drop) => {
                // Let what was sent arrive first: a reset can discard what
                // the client has received but not yet read.
                let _ = sink.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                reader.abort();
                return;
            }
            Some(Step::Silence) => silent = true,
            Some(Step::Wait(pause)) => {
                let until = tokio::time::Instant::now() + pause;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        reply = to_send.recv() => match reply {
                            Some(reply) => {
                                if sink.send(Message::text(reply)).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        },
                    }
                }
            }
            // The script is over (or silent): answer (or not) until the
            // client leaves.
            None => match to_send.recv().await {
                Some(reply) if !silent => {
                    if sink.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// Answers one HTTP request to the info endpoint.
async fn info_request(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    let body = loop {
        let Ok(n) = stream.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buffer[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if raw.len() >= end + 4 + length {
            break raw[end + 4..end + 4 + length].to_vec();
        }
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = {
        let mut state = state.lock().unwrap();
        let req = request["req"].clone();
        if request["type"] != "candleSnapshot" {
            (
                "400 Bad Request",
                json!({"error": "unknown request"}).to_string(),
            )
        } else if state.failing_snapshots > 0 {
            state.failing_snapshots -= 1;
            state.snapshot_requests.push(req);
            ("500 Internal Server Error", "internal error".to_string())
        } else {
            let (from, to) = (req["startTime"].as_i64(), req["endTime"].as_i64());
            let coin = req["coin"].as_str().unwrap_or_default().to_string();
            let candles: Vec<Value> = state
                .history
                .iter()
                .filter(|(c, candle)| {
                    let t = candle["t"].as_i64().unwrap_or(-1);
                    *c == coin && from.is_some_and(|f| t >= f) && to.is_some_and(|e| t <= e)
                })
                .map(|(_, candle)| candle.clone())
                .collect();
            state.snapshot_requests.push(req);
            ("200 OK", Value::from(candles).to_string())
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
