//! The store-wide journal: one group commit for every log at once.
//!
//! An append writes its batch into its log's active segment (page cache only) and copies it,
//! as one *entry*, into the journal's open *group* (in its thread's *lane*: see [`Lane`]). One
//! writer thread writes each group (one `write` per lane holding entries) and makes it
//! durable with one `fdatasync`, then publishes the group's number: the
//! sync cost of a request does not depend on how many logs it touches. Each log settles its
//! durable end from the groups it appended to (`LogInner::settle`): the writer touches only
//! the logs due a fill and the logs someone watches. A *checkpoint* later syncs the segments
//! the journal covers and deletes the journal files it no longer needs; recovery replays the
//! journal files that remain. The layout and the protocol are in `docs/storage-format.md`
//! ("Journal").

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::backend::{Backend, BackendFile};
use crate::format::{self, u32_at, u64_at};
use crate::log::LogInner;
use crate::sync::GroupSignal;
use crate::{LogError, StoreConfig};

/// The journal's directory, relative to the store root.
pub(crate) const JOURNAL_DIR: &str = "journal";
/// A group whose `header_crc` covers the header and every entry.
const GROUP_MAGIC: [u8; 4] = *b"RVJ2";
/// A group of an earlier release, whose `header_crc` covers the header only: still replayed.
const GROUP_MAGIC_V1: [u8; 4] = *b"RVJ1";
const GROUP_HEADER_BYTES: usize = 32;
const ENTRY_HEADER_BYTES: usize = 32;
/// An entry holding one batch, bound for a segment.
pub(crate) const KIND_BATCH: u16 = 1;
/// An entry saying a log was removed: its earlier entries are void.
const KIND_REMOVED: u16 = 2;
/// How far ahead of its end an append prefetches a lane's buffer, and how much: about one
/// entry of a record or two (so each line is asked for once, an entry or so before it is
/// written).
const LANE_PREFETCH_BYTES: usize = 320;
/// A group buffer larger than this is not kept for reuse after a burst.
const GROUP_BUFFER_RETAINED_BYTES_MAX: usize = 8 << 20;

fn file_path(number: u64) -> String {
    format!("{JOURNAL_DIR}/{number:020}.jnl")
}

/// A retired journal file kept for reuse (see "Journal files" in docs/storage-format.md).
fn spare_path(number: u64) -> String {
    format!("{JOURNAL_DIR}/{number:020}.spare")
}

/// Retired files kept for reuse, at most.
const SPARE_FILES_MAX: usize = 2;

fn remove_if_present(backend: &dyn Backend, path: &str) -> io::Result<()> {
    match backend.remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn parse_spare_name(name: &str) -> Option<u64> {
    parse_number(name.strip_suffix(".spare")?)
}

fn parse_file_name(name: &str) -> Option<u64> {
    parse_number(name.strip_suffix(".jnl")?)
}

fn parse_number(digits: &str) -> Option<u64> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// A log's marks in the journal, kept in its state (so under its lock, as `add_batch` is).
#[derive(Debug, Default)]
pub(crate) struct JournalMarks {
    /// The log is in an open group's `fills`: the writer writes its pending batches once that
    /// group is synced (cleared then, under the log's lock).
    pub fill_queued: bool,
    /// The log is in `unsynced`: set when added, cleared when a checkpoint writes and syncs
    /// its segment (under its lock, so an append after that adds it again).
    pub listed_unsynced: bool,
}

/// Entries waiting for the writer, in append order.
struct Group {
    /// The group's bytes, `GROUP_HEADER_BYTES` reserved for its header.
    bytes: Vec<u8>,
    entry_count: u32,
    /// Logs whose pending batches reached `fill_bytes` (or the store's passed
    /// `pending_bytes_max`): the writer writes them to their segments once the group is synced.
    /// The only logs the writer touches: a group over 512 logs lists about one.
    fills: Vec<Arc<LogInner>>,
    seq: u64,
}

impl Group {
    fn new(seq: u64, mut bytes: Vec<u8>) -> Group {
        bytes.clear();
        bytes.resize(GROUP_HEADER_BYTES, 0);
        Group {
            bytes,
            entry_count: 0,
            fills: Vec::new(),
            seq,
        }
    }

    fn push_entry(&mut self, kind: u16, dir: &str, base: u64, position: u64, batch: &[u8]) {
        let crc = entry_crc(kind, dir, base, position, batch.len());
        let entry = BatchEntry {
            base,
            position,
            batch,
            crc,
        };
        self.push_entry_with_crc(kind, dir, &entry);
    }

    /// `push_entry` with the entry's checksum computed before (by [`entry_crc`]).
    fn push_entry_with_crc(&mut self, kind: u16, dir: &str, entry: &BatchEntry<'_>) {
        let BatchEntry {
            base,
            position,
            batch,
            crc,
        } = *entry;
        let start = self.bytes.len();
        let dir = entry_dir(dir);
        self.bytes.resize(start + ENTRY_HEADER_BYTES, 0);
        let header = &mut self.bytes[start..];
        header[0..4].copy_from_slice(&crc.to_le_bytes());
        header[4..6].copy_from_slice(&kind.to_le_bytes());
        header[6..8].copy_from_slice(&(dir.len() as u16).to_le_bytes());
        header[8..16].copy_from_slice(&base.to_le_bytes());
        header[16..24].copy_from_slice(&position.to_le_bytes());
        header[24..28].copy_from_slice(&(batch.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(dir);
        self.bytes.extend_from_slice(batch);
        self.entry_count += 1;
    }
}

/// A batch for the journal: where it was written (segment `base`, byte `position`), its
/// bytes, and its entry's checksum ([`entry_crc`]).
#[derive(Clone, Copy)]
pub(crate) struct BatchEntry<'a> {
    pub base: u64,
    pub position: u64,
    pub batch: &'a [u8],
    pub crc: u32,
}

/// The bytes of `dir` an entry names (at most `u16::MAX`).
fn entry_dir(dir: &str) -> &[u8] {
    &dir.as_bytes()[..dir.len().min(usize::from(u16::MAX))]
}

/// The checksum of an entry's header and directory (its `entry_crc`). An append computes it
/// before it takes its lane, next to its batch's checksums, which it overlaps: it needs only
/// the entry's fields, not its place in the group.
pub(crate) fn entry_crc(kind: u16, dir: &str, base: u64, position: u64, batch_len: usize) -> u32 {
    let dir = entry_dir(dir);
    // The header from its `kind` field on (what the checksum covers), at the start of an
    // aligned buffer: read eight bytes at a time from the first.
    #[repr(align(8))]
    struct Aligned([u8; ENTRY_HEADER_BYTES]);
    let mut covered = Aligned([0; ENTRY_HEADER_BYTES]);
    let bytes = &mut covered.0;
    bytes[0..2].copy_from_slice(&kind.to_le_bytes());
    bytes[2..4].copy_from_slice(&(dir.len() as u16).to_le_bytes());
    bytes[4..12].copy_from_slice(&base.to_le_bytes());
    bytes[12..20].copy_from_slice(&position.to_le_bytes());
    bytes[20..24].copy_from_slice(&(batch_len as u32).to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..ENTRY_HEADER_BYTES - 4]), dir)
}

/// Where appends put their entries: one lane per core, so that workers appending at once
/// take different locks and write different buffers (one shared group had the two workers of
/// a request over 512 logs contend for it at every batch). A thread keeps to its lane unless
/// another thread holds it. The writer takes every lane at once, with the open group's
/// number, so a log's entries (one append at a time, under its lock) all name the group
/// their bytes are written in; entries of one log in two lanes of a group may be out of
/// offset order there, which replay does not mind (it writes each batch at its position).
#[repr(align(128))]
struct Lane(Mutex<LaneState>);

struct LaneState {
    /// This lane's entries for the open group (`group.seq` is the open group's number).
    group: Group,
    /// A written buffer for this lane's next group.
    spare: Vec<u8>,
    /// Set by `close`: appends fail.
    closing: bool,
}

/// A group the writer took: its number, and its entries in the buffers they were queued in
/// (each lane's, then the open group's own with any removals, so a removal follows every
/// batch of its group), each with `GROUP_HEADER_BYTES` reserved in front. The first buffer
/// with entries carries the group's header; the others are written after it, without their
/// reserved bytes.
struct Taken {
    seq: u64,
    /// Lane buffers first (index `i` from lane `i`), the open group's last.
    parts: Vec<Vec<u8>>,
    entry_count: u32,
    fills: Vec<Arc<LogInner>>,
}

impl Taken {
    fn len(&self) -> u64 {
        let entries: usize = self
            .parts
            .iter()
            .map(|part| part.len() - GROUP_HEADER_BYTES)
            .sum();
        (GROUP_HEADER_BYTES + entries) as u64
    }
}

std::thread_local! {
    /// The lane this thread appends to first (an index, modulo the number of lanes).
    static LANE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

struct State {
    /// The open group's number, and its removals (batches are queued in the lanes).
    open: Group,
    /// A cleared buffer for the next group.
    spare: Vec<u8>,
    /// Set at shutdown: the writer writes what is queued, then stops.
    closing: bool,
    /// Set when a journal write or sync failed: every later append fails.
    failure: Option<String>,
    /// The last group made durable.
    synced_seq: u64,
    /// Logs appended to since a checkpoint last took them: their segments hold unsynced data
    /// that only the journal makes durable.
    unsynced: HashMap<u64, Arc<LogInner>>,
    /// Journal files the writer has moved past: every group in them is durable.
    full_files: Vec<u64>,
    /// Segment files replay wrote to, unsynced: the next checkpoint syncs them by path.
    replayed_segments: Vec<String>,
    /// Retired journal files kept to be the next ones (their numbers as spares): writing over
    /// blocks a file already has makes a group's `fdatasync` one write, where a sparse file's
    /// also writes its inode.
    spares: Vec<u64>,
}

/// The file the writer appends groups to.
struct Current {
    number: u64,
    file: Option<Arc<dyn BackendFile>>,
    position: u64,
    capacity: u64,
}

/// Why the checkpointer runs a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckpointReason {
    /// Enough journal files are full to retire them.
    FullFiles,
    /// No group for a while, and logs hold batches not yet synced in their segments.
    Idle,
}

/// The journal of one store.
pub(crate) struct Journal {
    backend: Arc<dyn Backend>,
    file_bytes: u64,
    checkpoint_files: usize,
    /// See `StoreConfig::sync_all_files_logs_min`.
    all_files_logs_min: usize,
    /// See `StoreConfig::idle_checkpoint_ms`.
    idle: std::time::Duration,
    state: Mutex<State>,
    /// Where appends queue their batches; see [`Lane`].
    lanes: Box<[Lane]>,
    /// Wakes the writer (a group to write, or shutdown).
    work: Condvar,
    /// Wakes those waiting for a group to be synced, and the checkpointer.
    progress: Condvar,
    /// Wakes the checkpointer: a journal file filled, the journal failed, or shutdown. Not
    /// `progress`, which every group signals.
    checkpoint_due: Condvar,
    current: Mutex<Current>,
    /// `fdatasync`s of journal files.
    pub sync_count: AtomicU64,
    /// The last group synced, for `Durable::wait`, `DurableSet` and logs settling their
    /// durable ends.
    pub signal: Arc<GroupSignal>,
    /// Logs with async waiters on their durable end (`Log::watch_end`): settled by the writer
    /// after each group, since no append or reader may come to settle them.
    watched: Mutex<Vec<std::sync::Weak<LogInner>>>,
    /// Requests appending now (`Store::appending`), counted by the parity of the `epoch` they
    /// started in: the writer lets those that started before it looked finish before it takes
    /// the open group, for at most `REQUEST_LINGER` (not those that start meanwhile: under
    /// overlapping requests it would always wait the whole time).
    requests: [AtomicUsize; 2],
    epoch: AtomicUsize,
    /// The writer waits on `requests_done` for them.
    lingering: AtomicBool,
    requests_done: Condvar,
}

/// How long the writer waits, at most, for the requests appending to finish before it takes
/// the open group. A request that appends to 512 logs takes about 150 µs to do so; a group
/// taken in the middle splits it over two groups, two syncs and two wake-ups (measured
/// before: 410 records a group over 512 shards, under one request's 500).
const REQUEST_LINGER: std::time::Duration = std::time::Duration::from_micros(500);

impl Journal {
    /// A journal whose first file will be `first_file`; recovery has emptied the directory.
    pub fn new(backend: Arc<dyn Backend>, config: &StoreConfig, replayed: &Replayed) -> Journal {
        let signal = Arc::new(GroupSignal::new());
        Journal {
            backend,
            file_bytes: config.journal_file_bytes,
            checkpoint_files: config.checkpoint_journal_files,
            all_files_logs_min: config.sync_all_files_logs_min,
            idle: std::time::Duration::from_millis(config.idle_checkpoint_ms),
            state: Mutex::new(State {
                open: Group::new(1, Vec::new()),
                spare: Vec::new(),
                closing: false,
                failure: None,
                synced_seq: 0,
                unsynced: HashMap::new(),
                // Replayed, but their batches are not synced in the segments yet: the first
                // checkpoint retires them like any full file.
                full_files: replayed.files.clone(),
                replayed_segments: replayed.segments.clone(),
                spares: replayed.spares.clone(),
            }),
            lanes: (0..lane_count())
                .map(|_| {
                    Lane(Mutex::new(LaneState {
                        group: Group::new(1, Vec::new()),
                        spare: Vec::new(),
                        closing: false,
                    }))
                })
                .collect(),
            work: Condvar::new(),
            progress: Condvar::new(),
            checkpoint_due: Condvar::new(),
            current: Mutex::new(Current {
                number: replayed.next_file,
                file: None,
                position: 0,
                capacity: 0,
            }),
            sync_count: AtomicU64::new(0),
            signal,
            watched: Mutex::new(Vec::new()),
            requests: [AtomicUsize::new(0), AtomicUsize::new(0)],
            epoch: AtomicUsize::new(0),
            lingering: AtomicBool::new(false),
            requests_done: Condvar::new(),
        }
    }

    /// The reason appends fail, once a journal write or sync failed.
    pub fn failure(&self) -> Option<String> {
        // `signal` is failed once `State::failure` is set: the check on every append.
        if !self.signal.failed() {
            return None;
        }
        self.state.lock().failure.clone()
    }

    /// Queues a batch just written at `position` of `log`'s segment `base`, durable once its
    /// group is synced; with `fill`, the writer then writes the log's pending batches to its
    /// segment. Called under the log's lock, so one log's entries enter the journal in offset
    /// order. Returns the group's sequence number, which the log keeps to settle its durable
    /// end (`LogInner::settle`): the writer touches no log per group.
    pub fn add_batch(
        &self,
        log: &Arc<LogInner>,
        entry: &BatchEntry<'_>,
        fill: bool,
        marks: &mut JournalMarks,
    ) -> Result<u64, String> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        if !marks.listed_unsynced {
            // Before the entry is queued: a checkpoint retires a journal file only after
            // syncing the logs listed when it started, and this log's lock (held here) keeps
            // one that took it from syncing before the batch is in its pending bytes.
            let mut state = self.state.lock();
            if state.closing {
                return Err("the journal is closed".to_string());
            }
            marks.listed_unsynced = true;
            state
                .unsynced
                .entry(log.uid)
                .or_insert_with(|| Arc::clone(log));
        }
        let mut lane = self.lane();
        if lane.closing {
            return Err("the journal is closed".to_string());
        }
        let first = lane.group.entry_count == 0;
        lane.group.push_entry_with_crc(KIND_BATCH, &log.dir, entry);
        // Asks now for the lines the next entry will be written to. The buffer was last read
        // by the writer's `write`, as often as not on the other core, so each line must be
        // taken from it; a store to a line not yet taken makes the next lock or unlock wait
        // (a locked instruction waits for every earlier store).
        let bytes = &lane.group.bytes;
        let ahead = bytes.len() + LANE_PREFETCH_BYTES;
        if ahead + LANE_PREFETCH_BYTES <= bytes.capacity() {
            crate::hint::prefetch_write(bytes.as_ptr().wrapping_add(ahead), LANE_PREFETCH_BYTES);
        }
        let seq = lane.group.seq;
        if fill && !marks.fill_queued {
            marks.fill_queued = true;
            lane.group.fills.push(Arc::clone(log));
        }
        drop(lane);
        if first {
            // Under the state lock, which the writer holds from finding the lanes empty until
            // it waits: the wake cannot fall between the two.
            let _state = self.state.lock();
            self.work.notify_one();
        }
        Ok(seq)
    }

    /// This thread's lane, or another one free now if another thread holds it.
    fn lane(&self) -> parking_lot::MutexGuard<'_, LaneState> {
        let count = self.lanes.len();
        let first = LANE.with(|lane| *lane) % count;
        for i in 0..count {
            if let Some(lane) = self.lanes[(first + i) % count].0.try_lock() {
                return lane;
            }
        }
        self.lanes[first].0.lock()
    }

    /// Whether any lane holds an entry. Under the state lock (the writer takes the lanes
    /// under it), so the answer holds until it is released.
    fn lanes_queued(&self) -> bool {
        self.lanes
            .iter()
            .any(|lane| lane.0.lock().group.entry_count > 0)
    }

    /// Records durably that the log in `dir` was removed, so that a log created later in the
    /// same directory never receives its entries at recovery. Returns once synced.
    pub fn add_removal(&self, dir: &str) -> Result<(), LogError> {
        let mut state = self.state.lock();
        if state.closing {
            // Nothing more is journaled after shutdown's checkpoint, which removed the files.
            return Ok(());
        }
        state.open.push_entry(KIND_REMOVED, dir, 0, 0, &[]);
        let seq = state.open.seq;
        self.work.notify_one();
        while state.synced_seq < seq {
            if let Some(reason) = &state.failure {
                return Err(LogError::Failed {
                    log: dir.to_string(),
                    reason: reason.clone(),
                });
            }
            self.progress.wait(&mut state);
        }
        Ok(())
    }

    /// The writer thread's body: write and sync each group, then publish what it made durable.
    pub fn run_writer(&self) {
        loop {
            let mut group = {
                let mut state = self.state.lock();
                loop {
                    let queued = state.open.entry_count > 0 || self.lanes_queued();
                    if state.closing && !queued {
                        return;
                    }
                    // The journal stays bounded: past one file more than those that start a
                    // checkpoint, groups wait (and their appends with them) until the
                    // checkpointer has retired some, so a crash never leaves more to replay.
                    // After a failure groups fail at once, waiting for nothing.
                    let bounded = state.closing
                        || state.failure.is_some()
                        || state.full_files.len() <= self.checkpoint_files;
                    if queued && bounded {
                        self.linger(&mut state);
                        break;
                    }
                    if bounded {
                        self.work.wait(&mut state);
                    } else {
                        self.progress.wait(&mut state);
                    }
                }
                self.take_group(&mut state)
            };
            let result = if self.failure().is_some() {
                Err(io::Error::other("the journal failed earlier"))
            } else {
                self.write_group(&mut group)
            };
            match result {
                Ok(()) => {
                    // Before the publish: a fill that fails fails its log, which notes it
                    // against this group, so a request that sees the group published sees
                    // that too.
                    for log in group.fills.drain(..) {
                        log.fill_queued();
                    }
                    self.signal.publish(group.seq);
                    self.settle_watched();
                    // The buffers go back for reuse (the last one is the open group's).
                    let mut parts = std::mem::take(&mut group.parts);
                    let head = parts.pop();
                    // Over the lanes, no more retained than one buffer could be.
                    let retained_max = GROUP_BUFFER_RETAINED_BYTES_MAX / self.lanes.len();
                    for (lane, bytes) in self.lanes.iter().zip(parts) {
                        if bytes.capacity() <= retained_max {
                            lane.0.lock().spare = bytes;
                        }
                    }
                    let mut state = self.state.lock();
                    state.synced_seq = group.seq;
                    if let Some(head) = head
                        && head.capacity() <= GROUP_BUFFER_RETAINED_BYTES_MAX
                    {
                        state.spare = head;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "journal write failed; appends refused");
                    let reason = format!("journal: {error}");
                    // No group publishes again and every later append fails: the logs need
                    // no failure of their own (their durable ends stay where they were).
                    self.state.lock().failure.get_or_insert(reason.clone());
                    self.signal.fail();
                    self.checkpoint_due.notify_all();
                }
            }
            self.progress.notify_all();
        }
    }

    /// Takes the open group: every lane's entries and the removals, under every lane's lock
    /// at once, and opens the next group in all of them.
    fn take_group(&self, state: &mut State) -> Taken {
        let seq = state.open.seq;
        let mut lanes: Vec<_> = self.lanes.iter().map(|lane| lane.0.lock()).collect();
        let mut parts = Vec::with_capacity(lanes.len() + 1);
        let mut entry_count = 0;
        let mut fills = Vec::new();
        for lane in &mut lanes {
            let spare = std::mem::take(&mut lane.spare);
            let mut group = std::mem::replace(&mut lane.group, Group::new(seq + 1, spare));
            entry_count += group.entry_count;
            fills.append(&mut group.fills);
            parts.push(group.bytes);
        }
        drop(lanes);
        let spare = std::mem::take(&mut state.spare);
        let head = std::mem::replace(&mut state.open, Group::new(seq + 1, spare));
        entry_count += head.entry_count;
        parts.push(head.bytes);
        Taken {
            seq,
            parts,
            entry_count,
            fills,
        }
    }

    /// A request starts appending (see [`Journal::linger`]); returns what to give
    /// [`Journal::leave_request`].
    pub fn enter_request(&self) -> usize {
        let parity = self.epoch.load(Ordering::SeqCst) & 1;
        self.requests[parity].fetch_add(1, Ordering::SeqCst);
        parity
    }

    /// A request has made all of its appends.
    pub fn leave_request(&self, parity: usize) {
        if self.requests[parity].fetch_sub(1, Ordering::SeqCst) == 1
            && self.lingering.load(Ordering::SeqCst)
        {
            // Under the lock, which the writer holds from its check until it waits: the wake
            // cannot fall between the two.
            let _state = self.state.lock();
            self.requests_done.notify_one();
        }
    }

    /// Before the writer takes the open group: waits, at most `REQUEST_LINGER`, for the
    /// requests appending now to finish, so that each lands in one group whole.
    fn linger(&self, state: &mut parking_lot::MutexGuard<'_, State>) {
        // Requests from now on count in the other parity. One that read the epoch just before
        // is waited for if its count landed before the check below, and missed otherwise (it
        // may then be split over two groups, as without the wait); one left over from an
        // earlier linger of this parity at most makes this one wait its whole time.
        let parity = self.epoch.fetch_add(1, Ordering::SeqCst) & 1;
        self.lingering.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + REQUEST_LINGER;
        while self.requests[parity].load(Ordering::SeqCst) > 0 && !state.closing {
            if self.requests_done.wait_until(state, deadline).timed_out() {
                break;
            }
        }
        self.lingering.store(false, Ordering::SeqCst);
    }

    /// Lists `log` for [`Journal::settle_watched`] (once: a flag on the log says it is).
    /// Called once the caller holds a receiver of the log's end. Under the list's lock, where
    /// `settle_watched` drops logs nobody watches: a log found listed here stays listed, since
    /// that receiver is already counted.
    pub fn watch(&self, log: &Arc<LogInner>) {
        let mut watched = self.watched.lock();
        if !log.watch_listed.swap(true, Ordering::Relaxed) {
            watched.push(Arc::downgrade(log));
        }
    }

    /// After a publish: settles the durable end of every watched log, which wakes its waiters.
    /// A log nobody watches any more (or gone) leaves the list; its next watch lists it again.
    fn settle_watched(&self) {
        let logs: Vec<Arc<LogInner>> = {
            let mut watched = self.watched.lock();
            if watched.is_empty() {
                return;
            }
            let mut logs = Vec::with_capacity(watched.len());
            watched.retain(|held| match held.upgrade() {
                Some(log) if log.durable.has_watchers() => {
                    logs.push(log);
                    true
                }
                Some(log) => {
                    log.watch_listed.store(false, Ordering::Relaxed);
                    false
                }
                None => false,
            });
            logs
        };
        for log in logs {
            let mut state = log.state.lock();
            log.settle(&mut state);
        }
    }

    /// Blocks until every group holding an append made before the call has been synced and
    /// published; fails once the journal has failed.
    pub fn wait_queued(&self) -> Result<(), String> {
        let mut state = self.state.lock();
        let seq = if state.open.entry_count > 0 || self.lanes_queued() {
            state.open.seq
        } else {
            state.open.seq - 1
        };
        while state.synced_seq < seq {
            if let Some(reason) = &state.failure {
                return Err(reason.clone());
            }
            self.progress.wait(&mut state);
        }
        Ok(())
    }

    /// Writes one group at the end of the current file (or at the start of a new one) and
    /// syncs it.
    fn write_group(&self, group: &mut Taken) -> io::Result<()> {
        let len = group.len();
        let mut current = self.current.lock();
        if current.file.is_none() || current.position + len > current.capacity {
            self.start_file(&mut current, len)?;
        }
        let file = current
            .file
            .clone()
            .ok_or_else(|| io::Error::other("no journal file"))?;
        let entries = group
            .parts
            .iter()
            .map(|part| &part[GROUP_HEADER_BYTES..])
            .filter(|entries| !entries.is_empty());
        let header = group_header(entries, len, group.entry_count, group.seq, current.number);
        // The first buffer with entries carries the header; the others follow it.
        let mut position = current.position;
        let mut first = true;
        for part in group.parts.iter_mut() {
            if part.len() == GROUP_HEADER_BYTES {
                continue;
            }
            let bytes = if first {
                part[..GROUP_HEADER_BYTES].copy_from_slice(&header);
                &part[..]
            } else {
                &part[GROUP_HEADER_BYTES..]
            };
            first = false;
            file.write_all_at(bytes, position)?;
            position += bytes.len() as u64;
        }
        if first {
            // No entries (the writer takes no such group): the header alone.
            file.write_all_at(&header, position)?;
        }
        file.sync_data()?;
        self.sync_count.fetch_add(1, Ordering::Relaxed);
        current.position += len;
        Ok(())
    }

    /// Moves to the next journal file, created at its full size so that a group's sync never
    /// has to commit a size change.
    fn start_file(&self, current: &mut Current, group_len: u64) -> io::Result<()> {
        if current.file.take().is_some() {
            self.state.lock().full_files.push(current.number);
            self.checkpoint_due.notify_all();
            current.number += 1;
        }
        let path = file_path(current.number);
        let spare = self.state.lock().spares.pop();
        if let Some(spare) = spare {
            // Its groups name its old number, so replay reads none of them in the new one.
            self.backend.rename(&spare_path(spare), &path)?;
            let file = self.backend.open_file(&path, false)?;
            let capacity = file.len()?;
            if capacity >= self.file_bytes.max(group_len) {
                // The name is durable before a group is written under it.
                self.backend.sync_dir(JOURNAL_DIR)?;
                current.file = Some(file);
                current.position = 0;
                current.capacity = capacity;
                return Ok(());
            }
        }
        let capacity = self.file_bytes.max(group_len);
        let file = self.backend.open_file(&path, true)?;
        file.set_len(capacity)?;
        file.sync_data()?;
        self.backend.sync_dir(JOURNAL_DIR)?;
        current.file = Some(file);
        current.position = 0;
        current.capacity = capacity;
        Ok(())
    }

    /// Blocks the checkpointer until a checkpoint is due: enough journal files are full that
    /// it should retire them, or logs hold unsynced (and pending) batches and no group has
    /// been written for a whole `idle` period, so a quiet store writes its pending batches
    /// out and gives their memory back. `None` once the writer has stopped or failed.
    pub fn wait_for_checkpoint(&self) -> Option<CheckpointReason> {
        let mut state = self.state.lock();
        let mut seen = state.synced_seq;
        loop {
            // After a failure no checkpoint may retire anything.
            if state.closing || state.failure.is_some() {
                return None;
            }
            if state.full_files.len() >= self.checkpoint_files {
                return Some(CheckpointReason::FullFiles);
            }
            if self
                .checkpoint_due
                .wait_for(&mut state, self.idle)
                .timed_out()
            {
                if state.synced_seq == seen && !state.unsynced.is_empty() {
                    return Some(CheckpointReason::Idle);
                }
                seen = state.synced_seq;
            }
        }
    }

    /// Syncs every segment the journal covers, then deletes the journal files no longer
    /// needed: the full ones, or with `everything` (after the writer stopped) all of them.
    pub fn checkpoint(&self, everything: bool, threads: usize) -> io::Result<()> {
        // The writer locks `current` before `state`: so does this.
        let open_file = if everything {
            let current = self.current.lock();
            current.file.is_some().then_some(current.number)
        } else {
            None
        };
        let (files, logs, replayed) = {
            let mut state = self.state.lock();
            if let Some(reason) = &state.failure {
                // Acknowledged batches may be only in the journal: reopening replays it.
                return Err(io::Error::other(format!(
                    "the journal keeps its files after a failure ({reason})"
                )));
            }
            // They stay listed until removed: the writer counts them against the bound.
            let mut files = state.full_files.clone();
            files.extend(open_file);
            let logs: Vec<Arc<LogInner>> = state.unsynced.drain().map(|(_, log)| log).collect();
            (files, logs, std::mem::take(&mut state.replayed_segments))
        };
        // Every batch in these files was appended before its entry was queued, and its log was
        // in `unsynced` then (or replay wrote it back): the syncs below cover it.
        let failed = sync_logs(&logs, threads, &*self.backend, self.all_files_logs_min)
            | self.sync_replayed(&replayed);
        if failed {
            // A log failed: its acknowledged batches may be only in the journal, so the files
            // stay until a reopen replays them, and the journal fails like a failed group sync
            // (appends fail rather than wait for a checkpoint that cannot retire anything).
            let reason = "a segment write or sync failed; reopen the store to replay the journal";
            tracing::error!("{reason}; appends refused");
            let mut state = self.state.lock();
            state.replayed_segments.extend(replayed);
            state.failure.get_or_insert_with(|| reason.to_string());
            drop(state);
            self.signal.fail();
            self.work.notify_all();
            self.progress.notify_all();
            return Err(io::Error::other(reason));
        }
        // A clean stop keeps none, and removes those kept: a stopped data dir holds no batch
        // outside its segments.
        let spares = if everything {
            std::mem::take(&mut self.state.lock().spares)
        } else {
            Vec::new()
        };
        if !spares.is_empty() {
            for spare in spares {
                remove_if_present(&*self.backend, &spare_path(spare))?;
            }
            if files.is_empty() {
                return self.backend.sync_dir(JOURNAL_DIR);
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        let mut current = self.current.lock();
        let mut spares = if everything {
            SPARE_FILES_MAX
        } else {
            self.state.lock().spares.len()
        };
        for number in &files {
            if everything && *number == current.number {
                current.file = None;
                current.number += 1;
            }
            let path = file_path(*number);
            // A file of the full size is kept, up to `SPARE_FILES_MAX`, as a spare.
            if spares < SPARE_FILES_MAX
                && let Ok(file) = self.backend.open_file(&path, false)
                && file.len()? >= self.file_bytes
            {
                self.backend.rename(&path, &spare_path(*number))?;
                self.state.lock().spares.push(*number);
                spares += 1;
                continue;
            }
            remove_if_present(&*self.backend, &path)?;
        }
        self.state
            .lock()
            .full_files
            .retain(|number| !files.contains(number));
        drop(current);
        // The writer may be waiting for the journal to shrink.
        self.progress.notify_all();
        self.backend.sync_dir(JOURNAL_DIR)
    }

    /// Syncs the segment files replay wrote to; a file gone since (trimmed, or its log removed)
    /// needs nothing. Says whether any sync failed.
    fn sync_replayed(&self, paths: &[String]) -> bool {
        let mut failed = false;
        for path in paths {
            let synced = match self.backend.open_file(path, false) {
                Ok(file) => file.sync_data(),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = synced {
                tracing::error!(%path, %error, "syncing a replayed segment failed");
                failed = true;
            }
        }
        failed
    }

    /// Tells the writer and the checkpointer to stop once the queued groups are written.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closing = true;
        for lane in self.lanes.iter() {
            lane.0.lock().closing = true;
        }
        drop(state);
        self.requests_done.notify_all();
        self.work.notify_all();
        self.progress.notify_all();
        self.checkpoint_due.notify_all();
    }
}

/// Syncs the active segment of each log, on up to `threads` threads, or with one `syncfs`
/// when there are at least `all_files_min` logs and `backend` trusts it; says whether any
/// failed (the log itself is then failed).
fn sync_logs(
    logs: &[Arc<LogInner>],
    threads: usize,
    backend: &dyn Backend,
    all_files_min: usize,
) -> bool {
    if logs.is_empty() {
        return false;
    }
    let whole = logs.len() >= all_files_min && backend.can_sync_all_files();
    let chunk = logs.len().div_ceil(threads.max(1));
    let failed = AtomicBool::new(false);
    // Each log's pending batches are written, and with one sync per file, synced; with
    // `syncfs`, the writes come first and the one sync after them.
    let prepared = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for part in logs.chunks(chunk) {
            let (failed, prepared) = (&failed, &prepared);
            scope.spawn(move || {
                let mut mine = Vec::new();
                for log in part {
                    match log.prepare_sync() {
                        Ok(Some(ready)) if whole => mine.push((Arc::clone(log), ready)),
                        Ok(Some(ready)) => {
                            let synced = ready.file.sync_data();
                            if !log.finish_sync(ready, synced) {
                                failed.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => {}
                        Err(()) => failed.store(true, Ordering::Relaxed),
                    }
                }
                prepared.lock().append(&mut mine);
            });
        }
    });
    let prepared = prepared.into_inner();
    if !prepared.is_empty() {
        let error = backend
            .sync_all_files()
            .err()
            .map(|e| (e.kind(), e.to_string()));
        for (log, ready) in prepared {
            let synced = match &error {
                None => Ok(()),
                Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            };
            if !log.finish_sync(ready, synced) {
                failed.store(true, Ordering::Relaxed);
            }
        }
    }
    failed.into_inner()
}

/// One entry found in the journal.
struct Entry<'a> {
    kind: u16,
    dir: &'a str,
    base: u64,
    position: u64,
    batch: &'a [u8],
}

/// The complete groups at the start of a journal file's bytes, as entries, in order. Reading
/// stops at the first group that is not complete (never written, torn, or of an earlier use of
/// the bytes): groups are synced one after another, so nothing after it was acknowledged.
fn complete_groups(bytes: &[u8], number: u64) -> Vec<Vec<Entry<'_>>> {
    let mut groups = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= GROUP_HEADER_BYTES {
        let header = &bytes[at..at + GROUP_HEADER_BYTES];
        let len = u32_at(header, 8) as usize;
        if len < GROUP_HEADER_BYTES || len > bytes.len() - at {
            break;
        }
        // A group written over a reused file's old ones must be whole: a torn group's missing
        // bytes may be old entries that pass their own checks.
        let crc = match header[0..4].try_into() {
            Ok(GROUP_MAGIC) => crc32c::crc32c_append(
                crc32c::crc32c(&header[8..]),
                &bytes[at + GROUP_HEADER_BYTES..at + len],
            ),
            Ok(GROUP_MAGIC_V1) => crc32c::crc32c(&header[8..]),
            _ => break,
        };
        if u32_at(header, 4) != crc || u64_at(header, 24) != number {
            break;
        }
        let Some(entries) = group_entries(&bytes[at + GROUP_HEADER_BYTES..at + len]) else {
            break;
        };
        if entries.len() != u32_at(header, 12) as usize {
            break;
        }
        groups.push(entries);
        at += len;
    }
    if at + GROUP_HEADER_BYTES <= bytes.len()
        && (bytes[at..at + 4] == GROUP_MAGIC || bytes[at..at + 4] == GROUP_MAGIC_V1)
    {
        tracing::debug!(
            file = number,
            position = at,
            "journal ends at an incomplete group"
        );
    }
    groups
}

/// A group's header for file `file_number`: the group is `len` bytes, the header then
/// `entries` in the order written; `header_crc` covers the header's other fields and every
/// entry.
fn group_header<'a>(
    entries: impl Iterator<Item = &'a [u8]>,
    len: u64,
    entry_count: u32,
    seq: u64,
    file_number: u64,
) -> [u8; GROUP_HEADER_BYTES] {
    let mut header = [0; GROUP_HEADER_BYTES];
    header[0..4].copy_from_slice(&GROUP_MAGIC);
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header[12..16].copy_from_slice(&entry_count.to_le_bytes());
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header[24..32].copy_from_slice(&file_number.to_le_bytes());
    let crc = entries.fold(crc32c::crc32c(&header[8..]), crc32c::crc32c_append);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

/// How many lanes a journal has: one per core the process may use (at least two, at most
/// eight; a thread finding its lane taken uses another).
fn lane_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, 8)
}

/// A group's entries, or `None` if any entry or its batch fails its checks.
fn group_entries(mut bytes: &[u8]) -> Option<Vec<Entry<'_>>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < ENTRY_HEADER_BYTES {
            return None;
        }
        let dir_len = usize::from(u16_at(bytes, 6));
        let batch_len = u32_at(bytes, 24) as usize;
        let fixed = ENTRY_HEADER_BYTES + dir_len;
        if bytes.len() < fixed || bytes.len() - fixed < batch_len {
            return None;
        }
        if u32_at(bytes, 0) != crc32c::crc32c(&bytes[4..fixed]) {
            return None;
        }
        let dir = std::str::from_utf8(&bytes[ENTRY_HEADER_BYTES..fixed]).ok()?;
        let batch = &bytes[fixed..fixed + batch_len];
        let kind = u16_at(bytes, 4);
        match kind {
            KIND_BATCH => {
                let header = format::parse_header(batch).ok()?;
                if header.batch_len as usize != batch.len() {
                    return None;
                }
                format::decode_body(&header, &batch[format::BATCH_HEADER_BYTES..]).ok()?;
            }
            KIND_REMOVED => {}
            _ => return None,
        }
        entries.push(Entry {
            kind,
            dir,
            base: u64_at(bytes, 8),
            position: u64_at(bytes, 16),
            batch,
        });
        bytes = &bytes[fixed + batch_len..];
    }
    Some(entries)
}

/// What replay found and did.
pub(crate) struct Replayed {
    /// The journal files left, replayed; a checkpoint retires them once the segments written
    /// are synced.
    pub files: Vec<u64>,
    /// The number the next journal file takes.
    pub next_file: u64,
    /// The segment files replay wrote to: the first checkpoint syncs them by path, whether or
    /// not their logs have been opened since.
    pub segments: Vec<String>,
    /// Retired files kept for reuse (not replayed).
    pub spares: Vec<u64>,
}

/// A segment file and the contiguous bytes replay gathered for it, from a position.
type Run = (Arc<dyn BackendFile>, u64, Vec<u8>);

/// Recovery: writes every batch of the journal files left by a crash into its segment (in
/// journal order, so idempotently; page cache only). Batches of a removed log, of a trimmed
/// segment or of a log removed later are skipped. The files stay until a checkpoint has synced
/// the segments written: a crash before that replays them again.
pub(crate) fn replay(backend: &dyn Backend) -> io::Result<Replayed> {
    backend.create_dir(JOURNAL_DIR)?;
    let mut spares = Vec::new();
    let mut numbers: Vec<u64> = backend
        .list_dir(JOURNAL_DIR)?
        .iter()
        .filter_map(|entry| {
            let number = parse_file_name(&entry.name);
            if let Some(spare) = parse_spare_name(&entry.name) {
                spares.push(spare);
            } else if number.is_none() {
                tracing::warn!(name = %entry.name, "ignoring unknown entry in journal directory");
            }
            number
        })
        .collect();
    numbers.sort_unstable();
    let Some(&last) = numbers.last() else {
        // Past every spare: a file reusing one must never take its old number, which its
        // stale groups carry.
        return Ok(Replayed {
            files: Vec::new(),
            next_file: spares.iter().max().map_or(0, |n| n + 1),
            segments: Vec::new(),
            spares,
        });
    };
    // One buffer for every file of both passes (they are the same size but for an oversized
    // group's own file): allocating and zeroing one per read was a tenth of a replay.
    let mut buffer = Vec::new();
    let read = |number: u64, mut bytes: Vec<u8>| -> io::Result<Vec<u8>> {
        let file = backend.open_file(&file_path(number), false)?;
        let len = file.len()?;
        if (bytes.len() as u64) < len {
            bytes = format::buffer_for(len)?;
        }
        bytes.truncate(len as usize);
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    };
    // First pass: where each removed directory's last removal lies.
    let mut removed: HashMap<String, (usize, usize, usize)> = HashMap::new();
    for (f, &number) in numbers.iter().enumerate() {
        let bytes = read(number, std::mem::take(&mut buffer))?;
        for (g, group) in complete_groups(&bytes, number).iter().enumerate() {
            for (e, entry) in group.iter().enumerate() {
                if entry.kind == KIND_REMOVED {
                    removed.insert(entry.dir.to_string(), (f, g, e));
                }
            }
        }
        buffer = bytes;
    }
    // Second pass: the batches, into segments that still exist. Within a file, a segment's
    // entries that follow each other in bytes are gathered into one run, written with one
    // `write` (one per entry was most of a replay's time at thousands of logs); an entry that
    // does not follow on first writes the run before it, so a segment's writes keep journal
    // order. Per segment path: its file and its run (start, bytes), buffers reused.
    let mut runs: HashMap<String, Run> = HashMap::new();
    let mut batches = 0u64;
    for (f, &number) in numbers.iter().enumerate() {
        let bytes = read(number, std::mem::take(&mut buffer))?;
        for (g, group) in complete_groups(&bytes, number).iter().enumerate() {
            for (e, entry) in group.iter().enumerate() {
                if entry.kind != KIND_BATCH
                    || removed.get(entry.dir).is_some_and(|&at| at > (f, g, e))
                {
                    continue;
                }
                let path = crate::log::segment_path(entry.dir, entry.base);
                let (file, start, run) = match runs.entry(path) {
                    std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                    std::collections::hash_map::Entry::Vacant(new) => {
                        match backend.open_file(new.key(), false) {
                            Ok(file) => new.insert((file, entry.position, Vec::new())),
                            // Trimmed, or its log removed: nothing to restore.
                            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                            Err(error) => return Err(error),
                        }
                    }
                };
                if *start + run.len() as u64 != entry.position {
                    if !run.is_empty() {
                        file.write_all_at(run, *start)?;
                        run.clear();
                    }
                    *start = entry.position;
                }
                run.extend_from_slice(entry.batch);
                batches += 1;
            }
        }
        for (file, start, run) in runs.values_mut() {
            if !run.is_empty() {
                file.write_all_at(run, *start)?;
                *start += run.len() as u64;
                run.clear();
            }
        }
        buffer = bytes;
    }
    if batches > 0 {
        tracing::info!(
            files = numbers.len(),
            batches,
            segments = runs.len(),
            "journal replayed"
        );
    }
    Ok(Replayed {
        files: numbers,
        // Past the spares too: a file reusing one must never take its old number, which its
        // stale groups carry.
        next_file: spares.iter().copied().max().unwrap_or(0).max(last) + 1,
        segments: runs.into_keys().collect(),
        spares,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(
            parse_file_name(&file_path(42)[JOURNAL_DIR.len() + 1..]),
            Some(42)
        );
        assert_eq!(parse_file_name("42.jnl"), None);
        assert_eq!(parse_file_name("00000000000000000042.seg"), None);
    }

    /// A batch of one record (key `k`) holding `value`, its first offset `first_offset`.
    fn one_record_batch(first_offset: u64, value: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let records = [crate::NewRecord { key: b"k", value }];
        format::encode_batch(&mut buf, first_offset, 1000, &records, None).unwrap();
        buf
    }

    /// Seals a group written from one buffer, for file `file_number`.
    fn seal(group: &mut Group, file_number: u64) {
        let len = group.bytes.len() as u64;
        let entries = std::iter::once(&group.bytes[GROUP_HEADER_BYTES..]);
        let header = group_header(entries, len, group.entry_count, group.seq, file_number);
        group.bytes[..GROUP_HEADER_BYTES].copy_from_slice(&header);
    }

    /// The writer writes a group queued in several lanes, and a removal in the open group's
    /// own buffer, as the very bytes of one buffer holding the same entries in that order
    /// (the layout on disk did not change), and the group's checksum covers every part.
    #[test]
    fn a_group_from_several_lanes_is_written_as_one_buffer_would_be() {
        let batch = |value: &[u8]| one_record_batch(0, value);
        let backend = Arc::new(crate::mem::CrashBackend::new());
        let replayed = replay(&*backend).expect("replay");
        let config = StoreConfig {
            journal_file_bytes: 1 << 16,
            ..StoreConfig::default()
        };
        let journal = Journal::new(backend.clone(), &config, &replayed);
        assert!(journal.lanes.len() >= 2);
        // (lane, directory, position, value): lane 0 carries the header.
        let entries = [
            (1, "logs/b", 0, &b"old"[..]),
            (0, "logs/a", 0, &b"one"[..]),
            (1, "logs/a", 73, &b"two"[..]),
        ];
        for (lane, dir, position, value) in entries {
            let mut lane = journal.lanes[lane].0.lock();
            lane.group
                .push_entry(KIND_BATCH, dir, 0, position, &batch(value));
        }
        journal
            .state
            .lock()
            .open
            .push_entry(KIND_REMOVED, "logs/c", 0, 0, &[]);
        let mut taken = journal.take_group(&mut journal.state.lock());
        // Every lane and the open group moved to the next group together.
        assert_eq!((taken.seq, taken.entry_count), (1, 4));
        assert!(
            journal
                .lanes
                .iter()
                .all(|lane| lane.0.lock().group.seq == 2)
        );
        assert_eq!(journal.state.lock().open.seq, 2);
        journal.write_group(&mut taken).expect("write");
        let file = backend
            .read_file(&file_path(replayed.next_file))
            .expect("read");

        // One buffer, in the order written: lane 0's entries, lane 1's, the removal.
        let one = |last_value: &'static [u8]| {
            let mut group = Group::new(1, Vec::new());
            group.push_entry(KIND_BATCH, "logs/a", 0, 0, &batch(b"one"));
            group.push_entry(KIND_BATCH, "logs/b", 0, 0, &batch(b"old"));
            group.push_entry(KIND_BATCH, "logs/a", 0, 73, &batch(last_value));
            group.push_entry(KIND_REMOVED, "logs/c", 0, 0, &[]);
            group
        };
        let mut expected = one(b"two");
        seal(&mut expected, replayed.next_file);
        assert_eq!(&file[..expected.bytes.len()], &expected.bytes[..]);
        assert_eq!(complete_groups(&file, replayed.next_file).len(), 1);

        // An entry of the same length in the last lane's part, as a torn write over an old
        // group could leave it: each entry passes its own checks, the group's checksum not.
        let mut torn = one(b"new");
        torn.bytes[..GROUP_HEADER_BYTES].copy_from_slice(&file[..GROUP_HEADER_BYTES]);
        assert!(group_entries(&torn.bytes[GROUP_HEADER_BYTES..]).is_some());
        assert!(complete_groups(&torn.bytes, replayed.next_file).is_empty());

        // The next group, with lane 0 empty: lane 1 carries the header, the removal follows.
        journal.lanes[1]
            .0
            .lock()
            .group
            .push_entry(KIND_BATCH, "logs/b", 0, 73, &batch(b"three"));
        journal
            .state
            .lock()
            .open
            .push_entry(KIND_REMOVED, "logs/d", 0, 0, &[]);
        let mut taken = journal.take_group(&mut journal.state.lock());
        journal.write_group(&mut taken).expect("write");
        let mut second = Group::new(2, Vec::new());
        second.push_entry(KIND_BATCH, "logs/b", 0, 73, &batch(b"three"));
        second.push_entry(KIND_REMOVED, "logs/d", 0, 0, &[]);
        seal(&mut second, replayed.next_file);
        let file = backend
            .read_file(&file_path(replayed.next_file))
            .expect("read");
        let at = expected.bytes.len();
        assert_eq!(&file[at..at + second.bytes.len()], &second.bytes[..]);
        assert_eq!(complete_groups(&file, replayed.next_file).len(), 2);
    }

    #[test]
    fn groups_read_back_and_stop_at_damage() {
        let batch = one_record_batch(7, b"v");
        let mut group = Group::new(1, Vec::new());
        group.push_entry(KIND_BATCH, "logs/a", 0, 0, &batch);
        group.push_entry(KIND_REMOVED, "logs/b", 0, 0, &[]);
        let len = group.bytes.len();
        seal(&mut group, 5);
        let mut file = group.bytes.clone();
        file.extend_from_slice(&group.bytes);
        file.resize(file.len() + 100, 0);
        let groups = complete_groups(&file, 5);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0][0].dir, "logs/a");
        assert_eq!(groups[0][0].batch, &batch[..]);
        assert_eq!(groups[0][1].kind, KIND_REMOVED);
        // The same bytes in another file are not this file's groups.
        assert!(complete_groups(&file, 6).is_empty());
        // A torn second group ends the journal after the first.
        let mut torn = file.clone();
        torn[len + GROUP_HEADER_BYTES + ENTRY_HEADER_BYTES + 10] ^= 1;
        assert_eq!(complete_groups(&torn, 5).len(), 1);
    }

    /// A group torn over a reused file's old group: the new header and entry header reached
    /// the disk, but the bytes after them are an old batch of the same length, which passes
    /// its own checksums. The group's checksum over its entries refuses it.
    #[test]
    fn a_group_torn_over_old_entries_is_refused() {
        let batch = |value: &[u8]| one_record_batch(7, value);
        let (new, old) = (batch(b"new"), batch(b"old"));
        assert_eq!(new.len(), old.len());
        let mut group = Group::new(1, Vec::new());
        group.push_entry(KIND_BATCH, "logs/x", 0, 0, &new);
        seal(&mut group, 9);
        assert_eq!(complete_groups(&group.bytes, 9).len(), 1);
        let mut torn = group.bytes.clone();
        let at = torn.len() - old.len();
        torn[at..].copy_from_slice(&old);
        assert!(
            group_entries(&torn[GROUP_HEADER_BYTES..]).is_some(),
            "each entry checks"
        );
        assert!(complete_groups(&torn, 9).is_empty());
    }

    /// Groups of an earlier release, whose checksum covers the header only, still replay.
    #[test]
    fn groups_of_the_earlier_format_are_replayed() {
        let buf = one_record_batch(7, b"v");
        let mut group = Group::new(1, Vec::new());
        group.push_entry(KIND_BATCH, "logs/a", 0, 0, &buf);
        let len = group.bytes.len() as u32;
        let header = &mut group.bytes[..GROUP_HEADER_BYTES];
        header[0..4].copy_from_slice(&GROUP_MAGIC_V1);
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12..16].copy_from_slice(&1u32.to_le_bytes());
        header[24..32].copy_from_slice(&3u64.to_le_bytes());
        let crc = crc32c::crc32c(&header[8..]);
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        let groups = complete_groups(&group.bytes, 3);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0][0].batch, &buf[..]);
    }
}
