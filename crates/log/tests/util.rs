//! Helpers shared by the integration tests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use rivulet_log::{Appended, Log, NewRecord, StoreConfig, StoredRecord};

/// Small segments and a dense index, so a few appends exercise rolls and index seeks.
pub fn small_config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 128,
        journal_file_bytes: 8192,
        checkpoint_journal_files: 2,
        // A few batches: both fills by size and fills by reads happen.
        fill_bytes: 300,
        // Fewer than the logs of most tests: active files are closed and reopened.
        open_files_max: 3,
        // No checkpoint at a moment the test does not choose (`journal.rs` tests the idle one).
        idle_checkpoint_ms: 3_600_000,
        ..StoreConfig::default()
    }
}

/// Appends one record with an empty key, without waiting for it to be durable.
pub fn append_one(log: &Log, value: &[u8], timestamp_ms: i64) -> Appended {
    log.append(&[NewRecord { key: b"", value }], timestamp_ms, 0)
        .expect("append")
}

/// Appends `values` (keys are `k<i>`) as one batch, waits until it is durable, and returns
/// the first offset and the stored timestamp.
pub fn append_durable(log: &Log, values: &[&[u8]], timestamp_ms: i64, min: u64) -> (u64, i64) {
    let keys: Vec<Vec<u8>> = (0..values.len())
        .map(|i| format!("k{i}").into_bytes())
        .collect();
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .zip(&keys)
        .map(|(value, key)| NewRecord { key, value })
        .collect();
    let Appended {
        first_offset,
        timestamp_ms,
        durable,
    } = log.append(&records, timestamp_ms, min).expect("append");
    durable.wait_blocking().expect("durable");
    (first_offset, timestamp_ms)
}

/// Reads every durable record from `from` on, in small pages to exercise continuation.
pub fn read_all(log: &Log, from: u64) -> Vec<StoredRecord> {
    let mut records = Vec::new();
    let mut next = from;
    loop {
        let batch = log.read(next, 7, 1 << 20).expect("read");
        if batch.records.is_empty() {
            return records;
        }
        next = batch.next_offset;
        records.extend(batch.records);
    }
}

/// A writer for tracing output that keeps it for assertions.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

/// Runs `f` with tracing output captured, and returns its result and the output.
pub fn with_captured_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    (result, captured.text())
}

/// Copies a directory tree but its lock: the store's files as a crash right now would find them
/// if the page cache reached the disk (it survives a process crash).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The journal files in use in `backend`'s data dir (not the retired ones kept as spares),
/// sorted.
pub fn journal_files(backend: &dyn rivulet_log::Backend) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list_dir("journal")
        .unwrap_or_default()
        .into_iter()
        .map(|entry| entry.name)
        .filter(|name| name.ends_with(".jnl"))
        .collect();
    names.sort();
    names
}

/// The retired journal files kept for reuse.
pub fn spare_journal_files(backend: &dyn rivulet_log::Backend) -> usize {
    backend
        .list_dir("journal")
        .unwrap_or_default()
        .iter()
        .filter(|entry| entry.name.ends_with(".spare"))
        .count()
}
