//! Cluster metadata: the keys and values the embedded store keeps in redb (`MetaStore`), kept
//! in a replicated JetStream stream and mirrored in every node's memory.
//!
//! Each key is one subject (`<prefix>.m.<key in base64url>`) of the stream `<prefix>_META`,
//! which keeps one message per subject: the key's value, or a tombstone once deleted. A
//! commit of several operations is one atomic batch, so every node sees all of it or none;
//! a compare-and-set adds `Nats-Expected-Last-Subject-Sequence` (the key's revision, 0 for
//! "absent") to that key's message, and fails whole with [`MetaError::Conflict`] if another
//! commit got there first. Every node follows the stream with an ordered consumer from its
//! start and applies each message to its map: reads are local, and a commit returns once this
//! node's map holds it (read-your-writes on the node that wrote).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::api::WRONG_LAST_SEQUENCE;
use crate::{BatchError, BatchMessage, publish_atomic};

/// The header that marks a deleted key's tombstone.
const OP_HEADER: &str = "Rivulet-Meta-Op";
const OP_DELETE: &str = "delete";

/// One operation of a commit: the embedded store's own type, so the engine writes either
/// store with the same operations.
pub use rivulet_log::MetaOp;

fn op_key(op: &MetaOp) -> &str {
    match op {
        MetaOp::Put { key, .. } | MetaOp::Delete { key } => key,
    }
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A key's revision was not the expected one: another commit changed it first. Nothing of
    /// this commit was applied.
    #[error("metadata changed concurrently (key revision is now {current:?})")]
    Conflict {
        /// The key's current revision, when the server said it.
        current: Option<u64>,
    },
    /// An empty key (every key is one subject token, which cannot be empty).
    #[error("metadata keys cannot be empty")]
    EmptyKey,
    /// A key appeared twice in one commit.
    #[error("key {0:?} appears twice in one commit")]
    DuplicateKey(String),
    /// The stream refused or did not answer.
    #[error(transparent)]
    Batch(BatchError),
    /// NATS failed otherwise (creating the stream or the consumer, a lost connection).
    #[error("metadata: {0}")]
    Nats(String),
}

/// A key's value and its revision (the stream sequence that last wrote it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// Its revision: pass it to [`ClusterMeta::commit_if`] to change the key only if nobody
    /// else did since.
    pub revision: u64,
}

#[derive(Default)]
struct State {
    keys: BTreeMap<String, Versioned>,
    /// Revisions of deleted keys, so a compare-and-set on an absent key uses the right one.
    deleted: BTreeMap<String, u64>,
}

/// The cluster's metadata, as this node sees it.
pub struct ClusterMeta {
    client: async_nats::Client,
    subject_prefix: String,
    state: Arc<RwLock<State>>,
    /// The last stream sequence applied to `state`.
    applied: watch::Receiver<u64>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterMeta {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl ClusterMeta {
    /// Opens (creating if needed, with `replicas` copies) the metadata of the deployment named
    /// `prefix`, and returns once this node's copy has caught up with what the stream held.
    pub async fn open(
        client: async_nats::Client,
        prefix: &str,
        replicas: usize,
    ) -> Result<ClusterMeta, MetaError> {
        let js = jetstream::new(client.clone());
        let subject_prefix = format!("{prefix}.m");
        let config = stream::Config {
            name: format!("{prefix}_META"),
            subjects: vec![format!("{subject_prefix}.>")],
            num_replicas: replicas,
            max_messages_per_subject: 1,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        };
        // A server just started (or a stream whose leader is being elected) answers nothing
        // for a few seconds: opening waits for it, within `OPEN_TIMEOUT`.
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        let last = loop {
            let opened = async {
                let mut stream = js.get_or_create_stream(config.clone()).await?;
                let info = stream.info().await?;
                Ok::<u64, async_nats::Error>(info.state.last_sequence)
            };
            match opened.await {
                Ok(last) => break last,
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(MetaError::Nats(format!("opening the metadata: {error}")));
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        };
        let state = Arc::new(RwLock::new(State::default()));
        let (applied_tx, applied) = watch::channel(0u64);
        let follower = tokio::spawn(follow(
            js,
            config.name.clone(),
            subject_prefix.clone(),
            client.clone(),
            Arc::clone(&state),
            applied_tx,
        ));
        let meta = ClusterMeta {
            client,
            subject_prefix,
            state,
            applied,
            follower,
        };
        meta.wait_applied(last).await?;
        Ok(meta)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.state.read().keys.get(key).map(|v| v.value.clone())
    }

    /// The value of `key` with its revision; for an absent key, the revision to pass to
    /// [`ClusterMeta::commit_if`] to create it only if still absent.
    pub fn get_versioned(&self, key: &str) -> Result<Versioned, u64> {
        let state = self.state.read();
        match state.keys.get(key) {
            Some(versioned) => Ok(versioned.clone()),
            None => Err(state.deleted.get(key).copied().unwrap_or(0)),
        }
    }

    /// Every key starting with `prefix`, in key order, with its value.
    pub fn scan_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.state
            .read()
            .keys
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, v)| (key.clone(), v.value.clone()))
            .collect()
    }

    /// The last stream sequence this node has applied: it changes whenever any node commits.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Applies all `ops` atomically (all or none, on every node); returns the commit's last
    /// revision once this node has applied it.
    pub async fn commit(&self, ops: &[MetaOp]) -> Result<u64, MetaError> {
        self.commit_if(ops, &[]).await
    }

    /// [`ClusterMeta::commit`], only if each `(key, revision)` of `expected` still holds (the
    /// key must be one of the keys `ops` writes; revision as from `get_versioned`).
    pub async fn commit_if(
        &self,
        ops: &[MetaOp],
        expected: &[(&str, u64)],
    ) -> Result<u64, MetaError> {
        let mut seen = std::collections::HashSet::new();
        let mut messages = Vec::with_capacity(ops.len());
        for op in ops {
            if op_key(op).is_empty() {
                return Err(MetaError::EmptyKey);
            }
            if !seen.insert(op_key(op)) {
                return Err(MetaError::DuplicateKey(op_key(op).to_string()));
            }
            let mut headers = HeaderMap::new();
            if let Some((_, revision)) = expected.iter().find(|(key, _)| *key == op_key(op)) {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    revision.to_string().as_str(),
                );
            }
            let payload = match op {
                MetaOp::Put { value, .. } => Bytes::from(value.clone()),
                MetaOp::Delete { .. } => {
                    headers.insert(OP_HEADER, OP_DELETE);
                    Bytes::new()
                }
            };
            messages.push(BatchMessage {
                subject: format!("{}.{}", self.subject_prefix, encode_key(op_key(op))),
                headers,
                payload,
            });
        }
        if messages.is_empty() {
            return Ok(*self.applied.borrow());
        }
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let ack = match publish_atomic(&self.client, &batch_id, messages).await {
            Ok(ack) => ack,
            Err(BatchError::Api(error)) if error.err_code == WRONG_LAST_SEQUENCE => {
                return Err(MetaError::Conflict {
                    current: error.current_sequence(),
                });
            }
            Err(error) => return Err(MetaError::Batch(error)),
        };
        self.wait_applied(ack.last_sequence).await?;
        Ok(ack.last_sequence)
    }

    async fn wait_applied(&self, sequence: u64) -> Result<(), MetaError> {
        let mut applied = self.applied.clone();
        let wait = applied.wait_for(|applied| *applied >= sequence);
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(MetaError::Nats("the metadata follower stopped".into())),
            Err(_) => Err(MetaError::Nats(format!(
                "metadata revision {sequence} not applied within 30 s"
            ))),
        }
    }
}

/// How long opening waits for JetStream to answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause before asking JetStream again after it did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Mirrors the metadata stream into `state` for as long as the node runs: an ordered consumer
/// from the first sequence not applied yet, made again whenever it ends (its server died, or
/// it could not be recreated while the stream's leader was being elected).
async fn follow(
    js: jetstream::Context,
    stream_name: String,
    subject_prefix: String,
    client: async_nats::Client,
    state: Arc<RwLock<State>>,
    applied: watch::Sender<u64>,
) {
    loop {
        let next = *applied.borrow() + 1;
        let consumer = async {
            let stream = js.get_stream(&stream_name).await?;
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: format!("{subject_prefix}.>"),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ..Default::default()
                })
                .await?;
            Ok::<_, async_nats::Error>(consumer.messages().await?)
        };
        let mut messages = match consumer.await {
            Ok(messages) => messages,
            Err(_) => {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        // The ordered consumer recreates itself after a gap; its errors in between are
        // skipped, and a message already applied (after a recreation) is not applied again.
        // A commit's messages are applied together, once its last one (which carries
        // `Nats-Batch-Commit`) has come, so no reader on this node sees half of a commit.
        //
        // The consumer is also made again when it stalls: after a NATS server dies, an
        // ordered consumer can stay silent although the stream moved on (its recreation
        // raced the election of a new stream leader). So after `STALL_CHECK` without a
        // message the follower asks the stream's leader for its last sequence, and starts a
        // new consumer if that is past what it applied.
        let mut batch = Batch::default();
        loop {
            let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => {
                    let done = *applied.borrow();
                    if behind(&js, &stream_name, done).await {
                        break;
                    }
                    continue;
                }
            };
            let Ok(message) = message else { continue };
            let Ok(info) = message.info() else { continue };
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if sequence <= *applied.borrow() {
                continue;
            }
            let headers = message.message.headers.as_ref();
            let header = |name| {
                headers
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            let id = header("Nats-Batch-Id");
            // The commit message of a batch may be gone (a later commit wrote its key): a
            // message of another batch, or the end of the stream, closes it too.
            if batch.id.is_some() && batch.id != id {
                batch.apply(&state, &subject_prefix, &applied);
            }
            let committed = id.is_none() || header("Nats-Batch-Commit").is_some();
            batch.id = id;
            batch.messages.push((message.message, sequence));
            if committed || pending == 0 {
                batch.apply(&state, &subject_prefix, &applied);
            }
        }
        // A half-received commit is not applied: the next consumer starts at its first
        // message again.
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// How long a follower waits for a message before it checks that it is not behind.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Whether the metadata stream holds messages past `applied`, as its leader answers (within
/// a few seconds; no answer, as while a leader is being elected, counts as not behind).
async fn behind(js: &jetstream::Context, stream_name: &str, applied: u64) -> bool {
    let info = async {
        let stream = js.get_stream(stream_name).await?;
        Ok::<u64, async_nats::Error>(stream.cached_info().state.last_sequence)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), info).await,
        Ok(Ok(last)) if last > applied
    )
}

/// The messages of one commit received so far.
#[derive(Default)]
struct Batch {
    id: Option<String>,
    messages: Vec<(async_nats::Message, u64)>,
}

impl Batch {
    /// Applies the messages under one lock, then publishes the last one's sequence.
    fn apply(&mut self, state: &RwLock<State>, prefix: &str, applied: &watch::Sender<u64>) {
        let Some(&(_, last)) = self.messages.last() else {
            return;
        };
        {
            let mut state = state.write();
            for (message, sequence) in &self.messages {
                apply(&mut state, prefix, message, *sequence);
            }
        }
        applied.send_replace(last);
        self.messages.clear();
        self.id = None;
    }
}

/// Applies one message of the stream to `state`.
fn apply(state: &mut State, prefix: &str, message: &async_nats::Message, sequence: u64) {
    let Some(key) = message
        .subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(decode_key)
    else {
        return;
    };
    let deleted = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(OP_HEADER))
        .is_some_and(|op| op.as_str() == OP_DELETE);
    if deleted {
        state.keys.remove(&key);
        state.deleted.insert(key, sequence);
    } else {
        state.deleted.remove(&key);
        let value = message.payload.to_vec();
        state.keys.insert(
            key,
            Versioned {
                value,
                revision: sequence,
            },
        );
    }
}

/// A key as one subject token: base64url without padding (no `.`, `*`, `>` or spaces).
fn encode_key(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_key(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}
