//! One queue's delivery state: a cursor per shard plus exceptions, the receive, the batch
//! changes, and its persistence (see the crate's documentation for the layout).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rivulet_engine::token::{Reader, Writer};
use rivulet_engine::{
    DeadLetter, Engine, ErrorKind, OutRecord, QueueSource, QueueStartType, QueueStatus, Result,
};
use rivulet_log::MetaOp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::commit::Committer;
use crate::{BatchResult, Change, Path, Received, Take, Wake, entry_error, internal};

/// A record that is not simply "below the cursor, so acknowledged": in flight (until a time
/// to come), visible again (that time passed), or dead. Kept with its bucket's others under
/// `b/<shard>/<position / 1024>`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Exception {
    /// A dead-letter record.
    #[serde(rename = "d")]
    dead: bool,
    /// In flight until then; visible from then on.
    #[serde(rename = "u")]
    until_ms: i64,
    /// Receipts without an acknowledgement.
    #[serde(rename = "c")]
    count: u32,
    #[serde(rename = "f")]
    first_ms: i64,
    #[serde(rename = "a")]
    arrival_ms: i64,
    /// The receipt generation of its newest receipt handle.
    #[serde(rename = "g")]
    generation: u64,
}

/// A shard's cursor, kept under `c/<shard>`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CursorDoc {
    /// The first position never handed out; `None` until the starting position is resolved.
    #[serde(rename = "n")]
    next: Option<u64>,
    /// A closed shard read to its end.
    #[serde(rename = "d")]
    done: bool,
}

#[derive(Default)]
struct Cursor {
    doc: CursorDoc,
    exceptions: BTreeMap<u64, Exception>,
}

/// Bytes asked of a read for one record (it returns the record, however large).
const ONE_RECORD_BYTES: usize = 1;
/// Records a read of new records asks for beyond the receive's own (the rest waits in the
/// queue's read-ahead, so most receives read nothing: on JetStream a read is a network
/// round trip made while the queue's state is held).
const READ_AHEAD_RECORDS: usize = 200;
/// Bytes of one read ahead, and of all of a queue's read-ahead together.
const READ_AHEAD_BYTES: usize = 1 << 20;
const READ_AHEAD_TOTAL_BYTES: usize = 8 << 20;

/// Records read from a shard and not handed out yet, in order, all at or after the cursor.
#[derive(Default)]
struct ReadAhead {
    records: VecDeque<OutRecord>,
    /// Where the next read starts, once these are handed out.
    next: u64,
    /// The read reached the end of a closed shard.
    drained: bool,
    bytes: usize,
}

/// A (shard, position, generation) to look at later.
type Entry = (u32, u64, u64);

#[derive(Default)]
struct State {
    loaded: bool,
    /// The engine's writer term the state was loaded in.
    term: u64,
    generation: u64,
    shards: BTreeMap<u32, Cursor>,
    /// In-flight records by the end of their timeout (stale entries are skipped).
    expiries: BinaryHeap<Reverse<(i64, u32, u64, u64)>>,
    /// Records visible again, and dead letters visible, in the order they became so.
    ready: VecDeque<Entry>,
    dead_ready: VecDeque<Entry>,
    /// Where the next receive starts looking for new records.
    round_robin: usize,
    /// Changes made by the call holding the state, for the group commit.
    ops: Vec<MetaOp>,
    /// Buckets of exceptions changed by the call holding the state (shard, bucket).
    dirty: BTreeSet<(u32, u64)>,
    /// Records this receive handed out with a visibility timeout of 0: visible again once
    /// it ends, so it does not take them twice.
    visible_after: Vec<(u32, u64, Exception)>,
    /// New records read ahead, by shard (memory only: the cursor is what is stored).
    read_ahead: HashMap<u32, ReadAhead>,
    read_ahead_bytes: usize,
}

/// Counts of one queue's records, for metrics.
#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    /// Records that a receive would hand out now (new ones and ones visible again).
    pub visible: u64,
    pub in_flight: u64,
    /// Dead letters, in flight or not.
    pub dead: u64,
    /// Age of the oldest record not yet handed out or visible again, in ms.
    pub oldest_age_ms: i64,
    pub receives: u64,
    pub acknowledgements: u64,
    pub redeliveries: u64,
}

pub(crate) struct Queue {
    id: String,
    /// Where its state is kept (`Engine::queue_state_prefix`).
    prefix: String,
    state: tokio::sync::Mutex<State>,
    /// Moves when a record becomes visible other than by its timeout (a visibility of 0, a
    /// restore): long polls wait on it.
    changes: watch::Sender<u64>,
    committer: Arc<Committer>,
    /// A commit failed: memory may be ahead of the store, so the state is loaded again.
    reload: AtomicBool,
    receives: AtomicU64,
    acknowledgements: AtomicU64,
    redeliveries: AtomicU64,
}

fn cursor_key(prefix: &str, shard: u32) -> String {
    format!("{prefix}c/{shard:010}")
}

/// Positions per bucket of exceptions: a bucket is one metadata key, so a receive or an
/// acknowledgement of records close together changes one key, not one per record (on
/// JetStream each key changed is a replicated message).
const BUCKET_POSITIONS: u64 = 1024;

fn bucket_key(prefix: &str, shard: u32, bucket: u64) -> String {
    format!("{prefix}b/{shard:010}/{bucket:020}")
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The parts of a receipt handle.
struct Handle {
    queue: String,
    path: Path,
    shard: u32,
    position: u64,
    generation: u64,
}

fn seal_handle(engine: &Engine, handle: &Handle) -> String {
    engine.seal_receipt(
        &Writer::default()
            .str(&handle.queue)
            .u32(u32::from(handle.path == Path::DeadLetter))
            .u32(handle.shard)
            .u64(handle.position)
            .u64(handle.generation)
            .0,
    )
}

fn open_handle(engine: &Engine, text: &str) -> Option<Handle> {
    let payload = engine.open_receipt(text)?;
    let mut reader = Reader(&payload);
    Some(Handle {
        queue: reader.str()?,
        path: match reader.u32()? {
            0 => Path::Normal,
            _ => Path::DeadLetter,
        },
        shard: reader.u32()?,
        position: reader.u64()?,
        generation: reader.u64()?,
    })
}

fn max_receives(source: &QueueSource) -> Option<u32> {
    match source.attributes.dead_letter {
        DeadLetter::BuiltIn { max_receive_count } => Some(max_receive_count),
        DeadLetter::None => None,
    }
}

impl State {
    /// Shard `index`'s cursor (a fresh one before its first read).
    fn doc(&self, index: u32) -> CursorDoc {
        self.shards.get(&index).map(|c| c.doc).unwrap_or_default()
    }

    fn exception(&self, shard: u32, position: u64) -> Option<&Exception> {
        self.shards.get(&shard)?.exceptions.get(&position)
    }

    fn put_exception(&mut self, _prefix: &str, shard: u32, position: u64, x: Exception) {
        self.dirty.insert((shard, position / BUCKET_POSITIONS));
        self.shards
            .entry(shard)
            .or_default()
            .exceptions
            .insert(position, x);
    }

    fn remove_exception(&mut self, _prefix: &str, shard: u32, position: u64) {
        if let Some(cursor) = self.shards.get_mut(&shard) {
            cursor.exceptions.remove(&position);
        }
        self.dirty.insert((shard, position / BUCKET_POSITIONS));
    }

    /// The changed buckets as metadata changes (a bucket left empty is deleted), ahead of
    /// the call's other changes: a commit split in chunks stores exceptions before the
    /// cursor that passes them.
    fn bucket_ops(&mut self, prefix: &str) -> Vec<MetaOp> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut ops = Vec::with_capacity(dirty.len() + self.ops.len());
        for (shard, bucket) in dirty {
            let start = bucket * BUCKET_POSITIONS;
            let members: Vec<(u64, Exception)> = self
                .shards
                .get(&shard)
                .map(|c| {
                    c.exceptions
                        .range(start..start + BUCKET_POSITIONS)
                        .map(|(p, x)| (*p, *x))
                        .collect()
                })
                .unwrap_or_default();
            let key = bucket_key(prefix, shard, bucket);
            ops.push(if members.is_empty() {
                MetaOp::Delete { key }
            } else {
                MetaOp::Put {
                    key,
                    value: json(&members),
                }
            });
        }
        ops.append(&mut self.ops);
        ops
    }

    fn put_cursor(&mut self, prefix: &str, shard: u32, doc: CursorDoc) {
        self.shards.entry(shard).or_default().doc = doc;
        self.ops.push(MetaOp::Put {
            key: cursor_key(prefix, shard),
            value: json(&doc),
        });
    }

    /// Moves records whose timeout ended to the visible lists; a record received
    /// MaxReceiveCount times without an acknowledgement dies then.
    fn expire(&mut self, prefix: &str, max: Option<u32>, now_ms: i64) {
        while let Some(Reverse((until, shard, position, generation))) =
            self.expiries.peek().copied()
        {
            if until > now_ms {
                break;
            }
            self.expiries.pop();
            let Some(x) = self.exception(shard, position).copied() else {
                continue;
            };
            if x.generation != generation || x.until_ms != until {
                continue;
            }
            self.becomes_visible(prefix, shard, position, x, max);
        }
    }

    /// Files a record whose timeout has passed where receives find it.
    fn becomes_visible(
        &mut self,
        prefix: &str,
        shard: u32,
        position: u64,
        x: Exception,
        max: Option<u32>,
    ) {
        if x.dead {
            self.dead_ready.push_back((shard, position, x.generation));
        } else if max.is_some_and(|max| x.count >= max) {
            let dead = Exception { dead: true, ..x };
            self.put_exception(prefix, shard, position, dead);
            self.dead_ready.push_back((shard, position, x.generation));
        } else {
            self.ready.push_back((shard, position, x.generation));
        }
    }

    fn schedule(&mut self, shard: u32, position: u64, x: &Exception) {
        self.expiries
            .push(Reverse((x.until_ms, shard, position, x.generation)));
    }

    /// Drops the state of shards the stream no longer holds (their records are past
    /// retention).
    fn forget_removed_shards(&mut self, prefix: &str, source: &QueueSource) {
        let live: HashSet<u32> = source.shards.iter().map(|s| s.index).collect();
        let gone: Vec<u32> = self
            .shards
            .keys()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        for shard in gone {
            if let Some(ahead) = self.read_ahead.remove(&shard) {
                self.read_ahead_bytes -= ahead.bytes;
            }
            if let Some(cursor) = self.shards.remove(&shard) {
                let buckets: BTreeSet<u64> = cursor
                    .exceptions
                    .keys()
                    .map(|p| p / BUCKET_POSITIONS)
                    .collect();
                for bucket in buckets {
                    self.ops.push(MetaOp::Delete {
                        key: bucket_key(prefix, shard, bucket),
                    });
                }
            }
            self.dirty.retain(|(s, _)| *s != shard);
            self.ops.push(MetaOp::Delete {
                key: cursor_key(prefix, shard),
            });
        }
    }
}

impl Queue {
    pub(crate) fn new(id: &str, engine: &Engine) -> Queue {
        let store = engine.store().clone();
        let commit: crate::commit::CommitFn =
            Arc::new(move |ops: &[MetaOp]| store.meta().commit(ops).map_err(|e| e.message));
        Queue {
            id: id.to_string(),
            prefix: engine.queue_state_prefix(id),
            state: tokio::sync::Mutex::new(State::default()),
            changes: watch::Sender::new(0),
            committer: Committer::new(commit),
            reload: AtomicBool::new(false),
            receives: AtomicU64::new(0),
            acknowledgements: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
        }
    }

    /// Loads the persisted state once, and again after a failed commit or when this node
    /// became the writer again (another node may have delivered meanwhile). Every change
    /// added before is settled first, so the store holds all that will ever land.
    async fn ensure_loaded(
        &self,
        state: &mut State,
        engine: &Engine,
        max: Option<u32>,
        now_ms: i64,
    ) -> Result<()> {
        let stale = self.reload.swap(false, Ordering::AcqRel)
            || self.committer.is_poisoned()
            || state.term != engine.writer_term();
        if state.loaded && !stale {
            return Ok(());
        }
        self.committer.reset().await;
        let term = engine.writer_term();
        let prefix = engine.queue_state_prefix(&self.id);
        let mut fresh = State::default();
        for (key, value) in engine.store().meta().scan_prefix(&prefix)? {
            let rest = &key[prefix.len()..];
            let corrupt = || internal(format!("unreadable queue state under {key}"));
            if rest == "g" {
                fresh.generation = serde_json::from_slice(&value).map_err(|_| corrupt())?;
            } else if let Some(shard) = rest.strip_prefix("c/") {
                let shard: u32 = shard.parse().map_err(|_| corrupt())?;
                fresh.shards.entry(shard).or_default().doc =
                    serde_json::from_slice(&value).map_err(|_| corrupt())?;
            } else if let Some(rest) = rest.strip_prefix("b/") {
                let (shard, _) = rest.split_once('/').ok_or_else(corrupt)?;
                let shard: u32 = shard.parse().map_err(|_| corrupt())?;
                let members: Vec<(u64, Exception)> =
                    serde_json::from_slice(&value).map_err(|_| corrupt())?;
                fresh
                    .shards
                    .entry(shard)
                    .or_default()
                    .exceptions
                    .extend(members);
            }
        }
        let mut pending = Vec::new();
        for (shard, cursor) in &fresh.shards {
            for (position, x) in &cursor.exceptions {
                pending.push((*shard, *position, *x));
            }
        }
        let prefix = engine.queue_state_prefix(&self.id);
        for (shard, position, x) in pending {
            if x.until_ms > now_ms {
                fresh.schedule(shard, position, &x);
            } else {
                fresh.becomes_visible(&prefix, shard, position, x, max);
            }
        }
        fresh.loaded = true;
        fresh.term = term;
        *state = fresh;
        Ok(())
    }

    /// Adds the changes the call made to the group commit (while the state is held, so in
    /// order); `None` when there are none.
    fn stage(&self, state: &mut State) -> Option<Arc<crate::commit::Batch>> {
        let ops = state.bucket_ops(&self.prefix);
        (!ops.is_empty()).then(|| self.committer.add(ops))
    }

    /// Waits until a staged batch is durable.
    async fn durable(&self, batch: Option<Arc<crate::commit::Batch>>) -> Result<()> {
        let Some(batch) = batch else {
            return Ok(());
        };
        self.committer.durable(&batch).await.map_err(|message| {
            self.reload.store(true, Ordering::Release);
            internal(format!("the queue's state could not be stored: {message}"))
        })
    }

    pub(crate) async fn receive(
        &self,
        engine: &Engine,
        source: &QueueSource,
        path: Path,
        limit: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
    ) -> Result<Take> {
        let prefix = engine.queue_state_prefix(&self.id);
        let max = max_receives(source);
        // Watch first, look second: whatever changes after the look wakes the caller.
        let changes = self.changes.subscribe();
        let ends: Vec<watch::Receiver<u64>> = match (path, source.status) {
            (Path::Normal, QueueStatus::Active | QueueStatus::Updating) => source
                .shards
                .iter()
                .filter(|s| s.end_offset.is_none())
                .filter_map(|s| s.log.watch_end().ok())
                .collect(),
            _ => Vec::new(),
        };
        let (outcome, batch, requeued, at_ms) = {
            let mut state = self.state.lock().await;
            self.ensure_loaded(&mut state, engine, max, now_ms).await?;
            state.forget_removed_shards(&prefix, source);
            state.expire(&prefix, max, now_ms);
            let outcome = if source.status == QueueStatus::Creating {
                Ok(Vec::new())
            } else {
                let visibility_ms =
                    i64::from(visibility_s.unwrap_or(source.attributes.visibility_timeout_s))
                        * 1000;
                // On a failed read, what was handed out before it is kept and stored: those
                // records are in flight and come back after their timeout.
                self.take(
                    &mut state,
                    engine,
                    source,
                    path,
                    limit,
                    visibility_ms,
                    now_ms,
                )
                .await
            };
            let requeued = !state.visible_after.is_empty();
            for (shard, position, x) in std::mem::take(&mut state.visible_after) {
                state.becomes_visible(&prefix, shard, position, x, max);
            }
            let at_ms = match source.status {
                QueueStatus::Creating => Some(now_ms + 100),
                _ => state.expiries.peek().map(|Reverse((until, ..))| *until),
            };
            (outcome, self.stage(&mut state), requeued, at_ms)
        };
        self.durable(batch).await?;
        if requeued {
            self.changes.send_modify(|n| *n += 1);
        }
        let taken = outcome?;
        if taken.is_empty() {
            return Ok(Take::Wait(Wake {
                changes,
                ends,
                at_ms,
            }));
        }
        Ok(Take::Records(taken))
    }

    /// Hands out up to `limit` records: first those visible again, then new ones (normal
    /// path only), round-robin over the shards.
    #[allow(clippy::too_many_arguments)]
    async fn take(
        &self,
        state: &mut State,
        engine: &Engine,
        source: &QueueSource,
        path: Path,
        limit: usize,
        visibility_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Received>> {
        let prefix = engine.queue_state_prefix(&self.id);
        let max = max_receives(source);
        let oldest_kept = now_ms - source.retention_ms;
        let mut out = Vec::new();
        let dead = path == Path::DeadLetter;
        while out.len() < limit {
            // Looked at, and taken off its list only once handled: a receive cancelled
            // during the read below (its client went away) leaves it where it was.
            let next = if dead {
                state.dead_ready.front()
            } else {
                state.ready.front()
            };
            let Some(&(shard, position, generation)) = next else {
                break;
            };
            let pop = |state: &mut State| {
                if dead {
                    state.dead_ready.pop_front();
                } else {
                    state.ready.pop_front();
                }
            };
            let Some(x) = state.exception(shard, position).copied() else {
                pop(state);
                continue;
            };
            if x.generation != generation || x.dead != dead || x.until_ms > now_ms {
                pop(state);
                continue;
            }
            if x.arrival_ms < oldest_kept {
                pop(state);
                state.remove_exception(&prefix, shard, position);
                continue;
            }
            if !dead && max.is_some_and(|max| x.count >= max) {
                pop(state);
                state.becomes_visible(&prefix, shard, position, x, max);
                continue;
            }
            let read = engine
                .queue_read(source, shard, position, 1, ONE_RECORD_BYTES, now_ms)
                .await?;
            pop(state);
            let Some(record) = read.records.into_iter().find(|r| r.offset == position) else {
                // Trimmed from the stream: nothing left to deliver.
                state.remove_exception(&prefix, shard, position);
                continue;
            };
            self.redeliveries.fetch_add(1, Ordering::Relaxed);
            out.push(self.hand_out(
                state,
                engine,
                &prefix,
                shard,
                &record,
                Some(x),
                path,
                visibility_ms,
                now_ms,
            ));
        }
        if dead || out.len() >= limit || source.shards.is_empty() {
            return Ok(out);
        }
        let count = source.shards.len();
        let first = state.round_robin % count;
        state.round_robin = state.round_robin.wrapping_add(1);
        for k in 0..count {
            if out.len() >= limit {
                break;
            }
            let shard = &source.shards[(first + k) % count];
            let Some((doc, next, end)) = window(state.doc(shard.index), source, shard).await?
            else {
                continue;
            };
            if next >= end {
                let done = shard.end_offset.is_some();
                if doc.next != Some(next) || done != doc.done {
                    state.put_cursor(
                        &prefix,
                        shard.index,
                        CursorDoc {
                            next: Some(next),
                            done,
                        },
                    );
                }
                continue;
            }
            // Records past retention are skipped; when all that was read was, read on.
            let mut next = next;
            loop {
                let want = limit - out.len();
                let before = out.len();
                let mut ahead = state.read_ahead.remove(&shard.index).unwrap_or_default();
                state.read_ahead_bytes -= ahead.bytes;
                if ahead.records.is_empty() {
                    let room = READ_AHEAD_TOTAL_BYTES.saturating_sub(state.read_ahead_bytes);
                    let (records, bytes) = if room >= READ_AHEAD_BYTES {
                        (want + READ_AHEAD_RECORDS, READ_AHEAD_BYTES)
                    } else {
                        (want, ONE_RECORD_BYTES)
                    };
                    let read = engine
                        .queue_read(source, shard.index, next, records, bytes, now_ms)
                        .await?;
                    ahead = ReadAhead {
                        next: read.next_offset.max(next),
                        drained: read.child_shards.is_some(),
                        bytes: read.bytes,
                        records: read.records.into(),
                    };
                }
                let mut cursor = next;
                let mut skipped = false;
                while out.len() < limit {
                    let Some(record) = ahead.records.pop_front() else {
                        break;
                    };
                    ahead.bytes = ahead
                        .bytes
                        .saturating_sub(record.data.len() + record.partition_key.len());
                    cursor = record.offset + 1;
                    if record.arrival_ms < oldest_kept {
                        skipped = true;
                        continue;
                    }
                    self.receives.fetch_add(1, Ordering::Relaxed);
                    out.push(self.hand_out(
                        state,
                        engine,
                        &prefix,
                        shard.index,
                        &record,
                        None,
                        path,
                        visibility_ms,
                        now_ms,
                    ));
                }
                let emptied = ahead.records.is_empty();
                if emptied {
                    cursor = cursor.max(ahead.next);
                }
                let done =
                    emptied && ahead.drained || shard.end_offset.is_some_and(|end| cursor >= end);
                if !emptied {
                    state.read_ahead_bytes += ahead.bytes;
                    state.read_ahead.insert(shard.index, ahead);
                }
                state.put_cursor(
                    &prefix,
                    shard.index,
                    CursorDoc {
                        next: Some(cursor),
                        done,
                    },
                );
                let handed = out.len() > before;
                if handed || !skipped || done || !emptied || cursor >= end || out.len() >= limit {
                    break;
                }
                next = cursor;
            }
        }
        Ok(out)
    }

    /// Puts a record in flight and makes its answer.
    #[allow(clippy::too_many_arguments)]
    fn hand_out(
        &self,
        state: &mut State,
        engine: &Engine,
        prefix: &str,
        shard: u32,
        record: &OutRecord,
        before: Option<Exception>,
        path: Path,
        visibility_ms: i64,
        now_ms: i64,
    ) -> Received {
        state.generation += 1;
        let generation = state.generation;
        state.ops.push(MetaOp::Put {
            key: format!("{prefix}g"),
            value: json(&generation),
        });
        let x = Exception {
            dead: path == Path::DeadLetter,
            until_ms: now_ms + visibility_ms,
            count: before.map_or(0, |b| b.count).saturating_add(1),
            first_ms: before.map_or(now_ms, |b| b.first_ms),
            arrival_ms: record.arrival_ms,
            generation,
        };
        state.put_exception(prefix, shard, record.offset, x);
        if visibility_ms == 0 {
            state.visible_after.push((shard, record.offset, x));
        } else {
            state.schedule(shard, record.offset, &x);
        }
        Received {
            receipt_handle: seal_handle(
                engine,
                &Handle {
                    queue: self.id.clone(),
                    path,
                    shard,
                    position: record.offset,
                    generation,
                },
            ),
            record_id: record.sequence_number.as_str().to_string(),
            partition_key: record.partition_key.clone(),
            data: record.data.clone(),
            arrival_ms: record.arrival_ms,
            first_receive_ms: x.first_ms,
            receive_count: x.count,
        }
    }

    pub(crate) async fn change(
        &self,
        engine: &Engine,
        source: &QueueSource,
        path: Path,
        entries: &[(&str, Change)],
        now_ms: i64,
    ) -> Result<BatchResult> {
        let prefix = engine.queue_state_prefix(&self.id);
        let max = max_receives(source);
        let mut result = BatchResult::default();
        let mut wake = false;
        let batch = {
            let mut state = self.state.lock().await;
            self.ensure_loaded(&mut state, engine, max, now_ms).await?;
            state.expire(&prefix, max, now_ms);
            for (text, change) in entries {
                let invalid = || {
                    entry_error(
                        text,
                        ErrorKind::InvalidArgument,
                        format!(
                            "The receipt handle {text} is not valid for queue {}.",
                            source.arn
                        ),
                    )
                };
                let Some(handle) = open_handle(engine, text) else {
                    result.failed.push(invalid());
                    continue;
                };
                if handle.queue != self.id || handle.path != path {
                    result.failed.push(invalid());
                    continue;
                }
                let current = state
                    .exception(handle.shard, handle.position)
                    .copied()
                    .filter(|x| {
                        x.generation == handle.generation && x.dead == (path == Path::DeadLetter)
                    });
                let Some(x) = current else {
                    result.failed.push(entry_error(
                        text,
                        ErrorKind::ResourceNotFound,
                        format!(
                            "The receipt handle {text} is no longer valid: the record was \
                             acknowledged, received again, or left the queue."
                        ),
                    ));
                    continue;
                };
                match change {
                    Change::Acknowledge => {
                        state.remove_exception(&prefix, handle.shard, handle.position);
                        self.acknowledgements.fetch_add(1, Ordering::Relaxed);
                    }
                    Change::Visibility(seconds) => {
                        let x = Exception {
                            until_ms: now_ms + i64::from(*seconds) * 1000,
                            ..x
                        };
                        state.put_exception(&prefix, handle.shard, handle.position, x);
                        if *seconds == 0 {
                            state.becomes_visible(&prefix, handle.shard, handle.position, x, max);
                            wake = true;
                        } else {
                            state.schedule(handle.shard, handle.position, &x);
                        }
                    }
                    Change::Restore => {
                        let x = Exception {
                            dead: false,
                            count: 0,
                            until_ms: now_ms,
                            ..x
                        };
                        state.put_exception(&prefix, handle.shard, handle.position, x);
                        state
                            .ready
                            .push_back((handle.shard, handle.position, x.generation));
                        wake = true;
                    }
                }
                result.successful.push(text.to_string());
            }
            self.stage(&mut state)
        };
        self.durable(batch).await?;
        if wake {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(result)
    }

    /// The queue's counts now.
    pub(crate) async fn counts(
        &self,
        engine: &Engine,
        source: &QueueSource,
        now_ms: i64,
    ) -> Result<crate::QueueCounts> {
        let prefix = engine.queue_state_prefix(&self.id);
        let max = max_receives(source);
        let mut state = self.state.lock().await;
        self.ensure_loaded(&mut state, engine, max, now_ms).await?;
        state.expire(&prefix, max, now_ms);
        let mut counts = crate::QueueCounts {
            receives: self.receives.load(Ordering::Relaxed),
            acknowledgements: self.acknowledgements.load(Ordering::Relaxed),
            redeliveries: self.redeliveries.load(Ordering::Relaxed),
            ..Default::default()
        };
        let mut oldest: Option<i64> = None;
        for cursor in state.shards.values() {
            for x in cursor.exceptions.values() {
                if x.dead {
                    counts.dead += 1;
                } else if x.until_ms > now_ms {
                    counts.in_flight += 1;
                } else {
                    counts.visible += 1;
                    oldest = Some(oldest.map_or(x.arrival_ms, |o| o.min(x.arrival_ms)));
                }
            }
        }
        let docs: Vec<CursorDoc> = source.shards.iter().map(|s| state.doc(s.index)).collect();
        // The reads below need no state: other calls go on meanwhile.
        drop(state);
        for (shard, doc) in source.shards.iter().zip(docs) {
            let Some((_, next, end)) = window(doc, source, shard).await? else {
                continue;
            };
            if next < end {
                // Positions are consecutive on one node; in a cluster this is an estimate.
                counts.visible += end - next;
                let read = engine
                    .queue_read(source, shard.index, next, 1, ONE_RECORD_BYTES, now_ms)
                    .await;
                if let Some(first) = read.ok().and_then(|r| r.records.into_iter().next()) {
                    oldest = Some(oldest.map_or(first.arrival_ms, |o| o.min(first.arrival_ms)));
                }
            }
        }
        counts.oldest_age_ms = oldest.map_or(0, |o| (now_ms - o).max(0));
        Ok(counts)
    }
}

/// Where a queue starts in `shard`: a shard that existed when the queue was created at the
/// queue's starting position; a shard created since at its beginning.
async fn start_of(source: &QueueSource, shard: &rivulet_engine::QueueShard) -> Result<u64> {
    let created_later = shard.created_ms >= source.created_ms;
    let at = match (source.start.kind, source.start.timestamp_ms) {
        (QueueStartType::TrimHorizon, _) => None,
        _ if created_later => None,
        (QueueStartType::Latest, _) => Some(source.created_ms),
        (QueueStartType::AtTimestamp, at) => Some(at.unwrap_or(source.created_ms)),
    };
    match at {
        None => shard.log.start_offset().await,
        Some(at) => shard.log.offset_at_timestamp(at).await,
    }
}

/// A shard's cursor, where its next record is and where the shard ends, unless the queue is
/// done with it.
async fn window(
    doc: CursorDoc,
    source: &QueueSource,
    shard: &rivulet_engine::QueueShard,
) -> Result<Option<(CursorDoc, u64, u64)>> {
    if doc.done {
        return Ok(None);
    }
    let next = match doc.next {
        Some(next) => next,
        None => start_of(source, shard).await?,
    };
    let end = match shard.end_offset {
        Some(end) => end,
        None => shard.log.known_end_offset().await?,
    };
    Ok(Some((doc, next, end)))
}
