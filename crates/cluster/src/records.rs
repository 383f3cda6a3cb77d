//! Kinesis records on JetStream: the cluster's record store (the design's "Layout", "Writes"
//! and "Reads").
//!
//! A Kinesis stream is one JetStream stream, `<prefix>_D_<id>`, and its shard `n` the subject
//! `<prefix>.d.<id>.<n>`. A put is one atomic batch whatever shards it touches; each record's
//! stream sequence, strictly increasing per shard, is its position (what sequence numbers and
//! iterators carry). A record's message body is a frame of its own (version, arrival time,
//! key, value), so keys of any bytes pass and nothing depends on the servers' clocks.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use rivulet_log::{DataKey, Keyring, NewRecord};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, BATCH_DUPLICATE_MESSAGE_ID, Envelope};
use crate::{
    BatchError, BatchMessage, DirectGet, StoredMessage, direct_get_batch, publish_atomic_within,
};

const FRAME_VERSION: u8 = 1;
const FRAME_HEADER_BYTES: usize = 1 + 8 + 2;
/// A sealed record's frame: version, arrival time, then the data key's id, the nonce, and
/// the plain frame's key length, key and value sealed (AES-256-GCM, its tag last).
const SEALED_FRAME_VERSION: u8 = 2;
const SEALED_HEADER_BYTES: usize = 1 + 8 + 4 + NONCE_BYTES;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Nonces' counter: a data key seals in one process only (a fresh key per stream per run),
/// so one counter per process never gives a key the same nonce twice.
static NONCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How long a request to JetStream waits for an answer, unless set otherwise.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a put's request id keeps a retry from storing it again.
const DUPLICATE_WINDOW_MS: i64 = 120_000;
/// JetStream's "no message found".
const NO_MESSAGE_FOUND: u32 = 10037;
/// Attempts of a put whose batch got no answer (or was refused for contention).
const PUT_ATTEMPTS: usize = 3;

/// Why a record-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The stream's id is not one subject token of `[A-Za-z0-9_-]`.
    #[error("stream id {0:?} is not [A-Za-z0-9_-]+")]
    InvalidId(String),
    /// A put larger than one batch, or with a key over 65,535 bytes.
    #[error("{0}")]
    TooLarge(String),
    /// JetStream refused the operation.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No answer after every attempt: the put may or may not be stored (a retry with the same
    /// request id tells).
    #[error("record store: {0}")]
    Unavailable(String),
    /// A message of the stream is not a record frame (or a sealed one failed
    /// authentication).
    #[error("record store: stored message {0} is not a record")]
    Corrupt(u64),
    /// A sealed record's data key is not known here (or its KMS key cannot unwrap it).
    #[error("record store: data key {0} is not available")]
    KeyUnavailable(u32),
}

/// A record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its position: the stream sequence, strictly increasing per shard.
    pub position: u64,
    /// When the node that wrote it received it (ms since the epoch).
    pub arrival_ms: i64,
    /// Its key (the partition key and friends, opaque here).
    pub key: Bytes,
    /// Its value.
    pub value: Bytes,
    /// Stored sealed with a data key ([`JetStreamRecords::put_sealed`]); read back opened.
    pub sealed: bool,
}

/// One page of a shard.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Where the next read starts.
    pub next: u64,
    /// Records of the shard after this page (0: the page reached the shard's end).
    pub pending: u64,
}

/// A page of every shard of a stream ([`JetStreamRecords::read_every_shard`]).
#[derive(Clone, Debug, Default)]
pub struct EveryShard {
    /// Each record with its shard, in stream order.
    pub records: Vec<(u32, Record)>,
    /// Where the next read starts: every record of the stream below it is in this page or
    /// an earlier one.
    pub next: u64,
    /// Records of the stream after this page (0: the page reached the stream's end).
    pub pending: u64,
}

/// The record store of one deployment.
#[derive(Clone)]
pub struct JetStreamRecords {
    client: async_nats::Client,
    prefix: String,
    replicas: usize,
    timeout: Duration,
}

impl JetStreamRecords {
    /// The record store under `prefix` (a subject token), keeping `replicas` copies.
    pub fn new(client: async_nats::Client, prefix: &str, replicas: usize) -> Self {
        Self {
            client,
            prefix: prefix.to_string(),
            replicas,
            timeout: TIMEOUT,
        }
    }

    /// The same store, waiting at most `timeout` for each answer from JetStream (a put makes
    /// up to three attempts).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn stream_name(&self, id: &str) -> Result<String, RecordError> {
        let valid = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(RecordError::InvalidId(id.to_string()));
        }
        Ok(format!("{}_D_{id}", self.prefix))
    }

    fn subject(&self, id: &str, shard: u32) -> String {
        format!("{}.d.{id}.{shard}", self.prefix)
    }

    /// The subject whose one message closes `shard` to writes (see [`JetStreamRecords::close`]).
    fn epoch_subject(&self, id: &str, shard: u32) -> String {
        format!("{}.e.{id}.{shard}", self.prefix)
    }

    /// Creates the JetStream stream of Kinesis stream `id`, keeping records `max_age`.
    pub async fn create(&self, id: &str, max_age: Duration) -> Result<(), RecordError> {
        let name = self.stream_name(id)?;
        let config = serde_json::json!({
            "name": name,
            "subjects": [format!("{}.d.{id}.>", self.prefix), format!("{}.e.{id}.>", self.prefix)],
            "num_replicas": self.replicas, "storage": "file", "retention": "limits",
            "discard": "old", "max_age": u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
            "duplicate_window": DUPLICATE_WINDOW_MS as u64 * 1_000_000,
            "allow_direct": true, "allow_atomic": true,
        });
        self.api(&format!("STREAM.CREATE.{name}"), &config).await?;
        Ok(())
    }

    /// Deletes the JetStream stream of Kinesis stream `id` and every record in it.
    pub async fn delete(&self, id: &str) -> Result<(), RecordError> {
        let name = self.stream_name(id)?;
        self.api(&format!("STREAM.DELETE.{name}"), &serde_json::json!({}))
            .await?;
        Ok(())
    }

    /// Stores `shards`' records (each shard's in order) as one atomic batch, all or none, and
    /// returns each record's position, shard by shard. `request_id` (at most 64 characters,
    /// unique per put) makes the put idempotent for two minutes: a put retried with the same id
    /// (after a lost answer, or by another node) stores nothing again and returns the first
    /// one's positions.
    pub async fn put(
        &self,
        id: &str,
        shards: &[(u32, &[NewRecord<'_>])],
        arrival_ms: i64,
        request_id: &str,
    ) -> Result<Vec<Vec<u64>>, RecordError> {
        self.put_sealed(id, shards, arrival_ms, request_id, None)
            .await
    }

    /// [`JetStreamRecords::put`], with every record sealed with `seal` when given: the
    /// stream's messages then hold only ciphertext (and the arrival time), and reads return
    /// them opened with the keyring given to [`JetStreamRecords::read_opened`].
    pub async fn put_sealed(
        &self,
        id: &str,
        shards: &[(u32, &[NewRecord<'_>])],
        arrival_ms: i64,
        request_id: &str,
        seal: Option<&DataKey>,
    ) -> Result<Vec<Vec<u64>>, RecordError> {
        let name = self.stream_name(id)?;
        let count: usize = shards.iter().map(|(_, records)| records.len()).sum();
        if count == 0 || count > crate::batch::BATCH_MESSAGES_MAX {
            return Err(RecordError::TooLarge(format!(
                "a put holds 1 to {} records, not {count}",
                crate::batch::BATCH_MESSAGES_MAX
            )));
        }
        let mut messages = Vec::with_capacity(count);
        for (shard, records) in shards {
            let subject = self.subject(id, *shard);
            for record in records.iter() {
                let payload = match seal {
                    None => encode(record, arrival_ms)?,
                    Some(key) => encode_sealed(record, arrival_ms, key, &subject)?,
                };
                messages.push(BatchMessage {
                    subject: subject.clone(),
                    headers: HeaderMap::new(),
                    payload,
                });
            }
        }
        if let Some(first) = messages.first_mut() {
            first.headers.insert("Nats-Msg-Id", request_id);
        }
        let mut last_error = String::new();
        for attempt in 0..PUT_ATTEMPTS {
            // A batch id of its own per attempt (and per call: another node may retry the same
            // request): an abandoned attempt's staged messages must not mix with the next one's.
            let batch_id = uuid::Uuid::new_v4().simple().to_string();
            let attempt_messages = messages.clone();
            let sent = publish_atomic_within(
                &self.client,
                &batch_id,
                attempt_messages,
                Some(self.timeout),
            );
            match sent.await {
                Ok(ack) => return Ok(positions(shards, ack.first_sequence())),
                Err(BatchError::Api(error)) if error.err_code == BATCH_DUPLICATE_MESSAGE_ID => {
                    let first_subject = messages[0].subject.clone();
                    let first = self
                        .find_put(&name, &first_subject, arrival_ms, request_id)
                        .await?;
                    return Ok(positions(shards, first));
                }
                Err(BatchError::Api(error)) if error.is_retryable() => {
                    last_error = error.to_string();
                }
                Err(BatchError::Api(error)) => return Err(error.into()),
                Err(BatchError::Unanswered(error)) => last_error = error,
                Err(BatchError::TooLarge(error)) => return Err(RecordError::TooLarge(error)),
                Err(error) => return Err(RecordError::Unavailable(error.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        Err(RecordError::Unavailable(last_error))
    }

    /// The position of a stored put's first record: the message on `subject` carrying
    /// `request_id`, stored within the duplicate window (and a minute of clock difference
    /// between nodes) before `since_ms`. A replica that has not applied the batch yet may
    /// answer first, so the search is repeated for a few seconds.
    async fn find_put(
        &self,
        name: &str,
        subject: &str,
        since_ms: i64,
        request_id: &str,
    ) -> Result<u64, RecordError> {
        for _ in 0..20 {
            let mut request = DirectGet {
                start_time: Some(rfc3339(since_ms - DUPLICATE_WINDOW_MS - 60_000)),
                next_by_subj: Some(subject.to_string()),
                batch: 1000,
                ..Default::default()
            };
            loop {
                let page = self.direct(name, &request).await?;
                if let Some(found) = page.messages.iter().find(|message| {
                    message
                        .headers
                        .get("Nats-Msg-Id")
                        .is_some_and(|id| id.as_str() == request_id)
                }) {
                    return Ok(found.sequence);
                }
                match page.messages.last() {
                    Some(last) if page.num_pending > 0 => {
                        request.start_time = None;
                        request.seq = Some(last.sequence + 1);
                    }
                    _ => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(RecordError::Unavailable(format!(
            "put {request_id} was stored but its first record is not found"
        )))
    }

    /// Up to `limit` records of `shard` from position `from`, within about `max_bytes`.
    pub async fn read(
        &self,
        id: &str,
        shard: u32,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page, RecordError> {
        self.read_opened(id, shard, from, limit, max_bytes, None)
            .await
    }

    /// [`JetStreamRecords::read`], opening sealed records with the data keys of `keyring`
    /// (a record whose key is not there fails the read). Without a keyring, sealed records
    /// come back unopened (`sealed` set, the frame as the value): for their positions only.
    pub async fn read_opened(
        &self,
        id: &str,
        shard: u32,
        from: u64,
        limit: usize,
        max_bytes: usize,
        keyring: Option<&dyn Keyring>,
    ) -> Result<Page, RecordError> {
        let subject = self.subject(id, shard);
        let batch = self.page(id, from, subject, limit, max_bytes).await?;
        let mut records = batch
            .messages
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(keyring) = keyring {
            for record in records.iter_mut().filter(|record| record.sealed) {
                open_sealed(record, &self.subject(id, shard), keyring)?;
            }
        }
        let next = records.last().map_or(from, |record| record.position + 1);
        Ok(Page {
            records,
            next,
            pending: batch.num_pending,
        })
    }

    /// Every shard's records from position `from` on, in stream order (up to `limit`
    /// messages, within about `max_bytes`): one pass over the stream however many shards it
    /// has, where a shard's own read skips over every other shard's records. Each record
    /// comes with its shard; sealed ones are opened with `keyring` (without one, a sealed
    /// record fails the read: `KeyUnavailable`).
    pub async fn read_every_shard(
        &self,
        id: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
        keyring: Option<&dyn Keyring>,
    ) -> Result<EveryShard, RecordError> {
        let every_shard = format!("{}.d.{id}.*", self.prefix);
        let batch = self.page(id, from, every_shard, limit, max_bytes).await?;
        let mut records = Vec::with_capacity(batch.messages.len());
        for message in &batch.messages {
            let shard = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|shard| shard.parse::<u32>().ok())
                .ok_or(RecordError::Corrupt(message.sequence))?;
            let mut record = decode(message)?;
            if record.sealed {
                // Without a keyring a sealed record cannot be served (unlike `read`, whose
                // callers may want positions only).
                let keyring = keyring.ok_or_else(|| {
                    RecordError::KeyUnavailable(sealed_key_id(&record.value).unwrap_or(0))
                })?;
                open_sealed(&mut record, &message.subject, keyring)?;
            }
            records.push((shard, record));
        }
        let next = records
            .last()
            .map_or(from, |(_, record)| record.position + 1);
        Ok(EveryShard {
            records,
            next,
            pending: batch.num_pending,
        })
    }

    /// The position of `shard`'s first record that arrived at or after `at_ms` (by the
    /// stream's clock), or `None` if none did yet.
    pub async fn position_at(
        &self,
        id: &str,
        shard: u32,
        at_ms: i64,
    ) -> Result<Option<u64>, RecordError> {
        let name = self.stream_name(id)?;
        let request = DirectGet {
            start_time: Some(rfc3339(at_ms)),
            next_by_subj: Some(self.subject(id, shard)),
            batch: 1,
            ..Default::default()
        };
        let batch = self.direct(&name, &request).await?;
        // A start time the server cannot represent (past the year 2262) finds the subject's
        // first message: only one stored at or after `at_ms` is an answer.
        Ok(batch
            .messages
            .first()
            .filter(|message| stored_at_or_after(&message.time, at_ms))
            .map(|message| message.sequence))
    }

    /// The position of `shard`'s last record, if it has any (from any replica: a follower
    /// may lag).
    pub async fn last_position(&self, id: &str, shard: u32) -> Result<Option<u64>, RecordError> {
        Ok(self
            .last_stored(id, shard)
            .await?
            .map(|(position, _)| position))
    }

    /// `shard`'s last record, if it has any (from any replica: a follower may lag): its
    /// position and when the stream stored it (ms since the epoch, the stream's clock).
    async fn last_stored(&self, id: &str, shard: u32) -> Result<Option<(u64, i64)>, RecordError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let name = self.stream_name(id)?;
        let js = async_nats::jetstream::new(self.client.clone());
        let subject = self.subject(id, shard);
        let last = async {
            let stream = js.get_stream_no_info(&name).await.map_err(unavailable)?;
            match stream.direct_get_last_for_subject(subject).await {
                Ok(message) => {
                    let stored_ms = message.time.unix_timestamp_nanos() / 1_000_000;
                    let stored_ms = i64::try_from(stored_ms).unwrap_or(i64::MAX);
                    Ok(Some((message.sequence, stored_ms)))
                }
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(error) => Err(unavailable(error)),
            }
        };
        tokio::time::timeout(self.timeout, last)
            .await
            .unwrap_or_else(|_| Err(RecordError::Unavailable("last position: no answer".into())))
    }

    /// Where a reader from `at_ms` (AT_TIMESTAMP) starts: `shard`'s first record the stream
    /// stored at or after it; with none, a position no record stored later is below (`None`
    /// when the shard holds no record at all). A direct get (any replica) answers when it
    /// finds such a record: a replica holds a prefix of the stream, so its first one is the
    /// first. Otherwise the replica may lag, and the stream's leader answers: after its last
    /// record if that one is older, else its first record at or after the time (a record may
    /// arrive between two questions: then they are asked again).
    pub async fn start_at_time(
        &self,
        id: &str,
        shard: u32,
        at_ms: i64,
    ) -> Result<Option<u64>, RecordError> {
        if let Some(position) = self.position_at(id, shard, at_ms).await? {
            return Ok(Some(position));
        }
        let subject = self.subject(id, shard);
        for tries in 0..20u64 {
            if tries > 0 {
                tokio::time::sleep(Duration::from_millis(5 * tries.min(10))).await;
            }
            match self
                .leader_message(id, json!({"last_by_subj": subject}))
                .await?
            {
                None => return Ok(None),
                Some(last) if !stored_at_or_after(&last.time, at_ms) => {
                    return Ok(Some(last.seq + 1));
                }
                Some(_) => {}
            }
            let first = json!({"start_time": rfc3339(at_ms), "next_by_subj": subject});
            if let Some(found) = self.leader_message(id, first).await?
                && stored_at_or_after(&found.time, at_ms)
            {
                return Ok(Some(found.seq));
            }
        }
        Err(RecordError::Unavailable(format!(
            "{id}/{shard}: the records after {at_ms} kept changing"
        )))
    }

    /// The message a `STREAM.MSG.GET` request `body` names, as the stream's leader answers.
    async fn leader_message(
        &self,
        id: &str,
        body: serde_json::Value,
    ) -> Result<Option<LeaderMessage>, RecordError> {
        #[derive(Deserialize)]
        struct Found {
            message: LeaderMessage,
        }
        let name = self.stream_name(id)?;
        match self.api(&format!("STREAM.MSG.GET.{name}"), &body).await {
            Ok(answer) => {
                let found: Found = serde_json::from_slice(&answer).map_err(unavailable)?;
                Ok(Some(found.message))
            }
            Err(RecordError::Api(error)) if error.err_code == NO_MESSAGE_FOUND => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes `shard`'s records the stream stored before `cutoff_ms` (the stream's clock);
    /// says how many went. Never one stored at or after it: with none found at or after the
    /// cutoff, it purges through the last record only if that one is older, as a record may
    /// arrive between the two questions.
    pub async fn trim_older_than(
        &self,
        id: &str,
        shard: u32,
        cutoff_ms: i64,
    ) -> Result<u64, RecordError> {
        let before = match self.position_at(id, shard, cutoff_ms).await? {
            Some(position) => position,
            None => match self.last_stored(id, shard).await? {
                Some((last, stored_ms)) if stored_ms < cutoff_ms => last + 1,
                _ => return Ok(0),
            },
        };
        self.trim(id, shard, before).await
    }

    /// The position of `shard`'s first record at or after `from`, as the stream's leader
    /// answers it (direct gets may come from a replica that lags), if it has one.
    pub async fn leader_next(
        &self,
        id: &str,
        shard: u32,
        from: u64,
    ) -> Result<Option<u64>, RecordError> {
        let found = self.leader_get(id, from, &self.subject(id, shard)).await?;
        Ok(found.map(|(seq, _)| seq))
    }

    /// The stream's first message at or after `from` on `subject` (wildcards allowed), as the
    /// stream's leader answers: its sequence and subject.
    async fn leader_get(
        &self,
        id: &str,
        from: u64,
        subject: &str,
    ) -> Result<Option<(u64, String)>, RecordError> {
        let body = json!({"seq": from.max(1), "next_by_subj": subject});
        let found = self.leader_message(id, body).await?;
        Ok(found.map(|message| (message.seq, message.subject)))
    }

    /// The stream sequence of the last message stored in Kinesis stream `id`, any shard (0 for
    /// none), as the stream's leader answers it.
    pub async fn last_sequence(&self, id: &str) -> Result<u64, RecordError> {
        #[derive(Deserialize)]
        struct Info {
            state: StreamState,
        }
        #[derive(Deserialize)]
        struct StreamState {
            last_seq: u64,
        }
        let name = self.stream_name(id)?;
        let answer = self
            .api(&format!("STREAM.INFO.{name}"), &serde_json::json!({}))
            .await?;
        let info: Info = serde_json::from_slice(&answer).map_err(unavailable)?;
        Ok(info.state.last_seq)
    }

    /// The ids of every Kinesis stream's JetStream stream under this prefix.
    pub async fn ids(&self) -> Result<Vec<String>, RecordError> {
        #[derive(Deserialize)]
        struct Names {
            #[serde(default)]
            streams: Option<Vec<String>>,
            #[serde(default)]
            total: usize,
            #[serde(default)]
            limit: usize,
        }
        let start = format!("{}_D_", self.prefix);
        let mut ids = Vec::new();
        let mut offset = 0usize;
        loop {
            let body =
                serde_json::json!({"subject": format!("{}.d.>", self.prefix), "offset": offset});
            let answer = self.api("STREAM.NAMES", &body).await?;
            let names: Names = serde_json::from_slice(&answer).map_err(unavailable)?;
            let page = names.streams.unwrap_or_default();
            offset += page.len();
            ids.extend(
                page.iter()
                    .filter_map(|name| name.strip_prefix(&start).map(str::to_string)),
            );
            if page.is_empty() || offset >= names.total || names.limit == 0 {
                return Ok(ids);
            }
        }
    }

    /// The shards of Kinesis stream `id` that hold records.
    pub async fn shards_with_records(&self, id: &str) -> Result<Vec<u32>, RecordError> {
        #[derive(Deserialize)]
        struct Info {
            state: State,
        }
        #[derive(Deserialize)]
        struct State {
            #[serde(default)]
            subjects: Option<std::collections::HashMap<String, u64>>,
        }
        let name = self.stream_name(id)?;
        let prefix = format!("{}.d.{id}.", self.prefix);
        let body = serde_json::json!({"subjects_filter": format!("{prefix}*")});
        let answer = self.api(&format!("STREAM.INFO.{name}"), &body).await?;
        let info: Info = serde_json::from_slice(&answer).map_err(unavailable)?;
        let mut shards: Vec<u32> = info
            .state
            .subjects
            .unwrap_or_default()
            .keys()
            .filter_map(|subject| subject.strip_prefix(&prefix)?.parse().ok())
            .collect();
        shards.sort_unstable();
        Ok(shards)
    }

    /// Removes `shard`'s records before position `before`; says how many went.
    pub async fn trim(&self, id: &str, shard: u32, before: u64) -> Result<u64, RecordError> {
        #[derive(Deserialize)]
        struct Purged {
            #[serde(default)]
            purged: u64,
        }
        let name = self.stream_name(id)?;
        // Nothing is before position 1; and a purge's `seq` of 0 would mean the whole subject.
        if before <= 1 {
            return Ok(0);
        }
        let body = serde_json::json!({"filter": self.subject(id, shard), "seq": before});
        let answer = self.api(&format!("STREAM.PURGE.{name}"), &body).await?;
        let purged: Purged = serde_json::from_slice(&answer)
            .map_err(|error| RecordError::Unavailable(error.to_string()))?;
        Ok(purged.purged)
    }

    /// Closes `shard`: writes its one epoch message, whose position is where the shard ends
    /// (its readable records are all below it). A put that lands on the shard after it is
    /// late: [`JetStreamRecords::closed_since`] tells its writer. Closing a closed shard
    /// returns the same position.
    pub async fn close(&self, id: &str, shard: u32) -> Result<u64, RecordError> {
        self.stream_name(id)?;
        let subject = self.epoch_subject(id, shard);
        let js = async_nats::jetstream::new(self.client.clone());
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let closed = async {
            let ack = js
                .publish_with_headers(subject, headers, Bytes::new())
                .await
                .map_err(|error| error.to_string())?
                .await;
            match ack {
                Ok(ack) => Ok(ack.sequence),
                Err(error) => Err(error.to_string()),
            }
        };
        match tokio::time::timeout(self.timeout, closed).await {
            Ok(Ok(sequence)) => Ok(sequence),
            // Closed before (a retry): its epoch message is where it ended.
            Ok(Err(_)) | Err(_) => {
                let name = self.stream_name(id)?;
                let js = async_nats::jetstream::new(self.client.clone());
                let epoch = self.epoch_subject(id, shard);
                let last = async {
                    let stream = js.get_stream_no_info(&name).await.map_err(unavailable)?;
                    stream
                        .get_last_raw_message_by_subject(&epoch)
                        .await
                        .map(|message| message.sequence)
                        .map_err(unavailable)
                };
                tokio::time::timeout(self.timeout, last)
                    .await
                    .unwrap_or_else(|_| Err(unavailable("closing a shard: no answer")))
            }
        }
    }

    /// The shards of Kinesis stream `id` closed at a position at or after `from`, with that
    /// position, in order, as the stream's leader answers (so every close before a put this
    /// node saw acknowledged is there).
    pub async fn closed_since(&self, id: &str, from: u64) -> Result<Vec<(u32, u64)>, RecordError> {
        let prefix = format!("{}.e.{id}.", self.prefix);
        let epochs = format!("{prefix}*");
        let mut closed = Vec::new();
        let mut from = from.max(1);
        while let Some((seq, subject)) = self.leader_get(id, from, &epochs).await? {
            if let Some(shard) = subject
                .strip_prefix(&prefix)
                .and_then(|shard| shard.parse().ok())
            {
                closed.push((shard, seq));
            }
            from = seq + 1;
        }
        Ok(closed)
    }

    /// Removes every record of `shard`.
    pub async fn purge_shard(&self, id: &str, shard: u32) -> Result<(), RecordError> {
        let name = self.stream_name(id)?;
        for subject in [self.subject(id, shard), self.epoch_subject(id, shard)] {
            let body = serde_json::json!({ "filter": subject });
            self.api(&format!("STREAM.PURGE.{name}"), &body).await?;
        }
        Ok(())
    }

    async fn direct(
        &self,
        name: &str,
        request: &DirectGet,
    ) -> Result<crate::DirectBatch, RecordError> {
        direct_get_batch(&self.client, "$JS.API", name, request, self.timeout)
            .await
            .map_err(|error| RecordError::Unavailable(error.to_string()))
    }

    /// The messages on `subject` (wildcards allowed) of stream `id` from `from` on: up to
    /// `limit`, within about `max_bytes`.
    async fn page(
        &self,
        id: &str,
        from: u64,
        subject: String,
        limit: usize,
        max_bytes: usize,
    ) -> Result<crate::DirectBatch, RecordError> {
        let request = DirectGet {
            seq: Some(from.max(1)),
            next_by_subj: Some(subject),
            batch: limit.max(1),
            max_bytes: Some(max_bytes.max(1)),
            ..Default::default()
        };
        self.direct(&self.stream_name(id)?, &request).await
    }

    /// One JetStream API request; its answer's body, or its error.
    async fn api(&self, what: &str, body: &serde_json::Value) -> Result<Bytes, RecordError> {
        let body = serde_json::to_vec(body).map_err(|e| RecordError::Unavailable(e.to_string()))?;
        let answer = tokio::time::timeout(
            self.timeout,
            self.client.request(format!("$JS.API.{what}"), body.into()),
        )
        .await
        .map_err(|_| RecordError::Unavailable(format!("{what}: no answer")))?
        .map_err(|error| RecordError::Unavailable(format!("{what}: {error}")))?;
        let envelope: Envelope<serde_json::Value> = serde_json::from_slice(&answer.payload)
            .map_err(|error| RecordError::Unavailable(format!("{what}: {error}")))?;
        match envelope.error {
            Some(error) => Err(error.into()),
            None => Ok(answer.payload),
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> RecordError {
    RecordError::Unavailable(error.to_string())
}

/// Each record's position, shard by shard, for a batch stored from `first` on (the batch
/// holds the shards' records in the order given).
fn positions(shards: &[(u32, &[NewRecord<'_>])], first: u64) -> Vec<Vec<u64>> {
    let mut next = first;
    shards
        .iter()
        .map(|(_, records)| {
            let start = next;
            next += records.len() as u64;
            (start..next).collect()
        })
        .collect()
}

fn encode(record: &NewRecord<'_>, arrival_ms: i64) -> Result<Bytes, RecordError> {
    let key_len = u16::try_from(record.key.len())
        .map_err(|_| RecordError::TooLarge(format!("a key of {} bytes", record.key.len())))?;
    let mut frame =
        BytesMut::with_capacity(FRAME_HEADER_BYTES + record.key.len() + record.value.len());
    frame.extend_from_slice(&[FRAME_VERSION]);
    frame.extend_from_slice(&arrival_ms.to_le_bytes());
    frame.extend_from_slice(&key_len.to_le_bytes());
    frame.extend_from_slice(record.key);
    frame.extend_from_slice(record.value);
    Ok(frame.freeze())
}

/// A sealed frame: the plain frame's key length, key and value sealed under `key` with a
/// fresh nonce, the frame's version and arrival time and the record's subject (its stream
/// and shard) authenticated with it, so a sealed record cannot be moved unnoticed.
fn encode_sealed(
    record: &NewRecord<'_>,
    arrival_ms: i64,
    key: &DataKey,
    subject: &str,
) -> Result<Bytes, RecordError> {
    let key_len = u16::try_from(record.key.len())
        .map_err(|_| RecordError::TooLarge(format!("a key of {} bytes", record.key.len())))?;
    let mut nonce = [0u8; NONCE_BYTES];
    let counter = NONCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    let mut frame = Vec::with_capacity(
        SEALED_HEADER_BYTES + 2 + record.key.len() + record.value.len() + TAG_BYTES,
    );
    frame.push(SEALED_FRAME_VERSION);
    frame.extend_from_slice(&arrival_ms.to_le_bytes());
    frame.extend_from_slice(&key.id().to_le_bytes());
    frame.extend_from_slice(&nonce);
    let aad = sealed_aad(&frame[..9], subject);
    let mut body = Vec::with_capacity(2 + record.key.len() + record.value.len() + TAG_BYTES);
    body.extend_from_slice(&key_len.to_le_bytes());
    body.extend_from_slice(record.key);
    body.extend_from_slice(record.value);
    key.seal(nonce, &aad, &mut body)
        .map_err(|error| RecordError::Unavailable(error.to_string()))?;
    frame.extend_from_slice(&body);
    Ok(Bytes::from(frame))
}

/// The data key id a sealed frame names, if it is long enough to name one.
pub fn sealed_key_id(frame: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(frame.get(9..13)?.try_into().ok()?))
}

fn sealed_aad(head: &[u8], subject: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(head.len() + subject.len());
    aad.extend_from_slice(head);
    aad.extend_from_slice(subject.as_bytes());
    aad
}

/// Opens a sealed record read from `subject` (its frame is in `record.value`).
fn open_sealed(
    record: &mut Record,
    subject: &str,
    keyring: &dyn Keyring,
) -> Result<(), RecordError> {
    let corrupt = || RecordError::Corrupt(record.position);
    let frame = &record.value;
    if frame.len() < SEALED_HEADER_BYTES + 2 + TAG_BYTES {
        return Err(corrupt());
    }
    let key_id = u32::from_le_bytes(frame[9..13].try_into().map_err(|_| corrupt())?);
    let nonce: [u8; NONCE_BYTES] = frame[13..SEALED_HEADER_BYTES]
        .try_into()
        .map_err(|_| corrupt())?;
    let key = keyring
        .data_key(key_id)
        .ok_or(RecordError::KeyUnavailable(key_id))?;
    let aad = sealed_aad(&frame[..9], subject);
    let mut body = frame[SEALED_HEADER_BYTES..].to_vec();
    let plain = key.open(nonce, &aad, &mut body).ok_or_else(corrupt)?;
    if plain.len() < 2 {
        return Err(corrupt());
    }
    let key_len = usize::from(u16::from_le_bytes([plain[0], plain[1]]));
    let key_end = 2 + key_len;
    if plain.len() < key_end {
        return Err(corrupt());
    }
    let plain = Bytes::copy_from_slice(plain);
    record.key = plain.slice(2..key_end);
    record.value = plain.slice(key_end..);
    Ok(())
}

fn decode(message: &StoredMessage) -> Result<Record, RecordError> {
    let corrupt = || RecordError::Corrupt(message.sequence);
    let frame = &message.payload;
    if frame.first() == Some(&SEALED_FRAME_VERSION) && frame.len() >= 9 {
        let arrival_ms = i64::from_le_bytes(frame[1..9].try_into().map_err(|_| corrupt())?);
        return Ok(Record {
            position: message.sequence,
            arrival_ms,
            key: Bytes::new(),
            value: frame.clone(),
            sealed: true,
        });
    }
    if frame.len() < FRAME_HEADER_BYTES || frame[0] != FRAME_VERSION {
        return Err(corrupt());
    }
    let arrival_ms = i64::from_le_bytes(frame[1..9].try_into().map_err(|_| corrupt())?);
    let key_len = usize::from(u16::from_le_bytes(
        frame[9..11].try_into().map_err(|_| corrupt())?,
    ));
    let key_end = FRAME_HEADER_BYTES + key_len;
    if frame.len() < key_end {
        return Err(corrupt());
    }
    Ok(Record {
        position: message.sequence,
        arrival_ms,
        key: frame.slice(FRAME_HEADER_BYTES..key_end),
        value: frame.slice(key_end..),
        sealed: false,
    })
}

/// A message as `STREAM.MSG.GET` answers it (the parts read here).
#[derive(Deserialize)]
struct LeaderMessage {
    seq: u64,
    subject: String,
    /// When the stream stored it (RFC 3339).
    time: String,
}

/// Whether a message stored at `time` (RFC 3339, as the server gives it) was stored at or
/// after `at_ms`.
fn stored_at_or_after(time: &str, at_ms: i64) -> bool {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|stored| stored.unix_timestamp_nanos() >= i128::from(at_ms) * 1_000_000)
}

/// `ms` since the epoch as RFC 3339 (what direct gets' `start_time` takes).
fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
