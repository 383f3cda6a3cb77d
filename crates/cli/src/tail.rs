//! `rivulet tail`: follows a stream — every shard, and through splits and merges the shards
//! that follow (a child is read once its parents are read to their ends, as the KCL does) —
//! printing each record as a line of text or as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};
use base64::Engine as _;

use crate::describe;

/// Where `rivulet tail` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// Only records put from now on.
    Latest,
    /// Everything the stream still holds.
    TrimHorizon,
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The data as UTF-8 text, one record per line.
    Lines,
    /// One JSON object per record: shard, sequence number, partition key, arrival time, data
    /// (text, or base64 when not UTF-8).
    Json,
}

/// `rivulet tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// The stream to follow
    #[arg(long)]
    pub stream: String,
    #[arg(long, value_enum, default_value_t = From::Latest)]
    pub from: From,
    #[arg(long, value_enum, default_value_t = Format::Lines)]
    pub format: Format,
    /// Stop after this many records [default: follow until interrupted]
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Milliseconds between polls of a shard that had nothing new
    #[arg(long, default_value_t = 250)]
    pub poll_ms: u64,
    #[command(flatten)]
    pub connection: crate::Connection,
}

async fn list_shards(client: &Client, stream: &str) -> anyhow::Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = client.list_shards();
        request = match &token {
            Some(t) => request.next_token(t),
            None => request.stream_name(stream),
        };
        let page = request.send().await.map_err(describe)?;
        shards.extend(page.shards().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(shards);
        }
    }
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    shard: &str,
    record: &aws_sdk_kinesis::types::Record,
) -> std::io::Result<()> {
    let data = record.data().as_ref();
    match format {
        Format::Lines => {
            out.write_all(&String::from_utf8_lossy(data).into_owned().into_bytes())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            let (data, encoding) = match std::str::from_utf8(data) {
                Ok(text) => (text.to_string(), "utf-8"),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(data),
                    "base64",
                ),
            };
            let line = serde_json::json!({
                "shardId": shard,
                "sequenceNumber": record.sequence_number(),
                "partitionKey": record.partition_key(),
                "approximateArrivalTimestamp": record
                    .approximate_arrival_timestamp()
                    .map(|t| t.to_millis().unwrap_or_default()),
                "data": data,
                "encoding": encoding,
            });
            writeln!(out, "{line}")
        }
    }
}

/// [`run`], boxed ([`crate::Task`]).
pub fn run_task(args: TailArgs) -> crate::Task<u64> {
    Box::pin(run(args))
}

/// `rivulet tail`: returns how many records it printed.
pub async fn run(args: TailArgs) -> anyhow::Result<u64> {
    let client = args.connection.client().await;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Shards being read (id → iterator), shards read to their end, and every shard known.
    let mut reading: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut known: BTreeMap<String, Shard> = BTreeMap::new();
    let mut printed = 0u64;
    let start_type = match args.from {
        From::Latest => ShardIteratorType::Latest,
        From::TrimHorizon => ShardIteratorType::TrimHorizon,
    };
    let mut refresh_at = std::time::Instant::now();
    loop {
        // New shards: start those whose parents are done (or unknown, i.e. trimmed away).
        if refresh_at <= std::time::Instant::now() {
            for shard in list_shards(&client, &args.stream).await? {
                known.entry(shard.shard_id().to_string()).or_insert(shard);
            }
            refresh_at = std::time::Instant::now() + Duration::from_secs(2);
        }
        let startable: Vec<Shard> = known
            .values()
            .filter(|s| {
                let id = s.shard_id();
                !reading.contains_key(id) && !finished.contains(id)
            })
            .filter(|s| {
                [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .all(|p| finished.contains(p) || !known.contains_key(p))
            })
            .cloned()
            .collect();
        for shard in startable {
            // A child of a shard we read from the start is read from its start too.
            let has_parent = shard
                .parent_shard_id()
                .is_some_and(|p| known.contains_key(p));
            let kind = if has_parent {
                ShardIteratorType::TrimHorizon
            } else {
                start_type.clone()
            };
            let iterator = client
                .get_shard_iterator()
                .stream_name(&args.stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(kind)
                .send()
                .await
                .map_err(describe)?;
            if let Some(it) = iterator.shard_iterator() {
                reading.insert(shard.shard_id().to_string(), it.to_string());
            }
        }
        let mut idle = true;
        for (shard, iterator) in reading.clone() {
            let page = match client.get_records().shard_iterator(&iterator).send().await {
                Ok(page) => page,
                Err(error) => {
                    let (code, _) = crate::error_code(&error);
                    if code == "ProvisionedThroughputExceededException" {
                        continue;
                    }
                    return Err(describe(error));
                }
            };
            for record in page.records() {
                print_record(&mut out, args.format, &shard, record)?;
                printed += 1;
                if args.max_records.is_some_and(|max| printed >= max) {
                    out.flush()?;
                    return Ok(printed);
                }
            }
            if !page.records().is_empty() {
                idle = false;
            }
            match page.next_shard_iterator() {
                Some(next) => {
                    reading.insert(shard.clone(), next.to_string());
                }
                None => {
                    // The shard is closed and read to its end: its children may start.
                    reading.remove(&shard);
                    finished.insert(shard.clone());
                    if !page.child_shards().is_empty() {
                        // Learn the children now rather than at the next listing.
                        refresh_at = std::time::Instant::now();
                    }
                    idle = false;
                }
            }
        }
        out.flush()?;
        if idle {
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        }
    }
}
