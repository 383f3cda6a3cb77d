//! Cluster totals: what a node observed since it last told the other nodes — metric data
//! points (stream and shard level) and on-demand write meters — so that every node's metrics,
//! console, alarms and on-demand scaling count the whole cluster's traffic, not its own. The
//! cluster's roles carry it between nodes (`rivulet_cluster::roles::share_usage`); on one node
//! nothing is kept.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::metrics::{Metric, Stat};
use crate::{Engine, Stream, StreamState};

/// What one node observed on one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The stream's key (a stream deleted and created again under its name is another).
    pub stream: String,
    /// Metric data points merged per shard (`None`: the stream) and metric (by name).
    pub points: Vec<(Option<u32>, String, Stat)>,
    /// Writes per shard (bytes, records), for on-demand scaling.
    pub writes: Vec<(u32, f64, f64)>,
    /// Enhanced fan-out consumers' last MillisBehindLatest here, and when (consumer ARN).
    #[serde(default)]
    pub lags: Vec<(String, i64, i64)>,
}

impl Engine {
    /// Keeps what this node observes for the other nodes (cluster mode), or stops.
    pub fn set_sharing(&self, sharing: bool) {
        self.sharing.store(sharing, Ordering::Relaxed);
        for stream in self.streams.read().values() {
            stream.metrics.set_sharing(sharing);
        }
    }

    /// A stream as this engine keeps it, sharing its observations when the engine does.
    pub(crate) fn new_stream(&self, state: StreamState) -> Stream {
        let stream = Stream::new(state);
        stream
            .metrics
            .set_sharing(self.sharing.load(Ordering::Relaxed));
        stream
    }

    /// What this node observed since the last call, per stream.
    pub fn take_observed(&self) -> Vec<Observed> {
        let streams: Vec<Arc<Stream>> = self.streams.read().values().cloned().collect();
        let mut taken = Vec::new();
        for stream in streams {
            let points: Vec<(Option<u32>, String, Stat)> = stream
                .metrics
                .take_outbox()
                .into_iter()
                .map(|(shard, metric, stat)| (shard, metric.name().to_string(), stat))
                .collect();
            let writes: Vec<(u32, f64, f64)> = std::mem::take(&mut *stream.write_outbox.lock())
                .into_iter()
                .map(|(shard, (bytes, records))| (shard, bytes, records))
                .collect();
            let lags = stream.metrics.take_lag_outbox();
            if points.is_empty() && writes.is_empty() && lags.is_empty() {
                continue;
            }
            let key = stream.state.read().meta.key.clone();
            taken.push(Observed {
                stream: key,
                points,
                writes,
                lags,
            });
        }
        taken
    }

    /// Counts what another node observed (its [`Engine::take_observed`]) as of `at_ms`.
    pub fn apply_observed(&self, observed: &Observed, at_ms: i64) {
        let Some(stream) = self.stream_by_key(&observed.stream) else {
            return;
        };
        let points: Vec<(Option<u32>, Metric, Stat)> = observed
            .points
            .iter()
            .filter_map(|(shard, name, stat)| Some((*shard, Metric::from_name(name)?, *stat)))
            .collect();
        let enabled = stream.state.read().meta.enabled_shard_metrics();
        stream.metrics.record_remote(&points, &enabled, at_ms);
        for (consumer, behind, at) in &observed.lags {
            stream.metrics.record_remote_lag(consumer, *behind, *at);
        }
        if !observed.writes.is_empty() {
            let mut meters = stream.meters.lock();
            for &(shard, bytes, records) in &observed.writes {
                meters
                    .entry(shard)
                    .or_default()
                    .record_amount(bytes, records, at_ms);
            }
        }
    }
}
