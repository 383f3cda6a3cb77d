//! The engine's storage seam (`rivulet_engine::storage`) on JetStream: `rivulet serve
//! --cluster`.
//!
//! - Records: [`JetStreamRecords`]. The engine's log id `<stream key>/shardId-N` names the
//!   JetStream stream of `<stream key>` (as one base64url token) and its subject `N`. A put is
//!   one atomic batch for the whole request, run in a task of its own, so that it finishes
//!   even if its request goes away, and so that closing a shard can wait for the puts in
//!   flight.
//! - Metadata: [`ClusterMeta`], read from this node's mirror, committed through this node's
//!   serving lease ([`Leadership::commit`]): a node that lost the lease cannot write.
//! - One node serves a deployment at a time, for now: the engine keeps its streams in memory
//!   and nothing refreshes another node's copy yet. A second node waits for the lease and
//!   refuses to start if it stays held (`docs/cluster.md`).
//!
//! The engine calls the seam's synchronous methods (metadata commits, creating a shard's
//! log, closing a shard) from tokio's worker threads: they block in place
//! (`tokio::task::block_in_place`), which needs the multi-threaded runtime, or run on a
//! scoped thread elsewhere.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use rivulet_engine::storage::{
    MetaBackend, Offsets, PendingPut, Placed, ReadBatch, RecordStore, ShardLog, ShardWrite,
    StoreFuture, StoredRecord,
};
use rivulet_engine::{ApiError, ErrorKind};
use rivulet_log::{Keyring, MetaOp, NewRecord};
use tokio::sync::watch;

use crate::lease::{Leadership, LeaseConfig};
use crate::meta::{ClusterMeta, MetaError};
use crate::records::{JetStreamRecords, RecordError};

/// The metadata key of the serving lease.
const SERVING_LEASE: &str = "__rivulet/serving";
/// How often a shard's retention trim asks JetStream at most.
const TRIM_EVERY_MS: i64 = 60_000;
/// How long a read waits for a lagging replica to show this node's own acknowledged writes.
const READ_YOUR_WRITES_TRIES: u32 = 40;

/// How to reach and lay out a deployment.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// NATS server URLs (`nats://host:port`).
    pub urls: Vec<String>,
    /// Copies of every record and metadata key (1, 3 or 5; 3 is Kinesis's three zones).
    pub replicas: usize,
    /// This node's name, in the serving lease.
    pub node_name: String,
    /// The subject token that prefixes every stream and subject of the deployment.
    pub prefix: String,
    /// NATS user and password, if the servers require them.
    pub user: Option<(String, String)>,
    /// A NATS token, if the servers require one.
    pub token: Option<String>,
    /// How long one JetStream request waits for its answer.
    pub timeout: Duration,
    /// How long a starting node waits for the serving lease (a node that stopped without
    /// releasing it holds it for 6 s more) before giving up.
    pub serving_wait: Duration,
}

/// The storage of `rivulet serve --cluster`.
pub struct ClusterStore {
    runtime: tokio::runtime::Handle,
    client: async_nats::Client,
    records: JetStreamRecords,
    meta: ClusterMetaBackend,
    /// Kinesis streams whose JetStream stream exists (by token).
    created: Mutex<HashSet<String>>,
    logs: Mutex<HashMap<String, Arc<JetStreamShard>>>,
    /// Puts in flight per Kinesis stream (by token): closing a shard waits for them.
    in_flight: Arc<Mutex<HashMap<String, watch::Sender<usize>>>>,
    keyring: Mutex<Option<Arc<dyn Keyring>>>,
}

/// Metadata through the serving lease.
pub struct ClusterMetaBackend {
    runtime: tokio::runtime::Handle,
    meta: Arc<ClusterMeta>,
    serving: Mutex<Option<Leadership>>,
}

/// One shard's records.
pub struct JetStreamShard {
    runtime: tokio::runtime::Handle,
    records: JetStreamRecords,
    token: String,
    index: u32,
    /// One past the last position this node knows stored (its own acknowledged puts, and
    /// what its reads found): reads wait for a lagging replica to reach it.
    end: Arc<watch::Sender<u64>>,
    /// When the retention trim last asked JetStream (ms since the epoch).
    trimmed_ms: AtomicI64,
    in_flight: Arc<Mutex<HashMap<String, watch::Sender<usize>>>>,
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "cluster storage error");
    ApiError::internal("Internal Service Failure")
}

/// A JetStream failure as the Kinesis error a client retries.
fn record_error(error: RecordError) -> ApiError {
    match error {
        RecordError::Corrupt(_) => ApiError::internal(format!("Internal Service Failure: {error}")),
        RecordError::TooLarge(_) => ApiError::new(ErrorKind::Validation, error.to_string()),
        error => internal(error),
    }
}

/// Runs `future` to its end from synchronous code on a tokio thread (or any other).
fn block_on<F>(runtime: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    match tokio::runtime::Handle::try_current() {
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| current.block_on(future))
        }
        // A current-thread runtime cannot block in place, and no runtime may be entered twice
        // on one thread: run it on a thread of its own.
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// The token of a Kinesis stream's JetStream stream: its key (namespace and stream key), as
/// base64url, which is one subject token and a valid stream name.
fn token(stream_key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(stream_key)
}

fn stream_key(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// `<stream key>/shardId-N` → (token, N).
fn parse_log_id(id: &str) -> Result<(String, u32), ApiError> {
    let invalid = || ApiError::internal(format!("log id {id:?} is not <stream>/shardId-N"));
    let (stream, shard) = id.rsplit_once('/').ok_or_else(invalid)?;
    let index = shard
        .strip_prefix("shardId-")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(invalid)?;
    if stream.is_empty() {
        return Err(invalid());
    }
    Ok((token(stream), index))
}

fn log_id(stream_key: &str, index: u32) -> String {
    format!("{stream_key}/shardId-{index:012}")
}

impl ClusterStore {
    /// Connects, opens (or creates) the deployment's metadata, and takes the serving lease.
    pub async fn open(settings: &ClusterSettings) -> anyhow::Result<Arc<ClusterStore>> {
        if settings.urls.is_empty() {
            anyhow::bail!("--cluster needs at least one nats:// URL");
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("rivulet {}", settings.node_name))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5));
        if let Some((user, password)) = &settings.user {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &settings.token {
            options = options.token(token.clone());
        }
        let urls: Vec<async_nats::ServerAddr> = settings
            .urls
            .iter()
            .map(|url| url.parse())
            .collect::<Result<_, _>>()
            .map_err(|error| anyhow::anyhow!("--cluster: {error}"))?;
        let client = tokio::time::timeout(Duration::from_secs(30), options.connect(urls))
            .await
            .map_err(|_| anyhow::anyhow!("no NATS server answered within 30 s"))??;
        let meta = Arc::new(
            ClusterMeta::open(client.clone(), &settings.prefix, settings.replicas)
                .await
                .map_err(|error| anyhow::anyhow!("opening the cluster's metadata: {error}"))?,
        );
        let serving = Leadership::campaign(
            meta.clone(),
            SERVING_LEASE,
            &settings.node_name,
            LeaseConfig::default(),
        )
        .map_err(|error| anyhow::anyhow!("serving lease: {error}"))?;
        if tokio::time::timeout(settings.serving_wait, serving.acquired())
            .await
            .is_err()
        {
            serving.abandon();
            anyhow::bail!(
                "another Rivulet node serves this cluster (prefix {}); one node serves a \
                 deployment at a time in this release",
                settings.prefix
            );
        }
        let runtime = tokio::runtime::Handle::current();
        Ok(Arc::new(ClusterStore {
            runtime: runtime.clone(),
            records: JetStreamRecords::new(client.clone(), &settings.prefix, settings.replicas)
                .with_timeout(settings.timeout),
            client,
            meta: ClusterMetaBackend {
                runtime,
                meta,
                serving: Mutex::new(Some(serving)),
            },
            created: Mutex::new(HashSet::new()),
            logs: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            keyring: Mutex::new(None),
        }))
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn block<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block_on(&self.runtime, future)
    }

    /// Creates the JetStream stream of `token` once per run (creating it again is a no-op).
    fn ensure_stream(&self, token: &str) -> Result<(), ApiError> {
        if self.created.lock().contains(token) {
            return Ok(());
        }
        // Records are kept until trimmed: the engine applies each stream's retention.
        self.block(self.records.create(token, Duration::ZERO))
            .map_err(record_error)?;
        self.created.lock().insert(token.to_string());
        Ok(())
    }
}

impl RecordStore for ClusterStore {
    fn log(&self, id: &str) -> Result<Arc<dyn ShardLog>, ApiError> {
        if let Some(log) = self.logs.lock().get(id) {
            return Ok(log.clone());
        }
        let (token, index) = parse_log_id(id)?;
        self.ensure_stream(&token)?;
        let log = Arc::new(JetStreamShard {
            runtime: self.runtime.clone(),
            records: self.records.clone(),
            token,
            index,
            end: Arc::new(watch::channel(0).0),
            trimmed_ms: AtomicI64::new(i64::MIN),
            in_flight: self.in_flight.clone(),
        });
        Ok(self
            .logs
            .lock()
            .entry(id.to_string())
            .or_insert(log)
            .clone())
    }

    /// Every shard that holds records, and shard 0 of a stream with none, so that the
    /// engine's clean-up of orphaned streams reaches every JetStream stream.
    fn log_ids(&self) -> Result<Vec<String>, ApiError> {
        self.block(async {
            let mut ids = Vec::new();
            for token in self.records.ids().await.map_err(record_error)? {
                let Some(key) = stream_key(&token) else {
                    continue;
                };
                let shards = self
                    .records
                    .shards_with_records(&token)
                    .await
                    .map_err(record_error)?;
                if shards.is_empty() {
                    ids.push(log_id(&key, 0));
                }
                ids.extend(shards.into_iter().map(|shard| log_id(&key, shard)));
            }
            Ok(ids)
        })
    }

    fn remove_log(&self, id: &str) -> Result<(), ApiError> {
        let (token, index) = parse_log_id(id)?;
        self.logs.lock().remove(id);
        match self.block(self.records.purge_shard(&token, index)) {
            Ok(()) => Ok(()),
            // The stream is already gone.
            Err(RecordError::Api(error)) if error.err_code == STREAM_NOT_FOUND => Ok(()),
            Err(error) => Err(record_error(error)),
        }
    }

    fn remove_stream(&self, stream_key: &str, ids: &[String]) -> Result<(), ApiError> {
        let token = token(stream_key);
        {
            let mut logs = self.logs.lock();
            for id in ids {
                logs.remove(id);
            }
        }
        self.created.lock().remove(&token);
        match self.block(self.records.delete(&token)) {
            Ok(()) => Ok(()),
            Err(RecordError::Api(error)) if error.err_code == STREAM_NOT_FOUND => Ok(()),
            Err(error) => Err(record_error(error)),
        }
    }

    fn put(&self, writes: &[ShardWrite<'_>], timestamp_ms: i64) -> Result<PendingPut, ApiError> {
        let mut shards: Vec<(u32, Vec<OwnedRecord>)> = Vec::with_capacity(writes.len());
        let mut ends: Vec<Arc<watch::Sender<u64>>> = Vec::with_capacity(writes.len());
        let mut stream: Option<String> = None;
        for write in writes {
            let log = write
                .log
                .as_any()
                .downcast_ref::<JetStreamShard>()
                .ok_or_else(|| ApiError::internal("a log of another store"))?;
            if write.seal.is_some() {
                // Unreachable: without a key service the engine never seals (see `open`).
                return Err(ApiError::internal(
                    "encrypted records are not stored in cluster mode",
                ));
            }
            match &stream {
                Some(token) if *token != log.token => {
                    return Err(ApiError::internal("a put spans two streams"));
                }
                _ => stream = Some(log.token.clone()),
            }
            let records = write
                .records
                .iter()
                .map(|r| OwnedRecord {
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                })
                .collect();
            shards.push((log.index, records));
            ends.push(log.end.clone());
        }
        let Some(token) = stream else {
            return Ok(Box::pin(async { Ok(Vec::new()) }));
        };
        let guard = InFlight::enter(&self.in_flight, &token);
        let records = self.records.clone();
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        // A task of its own: the put completes (or fails) even if its request goes away, and
        // `InFlight` tells a closing shard when it has.
        let task = self.runtime.spawn(async move {
            let _guard = guard;
            let borrowed: Vec<Vec<NewRecord<'_>>> = shards
                .iter()
                .map(|(_, records)| {
                    records
                        .iter()
                        .map(|r| NewRecord {
                            key: &r.key,
                            value: &r.value,
                        })
                        .collect()
                })
                .collect();
            let request: Vec<(u32, &[NewRecord<'_>])> = shards
                .iter()
                .zip(&borrowed)
                .map(|((index, _), records)| (*index, records.as_slice()))
                .collect();
            let positions = records
                .put(&token, &request, timestamp_ms, &request_id)
                .await
                .map_err(record_error)?;
            let mut placed = Vec::with_capacity(positions.len());
            for (end, positions) in ends.iter().zip(positions) {
                if let Some(last) = positions.last() {
                    end.send_if_modified(|end| {
                        let moved = *end <= *last;
                        *end = (*end).max(last + 1);
                        moved
                    });
                }
                placed.push(Placed {
                    offsets: Offsets::Each(positions),
                    timestamp_ms,
                });
            }
            Ok::<_, ApiError>(placed)
        });
        Ok(Box::pin(async move {
            task.await
                .map_err(|error| internal(format!("put task: {error}")))?
        }))
    }

    fn meta(&self) -> &dyn MetaBackend {
        &self.meta
    }

    fn set_keyring(&self, keyring: Arc<dyn Keyring>) {
        *self.keyring.lock() = Some(keyring);
    }

    /// Gives the serving lease back, so another node may serve at once.
    fn shutdown(&self) {
        let serving = self.meta.serving.lock().take();
        if let Some(serving) = serving
            && let Err(error) = self.block(serving.release())
        {
            tracing::warn!(%error, "releasing the serving lease");
        }
    }
}

/// JetStream's "stream not found".
const STREAM_NOT_FOUND: u32 = 10059;

struct OwnedRecord {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A put in flight on a Kinesis stream, counted until dropped.
struct InFlight {
    counts: Arc<Mutex<HashMap<String, watch::Sender<usize>>>>,
    token: String,
}

impl InFlight {
    fn enter(counts: &Arc<Mutex<HashMap<String, watch::Sender<usize>>>>, token: &str) -> Self {
        counts
            .lock()
            .entry(token.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|n| *n += 1);
        InFlight {
            counts: counts.clone(),
            token: token.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(count) = self.counts.lock().get(&self.token) {
            count.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

impl JetStreamShard {
    fn known_end(&self) -> u64 {
        *self.end.borrow()
    }

    fn saw_end(&self, end: u64) {
        self.end.send_if_modified(|known| {
            let moved = *known < end;
            *known = (*known).max(end);
            moved
        });
    }
}

impl ShardLog for JetStreamShard {
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> StoreFuture<ReadBatch> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let known_end = self.known_end();
        let end = self.end.clone();
        Box::pin(async move {
            let mut tries = 0;
            let page = loop {
                let page = records
                    .read(&token, index, from, max_records, max_bytes)
                    .await
                    .map_err(record_error)?;
                // A replica behind this node's own acknowledged writes: ask again.
                let short = page.pending == 0 && page.records.len() < max_records;
                if short && page.next < known_end && tries < READ_YOUR_WRITES_TRIES {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                break page;
            };
            if page.pending == 0 {
                let reached = page.next.max(from);
                end.send_if_modified(|known| {
                    let moved = *known < reached;
                    *known = (*known).max(reached);
                    moved
                });
            }
            Ok(ReadBatch {
                next_offset: page.next.max(from),
                records: page
                    .records
                    .into_iter()
                    .map(|record| StoredRecord {
                        offset: record.position,
                        timestamp_ms: record.arrival_ms,
                        key: record.key,
                        value: record.value,
                        encrypted: false,
                    })
                    .collect(),
            })
        })
    }

    fn start_offset(&self) -> StoreFuture<u64> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let known_end = self.known_end();
        Box::pin(async move {
            let first = records
                .read(&token, index, 1, 1, 1)
                .await
                .map_err(record_error)?;
            Ok(match first.records.first() {
                Some(record) => record.position,
                None => records
                    .last_position(&token, index)
                    .await
                    .map_err(record_error)?
                    .map_or(1, |last| last + 1)
                    .max(known_end),
            })
        })
    }

    fn end_offset(&self) -> StoreFuture<u64> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let known_end = self.known_end();
        let end = self.end.clone();
        Box::pin(async move {
            let last = records
                .last_position(&token, index)
                .await
                .map_err(record_error)?;
            let found = last.map_or(1, |last| last + 1).max(known_end).max(1);
            end.send_if_modified(|known| {
                let moved = *known < found;
                *known = (*known).max(found);
                moved
            });
            Ok(found)
        })
    }

    fn offset_at_timestamp(&self, timestamp_ms: i64) -> StoreFuture<u64> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let end = self.end_offset();
        Box::pin(async move {
            match records
                .position_at(&token, index, timestamp_ms)
                .await
                .map_err(record_error)?
            {
                Some(position) => Ok(position),
                None => end.await,
            }
        })
    }

    /// Once this node's puts to the stream have finished (the engine holds the stream's write
    /// lock, so no new one starts): one past the stream's last sequence, which is above every
    /// record of this shard.
    fn next_offset(&self) -> Result<u64, ApiError> {
        let mut count = self
            .in_flight
            .lock()
            .entry(self.token.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        let records = self.records.clone();
        let token = self.token.clone();
        let last = block_on(&self.runtime, async move {
            let _ = count.wait_for(|n| *n == 0).await;
            records.last_sequence(&token).await
        })
        .map_err(record_error)?;
        let next = (last + 1).max(self.known_end());
        self.saw_end(next);
        Ok(next)
    }

    /// At most once a minute per shard, in the background: purges what arrived before
    /// `cutoff_ms`.
    fn trim_older_than(&self, cutoff_ms: i64) -> Result<(), ApiError> {
        let last = self.trimmed_ms.load(Ordering::Relaxed);
        if last != i64::MIN && cutoff_ms - last < TRIM_EVERY_MS {
            return Ok(());
        }
        self.trimmed_ms.store(cutoff_ms, Ordering::Relaxed);
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        self.runtime.spawn(async move {
            let trimmed = async {
                if let Some(before) = records.position_at(&token, index, cutoff_ms).await? {
                    records.trim(&token, index, before).await?;
                } else if let Some(last) = records.last_position(&token, index).await? {
                    // Everything is older than the cutoff.
                    records.trim(&token, index, last + 1).await?;
                }
                Ok::<(), RecordError>(())
            };
            if let Err(error) = trimmed.await {
                tracing::warn!(%error, shard = index, "retention trim failed; retried later");
            }
        });
        Ok(())
    }

    fn watch_end(&self) -> Result<watch::Receiver<u64>, ApiError> {
        Ok(self.end.subscribe())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl MetaBackend for ClusterMetaBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.meta.get(key))
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        Ok(self.meta.scan_prefix(prefix))
    }

    fn commit(&self, ops: &[MetaOp]) -> Result<(), ApiError> {
        let serving = self.serving.lock();
        let Some(serving) = serving.as_ref() else {
            return Err(internal("the store is shut down"));
        };
        match block_on(&self.runtime, serving.commit(ops)) {
            Ok(_) => Ok(()),
            Err(MetaError::Conflict { .. }) => Err(internal(
                "this node no longer holds the serving lease; its write was refused",
            )),
            Err(error) => Err(internal(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_map_to_one_token_per_stream() {
        let (token_a, shard) =
            parse_log_id("acct-1/orders.1700000000000/shardId-000000000007").expect("a log id");
        assert_eq!(shard, 7);
        assert_eq!(
            stream_key(&token_a).as_deref(),
            Some("acct-1/orders.1700000000000")
        );
        assert!(
            token_a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let (token_b, _) =
            parse_log_id("acct-1/orders.1700000000000/shardId-000000000008").expect("a log id");
        assert_eq!(token_a, token_b);
        assert_eq!(
            log_id("acct-1/orders.1700000000000", 7),
            "acct-1/orders.1700000000000/shardId-000000000007"
        );
        assert!(parse_log_id("no-shard").is_err());
        assert!(parse_log_id("s/shardId-x").is_err());
    }
}
