//! The cluster's record store on a real 3-server R3 cluster: puts over many shards as one
//! batch, positions increasing per shard, reads in pages, idempotent retries, positions by
//! time, trims.

use std::time::Duration;

use rivulet_cluster::records::{JetStreamRecords, RecordError};
use rivulet_cluster::servers::NatsCluster;
use rivulet_log::NewRecord;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_put_read_retried_found_by_time_and_trimmed() {
    let cluster = NatsCluster::start(3).await.expect("start nats");
    let store = JetStreamRecords::new(cluster.connect().await.expect("connect"), "riv", 3);
    store
        .create("s1", Duration::from_secs(3600))
        .await
        .expect("create");

    // Keys of any bytes; shard 7 and shard 2 in one put.
    let odd_key: &[u8] = b"line\r\nbreak\xff";
    let values: Vec<Vec<u8>> = (0..3).map(|i| format!("v7-{i}").into_bytes()).collect();
    let shard7: Vec<NewRecord<'_>> = values
        .iter()
        .map(|value| NewRecord {
            key: odd_key,
            value,
        })
        .collect();
    let shard2 = [NewRecord {
        key: b"k2",
        value: b"v2-0",
    }];
    let at = now_ms();
    let first = store
        .put("s1", &[(7, &shard7), (2, &shard2)], at, "req-1")
        .await
        .expect("put");
    assert_eq!(first, vec![vec![1, 2, 3], vec![4]]);
    let second = store
        .put(
            "s1",
            &[(2, &shard2[..]), (7, &shard7[..1])],
            at + 1,
            "req-2",
        )
        .await
        .expect("put");
    assert_eq!(second, vec![vec![5], vec![6]]);

    // A retried put (same request id) stores nothing again and answers the same positions.
    let retried = store
        .put("s1", &[(7, &shard7), (2, &shard2)], at, "req-1")
        .await
        .expect("retried put");
    assert_eq!(retried, first);

    // Shard 7 in pages of two: its records only, in order, as written.
    let page = store.read("s1", 7, 1, 2, 1 << 20).await.expect("read");
    assert_eq!(
        page.records.iter().map(|r| r.position).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(page.pending, 2);
    assert_eq!(&page.records[0].key[..], odd_key);
    assert_eq!(&page.records[1].value[..], b"v7-1");
    assert_eq!(page.records[0].arrival_ms, at);
    let rest = store
        .read("s1", 7, page.next, 10, 1 << 20)
        .await
        .expect("read");
    assert_eq!(
        rest.records.iter().map(|r| r.position).collect::<Vec<_>>(),
        [3, 6]
    );
    assert_eq!((rest.pending, rest.next), (0, 7));
    let end = store
        .read("s1", 7, rest.next, 10, 1 << 20)
        .await
        .expect("read");
    assert!(end.records.is_empty());
    assert_eq!(end.next, 7);

    // By time: the first record of shard 2 stored after a moment between two puts.
    let between = now_ms() + 1;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = store
        .put("s1", &[(2, &shard2[..])], now_ms(), "req-3")
        .await
        .expect("put");
    let found = store.position_at("s1", 2, between).await.expect("by time");
    assert_eq!(found, Some(third[0][0]));
    assert_eq!(
        store.position_at("s1", 7, between).await.expect("by time"),
        None
    );
    assert_eq!(
        store.position_at("s1", 2, 0).await.expect("by time"),
        Some(4)
    );

    // Trimming shard 2 before its last record leaves shard 7 whole.
    assert_eq!(store.trim("s1", 2, third[0][0]).await.expect("trim"), 2);
    let shard2_left = store.read("s1", 2, 1, 10, 1 << 20).await.expect("read");
    assert_eq!(
        shard2_left
            .records
            .iter()
            .map(|r| r.position)
            .collect::<Vec<_>>(),
        [third[0][0]]
    );
    assert_eq!(
        store
            .read("s1", 7, 1, 10, 1 << 20)
            .await
            .expect("read")
            .records
            .len(),
        4
    );

    // Ids that are not one subject token are refused; a deleted stream's reads fail.
    assert!(matches!(
        store.create("a.b", Duration::from_secs(60)).await,
        Err(RecordError::InvalidId(_))
    ));
    store.delete("s1").await.expect("delete");
    assert!(store.read("s1", 7, 1, 10, 1 << 20).await.is_err());
    cluster.stop().await.expect("stop");
}
