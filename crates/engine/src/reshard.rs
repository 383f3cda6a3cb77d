//! Resharding: SplitShard, MergeShards and UpdateShardCount (UNIFORM_SCALING).
//!
//! A call validates and records a `Pending` change and puts the stream in UPDATING; the change
//! takes effect when the update delay has passed (`Engine::settle`), as on AWS, where writes go
//! to the parent shards until the children exist. UpdateShardCount is carried out as a series
//! of two-way splits and merges (so every shard keeps at most two parents, as readers expect).

use crate::meta::{Pending, ShardMeta, StreamMeta, StreamMode, StreamStatus, shard_id};
use crate::{ApiError, Engine, ErrorKind, Result, StreamState, StreamTarget, hash, log_id};

/// Open shards one stream may have.
pub const SHARDS_PER_STREAM_MAX: u32 = 10_000;
/// UpdateShardCount calls allowed per stream in a rolling 24 hours.
pub const SCALINGS_PER_DAY_MAX: usize = 10;
/// Capacity-mode switches allowed per stream per rolling 24 h.
pub const MODE_SWITCHES_PER_DAY_MAX: usize = 2;
const DAY_MS: i64 = 86_400_000;

/// One step of a reshard.
enum Step {
    Split { shard: u32, new_start: u128 },
    Merge { shard: u32, adjacent: u32 },
}

impl Engine {
    /// Adds one more change to an update begun by `begin_update` in the same call.
    pub(crate) fn queue_update(
        &self,
        state: &mut StreamState,
        change: Pending,
        now_ms: i64,
    ) -> Result<()> {
        if state.meta.status == StreamStatus::Updating {
            state.meta.pending.push(change);
        } else {
            apply(self, state, &change, now_ms)?;
            state.rebuild_routes();
        }
        self.persist(&state.meta)
    }

    pub(crate) fn begin_update(
        &self,
        state: &mut StreamState,
        change: Pending,
        now_ms: i64,
    ) -> Result<()> {
        if self.config.update_stream_ms > 0 {
            state.meta.status = StreamStatus::Updating;
            state.meta.status_until_ms = Some(now_ms + self.config.update_stream_ms);
            state.meta.pending.push(change);
        } else {
            apply(self, state, &change, now_ms)?;
            state.rebuild_routes();
        }
        self.persist(&state.meta)
    }

    /// UpdateStreamMode: PROVISIONED ↔ ON_DEMAND, keeping the shards; the stream is UPDATING
    /// meanwhile. At most two switches per rolling 24 hours.
    pub fn update_stream_mode(
        &self,
        target: &StreamTarget<'_>,
        mode: StreamMode,
        now_ms: i64,
    ) -> Result<()> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let mut state = stream.state.write();
        let account = &self.config.account_id;
        self.require_active(&state)?;
        if state.meta.mode == mode {
            return Err(ApiError::invalid(format!(
                "Stream {name} under account {account} is already in {} mode.",
                mode.as_str()
            )));
        }
        if mode == StreamMode::Provisioned
            && state.meta.record_distribution == crate::meta::RecordDistribution::Auto
        {
            return Err(ApiError::invalid(format!(
                "Stream {name} under account {account} uses record distribution strategy \
                 AUTO, which PROVISIONED mode does not support. Set USER_PARTITION_KEY first."
            )));
        }
        if mode == StreamMode::Provisioned && !state.meta.channels.is_empty() {
            return Err(ApiError::in_use(format!(
                "Stream {name} under account {account} has channels, which only ON_DEMAND \
                 mode supports. Delete its channels with DeleteChannel before switching it to \
                 PROVISIONED mode."
            )));
        }
        if mode == StreamMode::Provisioned && !state.meta.queues.is_empty() {
            return Err(ApiError::in_use(format!(
                "Stream {name} under account {account} has queues, which only ON_DEMAND mode \
                 supports. Delete its queues with DeleteQueue before switching it to \
                 PROVISIONED mode."
            )));
        }
        state.meta.mode_switches_ms.retain(|t| now_ms - t < DAY_MS);
        if state.meta.mode_switches_ms.len() >= MODE_SWITCHES_PER_DAY_MAX {
            return Err(self.call_rate_exceeded(Some(&name)));
        }
        state.meta.mode_switches_ms.push(now_ms);
        self.begin_update(&mut state, Pending::Mode { mode }, now_ms)
    }

    /// A shard a reshard names, by its index (already read by `shard_arg`): missing is
    /// `Could not find shard …`, naming it as `shard_id` writes it.
    fn reshard_shard<'m>(&self, meta: &'m StreamMeta, index: u32) -> Result<&'m ShardMeta> {
        meta.shard(index).ok_or_else(|| {
            ApiError::not_found(format!(
                "Could not find shard {} in stream {} under account {}.",
                shard_id(index),
                meta.name,
                self.config.account_id
            ))
        })
    }

    /// A shard that has been split or merged cannot be again.
    fn require_open(&self, meta: &StreamMeta, shard: &ShardMeta) -> Result<()> {
        if shard.is_open() {
            return Ok(());
        }
        Err(ApiError::invalid(format!(
            "Shard {} in stream {} under account {} has already been merged or split, and thus \
             is not eligible for merging or splitting.",
            shard_id(shard.index),
            meta.name,
            self.config.account_id
        )))
    }

    /// SplitShard. AWS's order of checks: the shard id's form (before the stream is looked
    /// up), the stream, ACTIVE, the shard's existence, the shard limit, then the shard's
    /// state and the hash key.
    pub fn split_shard(
        &self,
        target: &StreamTarget<'_>,
        shard_to_split: &str,
        new_starting_hash_key: &str,
        now_ms: i64,
    ) -> Result<()> {
        let name = self.resolve(target)?;
        let index = self.shard_arg(&name, shard_to_split)?;
        let stream = self.stream(&name, now_ms)?;
        let open = self.open_shard_count();
        let mut state = stream.state.write();
        self.require_active(&state)?;
        let shard = self.reshard_shard(&state.meta, index)?;
        if open.saturating_add(1) > self.config.shard_limit {
            return Err(self.shard_limit_error(open, 1));
        }
        self.require_open(&state.meta, shard)?;
        let key = hash::parse_hash_key(new_starting_hash_key);
        let (start, end) = (shard.start(), shard.end());
        let valid = key.is_some_and(|k| k > start.saturating_add(1) && k < end);
        if !valid {
            return Err(ApiError::invalid(format!(
                "NewStartingHashKey {new_starting_hash_key} used in SplitShard() on shard {} in \
                 stream {name} under account {} is not both greater than one plus the shard's \
                 StartingHashKey {start} and less than the shard's EndingHashKey {end}.",
                shard_id(index),
                self.config.account_id
            )));
        }
        let change = Pending::Split {
            shard: index,
            new_start: new_starting_hash_key.into(),
        };
        self.begin_update(&mut state, change, now_ms)
    }

    /// MergeShards, in SplitShard's order of checks (a merge never raises the shard count, so
    /// there is no limit to check). The pair is ordered: AdjacentShardToMerge must start right
    /// after ShardToMerge ends, as on AWS.
    pub fn merge_shards(
        &self,
        target: &StreamTarget<'_>,
        shard_to_merge: &str,
        adjacent_shard_to_merge: &str,
        now_ms: i64,
    ) -> Result<()> {
        let name = self.resolve(target)?;
        let a = self.shard_arg(&name, shard_to_merge)?;
        let b = self.shard_arg(&name, adjacent_shard_to_merge)?;
        let stream = self.stream(&name, now_ms)?;
        let mut state = stream.state.write();
        self.require_active(&state)?;
        let a = self.reshard_shard(&state.meta, a)?;
        let b = self.reshard_shard(&state.meta, b)?;
        self.require_open(&state.meta, a)?;
        self.require_open(&state.meta, b)?;
        if !adjacent_in_order(a, b) {
            return Err(ApiError::invalid(format!(
                "Shards {} and {} in stream {name} under account {} are not an adjacent pair of \
                 shards eligible for merging",
                shard_id(a.index),
                shard_id(b.index),
                self.config.account_id
            )));
        }
        let change = Pending::Merge {
            shard: a.index,
            adjacent: b.index,
        };
        self.begin_update(&mut state, change, now_ms)
    }

    /// UpdateShardCount with UNIFORM_SCALING.
    pub fn update_shard_count(
        &self,
        target: &StreamTarget<'_>,
        target_shard_count: u32,
        now_ms: i64,
    ) -> Result<u32> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let account_open = self.open_shard_count();
        let mut state = stream.state.write();
        self.require_active(&state)?;
        let account = &self.config.account_id;
        if state.meta.mode == StreamMode::OnDemand {
            return Err(ApiError::new(
                ErrorKind::Validation,
                format!(
                    "UpdateShardCount is not supported for stream {name} under account \
                     {account} because it is in ON_DEMAND mode."
                ),
            ));
        }
        let current = state.meta.shards.iter().filter(|s| s.is_open()).count() as u32;
        let target = target_shard_count;
        if target > current.saturating_mul(2) {
            return Err(ApiError::invalid(format!(
                "UpdateShardCount target shard count {target} for stream {name} under account \
                 {account} is more than double the current open shard count {current}."
            )));
        }
        if target < current.div_ceil(2) {
            return Err(ApiError::invalid(format!(
                "UpdateShardCount target shard count {target} for stream {name} under account \
                 {account} is less than half the current open shard count {current}."
            )));
        }
        if target > SHARDS_PER_STREAM_MAX {
            return Err(ApiError::invalid(format!(
                "UpdateShardCount target shard count {target} for stream {name} under account \
                 {account} exceeds the maximum of {SHARDS_PER_STREAM_MAX} shards per stream."
            )));
        }
        if target > current && account_open + (target - current) > self.config.shard_limit {
            return Err(self.shard_limit_error(account_open, target - current));
        }
        state
            .meta
            .scaling_history_ms
            .retain(|t| now_ms - t < DAY_MS);
        if state.meta.scaling_history_ms.len() >= SCALINGS_PER_DAY_MAX {
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "Stream {name} under account {account} has already been scaled \
                     {SCALINGS_PER_DAY_MAX} times in the last 24 hours."
                ),
            ));
        }
        state.meta.scaling_history_ms.push(now_ms);
        if target != current {
            self.begin_update(&mut state, Pending::UniformScaling { target }, now_ms)?;
        } else {
            self.persist(&state.meta)?;
        }
        Ok(current)
    }
}

/// Applies a pending change at `at_ms`: closes parents, creates children, opens their logs.
pub(crate) fn apply(
    engine: &Engine,
    state: &mut StreamState,
    change: &Pending,
    at_ms: i64,
) -> Result<()> {
    let steps = match change {
        Pending::Split { shard, new_start } => {
            let key = hash::parse_hash_key(new_start)
                .ok_or_else(|| ApiError::internal("pending split has a bad hash key"))?;
            vec![Step::Split {
                shard: *shard,
                new_start: key,
            }]
        }
        Pending::Merge { shard, adjacent } => vec![Step::Merge {
            shard: *shard,
            adjacent: *adjacent,
        }],
        Pending::UniformScaling { target } => plan_uniform(state, *target),
        Pending::Mode { mode } => {
            state.meta.mode = *mode;
            if *mode == StreamMode::OnDemand {
                // The shards stay: the first scale-down step is a step's time away.
                state.meta.on_demand.last_down_ms = Some(at_ms);
            }
            return Ok(());
        }
        Pending::Encryption { encryption } => {
            state.meta.encryption = encryption.clone();
            return Ok(());
        }
    };
    for step in steps {
        apply_step(engine, state, step, at_ms)?;
    }
    Ok(())
}

/// Splits and merges that turn the open shards into `target` equal ranges.
fn plan_uniform(state: &mut StreamState, target: u32) -> Vec<Step> {
    // Work on a scratch copy of the open ranges, giving planned children the indexes that
    // `apply_step` will assign (it takes `next_shard_index` in the same order).
    let mut next = state.meta.next_shard_index;
    let mut open: Vec<(u128, u128, u32)> = state
        .meta
        .open_shards()
        .iter()
        .map(|s| (s.start(), s.end(), s.index))
        .collect();
    let boundaries: Vec<u128> = hash::initial_ranges(target)
        .iter()
        .skip(1)
        .map(|r| r.0)
        .collect();
    let mut steps = Vec::new();
    // Split every open shard at each target boundary strictly inside it.
    let mut pieces = Vec::new();
    for (start, end, index) in open.drain(..) {
        let (mut current_start, mut current_index) = (start, index);
        for &b in boundaries.iter().filter(|&&b| b > start && b <= end) {
            steps.push(Step::Split {
                shard: current_index,
                new_start: b,
            });
            pieces.push((current_start, b - 1, next));
            current_start = b;
            current_index = next + 1;
            next += 2;
        }
        pieces.push((current_start, end, current_index));
    }
    // Merge consecutive pieces that fall in the same target range.
    let ranges = hash::initial_ranges(target);
    for (lo, hi) in ranges {
        let members: Vec<(u128, u128, u32)> = pieces
            .iter()
            .copied()
            .filter(|p| p.0 >= lo && p.1 <= hi)
            .collect();
        let mut acc = match members.first() {
            Some(first) => first.2,
            None => continue,
        };
        for member in members.iter().skip(1) {
            steps.push(Step::Merge {
                shard: acc,
                adjacent: member.2,
            });
            acc = next;
            next += 1;
        }
    }
    steps
}

fn apply_step(engine: &Engine, state: &mut StreamState, step: Step, at_ms: i64) -> Result<()> {
    let close = |state: &mut StreamState, index: u32| -> Result<ShardMeta> {
        let end = match state.logs.get(&index) {
            Some(log) => log.close()?,
            None => 0,
        };
        let shard = state
            .meta
            .shards
            .iter_mut()
            .find(|s| s.index == index && s.is_open())
            .ok_or_else(|| ApiError::internal(format!("reshard of a closed shard {index}")))?;
        shard.closed_ms = Some(at_ms);
        shard.end_offset = Some(end);
        Ok(shard.clone())
    };
    let mut children = Vec::new();
    match step {
        Step::Split { shard, new_start } => {
            let parent = close(state, shard)?;
            let first = state.meta.next_shard_index;
            state.meta.next_shard_index += 2;
            children.push(child(
                first,
                Some(shard),
                None,
                parent.start(),
                new_start - 1,
                at_ms,
            ));
            children.push(child(
                first + 1,
                Some(shard),
                None,
                new_start,
                parent.end(),
                at_ms,
            ));
        }
        Step::Merge { shard, adjacent } => {
            // MergeShards checked this; UNIFORM_SCALING plans its merges low range first.
            debug_assert!(
                matches!(
                    (state.meta.shard(shard), state.meta.shard(adjacent)),
                    (Some(a), Some(b)) if adjacent_in_order(a, b)
                ),
                "merge of {shard} and {adjacent}: not adjacent in order"
            );
            let a = close(state, shard)?;
            let b = close(state, adjacent)?;
            let index = state.meta.next_shard_index;
            state.meta.next_shard_index += 1;
            let (start, end) = (a.start().min(b.start()), a.end().max(b.end()));
            children.push(child(index, Some(shard), Some(adjacent), start, end, at_ms));
        }
    }
    for shard in children {
        let log = engine.store.log(&log_id(&state.meta, shard.index))?;
        state.logs.insert(shard.index, log);
        state.meta.shards.push(shard);
    }
    Ok(())
}

/// Whether `b` starts right after `a` ends: what MergeShards requires of ShardToMerge (`a`)
/// and AdjacentShardToMerge (`b`), and what every planned merge passes.
fn adjacent_in_order(a: &ShardMeta, b: &ShardMeta) -> bool {
    a.index != b.index && a.end().checked_add(1) == Some(b.start())
}

fn child(
    index: u32,
    parent: Option<u32>,
    adjacent: Option<u32>,
    start: u128,
    end: u128,
    at_ms: i64,
) -> ShardMeta {
    ShardMeta {
        index,
        parent,
        adjacent_parent: adjacent,
        start_hash: start.to_string(),
        end_hash: end.to_string(),
        created_ms: at_ms,
        closed_ms: None,
        end_offset: None,
        seq_layout: crate::meta::SeqLayout::Aws,
        copied_end: None,
    }
}
