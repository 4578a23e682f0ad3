//! `bistoury inspect`: what a durable store holds, read without changing
//! it (a store left by a killed process included), and the republishing
//! of a dead letter when asked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use bus_core::model::time::iso8601_utc;
use bus_core::store::{Snapshot, Store, StoreConfig};
use bus_core::Envelope;

/// Ids a subscription's processed-id window holds at most when read.
const DEDUPE_WINDOW: usize = 100_000;

/// The text `bistoury inspect` prints for `snapshot` of the store in `dir`.
pub fn describe(dir: &Path, snapshot: &Snapshot) -> String {
    let mut s = String::new();
    let recovery = &snapshot.recovery;
    let _ = writeln!(
        s,
        "durable store {}: {} segment files, {} records read",
        dir.display(),
        recovery.segments,
        recovery.records
    );
    let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
    for message in &snapshot.pending {
        for subscription in &message.pending_for {
            *pending.entry(subscription).or_default() += 1;
        }
    }
    let _ = writeln!(s, "pending messages: {}", snapshot.pending.len());
    for (subscription, n) in &pending {
        let _ = writeln!(s, "  {subscription:<24} {n} pending");
    }
    let _ = writeln!(s, "dead letters: {}", snapshot.dead_letters.len());
    for letter in &snapshot.dead_letters {
        let (id, topic) = match &letter.original {
            Some(envelope) => (envelope.id.to_string(), envelope.topic.to_string()),
            None => ("(undecodable)".into(), "?".into()),
        };
        let _ = writeln!(
            s,
            "  {id}  {}  {topic}  after {} attempts at {}: {}",
            letter.subscription,
            letter.attempts,
            iso8601_utc(letter.dead_lettered_at_ms),
            letter.error
        );
    }
    let _ = writeln!(s, "processed-id windows:");
    if snapshot.processed.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for (subscription, ids) in &snapshot.processed {
        let _ = writeln!(s, "  {subscription:<24} {} ids", ids.len());
    }
    match recovery.issues.is_empty() {
        true => {
            let _ = writeln!(s, "damage: none");
        }
        false => {
            let _ = writeln!(
                s,
                "damage: {} places could not be read",
                recovery.issues.len()
            );
            for issue in &recovery.issues {
                let _ = writeln!(s, "  {issue}");
            }
        }
    }
    s
}

fn not_a_store(dir: &Path) -> Option<ExitCode> {
    if dir.is_dir() {
        return None;
    }
    eprintln!("{}: no such store directory", dir.display());
    Some(ExitCode::from(2))
}

/// `bistoury inspect DIR`.
pub fn show(dir: &Path) -> ExitCode {
    if let Some(code) = not_a_store(dir) {
        return code;
    }
    match Store::inspect(dir, DEDUPE_WINDOW) {
        Ok(snapshot) => {
            print!("{}", describe(dir, &snapshot));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `bistoury inspect DIR --replay-dead-letter ID`: the dead letter's
/// message, as a new message (new id, header `replayed_from`), written to
/// the store pending for its subscription.
pub fn replay_dead_letter(dir: &Path, id: &str) -> ExitCode {
    if let Some(code) = not_a_store(dir) {
        return code;
    }
    let wanted = id.trim();
    let letters = match Store::inspect(dir, DEDUPE_WINDOW) {
        Ok(snapshot) => snapshot.dead_letters,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let found = letters.into_iter().find_map(|letter| {
        let original = letter.original?;
        (original.id.to_string() == wanted).then_some((original, letter.subscription))
    });
    let Some((original, subscription)) = found else {
        eprintln!(
            "--replay-dead-letter: no dead letter of message {id} in {}",
            dir.display()
        );
        return ExitCode::from(2);
    };
    let mut envelope = Envelope::new(
        original.sender.clone(),
        original.topic.clone(),
        original.payload().clone(),
    );
    envelope.created_at_ms = original.created_at_ms;
    envelope.priority = original.priority;
    envelope.delivery_mode = original.delivery_mode;
    envelope.max_attempts = original.max_attempts;
    envelope.correlation_id = original.correlation_id;
    envelope.reply_to = original.reply_to.clone();
    envelope.headers = original.headers.clone();
    envelope
        .headers
        .insert("replayed_from".into(), original.id.to_string());
    let written = Store::open(StoreConfig::new(dir)).and_then(|(store, _)| {
        let done = store
            .append(&envelope, vec![Arc::from(subscription.as_str())])
            .and_then(|durable| durable.wait());
        store.close();
        done
    });
    match written {
        Ok(()) => {
            println!(
                "replayed dead letter {id} as message {} for subscription {subscription}: \
                 it is delivered when {subscription} next subscribes",
                envelope.id
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot write to {}: {error}", dir.display());
            ExitCode::FAILURE
        }
    }
}
