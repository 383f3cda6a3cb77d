//! Control-plane operations: stream lifecycle, descriptions, listings, tags, retention.

use std::collections::HashMap;
use std::sync::Arc;

use crate::meta::{
    RecordDistribution, ShardMeta, StreamMeta, StreamMode, StreamStatus, parse_shard_id, shard_id,
};
use crate::token::{Kind, Reader, Writer};
use crate::{ApiError, Engine, ErrorKind, Result, StreamState, StreamTarget, hash, log_id, seq};

/// Shards a new on-demand stream starts with.
/// Streams that may be CREATING or DELETING at once, per account.
pub const STREAMS_CREATING_MAX: usize = 5;
pub const ON_DEMAND_INITIAL_SHARDS: u32 = 4;
/// Retention a new stream gets.
pub const RETENTION_HOURS_DEFAULT: u32 = 24;
/// Shortest and longest retention AWS allows.
pub const RETENTION_HOURS_MIN: u32 = 24;
pub const RETENTION_HOURS_MAX: u32 = 8760;
/// Default and bounds of a stream's maximum record size.
pub const MAX_RECORD_SIZE_KIB_DEFAULT: u32 = 1024;
/// Tags a stream may carry.
pub const TAGS_PER_STREAM_MAX: usize = 50;
/// Tags one AddTagsToStream call may add.
pub const TAGS_PER_CALL_MAX: usize = 10;
/// On-demand streams an account may have (reported by DescribeLimits).
pub const ON_DEMAND_STREAM_COUNT_LIMIT: u32 = 50;

/// CreateStream arguments.
#[derive(Debug, Clone, Default)]
pub struct CreateStream {
    pub name: String,
    pub shard_count: Option<u32>,
    pub mode: Option<StreamMode>,
    pub tags: Vec<(String, String)>,
    pub max_record_size_kib: Option<u32>,
    pub record_distribution: Option<RecordDistribution>,
    pub warm_throughput_mibps: Option<u32>,
}

/// One shard as DescribeStream and ListShards show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub adjacent_parent_shard_id: Option<String>,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
    pub starting_sequence_number: String,
    pub ending_sequence_number: Option<String>,
}

/// What DescribeStream and DescribeStreamSummary report about a stream.
#[derive(Debug, Clone)]
pub struct StreamView {
    pub name: String,
    pub arn: String,
    pub stream_id: String,
    pub status: StreamStatus,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub created_ms: i64,
    pub open_shard_count: u32,
    pub max_record_size_kib: u32,
    pub consumer_count: u32,
    pub queue_count: u32,
    pub record_distribution: RecordDistribution,
    pub warm_throughput: Option<crate::WarmThroughput>,
    pub encryption: Option<crate::StreamEncryption>,
    /// Enabled shard-level metrics (enhanced monitoring), by API name.
    pub shard_level_metrics: Vec<String>,
}

/// DescribeStream output.
#[derive(Debug, Clone)]
pub struct StreamDescription {
    pub stream: StreamView,
    pub shards: Vec<ShardView>,
    pub has_more_shards: bool,
}

/// ListStreams output.
#[derive(Debug, Clone)]
pub struct StreamList {
    pub streams: Vec<StreamView>,
    pub has_more: bool,
    pub next_token: Option<String>,
}

/// ListShards shard filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardFilter {
    AfterShardId(u32),
    AtTrimHorizon,
    FromTrimHorizon,
    AtLatest,
    AtTimestamp(i64),
    FromTimestamp(i64),
}

/// ListShards arguments.
#[derive(Debug, Clone, Default)]
pub struct ListShards<'a> {
    pub target: StreamTarget<'a>,
    pub next_token: Option<&'a str>,
    pub exclusive_start_shard_id: Option<&'a str>,
    pub max_results: Option<u32>,
    pub stream_creation_timestamp_ms: Option<i64>,
    pub filter: Option<ShardFilter>,
}

/// ListShards output.
#[derive(Debug, Clone)]
pub struct ShardList {
    pub shards: Vec<ShardView>,
    pub next_token: Option<String>,
}

/// DescribeLimits output.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub shard_limit: u32,
    pub open_shard_count: u32,
    pub on_demand_stream_count: u32,
    pub on_demand_stream_count_limit: u32,
}

/// ListTagsForStream output.
#[derive(Debug, Clone)]
pub struct TagList {
    pub tags: Vec<(String, String)>,
    pub has_more: bool,
}

/// Whether AWS accepts `c` in a tag key or value: Unicode letters, digits, the space
/// character (not tabs or newlines, whatever the message says) and `_ . / = + - % @`.
fn valid_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_./=+-%@".contains(c)
}

/// The answer to AUTO record distribution on a provisioned stream.
pub(crate) fn auto_needs_on_demand(stream: &str, account: &str) -> ApiError {
    ApiError::invalid(format!(
        "Record distribution strategy AUTO is only supported for streams in ON_DEMAND mode. \
         Stream {stream} under account {account} is in PROVISIONED mode."
    ))
}

/// What a tag change does to a stream, for AWS's messages (`Failed to add tags to stream …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagChange {
    Add,
    Remove,
}

impl TagChange {
    fn verb(self) -> &'static str {
        match self {
            TagChange::Add => "add",
            TagChange::Remove => "remove",
        }
    }
}

/// Orders tag keys as AWS lists them: by UTF-16 code unit (Java's `String.compareTo`), which
/// puts U+E000..U+FFFF after the supplementary planes, unlike Rust's `str` order.
pub(crate) fn tag_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Sorts tags by key in AWS's order.
pub(crate) fn sort_tags(tags: &mut [(String, String)]) {
    tags.sort_by(|a, b| tag_key_order(&a.0, &b.0));
}

/// Adds `tags` to `current` (new values win), refusing to go past `TAGS_PER_STREAM_MAX` with
/// the error `too_many` gives.
pub(crate) fn merge_tags(
    current: &mut Vec<(String, String)>,
    tags: &[(String, String)],
    too_many: impl FnOnce() -> ApiError,
) -> Result<()> {
    let mut merged: std::collections::BTreeMap<String, String> = current.iter().cloned().collect();
    for (key, value) in tags {
        merged.insert(key.clone(), value.clone());
    }
    if merged.len() > TAGS_PER_STREAM_MAX {
        return Err(too_many());
    }
    *current = merged.into_iter().collect();
    sort_tags(current);
    Ok(())
}

/// The character check every tag change makes first.
pub(crate) fn check_tags<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    for (key, value) in tags {
        if !key.chars().all(valid_tag_char) || !value.chars().all(valid_tag_char) {
            return Err(ApiError::invalid(
                "Some tags contain invalid characters. Valid characters: Unicode letters, \
                 digits, white space, _ . / = + - % @.",
            ));
        }
    }
    Ok(())
}

impl Engine {
    /// The checks a stream's tag change makes, in AWS's order: characters, then `%` (which
    /// the first check lets through and a second one refuses, with a message that leaves out
    /// `%` and `.` from the allowed characters — AWS's words).
    pub(crate) fn check_stream_tags<'a>(
        &self,
        stream: &str,
        change: TagChange,
        tags: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<()> {
        check_tags(tags.clone())?;
        if tags
            .into_iter()
            .any(|(k, v)| k.contains('%') || v.contains('%'))
        {
            return Err(ApiError::invalid(format!(
                "Failed to {} tags {} stream {stream} under account {} because some tags \
                 contained illegal characters. The allowed characters are Unicode letters, \
                 white-spaces, '_',',','/','=','+','-','@'.",
                change.verb(),
                if change == TagChange::Add {
                    "to"
                } else {
                    "from"
                },
                self.config.account_id
            )));
        }
        Ok(())
    }

    /// AddTagsToStream's answer past `TAGS_PER_STREAM_MAX` tags: InvalidArgumentException, and
    /// the text says 10 (AWS's words, from before the limit was raised to 50).
    fn too_many_stream_tags(&self, stream: &str) -> ApiError {
        ApiError::invalid(format!(
            "Failed to add tags to stream {stream} under account {} because a given stream \
             cannot have more than 10 tags associated with it.",
            self.config.account_id
        ))
    }

    /// Reads a `ShardId` argument (`meta::parse_shard_id`); one AWS cannot read is
    /// ResourceNotFoundException naming it as sent. Checked before the stream is looked up.
    pub(crate) fn shard_arg(&self, stream: &str, text: &str) -> Result<u32> {
        parse_shard_id(text).ok_or_else(|| {
            ApiError::not_found(format!(
                "Could not find shard {text} in stream {stream} under account {}.",
                self.config.account_id
            ))
        })
    }
}

fn random_stream_id() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 23];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let mut id: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    id.insert(20, '-');
    Ok(id)
}

impl Engine {
    fn view(&self, meta: &StreamMeta) -> StreamView {
        StreamView {
            name: meta.name.clone(),
            arn: self.stream_arn(&meta.name),
            stream_id: meta.stream_id.clone(),
            status: meta.status,
            mode: meta.mode,
            retention_hours: meta.retention_hours,
            created_ms: meta.created_ms,
            open_shard_count: meta.shards.iter().filter(|s| s.is_open()).count() as u32,
            max_record_size_kib: meta.max_record_size_kib,
            consumer_count: meta.consumers.len() as u32,
            queue_count: meta.queues.len() as u32,
            record_distribution: meta.record_distribution,
            warm_throughput: self.warm_throughput(meta),
            encryption: meta.encryption.clone(),
            shard_level_metrics: meta.shard_level_metrics.clone(),
        }
    }

    pub(crate) fn shard_view(&self, meta: &StreamMeta, shard: &ShardMeta) -> ShardView {
        let created_s = (shard.created_ms / 1000) as u32;
        // Arrival 0 marks a position, not a record: AFTER_SEQUENCE_NUMBER of a shard's starting
        // number reads its first record, as on AWS.
        let starting = seq::encode(meta.seq_parts(shard, 0, 0));
        let ending = shard.end_offset.map(|end| {
            let closed_s = shard.closed_ms.map_or(created_s, |c| (c / 1000) as u32);
            seq::encode(meta.seq_parts(shard, end.saturating_sub(1), closed_s))
        });
        ShardView {
            shard_id: shard_id(shard.index),
            parent_shard_id: shard.parent.map(shard_id),
            adjacent_parent_shard_id: shard.adjacent_parent.map(shard_id),
            starting_hash_key: shard.start_hash.clone(),
            ending_hash_key: shard.end_hash.clone(),
            starting_sequence_number: starting.to_string(),
            ending_sequence_number: ending.map(|e| e.to_string()),
        }
    }

    /// CreateStream.
    pub fn create_stream(&self, request: CreateStream, now_ms: i64) -> Result<()> {
        let (mode, count) = match (request.mode, request.shard_count) {
            (Some(StreamMode::OnDemand), _) | (None, None) => {
                (StreamMode::OnDemand, ON_DEMAND_INITIAL_SHARDS)
            }
            (Some(StreamMode::Provisioned) | None, Some(count)) => (StreamMode::Provisioned, count),
            (Some(StreamMode::Provisioned), None) => {
                return Err(ApiError::invalid(
                    "ShardCount is required for streams in PROVISIONED mode.",
                ));
            }
        };
        if request.record_distribution == Some(RecordDistribution::Auto)
            && mode != StreamMode::OnDemand
        {
            return Err(auto_needs_on_demand(&request.name, &self.config.account_id));
        }
        let count = match request.warm_throughput_mibps {
            Some(_) if mode != StreamMode::OnDemand => {
                return Err(ApiError::invalid(format!(
                    "Warm throughput is only supported for streams in ON_DEMAND mode. Stream \
                     {} under account {} is in PROVISIONED mode.",
                    request.name, self.config.account_id
                )));
            }
            Some(mibps) => count.max(self.warm_shards(&request.name, mibps, now_ms)?),
            None => count,
        };
        // The characters first, as AddTagsToStream checks them, then the count.
        self.check_stream_tags(
            &request.name,
            TagChange::Add,
            request.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        if request.tags.len() > TAGS_PER_STREAM_MAX {
            return Err(ApiError::invalid(format!(
                "Failed to create stream {} under account {} because a stream can have at most \
                 {TAGS_PER_STREAM_MAX} tags.",
                request.name, self.config.account_id
            )));
        }
        // Settle a stream of this name whose deletion delay has passed, so it no longer blocks.
        if self.stream(&request.name, now_ms).is_ok() {
            return Err(ApiError::in_use(format!(
                "Stream {} under account {} already exists.",
                request.name, self.config.account_id
            )));
        }
        let open = self.open_shard_count();
        if open.saturating_add(count) > self.config.shard_limit {
            return Err(self.shard_limit_error(open, count));
        }
        // At most five streams CREATING or DELETING at once (settling those whose delay has
        // passed first).
        let names: Vec<String> = self.streams.read().keys().cloned().collect();
        let transitioning = names
            .iter()
            .filter_map(|name| self.stream(name, now_ms).ok())
            .filter(|stream| {
                matches!(
                    stream.state.read().meta.status,
                    StreamStatus::Creating | StreamStatus::Deleting
                )
            })
            .count();
        if transitioning >= STREAMS_CREATING_MAX {
            // AWS's words, grammar included.
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "This request would have exceed the limit on the number of streams that can \
                     simultaneously be in CREATING or DELETING for the account {}. Limit: \
                     {STREAMS_CREATING_MAX}.",
                    self.config.account_id
                ),
            ));
        }
        let shards: Vec<ShardMeta> = hash::initial_ranges(count)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| ShardMeta {
                index: i as u32,
                parent: None,
                adjacent_parent: None,
                start_hash: start.to_string(),
                end_hash: end.to_string(),
                created_ms: now_ms,
                closed_ms: None,
                end_offset: None,
                seq_layout: crate::meta::SeqLayout::Aws,
                copied_end: None,
            })
            .collect();
        let (status, until) = if self.config.create_stream_ms > 0 {
            (
                StreamStatus::Creating,
                Some(now_ms + self.config.create_stream_ms),
            )
        } else {
            (StreamStatus::Active, None)
        };
        let mut tags = request.tags;
        sort_tags(&mut tags);
        tags.dedup_by(|a, b| a.0 == b.0);
        let meta = StreamMeta {
            key: format!("{}{}.{now_ms}", self.config.namespace, request.name),
            name: request.name.clone(),
            stream_id: random_stream_id()?,
            created_ms: now_ms,
            status,
            status_until_ms: until,
            pending: Vec::new(),
            mode,
            retention_hours: RETENTION_HOURS_DEFAULT,
            max_record_size_kib: request
                .max_record_size_kib
                .unwrap_or(MAX_RECORD_SIZE_KIB_DEFAULT),
            next_shard_index: count,
            shards,
            tags,
            scaling_history_ms: Vec::new(),
            consumers: Vec::new(),
            mode_switches_ms: Vec::new(),
            record_distribution: request.record_distribution.unwrap_or_default(),
            warm_throughput_mibps: request.warm_throughput_mibps,
            resource_policy: None,
            encryption: None,
            encryption_changes_ms: Vec::new(),
            shard_level_metrics: Vec::new(),
            queues: Vec::new(),
            channels: Vec::new(),
            on_demand: Default::default(),
        };
        let mut logs = HashMap::new();
        for shard in &meta.shards {
            logs.insert(shard.index, self.store.log(&log_id(&meta, shard.index))?);
        }
        let mut streams = self.streams.write();
        if streams.contains_key(&request.name) {
            return Err(ApiError::in_use(format!(
                "Stream {} under account {} already exists.",
                request.name, self.config.account_id
            )));
        }
        self.persist(&meta)?;
        let mut state = StreamState {
            meta,
            logs,
            routes: Vec::new(),
            route_index: hash::StartIndex::default(),
        };
        state.rebuild_routes();
        streams.insert(request.name, Arc::new(self.new_stream(state)));
        Ok(())
    }

    /// UpdateStreamRecordDistributionStrategy: takes effect at once, for new records.
    pub fn update_record_distribution(
        &self,
        target: &StreamTarget<'_>,
        strategy: RecordDistribution,
        now_ms: i64,
    ) -> Result<()> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let mut state = stream.state.write();
        if strategy == RecordDistribution::Auto && state.meta.mode != StreamMode::OnDemand {
            return Err(auto_needs_on_demand(&name, &self.config.account_id));
        }
        self.require_active(&state)?;
        state.meta.record_distribution = strategy;
        self.persist(&state.meta)
    }

    /// DeleteStream. A stream with registered consumers is deleted only with
    /// `enforce_consumer_deletion`, which deregisters them.
    pub fn delete_stream(
        &self,
        target: &StreamTarget<'_>,
        enforce_consumer_deletion: bool,
        now_ms: i64,
    ) -> Result<()> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        self.settle_consumers(&name, &stream, now_ms)?;
        let meta = {
            let mut state = stream.state.write();
            if state.meta.status == StreamStatus::Deleting {
                return Ok(());
            }
            if !state.meta.channels.is_empty() {
                return Err(ApiError::in_use(format!(
                    "DeleteStream can\u{2019}t delete {account}:{name} because there are \
                     channels associated with this data stream. Delete every channel on {name} \
                     with DeleteChannel first.",
                    account = self.config.account_id
                )));
            }
            if !state.meta.queues.is_empty() {
                return Err(ApiError::in_use(format!(
                    "DeleteStream can\u{2019}t delete {account}:{name} because there are \
                     queues associated with this data stream. Delete every queue on {name} \
                     with DeleteQueue first.",
                    account = self.config.account_id
                )));
            }
            if !state.meta.consumers.is_empty() {
                if !enforce_consumer_deletion {
                    return Err(ApiError::in_use(format!(
                        "DeleteStream can\u{2019}t delete {account}:{name} because there are \
                         consumers associated with this data stream. To delete {name} anyway, \
                         set the EnforceConsumerDeletion parameter to true to force the \
                         deletion of all the consumers that are associated with it.",
                        account = self.config.account_id
                    )));
                }
                state.meta.consumers.clear();
            }
            state.meta.status = StreamStatus::Deleting;
            state.meta.pending.clear();
            state.meta.status_until_ms = Some(now_ms + self.config.delete_stream_ms);
            state.meta.clone()
        };
        if self.config.delete_stream_ms > 0 {
            self.persist(&meta)
        } else {
            self.remove_stream(&name, &meta)
        }
    }

    /// DescribeStream.
    pub fn describe_stream(
        &self,
        target: &StreamTarget<'_>,
        limit: Option<u32>,
        exclusive_start_shard_id: Option<&str>,
        now_ms: i64,
    ) -> Result<StreamDescription> {
        let (_, stream) = self.stream_by_target(target, now_ms)?;
        let state = stream.state.read();
        let limit = limit.unwrap_or(100) as usize;
        let after = exclusive_start_shard_id.map(|id| parse_shard_id(id).map_or(-1, i64::from));
        let mut shards: Vec<&ShardMeta> = state
            .meta
            .shards
            .iter()
            .filter(|s| after.is_none_or(|a| i64::from(s.index) > a))
            .collect();
        shards.sort_by_key(|s| s.index);
        let has_more = shards.len() > limit;
        let shards = shards
            .into_iter()
            .take(limit)
            .map(|s| self.shard_view(&state.meta, s))
            .collect();
        Ok(StreamDescription {
            stream: self.view(&state.meta),
            shards,
            has_more_shards: has_more,
        })
    }

    /// DescribeStreamSummary.
    pub fn describe_stream_summary(
        &self,
        target: &StreamTarget<'_>,
        now_ms: i64,
    ) -> Result<StreamView> {
        let (_, stream) = self.stream_by_target(target, now_ms)?;
        let state = stream.state.read();
        Ok(self.view(&state.meta))
    }

    /// ListStreams.
    pub fn list_streams(
        &self,
        limit: Option<u32>,
        exclusive_start_stream_name: Option<&str>,
        next_token: Option<&str>,
        now_ms: i64,
    ) -> Result<StreamList> {
        let mut after = exclusive_start_stream_name.map(str::to_string);
        if let Some(token) = next_token {
            let payload = self
                .tokens
                .open(Kind::ListStreams, token)
                .ok_or_else(|| ApiError::invalid(format!("Invalid NextToken: {token}")))?;
            let mut reader = Reader(&payload);
            let (last, issued) = reader
                .str()
                .zip(reader.i64())
                .ok_or_else(|| ApiError::invalid(format!("Invalid NextToken: {token}")))?;
            crate::check_token_age(token, issued, now_ms)?;
            after = Some(last);
        }
        // Advance lifecycles first so listings never show a stream past its deletion.
        let names: Vec<String> = self.streams.read().keys().cloned().collect();
        for name in &names {
            let _ = self.stream(name, now_ms);
        }
        let limit = limit.unwrap_or(100).min(100) as usize;
        let streams = self.streams.read();
        let mut views = Vec::new();
        let mut has_more = false;
        for (name, stream) in streams.iter() {
            if after.as_deref().is_some_and(|a| name.as_str() <= a) {
                continue;
            }
            if views.len() == limit {
                has_more = true;
                break;
            }
            views.push(self.view(&stream.state.read().meta));
        }
        let next_token = match (has_more, views.last()) {
            (true, Some(last)) => Some(self.tokens.seal(
                Kind::ListStreams,
                &Writer::default().str(&last.name).i64(now_ms).0,
            )),
            _ => None,
        };
        Ok(StreamList {
            streams: views,
            has_more,
            next_token,
        })
    }

    /// ListShards.
    pub fn list_shards(&self, request: &ListShards<'_>, now_ms: i64) -> Result<ShardList> {
        let given_stream = request.target.name.is_some() || request.target.arn.is_some();
        let (name, created, after, filter) = match request.next_token {
            Some(token) => {
                if given_stream {
                    return Err(ApiError::invalid(
                        "NextToken and StreamName cannot be provided together.",
                    ));
                }
                self.open_list_shards_token(token, now_ms)?
            }
            None => {
                if !given_stream {
                    return Err(ApiError::invalid(
                        "Either NextToken or StreamName should be provided.",
                    ));
                }
                let name = self.resolve(&request.target)?;
                let after = request
                    .exclusive_start_shard_id
                    .map(|id| parse_shard_id(id).map_or(-1, i64::from));
                (
                    name,
                    request.stream_creation_timestamp_ms,
                    after,
                    request.filter,
                )
            }
        };
        let stream = self.stream(&name, now_ms)?;
        let state = stream.state.read();
        if let Some(created) = created
            && created / 1000 != state.meta.created_ms / 1000
        {
            return Err(self.not_found(&name));
        }
        let retention_ms = i64::from(state.meta.retention_hours) * 3_600_000;
        let trim_horizon_ms = now_ms - retention_ms;
        let mut after = after;
        if let Some(ShardFilter::AfterShardId(index)) = filter {
            after = Some(after.map_or(i64::from(index), |a| a.max(i64::from(index))));
        }
        let open_at =
            |s: &ShardMeta, t: i64| s.created_ms <= t && s.closed_ms.is_none_or(|c| c > t);
        let mut shards: Vec<&ShardMeta> = state
            .meta
            .shards
            .iter()
            .filter(|s| after.is_none_or(|a| i64::from(s.index) > a))
            .filter(|s| match filter {
                None | Some(ShardFilter::AfterShardId(_)) | Some(ShardFilter::FromTrimHorizon) => {
                    true
                }
                Some(ShardFilter::AtLatest) => s.is_open(),
                Some(ShardFilter::AtTrimHorizon) => {
                    // Shards open at the trim horizon; for a stream younger than its
                    // retention, the shards it was created with.
                    open_at(s, trim_horizon_ms.max(state.meta.created_ms))
                }
                Some(ShardFilter::AtTimestamp(t)) => open_at(s, t.max(state.meta.created_ms)),
                Some(ShardFilter::FromTimestamp(t)) => s.closed_ms.is_none_or(|c| c > t),
            })
            .collect();
        shards.sort_by_key(|s| s.index);
        let limit = request.max_results.unwrap_or(1000).min(10_000) as usize;
        let more = shards.len() > limit;
        shards.truncate(limit);
        let next_token = match (more, shards.last()) {
            (true, Some(last)) => {
                Some(self.list_shards_token(&state.meta, last.index, filter, now_ms))
            }
            _ => None,
        };
        let shards = shards
            .into_iter()
            .map(|s| self.shard_view(&state.meta, s))
            .collect();
        Ok(ShardList { shards, next_token })
    }

    fn list_shards_token(
        &self,
        meta: &StreamMeta,
        last: u32,
        filter: Option<ShardFilter>,
        now_ms: i64,
    ) -> String {
        let (code, arg) = match filter {
            None => (0u32, 0i64),
            Some(ShardFilter::AfterShardId(i)) => (1, i64::from(i)),
            Some(ShardFilter::AtTrimHorizon) => (2, 0),
            Some(ShardFilter::FromTrimHorizon) => (3, 0),
            Some(ShardFilter::AtLatest) => (4, 0),
            Some(ShardFilter::AtTimestamp(t)) => (5, t),
            Some(ShardFilter::FromTimestamp(t)) => (6, t),
        };
        let payload = Writer::default()
            .str(&meta.name)
            .i64(meta.created_ms)
            .u32(last)
            .u32(code)
            .i64(arg)
            .i64(now_ms)
            .0;
        self.tokens.seal(Kind::ListShards, &payload)
    }

    #[allow(clippy::type_complexity)]
    fn open_list_shards_token(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<(String, Option<i64>, Option<i64>, Option<ShardFilter>)> {
        let invalid = || ApiError::invalid(format!("Invalid ListShards NextToken: {token}"));
        let payload = self
            .tokens
            .open(Kind::ListShards, token)
            .ok_or_else(invalid)?;
        let mut r = Reader(&payload);
        let name = r.str().ok_or_else(invalid)?;
        let created = r.i64().ok_or_else(invalid)?;
        let last = r.u32().ok_or_else(invalid)?;
        let code = r.u32().ok_or_else(invalid)?;
        let arg = r.i64().ok_or_else(invalid)?;
        let issued = r.i64().ok_or_else(invalid)?;
        crate::check_token_age(token, issued, now_ms)?;
        let filter = match code {
            0 => None,
            1 => Some(ShardFilter::AfterShardId(
                u32::try_from(arg).map_err(|_| invalid())?,
            )),
            2 => Some(ShardFilter::AtTrimHorizon),
            3 => Some(ShardFilter::FromTrimHorizon),
            4 => Some(ShardFilter::AtLatest),
            5 => Some(ShardFilter::AtTimestamp(arg)),
            6 => Some(ShardFilter::FromTimestamp(arg)),
            _ => return Err(invalid()),
        };
        Ok((name, Some(created), Some(i64::from(last)), filter))
    }

    pub(crate) fn require_active(&self, state: &StreamState) -> Result<()> {
        if state.meta.status != StreamStatus::Active {
            return Err(ApiError::in_use(format!(
                "Stream {} under account {} not ACTIVE, instead in state {}",
                state.meta.name,
                self.config.account_id,
                state.meta.status.as_str()
            )));
        }
        Ok(())
    }

    /// IncreaseStreamRetentionPeriod (`increase`) and DecreaseStreamRetentionPeriod.
    pub fn change_retention(
        &self,
        target: &StreamTarget<'_>,
        hours: u32,
        increase: bool,
        now_ms: i64,
    ) -> Result<()> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let mut state = stream.state.write();
        self.require_active(&state)?;
        if hours < RETENTION_HOURS_MIN {
            return Err(ApiError::invalid(format!(
                "Minimum allowed retention period is {RETENTION_HOURS_MIN} hours. Requested \
                 retention period ({hours} hours) is too short."
            )));
        }
        if hours > RETENTION_HOURS_MAX {
            return Err(ApiError::invalid(format!(
                "Maximum allowed retention period is {RETENTION_HOURS_MAX} hours. Requested \
                 retention period ({hours} hours) is too long."
            )));
        }
        let current = state.meta.retention_hours;
        if increase && hours < current {
            return Err(ApiError::invalid(format!(
                "Requested retention period ({hours} hours) for stream {name} can not be shorter \
                 than existing retention period ({current} hours). Use DecreaseRetentionPeriod API."
            )));
        }
        if !increase && hours > current {
            return Err(ApiError::invalid(format!(
                "Requested retention period ({hours} hours) for stream {name} can not be longer \
                 than existing retention period ({current} hours). Use IncreaseRetentionPeriod API."
            )));
        }
        state.meta.retention_hours = hours;
        self.persist(&state.meta)
    }

    /// AddTagsToStream and TagResource.
    pub fn add_tags(
        &self,
        target: &StreamTarget<'_>,
        tags: &[(String, String)],
        now_ms: i64,
    ) -> Result<()> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        self.check_stream_tags(
            &name,
            TagChange::Add,
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        let mut state = stream.state.write();
        merge_tags(&mut state.meta.tags, tags, || {
            self.too_many_stream_tags(&name)
        })?;
        self.persist(&state.meta)
    }

    /// RemoveTagsFromStream and UntagResource.
    pub fn remove_tags(
        &self,
        target: &StreamTarget<'_>,
        keys: &[String],
        now_ms: i64,
    ) -> Result<()> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        self.check_stream_tags(
            &name,
            TagChange::Remove,
            keys.iter().map(|k| (k.as_str(), "")),
        )?;
        let mut state = stream.state.write();
        state.meta.tags.retain(|(k, _)| !keys.contains(k));
        self.persist(&state.meta)
    }

    /// ListTagsForStream: keys in AWS's order (UTF-16 code units); `exclusive_start_key` need
    /// not be a key (those strictly after it are listed); `has_more` iff keys remain.
    pub fn list_tags(
        &self,
        target: &StreamTarget<'_>,
        exclusive_start_key: Option<&str>,
        limit: Option<u32>,
        now_ms: i64,
    ) -> Result<TagList> {
        let (_, stream) = self.stream_by_target(target, now_ms)?;
        let state = stream.state.read();
        let limit = limit.unwrap_or(u32::MAX) as usize;
        let mut tags: Vec<(String, String)> = state
            .meta
            .tags
            .iter()
            .filter(|(k, _)| {
                exclusive_start_key.is_none_or(|start| tag_key_order(k, start).is_gt())
            })
            .cloned()
            .collect();
        // Stores written before tags were kept in this order are sorted by code point.
        sort_tags(&mut tags);
        let has_more = tags.len() > limit;
        tags.truncate(limit);
        Ok(TagList { tags, has_more })
    }

    /// UpdateMaxRecordSize.
    pub fn update_max_record_size(
        &self,
        target: &StreamTarget<'_>,
        kib: u32,
        now_ms: i64,
    ) -> Result<()> {
        let (_, stream) = self.stream_by_target(target, now_ms)?;
        let mut state = stream.state.write();
        self.require_active(&state)?;
        state.meta.max_record_size_kib = kib;
        self.persist(&state.meta)
    }

    /// DescribeLimits.
    pub fn describe_limits(&self) -> Limits {
        let on_demand = self
            .streams
            .read()
            .values()
            .filter(|s| s.state.read().meta.mode == StreamMode::OnDemand)
            .count() as u32;
        Limits {
            shard_limit: self.config.shard_limit,
            open_shard_count: self.open_shard_count(),
            on_demand_stream_count: on_demand,
            on_demand_stream_count_limit: ON_DEMAND_STREAM_COUNT_LIMIT,
        }
    }
}
