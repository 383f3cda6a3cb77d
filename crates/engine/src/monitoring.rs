//! Enhanced monitoring (Enable/DisableEnhancedMonitoring) and what the server reads of the
//! metrics: snapshots for Prometheus and the console, and period statistics for alarms.

use crate::meta::{StreamMode, StreamStatus};
use crate::metrics::{Metric, SHARD_LEVEL_METRICS, Stat, Totals};
use crate::{ApiError, Engine, Result, StreamTarget, shard_id};

/// Enable/DisableEnhancedMonitoring's answer.
#[derive(Debug, Clone)]
pub struct MonitoringChange {
    pub stream_name: String,
    pub stream_arn: String,
    pub current: Vec<String>,
    pub desired: Vec<String>,
}

/// One shard as metrics snapshots show it.
#[derive(Debug, Clone)]
pub struct ShardMetricsView {
    pub shard_id: String,
    pub open: bool,
    pub parents: Vec<String>,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
    /// `Some` when enhanced monitoring has recorded something for the shard.
    pub totals: Option<Totals>,
}

/// One stream's metrics and shape, at a moment.
#[derive(Debug, Clone)]
pub struct StreamMetricsView {
    pub name: String,
    pub arn: String,
    pub status: StreamStatus,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub encrypted: bool,
    /// Consumers with their last MillisBehindLatest and when it was seen (never: `None`).
    pub consumers: Vec<(String, Option<(i64, i64)>)>,
    pub shard_level_metrics: Vec<Metric>,
    pub totals: Totals,
    pub shards: Vec<ShardMetricsView>,
    /// An on-demand stream's capacity as its scaler sees it.
    pub on_demand: Option<crate::autoscale::OnDemandView>,
}

/// The metric names a request names, `ALL` expanded, in AWS's order.
fn expand(requested: &[String]) -> Vec<&'static str> {
    let all = requested.iter().any(|m| m == "ALL");
    SHARD_LEVEL_METRICS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| all || requested.iter().any(|m| m == name))
        .collect()
}

impl Engine {
    /// EnableEnhancedMonitoring (`enable`) or DisableEnhancedMonitoring.
    pub fn change_enhanced_monitoring(
        &self,
        target: &StreamTarget<'_>,
        requested: &[String],
        enable: bool,
        now_ms: i64,
    ) -> Result<MonitoringChange> {
        if requested.is_empty() {
            return Err(ApiError::invalid(
                "ShardLevelMetrics must name at least one metric.",
            ));
        }
        let (name, stream) = self.stream_by_target(target, now_ms)?;
        let mut state = stream.state.write();
        self.require_active(&state)?;
        let current = state.meta.shard_level_metrics.clone();
        let named = expand(requested);
        let desired: Vec<String> = SHARD_LEVEL_METRICS
            .iter()
            .map(|(metric, _)| *metric)
            .filter(|metric| {
                let on = current.iter().any(|c| c == metric);
                let asked = named.contains(metric);
                if enable { on || asked } else { on && !asked }
            })
            .map(str::to_string)
            .collect();
        state.meta.shard_level_metrics = desired.clone();
        self.persist(&state.meta)?;
        if desired.is_empty() {
            // Nothing is exported per shard any more: drop the series (bounded cardinality).
            stream.metrics.clear_shards();
        }
        Ok(MonitoringChange {
            stream_arn: self.stream_arn(&name),
            stream_name: name,
            current,
            desired,
        })
    }

    /// Every stream's metrics and shape, in name order.
    pub fn metrics_snapshot(&self, now_ms: i64) -> Vec<StreamMetricsView> {
        let streams: Vec<_> = self.streams.read().values().cloned().collect();
        let mut out = Vec::with_capacity(streams.len());
        for stream in streams {
            let state = stream.state.read();
            let meta = &state.meta;
            let shards = meta
                .shards
                .iter()
                .map(|shard| ShardMetricsView {
                    shard_id: shard_id(shard.index),
                    open: shard.is_open(),
                    parents: shard
                        .parent
                        .iter()
                        .chain(shard.adjacent_parent.iter())
                        .map(|p| shard_id(*p))
                        .collect(),
                    starting_hash_key: shard.start_hash.clone(),
                    ending_hash_key: shard.end_hash.clone(),
                    totals: stream.metrics.shard_totals(shard.index),
                })
                .collect();
            out.push(StreamMetricsView {
                name: meta.name.clone(),
                arn: self.stream_arn(&meta.name),
                status: meta.status,
                mode: meta.mode,
                retention_hours: meta.retention_hours,
                encrypted: meta.encryption.is_some(),
                consumers: {
                    let lag = stream.metrics.consumer_lag();
                    meta.consumers
                        .iter()
                        .map(|c| (c.name.clone(), lag.get(&c.name).copied()))
                        .collect()
                },
                shard_level_metrics: meta.enabled_shard_metrics(),
                totals: stream.metrics.stream_totals(),
                shards,
                on_demand: self.on_demand_view(&stream, meta, now_ms),
            });
        }
        out
    }

    /// The data points of `metric` for stream `stream` (or one of its shards) in
    /// `[from_s, to_s)`; `None` when there is no such stream or shard.
    pub fn metric_window(
        &self,
        stream: &str,
        shard: Option<&str>,
        metric: Metric,
        from_s: i64,
        to_s: i64,
    ) -> Option<Stat> {
        let stream = self.streams.read().get(stream).cloned()?;
        let shard = match shard {
            None => None,
            Some(shard) => Some(crate::meta::parse_shard_id(shard)?),
        };
        Some(stream.metrics.window(shard, metric, from_s, to_s))
    }

    /// Up to `limit` records of a shard from `start`, for the console's record browser: the
    /// same read as GetRecords, without iterators, throughput limits or metrics.
    pub async fn browse_shard(
        &self,
        stream: &str,
        shard: &str,
        start: &crate::StartAt<'_>,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<crate::OutRecord>> {
        crate::data::check_start(start, now_ms)?;
        let target = StreamTarget::name(stream);
        let (name, stream) = self.stream_by_target(&target, now_ms)?;
        let index =
            crate::meta::parse_shard_id(shard).ok_or_else(|| self.shard_not_found(&name, shard))?;
        let shard_missing = || self.shard_not_found(&name, &shard_id(index));
        let start = {
            let state = stream.state.read();
            self.start_position(
                &state,
                index,
                start,
                "GetShardIterator",
                &shard_missing,
                now_ms,
            )?
        };
        let offset = start.resolve().await?;
        let plan = {
            let state = stream.state.read();
            self.plan_read(&state, index, offset, limit, 1 << 20, &shard_missing)?
        };
        let read = plan.run(now_ms).await?;
        Ok(read.records)
    }
}
