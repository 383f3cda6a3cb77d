//! Appends, reads, seeks, rolls, reopen, trim, removal and metadata on the public API.

use std::sync::Arc;

use rivulet_log::{
    Backend, CrashBackend, FileBackend, LogError, MemBackend, MetaOp, NewRecord, Store, StoreConfig,
};

use crate::util::{append_durable, append_one, copy_tree, read_all, small_config};

fn mem_store(config: StoreConfig) -> (Arc<MemBackend>, Arc<Store>) {
    let backend = Arc::new(MemBackend::new());
    let store = Store::open(backend.clone(), config).expect("open");
    (backend, store)
}

#[test]
fn round_trip_with_limits() {
    let (_backend, store) = mem_store(StoreConfig::default());
    let log = store.log("stream/shard-0").expect("log");
    assert_eq!(
        (
            log.start_offset().expect("start_offset"),
            log.end_offset().expect("end_offset"),
            log.next_offset().expect("next_offset")
        ),
        (0, 0, 0)
    );
    assert_eq!(append_durable(&log, &[b"a", b"bb"], 10, 0), (0, 10));
    assert_eq!(append_durable(&log, &[b"ccc"], 11, 0), (2, 11));
    assert_eq!(
        (
            log.start_offset().expect("start_offset"),
            log.end_offset().expect("end_offset"),
            log.next_offset().expect("next_offset")
        ),
        (0, 3, 3)
    );

    let all = read_all(&log, 0);
    let summary: Vec<(u64, i64, &[u8], &[u8])> = all
        .iter()
        .map(|r| (r.offset, r.timestamp_ms, &r.key[..], &r.value[..]))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, 10, &b"k0"[..], &b"a"[..]),
            (1, 10, b"k1", b"bb"),
            (2, 11, b"k0", b"ccc")
        ]
    );

    let page = log.read(1, 1, 1 << 20).expect("read");
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.next_offset, 2);
    // max_bytes counts keys and values; at least one record comes back even if too big.
    let page = log.read(0, 10, 1).expect("read");
    assert_eq!(page.records.len(), 1);
    let page = log.read(0, 10, 7).expect("read");
    assert_eq!(page.records.len(), 2, "3 + 4 bytes fit in 7");
    // Past the end: nothing, and the cursor stays put.
    let page = log.read(3, 10, 100).expect("read");
    assert!(page.records.is_empty());
    assert_eq!(page.next_offset, 3);
    assert!(log.read(0, 0, 100).expect("read").records.is_empty());
}

#[test]
fn min_first_offset_leaves_gaps_that_reads_skip() {
    let (_backend, store) = mem_store(small_config());
    let log = store.log("gaps").expect("log");
    assert_eq!(append_durable(&log, &[b"x", b"y"], 1, 100).0, 100);
    // A minimum below next_offset changes nothing.
    assert_eq!(append_durable(&log, &[b"z"], 1, 5).0, 102);
    assert_eq!(append_durable(&log, &[b"w"], 1, 1000).0, 1000);
    assert_eq!(
        (
            log.start_offset().expect("start_offset"),
            log.end_offset().expect("end_offset")
        ),
        (100, 1001)
    );
    let offsets: Vec<u64> = read_all(&log, 0).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![100, 101, 102, 1000]);
    let page = log.read(103, 10, 1 << 20).expect("read");
    assert_eq!(
        page.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![1000]
    );
    assert_eq!(page.next_offset, 1001);
    let overflow = log.append(
        &[NewRecord {
            key: b"",
            value: b"",
        }],
        1,
        u64::MAX,
    );
    assert!(matches!(overflow, Err(LogError::OffsetOverflow { .. })));
}

#[test]
fn timestamps_are_clamped_and_seekable() {
    let (_backend, store) = mem_store(small_config());
    let log = store.log("ts").expect("log");
    assert_eq!(log.offset_at_timestamp(0).expect("seek"), 0);
    let value = [7u8; 100];
    let mut firsts = Vec::new();
    for i in 0..40i64 {
        // Every fifth append asks for an older timestamp: it is clamped.
        let requested = if i % 5 == 4 { 0 } else { i * 10 };
        let (first, stored) = append_durable(&log, &[&value, &value], requested, 0);
        assert_eq!(stored, if i % 5 == 4 { (i - 1) * 10 } else { i * 10 });
        firsts.push((first, stored));
    }
    let check = |t: i64, expected: u64| {
        assert_eq!(
            log.offset_at_timestamp(t).expect("seek"),
            expected,
            "t = {t}"
        );
    };
    check(i64::MIN, 0);
    check(0, 0);
    check(1, 2);
    check(10, 2);
    for t in [215, 370, 380] {
        check(
            t,
            firsts
                .iter()
                .find(|(_, ts)| *ts >= t)
                .map_or(0, |(first, _)| *first),
        );
    }
    check(381, log.end_offset().expect("end_offset"));
    assert!(firsts.windows(2).all(|pair| pair[0].1 <= pair[1].1));
}

#[test]
fn rolls_write_sealed_indexes_and_reopen_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let value = [1u8; 200];
    {
        let backend = Arc::new(FileBackend::new(dir.path()).expect("backend"));
        let store = Store::open(backend, config).expect("open");
        let log = store.log("s/roll").expect("log");
        for i in 0..30 {
            append_durable(&log, &[&value, &value], i, 0);
        }
        store.shutdown();
    }
    let log_dir = dir.path().join("logs").join("s~roll");
    let mut names: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    names.sort();
    let segments: Vec<&String> = names.iter().filter(|n| n.ends_with(".seg")).collect();
    let indexes: Vec<&String> = names.iter().filter(|n| n.ends_with(".idx")).collect();
    assert!(segments.len() >= 10, "{names:?}");
    // Every segment has an index: the sealed ones from their roll, the active one a snapshot
    // left by the clean stop.
    assert_eq!(indexes.len(), segments.len(), "{names:?}");
    assert_eq!(segments[0], "00000000000000000000.seg");

    // Reopen as is; then without one index; then with a damaged one: same contents each time.
    std::fs::remove_file(log_dir.join(indexes[1])).expect("remove idx");
    let mut damaged = std::fs::read(log_dir.join(indexes[2])).expect("read idx");
    damaged[30] ^= 0x10;
    std::fs::write(log_dir.join(indexes[2]), damaged).expect("write idx");
    for round in 0..2 {
        let backend = Arc::new(FileBackend::new(dir.path()).expect("backend"));
        let store = Store::open(backend, config).expect("reopen");
        let log = store.log("s/roll").expect("log");
        assert_eq!(
            (
                log.end_offset().expect("end_offset"),
                log.next_offset().expect("next_offset")
            ),
            (60, 60),
            "round {round}"
        );
        let records = read_all(&log, 0);
        assert_eq!(records.len(), 60);
        assert!(
            records
                .iter()
                .enumerate()
                .all(|(i, r)| r.offset == i as u64)
        );
        assert!(records.iter().all(|r| r.value[..] == value[..]));
        for i in 0..30 {
            assert_eq!(log.offset_at_timestamp(i).expect("seek"), 2 * i as u64);
        }
        let page = log.read(33, 1, 1).expect("read");
        assert_eq!(page.records[0].offset, 33);
        store.shutdown();
    }
    // The rebuilt index was written back.
    assert!(log_dir.join(indexes[1]).exists());
}

#[test]
fn reopen_after_clean_shutdown_keeps_offsets_and_timestamps() {
    let backend = Arc::new(MemBackend::new());
    {
        let store = Store::open(backend.clone(), small_config()).expect("open");
        let log = store.log("a").expect("log");
        append_durable(&log, &[b"one", b"two"], 500, 0);
        append_durable(&log, &[b"three"], 600, 10);
        store.shutdown();
        assert!(matches!(
            log.append(
                &[NewRecord {
                    key: b"",
                    value: b""
                }],
                1,
                0
            ),
            Err(LogError::Closed)
        ));
    }
    let store = Store::open(backend, small_config()).expect("reopen");
    assert_eq!(store.log_ids().expect("ids"), vec!["a".to_string()]);
    let log = store.log("a").expect("log");
    assert_eq!(
        (
            log.start_offset().expect("start_offset"),
            log.end_offset().expect("end_offset"),
            log.next_offset().expect("next_offset")
        ),
        (0, 11, 11)
    );
    // The last timestamp survives: an older one is clamped.
    assert_eq!(append_durable(&log, &[b"four"], 1, 0), (11, 600));
    let values: Vec<Vec<u8>> = read_all(&log, 0).iter().map(|r| r.value.to_vec()).collect();
    assert_eq!(
        values,
        vec![
            b"one".to_vec(),
            b"two".to_vec(),
            b"three".to_vec(),
            b"four".to_vec()
        ]
    );
}

fn segment_files(backend: &CrashBackend, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list_dir(dir)
        .expect("list")
        .into_iter()
        .map(|entry| entry.name)
        .filter(|name| name.ends_with(".seg") || name.ends_with(".idx"))
        .collect();
    names.sort();
    names
}

#[test]
fn trim_drops_old_segments_from_disk() {
    let backend = Arc::new(CrashBackend::new());
    let config = StoreConfig {
        segment_bytes_max: 300,
        index_interval_bytes: 64,
        ..StoreConfig::default()
    };
    let store = Store::open(backend.clone(), config).expect("open");
    let log = store.log("t").expect("log");
    let value = [3u8; 100];
    for i in 0..20 {
        append_durable(&log, &[&value, &value], i * 100, 0);
    }
    let before = segment_files(&backend, "logs/t");
    assert!(before.len() > 10, "{before:?}");
    // Batches are 2 records; segments hold 2 batches (the roll happens past 300 bytes).
    let dropped = log.trim_older_than(1000).expect("trim");
    assert!(
        dropped > 0 && dropped <= 20 && dropped.is_multiple_of(2),
        "dropped {dropped}"
    );
    assert_eq!(log.start_offset().expect("start_offset"), dropped);
    let after = segment_files(&backend, "logs/t");
    assert!(after.len() < before.len());
    assert!(!after.contains(&"00000000000000000000.seg".to_string()));
    let records = read_all(&log, 0);
    assert_eq!(records.first().map(|r| r.offset), Some(dropped));
    assert!(records.iter().all(|r| r.offset >= dropped));
    // Nothing older than the cutoff is kept beyond the segment holding the cutoff.
    assert!(records.iter().filter(|r| r.timestamp_ms < 1000).count() <= 4);
    assert_eq!(log.trim_older_than(1000).expect("trim again"), 0);

    // Trimming everything seals the active segment; offsets carry on, also after a crash.
    let dropped_all = log.trim_older_than(i64::MAX).expect("trim all");
    assert_eq!(dropped + dropped_all, 40);
    assert_eq!(
        (
            log.start_offset().expect("start_offset"),
            log.end_offset().expect("end_offset"),
            log.next_offset().expect("next_offset")
        ),
        (40, 40, 40)
    );
    assert_eq!(
        segment_files(&backend, "logs/t"),
        vec!["00000000000000000040.seg".to_string()]
    );
    assert!(read_all(&log, 0).is_empty());
    let reopened = Store::open(Arc::new(backend.snapshot()), config).expect("reopen");
    let log = reopened.log("t").expect("log");
    assert_eq!(
        (
            log.start_offset().expect("start_offset"),
            log.end_offset().expect("end_offset"),
            log.next_offset().expect("next_offset")
        ),
        (40, 40, 40)
    );
    assert_eq!(append_durable(&log, &[b"again"], 5, 0).0, 40);
}

#[test]
fn remove_log_deletes_its_files() {
    let backend = Arc::new(CrashBackend::new());
    let store = Store::open(backend.clone(), small_config()).expect("open");
    let log = store.log("s/1").expect("log");
    let other = store.log("s/2").expect("log");
    assert!(Arc::ptr_eq(&log, &store.log("s/1").expect("same log")));
    for _ in 0..10 {
        append_durable(&log, &[&[9u8; 200]], 1, 0);
    }
    append_durable(&other, &[b"keep"], 1, 0);
    store.remove_log("s/1").expect("remove");
    assert_eq!(store.log_ids().expect("ids"), vec!["s/2".to_string()]);
    assert!(matches!(log.read(0, 1, 1), Err(LogError::Removed { .. })));
    assert!(matches!(
        log.append(
            &[NewRecord {
                key: b"",
                value: b""
            }],
            1,
            0
        ),
        Err(LogError::Removed { .. })
    ));
    let names: Vec<String> = backend
        .list_dir("logs")
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["s~2".to_string()]);
    assert!(backend.list_dir("trash").expect("trash").is_empty());
    // Durable: a crash now does not bring it back. A new log of that name starts afresh.
    let reopened = Store::open(Arc::new(backend.snapshot()), small_config()).expect("reopen");
    assert_eq!(reopened.log_ids().expect("ids"), vec!["s/2".to_string()]);
    let fresh = reopened.log("s/1").expect("log");
    assert_eq!(
        (
            fresh.end_offset().expect("end_offset"),
            fresh.next_offset().expect("next_offset")
        ),
        (0, 0)
    );
    assert_eq!(read_all(&reopened.log("s/2").expect("log"), 0).len(), 1);
}

#[test]
fn invalid_input_is_refused() {
    let (_backend, store) = mem_store(small_config());
    assert!(
        store.log("../x").is_ok(),
        "'..' inside an id is only a name"
    );
    assert!(matches!(
        store.log(".."),
        Err(LogError::InvalidLogId { .. })
    ));
    assert!(matches!(
        store.log("a b"),
        Err(LogError::InvalidLogId { .. })
    ));
    let log = store.log("x").expect("log");
    assert!(matches!(log.append(&[], 1, 0), Err(LogError::EmptyBatch)));
    let huge = vec![0u8; rivulet_log::BATCH_BYTES_MAX as usize];
    assert!(matches!(
        log.append(
            &[NewRecord {
                key: b"",
                value: &huge
            }],
            1,
            0
        ),
        Err(LogError::BatchTooLarge { .. })
    ));
    let zero = StoreConfig {
        segment_bytes_max: 0,
        index_interval_bytes: 1,
        ..StoreConfig::default()
    };
    assert!(matches!(
        Store::open(Arc::new(MemBackend::new()), zero),
        Err(LogError::Config(_))
    ));
}

#[test]
fn file_backend_is_locked_against_a_second_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = FileBackend::new(dir.path()).expect("first");
    assert!(FileBackend::new(dir.path()).is_err());
    drop(first);
    assert!(FileBackend::new(dir.path()).is_ok());
}

#[test]
fn metadata_commits_are_atomic_and_persist() {
    let backend = Arc::new(CrashBackend::new());
    {
        let store = Store::open(backend.clone(), small_config()).expect("open");
        let meta = store.meta();
        assert_eq!(meta.get("stream/a").expect("get"), None);
        meta.commit(&[
            MetaOp::Put {
                key: "stream/a".into(),
                value: b"1".to_vec(),
            },
            MetaOp::Put {
                key: "stream/b".into(),
                value: b"2".to_vec(),
            },
            MetaOp::Put {
                key: "streams".into(),
                value: b"x".to_vec(),
            },
            MetaOp::Put {
                key: "consumer/a".into(),
                value: b"3".to_vec(),
            },
        ])
        .expect("commit");
        meta.commit(&[
            MetaOp::Delete {
                key: "stream/b".into(),
            },
            MetaOp::Delete {
                key: "missing".into(),
            },
        ])
        .expect("commit");
        assert_eq!(meta.get("stream/a").expect("get"), Some(b"1".to_vec()));
        let scanned = meta.scan_prefix("stream/").expect("scan");
        assert_eq!(scanned, vec![("stream/a".to_string(), b"1".to_vec())]);
    }
    let store = Store::open(Arc::new(backend.snapshot()), small_config()).expect("reopen");
    let keys: Vec<String> = store
        .meta()
        .scan_prefix("")
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec!["consumer/a", "stream/a", "streams"]);
}

#[test]
fn failed_sync_is_never_reported_durable() {
    let backend = Arc::new(CrashBackend::new());
    let store = Store::open(backend.clone(), small_config()).expect("open");
    let log = store.log("f").expect("log");
    append_durable(&log, &[b"safe"], 1, 0);
    backend.set_fail_syncs(true);
    let appended = append_one(&log, b"lost", 2);
    assert!(matches!(
        appended.durable.wait_blocking(),
        Err(LogError::Failed { .. })
    ));
    // Readers never saw it, and the log refuses appends until reopened.
    assert_eq!(log.end_offset().expect("end_offset"), 1);
    assert_eq!(read_all(&log, 0).len(), 1);
    let refused = log.append(
        &[NewRecord {
            key: b"",
            value: b"x",
        }],
        3,
        0,
    );
    assert!(matches!(refused, Err(LogError::Failed { .. })));
    assert!(store.sync_all().is_err());
    backend.set_fail_syncs(false);
    let reopened = Store::open(Arc::new(backend.snapshot()), small_config()).expect("reopen");
    let log = reopened.log("f").expect("log");
    let values: Vec<Vec<u8>> = read_all(&log, 0).iter().map(|r| r.value.to_vec()).collect();
    assert_eq!(values, vec![b"safe".to_vec()]);
    assert_eq!(append_durable(&log, &[b"next"], 4, 0).0, 1);
}

#[test]
fn async_wait_and_watch_end() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (_backend, store) = mem_store(small_config());
    let log = store.log("w").expect("log");
    let mut watch = log.watch_end().expect("watch_end");
    assert_eq!(*watch.borrow_and_update(), 0);
    runtime.block_on(async {
        let appended = log
            .append(
                &[NewRecord {
                    key: b"k",
                    value: b"v",
                }],
                1,
                0,
            )
            .expect("append");
        appended.durable.wait().await.expect("durable");
        watch.changed().await.expect("changed");
        assert_eq!(*watch.borrow_and_update(), 1);
        let waiter = tokio::spawn({
            let mut watch = log.watch_end().expect("watch_end");
            async move { watch.wait_for(|end| *end >= 3).await.map(|end| *end) }
        });
        let appended = log
            .append(
                &[
                    NewRecord {
                        key: b"",
                        value: b"a",
                    },
                    NewRecord {
                        key: b"",
                        value: b"b",
                    },
                ],
                2,
                0,
            )
            .expect("append");
        appended.durable.wait().await.expect("durable");
        assert_eq!(waiter.await.expect("join").expect("watch"), 3);
    });
    store.sync_all().expect("sync_all");
}

#[test]
fn handles_cross_threads_and_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Store>();
    send_sync::<rivulet_log::Log>();
    send_sync::<rivulet_log::Durable>();
    let (_backend, store) = mem_store(small_config());
    let log = store.log("send").expect("log");
    let appended = log
        .append(
            &[NewRecord {
                key: b"",
                value: b"v",
            }],
            1,
            0,
        )
        .expect("append");
    // The server awaits durability inside tasks spawned on a multi-threaded runtime.
    let waiting = appended.durable.wait();
    send(&waiting);
    drop(waiting);
    store.sync_all().expect("sync_all");
}

#[test]
fn a_quiet_log_rolls_by_age_so_retention_frees_old_records() {
    let backend = Arc::new(CrashBackend::new());
    let config = StoreConfig {
        segment_age_max_ms: 1_000,
        ..StoreConfig::default()
    };
    let store = Store::open(backend.clone(), config).expect("open");
    let log = store.log("quiet").expect("log");
    // One small record every 400 ms: far below the size limit, so only age rolls segments.
    for i in 0..10 {
        append_durable(&log, &[b"tick"], i * 400, 0);
    }
    let segments = segment_files(&backend, "logs/quiet");
    assert!(segments.len() >= 3, "{segments:?}");
    // A cutoff at 2,500 ms keeps nothing older than 2,500 - 1,000 ms.
    log.trim_older_than(2_500).expect("trim");
    let kept = read_all(&log, 0);
    assert!(kept.iter().all(|r| r.timestamp_ms >= 1_500), "{kept:?}");
    assert!(kept.iter().any(|r| r.timestamp_ms < 2_500));
    assert_eq!(kept.last().map(|r| r.offset), Some(9));
    let zero = StoreConfig {
        segment_age_max_ms: 0,
        ..StoreConfig::default()
    };
    assert!(Store::open(Arc::new(MemBackend::new()), zero).is_err());
}

#[test]
fn active_segment_is_preallocated_and_cut_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = |root: &std::path::Path| root.join("logs/p/00000000000000000000.seg");
    let store = Store::open(
        Arc::new(FileBackend::new(dir.path()).expect("backend")),
        StoreConfig::default(),
    )
    .expect("open");
    let log = store.log("p").expect("log");
    for i in 0..10 {
        append_durable(&log, &[b"preallocated"], i, 0);
    }
    // A read writes the journaled batches into the segment (they wait there for `fill_bytes`).
    assert_eq!(read_all(&log, 0).len(), 10);
    // Running: the file runs ahead of the data, in zeros.
    let running = std::fs::read(segment(dir.path())).expect("read");
    let decoded = rivulet_log::decode_segment(&running);
    assert_eq!(decoded.batches.len(), 10);
    let data_end = match decoded.problems.as_slice() {
        [problem] if problem.kind == rivulet_log::ProblemKind::TornTail => problem.position,
        problems => panic!("expected zeros after the data: {problems:?}"),
    } as usize;
    assert_eq!(running.len(), 1 << 20);
    assert!(running[data_end..].iter().all(|byte| *byte == 0));

    // A crash now: recovery cuts the zeros and keeps every record.
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_tree(dir.path(), crashed.path());
    {
        let (recovered, logs) = crate::util::with_captured_logs(|| {
            Store::open(
                Arc::new(FileBackend::new(crashed.path()).expect("backend")),
                StoreConfig::default(),
            )
            .expect("open")
        });
        assert!(
            !logs.contains("torn tail"),
            "zeros reported as a torn tail: {logs}"
        );
        let log = recovered.log("p").expect("log");
        assert_eq!(read_all(&log, 0).len(), 10);
        assert_eq!(
            std::fs::metadata(segment(crashed.path()))
                .expect("meta")
                .len() as usize,
            data_end
        );
        append_durable(&log, &[b"after"], 11, 0);
        assert_eq!(read_all(&log, 0).len(), 11);
    }

    // A clean stop leaves the segment exactly as long as its batches.
    store.shutdown();
    assert_eq!(
        std::fs::metadata(segment(dir.path())).expect("meta").len() as usize,
        data_end
    );
}

#[test]
fn logs_found_at_open_are_recovered_on_first_use_and_trimmed_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    {
        let store = Store::open(
            Arc::new(FileBackend::new(dir.path()).expect("backend")),
            config,
        )
        .expect("open");
        let log = store.log("lazy").expect("log");
        for i in 0..12u8 {
            append_durable(&log, &[&[i; 300]], 1000 * i64::from(i), 0);
        }
        store.shutdown();
    }
    // The same trim, asked of a log before its first use and of one already in use, drops the
    // same segments: the first is applied as the log opens, before the read.
    let mut kept = Vec::new();
    for used_first in [false, true] {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_tree(dir.path(), copy.path());
        let store = Store::open(
            Arc::new(FileBackend::new(copy.path()).expect("backend")),
            config,
        )
        .expect("open");
        let log = store.log("lazy").expect("log");
        if used_first {
            assert_eq!(log.end_offset().expect("end"), 12);
        }
        let dropped = log.trim_older_than(6000).expect("trim");
        // Deferred: nothing is known to be dropped until the log opens.
        assert_eq!(dropped == 0, !used_first, "{dropped}");
        let offsets: Vec<u64> = read_all(&log, 0).iter().map(|r| r.offset).collect();
        assert!(
            offsets.first().is_some_and(|&first| first > 0),
            "{offsets:?}"
        );
        assert_eq!(offsets.last(), Some(&11));
        kept.push(offsets);
        store.shutdown();
    }
    assert_eq!(kept[0], kept[1]);
}

#[test]
fn a_preallocated_tail_is_known_as_holes_without_reading_it() {
    use rivulet_log::Backend;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FileBackend::new(dir.path()).expect("backend");
    let file = backend.open_file("f", true).expect("open");
    file.write_all_at(&[7u8; 100], 0).expect("write");
    file.set_len(1 << 20).expect("extend");
    // Data where something was written.
    assert_eq!(file.next_data(0).expect("seek"), 0);
    assert_eq!(file.next_data(50).expect("seek"), 50);
    // Past the written block only a hole: the length here on ext4 and tmpfs; never before the
    // position asked (which a file system without SEEK_DATA answers), never past the end.
    let past = file.next_data(64 << 10).expect("seek");
    assert!((64 << 10..=1 << 20).contains(&past), "{past}");
}
