//! The store: every log under one root, the metadata store, and the sync threads.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::backend::Backend;
use crate::journal::{self, CheckpointReason, Journal};
use crate::log::{Ctx, LazyOpen, Log, LogInner, OpenFiles, SealedCache};
use crate::meta::MetaStore;
use crate::recovery;
use crate::sync::{Durable, Failure, SyncShared};
use crate::{LogError, StoreConfig};

/// Directory holding one directory per log.
const LOGS_DIR: &str = "logs";
/// Directory where removed logs wait to be deleted (emptied at open).
const TRASH_DIR: &str = "trash";
/// Longest log id: keeps directory names well under the usual 255-byte limit.
const LOG_ID_BYTES_MAX: usize = 200;
/// Attempts to find a free name in the trash before giving up.
const TRASH_NAME_ATTEMPTS_MAX: u64 = 1000;

/// Per-shard logs and metadata under one root, with sync threads for group commit.
pub struct Store {
    ctx: Arc<Ctx>,
    logs: Mutex<BTreeMap<String, Arc<Log>>>,
    meta: MetaStore,
    /// The journal's writer and checkpointer.
    threads: Mutex<Vec<JoinHandle<()>>>,
    log_uid_next: AtomicU64,
    trash_name_next: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.ctx.config)
            .finish_non_exhaustive()
    }
}

/// Checks a log id: 1–200 bytes of `[A-Za-z0-9._-]` and `/`, not `.` or `..`.
fn validate_log_id(id: &str) -> Result<(), LogError> {
    let invalid = |reason| {
        Err(LogError::InvalidLogId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > LOG_ID_BYTES_MAX {
        return invalid("must be 1 to 200 bytes long");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/');
    if !id.bytes().all(allowed) {
        return invalid("only A-Z, a-z, 0-9, '.', '_', '-' and '/' are allowed");
    }
    if id == "." || id == ".." {
        return invalid("'.' and '..' are reserved");
    }
    Ok(())
}

/// A log's directory: `~` cannot occur in ids, so replacing `/` by it is reversible and keeps
/// every log in a flat directory of its own.
fn log_dir(id: &str) -> String {
    format!("{LOGS_DIR}/{}", id.replace('/', "~"))
}

fn remove_tree(backend: &dyn Backend, path: &str) -> io::Result<()> {
    for entry in backend.list_dir(path)? {
        let child = format!("{path}/{}", entry.name);
        if entry.is_dir {
            remove_tree(backend, &child)?;
        } else {
            backend.remove_file(&child)?;
        }
    }
    backend.remove_dir(path)
}

impl Store {
    /// Opens the store on `backend`, recovering every log and the metadata.
    pub fn open(backend: Arc<dyn Backend>, config: StoreConfig) -> Result<Arc<Store>, LogError> {
        if config.segment_bytes_max == 0 {
            return Err(LogError::Config("segment_bytes_max must be at least 1"));
        }
        if config.index_interval_bytes == 0 {
            return Err(LogError::Config("index_interval_bytes must be at least 1"));
        }
        if config.sync_threads == 0 {
            return Err(LogError::Config("sync_threads must be at least 1"));
        }
        if config.journal_file_bytes == 0 {
            return Err(LogError::Config("journal_file_bytes must be at least 1"));
        }
        if config.checkpoint_journal_files == 0 {
            return Err(LogError::Config(
                "checkpoint_journal_files must be at least 1",
            ));
        }
        if config.idle_checkpoint_ms == 0 {
            return Err(LogError::Config("idle_checkpoint_ms must be at least 1"));
        }
        if config.segment_age_max_ms <= 0 {
            return Err(LogError::Config("segment_age_max_ms must be at least 1"));
        }
        backend.create_dir(LOGS_DIR)?;
        backend.create_dir(TRASH_DIR)?;
        backend.sync_dir("")?;
        for entry in backend.list_dir(TRASH_DIR)? {
            let path = format!("{TRASH_DIR}/{}", entry.name);
            if entry.is_dir {
                remove_tree(&*backend, &path)?
            } else {
                backend.remove_file(&path)?
            }
        }
        backend.sync_dir(TRASH_DIR)?;
        let meta = MetaStore::open(&*backend)?;
        let volatile = backend.volatile();
        // Batches the journal holds but a crash kept from their segments go back first, so
        // that recovering each log below finds them where they belong.
        let journal = if volatile {
            None
        } else {
            let replayed = journal::replay(&*backend)?;
            backend.sync_dir("")?;
            let journal = Journal::new(Arc::clone(&backend), &config, &replayed);
            Some(Arc::new(journal))
        };
        let ctx = Arc::new(Ctx {
            backend: Arc::clone(&backend),
            config,
            journal,
            sync: SyncShared::default(),
            cache: SealedCache::default(),
            open_files: OpenFiles::new(config.open_files_max),
            closed: AtomicBool::new(false),
            keyring: parking_lot::RwLock::new(None),
            pending_bytes: Default::default(),
            over_pending: AtomicBool::new(false),
            fill_buffers: crate::log::FillBuffers::new(config.pending_bytes_max),
        });
        let store = Store {
            ctx: Arc::clone(&ctx),
            logs: Mutex::new(BTreeMap::new()),
            meta,
            threads: Mutex::new(Vec::new()),
            log_uid_next: AtomicU64::new(0),
            trash_name_next: AtomicU64::new(0),
        };
        {
            let mut logs = store.logs.lock();
            for entry in backend.list_dir(LOGS_DIR)? {
                let id = entry.name.replace('~', "/");
                if !entry.is_dir || validate_log_id(&id).is_err() {
                    tracing::warn!(name = %entry.name, "ignoring unknown entry in logs directory");
                    continue;
                }
                // Recovered on first use (see `Log`): what replay wrote back into its segments
                // is synced by the first checkpoint, by path, opened or not.
                let uid = store.log_uid_next.fetch_add(1, Ordering::Relaxed);
                let open = LazyOpen {
                    ctx: Arc::clone(&ctx),
                    dir: log_dir(&id),
                    uid,
                    trim_cutoff_ms: None,
                };
                logs.insert(id.clone(), Arc::new(Log::lazy(id, open)));
            }
        }
        if let Some(journal) = &ctx.journal {
            let writer = Arc::clone(journal);
            let thread = std::thread::Builder::new()
                .name("rivulet-journal".to_string())
                .spawn(move || writer.run_writer())?;
            store.threads.lock().push(thread);
            let checkpointer = Arc::clone(journal);
            let ctx = Arc::clone(&ctx);
            let thread = std::thread::Builder::new()
                .name("rivulet-checkpoint".to_string())
                .spawn(move || {
                    while let Some(reason) = checkpointer.wait_for_checkpoint() {
                        let sync_threads = ctx.config.sync_threads;
                        if let Err(error) = checkpointer.checkpoint(false, sync_threads) {
                            tracing::error!(%error, "checkpoint failed; the journal keeps its files");
                        } else if reason == CheckpointReason::Idle {
                            // Quiet now: the buffers kept for the next fills go back too.
                            ctx.fill_buffers.clear();
                        }
                    }
                })?;
            store.threads.lock().push(thread);
        }
        Ok(Arc::new(store))
    }

    /// The log named `id`, created (durably, empty) if it does not exist. The same `Arc` is
    /// returned for the same id until the log is removed.
    pub fn log(&self, id: &str) -> Result<Arc<Log>, LogError> {
        validate_log_id(id)?;
        let mut logs = self.logs.lock();
        if let Some(log) = logs.get(id) {
            return Ok(Arc::clone(log));
        }
        if self.ctx.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let uid = self.log_uid_next.fetch_add(1, Ordering::Relaxed);
        let inner = recovery::create_log(&self.ctx, id.to_string(), log_dir(id), LOGS_DIR, uid)?;
        let log = Arc::new(Log::opened(inner));
        logs.insert(id.to_string(), Arc::clone(&log));
        Ok(log)
    }

    /// The ids of every existing log, sorted.
    pub fn log_ids(&self) -> Result<Vec<String>, LogError> {
        Ok(self.logs.lock().keys().cloned().collect())
    }

    /// Removes the log and its files, durably (no-op if it does not exist). Pending appends
    /// and later uses of the log fail with [`LogError::Removed`].
    pub fn remove_log(&self, id: &str) -> Result<(), LogError> {
        validate_log_id(id)?;
        let mut logs = self.logs.lock();
        let Some(log) = logs.remove(id) else {
            return Ok(());
        };
        let dir = log_dir(id);
        if let Some(inner) = log.remove_unopened() {
            {
                // Under the log's lock, so no append slips in between.
                let _state = inner.state.lock();
                inner.fail_as(Failure::Removed);
            }
            self.ctx.cache.forget(inner.uid, None);
        }
        // Durably void the log's journal entries, before a log of the same id can exist again.
        if let Some(journal) = &self.ctx.journal {
            journal.add_removal(&dir)?;
        }
        let backend = &self.ctx.backend;
        let mut attempts = 0;
        let trash = loop {
            let n = self.trash_name_next.fetch_add(1, Ordering::Relaxed);
            let trash = format!("{TRASH_DIR}/{n}");
            match backend.rename(&dir, &trash) {
                Ok(()) => break trash,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    attempts += 1;
                    if attempts >= TRASH_NAME_ATTEMPTS_MAX {
                        return Err(error.into());
                    }
                }
                Err(error) => return Err(error.into()),
            }
        };
        // The rename is the commit point: once both directories are synced the log is gone,
        // and an interrupted deletion below is finished by the next open.
        backend.sync_dir(LOGS_DIR)?;
        backend.sync_dir(TRASH_DIR)?;
        drop(logs);
        remove_tree(&**backend, &trash)?;
        backend.sync_dir(TRASH_DIR)?;
        Ok(())
    }

    /// Sets where encrypted batches find their data keys (reads of encrypted batches fail with
    /// [`LogError::KeyUnavailable`] until a keyring knows their key).
    pub fn set_keyring(&self, keyring: Arc<dyn crate::Keyring>) {
        *self.ctx.keyring.write() = Some(keyring);
    }

    /// The metadata store.
    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Held while one request makes its appends (to one log or many): the journal's writer
    /// lets the appends of the requests under way finish, for at most half a millisecond,
    /// before it takes the open group, so a request's appends land in one group (one sync and
    /// one wake-up for them, not two).
    pub fn appending(&self) -> Appending {
        let journal = self.ctx.journal.clone();
        let parity = journal
            .as_ref()
            .map_or(0, |journal| journal.enter_request());
        Appending { journal, parity }
    }

    /// Blocks until every append made so far is durable (or fails if a log failed).
    pub fn sync_all(&self) -> Result<(), LogError> {
        let logs: Vec<Arc<Log>> = self.logs.lock().values().cloned().collect();
        // A log not used since open has had no appends to wait for. Each log's end is read
        // before the journal's open group, which holds its appends so far, or a later one.
        let ends: Vec<(&Arc<LogInner>, u64)> = logs
            .iter()
            .filter_map(|log| log.if_open())
            .map(|inner| (inner, inner.state.lock().next_offset))
            .collect();
        let Some(journal) = &self.ctx.journal else {
            for (inner, end) in ends {
                Durable::new(Arc::clone(&inner.durable), end, None).wait_blocking()?;
            }
            return Ok(());
        };
        journal.wait_queued().map_err(|reason| LogError::Failed {
            log: "journal".to_string(),
            reason,
        })?;
        for (inner, end) in ends {
            let mut state = inner.state.lock();
            inner.settle(&mut state);
            if state.durable_end < end {
                return Err(inner
                    .durable
                    .failure_error()
                    .unwrap_or_else(|| LogError::Failed {
                        log: inner.id.clone(),
                        reason: "its appends did not all become durable".to_string(),
                    }));
            }
        }
        Ok(())
    }

    /// `fdatasync`s of segments and journal files so far: far fewer than appends, thanks to
    /// group commit.
    pub fn sync_count(&self) -> u64 {
        let journal = self
            .ctx
            .journal
            .as_ref()
            .map_or(0, |j| j.sync_count.load(Ordering::Relaxed));
        self.ctx.sync.sync_count.load(Ordering::Relaxed) + journal
    }

    /// Makes everything durable and stops the sync threads; later appends fail with
    /// [`LogError::Closed`]. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        self.ctx.closed.store(true, Ordering::Release);
        // The writer writes what is queued before it stops; then one last checkpoint syncs the
        // segments and retires the whole journal, so a clean stop leaves nothing to replay.
        if let Some(journal) = &self.ctx.journal {
            journal.close();
        }
        for thread in std::mem::take(&mut *self.threads.lock()) {
            if thread.join().is_err() {
                tracing::error!("log thread panicked");
            }
        }
        if let Some(journal) = &self.ctx.journal
            && let Err(error) = journal.checkpoint(true, self.ctx.config.sync_threads)
        {
            tracing::error!(%error, "final checkpoint failed; the journal will be replayed");
        }
        // A clean stop leaves every segment exactly as long as its data.
        let logs: Vec<Arc<Log>> = self.logs.lock().values().cloned().collect();
        for inner in logs.iter().filter_map(|log| log.if_open()) {
            if let Err(error) = inner.cut_preallocation() {
                tracing::error!(log = %inner.id, %error, "cutting preallocated space failed");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One request's appends under way (see [`Store::appending`]); ends when dropped.
#[must_use = "the request's appends are under way only while this is held"]
pub struct Appending {
    journal: Option<Arc<Journal>>,
    /// What the journal counted it under.
    parity: usize,
}

impl Drop for Appending {
    fn drop(&mut self) {
        if let Some(journal) = &self.journal {
            journal.leave_request(self.parity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_are_checked() {
        for id in ["a", "stream/shard-000001", "A.b_c-d", &"x".repeat(200)] {
            assert!(validate_log_id(id).is_ok(), "{id}");
        }
        for id in ["", ".", "..", "a~b", "a b", "é", &"x".repeat(201)] {
            assert!(validate_log_id(id).is_err(), "{id}");
        }
        assert_eq!(log_dir("s/shard-1"), "logs/s~shard-1");
    }
}
