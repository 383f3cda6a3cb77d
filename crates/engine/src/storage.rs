//! The engine/storage seam: what the engine needs from wherever records and metadata live.
//!
//! Two implementations stand behind it: the embedded segment store (`rivulet-log`, below) and
//! the cluster's JetStream store (`rivulet-cluster`). The engine holds a `dyn RecordStore` and
//! one `dyn ShardLog` per shard, and never learns which one it runs on.
//!
//! The shape follows what the slower backend needs (`docs/design/cluster.md`, "The
//! engine/storage seam"):
//! - a write is one [`RecordStore::put`] per request, covering every shard it touches, because
//!   JetStream stores a request as one atomic batch whose positions are known only once it is
//!   acknowledged; the embedded store appends per shard and knows them at once;
//! - reads that may cross a network return a [`StoreFuture`]; the engine awaits them outside
//!   its locks. What a backend answers from its own state (the end watch) stays
//!   synchronous, and so does closing a shard, which happens under the stream's write lock.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rivulet_log::{DurableSet, Encryption, Keyring, Log, MetaOp, MetaStore, NewRecord, Store};
use tokio::sync::watch;

pub use rivulet_log::{ReadBatch, StoredRecord};

use crate::{ApiError, Result};

/// A storage operation in flight: ready at once on the embedded store, a network round trip on
/// the cluster's.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// The records of one shard.
///
/// Positions ("offsets") strictly increase with each record stored; they need not be
/// consecutive (JetStream's are its stream's sequence, shared by every shard of the stream).
pub trait ShardLog: Send + Sync {
    /// Durable records at positions >= `from`, in order: at most `max_records` and about
    /// `max_bytes` of keys and values (at least one record when any is available), and where
    /// the next read starts.
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> StoreFuture<ReadBatch>;
    /// [`ShardLog::read`] for a reader that [`ShardLog::watch_end`] wakes (a subscription):
    /// it need not make sure no record acknowledged elsewhere is missing, since the watch
    /// wakes it for those.
    fn read_tail(&self, from: u64, max_records: usize, max_bytes: usize) -> StoreFuture<ReadBatch> {
        self.read(from, max_records, max_bytes)
    }
    /// The position of the oldest retained durable record, or `end_offset` when none.
    fn start_offset(&self) -> StoreFuture<u64>;
    /// One past the newest durable record's position.
    fn end_offset(&self) -> StoreFuture<u64>;
    /// The end as far as this node knows without asking further (for MillisBehindLatest after
    /// a read); `end_offset` where that costs nothing.
    fn known_end_offset(&self) -> StoreFuture<u64> {
        self.end_offset()
    }
    /// The end of a shard that closed at `end` ([`ShardLog::close`]), for telling a reader it
    /// has read everything: `end` once every record below it is durable.
    fn closed_end(&self, end: u64) -> StoreFuture<u64> {
        let _ = end;
        self.end_offset()
    }
    /// The position of the first durable record stored at or after `timestamp_ms`, or
    /// `end_offset` when none.
    fn offset_at_timestamp(&self, timestamp_ms: i64) -> StoreFuture<u64>;
    /// Closes the shard to writes and returns where it ends: a position above every record
    /// it stored, acknowledged or not. Called under the stream's write lock, so this node's
    /// own writers are excluded; a backend that other nodes write to must refuse their later
    /// writes itself.
    fn close(&self) -> Result<u64>;
    /// Drops what is older than `cutoff_ms` (by whole segments or records, as the backend
    /// stores them).
    fn trim_older_than(&self, cutoff_ms: i64) -> Result<()>;
    /// A receiver of `end_offset`, changed whenever it advances (push consumers wait on it).
    fn watch_end(&self) -> Result<watch::Receiver<u64>>;
    /// The implementation, for its own store's [`RecordStore::put`].
    fn as_any(&self) -> &dyn Any;
}

/// One shard's part of a put: its records in request order, sealed with `seal` when the stream
/// is encrypted.
pub struct ShardWrite<'a> {
    pub log: &'a dyn ShardLog,
    pub records: &'a [NewRecord<'a>],
    pub seal: Option<Encryption<'a>>,
}

/// Where one shard's records of a put were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The positions of the shard's records, in request order.
    pub offsets: Offsets,
    /// The arrival time the store gave them.
    pub timestamp_ms: i64,
    /// The shard had closed before the records landed (another node closed it while this one
    /// still routed to it): they are stored where no reader reads, and their entries fail, so
    /// the client's retry goes to the shard's children. Only a cluster's store sets it.
    pub late: bool,
}

/// The positions of a shard's records in one put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offsets {
    /// Consecutive, from this one.
    From(u64),
    /// Each record's own.
    Each(Vec<u64>),
}

impl Offsets {
    /// The position of the `k`-th record.
    pub fn at(&self, k: usize) -> Option<u64> {
        match self {
            Offsets::From(first) => Some(first + k as u64),
            Offsets::Each(each) => each.get(k).copied(),
        }
    }
}

/// A put once every record of it is durable: each [`ShardWrite`]'s placement, in order.
pub type PendingPut = StoreFuture<Vec<Placed>>;

/// Durable key-value metadata with atomic multi-key commits.
pub trait MetaBackend: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every key starting with `prefix`, in key order, with its value.
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Applies every operation, or none; durable when it returns.
    fn commit(&self, ops: &[MetaOp]) -> Result<()>;
    /// Stores `value` under `key` unless the key holds a value already; returns the value
    /// stored, this one or the earlier one (the first writer wins, even among nodes).
    fn create_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>>;
    /// A counter that moves whenever another node commits (`None`: no other node writes).
    fn changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// Where an engine keeps records and metadata: one per server, shared by every account.
pub trait RecordStore: Send + Sync {
    /// The log `id`, created if it does not exist.
    fn log(&self, id: &str) -> Result<Arc<dyn ShardLog>>;
    /// The ids of every log.
    fn log_ids(&self) -> Result<Vec<String>>;
    /// Removes the log `id` and its records.
    fn remove_log(&self, id: &str) -> Result<()>;
    /// Removes every log of the stream whose logs are named `<stream_key>/…`: `ids`, all of
    /// them (the cluster's store keeps a stream's shards together and drops them at once).
    fn remove_stream(&self, stream_key: &str, ids: &[String]) -> Result<()>;
    /// Stores each write's records, all or nothing per shard, each shard's in order; the
    /// returned future completes once every record is durable. Every `ShardWrite::log` is one
    /// this store's `log` returned.
    fn put(&self, writes: &[ShardWrite<'_>], timestamp_ms: i64) -> Result<PendingPut>;
    /// The metadata.
    fn meta(&self) -> &dyn MetaBackend;
    /// Where encrypted records find their data keys.
    fn set_keyring(&self, keyring: Arc<dyn Keyring>);
    /// Stops cleanly: what is buffered is written and synced.
    fn shutdown(&self);
    /// SubscribeToShard's slots shared with the other nodes of a cluster (`None`: this
    /// process is the only one, and the engine's own registry is the whole truth).
    fn shared_slots(&self) -> Option<Arc<dyn SharedSlots>> {
        None
    }
    /// Whether other processes write to this store too (a cluster's): then a log without
    /// metadata may be one another node is creating, and only the metadata's writer removes
    /// orphans ([`crate::Engine::remove_orphans`]).
    fn is_shared(&self) -> bool {
        false
    }
}

/// SubscribeToShard's rule across nodes: one subscription per consumer and shard, a newer one
/// taking over once the live one is `takeover_ms` old.
pub trait SharedSlots: Send + Sync {
    /// Takes slot `key` for subscription `generation` (of this node) starting at `now_ms`;
    /// `Ok(false)` if another subscription, on any node, took it less than `takeover_ms`
    /// before. Once another takes it over, `superseded` turns `true`.
    fn claim(
        &self,
        key: &str,
        generation: u64,
        now_ms: i64,
        takeover_ms: i64,
        superseded: Arc<watch::Sender<bool>>,
    ) -> Result<bool>;
    /// Gives slot `key` back, if subscription `generation` still holds it.
    fn release(&self, key: &str, generation: u64);
}

/// How many logs ahead `RecordStore::put` asks the cache for each of `Log::prefetch`'s steps
/// (1, 2 and 3): far enough for a miss to arrive before the step that reads it.
const PREFETCH_DISTANCES: [usize; 3] = [3, 6, 9];

fn ready<T: Send + 'static>(result: Result<T>) -> StoreFuture<T> {
    Box::pin(std::future::ready(result))
}

/// A sync or write that failed leaves the request unacknowledged.
fn sync_failed(error: rivulet_log::LogError) -> ApiError {
    tracing::error!(%error, "sync failed; write not acknowledged");
    ApiError::internal("Internal Service Failure")
}

impl ShardLog for Log {
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> StoreFuture<ReadBatch> {
        ready(Log::read(self, from, max_records, max_bytes).map_err(ApiError::from))
    }

    fn start_offset(&self) -> StoreFuture<u64> {
        ready(Log::start_offset(self).map_err(ApiError::from))
    }

    fn end_offset(&self) -> StoreFuture<u64> {
        ready(Log::end_offset(self).map_err(ApiError::from))
    }

    fn offset_at_timestamp(&self, timestamp_ms: i64) -> StoreFuture<u64> {
        ready(Log::offset_at_timestamp(self, timestamp_ms).map_err(ApiError::from))
    }

    /// The engine appends nothing to a closed shard, so its end is the next offset.
    fn close(&self) -> Result<u64> {
        Ok(Log::next_offset(self)?)
    }

    fn trim_older_than(&self, cutoff_ms: i64) -> Result<()> {
        Log::trim_older_than(self, cutoff_ms)?;
        Ok(())
    }

    fn watch_end(&self) -> Result<watch::Receiver<u64>> {
        Ok(Log::watch_end(self)?)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl MetaBackend for MetaStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(MetaStore::get(self, key)?)
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(MetaStore::scan_prefix(self, prefix)?)
    }

    fn commit(&self, ops: &[MetaOp]) -> Result<()> {
        Ok(MetaStore::commit(self, ops)?)
    }

    /// One process writes the embedded store, and the engine creates a key before using it.
    fn create_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        if let Some(held) = MetaStore::get(self, key)? {
            return Ok(held);
        }
        MetaStore::commit(
            self,
            &[MetaOp::Put {
                key: key.to_string(),
                value: value.to_vec(),
            }],
        )?;
        Ok(value.to_vec())
    }
}

impl RecordStore for Store {
    fn log(&self, id: &str) -> Result<Arc<dyn ShardLog>> {
        Ok(Store::log(self, id)?)
    }

    fn log_ids(&self) -> Result<Vec<String>> {
        Ok(Store::log_ids(self)?)
    }

    fn remove_log(&self, id: &str) -> Result<()> {
        Ok(Store::remove_log(self, id)?)
    }

    fn remove_stream(&self, _stream_key: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            Store::remove_log(self, id)?;
        }
        Ok(())
    }

    /// One append (one batch) per shard, done before it returns, so the caller's lock orders
    /// it; the future waits once for the journal group that covers them all.
    fn put(&self, writes: &[ShardWrite<'_>], timestamp_ms: i64) -> Result<PendingPut> {
        let mut placed = Vec::with_capacity(writes.len());
        let mut durable = DurableSet::with_capacity(writes.len());
        let logs = writes
            .iter()
            .map(|write| write.log.as_any().downcast_ref::<Log>())
            .collect::<Option<Vec<&Log>>>()
            .ok_or_else(|| ApiError::internal("a log of another store"))?;
        // Over many shards each log is cold: its next ones are asked for ahead (see
        // `Log::prefetch`).
        let prefetch = |at: usize| {
            for (step, distance) in PREFETCH_DISTANCES.iter().enumerate() {
                if let Some(ahead) = logs.get(at + distance) {
                    ahead.prefetch(step + 1);
                }
            }
        };
        for log in logs.iter().take(PREFETCH_DISTANCES[2]) {
            log.prefetch(3);
        }
        // The journal's writer waits for this request's appends to end before it takes the
        // open group, so they land in one.
        let appending = self.appending();
        for (at, (write, log)) in writes.iter().zip(&logs).enumerate() {
            prefetch(at);
            let (first_offset, stored_ms) =
                log.append_to(write.records, timestamp_ms, write.seal, &mut durable)?;
            placed.push(Placed {
                offsets: Offsets::From(first_offset),
                timestamp_ms: stored_ms,
                late: false,
            });
        }
        drop(appending);
        Ok(Box::pin(async move {
            durable.wait().await.map_err(sync_failed)?;
            Ok(placed)
        }))
    }

    fn meta(&self) -> &dyn MetaBackend {
        Store::meta(self)
    }

    fn set_keyring(&self, keyring: Arc<dyn Keyring>) {
        Store::set_keyring(self, keyring);
    }

    fn shutdown(&self) {
        Store::shutdown(self);
    }
}
