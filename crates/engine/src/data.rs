//! Data-plane operations: PutRecord(s), GetShardIterator, GetRecords.

use bytes::Bytes;
use rivulet_log::{Encryption, NewRecord};

use crate::storage::{ShardLog, ShardWrite};

use crate::metrics::Metric;

use crate::limits::ShardLimits;
use crate::meta::{RecordDistribution, StreamMeta, StreamStatus, shard_id};
use crate::seq::{self, Decoded, SequenceNumber};
use crate::token::{Kind, Reader, Writer};
use crate::{
    ApiError, Engine, ErrorKind, Result, StreamState, StreamTarget, TOKEN_TTL_MS, hash, time,
};

/// Records one GetRecords call returns at most.
pub const GET_RECORDS_LIMIT_MAX: u32 = 10_000;
/// Bytes one GetRecords call returns at most.
pub const GET_RECORDS_BYTES_MAX: usize = 10 * 1024 * 1024;

/// One record to put.
#[derive(Debug, Clone, Copy)]
pub struct PutEntry<'a> {
    /// `None` only when the client left it out; the engine answers AWS's error.
    pub partition_key: Option<&'a str>,
    pub explicit_hash_key: Option<&'a str>,
    pub data: &'a [u8],
}

/// Where one put record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub shard_index: u32,
    pub sequence_number: SequenceNumber,
}

impl PutResult {
    /// The shard's id (`shardId-000000000000`).
    pub fn shard_id(&self) -> String {
        shard_id(self.shard_index)
    }

    /// The shard's id without an allocation.
    pub fn shard_id_text(&self) -> crate::meta::ShardIdText {
        crate::meta::ShardIdText::new(self.shard_index)
    }
}

/// A put whose records are written: [`PutOutcome::finish`] waits until they are durable and
/// answers where each one landed.
pub struct PutOutcome {
    /// Per entry, in request order: why it was refused (throttled), or `None` if written.
    results: Vec<Option<std::result::Result<PutResult, ApiError>>>,
    /// The entries written, shard after shard, each shard's in request order.
    members: Vec<usize>,
    /// Per shard written, in the order of the store's placements.
    shards: Vec<WrittenShard>,
    /// The store's write, until durable (`None` when every record was refused).
    pending: Option<crate::storage::PendingPut>,
    /// The records were stored encrypted (the response's `EncryptionType` is `KMS`).
    pub encrypted: bool,
    /// The stream's metrics, for the request's latency once it is durable.
    pub metrics: crate::StreamMetricsHandle,
    /// What the put's data points need once the store says where its records landed.
    observation: PutObservation,
}

/// A put's data points recorded by [`PutOutcome::finish`]: records and bytes count where the
/// store placed them, so a shard's records that landed late (and fail) are not counted in.
struct PutObservation {
    batch: bool,
    /// Entries in the request.
    total: usize,
    /// Shard-level metrics enhanced monitoring enabled.
    enabled: Vec<Metric>,
    now_ms: i64,
}

/// What numbering a shard's records needs once the store has placed them.
struct WrittenShard {
    index: u32,
    /// A copy of the route's: no count or lock shared with the other puts to the shard.
    numbers: seq::ShardNumbers,
    /// The shard's range of `PutOutcome::members`.
    members: std::ops::Range<usize>,
    /// Its records' keys and data, in bytes.
    bytes: usize,
}

impl std::fmt::Debug for PutOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutOutcome")
            .field("records", &self.results.len())
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl PutOutcome {
    /// Waits until every written record is durable, then answers per entry, in request order:
    /// where it landed, or why not. A failed write or sync fails the whole request, which is
    /// then not acknowledged.
    pub async fn finish(self) -> Result<Vec<std::result::Result<PutResult, ApiError>>> {
        let PutOutcome {
            mut results,
            members,
            shards,
            pending,
            metrics,
            observation,
            ..
        } = self;
        // Records and bytes stored where readers read them, and entries that failed late.
        let (mut stored_bytes, mut stored, mut late) = (0usize, 0usize, 0usize);
        let mut incoming = [
            (Metric::IncomingBytes, crate::metrics::Stat::default()),
            (Metric::IncomingRecords, crate::metrics::Stat::default()),
        ];
        if let Some(pending) = pending {
            let placed = pending.await?;
            if placed.len() != shards.len() {
                return Err(ApiError::internal(
                    "the store placed another number of shards",
                ));
            }
            for (shard, placed) in shards.iter().zip(&placed) {
                if placed.late {
                    // Refused per entry (AWS's per-record failure), so only these are retried.
                    for &i in &members[shard.members.clone()] {
                        results[i] = Some(Err(ApiError::internal("Internal service failure.")));
                    }
                    late += shard.members.len();
                    continue;
                }
                let count = shard.members.len();
                stored += count;
                stored_bytes += shard.bytes;
                let points = [
                    (Metric::IncomingBytes, shard.bytes as f64),
                    (Metric::IncomingRecords, count as f64),
                ];
                for ((_, stat), (_, value)) in incoming.iter_mut().zip(points) {
                    stat.add(value);
                }
                metrics.0.metrics.record_shard(
                    shard.index,
                    &points,
                    &observation.enabled,
                    observation.now_ms,
                );
                let arrival_s = (placed.timestamp_ms / 1000) as u32;
                for (k, &i) in members[shard.members.clone()].iter().enumerate() {
                    let counter = placed
                        .offsets
                        .at(k)
                        .ok_or_else(|| ApiError::internal("a record the store did not place"))?;
                    let sequence_number = shard.numbers.encode(counter, arrival_s);
                    results[i] = Some(Ok(PutResult {
                        shard_index: shard.index,
                        sequence_number,
                    }));
                }
            }
        }
        metrics
            .0
            .metrics
            .record_merged(&incoming, observation.now_ms);
        observe_put(
            &metrics.0,
            observation.batch,
            stored_bytes,
            observation.total,
            stored,
            late,
            observation.now_ms,
        );
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| ApiError::internal("unrouted record")))
            .collect()
    }
}

/// GetShardIterator's iterator types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IteratorType {
    AtSequenceNumber,
    AfterSequenceNumber,
    TrimHorizon,
    Latest,
    AtTimestamp,
}

impl IteratorType {
    /// Parses AWS's name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "AT_SEQUENCE_NUMBER" => IteratorType::AtSequenceNumber,
            "AFTER_SEQUENCE_NUMBER" => IteratorType::AfterSequenceNumber,
            "TRIM_HORIZON" => IteratorType::TrimHorizon,
            "LATEST" => IteratorType::Latest,
            "AT_TIMESTAMP" => IteratorType::AtTimestamp,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            IteratorType::AtSequenceNumber => "AT_SEQUENCE_NUMBER",
            IteratorType::AfterSequenceNumber => "AFTER_SEQUENCE_NUMBER",
            IteratorType::TrimHorizon => "TRIM_HORIZON",
            IteratorType::Latest => "LATEST",
            IteratorType::AtTimestamp => "AT_TIMESTAMP",
        }
    }
}

/// GetShardIterator arguments.
#[derive(Debug, Clone, Copy)]
pub struct GetShardIterator<'a> {
    pub target: StreamTarget<'a>,
    pub shard_id: &'a str,
    pub iterator_type: IteratorType,
    pub starting_sequence_number: Option<&'a str>,
    pub timestamp_ms: Option<i64>,
}

/// What one read of a shard found.
#[derive(Debug, Clone)]
pub struct ShardRead {
    pub records: Vec<OutRecord>,
    /// The records' data and partition keys, in bytes.
    pub bytes: usize,
    /// Where the next read starts.
    pub next_offset: u64,
    pub millis_behind_latest: i64,
    /// Set once a closed shard has been read to its end: its children.
    pub child_shards: Option<Vec<ChildShard>>,
}

impl ShardRead {
    /// CloudWatch's iterator age: how old the last record read is, or how far behind the tip
    /// the reader is when nothing was read.
    pub fn iterator_age_ms(&self, now_ms: i64) -> i64 {
        match self.records.last() {
            Some(last) => (now_ms - last.arrival_ms).max(0),
            None => self.millis_behind_latest,
        }
    }
}

/// Where a reader starts: an iterator type and its argument.
#[derive(Debug, Clone, Copy)]
pub struct StartAt<'a> {
    pub kind: IteratorType,
    pub sequence_number: Option<&'a str>,
    pub timestamp_ms: Option<i64>,
}

/// A record as GetRecords returns it.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// The record's position in its shard's log.
    pub offset: u64,
    pub sequence_number: SequenceNumber,
    pub arrival_ms: i64,
    pub data: Bytes,
    pub partition_key: Bytes,
    /// Stored encrypted (the record's `EncryptionType` is `KMS`).
    pub encrypted: bool,
}

/// A child shard, reported at the end of a closed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    pub shard_id: String,
    pub parent_shards: Vec<String>,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

/// GetRecords output.
#[derive(Debug, Clone)]
pub struct RecordsBatch {
    pub records: Vec<OutRecord>,
    /// The records' data and partition keys, in bytes.
    pub bytes: usize,
    pub next_shard_iterator: Option<String>,
    pub millis_behind_latest: i64,
    pub child_shards: Option<Vec<ChildShard>>,
    /// The stream's metrics, for the request's latency.
    pub metrics: crate::StreamMetricsHandle,
}

/// What a shard iterator points at.
pub(crate) struct IteratorPosition {
    pub(crate) stream: String,
    stream_created_ms: i64,
    shard: u32,
    offset: u64,
    issued_ms: i64,
}

/// Orders `(entry, route)` pairs (given in entry order) by route, each route's entries still in
/// entry order: by counting when the routes are not many more than the entries (a PutRecords
/// over 512 shards; a comparison sort was 1 % of its server time), else by a stable sort.
fn group_by_route(routed: &mut Vec<(usize, usize)>, routes: usize) {
    if routes > 2 * routed.len() || routed.iter().any(|&(_, at)| at >= routes) {
        routed.sort_by_key(|&(_, at)| at);
        return;
    }
    let mut next = vec![0usize; routes + 1];
    for &(_, at) in routed.iter() {
        next[at + 1] += 1;
    }
    for k in 1..next.len() {
        next[k] += next[k - 1];
    }
    let mut grouped = vec![(0, 0); routed.len()];
    for &(i, at) in routed.iter() {
        grouped[next[at]] = (i, at);
        next[at] += 1;
    }
    *routed = grouped;
}

fn record_too_large(path: &str, data_len: usize, limit_bytes: usize) -> ApiError {
    ApiError::new(
        ErrorKind::Validation,
        format!(
            "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim={data_len} \
             cap={data_len}]' at '{path}' failed to satisfy constraint: Member must have length \
             less than or equal to {limit_bytes}"
        ),
    )
}

fn missing_partition_key(path: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Validation,
        format!(
            "1 validation error detected: Value null at '{path}' failed to satisfy constraint: \
             Member must not be null"
        ),
    )
}

/// The checks AWS makes on a starting position before looking at the stream.
pub(crate) fn check_start(start: &StartAt<'_>, now_ms: i64) -> Result<()> {
    let kind = start.kind;
    let needs_sequence = matches!(
        kind,
        IteratorType::AtSequenceNumber | IteratorType::AfterSequenceNumber
    );
    let has_sequence = start.sequence_number.is_some();
    if needs_sequence != has_sequence {
        let also = if has_sequence {
            "and also a StartingSequenceNumber"
        } else {
            "and no StartingSequenceNumber"
        };
        return Err(ApiError::invalid(format!(
            "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and \
             StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no \
             StartingSequenceNumber. Request specified {} {also}.",
            kind.name()
        )));
    }
    if kind == IteratorType::AtTimestamp {
        let Some(ts) = start.timestamp_ms else {
            return Err(ApiError::invalid(
                "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. \
                 Current request has no timestamp parameter.",
            ));
        };
        if ts > now_ms {
            return Err(ApiError::invalid(format!(
                "The timestampInMillis parameter cannot be greater than the \
                 currentTimestampInMillis. timestampInMillis: {ts}, \
                 currentTimestampInMillis: {now_ms}"
            )));
        }
    }
    Ok(())
}

pub(crate) fn child_shards(meta: &StreamMeta, parent: u32) -> Vec<ChildShard> {
    let mut children: Vec<ChildShard> = meta
        .shards
        .iter()
        .filter(|s| s.parent == Some(parent) || s.adjacent_parent == Some(parent))
        .map(|s| ChildShard {
            shard_id: shard_id(s.index),
            parent_shards: s
                .parent
                .into_iter()
                .chain(s.adjacent_parent)
                .map(shard_id)
                .collect(),
            starting_hash_key: s.start_hash.clone(),
            ending_hash_key: s.end_hash.clone(),
        })
        .collect();
    children.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    children
}

impl Engine {
    /// PutRecords (and PutRecord, with one entry and maybe `SequenceNumberForOrdering`).
    ///
    /// `batch` says how validation messages name an entry: `data` for PutRecord,
    /// `records.N.member.data` for PutRecords.
    pub fn put_records(
        &self,
        target: &StreamTarget<'_>,
        entries: &[PutEntry<'_>],
        sequence_number_for_ordering: Option<&str>,
        batch: bool,
        now_ms: i64,
    ) -> Result<PutOutcome> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let state = stream.state.read();
        if !matches!(
            state.meta.status,
            StreamStatus::Active | StreamStatus::Updating
        ) {
            return Err(self.not_found(&name));
        }
        let write_key = match &state.meta.encryption {
            Some(encryption) => Some(self.write_key(&stream, &state.meta.key, encryption)?),
            None => None,
        };
        let limit_bytes = state.meta.max_record_size_kib as usize * 1024;
        let mut routed: Vec<(usize, usize)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let path = |field: &str| {
                if batch {
                    format!("records.{}.member.{field}", i + 1)
                } else {
                    field.to_string()
                }
            };
            let auto = state.meta.record_distribution == RecordDistribution::Auto;
            let key = match entry.partition_key {
                Some(key) => key,
                // AUTO distribution makes the partition key optional (and ignores it).
                None if auto => "",
                None => return Err(missing_partition_key(&path("partitionKey"))),
            };
            if entry.data.len() + key.len() > limit_bytes {
                return Err(record_too_large(
                    &path("data"),
                    entry.data.len(),
                    limit_bytes,
                ));
            }
            if auto {
                // Evenly over the open shards, whatever the keys say.
                let turn = stream
                    .auto_next
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                routed.push((i, (turn % state.routes.len().max(1) as u64) as usize));
                continue;
            }
            let hash = match entry.explicit_hash_key {
                Some(text) => hash::parse_hash_key(text).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: \
                         [0, 2^128-1]. Specified value was {text}"
                    ))
                })?,
                None => hash::partition_hash(key),
            };
            let at = state
                .route_at(hash)
                .ok_or_else(|| ApiError::internal("no open shard owns the hash key"))?;
            routed.push((i, at));
        }
        // Every number a shard issued is below its log's end, so the record's own number is
        // above it already: the number needs checking, not a floor.
        if let Some(text) = sequence_number_for_ordering
            && !ordering_number_valid(text, &state.meta)
        {
            return Err(ApiError::invalid(format!(
                "ExclusiveMinimumSequenceNumber {text} used in PutRecord on stream {name} under \
                 account {} is invalid.",
                self.config.account_id
            )));
        }
        // One write (one batch on disk) per shard, its records in request order; with limits
        // on, each record passes its shard's buckets or fails alone.
        let mut results: Vec<Option<std::result::Result<PutResult, ApiError>>> =
            vec![None; entries.len()];
        group_by_route(&mut routed, state.routes.len());
        // Every accepted record, shard after shard, and which entry each one is.
        let mut records: Vec<NewRecord<'_>> = Vec::with_capacity(entries.len());
        let mut members: Vec<usize> = Vec::with_capacity(entries.len());
        // Per shard written: its route, its records' range in `records` and their bytes.
        let mut written: Vec<(usize, std::ops::Range<usize>, usize)> = Vec::new();
        let enabled_metrics = state.meta.enabled_shard_metrics();
        // One data point per shard a request writes to: throttled records now, records and
        // bytes once the store placed them (`PutOutcome::finish`).
        let mut throttles = [(
            Metric::WriteProvisionedThroughputExceeded,
            crate::metrics::Stat::default(),
        )];
        for group in routed.chunk_by(|a, b| a.1 == b.1) {
            let route = &state.routes[group[0].1];
            let limits = stream.shard_limits(self.config.limits_scale, route.index, now_ms);
            let mut writes = limits.as_deref().map(ShardLimits::writes);
            let first = records.len();
            let mut bytes = 0;
            let mut throttled = 0u32;
            for &(i, _) in group {
                let entry = &entries[i];
                let key = entry.partition_key.unwrap_or_default();
                let size = entry.data.len() + key.len();
                if let Some(writes) = &mut writes
                    && !writes.admit(size, now_ms)
                {
                    results[i] = Some(Err(self.rate_exceeded(&name, route.index)));
                    throttled += 1;
                    continue;
                }
                bytes += size;
                records.push(NewRecord {
                    key: key.as_bytes(),
                    value: entry.data,
                });
                members.push(i);
            }
            drop(writes);
            let accepted = records.len() - first;
            // One data point per shard a request writes to, 0 when nothing was throttled, so
            // the series exists (for alarms and dashboards) from the first put, as on AWS.
            let throttle = (
                Metric::WriteProvisionedThroughputExceeded,
                f64::from(throttled),
            );
            // The stream's data point is merged here and recorded once, after the loop.
            throttles[0].1.add(throttle.1);
            stream
                .metrics
                .record_shard(route.index, &[throttle], &enabled_metrics, now_ms);
            if accepted == 0 {
                continue;
            }
            if state.meta.mode == crate::meta::StreamMode::OnDemand {
                stream.meter_write(route.index, bytes, accepted, now_ms);
            }
            written.push((group[0].1, first..records.len(), bytes));
        }
        stream.metrics.record_merged(&throttles, now_ms);
        // PutRecord fails as a whole when its one record is throttled (nothing was written).
        if !batch && let Some(Some(Err(error))) = results.first() {
            let error = error.clone();
            observe_put(&stream, batch, 0, 1, 0, 0, now_ms);
            return Err(error);
        }
        let writes: Vec<ShardWrite<'_>> = written
            .iter()
            .map(|(at, range, _)| {
                let route = &state.routes[*at];
                ShardWrite {
                    log: &*route.log,
                    records: &records[range.clone()],
                    seal: write_key.as_deref().map(|key| Encryption {
                        key,
                        nonce_prefix: route.index,
                    }),
                }
            })
            .collect();
        // Written under the stream's lock (resharding takes it exclusively), durable later.
        let pending = if writes.is_empty() {
            None
        } else {
            Some(self.store.put(&writes, now_ms)?)
        };
        drop(writes);
        let shards = written
            .into_iter()
            .map(|(at, range, bytes)| {
                let route = &state.routes[at];
                WrittenShard {
                    index: route.index,
                    numbers: route.numbers,
                    members: range,
                    bytes,
                }
            })
            .collect();
        Ok(PutOutcome {
            results,
            members,
            shards,
            pending,
            encrypted: write_key.is_some(),
            metrics: crate::StreamMetricsHandle(stream.clone()),
            observation: PutObservation {
                batch,
                total: entries.len(),
                enabled: enabled_metrics,
                now_ms,
            },
        })
    }

    /// GetShardIterator.
    pub async fn get_shard_iterator(
        &self,
        request: &GetShardIterator<'_>,
        now_ms: i64,
    ) -> Result<String> {
        // The shard id's form is checked first, before the stream is looked up; from here on
        // messages name the shard as `shard_id` writes it, and an unknown stream is a shard
        // that does not exist (AWS's answers).
        let name = self.resolve(&request.target)?;
        let index = self.shard_arg(&name, request.shard_id)?;
        let shard_missing = || self.shard_not_found(&name, &shard_id(index));
        let kind = request.iterator_type;
        check_start(
            &StartAt {
                kind,
                sequence_number: request.starting_sequence_number,
                timestamp_ms: request.timestamp_ms,
            },
            now_ms,
        )?;
        let stream = self.stream(&name, now_ms).map_err(|e| match e.kind {
            ErrorKind::ResourceNotFound => shard_missing(),
            _ => e,
        })?;
        let (start, created_ms) = {
            let state = stream.state.read();
            if !matches!(
                state.meta.status,
                StreamStatus::Active | StreamStatus::Updating
            ) {
                return Err(shard_missing());
            }
            state.meta.shard(index).ok_or_else(shard_missing)?;
            if let Some(limits) = stream.shard_limits(self.config.limits_scale, index, now_ms)
                && !limits.admit_iterator(now_ms)
            {
                return Err(self.rate_exceeded(&name, index));
            }
            let start = StartAt {
                kind,
                sequence_number: request.starting_sequence_number,
                timestamp_ms: request.timestamp_ms,
            };
            let start = self.start_position(
                &state,
                index,
                &start,
                "GetShardIterator",
                &shard_missing,
                now_ms,
            )?;
            (start, state.meta.created_ms)
        };
        let offset = start.resolve().await?;
        Ok(self.seal_iterator(&name, created_ms, index, offset, now_ms))
    }

    /// Where a reader starting at `start` begins in shard `index` (GetShardIterator,
    /// SubscribeToShard): an offset, or what to ask the shard's log. `operation` names the
    /// caller in AWS's messages.
    pub(crate) fn start_position(
        &self,
        state: &StreamState,
        index: u32,
        start: &StartAt<'_>,
        operation: &str,
        shard_missing: &dyn Fn() -> ApiError,
        now_ms: i64,
    ) -> Result<Start> {
        let name = &state.meta.name;
        let account = &self.config.account_id;
        let kind = start.kind;
        let shard = state.meta.shard(index).ok_or_else(shard_missing)?;
        let log = state.logs.get(&index).ok_or_else(shard_missing)?;
        let ask = |query| Ok(Start::Ask(log.clone(), query));
        let offset = match start.kind {
            IteratorType::TrimHorizon => return ask(StartQuery::Oldest),
            IteratorType::Latest => match shard.end_offset {
                Some(end) => end,
                None => return ask(StartQuery::End),
            },
            IteratorType::AtTimestamp => {
                let at = start.timestamp_ms.unwrap_or(now_ms);
                return ask(StartQuery::At(at, shard.copied_end));
            }
            IteratorType::AtSequenceNumber | IteratorType::AfterSequenceNumber => {
                let text = start.sequence_number.unwrap_or_default();
                let invalid = |suffix: &str| {
                    ApiError::invalid(format!(
                        "StartingSequenceNumber {text} used in {operation} on shard {} in stream \
                         {name} under account {account} is invalid{suffix}.",
                        shard_id(index)
                    ))
                };
                let wrong_shard = |encoded: i128| {
                    ApiError::invalid(format!(
                        "Invalid StartingSequenceNumber. It encodes shardId-{encoded:012}, while \
                         it was used in a call to a shard with {}",
                        shard_id(index)
                    ))
                };
                let created_s = (shard.created_ms / 1000) as u32;
                // A shard of an earlier release reads its own numbers in its own layout.
                let legacy = match state.meta.seq_layout(shard) {
                    seq::Layout::Legacy { stream_tag } => seq::decode_legacy(text, stream_tag)
                        .filter(|p| p.shard_index == index && p.shard_created_s == created_s),
                    seq::Layout::Aws => None,
                };
                let counter = match (legacy, seq::decode(text)) {
                    // A position marker (arrival time 0, no record's) names the gap before its
                    // counter: "after" it is the record at the counter.
                    (Some(parts), _) => (parts.counter, parts.arrival_s == 0),
                    (None, Decoded::Zero) => {
                        return Err(ApiError::internal("Internal Service Failure"));
                    }
                    (None, Decoded::Invalid | Decoded::Version1) => return Err(invalid("")),
                    (None, Decoded::Short { shard_index }) if shard_index != u64::from(index) => {
                        return Err(wrong_shard(i128::from(shard_index)));
                    }
                    (None, Decoded::Short { .. }) => return Err(invalid("")),
                    (None, Decoded::Aws(parts)) => {
                        if parts.shard_index as u32 != index {
                            return Err(wrong_shard(i128::from(parts.shard_index)));
                        }
                        if !parts.is_of(index, created_s)
                            || state.meta.seq_layout(shard) != seq::Layout::Aws
                        {
                            return Err(invalid(" because it did not come from this stream"));
                        }
                        (parts.counter, parts.arrival_s == 0)
                    }
                };
                let (counter, marker) = counter;
                if kind == IteratorType::AfterSequenceNumber && !marker {
                    counter.saturating_add(1)
                } else {
                    counter
                }
            }
        };
        Ok(Start::At(offset))
    }

    fn seal_iterator(
        &self,
        stream: &str,
        stream_created_ms: i64,
        shard: u32,
        offset: u64,
        now_ms: i64,
    ) -> String {
        let payload = Writer::default()
            .str(stream)
            .i64(stream_created_ms)
            .u32(shard)
            .u64(offset)
            .i64(now_ms)
            .u64(self.next_nonce())
            .0;
        self.tokens.seal(Kind::ShardIterator, &payload)
    }

    pub(crate) fn open_iterator(&self, text: &str) -> Result<IteratorPosition> {
        let invalid = || ApiError::invalid("Invalid ShardIterator.");
        let payload = self
            .tokens
            .open(Kind::ShardIterator, text)
            .ok_or_else(invalid)?;
        let mut r = Reader(&payload);
        Ok(IteratorPosition {
            stream: r.str().ok_or_else(invalid)?,
            stream_created_ms: r.i64().ok_or_else(invalid)?,
            shard: r.u32().ok_or_else(invalid)?,
            offset: r.u64().ok_or_else(invalid)?,
            issued_ms: r.i64().ok_or_else(invalid)?,
        })
    }

    /// GetRecords.
    pub async fn get_records(
        &self,
        iterator: &str,
        limit: Option<u32>,
        now_ms: i64,
    ) -> Result<RecordsBatch> {
        let position = self.open_iterator(iterator)?;
        if now_ms - position.issued_ms > TOKEN_TTL_MS {
            return Err(ApiError::new(
                ErrorKind::ExpiredIterator,
                format!(
                    "Iterator expired. The iterator was created at time {} while right now it is \
                     {} which is further in the future than the tolerated delay of \
                     {TOKEN_TTL_MS} milliseconds.",
                    time::java_date(position.issued_ms),
                    time::java_date(now_ms)
                ),
            ));
        }
        let name = position.stream.as_str();
        // A deleted stream, or one re-created under the same name: the shard is gone.
        let shard_missing = || self.shard_not_found(name, &shard_id(position.shard));
        let stream = self.stream(name, now_ms).map_err(|e| match e.kind {
            ErrorKind::ResourceNotFound => shard_missing(),
            _ => e,
        })?;
        let limit = limit
            .unwrap_or(GET_RECORDS_LIMIT_MAX)
            .min(GET_RECORDS_LIMIT_MAX) as usize;
        let limits = stream.shard_limits(self.config.limits_scale, position.shard, now_ms);
        let (plan, enabled) = {
            let state = stream.state.read();
            if state.meta.created_ms != position.stream_created_ms {
                return Err(shard_missing());
            }
            if let Some(limits) = &limits
                && !limits.admit_read(now_ms)
            {
                // GetRecords' wording as the live service has answered it since 2023.
                self.count_throttled();
                stream.observe(
                    &state.meta,
                    Some(position.shard),
                    &[
                        (Metric::ReadProvisionedThroughputExceeded, 1.0),
                        (Metric::GetRecordsSuccess, 0.0),
                    ],
                    now_ms,
                );
                return Err(ApiError::new(
                    ErrorKind::ProvisionedThroughputExceeded,
                    format!(
                        "Rate exceeded for Shard - {}/{name}/{}",
                        self.config.account_id,
                        shard_id(position.shard)
                    ),
                ));
            }
            let plan = self.plan_read(
                &state,
                position.shard,
                position.offset,
                limit,
                GET_RECORDS_BYTES_MAX,
                &shard_missing,
            )?;
            (plan, state.meta.enabled_shard_metrics())
        };
        let read = plan.run(now_ms).await?;
        if let Some(limits) = &limits {
            limits.charge_read(read.bytes);
        }
        let age = read.iterator_age_ms(now_ms) as f64;
        stream.observe_enabled(
            &enabled,
            Some(position.shard),
            &[
                (Metric::GetRecordsBytes, read.bytes as f64),
                (Metric::GetRecordsRecords, read.records.len() as f64),
                (Metric::GetRecordsSuccess, 1.0),
                // 0 per call not throttled: the series exists before the first throttle.
                (Metric::ReadProvisionedThroughputExceeded, 0.0),
                (Metric::GetRecordsIteratorAgeMilliseconds, age),
                (Metric::OutgoingBytes, read.bytes as f64),
                (Metric::OutgoingRecords, read.records.len() as f64),
                (Metric::IteratorAgeMilliseconds, age),
            ],
            now_ms,
        );
        let next_shard_iterator = match read.child_shards {
            Some(_) => None,
            None => Some(self.seal_iterator(
                name,
                position.stream_created_ms,
                position.shard,
                read.next_offset,
                now_ms,
            )),
        };
        Ok(RecordsBatch {
            records: read.records,
            bytes: read.bytes,
            next_shard_iterator,
            millis_behind_latest: read.millis_behind_latest,
            child_shards: read.child_shards,
            metrics: crate::StreamMetricsHandle(stream.clone()),
        })
    }

    /// A read of up to `limit` records (about `max_bytes`) of shard `index` from `offset`:
    /// what GetRecords and a subscription deliver. Made under the stream's lock, run
    /// ([`ReadPlan::run`]) outside it.
    pub(crate) fn plan_read(
        &self,
        state: &StreamState,
        index: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
        shard_missing: &dyn Fn() -> ApiError,
    ) -> Result<ReadPlan> {
        let shard = state.meta.shard(index).ok_or_else(shard_missing)?;
        let log = state.logs.get(&index).ok_or_else(shard_missing)?;
        self.check_read_key(state.meta.encryption.as_ref())?;
        Ok(ReadPlan {
            log: log.clone(),
            index,
            offset,
            limit,
            max_bytes,
            end_exclusive: shard.end_offset,
            layout: state.meta.seq_layout(shard),
            created_s: (shard.created_ms / 1000) as u32,
            children: shard
                .end_offset
                .is_some()
                .then(|| child_shards(&state.meta, index)),
            tail: false,
        })
    }
}

/// Where a reader starts: a known offset, or one to ask the shard's log for.
pub(crate) enum Start {
    At(u64),
    Ask(std::sync::Arc<dyn ShardLog>, StartQuery),
}

/// What to ask a shard's log for where a reader starts.
pub(crate) enum StartQuery {
    /// The oldest retained record (TRIM_HORIZON).
    Oldest,
    /// Past the newest (LATEST).
    End,
    /// The first record at or after a time (AT_TIMESTAMP), and where the shard's records
    /// copied in by a migration end (they are found by their own arrival times).
    At(i64, Option<u64>),
}

impl Start {
    pub(crate) async fn resolve(self) -> Result<u64> {
        match self {
            Start::At(offset) => Ok(offset),
            Start::Ask(log, StartQuery::Oldest) => log.start_offset().await,
            Start::Ask(log, StartQuery::End) => log.end_offset().await,
            Start::Ask(log, StartQuery::At(ms, copied_end)) => {
                let found = log.offset_at_timestamp(ms).await?;
                match copied_end {
                    // The store's answer goes by when it took records in; copied ones it
                    // took in at the migration's time, all at once.
                    Some(end) if found <= end => first_arrived_at_or_after(&*log, ms, end).await,
                    _ => Ok(found),
                }
            }
        }
    }
}

/// The position of `log`'s first record below `end` that arrived at or after `at_ms` (by
/// its arrival time), or `end` if none did: a binary search over positions, one
/// single-record read a step. The records below `end` are in arrival order, as a shard's
/// records are.
async fn first_arrived_at_or_after(log: &dyn ShardLog, at_ms: i64, end: u64) -> Result<u64> {
    // The first record at or after `from` and below `end`: its position and arrival time.
    let first_from = |from: u64| async move {
        let batch = log.read(from, 1, 1).await?;
        Ok::<_, ApiError>(
            batch
                .records
                .into_iter()
                .next()
                .filter(|r| r.offset < end)
                .map(|r| (r.offset, r.timestamp_ms)),
        )
    };
    // The smallest position whose first record (below `end`) arrived at or after `at_ms`, or
    // that has none: past it nothing arrived earlier.
    let (mut low, mut high) = (log.start_offset().await?.min(end), end);
    while low < high {
        let middle = low + (high - low) / 2;
        match first_from(middle).await? {
            Some((_, arrived)) if arrived < at_ms => low = middle + 1,
            _ => high = middle,
        }
    }
    Ok(first_from(low).await?.map_or(end, |(position, _)| position))
}

/// A read of one shard, planned under the stream's lock ([`Engine::plan_read`]).
pub(crate) struct ReadPlan {
    log: std::sync::Arc<dyn ShardLog>,
    pub(crate) index: u32,
    offset: u64,
    limit: usize,
    max_bytes: usize,
    /// A closed shard never reads past the end it had when it closed.
    end_exclusive: Option<u64>,
    pub(crate) layout: seq::Layout,
    pub(crate) created_s: u32,
    /// A closed shard's children, reported once it is read to its end.
    children: Option<Vec<ChildShard>>,
    /// A subscription's read ([`ShardLog::read_tail`]).
    pub(crate) tail: bool,
}

impl ReadPlan {
    /// Reads: `child_shards` is set once a closed shard is read to its end.
    pub(crate) async fn run(self, now_ms: i64) -> Result<ShardRead> {
        let ReadPlan {
            log,
            index,
            offset,
            limit,
            max_bytes,
            end_exclusive,
            layout,
            created_s,
            children,
            tail,
        } = self;
        let batch = if tail {
            log.read_tail(offset, limit, max_bytes).await?
        } else {
            log.read(offset, limit, max_bytes).await?
        };
        let mut next_offset = batch.next_offset.max(offset);
        let mut records = Vec::with_capacity(batch.records.len());
        let mut bytes = 0;
        let numbers = seq::ShardNumbers::new(created_s, index, layout);
        for record in batch.records {
            if end_exclusive.is_some_and(|end| record.offset >= end) {
                break;
            }
            next_offset = record.offset + 1;
            bytes += record.value.len() + record.key.len();
            records.push(OutRecord {
                offset: record.offset,
                sequence_number: numbers.encode(record.offset, (record.timestamp_ms / 1000) as u32),
                arrival_ms: record.timestamp_ms,
                data: record.value,
                partition_key: record.key,
                encrypted: record.encrypted,
            });
        }
        let tip = match end_exclusive {
            Some(end) => log.closed_end(end).await?,
            None => log.known_end_offset().await?,
        };
        let millis_behind_latest = match records.last() {
            Some(last) if next_offset < tip => (now_ms - last.arrival_ms).max(0),
            _ => 0,
        };
        // A closed shard is read to its end once everything below its end is durable and
        // the reader is past its last record: at the end itself, or finding nothing more
        // (positions need not be consecutive, so the last record may lie well below it).
        let drained = end_exclusive
            .is_some_and(|end| tip >= end && (next_offset >= end || records.is_empty()));
        if drained && let Some(end) = end_exclusive {
            next_offset = next_offset.max(end);
        }
        Ok(ShardRead {
            records,
            bytes,
            next_offset,
            millis_behind_latest,
            child_shards: if drained { children } else { None },
        })
    }
}

/// Whether PutRecord accepts `text` as a SequenceNumberForOrdering: any number the service
/// could have issued, of any shard or stream (a version-1 or a short number too), as on AWS;
/// and on a stream with shards of an earlier release, that stream's numbers in their layout.
fn ordering_number_valid(text: &str, meta: &StreamMeta) -> bool {
    let legacy = meta
        .shards
        .iter()
        .any(|s| s.seq_layout == crate::meta::SeqLayout::Legacy);
    if legacy && seq::decode_legacy(text, meta.stream_tag()).is_some() {
        return true;
    }
    !matches!(seq::decode(text), Decoded::Zero | Decoded::Invalid)
}

/// A put's stream-level data points: bytes and records as stored, entries throttled, and
/// entries that failed because their shard had closed before they landed.
fn observe_put(
    stream: &crate::Stream,
    batch: bool,
    stored_bytes: usize,
    total: usize,
    stored: usize,
    failed: usize,
    now_ms: i64,
) {
    let throttled = total - stored - failed;
    let observed: &[(Metric, f64)] = if batch {
        &[
            (Metric::PutRecordsBytes, stored_bytes as f64),
            (Metric::PutRecordsTotalRecords, total as f64),
            (Metric::PutRecordsSuccessfulRecords, stored as f64),
            (Metric::PutRecordsThrottledRecords, throttled as f64),
            (Metric::PutRecordsFailedRecords, failed as f64),
            (
                Metric::PutRecordsSuccess,
                if stored > 0 { 1.0 } else { 0.0 },
            ),
        ]
    } else {
        &[
            (Metric::PutRecordBytes, stored_bytes as f64),
            (Metric::PutRecordSuccess, stored as f64),
        ]
    };
    stream.observe_enabled(&[], None, observed, now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_group_by_route_in_entry_order_either_way() {
        for routes in [1, 3, 8, 600] {
            let mut state = 7usize;
            let routed: Vec<(usize, usize)> = (0..40)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (i, (state >> 33) % routes)
                })
                .collect();
            let mut expected = routed.clone();
            expected.sort_unstable_by_key(|&(i, at)| (at, i));
            let mut grouped = routed.clone();
            group_by_route(&mut grouped, routes);
            assert_eq!(grouped, expected, "{routes} routes");
        }
    }

    #[test]
    fn iterator_type_names_round_trip() {
        for name in [
            "AT_SEQUENCE_NUMBER",
            "AFTER_SEQUENCE_NUMBER",
            "TRIM_HORIZON",
            "LATEST",
            "AT_TIMESTAMP",
        ] {
            assert_eq!(
                IteratorType::parse(name).map(IteratorType::name),
                Some(name)
            );
        }
    }
}
