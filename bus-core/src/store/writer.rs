//! The writer thread: group commit, segment rolling and the bounded
//! cleanup step after each commit.

use super::index::*;
use super::record::*;
use super::recovery::*;
use super::*;

pub(super) enum Command {
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
pub(super) struct Counters {
    pub(super) appended: AtomicU64,
    pub(super) resolved: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) retired: AtomicU64,
}

pub(super) struct Shared {
    pub(super) config: StoreConfig,
    pub(super) index: Mutex<Index>,
    /// Pending plus appends in flight, for the `max_pending` check.
    pub(super) reserved: AtomicUsize,
    pub(super) next_seq: AtomicU64,
    pub(super) counters: Counters,
}

pub(super) fn lock(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) segment: u64,
    pub(super) bytes: u64,
    /// Closed segments, oldest first.
    pub(super) closed: VecDeque<u64>,
    /// The next segment, being preallocated.
    pub(super) spare: Option<JoinHandle<Result<File, StoreError>>>,
    /// Records waiting for the next commit.
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn open_segment(dir: &Path, number: u64) -> Result<(File, PathBuf), StoreError> {
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
    pub(super) fn prepare_spare(&mut self) {
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
    pub(super) fn next_segment(&mut self) -> Result<(File, PathBuf), StoreError> {
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

    pub(super) fn sync(&self) -> Result<(), StoreError> {
        if self.shared.config.fsync {
            self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Writes `self.buf` and syncs it.
    pub(super) fn commit(&mut self) -> Result<(), StoreError> {
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

    pub(super) fn run(mut self, rx: flume::Receiver<Command>) {
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

    pub(super) fn apply(
        &self,
        batch: impl Iterator<Item = Command>,
        result: &Result<(), StoreError>,
    ) {
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

    pub(super) fn roll(&mut self) -> Result<(), StoreError> {
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
    pub(super) fn cleanup(&mut self) -> Result<(), StoreError> {
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
