//! Writes the frozen "store-v1" fixture: a small data dir in the segment-per-log format of
//! `docs/storage-format.md` (before the store-wide journal), and `expected.json`, everything a
//! later release must read back from it. `crates/log/tests/upgrade.rs` opens the committed
//! output (`crates/log/tests/fixtures/store-v1/`) with the current code.
//!
//! ```text
//! cargo run -p rivulet-log --example make_store_v1 -- OUT   # writes OUT/store/, OUT/expected.json
//! ```
//!
//! Only this format's writer can make the fixture, so after the format changes it is
//! regenerated (if ever) from a checkout of the last commit that had this format. The output is
//! deterministic but for `meta.redb`'s internal layout: timestamps are fixed, the log never
//! reads the clock.
//!
//! What it holds, in two runs of the store:
//! - run 1 (then a clean stop): `a/0` with sealed segments and an active one (a gap in its
//!   offsets, a clamped timestamp, a roll by age, an empty key, an empty value); `e/0` with a
//!   plain batch, then batches encrypted with data key 1; `a/1` with a few batches; `empty/0`
//!   with nothing; metadata keys (one put, then deleted).
//! - run 2 (then a "kill": the store is leaked, nothing is cut or closed): more of `e/0` with
//!   data key 2 (a fresh key per run, like the engine), one more batch of `a/1`, then a last
//!   batch of `a/1` whose second half is overwritten with zeros by hand afterwards, as when a
//!   crash tears it; the active segments of `a/1` and `e/0` keep their preallocated zeros.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rivulet_log::{
    DataKey, Encryption, FileBackend, Keyring, Log, MetaOp, NewRecord, Store, StoreConfig,
};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z: every timestamp is an offset from it.
const T0_MS: i64 = 1_767_225_600_000;
/// Small segments, so a few batches make several sealed segments.
const SEGMENT_BYTES_MAX_RUN_1: u64 = 512;
/// Larger in run 2, so the killed store leaves a few KiB of preallocated zeros (the
/// preallocation stops at `segment_bytes_max`).
const SEGMENT_BYTES_MAX_RUN_2: u64 = 4096;
const INDEX_INTERVAL_BYTES: u64 = 128;
const SEGMENT_AGE_MAX_MS: i64 = 3_600_000;
/// The nonce prefix of `e/0` (the engine uses the shard's index).
const NONCE_PREFIX: u32 = 2;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn config(segment_bytes_max: u64) -> StoreConfig {
    StoreConfig {
        segment_bytes_max,
        index_interval_bytes: INDEX_INTERVAL_BYTES,
        segment_age_max_ms: SEGMENT_AGE_MAX_MS,
        sync_threads: 1,
        ..StoreConfig::default()
    }
}

/// Test data key `id`: 32 fixed bytes.
fn key_bytes(id: u32) -> [u8; 32] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(id as u8 * 31))
}

struct Keys(BTreeMap<u32, Arc<DataKey>>);

impl Keyring for Keys {
    fn data_key(&self, id: u32) -> Option<Arc<DataKey>> {
        self.0.get(&id).cloned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic binary value bytes.
fn value(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(131) ^ i.wrapping_mul(29)) as u8)
        .collect()
}

/// One batch's records: (key, value).
type Batch = Vec<(Vec<u8>, Vec<u8>)>;

/// What every log must hold, as JSON records in offset order.
#[derive(Default)]
struct Expected {
    logs: BTreeMap<String, Vec<Value>>,
}

impl Expected {
    /// Appends `batch` as one batch, waits until it is durable and records what must be read
    /// back: the offsets and timestamp the log assigned.
    fn append(
        &mut self,
        log: &Log,
        batch: &Batch,
        timestamp_ms: i64,
        min_first_offset: u64,
        seal: Option<Encryption<'_>>,
    ) -> Result<()> {
        let (first_offset, timestamp_ms) =
            append_durable(log, batch, timestamp_ms, min_first_offset, seal)?;
        let records = self.logs.entry(log.id().to_string()).or_default();
        for (i, (key, value)) in batch.iter().enumerate() {
            records.push(json!({
                "offset": first_offset + i as u64,
                "timestamp_ms": timestamp_ms,
                "key_hex": hex(key),
                "value_hex": hex(value),
                "encrypted": seal.is_some(),
            }));
        }
        Ok(())
    }
}

/// Appends one batch and waits until it is durable: (first offset, stored timestamp).
fn append_durable(
    log: &Log,
    batch: &Batch,
    timestamp_ms: i64,
    min_first_offset: u64,
    seal: Option<Encryption<'_>>,
) -> Result<(u64, i64)> {
    let records: Vec<NewRecord<'_>> = batch
        .iter()
        .map(|(key, value)| NewRecord { key, value })
        .collect();
    let appended = log.append_encrypted(&records, timestamp_ms, min_first_offset, seal)?;
    let stored = (appended.first_offset, appended.timestamp_ms);
    appended.durable.wait_blocking()?;
    Ok(stored)
}

fn open(root: &Path, segment_bytes_max: u64, keys: &Arc<Keys>) -> Result<Arc<Store>> {
    let store = Store::open(Arc::new(FileBackend::new(root)?), config(segment_bytes_max))?;
    store.set_keyring(keys.clone());
    Ok(store)
}

/// `count` records of batch `seed`, keys `<prefix>-<seed>-<i>`.
fn batch(prefix: &str, seed: usize, count: usize, value_len: usize) -> Batch {
    (0..count)
        .map(|i| {
            let key = format!("{prefix}-{seed}-{i}").into_bytes();
            (
                key,
                value(seed * 10 + i, value_len + (seed * 7 + i * 13) % 50),
            )
        })
        .collect()
}

/// Run 1: everything but the last batches of `e/0` and `a/1`; a clean stop.
fn run_1(root: &Path, keys: &Arc<Keys>, expected: &mut Expected) -> Result<()> {
    let store = open(root, SEGMENT_BYTES_MAX_RUN_1, keys)?;
    let a0 = store.log("a/0")?;
    for b in 0..16usize {
        let mut records = batch("pk", b, 1 + b % 3, 20);
        let mut timestamp_ms = T0_MS + b as i64 * 1000;
        let mut min_first_offset = 0;
        match b {
            // An empty value and an empty key.
            2 => records[0].1.clear(),
            5 => records[0].0.clear(),
            // Earlier than the previous batch: stored clamped to its timestamp.
            6 => timestamp_ms = T0_MS + 4000,
            // The caller skips ahead: offsets have a gap of 3.
            9 => min_first_offset = a0.next_offset().expect("next offset") + 3,
            _ => {}
        }
        if b >= 11 {
            // Two hours later: the active segment rolls by age, not size.
            timestamp_ms += 2 * SEGMENT_AGE_MAX_MS;
        }
        expected.append(&a0, &records, timestamp_ms, min_first_offset, None)?;
    }

    let e0 = store.log("e/0")?;
    let key_1 = keys.0[&1].clone();
    let seal_1 = Encryption {
        key: &key_1,
        nonce_prefix: NONCE_PREFIX,
    };
    // A plain batch first: a stream's records before StartStreamEncryption.
    expected.append(&e0, &batch("plain", 0, 2, 10), T0_MS + 100_000, 0, None)?;
    for b in 1..7usize {
        let timestamp_ms = T0_MS + 100_000 + b as i64 * 1000;
        expected.append(
            &e0,
            &batch("secret", b, 2, 40),
            timestamp_ms,
            0,
            Some(seal_1),
        )?;
    }

    let a1 = store.log("a/1")?;
    for b in 0..3usize {
        let timestamp_ms = T0_MS + 200_000 + b as i64 * 1000;
        expected.append(&a1, &batch("torn-log", b, 2, 30), timestamp_ms, 0, None)?;
    }

    store.log("empty/0")?;
    expected.logs.entry("empty/0".to_string()).or_default();

    let put = |key: &str, value: &[u8]| MetaOp::Put {
        key: key.to_string(),
        value: value.to_vec(),
    };
    store.meta().commit(&[
        put("stream/a", br#"{"shards":2}"#),
        put("datakey/1", &value(99, 40)),
        put("counter/x", &42u64.to_le_bytes()),
        put("gone/1", b"deleted by the next commit"),
    ])?;
    store.meta().commit(&[
        MetaOp::Delete {
            key: "gone/1".to_string(),
        },
        put("stream/a", br#"{"shards":2,"version":2}"#),
    ])?;
    store.shutdown();
    Ok(())
}

/// Run 2: the last batches of `e/0` (data key 2) and `a/1`, then a kill: the store is leaked,
/// so no preallocated zeros are cut. Returns the torn batch's log, first offset, record count
/// and timestamp.
fn run_2(root: &Path, keys: &Arc<Keys>, expected: &mut Expected) -> Result<(u64, usize, i64)> {
    let store = open(root, SEGMENT_BYTES_MAX_RUN_2, keys)?;
    let e0 = store.log("e/0")?;
    let key_2 = keys.0[&2].clone();
    let seal_2 = Encryption {
        key: &key_2,
        nonce_prefix: NONCE_PREFIX,
    };
    for b in 7..9usize {
        let timestamp_ms = T0_MS + 300_000 + b as i64 * 1000;
        expected.append(
            &e0,
            &batch("secret", b, 2, 40),
            timestamp_ms,
            0,
            Some(seal_2),
        )?;
    }
    let a1 = store.log("a/1")?;
    expected.append(&a1, &batch("torn-log", 3, 2, 30), T0_MS + 310_000, 0, None)?;
    // Later than every retained batch, so a reopen that forgot it accepts an earlier timestamp.
    let torn = batch("torn-log", 4, 3, 100);
    let (first_offset, timestamp_ms) = append_durable(&a1, &torn, T0_MS + 320_000, 0, None)?;
    // A kill: no shutdown, no drop; the process exits with the store open.
    std::mem::forget(store);
    Ok((first_offset, torn.len(), timestamp_ms))
}

/// Overwrites the second half of the body of the last batch of `a/1`'s active segment with
/// zeros, as a crash that persisted the file's length and only some of the batch's sectors
/// leaves it. Returns the segment's path (relative to the root) and the batch's position.
fn tear_last_batch(root: &Path) -> Result<(String, u64)> {
    use std::os::unix::fs::FileExt;
    let dir = root.join("logs").join("a~1");
    let mut segments: Vec<String> = std::fs::read_dir(&dir)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>>>()?;
    segments.retain(|name| name.ends_with(".seg"));
    segments.sort();
    let name = segments.last().ok_or("a/1 has no segment")?;
    let path = dir.join(name);
    let bytes = std::fs::read(&path)?;
    let decoded = rivulet_log::decode_segment(&bytes);
    let last = decoded
        .batches
        .last()
        .ok_or("a/1's active segment is empty")?;
    let position = last.position;
    let at = position as usize;
    let batch_len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into()?) as u64;
    let body_len = batch_len - 40;
    let zeros_from = position + 40 + body_len / 2;
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.write_all_at(
        &vec![0u8; (batch_len - (zeros_from - position)) as usize],
        zeros_from,
    )?;
    file.sync_all()?;
    let torn = rivulet_log::decode_segment(&std::fs::read(&path)?);
    if torn.batches.len() + 1 != decoded.batches.len()
        || torn.problems.first().map(|p| p.position) != Some(position)
    {
        return Err("tearing the last batch of a/1 did not leave a torn tail".into());
    }
    Ok((format!("logs/a~1/{name}"), position))
}

/// Every file under `dir` with its size, relative paths sorted.
fn files(dir: &Path, prefix: &str, out: &mut BTreeMap<String, u64>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            files(&entry.path(), &format!("{name}/"), out)?;
        } else {
            out.insert(name, entry.metadata()?.len());
        }
    }
    Ok(())
}

fn make(root: &Path, expected_path: &Path) -> Result<()> {
    let keys = Arc::new(Keys(
        [1, 2]
            .into_iter()
            .map(|id| Ok((id, Arc::new(DataKey::new(id, &key_bytes(id))?))))
            .collect::<Result<_>>()?,
    ));
    let mut expected = Expected::default();
    run_1(root, &keys, &mut expected)?;
    let (torn_first_offset, torn_record_count, torn_timestamp_ms) =
        run_2(root, &keys, &mut expected)?;
    let (torn_segment, torn_position) = tear_last_batch(root)?;

    let logs: serde_json::Map<String, Value> = expected
        .logs
        .iter()
        .map(|(id, records)| {
            let next_offset = match id.as_str() {
                "a/1" => torn_first_offset,
                _ => records
                    .last()
                    .map_or(0, |r| r["offset"].as_u64().unwrap_or(0) + 1),
            };
            let last_timestamp_ms = records.last().map(|r| r["timestamp_ms"].clone());
            let log = json!({
                "next_offset": next_offset,
                "last_timestamp_ms": last_timestamp_ms,
                "records": records,
            });
            (id.clone(), log)
        })
        .collect();
    let mut sizes = BTreeMap::new();
    files(root, "", &mut sizes)?;
    let data_keys: Vec<Value> = [1u32, 2]
        .into_iter()
        .map(|id| json!({"id": id, "key_hex": hex(&key_bytes(id))}))
        .collect();
    let document = json!({
        "about": "The store-v1 fixture: a data dir in the segment-per-log format (before the \
                  store-wide journal). Every log's records, in offset order, must read back \
                  exactly; `torn` names the batch recovery must cut; `meta` the metadata keys \
                  (values in hex), `meta_deleted` keys that must be absent. `files` is for \
                  reference only: the layout as written.",
        "made_by": "cargo run -p rivulet-log --example make_store_v1 -- OUT",
        "config": {
            "segment_bytes_max": SEGMENT_BYTES_MAX_RUN_1,
            "segment_bytes_max_run_2": SEGMENT_BYTES_MAX_RUN_2,
            "index_interval_bytes": INDEX_INTERVAL_BYTES,
            "segment_age_max_ms": SEGMENT_AGE_MAX_MS,
        },
        "data_keys": data_keys,
        "nonce_prefix": NONCE_PREFIX,
        "logs": logs,
        "torn": {
            "log": "a/1",
            "first_offset": torn_first_offset,
            "record_count": torn_record_count,
            "timestamp_ms": torn_timestamp_ms,
            "segment": torn_segment,
            "position": torn_position,
        },
        "meta": {
            "stream/a": hex(br#"{"shards":2,"version":2}"#),
            "datakey/1": hex(&value(99, 40)),
            "counter/x": hex(&42u64.to_le_bytes()),
        },
        "meta_deleted": ["gone/1"],
        "files": sizes,
    });
    std::fs::write(
        expected_path,
        serde_json::to_string_pretty(&document)? + "\n",
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: make_store_v1 OUT_DIR")?
        .into();
    if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
        return Err(format!("{} exists and is not empty", out.display()).into());
    }
    let root = out.join("store");
    std::fs::create_dir_all(&root)?;
    make(&root, &out.join("expected.json"))?;
    println!("wrote {}", out.display());
    Ok(())
}
