//! The Kinesis engine: streams, shards, hash ranges, sequence numbers, iterators, resharding and
//! lifecycle, over `rivulet-log` storage.
//!
//! Architecture invariant: no HTTP, no wire formats and no clock reads here. Every operation is
//! given `now_ms`; the server passes the wall clock, tests pass whatever time they like.

mod account;
pub mod autoscale;
#[cfg(test)]
mod blocking;
pub mod channels;
mod consumers;
mod control;
mod data;
pub mod encryption;
mod error;
pub mod hash;
pub mod limits;
pub mod meta;
pub mod metrics;
pub mod migrate;
mod monitoring;
mod queues;
mod reshard;
mod resources;
pub mod seq;
#[cfg(test)]
mod seq_tests;
pub mod share;
pub mod storage;
mod subscribe;
#[cfg(test)]
mod tests;
pub mod time;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use rivulet_log::MetaOp;
use storage::{RecordStore, ShardLog};

pub use account::{Commitment, CommitmentView, WarmThroughput};
pub use channels::{ChannelSource, ChannelStatus, ChannelView, is_channel_arn};
pub use consumers::*;
pub use control::*;
pub use data::*;
pub use error::{ApiError, ErrorKind, Result};
pub use meta::{ConsumerStatus, RecordDistribution, StreamEncryption, StreamMode, StreamStatus};
pub use monitoring::{MonitoringChange, ShardMetricsView, StreamMetricsView};
pub use queues::*;
pub use resources::ResourceAccess;
pub use subscribe::*;

use meta::{StreamMeta, shard_id};
use token::{SECRET_BYTES, TokenCodec};

/// Metadata key prefix of stream documents.
const STREAM_KEY_PREFIX: &str = "stream/";
/// Metadata key of the token secret.
const SECRET_KEY: &str = "engine/token-secret";
/// How long shard iterators and pagination tokens stay valid.
pub const TOKEN_TTL_MS: i64 = 300_000;

/// A pagination token older than [`TOKEN_TTL_MS`] (issued at `issued_ms`) is
/// ExpiredNextTokenException, as AWS answers it.
pub(crate) fn check_token_age(token: &str, issued_ms: i64, now_ms: i64) -> Result<()> {
    if now_ms - issued_ms > TOKEN_TTL_MS {
        return Err(ApiError::new(
            ErrorKind::ExpiredNextToken,
            format!("The NextToken {token} has expired."),
        ));
    }
    Ok(())
}

/// Settings the engine takes from the server's configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub account_id: String,
    pub region: String,
    /// How long a new stream stays CREATING.
    pub create_stream_ms: i64,
    /// How long a deleted stream stays DELETING.
    pub delete_stream_ms: i64,
    /// How long resharding keeps a stream UPDATING.
    pub update_stream_ms: i64,
    /// The account's open-shard quota.
    pub shard_limit: u32,
    /// Shard throughput limits: `None` off, `Some(x)` AWS's rates times `x`.
    pub limits_scale: Option<f64>,
    /// How much faster than AWS's on-demand streams' clock runs (their 15-minute scaling
    /// step, 30-day peak window and gradual scale-down): 1 is AWS's pace.
    pub on_demand_time_scale: f64,
    /// Prefix of this engine's metadata keys and log ids in a store that several accounts'
    /// engines share: empty for the server's own account, `acct-<id>/` for the others.
    pub namespace: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            create_stream_ms: 500,
            delete_stream_ms: 500,
            update_stream_ms: 500,
            shard_limit: 20_000,
            limits_scale: None,
            on_demand_time_scale: 1.0,
            namespace: String::new(),
        }
    }
}

/// One open shard as the write path sees it.
struct Route {
    start: u128,
    end: u128,
    index: u32,
    log: Arc<dyn ShardLog>,
    /// Numbers the shard's records: puts in flight copy it and number their records once
    /// durable.
    numbers: seq::ShardNumbers,
}

/// In-memory state of one stream: its metadata plus handles derived from it.
struct StreamState {
    meta: StreamMeta,
    logs: HashMap<u32, Arc<dyn ShardLog>>,
    /// Open shards sorted by starting hash key.
    routes: Vec<Route>,
    /// Finds a hash key's place in `routes`.
    route_index: hash::StartIndex,
}

impl StreamState {
    fn rebuild_routes(&mut self) {
        let mut routes = Vec::new();
        for shard in self.meta.shards.iter().filter(|s| s.is_open()) {
            if let Some(log) = self.logs.get(&shard.index) {
                let created_s = (shard.created_ms / 1000) as u32;
                let layout = self.meta.seq_layout(shard);
                routes.push(Route {
                    start: shard.start(),
                    end: shard.end(),
                    index: shard.index,
                    log: log.clone(),
                    numbers: seq::ShardNumbers::new(created_s, shard.index, layout),
                });
            }
        }
        routes.sort_by_key(|r| r.start);
        self.route_index = hash::StartIndex::new(routes.iter().map(|r| r.start).collect());
        self.routes = routes;
    }

    /// The position in `routes` of the open shard owning `hash`.
    fn route_at(&self, hash: u128) -> Option<usize> {
        let at = self.route_index.find(hash)?;
        let route = self.routes.get(at)?;
        // `find` vouches for the start; the open shards tile the key space, so the end check
        // only guards against a bug.
        (hash <= route.end).then_some(at)
    }
}

/// A stream: metadata behind a lock that writers share and resharding takes exclusively.
struct Stream {
    state: RwLock<StreamState>,
    /// Throughput buckets per shard index, created on first use (when limits are on).
    limits: parking_lot::Mutex<HashMap<u32, Arc<limits::ShardLimits>>>,
    /// Per-shard write meters of on-demand streams, for auto-scaling.
    meters: parking_lot::Mutex<HashMap<u32, autoscale::Meter>>,
    /// Cluster mode: writes metered since the other nodes were last told (bytes, records).
    write_outbox: parking_lot::Mutex<HashMap<u32, (f64, f64)>>,
    /// The epoch second auto-scaling last looked at this stream.
    scaled_at_s: std::sync::atomic::AtomicI64,
    /// Scale-up steps the account's shard quota cut short.
    shard_limit_hits: AtomicU64,
    /// Round-robin position for AUTO record distribution.
    auto_next: AtomicU64,
    /// The data key encrypted writes use in this run, with the KMS key it is wrapped by.
    data_key: parking_lot::Mutex<Option<(String, Arc<rivulet_log::DataKey>)>>,
    /// CloudWatch metrics of this stream (and its shards, with enhanced monitoring).
    metrics: metrics::StreamMetrics,
}

impl Stream {
    /// Records metric data points; shard-level ones only as enhanced monitoring allows.
    fn observe(
        &self,
        meta: &StreamMeta,
        shard: Option<u32>,
        values: &[(metrics::Metric, f64)],
        now_ms: i64,
    ) {
        self.observe_enabled(&meta.enabled_shard_metrics(), shard, values, now_ms);
    }

    /// `observe` with the shard-level metrics enhanced monitoring enables already listed, for
    /// callers that observe many shards at once.
    fn observe_enabled(
        &self,
        enabled: &[metrics::Metric],
        shard: Option<u32>,
        values: &[(metrics::Metric, f64)],
        now_ms: i64,
    ) {
        self.metrics
            .record(&metrics::Observation { shard, values }, enabled, now_ms);
    }

    /// The buckets of shard `index`, when limits are on.
    fn shard_limits(
        &self,
        scale: Option<f64>,
        index: u32,
        now_ms: i64,
    ) -> Option<Arc<limits::ShardLimits>> {
        let scale = scale?;
        Some(
            self.limits
                .lock()
                .entry(index)
                .or_insert_with(|| Arc::new(limits::ShardLimits::new(scale, now_ms)))
                .clone(),
        )
    }

    fn new(state: StreamState) -> Stream {
        Stream {
            state: RwLock::new(state),
            limits: parking_lot::Mutex::new(HashMap::new()),
            meters: parking_lot::Mutex::new(HashMap::new()),
            write_outbox: parking_lot::Mutex::new(HashMap::new()),
            scaled_at_s: std::sync::atomic::AtomicI64::new(0),
            shard_limit_hits: AtomicU64::new(0),
            auto_next: AtomicU64::new(0),
            data_key: parking_lot::Mutex::new(None),
            metrics: metrics::StreamMetrics::default(),
        }
    }
}

/// A stream's metrics, for the data points the server measures itself (latencies): a handle
/// the put and read results carry, so recording needs no second lookup of the stream.
#[derive(Clone)]
pub struct StreamMetricsHandle(Arc<Stream>);

impl StreamMetricsHandle {
    /// Records a stream-level latency (PutRecord.Latency, PutRecords.Latency,
    /// GetRecords.Latency).
    pub fn record_latency(&self, metric: metrics::Metric, ms: f64, now_ms: i64) {
        self.0.metrics.record(
            &metrics::Observation {
                shard: None,
                values: &[(metric, ms)],
            },
            &[],
            now_ms,
        );
    }
}

impl std::fmt::Debug for StreamMetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMetricsHandle")
            .finish_non_exhaustive()
    }
}

/// The engine: every stream of one account and region.
pub struct Engine {
    config: EngineConfig,
    store: Arc<dyn RecordStore>,
    tokens: TokenCodec,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Makes every issued iterator distinct, even two for the same position in the same ms.
    nonce: AtomicU64,
    /// Live SubscribeToShard subscriptions.
    subscriptions: subscribe::Subscriptions,
    /// Requests (and PutRecords entries) refused by throughput limits.
    throttled: AtomicU64,
    /// Control-plane call rates, per operation and account (per stream for ListShards).
    calls: limits::CallLimits,
    /// The account's minimum throughput billing commitment.
    commitment: parking_lot::Mutex<account::Commitment>,
    /// Record bytes read for SubscribeToShard events so far.
    subscription_bytes: AtomicU64,
    /// Data keys and the key service, for encrypted streams (`None`: encryption unavailable).
    data_keys: Option<Arc<encryption::DataKeys>>,
    /// Whether this engine writes metadata: always on one node; in a cluster, only on the
    /// elected leader, while the others follow the metadata (`Engine::refresh`).
    writer: std::sync::atomic::AtomicBool,
    /// Cluster mode: streams keep what this node observed for the other nodes (`share`).
    sharing: std::sync::atomic::AtomicBool,
    /// Held while CreateQueue checks and takes a queue name (unique in the account).
    queue_creation: parking_lot::Mutex<()>,
    /// Deleted queues' and channels' delivery state, removed again once a commit that was in
    /// flight when they went has landed: (the state's key prefix, when).
    state_sweeps: parking_lot::Mutex<Vec<(String, i64)>>,
    /// How many times this engine became the writer (see `writer_term`).
    writer_term: AtomicU64,
    /// State other domains keep per engine (the queues' delivery state), by type.
    extensions: parking_lot::Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
}

fn log_id(meta: &StreamMeta, index: u32) -> String {
    format!("{}/{}", meta.key, shard_id(index))
}

impl Engine {
    /// Opens the engine over a store, loading every stream it holds; without a key service,
    /// StartStreamEncryption is refused.
    pub fn open(store: Arc<dyn RecordStore>, config: EngineConfig) -> Result<Engine> {
        Engine::open_with_keys(store, config, None)
    }

    /// [`Engine::open`] with the store's data keys (and through them the key service), for
    /// encrypted streams.
    pub fn open_with_keys(
        store: Arc<dyn RecordStore>,
        config: EngineConfig,
        data_keys: Option<Arc<encryption::DataKeys>>,
    ) -> Result<Engine> {
        let bytes = match store.meta().get(SECRET_KEY)? {
            Some(bytes) if bytes.len() == SECRET_BYTES => bytes,
            _ => {
                let mut secret = [0u8; SECRET_BYTES];
                getrandom::fill(&mut secret)
                    .map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
                // Every node of a cluster must seal tokens with the same secret: the first
                // one stored wins, whoever stored it.
                store.meta().create_if_absent(SECRET_KEY, &secret)?
            }
        };
        let secret: [u8; SECRET_BYTES] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ApiError::internal("the token secret has the wrong length"))?;
        let commitment =
            match store
                .meta()
                .get(&format!("{}{}", config.namespace, account::ACCOUNT_KEY))?
            {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::internal(format!("account settings: {e}")))?,
                None => account::Commitment::default(),
            };
        let mut streams = BTreeMap::new();
        let namespace = config.namespace.clone();
        for (key, value) in store
            .meta()
            .scan_prefix(&format!("{namespace}{STREAM_KEY_PREFIX}"))?
        {
            let meta: StreamMeta = match serde_json::from_slice(&value) {
                Ok(meta) => meta,
                Err(error) => {
                    tracing::error!(%key, %error, "unreadable stream metadata; skipped");
                    continue;
                }
            };
            let mut logs = HashMap::new();
            for shard in &meta.shards {
                logs.insert(shard.index, store.log(&log_id(&meta, shard.index))?);
            }
            let mut state = StreamState {
                meta,
                logs,
                routes: Vec::new(),
                route_index: hash::StartIndex::default(),
            };
            state.rebuild_routes();
            streams.insert(state.meta.name.clone(), Arc::new(Stream::new(state)));
        }
        let shared = store.is_shared();
        let shared_slots = store.shared_slots();
        Engine {
            config,
            store,
            tokens: TokenCodec::new(secret),
            streams: RwLock::new(streams),
            nonce: AtomicU64::new(0),
            subscriptions: subscribe::Subscriptions::new(shared_slots),
            throttled: AtomicU64::new(0),
            calls: limits::CallLimits::default(),
            commitment: parking_lot::Mutex::new(commitment),
            subscription_bytes: AtomicU64::new(0),
            data_keys,
            writer: std::sync::atomic::AtomicBool::new(true),
            sharing: std::sync::atomic::AtomicBool::new(false),
            queue_creation: parking_lot::Mutex::new(()),
            state_sweeps: parking_lot::Mutex::new(Vec::new()),
            writer_term: AtomicU64::new(0),
            extensions: parking_lot::Mutex::new(Vec::new()),
        }
        .removing_orphans(!shared)
    }

    fn removing_orphans(self, remove: bool) -> Result<Engine> {
        if remove {
            self.remove_orphans()?;
        }
        Ok(self)
    }

    /// Removes the logs no stream owns, and the delivery state of queues that are gone: left
    /// over from a deletion a crash interrupted (or, in a cluster, a creation a deposed
    /// leader did not finish). Only this engine's:
    /// `<namespace><stream key>/<shard>`, the stream key without '/'. Done at open on a
    /// store of one process; by a cluster's leader when it takes over.
    pub fn remove_orphans(&self) -> Result<()> {
        let namespace = &self.config.namespace;
        let store = &self.store;
        let live_logs: std::collections::HashSet<String> = self
            .streams
            .read()
            .values()
            .flat_map(|stream| {
                let state = stream.state.read();
                state
                    .meta
                    .shards
                    .iter()
                    .map(|shard| log_id(&state.meta, shard.index))
                    .collect::<Vec<_>>()
            })
            .collect();
        let owned = |id: &str| {
            id.strip_prefix(namespace.as_str())
                .is_some_and(|rest| rest.matches('/').count() == 1)
        };
        // A stream none of whose logs is live goes as a whole; otherwise log by log.
        let mut orphans: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let live_streams: std::collections::HashSet<&str> = live_logs
            .iter()
            .filter_map(|id| id.rsplit_once('/').map(|(stream, _)| stream))
            .collect();
        for id in store.log_ids()? {
            if owned(&id) && !live_logs.contains(&id) {
                let stream = id.rsplit_once('/').map_or("", |(stream, _)| stream);
                orphans.entry(stream.to_string()).or_default().push(id);
            }
        }
        self.remove_orphaned_queue_state()?;
        self.remove_orphaned_channel_state()?;
        for (stream, ids) in orphans {
            tracing::info!(logs = ?ids, "removing orphaned logs");
            if live_streams.contains(stream.as_str()) {
                for id in &ids {
                    store.remove_log(id)?;
                }
            } else {
                store.remove_stream(&stream, &ids)?;
            }
        }
        Ok(())
    }

    /// What each shard's limits admitted on this node since the last call, by stream key and
    /// shard: what a cluster node tells the others (`Engine::charge_usage`).
    pub fn take_usage(&self) -> Vec<(String, u32, limits::Usage)> {
        let streams: Vec<Arc<Stream>> = self.streams.read().values().cloned().collect();
        let mut taken = Vec::new();
        for stream in streams {
            let key = stream.state.read().meta.key.clone();
            for (index, limits) in stream.limits.lock().iter() {
                let usage = limits.take_usage();
                if !usage.is_empty() {
                    taken.push((key.clone(), *index, usage));
                }
            }
        }
        taken
    }

    /// Charges what another node admitted on shard `shard` of the stream whose key is
    /// `stream_key` to this node's buckets, so the shard's limits hold across the cluster.
    pub fn charge_usage(&self, stream_key: &str, shard: u32, usage: &limits::Usage, now_ms: i64) {
        let Some(stream) = self.stream_by_key(stream_key) else {
            return;
        };
        if let Some(limits) = stream.shard_limits(self.config.limits_scale, shard, now_ms) {
            limits.charge_usage(usage, now_ms);
        }
    }

    /// The stream whose key (`<namespace><name>.<creation>`) is `stream_key`, if this engine
    /// has it.
    fn stream_by_key(&self, stream_key: &str) -> Option<Arc<Stream>> {
        let name = stream_key
            .strip_prefix(self.config.namespace.as_str())
            .and_then(|rest| rest.rsplit_once('.'))
            .map(|(name, _)| name)?;
        let stream = self.streams.read().get(name).cloned()?;
        let same = stream.state.read().meta.key == stream_key;
        same.then_some(stream)
    }

    /// The state of type `T` another domain keeps with this engine (its account), made on
    /// first use: so it lives exactly as long as the engine and is never shared with
    /// another server's engine for the same account.
    pub fn extension<T: std::any::Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut extensions = self.extensions.lock();
        if let Some(found) = extensions
            .iter()
            .find_map(|e| e.clone().downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(T::default());
        extensions.push(made.clone());
        made
    }

    /// Whether this engine writes metadata (and so settles lifecycles and runs the tick).
    pub fn is_writer(&self) -> bool {
        self.writer.load(Ordering::Acquire)
    }

    /// Makes this engine the writer of its metadata (a cluster's leader) or a follower of it.
    /// A follower never settles a lifecycle step itself: it waits for the leader's.
    pub fn set_writer(&self, writer: bool) {
        let was = self.writer.swap(writer, Ordering::AcqRel);
        if writer && !was {
            self.writer_term.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Counts the times this engine became the writer: state kept in memory for the writer
    /// alone (a queue's delivery state) is loaded again when it changes.
    pub fn writer_term(&self) -> u64 {
        self.writer_term.load(Ordering::Acquire)
    }

    /// Follows the metadata another node wrote: streams created, changed or deleted there
    /// appear here as they are stored. Streams whose document is unchanged keep their state
    /// (limits, meters, metrics); a changed one keeps them too, with its shards and routes
    /// rebuilt. Only for a follower (a writer's memory is ahead of what it stores).
    pub fn refresh(&self) -> Result<()> {
        if self.is_writer() {
            return Ok(());
        }
        let namespace = &self.config.namespace;
        let mut stored = BTreeMap::new();
        for (key, value) in self
            .store
            .meta()
            .scan_prefix(&format!("{namespace}{STREAM_KEY_PREFIX}"))?
        {
            match serde_json::from_slice::<StreamMeta>(&value) {
                Ok(meta) => {
                    stored.insert(meta.name.clone(), (meta, value));
                }
                Err(error) => tracing::error!(%key, %error, "unreadable stream metadata; skipped"),
            }
        }
        let current: Vec<(String, Arc<Stream>)> = self
            .streams
            .read()
            .iter()
            .map(|(name, stream)| (name.clone(), stream.clone()))
            .collect();
        let mut fresh = Vec::new();
        for (name, stream) in &current {
            let Some((meta, bytes)) = stored.remove(name) else {
                self.streams.write().remove(name);
                continue;
            };
            let mut state = stream.state.write();
            if state.meta.key != meta.key {
                // Deleted and created again under the same name: a new stream.
                drop(state);
                fresh.push(meta);
                continue;
            }
            if serde_json::to_vec(&state.meta).is_ok_and(|held| held == bytes) {
                continue;
            }
            for shard in &meta.shards {
                if let std::collections::hash_map::Entry::Vacant(entry) =
                    state.logs.entry(shard.index)
                {
                    entry.insert(self.store.log(&log_id(&meta, shard.index))?);
                }
            }
            state
                .logs
                .retain(|index, _| meta.shards.iter().any(|s| s.index == *index));
            state.meta = meta;
            state.rebuild_routes();
        }
        fresh.extend(stored.into_values().map(|(meta, _)| meta));
        for meta in fresh {
            let mut logs = HashMap::new();
            for shard in &meta.shards {
                logs.insert(shard.index, self.store.log(&log_id(&meta, shard.index))?);
            }
            let mut state = StreamState {
                meta,
                logs,
                routes: Vec::new(),
                route_index: hash::StartIndex::default(),
            };
            state.rebuild_routes();
            let name = state.meta.name.clone();
            self.streams
                .write()
                .insert(name, Arc::new(self.new_stream(state)));
        }
        if let Some(bytes) = self
            .store
            .meta()
            .get(&format!("{namespace}{}", account::ACCOUNT_KEY))?
            && let Ok(commitment) = serde_json::from_slice(&bytes)
        {
            *self.commitment.lock() = commitment;
        }
        Ok(())
    }

    /// Requests and PutRecords entries refused by throughput limits so far.
    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Record bytes (data and partition keys) read for SubscribeToShard events so far.
    pub fn subscription_bytes_read(&self) -> u64 {
        self.subscription_bytes.load(Ordering::Relaxed)
    }

    fn count_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Admits one call of a control-plane `operation` at its published rate, per account or per
    /// stream, or answers LimitExceededException ("Rate exceeded for stream S under account
    /// A." when the call names a stream, "Rate exceeded for account A." otherwise, as AWS). Data-plane operations pass here; shard
    /// buckets limit them.
    pub fn admit_call(
        &self,
        operation: &str,
        target: Option<&StreamTarget<'_>>,
        now_ms: i64,
    ) -> Result<()> {
        let (Some(scale), Some((rate, scope))) =
            (self.config.limits_scale, limits::control_rate(operation))
        else {
            return Ok(());
        };
        let stream = target.and_then(|t| self.resolve(t).ok());
        let scope = match (scope, &stream) {
            (limits::Scope::Stream, Some(name)) => name.as_str(),
            _ => "",
        };
        if self.calls.admit(operation, scope, rate * scale, now_ms) {
            return Ok(());
        }
        Err(self.call_rate_exceeded(stream.as_deref()))
    }

    /// LimitExceededException for a call over its rate, worded as AWS does ("for stream S
    /// under account A." when the call names a stream); counted as throttled.
    pub(crate) fn call_rate_exceeded(&self, stream: Option<&str>) -> ApiError {
        self.count_throttled();
        let account = &self.config.account_id;
        ApiError::new(
            ErrorKind::LimitExceeded,
            match stream {
                Some(name) => format!("Rate exceeded for stream {name} under account {account}."),
                None => format!("Rate exceeded for account {account}."),
            },
        )
    }

    /// The error a throttled shard answers with.
    fn rate_exceeded(&self, stream: &str, index: u32) -> ApiError {
        self.count_throttled();
        ApiError::new(
            ErrorKind::ProvisionedThroughputExceeded,
            format!(
                "Rate exceeded for shard {} in stream {stream} under account {}.",
                shard_id(index),
                self.config.account_id
            ),
        )
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The storage the engine writes to.
    pub fn store(&self) -> &Arc<dyn RecordStore> {
        &self.store
    }

    /// The ARN of the KMS key `key_id` names for this account (key id, key ARN, alias or alias
    /// ARN), if the key service knows it and it is usable: the `kmsKey` resource of
    /// Start/StopStreamEncryption.
    pub fn kms_key_arn(&self, key_id: &str) -> Option<String> {
        let data_keys = self.data_keys.as_ref()?;
        data_keys
            .kms()
            .resolve(&self.config.account_id, key_id)
            .ok()
    }

    /// The ARN of a stream of this account.
    pub fn stream_arn(&self, name: &str) -> String {
        StreamArn {
            region: &self.config.region,
            account: &self.config.account_id,
            name,
        }
        .to_string()
    }

    /// ResourceNotFoundException for a shard a read names (`shard` as the caller wrote it).
    fn shard_not_found(&self, stream: &str, shard: &str) -> ApiError {
        ApiError::not_found(format!(
            "Shard {shard} in stream {stream} under account {} does not exist",
            self.config.account_id
        ))
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!(
            "Stream {name} under account {} not found.",
            self.config.account_id
        ))
    }

    fn persist(&self, meta: &StreamMeta) -> Result<()> {
        let value = serde_json::to_vec(meta)
            .map_err(|e| ApiError::internal(format!("metadata encoding: {e}")))?;
        self.store.meta().commit(&[MetaOp::Put {
            key: format!("{}{STREAM_KEY_PREFIX}{}", self.config.namespace, meta.name),
            value,
        }])?;
        Ok(())
    }

    /// Resolves `StreamName` / `StreamARN` arguments to a stream name.
    pub fn resolve(&self, target: &StreamTarget<'_>) -> Result<String> {
        match (target.name, target.arn) {
            (name, Some(arn)) => {
                let parsed = parse_stream_arn(arn)
                    .ok_or_else(|| ApiError::invalid(format!("Invalid StreamARN {arn}.")))?;
                if parsed.account != self.config.account_id || parsed.region != self.config.region {
                    return Err(ApiError::not_found(format!(
                        "Stream {} under account {} not found.",
                        parsed.name, parsed.account
                    )));
                }
                if let Some(name) = name
                    && name != parsed.name
                {
                    return Err(ApiError::invalid(format!(
                        "StreamARN {arn} and StreamName {name} do not identify the same stream."
                    )));
                }
                Ok(parsed.name.to_string())
            }
            (Some(name), None) => Ok(name.to_string()),
            (None, None) => Err(ApiError::invalid(
                "Either StreamName or StreamARN should be provided.",
            )),
        }
    }

    /// Looks a stream up by name, first applying any lifecycle step that is due.
    fn stream(&self, name: &str, now_ms: i64) -> Result<Arc<Stream>> {
        let stream = self
            .streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(name))?;
        let due = {
            let state = stream.state.read();
            state
                .meta
                .status_until_ms
                .is_some_and(|until| until <= now_ms)
        };
        if due {
            self.settle(name, &stream, now_ms)?;
            return self
                .streams
                .read()
                .get(name)
                .cloned()
                .ok_or_else(|| self.not_found(name));
        }
        Ok(stream)
    }

    fn stream_by_target(
        &self,
        target: &StreamTarget<'_>,
        now_ms: i64,
    ) -> Result<(String, Arc<Stream>)> {
        let name = self.resolve(target)?;
        let stream = self.stream(&name, now_ms)?;
        Ok((name, stream))
    }

    /// Finishes a CREATING, UPDATING or DELETING state whose delay has passed (the writer
    /// only: a follower sees the step once the writer has stored it).
    fn settle(&self, name: &str, stream: &Arc<Stream>, now_ms: i64) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let mut state = stream.state.write();
        let Some(until) = state.meta.status_until_ms else {
            return Ok(());
        };
        if until > now_ms {
            return Ok(());
        }
        match state.meta.status {
            StreamStatus::Creating | StreamStatus::Active => {
                state.meta.status = StreamStatus::Active;
                state.meta.status_until_ms = None;
                self.persist(&state.meta)
            }
            StreamStatus::Updating => {
                let pending = std::mem::take(&mut state.meta.pending);
                for change in pending {
                    reshard::apply(self, &mut state, &change, until)?;
                }
                state.meta.status = StreamStatus::Active;
                state.meta.status_until_ms = None;
                state.rebuild_routes();
                self.persist(&state.meta)
            }
            StreamStatus::Deleting => {
                let meta = state.meta.clone();
                drop(state);
                self.remove_stream(name, &meta)
            }
        }
    }

    fn remove_stream(&self, name: &str, meta: &StreamMeta) -> Result<()> {
        // Metadata first: a crash after this leaves orphaned logs, which `open` removes.
        self.store.meta().commit(&[MetaOp::Delete {
            key: format!("{}{STREAM_KEY_PREFIX}{name}", self.config.namespace),
        }])?;
        {
            let mut streams = self.streams.write();
            if streams
                .get(name)
                .is_some_and(|s| s.state.read().meta.key == meta.key)
            {
                streams.remove(name);
            }
        }
        let ids: Vec<String> = meta
            .shards
            .iter()
            .map(|shard| log_id(meta, shard.index))
            .collect();
        self.store.remove_stream(&meta.key, &ids)?;
        // With the logs gone, nothing is left that the stream's data keys decrypt. A crash
        // before this leaves the keys behind (a few bytes each), never a log without its key.
        if let Some(keys) = &self.data_keys {
            keys.forget_stream(&meta.key)?;
        }
        Ok(())
    }

    /// Applies due lifecycle steps and retention; the server calls it periodically. Only a
    /// writer does anything.
    pub fn tick(&self, now_ms: i64) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let streams: Vec<(String, Arc<Stream>)> = self
            .streams
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // First, so that a failure in one stream's steps below does not hold it back.
        self.sweep_state(now_ms)?;
        for (name, stream) in streams {
            let due = stream
                .state
                .read()
                .meta
                .status_until_ms
                .is_some_and(|u| u <= now_ms);
            if due {
                self.settle(&name, &stream, now_ms)?;
            }
            self.settle_consumers(&name, &stream, now_ms)?;
            self.settle_queues(&stream, now_ms)?;
            self.settle_channels(&stream, now_ms)?;
            // Auto-scaling looks once a second.
            let second = now_ms.div_euclid(1000);
            if stream.scaled_at_s.swap(second, Ordering::Relaxed) != second {
                self.autoscale(&stream, now_ms)?;
            }
            self.enforce_retention(&stream, now_ms)?;
        }
        Ok(())
    }

    /// Drops data older than the retention period, and closed shards whose data is all gone.
    fn enforce_retention(&self, stream: &Arc<Stream>, now_ms: i64) -> Result<()> {
        let (retention_ms, logs, expired) = {
            let state = stream.state.read();
            if state.meta.status == StreamStatus::Deleting {
                return Ok(());
            }
            let retention_ms = i64::from(state.meta.retention_hours) * 3_600_000;
            let expired: Vec<u32> = state
                .meta
                .shards
                .iter()
                .filter(|s| s.closed_ms.is_some_and(|c| c + retention_ms < now_ms))
                .map(|s| s.index)
                .collect();
            (
                retention_ms,
                state.logs.values().cloned().collect::<Vec<_>>(),
                expired,
            )
        };
        for log in logs {
            log.trim_older_than(now_ms - retention_ms)?;
        }
        if !expired.is_empty() {
            let mut state = stream.state.write();
            for index in &expired {
                let id = log_id(&state.meta, *index);
                state.meta.shards.retain(|s| s.index != *index);
                state.logs.remove(index);
                self.store.remove_log(&id)?;
            }
            self.persist(&state.meta)?;
        }
        Ok(())
    }

    /// Open shards across every stream of the account.
    fn open_shard_count(&self) -> u32 {
        self.streams
            .read()
            .values()
            .map(|s| {
                s.state
                    .read()
                    .meta
                    .shards
                    .iter()
                    .filter(|s| s.is_open())
                    .count() as u32
            })
            .sum()
    }

    fn shard_limit_error(&self, open: u32, additional: u32) -> ApiError {
        ApiError::new(
            ErrorKind::LimitExceeded,
            format!(
                "This request would exceed the shard limit for the account {} in {}. Current \
                 shard count for the account: {open}. Limit: {}. Number of additional shards \
                 that would have resulted from this request: {additional}. Refer to the AWS \
                 Service Limits page (http://docs.aws.amazon.com/general/latest/gr/\
                 aws_service_limits.html) for current limits and how to request higher limits.",
                self.config.account_id, self.config.region, self.config.shard_limit
            ),
        )
    }

    fn next_nonce(&self) -> u64 {
        self.nonce.fetch_add(1, Ordering::Relaxed)
    }
}

/// The `StreamName` / `StreamARN` pair most operations take.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamTarget<'a> {
    pub name: Option<&'a str>,
    pub arn: Option<&'a str>,
}

impl<'a> StreamTarget<'a> {
    /// A target by name.
    pub fn name(name: &'a str) -> Self {
        StreamTarget {
            name: Some(name),
            arn: None,
        }
    }
}

/// The parts of a stream ARN.
pub struct StreamArn<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub name: &'a str,
}

impl std::fmt::Display for StreamArn<'_> {
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "arn:aws:kinesis:{}:{}:stream/{}",
            self.region, self.account, self.name
        )
    }
}

/// Parses `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` (any `aws*` partition).
pub fn parse_stream_arn(arn: &str) -> Option<StreamArn<'_>> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    if prefix != "arn" || !partition.starts_with("aws") || service != "kinesis" {
        return None;
    }
    let name = resource.strip_prefix("stream/")?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(StreamArn {
        region,
        account,
        name,
    })
}
