//! Account settings (the minimum throughput billing commitment) and warm throughput for
//! on-demand streams: DescribeAccountSettings, UpdateAccountSettings,
//! UpdateStreamWarmThroughput. The commitment gates warm throughput, as on AWS; once enabled
//! it lasts at least [`COMMITMENT_MIN_MS`], and disabling it earlier ends it then.

use rivulet_log::MetaOp;
use serde::{Deserialize, Serialize};

use crate::meta::{Pending, StreamMode};
use crate::{ApiError, Engine, Result, StreamTarget};

/// The shortest a minimum throughput billing commitment lasts.
pub const COMMITMENT_MIN_MS: i64 = 24 * 3_600_000;
/// The most warm throughput an on-demand stream may ask for, MiB/s.
pub const WARM_THROUGHPUT_MAX_MIBPS: u32 = 10_240;
pub(crate) const ACCOUNT_KEY: &str = "engine/account-settings";

/// The persisted commitment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    pub started_ms: Option<i64>,
    /// When it ends (or ended); `None` while enabled with no end asked for.
    pub ends_ms: Option<i64>,
}

/// What DescribeAccountSettings reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitmentView {
    /// `ENABLED`, `DISABLED` or `ENABLED_UNTIL_EARLIEST_ALLOWED_END`.
    pub status: &'static str,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub earliest_allowed_end_ms: Option<i64>,
}

impl Commitment {
    fn active(&self, now_ms: i64) -> bool {
        self.started_ms.is_some() && self.ends_ms.is_none_or(|end| now_ms < end)
    }

    fn view(&self, now_ms: i64) -> CommitmentView {
        let earliest = self.started_ms.map(|s| s + COMMITMENT_MIN_MS);
        let status = match (self.active(now_ms), self.ends_ms) {
            (true, Some(_)) => "ENABLED_UNTIL_EARLIEST_ALLOWED_END",
            (true, None) => "ENABLED",
            (false, _) => "DISABLED",
        };
        CommitmentView {
            status,
            started_ms: self.started_ms,
            ended_ms: self.ends_ms,
            earliest_allowed_end_ms: earliest,
        }
    }
}

/// A stream's warm throughput, as DescribeStreamSummary and UpdateStreamWarmThroughput show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmThroughput {
    pub target_mibps: u32,
    pub current_mibps: u32,
}

impl Engine {
    fn save_commitment(&self, commitment: &Commitment) -> Result<()> {
        let value = serde_json::to_vec(commitment)
            .map_err(|e| ApiError::internal(format!("metadata encoding: {e}")))?;
        self.store.meta().commit(&[MetaOp::Put {
            key: format!("{}{ACCOUNT_KEY}", self.config.namespace),
            value,
        }])?;
        Ok(())
    }

    /// DescribeAccountSettings.
    pub fn describe_account_settings(&self, now_ms: i64) -> CommitmentView {
        self.commitment.lock().view(now_ms)
    }

    /// UpdateAccountSettings: enable the commitment, or ask it to end (at once when its
    /// minimum term is over, else at the earliest allowed end).
    pub fn update_account_settings(&self, enable: bool, now_ms: i64) -> Result<CommitmentView> {
        let mut commitment = self.commitment.lock();
        let mut next = *commitment;
        if enable {
            if !next.active(now_ms) {
                next = Commitment {
                    started_ms: Some(now_ms),
                    ends_ms: None,
                };
            } else {
                // Re-enabling cancels a pending end.
                next.ends_ms = None;
            }
        } else if next.active(now_ms) {
            let earliest = next.started_ms.map_or(now_ms, |s| s + COMMITMENT_MIN_MS);
            next.ends_ms = Some(earliest.max(now_ms));
        }
        self.save_commitment(&next)?;
        *commitment = next;
        Ok(next.view(now_ms))
    }

    /// The warm throughput of an on-demand stream: what was asked for, and the open shards'
    /// write capacity (1 MiB/s each).
    pub(crate) fn warm_throughput(&self, meta: &crate::meta::StreamMeta) -> Option<WarmThroughput> {
        (meta.mode == StreamMode::OnDemand).then(|| {
            let open = meta.shards.iter().filter(|s| s.is_open()).count() as u32;
            WarmThroughput {
                target_mibps: meta.warm_throughput_mibps.unwrap_or(open),
                current_mibps: open,
            }
        })
    }

    fn check_warm_throughput(&self, stream: &str, mibps: u32, now_ms: i64) -> Result<()> {
        if !self.commitment.lock().active(now_ms) {
            return Err(ApiError::invalid(format!(
                "Warm throughput requires the minimum throughput billing commitment to be \
                 enabled for account {}. Use UpdateAccountSettings.",
                self.config.account_id
            )));
        }
        if mibps > WARM_THROUGHPUT_MAX_MIBPS {
            return Err(ApiError::invalid(format!(
                "WarmThroughputMiBps {mibps} for stream {stream} under account {} exceeds the \
                 maximum of {WARM_THROUGHPUT_MAX_MIBPS}.",
                self.config.account_id
            )));
        }
        Ok(())
    }

    /// UpdateStreamWarmThroughput: scales an on-demand stream up to at least `mibps` MiB/s of
    /// write capacity (UPDATING meanwhile); the same or a lower value releases the capacity
    /// the stream scaled up to beyond it and what its last minute's traffic needs
    /// (`Engine::release_capacity`).
    pub fn update_warm_throughput(
        &self,
        target: &StreamTarget<'_>,
        mibps: u32,
        now_ms: i64,
    ) -> Result<(String, WarmThroughput)> {
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let account_open = self.open_shard_count();
        let mut state = stream.state.write();
        if state.meta.mode != StreamMode::OnDemand {
            return Err(ApiError::invalid(format!(
                "Warm throughput is only supported for streams in ON_DEMAND mode. Stream \
                 {name} under account {} is in PROVISIONED mode.",
                self.config.account_id
            )));
        }
        self.check_warm_throughput(&name, mibps, now_ms)?;
        self.require_active(&state)?;
        let open = state.meta.shards.iter().filter(|s| s.is_open()).count() as u32;
        state.meta.warm_throughput_mibps = Some(mibps);
        if mibps > open {
            let shards = mibps.min(crate::reshard::SHARDS_PER_STREAM_MAX);
            if account_open + (shards - open) > self.config.shard_limit {
                return Err(self.shard_limit_error(account_open, shards - open));
            }
            self.begin_update(
                &mut state,
                Pending::UniformScaling { target: shards },
                now_ms,
            )?;
        } else if let Some(change) = self.release_capacity(&stream, &mut state.meta, mibps, now_ms)
        {
            // The same or a lower value releases excess capacity (On-demand Advantage).
            self.begin_update(&mut state, change, now_ms)?;
        } else {
            self.persist(&state.meta)?;
        }
        let warm = WarmThroughput {
            target_mibps: mibps,
            current_mibps: open,
        };
        Ok((self.stream_arn(&name), warm))
    }

    /// CreateStream's WarmThroughputMiBps: the checks, and the shard count it calls for.
    pub(crate) fn warm_shards(&self, stream: &str, mibps: u32, now_ms: i64) -> Result<u32> {
        self.check_warm_throughput(stream, mibps, now_ms)?;
        Ok(mibps.min(crate::reshard::SHARDS_PER_STREAM_MAX))
    }
}
