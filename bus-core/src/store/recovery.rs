//! Reading a store back at start: segment files, checksums, torn tails
//! and the issues found on the way.

use super::index::*;
use super::record::*;
use super::*;

pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:010}.log"))
}

pub(super) fn spare_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:010}.spare"))
}

/// Makes a file's creation or renaming durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Creates `path` filled with `size` zero bytes, synced, positioned at 0.
pub(super) fn preallocate(path: &Path, size: u64) -> Result<File, StoreError> {
    use std::io::{Seek, SeekFrom};
    let fail = |e| io_error(path, e);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(fail)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).map_err(fail)?;
        left -= n as u64;
    }
    file.sync_all().map_err(fail)?;
    file.seek(SeekFrom::Start(0)).map_err(fail)?;
    Ok(file)
}

pub(super) fn segment_numbers(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// What reading a store back produced.
pub(super) struct ReadBack {
    pub(super) index: Index,
    pub(super) recovery: Recovery,
    /// Pending messages found expired (or unreadable), now resolved.
    pub(super) expired: Vec<MessageId>,
    pub(super) next_seq: u64,
    pub(super) segments: Vec<u64>,
}

/// Reads every segment into an index. With `repair`, a torn tail of the
/// newest segment is cut off so it is not reported again.
pub(super) fn read_back(
    dir: &Path,
    dedupe_window: usize,
    repair: bool,
) -> Result<ReadBack, StoreError> {
    let numbers = segment_numbers(dir)?;
    let mut index = Index::default();
    let mut recovery = Recovery {
        segments: numbers.len(),
        ..Recovery::default()
    };
    let mut bodies: HashMap<MessageId, Vec<u8>> = HashMap::new();
    let mut max_seq = 0;
    for (i, &number) in numbers.iter().enumerate() {
        let path = segment_path(dir, number);
        let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
        let mut records = 0;
        let mut bad_letters = Vec::new();
        let good_end = scan(&path, &bytes, &mut recovery.issues, |kind, body| {
            records += 1;
            let Some(record) = decode(kind, body) else {
                bad_letters.push(format!("record of unknown kind {kind}"));
                return;
            };
            match record {
                Record::Message {
                    seq,
                    id,
                    expires_at_ms,
                    subs,
                    json,
                } => {
                    max_seq = max_seq.max(seq);
                    let subs = subs.into_iter().map(Arc::from).collect();
                    let fresh = !index.pending.contains_key(&id);
                    index.add_message(id, seq, number, expires_at_ms, subs);
                    if fresh && index.pending.contains_key(&id) {
                        bodies.insert(id, json.to_vec());
                    }
                }
                Record::Ack { id, sub, processed } => {
                    index.resolve(id, sub);
                    if processed {
                        index.mark_processed(sub, id, number, dedupe_window);
                    }
                }
                Record::Expired { id, sub } => {
                    index.resolve(id, sub);
                }
                Record::DeadLetter { id, sub, json } => {
                    index.resolve(id, sub);
                    match serde_json::from_slice::<DeadLetter>(json) {
                        Ok(letter) => index.keep_dead_letter(letter),
                        Err(e) => bad_letters.push(format!("dead letter for {id}: {e}")),
                    }
                }
                Record::Processed { id, sub } => {
                    index.mark_processed(sub, id, number, dedupe_window);
                }
            }
        });
        recovery.records += records;
        for problem in bad_letters {
            recovery.issues.push(RecoveryIssue {
                file: path.clone(),
                offset: 0,
                skipped: 0,
                problem,
            });
        }
        let newest = i + 1 == numbers.len();
        if repair && newest && good_end < bytes.len() {
            // A torn tail is cut off (with any preallocated space after it),
            // so it is not reported again.
            let tail_only = !(good_end + 1..bytes.len())
                .any(|p| bytes[p] == MAGIC && record_at(&bytes, p).is_ok());
            if tail_only {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error(&path, e))?;
                file.set_len(good_end as u64)
                    .map_err(|e| io_error(&path, e))?;
            }
        }
    }
    // Envelopes of what is still pending, for replay.
    let now = now_ms();
    let mut expired: Vec<MessageId> = Vec::new();
    let mut ids: Vec<(u64, MessageId)> = index.pending.iter().map(|(id, e)| (e.seq, *id)).collect();
    ids.sort_unstable();
    for (seq, id) in ids {
        let entry = &index.pending[&id];
        if entry.expires_at_ms.is_some_and(|at| at <= now) {
            expired.push(id);
            continue;
        }
        let body = bodies.remove(&id).unwrap_or_default();
        match Envelope::from_json(&body) {
            Ok(envelope) => {
                let envelope = Arc::new(envelope);
                for sub in &entry.subs {
                    index
                        .replay
                        .entry(sub.clone())
                        .or_default()
                        .push((seq, envelope.clone()));
                }
            }
            Err(e) => {
                recovery.issues.push(RecoveryIssue {
                    file: segment_path(dir, entry.segment),
                    offset: 0,
                    skipped: 0,
                    problem: format!("message {id} (seq {seq}) unreadable: {e}"),
                });
                expired.push(id);
            }
        }
    }
    recovery.expired = expired.len();
    for id in &expired {
        index.resolve(*id, "");
    }
    recovery.pending = index.pending.len();
    recovery.dead_letters = index.dead_letters.len();
    Ok(ReadBack {
        index,
        recovery,
        expired,
        next_seq: max_seq + 1,
        segments: numbers,
    })
}
