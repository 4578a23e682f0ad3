//! A process for the crash tests: publishes N durable messages through a
//! durable bus to one named subscription and logs what it does, so the test
//! can kill it (SIGKILL) at random moments, start it again, and check that
//! nothing acknowledged to the publisher was lost.
//!
//! `durable-probe <dir> <count> <at-least-once|exactly-once> <fsync:on|off>`
//!
//! * `<dir>/store/`: the durable store;
//! * `<dir>/published.log`: `P <index>` once `publish` returned Ok;
//! * `<dir>/handled.log`: `H <index> <message id>` for each handler call
//!   that completed (written before the handler returns).
//!
//! Message `i` has the id `i + 1` (so a publisher that retries after a
//! crash republishes the same message, as an exactly-once producer must),
//! and the handler fails the first delivery of every seventh message, so
//! the retry path runs too. The probe exits 0 once every message is
//! published and nothing is pending in the store.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_core::bus::reliability::RetryPolicy;
use bus_core::model::payload::{PriceUpdate, PriceUpdateFields, Symbol};
use bus_core::prelude::*;
use bus_core::store::{Store, StoreConfig};
use bus_core::{CircuitBreakerConfig, HandlerError, MessageBus, PublishError, SubscribeOptions};
use rust_decimal::Decimal;

const PUBLISHERS: u64 = 8;
/// Pause after each publish, per publisher.
const PACE: Duration = Duration::from_millis(2);

fn message(index: u64, mode: DeliveryMode) -> Envelope {
    let update = PriceUpdate::new(PriceUpdateFields {
        symbol: Symbol::new("BTC").expect("valid symbol"),
        price: Decimal::from(index + 1),
        timestamp_ms: index as i64,
    })
    .expect("valid update");
    Envelope::new(
        AgentId::new("probe"),
        Topic::new("probe.prices").expect("valid topic"),
        Payload::DataPriceUpdate(update),
    )
    .with_identity(MessageId::from_u128(u128::from(index) + 1), index as i64)
    .with_delivery_mode(mode)
    .with_max_attempts(20)
}

fn append_line(file: &Mutex<File>, line: String) {
    // One write per line: a kill never leaves half a line behind another.
    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
    file.write_all(line.as_bytes()).expect("log write");
}

fn open_log(path: &Path) -> Mutex<File> {
    Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

fn published(path: &Path) -> HashSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("P ")?.parse().ok())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: durable-probe <dir> <count> <at-least-once|exactly-once> <fsync:on|off>");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let count: u64 = args[2].parse().expect("count");
    let mode = match args[3].as_str() {
        "at-least-once" => DeliveryMode::AtLeastOnce,
        "exactly-once" => DeliveryMode::ExactlyOnce,
        other => panic!("unknown mode {other}"),
    };
    let fsync = args[4] == "on";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(dir, count, mode, fsync));
}

async fn run(dir: PathBuf, count: u64, mode: DeliveryMode, fsync: bool) {
    let mut config = StoreConfig::new(dir.join("store"));
    config.fsync = fsync;
    // Small segments, so kills also land during rolling and cleanup.
    config.segment_bytes = 64 << 10;
    let (store, recovery) = Store::open(config).expect("store opens");
    for issue in &recovery.issues {
        eprintln!("recovery: {issue}");
    }
    let bus = MessageBus::durable(store.clone());
    let handled = Arc::new(open_log(&dir.join("handled.log")));
    let log = handled.clone();
    // The planned failures must not open the circuit breaker: with it
    // open, deliveries burn attempts and end as dead letters.
    let options = SubscribeOptions::named("worker")
        .with_retry(RetryPolicy {
            base: Duration::from_millis(1),
            factor: 2.0,
            cap: Duration::from_millis(20),
            jitter: 0.2,
        })
        .with_circuit_breaker(CircuitBreakerConfig {
            failure_threshold: u32::MAX,
            cooldown: Duration::from_millis(1),
        });
    bus.subscribe(
        "probe.>",
        Handler::blocking(move |envelope: &Envelope| {
            let Payload::DataPriceUpdate(update) = envelope.payload() else {
                return Err(HandlerError::new("unexpected payload"));
            };
            let index = update.timestamp_ms;
            if index % 7 == 3 && envelope.attempt == 0 {
                return Err(HandlerError::new("first delivery of every seventh fails"));
            }
            append_line(&log, format!("H {index} {}\n", envelope.id));
            Ok(())
        }),
        options,
    )
    .expect("subscribe");

    let published_path = dir.join("published.log");
    let done = published(&published_path);
    let publog = Arc::new(open_log(&published_path));
    let mut tasks = Vec::new();
    for lane in 0..PUBLISHERS {
        let (bus, publog) = (bus.clone(), publog.clone());
        let todo: Vec<u64> = (0..count)
            .filter(|i| i % PUBLISHERS == lane && !done.contains(i))
            .collect();
        tasks.push(tokio::spawn(async move {
            for index in todo {
                loop {
                    match bus.publish(message(index, mode)).await {
                        Ok(_) => break,
                        Err(PublishError::Store(e)) => {
                            eprintln!("publish {index}: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("publish {index}: {e}"),
                    }
                }
                append_line(&publog, format!("P {index}\n"));
                // At most ~4,000 messages/s over the 8 publishers, whatever
                // the machine: the crash test's kills must land before the
                // probe is done.
                tokio::time::sleep(PACE).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    while store.stats().pending > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = bus.shutdown(Duration::from_secs(5)).await;
    store.close();
    println!(
        "done: replayed {} duplicates {} retries {} dead letters {}",
        report.stats.replayed,
        report.stats.duplicates,
        report.stats.retries,
        store.dead_letters().len()
    );
}
