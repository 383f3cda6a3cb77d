//! Kinesis's CloudWatch metrics (namespace AWS/Kinesis), kept per stream and — for what
//! EnableEnhancedMonitoring turned on — per shard. Each series keeps running totals (for
//! Prometheus) and an hour of 10-second buckets (sum, sample count, maximum) from which the
//! statistics of a CloudWatch period are computed (for alarms and charts). Series live with
//! their stream: deleting the stream drops them. Time is passed in, as everywhere in the
//! engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Seconds per bucket.
pub const BUCKET_S: i64 = 10;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;

/// A metric of the AWS/Kinesis namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Metric {
    IncomingBytes,
    IncomingRecords,
    OutgoingBytes,
    OutgoingRecords,
    PutRecordBytes,
    PutRecordLatency,
    PutRecordSuccess,
    PutRecordsBytes,
    PutRecordsLatency,
    PutRecordsSuccess,
    PutRecordsTotalRecords,
    PutRecordsSuccessfulRecords,
    PutRecordsFailedRecords,
    PutRecordsThrottledRecords,
    GetRecordsBytes,
    GetRecordsIteratorAgeMilliseconds,
    GetRecordsLatency,
    GetRecordsRecords,
    GetRecordsSuccess,
    WriteProvisionedThroughputExceeded,
    ReadProvisionedThroughputExceeded,
    SubscribeToShardRateExceeded,
    SubscribeToShardSuccess,
    SubscribeToShardEventBytes,
    SubscribeToShardEventMillisBehindLatest,
    SubscribeToShardEventRecords,
    SubscribeToShardEventSuccess,
    /// Shard level only: the age of the last record read (GetRecords and subscriptions).
    IteratorAgeMilliseconds,
}

/// Every metric, in the order series store them.
pub const ALL_METRICS: [Metric; 28] = [
    Metric::IncomingBytes,
    Metric::IncomingRecords,
    Metric::OutgoingBytes,
    Metric::OutgoingRecords,
    Metric::PutRecordBytes,
    Metric::PutRecordLatency,
    Metric::PutRecordSuccess,
    Metric::PutRecordsBytes,
    Metric::PutRecordsLatency,
    Metric::PutRecordsSuccess,
    Metric::PutRecordsTotalRecords,
    Metric::PutRecordsSuccessfulRecords,
    Metric::PutRecordsFailedRecords,
    Metric::PutRecordsThrottledRecords,
    Metric::GetRecordsBytes,
    Metric::GetRecordsIteratorAgeMilliseconds,
    Metric::GetRecordsLatency,
    Metric::GetRecordsRecords,
    Metric::GetRecordsSuccess,
    Metric::WriteProvisionedThroughputExceeded,
    Metric::ReadProvisionedThroughputExceeded,
    Metric::SubscribeToShardRateExceeded,
    Metric::SubscribeToShardSuccess,
    Metric::SubscribeToShardEventBytes,
    Metric::SubscribeToShardEventMillisBehindLatest,
    Metric::SubscribeToShardEventRecords,
    Metric::SubscribeToShardEventSuccess,
    Metric::IteratorAgeMilliseconds,
];

/// The shard-level metrics of EnableEnhancedMonitoring, by their API names.
pub const SHARD_LEVEL_METRICS: [(&str, Metric); 7] = [
    ("IncomingBytes", Metric::IncomingBytes),
    ("IncomingRecords", Metric::IncomingRecords),
    ("OutgoingBytes", Metric::OutgoingBytes),
    ("OutgoingRecords", Metric::OutgoingRecords),
    (
        "WriteProvisionedThroughputExceeded",
        Metric::WriteProvisionedThroughputExceeded,
    ),
    (
        "ReadProvisionedThroughputExceeded",
        Metric::ReadProvisionedThroughputExceeded,
    ),
    ("IteratorAgeMilliseconds", Metric::IteratorAgeMilliseconds),
];

impl Metric {
    /// The CloudWatch metric name.
    pub fn name(self) -> &'static str {
        use Metric::*;
        match self {
            IncomingBytes => "IncomingBytes",
            IncomingRecords => "IncomingRecords",
            OutgoingBytes => "OutgoingBytes",
            OutgoingRecords => "OutgoingRecords",
            PutRecordBytes => "PutRecord.Bytes",
            PutRecordLatency => "PutRecord.Latency",
            PutRecordSuccess => "PutRecord.Success",
            PutRecordsBytes => "PutRecords.Bytes",
            PutRecordsLatency => "PutRecords.Latency",
            PutRecordsSuccess => "PutRecords.Success",
            PutRecordsTotalRecords => "PutRecords.TotalRecords",
            PutRecordsSuccessfulRecords => "PutRecords.SuccessfulRecords",
            PutRecordsFailedRecords => "PutRecords.FailedRecords",
            PutRecordsThrottledRecords => "PutRecords.ThrottledRecords",
            GetRecordsBytes => "GetRecords.Bytes",
            GetRecordsIteratorAgeMilliseconds => "GetRecords.IteratorAgeMilliseconds",
            GetRecordsLatency => "GetRecords.Latency",
            GetRecordsRecords => "GetRecords.Records",
            GetRecordsSuccess => "GetRecords.Success",
            WriteProvisionedThroughputExceeded => "WriteProvisionedThroughputExceeded",
            ReadProvisionedThroughputExceeded => "ReadProvisionedThroughputExceeded",
            SubscribeToShardRateExceeded => "SubscribeToShard.RateExceeded",
            SubscribeToShardSuccess => "SubscribeToShard.Success",
            SubscribeToShardEventBytes => "SubscribeToShardEvent.Bytes",
            SubscribeToShardEventMillisBehindLatest => "SubscribeToShardEvent.MillisBehindLatest",
            SubscribeToShardEventRecords => "SubscribeToShardEvent.Records",
            SubscribeToShardEventSuccess => "SubscribeToShardEvent.Success",
            IteratorAgeMilliseconds => "IteratorAgeMilliseconds",
        }
    }

    /// The metric a CloudWatch name names.
    pub fn from_name(name: &str) -> Option<Metric> {
        ALL_METRICS.into_iter().find(|m| m.name() == name)
    }

    /// Whether the metric is a level (ages, latencies) rather than an amount: Prometheus
    /// shows its last value, not a running total.
    pub fn is_level(self) -> bool {
        use Metric::*;
        matches!(
            self,
            GetRecordsIteratorAgeMilliseconds
                | IteratorAgeMilliseconds
                | SubscribeToShardEventMillisBehindLatest
                | PutRecordLatency
                | PutRecordsLatency
                | GetRecordsLatency
        )
    }

    /// The CloudWatch unit.
    pub fn unit(self) -> &'static str {
        use Metric::*;
        match self {
            IncomingBytes
            | OutgoingBytes
            | PutRecordBytes
            | PutRecordsBytes
            | GetRecordsBytes
            | SubscribeToShardEventBytes => "Bytes",
            GetRecordsIteratorAgeMilliseconds
            | IteratorAgeMilliseconds
            | SubscribeToShardEventMillisBehindLatest
            | PutRecordLatency
            | PutRecordsLatency
            | GetRecordsLatency => "Milliseconds",
            _ => "Count",
        }
    }
}

/// Sum, sample count and maximum of the data points of a span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    pub sum: f64,
    pub count: u64,
    pub max: f64,
    pub min: f64,
    /// The last data point (for levels).
    pub last: f64,
}

impl Stat {
    pub(crate) fn add(&mut self, value: f64) {
        if self.count == 0 || value > self.max {
            self.max = value;
        }
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        self.sum += value;
        self.count += 1;
        self.last = value;
    }

    pub(crate) fn merge(&mut self, other: &Stat) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.max > self.max {
            self.max = other.max;
        }
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.sum += other.sum;
        self.count += other.count;
        self.last = other.last;
    }

    /// A CloudWatch statistic of these data points (`None` without data points).
    pub fn statistic(&self, statistic: Statistic) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        Some(match statistic {
            Statistic::Sum => self.sum,
            Statistic::SampleCount => self.count as f64,
            Statistic::Average => self.sum / self.count as f64,
            Statistic::Maximum => self.max,
            Statistic::Minimum => self.min,
        })
    }
}

/// The CloudWatch statistics alarms and charts can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Sum,
    SampleCount,
    Average,
    Maximum,
    Minimum,
}

impl Statistic {
    pub fn parse(text: &str) -> Option<Statistic> {
        Some(match text {
            "Sum" => Statistic::Sum,
            "SampleCount" => Statistic::SampleCount,
            "Average" => Statistic::Average,
            "Maximum" => Statistic::Maximum,
            "Minimum" => Statistic::Minimum,
            _ => return None,
        })
    }
}

/// One bucket's data points, only for the metrics recorded in it.
#[derive(Clone)]
struct Bucket {
    start_s: i64,
    stats: Vec<(Metric, Stat)>,
}

/// Running totals of every metric (what Prometheus and the console show).
#[derive(Clone, Debug)]
pub struct Totals(Vec<Stat>);

impl Default for Totals {
    fn default() -> Self {
        Totals(vec![Stat::default(); ALL_METRICS.len()])
    }
}

impl Totals {
    /// The running total of `metric`.
    pub fn total(&self, metric: Metric) -> Stat {
        self.0[metric as usize]
    }
}

/// One stream's or shard's metrics: totals, and a ring of buckets for period statistics.
struct Series {
    totals: Totals,
    buckets: Vec<Bucket>,
}

impl Series {
    fn new(buckets: usize) -> Series {
        Series {
            totals: Totals::default(),
            buckets: vec![
                Bucket {
                    start_s: i64::MIN,
                    stats: Vec::new(),
                };
                buckets
            ],
        }
    }

    fn record(&mut self, metric: Metric, value: f64, now_ms: i64) {
        let mut stat = Stat::default();
        stat.add(value);
        self.record_stat(metric, &stat, now_ms);
    }

    /// Records data points already merged (as many as `stat` counts), as if one by one.
    fn record_stat(&mut self, metric: Metric, stat: &Stat, now_ms: i64) {
        self.totals.0[metric as usize].merge(stat);
        let start_s = now_ms.div_euclid(1000).div_euclid(BUCKET_S) * BUCKET_S;
        let slot = (start_s / BUCKET_S).rem_euclid(self.buckets.len() as i64) as usize;
        let bucket = &mut self.buckets[slot];
        if bucket.start_s != start_s {
            bucket.start_s = start_s;
            bucket.stats.clear();
        }
        match bucket.stats.iter_mut().find(|(m, _)| *m == metric) {
            Some((_, merged)) => merged.merge(stat),
            None => bucket.stats.push((metric, *stat)),
        }
    }

    /// The data points of `[from_s, to_s)` merged.
    fn window(&self, metric: Metric, from_s: i64, to_s: i64) -> Stat {
        let mut out = Stat::default();
        for bucket in &self.buckets {
            if bucket.start_s >= from_s && bucket.start_s < to_s {
                for (m, stat) in &bucket.stats {
                    if *m == metric {
                        out.merge(stat);
                    }
                }
            }
        }
        out
    }
}

/// Buckets of a shard's series: 15 minutes (shards can be many).
pub const SHARD_BUCKETS: usize = 90;

/// A stream's metrics, and its shards' when enhanced monitoring is on.
pub struct StreamMetrics {
    stream: Mutex<Series>,
    shards: Mutex<HashMap<u32, Series>>,
    /// Per enhanced fan-out consumer: its last event's MillisBehindLatest and when it went out.
    consumer_lag: Mutex<HashMap<String, (i64, i64)>>,
    /// Cluster mode: this node's data points are also kept here until the other nodes are
    /// told of them ([`StreamMetrics::take_outbox`]), so every node shows the cluster's totals.
    sharing: AtomicBool,
    outbox: Mutex<HashMap<(Option<u32>, Metric), Stat>>,
    lag_outbox: Mutex<HashMap<String, (i64, i64)>>,
}

impl Default for StreamMetrics {
    fn default() -> Self {
        StreamMetrics {
            stream: Mutex::new(Series::new(BUCKETS)),
            shards: Mutex::new(HashMap::new()),
            consumer_lag: Mutex::new(HashMap::new()),
            sharing: AtomicBool::new(false),
            outbox: Mutex::new(HashMap::new()),
            lag_outbox: Mutex::new(HashMap::new()),
        }
    }
}

/// What one event adds to the metrics.
pub struct Observation<'a> {
    /// The shard, for shard-level metrics (when enabled).
    pub shard: Option<u32>,
    pub values: &'a [(Metric, f64)],
}

impl StreamMetrics {
    /// Keeps this node's data points for the other nodes too (cluster mode), or stops.
    pub fn set_sharing(&self, sharing: bool) {
        self.sharing.store(sharing, Ordering::Relaxed);
        if !sharing {
            self.outbox.lock().clear();
            self.lag_outbox.lock().clear();
        }
    }

    pub(crate) fn sharing(&self) -> bool {
        self.sharing.load(Ordering::Relaxed)
    }

    /// This node's data points since the last call, merged per shard (`None`: the stream)
    /// and metric.
    pub fn take_outbox(&self) -> Vec<(Option<u32>, Metric, Stat)> {
        std::mem::take(&mut *self.outbox.lock())
            .into_iter()
            .map(|((shard, metric), stat)| (shard, metric, stat))
            .collect()
    }

    /// The consumers' lags this node noted since the last call: (consumer, MillisBehindLatest,
    /// when).
    pub fn take_lag_outbox(&self) -> Vec<(String, i64, i64)> {
        std::mem::take(&mut *self.lag_outbox.lock())
            .into_iter()
            .map(|(consumer, (behind, at))| (consumer, behind, at))
            .collect()
    }

    /// Notes another node's last lag of a consumer, unless this node saw a later one.
    pub fn record_remote_lag(&self, consumer: &str, millis_behind: i64, at_ms: i64) {
        let mut lags = self.consumer_lag.lock();
        let newer = lags.get(consumer).is_none_or(|(_, seen)| *seen <= at_ms);
        if newer {
            lags.insert(consumer.to_string(), (millis_behind, at_ms));
        }
    }

    /// Records another node's data points (what its [`StreamMetrics::take_outbox`] gave) as
    /// of `at_ms`; shard-level ones only where this node keeps the shard's series or
    /// enhanced monitoring (`enabled`) asks for them.
    pub fn record_remote(
        &self,
        points: &[(Option<u32>, Metric, Stat)],
        enabled: &[Metric],
        at_ms: i64,
    ) {
        let mut stream = self.stream.lock();
        let mut shards = self.shards.lock();
        for (shard, metric, stat) in points {
            if stat.count == 0 {
                continue;
            }
            match shard {
                None => stream.record_stat(*metric, stat, at_ms),
                Some(index) if enabled.contains(metric) => shards
                    .entry(*index)
                    .or_insert_with(|| Series::new(SHARD_BUCKETS))
                    .record_stat(*metric, stat, at_ms),
                Some(_) => {}
            }
        }
    }

    fn to_outbox(&self, shard: Option<u32>, metric: Metric, stat: &Stat) {
        self.outbox
            .lock()
            .entry((shard, metric))
            .or_default()
            .merge(stat);
    }

    /// Records data points; shard-level ones only for `enabled` shard-level metrics.
    pub fn record(&self, observation: &Observation<'_>, enabled: &[Metric], now_ms: i64) {
        {
            let mut stream = self.stream.lock();
            for &(metric, value) in observation.values {
                if metric != Metric::IteratorAgeMilliseconds {
                    stream.record(metric, value, now_ms);
                }
            }
        }
        if self.sharing() {
            for &(metric, value) in observation.values {
                if metric != Metric::IteratorAgeMilliseconds {
                    let mut point = Stat::default();
                    point.add(value);
                    self.to_outbox(None, metric, &point);
                }
            }
        }
        if let Some(shard) = observation.shard {
            self.record_shard(shard, observation.values, enabled, now_ms);
        }
    }

    /// Records stream-level data points merged by the caller (a put's per-shard data points,
    /// with one lock instead of one per shard); the statistics come out as if recorded one by
    /// one.
    pub fn record_merged(&self, stats: &[(Metric, Stat)], now_ms: i64) {
        {
            let mut stream = self.stream.lock();
            for (metric, stat) in stats {
                if stat.count > 0 {
                    stream.record_stat(*metric, stat, now_ms);
                }
            }
        }
        if self.sharing() {
            for (metric, stat) in stats {
                if stat.count > 0 {
                    self.to_outbox(None, *metric, stat);
                }
            }
        }
    }

    /// Records shard-level data points only, for the `enabled` metrics.
    pub fn record_shard(
        &self,
        shard: u32,
        values: &[(Metric, f64)],
        enabled: &[Metric],
        now_ms: i64,
    ) {
        if enabled.is_empty() {
            return;
        }
        {
            let mut shards = self.shards.lock();
            let series = shards
                .entry(shard)
                .or_insert_with(|| Series::new(SHARD_BUCKETS));
            for &(metric, value) in values {
                if enabled.contains(&metric) {
                    series.record(metric, value, now_ms);
                }
            }
        }
        if self.sharing() {
            for &(metric, value) in values {
                if enabled.contains(&metric) {
                    let mut point = Stat::default();
                    point.add(value);
                    self.to_outbox(Some(shard), metric, &point);
                }
            }
        }
    }

    /// The stream's running totals.
    pub fn stream_totals(&self) -> Totals {
        self.stream.lock().totals.clone()
    }

    /// Shard `index`'s running totals, if it has a series.
    pub fn shard_totals(&self, index: u32) -> Option<Totals> {
        self.shards.lock().get(&index).map(|s| s.totals.clone())
    }

    /// The data points of `metric` in `[from_s, to_s)`, of the stream or of one shard.
    pub fn window(&self, shard: Option<u32>, metric: Metric, from_s: i64, to_s: i64) -> Stat {
        match shard {
            None => self.stream.lock().window(metric, from_s, to_s),
            Some(index) => self
                .shards
                .lock()
                .get(&index)
                .map(|s| s.window(metric, from_s, to_s))
                .unwrap_or_default(),
        }
    }

    /// Shards with series, sorted.
    pub fn shard_indexes(&self) -> Vec<u32> {
        let mut indexes: Vec<u32> = self.shards.lock().keys().copied().collect();
        indexes.sort_unstable();
        indexes
    }

    /// Notes how far behind a consumer's last event was.
    pub fn record_consumer_lag(&self, consumer: &str, millis_behind: i64, now_ms: i64) {
        self.consumer_lag
            .lock()
            .insert(consumer.to_string(), (millis_behind, now_ms));
        if self.sharing() {
            self.lag_outbox
                .lock()
                .insert(consumer.to_string(), (millis_behind, now_ms));
        }
    }

    /// Each consumer's last MillisBehindLatest and when it was seen.
    pub fn consumer_lag(&self) -> HashMap<String, (i64, i64)> {
        self.consumer_lag.lock().clone()
    }

    /// Forgets shard-level series (DisableEnhancedMonitoring of everything).
    pub fn clear_shards(&self) {
        self.shards.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_totals() {
        let metrics = StreamMetrics::default();
        let put = |n: f64, at_ms: i64| {
            metrics.record(
                &Observation {
                    shard: Some(1),
                    values: &[
                        (Metric::IncomingRecords, n),
                        (Metric::IteratorAgeMilliseconds, n * 10.0),
                    ],
                },
                &[Metric::IncomingRecords],
                at_ms,
            )
        };
        put(5.0, 1_000_000);
        put(7.0, 1_005_000);
        put(1.0, 1_061_000);
        assert_eq!(
            metrics.stream_totals().total(Metric::IncomingRecords).sum,
            13.0
        );
        let first_minute = metrics.window(None, Metric::IncomingRecords, 960, 1020);
        assert_eq!(first_minute.statistic(Statistic::Sum), Some(12.0));
        assert_eq!(first_minute.statistic(Statistic::SampleCount), Some(2.0));
        assert_eq!(first_minute.statistic(Statistic::Maximum), Some(7.0));
        assert_eq!(first_minute.statistic(Statistic::Average), Some(6.0));
        assert_eq!(
            metrics
                .window(None, Metric::IncomingRecords, 0, 900)
                .statistic(Statistic::Sum),
            None
        );
        // Shard level: only what is enabled; the stream never gets the shard-only metric.
        let shard = metrics.shard_totals(1).expect("shard series");
        assert_eq!(shard.total(Metric::IncomingRecords).sum, 13.0);
        assert_eq!(shard.total(Metric::IteratorAgeMilliseconds).count, 0);
        assert_eq!(
            metrics
                .window(Some(1), Metric::IncomingRecords, 960, 1070)
                .sum,
            13.0
        );
        let totals = metrics.stream_totals();
        assert_eq!(totals.total(Metric::IteratorAgeMilliseconds).count, 0);
        // An hour later the old buckets are reused, not summed.
        put(2.0, 1_000_000 + 3_600_000);
        let late = metrics.window(None, Metric::IncomingRecords, 4590, 4610);
        assert_eq!(late.sum, 2.0);
        assert_eq!(
            metrics
                .window(None, Metric::IncomingRecords, 990, 1010)
                .count,
            0
        );
    }

    #[test]
    fn names_round_trip() {
        for metric in ALL_METRICS {
            assert_eq!(Metric::from_name(metric.name()), Some(metric));
        }
        assert_eq!(
            ALL_METRICS.len(),
            Metric::IteratorAgeMilliseconds as usize + 1
        );
    }
}
