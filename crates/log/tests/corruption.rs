//! Torn tails are cut at reopen; corruption in the middle is kept, reported and skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rivulet_log::{
    CrashBackend, DecodedBatch, FileBackend, LogError, Store, StoreConfig, decode_segment,
};

use crate::util::{append_durable, read_all, with_captured_logs};

fn open(root: &Path, config: StoreConfig) -> Arc<Store> {
    let backend = Arc::new(FileBackend::new(root).expect("backend"));
    Store::open(backend, config).expect("open")
}

fn batches(path: &Path) -> Vec<DecodedBatch> {
    let decoded = decode_segment(&std::fs::read(path).expect("read segment"));
    assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    decoded.batches
}

fn offsets(records: &[rivulet_log::StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig::default();
    {
        let store = open(dir.path(), config);
        let log = store.log("torn").expect("log");
        for i in 0..5 {
            append_durable(&log, &[b"aaaaaaaaaa", b"bbbbbbbbbbbbbbbbbbbb", b"cc"], i, 0);
        }
        store.shutdown();
    }
    let segment: PathBuf = dir.path().join("logs/torn/00000000000000000000.seg");
    let original = std::fs::read(&segment).expect("read");
    let last = batches(&segment)[4].position as usize;
    type Damage = fn(&mut Vec<u8>, usize);
    let cases: [(&str, Damage, u64); 5] = [
        (
            "cut inside the header (T1)",
            |b, last| b.truncate(last + 20),
            12,
        ),
        (
            "cut inside the body (T2)",
            |b, last| b.truncate(last + 50),
            12,
        ),
        (
            "last batch zeroed in place (T3)",
            |b, last| b[last..].fill(0),
            12,
        ),
        (
            "last batch body garbled (T3)",
            |b, last| b[last + 45] ^= 0xff,
            12,
        ),
        (
            "zeros after the last batch (T3)",
            |b, _| b.extend([0u8; 100]),
            15,
        ),
    ];
    for (name, damage, kept) in cases {
        let mut bytes = original.clone();
        damage(&mut bytes, last);
        std::fs::write(&segment, &bytes).expect("write");
        // A crash during the last append: no index snapshot covers it (a snapshot only ever
        // describes bytes already synced; the clean stops here leave ones that would).
        let _ = std::fs::remove_file(segment.with_extension("idx"));
        let store = open(dir.path(), config);
        let log = store.log("torn").expect("log");
        assert_eq!(
            offsets(&read_all(&log, 0)),
            (0..kept).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            (
                log.end_offset().expect("end_offset"),
                log.next_offset().expect("next_offset")
            ),
            (kept, kept),
            "{name}"
        );
        assert_eq!(append_durable(&log, &[b"new"], 9, 0).0, kept, "{name}");
        let records = read_all(&log, 0);
        assert_eq!(
            records.last().map(|r| &r.value[..]),
            Some(&b"new"[..]),
            "{name}"
        );
        store.shutdown();
        let expected_len = if kept == 15 { original.len() } else { last };
        let decoded = decode_segment(&std::fs::read(&segment).expect("read"));
        assert!(
            decoded.problems.is_empty(),
            "{name}: {:?}",
            decoded.problems
        );
        assert_eq!(
            decoded.batches.last().map(|b| b.position as usize),
            Some(expected_len)
        );
    }
}

/// Appends 20 batches of 2 records into 2000-byte segments: about 8 batches per segment.
fn fill_sealed_segments(root: &Path, config: StoreConfig) {
    let store = open(root, config);
    let log = store.log("flip").expect("log");
    for i in 0..20 {
        append_durable(&log, &[&[i as u8; 100], &[i as u8; 100]], i, 0);
    }
    store.shutdown();
}

fn check_middle_batch_is_corrupt(root: &Path, config: StoreConfig, batch: &DecodedBatch) {
    let ((), logs) = with_captured_logs(|| {
        let store = open(root, config);
        let log = store.log("flip").expect("log");
        let bad = batch.first_offset;
        match log.read(bad, 10, 1 << 20) {
            Err(LogError::Corrupt {
                segment, position, ..
            }) => {
                assert_eq!((segment, position), (0, batch.position));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Before it: the read stops at the damage; the next read reports it.
        let before = log.read(0, 100, 1 << 20).expect("read before");
        assert_eq!(offsets(&before.records), (0..bad).collect::<Vec<_>>());
        assert!(matches!(
            log.read(before.next_offset, 1, 1),
            Err(LogError::Corrupt { .. })
        ));
        // After it: everything else is intact.
        let after = read_all(&log, bad + 2);
        assert_eq!(offsets(&after), (bad + 2..40).collect::<Vec<_>>());
        assert!(after.iter().all(|r| r.value[0] as u64 == r.offset / 2));
        assert_eq!(log.end_offset().expect("end_offset"), 40);
        store.shutdown();
    });
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(logs.contains("corrupt"), "{logs}");
    assert!(logs.contains("segment=0"), "{logs}");
}

#[test]
fn bit_flip_in_sealed_segment_fails_only_that_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        segment_bytes_max: 2000,
        ..StoreConfig::default()
    };
    fill_sealed_segments(dir.path(), config);
    let segment = dir.path().join("logs/flip/00000000000000000000.seg");
    let index = dir.path().join("logs/flip/00000000000000000000.idx");
    assert!(index.exists(), "segment 0 is sealed");
    let original = std::fs::read(&segment).expect("read");
    let original_index = std::fs::read(&index).expect("read");
    let all = batches(&segment);
    assert!(all.len() >= 6, "{}", all.len());
    let middle = &all[all.len() / 2];
    let position = middle.position as usize;
    // In the body (the header still gives the length), in the offset field of the header
    // (resync by searching), and in the body with the index gone (found by the open's scan).
    for (name, at, drop_index) in [
        ("body", position + 60, false),
        ("header", position + 17, false),
        ("no index", position + 60, true),
    ] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x04;
        std::fs::write(&segment, &bytes).expect("write");
        if drop_index {
            std::fs::remove_file(&index).expect("remove index");
        } else {
            std::fs::write(&index, &original_index).expect("restore index");
        }
        eprintln!("case {name}");
        check_middle_batch_is_corrupt(dir.path(), config, middle);
        // Nothing was truncated or rewritten.
        assert_eq!(std::fs::read(&segment).expect("read"), bytes, "{name}");
    }
}

#[test]
fn bit_flip_in_active_segment_is_not_mistaken_for_a_torn_tail() {
    let backend = Arc::new(CrashBackend::new());
    let config = StoreConfig::default();
    {
        let store = Store::open(backend.clone(), config).expect("open");
        let log = store.log("active").expect("log");
        for i in 0..6 {
            append_durable(&log, &[&[i as u8; 50]], i, 0);
        }
        store.shutdown();
    }
    let path = "logs/active/00000000000000000000.seg";
    let all = decode_segment(&backend.read_file(path).expect("read")).batches;
    backend
        .flip_bit(path, all[2].position + 9, 3)
        .expect("flip");
    // A restart after the clean stop opens from the index snapshot the stop left, reading
    // nothing of the segment: reads find the damage. After a crash (an image of what was
    // synced: the snapshot was not), open's scan finds it. Either way only that batch fails.
    for restart in [false, true] {
        let image = if restart {
            backend.as_ref().clone()
        } else {
            backend.snapshot()
        };
        // The log is recovered on its first use, so that is where the scan reports.
        let ((_store, log, ends), logs) = with_captured_logs(|| {
            let store = Store::open(Arc::new(image.clone()), config).expect("open");
            let log = store.log("active").expect("log");
            let ends = (
                log.end_offset().expect("end offset"),
                log.next_offset().expect("next offset"),
            );
            (store, log, ends)
        });
        assert_eq!(logs.contains("corrupt data in segment"), !restart, "{logs}");
        assert_eq!(ends, (6, 6));
        assert!(matches!(log.read(2, 1, 1), Err(LogError::Corrupt { .. })));
        assert_eq!(offsets(&read_all(&log, 3)), vec![3, 4, 5]);
        assert_eq!(append_durable(&log, &[b"more"], 9, 0).0, 6);
    }
}
