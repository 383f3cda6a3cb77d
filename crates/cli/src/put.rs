//! `rivulet put`: lines of stdin or a file become records, sent with PutRecords in batches of
//! up to 500 (entries the stream throttles are sent again, with backoff), with a progress bar
//! on stderr and a summary at the end.

use std::io::BufRead;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::describe;

/// `rivulet put`.
#[derive(Debug, Clone, clap::Args)]
pub struct PutArgs {
    /// The stream to write to
    #[arg(long)]
    pub stream: String,
    /// Read lines from this file instead of stdin
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Partition key for every record [default: each line's own content, so equal lines
    /// land on the same shard]
    #[arg(long)]
    pub partition_key: Option<String>,
    /// With JSON lines, take the partition key from this top-level field
    #[arg(long, conflicts_with = "partition_key")]
    pub key_field: Option<String>,
    /// Records per PutRecords call (1–500)
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// No progress bar (the summary is still printed)
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: crate::Connection,
}

/// What a put run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PutSummary {
    pub records: u64,
    pub bytes: u64,
    pub retried: u64,
}

fn partition_key(args: &PutArgs, line: &str, number: u64) -> String {
    if let Some(key) = &args.partition_key {
        return key.clone();
    }
    if let Some(field) = &args.key_field
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line)
        && let Some(value) = map.get(field)
    {
        let key = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !key.is_empty() {
            return key.chars().take(256).collect();
        }
    }
    if line.is_empty() {
        return format!("line-{number}");
    }
    line.chars().take(256).collect()
}

/// Sends one batch, sending throttled entries again until all are in.
async fn send(
    client: &Client,
    stream: &str,
    mut entries: Vec<PutRecordsRequestEntry>,
    summary: &mut PutSummary,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.clone()))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(error) => {
                let (code, _) = crate::error_code(&error);
                if code == "ProvisionedThroughputExceededException"
                    || code == "LimitExceededException"
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                return Err(describe(error));
            }
        };
        if out.failed_record_count().unwrap_or(0) == 0 {
            return Ok(());
        }
        let mut again = Vec::new();
        for (entry, result) in entries.into_iter().zip(out.records()) {
            if let Some(code) = result.error_code() {
                if code != "ProvisionedThroughputExceededException" {
                    anyhow::bail!(
                        "{code}: {}",
                        result.error_message().unwrap_or("record refused")
                    );
                }
                again.push(entry);
            }
        }
        summary.retried += again.len() as u64;
        entries = again;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// [`run`], boxed ([`crate::Task`]).
pub fn run_task(args: PutArgs) -> crate::Task<PutSummary> {
    Box::pin(run(args))
}

/// `rivulet put`.
pub async fn run(args: PutArgs) -> anyhow::Result<PutSummary> {
    if !(1..=500).contains(&args.batch) {
        anyhow::bail!("--batch must be 1 to 500");
    }
    let client = args.connection.client().await;
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let bar = crate::spinner(
        args.quiet,
        "{spinner} {pos} records put to {msg} ({per_sec}, {elapsed})",
    );
    bar.set_message(args.stream.clone());
    let started = Instant::now();
    let mut summary = PutSummary::default();
    let mut batch = Vec::with_capacity(args.batch);
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<String>>(4096);
    // Reading stdin blocks: a thread feeds the lines in.
    std::thread::spawn(move || {
        for line in input.lines() {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut number = 0u64;
    while let Some(line) = lines.recv().await {
        let line = line?;
        number += 1;
        let key = partition_key(&args, &line, number);
        summary.bytes += line.len() as u64;
        batch.push(
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(line.into_bytes()))
                .build()?,
        );
        if batch.len() == args.batch {
            let n = batch.len() as u64;
            send(
                &client,
                &args.stream,
                std::mem::take(&mut batch),
                &mut summary,
            )
            .await?;
            summary.records += n;
            bar.inc(n);
        }
    }
    if !batch.is_empty() {
        let n = batch.len() as u64;
        send(&client, &args.stream, batch, &mut summary).await?;
        summary.records += n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "put {} records ({} bytes) to {} in {:.2} s: {:.0} records/s{}",
        summary.records,
        summary.bytes,
        args.stream,
        seconds,
        summary.records as f64 / seconds,
        if summary.retried > 0 {
            format!("; {} throttled entries sent again", summary.retried)
        } else {
            String::new()
        }
    );
    Ok(summary)
}
