//! The dense read path (`rivulet_cluster::dense`) on a real JetStream server: every shard of
//! a 64-shard stream read at once, as a KCL application does, gets exactly its records in
//! order, served from the stream's window (one read of the stream) rather than one read per
//! shard; a reader far behind or near the end is told to read its shard alone.

use std::sync::Arc;
use std::time::Duration;

use rivulet_cluster::dense::{Dense, DenseStream};
use rivulet_cluster::records::JetStreamRecords;
use rivulet_cluster::servers::NatsCluster;
use rivulet_log::NewRecord;

const SHARDS: u32 = 64;
const PER_SHARD: usize = 100;

fn value(shard: u32, n: usize) -> Vec<u8> {
    format!("r-{shard}-{n}").into_bytes()
}

/// Reads `shard` to its end, through the window where it can and alone where it says so;
/// returns the values in order and how many pages the window served.
async fn read_shard(
    store: &JetStreamRecords,
    dense: &DenseStream,
    shard: u32,
    limit: usize,
    known_end: u64,
) -> (Vec<Vec<u8>>, usize) {
    let mut from = 1;
    let mut out = Vec::new();
    let mut dense_pages = 0;
    loop {
        match dense
            .read(shard, from, (limit, 1 << 20), known_end, None)
            .await
        {
            Dense::Page { records, next } => {
                assert!(!records.is_empty(), "a page from the window is never empty");
                assert!(next > records.last().map_or(0, |r| r.position));
                assert!(records.first().is_some_and(|r| r.position >= from));
                dense_pages += 1;
                out.extend(records.into_iter().map(|r| r.value.to_vec()));
                from = next;
            }
            Dense::Alone { from: at } => {
                assert!(at >= from);
                let page = store
                    .read("w", shard, at, limit, 1 << 20)
                    .await
                    .expect("read alone");
                if page.records.is_empty() {
                    return (out, dense_pages);
                }
                out.extend(page.records.iter().map(|r| r.value.to_vec()));
                from = page.next;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_read_at_once_comes_from_one_read_of_the_stream() {
    let cluster = NatsCluster::start(1).await.expect("start nats");
    let client = cluster.connect().await.expect("connect");
    let store = JetStreamRecords::new(client, "riv", 1);
    store
        .create("w", Duration::from_secs(3600))
        .await
        .expect("create");
    // Puts of 4 records to every shard, interleaving the shards as random keys do.
    let mut last = 0;
    for round in 0..PER_SHARD / 4 {
        let values: Vec<Vec<Vec<u8>>> = (0..SHARDS)
            .map(|shard| (0..4).map(|i| value(shard, round * 4 + i)).collect())
            .collect();
        let records: Vec<Vec<NewRecord<'_>>> = values
            .iter()
            .map(|values| {
                values
                    .iter()
                    .map(|value| NewRecord { key: b"k", value })
                    .collect()
            })
            .collect();
        let shards: Vec<(u32, &[NewRecord<'_>])> = (0..SHARDS)
            .map(|shard| (shard, records[shard as usize].as_slice()))
            .collect();
        let positions = store
            .put("w", &shards, 1, &format!("put-{round}"))
            .await
            .expect("put");
        last = positions.iter().flatten().copied().max().unwrap_or(last);
    }
    assert_eq!(last, u64::from(SHARDS) * PER_SHARD as u64);

    // Every shard at once, pages of 30 records, no end known (a node that wrote nothing).
    let dense = Arc::new(DenseStream::new(store.clone(), "w", Arc::default()));
    for _ in 0..SHARDS {
        dense.count_shard(true);
    }
    let mut readers = Vec::new();
    for shard in 0..SHARDS {
        let (store, dense) = (store.clone(), dense.clone());
        readers.push(tokio::spawn(async move {
            read_shard(&store, &dense, shard, 30, 0).await
        }));
    }
    let mut served = 0;
    for (shard, reader) in readers.into_iter().enumerate() {
        let (values, pages) = reader.await.expect("reader");
        let want: Vec<Vec<u8>> = (0..PER_SHARD).map(|n| value(shard as u32, n)).collect();
        assert_eq!(values, want, "shard {shard}");
        served += pages;
    }
    // 100 records in pages of 30: 4 pages a shard, nearly all from the window.
    assert!(
        served >= (SHARDS as usize) * 3,
        "{served} pages from the window"
    );

    // A reader near its shard's known end reads alone.
    assert!(matches!(
        dense
            .read(3, last - 10, (30, 1 << 20), last + 1, None)
            .await,
        Dense::Alone { .. }
    ));
    cluster.stop().await.expect("stop");
}
