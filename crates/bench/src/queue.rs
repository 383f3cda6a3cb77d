//! The queue workloads (issue 14): receive + acknowledge throughput with competing consumers,
//! put → first receive latency while long polling, and memory per million records in flight.
//! Each makes a fresh on-demand stream and a TRIM_HORIZON queue on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::{Endpoint, call, call_json, percentile, progress, report};

/// What to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    /// `consumers` receive (10 at a time) and acknowledge a prefilled backlog of `records`.
    Throughput,
    /// PutRecord at `rate` while `consumers` long-poll: put → first receive latency.
    Latency,
    /// `records` received and never acknowledged (43,200 s timeout): the server's memory
    /// before and after (needs --pid).
    InFlight,
}

#[derive(clap::Args, Clone, Debug)]
pub struct QueueArgs {
    #[arg(long, value_enum, default_value = "throughput")]
    pub mode: QueueMode,
    #[arg(long, default_value_t = 16)]
    pub consumers: usize,
    /// Records put first (throughput, in-flight)
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Puts per second (latency)
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// How long to measure (throughput, latency)
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The server's pid, for its memory (in-flight)
    #[arg(long)]
    pub pid: Option<u32>,
}

/// A fresh on-demand stream and an ACTIVE queue on it: (stream name, queue ARN).
async fn setup(endpoint: &Endpoint, prefix: &str) -> anyhow::Result<(String, String)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let stream = format!("{prefix}-queue-{stamp}");
    let mut s = endpoint.connect().await?;
    let host = endpoint.addr.as_str();
    let arn = on_demand_stream(&mut s, host, &stream).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = call_json(
        &mut s,
        host,
        "CreateQueue",
        json!({"QueueName": stream, "StreamConfigurationList": [
            {"StreamARN": arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}]}),
    )
    .await?;
    let queue = created["QueueDescription"]["QueueARN"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    loop {
        let d = call_json(&mut s, host, "DescribeQueue", json!({"QueueARN": queue})).await?;
        if d["QueueDescription"]["QueueStatus"] == "ACTIVE" {
            return Ok((stream, queue));
        }
        if Instant::now() > deadline {
            bail!("queue {queue} did not become ACTIVE");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the on-demand stream `stream` and waits until it is ACTIVE; returns its ARN.
pub(crate) async fn on_demand_stream(
    s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    host: &str,
    stream: &str,
) -> anyhow::Result<String> {
    call_json(
        s,
        host,
        "CreateStream",
        json!({"StreamName": stream, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = call_json(
            s,
            host,
            "DescribeStreamSummary",
            json!({"StreamName": stream}),
        )
        .await?;
        if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            return Ok(d["StreamDescriptionSummary"]["StreamARN"]
                .as_str()
                .unwrap_or_default()
                .to_string());
        }
        if Instant::now() > deadline {
            bail!("stream {stream} did not become ACTIVE");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts `records` 100-byte records, 500 per PutRecords over 4 connections.
async fn prefill(endpoint: &Arc<Endpoint>, stream: &str, records: u64) -> anyhow::Result<()> {
    let batches = records.div_ceil(500);
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (endpoint, next, stream) = (endpoint.clone(), next.clone(), stream.to_string());
        writers.push(tokio::spawn(async move {
            let mut s = endpoint.connect().await?;
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return anyhow::Ok(());
                }
                let body = crate::put_records_body(&stream, 500, 100, batch as usize);
                loop {
                    let (status, reply) =
                        call(&mut s, &endpoint.addr, "PutRecords", body.clone()).await?;
                    if status == 200 && crate::memchr_failed(&reply) == 0 {
                        break;
                    }
                    // Throttled or partly failed: the whole batch again (a few duplicates
                    // only add backlog).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(())
}

fn receive_body(queue: &str, wait_s: u32, visibility: Option<u32>) -> Bytes {
    let mut body = json!({"QueueARN": queue, "Limit": 10, "WaitTimeSeconds": wait_s});
    if let Some(v) = visibility {
        body["VisibilityTimeoutSeconds"] = json!(v);
    }
    Bytes::from(body.to_string())
}

fn ack_body(queue: &str, records: &Value) -> Bytes {
    let entries: Vec<Value> = records
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({"ReceiptHandle": r["ReceiptHandle"]}))
        .collect();
    Bytes::from(json!({"QueueARN": queue, "Entries": entries}).to_string())
}

pub(crate) async fn run(
    endpoint: &Arc<Endpoint>,
    label: &str,
    args: &QueueArgs,
) -> anyhow::Result<()> {
    let (stream, queue) = setup(endpoint, label).await?;
    match args.mode {
        QueueMode::Throughput => throughput(endpoint, label, args, &stream, &queue).await,
        QueueMode::Latency => latency(endpoint, label, args, &stream, &queue).await,
        QueueMode::InFlight => in_flight(endpoint, label, args, &stream, &queue).await,
    }
}

async fn throughput(
    endpoint: &Arc<Endpoint>,
    label: &str,
    args: &QueueArgs,
    stream: &str,
    queue: &str,
) -> anyhow::Result<()> {
    prefill(endpoint, stream, args.records).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress("queue", args.seconds, Some((acked.clone(), "acknowledged")));
    let started = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let (endpoint, acked, stop, queue) = (
            endpoint.clone(),
            acked.clone(),
            stop.clone(),
            queue.to_string(),
        );
        consumers.push(tokio::spawn(async move {
            let mut s = endpoint.connect().await?;
            let receive = receive_body(&queue, 1, None);
            let mut receives = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (status, body) = call(
                    &mut s,
                    &endpoint.addr,
                    "ReceiveQueueRecords",
                    receive.clone(),
                )
                .await?;
                if status != 200 {
                    bail!("ReceiveQueueRecords answered {status}");
                }
                receives.push(sent.elapsed().as_secs_f64() * 1000.0);
                let page: Value = serde_json::from_slice(&body)?;
                let count = page["QueueRecords"].as_array().map_or(0, Vec::len);
                if count == 0 {
                    continue;
                }
                let (status, _) = call(
                    &mut s,
                    &endpoint.addr,
                    "AcknowledgeQueueRecords",
                    ack_body(&queue, &page["QueueRecords"]),
                )
                .await?;
                if status != 200 {
                    bail!("AcknowledgeQueueRecords answered {status}");
                }
                acked.fetch_add(count as u64, Ordering::Relaxed);
            }
            anyhow::Ok(receives)
        }));
    }
    while started.elapsed() < Duration::from_secs(args.seconds)
        && acked.load(Ordering::Relaxed) < args.records
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = acked.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut receives = Vec::new();
    for consumer in consumers {
        receives.extend(consumer.await??);
    }
    bar.finish();
    receives.sort_by(f64::total_cmp);
    report(
        label,
        "queue-receive-ack",
        json!({"consumers": args.consumers, "records": done,
               "records_per_s": (done as f64 / elapsed).round(),
               "receive_p50_ms": percentile(&receives, 0.5),
               "receive_p99_ms": percentile(&receives, 0.99)}),
    );
    Ok(())
}

async fn latency(
    endpoint: &Arc<Endpoint>,
    label: &str,
    args: &QueueArgs,
    stream: &str,
    queue: &str,
) -> anyhow::Result<()> {
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let (endpoint, stop, queue) = (endpoint.clone(), stop.clone(), queue.to_string());
        consumers.push(tokio::spawn(async move {
            let mut s = endpoint.connect().await?;
            let receive = receive_body(&queue, 2, None);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = call(
                    &mut s,
                    &endpoint.addr,
                    "ReceiveQueueRecords",
                    receive.clone(),
                )
                .await?;
                let seen_us = origin.elapsed().as_micros() as u64;
                if status != 200 {
                    bail!("ReceiveQueueRecords answered {status}");
                }
                let page: Value = serde_json::from_slice(&body)?;
                crate::latencies_of(&page["QueueRecords"], seen_us, &mut latencies);
                if page["QueueRecords"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
                {
                    call(
                        &mut s,
                        &endpoint.addr,
                        "AcknowledgeQueueRecords",
                        ack_body(&queue, &page["QueueRecords"]),
                    )
                    .await?;
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    // The consumers are long-polling before the first put.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bar = progress("queue latency", args.seconds, None);
    let writer = crate::timed_writer(endpoint, stream, args.rate, origin, &stop);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await??;
    let mut latencies = Vec::new();
    for consumer in consumers {
        latencies.extend(consumer.await??);
    }
    bar.finish();
    let mut fields = crate::seen_latencies(&latencies, &acknowledged);
    fields["rate"] = json!(args.rate);
    fields["consumers"] = json!(args.consumers);
    report(label, "queue-put-to-receive", fields);
    Ok(())
}

async fn in_flight(
    endpoint: &Arc<Endpoint>,
    label: &str,
    args: &QueueArgs,
    stream: &str,
    queue: &str,
) -> anyhow::Result<()> {
    let Some(pid) = args.pid else {
        bail!("--mode in-flight needs the server's --pid");
    };
    prefill(endpoint, stream, args.records).await?;
    let before = crate::rss_kib(pid)?;
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress("in flight", 0, Some((received.clone(), "received")));
    let started = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let (endpoint, received, queue) = (endpoint.clone(), received.clone(), queue.to_string());
        let target = args.records;
        consumers.push(tokio::spawn(async move {
            let mut s = endpoint.connect().await?;
            let receive = receive_body(&queue, 1, Some(43_200));
            while received.load(Ordering::Relaxed) < target {
                let (status, body) = call(
                    &mut s,
                    &endpoint.addr,
                    "ReceiveQueueRecords",
                    receive.clone(),
                )
                .await?;
                if status != 200 {
                    bail!("ReceiveQueueRecords answered {status}");
                }
                let page: Value = serde_json::from_slice(&body)?;
                let count = page["QueueRecords"].as_array().map_or(0, Vec::len) as u64;
                if count == 0 {
                    break;
                }
                received.fetch_add(count, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for consumer in consumers {
        consumer.await??;
    }
    bar.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let after = crate::rss_kib(pid)?;
    let count = received.load(Ordering::Relaxed);
    let per_million = (after.saturating_sub(before)) as f64 / 1024.0 / (count as f64 / 1e6);
    report(
        label,
        "queue-in-flight-memory",
        json!({"in_flight": count, "rss_before_mib": crate::mib(before),
               "rss_after_mib": crate::mib(after),
               "mib_per_million_in_flight": (per_million * 10.0).round() / 10.0,
               "receives_per_s": (count as f64 / 10.0 / elapsed).round()}),
    );
    Ok(())
}
