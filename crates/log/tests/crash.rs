//! Crash consistency: concurrent appends and metadata commits, crashes at arbitrary moments
//! (snapshots of what was synced), reopen, and check that every acknowledged write is there
//! exactly once and nothing unwritten appears.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet_log::{CrashBackend, MetaOp, NewRecord, Store, StoreConfig};

use crate::util::read_all;

const LOGS: [&str; 2] = ["s/0", "s/1"];
const WRITERS: usize = 3;
const APPENDS_PER_WRITER: usize = 150;
const SNAPSHOTS_PER_RUN: usize = 4;
const SEEDS: u64 = 12;

/// A tiny deterministic generator (xorshift64*), so failures replay from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One append as its writer saw it.
#[derive(Clone, Debug)]
struct Write {
    log: usize,
    first_offset: u64,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Default)]
struct Shared {
    /// Appends whose `Durable` completed, in completion order.
    acked: Mutex<Vec<Write>>,
    /// Every append that returned (durable or not).
    written: Mutex<Vec<Write>>,
    /// Metadata keys whose commit returned, in order.
    meta_acked: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn writer(store: Arc<Store>, shared: Arc<Shared>, seed: u64, id: usize) {
    let mut rng = Rng::new(seed * 31 + id as u64);
    for i in 0..APPENDS_PER_WRITER {
        let log_index = rng.below(LOGS.len() as u64) as usize;
        let log = store.log(LOGS[log_index]).expect("log");
        let count = 1 + rng.below(4) as usize;
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
            .map(|j| {
                let key = format!("w{id}-{i}-{j}").into_bytes();
                let value = vec![(id * 50 + i) as u8; rng.below(300) as usize];
                (key, value)
            })
            .collect();
        let new: Vec<NewRecord<'_>> = records
            .iter()
            .map(|(key, value)| NewRecord { key, value })
            .collect();
        let min = if rng.below(10) == 0 {
            log.next_offset().expect("next_offset") + rng.below(5)
        } else {
            0
        };
        let appended = log.append(&new, i as i64, min).expect("append");
        let write = Write {
            log: log_index,
            first_offset: appended.first_offset,
            records,
        };
        lock(&shared.written).push(write.clone());
        // Some writers pipeline: they do not wait for every append.
        if id != 0 || rng.below(3) == 0 {
            appended.durable.wait_blocking().expect("durable");
            lock(&shared.acked).push(write);
        }
    }
}

fn meta_writer(store: Arc<Store>, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && i < 200 {
        let key = format!("m/{i:05}");
        let ops = [
            MetaOp::Put {
                key: key.clone(),
                value: key.clone().into_bytes(),
            },
            MetaOp::Put {
                key: format!("{key}/twin"),
                value: vec![1],
            },
        ];
        store.meta().commit(&ops).expect("meta commit");
        lock(&shared.meta_acked).push(key);
        i += 1;
    }
}

/// What a crash image must satisfy, given what was acknowledged before it was taken.
fn verify(
    image: CrashBackend,
    config: StoreConfig,
    acked: &[Write],
    meta_acked: &[String],
    all: &[Write],
) {
    let mut written: HashMap<(usize, u64), (Vec<u8>, Vec<u8>)> = HashMap::new();
    for write in all {
        for (j, record) in write.records.iter().enumerate() {
            written.insert((write.log, write.first_offset + j as u64), record.clone());
        }
    }
    let store = Store::open(Arc::new(image.clone()), config).expect("reopen image");
    for (log_index, id) in LOGS.iter().enumerate() {
        let log = store.log(id).expect("log");
        let records = read_all(&log, 0);
        // In order, each exactly once, and each exactly as some append wrote it.
        assert!(
            records
                .windows(2)
                .all(|pair| pair[0].offset < pair[1].offset),
            "{id}"
        );
        for record in &records {
            let expected = written.get(&(log_index, record.offset));
            let found = (record.key.to_vec(), record.value.to_vec());
            assert_eq!(expected, Some(&found), "{id} offset {}", record.offset);
        }
        let present: BTreeMap<u64, ()> = records.iter().map(|r| (r.offset, ())).collect();
        for write in acked.iter().filter(|w| w.log == log_index) {
            for j in 0..write.records.len() as u64 {
                assert!(
                    present.contains_key(&(write.first_offset + j)),
                    "{id} lost an ack"
                );
            }
        }
        // Batches are atomic: a batch is all there or not at all.
        for write in all.iter().filter(|w| w.log == log_index) {
            let there = (0..write.records.len() as u64)
                .filter(|j| present.contains_key(&(write.first_offset + j)))
                .count();
            assert!(
                there == 0 || there == write.records.len(),
                "{id}: torn batch"
            );
        }
        assert_eq!(
            log.end_offset().expect("end_offset"),
            log.next_offset().expect("next_offset")
        );
        // The log carries on from where it was.
        let next = log.next_offset().expect("next_offset");
        let appended = log.append(
            &[NewRecord {
                key: b"after",
                value: b"crash",
            }],
            0,
            0,
        );
        let appended = appended.expect("append after crash");
        assert_eq!(appended.first_offset, next);
        appended
            .durable
            .wait_blocking()
            .expect("durable after crash");
    }
    let meta = store.meta();
    for key in meta_acked {
        assert_eq!(
            meta.get(key).expect("get"),
            Some(key.clone().into_bytes()),
            "lost {key}"
        );
        assert_eq!(
            meta.get(&format!("{key}/twin")).expect("get"),
            Some(vec![1]),
            "half {key}"
        );
    }
    for (key, value) in meta.scan_prefix("m/").expect("scan") {
        let base = key.trim_end_matches("/twin");
        assert!(value == base.as_bytes() || value == [1], "{key}");
    }
    store.shutdown();
    // A second crash right after recovery loses nothing acknowledged either.
    let again = Store::open(Arc::new(image.snapshot()), config).expect("reopen twice");
    for (log_index, id) in LOGS.iter().enumerate() {
        let records = read_all(&again.log(id).expect("log"), 0);
        let acked_here = acked.iter().filter(|w| w.log == log_index).count();
        assert!(records.len() >= acked_here, "{id}");
    }
}

#[test]
fn acknowledged_writes_survive_crashes_at_random_points() {
    let config = StoreConfig {
        segment_bytes_max: 1500,
        index_interval_bytes: 200,
        // Small journal files: crashes land across file switches, checkpoints and deletions.
        journal_file_bytes: 4096,
        checkpoint_journal_files: 2,
        ..StoreConfig::default()
    };
    // Images taken while writes were in flight: the interesting ones.
    let mut images_mid_run = 0;
    for seed in 0..SEEDS {
        let backend = CrashBackend::new();
        let store = Store::open(Arc::new(backend.clone()), config).expect("open");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for id in 0..WRITERS {
            let (store, shared) = (Arc::clone(&store), Arc::clone(&shared));
            threads.push(std::thread::spawn(move || writer(store, shared, seed, id)));
        }
        let meta_thread = {
            let (store, shared, stop) = (Arc::clone(&store), Arc::clone(&shared), stop.clone());
            std::thread::spawn(move || meta_writer(store, shared, stop))
        };
        let mut rng = Rng::new(seed);
        let mut images = Vec::new();
        for _ in 0..SNAPSHOTS_PER_RUN {
            std::thread::sleep(Duration::from_micros(rng.below(4000)));
            // Acknowledgements counted before the image is taken all happened before it.
            let acked = lock(&shared.acked).len();
            let meta_acked = lock(&shared.meta_acked).len();
            images.push((backend.snapshot(), acked, meta_acked));
        }
        for thread in threads {
            thread.join().expect("writer");
        }
        stop.store(true, Ordering::Relaxed);
        meta_thread.join().expect("meta writer");
        let all = lock(&shared.written).clone();
        let acked = lock(&shared.acked).clone();
        let meta_acked = lock(&shared.meta_acked).clone();
        for (image, acked_len, meta_len) in images {
            if acked_len > 0 && acked_len < acked.len() {
                images_mid_run += 1;
            }
            verify(
                image,
                config,
                &acked[..acked_len],
                &meta_acked[..meta_len],
                &all,
            );
        }
        // Finally a crash in place, under the running store: everything synced survives.
        store.sync_all().expect("sync_all");
        backend.crash();
        verify(backend.clone(), config, &acked, &meta_acked, &all);
        drop(store);
    }
    eprintln!("{images_mid_run} crash images taken mid-run");
    assert!(
        images_mid_run >= SEEDS as usize,
        "too few crashes landed while writes ran"
    );
}
