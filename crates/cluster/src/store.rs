//! The engine's storage seam (`rivulet_engine::storage`) on JetStream: `rivulet serve
//! --cluster`.
//!
//! - Records: [`JetStreamRecords`]. The engine's log id `<stream key>/shardId-N` names the
//!   JetStream stream of `<stream key>` (as one base64url token) and its subject `N`. A put is
//!   one atomic batch for the whole request, run in a task of its own, so that it finishes
//!   even if its request goes away. Closing a shard writes its one epoch message, whose
//!   position is the shard's end. A put from a node whose metadata was behind may land on the
//!   shard after that: once acknowledged, the writer asks the stream's leader for closes it
//!   has not seen (one request per put, usually answering none), and the entries of a shard
//!   that closed before its records landed fail (AWS's per-record InternalFailure), so the
//!   client's retry reaches the children and no reader ever misses an acknowledged record.
//! - Metadata: [`ClusterMeta`], read from this node's mirror, committed only by the leader,
//!   through its lease ([`Leadership::commit`]): a node that lost the lease cannot write.
//!   Every node campaigns for the lease; the others follow the metadata and forward what
//!   writes it to the leader (the server's `cluster` module).
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
    SharedSlots, StoreFuture, StoredRecord,
};
use rivulet_engine::{ApiError, ErrorKind};
use rivulet_log::{DataKey, Keyring, MetaOp, NewRecord};
use tokio::sync::watch;

use crate::dense::{Dense, DenseStream};
use crate::lease::{Leadership, LeaseConfig};
use crate::meta::{ClusterMeta, MetaError};
use crate::records::{JetStreamRecords, RecordError, sealed_key_id};

/// The metadata key of the leader's lease.
/// How long a starting node waits for a NATS server to let it in (they may be starting too).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const LEADER_LEASE: &str = "__rivulet/leader";
/// How often a shard's retention trim asks JetStream at most.
const TRIM_EVERY_MS: i64 = 60_000;
/// How many times (100 ms each at most) a read waits for a data key another node made.
const KEY_WAITS: u32 = 20;
/// The pause before a read's `tries`-th retry while a lagging replica does not show this
/// node's own acknowledged writes yet, in ms; `None` once it has waited about 1.5 s. A replica
/// lags by a write's replication, well under a millisecond when nothing fails: the first
/// retries come at once (another replica may answer) and soon after, so that a subscription
/// woken by a put is not held back by a replica one step behind.
fn read_your_writes_pause(tries: usize) -> Option<u64> {
    const FIRST: [u64; 8] = [0, 0, 1, 1, 2, 5, 10, 20];
    match tries {
        0..8 => Some(FIRST[tries]),
        8..36 => Some(50),
        _ => None,
    }
}

/// How to reach and lay out a deployment.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// NATS server URLs (`nats://host:port`).
    pub urls: Vec<String>,
    /// Copies of every record and metadata key (1, 3 or 5; 3 is Kinesis's three zones).
    pub replicas: usize,
    /// This node's name, in the leader's lease and its control subject.
    pub node_name: String,
    /// The subject token that prefixes every stream and subject of the deployment.
    pub prefix: String,
    /// NATS user and password, if the servers require them.
    pub user: Option<(String, String)>,
    /// A NATS token, if the servers require one.
    pub token: Option<String>,
    /// A file holding this node's NKey seed (`SU…`), for servers that list its public key.
    pub nkey_seed: Option<std::path::PathBuf>,
    /// A `.creds` file (a user JWT and its NKey seed), for servers in operator (JWT) mode.
    pub credentials: Option<std::path::PathBuf>,
    /// TLS to the servers: the CA their certificates are checked against, and this node's
    /// client certificate and key for servers that verify clients (PEM files). Either one
    /// requires TLS; so does a `tls://` URL.
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// How long one JetStream request waits for its answer.
    pub timeout: Duration,
    /// How long a starting node waits to become the leader before it starts as a follower
    /// (a deployment without a leader makes it the leader at once).
    pub leader_wait: Duration,
    /// How long a follower holds back before taking in the metadata other nodes committed:
    /// zero, except in tests that make a slow node's lag visible.
    pub follow_lag: Duration,
}

/// The storage of `rivulet serve --cluster`.
pub struct ClusterStore {
    /// The runtime serving requests: puts run there.
    runtime: tokio::runtime::Handle,
    nats: NatsRuntime,
    client: async_nats::Client,
    node_name: String,
    prefix: String,
    records: JetStreamRecords,
    meta: ClusterMetaBackend,
    /// Kinesis streams whose JetStream stream exists (by token).
    created: Mutex<HashSet<String>>,
    logs: Mutex<HashMap<String, Arc<JetStreamShard>>>,
    /// Each stream's dense read window (`dense.rs`), by stream token.
    dense: Mutex<HashMap<String, Arc<DenseStream>>>,
    /// Bytes all of them hold.
    dense_held: Arc<std::sync::atomic::AtomicUsize>,
    /// The data keys of encrypted streams (the engine's), shared with every shard's log.
    keyring: SharedKeyring,
    slots: Arc<ClusterSlots>,
    /// Per stream (by token): the closes this node has seen, for telling late puts.
    closes: Arc<Mutex<HashMap<String, Closes>>>,
    /// The metadata revision each account's engine on this node has taken in
    /// (`roles::follow`).
    refreshed: Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
    follow_lag: Duration,
}

/// The data keys the engine gives the store, once it has a key service.
type SharedKeyring = Arc<Mutex<Option<Arc<dyn Keyring>>>>;

/// The shards of a stream this node knows closed, and how far it has looked for closes.
#[derive(Default)]
struct Closes {
    /// Every close at a position below this is in `closed`.
    scanned: u64,
    /// Shard → the position it closed at.
    closed: HashMap<u32, u64>,
}

/// Metadata, written only by the leader, through its lease (a deposed leader's late write
/// fails whole).
pub struct ClusterMetaBackend {
    nats: NatsRuntime,
    meta: Arc<ClusterMeta>,
    /// Taken out (cloned) before any wait: never held across a network call.
    leader: Mutex<Option<Arc<Leadership>>>,
}

/// One shard's records.
pub struct JetStreamShard {
    nats: NatsRuntime,
    records: JetStreamRecords,
    token: String,
    index: u32,
    /// One past the last position this node knows stored (its own acknowledged puts, and
    /// what its reads found): reads wait for a lagging replica to reach it.
    end: Arc<watch::Sender<u64>>,
    /// When the retention trim last asked JetStream (ms since the epoch).
    trimmed_ms: AtomicI64,
    keyring: SharedKeyring,
    /// This node's copy of the metadata moving (a data key another node made shows there).
    meta_changes: watch::Receiver<u64>,
    /// The stream's dense read window, shared by its shards.
    dense: Arc<DenseStream>,
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

/// The runtime of this node's NATS connection and of the tasks that follow NATS (the metadata
/// mirror, the lease, put notices), apart from the runtime that serves requests.
///
/// A synchronous seam call (a metadata commit, closing a shard, a data key stored) blocks its
/// thread, sometimes while the engine holds a stream's lock. Requests waiting for that lock
/// block the serving runtime's other threads, so the NATS answer the call waits for must not
/// need any of them: it is read, and its timers run, here.
#[derive(Clone)]
pub struct NatsRuntime {
    handle: tokio::runtime::Handle,
    _owner: Arc<OwnedRuntime>,
}

struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        // Dropped from async code too, where a runtime may not wait for its tasks.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl NatsRuntime {
    fn start() -> std::io::Result<NatsRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rivulet-nats")
            .enable_all()
            .build()?;
        Ok(NatsRuntime {
            handle: runtime.handle().clone(),
            _owner: Arc::new(OwnedRuntime(Some(runtime))),
        })
    }

    /// Runs `future` to its end from synchronous code on a tokio thread (or any other), its
    /// I/O and timers driven by this runtime.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(current)
                if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(|| self.handle.block_on(future))
            }
            // A current-thread runtime cannot block in place, and no runtime may be entered
            // inside another: run it on a thread of its own.
            Ok(_) => std::thread::scope(|scope| {
                scope
                    .spawn(|| self.handle.block_on(future))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }),
            Err(_) => self.handle.block_on(future),
        }
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(future);
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
    /// Connects, opens (or creates) the deployment's metadata, and campaigns for the
    /// leader's lease.
    pub async fn open(settings: &ClusterSettings) -> anyhow::Result<Arc<ClusterStore>> {
        let nats = NatsRuntime::start()?;
        let serving = tokio::runtime::Handle::current();
        let (settings, on) = (settings.clone(), nats.clone());
        // Connected, and its followers started, on the NATS runtime.
        nats.handle
            .spawn(async move { ClusterStore::open_on(&settings, serving, on).await })
            .await
            .map_err(|error| anyhow::anyhow!("opening the cluster's storage: {error}"))?
    }

    async fn open_on(
        settings: &ClusterSettings,
        runtime: tokio::runtime::Handle,
        nats: NatsRuntime,
    ) -> anyhow::Result<Arc<ClusterStore>> {
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
        if let Some(path) = &settings.nkey_seed {
            let seed = std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("--nats-nkey {}: {error}", path.display()))?;
            let seed = seed.trim().to_string();
            // Checked here, so a wrong file says so rather than failing every connection.
            nkeys::KeyPair::from_seed(&seed).map_err(|error| {
                anyhow::anyhow!("--nats-nkey {}: not an NKey seed: {error}", path.display())
            })?;
            options = options.nkey(seed);
        }
        if let Some(path) = &settings.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|error| anyhow::anyhow!("--nats-creds {}: {error}", path.display()))?;
        }
        if let Some(ca) = &settings.tls_ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &settings.tls_client {
            options = options
                .require_tls(true)
                .add_client_certificate(cert.clone(), key.clone());
        }
        let urls: Vec<async_nats::ServerAddr> = settings
            .urls
            .iter()
            .map(|url| url.parse())
            .collect::<Result<_, _>>()
            .map_err(|error| anyhow::anyhow!("--cluster: {error}"))?;
        // The first connection is retried (the servers may be starting): what went wrong is
        // kept for the error if none succeeds in time, and refused credentials end it at once
        // (they will not be accepted on the next try).
        // A server whose account resolver is still loading may refuse once: refused as many
        // times as there are servers (at least twice), the node gives up.
        let last_error: Arc<Mutex<Option<String>>> = Arc::default();
        let refused = Arc::new(tokio::sync::Notify::new());
        let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let enough = urls.len().max(2);
        let (seen, refuse) = (last_error.clone(), refused.clone());
        let options = options.event_callback(move |event| {
            let (seen, refuse, refusals) = (seen.clone(), refuse.clone(), refusals.clone());
            async move {
                let error = match event {
                    async_nats::Event::ClientError(error) => error.to_string(),
                    async_nats::Event::ServerError(error) => error.to_string(),
                    _ => return,
                };
                let refusal = error.to_lowercase().contains("authorization violation");
                *seen.lock() = Some(error);
                if refusal && refusals.fetch_add(1, Ordering::Relaxed) + 1 >= enough {
                    refuse.notify_one();
                }
            }
        });
        // `connect` returns at once and connects in the background: wait for it here.
        let client = options.connect(urls).await?;
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() >= deadline {
                match last_error.lock().take() {
                    Some(error) => {
                        anyhow::bail!(
                            "no NATS server let this node in within {CONNECT_TIMEOUT:?}: {error}"
                        )
                    }
                    None => anyhow::bail!("no NATS server answered within {CONNECT_TIMEOUT:?}"),
                }
            }
            tokio::select! {
                () = refused.notified() => anyhow::bail!(
                    "the NATS servers refused this node's credentials: {}",
                    last_error.lock().take().unwrap_or_default()
                ),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let meta = Arc::new(
            ClusterMeta::open(client.clone(), &settings.prefix, settings.replicas)
                .await
                .map_err(|error| anyhow::anyhow!("opening the cluster's metadata: {error}"))?,
        );
        let leader = Leadership::campaign(
            meta.clone(),
            LEADER_LEASE,
            &settings.node_name,
            LeaseConfig::default(),
        )
        .map_err(|error| anyhow::anyhow!("leader lease: {error}"))?;
        // A deployment with no leader yet (or one whose leader stopped cleanly) gets this
        // node at once; otherwise the leader's lease decides, and this node follows.
        let _ = tokio::time::timeout(settings.leader_wait, leader.acquired()).await;
        let notes = client
            .subscribe(format!("{}.n.>", settings.prefix))
            .await
            .map_err(|error| anyhow::anyhow!("subscribing to put notices: {error}"))?;
        let slots = Arc::new(ClusterSlots {
            nats: nats.clone(),
            meta: meta.clone(),
            holder: format!("{}/{}", settings.node_name, uuid::Uuid::new_v4().simple()),
            live: Mutex::new(HashMap::new()),
        });
        tokio::spawn(follow_slots(Arc::downgrade(&slots), meta.changes()));
        let store = Arc::new(ClusterStore {
            runtime,
            nats: nats.clone(),
            records: JetStreamRecords::new(client.clone(), &settings.prefix, settings.replicas)
                .with_timeout(settings.timeout),
            client,
            node_name: settings.node_name.clone(),
            prefix: settings.prefix.clone(),
            meta: ClusterMetaBackend {
                nats,
                meta,
                leader: Mutex::new(Some(Arc::new(leader))),
            },
            created: Mutex::new(HashSet::new()),
            logs: Mutex::new(HashMap::new()),
            dense: Mutex::new(HashMap::new()),
            dense_held: Arc::default(),
            keyring: Arc::new(Mutex::new(None)),
            slots,
            closes: Arc::new(Mutex::new(HashMap::new())),
            refreshed: Mutex::new(HashMap::new()),
            follow_lag: settings.follow_lag,
        });
        tokio::spawn(follow_notices(Arc::downgrade(&store), notes));
        tokio::spawn(sweep_dense_windows(Arc::downgrade(&store)));
        Ok(store)
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The deployment's subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this node holds the leader's lease now: it alone writes metadata and runs the
    /// background work.
    pub fn is_leader(&self) -> bool {
        self.meta
            .leader
            .lock()
            .as_ref()
            .is_some_and(|leader| leader.term().is_some())
    }

    /// The name of the node holding the leader's lease, as this node's metadata shows it.
    pub fn leader_node(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Holder {
            node: String,
        }
        let value = self.meta.meta.get(LEADER_LEASE)?;
        serde_json::from_slice::<Holder>(&value)
            .ok()
            .map(|holder| holder.node)
    }

    /// The subject on which node `node` takes the requests other nodes forward to it.
    pub fn control_subject(&self, node: &str) -> String {
        format!("{}.ctl.{}", self.prefix, token(node))
    }

    /// The last metadata revision committed anywhere, as the metadata stream's leader
    /// answers it.
    pub async fn latest_revision(&self) -> anyhow::Result<u64> {
        let js = async_nats::jetstream::new(self.client.clone());
        let info = tokio::time::timeout(Duration::from_secs(10), async {
            // One STREAM.INFO request, answered by the stream's leader.
            let stream = js.get_stream(format!("{}_META", self.prefix)).await?;
            Ok::<u64, async_nats::Error>(stream.cached_info().state.last_sequence)
        })
        .await
        .map_err(|_| anyhow::anyhow!("the metadata's leader did not answer"))?
        .map_err(|error| anyhow::anyhow!("metadata revision: {error}"))?;
        Ok(info)
    }

    /// How long a follower holds back before taking in metadata changes (tests only).
    pub fn follow_lag(&self) -> Duration {
        self.follow_lag
    }

    /// The watch of what `account`'s engine has taken in.
    fn refreshed_of(&self, account: &str) -> tokio::sync::watch::Sender<u64> {
        self.refreshed
            .lock()
            .entry(account.to_string())
            .or_insert_with(|| tokio::sync::watch::Sender::new(0))
            .clone()
    }

    /// Records that `account`'s engine on this node has taken in metadata revision
    /// `revision`: it answers from everything committed up to it.
    pub fn set_refreshed(&self, account: &str, revision: u64) {
        self.refreshed_of(account).send_if_modified(|held| {
            let newer = revision > *held;
            if newer {
                *held = revision;
            }
            newer
        });
    }

    /// Waits (up to `within`) until `account`'s engine on this node has taken in metadata
    /// revision `revision`.
    pub async fn wait_refreshed(&self, account: &str, revision: u64, within: Duration) -> bool {
        let mut refreshed = self.refreshed_of(account).subscribe();
        tokio::time::timeout(within, refreshed.wait_for(|held| *held >= revision))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// The last metadata revision this node has applied.
    pub fn applied(&self) -> u64 {
        *self.meta.meta.changes().borrow()
    }

    /// Waits (up to `within`) until this node has applied metadata revision `revision`.
    pub async fn wait_applied(&self, revision: u64, within: Duration) -> bool {
        let mut changes = self.meta.meta.changes();
        tokio::time::timeout(within, changes.wait_for(|applied| *applied >= revision))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    fn block<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.nats.block_on(future)
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
        let dense = self
            .dense
            .lock()
            .entry(token.clone())
            .or_insert_with(|| {
                Arc::new(DenseStream::new(
                    self.records.clone(),
                    &token,
                    self.dense_held.clone(),
                ))
            })
            .clone();
        let log = Arc::new(JetStreamShard {
            nats: self.nats.clone(),
            records: self.records.clone(),
            token,
            index,
            end: Arc::new(watch::channel(0).0),
            trimmed_ms: AtomicI64::new(i64::MIN),
            keyring: self.keyring.clone(),
            meta_changes: self.meta.meta.changes(),
            dense,
        });
        let mut logs = self.logs.lock();
        let log = logs.entry(id.to_string()).or_insert_with(|| {
            log.dense.count_shard(true);
            log
        });
        Ok(log.clone())
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
        let opened = self.logs.lock().remove(id).is_some();
        if let Some(dense) = self.dense.lock().get(&token) {
            if opened {
                dense.count_shard(false);
            }
            dense.clear();
        }
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
        if let Some(dense) = self.dense.lock().remove(&token) {
            dense.clear();
        }
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
        let mut seal: Option<Arc<DataKey>> = None;
        for write in writes {
            let log = write
                .log
                .as_any()
                .downcast_ref::<JetStreamShard>()
                .ok_or_else(|| ApiError::internal("a log of another store"))?;
            if let Some(encryption) = &write.seal {
                let id = encryption.key.id();
                if seal.as_ref().is_none_or(|key| key.id() != id) {
                    // The engine's keyring holds every key it seals with.
                    let key = self
                        .keyring
                        .lock()
                        .as_ref()
                        .and_then(|keyring| keyring.data_key(id))
                        .ok_or_else(|| internal(format!("data key {id} is not in the keyring")))?;
                    seal = Some(key);
                }
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
        let records = self.records.clone();
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let (client, notice) = (self.client.clone(), format!("{}.n.{token}", self.prefix));
        let closes = self.closes.clone();
        // A task of its own: the put completes (or fails) even if its request goes away.
        let task = self.runtime.spawn(async move {
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
                .put_sealed(&token, &request, timestamp_ms, &request_id, seal.as_deref())
                .await
                .map_err(record_error)?;
            // Every node's subscriptions to these shards learn of the new end at once (the
            // records are readable now; any that landed after their shard closed lie past
            // its end, where no read looks).
            let mut ended = Vec::with_capacity(positions.len() * NOTICE_ENTRY_BYTES);
            for ((end, positions), (index, _)) in ends.iter().zip(&positions).zip(&shards) {
                if let Some(last) = positions.last() {
                    advance(end, last + 1);
                    ended.extend_from_slice(&index.to_le_bytes());
                    ended.extend_from_slice(&(last + 1).to_le_bytes());
                }
            }
            if let Err(error) = client.publish(notice, ended.into()).await {
                tracing::debug!(%error, "put notice not sent; subscribers elsewhere poll on");
            }
            // A shard closed (by the leader) before these records landed would hide them:
            // look for closes at positions this node has not looked at yet, up to the put's.
            let last = positions.iter().flatten().max().copied().unwrap_or(0);
            let from = closes.lock().entry(token.clone()).or_default().scanned;
            if from <= last {
                let found = records
                    .closed_since(&token, from)
                    .await
                    .map_err(record_error)?;
                let mut known = closes.lock();
                let stream = known.entry(token.clone()).or_default();
                stream.closed.extend(found);
                stream.scanned = stream.scanned.max(last + 1);
            }
            let closed = closes
                .lock()
                .get(&token)
                .map(|stream| stream.closed.clone())
                .unwrap_or_default();
            let mut placed = Vec::with_capacity(positions.len());
            for (positions, (index, _)) in positions.into_iter().zip(&shards) {
                let late = closed
                    .get(index)
                    .is_some_and(|&at| positions.first().is_some_and(|&first| first > at));
                if late {
                    tracing::info!(
                        shard = index,
                        "a put landed after its shard closed; its entries fail"
                    );
                }
                placed.push(Placed {
                    offsets: Offsets::Each(positions),
                    timestamp_ms,
                    late,
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

    fn is_shared(&self) -> bool {
        true
    }

    fn shared_slots(&self) -> Option<Arc<dyn SharedSlots>> {
        Some(self.slots.clone())
    }

    /// Gives the leader's lease back (if held), so another node leads at once.
    fn shutdown(&self) {
        let leader = self.meta.leader.lock().take();
        if let Some(leader) = leader
            && let Err(error) = self.block(leader.release())
        {
            tracing::warn!(%error, "releasing the leader's lease");
        }
    }
}

/// Frees the dense read windows nobody reads from any more, every second, while the store
/// is open (a window is otherwise only looked at when read).
async fn sweep_dense_windows(store: std::sync::Weak<ClusterStore>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let Some(store) = store.upgrade() else { return };
        let windows: Vec<Arc<DenseStream>> = store.dense.lock().values().cloned().collect();
        drop(store);
        for window in windows {
            window.drop_if_idle();
        }
    }
}

/// A put notice's entry: a shard's index (u32) and its new end (u64), little-endian.
const NOTICE_ENTRY_BYTES: usize = 12;

/// Applies other nodes' put notices (`<prefix>.n.<stream token>`) to the shards this node has
/// open, so that a subscription here wakes for a record written anywhere.
async fn follow_notices(store: std::sync::Weak<ClusterStore>, mut notes: async_nats::Subscriber) {
    use futures_util::StreamExt;
    while let Some(note) = notes.next().await {
        let Some(store) = store.upgrade() else {
            return;
        };
        let Some(key) = note.subject.rsplit('.').next().and_then(stream_key) else {
            continue;
        };
        for entry in note.payload.chunks_exact(NOTICE_ENTRY_BYTES) {
            let (index, end) = entry.split_at(4);
            let (Ok(index), Ok(end)) = (<[u8; 4]>::try_from(index), <[u8; 8]>::try_from(end))
            else {
                continue;
            };
            let id = log_id(&key, u32::from_le_bytes(index));
            let log = store.logs.lock().get(&id).cloned();
            if let Some(log) = log {
                advance(&log.end, u64::from_le_bytes(end));
            }
        }
    }
}

/// SubscribeToShard's slots across nodes, as metadata keys (`__rivulet/subs/<consumer
/// ARN>#<shard>`) written by compare-and-set from any node: the holder (this node's run and
/// the subscription's generation) and when it started. Every node follows the metadata and
/// tells its own subscriptions when another one took their slot.
pub struct ClusterSlots {
    nats: NatsRuntime,
    meta: Arc<ClusterMeta>,
    /// This node's run: its name and an incarnation id.
    holder: String,
    /// This node's subscriptions holding a slot: generation and the signal to end them.
    live: Mutex<HashMap<String, LiveSlot>>,
}

/// A subscription of this node holding a slot: its generation, and what ends it.
type LiveSlot = (u64, Arc<watch::Sender<bool>>);

#[derive(serde::Serialize, serde::Deserialize)]
struct SlotValue {
    holder: String,
    started_ms: i64,
}

fn slot_key(key: &str) -> String {
    format!("__rivulet/subs/{key}")
}

impl ClusterSlots {
    fn holder_of(&self, generation: u64) -> String {
        format!("{}/{generation}", self.holder)
    }

    async fn take(
        &self,
        key: &str,
        generation: u64,
        now_ms: i64,
        takeover_ms: i64,
    ) -> Result<bool, ApiError> {
        let key = slot_key(key);
        let value = serde_json::to_vec(&SlotValue {
            holder: self.holder_of(generation),
            started_ms: now_ms,
        })
        .map_err(internal)?;
        for _ in 0..10 {
            let revision = match self.meta.get_versioned(&key) {
                Ok(held) => {
                    let live = serde_json::from_slice::<SlotValue>(&held.value)
                        .is_ok_and(|slot| now_ms - slot.started_ms < takeover_ms);
                    if live {
                        return Ok(false);
                    }
                    held.revision
                }
                Err(revision) => revision,
            };
            let put = MetaOp::Put {
                key: key.clone(),
                value: value.clone(),
            };
            match self.meta.commit_if(&[put], &[(&key, revision)]).await {
                Ok(_) => return Ok(true),
                // Another node took or changed it meanwhile: look again once this node's copy
                // has moved on.
                Err(MetaError::Conflict { .. }) => {
                    let mut changes = self.meta.changes();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
                }
                Err(error) => return Err(internal(error)),
            }
        }
        Err(internal(format!("{key}: contended")))
    }
}

impl SharedSlots for ClusterSlots {
    fn claim(
        &self,
        key: &str,
        generation: u64,
        now_ms: i64,
        takeover_ms: i64,
        superseded: Arc<watch::Sender<bool>>,
    ) -> Result<bool, ApiError> {
        // A takeover is refused for 5 s, so listing it after the commit misses none.
        let claimed = self
            .nats
            .block_on(self.take(key, generation, now_ms, takeover_ms))?;
        if claimed {
            self.live
                .lock()
                .insert(slot_key(key), (generation, superseded));
        }
        Ok(claimed)
    }

    fn release(&self, key: &str, generation: u64) {
        let key = slot_key(key);
        {
            let mut live = self.live.lock();
            if live.get(&key).is_some_and(|(held, _)| *held == generation) {
                live.remove(&key);
            }
        }
        let meta = self.meta.clone();
        let holder = self.holder_of(generation);
        self.nats.spawn(async move {
            let Ok(held) = meta.get_versioned(&key) else {
                return;
            };
            let ours = serde_json::from_slice::<SlotValue>(&held.value)
                .is_ok_and(|slot| slot.holder == holder);
            if ours {
                let delete = MetaOp::Delete { key: key.clone() };
                // A conflict means another subscription took it: nothing to give back.
                let _ = meta.commit_if(&[delete], &[(&key, held.revision)]).await;
            }
        });
    }
}

/// Ends this node's subscriptions whose slot another node's subscription took.
async fn follow_slots(slots: std::sync::Weak<ClusterSlots>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let Some(slots) = slots.upgrade() else {
            return;
        };
        let mut live = slots.live.lock();
        live.retain(|key, (generation, superseded)| {
            let holder = slots.holder_of(*generation);
            let still_ours = slots
                .meta
                .get(key)
                .and_then(|value| serde_json::from_slice::<SlotValue>(&value).ok())
                .is_some_and(|slot| slot.holder == holder);
            if !still_ours {
                superseded.send_replace(true);
            }
            still_ours
        });
    }
}

/// JetStream's "stream not found".
const STREAM_NOT_FOUND: u32 = 10059;

struct OwnedRecord {
    key: Vec<u8>,
    value: Vec<u8>,
}

impl JetStreamShard {
    fn known_end(&self) -> u64 {
        *self.end.borrow()
    }

    /// A page of the shard from `from`. A page that ends the shard may come from a replica
    /// that lags: behind what this node knows stored (its own acknowledged puts, other nodes'
    /// put notices), or, with `ask_leader`, behind the stream's leader. Then it asks again,
    /// briefly, so that a record acknowledged before the read began is read.
    fn read_page(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        ask_leader: bool,
    ) -> StoreFuture<ReadBatch> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let known_end = self.known_end();
        let end = self.end.clone();
        let keyring = self.keyring.clone();
        let mut meta_changes = self.meta_changes.clone();
        let dense = self.dense.clone();
        Box::pin(async move {
            // A GetRecords far behind the shard's end: from the stream's dense read.
            let asked = from;
            let mut from = from;
            if ask_leader {
                let held = keyring.lock().clone();
                let limits = (max_records, max_bytes);
                match dense.read(index, from, limits, known_end, held).await {
                    Dense::Page { records, next } => {
                        return Ok(ReadBatch {
                            next_offset: next.max(from),
                            records: records.into_iter().map(stored).collect(),
                        });
                    }
                    Dense::Alone { from: at } => from = at,
                }
            }
            let mut tries = 0usize;
            let mut key_waits = 0;
            // The leader's next record of the shard, asked once: the page must reach it.
            let mut leader_next: Option<Option<u64>> = None;
            let page = loop {
                let held = keyring.lock().clone();
                let page = match held {
                    Some(held) => {
                        records
                            .read_opened(&token, index, from, max_records, max_bytes, Some(&*held))
                            .await
                    }
                    // No key service here: a sealed record cannot be served.
                    None => records
                        .read(&token, index, from, max_records, max_bytes)
                        .await
                        .and_then(|page| match page.records.iter().find(|r| r.sealed) {
                            Some(sealed) => Err(RecordError::KeyUnavailable(
                                sealed_key_id(&sealed.value).unwrap_or(0),
                            )),
                            None => Ok(page),
                        }),
                };
                let page = match page {
                    // A key another node made a moment ago: this node's copy of the
                    // metadata shows it within milliseconds.
                    Err(RecordError::KeyUnavailable(_)) if key_waits < KEY_WAITS => {
                        key_waits += 1;
                        let _ = tokio::time::timeout(
                            Duration::from_millis(100),
                            meta_changes.changed(),
                        )
                        .await;
                        continue;
                    }
                    page => page.map_err(record_error)?,
                };
                let short = page.pending == 0 && page.records.len() < max_records;
                if short && let Some(pause) = read_your_writes_pause(tries) {
                    let target = match leader_next {
                        Some(target) => target,
                        None if ask_leader => {
                            let target = records
                                .leader_next(&token, index, page.next)
                                .await
                                .map_err(record_error)?;
                            leader_next = Some(target);
                            target
                        }
                        None => None,
                    };
                    let behind =
                        page.next < known_end || target.is_some_and(|next| page.next <= next);
                    if behind {
                        tries += 1;
                        match pause {
                            0 => tokio::task::yield_now().await,
                            pause => tokio::time::sleep(Duration::from_millis(pause)).await,
                        }
                        continue;
                    }
                }
                break page;
            };
            // What this replica holds of the shard reaches this far (not the position the
            // window vouched for, which lies past the shard's records).
            if page.pending == 0 {
                let reached = match page.records.last() {
                    Some(last) => last.position + 1,
                    None => asked,
                };
                advance(&end, reached.max(asked));
            }
            Ok(ReadBatch {
                next_offset: page.next.max(from),
                records: page.records.into_iter().map(stored).collect(),
            })
        })
    }
}

/// A record as the engine reads it.
fn stored(record: crate::records::Record) -> StoredRecord {
    StoredRecord {
        offset: record.position,
        timestamp_ms: record.arrival_ms,
        key: record.key,
        value: record.value,
        encrypted: record.sealed,
    }
}

/// Moves a shard's known end up to `end` (never down), waking its watchers if it moved.
fn advance(known: &watch::Sender<u64>, end: u64) {
    known.send_if_modified(|known| {
        let moved = *known < end;
        *known = (*known).max(end);
        moved
    });
}

impl ShardLog for JetStreamShard {
    /// A GetRecords read: a page that ends the shard is also checked with the stream's
    /// leader, so a record acknowledged through any node before the read is read.
    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> StoreFuture<ReadBatch> {
        self.read_page(from, max_records, max_bytes, true)
    }

    /// A subscription's read: it wakes on put notices, so it asks no further.
    fn read_tail(&self, from: u64, max_records: usize, max_bytes: usize) -> StoreFuture<ReadBatch> {
        self.read_page(from, max_records, max_bytes, false)
    }

    /// The oldest retained record (TRIM_HORIZON). In a shard with none yet, a position no
    /// later record can be below: what this node knows stored, never the shard's last record
    /// asked for afterwards (one may arrive in between; starting after it would skip it).
    fn start_offset(&self) -> StoreFuture<u64> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let known_end = self.known_end();
        Box::pin(async move {
            // Any replica holds a prefix of the stream: its first record is the first.
            // Positions only: a sealed record need not be opened.
            let first = records
                .read(&token, index, 1, 1, 1)
                .await
                .map_err(record_error)?;
            if let Some(record) = first.records.first() {
                return Ok(record.position);
            }
            // That replica may lag: the stream's leader has every acknowledged record.
            let first = records
                .leader_next(&token, index, 1)
                .await
                .map_err(record_error)?;
            Ok(first.unwrap_or(known_end.max(1)))
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
            advance(&end, found);
            Ok(found)
        })
    }

    /// What this node knows stored (its own puts, other nodes' notices, its reads): no
    /// network call on every read.
    fn known_end_offset(&self) -> StoreFuture<u64> {
        Box::pin(std::future::ready(Ok(self.known_end().max(1))))
    }

    /// Every put below a closed shard's end was acknowledged before its epoch message was
    /// written (later ones are refused), so all of it is durable.
    fn closed_end(&self, end: u64) -> StoreFuture<u64> {
        Box::pin(std::future::ready(Ok(end)))
    }

    fn offset_at_timestamp(&self, timestamp_ms: i64) -> StoreFuture<u64> {
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        let known_end = self.known_end();
        Box::pin(async move {
            let start = records
                .start_at_time(&token, index, timestamp_ms)
                .await
                .map_err(record_error)?;
            // No record yet: none stored later is below what this node knows stored.
            Ok(start.unwrap_or(known_end.max(1)))
        })
    }

    /// Writes the shard's epoch message; its position is the shard's end. A put that lands
    /// after it is told late by its writer (see the put), never acknowledged.
    fn close(&self) -> Result<u64, ApiError> {
        let end = self
            .nats
            .block_on(self.records.close(&self.token, self.index))
            .map_err(record_error)?;
        Ok(end)
    }

    /// At most once a minute per shard, in the background: purges what arrived before
    /// `cutoff_ms`.
    fn trim_older_than(&self, cutoff_ms: i64) -> Result<(), ApiError> {
        let last = self.trimmed_ms.load(Ordering::Relaxed);
        if last != i64::MIN && cutoff_ms - last < TRIM_EVERY_MS {
            return Ok(());
        }
        self.trimmed_ms.store(cutoff_ms, Ordering::Relaxed);
        self.dense.forget_older(self.index, cutoff_ms);
        let records = self.records.clone();
        let (token, index) = (self.token.clone(), self.index);
        self.nats.spawn(async move {
            let trimmed = records.trim_older_than(&token, index, cutoff_ms);
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

impl ClusterMetaBackend {
    async fn create_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, ApiError> {
        let revision = match self.meta.get_versioned(key) {
            Ok(held) => return Ok(held.value),
            Err(revision) => revision,
        };
        let put = MetaOp::Put {
            key: key.to_string(),
            value: value.to_vec(),
        };
        match self.meta.commit_if(&[put], &[(key, revision)]).await {
            Ok(_) => Ok(value.to_vec()),
            Err(MetaError::Conflict { .. }) => {
                // Another node stored it first: wait until this node's mirror has it.
                let mut changes = self.meta.changes();
                let wait = async {
                    loop {
                        if let Some(held) = self.meta.get(key) {
                            return held;
                        }
                        let _ = changes.changed().await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), wait)
                    .await
                    .map_err(|_| internal(format!("{key}: stored elsewhere, not seen here")))
            }
            Err(error) => Err(internal(error)),
        }
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
        let Some(leader) = self.leader.lock().clone() else {
            return Err(internal("the store is shut down"));
        };
        match self.nats.block_on(leader.commit(ops)) {
            Ok(_) => Ok(()),
            Err(MetaError::Conflict { .. }) => Err(internal(
                "this node does not hold the leader's lease; its metadata write was refused",
            )),
            Err(error) => Err(internal(error)),
        }
    }

    fn create_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, ApiError> {
        self.nats
            .block_on(ClusterMetaBackend::create_if_absent(self, key, value))
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.meta.changes())
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
