//! The web console at `/_rivulet/`: a page, a script and a style sheet built into the binary
//! (no build step), and the JSON they read — every stream with its shape and metric totals
//! (`/_rivulet/api/streams`; the page turns successive totals into per-second charts), every
//! queue with its counts (`/_rivulet/api/queues`) and a record browser over a shard
//! (`/_rivulet/api/records`). A browser's `GET /` is redirected
//! here; everything else keeps answering as AWS does.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use rivulet_engine::metrics::{Metric, Totals};
use rivulet_engine::{Engine, IteratorType, StartAt};
use serde_json::{Value, json};

use crate::observe::Page;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Under `--auth sigv4`, the signed-in principal: its account, and `authorize(action,
/// stream ARN or "", log the denial)`, whose error is AccessDeniedException's message. Without
/// authentication there is no viewer and everything is shown.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub account: &'a str,
    pub authorize: &'a (dyn Fn(&str, &str, bool) -> Result<(), String> + Sync),
}

impl Viewer<'_> {
    /// May the principal perform `action` (a Kinesis operation, or another service's action
    /// written out) on the stream `stream_arn` (`""`: no resource)? A denial is logged.
    pub fn check(&self, action: &str, stream_arn: &str) -> Result<(), String> {
        (self.authorize)(action, stream_arn, true)
    }

    /// Whether a list may show the stream (DescribeStreamSummary). Quiet: what a list leaves
    /// out is not an attempt.
    fn may_describe(&self, stream_arn: &str) -> bool {
        (self.authorize)("DescribeStreamSummary", stream_arn, false).is_ok()
    }
}

/// A 403 page with AccessDeniedException's message.
pub fn denied(message: String) -> Page {
    Page::json(
        403,
        &json!({"__type": "AccessDeniedException", "message": message}),
    )
}

/// The totals the console charts, per stream and (with enhanced monitoring) per shard.
const CHARTED: [Metric; 7] = [
    Metric::IncomingRecords,
    Metric::IncomingBytes,
    Metric::OutgoingRecords,
    Metric::OutgoingBytes,
    Metric::WriteProvisionedThroughputExceeded,
    Metric::ReadProvisionedThroughputExceeded,
    Metric::IteratorAgeMilliseconds,
];

fn totals(series: &Totals, shard: bool) -> Value {
    let mut out = serde_json::Map::new();
    for metric in CHARTED {
        // The stream's iterator age is GetRecords'; shards have their own metric.
        let source = if metric == Metric::IteratorAgeMilliseconds && !shard {
            Metric::GetRecordsIteratorAgeMilliseconds
        } else {
            metric
        };
        let total = series.total(source);
        let value = if metric.is_level() {
            total.last
        } else {
            total.sum
        };
        out.insert(metric.name().to_string(), json!(value));
    }
    Value::Object(out)
}

/// `hash / 2^128`, for drawing the shard map.
fn fraction(decimal: &str) -> f64 {
    decimal
        .parse::<u128>()
        .map_or(0.0, |v| v as f64 / 2f64.powi(128))
}

/// Every stream the principal may describe (DescribeStreamSummary), with its shards,
/// consumers and metric totals.
fn streams(
    accounts: &HashMap<String, Arc<Engine>>,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
    node: Option<&Node>,
) -> Value {
    let mut ids: Vec<&String> = accounts.keys().collect();
    ids.sort();
    let mut out = Vec::new();
    for account in ids {
        for view in accounts[account].metrics_snapshot(now_ms) {
            if viewer.is_some_and(|v| !v.may_describe(&view.arn)) {
                continue;
            }
            let shards: Vec<Value> = view
                .shards
                .iter()
                .map(|s| {
                    json!({
                        "id": s.shard_id,
                        "open": s.open,
                        "parents": s.parents,
                        "start": fraction(&s.starting_hash_key),
                        "end": fraction(&s.ending_hash_key),
                        "totals": s.totals.as_ref().map(|t| totals(t, true)),
                    })
                })
                .collect();
            let consumers: Vec<Value> = view
                .consumers
                .iter()
                .map(|(name, lag)| {
                    json!({
                        "name": name,
                        "millis_behind": lag.map(|(behind, _)| behind),
                        "seen_ms": lag.map(|(_, at)| at),
                    })
                })
                .collect();
            out.push(json!({
                "account": account,
                "name": view.name,
                "arn": view.arn,
                "status": view.status.as_str(),
                "mode": view.mode.as_str(),
                "retention_hours": view.retention_hours,
                "encryption": if view.encrypted { "KMS" } else { "NONE" },
                "open_shards": view.shards.iter().filter(|s| s.open).count(),
                "shard_level_metrics": view
                    .shard_level_metrics
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>(),
                "totals": totals(&view.totals, false),
                "shards": shards,
                "consumers": consumers,
                "on_demand": view.on_demand.map(|v| json!({
                    "load_shards": v.load_shards,
                    "peak_shards": v.peak_shards,
                    "target_shards": v.target_shards,
                    "shard_limit_hits": v.shard_limit_hits,
                })),
            }));
        }
    }
    let mut answer = json!({ "now_ms": now_ms, "streams": out });
    if let Some(node) = node {
        answer["node"] = json!(node.name);
        answer["leader"] = json!(node.leader);
    }
    answer
}

/// Every queue the viewer may describe, with its counts (the page turns successive counters
/// into per-second rates).
async fn queues(
    accounts: &HashMap<String, Arc<Engine>>,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Value {
    let mut ids: Vec<&String> = accounts.keys().collect();
    ids.sort();
    let mut out = Vec::new();
    for account in ids {
        let engine = &accounts[account];
        for queue in rivulet_queue::Queues::of(engine)
            .metrics(engine, now_ms)
            .await
        {
            if viewer.is_some_and(|v| (v.authorize)("DescribeQueue", &queue.arn, false).is_err()) {
                continue;
            }
            let c = &queue.counts;
            out.push(json!({
                "account": account,
                "name": queue.name,
                "arn": queue.arn,
                "stream": queue.stream,
                "visible": c.visible,
                "in_flight": c.in_flight,
                "dead": c.dead,
                "oldest_age_ms": c.oldest_age_ms,
                "totals": {
                    "receives": c.receives,
                    "redeliveries": c.redeliveries,
                    "acknowledgements": c.acknowledgements,
                },
            }));
        }
    }
    json!({ "now_ms": now_ms, "queues": out })
}

/// Every channel the viewer may describe, with its status and delivery counters (as the
/// node that delivers saw them).
fn channels(
    accounts: &HashMap<String, Arc<Engine>>,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Value {
    let mut ids: Vec<&String> = accounts.keys().collect();
    ids.sort();
    let mut out = Vec::new();
    for account in ids {
        let engine = &accounts[account];
        let board = rivulet_channel::metrics(engine);
        for view in engine.channel_views() {
            if viewer.is_some_and(|v| (v.authorize)("DescribeChannel", &view.arn, false).is_err()) {
                continue;
            }
            let counts = board
                .iter()
                .find(|m| m.id == view.meta.id)
                .cloned()
                .unwrap_or_default();
            out.push(json!({
                "account": account,
                "name": view.meta.name,
                "arn": view.arn,
                "stream": view.stream_arn.rsplit('/').next().unwrap_or_default(),
                "status": view.meta.status.as_str(),
                "reason": view.meta.reason,
                "destination": view.meta.destination.kind(),
                "lag_ms": counts.lag_ms,
                "totals": {
                    "records": counts.records_delivered,
                    "dead_letters": counts.dead_letters,
                    "failures": counts.failures,
                },
            }));
        }
    }
    json!({ "now_ms": now_ms, "channels": out })
}

/// Cluster mode: the node answering, whose metric totals are the cluster's.
pub struct Node {
    pub name: String,
    pub leader: bool,
}

/// The query's parameters as browsers write them (`+` is a space), decoded by the same code
/// that reads SigV4's query strings.
fn query(uri: &http::Uri) -> HashMap<String, String> {
    let query = uri.query().map(|q| q.replace('+', "%20"));
    crate::sigv4::query_params(query.as_deref())
        .into_iter()
        .collect()
}

/// Records of one shard, for a principal that may GetRecords on the stream (of its own
/// account unless `account` names another).
async fn records(
    accounts: &HashMap<String, Arc<Engine>>,
    own: &str,
    uri: &http::Uri,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Page {
    let q = query(uri);
    let account = q
        .get("account")
        .map(String::as_str)
        .or(viewer.map(|v| v.account))
        .unwrap_or(own);
    let stream = q.get("stream").map(String::as_str).unwrap_or("");
    let shard = q.get("shard").map(String::as_str).unwrap_or("");
    // Authorized before anything is looked up, so a denied principal learns nothing.
    if let Some(viewer) = viewer {
        let region = accounts.get(own).map(|e| e.config().region.clone());
        let arn = rivulet_engine::StreamArn {
            region: region.as_deref().unwrap_or_default(),
            account,
            name: stream,
        };
        if let Err(message) = viewer.check("GetRecords", &arn.to_string()) {
            return denied(message);
        }
    }
    let Some(engine) = accounts.get(account) else {
        return Page::json(404, &json!({"message": "No such account."}));
    };
    let kind = match q
        .get("position")
        .map(String::as_str)
        .unwrap_or("TRIM_HORIZON")
    {
        "LATEST" => IteratorType::Latest,
        "AFTER_SEQUENCE_NUMBER" => IteratorType::AfterSequenceNumber,
        "AT_SEQUENCE_NUMBER" => IteratorType::AtSequenceNumber,
        _ => IteratorType::TrimHorizon,
    };
    let start = StartAt {
        kind,
        sequence_number: q.get("sequence").map(String::as_str),
        timestamp_ms: None,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100usize)
        .clamp(1, 1000);
    match engine
        .browse_shard(stream, shard, &start, limit, now_ms)
        .await
    {
        Ok(records) => {
            let records: Vec<Value> = records
                .iter()
                .map(|r| {
                    json!({
                        "sequence_number": r.sequence_number.as_str(),
                        "arrival_ms": r.arrival_ms,
                        "partition_key": String::from_utf8_lossy(&r.partition_key),
                        "data": base64::engine::general_purpose::STANDARD.encode(&r.data),
                        "encrypted": r.encrypted,
                    })
                })
                .collect();
            Page::json(200, &json!({ "records": records }))
        }
        Err(error) => Page::json(
            400,
            &json!({"__type": error.kind.code(), "message": error.message}),
        ),
    }
}

/// Serves the console's paths; `None` for paths that are not the console's.
pub async fn page(
    uri: &http::Uri,
    accounts: &HashMap<String, Arc<Engine>>,
    own: &str,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
    node: Option<&Node>,
) -> Option<Page> {
    let asset = |content_type: &'static str, text: &str| Page {
        status: 200,
        content_type,
        body: text.as_bytes().to_vec(),
    };
    Some(match uri.path() {
        "/_rivulet/" | "/_rivulet/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "/_rivulet/console.js" => asset("text/javascript; charset=utf-8", CONSOLE_JS),
        "/_rivulet/console.css" => asset("text/css; charset=utf-8", CONSOLE_CSS),
        "/_rivulet/api/streams" => Page::json(200, &streams(accounts, now_ms, viewer, node)),
        "/_rivulet/api/records" => records(accounts, own, uri, now_ms, viewer).await,
        "/_rivulet/api/queues" => Page::json(200, &queues(accounts, now_ms, viewer).await),
        "/_rivulet/api/channels" => Page::json(200, &channels(accounts, now_ms, viewer)),
        _ => return None,
    })
}

/// Whether a request is a browser opening the server's root: `GET /`, HTML accepted, no AWS
/// signature. Such a request is redirected to the console.
pub fn is_browser_root(request: &http::Request<hyper::body::Incoming>) -> bool {
    let headers = request.headers();
    request.method() == http::Method::GET
        && request.uri().path() == "/"
        && request.uri().query().is_none_or(|q| !q.contains("X-Amz-"))
        && !headers.contains_key(http::header::AUTHORIZATION)
        && !headers.contains_key("x-amz-target")
        && headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let uri: http::Uri =
            "/_rivulet/api/records?stream=my%2Dstream&shard=shardId-000000000000&limit=5"
                .parse()
                .unwrap();
        let q = query(&uri);
        assert_eq!(q["stream"], "my-stream");
        assert_eq!(q["limit"], "5");
        let spaced: http::Uri = "/x?a=b+c%20d%zz".parse().unwrap();
        assert_eq!(query(&spaced)["a"], "b c d%zz");
        assert_eq!(fraction("0"), 0.0);
        assert!((fraction("170141183460469231731687303715884105728") - 0.5).abs() < 1e-12);
    }
}
