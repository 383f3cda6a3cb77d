//! What Rivulet serves about itself under the reserved prefix `/_rivulet/` (every other path
//! keeps answering exactly as AWS does):
//!
//! - `GET /_rivulet/metrics`: Prometheus text with the AWS/Kinesis CloudWatch metric names
//!   (dots become underscores: `PutRecord.Bytes` → `kinesis_PutRecord_Bytes`) and dimensions
//!   (`StreamName`, and `ShardId` for the shard-level metrics EnableEnhancedMonitoring turned
//!   on). Amounts are running sums (counters); ages and latencies are the last data point
//!   (gauges).
//! - `GET /_rivulet/health`: 200 while the process serves.
//! - `GET /_rivulet/ready`: 200 once storage is open and until shutdown begins, then 503.
//! - `GET /_rivulet/alarms`: every metric alarm with its state (`alarms.rs`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use rivulet_engine::Engine;
use rivulet_engine::metrics::{ALL_METRICS, Metric, Totals};

/// The reserved path prefix.
pub const PREFIX: &str = "/_rivulet/";

/// A response: status, content type, body.
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Page {
    pub fn json(status: u16, value: &serde_json::Value) -> Page {
        Page {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric_name(metric: Metric) -> String {
    format!("kinesis_{}", metric.name().replace('.', "_"))
}

fn value_of(series: &Totals, metric: Metric) -> Option<f64> {
    let total = series.total(metric);
    if total.count == 0 {
        return None;
    }
    Some(if metric.is_level() {
        total.last
    } else {
        total.sum
    })
}

/// The gauges and counters of every queue, by account.
const QUEUE_SERIES: [(&str, &str, &str); 7] = [
    (
        "rivulet_queue_visible_records",
        "gauge",
        "Records a receive would get now: new ones and ones visible again.",
    ),
    (
        "rivulet_queue_in_flight_records",
        "gauge",
        "Records received and not yet acknowledged, within their visibility timeout.",
    ),
    (
        "rivulet_queue_dead_letter_records",
        "gauge",
        "Dead-letter records, received or not.",
    ),
    (
        "rivulet_queue_oldest_record_age_milliseconds",
        "gauge",
        "Age of the oldest record not yet received, or visible again.",
    ),
    (
        "rivulet_queue_receives_total",
        "counter",
        "Records received for the first time.",
    ),
    (
        "rivulet_queue_redeliveries_total",
        "counter",
        "Records received again (visible again, or dead letters).",
    ),
    (
        "rivulet_queue_acknowledgements_total",
        "counter",
        "Records acknowledged.",
    ),
];

/// The queue series of every account's queues, in Prometheus text.
async fn queue_metrics(accounts: &HashMap<String, Arc<Engine>>, ids: &[&String], out: &mut String) {
    let now_ms = crate::http::now_ms();
    let mut rows = Vec::new();
    for account in ids {
        let engine = &accounts[*account];
        for queue in rivulet_queue::Queues::of(engine)
            .metrics(engine, now_ms)
            .await
        {
            rows.push(((*account).clone(), queue));
        }
    }
    if rows.is_empty() {
        return;
    }
    for (index, (name, kind, help)) in QUEUE_SERIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (account, queue) in &rows {
            let c = &queue.counts;
            let value = [
                c.visible,
                c.in_flight,
                c.dead,
                c.oldest_age_ms.max(0) as u64,
                c.receives,
                c.redeliveries,
                c.acknowledgements,
            ][index];
            let _ = writeln!(
                out,
                "{name}{{AccountId=\"{}\",QueueName=\"{}\",StreamName=\"{}\"}} {value}",
                label(account),
                label(&queue.name),
                label(&queue.stream)
            );
        }
    }
}

/// The series of every channel. The totals are in the metadata store, so every node of a
/// cluster shows them; the lag and the failures are the delivering node's (the leader's).
const CHANNEL_SERIES: [(&str, &str, &str); 7] = [
    (
        "rivulet_channel_delivery_lag_milliseconds",
        "gauge",
        "Age of the oldest record read and not yet delivered (DeliveryToS3.DataFreshness).",
    ),
    (
        "rivulet_channel_records_delivered_total",
        "counter",
        "Records delivered to the destination (DeliveryToS3.SuccessfulRecordCount).",
    ),
    (
        "rivulet_channel_record_bytes_delivered_total",
        "counter",
        "Bytes of the records delivered (DeliveryToS3.BytesProcessed).",
    ),
    (
        "rivulet_channel_objects_written_total",
        "counter",
        "Objects written, dead-letter objects included (DeliveryToS3.DeliverySuccess).",
    ),
    (
        "rivulet_channel_bytes_written_total",
        "counter",
        "Bytes of the objects written, after compression (DeliveryToS3.BytesOut).",
    ),
    (
        "rivulet_channel_dead_letters_total",
        "counter",
        "Records sent to the dead-letter prefix (DeliveryToS3.FailedRecordCount).",
    ),
    (
        "rivulet_channel_failures_total",
        "counter",
        "Delivery attempts that failed and will be tried again.",
    ),
];

/// The channel series of every account's channels, in Prometheus text.
fn channel_metrics(accounts: &HashMap<String, Arc<Engine>>, ids: &[&String], out: &mut String) {
    let mut rows = Vec::new();
    for account in ids {
        for channel in rivulet_channel::metrics(&accounts[*account]) {
            rows.push(((*account).clone(), channel));
        }
    }
    if rows.is_empty() {
        return;
    }
    for (index, (name, kind, help)) in CHANNEL_SERIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (account, channel) in &rows {
            let value = [
                channel.lag_ms.max(0) as u64,
                channel.records_delivered,
                channel.bytes_delivered,
                channel.objects_delivered,
                channel.bytes_written,
                channel.dead_letters,
                channel.failures,
            ][index];
            let _ = writeln!(
                out,
                "{name}{{AccountId=\"{}\",ChannelName=\"{}\",ChannelId=\"{}\",StreamName=\"{}\"}} {value}",
                label(account),
                label(&channel.name),
                label(&channel.id),
                label(&channel.stream)
            );
        }
    }
}

/// The Prometheus exposition of every account's streams and queues.
pub async fn prometheus(accounts: &HashMap<String, Arc<Engine>>) -> String {
    let now_ms = crate::http::now_ms();
    let mut views = Vec::new();
    let mut ids: Vec<&String> = accounts.keys().collect();
    ids.sort();
    for account in ids {
        for view in accounts[account].metrics_snapshot(now_ms) {
            views.push((account.clone(), view));
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP rivulet_streams Streams, by account.\n# TYPE rivulet_streams gauge"
    );
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (account, _) in &views {
        *counts.entry(account.as_str()).or_default() += 1;
    }
    for account in accounts.keys() {
        let n = counts.get(account.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "rivulet_streams{{AccountId=\"{}\"}} {n}",
            label(account)
        );
    }
    for metric in ALL_METRICS {
        let name = metric_name(metric);
        let mut lines = String::new();
        for (account, view) in &views {
            let stream = label(&view.name);
            let account = label(account);
            if metric != Metric::IteratorAgeMilliseconds
                && let Some(value) = value_of(&view.totals, metric)
            {
                let _ = writeln!(
                    lines,
                    "{name}{{AccountId=\"{account}\",StreamName=\"{stream}\"}} {value}"
                );
            }
            if !view.shard_level_metrics.contains(&metric) {
                continue;
            }
            for shard in &view.shards {
                if let Some(value) = shard.totals.as_ref().and_then(|s| value_of(s, metric)) {
                    let _ = writeln!(
                        lines,
                        "{name}{{AccountId=\"{account}\",StreamName=\"{stream}\",ShardId=\"{}\"}} {value}",
                        shard.shard_id
                    );
                }
            }
        }
        if lines.is_empty() {
            continue;
        }
        let kind = if metric.is_level() {
            "gauge"
        } else {
            "counter"
        };
        let what = if metric.is_level() {
            "last data point"
        } else {
            "sum of data points"
        };
        let _ = writeln!(
            out,
            "# HELP {name} AWS/Kinesis {} ({}), {what}.\n# TYPE {name} {kind}",
            metric.name(),
            metric.unit()
        );
        out.push_str(&lines);
    }
    on_demand_metrics(&views, &mut out);
    let mut ids: Vec<&String> = accounts.keys().collect();
    ids.sort();
    queue_metrics(accounts, &ids, &mut out).await;
    channel_metrics(accounts, &ids, &mut out);
    out
}

/// On-demand streams' capacity as their scaler sees it: load, 30-day peak and target in
/// shards' worth, and the scale-ups the account's shard quota cut short.
fn on_demand_metrics(views: &[(String, rivulet_engine::StreamMetricsView)], out: &mut String) {
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&rivulet_engine::autoscale::OnDemandView) -> f64,
    );
    let series: [Series; 4] = [
        (
            "rivulet_on_demand_load_shards",
            "gauge",
            "On-demand stream's accepted writes (5 s average), in shards' worth of capacity.",
            |v| v.load_shards,
        ),
        (
            "rivulet_on_demand_peak_shards",
            "gauge",
            "On-demand stream's peak load of the 30-day window, in shards' worth of capacity.",
            |v| v.peak_shards,
        ),
        (
            "rivulet_on_demand_target_shards",
            "gauge",
            "Open shards the on-demand stream scales towards (twice the peak, at least 4).",
            |v| f64::from(v.target_shards),
        ),
        (
            "rivulet_on_demand_shard_limit_hits_total",
            "counter",
            "Scale-up steps the account's shard limit cut short.",
            |v| v.shard_limit_hits as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        let mut lines = String::new();
        for (account, view) in views {
            if let Some(on_demand) = &view.on_demand {
                let _ = writeln!(
                    lines,
                    "{name}{{AccountId=\"{}\",StreamName=\"{}\"}} {}",
                    label(account),
                    label(&view.name),
                    value(on_demand)
                );
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&lines);
        }
    }
}

/// Serves a `/_rivulet/` path; `None` for paths that are not ours (the caller answers 404).
/// With a `viewer` (under `--auth sigv4`), metrics and alarms are CloudWatch's actions
/// (`cloudwatch:GetMetricData`, `cloudwatch:DescribeAlarms`, on no resource) and cover the
/// viewer's account only.
pub async fn page(
    path: &str,
    accounts: &HashMap<String, Arc<Engine>>,
    own: &str,
    alarms: &crate::alarms::Alarms,
    stopping: bool,
    viewer: Option<crate::console::Viewer<'_>>,
) -> Option<Page> {
    let action = match path {
        "/_rivulet/metrics" => Some("cloudwatch:GetMetricData"),
        "/_rivulet/alarms" => Some("cloudwatch:DescribeAlarms"),
        _ => None,
    };
    if let Some(Err(message)) = action.zip(viewer).map(|(a, v)| v.check(a, "")) {
        return Some(crate::console::denied(message));
    }
    let viewer = viewer.map(|v| v.account);
    match path {
        "/_rivulet/alarms" => Some(Page::json(
            200,
            &serde_json::json!({ "alarms": alarms.views_for(viewer, own) }),
        )),
        "/_rivulet/metrics" => Some(Page {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: match viewer {
                None => prometheus(accounts).await,
                Some(account) => {
                    prometheus(
                        &accounts
                            .get_key_value(account)
                            .map(|(id, engine)| (id.clone(), engine.clone()))
                            .into_iter()
                            .collect(),
                    )
                    .await
                }
            }
            .into_bytes(),
        }),
        "/_rivulet/health" => Some(Page::json(200, &serde_json::json!({"status": "ok"}))),
        "/_rivulet/ready" => Some(if stopping {
            Page::json(503, &serde_json::json!({"status": "stopping"}))
        } else {
            Page::json(200, &serde_json::json!({"status": "ready"}))
        }),
        _ => None,
    }
}
