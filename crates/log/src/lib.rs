//! Durable log storage for Rivulet: per-shard segmented append-only logs on disk, with group
//! commit, plus an atomic metadata store.
//!
//! Architecture invariant: this crate knows nothing of Kinesis, HTTP or JSON. It stores records
//! (offset, timestamp, key bytes, value bytes) in named logs, and never reads the clock.
//! The on-disk format, the commit protocol and recovery are described in
//! `docs/storage-format.md`.
//!
//! Code map:
//! - `format`: batch and index layouts, checksums, and the segment scanner ([`decode_segment`]).
//! - `backend` / `mem`: the file-system abstraction ([`Backend`]), real files ([`FileBackend`]),
//!   memory ([`MemBackend`]) and the crash model for tests ([`CrashBackend`]).
//! - `log`: one log ([`Log`]): append, read, seek by timestamp, trim.
//! - `recovery`: opening a log's directory after a clean stop or a crash.
//! - `journal`: the store-wide journal: group commit for every log at once, checkpoints,
//!   replay after a crash.
//! - `sync`: durable ends and [`Durable`].
//! - `crypt`: encryption at rest of batch bodies (AES-256-GCM data keys, [`Keyring`]).
//! - `meta`: the redb metadata store ([`MetaStore`]).
//! - `store`: [`Store`], which owns all of the above.

#![warn(missing_docs)]

mod backend;
mod crypt;
mod error;
mod format;
pub mod hint;
mod journal;
mod log;
mod mem;
mod meta;
mod recovery;
mod store;
mod sync;

pub use backend::{Backend, BackendFile, DirEntry, FileBackend};
pub use crypt::{DataKey, Encryption, Keyring};
pub use error::LogError;
pub use format::{
    BATCH_BYTES_MAX, DecodedBatch, DecodedSegment, ProblemKind, SegmentProblem, decode_segment,
};
pub use log::{Log, ReadBatch, StoredRecord};
pub use mem::{CrashBackend, MemBackend};
pub use meta::{MetaOp, MetaStore};
pub use store::{Appending, Store};
pub use sync::{Appended, Durable, DurableSet};

/// Tunables of a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Roll to a new segment once the active one reaches this size (it may exceed it by one
    /// batch). Also the unit in which `trim_older_than` frees space.
    pub segment_bytes_max: u64,
    /// One sparse-index entry per this many bytes of batches: the most a read scans to find
    /// its first record.
    pub index_interval_bytes: u64,
    /// Roll to a new segment before appending a batch whose timestamp is this many
    /// milliseconds or more past the active segment's oldest record, so that a quiet log's old
    /// records become a whole segment `trim_older_than` can drop: nothing outlives a cutoff by
    /// more than this.
    pub segment_age_max_ms: i64,
    /// Threads a checkpoint syncs segments with: several in flight let the file system share
    /// one journal commit and device flush among them. They wait on the disk, not the CPU, so
    /// more than the cores: at thousands of logs, how fast checkpoints retire the journal
    /// bounds the sustained write rate (see `checkpoint_journal_files`).
    pub sync_threads: usize,
    /// Size of each journal file (created at this size, so a group's sync commits no size
    /// change); a group larger than this gets a file of its own size.
    pub journal_file_bytes: u64,
    /// A checkpoint runs once this many journal files are full: it syncs the segments they
    /// cover and deletes them. Groups wait while one more than this many are full, so the
    /// journal's disk use, and the replay after a crash, stay within about
    /// `(checkpoint_journal_files + 2) * journal_file_bytes`.
    pub checkpoint_journal_files: usize,
    /// A log's journaled batches are written to its segment once this many bytes of them are
    /// pending (or a read reaches them, or a checkpoint, a roll or a stop comes): the journal
    /// holds them durably until then, and fewer, larger writes keep the cost of a request that
    /// touches many logs from growing with their number.
    pub fill_bytes: u64,
    /// When the bytes pending over all logs pass this, every log a journal group touches is
    /// written out: bounds the memory pending batches take, whatever the number of logs.
    pub pending_bytes_max: u64,
    /// A checkpoint also runs once no journal group has been written for this long while
    /// logs hold batches not yet synced in their segments: a store that went quiet writes its
    /// pending batches out and frees the buffers kept for fills, so its memory after a load
    /// does not depend on `pending_bytes_max`.
    pub idle_checkpoint_ms: u64,
    /// Active segments' files kept open at once, over the store; the others are reopened when
    /// used again, so idle logs hold no file descriptor, however many there are.
    pub open_files_max: usize,
    /// A checkpoint over at least this many logs syncs them all with one `syncfs` where the
    /// backend trusts it (see `Backend::sync_all_files`): one file-system commit instead of
    /// one `fdatasync` per segment. Below it, or where `syncfs` is not trusted, each segment
    /// is synced on its own (which does not flush unrelated files sharing the file system).
    /// The default, 1,024, is where the two cost the same under load here: `syncfs` holds
    /// back the journal's group syncs running meanwhile (PutRecords over 512 shards ran 7 %
    /// faster with an `fdatasync` per segment), while the `fdatasync`s' own cost grows with
    /// the logs (over 2,048 and 4,096 shards `syncfs` was faster, and took less CPU).
    pub sync_all_files_logs_min: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            index_interval_bytes: 16 << 10,
            segment_age_max_ms: 3_600_000,
            sync_threads: 16,
            journal_file_bytes: 64 << 20,
            checkpoint_journal_files: 2,
            fill_bytes: 64 << 10,
            pending_bytes_max: 128 << 20,
            idle_checkpoint_ms: 1000,
            open_files_max: 1024,
            sync_all_files_logs_min: 1024,
        }
    }
}

/// A record to append: borrowed, so the caller's buffers are copied once, into the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// The record's key (for Kinesis, the partition key and friends; opaque here).
    pub key: &'a [u8],
    /// The record's value.
    pub value: &'a [u8],
}
