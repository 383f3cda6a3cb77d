//! `rivulet bench` (and the `rivulet-bench` binary): drives any Kinesis-compatible endpoint
//! with the workloads of docs/benchmarks.md and prints one JSON line per result on stdout, a
//! progress bar while a workload runs and a summary table at the end on stderr.
//!
//! The generator is deliberately cheap: request bodies are encoded once and reused, each
//! connection is one hyper HTTP/1.1 connection driven by its own task, and responses are only
//! parsed where the workload needs a value from them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

mod channel;
mod floor;
mod nats;
mod queue;

/// A fake but well-formed SigV4 header: emulators check its presence, not its value.
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/kinesis/aws4_request, \
                    SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00";

/// The load generator's settings: where, which stream, and the workload.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// host:port of the endpoint (plain HTTP)
    #[arg(long, default_value = "127.0.0.1:4567")]
    endpoint: String,
    /// Stream to use; created with --shards if it does not exist
    #[arg(long, default_value = "bench")]
    stream: String,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Label written into every result line (e.g. the server's name)
    #[arg(long, default_value = "rivulet")]
    label: String,
    /// Encrypt the stream at rest with this KMS key (StartStreamEncryption) before the load
    #[arg(long)]
    encrypt_key: Option<String>,
    #[command(subcommand)]
    workload: Workload,
}

/// The workloads.
#[derive(Subcommand, Clone, Debug)]
pub enum Workload {
    /// PutRecords batches for a fixed time.
    PutRecords {
        #[arg(long, default_value_t = 100)]
        record_bytes: usize,
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// One record per PutRecord request, many connections; reports latency percentiles.
    PutRecord {
        #[arg(long, default_value_t = 100)]
        record_bytes: usize,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Reads every shard from TRIM_HORIZON to the end with GetRecords (Limit 10000).
    GetRecords {
        /// Load at least this many records first (100-byte, in 500-record batches)
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
    /// Starts a server (a shell command that listens on --endpoint) several times, reports how
    /// long until its first ListStreams answer (median and slowest) and its resident memory
    /// then, and stops it.
    Ready {
        #[arg(long)]
        command: String,
        /// How many times to start it (the median and the slowest are reported)
        #[arg(long, default_value_t = 5)]
        starts: u32,
    },
    /// Resident memory of a running server (by pid), as a result line.
    Memory {
        #[arg(long)]
        pid: u32,
        /// What the number describes, e.g. "after-10M-records"
        #[arg(long)]
        when: String,
    },
    /// Puts at a fixed rate while an enhanced fan-out consumer is subscribed (SubscribeToShard);
    /// reports put→event latency.
    Subscribe {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Put through this endpoint instead (cluster mode: another node than the
        /// subscription's, so each event follows a put notice between nodes)
        #[arg(long)]
        put_endpoint: Option<String>,
    },
    /// Offers PutRecords at `rate` records/s (100 B, batches of 100) to the stream and reports
    /// how many were accepted and throttled per second (run it on a 1-shard stream).
    Throttle {
        #[arg(long, default_value_t = 3000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// An on-demand stream (created by this workload) under load that grows by `factor`
    /// every `step_seconds`, from `start_rate` records/s, for `steps` steps, then rests
    /// `rest_seconds` with no load; one result line per second with records offered,
    /// accepted and throttled, and the open shard count. `--factor 1 --steps 1` is a spike.
    OnDemand {
        #[arg(long, default_value_t = 100)]
        start_rate: u64,
        #[arg(long, default_value_t = 60)]
        step_seconds: u64,
        #[arg(long, default_value_t = 6)]
        steps: u32,
        #[arg(long, default_value_t = 2.0)]
        factor: f64,
        #[arg(long, default_value_t = 0)]
        rest_seconds: u64,
    },
    /// The machine's ceiling for durable single-record puts: a minimal server in this process
    /// (raw TCP frames, no HTTP or JSON) that answers after an `fdatasync` (group commit), and
    /// `connections` clients; no endpoint is used. Every design unless one is given.
    SyncFloor {
        #[arg(long, value_enum)]
        design: Option<floor::Design>,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Where the files go (a fresh directory inside it, removed afterwards); put it on the
        /// disk the server under test uses
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: std::path::PathBuf,
    },
    /// Cluster mode's ceiling: the raw JetStream publish rate of a replicated NATS cluster (a
    /// fresh one from the pinned nats-server unless --nats names one), by a minimal
    /// async-nats publisher; no endpoint is used.
    NatsFloor(nats::NatsFloorArgs),
    /// Queues on a fresh on-demand stream: receive + acknowledge throughput, put → receive
    /// latency while long polling, or memory per million records in flight.
    Queue(queue::QueueArgs),
    /// A channel delivering a stream under load (issue 15): delivered/s, lag, CPU.
    Channel(channel::ChannelArgs),
    /// Puts at a fixed rate while a reader polls; reports put→visible latency.
    Visible {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

struct Endpoint {
    addr: String,
}

impl Endpoint {
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// One HTTP/1.1 connection that writes whole requests and reads each response's status and
/// body, for the timed loops of single-record workloads: a request costs the generator one
/// write, one or two reads and a parse (httparse), so the two cores it shares with the server
/// under test go to the server. hyper's client hands every request to a connection task and
/// back (two tasks, a channel and a oneshot per request), which cost about as much CPU per
/// PutRecord as the server itself spent answering it.
pub(crate) struct RawConnection {
    stream: tokio::net::TcpStream,
    /// What was read and not yet consumed.
    buf: Vec<u8>,
}

impl RawConnection {
    pub(crate) async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes `request` (a whole HTTP/1.1 request) and returns the response's status once its
    /// body is read (by `Content-Length`, or chunk by chunk).
    pub(crate) async fn call(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await?;
        let (status, head_len, body) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&self.buf)? {
                let status = response.code.unwrap_or(0);
                let mut body = BodyLength::Fixed(0);
                for header in response.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        let text = std::str::from_utf8(header.value)?;
                        body = BodyLength::Fixed(text.trim().parse()?);
                    } else if header.name.eq_ignore_ascii_case("transfer-encoding")
                        && header.value.eq_ignore_ascii_case(b"chunked")
                    {
                        body = BodyLength::Chunked;
                    }
                }
                break (status, head_len, body);
            }
            self.fill().await?;
        };
        self.buf.drain(..head_len);
        match body {
            BodyLength::Fixed(len) => {
                while self.buf.len() < len {
                    self.fill().await?;
                }
                self.buf.drain(..len);
            }
            BodyLength::Chunked => loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((at, size))) => {
                        // The chunk, then its CRLF (the last chunk's CRLF ends the body, as
                        // no trailers are sent to these workloads).
                        let end = at + usize::try_from(size)? + 2;
                        while self.buf.len() < end {
                            self.fill().await?;
                        }
                        self.buf.drain(..end);
                        if size == 0 {
                            break;
                        }
                    }
                    Ok(httparse::Status::Partial) => self.fill().await?,
                    Err(_) => bail!("a malformed chunk size in a response"),
                }
            },
        }
        Ok(status)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}

enum BodyLength {
    Fixed(usize),
    Chunked,
}

/// A whole Kinesis request as `RawConnection::call` sends it.
fn raw_request(out: &mut Vec<u8>, host: &str, operation: &str, body: &[u8]) {
    use std::io::Write as _;
    out.clear();
    let _ = write!(
        out,
        "POST / HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amz-target: Kinesis_20131202.{operation}\r\nx-amz-date: 20260101T000000Z\r\n\
         authorization: {AUTH}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// The PutRecord workload's requests for one connection, pre-encoded: each differs from the
/// last only in its partition key (`{connection}-{n}`), so the timed loop formats one number.
pub(crate) struct PutRecordRequests {
    host: String,
    /// The body up to the partition key's number.
    head: String,
    body: Vec<u8>,
    request: Vec<u8>,
    n: u64,
}

impl PutRecordRequests {
    pub(crate) fn new(host: &str, stream: &str, connection: usize, record_bytes: usize) -> Self {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; record_bytes]);
        let head = format!(
            "{{\"StreamName\":{},\"Data\":\"{data}\",\"PartitionKey\":\"{connection}-",
            Value::from(stream)
        );
        Self {
            host: host.to_owned(),
            head,
            body: Vec::new(),
            request: Vec::new(),
            n: 0,
        }
    }

    /// The next request, byte for byte.
    pub(crate) fn next_request(&mut self) -> &[u8] {
        self.body.clear();
        self.body.extend_from_slice(self.head.as_bytes());
        self.body.extend_from_slice(self.n.to_string().as_bytes());
        self.body.extend_from_slice(b"\"}");
        raw_request(&mut self.request, &self.host, "PutRecord", &self.body);
        self.n += 1;
        &self.request
    }
}

async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    operation: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let target = http::HeaderValue::try_from(format!("Kinesis_20131202.{operation}"))?;
    let host = http::HeaderValue::try_from(host)?;
    send(sender, &host, &target, body).await
}

/// Sends one request whose `Host` and `X-Amz-Target` values are made once by the caller: the
/// timed loops build nothing else per request but the body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &http::HeaderValue,
    target: &http::HeaderValue,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
    sender.ready().await?;
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = http::Method::POST;
    let headers = request.headers_mut();
    headers.insert(HOST, host.clone());
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    headers.insert(HeaderName::from_static("x-amz-target"), target.clone());
    headers.insert(
        HeaderName::from_static("x-amz-date"),
        HeaderValue::from_static("20260101T000000Z"),
    );
    headers.insert(AUTHORIZATION, HeaderValue::from_static(AUTH));
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The parts of a GetRecords answer the reader needs.
#[derive(serde::Deserialize)]
struct Page {
    #[serde(rename = "Records")]
    records: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "NextShardIterator")]
    next_shard_iterator: Option<String>,
}

async fn call_json(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    operation: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let (status, bytes) = call(sender, host, operation, Bytes::from(body.to_string())).await?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != 200 {
        bail!("{operation} answered {status}: {value}");
    }
    Ok(value)
}

async fn ensure_stream(endpoint: &Endpoint, cli: &BenchArgs) -> anyhow::Result<Vec<String>> {
    let mut s = endpoint.connect().await?;
    let host = &endpoint.addr;
    let _ = call(
        &mut s,
        host,
        "CreateStream",
        Bytes::from(
            if matches!(cli.workload, Workload::OnDemand { .. }) {
                json!({"StreamName": cli.stream, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}})
            } else {
                json!({"StreamName": cli.stream, "ShardCount": cli.shards})
            }
            .to_string(),
        ),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = call_json(
            &mut s,
            host,
            "DescribeStream",
            json!({"StreamName": cli.stream}),
        )
        .await;
        if let Ok(d) = d
            && d["StreamDescription"]["StreamStatus"] == "ACTIVE"
        {
            if let Some(key) = &cli.encrypt_key
                && d["StreamDescription"]["EncryptionType"] != "KMS"
            {
                call_json(
                    &mut s,
                    host,
                    "StartStreamEncryption",
                    json!({"StreamName": cli.stream, "EncryptionType": "KMS", "KeyId": key}),
                )
                .await?;
                continue;
            }
            // Every shard: DescribeStream names at most 100, ListShards pages through them all.
            let mut shards = Vec::new();
            let mut request = json!({"StreamName": cli.stream});
            loop {
                let page = call_json(&mut s, host, "ListShards", request).await?;
                shards.extend(
                    page["Shards"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s["ShardId"].as_str().map(String::from)),
                );
                match page["NextToken"].as_str() {
                    Some(token) => request = json!({"NextToken": token}),
                    None => return Ok(shards),
                }
            }
        }
        if Instant::now() > deadline {
            bail!("stream {} did not become ACTIVE", cli.stream);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put_records_body(stream: &str, batch: usize, record_bytes: usize, salt: usize) -> Bytes {
    let data = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; record_bytes]);
    let records: Vec<Value> = (0..batch)
        .map(|i| json!({"Data": data, "PartitionKey": format!("pk-{salt}-{i}")}))
        .collect();
    Bytes::from(json!({"StreamName": stream, "Records": records}).to_string())
}

/// Puts one record per 1/`rate` s to shard 0 (ExplicitHashKey 0) whose data is its send time in
/// microseconds since `origin`, until `stop`.
fn timed_writer(
    endpoint: &Arc<Endpoint>,
    stream: &str,
    rate: u64,
    origin: Instant,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<(u64, u64)>>> {
    let (endpoint, stop, stream) = (endpoint.clone(), stop.clone(), stream.to_string());
    tokio::spawn(async move {
        let mut s = endpoint.connect().await?;
        // Each put's send and acknowledgement times (µs since `origin`).
        let mut acknowledged = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let sent_us = origin.elapsed().as_micros() as u64;
            let data = base64::engine::general_purpose::STANDARD.encode(sent_us.to_le_bytes());
            let body = json!({"StreamName": stream, "Data": data, "PartitionKey": "v",
                              "ExplicitHashKey": "0"});
            call(
                &mut s,
                &endpoint.addr,
                "PutRecord",
                Bytes::from(body.to_string()),
            )
            .await?;
            acknowledged.push((sent_us, origin.elapsed().as_micros() as u64));
        }
        anyhow::Ok(acknowledged)
    })
}

/// Each timed record of a JSON `Records` list: when it was sent and when it was seen (µs).
fn latencies_of(records: &Value, seen_us: u64, out: &mut Vec<(u64, u64)>) {
    for r in records.as_array().into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r["Data"].as_str().unwrap_or_default())
            .unwrap_or_default();
        if let Ok(sent) = <[u8; 8]>::try_from(bytes.as_slice()) {
            out.push((u64::from_le_bytes(sent), seen_us));
        }
    }
}

/// p50 and p99 of put → seen, of the put's own acknowledgement (put → ack), and of ack →
/// seen (what the read or push adds once the write is acknowledged), in ms.
fn seen_latencies(seen: &[(u64, u64)], acknowledged: &[(u64, u64)]) -> Value {
    let acked: HashMap<u64, u64> = acknowledged.iter().copied().collect();
    let ms = |us: u64| us as f64 / 1000.0;
    let mut total: Vec<f64> = seen
        .iter()
        .map(|(sent, at)| ms(at.saturating_sub(*sent)))
        .collect();
    let mut put: Vec<f64> = acknowledged
        .iter()
        .map(|(sent, at)| ms(at.saturating_sub(*sent)))
        .collect();
    let mut after: Vec<f64> = seen
        .iter()
        .filter_map(|(sent, at)| acked.get(sent).map(|acked| ms(at.saturating_sub(*acked))))
        .collect();
    for list in [&mut total, &mut put, &mut after] {
        list.sort_by(f64::total_cmp);
    }
    json!({"samples": total.len(), "p50_ms": percentile(&total, 0.5),
           "p99_ms": percentile(&total, 0.99), "put_p50_ms": percentile(&put, 0.5),
           "put_p99_ms": percentile(&put, 0.99), "ack_to_seen_p50_ms": percentile(&after, 0.5),
           "ack_to_seen_p99_ms": percentile(&after, 0.99)})
}

/// Splits complete event-stream messages off the front of `buf`: (`:event-type` or
/// `:exception-type`, payload).
fn take_messages(buf: &mut Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 12 {
            return out;
        }
        let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let headers_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if total < 16 + headers_len || buf.len() < total {
            return out;
        }
        let message: Vec<u8> = buf.drain(..total).collect();
        let headers = &message[12..12 + headers_len];
        let mut kind = String::new();
        let mut at = 0;
        while at < headers.len() {
            let name_len = headers[at] as usize;
            if at + 1 + name_len + 3 > headers.len() {
                break; // malformed: ignore the rest of the headers
            }
            let name = String::from_utf8_lossy(&headers[at + 1..at + 1 + name_len]).to_string();
            at += 1 + name_len + 1; // the value type: string (7) is all SubscribeToShard sends
            let value_len = u16::from_be_bytes([headers[at], headers[at + 1]]) as usize;
            let Some(value) = headers.get(at + 2..at + 2 + value_len) else {
                break;
            };
            let value = String::from_utf8_lossy(value).to_string();
            at += 2 + value_len;
            if name == ":event-type" || name == ":exception-type" {
                kind = value;
            }
        }
        out.push((kind, message[12 + headers_len..total - 4].to_vec()));
    }
}

/// Resident set size of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Starts the server `starts` times (the first on whatever data dir the command names, empty
/// in `scripts/bench.sh`; then restarts on it) and reports the median and the slowest time
/// from spawn to the first ListStreams answer, and the idle memory of the last start.
async fn ready(endpoint: &Endpoint, label: &str, command: &str, starts: u32) -> anyhow::Result<()> {
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..starts.max(1) {
        let (elapsed, idle_rss) = start_once(endpoint, label, command).await?;
        times.push(elapsed.as_secs_f64() * 1000.0);
        rss = idle_rss;
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    let round = |ms: f64| (ms * 10.0).round() / 10.0;
    report(
        label,
        "ready",
        json!({"ready_ms": round(percentile(&times, 0.5)), "ready_ms_max": round(times[times.len() - 1]),
               "ready_ms_first": round(first), "starts": times.len(), "idle_rss_mib": mib(rss)}),
    );
    Ok(())
}

/// One start: spawns `command`, polls ListStreams every 0.5 ms until it answers 200, reads
/// its resident memory 1 s later, and kills it (its whole process group).
async fn start_once(
    endpoint: &Endpoint,
    label: &str,
    command: &str,
) -> anyhow::Result<(Duration, u64)> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the server")?;
    let deadline = started + Duration::from_secs(60);
    let elapsed = loop {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{label} did not answer within 60 s");
        }
        if let Ok(mut s) = endpoint.connect().await
            && let Ok((200, _)) =
                call(&mut s, &endpoint.addr, "ListStreams", Bytes::from("{}")).await
        {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    };
    // Let the process settle before reading its idle memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(child.id()).unwrap_or(0);
    let group = child.id() as i32;
    let _ = std::process::Command::new("kill")
        .arg("--")
        .arg(format!("-{group}"))
        .status();
    let _ = child.wait();
    Ok((elapsed, rss))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn report(label: &str, workload: &str, fields: Value) {
    let mut line = json!({"server": label, "workload": workload});
    if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            line.insert(k.clone(), v.clone());
        }
    }
    println!("{line}");
    if let Ok(mut rows) = RESULTS.lock() {
        rows.push((label.to_string(), workload.to_string(), fields));
    }
}

/// Every result of this run, for the summary table.
static RESULTS: std::sync::Mutex<Vec<(String, String, Value)>> = std::sync::Mutex::new(Vec::new());

/// The summary table on stderr: one row per result, its numbers as columns.
fn print_summary() {
    let Ok(rows) = RESULTS.lock() else { return };
    if rows.is_empty() {
        return;
    }
    let cell = |v: &Value| match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                format!("{x:.2}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let table: Vec<[String; 3]> = rows
        .iter()
        .map(|(label, workload, fields)| {
            let numbers = fields
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", cell(v)))
                        .collect::<Vec<_>>()
                        .join("  ")
                })
                .unwrap_or_default();
            [label.clone(), workload.clone(), numbers]
        })
        .collect();
    let width = |i: usize| table.iter().map(|r| r[i].len()).max().unwrap_or(0).max(8);
    let (w0, w1) = (width(0), width(1));
    eprintln!("{:<w0$}  {:<w1$}  result", "server", "workload");
    eprintln!("{}  {}  {}", "-".repeat(w0), "-".repeat(w1), "-".repeat(40));
    for [a, b, c] in table {
        eprintln!("{a:<w0$}  {b:<w1$}  {c}");
    }
}

/// A bar on stderr over a timed workload (hidden when stderr is not a terminal), showing the
/// live count when there is one.
struct Progress {
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

fn progress(what: &str, seconds: u64, count: Option<(Arc<AtomicU64>, &'static str)>) -> Progress {
    let bar = indicatif::ProgressBar::new(seconds.max(1) * 10);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    let ticking = bar.clone();
    let started = Instant::now();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ticking.set_position((started.elapsed().as_millis() / 100) as u64);
            if let Some((counter, unit)) = &count {
                let n = counter.load(Ordering::Relaxed);
                let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
                ticking.set_message(format!("{n} {unit} ({rate:.0}/s)"));
            }
        }
    });
    Progress { bar, ticker }
}

impl Progress {
    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// [`run`], boxed, for the `rivulet` binary (its generics are compiled here, not again there).
pub fn run_task(
    cli: BenchArgs,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> {
    Box::pin(run(cli))
}

/// Runs one workload and prints its results.
pub async fn run(cli: BenchArgs) -> anyhow::Result<()> {
    let outcome = run_workload(&cli).await;
    print_summary();
    outcome
}

async fn run_workload(cli: &BenchArgs) -> anyhow::Result<()> {
    let cli = cli.clone();
    let endpoint = Arc::new(Endpoint {
        addr: cli.endpoint.clone(),
    });
    match &cli.workload {
        Workload::Ready { command, starts } => {
            return ready(&endpoint, &cli.label, command, *starts).await;
        }
        Workload::Memory { pid, when } => {
            let rss = rss_kib(*pid).context("reading the server's memory")?;
            report(
                &cli.label,
                &format!("memory-{when}"),
                json!({"rss_mib": mib(rss)}),
            );
            return Ok(());
        }
        Workload::SyncFloor {
            design,
            connections,
            seconds,
            dir,
        } => {
            let designs = match design {
                Some(design) => vec![*design],
                None => vec![
                    floor::Design::None,
                    floor::Design::PerShard,
                    floor::Design::Journal,
                    floor::Design::JournalZeroed,
                    floor::Design::HttpJournal,
                ],
            };
            for design in designs {
                let r = floor::run(design, *connections, *seconds, dir).await?;
                report(
                    &cli.label,
                    &format!("sync-floor-{}", design.name()),
                    json!({"requests_per_s": r.requests_per_s, "p50_ms": r.p50_ms,
                           "p99_ms": r.p99_ms, "requests_per_sync": r.requests_per_sync,
                           "connections": connections}),
                );
            }
            return Ok(());
        }
        Workload::NatsFloor(args) => {
            let r = nats::run(args).await?;
            let mut fields = json!({
                "records": r.records, "records_per_s": r.records_per_s.round(),
                "requests_per_s": r.requests_per_s.round(),
                "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "failed": r.failed,
                "servers": args.servers, "replicas": args.replicas, "streams": args.streams,
                "shards": args.shards, "batch": args.batch, "connections": args.connections,
                "mode": format!("{:?}", args.mode).to_lowercase(), "spread": args.spread,
            });
            if let (Some((rate, records)), Some(fields)) = (r.read, fields.as_object_mut()) {
                fields.insert("read_records_per_s".into(), json!(rate.round()));
                fields.insert("read_records".into(), json!(records));
            }
            if let (Some((rate, records)), Some(fields)) = (r.read_all, fields.as_object_mut()) {
                fields.insert("read_all_records_per_s".into(), json!(rate.round()));
                fields.insert("read_all_records".into(), json!(records));
            }
            report(&cli.label, "nats-floor", fields);
            return Ok(());
        }
        Workload::Queue(args) => return queue::run(&endpoint, &cli.label, args).await,
        Workload::Channel(args) => return channel::run(&endpoint, &cli.label, args).await,
        _ => {}
    }
    let shards = ensure_stream(&endpoint, &cli).await?;
    match cli.workload.clone() {
        Workload::Ready { .. }
        | Workload::Memory { .. }
        | Workload::SyncFloor { .. }
        | Workload::NatsFloor(_)
        | Workload::Queue(_)
        | Workload::Channel(_) => {}
        Workload::PutRecords {
            record_bytes,
            batch,
            connections,
            seconds,
        } => {
            let records = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..connections {
                let (endpoint, records, failed, stop) = (
                    endpoint.clone(),
                    records.clone(),
                    failed.clone(),
                    stop.clone(),
                );
                let body = put_records_body(&cli.stream, batch, record_bytes, c);
                tasks.push(tokio::spawn(async move {
                    let mut s = endpoint.connect().await?;
                    let host = http::HeaderValue::try_from(endpoint.addr.as_str())?;
                    let target = http::HeaderValue::from_static("Kinesis_20131202.PutRecords");
                    while !stop.load(Ordering::Relaxed) {
                        let (status, reply) = send(&mut s, &host, &target, body.clone()).await?;
                        // Count only acknowledged records: a 200 minus its FailedRecordCount.
                        let failed_here = if status == 200 {
                            memchr_failed(&reply)
                        } else {
                            batch as u64
                        };
                        records.fetch_add(batch as u64 - failed_here, Ordering::Relaxed);
                        failed.fetch_add(failed_here, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                }));
            }
            let bar = progress("put-records", seconds, Some((records.clone(), "records")));
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            bar.finish();
            for t in tasks {
                t.await??;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let n = records.load(Ordering::Relaxed) as f64;
            report(
                &cli.label,
                &format!("put-records-{record_bytes}B"),
                json!({"records_per_s": (n / elapsed).round(), "failed": failed.load(Ordering::Relaxed),
                       "connections": connections, "batch": batch, "seconds": elapsed}),
            );
        }
        Workload::PutRecord {
            record_bytes,
            connections,
            seconds,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..connections {
                let (endpoint, stop) = (endpoint.clone(), stop.clone());
                let stream = cli.stream.clone();
                tasks.push(tokio::spawn(async move {
                    let mut s = RawConnection::connect(&endpoint.addr).await?;
                    let mut requests =
                        PutRecordRequests::new(&endpoint.addr, &stream, c, record_bytes);
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let request = requests.next_request();
                        let t = Instant::now();
                        let status = s.call(request).await?;
                        if status == 200 {
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    anyhow::Ok(latencies)
                }));
            }
            let bar = progress("put-record", seconds, None);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            bar.finish();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            let elapsed = started.elapsed().as_secs_f64();
            all.sort_by(f64::total_cmp);
            report(
                &cli.label,
                &format!("put-record-{record_bytes}B"),
                json!({"requests_per_s": (all.len() as f64 / elapsed).round(),
                       "p50_ms": percentile(&all, 0.5), "p99_ms": percentile(&all, 0.99),
                       "connections": connections}),
            );
        }
        Workload::GetRecords { records } => {
            // Load.
            let mut loaded = 0u64;
            let mut loaders = Vec::new();
            let per_task = records.div_ceil(4 * 500) * 500;
            for c in 0..4 {
                let endpoint = endpoint.clone();
                let body = put_records_body(&cli.stream, 500, 100, 1000 + c);
                loaders.push(tokio::spawn(async move {
                    let mut s = endpoint.connect().await?;
                    let mut done = 0;
                    while done < per_task {
                        let (status, _) =
                            call(&mut s, &endpoint.addr, "PutRecords", body.clone()).await?;
                        if status == 200 {
                            done += 500;
                        }
                    }
                    anyhow::Ok(done)
                }));
            }
            for l in loaders {
                loaded += l.await??;
            }
            // Read back, one task per shard.
            let started = Instant::now();
            let mut readers = Vec::new();
            for shard in shards {
                let endpoint = endpoint.clone();
                let stream = cli.stream.clone();
                readers.push(tokio::spawn(async move {
                    let mut s = endpoint.connect().await?;
                    let it = call_json(&mut s, &endpoint.addr, "GetShardIterator",
                        json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"})).await?;
                    let mut iterator = it["ShardIterator"].as_str().unwrap_or_default().to_string();
                    let mut count = 0u64;
                    loop {
                        let body = json!({"ShardIterator": iterator, "Limit": 10000}).to_string();
                        let (status, bytes) =
                            call(&mut s, &endpoint.addr, "GetRecords", Bytes::from(body)).await?;
                        if status != 200 {
                            bail!("GetRecords answered {status}: {}", String::from_utf8_lossy(&bytes));
                        }
                        // Checked but not materialised: the reader should cost the machine
                        // little, whichever server it measures.
                        let page: Page = serde_json::from_slice(&bytes)?;
                        let n = page.records.len() as u64;
                        count += n;
                        match page.next_shard_iterator {
                            Some(next) if n > 0 => iterator = next,
                            _ => break,
                        }
                    }
                    anyhow::Ok(count)
                }));
            }
            let mut read = 0;
            for r in readers {
                read += r.await??;
            }
            let elapsed = started.elapsed().as_secs_f64();
            report(
                &cli.label,
                "get-records",
                json!({"records_per_s": (read as f64 / elapsed).round(), "records_read": read,
                       "records_loaded_now": loaded}),
            );
        }
        Workload::Subscribe {
            rate,
            seconds,
            put_endpoint,
        } => {
            let shard = shards.first().cloned().unwrap_or_default();
            let mut s = endpoint.connect().await?;
            let host = endpoint.addr.clone();
            let summary = call_json(
                &mut s,
                &host,
                "DescribeStreamSummary",
                json!({"StreamName": cli.stream}),
            )
            .await?;
            let stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = format!("bench-{}", std::process::id());
            let registered = call_json(
                &mut s,
                &host,
                "RegisterStreamConsumer",
                json!({"StreamARN": stream_arn, "ConsumerName": name}),
            )
            .await?;
            let consumer_arn = registered["Consumer"]["ConsumerARN"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let active_by = Instant::now() + Duration::from_secs(30);
            loop {
                let d = call_json(
                    &mut s,
                    &host,
                    "DescribeStreamConsumer",
                    json!({"ConsumerARN": consumer_arn}),
                )
                .await?;
                if d["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE" {
                    break;
                }
                if Instant::now() > active_by {
                    bail!("consumer did not become ACTIVE");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let body = json!({"ConsumerARN": consumer_arn, "ShardId": shard,
                              "StartingPosition": {"Type": "LATEST"}});
            let mut sub = endpoint.connect().await?;
            sub.ready().await?;
            let request = http::Request::post("/")
                .header("host", &host)
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amz-target", "Kinesis_20131202.SubscribeToShard")
                .header("x-amz-date", "20260101T000000Z")
                .header("authorization", AUTH)
                .body(Full::new(Bytes::from(body.to_string())))?;
            let response = sub.send_request(request).await?;
            if response.status() != 200 {
                let bytes = response.into_body().collect().await?.to_bytes();
                bail!(
                    "SubscribeToShard answered: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let mut events = response.into_body();
            let origin = Instant::now();
            let stop = Arc::new(AtomicBool::new(false));
            let putter = match put_endpoint {
                Some(addr) => Arc::new(Endpoint { addr }),
                None => endpoint.clone(),
            };
            let writer = timed_writer(&putter, &cli.stream, rate, origin, &stop);
            let mut latencies = Vec::new();
            let mut buf = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let bar = progress("subscribe", seconds, None);
            while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, events.frame()).await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                let seen_us = origin.elapsed().as_micros() as u64;
                for (kind, payload) in take_messages(&mut buf) {
                    if kind == "SubscribeToShardEvent" {
                        let event: Value = serde_json::from_slice(&payload)?;
                        latencies_of(&event["Records"], seen_us, &mut latencies);
                    } else if kind != "initial-response" {
                        bail!("{kind}: {}", String::from_utf8_lossy(&payload));
                    }
                }
            }
            bar.finish();
            stop.store(true, Ordering::Relaxed);
            let acknowledged = writer.await??;
            let mut fields = seen_latencies(&latencies, &acknowledged);
            fields["rate"] = json!(rate);
            let _ = call_json(
                &mut s,
                &host,
                "DeregisterStreamConsumer",
                json!({"ConsumerARN": consumer_arn}),
            )
            .await;
            report(&cli.label, "put-to-event", fields);
        }
        Workload::Throttle { rate, seconds } => {
            const BATCH: u64 = 100;
            let mut s = endpoint.connect().await?;
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 * BATCH / rate.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let body = put_records_body(&cli.stream, BATCH as usize, 100, 0);
            let started = Instant::now();
            let deadline = started + Duration::from_secs(seconds);
            let (mut offered, mut failed, mut other) = (0u64, 0u64, 0u64);
            // The bucket starts full (one second of burst): steady state is measured after it.
            let warm = started + Duration::from_secs(1);
            let (mut steady_offered, mut steady_accepted) = (0u64, 0u64);
            while Instant::now() < deadline {
                tick.tick().await;
                let (status, reply) =
                    call(&mut s, &endpoint.addr, "PutRecords", body.clone()).await?;
                if status != 200 {
                    bail!(
                        "PutRecords answered {status}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
                let reply: Value = serde_json::from_slice(&reply)?;
                offered += BATCH;
                let mut accepted = 0;
                for r in reply["Records"].as_array().into_iter().flatten() {
                    match r["ErrorCode"].as_str() {
                        None => accepted += 1,
                        Some("ProvisionedThroughputExceededException") => failed += 1,
                        Some(_) => other += 1,
                    }
                }
                if Instant::now() >= warm {
                    steady_offered += BATCH;
                    steady_accepted += accepted;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let steady = (elapsed - 1.0).max(f64::EPSILON);
            report(
                &cli.label,
                "throttle",
                json!({"offered_per_s": (offered as f64 / elapsed).round(),
                       "steady_offered_per_s": (steady_offered as f64 / steady).round(),
                       "steady_accepted_per_s": (steady_accepted as f64 / steady).round(),
                       "accepted_per_s": ((offered - failed - other) as f64 / elapsed).round(),
                       "throttled_per_s": (failed as f64 / elapsed).round(),
                       "other_errors": other}),
            );
        }
        Workload::OnDemand {
            start_rate,
            step_seconds,
            steps,
            factor,
            rest_seconds,
        } => {
            const BATCH: usize = 50;
            let mut s = endpoint.connect().await?;
            let host = endpoint.addr.clone();
            let started = Instant::now();
            let total = Duration::from_secs(step_seconds * u64::from(steps));
            let mut sent_batches = 0u64;
            let mut second = 0u64;
            let (mut offered, mut accepted, mut throttled) = (0u64, 0u64, 0u64);
            let mut salt = 0usize;
            let mut current_step = 0u32;
            let end = total + Duration::from_secs(rest_seconds);
            while started.elapsed() < end {
                let elapsed = started.elapsed();
                let step = (elapsed.as_secs() / step_seconds.max(1)) as u32;
                let rate = if elapsed < total {
                    (start_rate as f64 * factor.powi(step.min(40) as i32)) as u64
                } else {
                    0
                };
                if step != current_step {
                    current_step = step;
                    sent_batches = 0;
                }
                // Batches due by now at the current rate (within this step).
                let step_start = Duration::from_secs(u64::from(step) * step_seconds);
                let due =
                    ((elapsed - step_start).as_secs_f64() * rate as f64 / BATCH as f64) as u64;
                if sent_batches < due {
                    salt += 1;
                    let body = put_records_body(&cli.stream, BATCH, 100, salt);
                    let (status, reply) = call(&mut s, &host, "PutRecords", body).await?;
                    if status == 200 {
                        let reply: Value = serde_json::from_slice(&reply)?;
                        let failed = reply["FailedRecordCount"].as_u64().unwrap_or(0);
                        offered += BATCH as u64;
                        accepted += BATCH as u64 - failed;
                        throttled += failed;
                    }
                    sent_batches += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if elapsed.as_secs() > second {
                    let shards = call_json(
                        &mut s,
                        &host,
                        "ListShards",
                        json!({"StreamName": cli.stream}),
                    )
                    .await?;
                    let open = shards["Shards"].as_array().map_or(0, |a| {
                        a.iter()
                            .filter(|s| s["SequenceNumberRange"]["EndingSequenceNumber"].is_null())
                            .count()
                    });
                    report(
                        &cli.label,
                        "on-demand",
                        json!({"second": second + 1, "target_rate": rate,
                        "offered": offered, "accepted": accepted, "throttled": throttled,
                        "open_shards": open}),
                    );
                    second = elapsed.as_secs();
                    (offered, accepted, throttled) = (0, 0, 0);
                }
            }
        }
        Workload::Visible { rate, seconds } => {
            let shard = shards.first().cloned().unwrap_or_default();
            let mut s = endpoint.connect().await?;
            let it = call_json(
                &mut s,
                &endpoint.addr,
                "GetShardIterator",
                json!({"StreamName": cli.stream, "ShardId": shard, "ShardIteratorType": "LATEST"}),
            )
            .await?;
            let mut iterator = it["ShardIterator"].as_str().unwrap_or_default().to_string();
            let origin = Instant::now();
            let stop = Arc::new(AtomicBool::new(false));
            let writer = timed_writer(&endpoint, &cli.stream, rate, origin, &stop);
            let mut latencies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let bar = progress("visible", seconds, None);
            while Instant::now() < deadline {
                let page = call_json(
                    &mut s,
                    &endpoint.addr,
                    "GetRecords",
                    json!({"ShardIterator": iterator, "Limit": 10000}),
                )
                .await?;
                let seen_us = origin.elapsed().as_micros() as u64;
                latencies_of(&page["Records"], seen_us, &mut latencies);
                if let Some(next) = page["NextShardIterator"].as_str() {
                    iterator = next.to_string();
                }
            }
            bar.finish();
            stop.store(true, Ordering::Relaxed);
            let acknowledged = writer.await??;
            let mut fields = seen_latencies(&latencies, &acknowledged);
            fields["rate"] = json!(rate);
            report(&cli.label, "put-to-visible", fields);
        }
    }
    Ok(())
}

/// Reads `"FailedRecordCount":N` out of a PutRecords reply without parsing all of it.
fn memchr_failed(reply: &[u8]) -> u64 {
    let key = b"\"FailedRecordCount\":";
    let Some(at) = reply.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    reply[at + key.len()..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The raw connection reads answers framed by `Content-Length` and chunked ones, split
    /// across reads and back to back, on one connection.
    #[tokio::test]
    async fn raw_connection_reads_each_framing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let answers: [&[&[u8]]; 3] = [
                &[
                    b"HTTP/1.1 200 OK\r\ncontent-le",
                    b"ngth: 5\r\n\r\nhel",
                    b"lo",
                ],
                &[
                    b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab",
                    b"c\r\n2\r\nde\r\n0\r\n\r\n",
                ],
                &[b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"],
            ];
            let mut request = vec![0u8; 4096];
            for parts in answers {
                let _ = socket.read(&mut request).await.unwrap();
                for part in parts {
                    socket.write_all(part).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut connection = RawConnection::connect(&addr).await.unwrap();
        let mut request = Vec::new();
        raw_request(&mut request, &addr, "PutRecord", b"{}");
        assert!(request.ends_with(b"content-length: 2\r\n\r\n{}"));
        assert_eq!(connection.call(&request).await.unwrap(), 200);
        assert_eq!(connection.call(&request).await.unwrap(), 400);
        assert_eq!(connection.call(&request).await.unwrap(), 503);
        assert!(connection.buf.is_empty());
        server.await.unwrap();
    }
}
