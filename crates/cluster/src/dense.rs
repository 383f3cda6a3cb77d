//! The dense read path: GetRecords far behind a shard's end is served from one in-order read
//! of the whole JetStream stream that this node keeps for a moment, not from a read of the
//! shard's subject alone.
//!
//! A subject-filtered read loads every message block between a shard's records, so reading
//! each shard of an N-shard stream that way reads the stream many times over (about 15 times
//! at 512 shards; docs/design/cluster.md, "Reads"). Instead the first such read of a stream
//! reads every shard's records from its position on, in stream order, into a window
//! `[lo, hi)` that holds each shard's records of that range (a replica holds a prefix of the
//! stream, so the window is complete); the other shards' readers, which a KCL application
//! keeps at about the same position, are then served from it, and the reader that reaches
//! the window's end extends it. The window holds at most [`WINDOW_BYTES`], dropping its
//! oldest records first; a reader behind it, or far ahead, reads its shard alone, as does a
//! reader near its shard's end (that read is short anyway, and read-your-writes is its
//! business: a page from the window is never empty).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rivulet_log::Keyring;

use crate::records::{EveryShard, JetStreamRecords, Record};

/// Record bytes one stream's window holds at most on a node.
pub const WINDOW_BYTES: usize = 32 << 20;
/// Record bytes all of a node's windows hold at most (about: one read more may pass it);
/// past it, readers read their shards alone.
pub const NODE_BYTES: usize = 128 << 20;
/// A read at least this many stream positions behind what the node knows of its shard's end
/// uses the window (nearer the end, a shard's own read scans little).
pub const MIN_DISTANCE: u64 = 2_000;
/// Shards a stream must have, and its records interleave (in a read of the stream), for the
/// window to read on: below, each shard's own read skips little, and readers in parallel
/// do better.
const MIN_SHARDS: usize = 16;
/// How far past the window's end a read may start and still extend the window, in stream
/// positions (farther, the read skipped would cost more than the shard's own read).
const MAX_GAP: u64 = 20_000;
/// One read of the stream: messages and bytes at most.
const READ_MESSAGES: usize = 10_000;
const READ_BYTES: usize = 4 << 20;
/// Reads of the stream one GetRecords may make to fill its page.
const READS_PER_PAGE: usize = 8;
/// A window nobody read from for this long is dropped (its readers are gone, or moved on).
const IDLE: Duration = Duration::from_secs(5);
/// After a read of the stream found its end, how long other readers take that as the end
/// (they read their shards alone meanwhile, which at the end is short).
const DRY: Duration = Duration::from_millis(200);
/// After a read of the stream failed, how long other readers read their shards alone.
const FAILED: Duration = Duration::from_secs(5);
/// How long a reader waits for another's read of the stream before reading its shard alone.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// What the window gave one shard's read.
#[derive(Debug)]
pub enum Dense {
    /// A page of the shard's records (never empty), and where its next read starts.
    Page { records: Vec<Record>, next: u64 },
    /// The window cannot serve this read: read the shard alone from `from` (at or after the
    /// position asked for: the window showed no record of the shard before it).
    Alone { from: u64 },
}

#[derive(Default)]
struct Window {
    lo: u64,
    hi: u64,
    shards: HashMap<u32, VecDeque<Record>>,
    /// Every record held, in stream order: (position, shard, bytes), for eviction.
    order: VecDeque<(u64, u32, usize)>,
    bytes: usize,
    used: Option<Instant>,
    /// Where and when a read of the stream last found nothing more.
    dry: Option<(u64, Instant)>,
    /// Where and when a read of the stream last failed.
    failed: Option<(u64, Instant)>,
    /// Shards interleaved in the last read of the stream: with few, each shard's own read
    /// skips little, and readers in parallel beat one read at a time.
    interleaved: Option<usize>,
}

impl Window {
    fn is_empty(&self) -> bool {
        self.lo == self.hi
    }

    fn clear(&mut self) {
        *self = Window::default();
    }

    /// Appends `page`, read from `hi` on (or from `start` into an empty window).
    fn extend(&mut self, start: u64, page: EveryShard) {
        let interleaved = page
            .records
            .iter()
            .map(|(shard, _)| *shard)
            .collect::<std::collections::HashSet<u32>>()
            .len();
        if self.is_empty() {
            self.lo = start;
            self.hi = start;
        }
        for (shard, record) in page.records {
            let bytes = record.key.len() + record.value.len();
            self.order.push_back((record.position, shard, bytes));
            self.shards.entry(shard).or_default().push_back(record);
            self.bytes += bytes;
        }
        self.interleaved = Some(interleaved);
        self.hi = self.hi.max(page.next);
        while self.bytes > WINDOW_BYTES
            && let Some(position) = self.evict(false)
        {
            self.lo = position + 1;
        }
    }

    /// Drops the window's oldest record (its newest with `newest`); returns its position.
    fn evict(&mut self, newest: bool) -> Option<u64> {
        let (position, shard, bytes) = match newest {
            true => self.order.pop_back()?,
            false => self.order.pop_front()?,
        };
        // Unless retention's trim took it already.
        if let Some(records) = self.shards.get_mut(&shard) {
            let held = match newest {
                true => records.back(),
                false => records.front(),
            };
            if held.is_some_and(|r| r.position == position) {
                match newest {
                    true => records.pop_back(),
                    false => records.pop_front(),
                };
                if records.is_empty() {
                    self.shards.remove(&shard);
                }
                self.bytes -= bytes;
            }
        }
        Some(position)
    }

    /// Puts `page`, read from `start` below the window, in front of it, if it reaches the
    /// window's start (else the two would leave a gap); says whether it did.
    fn prepend(&mut self, start: u64, page: EveryShard) -> bool {
        if page.next < self.lo {
            return false;
        }
        let lo = self.lo;
        for (shard, record) in page.records.into_iter().rev() {
            if record.position >= lo {
                continue;
            }
            let bytes = record.key.len() + record.value.len();
            self.order.push_front((record.position, shard, bytes));
            self.shards.entry(shard).or_default().push_front(record);
            self.bytes += bytes;
        }
        self.lo = start;
        // Within the bound: the newest records go, and the window ends before them.
        while self.bytes > WINDOW_BYTES
            && let Some(position) = self.evict(true)
        {
            self.hi = position;
        }
        true
    }

    /// Forgets `shard`'s records that arrived before `cutoff_ms` (retention trimmed them).
    fn forget_older(&mut self, shard: u32, cutoff_ms: i64) {
        let Some(records) = self.shards.get_mut(&shard) else {
            return;
        };
        while let Some(record) = records.front()
            && record.arrival_ms < cutoff_ms
        {
            self.bytes -= record.key.len() + record.value.len();
            records.pop_front();
        }
    }

    /// Moves `shard`'s records from `from` on (within the window) into `out`, within the
    /// page's limits; returns where the shard's next read starts: after the last record
    /// taken, or the window's end once it has none left.
    /// `page` is what the page holds so far: its records and their bytes.
    fn take(
        &self,
        shard: u32,
        from: u64,
        limits: (usize, usize),
        page: (&mut Vec<Record>, &mut usize),
    ) -> u64 {
        let (max_records, max_bytes) = limits;
        let (out, bytes) = page;
        let Some(records) = self.shards.get(&shard) else {
            return self.hi;
        };
        let at = records.partition_point(|record| record.position < from);
        for record in records.iter().skip(at) {
            if out.len() >= max_records || (*bytes >= max_bytes && !out.is_empty()) {
                return record.position;
            }
            *bytes += record.key.len() + record.value.len();
            out.push(record.clone());
        }
        self.hi
    }
}

/// One stream's window on this node.
pub struct DenseStream {
    records: JetStreamRecords,
    /// The stream's id in the record store.
    token: String,
    window: Mutex<Window>,
    /// The stream's shards this node has opened (all of them, once the engine loaded it).
    shards: AtomicUsize,
    /// One read of the stream at a time: readers waiting for the same range find it read.
    reading: tokio::sync::Mutex<()>,
    /// Bytes every window of the node holds (shared by them).
    held: Arc<AtomicUsize>,
}

impl DenseStream {
    /// The window of stream `token` of `records`, empty; `held` counts the bytes of every
    /// window of the node.
    pub fn new(records: JetStreamRecords, token: &str, held: Arc<AtomicUsize>) -> DenseStream {
        DenseStream {
            records,
            token: token.to_string(),
            window: Mutex::default(),
            shards: AtomicUsize::new(0),
            reading: tokio::sync::Mutex::default(),
            held,
        }
    }

    /// Runs `change` on the window, keeping the node's count of held bytes true.
    fn change<T>(&self, change: impl FnOnce(&mut Window) -> T) -> T {
        let mut window = self.window.lock();
        let before = window.bytes;
        let out = change(&mut window);
        let after = window.bytes;
        if after >= before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
        out
    }

    /// Whether the node's windows may take another read.
    fn room(&self) -> bool {
        self.held.load(Ordering::Relaxed) < NODE_BYTES
    }

    /// Counts a shard of the stream opened (`true`) or removed (`false`) on this node.
    pub fn count_shard(&self, opened: bool) {
        match opened {
            true => self.shards.fetch_add(1, Ordering::Relaxed),
            false => self
                .shards
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .unwrap_or(0),
        };
    }

    /// Shard `shard`'s records from `from` on, up to `max_records` and about `max_bytes`, for
    /// a reader `known_end - from` positions behind the shard's end as this node knows it.
    pub async fn read(
        &self,
        shard: u32,
        from: u64,
        limits: (usize, usize),
        known_end: u64,
        keyring: Option<Arc<dyn Keyring>>,
    ) -> Dense {
        let (records, token) = (&self.records, self.token.as_str());
        // Few shards: each one's own read skips little, and they read in parallel. An end
        // not known yet (no put or read seen here) may be far: try the window.
        if self.shards.load(Ordering::Relaxed) < MIN_SHARDS
            || (known_end > 0 && known_end.saturating_sub(from) < MIN_DISTANCE)
        {
            return Dense::Alone { from };
        }
        let (max_records, max_bytes) = limits;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut at = from;
        let done = |out: Vec<Record>, at: u64| match out.is_empty() {
            true => Dense::Alone { from: at },
            false => Dense::Page {
                records: out,
                next: at,
            },
        };
        for _ in 0..=READS_PER_PAGE {
            let behind = {
                self.drop_if_idle();
                let mut window = self.window.lock();
                if !window.is_empty() && window.lo <= at && at < window.hi {
                    at = window
                        .take(shard, at, limits, (&mut out, &mut bytes))
                        .max(at);
                    window.used = Some(Instant::now());
                    if out.len() >= max_records || bytes >= max_bytes || at < window.hi {
                        return done(out, at);
                    }
                    None
                } else if !window.is_empty() && at > window.hi + MAX_GAP {
                    return done(out, at);
                } else if !window.is_empty() && at < window.lo {
                    Some(window.lo - at)
                } else {
                    None
                }
            };
            // Just behind the window (a reader starting a little lower): read the gap in front
            // of it; farther behind, the shard alone.
            if let Some(gap) = behind {
                if gap > READ_MESSAGES as u64
                    || !self.room()
                    || !self.read_gap(at, gap, &keyring).await
                {
                    return done(out, at);
                }
                continue;
            }
            // `at` is at or past the window's end (or the window is empty): read on, unless the
            // shard holds nothing more that this node knows of.
            if (known_end > 0 && at >= known_end) || !self.room() {
                return done(out, at);
            }
            // Behind a read that takes long (a replica not answering), read the shard alone.
            let Ok(_reading) = tokio::time::timeout(LOCK_WAIT, self.reading.lock()).await else {
                return done(out, at);
            };
            let start = {
                let window = self.window.lock();
                if !window.is_empty() && at < window.hi {
                    continue; // Another reader read meanwhile: look again.
                }
                if window.interleaved.is_some_and(|shards| shards < MIN_SHARDS) {
                    return done(out, at);
                }
                let start = if window.is_empty() { at } else { window.hi };
                // Another reader just found the stream's end there, or failed to read it.
                if window
                    .dry
                    .is_some_and(|(dry, when)| dry == start && when.elapsed() < DRY)
                    || window
                        .failed
                        .is_some_and(|(failed, when)| failed == start && when.elapsed() < FAILED)
                {
                    return done(out, at);
                }
                start
            };
            let page = records
                .read_every_shard(token, start, READ_MESSAGES, READ_BYTES, keyring.as_deref())
                .await;
            match page {
                Ok(page) if !page.records.is_empty() => self.change(|window| {
                    // Only onto the window's end (it may have been dropped meanwhile).
                    if window.is_empty() || window.hi == start {
                        window.extend(start, page);
                        window.used = Some(Instant::now());
                    }
                }),
                // The replica has nothing more: the shard's own read deals with the end.
                Ok(_) => {
                    self.window.lock().dry = Some((start, Instant::now()));
                    return done(out, at);
                }
                Err(error) => {
                    tracing::debug!(%error, "dense read failed; the shard is read alone");
                    self.window.lock().failed = Some((start, Instant::now()));
                    return done(out, at);
                }
            }
        }
        done(out, at)
    }

    /// Reads the `gap` positions from `at` in front of the window into it; says whether the
    /// window now starts at or before `at`.
    async fn read_gap(&self, at: u64, gap: u64, keyring: &Option<Arc<dyn Keyring>>) -> bool {
        let Ok(_reading) = tokio::time::timeout(LOCK_WAIT, self.reading.lock()).await else {
            return false;
        };
        let lo = self.window.lock().lo;
        if lo <= at {
            return true; // Another reader read it meanwhile.
        }
        let limit = usize::try_from(gap).unwrap_or(READ_MESSAGES);
        match self
            .records
            .read_every_shard(&self.token, at, limit, READ_BYTES, keyring.as_deref())
            .await
        {
            Ok(page) => self
                .change(|window| window.lo == lo && !window.is_empty() && window.prepend(at, page)),
            Err(error) => {
                tracing::debug!(%error, "dense read failed; the shard is read alone");
                false
            }
        }
    }

    /// Forgets `shard`'s records that arrived before `cutoff_ms` (retention trims them).
    pub fn forget_older(&self, shard: u32, cutoff_ms: i64) {
        self.change(|window| window.forget_older(shard, cutoff_ms));
    }

    /// Drops what the window holds if nobody read from it for a while.
    pub fn drop_if_idle(&self) {
        self.change(|window| {
            if window.used.is_some_and(|used| used.elapsed() > IDLE) {
                window.clear();
            }
        });
    }

    /// Drops what the window holds (the stream or a shard was removed).
    pub fn clear(&self) {
        self.change(Window::clear);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(position: u64) -> Record {
        Record {
            position,
            arrival_ms: 0,
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0u8; 99]),
            sealed: false,
        }
    }

    /// A window takes each shard's records of its range, hands them out from any position
    /// within it, and drops its oldest records beyond its bound.
    #[test]
    fn a_window_serves_each_shard_and_stays_bounded() {
        let mut window = Window::default();
        let page = EveryShard {
            records: (10..20).map(|p| ((p % 2) as u32, record(p))).collect(),
            next: 20,
            pending: 0,
        };
        window.extend(10, page);
        assert_eq!((window.lo, window.hi), (10, 20));
        let mut out = Vec::new();
        // Shard 1 from 12: 13, 15, 17, 19, then the window's end.
        let mut bytes = 0;
        assert_eq!(
            window.take(1, 12, (100, 1 << 20), (&mut out, &mut bytes)),
            20
        );
        let positions: Vec<u64> = out.iter().map(|r| r.position).collect();
        assert_eq!(positions, [13, 15, 17, 19]);
        assert_eq!(bytes, 4 * 100);
        // A page limit stops at the next record.
        let mut out = Vec::new();
        assert_eq!(window.take(0, 10, (2, 1 << 20), (&mut out, &mut 0)), 14);
        // A shard with no record in the window: its next read starts at the end.
        assert_eq!(
            window.take(7, 10, (2, 1 << 20), (&mut Vec::new(), &mut 0)),
            20
        );
        // Past the bound, the oldest go first and the window starts after them.
        let per_record = 100;
        let many = WINDOW_BYTES / per_record + 10;
        let page = EveryShard {
            records: (20..20 + many as u64).map(|p| (0, record(p))).collect(),
            next: 20 + many as u64,
            pending: 0,
        };
        window.extend(20, page);
        assert!(window.bytes <= WINDOW_BYTES);
        assert_eq!(window.order.len(), WINDOW_BYTES / per_record);
        assert_eq!(window.lo, window.order[0].0);
        assert!(window.lo > 20);
        assert_eq!(
            window.shards[&0].front().map(|r| r.position),
            Some(window.lo)
        );
    }
}
