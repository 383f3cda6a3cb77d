//! Channels' delivery: a stream's records into objects of a bucket, each record once.
//!
//! No HTTP and no clock (callers pass the time). The control plane (CreateChannel …) is the
//! engine's (`rivulet_engine::channels`); [`Delivery::step`], called by the server about
//! every 200 ms on the node that writes metadata, does the rest for every channel of one
//! engine:
//! - **CREATING** ends with the destination check: the bucket exists and ExpectedBucketOwner
//!   owns it, or the channel is FAILED with the reason.
//! - **ACTIVE / UPDATING**: each shard is read from its checkpoint (parents only once their
//!   children's parents are delivered to their ends), its records framed by the channel's
//!   format into one pending object (rejected records into a dead-letter object), and the
//!   objects written once the oldest pending record is `DataFreshnessInSeconds` old, or
//!   sooner by size.
//!
//! **Exactly once.** A flush first commits an *intent* (the object's number and time, and
//! each shard's range of positions) to the metadata store, then writes the objects (whose
//! keys and bytes follow from the intent alone), then commits the shards' checkpoints and
//! removes the intent in one commit. After a crash, a channel's delivery loads its
//! checkpoints and, if an intent is left, reads those ranges again and writes the same
//! objects under the same keys before going on: a retry replaces an object with itself.

pub mod crypt;
pub mod format;
pub mod seaweed;
pub mod sink;
pub mod tables;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use rivulet_engine::channels::{Destination, bucket_name};
use rivulet_engine::{ChannelSource, ChannelStatus, Engine};
use rivulet_log::MetaOp;
use serde::{Deserialize, Serialize};

use crate::format::{KeyContext, Rejection};
use crate::sink::ObjectStore;

/// A pending object is written once it holds this many bytes, however fresh.
pub const OBJECT_BYTES_MAX: usize = 64 << 20;
/// One read of a shard: at most this many records and bytes.
const READ_RECORDS: usize = 2_000;
const READ_BYTES: usize = 2 << 20;
/// After a failed write, a channel waits this long before trying again.
const RETRY_AFTER_MS: i64 = 5_000;

/// How delivery runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Divides every channel's DataFreshnessInSeconds (1: AWS's pace; tests use more).
    pub time_scale: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { time_scale: 1 }
    }
}

/// A shard's checkpoint: where its undelivered records start, and whether it was delivered
/// to its end (closed and drained).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Cursor {
    next: u64,
    #[serde(default)]
    done: bool,
}

/// A flush in progress: enough to write the same objects again.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    number: u64,
    time_ms: i64,
    /// (shard, from, to): positions `from..to` of each shard.
    ranges: Vec<(u32, u64, u64)>,
    /// Shards delivered to their ends by this flush.
    done: Vec<u32>,
}

impl Intent {
    /// The unique suffix of this delivery's keys (AWS appends one of up to 38 characters):
    /// the channel id's first 8 characters and the delivery's number.
    fn key_suffix(&self, channel_id: &str) -> String {
        format!(
            "-{}-{:016}",
            &channel_id[..channel_id.len().min(8)],
            self.number
        )
    }
}

/// Records read but not delivered yet.
#[derive(Default)]
struct Pending {
    /// (from, to) per shard.
    ranges: BTreeMap<u32, (u64, u64)>,
    body: Vec<u8>,
    /// A table destination's records, unframed (shard, record).
    rows: Vec<(u32, rivulet_engine::OutRecord)>,
    dead: Vec<u8>,
    records: u64,
    record_bytes: u64,
    dead_letters: u64,
    oldest_ms: Option<i64>,
    drained: Vec<u32>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records == 0 && self.dead_letters == 0 && self.drained.is_empty()
    }
}

/// One channel's delivery on this node.
#[derive(Default)]
struct Run {
    loaded: bool,
    cursors: BTreeMap<u32, Cursor>,
    /// Where the next read of each shard starts (past what `pending` holds).
    reading: BTreeMap<u32, u64>,
    pending: Pending,
    next_object: u64,
    retry_at_ms: i64,
    totals: Totals,
}

/// A channel's delivery totals, kept in its checkpoint commits (`channel/<id>/m`), so they
/// survive restarts and every node of a cluster reads them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Totals {
    records: u64,
    record_bytes: u64,
    objects: u64,
    bytes_written: u64,
    dead_letters: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.records += other.records;
        self.record_bytes += other.record_bytes;
        self.objects += other.objects;
        self.bytes_written += other.bytes_written;
        self.dead_letters += other.dead_letters;
    }

    fn show(&self, m: &mut ChannelMetrics) {
        m.records_delivered = self.records;
        m.bytes_delivered = self.record_bytes;
        m.objects_delivered = self.objects;
        m.bytes_written = self.bytes_written;
        m.dead_letters = self.dead_letters;
    }
}

/// Every channel of `engine` with its metrics: the totals from the metadata store (any node),
/// the status, lag and failures from this node's delivery when it runs here.
pub fn metrics(engine: &Engine) -> Vec<ChannelMetrics> {
    let live = Board::of(engine).snapshot();
    engine
        .channel_views()
        .into_iter()
        .map(|view| {
            let mut m = live
                .iter()
                .find(|m| m.id == view.meta.id)
                .cloned()
                .unwrap_or_default();
            m.name = view.meta.name.clone();
            m.id = view.meta.id.clone();
            m.stream = view
                .stream_arn
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            m.status = view.meta.status.as_str().to_string();
            let key = format!("{}m", engine.channel_state_prefix(&view.meta.id));
            if let Some(totals) = engine
                .store()
                .meta()
                .get(&key)
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_slice::<Totals>(&v).ok())
            {
                totals.show(&mut m);
            }
            m
        })
        .collect()
}

/// What `/_rivulet/metrics` and the console show of one channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelMetrics {
    pub name: String,
    pub id: String,
    pub stream: String,
    pub status: String,
    /// Age of the oldest record read but not delivered yet.
    pub lag_ms: i64,
    pub records_delivered: u64,
    pub bytes_delivered: u64,
    pub objects_delivered: u64,
    /// Bytes of objects written (after compression), dead letters included.
    pub bytes_written: u64,
    pub dead_letters: u64,
    pub failures: u64,
}

/// Every channel's delivery for one engine.
pub struct Delivery {
    engine: Arc<Engine>,
    store: Arc<dyn ObjectStore>,
    settings: Settings,
    runs: tokio::sync::Mutex<(u64, HashMap<String, Run>)>,
    metrics: Arc<Board>,
    tables: Arc<tables::Tables>,
}

/// Every channel's metrics of one engine, by channel id, kept as the engine's extension so
/// the server's metrics page finds them (`Board::of`).
#[derive(Default)]
pub struct Board(Mutex<BTreeMap<String, ChannelMetrics>>);

impl Board {
    /// The board of `engine`.
    pub fn of(engine: &Engine) -> Arc<Board> {
        engine.extension::<Board>()
    }

    /// Every channel's metrics, by id.
    pub fn snapshot(&self) -> Vec<ChannelMetrics> {
        self.0.lock().values().cloned().collect()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<String, ChannelMetrics>> {
        self.0.lock()
    }
}

fn cursor_key(prefix: &str, shard: u32) -> String {
    format!("{prefix}c/{shard:010}")
}

impl Delivery {
    pub fn new(engine: Arc<Engine>, store: Arc<dyn ObjectStore>, settings: Settings) -> Delivery {
        Delivery {
            metrics: Board::of(&engine),
            engine,
            store,
            settings,
            runs: tokio::sync::Mutex::new((0, HashMap::new())),
            tables: Arc::new(tables::Tables::new(tables::TableSettings::default())),
        }
    }

    /// Streaming tables go to these catalogs (without: such channels FAIL, saying why).
    pub fn with_tables(mut self, tables: Arc<tables::Tables>) -> Delivery {
        self.tables = tables;
        self
    }

    /// Every channel's metrics.
    pub fn metrics(&self) -> Vec<ChannelMetrics> {
        self.metrics.snapshot()
    }

    /// Runs `step` every `every` until the task is dropped.
    pub async fn run(self: Arc<Self>, every: std::time::Duration, now_ms: fn() -> i64) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.step(now_ms()).await;
        }
    }

    /// One round: ends due CREATING states and delivers what is due, for every channel.
    pub async fn step(&self, now_ms: i64) {
        let mut guard = self.runs.lock().await;
        let (term, runs) = &mut *guard;
        if !self.engine.is_writer() {
            runs.clear();
            return;
        }
        // A node that becomes the writer again loads every channel's state anew.
        let current = self.engine.writer_term();
        if *term != current {
            runs.clear();
            *term = current;
        }
        let sources = self.engine.channel_sources(now_ms);
        let live: Vec<String> = sources.iter().map(|s| s.meta.id.clone()).collect();
        runs.retain(|id, _| live.contains(id));
        self.metrics.lock().retain(|id, _| live.contains(id));
        for source in sources {
            let meta = &source.meta;
            self.note_status(&source);
            match meta.status {
                ChannelStatus::Creating
                    if meta.status_until_ms.is_none_or(|until| until <= now_ms) =>
                {
                    let outcome = self.check_destination(&source).await;
                    if let Err(reason) = &outcome {
                        tracing::warn!(channel = %meta.name, %reason, "channel FAILED");
                    }
                    if let Err(error) = self
                        .engine
                        .finish_channel_creation(&meta.id, outcome, now_ms)
                    {
                        tracing::warn!(channel = %meta.name, %error, "ending CREATING");
                    }
                }
                ChannelStatus::Active | ChannelStatus::Updating => {
                    let run = runs.entry(meta.id.clone()).or_default();
                    if run.retry_at_ms > now_ms {
                        continue;
                    }
                    if let Err(error) = self.deliver(&source, run, now_ms).await {
                        tracing::warn!(channel = %meta.name, %error, "channel delivery failed");
                        if meta.logging.enabled {
                            tracing::warn!(
                                target: "rivulet::channel_log",
                                log_group = meta.logging.log_group.as_deref().unwrap_or_default(),
                                %error,
                                "DestinationDelivery"
                            );
                        }
                        self.count(&source, |m| m.failures += 1);
                        // Loaded again (and an intent left redone) when it is tried again.
                        *run = Run {
                            retry_at_ms: now_ms + RETRY_AFTER_MS,
                            ..Run::default()
                        };
                    }
                }
                _ => {
                    runs.remove(&meta.id);
                }
            }
        }
    }

    fn note_status(&self, source: &ChannelSource) {
        let mut metrics = self.metrics.lock();
        let entry = metrics.entry(source.meta.id.clone()).or_default();
        entry.name = source.meta.name.clone();
        entry.id = source.meta.id.clone();
        entry.stream = source.stream_name.clone();
        entry.status = source.meta.status.as_str().to_string();
    }

    fn count(&self, source: &ChannelSource, f: impl FnOnce(&mut ChannelMetrics)) {
        if let Some(entry) = self.metrics.lock().get_mut(&source.meta.id) {
            f(entry);
        }
    }

    /// Whether the channel's buckets exist and belong to their expected owners.
    async fn check_destination(&self, source: &ChannelSource) -> Result<(), String> {
        let meta = &source.meta;
        let storage = match &meta.destination {
            Destination::S3(storage) => storage,
            Destination::Tables(_) => {
                let dead = meta.dead_letter_in_effect();
                let bucket = bucket_name(&dead.bucket_arn)
                    .ok_or_else(|| format!("Invalid bucket ARN {}.", dead.bucket_arn))?;
                self.store
                    .check_bucket(bucket, &dead.expected_owner)
                    .await?;
                return self.tables.check(meta).await;
            }
        };
        if meta.encryption_key.is_some() && !self.store.encrypts() {
            // Bucket folders: Rivulet's own key service encrypts each object.
            self.folder_key(meta)?;
        }
        let dead = meta.dead_letter_in_effect();
        let checks = [
            (storage.bucket_arn.clone(), storage.expected_owner.clone()),
            (dead.bucket_arn, dead.expected_owner),
        ];
        for (arn, owner) in &checks {
            let bucket = bucket_name(arn).ok_or_else(|| format!("Invalid bucket ARN {arn}."))?;
            self.store.check_bucket(bucket, owner).await?;
        }
        Ok(())
    }

    /// For a bucket folder, the key service and the ARN of the channel's KMS key (which must
    /// be usable now).
    fn folder_key(
        &self,
        meta: &rivulet_engine::channels::ChannelMeta,
    ) -> Result<(Arc<dyn rivulet_engine::encryption::KeyService>, String), String> {
        let key_id = meta.encryption_key.as_deref().unwrap_or_default();
        let kms = self.engine.key_service().ok_or_else(|| {
            "No key service is configured, so objects cannot be encrypted with a KMS key."
                .to_string()
        })?;
        let key_arn = kms
            .resolve(&self.engine.config().account_id, key_id)
            .map_err(|e| format!("{}: {}", e.kind.code(), e.message))?;
        Ok((kms, key_arn))
    }

    /// Loads the channel's checkpoints, and finishes a flush a crash interrupted.
    async fn load(&self, source: &ChannelSource, run: &mut Run, now_ms: i64) -> Result<(), String> {
        let prefix = self.engine.channel_state_prefix(&source.meta.id);
        let meta = self.engine.store().meta();
        let mut cursors = BTreeMap::new();
        let mut intent = None;
        let mut next_object = 0;
        for (key, value) in meta.scan_prefix(&prefix).map_err(|e| e.message)? {
            let rest = &key[prefix.len()..];
            if let Some(shard) = rest.strip_prefix("c/") {
                if let (Ok(shard), Ok(cursor)) = (
                    shard.parse::<u32>(),
                    serde_json::from_slice::<Cursor>(&value),
                ) {
                    cursors.insert(shard, cursor);
                }
            } else if rest == "m" {
                run.totals = serde_json::from_slice(&value).unwrap_or_default();
            } else if rest == "n" {
                next_object = serde_json::from_slice(&value).unwrap_or(0);
            } else if rest == "intent" {
                intent = serde_json::from_slice::<Intent>(&value).ok();
            }
        }
        run.cursors = cursors;
        run.next_object = next_object;
        run.reading.clear();
        run.pending = Pending::default();
        if let Some(intent) = intent {
            tracing::info!(channel = %source.meta.name, object = intent.number,
                "finishing a delivery a stop interrupted");
            let mut pending = Pending::default();
            for &(shard, from, to) in &intent.ranges {
                self.read_range(source, shard, from, to, &mut pending, now_ms)
                    .await?;
                pending.ranges.insert(shard, (from, to));
            }
            pending.drained = intent.done.clone();
            self.write_and_commit(source, run, &intent, pending).await?;
        }
        run.loaded = true;
        Ok(())
    }

    /// Reads shard `shard` from `from` up to `to` (or its current end) into `pending`;
    /// returns where it stopped.
    async fn read_range(
        &self,
        source: &ChannelSource,
        shard: u32,
        from: u64,
        to: u64,
        pending: &mut Pending,
        now_ms: i64,
    ) -> Result<u64, String> {
        let mut position = from;
        let to_table = matches!(source.meta.destination, Destination::Tables(_));
        while position < to && (pending.record_bytes as usize) < OBJECT_BYTES_MAX {
            let read = self
                .engine
                .channel_read(source, shard, position, READ_RECORDS, READ_BYTES, now_ms)
                .await
                .map_err(|e| e.message)?;
            let mut last = position;
            for record in &read.records {
                if record.offset >= to {
                    break;
                }
                last = record.offset + 1;
                pending.oldest_ms = Some(
                    pending
                        .oldest_ms
                        .map_or(record.arrival_ms, |o| o.min(record.arrival_ms)),
                );
                if to_table {
                    // Decoded against the table's schema when written.
                    pending.records += 1;
                    pending.record_bytes += record.data.len() as u64;
                    pending.rows.push((shard, record.clone()));
                    continue;
                }
                let mut framed = Vec::new();
                match format::frame(source.meta.format, &record.data, &mut framed) {
                    Ok(()) => {
                        pending.body.extend_from_slice(&framed);
                        pending.records += 1;
                        pending.record_bytes += record.data.len() as u64;
                    }
                    Err(rejection) => {
                        dead_letter(source, shard, record, &rejection, &mut pending.dead);
                        pending.dead_letters += 1;
                    }
                }
            }
            let next = if read.records.iter().any(|r| r.offset >= to) {
                last
            } else {
                read.next_offset.max(last)
            };
            if read.records.is_empty() || next <= position {
                position = next.max(position);
                break;
            }
            position = next;
        }
        Ok(position)
    }

    /// Where delivery starts in a shard without a checkpoint: a shard that existed when the
    /// channel was made at the channel's creation time; a newer one at its beginning.
    async fn start_of(
        &self,
        source: &ChannelSource,
        shard: &rivulet_engine::channels::ChannelShard,
    ) -> Result<u64, String> {
        let result = if shard.created_ms >= source.meta.created_ms {
            shard.log.start_offset().await
        } else {
            shard.log.offset_at_timestamp(source.meta.created_ms).await
        };
        result.map_err(|e| e.message)
    }

    /// Reads what is new and writes the objects that are due.
    async fn deliver(
        &self,
        source: &ChannelSource,
        run: &mut Run,
        now_ms: i64,
    ) -> Result<(), String> {
        if !run.loaded {
            self.load(source, run, now_ms).await?;
        }
        let indexes: Vec<u32> = source.shards.iter().map(|s| s.index).collect();
        for shard in &source.shards {
            let cursor = run.cursors.get(&shard.index).copied();
            if cursor.is_some_and(|c| c.done) || run.pending.drained.contains(&shard.index) {
                continue;
            }
            // Parents first: a child is read once each parent still held is delivered to
            // its end.
            let parents_done = shard.parents.iter().all(|parent| {
                !indexes.contains(parent) || run.cursors.get(parent).is_some_and(|c| c.done)
            });
            if !parents_done {
                continue;
            }
            let from = match (run.reading.get(&shard.index), cursor) {
                (Some(&reading), _) => reading,
                (None, Some(cursor)) => cursor.next,
                (None, None) => self.start_of(source, shard).await?,
            };
            let end = shard.end_offset.unwrap_or(u64::MAX);
            let reached = self
                .read_range(source, shard.index, from, end, &mut run.pending, now_ms)
                .await?;
            run.reading.insert(shard.index, reached);
            let committed = cursor.map_or(from, |c| c.next.min(from));
            let range = run
                .pending
                .ranges
                .entry(shard.index)
                .or_insert((committed, reached));
            range.1 = reached;
            if shard.end_offset.is_some_and(|end| reached >= end) {
                run.pending.drained.push(shard.index);
            }
        }
        let freshness_ms =
            i64::from(source.meta.freshness_s) * 1000 / i64::from(self.settings.time_scale.max(1));
        let pending = &run.pending;
        let due = !pending.is_empty()
            && (pending.record_bytes as usize >= OBJECT_BYTES_MAX
                || pending
                    .oldest_ms
                    .is_none_or(|oldest| now_ms - oldest >= freshness_ms));
        let lag = pending
            .oldest_ms
            .map_or(0, |oldest| (now_ms - oldest).max(0));
        self.count(source, |m| m.lag_ms = lag);
        if !due {
            return Ok(());
        }
        let pending = std::mem::take(&mut run.pending);
        let intent = Intent {
            number: run.next_object,
            time_ms: now_ms,
            ranges: pending
                .ranges
                .iter()
                .map(|(&shard, &(from, to))| (shard, from, to))
                .collect(),
            done: pending.drained.clone(),
        };
        let prefix = self.engine.channel_state_prefix(&source.meta.id);
        self.engine
            .store()
            .meta()
            .commit(&[
                MetaOp::Put {
                    key: format!("{prefix}intent"),
                    value: serde_json::to_vec(&intent).unwrap_or_default(),
                },
                MetaOp::Put {
                    key: format!("{prefix}n"),
                    value: (intent.number + 1).to_string().into_bytes(),
                },
            ])
            .map_err(|e| e.message)?;
        run.next_object = intent.number + 1;
        self.write_and_commit(source, run, &intent, pending).await?;
        self.count(source, |m| m.lag_ms = 0);
        Ok(())
    }

    /// Writes the objects of `intent` (built from `pending`), then commits the checkpoints
    /// and removes the intent.
    async fn write_and_commit(
        &self,
        source: &ChannelSource,
        run: &mut Run,
        intent: &Intent,
        pending: Pending,
    ) -> Result<(), String> {
        let meta = &source.meta;
        if matches!(meta.destination, Destination::Tables(_)) {
            return self.commit_to_table(source, run, intent, pending).await;
        }
        let Destination::S3(storage) = &meta.destination else {
            return Err("the channel does not deliver to a general purpose bucket".into());
        };
        let suffix = intent.key_suffix(&meta.id);
        let context = KeyContext {
            channel_name: &meta.name,
            channel_id: &meta.id,
            stream_name: &source.stream_name,
            time_ms: intent.time_ms,
            compression: &storage.compression,
            suffix: &suffix,
        };
        let mut writes = Vec::new();
        let options = sink::PutOptions {
            kms_key: meta.encryption_key.clone(),
            storage_class: storage
                .storage_class
                .clone()
                .filter(|class| class != "STANDARD"),
        };
        if pending.records > 0 {
            let key = format::object_key(storage.key_template.as_deref(), &context);
            let bucket = bucket_name(&storage.bucket_arn)
                .unwrap_or_default()
                .to_string();
            let compression = storage.compression.clone();
            let plain = pending.body;
            let body = tokio::task::spawn_blocking(move || format::compress(&compression, plain))
                .await
                .map_err(|e| format!("compressing an object stopped: {e}"))?
                .map_err(|e| format!("compressing an object: {e}"))?;
            writes.push((bucket, key, body));
        }
        if pending.dead_letters > 0 {
            let (bucket, key) = dead_letter_place(meta, &context);
            writes.push((bucket, key, pending.dead));
        }
        let bytes_out: u64 = writes.iter().map(|(_, _, body)| body.len() as u64).sum();
        let objects = writes.len() as u64;
        // Bucket folders: each object sealed with a fresh data key of the channel's KMS key.
        let sealing = match &meta.encryption_key {
            Some(_) if !self.store.encrypts() => Some(self.folder_key(meta)?),
            _ => None,
        };
        for (bucket, key, body) in writes {
            let body = match &sealing {
                Some((kms, key_arn)) => {
                    let (kms, key_arn) = (kms.clone(), key_arn.clone());
                    tokio::task::spawn_blocking(move || crypt::seal(kms.as_ref(), &key_arn, &body))
                        .await
                        .map_err(|e| format!("encrypting an object stopped: {e}"))??
                }
                None => body,
            };
            self.store.put(&bucket, &key, body, &options).await?;
        }
        self.checkpoint(
            source,
            run,
            intent,
            Totals {
                records: pending.records,
                record_bytes: pending.record_bytes,
                objects,
                bytes_written: bytes_out,
                dead_letters: pending.dead_letters,
            },
        )?;
        if meta.logging.enabled {
            tracing::info!(
                target: "rivulet::channel_log",
                channel = %meta.name,
                records = pending.records,
                dead_letters = pending.dead_letters,
                "DestinationDelivery"
            );
        }
        Ok(())
    }
    /// Commits the shards' checkpoints of `intent` and removes it, in one commit.
    fn checkpoint(
        &self,
        source: &ChannelSource,
        run: &mut Run,
        intent: &Intent,
        delivered: Totals,
    ) -> Result<(), String> {
        let meta = &source.meta;
        let prefix = self.engine.channel_state_prefix(&meta.id);
        let mut totals = run.totals;
        totals.add(delivered);
        let mut ops = vec![
            MetaOp::Delete {
                key: format!("{prefix}intent"),
            },
            MetaOp::Put {
                key: format!("{prefix}m"),
                value: serde_json::to_vec(&totals).unwrap_or_default(),
            },
        ];
        // Each shard read moves to the end of its range; a shard drained with nothing left to
        // read (no range) is marked done where its reading stopped.
        let ranged = intent.ranges.iter().map(|&(shard, _, to)| (shard, to));
        let drained_only = intent
            .done
            .iter()
            .filter(|shard| !intent.ranges.iter().any(|&(s, _, _)| s == **shard))
            .map(|&shard| (shard, run.reading.get(&shard).copied().unwrap_or_default()));
        for (shard, next) in ranged.chain(drained_only).collect::<Vec<_>>() {
            let cursor = Cursor {
                next,
                done: intent.done.contains(&shard),
            };
            ops.push(MetaOp::Put {
                key: cursor_key(&prefix, shard),
                value: serde_json::to_vec(&cursor).unwrap_or_default(),
            });
            run.cursors.insert(shard, cursor);
        }
        self.engine
            .store()
            .meta()
            .commit(&ops)
            .map_err(|e| e.message)?;
        run.totals = totals;
        self.count(source, |m| totals.show(m));
        Ok(())
    }

    /// A streaming table's delivery: the rows that fit the table's schema in one commit (unless
    /// a snapshot already carries this delivery), the others as dead letters; then the
    /// checkpoints.
    async fn commit_to_table(
        &self,
        source: &ChannelSource,
        run: &mut Run,
        intent: &Intent,
        pending: Pending,
    ) -> Result<(), String> {
        let meta = &source.meta;
        let records: Vec<bytes::Bytes> = pending.rows.iter().map(|(_, r)| r.data.clone()).collect();
        // One load of the table (two catalog requests on REST) serves the whole delivery.
        let table = self.tables.table(meta).await?;
        let (rows, rejected) = tables::Tables::rows(&table, &records).await?;
        let mut dead = Vec::new();
        for (index, reason) in &rejected {
            let (shard, record) = &pending.rows[*index];
            let rejection = Rejection {
                code: "INVALID_SCHEMA",
                message: reason.clone(),
            };
            dead_letter(source, *shard, record, &rejection, &mut dead);
        }
        let suffix = intent.key_suffix(&meta.id);
        let context = KeyContext {
            channel_name: &meta.name,
            channel_id: &meta.id,
            stream_name: &source.stream_name,
            time_ms: intent.time_ms,
            compression: "NONE",
            suffix: &suffix,
        };
        let mut bytes_written = 0;
        if !dead.is_empty() {
            let (bucket, key) = dead_letter_place(meta, &context);
            bytes_written += dead.len() as u64;
            self.store
                .put(&bucket, &key, dead, &sink::PutOptions::default())
                .await?;
        }
        let delivered = rows.as_ref().map_or(0, |r| r.num_rows() as u64);
        if let Some(rows) = rows
            && !tables::Tables::committed(&table, meta, intent.number)
        {
            let ranges = serde_json::to_string(&intent.ranges).unwrap_or_default();
            self.tables
                .append(meta, &table, intent.number, &ranges, rows)
                .await?;
        }
        self.checkpoint(
            source,
            run,
            intent,
            Totals {
                records: delivered,
                record_bytes: pending.record_bytes,
                objects: u64::from(delivered > 0) + u64::from(!rejected.is_empty()),
                bytes_written,
                dead_letters: rejected.len() as u64,
            },
        )?;
        Ok(())
    }
}

/// The bucket and key of a delivery's dead-letter object.
fn dead_letter_place(
    meta: &rivulet_engine::channels::ChannelMeta,
    context: &KeyContext<'_>,
) -> (String, String) {
    let target = meta.dead_letter_in_effect();
    let prefix = target
        .error_prefix
        .unwrap_or_else(|| meta.error_prefix_default());
    let bucket = bucket_name(&target.bucket_arn)
        .unwrap_or_default()
        .to_string();
    (bucket, format::dead_letter_key(&prefix, context))
}

/// A dead letter: the record's identifiers and why it was not delivered (not its payload,
/// as AWS's dead letters).
fn dead_letter(
    source: &ChannelSource,
    shard: u32,
    record: &rivulet_engine::OutRecord,
    rejection: &Rejection,
    out: &mut Vec<u8>,
) {
    let line = serde_json::json!({
        "channelName": source.meta.name,
        "streamName": source.stream_name,
        "shardId": rivulet_engine::meta::shard_id(shard),
        "sequenceNumber": record.sequence_number.to_string(),
        "approximateArrivalTimestamp": record.arrival_ms,
        "errorCode": rejection.code,
        "errorMessage": rejection.message,
    });
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}
