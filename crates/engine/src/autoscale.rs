//! On-demand streams scale themselves, as AWS's do: every shard's writes are metered per
//! second, and once a second the tick looks at each ACTIVE on-demand stream. A shard whose
//! writes over the last [`SUSTAIN_SECONDS`] averaged above half its capacity is split at the
//! middle of its hash range; and while the stream's capacity is below twice its peak second
//! of the last [`PEAK_WINDOW_SECONDS`], its busiest shards are split too. The splits go
//! through UPDATING like a SplitShard, so lineage shows in ListShards and readers follow
//! ChildShards. (Scaling down is not done: AWS takes its time over that too.)

use std::collections::{HashMap, VecDeque};

use crate::limits::{WRITE_BYTES_PER_SECOND, WRITE_RECORDS_PER_SECOND};
use crate::meta::{Pending, StreamMode, StreamStatus};
use crate::{Engine, Result, Stream};

/// Seconds a shard must run hot before it is split.
pub const SUSTAIN_SECONDS: i64 = 5;
/// Seconds the stream's peak is remembered for.
pub const PEAK_WINDOW_SECONDS: i64 = 60;
/// A shard above this share of its capacity, sustained, is split.
const HOT_SHARE: f64 = 0.5;

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

impl Engine {
    /// Splits the shards of an ACTIVE on-demand stream that its load calls for.
    pub(crate) fn autoscale(&self, stream: &Stream, now_ms: i64) -> Result<()> {
        let scale = self.config.limits_scale.unwrap_or(1.0);
        let (shard_bytes, shard_records) = (
            WRITE_BYTES_PER_SECOND * scale,
            WRITE_RECORDS_PER_SECOND * scale,
        );
        // Before this stream's lock: the count reads every stream's.
        let account_open = self.open_shard_count();
        let mut state = stream.state.write();
        if state.meta.mode != StreamMode::OnDemand || state.meta.status != StreamStatus::Active {
            return Ok(());
        }
        let open: Vec<(u32, u128, u128)> = state
            .meta
            .open_shards()
            .iter()
            .map(|s| (s.index, s.start(), s.end()))
            .collect();
        let meters = stream.meters.lock();
        // Load per open shard (share of capacity, sustained), and the stream's peak second.
        let mut load: Vec<(u32, f64)> = Vec::new();
        let mut totals: HashMap<i64, (f64, f64)> = HashMap::new();
        for &(index, _, _) in &open {
            let Some(meter) = meters.get(&index) else {
                load.push((index, 0.0));
                continue;
            };
            let (bytes, records) = meter.average(SUSTAIN_SECONDS, now_ms);
            load.push((index, (bytes / shard_bytes).max(records / shard_records)));
            for &(second, b, r) in meter.per_second() {
                let total = totals.entry(second).or_default();
                total.0 += b;
                total.1 += r;
            }
        }
        drop(meters);
        let current = now_ms.div_euclid(1000);
        let peak = totals
            .iter()
            .filter(|(second, _)| **second < current)
            .map(|(_, (b, r))| (b / shard_bytes).max(r / shard_records))
            .fold(0.0, f64::max);
        load.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut split: Vec<u32> = load
            .iter()
            .filter(|(_, share)| *share > HOT_SHARE)
            .map(|(index, _)| *index)
            .collect();
        // Capacity of twice the recent peak: split the busiest shards until there is.
        let wanted = (2.0 * peak).ceil() as usize;
        for (index, _) in &load {
            if open.len() + split.len() >= wanted {
                break;
            }
            if !split.contains(index) {
                split.push(*index);
            }
        }
        let room = self.config.shard_limit.saturating_sub(account_open) as usize;
        split.truncate(room);
        let changes: Vec<Pending> = split
            .into_iter()
            .filter_map(|index| {
                let &(_, start, end) = open.iter().find(|s| s.0 == index)?;
                // The middle of the range; a one-key shard cannot split.
                (end > start).then(|| Pending::Split {
                    shard: index,
                    new_start: (start + (end - start) / 2 + 1).to_string(),
                })
            })
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        tracing::info!(
            stream = %state.meta.name,
            splits = changes.len(),
            peak_shards = peak,
            "on-demand stream scaling up"
        );
        let mut changes = changes.into_iter();
        if let Some(first) = changes.next() {
            self.begin_update(&mut state, first, now_ms)?;
            for change in changes {
                self.queue_update(&mut state, change, now_ms)?;
            }
        }
        Ok(())
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
}
