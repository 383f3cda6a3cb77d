//! Group commit: concurrent appends share syncs, and all of them become durable.

use std::sync::Arc;
use std::time::Instant;

use rivulet_log::{FileBackend, NewRecord, Store, StoreConfig};

use crate::util::read_all;

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 100;

#[test]
fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(FileBackend::new(dir.path()).expect("backend"));
    let store = Store::open(backend, StoreConfig::default()).expect("open");
    let log = store.log("hot").expect("log");
    let syncs_before = store.sync_count();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..APPENDS_PER_THREAD {
                    let value = format!("{t}:{i}");
                    let record = NewRecord {
                        key: b"k",
                        value: value.as_bytes(),
                    };
                    let appended = log.append(&[record], 1, 0).expect("append");
                    appended.durable.wait_blocking().expect("durable");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let appends = (THREADS * APPENDS_PER_THREAD) as u64;
    let syncs = store.sync_count() - syncs_before;
    assert_eq!(log.end_offset().expect("end_offset"), appends);
    let records = read_all(&log, 0);
    assert_eq!(records.len() as u64, appends);
    // Each writer waits for its append before the next, so up to THREADS appends share a sync.
    assert!(syncs * 2 < appends, "{syncs} syncs for {appends} appends");

    // A pipelining writer: many appends, one wait at the end, a handful of syncs.
    let before = store.sync_count();
    let value = [5u8; 100];
    let batch: Vec<NewRecord<'_>> = (0..500)
        .map(|_| NewRecord {
            key: b"key",
            value: &value,
        })
        .collect();
    let started = Instant::now();
    let mut last = None;
    for _ in 0..200 {
        last = Some(log.append(&batch, 2, 0).expect("append"));
    }
    let per_append = started.elapsed() / 200;
    if let Some(appended) = last {
        appended.durable.wait_blocking().expect("durable");
    }
    let syncs = store.sync_count() - before;
    assert!(syncs < 50, "{syncs} syncs for 200 pipelined appends");
    eprintln!("500-record append: {per_append:?} each, {syncs} syncs for 200");
    store.shutdown();
}

#[test]
fn volatile_store_appends_are_durable_at_once() {
    // An in-memory store has nothing to sync: appends complete without a sync thread, and
    // reads see them immediately.
    let store = Store::open(
        Arc::new(rivulet_log::MemBackend::new()),
        StoreConfig::default(),
    )
    .expect("open");
    let log = store.log("mem").expect("log");
    for i in 0..50u32 {
        let value = i.to_be_bytes();
        let record = NewRecord {
            key: b"k",
            value: &value,
        };
        let appended = log.append(&[record], 1, 0).expect("append");
        assert!(
            appended.durable.is_durable(),
            "append {i} not durable at once"
        );
        assert_eq!(log.end_offset().expect("end_offset"), u64::from(i) + 1);
    }
    assert_eq!(store.sync_count(), 0);
    assert_eq!(read_all(&log, 0).len(), 50);

    // A crash model is not volatile: its appends wait for a sync like on disk.
    let crash = rivulet_log::CrashBackend::new();
    let store = Store::open(Arc::new(crash.clone()), StoreConfig::default()).expect("open");
    let log = store.log("crashy").expect("log");
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
    appended.durable.wait_blocking().expect("durable");
    assert!(store.sync_count() >= 1);
    crash.crash();
    let recovered = Store::open(Arc::new(crash), StoreConfig::default()).expect("reopen");
    assert_eq!(
        recovered
            .log("crashy")
            .expect("log")
            .end_offset()
            .expect("end_offset"),
        1
    );
}

#[test]
fn appends_to_many_logs_share_journal_syncs() {
    // The sync cost of a request does not grow with the logs it touches: one journal sync
    // covers every log with an append waiting.
    const LOGS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(FileBackend::new(dir.path()).expect("backend"));
    let store = Store::open(backend, StoreConfig::default()).expect("open");
    let logs: Vec<_> = (0..LOGS)
        .map(|i| store.log(&format!("wide/{i}")).expect("log"))
        .collect();
    let before = store.sync_count();
    let record = NewRecord {
        key: b"k",
        value: &[7u8; 100],
    };
    for round in 0..5 {
        let pending: Vec<_> = logs
            .iter()
            .map(|log| log.append(&[record], round, 0).expect("append"))
            .collect();
        for appended in pending {
            appended.durable.wait_blocking().expect("durable");
        }
    }
    let syncs = store.sync_count() - before;
    let appends = (5 * LOGS) as u64;
    assert!(
        syncs * 10 < appends,
        "{syncs} syncs for {appends} appends over {LOGS} logs"
    );
    for log in &logs {
        assert_eq!(read_all(log, 0).len(), 5);
    }
    store.shutdown();
}
