#![allow(missing_docs)] // criterion_group! generates undocumented items.
//! Durable delivery: the store under group commit, against the embedded
//! stores we could have used and against NATS JetStream, in one run.
//!
//! `cargo bench -p bus-core --features bench-compare --bench durable`
//! (needs `nats-server` on the PATH for the JetStream group).
//!
//! * `store_commit/*`: raw durable commits of groups of 64 messages, each
//!   serialized to its JSON envelope (~450 bytes) inside the measurement:
//!   our journal, redb, SQLite (WAL, synchronous=FULL); all sync every
//!   commit to disk.
//! * `durable_publish/*`: `MessageBus::publish` of at-least-once messages
//!   from 64 concurrent publishers to one named subscription that acks, with
//!   fsync on and off; and the same messages through JetStream (file
//!   storage, `nats-server -js` started here), 64 concurrent publishers each
//!   waiting for its publish ack.
//! * `replay`: reopening a store holding 50,000 pending messages and reading
//!   them back for replay.
//!
//! Publish latency percentiles under the same load are printed before the
//! criterion groups run.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::nats::local_server::LocalServer;
use bus_core::prelude::*;
use bus_core::store::{Store, StoreConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hdrhistogram::Histogram;

const PUBLISHERS: usize = 64;
const GROUP: usize = 64;

#[path = "probes/common/mod.rs"]
#[allow(dead_code)] // The probes' command line is not this bench's.
mod common;

fn message(index: u64) -> Envelope {
    common::price_update(index, "prices.btc").with_delivery_mode(DeliveryMode::AtLeastOnce)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn store_config(dir: &Path, fsync: bool) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.fsync = fsync;
    config
}

// ------------------------------------------------------------ raw commits

fn store_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_commit");
    group.throughput(Throughput::Elements(GROUP as u64));
    group.sample_size(20);
    let records: Vec<Envelope> = (0..GROUP as u64).map(message).collect();

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(store_config(dir.path(), true)).unwrap();
    let subs: Vec<Arc<str>> = vec![Arc::from("bench")];
    group.bench_function("journal", |b| {
        b.iter(|| {
            let waits: Vec<_> = records
                .iter()
                .map(|e| store.append(e, subs.clone()).unwrap())
                .collect();
            for w in waits {
                w.wait().unwrap();
            }
        })
    });
    store.close();

    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("redb")).unwrap();
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
    let mut seq = 0u64;
    group.bench_function("redb", |b| {
        b.iter(|| {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(table).unwrap();
                for record in &records {
                    seq += 1;
                    t.insert(seq, record.to_json_bytes().as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = rusqlite::Connection::open(dir.path().join("sqlite.db")).unwrap();
    sqlite
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE messages (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .unwrap();
    group.bench_function("sqlite", |b| {
        b.iter(|| {
            let txn = sqlite.transaction().unwrap();
            {
                let mut insert = txn
                    .prepare_cached("INSERT INTO messages (body) VALUES (?1)")
                    .unwrap();
                for record in &records {
                    insert.execute([record.to_json_bytes()]).unwrap();
                }
            }
            txn.commit().unwrap();
        })
    });
    group.finish();
}

// ------------------------------------------------------------ bus publish

struct Durable {
    bus: MessageBus,
    store: Store,
    _dir: tempfile::TempDir,
}

fn durable_bus(rt: &tokio::runtime::Runtime, fsync: bool) -> Durable {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(store_config(dir.path(), fsync)).unwrap();
    let bus = rt.block_on(async {
        let bus = MessageBus::durable(store.clone());
        bus.subscribe(
            "prices.>",
            Handler::from_async(|_e| async { Ok(()) }),
            SubscribeOptions::named("bench"),
        )
        .unwrap();
        bus
    });
    Durable {
        bus,
        store,
        _dir: dir,
    }
}

/// Runs `publish(i)` for `i` in `0..n` from 64 concurrent publishers;
/// returns the time and, if asked, records each publish's latency.
async fn concurrently<F, Fut>(
    n: u64,
    latency: Option<Arc<Mutex<Histogram<u64>>>>,
    publish: F,
) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..PUBLISHERS as u64 {
        let latency = latency.clone();
        let publish = publish.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = lane;
            while i < n {
                let t = Instant::now();
                publish(i).await;
                if let Some(h) = &latency {
                    h.lock()
                        .unwrap()
                        .record(t.elapsed().as_nanos() as u64)
                        .unwrap();
                }
                i += PUBLISHERS as u64;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

async fn publish_all(
    bus: &MessageBus,
    n: u64,
    latency: Option<Arc<Mutex<Histogram<u64>>>>,
) -> Duration {
    let bus = bus.clone();
    concurrently(n, latency, move |i| {
        let bus = bus.clone();
        async move {
            bus.publish(message(i)).await.unwrap();
        }
    })
    .await
}

// --------------------------------------------------------------- JetStream

/// nats-server with JetStream, its store in a temp dir (kept with it).
fn start_jetstream() -> Option<(LocalServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalServer::jetstream(dir.path()).ok()?;
    Some((server, dir))
}

async fn jetstream_context(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

async fn jetstream_publish_all(
    js: &async_nats::jetstream::Context,
    n: u64,
    latency: Option<Arc<Mutex<Histogram<u64>>>>,
) -> Duration {
    let js = js.clone();
    concurrently(n, latency, move |i| {
        let js = js.clone();
        async move {
            let body = message(i).to_json_bytes();
            js.publish("bench.prices.btc", body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    })
    .await
}

fn durable_publish(c: &mut Criterion) {
    let rt = runtime();
    let n = 20_000;
    let mut group = c.benchmark_group("durable_publish");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    // Latency percentiles under the same load, printed once.
    let percentiles = |name: &str, h: &Histogram<u64>| {
        println!(
            "durable_publish/{name} latency: p50 {:.1} us, p99 {:.1} us ({} publishes)",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.len()
        );
    };

    for (name, fsync) in [("journal_fsync", true), ("journal_no_fsync", false)] {
        let d = durable_bus(&rt, fsync);
        let h = Arc::new(Mutex::new(Histogram::new(3).unwrap()));
        rt.block_on(publish_all(&d.bus, n, Some(h.clone())));
        percentiles(name, &h.lock().unwrap());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(publish_all(&d.bus, n, None)))
                    .sum()
            })
        });
        rt.block_on(d.bus.shutdown(Duration::from_secs(5)));
        d.store.close();
    }

    match start_jetstream() {
        Some((server, _store)) => {
            let js = rt.block_on(jetstream_context(&server.url()));
            let h = Arc::new(Mutex::new(Histogram::new(3).unwrap()));
            rt.block_on(jetstream_publish_all(&js, n, Some(h.clone())));
            percentiles("jetstream_file", &h.lock().unwrap());
            group.bench_function("jetstream_file", |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| rt.block_on(jetstream_publish_all(&js, n, None)))
                        .sum()
                })
            });
        }
        None => eprintln!("nats-server not found: JetStream comparison skipped"),
    }
    group.finish();
}

// ------------------------------------------------------------------ replay

fn replay(c: &mut Criterion) {
    let n = 50_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(store_config(dir.path(), false)).unwrap();
        let subs: Vec<Arc<str>> = vec![Arc::from("bench")];
        let waits: Vec<_> = (0..n)
            .map(|i| store.append(&message(i), subs.clone()).unwrap())
            .collect();
        for w in waits {
            w.wait().unwrap();
        }
        store.close();
    }
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function("open_and_read_back_50k", |b| {
        b.iter(|| {
            let (store, recovery) = Store::open(store_config(dir.path(), false)).unwrap();
            assert_eq!(recovery.pending, n as usize);
            let replay = store.take_replay("bench");
            assert_eq!(replay.len(), n as usize);
            store.close();
        })
    });
    group.finish();
}

criterion_group!(benches, store_commit, durable_publish, replay);
criterion_main!(benches);
