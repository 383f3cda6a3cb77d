//! Queues, the control plane: CreateQueue, DescribeQueue, ListQueues, UpdateQueue and
//! DeleteQueue, their CREATING → ACTIVE, UPDATING and DELETING lifecycle (the stream delays),
//! and what the delivery side (`rivulet-queue`) needs to read a queue's stream.
//!
//! A queue lives in its stream's metadata document beside the enhanced fan-out consumers, so
//! the registered-consumer limit they share is checked under one lock, and a stream with
//! queues can refuse its own deletion and a switch to provisioned mode. Delivery state
//! (cursors, records in flight, dead letters) is kept by `rivulet-queue` under
//! [`Engine::queue_state_prefix`]; the engine removes those keys with the queue.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::meta::{StreamMeta, StreamMode, StreamStatus};
use crate::storage::ShardLog;
use crate::token::{Kind, Reader, Writer};
use crate::{ApiError, Engine, ErrorKind, Result, ShardRead};

/// A queue's visibility timeout when CreateQueue gives none, in seconds.
pub const VISIBILITY_TIMEOUT_DEFAULT_S: u32 = 30;
/// A queue's MaxReceiveCount when CreateQueue gives no DeadLetterConfiguration.
pub const MAX_RECEIVE_COUNT_DEFAULT: u32 = 6;
/// ListQueues page size when MaxResults is absent.
const LIST_QUEUES_DEFAULT: usize = 100;
/// Where a queue's delivery state is kept, after the engine's namespace.
const QUEUE_STATE_PREFIX: &str = "queue/";
/// How long after a queue goes its delivery state is removed again (any commit that was in
/// flight has ended by then: a commit waits at most 30 s for the store).
const STATE_SWEEP_AFTER_MS: i64 = 60_000;

/// A queue's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl QueueStatus {
    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Creating => "CREATING",
            QueueStatus::Active => "ACTIVE",
            QueueStatus::Updating => "UPDATING",
            QueueStatus::Deleting => "DELETING",
        }
    }
}

/// Where a queue starts delivering the records of the shards it found at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueStartType {
    TrimHorizon,
    Latest,
    AtTimestamp,
}

impl QueueStartType {
    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStartType::TrimHorizon => "TRIM_HORIZON",
            QueueStartType::Latest => "LATEST",
            QueueStartType::AtTimestamp => "AT_TIMESTAMP",
        }
    }

    /// Parses AWS's name.
    pub fn parse(text: &str) -> Option<QueueStartType> {
        match text {
            "TRIM_HORIZON" => Some(QueueStartType::TrimHorizon),
            "LATEST" => Some(QueueStartType::Latest),
            "AT_TIMESTAMP" => Some(QueueStartType::AtTimestamp),
            _ => None,
        }
    }
}

/// A queue's starting position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStart {
    pub kind: QueueStartType,
    /// AT_TIMESTAMP's time.
    pub timestamp_ms: Option<i64>,
}

/// What happens to a record received too often without an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetter {
    /// It becomes a dead-letter record after this many receipts.
    BuiltIn { max_receive_count: u32 },
    /// It is redelivered until acknowledged or out of retention.
    None,
}

/// A queue's attributes, as they apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAttributes {
    pub visibility_timeout_s: u32,
    pub dead_letter: DeadLetter,
}

impl Default for QueueAttributes {
    fn default() -> Self {
        QueueAttributes {
            visibility_timeout_s: VISIBILITY_TIMEOUT_DEFAULT_S,
            dead_letter: DeadLetter::BuiltIn {
                max_receive_count: MAX_RECEIVE_COUNT_DEFAULT,
            },
        }
    }
}

/// The `QueueAttributes` a request gives (each member optional).
#[derive(Debug, Clone, Default)]
pub struct QueueAttributesInput<'a> {
    pub visibility_timeout_s: Option<u32>,
    /// `TargetType` and `MaxReceiveCount`, when `DeadLetterConfiguration` is given.
    pub dead_letter: Option<(&'a str, Option<u32>)>,
}

impl QueueAttributesInput<'_> {
    /// `base` with these changes applied, or AWS's ValidationException.
    fn apply(&self, base: QueueAttributes) -> Result<QueueAttributes> {
        let mut out = base;
        if let Some(v) = self.visibility_timeout_s {
            out.visibility_timeout_s = v;
        }
        if let Some((target, max)) = self.dead_letter {
            out.dead_letter = match (target, max) {
                ("BUILT_IN", Some(max_receive_count)) => DeadLetter::BuiltIn { max_receive_count },
                ("BUILT_IN", None) => {
                    return Err(ApiError::new(
                        ErrorKind::Validation,
                        "MaxReceiveCount is required when the DeadLetterConfiguration \
                         TargetType is BUILT_IN.",
                    ));
                }
                _ => DeadLetter::None,
            };
        }
        Ok(out)
    }
}

/// A queue, as persisted in its stream's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// The generated id that ends the queue's ARN.
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    pub status: QueueStatus,
    /// When the current CREATING / UPDATING / DELETING state ends.
    pub status_until_ms: Option<i64>,
    pub start: QueueStart,
    pub attributes: QueueAttributes,
    /// UpdateQueue's attributes, applied when UPDATING ends.
    #[serde(default)]
    pub pending_attributes: Option<QueueAttributes>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub resource_policy: Option<String>,
}

/// What DescribeQueue, CreateQueue and UpdateQueue report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub name: String,
    pub arn: String,
    pub status: QueueStatus,
    pub created_ms: i64,
    pub stream_arn: String,
    pub stream_created_ms: i64,
    pub start: QueueStart,
    /// The starting position's `Timestamp` as a description shows it: while CREATING what
    /// was configured (AT_TIMESTAMP's time, or none); afterwards the effective one.
    pub start_shown_ms: Option<i64>,
    pub attributes: QueueAttributes,
}

/// A ListQueues page.
#[derive(Debug, Clone)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
    pub next_token: Option<String>,
}

/// CreateQueue's arguments.
#[derive(Debug, Clone)]
pub struct CreateQueue<'a> {
    pub name: &'a str,
    /// `StreamConfigurationList`: (StreamARN, starting position type, Timestamp).
    pub streams: Vec<(&'a str, Option<&'a str>, Option<i64>)>,
    pub attributes: QueueAttributesInput<'a>,
    pub tags: Vec<(String, String)>,
}

/// One shard of a queue's stream, for delivery.
#[derive(Clone)]
pub struct QueueShard {
    pub index: u32,
    pub created_ms: i64,
    /// Set once the shard closed: one past its last position.
    pub end_offset: Option<u64>,
    pub log: Arc<dyn ShardLog>,
}

/// A queue and its stream as delivery needs them, taken under the stream's lock.
#[derive(Clone)]
pub struct QueueSource {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub status: QueueStatus,
    pub created_ms: i64,
    pub start: QueueStart,
    pub attributes: QueueAttributes,
    pub stream_name: String,
    pub stream_key: String,
    pub retention_ms: i64,
    /// The stream's encryption: a Receive checks its KMS key first.
    pub encryption: Option<crate::StreamEncryption>,
    /// Every shard the stream still holds, open or closed.
    pub shards: Vec<QueueShard>,
}

/// The id in `arn:aws:kinesis:REGION:ACCOUNT:queue/ID`.
pub(crate) fn parse_queue_arn(arn: &str) -> Option<(&str, &str, &str)> {
    parse_resource_arn(arn, "queue/")
}

/// The region, account and id of `arn:aws…:kinesis:REGION:ACCOUNT:<kind>ID` (`kind` is
/// `queue/` or `channel/`): a 12-digit account and an id without spaces.
pub(crate) fn parse_resource_arn<'a>(
    arn: &'a str,
    kind: &str,
) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    if !partition.starts_with("aws") {
        return None;
    }
    let rest = rest.strip_prefix("kinesis:")?;
    let (region, rest) = rest.split_once(':')?;
    let (account, rest) = rest.split_once(':')?;
    let id = rest.strip_prefix(kind)?;
    (account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !id.is_empty()
        && !id.bytes().any(|b| b.is_ascii_whitespace()))
    .then_some((region, account, id))
}

/// Whether `arn` names a queue (`arn:aws:kinesis:REGION:ACCOUNT:queue/ID`).
pub fn is_queue_arn(arn: &str) -> bool {
    parse_queue_arn(arn).is_some()
}

impl Engine {
    /// The ARN of the queue whose id is `id`.
    pub fn queue_arn(&self, id: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:queue/{id}",
            self.config.region, self.config.account_id
        )
    }

    /// The metadata prefix under which the delivery state of queue `id` is kept.
    pub fn queue_state_prefix(&self, id: &str) -> String {
        format!("{}{QUEUE_STATE_PREFIX}{id}/", self.config.namespace)
    }

    fn queue_view(&self, meta: &StreamMeta, queue: &QueueMeta) -> QueueView {
        // The earliest time the stream could be read from when the queue was created.
        let readable_from = meta
            .created_ms
            .max(queue.created_ms - i64::from(meta.retention_hours) * 3_600_000);
        let start_shown_ms = match (queue.status, queue.start.kind) {
            (QueueStatus::Creating, _) => queue.start.timestamp_ms,
            (_, QueueStartType::Latest) => Some(queue.created_ms),
            (_, QueueStartType::TrimHorizon) => Some(readable_from),
            (_, QueueStartType::AtTimestamp) => Some(
                queue
                    .start
                    .timestamp_ms
                    .unwrap_or(queue.created_ms)
                    .max(readable_from),
            ),
        };
        QueueView {
            start_shown_ms,
            name: queue.name.clone(),
            arn: self.queue_arn(&queue.id),
            status: queue.status,
            created_ms: queue.created_ms,
            stream_arn: self.stream_arn(&meta.name),
            stream_created_ms: meta.created_ms,
            start: queue.start,
            attributes: queue.attributes,
        }
    }

    pub(crate) fn queue_not_found(&self, arn: &str) -> ApiError {
        ApiError::not_found(format!(
            "Queue {arn} under account {} not found.",
            self.config.account_id
        ))
    }

    /// The stream holding the queue `arn` names, with the queue's lifecycle steps applied.
    pub(crate) fn find_queue(
        &self,
        arn: &str,
        now_ms: i64,
    ) -> Result<(Arc<crate::Stream>, String)> {
        let (region, account, id) = parse_queue_arn(arn)
            .ok_or_else(|| ApiError::invalid(format!("Invalid QueueARN {arn}.")))?;
        if region != self.config.region || account != self.config.account_id {
            return Err(self.queue_not_found(arn));
        }
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        for stream in streams {
            let holds = stream.state.read().meta.queues.iter().any(|q| q.id == id);
            if holds {
                self.settle_queues(&stream, now_ms)?;
                if stream.state.read().meta.queues.iter().any(|q| q.id == id) {
                    return Ok((stream, id.to_string()));
                }
            }
        }
        Err(self.queue_not_found(arn))
    }

    /// Finishes queue lifecycle steps whose delay has passed (the writer only).
    pub(crate) fn settle_queues(&self, stream: &Arc<crate::Stream>, now_ms: i64) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let due = |q: &QueueMeta| q.status_until_ms.is_some_and(|until| until <= now_ms);
        if !stream.state.read().meta.queues.iter().any(due) {
            return Ok(());
        }
        let mut state = stream.state.write();
        let mut gone = Vec::new();
        let queues = std::mem::take(&mut state.meta.queues);
        state.meta.queues = queues
            .into_iter()
            .filter_map(|mut q| {
                if !due(&q) {
                    return Some(q);
                }
                if q.status == QueueStatus::Deleting {
                    gone.push(q.id);
                    return None;
                }
                if let Some(attributes) = q.pending_attributes.take() {
                    q.attributes = attributes;
                }
                q.status = QueueStatus::Active;
                q.status_until_ms = None;
                Some(q)
            })
            .collect();
        // The queue's delivery state goes first: a crash in between leaves a DELETING queue,
        // whose removal is then done again.
        for id in &gone {
            self.forget_queue_state(id, now_ms)?;
        }
        self.persist(&state.meta)
    }

    /// Removes a deleted queue's delivery state, and again later (`forget_state`).
    fn forget_queue_state(&self, id: &str, now_ms: i64) -> Result<()> {
        self.forget_state(&self.queue_state_prefix(id), now_ms)
    }

    /// Removes the delivery state under `prefix` of a deleted queue or channel, and again a
    /// minute later: a commit in flight as it went may land after the first removal.
    pub(crate) fn forget_state(&self, prefix: &str, now_ms: i64) -> Result<()> {
        self.remove_meta_prefix(prefix)?;
        self.state_sweeps
            .lock()
            .push((prefix.to_string(), now_ms + STATE_SWEEP_AFTER_MS));
        Ok(())
    }

    /// Removes the delivery state of deleted queues and channels again once their last
    /// commits have ended (see `forget_state`).
    pub(crate) fn sweep_state(&self, now_ms: i64) -> Result<()> {
        let due: Vec<String> = {
            let mut sweeps = self.state_sweeps.lock();
            let (due, later): (Vec<_>, Vec<_>) =
                sweeps.drain(..).partition(|(_, at)| *at <= now_ms);
            *sweeps = later;
            due.into_iter().map(|(prefix, _)| prefix).collect()
        };
        let mut due = due.into_iter();
        while let Some(prefix) = due.next() {
            if let Err(error) = self.remove_meta_prefix(&prefix) {
                // Tried again at the next tick, with those not reached.
                let mut sweeps = self.state_sweeps.lock();
                sweeps.push((prefix, now_ms));
                sweeps.extend(due.map(|prefix| (prefix, now_ms)));
                return Err(error);
            }
        }
        Ok(())
    }

    /// Removes the delivery state of every queue that no stream has (a queue deleted while
    /// a commit was in flight, before a restart or a change of leader).
    pub(crate) fn remove_orphaned_queue_state(&self) -> Result<()> {
        let stored =
            self.stored_state_ids(&format!("{}{QUEUE_STATE_PREFIX}", self.config.namespace))?;
        // The live queues after the scan: a queue created meanwhile is among them.
        let live = self.queue_ids();
        for id in stored.into_iter().filter(|id| !live.contains(id)) {
            tracing::info!(queue = %id, "removing an orphaned queue's delivery state");
            self.remove_queue_state(&id)?;
        }
        Ok(())
    }

    /// Removes every delivery-state key of queue `id`.
    fn remove_queue_state(&self, id: &str) -> Result<()> {
        self.remove_meta_prefix(&self.queue_state_prefix(id))
    }

    /// Removes every metadata key under `prefix`, 500 a commit (a domain's delivery state).
    pub(crate) fn remove_meta_prefix(&self, prefix: &str) -> Result<()> {
        let keys = self.store.meta().scan_prefix(prefix)?;
        for chunk in keys.chunks(500) {
            let ops: Vec<rivulet_log::MetaOp> = chunk
                .iter()
                .map(|(key, _)| rivulet_log::MetaOp::Delete { key: key.clone() })
                .collect();
            self.store.meta().commit(&ops)?;
        }
        Ok(())
    }

    /// The ids that have metadata under `root` (`<root><id>/…`): a domain's stored state.
    pub(crate) fn stored_state_ids(
        &self,
        root: &str,
    ) -> Result<std::collections::BTreeSet<String>> {
        let mut stored = std::collections::BTreeSet::new();
        for (key, _) in self.store.meta().scan_prefix(root)? {
            if let Some(id) = key
                .strip_prefix(root)
                .and_then(|rest| rest.split('/').next())
                .filter(|id| !id.is_empty())
            {
                stored.insert(id.to_string());
            }
        }
        Ok(stored)
    }

    /// CreateQueue.
    pub fn create_queue(&self, request: &CreateQueue<'_>, now_ms: i64) -> Result<QueueView> {
        let validation = |m: &str| ApiError::new(ErrorKind::Validation, m.to_string());
        let [(stream_arn, start_type, timestamp_ms)] = request.streams.as_slice() else {
            return Err(validation(
                "StreamConfigurationList must contain exactly one entry.",
            ));
        };
        let kind = start_type
            .map(|t| QueueStartType::parse(t).unwrap_or(QueueStartType::Latest))
            .unwrap_or(QueueStartType::Latest);
        match (kind, timestamp_ms) {
            (QueueStartType::AtTimestamp, None) => {
                return Err(validation(
                    "A Timestamp is required when the StartingPosition Type is AT_TIMESTAMP.",
                ));
            }
            (QueueStartType::AtTimestamp, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(validation(
                    "A Timestamp can be specified only when the StartingPosition Type is \
                     AT_TIMESTAMP.",
                ));
            }
        }
        if timestamp_ms.is_some_and(|ts| ts > now_ms) {
            return Err(ApiError::invalid(
                "The timestamp provided in StartingPosition is in the future.",
            ));
        }
        let attributes = request.attributes.apply(QueueAttributes::default())?;
        if request.tags.len() > crate::control::TAGS_PER_STREAM_MAX {
            return Err(ApiError::invalid(format!(
                "Failed to create queue {} under account {} because a queue cannot have more \
                 than {} tags.",
                request.name,
                self.config.account_id,
                crate::control::TAGS_PER_STREAM_MAX
            )));
        }
        crate::control::check_tags(request.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let stream = self.stream_for_consumers(stream_arn, now_ms)?;
        self.settle_queues(&stream, now_ms)?;
        let account = self.config.account_id.clone();
        // Names are unique in the account: one creation at a time checks and takes one.
        let _creating = self.queue_creation.lock();
        if self.queue_name_taken(request.name) {
            return Err(ApiError::in_use(format!(
                "Queue {} under account {account} already exists.",
                request.name
            )));
        }
        let mut state = stream.state.write();
        let stream_name = state.meta.name.clone();
        if !matches!(
            state.meta.status,
            StreamStatus::Active | StreamStatus::Updating
        ) {
            return Err(ApiError::in_use(format!(
                "Stream {stream_name} under account {account} not ACTIVE, instead in state {}",
                state.meta.status.as_str()
            )));
        }
        if state.meta.mode != StreamMode::OnDemand {
            return Err(validation(&format!(
                "Queues are supported only on data streams in ON_DEMAND capacity mode. Stream \
                 {stream_name} under account {account} is in {} capacity mode.",
                state.meta.mode.as_str()
            )));
        }
        let registered = state.meta.consumers.len() + state.meta.queues.len();
        if registered >= crate::consumers::CONSUMERS_PER_STREAM_MAX {
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "Consumer limit of {} reached for stream {stream_name} under account \
                     {account}. Queues and enhanced fan-out consumers share this limit.",
                    crate::consumers::CONSUMERS_PER_STREAM_MAX
                ),
            ));
        }
        let mut id_bytes = [0u8; 16];
        getrandom::fill(&mut id_bytes)
            .map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
        let id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let delay = self.config.create_stream_ms;
        let queue = QueueMeta {
            id,
            name: request.name.to_string(),
            created_ms: now_ms,
            status: if delay > 0 {
                QueueStatus::Creating
            } else {
                QueueStatus::Active
            },
            status_until_ms: (delay > 0).then_some(now_ms + delay),
            start: QueueStart {
                kind,
                timestamp_ms: *timestamp_ms,
            },
            attributes,
            pending_attributes: None,
            tags: request.tags.clone(),
            resource_policy: None,
        };
        state.meta.queues.push(queue.clone());
        self.persist(&state.meta)?;
        // Like a stream, a queue is answered CREATING however short the wait.
        let creating = QueueMeta {
            status: QueueStatus::Creating,
            ..queue
        };
        let view = self.queue_view(&state.meta, &creating);
        Ok(view)
    }

    fn queue_name_taken(&self, name: &str) -> bool {
        self.streams
            .read()
            .values()
            .any(|s| s.state.read().meta.queues.iter().any(|q| q.name == name))
    }

    /// DescribeQueue.
    pub fn describe_queue(&self, arn: &str, now_ms: i64) -> Result<QueueView> {
        let (stream, id) = self.find_queue(arn, now_ms)?;
        let state = stream.state.read();
        state
            .meta
            .queues
            .iter()
            .find(|q| q.id == id)
            .map(|q| self.queue_view(&state.meta, q))
            .ok_or_else(|| self.queue_not_found(arn))
    }

    /// UpdateQueue: the queue goes UPDATING, and the new attributes apply when it ends.
    pub fn update_queue(
        &self,
        arn: &str,
        attributes: &QueueAttributesInput<'_>,
        now_ms: i64,
    ) -> Result<QueueView> {
        let (stream, id) = self.find_queue(arn, now_ms)?;
        let mut state = stream.state.write();
        let delay = self.config.update_stream_ms;
        let queue = state
            .meta
            .queues
            .iter_mut()
            .find(|q| q.id == id)
            .ok_or_else(|| self.queue_not_found(arn))?;
        if queue.status != QueueStatus::Active {
            return Err(ApiError::in_use(format!(
                "Queue {arn} under account {} not ACTIVE, instead in state {}",
                self.config.account_id,
                queue.status.as_str()
            )));
        }
        let next = attributes.apply(queue.attributes)?;
        if delay > 0 {
            queue.status = QueueStatus::Updating;
            queue.status_until_ms = Some(now_ms + delay);
            queue.pending_attributes = Some(next);
        } else {
            queue.attributes = next;
        }
        let queue = queue.clone();
        self.persist(&state.meta)?;
        let mut view = self.queue_view(&state.meta, &queue);
        view.status = QueueStatus::Updating;
        Ok(view)
    }

    /// DeleteQueue: the queue goes DELETING, then away with its delivery state.
    pub fn delete_queue(&self, arn: &str, now_ms: i64) -> Result<()> {
        let (stream, id) = self.find_queue(arn, now_ms)?;
        let mut state = stream.state.write();
        let delay = self.config.delete_stream_ms;
        if delay > 0 {
            if let Some(q) = state.meta.queues.iter_mut().find(|q| q.id == id)
                && q.status != QueueStatus::Deleting
            {
                q.status = QueueStatus::Deleting;
                q.status_until_ms = Some(now_ms + delay);
                q.pending_attributes = None;
            }
        } else {
            self.forget_queue_state(&id, now_ms)?;
            state.meta.queues.retain(|q| q.id != id);
        }
        self.persist(&state.meta)
    }

    /// ListQueues: every queue of the account, or those on the streams `filters` name
    /// (StreamARN and, optionally, the stream's creation time), by name.
    pub fn list_queues(
        &self,
        max_results: Option<u32>,
        next_token: Option<&str>,
        filters: &[(&str, Option<i64>)],
        now_ms: i64,
    ) -> Result<QueueList> {
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        let mut all: Vec<QueueView> = Vec::new();
        for stream in streams {
            self.settle_queues(&stream, now_ms)?;
            let state = stream.state.read();
            let wanted = self.stream_filtered(&state.meta, filters);
            if wanted {
                all.extend(
                    state
                        .meta
                        .queues
                        .iter()
                        .map(|q| self.queue_view(&state.meta, q)),
                );
            }
        }
        let limit = max_results
            .map_or(LIST_QUEUES_DEFAULT, |m| m as usize)
            .max(1);
        let (queues, next_token) = self.page_by_key(
            Kind::ListQueues,
            all,
            |q| format!("{}\n{}", q.name, q.arn),
            filters,
            next_token,
            limit,
            now_ms,
        )?;
        Ok(QueueList { queues, next_token })
    }

    /// Whether a stream passes a list's StreamFilter: none given, or one naming its ARN (and,
    /// when given, its creation time, to the second).
    pub(crate) fn stream_filtered(
        &self,
        meta: &StreamMeta,
        filters: &[(&str, Option<i64>)],
    ) -> bool {
        let arn = self.stream_arn(&meta.name);
        filters.is_empty()
            || filters.iter().any(|(filter_arn, created)| {
                *filter_arn == arn
                    && created
                        .is_none_or(|ms| ms.div_euclid(1000) == meta.created_ms.div_euclid(1000))
            })
    }

    /// One page of `items` in the order of `key` (unique), after the item a sealed NextToken of
    /// `kind` names (issued for the same filters, not expired); the token for the next page.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn page_by_key<T>(
        &self,
        kind: Kind,
        mut items: Vec<T>,
        key: impl Fn(&T) -> String,
        filters: &[(&str, Option<i64>)],
        next_token: Option<&str>,
        limit: usize,
        now_ms: i64,
    ) -> Result<(Vec<T>, Option<String>)> {
        items.sort_by_cached_key(|item| key(item));
        let filter_tag: String = filters
            .iter()
            .map(|(arn, created)| format!("{arn}@{}", created.unwrap_or(-1)))
            .collect::<Vec<_>>()
            .join(",");
        let invalid_token = |token: &str| ApiError::invalid(format!("Invalid NextToken: {token}"));
        let mut after: Option<String> = None;
        if let Some(token) = next_token {
            let payload = self
                .tokens
                .open(kind, token)
                .ok_or_else(|| invalid_token(token))?;
            let mut reader = Reader(&payload);
            let (filter, last, issued) = match (reader.str(), reader.str(), reader.i64()) {
                (Some(filter), Some(last), Some(issued)) => (filter, last, issued),
                _ => return Err(invalid_token(token)),
            };
            if filter != filter_tag {
                return Err(invalid_token(token));
            }
            crate::check_token_age(token, issued, now_ms)?;
            after = Some(last.to_string());
        }
        let rest: Vec<T> = items
            .into_iter()
            .filter(|item| {
                after
                    .as_deref()
                    .is_none_or(|last| key(item).as_str() > last)
            })
            .collect();
        let more = rest.len() > limit;
        let page: Vec<T> = rest.into_iter().take(limit).collect();
        let next_token = match (more, page.last()) {
            (true, Some(last)) => Some(
                self.tokens.seal(
                    kind,
                    &Writer::default()
                        .str(&filter_tag)
                        .str(&key(last))
                        .i64(now_ms)
                        .0,
                ),
            ),
            _ => None,
        };
        Ok((page, next_token))
    }

    /// The queue `arn` names and its stream's shards, for delivery. Errors as the queue's
    /// data operations answer them: ResourceNotFoundException for an unknown or DELETING
    /// queue.
    pub fn queue_source(&self, arn: &str, now_ms: i64) -> Result<QueueSource> {
        let (stream, id) = self.find_queue(arn, now_ms)?;
        let state = stream.state.read();
        let queue = state
            .meta
            .queues
            .iter()
            .find(|q| q.id == id && q.status != QueueStatus::Deleting)
            .ok_or_else(|| self.queue_not_found(arn))?;
        let shards = state
            .meta
            .shards
            .iter()
            .filter_map(|shard| {
                Some(QueueShard {
                    index: shard.index,
                    created_ms: shard.created_ms,
                    end_offset: shard.end_offset,
                    log: state.logs.get(&shard.index)?.clone(),
                })
            })
            .collect();
        Ok(QueueSource {
            id: queue.id.clone(),
            arn: self.queue_arn(&queue.id),
            name: queue.name.clone(),
            status: queue.status,
            created_ms: queue.created_ms,
            start: queue.start,
            attributes: queue.attributes,
            stream_name: state.meta.name.clone(),
            stream_key: state.meta.key.clone(),
            retention_ms: i64::from(state.meta.retention_hours) * 3_600_000,
            encryption: state.meta.encryption.clone(),
            shards,
        })
    }

    /// The ids of every queue of the account (DELETING ones too).
    pub fn queue_ids(&self) -> std::collections::HashSet<String> {
        self.streams
            .read()
            .values()
            .flat_map(|s| {
                s.state
                    .read()
                    .meta
                    .queues
                    .iter()
                    .map(|q| q.id.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every queue of the account with its stream's name, for metrics.
    pub fn queue_sources(&self, now_ms: i64) -> Vec<QueueSource> {
        let arns: Vec<String> = self
            .queue_ids()
            .iter()
            .map(|id| self.queue_arn(id))
            .collect();
        arns.iter()
            .filter_map(|arn| self.queue_source(arn, now_ms).ok())
            .collect()
    }

    /// Reads up to `limit` records (about `max_bytes`, at least one) of shard `index` of a
    /// queue's stream from `from`, as GetRecords would (decrypted, with the KMS key's state
    /// checked), without limits or metrics.
    pub async fn queue_read(
        &self,
        source: &QueueSource,
        index: u32,
        from: u64,
        limit: usize,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<ShardRead> {
        let stream = self.stream(&source.stream_name, now_ms)?;
        let plan = {
            let state = stream.state.read();
            if state.meta.key != source.stream_key {
                return Err(self.queue_not_found(&source.arn));
            }
            let missing = || {
                ApiError::not_found(format!(
                    "Shard {} of stream {} under account {} not found.",
                    crate::meta::shard_id(index),
                    source.stream_name,
                    self.config.account_id
                ))
            };
            self.plan_read(&state, index, from, limit, max_bytes, &missing)?
        };
        plan.run(now_ms).await
    }

    /// A Receive's key check on an encrypted stream: the KMS exceptions GetRecords answers.
    pub fn check_queue_key(&self, source: &QueueSource) -> Result<()> {
        self.check_read_key(source.encryption.as_ref())
    }

    /// Seals a queue receipt handle's payload.
    pub fn seal_receipt(&self, payload: &[u8]) -> String {
        self.tokens.seal(Kind::QueueReceipt, payload)
    }

    /// Opens a receipt handle this engine sealed.
    pub fn open_receipt(&self, handle: &str) -> Option<Vec<u8>> {
        self.tokens.open(Kind::QueueReceipt, handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_arns_parse() {
        assert_eq!(
            parse_queue_arn("arn:aws:kinesis:us-east-1:000000000000:queue/abc"),
            Some(("us-east-1", "000000000000", "abc"))
        );
        for bad in [
            "arn:aws:kinesis:us-east-1:000000000000:queue/",
            "arn:aws:kinesis:us-east-1:00000000000:queue/a",
            "arn:aws:kinesis:us-east-1:000000000000:stream/a",
            "arn:aws:sqs:us-east-1:000000000000:queue/a",
        ] {
            assert!(parse_queue_arn(bad).is_none(), "{bad}");
        }
    }
}
