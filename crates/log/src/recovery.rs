//! Opening a log's directory: after a clean stop this only reads index headers and scans the
//! active segment; after a crash it also cuts the torn tail. The cases are listed in the
//! recovery section of `docs/storage-format.md` (T1–T3 torn writes, C1 corruption).

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::LogError;
use crate::backend::FileSource;
use crate::format::{self, INDEX_HEADER_BYTES, IndexBuilder, ScanReport, SegmentSummary};
use crate::log::{Active, Ctx, LogInner, LogState, index_path, segment_path};
use crate::sync::DurableState;

/// Digits of a segment's base in its file name.
const BASE_DIGITS: usize = 20;

fn parse_base(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_suffix(extension)?;
    if digits.len() != BASE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Creates a new, empty log durably (see "Creating a log").
pub(crate) fn create_log(
    ctx: &Arc<Ctx>,
    id: String,
    dir: String,
    parent: &str,
    uid: u64,
) -> Result<Arc<LogInner>, LogError> {
    let backend = &ctx.backend;
    backend.create_dir(&dir)?;
    let file = backend.open_file(&segment_path(&dir, 0), true)?;
    backend.sync_dir(&dir)?;
    backend.sync_dir(parent)?;
    let active = Active::new(
        SegmentSummary::empty(0),
        &file,
        segment_path(&dir, 0),
        &ctx.open_files,
        IndexBuilder::new(ctx.config.index_interval_bytes),
        0,
        0,
    );
    Ok(new_inner(
        ctx,
        id,
        dir,
        uid,
        Default::default(),
        active,
        i64::MIN,
    ))
}

fn new_inner(
    ctx: &Arc<Ctx>,
    id: String,
    dir: String,
    uid: u64,
    sealed: std::collections::BTreeMap<u64, SegmentSummary>,
    active: Active,
    last_timestamp_ms: i64,
) -> Arc<LogInner> {
    let next_offset = active.summary.end_offset;
    Arc::new(LogInner {
        durable: Arc::new(DurableState::new(
            id.clone(),
            uid,
            next_offset,
            ctx.journal
                .as_ref()
                .map(|journal| Arc::clone(&journal.signal)),
        )),
        id,
        uid,
        dir,
        ctx: Arc::clone(ctx),
        tail: std::sync::atomic::AtomicUsize::new(0),
        last_group: std::sync::atomic::AtomicU64::new(0),
        watch_listed: std::sync::atomic::AtomicBool::new(false),
        state: Mutex::new(LogState {
            sealed,
            active,
            next_offset,
            last_timestamp_ms,
            durable_end: next_offset,
            in_flight: Default::default(),
            journal_marks: Default::default(),
        }),
    })
}

fn log_corruption(id: &str, base: u64, report: &ScanReport) {
    for range in &report.corrupt {
        tracing::error!(
            log = %id,
            segment = base,
            position = range.position,
            offset_from = range.offset_from,
            offset_to = range.offset_to,
            reason = range.reason,
            "corrupt data in segment; reads of these offsets will fail"
        );
    }
}

/// Recovers an existing log from its directory.
pub(crate) fn open_log(
    ctx: &Arc<Ctx>,
    id: String,
    dir: String,
    uid: u64,
) -> Result<Arc<LogInner>, LogError> {
    let backend = &ctx.backend;
    let mut segments = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for entry in backend.list_dir(&dir)? {
        if let Some(base) = parse_base(&entry.name, ".seg").filter(|_| !entry.is_dir) {
            segments.insert(base);
        } else if let Some(base) = parse_base(&entry.name, ".idx").filter(|_| !entry.is_dir) {
            indexes.insert(base);
        } else {
            tracing::warn!(log = %id, name = %entry.name, "ignoring unknown file in log directory");
        }
    }
    let mut dir_changed = false;
    // A crash while creating the log, after its directory but before its first segment.
    let Some(&active_base) = segments.last() else {
        tracing::warn!(log = %id, "log directory without segments; starting it empty");
        let parent = dir
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent)
            .to_string();
        return create_log(ctx, id, dir, &parent, uid);
    };
    // Indexes without a segment are left by a crash during a trim. The active segment's is a
    // snapshot left by a clean stop (or a crash during a roll): `recover_active` decides.
    for base in indexes.iter().filter(|b| !segments.contains(b)) {
        backend.remove_file(&index_path(&dir, *base))?;
        dir_changed = true;
    }
    let mut sealed = std::collections::BTreeMap::new();
    for &base in segments.range(..active_base) {
        let summary = recover_sealed(ctx, &id, &dir, base, indexes.contains(&base))?;
        sealed.insert(base, summary);
    }
    let snapshot = active_snapshot(ctx, &id, &dir, active_base, &indexes)?;
    if snapshot.is_none() && indexes.contains(&active_base) {
        // Torn, or not of this segment: it would mislead a later open.
        backend.remove_file(&index_path(&dir, active_base))?;
        dir_changed = true;
    }
    let active = recover_active(ctx, &id, &dir, active_base, snapshot)?;
    if dir_changed {
        backend.sync_dir(&dir)?;
    }
    let last_timestamp_ms = sealed
        .values()
        .chain(std::iter::once(&active.summary))
        .filter(|summary| summary.record_count > 0)
        .map(|summary| summary.max_timestamp_ms)
        .max()
        .unwrap_or(i64::MIN);
    Ok(new_inner(
        ctx,
        id,
        dir,
        uid,
        sealed,
        active,
        last_timestamp_ms,
    ))
}

/// A sealed segment's summary, from its index header if that checks out, else by a scan.
fn recover_sealed(
    ctx: &Ctx,
    id: &str,
    dir: &str,
    base: u64,
    has_index: bool,
) -> Result<SegmentSummary, LogError> {
    let backend = &ctx.backend;
    let file = backend.open_file(&segment_path(dir, base), false)?;
    let size_bytes = file.len()?;
    if has_index {
        let index = backend.open_file(&index_path(dir, base), false)?;
        let mut header = [0u8; INDEX_HEADER_BYTES];
        if index.len()? >= INDEX_HEADER_BYTES as u64 {
            index.read_exact_at(&mut header, 0)?;
            match format::decode_index_header(&header) {
                Ok(decoded)
                    if decoded.summary.base == base && decoded.summary.size_bytes == size_bytes =>
                {
                    return Ok(decoded.summary);
                }
                Ok(_) => tracing::warn!(log = %id, segment = base, "index does not match segment"),
                Err(reason) => tracing::warn!(log = %id, segment = base, reason, "bad index"),
            }
        }
    }
    tracing::info!(log = %id, segment = base, "rebuilding sparse index by scanning the segment");
    let interval = ctx.config.index_interval_bytes;
    let report = format::scan_segment(&FileSource(&*file), base, interval, |_, _, _, _| {})?;
    log_corruption(id, base, &report);
    let mut summary = report.summary;
    // Sealed segments were synced whole before the next one was created, so an invalid tail
    // here is damage, not a torn write: keep it (reads covering it report it).
    if let Some((position, reason)) = report.torn_tail {
        tracing::error!(
            log = %id, segment = base, position, reason,
            "corrupt tail in sealed segment; reads of these offsets will fail"
        );
    }
    summary.size_bytes = size_bytes;
    if report.corrupt.is_empty() && report.torn_tail.is_none() {
        // Rewritten so the next open need not scan again. Not durable until the directory
        // is synced, which costs nothing to miss: it is rebuilt again.
        let bytes = format::encode_index(&summary, &report.index.entries);
        let index = backend.open_file(&index_path(dir, base), true)?;
        index.set_len(0)?;
        index.write_all_at(&bytes, 0)?;
        index.sync_data()?;
    }
    Ok(summary)
}

/// The prefix of the active segment that an index snapshot describes (left by a clean stop or a
/// checkpoint, after the segment was synced that far; or by a crash during a roll): its summary
/// and index, if its checksums hold and the segment is at least as long as it says (segments
/// only grow, so the bytes below that length are the ones it describes). `None`: scan it all.
fn active_snapshot(
    ctx: &Ctx,
    id: &str,
    dir: &str,
    base: u64,
    indexes: &BTreeSet<u64>,
) -> Result<Option<(SegmentSummary, IndexBuilder)>, LogError> {
    if !indexes.contains(&base) {
        return Ok(None);
    }
    let backend = &ctx.backend;
    let file = backend.open_file(&segment_path(dir, base), false)?;
    let index = backend.open_file(&index_path(dir, base), false)?;
    let index_len = index.len()?;
    if index_len < INDEX_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut bytes = format::buffer_for(index_len)?;
    index.read_exact_at(&mut bytes, 0)?;
    let header = match format::decode_index_header(&bytes[..INDEX_HEADER_BYTES]) {
        Ok(header) if header.summary.base == base && header.summary.size_bytes <= file.len()? => {
            header
        }
        Ok(_) => return Ok(None),
        Err(reason) => {
            tracing::debug!(log = %id, segment = base, reason, "active index snapshot unusable");
            return Ok(None);
        }
    };
    let entries = match format::decode_index_entries(&header, &bytes[INDEX_HEADER_BYTES..]) {
        Ok(entries) => entries,
        Err(reason) => {
            tracing::debug!(log = %id, segment = base, reason, "active index snapshot unusable");
            return Ok(None);
        }
    };
    let summary = header.summary;
    // The builder carries on as if it had seen every batch: batches are contiguous, so the
    // bytes since the last entry are those after its position.
    let bytes_since_entry = summary.size_bytes - entries.last().map_or(0, |e| e.position);
    let builder = IndexBuilder {
        interval_bytes: ctx.config.index_interval_bytes.max(1),
        bytes_since_entry,
        entries,
    };
    Ok(Some((summary, builder)))
}

/// Whether bytes `from..to` of `file` are all zero.
fn all_zeros(file: &dyn crate::BackendFile, from: u64, to: u64) -> io::Result<bool> {
    // Holes read as zeros: a preallocated tail is known to be zeros without reading it.
    let mut at = file.next_data(from)?.max(from);
    if at >= to {
        return Ok(true);
    }
    let mut chunk = vec![0u8; 64 << 10];
    while at < to {
        let len = (to - at).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..len], at)?;
        if !format::is_zeros(&chunk[..len]) {
            return Ok(false);
        }
        at += len as u64;
    }
    Ok(true)
}

/// Scans the active segment, past the prefix its snapshot describes if it has one, and cuts
/// its torn tail, if any.
fn recover_active(
    ctx: &Ctx,
    id: &str,
    dir: &str,
    base: u64,
    snapshot: Option<(SegmentSummary, IndexBuilder)>,
) -> Result<Active, LogError> {
    let file = ctx.backend.open_file(&segment_path(dir, base), false)?;
    let len = file.len()?;
    let interval = ctx.config.index_interval_bytes;
    let source = FileSource(&*file);
    let report = match snapshot {
        // After a clean stop, nothing to read.
        Some((summary, index)) => {
            format::scan_segment_from(&source, summary, index, |_, _, _, _| {})?
        }
        None => format::scan_segment(&source, base, interval, |_, _, _, _| {})?,
    };
    // C1: damage followed by valid batches. Kept as is; reads covering it fail.
    log_corruption(id, base, &report);
    let size_bytes = match report.torn_tail {
        // T1–T3: a crash during an append left a partial, zeroed or half-persisted last batch.
        // It was never synced, hence never reported durable: cut it, and sync the cut so the
        // torn bytes cannot reappear after another crash.
        Some((position, reason)) => {
            if all_zeros(&*file, position, len)? {
                // Most often the preallocated space past the last append (or a torn append
                // of which only the preallocated zeros reached the disk).
                tracing::debug!(log = %id, segment = base, position, "cutting zeros at the end");
            } else {
                tracing::warn!(
                    log = %id, segment = base, position, reason, discarded_bytes = len - position,
                    "truncating torn tail of active segment"
                );
            }
            file.set_len(position)?;
            file.sync_data()?;
            position
        }
        None => len,
    };
    // Paired with the scanner: a torn tail starts right after the last valid batch.
    debug_assert!(report.torn_tail.is_none() || report.summary.size_bytes == size_bytes);
    let mut summary = report.summary;
    summary.size_bytes = size_bytes;
    if file.len()? != size_bytes {
        return Err(LogError::Io(io::Error::other(
            "active segment length changed during recovery",
        )));
    }
    Ok(Active::new(
        summary,
        &file,
        segment_path(dir, base),
        &ctx.open_files,
        report.index,
        size_bytes,
        size_bytes,
    ))
}
