//! The store-wide journal: what a crash leaves in it is written back into the segments, a
//! removed log's entries never reach a log created later under its id, and a clean stop leaves
//! the journal empty.

use std::sync::Arc;

use rivulet_log::{Backend, CrashBackend, FileBackend, Store, StoreConfig};

use crate::util::{append_durable, append_one, copy_tree, journal_files, read_all, small_config};

#[test]
fn a_crash_before_any_checkpoint_is_replayed_from_the_journal() {
    let backend = CrashBackend::new();
    let store = Store::open(Arc::new(backend.clone()), small_config()).expect("open");
    let logs: Vec<_> = (0..20)
        .map(|i| store.log(&format!("j/{i}")).expect("log"))
        .collect();
    for (i, log) in logs.iter().enumerate() {
        for round in 0..3u8 {
            append_durable(log, &[&[i as u8, round], b"second"], i64::from(round), 0);
        }
    }
    // Only the journal was synced for these appends: the image holds no segment bytes of them.
    let image = backend.snapshot();
    drop(store);
    // The replayed files count as full journal files; a threshold above their number keeps the
    // checkpointer from retiring them before the assertion below (only a stop checkpoints then).
    let reopen_config = StoreConfig {
        checkpoint_journal_files: 1000,
        ..small_config()
    };
    let store = Store::open(Arc::new(image.clone()), reopen_config).expect("reopen");
    for (i, _) in logs.iter().enumerate() {
        let records = read_all(&store.log(&format!("j/{i}")).expect("log"), 0);
        assert_eq!(records.len(), 6, "j/{i}");
        assert_eq!(&records[4].value[..], &[i as u8, 2]);
    }
    // Replayed, kept until a checkpoint has synced the segments, then retired.
    assert!(!journal_files(&image).is_empty());
    store.shutdown();
    let left = image.list_dir("journal").expect("list");
    assert!(left.is_empty(), "{left:?}");
    // And what replay wrote is in the segments now.
    let store = Store::open(Arc::new(image.snapshot()), small_config()).expect("reopen");
    for (i, _) in logs.iter().enumerate() {
        let records = read_all(&store.log(&format!("j/{i}")).expect("log"), 0);
        assert_eq!(records.len(), 6, "j/{i}");
    }
    store.shutdown();
}

#[test]
fn a_removed_logs_entries_never_reach_a_new_log_of_the_same_id() {
    let backend = CrashBackend::new();
    let store = Store::open(Arc::new(backend.clone()), small_config()).expect("open");
    let old = store.log("reused").expect("log");
    append_durable(&old, &[b"old-1"], 1, 0);
    append_durable(&old, &[b"old-2"], 2, 0);
    store.remove_log("reused").expect("remove");
    let new = store.log("reused").expect("log again");
    append_durable(&new, &[b"new-1"], 3, 0);
    let image = backend.snapshot();
    drop(store);
    let store = Store::open(Arc::new(image), small_config()).expect("reopen");
    let records = read_all(&store.log("reused").expect("log"), 0);
    let values: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
    assert_eq!(values, [b"new-1".as_slice()]);
    store.shutdown();
}

#[test]
fn a_clean_stop_leaves_an_empty_journal_and_synced_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(FileBackend::new(dir.path()).expect("backend"));
    let store = Store::open(backend.clone(), small_config()).expect("open");
    let log = store.log("clean").expect("log");
    for i in 0..50u8 {
        append_durable(&log, &[&[i; 40]], i64::from(i), 0);
    }
    store.shutdown();
    drop(store);
    assert!(backend.list_dir("journal").expect("list").is_empty());
    let store = Store::open(backend, small_config()).expect("reopen");
    assert_eq!(read_all(&store.log("clean").expect("log"), 0).len(), 50);
}

#[test]
fn an_index_snapshot_outgrown_since_is_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |path: &std::path::Path| {
        let backend = Arc::new(FileBackend::new(path).expect("backend"));
        Store::open(backend, small_config()).expect("open")
    };
    let store = open(dir.path());
    let log = store.log("grown").expect("log");
    append_durable(&log, &[b"one"], 1, 0);
    store.shutdown();
    drop((log, store));
    let snapshot = dir.path().join("logs/grown/00000000000000000000.idx");
    assert!(
        snapshot.exists(),
        "a clean stop leaves the active segment's index"
    );
    // Restart, grow the segment, and "crash" with the old snapshot still there.
    let store = open(dir.path());
    let log = store.log("grown").expect("log");
    append_durable(&log, &[b"two"], 2, 0);
    let crashed = tempfile::tempdir().expect("tempdir");
    copy_tree(dir.path(), crashed.path());
    assert!(
        crashed
            .path()
            .join("logs/grown/00000000000000000000.idx")
            .exists()
    );
    store.shutdown();
    let store = open(crashed.path());
    let values: Vec<Vec<u8>> = read_all(&store.log("grown").expect("log"), 0)
        .iter()
        .map(|r| r.value.to_vec())
        .collect();
    assert_eq!(values, [b"one".to_vec(), b"two".to_vec()]);
    store.shutdown();
}

#[test]
fn journaled_batches_reach_the_segment_at_fill_bytes_or_when_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment = |dir: &std::path::Path| {
        let bytes = std::fs::read(dir.join("logs/f/00000000000000000000.seg")).expect("read");
        rivulet_log::decode_segment(&bytes).batches.len()
    };
    let config = StoreConfig {
        fill_bytes: 1000,
        idle_checkpoint_ms: 3_600_000,
        ..StoreConfig::default()
    };
    let store = Store::open(
        Arc::new(FileBackend::new(dir.path()).expect("backend")),
        config,
    )
    .expect("open");
    let log = store.log("f").expect("log");
    // Acknowledged (the journal holds them) but below `fill_bytes`: not in the segment yet.
    for i in 0..3u8 {
        append_durable(&log, &[&[i; 100]], i64::from(i), 0);
    }
    assert_eq!(segment(dir.path()), 0);
    // A read writes them first, and sees them.
    assert_eq!(read_all(&log, 0).len(), 3);
    assert_eq!(segment(dir.path()), 3);
    // Past `fill_bytes`, the journal's writer writes them.
    for i in 3..20u8 {
        append_durable(&log, &[&[i; 100]], i64::from(i), 0);
    }
    assert!(
        segment(dir.path()) >= 3 + 1000 / 140,
        "{}",
        segment(dir.path())
    );
    store.shutdown();
    drop(store);

    // With no room for pending bytes over the store, every group's batches are written at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        Arc::new(FileBackend::new(dir.path()).expect("backend")),
        StoreConfig {
            pending_bytes_max: 0,
            ..config
        },
    )
    .expect("open");
    let log = store.log("f").expect("log");
    for i in 0..3u8 {
        append_durable(&log, &[&[i; 100]], i64::from(i), 0);
        assert_eq!(segment(dir.path()), usize::from(i) + 1);
    }
    store.shutdown();
}

#[test]
fn a_quiet_store_writes_its_pending_batches_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        Arc::new(FileBackend::new(dir.path()).expect("backend")),
        StoreConfig {
            fill_bytes: 1 << 20,
            idle_checkpoint_ms: 20,
            ..StoreConfig::default()
        },
    )
    .expect("open");
    let logs: Vec<_> = (0..3)
        .map(|i| store.log(&format!("q{i}")).expect("log"))
        .collect();
    for (i, log) in logs.iter().enumerate() {
        append_durable(log, &[&[i as u8; 100]], 1, 0);
    }
    // Far below `fill_bytes` and never read: only the idle checkpoint writes them, some 20 ms
    // after the last group (the deadline is for a loaded machine, not the expected wait).
    let written = |i: usize| {
        let path = dir
            .path()
            .join(format!("logs/q{i}/00000000000000000000.seg"));
        std::fs::read(path).map_or(0, |bytes| rivulet_log::decode_segment(&bytes).batches.len())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (0..3).any(|i| written(i) == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pending batches stayed pending"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!((0..3).all(|i| written(i) == 1));
    // The store goes on as before, and the records read back once each.
    append_durable(&logs[0], &[b"after"], 2, 0);
    assert_eq!(read_all(&logs[0], 0).len(), 2);
    store.shutdown();
}

#[test]
fn a_crash_at_any_sync_of_an_idle_checkpoint_loses_nothing_acknowledged() {
    // Both ways a checkpoint syncs segments: one `syncfs` (8 logs ≥ 4), and one by one.
    for all_files_min in [4, 1000] {
        let backend = CrashBackend::new();
        let config = StoreConfig {
            fill_bytes: 1 << 20,
            idle_checkpoint_ms: 20,
            sync_all_files_logs_min: all_files_min,
            ..small_config()
        };
        let store = Store::open(Arc::new(backend.clone()), config).expect("open");
        let logs: Vec<_> = (0..8)
            .map(|i| store.log(&format!("q{i}")).expect("log"))
            .collect();
        backend.record_durable_images(true);
        for round in 0..3u8 {
            for (i, log) in logs.iter().enumerate() {
                append_durable(log, &[&[i as u8, round]], i64::from(round), 0);
            }
        }
        // Every image from here on was taken after the last acknowledgement.
        let acknowledged = backend.durable_images_recorded();
        // Far below `fill_bytes` and never read: only the idle checkpoint puts the batches in
        // the segments durably (the deadline is for a loaded machine).
        let segment_batches = |image: &CrashBackend, i: usize| {
            image
                .read_file(&format!("logs/q{i}/00000000000000000000.seg"))
                .map_or(0, |bytes| rivulet_log::decode_segment(&bytes).batches.len())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while (0..8).any(|i| segment_batches(&backend.snapshot(), i) < 3) {
            assert!(std::time::Instant::now() < deadline, "no idle checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        backend.record_durable_images(false);
        store.shutdown();
        drop(store);
        let images = backend.take_durable_images();
        assert!(
            images.len() > acknowledged,
            "the idle checkpoint synced nothing"
        );
        // A crash at any sync: each log holds a prefix of its batches, in order, and all of
        // them from the last acknowledgement on.
        let reopen = StoreConfig {
            idle_checkpoint_ms: 3_600_000,
            ..config
        };
        for (n, image) in images.into_iter().enumerate() {
            let store = Store::open(Arc::new(image), reopen).expect("reopen");
            for i in 0..8 {
                let records = read_all(&store.log(&format!("q{i}")).expect("log"), 0);
                let values: Vec<Vec<u8>> = records.iter().map(|r| r.value.to_vec()).collect();
                let expected: Vec<Vec<u8>> = (0..3u8).map(|round| vec![i as u8, round]).collect();
                if n >= acknowledged {
                    assert_eq!(values, expected, "image {n}, log q{i}");
                } else {
                    assert_eq!(values, expected[..values.len()], "image {n}, log q{i}");
                }
            }
            store.shutdown();
        }
    }
}

#[test]
fn after_a_failure_the_journal_keeps_what_only_it_holds() {
    let backend = CrashBackend::new();
    // Below `fill_bytes`: the acknowledged batch is in the journal and in memory only.
    let config = StoreConfig {
        fill_bytes: 1 << 20,
        ..small_config()
    };
    let store = Store::open(Arc::new(backend.clone()), config).expect("open");
    let log = store.log("held").expect("log");
    append_durable(&log, &[b"first"], 1, 0);
    backend.set_fail_syncs(true);
    let second = append_one(&log, b"second", 2);
    assert!(second.durable.wait_blocking().is_err());
    backend.set_fail_syncs(false);
    // The stop cannot retire the journal: the failed log's acknowledged batch is only there.
    store.shutdown();
    drop(store);
    let image = backend.snapshot();
    assert!(!journal_files(&image).is_empty());
    let store = Store::open(Arc::new(image), config).expect("reopen");
    let values: Vec<Vec<u8>> = read_all(&store.log("held").expect("log"), 0)
        .iter()
        .map(|r| r.value.to_vec())
        .collect();
    assert_eq!(values, vec![b"first".to_vec()]);
}

/// A request's appends to many logs wait as one set: done once the groups holding them are
/// synced, and failed (nothing acknowledged) when the journal's sync fails.
#[test]
fn a_set_of_appends_to_many_logs_waits_for_its_groups() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let backend = CrashBackend::new();
    let store = Store::open(Arc::new(backend.clone()), small_config()).expect("open");
    let logs: Vec<_> = (0..50)
        .map(|i| store.log(&format!("set/{i}")).expect("log"))
        .collect();
    // Each log's `round`-th append (from 0), so its offset is `round`; whether a reader sees
    // it yet depends on the writer's timing, not asserted here.
    let append_all = |value: &[u8], round: u64| {
        let record = [rivulet_log::NewRecord { key: b"k", value }];
        let mut set = rivulet_log::DurableSet::new();
        let timestamp_ms = round as i64 + 1;
        for log in &logs {
            let (first, stored_ms) = log.append_to(&record, timestamp_ms, None, &mut set)?;
            assert_eq!(stored_ms, timestamp_ms);
            assert_eq!(first, round);
        }
        Ok::<_, rivulet_log::LogError>(set)
    };
    let set = append_all(b"one", 0).expect("append");
    runtime.block_on(set.wait()).expect("durable");
    // Each log published its end: a reader sees the record.
    for log in &logs {
        assert_eq!(&read_all(log, 0)[0].value[..], b"one");
    }
    // Acknowledged means synced: a crash image taken now holds every record.
    let image = backend.snapshot();
    let reopened = Store::open(Arc::new(image), small_config()).expect("reopen");
    for i in 0..50 {
        assert_eq!(
            read_all(&reopened.log(&format!("set/{i}")).expect("log"), 0).len(),
            1
        );
    }
    drop(reopened);
    backend.set_fail_syncs(true);
    // Refused at once, or once its group's sync fails (the journal fails for good then).
    let failed = append_all(b"two", 1).and_then(|set| runtime.block_on(set.wait()));
    assert!(failed.is_err(), "{failed:?}");
    backend.set_fail_syncs(false);
}

/// The journal's writer publishes groups, not logs: a log's durable end is settled when it is
/// read, and the writer settles only watched logs. A watch made before the appends, or while
/// they are in flight, sees each one become durable without any read.
#[test]
fn a_watched_log_sees_its_appends_become_durable_without_a_read() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let backend = CrashBackend::new();
    let store = Store::open(Arc::new(backend.clone()), small_config()).expect("open");
    let log = store.log("watched").expect("log");
    let mut early = log.watch_end().expect("watch_end");
    assert_eq!(*early.borrow_and_update(), 0);
    runtime.block_on(async {
        for round in 1..=3u64 {
            let appended = append_one(&log, b"v", round as i64);
            // Made while the append may be in flight.
            let late = log.watch_end().expect("watch_end");
            // Waits on the group, which settles no log.
            appended.durable.wait().await.expect("durable");
            for watch in [&early, &late] {
                let mut watch = watch.clone();
                let woken = async move { *watch.wait_for(|end| *end >= round).await.expect("w") };
                // Bounded only so that a missed wake-up fails instead of hanging.
                let limit = std::time::Duration::from_secs(60);
                let seen = tokio::time::timeout(limit, woken).await;
                assert_eq!(seen.expect("the watch was woken"), round);
            }
            assert_eq!(log.end_offset().expect("end"), round);
        }
    });
    drop(early);
    store.shutdown();
}
