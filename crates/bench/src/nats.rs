//! `nats-floor`: the ceiling of cluster mode on this machine, the raw JetStream publish rate of
//! a replicated cluster, measured by a minimal async-nats publisher with nothing of Kinesis in
//! the way (issue 13 asks Rivulet on R3 to reach half of it). It also measures what the
//! layout choices in `docs/design/cluster.md` cost: how many JetStream streams the shards are
//! spread over, how many shard subjects each holds, one atomic batch per request or one per
//! shard written, and reading one shard's subject back out of an interleaved stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use rivulet_cluster::async_nats::jetstream::{self, stream};
use rivulet_cluster::async_nats::{self, HeaderMap};
use rivulet_cluster::servers::NatsCluster;
use rivulet_cluster::{BatchMessage, DirectGet, direct_get_batch, publish_atomic};

/// How a request's records are published.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One atomic batch per request, whatever shards it touches (all-or-nothing per request).
    Request,
    /// One atomic batch per shard a request touches, all in flight at once (all-or-nothing per
    /// shard, as Kinesis promises).
    Shard,
    /// Each record on its own, a plain acknowledged publish (PutRecord's ceiling).
    Single,
}

/// The settings of one run.
#[derive(clap::Args, Clone, Debug)]
pub struct NatsFloorArgs {
    /// Client URLs of a running cluster (comma-separated); without it, a cluster of
    /// `--servers` is started from the pinned nats-server and stopped afterwards
    #[arg(long)]
    pub nats: Option<String>,
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// JetStream streams the shards are spread over
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Shard subjects in each JetStream stream
    #[arg(long, default_value_t = 4)]
    pub shards: usize,
    #[arg(long, value_enum, default_value = "request")]
    pub mode: Mode,
    /// Records per request (`single` sends one)
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    #[arg(long, default_value_t = 100)]
    pub record_bytes: usize,
    /// Requests in flight (each on its own connection)
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Spread each request's records over every stream (one Kinesis stream's shards over
    /// `streams` JetStream streams) instead of sending each request to one stream
    #[arg(long)]
    pub spread: bool,
    /// Afterwards, read stream 0's first shard subject back, then all of stream 0, in pages of
    /// 10,000
    #[arg(long)]
    pub read: bool,
}

/// What a run measured.
pub struct NatsFloor {
    /// Records acknowledged.
    pub records: u64,
    pub records_per_s: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
    /// Records/s reading one shard's subject back, and how many it held.
    pub read: Option<(f64, u64)>,
    /// Records/s reading all of stream 0 in order, and how many it held.
    pub read_all: Option<(f64, u64)>,
}

pub async fn run(args: &NatsFloorArgs) -> anyhow::Result<NatsFloor> {
    let (cluster, urls) = match &args.nats {
        Some(urls) => (None, urls.clone()),
        None => {
            let cluster = NatsCluster::start(args.servers).await?;
            let urls = cluster.urls();
            (Some(cluster), urls)
        }
    };
    let outcome = measure(args, &urls).await;
    if let Some(cluster) = cluster {
        cluster.stop().await?;
    }
    outcome
}

async fn connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    Ok(async_nats::connect(urls).await?)
}

async fn measure(args: &NatsFloorArgs, urls: &str) -> anyhow::Result<NatsFloor> {
    anyhow::ensure!(
        args.streams > 0 && args.shards > 0 && args.batch > 0,
        "streams, shards and batch must be positive"
    );
    let admin = connect(urls).await?;
    let js = jetstream::new(admin.clone());
    for s in 0..args.streams {
        let name = format!("FLOOR_{s}");
        let _ = js.delete_stream(&name).await;
        js.create_stream(stream::Config {
            name,
            subjects: vec![format!("floor.{s}.>")],
            num_replicas: args.replicas,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .context("creating the floor's stream")?;
    }
    let payload = Bytes::from(vec![b'x'; args.record_bytes]);
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let client = connect(urls).await?;
        let (args, payload) = (args.clone(), payload.clone());
        let (stop, records, failed) = (stop.clone(), records.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let js = jetstream::new(client.clone());
            let mut latencies = Vec::new();
            let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
            let mut request = 0u64;
            while !stop.load(Ordering::Relaxed) {
                request += 1;
                // Random keys: a stream, then a shard per record.
                random = xorshift(random);
                let s = (random % args.streams as u64) as usize;
                let started = Instant::now();
                let stored = match args.mode {
                    Mode::Single => {
                        let subject = format!("floor.{s}.{}", random % args.shards as u64);
                        match js.publish(subject, payload.clone()).await {
                            Ok(ack) => ack.await.map(|_| 1).map_err(|e| e.to_string()),
                            Err(error) => Err(error.to_string()),
                        }
                    }
                    Mode::Request | Mode::Shard => {
                        // With `spread`, a request's records go to every stream (the shards of
                        // one Kinesis stream spread over several JetStream streams).
                        let streams = if args.spread { args.streams } else { 1 };
                        let mut by_shard: Vec<Vec<BatchMessage>> =
                            vec![Vec::new(); streams * args.shards];
                        for _ in 0..args.batch {
                            random = xorshift(random);
                            let shard = (random % args.shards as u64) as usize;
                            let stream = if args.spread {
                                ((random >> 32) % streams as u64) as usize
                            } else {
                                s
                            };
                            let at = if args.spread { stream } else { 0 } * args.shards + shard;
                            by_shard[at].push(BatchMessage {
                                subject: format!("floor.{stream}.{shard}"),
                                headers: HeaderMap::new(),
                                payload: payload.clone(),
                            });
                        }
                        let batches: Vec<Vec<BatchMessage>> = if args.mode == Mode::Request {
                            // One batch per JetStream stream written.
                            let mut shards = by_shard.into_iter();
                            (0..streams)
                                .map(|_| shards.by_ref().take(args.shards).flatten().collect())
                                .filter(|b: &Vec<BatchMessage>| !b.is_empty())
                                .collect()
                        } else {
                            by_shard.into_iter().filter(|b| !b.is_empty()).collect()
                        };
                        let sends = batches.into_iter().enumerate().map(|(b, mut messages)| {
                            // One id per batch: a retried batch is refused whole (10201).
                            let id = format!("c{c}-r{request}-b{b}");
                            messages[0].headers.insert("Nats-Msg-Id", id.as_str());
                            let client = &client;
                            async move {
                                let count = messages.len() as u64;
                                publish_atomic(client, &id, messages).await.map(|_| count)
                            }
                        });
                        let results = futures_util::future::join_all(sends).await;
                        let mut stored = 0;
                        let mut error = None;
                        for result in results {
                            match result {
                                Ok(count) => stored += count,
                                Err(e) => error = Some(e.to_string()),
                            }
                        }
                        match error {
                            Some(error) => Err(error),
                            None => Ok(stored),
                        }
                    }
                };
                match stored {
                    Ok(count) => {
                        records.fetch_add(count, Ordering::Relaxed);
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(error) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("nats-floor: a request failed: {error}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let (read, read_all) = if args.read {
        (
            Some(read_pages(&admin, Some("floor.0.0")).await?),
            Some(read_pages(&admin, None).await?),
        )
    } else {
        (None, None)
    };
    Ok(NatsFloor {
        records: records.load(Ordering::Relaxed),
        records_per_s: records.load(Ordering::Relaxed) as f64 / elapsed,
        requests_per_s: latencies.len() as f64 / elapsed,
        p50_ms: crate::percentile(&latencies, 0.5),
        p99_ms: crate::percentile(&latencies, 0.99),
        failed: failed.load(Ordering::Relaxed),
        read,
        read_all,
    })
}

/// Reads stream 0 from the start, 10,000 messages a request: every message, or those on
/// `subject`. Gives records/s and how many were read.
async fn read_pages(
    client: &async_nats::Client,
    subject: Option<&str>,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let (mut seq, mut read) = (1u64, 0u64);
    loop {
        let request = DirectGet {
            seq: Some(seq),
            next_by_subj: Some(subject.unwrap_or("floor.0.>").to_string()),
            batch: 10_000,
            max_bytes: Some(8 << 20),
            ..Default::default()
        };
        let timeout = Duration::from_secs(30);
        let page = direct_get_batch(client, "$JS.API", "FLOOR_0", &request, timeout).await?;
        let Some(last) = page.messages.last() else {
            break;
        };
        seq = last.sequence + 1;
        read += page.messages.len() as u64;
        if page.num_pending == 0 {
            break;
        }
    }
    Ok((read as f64 / started.elapsed().as_secs_f64(), read))
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_record_reads_back_once() {
        for (mode, servers) in [(Mode::Request, 3), (Mode::Shard, 1), (Mode::Single, 1)] {
            let args = NatsFloorArgs {
                nats: None,
                servers,
                replicas: servers,
                streams: 1,
                shards: 8,
                mode,
                batch: 50,
                record_bytes: 10,
                connections: 2,
                seconds: 1,
                spread: false,
                read: true,
            };
            let floor = run(&args).await.expect("nats-floor");
            assert_eq!(floor.failed, 0, "{mode:?}");
            assert!(floor.records > 0, "{mode:?}");
            let (_, read) = floor.read_all.expect("read back");
            assert_eq!(read, floor.records, "{mode:?}");
            let (_, one_shard) = floor.read.expect("one shard");
            assert!(one_shard > 0 && one_shard < read, "{mode:?}");
        }
    }
}
