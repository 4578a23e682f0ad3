//! The durable store: an embedded, append-only journal of durable messages
//! and of what became of them, replayed when the bus restarts.
//!
//! # Layout
//!
//! A directory of segment files `seg-0000000001.log`, `seg-0000000002.log`,
//! ... Each holds records framed as
//!
//! ```text
//! magic 0xB5 | kind u8 | length u32 LE | crc32 u32 LE (of kind + body) | body
//! ```
//!
//! Kinds: a *message* (sequence number, expiry, the durable subscriptions
//! it was routed to, the envelope as JSON), an *ack* (subscription handled
//! it; for exactly-once it also records the id as processed), an *expiry*,
//! a *dead letter* (with the [`DeadLetter`] as JSON) and a *processed id*
//! carried forward from a segment being deleted.
//!
//! # Writing
//!
//! One writer thread owns the files. Publishers hand it encoded records and
//! wait; it takes every record waiting (group commit), writes them with one
//! `write`, calls `fdatasync` once when [`StoreConfig::fsync`] is on, and
//! only then answers the publishers. So `publish` of a durable message
//! returns after the message is on disk, and hundreds of concurrent
//! publishers share one sync. Acks are queued the same way without waiting.
//!
//! # Reading back
//!
//! [`Store::open`] reads every segment in order and rebuilds the index:
//! which messages are pending for which subscription (in sequence order),
//! the processed-id windows, the dead letters. A record that fails its
//! checksum or is cut short is reported as a [`RecoveryIssue`] (file, byte
//! offset, what was wrong, bytes skipped); the reader then looks for the
//! next intact record, so one bad record costs only itself. A torn record
//! at the end of the newest segment (a crash mid-write) is cut off.
//!
//! # Cleanup
//!
//! After each commit the writer rolls the segment when it is larger than
//! [`StoreConfig::segment_bytes`], then does at most one bounded step of
//! cleanup: it expires up to [`CLEANUP_BATCH`] messages whose time to live
//! ran out, and retires the oldest closed segment — deleted outright when
//! nothing in it is pending, otherwise once its pending messages and the
//! processed ids still inside their windows are copied (synced) into the
//! active segment. Disk use thus stays proportional to what is pending.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::model::envelope::now_ms;
use crate::model::ids::MessageId;
use crate::model::payload::DeadLetter;
use crate::model::Envelope;

/// Messages expired per cleanup step.
pub const CLEANUP_BATCH: usize = 1024;

const MAGIC: u8 = 0xB5;
const HEADER: usize = 10;
/// Largest record accepted when reading back (a corrupt length field must
/// not make the reader allocate gigabytes).
const MAX_RECORD: usize = 64 << 20;

const KIND_MESSAGE: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_EXPIRED: u8 = 3;
const KIND_DEAD_LETTER: u8 = 4;
const KIND_PROCESSED: u8 = 5;

/// How the store is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// Sync each group commit to disk before answering publishers. Off, a
    /// message survives a crash of the process but not of the machine.
    pub fsync: bool,
    /// Size at which the active segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Most messages pending at once; publishing more is refused with
    /// [`StoreError::Full`] until consumers catch up.
    pub max_pending: usize,
    /// Processed ids remembered per subscription (exactly-once window).
    pub dedupe_window: usize,
    /// Most records in one group commit.
    pub max_batch: usize,
    /// How often the writer cleans up when nothing is being written.
    pub cleanup_interval: Duration,
    /// Fill each new segment with zeros ahead of use (on a helper thread,
    /// once the active segment is half full): syncing writes into
    /// allocated space skips the file-size metadata update, which roughly
    /// halves the cost of each sync on ext4.
    pub preallocate: bool,
}

impl StoreConfig {
    /// Defaults for a store in `dir`: fsync on, 64 MiB segments, one
    /// million pending messages, 100,000 processed ids per subscription.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: true,
            segment_bytes: 64 << 20,
            max_pending: 1_000_000,
            dedupe_window: 100_000,
            max_batch: 4096,
            cleanup_interval: Duration::from_secs(1),
            preallocate: true,
        }
    }
}

/// What went wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("store {path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        message: String,
    },
    /// Too many messages are pending.
    #[error("durable store full: {pending} messages pending (limit {limit})")]
    Full {
        /// Pending now.
        pending: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The writer thread has stopped (the store was closed or a write failed).
    #[error("durable store closed")]
    Closed,
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Something the reader could not read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryIssue {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the unreadable data.
    pub offset: u64,
    /// Bytes skipped.
    pub skipped: u64,
    /// What was wrong.
    pub problem: String,
}

impl fmt::Display for RecoveryIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {} ({} bytes skipped)",
            self.file.display(),
            self.offset,
            self.problem,
            self.skipped
        )
    }
}

/// What opening a store found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Segment files read.
    pub segments: usize,
    /// Records read intact.
    pub records: u64,
    /// Messages pending, to be replayed to their subscriptions.
    pub pending: usize,
    /// Pending messages found past their time to live (not replayed).
    pub expired: usize,
    /// Dead letters kept.
    pub dead_letters: usize,
    /// What could not be read.
    pub issues: Vec<RecoveryIssue>,
}

/// A pending message as found in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Order of publication.
    pub seq: u64,
    /// The message.
    pub envelope: Envelope,
    /// Durable subscriptions that have not acknowledged it.
    pub pending_for: Vec<String>,
}

/// Everything in a store, read without changing it (see [`Store::inspect`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Pending messages in sequence order.
    pub pending: Vec<StoredMessage>,
    /// Processed ids by subscription, oldest first (within the window).
    pub processed: BTreeMap<String, Vec<MessageId>>,
    /// Dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// What opening found.
    pub recovery: Recovery,
}

/// Running totals of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Durable messages written.
    pub appended: u64,
    /// Acks, expiries and dead letters written.
    pub resolved: u64,
    /// Group commits (one write, one sync each).
    pub commits: u64,
    /// Messages pending now.
    pub pending: usize,
    /// Messages expired by cleanup or at recovery.
    pub expired: u64,
    /// Segment files deleted by cleanup.
    pub segments_retired: u64,
}

// ------------------------------------------------------------------ records

fn crc(kind: u8, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(body);
    hasher.finalize()
}

fn frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(MAGIC);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(kind, body).to_le_bytes());
    out.extend_from_slice(body);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A decoded record body.
#[derive(Debug)]
enum Record<'a> {
    Message {
        seq: u64,
        id: MessageId,
        expires_at_ms: Option<i64>,
        subs: Vec<&'a str>,
        json: &'a [u8],
    },
    Ack {
        id: MessageId,
        sub: &'a str,
        processed: bool,
    },
    Expired {
        id: MessageId,
        sub: &'a str,
    },
    DeadLetter {
        id: MessageId,
        sub: &'a str,
        json: &'a [u8],
    },
    Processed {
        id: MessageId,
        sub: &'a str,
    },
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn id(&mut self) -> Option<MessageId> {
        self.take(16)
            .map(|b| MessageId::from_u128(u128::from_be_bytes(b.try_into().expect("16 bytes"))))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

fn id_bytes(id: MessageId) -> [u8; 16] {
    id.as_uuid().as_u128().to_be_bytes()
}

fn encode_message(
    out: &mut Vec<u8>,
    seq: u64,
    id: MessageId,
    expires_at_ms: Option<i64>,
    subs: &[Arc<str>],
    json: &[u8],
) {
    let mut body = Vec::with_capacity(40 + json.len() + subs.len() * 16);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&id_bytes(id));
    body.extend_from_slice(&(expires_at_ms.unwrap_or(i64::MIN) as u64).to_le_bytes());
    body.extend_from_slice(&(subs.len() as u16).to_le_bytes());
    for sub in subs {
        put_str(&mut body, sub);
    }
    body.extend_from_slice(json);
    frame(out, KIND_MESSAGE, &body);
}

fn encode_resolution(out: &mut Vec<u8>, kind: u8, id: MessageId, sub: &str, extra: &[u8]) {
    let mut body = Vec::with_capacity(20 + sub.len() + extra.len());
    body.extend_from_slice(&id_bytes(id));
    put_str(&mut body, sub);
    body.extend_from_slice(extra);
    frame(out, kind, &body);
}

fn decode(kind: u8, body: &[u8]) -> Option<Record<'_>> {
    let mut c = Cursor { bytes: body };
    Some(match kind {
        KIND_MESSAGE => {
            let seq = c.u64()?;
            let id = c.id()?;
            let expires = c.u64()? as i64;
            let n = c.u16()? as usize;
            let mut subs = Vec::with_capacity(n);
            for _ in 0..n {
                subs.push(c.str()?);
            }
            Record::Message {
                seq,
                id,
                expires_at_ms: (expires != i64::MIN).then_some(expires),
                subs,
                json: c.rest(),
            }
        }
        KIND_ACK => {
            let id = c.id()?;
            let sub = c.str()?;
            let processed = c.u8()? == 1;
            Record::Ack { id, sub, processed }
        }
        KIND_EXPIRED => Record::Expired {
            id: c.id()?,
            sub: c.str()?,
        },
        KIND_DEAD_LETTER => Record::DeadLetter {
            id: c.id()?,
            sub: c.str()?,
            json: c.rest(),
        },
        KIND_PROCESSED => Record::Processed {
            id: c.id()?,
            sub: c.str()?,
        },
        _ => return None,
    })
}

/// Whether a well-formed record starts at `pos`; its total length if so.
fn record_at(bytes: &[u8], pos: usize) -> Result<usize, &'static str> {
    let header = bytes.get(pos..pos + HEADER).ok_or("cut short")?;
    if header[0] != MAGIC {
        return Err("not a record boundary");
    }
    let len = u32::from_le_bytes(header[2..6].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD {
        return Err("impossible record length");
    }
    let body = bytes
        .get(pos + HEADER..pos + HEADER + len)
        .ok_or("cut short")?;
    let expected = u32::from_le_bytes(header[6..10].try_into().expect("4 bytes"));
    if crc(header[1], body) != expected {
        return Err("checksum mismatch");
    }
    Ok(HEADER + len)
}

/// Walks the records of one segment, reporting what it skips.
fn scan(
    file: &Path,
    bytes: &[u8],
    issues: &mut Vec<RecoveryIssue>,
    mut each: impl FnMut(u8, &[u8]),
) -> usize {
    let mut pos = 0;
    let mut good_end = 0;
    while pos < bytes.len() {
        match record_at(bytes, pos) {
            Ok(len) => {
                let kind = bytes[pos + 1];
                each(kind, &bytes[pos + HEADER..pos + len]);
                pos += len;
                good_end = pos;
            }
            Err(problem) => {
                // Look for the next intact record.
                let next = (pos + 1..bytes.len())
                    .find(|&p| bytes[p] == MAGIC && record_at(bytes, p).is_ok())
                    .unwrap_or(bytes.len());
                let problem = if next == bytes.len() {
                    // The tail: zeros are preallocated space never written;
                    // anything else is a record the crash cut short.
                    let written = bytes[pos..]
                        .iter()
                        .rposition(|&b| b != 0)
                        .map_or(0, |i| i + 1);
                    if written == 0 {
                        break;
                    }
                    "record cut short (torn write at the end)"
                } else {
                    problem
                };
                issues.push(RecoveryIssue {
                    file: file.to_path_buf(),
                    offset: pos as u64,
                    skipped: (next - pos) as u64,
                    problem: problem.to_string(),
                });
                pos = next;
            }
        }
    }
    good_end
}

// -------------------------------------------------------------------- index

struct PendingEntry {
    seq: u64,
    segment: u64,
    expires_at_ms: Option<i64>,
    subs: Vec<Arc<str>>,
}

/// The processed ids of one subscription, each with the segment holding
/// its record (so cleanup knows which to carry forward).
#[derive(Default)]
struct ProcessedWindow {
    order: VecDeque<(MessageId, u64)>,
    set: HashSet<MessageId>,
}

impl ProcessedWindow {
    fn insert(&mut self, id: MessageId, segment: u64, capacity: usize) {
        if capacity == 0 || !self.set.insert(id) {
            return;
        }
        if self.order.len() >= capacity {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back((id, segment));
    }
}

#[derive(Default)]
struct Index {
    pending: HashMap<MessageId, PendingEntry>,
    /// (expiry, id) of pending messages with a time to live.
    expiring: BTreeSet<(i64, MessageId)>,
    /// Pending messages per segment.
    live: BTreeMap<u64, usize>,
    processed: HashMap<Arc<str>, ProcessedWindow>,
    dead_letters: VecDeque<DeadLetter>,
    /// Envelopes read back at open, per subscription, not yet replayed.
    replay: HashMap<Arc<str>, Vec<(u64, Arc<Envelope>)>>,
}

/// Dead letters kept in memory for inspection.
const DEAD_LETTERS_KEPT: usize = 10_000;

impl Index {
    fn add_message(
        &mut self,
        id: MessageId,
        seq: u64,
        segment: u64,
        expires_at_ms: Option<i64>,
        subs: Vec<Arc<str>>,
    ) {
        if let Some(entry) = self.pending.get_mut(&id) {
            if entry.seq == seq {
                // A copy carried forward by cleanup: what is pending in both.
                entry.subs.retain(|s| subs.contains(s));
                self.move_segment(id, segment);
                self.drop_if_done(id);
            } else {
                // The same message published again while still pending.
                for sub in subs {
                    if !entry.subs.contains(&sub) {
                        entry.subs.push(sub);
                    }
                }
            }
            return;
        }
        if subs.is_empty() {
            return;
        }
        if let Some(at) = expires_at_ms {
            self.expiring.insert((at, id));
        }
        *self.live.entry(segment).or_default() += 1;
        self.pending.insert(
            id,
            PendingEntry {
                seq,
                segment,
                expires_at_ms,
                subs,
            },
        );
    }

    fn move_segment(&mut self, id: MessageId, segment: u64) {
        let Some(entry) = self.pending.get_mut(&id) else {
            return;
        };
        if entry.segment != segment {
            if let Some(n) = self.live.get_mut(&entry.segment) {
                *n = n.saturating_sub(1);
            }
            entry.segment = segment;
            *self.live.entry(segment).or_default() += 1;
        }
    }

    /// Resolves `id` for `sub` (empty: for everyone). True if it was pending.
    fn resolve(&mut self, id: MessageId, sub: &str) -> bool {
        let Some(entry) = self.pending.get_mut(&id) else {
            return false;
        };
        let before = entry.subs.len();
        if sub.is_empty() {
            entry.subs.clear();
        } else {
            entry.subs.retain(|s| &**s != sub);
        }
        let changed = entry.subs.len() != before;
        self.drop_if_done(id);
        changed
    }

    fn drop_if_done(&mut self, id: MessageId) {
        if self.pending.get(&id).is_some_and(|e| e.subs.is_empty()) {
            let entry = self.pending.remove(&id).expect("present");
            if let Some(at) = entry.expires_at_ms {
                self.expiring.remove(&(at, id));
            }
            if let Some(n) = self.live.get_mut(&entry.segment) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn mark_processed(&mut self, sub: &str, id: MessageId, segment: u64, window: usize) {
        let name = match self.processed.get_key_value(sub) {
            Some((name, _)) => name.clone(),
            None => Arc::from(sub),
        };
        self.processed
            .entry(name)
            .or_default()
            .insert(id, segment, window);
    }

    fn keep_dead_letter(&mut self, letter: DeadLetter) {
        if self.dead_letters.len() >= DEAD_LETTERS_KEPT {
            self.dead_letters.pop_front();
        }
        self.dead_letters.push_back(letter);
    }
}

// ------------------------------------------------------------------- reader

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:010}.log"))
}

fn spare_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:010}.spare"))
}

/// Makes a file's creation or renaming durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Creates `path` filled with `size` zero bytes, synced, positioned at 0.
fn preallocate(path: &Path, size: u64) -> Result<File, StoreError> {
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

fn segment_numbers(dir: &Path) -> Result<Vec<u64>, StoreError> {
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
struct ReadBack {
    index: Index,
    recovery: Recovery,
    /// Pending messages found expired (or unreadable), now resolved.
    expired: Vec<MessageId>,
    next_seq: u64,
    segments: Vec<u64>,
}

/// Reads every segment into an index. With `repair`, a torn tail of the
/// newest segment is cut off so it is not reported again.
fn read_back(dir: &Path, dedupe_window: usize, repair: bool) -> Result<ReadBack, StoreError> {
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

// ------------------------------------------------------------------- writer

enum Command {
    Append {
        bytes: Vec<u8>,
        id: MessageId,
        seq: u64,
        expires_at_ms: Option<i64>,
        subs: Vec<Arc<str>>,
        done: flume::Sender<Result<(), StoreError>>,
    },
    Resolve {
        bytes: Vec<u8>,
        id: MessageId,
        sub: Arc<str>,
        processed: bool,
    },
    Sync(flume::Sender<Result<(), StoreError>>),
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    resolved: AtomicU64,
    commits: AtomicU64,
    expired: AtomicU64,
    retired: AtomicU64,
}

struct Shared {
    config: StoreConfig,
    index: Mutex<Index>,
    /// Pending plus appends in flight, for the `max_pending` check.
    reserved: AtomicUsize,
    next_seq: AtomicU64,
    counters: Counters,
}

fn lock(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    path: PathBuf,
    segment: u64,
    bytes: u64,
    /// Closed segments, oldest first.
    closed: VecDeque<u64>,
    /// The next segment, being preallocated.
    spare: Option<JoinHandle<Result<File, StoreError>>>,
    /// Records waiting for the next commit.
    buf: Vec<u8>,
}

impl Writer {
    fn open_segment(dir: &Path, number: u64) -> Result<(File, PathBuf), StoreError> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        sync_dir(dir)?;
        Ok((file, path))
    }

    /// Starts preallocating the next segment once the active one is half full.
    fn prepare_spare(&mut self) {
        let config = &self.shared.config;
        if !config.preallocate || self.spare.is_some() || self.bytes < config.segment_bytes / 2 {
            return;
        }
        let path = spare_path(&config.dir, self.segment + 1);
        let size = config.segment_bytes;
        self.spare = std::thread::Builder::new()
            .name("bus-store-prealloc".into())
            .spawn(move || preallocate(&path, size))
            .ok();
    }

    /// The next segment: the preallocated spare when there is one.
    fn next_segment(&mut self) -> Result<(File, PathBuf), StoreError> {
        let dir = &self.shared.config.dir;
        let next = self.segment + 1;
        if let Some(Ok(Ok(file))) = self.spare.take().map(JoinHandle::join) {
            let path = segment_path(dir, next);
            fs::rename(spare_path(dir, next), &path).map_err(|e| io_error(&path, e))?;
            sync_dir(dir)?;
            return Ok((file, path));
        }
        Self::open_segment(dir, next)
    }

    fn sync(&self) -> Result<(), StoreError> {
        if self.shared.config.fsync {
            self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Writes `self.buf` and syncs it.
    fn commit(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| io_error(&self.path, e))?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        self.sync()?;
        self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn run(mut self, rx: flume::Receiver<Command>) {
        let mut batch = Vec::new();
        loop {
            match rx.recv_timeout(self.shared.config.cleanup_interval) {
                Ok(first) => batch.push(first),
                Err(flume::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.cleanup() {
                        tracing::error!(error = %e, "durable store cleanup failed");
                    }
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < self.shared.config.max_batch {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            for command in &mut batch {
                match command {
                    Command::Append { bytes, .. } | Command::Resolve { bytes, .. } => {
                        self.buf.append(bytes)
                    }
                    Command::Sync(_) => {}
                }
            }
            let result = self.commit();
            self.apply(batch.drain(..), &result);
            if let Err(e) = result {
                tracing::error!(error = %e, "durable store write failed; store closed");
                break;
            }
            self.prepare_spare();
            if let Err(e) = self.roll().and_then(|()| self.cleanup()) {
                tracing::error!(error = %e, "durable store cleanup failed");
            }
        }
        // Closing: whatever cleanup wrote is committed; an unused spare goes.
        let _ = self.commit();
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
            let _ = fs::remove_file(spare_path(&self.shared.config.dir, self.segment + 1));
        }
    }

    fn apply(&self, batch: impl Iterator<Item = Command>, result: &Result<(), StoreError>) {
        let shared = &self.shared;
        let window = shared.config.dedupe_window;
        let mut index = lock(&shared.index);
        for command in batch {
            match command {
                Command::Append {
                    id,
                    seq,
                    expires_at_ms,
                    subs,
                    done,
                    ..
                } => {
                    if result.is_ok() {
                        let was = index.pending.contains_key(&id);
                        index.add_message(id, seq, self.segment, expires_at_ms, subs);
                        if was || !index.pending.contains_key(&id) {
                            shared.reserved.fetch_sub(1, Ordering::SeqCst);
                        }
                        shared.counters.appended.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.reserved.fetch_sub(1, Ordering::SeqCst);
                    }
                    let _ = done.send(result.clone());
                }
                Command::Resolve {
                    id, sub, processed, ..
                } => {
                    let was = index.pending.contains_key(&id);
                    index.resolve(id, &sub);
                    if was && !index.pending.contains_key(&id) {
                        shared.reserved.fetch_sub(1, Ordering::SeqCst);
                    }
                    if processed {
                        index.mark_processed(&sub, id, self.segment, window);
                    }
                    shared.counters.resolved.fetch_add(1, Ordering::Relaxed);
                }
                Command::Sync(done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
    }

    fn roll(&mut self) -> Result<(), StoreError> {
        if self.bytes < self.shared.config.segment_bytes {
            return Ok(());
        }
        let next = self.segment + 1;
        let (file, path) = self.next_segment()?;
        self.closed.push_back(self.segment);
        self.file = file;
        self.path = path;
        self.segment = next;
        self.bytes = 0;
        Ok(())
    }

    /// One bounded step: expire what ran out, retire the oldest closed segment.
    fn cleanup(&mut self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let now = now_ms();
        {
            let mut index = lock(&shared.index);
            let due: Vec<MessageId> = index
                .expiring
                .iter()
                .take_while(|(at, _)| *at <= now)
                .take(CLEANUP_BATCH)
                .map(|(_, id)| *id)
                .collect();
            for id in due {
                encode_resolution(&mut self.buf, KIND_EXPIRED, id, "", &[]);
                if index.resolve(id, "") {
                    shared.reserved.fetch_sub(1, Ordering::SeqCst);
                    shared.counters.expired.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.commit()?;
        let Some(&oldest) = self.closed.front() else {
            return Ok(());
        };
        let path = segment_path(&shared.config.dir, oldest);
        let live = lock(&shared.index).live.get(&oldest).copied().unwrap_or(0);
        // A segment with pending messages is kept while few segments are
        // closed (those messages are likely acked soon); past that it is
        // copied forward, so disk use stays bounded by what is pending.
        if live > 0 && self.closed.len() <= 2 {
            return Ok(());
        }
        // One pass over the segment copies into the active one what must
        // outlive it: messages still pending there, and dead letters (they
        // stay inspectable; few, and the in-memory list is capped).
        let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
        {
            let mut carried = Vec::new();
            let mut ignored = Vec::new();
            let mut index = lock(&shared.index);
            let buf = &mut self.buf;
            scan(&path, &bytes, &mut ignored, |kind, body| {
                match decode(kind, body) {
                    Some(Record::Message { seq, id, json, .. }) => {
                        if let Some(entry) = index.pending.get(&id).filter(|e| e.segment == oldest)
                        {
                            encode_message(buf, seq, id, entry.expires_at_ms, &entry.subs, json);
                            carried.push(id);
                        }
                    }
                    Some(Record::DeadLetter { id, sub, json }) => {
                        encode_resolution(buf, KIND_DEAD_LETTER, id, sub, json);
                    }
                    _ => {}
                }
            });
            for id in carried {
                index.move_segment(id, self.segment);
            }
            // Processed ids still inside their windows move forward too.
            let segment = self.segment;
            for (sub, window) in index.processed.iter_mut() {
                for (id, at) in window.order.iter_mut() {
                    if *at == oldest {
                        encode_resolution(buf, KIND_PROCESSED, *id, sub, &[]);
                        *at = segment;
                    }
                }
            }
            index.live.remove(&oldest);
        }
        self.commit()?;
        // Make sure the copies are durable even with fsync off before the
        // originals go.
        self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
        fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        self.closed.pop_front();
        shared.counters.retired.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

// -------------------------------------------------------------------- store

/// The durable store. Cheap to clone; clones share one writer.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    commands: Arc<Mutex<Option<flume::Sender<Command>>>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.config.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A durable write on its way to disk.
#[must_use = "the message is durable only once the wait returns Ok"]
pub struct Durable(flume::Receiver<Result<(), StoreError>>);

impl Durable {
    /// Waits (blocking this thread) until the write is durable.
    pub fn wait(self) -> Result<(), StoreError> {
        self.0.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Waits asynchronously until the write is durable.
    pub async fn wait_async(self) -> Result<(), StoreError> {
        self.0.recv_async().await.unwrap_or(Err(StoreError::Closed))
    }
}

impl Store {
    /// Opens (or creates) the store in `config.dir`, reads it back and
    /// starts its writer. The [`Recovery`] says what was found and what
    /// could not be read; the store opens whatever the damage.
    pub fn open(config: StoreConfig) -> Result<(Store, Recovery), StoreError> {
        fs::create_dir_all(&config.dir).map_err(|e| io_error(&config.dir, e))?;
        // Spares being preallocated when the last process stopped.
        if let Ok(entries) = fs::read_dir(&config.dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|x| x == "spare") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let ReadBack {
            index,
            recovery,
            expired,
            next_seq,
            segments,
        } = read_back(&config.dir, config.dedupe_window, true)?;
        let segment = segments.last().map_or(1, |n| n + 1);
        for issue in &recovery.issues {
            tracing::warn!(%issue, "durable store: could not read");
        }
        let reserved = index.pending.len();
        let (file, path) = Writer::open_segment(&config.dir, segment)?;
        let shared = Arc::new(Shared {
            config,
            index: Mutex::new(index),
            reserved: AtomicUsize::new(reserved),
            next_seq: AtomicU64::new(next_seq),
            counters: Counters::default(),
        });
        shared
            .counters
            .expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        let mut writer = Writer {
            shared: shared.clone(),
            file,
            path,
            segment,
            bytes: 0,
            closed: segments.into_iter().collect(),
            spare: None,
            buf: Vec::new(),
        };
        // Record the expiries found at recovery so they are not found again.
        for id in expired {
            encode_resolution(&mut writer.buf, KIND_EXPIRED, id, "", &[]);
        }
        writer.commit()?;
        let (tx, rx) = flume::unbounded();
        let handle = std::thread::Builder::new()
            .name("bus-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error(&shared.config.dir, e))?;
        Ok((
            Store {
                shared,
                commands: Arc::new(Mutex::new(Some(tx))),
                writer: Arc::new(Mutex::new(Some(handle))),
            },
            recovery,
        ))
    }

    /// Reads a store without changing it: for tools and tests.
    pub fn inspect(dir: impl AsRef<Path>, dedupe_window: usize) -> Result<Snapshot, StoreError> {
        let dir = dir.as_ref();
        if !dir.exists() {
            return Ok(Snapshot::default());
        }
        let ReadBack {
            index, recovery, ..
        } = read_back(dir, dedupe_window, false)?;
        let mut pending: Vec<StoredMessage> = Vec::new();
        let mut by_id: HashMap<MessageId, usize> = HashMap::new();
        for (sub, list) in &index.replay {
            for (seq, envelope) in list {
                let slot = *by_id.entry(envelope.id).or_insert_with(|| {
                    pending.push(StoredMessage {
                        seq: *seq,
                        envelope: (**envelope).clone(),
                        pending_for: Vec::new(),
                    });
                    pending.len() - 1
                });
                pending[slot].pending_for.push(sub.to_string());
            }
        }
        pending.sort_by_key(|m| m.seq);
        for message in &mut pending {
            message.pending_for.sort();
        }
        Ok(Snapshot {
            pending,
            processed: index
                .processed
                .iter()
                .map(|(sub, w)| (sub.to_string(), w.order.iter().map(|(id, _)| *id).collect()))
                .collect(),
            dead_letters: index.dead_letters.into_iter().collect(),
            recovery,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        commands
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(command)
            .map_err(|_| StoreError::Closed)
    }

    /// Writes a durable message routed to the durable subscriptions `subs`.
    /// It is durable once the returned [`Durable`] resolves Ok.
    pub fn append(&self, envelope: &Envelope, subs: Vec<Arc<str>>) -> Result<Durable, StoreError> {
        let limit = self.shared.config.max_pending;
        let reserved = self.shared.reserved.fetch_add(1, Ordering::SeqCst);
        if reserved >= limit {
            self.shared.reserved.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Full {
                pending: reserved,
                limit,
            });
        }
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let json = envelope.to_json_bytes();
        let mut bytes = Vec::with_capacity(json.len() + 64);
        encode_message(
            &mut bytes,
            seq,
            envelope.id,
            envelope.expires_at_ms,
            &subs,
            &json,
        );
        let (done, wait) = flume::bounded(1);
        let sent = self.send(Command::Append {
            bytes,
            id: envelope.id,
            seq,
            expires_at_ms: envelope.expires_at_ms,
            subs,
            done,
        });
        if let Err(e) = sent {
            self.shared.reserved.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(Durable(wait))
    }

    fn resolve(&self, kind: u8, id: MessageId, sub: &Arc<str>, extra: &[u8], processed: bool) {
        let mut bytes = Vec::with_capacity(32 + sub.len() + extra.len());
        encode_resolution(&mut bytes, kind, id, sub, extra);
        if self
            .send(Command::Resolve {
                bytes,
                id,
                sub: sub.clone(),
                processed,
            })
            .is_err()
        {
            tracing::warn!(message_id = %id, subscription = %sub, "durable store closed; resolution not recorded (the message will be redelivered)");
        }
    }

    /// Records that `sub` handled `id`; with `processed`, also remembers the
    /// id for exactly-once de-duplication. Written with the next commit.
    pub fn ack(&self, id: MessageId, sub: &Arc<str>, processed: bool) {
        self.resolve(KIND_ACK, id, sub, &[u8::from(processed)], processed);
    }

    /// Records that `id` expired before `sub` handled it.
    pub fn expire(&self, id: MessageId, sub: &Arc<str>) {
        self.resolve(KIND_EXPIRED, id, sub, &[], false);
        self.shared.counters.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a dead letter; it resolves `id` for `sub` and stays
    /// inspectable (also after restarts).
    pub fn dead_letter(&self, id: MessageId, sub: &Arc<str>, letter: &DeadLetter) {
        let json = serde_json::to_vec(letter).unwrap_or_default();
        lock(&self.shared.index).keep_dead_letter(letter.clone());
        self.resolve(KIND_DEAD_LETTER, id, sub, &json, false);
    }

    /// Waits until everything sent so far is written (and synced when fsync is on).
    pub fn sync(&self) -> Result<(), StoreError> {
        let (done, wait) = flume::bounded(1);
        self.send(Command::Sync(done))?;
        wait.recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Messages read back at open that are pending for `sub`, in publication
    /// order; each is handed out once.
    pub fn take_replay(&self, sub: &str) -> Vec<Arc<Envelope>> {
        let mut list = lock(&self.shared.index)
            .replay
            .remove(sub)
            .unwrap_or_default();
        list.sort_by_key(|(seq, _)| *seq);
        list.into_iter().map(|(_, e)| e).collect()
    }

    /// The processed ids of `sub` (oldest first), to seed its de-dup window.
    pub fn processed(&self, sub: &str) -> Vec<MessageId> {
        lock(&self.shared.index)
            .processed
            .get(sub)
            .map(|w| w.order.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// Dead letters, oldest first (up to 10,000), including those read back.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.shared.index)
            .dead_letters
            .iter()
            .cloned()
            .collect()
    }

    /// Running totals.
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            appended: c.appended.load(Ordering::Relaxed),
            resolved: c.resolved.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            pending: lock(&self.shared.index).pending.len(),
            expired: c.expired.load(Ordering::Relaxed),
            segments_retired: c.retired.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, stops the writer and waits for it.
    pub fn close(&self) {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}
