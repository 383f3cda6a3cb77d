//! Byte layout of batches and sparse-index files (see `docs/storage-format.md`), and the scanning
//! logic shared by recovery, index rebuilds, reads and [`decode_segment`]. No file system here:
//! everything reads through [`ReadAt`], so the same code runs over a file or a byte slice.

use std::io;
use std::ops::Range;

use bytes::Bytes;

use crate::crypt::{self, CRYPT_OVERHEAD_BYTES, CRYPT_PREFIX_BYTES, Encryption, FLAG_ENCRYPTED};
use crate::{NewRecord, StoredRecord};

/// Magic bytes at the start of every batch; the trailing `1` is the format version.
pub const BATCH_MAGIC: [u8; 4] = *b"RVB1";
/// Size of a batch header in bytes.
pub const BATCH_HEADER_BYTES: usize = 40;
/// Size of a record header (offset delta, key length, value length) in bytes.
pub const RECORD_HEADER_BYTES: usize = 12;
/// Largest batch, header included. Bounds the buffer a reader allocates for one batch, so a
/// corrupt length can never make us allocate more (the length is checksummed anyway).
pub const BATCH_BYTES_MAX: u32 = 64 << 20;
/// Magic bytes at the start of every sparse-index side file.
pub const INDEX_MAGIC: [u8; 4] = *b"RVI1";
/// Size of the sparse-index file header in bytes.
pub const INDEX_HEADER_BYTES: usize = 72;
/// Size of one sparse-index entry in bytes.
pub const INDEX_ENTRY_BYTES: usize = 24;
/// Chunk size used when searching forward for the next valid batch after a corrupt one.
const RESYNC_CHUNK_BYTES: usize = 64 << 10;

/// The checked fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub batch_len: u32,
    pub body_crc: u32,
    pub first_offset: u64,
    pub timestamp_ms: i64,
    pub record_count: u32,
    /// The body is encrypted (`crypt`).
    pub encrypted: bool,
}

impl BatchHeader {
    /// One past the last record's offset; cannot overflow (checked by `parse_header`).
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.record_count)
    }
}

/// A zeroed buffer of `len` bytes, a length read from disk: one that cannot be had is an I/O
/// error (a damaged file), not an abort.
pub(crate) fn buffer_for(len: u64) -> io::Result<Vec<u8>> {
    let too_large = || io::Error::other(format!("{len} bytes cannot be read into memory"));
    let len = usize::try_from(len).map_err(|_| too_large())?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).map_err(|_| too_large())?;
    buf.resize(len, 0);
    Ok(buf)
}

/// Little-endian integers at a byte position (the caller checked the length).
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    i64::from_le_bytes(word)
}

/// Encoded size of a batch holding `records`, or `None` if it exceeds [`BATCH_BYTES_MAX`].
pub(crate) fn batch_len(records: &[NewRecord<'_>], sealed: bool) -> Option<u32> {
    let mut len = BATCH_HEADER_BYTES as u64;
    if sealed {
        len += CRYPT_OVERHEAD_BYTES as u64;
    }
    for record in records {
        len += (RECORD_HEADER_BYTES + record.key.len() + record.value.len()) as u64;
        if len > u64::from(BATCH_BYTES_MAX) {
            return None;
        }
    }
    u32::try_from(len).ok()
}

/// Encodes one batch into `buf` (cleared first), encrypted with `seal` if given. The caller
/// checked the size with `batch_len` and that `records` is not empty.
pub(crate) fn encode_batch(
    buf: &mut Vec<u8>,
    first_offset: u64,
    timestamp_ms: i64,
    records: &[NewRecord<'_>],
    seal: Option<&Encryption<'_>>,
) -> Result<(), crate::LogError> {
    buf.clear();
    let records_start = BATCH_HEADER_BYTES
        + if seal.is_some() {
            CRYPT_PREFIX_BYTES
        } else {
            0
        };
    buf.resize(records_start, 0);
    for (delta, record) in records.iter().enumerate() {
        buf.extend_from_slice(&(delta as u32).to_le_bytes());
        buf.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
        buf.extend_from_slice(record.key);
        buf.extend_from_slice(record.value);
    }
    buf[16..24].copy_from_slice(&first_offset.to_le_bytes());
    buf[24..32].copy_from_slice(&timestamp_ms.to_le_bytes());
    buf[32..36].copy_from_slice(&(records.len() as u32).to_le_bytes());
    let flags = if seal.is_some() { FLAG_ENCRYPTED } else { 0 };
    buf[36..40].copy_from_slice(&flags.to_le_bytes());
    if let Some(seal) = seal {
        crypt::encrypt_batch(seal, buf, BATCH_HEADER_BYTES)?;
    }
    let body_crc = crc32c::crc32c(&buf[BATCH_HEADER_BYTES..]);
    let batch_len = buf.len() as u32;
    buf[0..4].copy_from_slice(&BATCH_MAGIC);
    buf[8..12].copy_from_slice(&batch_len.to_le_bytes());
    buf[12..16].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[8..BATCH_HEADER_BYTES]);
    buf[4..8].copy_from_slice(&header_crc.to_le_bytes());
    // Paired with the checks in `parse_header`: what we write must be what we accept.
    debug_assert!(parse_header(&buf[..BATCH_HEADER_BYTES]).is_ok());
    Ok(())
}

/// Parses and checks a batch header; the error says why it is invalid.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<BatchHeader, &'static str> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err("short batch header");
    }
    if bytes[0..4] != BATCH_MAGIC {
        return Err("bad batch magic");
    }
    if u32_at(bytes, 4) != crc32c::crc32c(&bytes[8..BATCH_HEADER_BYTES]) {
        return Err("batch header checksum mismatch");
    }
    let header = BatchHeader {
        batch_len: u32_at(bytes, 8),
        body_crc: u32_at(bytes, 12),
        first_offset: u64_at(bytes, 16),
        timestamp_ms: i64_at(bytes, 24),
        record_count: u32_at(bytes, 32),
        encrypted: u32_at(bytes, 36) == FLAG_ENCRYPTED,
    };
    if u32_at(bytes, 36) & !FLAG_ENCRYPTED != 0 {
        return Err("unknown batch flags");
    }
    if header.batch_len > BATCH_BYTES_MAX {
        return Err("batch length above maximum");
    }
    if header.record_count == 0 {
        return Err("batch without records");
    }
    let mut records_min_bytes = u64::from(header.record_count) * RECORD_HEADER_BYTES as u64;
    if header.encrypted {
        records_min_bytes += CRYPT_OVERHEAD_BYTES as u64;
    }
    if u64::from(header.batch_len) < BATCH_HEADER_BYTES as u64 + records_min_bytes {
        return Err("batch length too small for its record count");
    }
    if header
        .first_offset
        .checked_add(u64::from(header.record_count))
        .is_none()
    {
        return Err("batch offsets overflow");
    }
    Ok(header)
}

/// Where one record's key and value lie inside a batch body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordSpan {
    pub offset: u64,
    pub key: Range<usize>,
    pub value: Range<usize>,
}

/// Checks a batch body against its header (checksum and record structure) and returns where
/// each record lies in it. An encrypted body is checked by its checksum only (its records are
/// checked when a reader opens it) and has no spans.
pub(crate) fn decode_body(
    header: &BatchHeader,
    body: &[u8],
) -> Result<Vec<RecordSpan>, &'static str> {
    if body.len() as u64 + BATCH_HEADER_BYTES as u64 != u64::from(header.batch_len) {
        return Err("batch body length mismatch");
    }
    if crc32c::crc32c(body) != header.body_crc {
        return Err("batch body checksum mismatch");
    }
    if header.encrypted {
        return Ok(Vec::new());
    }
    parse_records(header, body)
}

/// The header bytes that authenticate an encrypted body (first offset, timestamp, record count,
/// flags), rebuilt from the header.
pub(crate) fn crypt_aad(header: &BatchHeader) -> [u8; 24] {
    let mut aad = [0u8; 24];
    aad[0..8].copy_from_slice(&header.first_offset.to_le_bytes());
    aad[8..16].copy_from_slice(&header.timestamp_ms.to_le_bytes());
    aad[16..20].copy_from_slice(&header.record_count.to_le_bytes());
    aad[20..24].copy_from_slice(&FLAG_ENCRYPTED.to_le_bytes());
    aad
}

/// Where each record of a (plaintext) body lies, checked against the header.
pub(crate) fn parse_records(
    header: &BatchHeader,
    body: &[u8],
) -> Result<Vec<RecordSpan>, &'static str> {
    let mut spans = Vec::with_capacity(header.record_count as usize);
    let mut at = 0usize;
    for delta in 0..header.record_count {
        if body.len() - at < RECORD_HEADER_BYTES {
            return Err("record header past end of batch");
        }
        if u32_at(body, at) != delta {
            return Err("record offset delta out of sequence");
        }
        let key_len = u32_at(body, at + 4) as usize;
        let value_len = u32_at(body, at + 8) as usize;
        at += RECORD_HEADER_BYTES;
        if body.len() - at < key_len {
            return Err("record key past end of batch");
        }
        let key = at..at + key_len;
        at += key_len;
        if body.len() - at < value_len {
            return Err("record value past end of batch");
        }
        let value = at..at + value_len;
        at += value_len;
        spans.push(RecordSpan {
            offset: header.first_offset + u64::from(delta),
            key,
            value,
        });
    }
    if at != body.len() {
        return Err("bytes left over after the last record");
    }
    Ok(spans)
}

/// Positioned reads over a file or a byte slice.
pub(crate) trait ReadAt {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from byte `pos`; fails if the source is too short.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// See `BackendFile::next_data`.
    fn next_data(&self, from: u64) -> io::Result<u64> {
        Ok(from)
    }
}

/// Bytes a [`ReadAhead`] reads at once.
const READ_AHEAD_BYTES: usize = 64 << 10;

/// Reads `src` below `limit` through a window of `READ_AHEAD_BYTES`: reading a run of small
/// batches (a shard of a many-shard stream holds batches of a record or two) costs one system
/// call per window instead of two per batch.
pub(crate) struct ReadAhead<'a> {
    src: &'a dyn ReadAt,
    limit: u64,
    /// The window: where it starts, and its bytes.
    window: std::cell::RefCell<(u64, Vec<u8>)>,
}

impl<'a> ReadAhead<'a> {
    pub fn new(src: &'a dyn ReadAt, limit: u64) -> Self {
        Self {
            src,
            limit,
            window: std::cell::RefCell::new((0, Vec::new())),
        }
    }
}

impl ReadAt for ReadAhead<'_> {
    fn len(&self) -> io::Result<u64> {
        self.src.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let end = pos
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let mut window = self.window.borrow_mut();
        let (start, bytes) = &mut *window;
        if pos < *start || end > *start + bytes.len() as u64 {
            if buf.len() >= READ_AHEAD_BYTES || end > self.limit {
                // Larger than a window, or past what may be read ahead: read it as asked.
                return self.src.read_exact_at(buf, pos);
            }
            let len = (self.limit - pos).min(READ_AHEAD_BYTES as u64) as usize;
            bytes.resize(len, 0);
            if let Err(error) = self.src.read_exact_at(bytes, pos) {
                bytes.clear();
                return Err(error);
            }
            *start = pos;
        }
        let at = (pos - *start) as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    }

    fn next_data(&self, from: u64) -> io::Result<u64> {
        self.src.next_data(from)
    }
}

/// Lets the scanner read a byte slice.
struct SliceSource<'a>(&'a [u8]);

impl ReadAt for SliceSource<'_> {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let Some(source) = self.0.get(start..end) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(source);
        Ok(())
    }
}

/// What lies at a byte position of a segment, judged by its header alone.
#[derive(Debug)]
pub(crate) enum HeaderAt {
    /// Fewer than a header's bytes remain before the limit.
    Short,
    /// The header fails its checks.
    Invalid(&'static str),
    /// The header is valid but the batch extends past the limit.
    Overrun,
    /// The header is valid and the batch lies within the limit.
    Valid(BatchHeader),
}

/// Reads and judges the batch header at `pos`, looking no further than `limit`.
pub(crate) fn read_header(src: &dyn ReadAt, pos: u64, limit: u64) -> io::Result<HeaderAt> {
    if limit.saturating_sub(pos) < BATCH_HEADER_BYTES as u64 {
        return Ok(HeaderAt::Short);
    }
    let mut bytes = [0u8; BATCH_HEADER_BYTES];
    src.read_exact_at(&mut bytes, pos)?;
    Ok(match parse_header(&bytes) {
        Err(reason) => HeaderAt::Invalid(reason),
        Ok(header) if pos + u64::from(header.batch_len) > limit => HeaderAt::Overrun,
        Ok(header) => HeaderAt::Valid(header),
    })
}

/// A decoded body's record spans, or why the body is invalid.
pub(crate) type BodyCheck = Result<Vec<RecordSpan>, &'static str>;

/// Reads the body of the batch at `pos` (whose header is valid) and checks it.
pub(crate) fn read_body(
    src: &dyn ReadAt,
    pos: u64,
    header: &BatchHeader,
) -> io::Result<(Vec<u8>, BodyCheck)> {
    let mut body = vec![0u8; header.batch_len as usize - BATCH_HEADER_BYTES];
    src.read_exact_at(&mut body, pos + BATCH_HEADER_BYTES as u64)?;
    let spans = decode_body(header, &body);
    Ok((body, spans))
}

/// Whether `bytes` are all zero. Compares against a block of zeros (a `memcmp`), not byte by
/// byte: recovery after a crash meets a megabyte of preallocated zeros per shard.
pub(crate) fn is_zeros(bytes: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Searches `[start, limit)` for the first fully valid batch whose first offset is at least
/// `offset_min` (so a stale or embedded batch cannot be taken for the continuation).
pub(crate) fn find_next_valid(
    src: &dyn ReadAt,
    start: u64,
    limit: u64,
    offset_min: u64,
) -> io::Result<Option<(u64, BatchHeader)>> {
    let mut chunk = vec![0u8; RESYNC_CHUNK_BYTES + BATCH_MAGIC.len() - 1];
    let mut chunk_start = start;
    while chunk_start < limit {
        // Holes (a preallocated tail) hold no batch: skip them unread.
        chunk_start = src.next_data(chunk_start)?.max(chunk_start);
        if chunk_start >= limit {
            break;
        }
        let chunk_len = (limit - chunk_start).min(chunk.len() as u64) as usize;
        src.read_exact_at(&mut chunk[..chunk_len], chunk_start)?;
        let scanned = chunk_len.min(RESYNC_CHUNK_BYTES);
        // No batch starts in zeros (the magic is not zero): the preallocated space past a
        // crashed log's last append is skipped a chunk at a time.
        if is_zeros(&chunk[..chunk_len]) {
            chunk_start += scanned as u64;
            continue;
        }
        for at in 0..scanned {
            if chunk_len - at < BATCH_MAGIC.len() || chunk[at..at + 4] != BATCH_MAGIC {
                continue;
            }
            let candidate = chunk_start + at as u64;
            if let HeaderAt::Valid(header) = read_header(src, candidate, limit)?
                && header.first_offset >= offset_min
                && read_body(src, candidate, &header)?.1.is_ok()
            {
                return Ok(Some((candidate, header)));
            }
        }
        chunk_start += scanned as u64;
    }
    Ok(None)
}

/// One entry of a sparse index: where a batch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub position: u64,
}

/// Adds index entries as batches are appended or scanned, one per `interval_bytes` of batches.
/// Append and recovery both use it, so a rebuilt index equals the one built while appending.
#[derive(Clone, Debug)]
pub(crate) struct IndexBuilder {
    pub interval_bytes: u64,
    pub bytes_since_entry: u64,
    pub entries: Vec<IndexEntry>,
}

impl IndexBuilder {
    pub fn new(interval_bytes: u64) -> Self {
        Self {
            interval_bytes: interval_bytes.max(1),
            bytes_since_entry: 0,
            entries: Vec::new(),
        }
    }

    /// Records a batch about to be written (or just scanned) at `position`.
    pub fn on_batch(&mut self, position: u64, header: &BatchHeader) {
        // Position 0 needs no entry: a scan of a segment starts there anyway.
        if position > 0 && self.bytes_since_entry >= self.interval_bytes {
            self.entries.push(IndexEntry {
                offset: header.first_offset,
                timestamp_ms: header.timestamp_ms,
                position,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(header.batch_len);
    }
}

/// What is known of a segment's contents without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub base: u64,
    pub size_bytes: u64,
    /// Offset of the first record (== `end_offset` if empty).
    pub first_offset: u64,
    /// One past the last record's offset (== `base` if empty).
    pub end_offset: u64,
    pub record_count: u64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
}

impl SegmentSummary {
    pub fn empty(base: u64) -> Self {
        Self {
            base,
            size_bytes: 0,
            first_offset: base,
            end_offset: base,
            record_count: 0,
            min_timestamp_ms: i64::MAX,
            max_timestamp_ms: i64::MIN,
        }
    }

    /// Accounts for one more batch written at the end of the segment.
    pub fn on_batch(&mut self, header: &BatchHeader) {
        if self.record_count == 0 {
            self.first_offset = header.first_offset;
            self.min_timestamp_ms = header.timestamp_ms;
        }
        self.record_count += u64::from(header.record_count);
        self.end_offset = header.end_offset();
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.timestamp_ms);
        self.size_bytes += u64::from(header.batch_len);
    }
}

/// Encodes a sparse-index side file.
pub(crate) fn encode_index(summary: &SegmentSummary, entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = vec![0u8; INDEX_HEADER_BYTES];
    for entry in entries {
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&entry.position.to_le_bytes());
    }
    let entries_crc = crc32c::crc32c(&out[INDEX_HEADER_BYTES..]);
    out[0..4].copy_from_slice(&INDEX_MAGIC);
    out[8..12].copy_from_slice(&entries_crc.to_le_bytes());
    out[12..16].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&summary.base.to_le_bytes());
    out[24..32].copy_from_slice(&summary.size_bytes.to_le_bytes());
    out[32..40].copy_from_slice(&summary.first_offset.to_le_bytes());
    out[40..48].copy_from_slice(&summary.end_offset.to_le_bytes());
    out[48..56].copy_from_slice(&summary.record_count.to_le_bytes());
    out[56..64].copy_from_slice(&summary.min_timestamp_ms.to_le_bytes());
    out[64..72].copy_from_slice(&summary.max_timestamp_ms.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[8..INDEX_HEADER_BYTES]);
    out[4..8].copy_from_slice(&header_crc.to_le_bytes());
    out
}

/// A checked sparse-index header: the summary, and what is needed to check the entries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexHeader {
    pub summary: SegmentSummary,
    pub entry_count: u32,
    pub entries_crc: u32,
}

/// Parses and checks a sparse-index header.
pub(crate) fn decode_index_header(bytes: &[u8]) -> Result<IndexHeader, &'static str> {
    if bytes.len() < INDEX_HEADER_BYTES {
        return Err("short index header");
    }
    if bytes[0..4] != INDEX_MAGIC {
        return Err("bad index magic");
    }
    if u32_at(bytes, 4) != crc32c::crc32c(&bytes[8..INDEX_HEADER_BYTES]) {
        return Err("index header checksum mismatch");
    }
    let summary = SegmentSummary {
        base: u64_at(bytes, 16),
        size_bytes: u64_at(bytes, 24),
        first_offset: u64_at(bytes, 32),
        end_offset: u64_at(bytes, 40),
        record_count: u64_at(bytes, 48),
        min_timestamp_ms: i64_at(bytes, 56),
        max_timestamp_ms: i64_at(bytes, 64),
    };
    if summary.end_offset < summary.first_offset || summary.first_offset < summary.base {
        return Err("index offsets out of order");
    }
    Ok(IndexHeader {
        summary,
        entry_count: u32_at(bytes, 12),
        entries_crc: u32_at(bytes, 8),
    })
}

/// Parses and checks the entries that follow a sparse-index header.
pub(crate) fn decode_index_entries(
    header: &IndexHeader,
    bytes: &[u8],
) -> Result<Vec<IndexEntry>, &'static str> {
    if bytes.len() as u64 != u64::from(header.entry_count) * INDEX_ENTRY_BYTES as u64 {
        return Err("index length does not match its entry count");
    }
    if crc32c::crc32c(bytes) != header.entries_crc {
        return Err("index entries checksum mismatch");
    }
    let entries: Vec<IndexEntry> = bytes
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|chunk| IndexEntry {
            offset: u64_at(chunk, 0),
            timestamp_ms: i64_at(chunk, 8),
            position: u64_at(chunk, 16),
        })
        .collect();
    let ordered = entries
        .windows(2)
        .all(|pair| pair[0].offset < pair[1].offset && pair[0].position < pair[1].position);
    let inside = entries
        .iter()
        .all(|entry| entry.position < header.summary.size_bytes);
    if !ordered || !inside {
        return Err("index entries out of order");
    }
    Ok(entries)
}

/// A stretch of a segment that fails its checks but is followed by valid batches (case C1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CorruptRange {
    pub position: u64,
    /// Offsets that may have been stored there: from the end of the previous valid batch ...
    pub offset_from: u64,
    /// ... to the first offset of the next valid batch.
    pub offset_to: u64,
    pub reason: &'static str,
}

/// The result of scanning a whole segment.
#[derive(Clone, Debug)]
pub(crate) struct ScanReport {
    pub summary: SegmentSummary,
    pub index: IndexBuilder,
    /// Where an invalid tail starts, followed by no valid batch (cases T1–T3), and why.
    pub torn_tail: Option<(u64, &'static str)>,
    pub corrupt: Vec<CorruptRange>,
}

/// Scans a segment from byte 0, checking every batch, and classifies what fails (see the
/// recovery section of `docs/storage-format.md`). `on_batch` sees every valid batch.
pub(crate) fn scan_segment(
    src: &dyn ReadAt,
    base: u64,
    index_interval_bytes: u64,
    on_batch: impl FnMut(u64, &BatchHeader, &[u8], &[RecordSpan]),
) -> io::Result<ScanReport> {
    let summary = SegmentSummary::empty(base);
    let index = IndexBuilder::new(index_interval_bytes);
    scan_segment_from(src, summary, index, on_batch)
}

/// [`scan_segment`], continuing after a prefix already known (its summary and index, from an
/// index snapshot): the scan starts at `summary.size_bytes`.
pub(crate) fn scan_segment_from(
    src: &dyn ReadAt,
    summary: SegmentSummary,
    index: IndexBuilder,
    mut on_batch: impl FnMut(u64, &BatchHeader, &[u8], &[RecordSpan]),
) -> io::Result<ScanReport> {
    let len = src.len()?;
    let mut pos = summary.size_bytes;
    let mut prev_end = summary.end_offset;
    let mut report = ScanReport {
        summary,
        index,
        torn_tail: None,
        corrupt: Vec::new(),
    };
    while pos < len {
        // Where to look for a valid continuation when the batch at `pos` is bad.
        let (resync_from, reason) = match read_header(src, pos, len)? {
            // T1: a partial header can only be the last thing in the file.
            HeaderAt::Short => {
                report.torn_tail = Some((pos, "partial batch header"));
                break;
            }
            // T2: the header made it to disk, the end of the batch did not. The length is
            // covered by the header checksum, so nothing valid can follow inside the file.
            HeaderAt::Overrun => {
                report.torn_tail = Some((pos, "batch extends past the end of the segment"));
                break;
            }
            HeaderAt::Invalid(reason) => (pos + 1, reason),
            HeaderAt::Valid(header) if header.first_offset < prev_end => {
                (pos + 1, "batch offsets go backwards")
            }
            HeaderAt::Valid(header) => match read_body(src, pos, &header)? {
                (body, Ok(spans)) => {
                    report.index.on_batch(pos, &header);
                    // The summary counts the bytes of valid batches only; recompute the size
                    // from the position so skipped corrupt stretches are included.
                    report.summary.on_batch(&header);
                    pos += u64::from(header.batch_len);
                    report.summary.size_bytes = pos;
                    prev_end = header.end_offset();
                    on_batch(pos - u64::from(header.batch_len), &header, &body, &spans);
                    continue;
                }
                // The header is trustworthy, so the next batch, if any, starts right after.
                (_, Err(reason)) => (pos + u64::from(header.batch_len), reason),
            },
        };
        match find_next_valid(src, resync_from, len, prev_end)? {
            // T3: garbage, zeros or a half-written batch up to the end of the file.
            None => {
                report.torn_tail = Some((pos, reason));
                break;
            }
            // C1: valid data follows, so this is damage to synced data, not a torn write.
            Some((next, header)) => {
                report.corrupt.push(CorruptRange {
                    position: pos,
                    offset_from: prev_end,
                    offset_to: header.first_offset,
                    reason,
                });
                pos = next;
            }
        }
    }
    Ok(report)
}

/// One batch decoded by [`decode_segment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Byte position of the batch in the segment.
    pub position: u64,
    /// Offset of the batch's first record.
    pub first_offset: u64,
    /// Timestamp shared by the batch's records.
    pub timestamp_ms: i64,
    /// The records, in offset order.
    pub records: Vec<StoredRecord>,
}

/// How a stretch of a segment fails its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Invalid bytes up to the end, as a crash during an append leaves them (recovery truncates
    /// these in the active segment).
    TornTail,
    /// Invalid bytes followed by valid batches: damage to data that had been synced.
    Corrupt,
}

/// A stretch of a segment that failed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentProblem {
    /// Byte position where the invalid stretch starts.
    pub position: u64,
    /// Torn tail or corruption.
    pub kind: ProblemKind,
    /// Which check failed.
    pub reason: &'static str,
}

/// The contents of a segment as [`decode_segment`] found them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedSegment {
    /// Every valid batch, in file order.
    pub batches: Vec<DecodedBatch>,
    /// Every stretch that failed its checks, in file order.
    pub problems: Vec<SegmentProblem>,
}

/// Parses the bytes of a segment file into batches and problems, exactly as recovery judges
/// them. A pure function that never panics, whatever the input (a fuzzing entry point).
pub fn decode_segment(bytes: &[u8]) -> DecodedSegment {
    let mut decoded = DecodedSegment::default();
    let shared = Bytes::copy_from_slice(bytes);
    let scanned = scan_segment(
        &SliceSource(bytes),
        0,
        u64::MAX,
        |position, header, _body, spans| {
            let body_start = position as usize + BATCH_HEADER_BYTES;
            let records = spans
                .iter()
                .map(|span| StoredRecord {
                    offset: span.offset,
                    timestamp_ms: header.timestamp_ms,
                    key: shared.slice(body_start + span.key.start..body_start + span.key.end),
                    value: shared.slice(body_start + span.value.start..body_start + span.value.end),
                    encrypted: false,
                })
                .collect();
            decoded.batches.push(DecodedBatch {
                position,
                first_offset: header.first_offset,
                timestamp_ms: header.timestamp_ms,
                records,
            });
        },
    );
    // A slice never fails a read inside its own length, so the scan cannot fail; still, report
    // rather than panic if it ever did.
    let report = match scanned {
        Ok(report) => report,
        Err(_) => {
            decoded.problems.push(SegmentProblem {
                position: 0,
                kind: ProblemKind::Corrupt,
                reason: "read error",
            });
            return decoded;
        }
    };
    for range in report.corrupt {
        decoded.problems.push(SegmentProblem {
            position: range.position,
            kind: ProblemKind::Corrupt,
            reason: range.reason,
        });
    }
    if let Some((position, reason)) = report.torn_tail {
        decoded.problems.push(SegmentProblem {
            position,
            kind: ProblemKind::TornTail,
            reason,
        });
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_offset: u64, timestamp_ms: i64, values: &[&[u8]]) -> Vec<u8> {
        let records: Vec<NewRecord<'_>> = values
            .iter()
            .map(|value| NewRecord { key: b"k", value })
            .collect();
        let mut buf = Vec::new();
        encode_batch(&mut buf, first_offset, timestamp_ms, &records, None).unwrap();
        buf
    }

    #[test]
    fn batch_round_trips() {
        let bytes = batch(7, 42, &[b"a", b"", b"ccc"]);
        let decoded = decode_segment(&bytes);
        assert!(decoded.problems.is_empty());
        assert_eq!(decoded.batches.len(), 1);
        let records = &decoded.batches[0].records;
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        assert_eq!(&records[2].value[..], b"ccc");
        assert_eq!(&records[1].key[..], b"k");
        assert!(records.iter().all(|r| r.timestamp_ms == 42));
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let mut bytes = batch(0, 1, &[b"first"]);
        let first_len = bytes.len();
        bytes.extend(batch(1, 2, &[b"second", b"third"]));
        for len in first_len + 1..bytes.len() {
            let decoded = decode_segment(&bytes[..len]);
            assert_eq!(decoded.batches.len(), 1, "len {len}");
            assert_eq!(decoded.problems.len(), 1);
            assert_eq!(decoded.problems[0].kind, ProblemKind::TornTail);
            assert_eq!(decoded.problems[0].position, first_len as u64);
        }
    }

    #[test]
    fn every_bit_flip_in_a_middle_batch_is_corruption() {
        let first = batch(0, 1, &[b"first"]);
        let middle = batch(1, 2, &[b"middle"]);
        let last = batch(2, 3, &[b"last"]);
        let bytes = [first.clone(), middle.clone(), last].concat();
        for bit in 0..middle.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[first.len() + bit / 8] ^= 1 << (bit % 8);
            let decoded = decode_segment(&flipped);
            let offsets: Vec<u64> = decoded.batches.iter().map(|b| b.first_offset).collect();
            assert_eq!(offsets, vec![0, 2], "bit {bit}");
            assert_eq!(decoded.problems.len(), 1);
            assert_eq!(decoded.problems[0].kind, ProblemKind::Corrupt);
            assert_eq!(decoded.problems[0].position, first.len() as u64);
        }
    }

    #[test]
    fn zeros_are_skipped_but_a_batch_after_them_is_found() {
        let first = batch(0, 1, &[b"first"]);
        let last = batch(1, 2, &[b"last"]);
        // The search starts one byte into the zeros; runs end before, across and after the
        // boundaries of its chunks.
        let chunk = RESYNC_CHUNK_BYTES;
        for zeros in [
            1,
            5,
            chunk - 2,
            chunk,
            chunk + 1,
            chunk + 2,
            chunk + 3,
            3 * chunk + 7,
        ] {
            let bytes = [first.clone(), vec![0; zeros], last.clone()].concat();
            let decoded = decode_segment(&bytes);
            let offsets: Vec<u64> = decoded.batches.iter().map(|b| b.first_offset).collect();
            assert_eq!(offsets, vec![0, 1], "{zeros} zeros");
            assert_eq!(decoded.problems.len(), 1);
            assert_eq!(decoded.problems[0].kind, ProblemKind::Corrupt);
            assert_eq!(decoded.problems[0].position, first.len() as u64);

            let bytes = [first.clone(), vec![0; zeros]].concat();
            let decoded = decode_segment(&bytes);
            assert_eq!(decoded.batches.len(), 1, "{zeros} zeros");
            assert_eq!(decoded.problems.len(), 1);
            assert_eq!(decoded.problems[0].kind, ProblemKind::TornTail);
            assert_eq!(decoded.problems[0].position, first.len() as u64);
        }
        assert!(is_zeros(&[]) && is_zeros(&[0; 5000]));
        let mut bytes = [0; 5000];
        bytes[4999] = 1;
        assert!(!is_zeros(&bytes));
    }

    #[test]
    fn index_file_round_trips_and_detects_damage() {
        let mut summary = SegmentSummary::empty(10);
        summary.size_bytes = 1000;
        let entries = vec![
            IndexEntry {
                offset: 12,
                timestamp_ms: 5,
                position: 100,
            },
            IndexEntry {
                offset: 20,
                timestamp_ms: 6,
                position: 500,
            },
        ];
        let bytes = encode_index(&summary, &entries);
        let header = decode_index_header(&bytes).ok();
        let header = header.filter(|h| h.summary == summary);
        assert!(header.is_some());
        if let Some(header) = header {
            let decoded = decode_index_entries(&header, &bytes[INDEX_HEADER_BYTES..]);
            assert_eq!(decoded, Ok(entries));
            let mut damaged = bytes.clone();
            damaged[INDEX_HEADER_BYTES + 3] ^= 4;
            assert!(decode_index_entries(&header, &damaged[INDEX_HEADER_BYTES..]).is_err());
        }
        let mut damaged = bytes;
        damaged[20] ^= 1;
        assert!(decode_index_header(&damaged).is_err());
    }

    proptest::proptest! {
        #[test]
        fn read_ahead_reads_what_the_source_holds(
            reads in proptest::collection::vec((0u64..200_000, 0usize..70_000), 1..40),
            limit in 0u64..200_000,
        ) {
            let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let direct = SliceSource(&bytes[..limit as usize]);
            let ahead = ReadAhead::new(&direct, limit);
            for (pos, len) in reads {
                let mut want = vec![0u8; len];
                let mut got = vec![0u8; len];
                let expected = direct.read_exact_at(&mut want, pos).is_ok();
                proptest::prop_assert_eq!(ahead.read_exact_at(&mut got, pos).is_ok(), expected);
                if expected {
                    proptest::prop_assert_eq!(&got, &want);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            let _ = decode_segment(&bytes);
        }

        #[test]
        fn mutated_segments_never_panic(
            seed in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
            cut in 0usize..400,
        ) {
            let mut bytes = [batch(0, 1, &[b"aaaa", b"bb"]), batch(2, 1, &[b"cccccc"]),
                batch(3, 2, &[b"d"])].concat();
            for (at, value) in seed {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            bytes.truncate(cut.min(bytes.len()));
            let decoded = decode_segment(&bytes);
            for pair in decoded.batches.windows(2) {
                proptest::prop_assert!(pair[0].position < pair[1].position);
            }
        }
    }
}
