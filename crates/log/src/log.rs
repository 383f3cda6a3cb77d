//! One log: a directory of segments, appended to under a lock, read with positioned reads.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backend::{Backend, BackendFile, FileSource};
use crate::format::{
    self, BATCH_BYTES_MAX, BatchHeader, HeaderAt, INDEX_HEADER_BYTES, IndexBuilder, IndexEntry,
    SegmentSummary,
};
use crate::sync::{Appended, Durable, DurableSet, DurableState, Failure, SyncShared};
use crate::{Encryption, LogError, NewRecord, StoreConfig};

/// Sealed segments whose index and file handle stay cached, store-wide. Bounds both memory
/// (index entries) and open file handles, whatever the amount of data.
const SEALED_SEGMENTS_CACHED_MAX: usize = 16;
/// The active segment's file is extended this far ahead of its data (sparse: no disk space is
/// used until written), so that the writes filling it need not change the file's size: measured
/// without it in one run, PutRecords at 4 shards lost a quarter (docs/benchmarks.md).
const PREALLOCATE_BYTES: u64 = 1 << 20;
/// A checkpoint leaves a new index snapshot of an active segment only once the segment has
/// grown this much since the last: a crash then scans at most this much of it, and a checkpoint
/// over thousands of logs does not create and write a file for each (measured at 4,096 shards,
/// the snapshots were 13 % of the server's CPU).
const SNAPSHOT_GROWTH_BYTES: u64 = 256 << 10;
/// The room a log's pending bytes start with.
const PENDING_INITIAL_BYTES: usize = 8 << 10;
/// A thread's append buffer is dropped after a batch larger than this, so one huge batch does
/// not pin its size in memory for the life of the thread.
const APPEND_BUFFER_RETAINED_BYTES_MAX: usize = 1 << 20;

std::thread_local! {
    /// Where a thread encodes the batches it appends: one per thread, not one per log, so an
    /// idle log holds no buffer.
    static APPEND_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What a store shares with its logs.
pub(crate) struct Ctx {
    pub backend: Arc<dyn Backend>,
    pub config: StoreConfig,
    pub sync: SyncShared,
    /// The store-wide journal that makes appends durable; `None` on a volatile backend.
    pub journal: Option<Arc<crate::journal::Journal>>,
    pub cache: SealedCache,
    pub open_files: OpenFiles,
    pub closed: AtomicBool,
    /// Where encrypted batches find their data keys.
    pub keyring: parking_lot::RwLock<Option<Arc<dyn crate::Keyring>>>,
    /// Bytes journaled but not yet written to their segments, over every log (see
    /// `StoreConfig::pending_bytes_max`).
    pub pending_bytes: SpreadCounter,
    /// Pending-bytes buffers given back by fills, for the next log that starts pending.
    pub fill_buffers: FillBuffers,
    /// `pending_bytes` passed `pending_bytes_max` when last counted (every
    /// `PENDING_COUNT_EVERY` appends of a thread): appends then ask for their logs' fills.
    pub over_pending: AtomicBool,
}

/// Appends of one thread between two counts of the store's pending bytes (a count reads a
/// line per slot of the `SpreadCounter`).
const PENDING_COUNT_EVERY: u32 = 64;

impl Ctx {
    /// Whether appends should have their logs filled to keep the store's pending bytes
    /// within `pending_bytes_max`.
    fn over_pending(&self) -> bool {
        std::thread_local! {
            /// The store this thread appended to last, and its appends left before a count.
            static COUNTDOWN: std::cell::Cell<(usize, u32)> = const { std::cell::Cell::new((0, 0)) };
        }
        let store = self as *const Ctx as usize;
        if COUNTDOWN.with(|countdown| {
            let (last, left) = countdown.get();
            let due = last != store || left == 0;
            countdown.set((store, if due { PENDING_COUNT_EVERY } else { left - 1 }));
            due
        }) {
            let over = self.pending_bytes.get() > self.config.pending_bytes_max;
            if over != self.over_pending.load(Ordering::Relaxed) {
                self.over_pending.store(over, Ordering::Relaxed);
            }
            return over;
        }
        self.over_pending.load(Ordering::Relaxed)
    }
}

/// A count that many threads change often and few read: each thread adds to its own slot (a
/// cache line of its own), so the appends of two workers to hundreds of logs per request do
/// not pass one line back and forth; a read sums the slots.
#[derive(Debug, Default)]
pub(crate) struct SpreadCounter {
    slots: [Slot; SPREAD_SLOTS],
}

const SPREAD_SLOTS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicI64);

impl SpreadCounter {
    fn slot(&self) -> &AtomicI64 {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SPREAD_SLOTS;
        }
        &self.slots[INDEX.with(|index| *index)].0
    }

    pub fn add(&self, n: u64) {
        self.slot()
            .fetch_add(n.try_into().unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub fn sub(&self, n: u64) {
        self.slot()
            .fetch_sub(n.try_into().unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// The count: every slot's changes summed (a slot alone may be negative).
    pub fn get(&self) -> u64 {
        let sum: i64 = self
            .slots
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .fold(0, i64::wrapping_add);
        sum.max(0).unsigned_abs()
    }
}

/// Buffers of written-out pending bytes, kept for reuse: a log that gets a record or two per
/// request otherwise allocates (and faults in) a new buffer at every fill, and grows it by
/// copying. Buffers are kept only while they and the pending bytes in use stay within
/// `pending_bytes_max` together, so memory stays bounded by configuration, whatever the
/// number of logs.
#[derive(Debug)]
pub(crate) struct FillBuffers {
    buffers: Mutex<(Vec<Vec<u8>>, usize)>,
    capacity_max: usize,
}

impl FillBuffers {
    pub fn new(capacity_max: u64) -> Self {
        Self {
            buffers: Mutex::new((Vec::new(), 0)),
            capacity_max: usize::try_from(capacity_max).unwrap_or(usize::MAX),
        }
    }

    /// An empty buffer: the last one given back, or a new one of `capacity`.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut guard = self.buffers.lock();
        let (buffers, kept) = &mut *guard;
        match buffers.pop() {
            Some(buffer) => {
                *kept -= buffer.capacity();
                buffer
            }
            None => {
                drop(guard);
                Vec::with_capacity(capacity)
            }
        }
    }

    /// Frees every buffer kept.
    pub fn clear(&self) {
        *self.buffers.lock() = (Vec::new(), 0);
    }

    /// Keeps `buffer` for reuse if the buffers kept and the `in_use` pending bytes stay
    /// within the bound together, else frees it.
    pub fn give_back(&self, mut buffer: Vec<u8>, in_use: u64) {
        buffer.clear();
        let in_use = usize::try_from(in_use).unwrap_or(usize::MAX);
        let mut guard = self.buffers.lock();
        let (buffers, kept) = &mut *guard;
        let total = kept
            .saturating_add(buffer.capacity())
            .saturating_add(in_use);
        if buffer.capacity() > 0 && total <= self.capacity_max {
            *kept += buffer.capacity();
            buffers.push(buffer);
        }
    }
}

/// A record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's offset in its log.
    pub offset: u64,
    /// The timestamp of the append that stored it.
    pub timestamp_ms: i64,
    /// The key bytes.
    pub key: Bytes,
    /// The value bytes.
    pub value: Bytes,
    /// Whether the record was stored encrypted.
    pub encrypted: bool,
}

/// The result of [`Log::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// Durable records in offset order.
    pub records: Vec<StoredRecord>,
    /// Where the next read should start.
    pub next_offset: u64,
}

/// A named append-only log of records.
///
/// A log found at open is recovered on its first use, not at open: a store of thousands of
/// logs is ready at once, and an idle log costs only this handle. A failure to recover it is
/// the error of each use, not of the store.
pub struct Log {
    id: String,
    inner: OnceLock<Arc<LogInner>>,
    /// Until the first use of a log found at open: how to recover it (`None` once recovered,
    /// or once the log is removed without having been used).
    lazy: Mutex<Option<LazyOpen>>,
}

/// What recovering a log on its first use needs.
pub(crate) struct LazyOpen {
    pub ctx: Arc<Ctx>,
    pub dir: String,
    pub uid: u64,
    /// The latest `trim_older_than` cutoff asked of it before its first use: applied as it
    /// opens, before anything reads it.
    pub trim_cutoff_ms: Option<i64>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// In declared order (`repr(C)`, here and in [`LogState`] and [`Active`]): what an append
/// reads first, then what it writes, then the rest, so that [`Log::prefetch`] asks for the
/// few lines an append touches (over 512 shards each is cold) and no more.
#[repr(C)]
pub(crate) struct LogInner {
    pub ctx: Arc<Ctx>,
    pub durable: Arc<DurableState>,
    /// Unique within the store (ids can be reused after a removal): keys the sealed cache.
    pub uid: u64,
    /// The log's directory, relative to the store root.
    pub dir: String,
    /// Where the next append's pending bytes will go, as an address (0: no pending buffer):
    /// a hint for [`Log::prefetch`], which may read it stale.
    pub tail: AtomicUsize,
    /// The last journal group the log appended to (0: none), written and read under its
    /// lock: a failure notes the log against the groups up to it (see `LogInner::fail_as`).
    pub last_group: AtomicU64,
    pub state: Mutex<LogState>,
    pub id: String,
    /// Listed with the journal for `Journal::settle_watched` (under its list's lock).
    pub watch_listed: AtomicBool,
}

/// What an append touches first (see [`LogInner`]), `active`'s first fields included.
#[repr(C)]
pub(crate) struct LogState {
    pub next_offset: u64,
    pub last_timestamp_ms: i64,
    pub journal_marks: crate::journal::JournalMarks,
    /// The latest two journal groups this log appended to, oldest first, with what each makes
    /// durable once published (see `LogInner::settle`). Appends go to the open group, and the
    /// writer publishes a group before it takes the next, so when one goes to group `g`,
    /// every group before `g - 1` has published: two are all a log can wait for.
    pub in_flight: [InFlight; 2],
    pub active: Active,
    pub sealed: BTreeMap<u64, SegmentSummary>,
    /// One past the last durable record as last settled (`LogInner::settle`); kept with
    /// `active.durable_bytes`, so a reader sees both consistently.
    pub durable_end: u64,
}

/// What a log's appends to one journal group make durable once it is published.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InFlight {
    /// The group (0: none).
    seq: u64,
    /// The segment the appends went to, and its size after them.
    base: u64,
    size_bytes: u64,
    /// One past their last offset.
    end: u64,
}

/// What an append touches first (see [`LogInner`]).
#[repr(C)]
pub(crate) struct Active {
    pub summary: SegmentSummary,
    /// The file's length: past `summary.size_bytes` by up to `PREALLOCATE_BYTES` of zeros.
    pub allocated_bytes: u64,
    /// Batches appended but not yet written to the file (with a journal, they reach it off the
    /// request path, many batches in one write: see `LogInner::fill_queued`); they
    /// start at `pending_position` and end at `summary.size_bytes`.
    pub pending: Vec<u8>,
    pub pending_position: u64,
    pub index: IndexBuilder,
    /// Bytes of this segment known to be on disk; readers never look past it.
    pub durable_bytes: u64,
    /// The segment's file while `OpenFiles` keeps it open (or a reader holds it); reopened
    /// from `path` when needed again (`LogInner::active_file`).
    file: Weak<dyn BackendFile>,
    path: String,
    /// The size the latest index snapshot of this segment describes (0: none this run).
    pub snapshot_bytes: u64,
}

impl Active {
    /// A segment with nothing pending, `size_bytes` long.
    pub fn new(
        summary: SegmentSummary,
        file: &Arc<dyn BackendFile>,
        path: String,
        open_files: &OpenFiles,
        index: IndexBuilder,
        durable_bytes: u64,
        allocated_bytes: u64,
    ) -> Active {
        let pending_position = summary.size_bytes;
        open_files.keep(file);
        Active {
            summary,
            file: Arc::downgrade(file),
            path,
            index,
            durable_bytes,
            allocated_bytes,
            pending: Vec::new(),
            pending_position,
            snapshot_bytes: 0,
        }
    }

    /// Writes the pending batches to `file` (its file; page cache only); returns how many bytes.
    fn write_pending(&mut self, file: &dyn BackendFile) -> io::Result<u64> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        debug_assert_eq!(
            self.pending_position + self.pending.len() as u64,
            self.summary.size_bytes
        );
        file.write_all_at(&self.pending, self.pending_position)?;
        let written = self.pending.len() as u64;
        self.pending_position += written;
        // Not kept by the log: memory follows the logs being written, not the logs that
        // exist. The caller gives the buffer to the store's `FillBuffers`.
        Ok(written)
    }
}

/// Makes what a published group's appends reached durable (a roll since made all of the old
/// segment durable already).
fn fold(state: &mut LogState, flight: InFlight) {
    if state.active.summary.base == flight.base {
        state.active.durable_bytes = state.active.durable_bytes.max(flight.size_bytes);
    }
    state.durable_end = state.durable_end.max(flight.end);
}

/// Where an append's batch landed, and what makes it durable.
struct Placed {
    first_offset: u64,
    timestamp_ms: i64,
    /// One past the batch's last offset.
    end: u64,
    /// The journal group holding it, when a journal makes it durable.
    group: Option<u64>,
}

/// What a checkpoint syncs for one log (see [`LogInner::prepare_sync`]).
pub(crate) struct PreparedSync {
    pub file: Arc<dyn BackendFile>,
    summary: SegmentSummary,
    /// The index, when a snapshot of it is due once synced.
    entries: Option<Vec<IndexEntry>>,
}

/// Active segments' files that stay open, store-wide: at most `open_files_max`, the oldest
/// opened closed first. An active segment holds only a weak handle and reopens its file
/// when it needs it again, so idle logs hold no open file, however many there are (20,000
/// shards once ran out of descriptors).
pub(crate) struct OpenFiles {
    files: Mutex<VecDeque<Arc<dyn BackendFile>>>,
    max: usize,
}

impl OpenFiles {
    pub fn new(max: usize) -> Self {
        Self {
            files: Mutex::new(VecDeque::new()),
            max,
        }
    }

    pub fn keep(&self, file: &Arc<dyn BackendFile>) {
        let mut files = self.files.lock();
        files.push_back(Arc::clone(file));
        while files.len() > self.max {
            files.pop_front();
        }
    }
}

/// A cached sealed segment: its open file and sparse index.
pub(crate) struct SealedHandle {
    file: Arc<dyn BackendFile>,
    entries: Vec<IndexEntry>,
}

/// A small LRU of sealed segments, store-wide.
#[derive(Default)]
pub(crate) struct SealedCache {
    entries: Mutex<VecDeque<(u64, u64, Arc<SealedHandle>)>>,
}

impl SealedCache {
    fn get_or_load(
        &self,
        uid: u64,
        base: u64,
        load: impl FnOnce() -> Result<SealedHandle, LogError>,
    ) -> Result<Arc<SealedHandle>, LogError> {
        {
            let mut entries = self.entries.lock();
            if let Some(at) = entries.iter().position(|(u, b, _)| *u == uid && *b == base) {
                let entry = entries.remove(at);
                if let Some(entry) = entry {
                    let handle = Arc::clone(&entry.2);
                    entries.push_back(entry);
                    return Ok(handle);
                }
            }
        }
        let handle = Arc::new(load()?);
        let mut entries = self.entries.lock();
        entries.push_back((uid, base, Arc::clone(&handle)));
        while entries.len() > SEALED_SEGMENTS_CACHED_MAX {
            entries.pop_front();
        }
        Ok(handle)
    }

    /// Drops cached segments of log `uid` (all of them when `base` is `None`).
    pub fn forget(&self, uid: u64, base: Option<u64>) {
        self.entries
            .lock()
            .retain(|(u, b, _)| *u != uid || base.is_some_and(|base| *b != base));
    }
}

pub(crate) fn segment_path(dir: &str, base: u64) -> String {
    format!("{dir}/{base:020}.seg")
}

pub(crate) fn index_path(dir: &str, base: u64) -> String {
    format!("{dir}/{base:020}.idx")
}

/// A segment as one read step sees it, taken under the lock and used without it.
struct SegmentView {
    base: u64,
    file: Arc<dyn BackendFile>,
    /// Read no further than this byte (the durable length for the active segment).
    limit_bytes: u64,
    /// Where to start scanning, and the offset the batch there starts at or after.
    start_position: u64,
    start_offset_min: u64,
    /// Offsets of a corrupt tail run at most to here (the next segment's base).
    offset_bound: u64,
    /// Records at or past this offset are not durable (or not in this segment).
    durable_end: u64,
}

/// How one segment's part of a read ended.
enum SegmentRead {
    /// Nothing more in this segment: go on with the next.
    Exhausted,
    /// The read is complete (limits reached, or stopped before a corrupt range).
    Done,
}

impl LogState {
    fn start_offset(&self) -> u64 {
        let first = self
            .sealed
            .values()
            .chain(std::iter::once(&self.active.summary))
            .find(|summary| summary.record_count > 0)
            .map(|summary| summary.first_offset);
        first.unwrap_or(self.durable_end).min(self.durable_end)
    }

    /// The next segment holding offsets at or past `cursor`, if any, and its successor's base.
    fn segment_after(&self, cursor: u64) -> Option<(SegmentSummary, bool, u64)> {
        let active = (self.active.summary, true, u64::MAX);
        let before = self.sealed.range(..=cursor).next_back();
        let candidate = match before {
            Some((_, summary)) if summary.end_offset > cursor => Some(*summary),
            _ => self
                .sealed
                .range(cursor.saturating_add(1)..)
                .next()
                .map(|(_, s)| *s),
        };
        match candidate {
            Some(summary) => {
                let next_base = self
                    .sealed
                    .range(summary.base.saturating_add(1)..)
                    .next()
                    .map_or(self.active.summary.base, |(base, _)| *base);
                Some((summary, false, next_base))
            }
            None if self.active.summary.end_offset > cursor => Some(active),
            None => None,
        }
    }
}

impl Drop for LogInner {
    fn drop(&mut self) {
        // A removed or failed log's unwritten batches leave the store's count with it.
        let pending = self.state.get_mut().active.pending.len() as u64;
        self.ctx.pending_bytes.sub(pending);
    }
}

impl LogInner {
    fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Refuses appends once failed or removed.
    fn check_writable(&self) -> Result<(), LogError> {
        match self.durable.failure_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Writes the active segment's pending batches to its file, keeping the store's count.
    fn write_pending(&self, active: &mut Active) -> io::Result<()> {
        if active.pending.is_empty() {
            return Ok(());
        }
        let file = self.active_file(active)?;
        let written = active.write_pending(&*file)?;
        self.ctx.pending_bytes.sub(written);
        let in_use = self.ctx.pending_bytes.get();
        self.ctx
            .fill_buffers
            .give_back(std::mem::take(&mut active.pending), in_use);
        Ok(())
    }

    /// The active segment's file, reopened if `OpenFiles` closed it.
    fn active_file(&self, active: &mut Active) -> io::Result<Arc<dyn BackendFile>> {
        if let Some(file) = active.file.upgrade() {
            return Ok(file);
        }
        let file = self.ctx.backend.open_file(&active.path, false)?;
        self.ctx.open_files.keep(&file);
        active.file = Arc::downgrade(&file);
        Ok(file)
    }

    /// Before a read of the active segment: writes the pending batches that are durable (so a
    /// reader may reach them) into the file, which readers read. A failed write fails the log.
    fn fill_for_read(&self, state: &mut LogState) -> Result<(), LogError> {
        self.settle(state);
        let active = &state.active;
        if active.pending.is_empty() || active.pending_position >= active.durable_bytes {
            return Ok(());
        }
        if let Err(error) = self.write_pending(&mut state.active) {
            self.fail("write", &error);
            return Err(error.into());
        }
        Ok(())
    }

    /// See [`Log::trim_older_than`].
    fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, LogError> {
        let inner = self;
        let mut state = inner.state.lock();
        if matches!(inner.durable.failure(), Some(Failure::Removed)) {
            return Err(LogError::Removed {
                log: inner.id.clone(),
            });
        }
        let old = |summary: &SegmentSummary| {
            summary.record_count == 0 || summary.max_timestamp_ms < cutoff_ms
        };
        let mut dropped: Vec<u64> = state
            .sealed
            .values()
            .take_while(|summary| old(summary))
            .map(|s| s.base)
            .collect();
        // The roll syncs what is pending into the segment: only once every group holding it
        // has published, so no segment takes a batch whose group may yet fail (after a
        // journal failure, none does). A later trim rolls it then.
        inner.settle(&mut state);
        let settled = state.in_flight.iter().all(|flight| flight.seq == 0);
        let active = &state.active.summary;
        if dropped.len() == state.sealed.len()
            && active.record_count > 0
            && active.max_timestamp_ms < cutoff_ms
            && inner.durable.failure().is_none()
            && settled
        {
            let base = active.base;
            let next_offset = state.next_offset;
            inner.roll(&mut state, next_offset)?;
            dropped.push(base);
        }
        if dropped.is_empty() {
            return Ok(0);
        }
        let mut records_dropped = 0;
        let backend = &inner.ctx.backend;
        for base in &dropped {
            if let Some(summary) = state.sealed.remove(base) {
                records_dropped += summary.record_count;
            }
            inner.ctx.cache.forget(inner.uid, Some(*base));
        }
        for base in dropped {
            backend.remove_file(&segment_path(&inner.dir, base))?;
            match backend.remove_file(&index_path(&inner.dir, base)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error.into()),
                _ => {}
            }
        }
        backend.sync_dir(&inner.dir)?;
        Ok(records_dropped)
    }

    /// Marks the log failed after an I/O error that leaves the unsynced data in doubt. Called
    /// under the log's lock, as every failure is (see [`LogInner::fail_as`]).
    fn fail(&self, what: &str, error: &io::Error) {
        tracing::error!(log = %self.id, %error, operation = what, "log failed; appends refused");
        self.fail_as(Failure::Io(format!("{what}: {error}")));
    }

    /// Marks the log failed for a reason found elsewhere (the journal), under its lock.
    pub(crate) fn fail_with(&self, reason: &str) {
        self.fail_as(Failure::Io(reason.to_string()));
    }

    /// Marks the log failed (or removed), noting it against its journal groups not yet
    /// published, whose appends are then not acknowledged. Under the log's lock: no append
    /// slips past the failure into a later group, and `last_group` is the last it used.
    pub(crate) fn fail_as(&self, failure: Failure) {
        self.durable
            .fail(failure, self.last_group.load(Ordering::Relaxed));
    }

    /// A checkpoint's first step for this log: writes its pending batches into its active
    /// segment, whose sync then covers everything its journal entries so far hold. `None`
    /// when it needs no sync (removed), `Err` when it failed (and is failed).
    pub(crate) fn prepare_sync(&self) -> Result<Option<PreparedSync>, ()> {
        let mut state = self.state.lock();
        match self.durable.failure() {
            None => {}
            // Its batches are void.
            Some(Failure::Removed) => return Ok(None),
            // Acknowledged batches of it may be missing from its segment, or unsynced there:
            // only the journal holds them now, so it must not be retired.
            Some(Failure::Io(_)) => return Err(()),
        }
        // Its appends from now on list it for the next checkpoint: this one covers the
        // earlier ones, written below and synced after.
        state.journal_marks.listed_unsynced = false;
        // Written first, so the snapshot below describes bytes that are in the file.
        if let Err(error) = self.write_pending(&mut state.active) {
            self.fail("write", &error);
            return Err(());
        }
        let file = match self.active_file(&mut state.active) {
            Ok(file) => file,
            Err(error) => {
                self.fail("open", &error);
                return Err(());
            }
        };
        let active = &mut state.active;
        let snapshot = active.summary.size_bytes >= active.snapshot_bytes + SNAPSHOT_GROWTH_BYTES;
        if snapshot {
            active.snapshot_bytes = active.summary.size_bytes;
        }
        Ok(Some(PreparedSync {
            file,
            summary: active.summary,
            entries: snapshot.then(|| active.index.entries.clone()),
        }))
    }

    /// A checkpoint's last step for this log, once its segment was synced (`synced`, by its
    /// own `fdatasync` or one `syncfs` for all): says whether it is durable.
    pub(crate) fn finish_sync(&self, prepared: PreparedSync, synced: io::Result<()>) -> bool {
        match synced {
            Ok(()) => {
                self.ctx().sync.count_sync();
                // Synced that far: a crash from now on scans only what comes after.
                if let Some(entries) = prepared.entries
                    && let Err(error) = self.write_index_snapshot(&prepared.summary, &entries)
                {
                    tracing::warn!(log = %self.id, %error, "index snapshot not written");
                }
                true
            }
            Err(error) => {
                let _state = self.state.lock();
                self.fail("sync", &error);
                false
            }
        }
    }

    /// Writes a snapshot of the active segment's index (a prefix of it once the segment grows),
    /// not synced: it carries its own checksums and the size it describes, and recovery
    /// ignores one that is torn or lost and trusts one only below that size.
    fn write_index_snapshot(
        &self,
        summary: &SegmentSummary,
        entries: &[IndexEntry],
    ) -> io::Result<()> {
        if summary.size_bytes == 0 {
            return Ok(());
        }
        let bytes = format::encode_index(summary, entries);
        let index = self
            .ctx
            .backend
            .open_file(&index_path(&self.dir, summary.base), true)?;
        index.set_len(0)?;
        index.write_all_at(&bytes, 0)
    }

    /// At a clean stop: writes what is pending, cuts the active segment's preallocated zeros
    /// (recovery also cuts them) and leaves a snapshot of its index.
    pub(crate) fn cut_preallocation(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        // After a journal failure, what is pending may hold batches of the groups that never
        // synced: only a reopen's replay decides what stays, so nothing more is made durable.
        let journal_failed = self.ctx.journal.as_ref().is_some_and(|j| j.signal.failed());
        let healthy = self.durable.failure().is_none() && !journal_failed;
        if healthy {
            self.write_pending(&mut state.active)?;
        }
        let active = &mut state.active;
        if active.allocated_bytes > active.summary.size_bytes && healthy {
            let file = self.active_file(active)?;
            file.set_len(active.summary.size_bytes)?;
            file.sync_data()?;
            active.allocated_bytes = active.summary.size_bytes;
        }
        // So the next open need not scan the segment.
        if healthy {
            let (summary, entries) = (active.summary, active.index.entries.clone());
            drop(state);
            self.write_index_snapshot(&summary, &entries)?;
        }
        Ok(())
    }

    /// Asks the cache for the log's state, to be locked and written soon.
    pub(crate) fn prefetch_state(&self) {
        // Read: the handles and the directory's address; written: the tail hint, the lock and
        // the state up to the active segment's index (see the order of `LogInner`).
        crate::hint::prefetch_read(
            self as *const LogInner,
            std::mem::offset_of!(LogInner, tail),
        );
        let written = self.state.data_ptr() as usize
            + std::mem::offset_of!(LogState, active)
            + std::mem::offset_of!(Active, index)
            + size_of::<IndexBuilder>();
        let from = &self.tail as *const AtomicUsize;
        crate::hint::prefetch_write(from, written.saturating_sub(from as usize));
    }

    /// Brings the durable end (and the active segment's durable bytes) up to the journal
    /// groups published so far: the writer touches no log per group (a group over 512 logs
    /// took and left each log's lock and state, cold, on the other core), so readers, the
    /// writer for watched logs, and the next append settle it. Wakes async waiters when it
    /// moves. A failed log settles only the groups that published before it failed.
    pub(crate) fn settle(&self, state: &mut LogState) {
        let Some(signal) = &self.durable.group_signal else {
            return;
        };
        if state.in_flight.iter().any(|flight| flight.seq != 0) {
            let published = signal.published();
            let failed = self.durable.failure().is_some();
            for at in 0..state.in_flight.len() {
                let flight = state.in_flight[at];
                if flight.seq == 0 || flight.seq > published {
                    continue;
                }
                if !failed || flight.seq <= self.durable.published_at_failure() {
                    fold(state, flight);
                }
                state.in_flight[at] = InFlight::default();
            }
        }
        // Against what was last published, not what this call found: an append may have
        // settled a group since (`note_in_flight`) without publishing.
        if state.durable_end > self.durable.end() {
            self.durable.publish(state.durable_end);
        }
    }

    /// Notes an append to journal group `seq` that makes the log durable up to `end` (and its
    /// segment `base` up to `size_bytes`) once the group is published.
    fn note_in_flight(&self, state: &mut LogState, flight: InFlight) {
        let [older, newer] = state.in_flight;
        if newer.seq == flight.seq {
            state.in_flight[1] = flight;
            return;
        }
        let published = self
            .durable
            .group_signal
            .as_ref()
            .map_or(0, |signal| signal.published());
        if older.seq == 0 || older.seq <= published {
            // Published (as it must be, see `LogState::in_flight`): what it made durable is.
            if older.seq != 0 {
                fold(state, older);
            }
            state.in_flight = [newer, flight];
        } else {
            // Never expected: `newer`'s appends wait for `flight`'s later group instead, which
            // can only make them durable later, never sooner.
            state.in_flight[1] = flight;
        }
    }

    /// Once the journal group that asked for it (`Journal::add_batch`'s `fill`) is synced:
    /// writes the log's pending batches to its segment, in one write. Until then the journal
    /// holds them durably, and a reader that reaches them writes them first
    /// (`fill_for_read`): small writes to many segments were the cost that grew with the
    /// shards a request touches. A failed write fails the log.
    pub(crate) fn fill_queued(&self) {
        let mut state = self.state.lock();
        state.journal_marks.fill_queued = false;
        if self.durable.failure().is_some() {
            return;
        }
        if let Err(error) = self.write_pending(&mut state.active) {
            // The file may now hold part of a batch; appending after it would bury a torn
            // batch in the middle of the segment.
            self.fail("write", &error);
        }
    }

    /// Seals the active segment and starts a new, empty one at `new_base` (see "Roll" in
    /// `docs/storage-format.md`). Any error fails the log: the directory's state is in doubt.
    pub fn roll(&self, state: &mut LogState, new_base: u64) -> Result<(), LogError> {
        let result = self.roll_steps(state, new_base);
        if let Err(error) = &result {
            self.fail("roll", error);
        }
        result.map_err(LogError::Io)
    }

    fn roll_steps(&self, state: &mut LogState, new_base: u64) -> io::Result<()> {
        let backend = &self.ctx().backend;
        // 0. What the old segment still has pending goes into it first.
        self.write_pending(&mut state.active)?;
        let old_file = self.active_file(&mut state.active)?;
        let old = &state.active;
        debug_assert!(new_base >= old.summary.end_offset);
        // 1. Everything written to the old segment becomes durable, without the preallocated
        //    tail: recovery trusts sealed segments whole.
        if old.allocated_bytes > old.summary.size_bytes {
            old_file.set_len(old.summary.size_bytes)?;
        }
        old_file.sync_data()?;
        self.ctx().sync.count_sync();
        // 2. Its sparse index, with its own checksum.
        let index = format::encode_index(&old.summary, &old.index.entries);
        let index_file = backend.open_file(&index_path(&self.dir, old.summary.base), true)?;
        index_file.set_len(0)?;
        index_file.write_all_at(&index, 0)?;
        index_file.sync_data()?;
        // 3. The new segment. Bases only grow, so a non-empty file here means a bug or damage.
        let file = backend.open_file(&segment_path(&self.dir, new_base), true)?;
        if file.len()? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("segment {new_base} of log {} already has data", self.id),
            ));
        }
        // 4. Makes 2 and 3 durable.
        backend.sync_dir(&self.dir)?;
        let sealed = std::mem::replace(
            &mut state.active,
            Active::new(
                SegmentSummary::empty(new_base),
                &file,
                segment_path(&self.dir, new_base),
                &self.ctx.open_files,
                IndexBuilder::new(self.ctx().config.index_interval_bytes),
                0,
                0,
            ),
        );
        state.sealed.insert(sealed.summary.base, sealed.summary);
        // Synced whole: what any group in flight would have made durable is.
        state.in_flight = Default::default();
        state.durable_end = state.durable_end.max(state.next_offset);
        self.durable.publish(state.durable_end);
        Ok(())
    }

    fn load_sealed(&self, summary: &SegmentSummary) -> Result<SealedHandle, LogError> {
        let backend = &self.ctx().backend;
        let file = backend.open_file(&segment_path(&self.dir, summary.base), false)?;
        if let Some(entries) = self.read_index_entries(summary)? {
            return Ok(SealedHandle { file, entries });
        }
        // Missing or damaged index: rebuild it in memory. The segment itself is checked as
        // reads cover it.
        let interval = self.ctx().config.index_interval_bytes;
        let report =
            format::scan_segment(&FileSource(&*file), summary.base, interval, |_, _, _, _| {})?;
        Ok(SealedHandle {
            file,
            entries: report.index.entries,
        })
    }

    fn read_index_entries(
        &self,
        summary: &SegmentSummary,
    ) -> Result<Option<Vec<IndexEntry>>, LogError> {
        let path = index_path(&self.dir, summary.base);
        let file = match self.ctx().backend.open_file(&path, false) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let len = file.len()?;
        if len < INDEX_HEADER_BYTES as u64 || len > summary.size_bytes.saturating_add(1 << 20) {
            return Ok(None);
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let Ok(header) = format::decode_index_header(&bytes) else {
            return Ok(None);
        };
        if header.summary != *summary {
            return Ok(None);
        }
        Ok(format::decode_index_entries(&header, &bytes[INDEX_HEADER_BYTES..]).ok())
    }

    /// The view of the segment holding offsets at or past `cursor`, positioned by the sparse
    /// index. `None` when nothing durable lies at or past `cursor`.
    fn view_for(
        &self,
        state: &mut LogState,
        cursor: u64,
        seek: impl Fn(&[IndexEntry]) -> Option<IndexEntry>,
    ) -> Result<Option<SegmentView>, LogError> {
        if cursor >= state.durable_end {
            return Ok(None);
        }
        let Some((summary, is_active, next_base)) = state.segment_after(cursor) else {
            return Ok(None);
        };
        let (file, limit_bytes, entry) = if is_active {
            let entry = seek(&state.active.index.entries);
            (
                self.active_file(&mut state.active)?,
                state.active.durable_bytes,
                entry,
            )
        } else {
            let handle = self
                .ctx()
                .cache
                .get_or_load(self.uid, summary.base, || self.load_sealed(&summary))?;
            let entry = seek(&handle.entries);
            (Arc::clone(&handle.file), summary.size_bytes, entry)
        };
        let (start_position, start_offset_min) =
            entry.map_or((0, summary.base), |entry| (entry.position, entry.offset));
        Ok(Some(SegmentView {
            base: summary.base,
            file,
            limit_bytes,
            start_position,
            start_offset_min,
            offset_bound: next_base,
            durable_end: state.durable_end,
        }))
    }

    fn corrupt(&self, segment: u64, position: u64, reason: &str) -> LogError {
        tracing::error!(log = %self.id, segment, position, reason, "corrupt batch in log");
        LogError::Corrupt {
            log: self.id.clone(),
            segment,
            position,
            reason: reason.to_string(),
        }
    }

    /// Finds the batch after a bad one at `position` (see "Corruption found by reads").
    /// Returns the corrupt offset range's end and where valid data resumes, if it does.
    fn skip_corrupt(
        &self,
        view: &SegmentView,
        position: u64,
        found: &HeaderAt,
        offset_min: u64,
    ) -> Result<(u64, Option<(u64, BatchHeader)>), LogError> {
        let src = FileSource(&*view.file);
        let resync_from = match found {
            // A trustworthy length whose body is bad: the next batch starts right after it.
            HeaderAt::Valid(header) if header.first_offset >= offset_min => {
                position + u64::from(header.batch_len)
            }
            HeaderAt::Short | HeaderAt::Overrun => view.limit_bytes,
            HeaderAt::Invalid(_) | HeaderAt::Valid(_) => position + 1,
        };
        let next = format::find_next_valid(&src, resync_from, view.limit_bytes, offset_min)?;
        let range_end = match (found, next) {
            (HeaderAt::Valid(header), _) if header.first_offset >= offset_min => {
                header.end_offset()
            }
            (_, Some((_, header))) => header.first_offset,
            (_, None) => view.offset_bound.min(view.durable_end),
        };
        Ok((range_end, next))
    }

    /// Reads one segment's records at or past `cursor` into `out`, within the limits.
    /// Decrypts an encrypted body: its records' spans and the plaintext they point into. The inner
    /// `Err` is damage (the body fails authentication); a missing key is an error of its own.
    #[allow(clippy::type_complexity)]
    fn open_encrypted(
        &self,
        header: &BatchHeader,
        mut body: Vec<u8>,
    ) -> Result<Result<(Vec<format::RecordSpan>, Vec<u8>), &'static str>, LogError> {
        let Some(id) = crate::crypt::key_id(&body) else {
            return Ok(Err("encrypted body too short"));
        };
        let key = self
            .ctx
            .keyring
            .read()
            .as_ref()
            .and_then(|k| k.data_key(id));
        let Some(key) = key else {
            return Err(LogError::KeyUnavailable {
                log: self.id.clone(),
                key_id: id,
            });
        };
        let len = match crate::crypt::open_body(&key, &format::crypt_aad(header), &mut body) {
            Ok(len) => len,
            Err(reason) => return Ok(Err(reason)),
        };
        let start = crate::crypt::CRYPT_PREFIX_BYTES;
        body.copy_within(start..start + len, 0);
        body.truncate(len);
        Ok(format::parse_records(header, &body).map(|spans| (spans, body)))
    }

    fn read_segment(
        &self,
        view: &SegmentView,
        cursor: u64,
        out: &mut Vec<StoredRecord>,
        bytes_out: &mut usize,
        limits: (usize, usize),
    ) -> Result<SegmentRead, LogError> {
        let (max_records, max_bytes) = limits;
        let file = FileSource(&*view.file);
        let src = format::ReadAhead::new(&file, view.limit_bytes);
        let mut position = view.start_position;
        let mut offset_min = view.start_offset_min;
        while position < view.limit_bytes {
            let found = format::read_header(&src, position, view.limit_bytes)?;
            let batch = match &found {
                HeaderAt::Valid(header) if header.first_offset >= offset_min => {
                    if header.end_offset() <= cursor {
                        // Entirely before the cursor: skip it unread.
                        position += u64::from(header.batch_len);
                        offset_min = header.end_offset();
                        continue;
                    }
                    match format::read_body(&src, position, header)? {
                        (body, Ok(_)) if header.encrypted => {
                            match self.open_encrypted(header, body)? {
                                Ok((spans, plain)) => Ok((*header, spans, plain)),
                                Err(reason) => Err(reason),
                            }
                        }
                        (body, Ok(spans)) => Ok((*header, spans, body)),
                        (_, Err(reason)) => Err(reason),
                    }
                }
                HeaderAt::Invalid(reason) => Err(*reason),
                HeaderAt::Short => Err("partial batch header"),
                HeaderAt::Overrun => Err("batch extends past the end of the segment"),
                HeaderAt::Valid(_) => Err("batch offsets go backwards"),
            };
            let (header, spans, body) = match batch {
                Ok(batch) => batch,
                Err(reason) => {
                    // Damage: report it if the cursor lies in the damaged range, else resume
                    // at the next valid batch (whose first offset ends the range).
                    let (range_end, next) =
                        self.skip_corrupt(view, position, &found, offset_min)?;
                    let error = self.corrupt(view.base, position, reason);
                    if cursor < range_end {
                        return if out.is_empty() {
                            Err(error)
                        } else {
                            Ok(SegmentRead::Done)
                        };
                    }
                    let Some((next_position, _)) = next else {
                        return Ok(SegmentRead::Exhausted);
                    };
                    position = next_position;
                    offset_min = range_end;
                    continue;
                }
            };
            let body = Bytes::from(body);
            for span in spans {
                if span.offset < cursor {
                    continue;
                }
                if span.offset >= view.durable_end {
                    return Ok(SegmentRead::Done);
                }
                let size = span.key.len() + span.value.len();
                if !out.is_empty() && (out.len() >= max_records || *bytes_out + size > max_bytes) {
                    return Ok(SegmentRead::Done);
                }
                out.push(StoredRecord {
                    offset: span.offset,
                    timestamp_ms: header.timestamp_ms,
                    key: body.slice(span.key),
                    value: body.slice(span.value),
                    encrypted: header.encrypted,
                });
                *bytes_out += size;
            }
            if out.len() >= max_records {
                return Ok(SegmentRead::Done);
            }
            position += u64::from(header.batch_len);
            offset_min = header.end_offset();
        }
        Ok(SegmentRead::Exhausted)
    }
}

impl Log {
    /// A log already open (just created).
    pub(crate) fn opened(inner: Arc<LogInner>) -> Log {
        Log {
            id: inner.id.clone(),
            inner: OnceLock::from(inner),
            lazy: Mutex::new(None),
        }
    }

    /// A log found at open, recovered on first use.
    pub(crate) fn lazy(id: String, open: LazyOpen) -> Log {
        Log {
            id,
            inner: OnceLock::new(),
            lazy: Mutex::new(Some(open)),
        }
    }

    /// The open log, recovering it first if this is its first use.
    pub(crate) fn inner(&self) -> Result<&Arc<LogInner>, LogError> {
        if let Some(inner) = self.inner.get() {
            return Ok(inner);
        }
        let mut lazy = self.lazy.lock();
        if let Some(inner) = self.inner.get() {
            return Ok(inner);
        }
        let Some(open) = lazy.as_ref() else {
            return Err(LogError::Removed {
                log: self.id.clone(),
            });
        };
        if open.ctx.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let inner =
            crate::recovery::open_log(&open.ctx, self.id.clone(), open.dir.clone(), open.uid)?;
        if let Some(cutoff_ms) = open.trim_cutoff_ms {
            inner.trim_older_than(cutoff_ms)?;
        }
        *lazy = None;
        Ok(self.inner.get_or_init(|| inner))
    }

    /// The open log, if it has been used (no recovery).
    pub(crate) fn if_open(&self) -> Option<&Arc<LogInner>> {
        self.inner.get()
    }

    /// Marks a never-used log removed: later uses fail with [`LogError::Removed`]. Returns the
    /// open log instead if it was used meanwhile.
    pub(crate) fn remove_unopened(&self) -> Option<&Arc<LogInner>> {
        let mut lazy = self.lazy.lock();
        match self.inner.get() {
            Some(inner) => Some(inner),
            None => {
                *lazy = None;
                None
            }
        }
    }

    /// The log's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Asks the cache for what an append to this log will touch, `step` appends ahead of it:
    /// 3 and more, the log's handle; 2, its state; 1, its pending tail, directory name and
    /// durability state. A
    /// caller appending to many logs calls it for the logs it will append to next, each step
    /// in turn, so the misses overlap (each step reads what the one before brought in).
    pub fn prefetch(&self, step: usize) {
        match step {
            0 => {}
            1 => {
                if let Some(inner) = self.inner.get() {
                    let tail = inner.tail.load(Ordering::Relaxed);
                    if tail != 0 {
                        // A batch of a record or two over 512 shards is about 270 bytes,
                        // from anywhere in a line: up to six lines.
                        crate::hint::prefetch_write(tail as *const u8, 384);
                    }
                    // Only read: a write prefetch would take them from the other core.
                    crate::hint::prefetch_read(inner.dir.as_ptr(), inner.dir.len());
                    crate::hint::prefetch_read(Arc::as_ptr(&inner.durable), 64);
                }
            }
            2 => {
                if let Some(inner) = self.inner.get() {
                    inner.prefetch_state();
                }
            }
            _ => crate::hint::prefetch_read(&self.inner, size_of::<OnceLock<Arc<LogInner>>>()),
        }
    }

    /// Appends one batch atomically (all or nothing after a crash). Offsets are assigned
    /// consecutively from `max(next_offset, min_first_offset)`; the timestamp is clamped to be
    /// at least the previous append's, and the stored value is returned. Returns at once; the
    /// returned [`Durable`] completes when a sync covers the batch.
    pub fn append(
        &self,
        records: &[NewRecord<'_>],
        timestamp_ms: i64,
        min_first_offset: u64,
    ) -> Result<Appended, LogError> {
        self.append_encrypted(records, timestamp_ms, min_first_offset, None)
    }

    /// [`Log::append`], with the batch encrypted at rest when `seal` is given.
    pub fn append_encrypted(
        &self,
        records: &[NewRecord<'_>],
        timestamp_ms: i64,
        min_first_offset: u64,
        seal: Option<Encryption<'_>>,
    ) -> Result<Appended, LogError> {
        let inner = self.inner()?;
        let placed = self.append_batch(inner, records, timestamp_ms, min_first_offset, seal)?;
        Ok(Appended {
            first_offset: placed.first_offset,
            timestamp_ms: placed.timestamp_ms,
            durable: Durable::new(Arc::clone(&inner.durable), placed.end, placed.group),
        })
    }

    /// [`Log::append_encrypted`] for one of a request's appends to many logs: the wait joins
    /// `set`, which waits for them all at once. An append a journal group covers adds only its
    /// group to `set` (the request keeps no handle on the log). Returns the first offset and
    /// the stored timestamp.
    pub fn append_to(
        &self,
        records: &[NewRecord<'_>],
        timestamp_ms: i64,
        seal: Option<Encryption<'_>>,
        set: &mut DurableSet,
    ) -> Result<(u64, i64), LogError> {
        let inner = self.inner()?;
        let placed = self.append_batch(inner, records, timestamp_ms, 0, seal)?;
        match (placed.group, &inner.durable.group_signal) {
            (Some(seq), Some(signal)) if set.add_group(signal, seq, inner.uid) => {}
            _ => set.add(Durable::new(
                Arc::clone(&inner.durable),
                placed.end,
                placed.group,
            )),
        }
        Ok((placed.first_offset, placed.timestamp_ms))
    }

    fn append_batch(
        &self,
        inner: &Arc<LogInner>,
        records: &[NewRecord<'_>],
        timestamp_ms: i64,
        min_first_offset: u64,
        seal: Option<Encryption<'_>>,
    ) -> Result<Placed, LogError> {
        if inner.ctx.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let too_large = || LogError::BatchTooLarge {
            record_count: records.len(),
            size_bytes_max: BATCH_BYTES_MAX,
        };
        let batch_len = format::batch_len(records, seal.is_some()).ok_or_else(too_large)?;
        let record_count = u32::try_from(records.len()).map_err(|_| too_large())?;
        let mut buf = APPEND_BUFFER.take();
        let mut fill = false;
        let appended = {
            let mut guard = inner.state.lock();
            let state = &mut *guard;
            inner.check_writable()?;
            if let Some(reason) = inner.ctx.journal.as_ref().and_then(|j| j.failure()) {
                return Err(LogError::Failed {
                    log: inner.id.clone(),
                    reason,
                });
            }
            let first_offset = state.next_offset.max(min_first_offset);
            let end_offset = first_offset
                .checked_add(u64::from(record_count))
                .ok_or_else(|| LogError::OffsetOverflow {
                    log: inner.id.clone(),
                })?;
            let timestamp_ms = timestamp_ms.max(state.last_timestamp_ms);
            let active = &state.active.summary;
            let config = &inner.ctx.config;
            let full = active.size_bytes >= config.segment_bytes_max;
            let aged =
                timestamp_ms.saturating_sub(active.min_timestamp_ms) >= config.segment_age_max_ms;
            if active.record_count > 0 && (full || aged) {
                inner.roll(state, first_offset)?;
            }
            format::encode_batch(&mut buf, first_offset, timestamp_ms, records, seal.as_ref())?;
            debug_assert_eq!(buf.len(), batch_len as usize);
            let header = BatchHeader {
                batch_len,
                body_crc: 0,
                first_offset,
                timestamp_ms,
                record_count,
                encrypted: seal.is_some(),
            };
            let position = state.active.summary.size_bytes;
            let end_position = position + buf.len() as u64;
            // Here, next to the batch's own checksums, which it overlaps.
            let base = state.active.summary.base;
            let entry_crc = inner.ctx.journal.as_ref().map(|_| {
                let kind = crate::journal::KIND_BATCH;
                crate::journal::entry_crc(kind, &inner.dir, base, position, buf.len())
            });
            if end_position > state.active.allocated_bytes && inner.ctx.journal.is_some() {
                // Never past the size at which the segment rolls (unless this batch is).
                let ahead = (state.active.allocated_bytes + PREALLOCATE_BYTES)
                    .min(inner.ctx.config.segment_bytes_max);
                let length = end_position.max(ahead);
                let file = match inner.active_file(&mut state.active) {
                    Ok(file) => file,
                    Err(error) => {
                        inner.fail("open", &error);
                        return Err(error.into());
                    }
                };
                if let Err(error) = file.set_len(length) {
                    inner.fail("preallocate", &error);
                    return Err(error.into());
                }
                state.active.allocated_bytes = length;
            }
            if inner.ctx.journal.is_some() {
                // Written by the journal's writer once the group is synced, with the log's
                // other pending batches in one write.
                if state.active.pending.is_empty() {
                    state.active.pending_position = position;
                    if state.active.pending.capacity() == 0 {
                        // Room for a few groups' batches: fewer copies as it grows to
                        // `fill_bytes`; a buffer an earlier fill gave back is usually larger.
                        let room =
                            (inner.ctx.config.fill_bytes as usize).min(PENDING_INITIAL_BYTES);
                        state.active.pending = inner.ctx.fill_buffers.take(room);
                    }
                }
                state.active.pending.extend_from_slice(&buf);
                let pending = &state.active.pending;
                let tail = pending.as_ptr() as usize + pending.len();
                inner.tail.store(tail, Ordering::Relaxed);
                inner.ctx.pending_bytes.add(buf.len() as u64);
                // The fill waits for the group: the writer does it once the group is synced.
                fill =
                    pending.len() as u64 >= inner.ctx.config.fill_bytes || inner.ctx.over_pending();
            } else if let Err(error) = inner
                .active_file(&mut state.active)
                .and_then(|file| file.write_all_at(&buf, position))
            {
                // The file may now hold part of the batch; appending after it would bury a
                // torn batch in the middle of the segment.
                inner.fail("write", &error);
                return Err(error.into());
            }
            state.active.index.on_batch(position, &header);
            state.active.summary.on_batch(&header);
            state.next_offset = end_offset;
            state.last_timestamp_ms = timestamp_ms;
            // The batch is durable once the journal group holding it is synced, whatever else
            // the group holds.
            let group = match &inner.ctx.journal {
                Some(journal) => {
                    let marks = &mut state.journal_marks;
                    let entry = crate::journal::BatchEntry {
                        base,
                        position,
                        batch: &buf,
                        crc: entry_crc.unwrap_or_default(),
                    };
                    match journal.add_batch(inner, &entry, fill, marks) {
                        Ok(seq) => {
                            inner.last_group.store(seq, Ordering::Relaxed);
                            let flight = InFlight {
                                seq,
                                base,
                                size_bytes: end_position,
                                end: end_offset,
                            };
                            inner.note_in_flight(state, flight);
                            Some(seq)
                        }
                        Err(reason) => {
                            // The segment holds a batch no sync will cover.
                            inner.fail_with(&reason);
                            return Err(LogError::Failed {
                                log: inner.id.clone(),
                                reason,
                            });
                        }
                    }
                }
                None => {
                    // Volatile: nothing to wait for, durable as soon as written.
                    state.active.durable_bytes = state.active.summary.size_bytes;
                    state.durable_end = end_offset;
                    inner.durable.publish(end_offset);
                    None
                }
            };
            Placed {
                first_offset,
                timestamp_ms,
                end: end_offset,
                group,
            }
        };
        if buf.capacity() <= APPEND_BUFFER_RETAINED_BYTES_MAX {
            APPEND_BUFFER.set(buf);
        }
        Ok(appended)
    }

    /// Durable records with offset >= `from_offset` (skipping gaps and trimmed records), at
    /// most `max_records` and about `max_bytes` of keys and values (at least one record if any
    /// is available, however big).
    pub fn read(
        &self,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, LogError> {
        let inner = self.inner()?;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let start = {
            let mut state = inner.state.lock();
            if matches!(inner.durable.failure(), Some(Failure::Removed)) {
                return Err(LogError::Removed {
                    log: inner.id.clone(),
                });
            }
            inner.settle(&mut state);
            state.start_offset()
        };
        let mut cursor = from_offset.max(start);
        let resume_at = cursor;
        while max_records > 0 && cursor < u64::MAX {
            let view = {
                let mut state = inner.state.lock();
                inner.fill_for_read(&mut state)?;
                inner.view_for(&mut state, cursor, |entries| {
                    let at = entries.partition_point(|entry| entry.offset <= cursor);
                    at.checked_sub(1).map(|at| entries[at])
                })?
            };
            let Some(view) = view else { break };
            let read = inner.read_segment(
                &view,
                cursor,
                &mut records,
                &mut bytes,
                (max_records, max_bytes),
            )?;
            match read {
                SegmentRead::Done => break,
                // Next segment: its base is past everything in this one.
                SegmentRead::Exhausted => cursor = cursor.max(view.offset_bound),
            }
        }
        let next_offset = records.last().map_or(resume_at, |record| record.offset + 1);
        Ok(ReadBatch {
            records,
            next_offset,
        })
    }

    /// The first durable offset whose timestamp is >= `timestamp_ms`; `end_offset()` if none.
    pub fn offset_at_timestamp(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let inner = self.inner()?;
        let (view, end) = {
            let mut state = inner.state.lock();
            inner.fill_for_read(&mut state)?;
            let end = state.durable_end;
            let summary = state
                .sealed
                .values()
                .chain(std::iter::once(&state.active.summary))
                .find(|s| s.record_count > 0 && s.max_timestamp_ms >= timestamp_ms)
                .copied();
            let Some(summary) = summary else {
                return Ok(end);
            };
            let cursor = summary.first_offset.max(summary.base);
            let view = inner.view_for(&mut state, cursor, |entries| {
                let at = entries.partition_point(|entry| entry.timestamp_ms < timestamp_ms);
                at.checked_sub(1).map(|at| entries[at])
            })?;
            let Some(view) = view else { return Ok(end) };
            (view, end)
        };
        let src = FileSource(&*view.file);
        let mut position = view.start_position;
        let mut offset_min = view.start_offset_min;
        while position < view.limit_bytes {
            let found = format::read_header(&src, position, view.limit_bytes)?;
            match &found {
                HeaderAt::Valid(header) if header.first_offset >= offset_min => {
                    if header.timestamp_ms >= timestamp_ms {
                        return Ok(header.first_offset.min(end));
                    }
                    position += u64::from(header.batch_len);
                    offset_min = header.end_offset();
                }
                _ => {
                    let _ = inner.corrupt(view.base, position, "invalid batch header");
                    let (_, next) = inner.skip_corrupt(&view, position, &found, offset_min)?;
                    match next {
                        // The answer may lie in the corrupt range: point there, so a read
                        // reports the corruption instead of silently skipping records.
                        Some((_, header)) if header.timestamp_ms >= timestamp_ms => {
                            return Ok(offset_min.min(end));
                        }
                        Some((next_position, header)) => {
                            position = next_position;
                            offset_min = header.first_offset;
                        }
                        None => return Ok(offset_min.min(end)),
                    }
                }
            }
        }
        // The matching batch is not durable yet.
        Ok(end)
    }

    /// Offset of the oldest retained durable record (`end_offset()` when there is none).
    pub fn start_offset(&self) -> Result<u64, LogError> {
        let inner = self.inner()?;
        let mut state = inner.state.lock();
        inner.settle(&mut state);
        Ok(state.start_offset())
    }

    /// One past the last durable record's offset (0 for a new log).
    pub fn end_offset(&self) -> Result<u64, LogError> {
        let inner = self.inner()?;
        let mut state = inner.state.lock();
        inner.settle(&mut state);
        Ok(state.durable_end)
    }

    /// The offset the next append would get, absent `min_first_offset` (>= `end_offset()`).
    pub fn next_offset(&self) -> Result<u64, LogError> {
        Ok(self.inner()?.state.lock().next_offset)
    }

    /// Drops whole segments, oldest first, whose newest record is older than `cutoff_ms`
    /// (sealing the active segment if it qualifies too); returns how many records were dropped.
    /// The files are removed and the directory synced before it returns. A log not used since
    /// the store opened is not recovered for this: the cutoff is kept and applied when it is
    /// first used, before any read (its expired files stay on disk until then).
    pub fn trim_older_than(&self, cutoff_ms: i64) -> Result<u64, LogError> {
        if self.inner.get().is_none() {
            let mut lazy = self.lazy.lock();
            if let Some(open) = lazy.as_mut()
                && self.inner.get().is_none()
            {
                open.trim_cutoff_ms =
                    Some(open.trim_cutoff_ms.map_or(cutoff_ms, |c| c.max(cutoff_ms)));
                return Ok(0);
            }
        }
        self.inner()?.trim_older_than(cutoff_ms)
    }

    /// A receiver of `end_offset()`, changed whenever it advances (for push consumers).
    pub fn watch_end(&self) -> Result<watch::Receiver<u64>, LogError> {
        let inner = self.inner()?;
        // Subscribed first, so the writer, which drops a listed log nobody watches, keeps it;
        // listed next, so it settles the log after every group from then on; settled last,
        // for the groups before.
        let receiver = inner.durable.subscribe();
        if let Some(journal) = &inner.ctx.journal {
            journal.watch(inner);
            inner.settle(&mut inner.state.lock());
        }
        Ok(receiver)
    }
}

#[cfg(test)]
mod fill_buffer_tests {
    use super::FillBuffers;

    /// Threads add and take away on their own slots; the sum is the count.
    #[test]
    fn a_spread_counter_sums_every_thread() {
        let counter = super::SpreadCounter::default();
        std::thread::scope(|scope| {
            for t in 0..20u64 {
                let counter = &counter;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counter.add(t + 2);
                    }
                });
            }
        });
        let added: u64 = (0..20u64).map(|t| (t + 2) * 1000).sum();
        assert_eq!(counter.get(), added);
        // Taken away on other threads than the ones that added.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| counter.sub(added / 4));
            }
        });
        assert_eq!(counter.get(), 0);
    }

    #[test]
    fn fill_buffers_are_reused_and_bounded_by_configuration() {
        let pool = FillBuffers::new(100);
        let mut first = pool.take(64);
        assert!(first.capacity() >= 64);
        first.extend_from_slice(b"batch bytes");
        let capacity = first.capacity();
        let address = first.as_ptr();
        pool.give_back(first, 0);
        // The same buffer comes back, empty.
        let again = pool.take(8);
        assert_eq!(
            (again.as_ptr(), again.capacity(), again.len()),
            (address, capacity, 0)
        );
        // Past the bound, buffers given back are freed, not kept; pending bytes in use count
        // against it too.
        pool.give_back(Vec::with_capacity(64), 0);
        pool.give_back(Vec::with_capacity(64), 0);
        assert_eq!(pool.buffers.lock().0.len(), 1);
        let _ = pool.take(8);
        pool.give_back(Vec::with_capacity(64), 50);
        {
            let guard = pool.buffers.lock();
            assert_eq!(guard.0.len(), 0);
            assert_eq!(guard.1, 0);
        }
        // An idle store frees what it kept.
        pool.give_back(Vec::with_capacity(64), 0);
        pool.clear();
        assert_eq!(*pool.buffers.lock(), (Vec::new(), 0));
    }
}
