//! Queues, the data plane: per-record delivery of a stream's records to competing consumers
//! (ReceiveQueueRecords, AcknowledgeQueueRecords, UpdateQueueRecordsVisibility), dead letters
//! (the four DeadLetter operations), and the delivery state behind them, durable before any
//! answer that reports it.
//!
//! The queue's configuration belongs to the engine (`rivulet_engine::queues`, in its
//! stream's document). This crate keeps, per queue, **a cursor per shard plus exceptions**:
//! a position below a shard's cursor with no exception was acknowledged (or fell out of
//! retention); an exception is a record in flight, visible again, or dead. Nothing stays per
//! acknowledged record. The state is kept in the metadata store under
//! `Engine::queue_state_prefix` (`c/<shard>` cursors, `b/<shard>/<bucket>` exceptions by 1,024 positions, `g`
//! the receipt generation), written by a group commit per queue, so concurrent calls share
//! one durable commit and none is answered before its change is durable.
//!
//! No clock and no HTTP: callers pass the time, and a receive that finds nothing answers
//! [`Take::Wait`] with what to wait on (the server does the long poll).

mod commit;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rivulet_engine::{ApiError, Engine, ErrorKind, QueueSource, Result};
use tokio::sync::watch;

pub use state::QueueCounts;

/// One record handed out by a receive.
#[derive(Debug, Clone)]
pub struct Received {
    pub receipt_handle: String,
    pub record_id: String,
    pub partition_key: Bytes,
    pub data: Bytes,
    pub arrival_ms: i64,
    pub first_receive_ms: i64,
    pub receive_count: u32,
}

/// What a receive found.
pub enum Take {
    /// Records now in flight (durable before this returns).
    Records(Vec<Received>),
    /// Nothing visible: wait for one of these, then ask again.
    Wait(Wake),
}

/// What can make a record visible: a change to the queue (`changes`: a visibility of 0, a
/// restore), a shard's durable end moving (`ends`), or the earliest visibility timeout
/// (`at_ms`). The receivers were taken before the receive looked, so nothing that happened
/// after the look is missed.
pub struct Wake {
    pub changes: watch::Receiver<u64>,
    pub ends: Vec<watch::Receiver<u64>>,
    pub at_ms: Option<i64>,
}

/// One entry's failure in a batch operation.
#[derive(Debug, Clone)]
pub struct EntryError {
    pub receipt_handle: String,
    pub code: &'static str,
    pub message: String,
}

/// A batch operation's answer: the handles that succeeded and the entries that failed.
#[derive(Debug, Clone, Default)]
pub struct BatchResult {
    pub successful: Vec<String>,
    pub failed: Vec<EntryError>,
}

/// The two delivery paths a queue has: its records, and its dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Normal,
    DeadLetter,
}

/// What a batch operation does to each entry.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    Acknowledge,
    /// A new visibility timeout, in seconds from now.
    Visibility(u32),
    /// RestoreDeadLetterQueueRecords.
    Restore,
}

/// Counters and gauges of one queue, for `/_rivulet/metrics` and the console.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    pub arn: String,
    pub name: String,
    pub stream: String,
    pub counts: QueueCounts,
}

/// The queues of one account (one engine): their delivery state, loaded on first use.
pub struct Queues {
    queues: parking_lot::Mutex<HashMap<String, Arc<state::Queue>>>,
    /// Turns `true` when the server stops: long polls answer what they have at once.
    stopping: watch::Sender<bool>,
}

impl Default for Queues {
    fn default() -> Self {
        Queues {
            queues: parking_lot::Mutex::default(),
            stopping: watch::Sender::new(false),
        }
    }
}

impl Queues {
    /// The server stops: every long poll ends now, with what it has (nothing).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Turns `true` when the server stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The queues of `engine`'s account.
    pub fn of(engine: &Engine) -> Arc<Queues> {
        engine.extension::<Queues>()
    }

    /// Forgets state that may be stale: every queue's on an engine that is not the writer
    /// (in a cluster only the leader delivers, and a node that leads again reloads it from
    /// the store), and that of queues that are gone.
    pub fn tick(&self, engine: &Engine) {
        if !engine.is_writer() {
            self.queues.lock().clear();
            return;
        }
        let live = engine.queue_ids();
        self.queues.lock().retain(|id, _| live.contains(id));
    }
}

impl Queues {
    fn queue(&self, engine: &Engine, source: &QueueSource) -> Arc<state::Queue> {
        self.queues
            .lock()
            .entry(source.id.clone())
            .or_insert_with(|| Arc::new(state::Queue::new(&source.id, engine)))
            .clone()
    }

    /// ReceiveQueueRecords (`Path::Normal`) or ReceiveDeadLetterQueueRecords: takes up to
    /// `limit` visible records, in flight for `visibility_s` (the queue's when `None`).
    pub async fn receive(
        &self,
        engine: &Engine,
        arn: &str,
        path: Path,
        limit: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
    ) -> Result<Take> {
        let source = engine.queue_source(arn, now_ms)?;
        engine.check_queue_key(&source)?;
        let queue = self.queue(engine, &source);
        queue
            .receive(engine, &source, path, limit, visibility_s, now_ms)
            .await
    }

    /// The batch operations: each entry succeeds or fails on its own.
    pub async fn change(
        &self,
        engine: &Engine,
        arn: &str,
        path: Path,
        entries: &[(&str, Change)],
        now_ms: i64,
    ) -> Result<BatchResult> {
        let source = engine.queue_source(arn, now_ms)?;
        let queue = self.queue(engine, &source);
        queue.change(engine, &source, path, entries, now_ms).await
    }

    /// Every queue's counts, for metrics.
    pub async fn metrics(&self, engine: &Engine, now_ms: i64) -> Vec<QueueMetrics> {
        let mut out = Vec::new();
        for source in engine.queue_sources(now_ms) {
            let queue = self.queue(engine, &source);
            match queue.counts(engine, &source, now_ms).await {
                Ok(counts) => out.push(QueueMetrics {
                    arn: source.arn.clone(),
                    name: source.name.clone(),
                    stream: source.stream_name.clone(),
                    counts,
                }),
                Err(error) => {
                    tracing::debug!(queue = %source.arn, %error, "queue metrics unavailable");
                }
            }
        }
        out
    }
}

/// An entry failure with AWS's per-entry codes.
fn entry_error(handle: &str, kind: ErrorKind, message: String) -> EntryError {
    EntryError {
        receipt_handle: handle.to_string(),
        code: kind.code(),
        message,
    }
}

/// An error for the whole call.
fn internal(message: impl Into<String>) -> ApiError {
    ApiError::internal(message)
}

#[cfg(test)]
mod tests;
