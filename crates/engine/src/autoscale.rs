//! On-demand streams scale themselves at AWS's documented pace ("Choose the data stream
//! capacity mode"): a new stream writes 4 MiB/s (4 shards); it takes, without throttling, up
//! to twice the peak write throughput it *accepted* in the last 30 days; traffic that grows
//! beyond that within 15 minutes is throttled while capacity is added; and capacity comes
//! back down gradually once the peak has left the window.
//!
//! The model, in shards' worth of write capacity (1 MiB/s and 1,000 records/s each, times
//! `limits_scale`):
//! - every shard's accepted writes are metered per second ([`Meter`]); the stream's *load*
//!   is its accepted writes averaged over [`SUSTAIN_SECONDS`], so a one-second burst the
//!   buckets let through does not count as a peak;
//! - the stream's peak load of each day is written down in its metadata ([`History`]), so
//!   the 30-day window survives restarts and leader changes;
//! - its *target* capacity is twice the window's peak, at least 4 shards (or its warm
//!   throughput);
//! - a scale-up step happens at most once per [`STEP_UP_MS`] (15 minutes): it splits the
//!   busiest shards, each at most once, until the target is met (so one step at most doubles
//!   the stream, and a spike of 10 times the capacity is absorbed in 4 steps); it also
//!   splits every shard above [`HOT_SHARE`] of its capacity, sustained, since such a shard
//!   could not take twice its load (AWS splits a shard above ~500 KiB/s), so uneven keys
//!   and uneven ranges get the same headroom;
//! - a scale-down step happens at most once per [`STEP_DOWN_MS`] (6 hours), once the open
//!   shards exceed the target: it merges cold adjacent pairs, at most halving the stream;
//! - every duration above is divided by `EngineConfig::on_demand_time_scale` (60 makes 15
//!   minutes pass in 15 s); the meters' seconds are real seconds.
//!
//! The splits and merges go through UPDATING like SplitShard and MergeShards, so lineage
//! shows in ListShards and readers follow ChildShards. Shards come from the account's quota:
//! a step it cuts short is counted ([`Engine::on_demand_view`]) and logged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::limits::{WRITE_BYTES_PER_SECOND, WRITE_RECORDS_PER_SECOND};
use crate::meta::{Pending, StreamMeta, StreamMode, StreamStatus};
use crate::{Engine, Result, Stream};

/// Seconds over which a shard's (and the stream's) load is averaged.
pub const SUSTAIN_SECONDS: i64 = 5;
/// Seconds of per-second meter readings kept in memory.
pub const PEAK_WINDOW_SECONDS: i64 = 60;
/// A shard above this share of its capacity, sustained, is split at the next step (it could
/// not take twice its load); a pair of adjacent shards below it together may merge.
const HOT_SHARE: f64 = 0.5;
/// Shards (MiB/s) of a new on-demand stream, and the least it scales down to.
pub const INITIAL_SHARDS: u32 = 4;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
/// At most one scale-up step per this long (AWS's pace).
pub const STEP_UP_MS: i64 = 15 * MINUTE_MS;
/// At most one scale-down step per this long (AWS's pace).
pub const STEP_DOWN_MS: i64 = 6 * 60 * MINUTE_MS;
/// How long a peak is remembered (AWS's pace).
pub const PEAK_WINDOW_MS: i64 = 30 * DAY_MS;
/// Peaks are kept per this long (AWS's pace).
const PEAK_PERIOD_MS: i64 = DAY_MS;
/// A period's peak is written down again when it grew by more than this factor.
const PEAK_GROWTH: f64 = 1.02;

/// Per-second write totals of one shard.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    /// (epoch second, bytes, records), oldest first, at most a window's worth.
    seconds: VecDeque<(i64, f64, f64)>,
}

impl Meter {
    pub(crate) fn record(&mut self, bytes: usize, records: usize, now_ms: i64) {
        self.record_amount(bytes as f64, records as f64, now_ms);
    }

    /// Records writes another node metered (cluster mode), as of `now_ms`.
    pub(crate) fn record_amount(&mut self, bytes: f64, records: f64, now_ms: i64) {
        let second = now_ms.div_euclid(1000);
        // Another node's second may come after this node moved on: it joins the latest.
        match self.seconds.back_mut() {
            Some(last) if last.0 >= second => {
                last.1 += bytes;
                last.2 += records;
            }
            _ => self.seconds.push_back((second, bytes, records)),
        }
        while self
            .seconds
            .front()
            .is_some_and(|s| s.0 <= second - PEAK_WINDOW_SECONDS)
        {
            self.seconds.pop_front();
        }
    }

    /// Average bytes and records per second over the `seconds` complete seconds before
    /// `now_ms`'s.
    fn average(&self, seconds: i64, now_ms: i64) -> (f64, f64) {
        let current = now_ms.div_euclid(1000);
        let (bytes, records) = self
            .seconds
            .iter()
            .filter(|s| s.0 < current && s.0 >= current - seconds)
            .fold((0.0, 0.0), |acc, s| (acc.0 + s.1, acc.1 + s.2));
        (bytes / seconds as f64, records / seconds as f64)
    }

    fn per_second(&self) -> impl Iterator<Item = &(i64, f64, f64)> {
        self.seconds.iter()
    }
}

/// What an on-demand stream's capacity follows, kept in its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The peak load of each period (a day at AWS's pace) still in the window: (period
    /// start in ms, load in thousandths of a shard's capacity), oldest first.
    #[serde(default)]
    pub peaks: Vec<(i64, u64)>,
    /// When the last scale-up step began.
    #[serde(default)]
    pub last_up_ms: Option<i64>,
    /// When the last scale-down step (or a release of warm capacity) began.
    #[serde(default)]
    pub last_down_ms: Option<i64>,
}

impl History {
    /// Nothing recorded (a provisioned stream, or an on-demand one that never took writes).
    pub fn is_empty(&self) -> bool {
        self.peaks.is_empty() && self.last_up_ms.is_none() && self.last_down_ms.is_none()
    }

    /// Drops periods that left the window and writes `load` down as the current period's
    /// peak if it is one; says whether anything changed.
    fn record(&mut self, load: f64, now_ms: i64, period_ms: i64, window_ms: i64) -> bool {
        let before = self.peaks.len();
        self.peaks
            .retain(|&(start, _)| start + period_ms > now_ms - window_ms);
        let mut changed = self.peaks.len() != before;
        let milli = (load * 1000.0).round() as u64;
        if milli == 0 {
            return changed;
        }
        let start = now_ms - now_ms.rem_euclid(period_ms);
        match self.peaks.last_mut() {
            Some((at, peak)) if *at == start => {
                if milli as f64 > *peak as f64 * PEAK_GROWTH {
                    *peak = milli;
                    changed = true;
                }
            }
            _ => {
                self.peaks.push((start, milli));
                changed = true;
            }
        }
        changed
    }

    /// The window's peak load, in shards' worth of capacity.
    fn peak(&self) -> f64 {
        self.peaks.iter().map(|&(_, p)| p).max().unwrap_or(0) as f64 / 1000.0
    }
}

/// An on-demand stream's capacity as the scaler sees it (metrics and the console).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnDemandView {
    /// The stream's load now (accepted writes, averaged), in shards' worth of capacity.
    pub load_shards: f64,
    /// The peak load of the window, in shards' worth of capacity.
    pub peak_shards: f64,
    /// The open shards the stream scales towards: twice the peak, at least its floor.
    pub target_shards: u32,
    /// Scale-up steps the account's shard quota cut short, since the server started.
    pub shard_limit_hits: u64,
}

impl Stream {
    /// Meters a write of `records` records, `bytes` in all, to shard `index`.
    pub(crate) fn meter_write(&self, index: u32, bytes: usize, records: usize, now_ms: i64) {
        self.meters
            .lock()
            .entry(index)
            .or_default()
            .record(bytes, records, now_ms);
        if self.metrics.sharing() {
            let mut outbox = self.write_outbox.lock();
            let written = outbox.entry(index).or_default();
            written.0 += bytes as f64;
            written.1 += records as f64;
        }
    }
}

/// A shard's (or the stream's) load: the larger of its bytes' and records' share of one
/// shard's capacity.
fn share(bytes: f64, records: f64, capacity: (f64, f64)) -> f64 {
    (bytes / capacity.0).max(records / capacity.1)
}

/// The open shards an on-demand stream scales towards: twice `peak`, at least `floor`.
fn target_for(peak: f64, floor: u32) -> u32 {
    // A peak measured a hair over a whole number of shards does not ask for one more.
    let doubled = (2.0 * peak - 1e-6).ceil().max(0.0) as u32;
    doubled
        .max(floor)
        .min(crate::reshard::SHARDS_PER_STREAM_MAX)
}

/// A scale-up step: the hot shards, then the busiest, until `target` is met, each split once
/// at the middle of its range, at most `room` of them. Says whether `room` cut it short.
fn plan_up(
    open: &[(u32, u128, u128)],
    load: &[(u32, f64)],
    hot: Vec<u32>,
    target: u32,
    room: usize,
) -> (Vec<Pending>, bool) {
    let count = open.len() as u32;
    let mut split = hot;
    let mut busiest = load.to_vec();
    busiest.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (index, _) in &busiest {
        if count + split.len() as u32 >= target {
            break;
        }
        if !split.contains(index) {
            split.push(*index);
        }
    }
    let limited = split.len() > room;
    split.truncate(room);
    let splits = split
        .into_iter()
        .filter_map(|index| {
            let &(_, start, end) = open.iter().find(|s| s.0 == index)?;
            // A one-key shard cannot split.
            (end > start).then(|| Pending::Split {
                shard: index,
                new_start: (start + (end - start) / 2 + 1).to_string(),
            })
        })
        .collect();
    (splits, limited)
}

/// A scale-down step: at most `excess` merges of cold adjacent pairs (together below
/// [`HOT_SHARE`]), coldest first, each shard in one pair at most (so at most a halving).
/// `open` is sorted by hash range and `load` follows it.
fn plan_down(open: &[(u32, u128, u128)], load: &[(u32, f64)], excess: u32) -> Vec<Pending> {
    let mut pairs: Vec<(usize, f64)> = (0..open.len().saturating_sub(1))
        .filter(|&i| open[i].2.checked_add(1) == Some(open[i + 1].1))
        .map(|i| (i, load[i].1 + load[i + 1].1))
        .filter(|&(_, combined)| combined < HOT_SHARE)
        .collect();
    pairs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut taken = vec![false; open.len()];
    let mut merges = Vec::new();
    for (i, _) in pairs {
        if merges.len() as u32 >= excess {
            break;
        }
        if taken[i] || taken[i + 1] {
            continue;
        }
        taken[i] = true;
        taken[i + 1] = true;
        merges.push(Pending::Merge {
            shard: open[i].0,
            adjacent: open[i + 1].0,
        });
    }
    merges
}

impl Engine {
    /// `aws_ms` of AWS's on-demand pace, at this engine's time scale.
    fn on_demand_ms(&self, aws_ms: i64) -> i64 {
        ((aws_ms as f64) / self.config.on_demand_time_scale).max(1.0) as i64
    }

    /// One shard's write capacity: bytes and records per second.
    fn shard_write_capacity(&self) -> (f64, f64) {
        let scale = self.config.limits_scale.unwrap_or(1.0);
        (
            WRITE_BYTES_PER_SECOND * scale,
            WRITE_RECORDS_PER_SECOND * scale,
        )
    }

    /// The least an on-demand stream scales down to: 4 shards, or its warm throughput.
    fn on_demand_floor(meta: &StreamMeta) -> u32 {
        INITIAL_SHARDS.max(meta.warm_throughput_mibps.unwrap_or(0))
    }

    /// Each open shard's sustained load, and the stream's, in shards' worth of capacity.
    fn loads(&self, stream: &Stream, open: &[u32], now_ms: i64) -> (Vec<(u32, f64)>, f64) {
        let capacity = self.shard_write_capacity();
        let meters = stream.meters.lock();
        let per_shard = open
            .iter()
            .map(|index| {
                let load = meters.get(index).map_or(0.0, |meter| {
                    let (bytes, records) = meter.average(SUSTAIN_SECONDS, now_ms);
                    share(bytes, records, capacity)
                });
                (*index, load)
            })
            .collect();
        // Shards closed within the window wrote part of it: the stream counts them too.
        let (bytes, records) = meters
            .values()
            .map(|meter| meter.average(SUSTAIN_SECONDS, now_ms))
            .fold((0.0, 0.0), |acc, m| (acc.0 + m.0, acc.1 + m.1));
        (per_shard, share(bytes, records, capacity))
    }

    /// The stream's highest one-second load of the last minute, in shards' worth.
    fn recent_peak(&self, stream: &Stream, now_ms: i64) -> f64 {
        let capacity = self.shard_write_capacity();
        let current = now_ms.div_euclid(1000);
        let mut totals: HashMap<i64, (f64, f64)> = HashMap::new();
        for meter in stream.meters.lock().values() {
            for &(second, bytes, records) in meter.per_second() {
                if second < current && second >= current - PEAK_WINDOW_SECONDS {
                    let total = totals.entry(second).or_default();
                    total.0 += bytes;
                    total.1 += records;
                }
            }
        }
        totals
            .values()
            .map(|&(bytes, records)| share(bytes, records, capacity))
            .fold(0.0, f64::max)
    }

    /// Scales an ACTIVE on-demand stream one step up or down when its load calls for it and
    /// the pace allows; writes its new peaks down. Called once a second by the tick.
    pub(crate) fn autoscale(&self, stream: &Stream, now_ms: i64) -> Result<()> {
        let scales = |meta: &StreamMeta| {
            meta.mode == StreamMode::OnDemand && meta.status == StreamStatus::Active
        };
        // Most streams are not on-demand: they cost a read lock, not the account's count of
        // open shards (every stream's lock) nor this stream's write lock.
        if !scales(&stream.state.read().meta) {
            return Ok(());
        }
        // Before this stream's write lock: the count reads every stream's.
        let account_open = self.open_shard_count();
        let mut state = stream.state.write();
        if !scales(&state.meta) {
            return Ok(());
        }
        let mut open: Vec<(u32, u128, u128)> = state
            .meta
            .open_shards()
            .iter()
            .map(|s| (s.index, s.start(), s.end()))
            .collect();
        open.sort_by_key(|s| s.1);
        let indexes: Vec<u32> = open.iter().map(|s| s.0).collect();
        let (load, stream_load) = self.loads(stream, &indexes, now_ms);
        let recorded = state.meta.on_demand.record(
            stream_load,
            now_ms,
            self.on_demand_ms(PEAK_PERIOD_MS),
            self.on_demand_ms(PEAK_WINDOW_MS),
        );
        let peak = state.meta.on_demand.peak().max(stream_load);
        let target = target_for(peak, Self::on_demand_floor(&state.meta));
        let count = open.len() as u32;
        // A shard above half its capacity could not take twice its load: it splits.
        let hot: Vec<u32> = load
            .iter()
            .filter(|(_, share)| *share > HOT_SHARE)
            .map(|(index, _)| *index)
            .collect();
        let history = &state.meta.on_demand;
        let up_due = history
            .last_up_ms
            .is_none_or(|at| now_ms - at >= self.on_demand_ms(STEP_UP_MS));
        let last_change = history
            .last_up_ms
            .max(history.last_down_ms)
            .unwrap_or(state.meta.created_ms);
        let down_due = now_ms - last_change >= self.on_demand_ms(STEP_DOWN_MS);
        let mut limited = false;
        let (changes, up) = if (count < target || !hot.is_empty()) && up_due {
            let room = self.config.shard_limit.saturating_sub(account_open) as usize;
            let splits;
            (splits, limited) = plan_up(&open, &load, hot, target, room);
            if limited {
                // Once per step, not once a second: the step counts as taken.
                state.meta.on_demand.last_up_ms = Some(now_ms);
                stream.shard_limit_hits.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    stream = %state.meta.name,
                    room,
                    limit = self.config.shard_limit,
                    "on-demand scaling held back by the account's shard limit"
                );
            }
            (splits, true)
        } else if count > target && down_due {
            (plan_down(&open, &load, count - target), false)
        } else {
            (Vec::new(), false)
        };
        if !changes.is_empty() {
            tracing::info!(
                stream = %state.meta.name,
                open = count,
                changes = changes.len(),
                peak_shards = peak,
                target,
                "on-demand stream scaling {}",
                if up { "up" } else { "down" }
            );
            let history = &mut state.meta.on_demand;
            *if up {
                &mut history.last_up_ms
            } else {
                &mut history.last_down_ms
            } = Some(now_ms);
        }
        let mut changes = changes.into_iter();
        match changes.next() {
            Some(first) => {
                self.begin_update(&mut state, first, now_ms)?;
                for change in changes {
                    self.queue_update(&mut state, change, now_ms)?;
                }
            }
            None if recorded || limited => self.persist(&state.meta)?,
            None => {}
        }
        Ok(())
    }

    /// An on-demand stream's capacity as the scaler sees it; `None` for a provisioned one.
    pub(crate) fn on_demand_view(
        &self,
        stream: &Stream,
        meta: &StreamMeta,
        now_ms: i64,
    ) -> Option<OnDemandView> {
        if meta.mode != StreamMode::OnDemand {
            return None;
        }
        // The stream's load alone: no shard's is needed here.
        let (_, load) = self.loads(stream, &[], now_ms);
        let peak = meta.on_demand.peak().max(load);
        Some(OnDemandView {
            load_shards: load,
            peak_shards: peak,
            target_shards: target_for(peak, Self::on_demand_floor(meta)),
            shard_limit_hits: stream.shard_limit_hits.load(Ordering::Relaxed),
        })
    }

    /// Releases an on-demand stream's excess capacity (UpdateStreamWarmThroughput with the
    /// same or a lower value, On-demand Advantage): the peaks behind it are forgotten, all
    /// but the last minute's, and the stream scales down (UPDATING) to what that minute and
    /// `mibps` call for. Returns the change to make, if the stream is to shrink.
    pub(crate) fn release_capacity(
        &self,
        stream: &Stream,
        meta: &mut StreamMeta,
        mibps: u32,
        now_ms: i64,
    ) -> Option<Pending> {
        let recent = self.recent_peak(stream, now_ms);
        let history = &mut meta.on_demand;
        history.peaks.clear();
        history.record(
            recent,
            now_ms,
            self.on_demand_ms(PEAK_PERIOD_MS),
            self.on_demand_ms(PEAK_WINDOW_MS),
        );
        history.last_down_ms = Some(now_ms);
        let target = target_for(recent, INITIAL_SHARDS.max(mibps));
        let open = meta.shards.iter().filter(|s| s.is_open()).count() as u32;
        (target < open).then_some(Pending::UniformScaling { target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meters_average_complete_seconds() {
        let mut m = Meter::default();
        for s in 0..10 {
            m.record(1000, 10, s * 1000 + 10);
            m.record(1000, 10, s * 1000 + 900);
        }
        assert_eq!(m.average(5, 10_000), (2000.0, 20.0));
        // The second in progress does not count.
        m.record(1_000_000, 1, 10_500);
        assert_eq!(m.average(5, 10_600), (2000.0, 20.0));
        m.record(1, 1, 200_000);
        assert_eq!(m.per_second().count(), 1, "old seconds are dropped");
    }

    #[test]
    fn history_keeps_one_peak_per_period_within_the_window() {
        let mut h = History::default();
        let (period, window) = (1_000, 30_000);
        assert!(!h.record(0.0, 0, period, window), "no load, nothing kept");
        assert!(h.record(2.0, 100, period, window));
        assert!(!h.record(2.01, 200, period, window), "within 2 %");
        assert!(h.record(3.0, 300, period, window));
        assert!(
            !h.record(1.0, 400, period, window),
            "lower than the period's peak"
        );
        assert!(h.record(1.0, 1_500, period, window), "a new period");
        assert_eq!(h.peaks, vec![(0, 3000), (1_000, 1000)]);
        assert_eq!(h.peak(), 3.0);
        // The first period leaves the window 30 periods after it ended.
        assert!(!h.record(0.0, 30_999, period, window));
        assert!(h.record(0.0, 31_000, period, window));
        assert_eq!(h.peak(), 1.0);
    }

    #[test]
    fn targets_are_twice_the_peak_within_bounds() {
        assert_eq!(target_for(0.0, 4), 4);
        assert_eq!(target_for(4.0, 4), 8);
        assert_eq!(target_for(4.000_000_1, 4), 8);
        assert_eq!(target_for(4.2, 4), 9);
        assert_eq!(target_for(1.0, 10), 10);
        assert_eq!(target_for(1e9, 4), crate::reshard::SHARDS_PER_STREAM_MAX);
    }
}
