//! The engine's storage seam on a real R3 cluster: a put that lands on a shard after another
//! node closed it is reported late (its entries fail, nothing readable is lost), a put before
//! the close is read back below the shard's end; a reader's start (oldest, by time) never lies
//! after a record arriving while it is asked for.

use std::time::Duration;

use rivulet_cluster::servers::NatsCluster;
use rivulet_cluster::store::ClusterStore;
use rivulet_engine::storage::{RecordStore, ShardWrite};
use rivulet_log::NewRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_after_its_shard_closed_is_late_and_one_before_is_read() {
    let cluster = NatsCluster::start(3).await.expect("start nats");
    let settings = cluster.settings("n", "rst");
    let store = ClusterStore::open(&settings).await.expect("open");
    let parent = store.log("s.1/shardId-000000000000").expect("log");
    let other = store.log("s.1/shardId-000000000001").expect("log");
    let records = [NewRecord {
        key: b"k",
        value: b"v",
    }];
    let put = |logs: Vec<std::sync::Arc<dyn rivulet_engine::storage::ShardLog>>| {
        let store = store.clone();
        async move {
            let writes: Vec<ShardWrite<'_>> = logs
                .iter()
                .map(|log| ShardWrite {
                    log: &**log,
                    records: &records,
                    seal: None,
                })
                .collect();
            let pending = store.put(&writes, 1_700_000_000_000).expect("put");
            pending.await.expect("durable")
        }
    };
    let before = put(vec![parent.clone(), other.clone()]).await;
    assert!(before.iter().all(|placed| !placed.late));
    // Closing happens on a tokio thread in the engine; here too.
    let closing = parent.clone();
    let end = tokio::task::spawn_blocking(move || closing.close())
        .await
        .expect("join")
        .expect("close");
    let first = before[0].offsets.at(0).expect("a position");
    assert!(
        first < end,
        "the record put before the close is below the end"
    );
    // A node whose metadata is behind writes to the closed shard and to an open one.
    let after = put(vec![parent.clone(), other.clone()]).await;
    assert!(after[0].late, "the closed shard's records are late");
    assert!(!after[1].late, "the open shard's records are not");
    // The reader of the closed shard sees the record from before, and reaches the end.
    let read = parent.read(1, 100, 1 << 20).await.expect("read");
    let below: Vec<u64> = read
        .records
        .iter()
        .map(|r| r.offset)
        .filter(|&offset| offset < end)
        .collect();
    assert_eq!(below, [first]);
    assert_eq!(parent.closed_end(end).await.expect("end"), end);
    // TRIM_HORIZON on a fresh shard while its first record arrives: the iterator's start
    // is never after that record.
    for shard in 100..130 {
        let log = store.log(&format!("s.1/shardId-{shard:012}")).expect("log");
        let (start, placed) = tokio::join!(log.start_offset(), put(vec![log.clone()]));
        let start = start.expect("start");
        let position = placed[0].offsets.at(0).expect("a position");
        assert!(
            start <= position,
            "shard {shard}: start {start} > {position}"
        );
    }
    // AT_TIMESTAMP the same way: a record stored after the time is never skipped.
    for shard in 200..230 {
        let log = store.log(&format!("s.1/shardId-{shard:012}")).expect("log");
        let an_hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            - 3_600_000;
        let (start, placed) =
            tokio::join!(log.offset_at_timestamp(an_hour_ago), put(vec![log.clone()]));
        let start = start.expect("start");
        let position = placed[0].offsets.at(0).expect("a position");
        assert!(
            start <= position,
            "shard {shard}: start {start} > {position}"
        );
    }
    store.shutdown();
    cluster.stop().await.expect("stop");
}

/// A synchronous seam call (here a metadata compare-and-set) made while the engine holds a
/// stream's lock completes even when every thread of the serving runtime is blocked waiting
/// for that lock: the NATS answer it waits for is read on the node's NATS runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_seam_call_needs_no_serving_thread() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let cluster = NatsCluster::start(1).await.expect("start nats");
    let settings = cluster.settings("n", "rbl");
    let store = ClusterStore::open(&settings).await.expect("open");
    let lock = Arc::new(parking_lot::RwLock::new(()));
    let done = Arc::new(AtomicBool::new(false));
    let holder = {
        let (lock, store, done) = (lock.clone(), store.clone(), done.clone());
        tokio::spawn(async move {
            let _read = lock.read();
            // Meanwhile the other worker blocks on the lock.
            std::thread::sleep(Duration::from_millis(300));
            let stored = store.meta().create_if_absent("k", b"v").expect("stored");
            assert_eq!(stored, b"v");
            done.store(true, Ordering::SeqCst);
        })
    };
    for _ in 0..3 {
        let lock = lock.clone();
        tokio::spawn(async move {
            drop(lock.write());
        });
    }
    // Watched from this thread (not a worker): the runtime's own timers may not run.
    let start = std::time::Instant::now();
    while !done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        done.load(Ordering::SeqCst),
        "the call waited for a serving thread"
    );
    holder.await.expect("holder");
    store.shutdown();
    cluster.stop().await.expect("stop");
}
