//! Every prefix of the synced writes recovers: a workload runs with the crash model recording
//! the durable image after each sync, and every image is reopened and checked. The workload
//! rolls segments, fills journal files, checkpoints and retires them, trims a log, removes a log
//! and creates one of the same id, and appends encrypted batches; each image must hold, per log,
//! a prefix of what was appended (whole batches, in order, intact; from where a trim left it),
//! never less than what was acknowledged before it and nothing appended after it, and must
//! recover the same way twice.
//!
//! The workload is deterministic: one thread appends and waits for each append to be durable.
//! The checkpointer has a thread of its own, so where its syncs fall among the appends' (and
//! so the exact list of images) may vary from run to run; every check holds whatever it is.

use std::sync::Arc;

use rivulet_log::{
    Backend, CrashBackend, DataKey, Encryption, Keyring, MetaOp, NewRecord, Store, StoreConfig,
    StoredRecord,
};

use crate::util::{journal_files, small_config, spare_journal_files};

/// The logs of the workload; `GONE` (last) is removed halfway and created again.
const LOG_IDS: [&str; 4] = ["p/0", "p/1", "enc", GONE];
const GONE: &str = "gone";
/// Appends to the first `GONE`, the last ones before its removal.
const GONE_LAST_APPENDS: usize = 6;
/// Trimmed after the first phase, of its segments older than the phase's middle.
const TRIMMED: &str = "p/1";
/// Appended to encrypted.
const ENCRYPTED: &str = "enc";
const KEY_ID: u32 = 5;
/// Appends before and after the removal of `GONE`.
const APPENDS_PER_PHASE: usize = 90;
/// A metadata commit after every this many appends.
const META_EVERY: usize = 30;

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

struct Keys(Arc<DataKey>);

impl Keyring for Keys {
    fn data_key(&self, id: u32) -> Option<Arc<DataKey>> {
        (id == self.0.id()).then(|| Arc::clone(&self.0))
    }
}

fn data_key() -> Arc<DataKey> {
    Arc::new(DataKey::new(KEY_ID, &[7u8; 32]).expect("key"))
}

/// Where an event falls among the durable images: the number recorded when it happened.
type ImageCount = usize;

/// One append, with where it falls among the images.
struct Append {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    timestamp_ms: i64,
    /// Images recorded before the append was made: none of them can hold it.
    images_before: ImageCount,
    /// Images recorded once its `Durable` completed. The sync that made it durable recorded its
    /// image before returning, so that image's index is below this: every image from index
    /// `images_acked - 1` on must hold the append. (The bound is tight: usually that sync is
    /// the last one before the acknowledgement, so image `images_acked - 2` lacks the append.)
    images_acked: ImageCount,
}

/// One life of a log id, from its creation to its removal.
struct Incarnation {
    id: &'static str,
    /// Images recorded before the log was created: none of them holds it.
    created: ImageCount,
    /// Images recorded before `remove_log` was called and once it returned.
    removed: Option<(ImageCount, ImageCount)>,
    /// Images recorded before `trim_older_than` was called and once it returned, and the
    /// log's first offset after it.
    trimmed: Option<(ImageCount, ImageCount, u64)>,
    appends: Vec<Append>,
}

/// A metadata commit, with where it falls among the images.
struct MetaCommit {
    key: String,
    images_before: ImageCount,
    images_acked: ImageCount,
}

/// What the workload did.
struct History {
    incarnations: Vec<Incarnation>,
    meta: Vec<MetaCommit>,
}

/// Which incarnation of `id` image `k` may hold, and whether it must hold its acknowledged
/// appends; `None`: the log must be absent (empty).
fn expected<'h>(history: &'h History, id: &str, k: usize) -> Option<(&'h Incarnation, bool)> {
    // The latest incarnation created before the image was taken; an earlier one only if the
    // later one did not exist yet.
    for incarnation in history.incarnations.iter().rev() {
        if incarnation.id != id || incarnation.created > k {
            continue;
        }
        return match incarnation.removed {
            // `remove_log` returned: the rename that commits it was synced at image `done - 1`
            // at the latest.
            Some((_, done)) if k + 1 >= done => None,
            // A removal in flight: once its journal entry is synced, the log's journal entries
            // are void and only what its segments had synced remains (acknowledged appends of
            // a log being removed may be lost), but it is still a prefix.
            Some((start, _)) if k >= start => Some((incarnation, false)),
            _ => Some((incarnation, true)),
        };
    }
    None
}

fn value_for(id: &str, generation: usize, n: usize, j: usize, len: usize) -> Vec<u8> {
    let mut value = format!("{id}#{generation}#{n}#{j}#").into_bytes();
    value.extend((0..len).map(|i| (n * 31 + j * 7 + i) as u8));
    value
}

fn append(
    backend: &CrashBackend,
    store: &Store,
    incarnation: &mut Incarnation,
    generation: usize,
    n: usize,
    rng: &mut Rng,
    key: &DataKey,
) {
    let log = store.log(incarnation.id).expect("log");
    let count = 1 + rng.below(3) as usize;
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
        .map(|j| {
            let len = rng.below(120) as usize;
            let key = format!("k{n}-{j}").into_bytes();
            (key, value_for(incarnation.id, generation, n, j, len))
        })
        .collect();
    let new: Vec<NewRecord<'_>> = records
        .iter()
        .map(|(key, value)| NewRecord { key, value })
        .collect();
    let seal = (incarnation.id == ENCRYPTED).then_some(Encryption {
        key,
        nonce_prefix: 1,
    });
    let images_before = backend.durable_images_recorded();
    let appended = log
        .append_encrypted(&new, n as i64 * 10, 0, seal)
        .expect("append");
    let offset: usize = incarnation.appends.iter().map(|a| a.records.len()).sum();
    assert_eq!(appended.first_offset, offset as u64);
    appended.durable.wait_blocking().expect("durable");
    let images_acked = backend.durable_images_recorded();
    incarnation.appends.push(Append {
        records,
        timestamp_ms: appended.timestamp_ms,
        images_before,
        images_acked,
    });
}

fn meta_commit(backend: &CrashBackend, store: &Store, history: &mut History) {
    let key = format!("m/{}", history.meta.len());
    let ops = [
        MetaOp::Put {
            key: key.clone(),
            value: key.clone().into_bytes(),
        },
        MetaOp::Put {
            key: format!("{key}/twin"),
            value: key.clone().into_bytes(),
        },
    ];
    let images_before = backend.durable_images_recorded();
    store.meta().commit(&ops).expect("meta commit");
    history.meta.push(MetaCommit {
        key,
        images_before,
        images_acked: backend.durable_images_recorded(),
    });
}

/// Runs the workload on `backend` (recording), through a clean stop.
fn run_workload(backend: &CrashBackend, config: StoreConfig, key: &Arc<DataKey>) -> History {
    let mut history = History {
        incarnations: Vec::new(),
        meta: Vec::new(),
    };
    let store = Store::open(Arc::new(backend.clone()), config).expect("open");
    store.set_keyring(Arc::new(Keys(Arc::clone(key))));
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for generation in 0..2 {
        if generation == 1 {
            // The first incarnation of `GONE` goes, with journal entries not checkpointed yet.
            let gone = history
                .incarnations
                .iter_mut()
                .find(|i| i.id == GONE && i.removed.is_none())
                .expect("the first GONE");
            let start = backend.durable_images_recorded();
            store.remove_log(GONE).expect("remove");
            gone.removed = Some((start, backend.durable_images_recorded()));
        }
        for id in LOG_IDS {
            if generation == 0 || id == GONE {
                let created = backend.durable_images_recorded();
                store.log(id).expect("create");
                history.incarnations.push(Incarnation {
                    id,
                    created,
                    removed: None,
                    trimmed: None,
                    appends: Vec::new(),
                });
            }
        }
        if generation == 1 {
            let trimmed = history
                .incarnations
                .iter_mut()
                .find(|i| i.id == TRIMMED)
                .expect("TRIMMED");
            let log = store.log(TRIMMED).expect("log");
            let start = backend.durable_images_recorded();
            let dropped = log
                .trim_older_than(APPENDS_PER_PHASE as i64 / 2 * 10)
                .expect("trim");
            let done = backend.durable_images_recorded();
            assert!(dropped > 0 && log.start_offset().expect("start_offset") == dropped);
            trimmed.trimmed = Some((start, done, dropped));
        }
        for n in 0..APPENDS_PER_PHASE {
            // `GONE`'s first incarnation takes only the last appends before its removal, so
            // that the journal still holds all of them (from position 0 of its first segment)
            // when the next incarnation's first segment, at the same path, is created.
            let id = match (generation, APPENDS_PER_PHASE - n <= GONE_LAST_APPENDS) {
                (0, true) => GONE,
                (0, false) => LOG_IDS[rng.below(LOG_IDS.len() as u64 - 1) as usize],
                _ => LOG_IDS[rng.below(LOG_IDS.len() as u64) as usize],
            };
            let incarnation = history
                .incarnations
                .iter_mut()
                .rev()
                .find(|i| i.id == id)
                .expect("incarnation");
            let n = generation * APPENDS_PER_PHASE + n;
            append(backend, &store, incarnation, generation, n, &mut rng, key);
            if n % META_EVERY == META_EVERY - 1 {
                meta_commit(backend, &store, &mut history);
            }
        }
    }
    store.shutdown();
    history
}

/// Every log's records, in `LOG_IDS` order (in one read each: `read_all`'s small pages would
/// cost most of the test's time here).
fn contents(store: &Store, what: &str) -> Vec<Vec<StoredRecord>> {
    LOG_IDS
        .iter()
        .map(|id| {
            let log = store.log(id).expect("log");
            let batch = log.read(0, usize::MAX, usize::MAX).expect("read");
            assert_eq!(
                batch.next_offset,
                log.end_offset().expect("end_offset"),
                "{what}: {id}: read it all"
            );
            batch.records
        })
        .collect()
}

/// Where `records` end: the offset the next append takes.
fn end_of(records: &[StoredRecord]) -> u64 {
    records.last().map_or(0, |record| record.offset + 1)
}

/// Checks the logs recovered from image `k` against the history.
fn check_logs(history: &History, store: &Store, k: usize, recovered: &[Vec<StoredRecord>]) {
    for (id, records) in LOG_IDS.iter().zip(recovered) {
        let log = store.log(id).expect("log");
        let start = records.first().map_or(0, |record| record.offset);
        assert_eq!(
            log.start_offset().expect("start_offset"),
            start,
            "image {k}: {id}"
        );
        assert_eq!(
            log.next_offset().expect("next_offset"),
            end_of(records),
            "image {k}: {id}"
        );
        assert_eq!(
            log.end_offset().expect("end_offset"),
            end_of(records),
            "image {k}: {id}"
        );
        let Some((incarnation, acks_bound)) = expected(history, id, k) else {
            assert!(
                records.is_empty(),
                "image {k}: {id} was removed: {records:?}"
            );
            continue;
        };
        // From offset 0, or from where a trim that may have reached the disk left the log.
        let start_expected = match incarnation.trimmed {
            Some((_, done, to)) if k + 1 >= done => Some(to),
            Some((before, _, _)) if k >= before => None,
            _ => Some(0),
        };
        if let Some(expected) = start_expected {
            assert_eq!(start, expected, "image {k}: {id} starts at {start}");
        }
        // Whole batches, in order, each record exactly as appended.
        let mut batches = 0usize;
        let mut offset = 0u64;
        while offset < start {
            let Some(append) = incarnation.appends.get(batches) else {
                panic!("image {k}: {id} starts at {start}, past what was appended");
            };
            offset += append.records.len() as u64;
            batches += 1;
        }
        assert_eq!(offset, start, "image {k}: {id} starts inside a batch");
        let mut at = 0usize;
        while at < records.len() {
            let Some(append) = incarnation.appends.get(batches) else {
                panic!("image {k}: {id} has records past what was appended: {records:?}");
            };
            for (j, (key, value)) in append.records.iter().enumerate() {
                let Some(record) = records.get(at + j) else {
                    panic!(
                        "image {k}: {id}: torn batch at offset {}",
                        start + at as u64
                    );
                };
                assert_eq!(
                    record.offset,
                    start + (at + j) as u64,
                    "image {k}: {id}: gap"
                );
                assert_eq!(
                    (&record.key[..], &record.value[..]),
                    (&key[..], &value[..]),
                    "image {k}: {id} offset {}",
                    record.offset
                );
                assert_eq!(record.timestamp_ms, append.timestamp_ms, "image {k}: {id}");
                assert_eq!(record.encrypted, *id == ENCRYPTED, "image {k}: {id}");
            }
            at += append.records.len();
            batches += 1;
        }
        // Nothing appended after the image was taken, everything acknowledged before it.
        let started = incarnation
            .appends
            .iter()
            .filter(|a| a.images_before <= k)
            .count();
        assert!(
            batches <= started,
            "image {k}: {id} holds {batches} batches but only {started} were appended before it"
        );
        if acks_bound {
            let acked = incarnation
                .appends
                .iter()
                .filter(|a| a.images_acked <= k + 1)
                .count();
            assert!(
                batches >= acked,
                "image {k}: {id} holds {batches} batches but {acked} were acknowledged before it"
            );
        }
    }
}

fn check_meta(history: &History, store: &Store, k: usize) {
    let meta = store.meta();
    for commit in &history.meta {
        let value = meta.get(&commit.key).expect("get");
        let twin = meta.get(&format!("{}/twin", commit.key)).expect("get");
        assert_eq!(value, twin, "image {k}: half of {}", commit.key);
        if commit.images_acked <= k + 1 {
            assert_eq!(value.as_deref(), Some(commit.key.as_bytes()), "image {k}");
        }
        if commit.images_before > k {
            assert_eq!(value, None, "image {k}: {} before its commit", commit.key);
        }
    }
}

/// Appends one record to every log of `store`, which recovered `recovered`.
fn append_after(store: &Store, key: &DataKey, recovered: &[Vec<StoredRecord>]) {
    for (id, records) in LOG_IDS.iter().zip(recovered) {
        let log = store.log(id).expect("log");
        let seal = (*id == ENCRYPTED).then_some(Encryption {
            key,
            nonce_prefix: 2,
        });
        let new = [NewRecord {
            key: b"after",
            value: id.as_bytes(),
        }];
        let appended = log
            .append_encrypted(&new, i64::MAX / 2, 0, seal)
            .expect("append after recovery");
        assert_eq!(appended.first_offset, end_of(records), "{id}");
        appended.durable.wait_blocking().expect("durable");
    }
}

/// Checks that `after` is `recovered` (exactly) plus what `append_after` added.
fn with_appended(recovered: &[Vec<StoredRecord>], after: &[Vec<StoredRecord>]) {
    for ((id, before), after) in LOG_IDS.iter().zip(recovered).zip(after) {
        assert_eq!(after.len(), before.len() + 1, "{id}");
        assert_eq!(&after[..before.len()], &before[..], "{id}");
        let last = &after[before.len()];
        assert_eq!(last.offset, end_of(before), "{id}");
        assert_eq!(
            (&last.key[..], &last.value[..]),
            (&b"after"[..], id.as_bytes())
        );
        assert_eq!(last.encrypted, *id == ENCRYPTED, "{id}");
    }
}

fn open(backend: &CrashBackend, config: StoreConfig, key: &Arc<DataKey>) -> Arc<Store> {
    let store = Store::open(Arc::new(backend.clone()), config).expect("open image");
    store.set_keyring(Arc::new(Keys(Arc::clone(key))));
    store
}

/// Recovers image `k` and checks it; then the recovered store takes appends, and a crash right
/// after they are acknowledged recovers the same again, with the appends after it.
fn check_image(history: &History, image: CrashBackend, k: usize, config: StoreConfig) {
    let key = data_key();
    let store = open(&image, config, &key);
    let recovered = contents(&store, &format!("image {k}"));
    check_logs(history, &store, k, &recovered);
    check_meta(history, &store, k);
    append_after(&store, &key, &recovered);
    with_appended(
        &recovered,
        &contents(&store, &format!("image {k}, appended")),
    );
    // Replay wrote the segments back without syncing them, and the checkpointer may be
    // retiring the replayed journal files right now: whatever this catches must do.
    let crashed = image.snapshot();
    drop(store);
    let again = open(&crashed, config, &key);
    with_appended(&recovered, &contents(&again, &format!("image {k}, again")));
    check_meta(history, &again, k);
}

#[test]
fn every_prefix_of_the_synced_writes_recovers() {
    // Journal files of half the usual test size: more checkpoints in fewer appends. The logs
    // are fewer than `sync_all_files_logs_min`: a checkpoint syncs segment by segment.
    every_prefix_recovers(StoreConfig {
        journal_file_bytes: 4096,
        ..small_config()
    });
}

#[test]
fn every_prefix_recovers_when_checkpoints_sync_the_file_system_at_once() {
    // Checkpoints write every log's pending batches, then one `syncfs` covers them all.
    every_prefix_recovers(StoreConfig {
        journal_file_bytes: 4096,
        sync_all_files_logs_min: 1,
        ..small_config()
    });
}

fn every_prefix_recovers(config: StoreConfig) {
    let started = std::time::Instant::now();
    let backend = CrashBackend::new();
    backend.record_durable_images(true);
    let history = run_workload(&backend, config, &data_key());
    backend.record_durable_images(false);
    let images = backend.take_durable_images();
    let ran = started.elapsed();
    let total = images.len();
    // The workload did what it is here to test: segments rolled, journal files filled and
    // retired, and every incarnation got appends.
    let most_segments = images
        .iter()
        .filter_map(|image| image.list_dir("logs/p~0").ok())
        .map(|entries| entries.iter().filter(|e| e.name.ends_with(".seg")).count())
        .max();
    let retired = images.windows(2).filter(|pair| {
        let (before, after) = (journal_files(&pair[0]), journal_files(&pair[1]));
        before.iter().any(|name| !after.contains(name))
    });
    let most_journal_files = images.iter().map(|i| journal_files(i).len()).max();
    // Retired files kept as spares and written over as later files, stale groups and all: a
    // spare gone and a journal file new in the same step (a clean stop removes spares, but
    // starts no file).
    let reused = images
        .windows(2)
        .filter(|pair| {
            let (before, after) = (journal_files(&pair[0]), journal_files(&pair[1]));
            spare_journal_files(&pair[1]) < spare_journal_files(&pair[0])
                && after.iter().any(|name| !before.contains(name))
        })
        .count();
    assert!(reused >= 1, "no spare journal file was reused");
    assert!(most_segments >= Some(4), "{most_segments:?} segments");
    let retired = retired.count();
    // At least one while appends ran, and the clean stop's.
    assert!(retired >= 2, "{retired} checkpoints");
    assert!(most_journal_files >= Some(2), "{most_journal_files:?}");
    for incarnation in &history.incarnations {
        assert!(incarnation.appends.len() > 5, "{}", incarnation.id);
    }
    let last = images.last().expect("images").snapshot();
    for (k, image) in images.into_iter().enumerate() {
        check_image(&history, image, k, config);
    }
    // After the clean stop: the journal empty, and nothing lost at all.
    assert!(
        journal_files(&last).is_empty() && spare_journal_files(&last) == 0,
        "a clean stop retires the journal and removes its spares"
    );
    let store = open(&last, config, &data_key());
    for (id, records) in LOG_IDS.iter().zip(contents(&store, "the last image")) {
        let incarnation = expected(&history, id, total - 1).expect("exists").0;
        let appended: usize = incarnation.appends.iter().map(|a| a.records.len()).sum();
        assert_eq!(end_of(&records), appended as u64, "{id}");
    }
    drop(store);
    eprintln!(
        "{total} durable images checked (workload {ran:?}, total {:?}); up to {most_segments:?} \
         segments in a log, {retired} checkpoints retired journal files",
        started.elapsed()
    );
}
