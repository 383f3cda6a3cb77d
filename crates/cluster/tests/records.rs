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
    let client = cluster.connect().await.expect("connect");
    let store = JetStreamRecords::new(client.clone(), "riv", 3);
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

    // Any replica may answer a read: all of them hold what was acknowledged.
    cluster
        .wait_current(&client, "riv_D_s1")
        .await
        .expect("replicas");
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
    cluster
        .wait_current(&client, "riv_D_s1")
        .await
        .expect("replicas");
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
    assert_eq!(store.trim("s1", 2, 0).await.expect("trim nothing"), 0);
    cluster
        .wait_current(&client, "riv_D_s1")
        .await
        .expect("replicas");
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

    // A retention trim purges what the stream stored before its cutoff, never a record
    // stored at or after it, even one arriving while it looks: on fresh shards, each put
    // races a trim whose cutoff is an hour back (a new stream's first tick does this).
    for shard in 100..130u32 {
        let request = format!("race-{shard}");
        let writes = [(shard, &shard2[..])];
        let put = store.put("s1", &writes, now_ms(), &request);
        let trim = store.trim_older_than("s1", shard, now_ms() - 3_600_000);
        let (put, trim) = tokio::join!(put, trim);
        put.expect("put");
        assert_eq!(trim.expect("trim"), 0, "shard {shard}");
    }
    cluster
        .wait_current(&client, "riv_D_s1")
        .await
        .expect("replicas");
    for shard in 100..130u32 {
        let page = store.read("s1", shard, 1, 10, 1 << 20).await.expect("read");
        assert_eq!(page.records.len(), 1, "shard {shard} lost its record");
    }
    // Everything stored before the cutoff goes (the first found at or after it stays).
    store
        .put("s1", &[(11, &shard2[..])], now_ms(), "old-11")
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.trim_older_than("s1", 11, cutoff).await.expect("trim"),
        1
    );
    store
        .put("s1", &[(11, &shard2[..])], now_ms(), "new-11")
        .await
        .expect("put");
    assert_eq!(
        store.trim_older_than("s1", 11, cutoff).await.expect("trim"),
        0
    );
    cluster
        .wait_current(&client, "riv_D_s1")
        .await
        .expect("replicas");
    let left = store.read("s1", 11, 1, 10, 1 << 20).await.expect("read");
    assert_eq!(left.records.len(), 1);
    // AT_TIMESTAMP: before the shard's records, at its first; past all of them, even past
    // what the server's clock represents (the year 3000, which a direct get answers with the
    // subject's first message), after its last.
    let only = left.records[0].position;
    assert_eq!(
        store.start_at_time("s1", 11, 0).await.expect("start"),
        Some(only)
    );
    for at_ms in [now_ms() + 3_600_000, 32_503_680_000_000] {
        assert_eq!(
            store.start_at_time("s1", 11, at_ms).await.expect("start"),
            Some(only + 1),
            "at {at_ms}"
        );
    }

    // Ids that are not one subject token are refused; a deleted stream's reads fail.
    assert!(matches!(
        store.create("a.b", Duration::from_secs(60)).await,
        Err(RecordError::InvalidId(_))
    ));
    store.delete("s1").await.expect("delete");
    assert!(store.read("s1", 7, 1, 10, 1 << 20).await.is_err());
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_and_duplicates_no_acknowledged_record() {
    let mut cluster = NatsCluster::start(3).await.expect("start nats");
    let client = cluster.connect().await.expect("connect");
    let store =
        JetStreamRecords::new(client.clone(), "riv", 3).with_timeout(Duration::from_secs(2));
    store
        .create("busy", Duration::from_secs(3600))
        .await
        .expect("create");
    const SHARDS: u32 = 4;
    let payloads: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("record-{i}").into_bytes())
        .collect();
    // Acknowledged records: (shard, position, value), in acknowledgment order.
    let mut acknowledged: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    let mut failed = 0;
    let mut killed_at = None;
    let mut resumed_after = None;
    for request in 0..120 {
        if request == 40 {
            let leader = cluster
                .stream_leader(&client, "riv_D_busy")
                .await
                .expect("leader");
            let index = cluster.index_of(&leader).expect("a known server");
            cluster.kill(index).await.expect("kill the leader");
            killed_at = Some((index, std::time::Instant::now()));
        }
        if request == 100
            && let Some((index, _)) = killed_at
        {
            cluster.restart(index).await.expect("restart");
        }
        // 50 records over the shards, each request's own values.
        let values: Vec<Vec<u8>> = payloads
            .iter()
            .map(|p| [p.as_slice(), format!("/{request}").as_bytes()].concat())
            .collect();
        let per_shard: Vec<Vec<NewRecord<'_>>> = (0..SHARDS)
            .map(|shard| {
                values
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i as u32 % SHARDS == shard)
                    .map(|(_, value)| NewRecord { key: b"k", value })
                    .collect()
            })
            .collect();
        let shards: Vec<(u32, &[NewRecord<'_>])> = per_shard
            .iter()
            .enumerate()
            .map(|(shard, records)| (shard as u32, records.as_slice()))
            .collect();
        match store
            .put("busy", &shards, now_ms(), &format!("w-{request}"))
            .await
        {
            Ok(positions) => {
                if let Some((_, at)) = killed_at
                    && resumed_after.is_none()
                {
                    resumed_after = Some(at.elapsed());
                }
                for ((shard, records), positions) in shards.iter().zip(positions) {
                    for (record, position) in records.iter().zip(positions) {
                        acknowledged.push((*shard, position, record.value.to_vec()));
                    }
                }
            }
            Err(_) => failed += 1,
        }
    }
    let resumed = resumed_after.expect("writes resumed after the kill");
    eprintln!(
        "resumed after {resumed:?}; {failed} puts failed; {} records acknowledged",
        acknowledged.len()
    );
    // A new leader comes after NATS's election timeout, random in 4-9 s (measured here:
    // 4.7 and 5.8 s); the bound leaves room for a repeated election on a loaded machine.
    assert!(
        resumed < Duration::from_secs(15),
        "writes resumed after {resumed:?}"
    );
    // Puts fail only while no leader is elected (about a second of puts each).
    assert!(acknowledged.len() >= 50 * 60, "{failed} puts failed");

    // Every shard, read whole (once every replica, the restarted one too, has caught up): each
    // acknowledged record at its position, nothing twice, in acknowledgment order.
    cluster
        .wait_current(&client, "riv_D_busy")
        .await
        .expect("replicas");
    for shard in 0..SHARDS {
        let mut stored = Vec::new();
        let mut from = 1;
        loop {
            let page = store
                .read("busy", shard, from, 500, 8 << 20)
                .await
                .expect("read");
            stored.extend(page.records.iter().map(|r| (r.position, r.value.to_vec())));
            from = page.next;
            if page.pending == 0 {
                break;
            }
        }
        let mut values: Vec<&Vec<u8>> = stored.iter().map(|(_, v)| v).collect();
        values.sort();
        values.dedup();
        assert_eq!(
            values.len(),
            stored.len(),
            "shard {shard} holds a record twice"
        );
        let expected: Vec<(u64, Vec<u8>)> = acknowledged
            .iter()
            .filter(|(s, _, _)| *s == shard)
            .map(|(_, position, value)| (*position, value.clone()))
            .collect();
        let kept: Vec<(u64, Vec<u8>)> = stored
            .iter()
            .filter(|record| expected.contains(record))
            .cloned()
            .collect();
        assert_eq!(
            kept, expected,
            "shard {shard}: acknowledged records lost or out of order"
        );
    }
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_puts_fail_and_never_falsely_succeed_then_recover() {
    let mut cluster = NatsCluster::start(3).await.expect("start nats");
    let store = JetStreamRecords::new(cluster.connect().await.expect("connect"), "riv", 3)
        .with_timeout(Duration::from_secs(2));
    store
        .create("q", Duration::from_secs(3600))
        .await
        .expect("create");
    let record = [NewRecord {
        key: b"k",
        value: b"before",
    }];
    store
        .put("q", &[(0, &record)], now_ms(), "before")
        .await
        .expect("a put with a quorum");

    // Two of three servers gone: no quorum, so no acknowledgement.
    cluster.kill(1).await.expect("kill");
    cluster.kill(2).await.expect("kill");
    let lost = [NewRecord {
        key: b"k",
        value: b"no-quorum",
    }];
    let refused = store.put("q", &[(0, &lost)], now_ms(), "no-quorum").await;
    assert!(
        matches!(refused, Err(RecordError::Unavailable(_))),
        "{refused:?}"
    );

    // A second server back: puts succeed again (once a leader is elected).
    cluster.restart(1).await.expect("restart");
    let after = [NewRecord {
        key: b"k",
        value: b"after",
    }];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let positions = loop {
        match store.put("q", &[(0, &after)], now_ms(), "after").await {
            Ok(positions) => break positions,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "no recovery: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    // The replica that answers may still be catching up: read until it has.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = store.read("q", 0, 1, 10, 1 << 20).await.expect("read");
        let values: Vec<&[u8]> = page.records.iter().map(|r| &r.value[..]).collect();
        if values.last() == Some(&&b"after"[..]) {
            assert_eq!(values.first(), Some(&&b"before"[..]));
            assert_eq!(
                page.records.last().map(|r| r.position),
                Some(positions[0][0])
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never read back: {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop().await.expect("stop");
}
