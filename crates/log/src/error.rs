//! The crate's error type.

/// Everything that can go wrong in the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes fail their checks (checksum, structure) in a way a crash cannot explain.
    #[error("corrupt data in log {log:?}, segment {segment}, byte {position}: {reason}")]
    Corrupt {
        /// The log's id.
        log: String,
        /// The segment's base offset.
        segment: u64,
        /// Byte position in the segment where the damage starts.
        position: u64,
        /// Which check failed.
        reason: String,
    },
    /// An encrypted batch names a data key the store's keyring does not have.
    #[error("log {log:?} holds a batch encrypted with data key {key_id}, which is unavailable")]
    KeyUnavailable {
        /// The log's id.
        log: String,
        /// The data key's id.
        key_id: u32,
    },
    /// The cipher refused a key or a batch (never expected: keys are 32 bytes and batches far
    /// below AES-GCM's limit).
    #[error("encryption failed: {reason}")]
    Encryption {
        /// What was refused.
        reason: String,
    },
    /// The store was shut down.
    #[error("the log store is closed")]
    Closed,
    /// A sync or write of this log failed earlier: its appends are refused until the store is
    /// reopened, because the state of the unsynced data on disk is unknown.
    #[error("log {log:?} failed and refuses appends until the store is reopened: {reason}")]
    Failed {
        /// The log's id.
        log: String,
        /// The first error that put the log in the failed state.
        reason: String,
    },
    /// The log was removed.
    #[error("log {log:?} was removed")]
    Removed {
        /// The log's id.
        log: String,
    },
    /// A log id outside the allowed alphabet or length.
    #[error("invalid log id {id:?}: {reason}")]
    InvalidLogId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// `append` was called without records.
    #[error("cannot append an empty batch")]
    EmptyBatch,
    /// The batch does not fit in one batch on disk.
    #[error("batch of {record_count} records exceeds {size_bytes_max} bytes")]
    BatchTooLarge {
        /// Records in the rejected batch.
        record_count: usize,
        /// The limit on an encoded batch.
        size_bytes_max: u32,
    },
    /// Offsets would pass `u64::MAX`.
    #[error("offsets of log {log:?} would overflow")]
    OffsetOverflow {
        /// The log's id.
        log: String,
    },
    /// A configuration value is out of range.
    #[error("invalid store configuration: {0}")]
    Config(&'static str),
    /// The metadata store (redb) failed.
    #[error("metadata store error: {0}")]
    Meta(#[source] Box<redb::Error>),
}

impl LogError {
    pub(crate) fn meta(error: impl Into<redb::Error>) -> Self {
        LogError::Meta(Box::new(error.into()))
    }
}
