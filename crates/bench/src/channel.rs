//! The channel workload (issue 15): a stream taking `rate` records a second while a channel
//! delivers it to a bucket (the server's bucket folders or `--s3-endpoint`) or to an Iceberg
//! table (the server's table buckets or `--iceberg-catalog`). Reports records delivered a
//! second, the delivery lag's percentiles (sampled from `/_rivulet/metrics` every 100 ms), the
//! time to drain once the load stops, and the server's CPU per million records delivered
//! (with `--pid`). The server should run with `--channel-time-scale 300` (freshness 1 s) and
//! `--limits off`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{Value, json};

use crate::{Endpoint, call, call_json, percentile, report};

/// Where the channel delivers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A general purpose bucket (objects).
    Bucket,
    /// A streaming table (Iceberg).
    Table,
    /// No channel: the same load alone, for the server's CPU without delivery.
    None,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ChannelArgs {
    #[arg(long, value_enum, default_value = "bucket")]
    pub destination: Destination,
    /// The bucket (which must exist), or the dead-letter bucket of a table
    #[arg(long, default_value = "bench")]
    pub bucket: String,
    /// The table bucket (its folder or REST warehouse must exist)
    #[arg(long, default_value = "bench-tables")]
    pub table_bucket: String,
    /// GSRSchemaARN's registry/name (the server's schema dir must hold it; see docs/channels.md)
    #[arg(long, default_value = "bench/records")]
    pub schema: String,
    /// CompressionType (NONE, GZIP or ZSTD for buckets; NONE, ZSTD or SNAPPY for tables)
    #[arg(long, default_value = "ZSTD")]
    pub compression: String,
    /// Records put a second (JSON, about 100 bytes each, 500 per PutRecords)
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// The server's pid, for its CPU time
    #[arg(long)]
    pub pid: Option<u32>,
}

fn records_body(stream: &str, batch: u64, size: usize) -> Bytes {
    use base64::Engine as _;
    let records: Vec<Value> = (0..size as u64)
        .map(|i| {
            let id = batch * size as u64 + i;
            let record = format!(
                r#"{{"id":{id},"at":"2026-12-03T{:02}:{:02}:00Z","item":"item-{:08}","price":{}.25}}"#,
                id % 24,
                id % 60,
                id % 100_000_000,
                id % 1000
            );
            json!({
                "Data": base64::engine::general_purpose::STANDARD.encode(record),
                "PartitionKey": format!("pk-{id}"),
            })
        })
        .collect();
    Bytes::from(json!({"StreamName": stream, "Records": records}).to_string())
}

async fn get_text(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> anyhow::Result<String> {
    sender.ready().await?;
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.method_mut() = http::Method::GET;
    *request.uri_mut() = path.parse()?;
    request
        .headers_mut()
        .insert(http::header::HOST, http::HeaderValue::try_from(host)?);
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).to_string())
}

/// A channel series' value for `channel` from the metrics page.
fn series(text: &str, name: &str, channel: &str) -> Option<f64> {
    let label = format!("ChannelName=\"{channel}\"");
    text.lines()
        .find(|line| line.starts_with(name) && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub(crate) async fn run(
    endpoint: &Arc<Endpoint>,
    label: &str,
    args: &ChannelArgs,
) -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let stream = format!("{label}-channel-{stamp}");
    let channel = format!("bench-{stamp}");
    let mut s = endpoint.connect().await?;
    let host = endpoint.addr.clone();
    let arn = crate::queue::on_demand_stream(&mut s, &host, &stream).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead_letters = json!({"BucketARN": format!("arn:aws:s3:::{}", args.bucket),
                              "ExpectedBucketOwner": "000000000000"});
    let mut body = json!({
        "ChannelName": channel,
        "ServiceExecutionRoleARN": "arn:aws:iam::000000000000:role/bench",
        "StreamConfigurationList": [{"StreamARN": arn, "RecordConfiguration": {
            "RecordFormatType": "JSON"}}],
    });
    match args.destination {
        Destination::Bucket => {
            body["S3DestinationConfiguration"] = json!({"StorageConfiguration": {
                "BucketARN": format!("arn:aws:s3:::{}", args.bucket),
                "ExpectedBucketOwner": "000000000000",
                "CompressionType": args.compression}});
        }
        Destination::None => {}
        Destination::Table => {
            body["StreamConfigurationList"][0]["RecordConfiguration"]["GSRSchemaARN"] = json!(
                format!("arn:aws:glue:us-east-1:000000000000:schema/{}", args.schema)
            );
            body["S3TablesDestinationConfiguration"] = json!({
                "DeadLetterQueueS3Configuration": dead_letters,
                "S3TablesConfigurationList": [{
                    "TableBucketARN": format!(
                        "arn:aws:s3tables:us-east-1:000000000000:bucket/{}", args.table_bucket),
                    "Namespace": "bench", "TableName": format!("records_{stamp}"),
                    "CompressionType": args.compression,
                    "PartitionSpec": {"PartitionFields": [
                        {"Transform": "TIME_HOUR", "SourceName": "at"}]}}]});
        }
    }
    let with_channel = args.destination != Destination::None;
    let created = if with_channel {
        call_json(&mut s, &host, "CreateChannel", body).await?
    } else {
        Value::Null
    };
    let channel_arn = created["ChannelDescription"]["ChannelARN"].clone();
    if with_channel {
        loop {
            let d = call_json(
                &mut s,
                &host,
                "DescribeChannel",
                json!({"ChannelARN": channel_arn}),
            )
            .await?;
            match d["ChannelDescription"]["ChannelStatus"].as_str() {
                Some("ACTIVE") => break,
                Some("FAILED") => bail!(
                    "the channel FAILED: {}",
                    d["ChannelDescription"]["ChannelStatusReason"]
                ),
                _ if Instant::now() > deadline => bail!("the channel did not become ACTIVE"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    // The load: 500-record PutRecords paced to `rate` over 4 connections.
    let batches_per_second = (args.rate / 500).max(1);
    let total_batches = batches_per_second * args.seconds;
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let ticks_before = args.pid.and_then(cpu_ticks);
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (endpoint, next, accepted, stream) = (
            endpoint.clone(),
            next.clone(),
            accepted.clone(),
            stream.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut s = endpoint.connect().await?;
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= total_batches {
                    return anyhow::Ok(());
                }
                // Paced: batch n goes out at n / batches_per_second seconds.
                let due = Duration::from_micros(batch * 1_000_000 / batches_per_second);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let body = records_body(&stream, batch, 500);
                let (status, reply) = call(&mut s, &endpoint.addr, "PutRecords", body).await?;
                if status == 200 {
                    accepted.fetch_add(500 - crate::memchr_failed(&reply), Ordering::Relaxed);
                }
            }
        }));
    }
    // Sample the lag and the delivered count every 100 ms until everything accepted is
    // delivered (or a minute after the load).
    let mut metrics = endpoint.connect().await?;
    let mut lags = Vec::new();
    let mut delivered = 0.0;
    let mut load_ended: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = get_text(&mut metrics, &host, "/_rivulet/metrics").await?;
        if let Some(lag) = series(&text, "rivulet_channel_delivery_lag_milliseconds", &channel) {
            lags.push(lag);
        }
        delivered =
            series(&text, "rivulet_channel_records_delivered_total", &channel).unwrap_or(delivered);
        let all_put = next.load(Ordering::Relaxed) >= total_batches
            && writers.iter().all(|w| w.is_finished());
        if all_put && load_ended.is_none() {
            load_ended = Some(Instant::now());
        }
        if all_put && (!with_channel || delivered >= accepted.load(Ordering::Relaxed) as f64) {
            break;
        }
        if load_ended.is_some_and(|at| at.elapsed() > Duration::from_secs(60)) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let drain = load_ended.map_or(0.0, |at| at.elapsed().as_secs_f64());
    let cpu_seconds = match (args.pid, ticks_before) {
        (Some(pid), Some(before)) => cpu_ticks(pid).map(|after| (after - before) as f64 / 100.0),
        _ => None,
    };
    lags.sort_by(f64::total_cmp);
    report(
        label,
        match args.destination {
            Destination::Bucket => "channel-bucket",
            Destination::Table => "channel-table",
            Destination::None => "channel-none",
        },
        json!({
            "compression": args.compression,
            "offered_per_s": args.rate,
            "accepted": accepted.load(Ordering::Relaxed),
            "delivered": delivered,
            "delivered_per_s": delivered / elapsed,
            "drain_seconds": drain,
            "lag_p50_ms": percentile(&lags, 0.50),
            "lag_p99_ms": percentile(&lags, 0.99),
            "lag_max_ms": lags.last().copied().unwrap_or(f64::NAN),
            "server_cpu_seconds": cpu_seconds,
            // Per million records delivered (without a channel: taken in).
            "cpu_seconds_per_million": cpu_seconds.map(|c| {
                let records = if with_channel {
                    delivered
                } else {
                    accepted.load(Ordering::Relaxed) as f64
                };
                c / records.max(1.0) * 1e6
            }),
        }),
    );
    Ok(())
}
