//! Delivery on an in-memory engine with a controlled clock and an in-memory object store that
//! can fail on purpose: each record once across failed writes (before and after the object
//! landed), parents before children across a split, and where a channel starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rivulet_engine::channels::{CreateChannel, S3Storage};
use rivulet_engine::{
    ChannelStatus, CreateStream, Engine, EngineConfig, PutEntry, StreamMode, StreamTarget,
};
use rivulet_log::{MemBackend, Store, StoreConfig};

use crate::sink::{ObjectStore, PutOptions, StoreFuture};
use crate::{Delivery, Settings};

const T0: i64 = 1_800_000_000_000;
const OWNER: &str = "000000000000";

/// How the next `put` fails.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    None,
    /// Refused: nothing stored.
    Before,
    /// Stored, then reported as failed (a crash after the write, before the checkpoint).
    After,
}

#[derive(Default)]
struct MemBuckets {
    objects: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    failure: Mutex<Option<Failure>>,
    puts: Mutex<usize>,
}

impl ObjectStore for MemBuckets {
    fn check_bucket<'a>(&'a self, bucket: &'a str, _owner: &'a str) -> StoreFuture<'a> {
        Box::pin(async move {
            if bucket == "lake" {
                Ok(())
            } else {
                Err(format!("The specified bucket does not exist: {bucket}."))
            }
        })
    }
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: Vec<u8>,
        _options: &'a PutOptions,
    ) -> StoreFuture<'a> {
        Box::pin(async move {
            *self.puts.lock() += 1;
            let failure = self.failure.lock().take().unwrap_or(Failure::None);
            if failure == Failure::Before {
                return Err("refused".into());
            }
            self.objects
                .lock()
                .insert((bucket.to_string(), key.to_string()), body);
            if failure == Failure::After {
                return Err("stored, then the node stopped".into());
            }
            Ok(())
        })
    }
}

impl MemBuckets {
    /// Every delivered line (JSON records), in key order.
    fn lines(&self) -> Vec<String> {
        self.objects
            .lock()
            .iter()
            .filter(|((_, key), _)| !key.contains("/errors/"))
            .flat_map(|(_, body)| {
                String::from_utf8_lossy(body)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn engine() -> Arc<Engine> {
    let store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).expect("store");
    Arc::new(
        Engine::open(
            store,
            EngineConfig {
                create_stream_ms: 0,
                delete_stream_ms: 0,
                update_stream_ms: 0,
                ..EngineConfig::default()
            },
        )
        .expect("engine"),
    )
}

fn stream(engine: &Engine, now_ms: i64) {
    engine
        .create_stream(
            CreateStream {
                name: "s".into(),
                shard_count: None,
                mode: Some(StreamMode::OnDemand),
                tags: Vec::new(),
                max_record_size_kib: None,
                record_distribution: None,
                warm_throughput_mibps: None,
            },
            now_ms,
        )
        .expect("stream");
    engine.tick(now_ms + 1).expect("tick");
}

fn channel(engine: &Engine, bucket: &str, now_ms: i64) -> String {
    engine
        .create_channel(
            &CreateChannel {
                name: "c".into(),
                role_arn: format!("arn:aws:iam::{OWNER}:role/delivery"),
                streams: vec![(engine.stream_arn("s"), "JSON".into(), None)],
                s3: Some((
                    Some(300),
                    None,
                    S3Storage {
                        bucket_arn: format!("arn:aws:s3:::{bucket}"),
                        expected_owner: OWNER.into(),
                        key_template: None,
                        storage_class: None,
                        compression: "NONE".into(),
                    },
                )),
                tables: None,
                encryption: None,
                logging: None,
                tags: Vec::new(),
            },
            now_ms,
        )
        .expect("channel")
        .meta
        .id
}

async fn put(engine: &Engine, range: std::ops::Range<usize>, now_ms: i64) {
    let data: Vec<String> = range.map(|i| format!("{{\"i\":{i}}}")).collect();
    let entries: Vec<PutEntry<'_>> = data
        .iter()
        .map(|d| PutEntry {
            partition_key: Some(d),
            explicit_hash_key: None,
            data: d.as_bytes(),
        })
        .collect();
    engine
        .put_records(&StreamTarget::name("s"), &entries, None, true, now_ms)
        .expect("put")
        .finish()
        .await
        .expect("durable");
}

fn numbers(lines: &[String]) -> Vec<u64> {
    let mut numbers: Vec<u64> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("json")["i"]
                .as_u64()
                .expect("i")
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

fn status(engine: &Engine, id: &str, now_ms: i64) -> ChannelStatus {
    engine
        .describe_channel(&engine.channel_arn(id), now_ms)
        .expect("describe")
        .meta
        .status
}

#[tokio::test]
async fn each_record_lands_once_across_failed_writes() {
    let engine = engine();
    let buckets = Arc::new(MemBuckets::default());
    let delivery = Delivery::new(engine.clone(), buckets.clone(), Settings::default());
    stream(&engine, T0);
    put(&engine, 0..10, T0 + 2).await;
    let id = channel(&engine, "lake", T0 + 3);
    delivery.step(T0 + 4).await;
    assert_eq!(status(&engine, &id, T0 + 4), ChannelStatus::Active);
    // Records put before the channel was made are not delivered; these are.
    put(&engine, 10..110, T0 + 5).await;
    delivery.step(T0 + 6).await;
    assert!(buckets.lines().is_empty(), "nothing is due before 300 s");
    // The first write is refused; the next round writes the same object again.
    *buckets.failure.lock() = Some(Failure::Before);
    delivery.step(T0 + 5 + 300_000).await;
    assert!(buckets.lines().is_empty());
    delivery.step(T0 + 5 + 306_000).await;
    assert_eq!(numbers(&buckets.lines()), (10..110).collect::<Vec<_>>());
    // A write that landed but was not checkpointed is written again under the same key.
    put(&engine, 110..200, T0 + 400_000).await;
    *buckets.failure.lock() = Some(Failure::After);
    delivery.step(T0 + 700_000).await;
    let objects_after_crash = buckets.objects.lock().len();
    // A new delivery (a restart) finishes the interrupted flush from its intent.
    let restarted = Delivery::new(engine.clone(), buckets.clone(), Settings::default());
    restarted.step(T0 + 700_100).await;
    assert_eq!(buckets.objects.lock().len(), objects_after_crash);
    assert_eq!(numbers(&buckets.lines()), (10..200).collect::<Vec<_>>());
    // And goes on from the checkpoint.
    put(&engine, 200..250, T0 + 800_000).await;
    restarted.step(T0 + 1_200_000).await;
    assert_eq!(numbers(&buckets.lines()), (10..250).collect::<Vec<_>>());
    // The engine keeps the counters (the board is its extension): 240 records delivered,
    // two failed writes.
    let metrics = restarted.metrics();
    assert_eq!(metrics[0].records_delivered, 240, "{metrics:?}");
    assert_eq!(metrics[0].failures, 2, "{metrics:?}");
}

#[tokio::test]
async fn a_missing_bucket_fails_the_channel_with_the_reason() {
    let engine = engine();
    let buckets = Arc::new(MemBuckets::default());
    let delivery = Delivery::new(engine.clone(), buckets.clone(), Settings::default());
    stream(&engine, T0);
    let id = channel(&engine, "nowhere", T0 + 3);
    delivery.step(T0 + 4).await;
    let view = engine
        .describe_channel(&engine.channel_arn(&id), T0 + 5)
        .expect("describe");
    assert_eq!(view.meta.status, ChannelStatus::Failed);
    assert_eq!(
        view.meta.reason.as_deref(),
        Some("The specified bucket does not exist: nowhere.")
    );
}

#[tokio::test]
async fn parents_are_delivered_before_their_children() {
    let engine = engine();
    let buckets = Arc::new(MemBuckets::default());
    let delivery = Delivery::new(engine.clone(), buckets.clone(), Settings::default());
    stream(&engine, T0);
    channel(&engine, "lake", T0 + 3);
    delivery.step(T0 + 4).await;
    put(&engine, 0..200, T0 + 5).await;
    // The first shard splits in two while its records wait.
    engine
        .split_shard(
            &StreamTarget::name("s"),
            "shardId-000000000000",
            "42535295865117307932921825928971026432",
            T0 + 7,
        )
        .expect("split");
    engine.tick(T0 + 8).expect("tick");
    put(&engine, 200..400, T0 + 9).await;
    // A round delivers the parents' records (past their freshness) and drains them; the
    // children's records follow in later objects.
    let mut now = T0 + 400_000;
    for _ in 0..5 {
        delivery.step(now).await;
        now += 400_000;
    }
    let objects = buckets.objects.lock().clone();
    let per_object: Vec<Vec<u64>> = objects
        .values()
        .map(|body| {
            numbers(
                &String::from_utf8_lossy(body)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let all: Vec<u64> = {
        let mut all: Vec<u64> = per_object.iter().flatten().copied().collect();
        all.sort_unstable();
        all
    };
    assert_eq!(all, (0..400).collect::<Vec<_>>());
    // Keys end in the object's number, so key order is delivery order: no record of the
    // split shard's children comes before the last of its own records.
    let shard_of = |i: u64| {
        let key = format!("{{\"i\":{i}}}");
        rivulet_engine::hash::partition_hash(&key) <= u128::MAX / 4
    };
    let positions: Vec<(usize, u64)> = per_object
        .iter()
        .enumerate()
        .flat_map(|(n, o)| o.iter().map(move |&i| (n, i)))
        .filter(|&(_, i)| shard_of(i))
        .collect();
    let last_parent = positions.iter().filter(|p| p.1 < 200).map(|p| p.0).max();
    let first_child = positions.iter().filter(|p| p.1 >= 200).map(|p| p.0).min();
    assert!(
        matches!((last_parent, first_child), (Some(p), Some(c)) if p < c),
        "{positions:?}"
    );
}

/// A streaming table on the local SQL catalog: rows that fit land once, the others are dead
/// letters; a delivery redone after its commit (the checkpoint lost) finds its snapshot and
/// does not append again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_gets_each_row_once_even_when_a_delivery_is_redone() {
    use futures_util::TryStreamExt;
    use rivulet_engine::channels::{DeadLetterTarget, TableTarget};

    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("tables/warehouse")).expect("table bucket");
    std::fs::create_dir_all(dir.path().join("schemas/reg")).expect("schemas");
    std::fs::write(
        dir.path().join("schemas/reg/orders.json"),
        r#"{"type": "object", "required": ["id", "at"], "properties": {
            "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
            "item": {"type": "string"}}}"#,
    )
    .expect("schema");
    let tables = Arc::new(crate::tables::Tables::new(crate::tables::TableSettings {
        table_bucket_dir: Some(dir.path().to_path_buf()),
        schema_dir: Some(dir.path().join("schemas")),
        region: "us-east-1".into(),
        ..Default::default()
    }));
    let engine = engine();
    let buckets = Arc::new(MemBuckets::default());
    let delivery = Delivery::new(engine.clone(), buckets.clone(), Settings::default())
        .with_tables(tables.clone());
    stream(&engine, T0);
    let id = engine
        .create_channel(
            &CreateChannel {
                name: "t".into(),
                role_arn: format!("arn:aws:iam::{OWNER}:role/delivery"),
                streams: vec![(
                    engine.stream_arn("s"),
                    "JSON".into(),
                    Some(format!("arn:aws:glue:us-east-1:{OWNER}:schema/reg/orders")),
                )],
                s3: None,
                tables: Some((
                    Some(300),
                    DeadLetterTarget {
                        bucket_arn: "arn:aws:s3:::lake".into(),
                        expected_owner: OWNER.into(),
                        error_prefix: None,
                    },
                    vec![TableTarget {
                        table_bucket_arn: format!(
                            "arn:aws:s3tables:us-east-1:{OWNER}:bucket/tables"
                        ),
                        namespace: "sales".into(),
                        table: "orders".into(),
                        compression: "ZSTD".into(),
                        partition: Some(vec![("TIME_HOUR".into(), "at".into())]),
                    }],
                )),
                encryption: None,
                logging: None,
                tags: Vec::new(),
            },
            T0 + 3,
        )
        .expect("channel")
        .meta
        .id;
    delivery.step(T0 + 4).await;
    assert_eq!(status(&engine, &id, T0 + 4), ChannelStatus::Active);
    let data: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"id": {i}, "at": "2026-12-03T0{}:00:00Z", "item": "x"}}"#,
                i % 3
            )
        })
        .chain([r#"{"item": "no id"}"#.to_string(), "not json".to_string()])
        .collect();
    let entries: Vec<PutEntry<'_>> = data
        .iter()
        .map(|d| PutEntry {
            partition_key: Some(d),
            explicit_hash_key: None,
            data: d.as_bytes(),
        })
        .collect();
    engine
        .put_records(&StreamTarget::name("s"), &entries, None, true, T0 + 5)
        .expect("put")
        .finish()
        .await
        .expect("durable");
    delivery.step(T0 + 400_000).await;
    let meta = engine
        .describe_channel(&engine.channel_arn(&id), T0 + 400_001)
        .expect("describe")
        .meta;
    let count = |table: iceberg::table::Table| async move {
        let batches: Vec<arrow_array::RecordBatch> = table
            .scan()
            .build()
            .expect("scan")
            .to_arrow()
            .await
            .expect("arrow")
            .try_collect()
            .await
            .expect("batches");
        batches.iter().map(|b| b.num_rows()).sum::<usize>()
    };
    assert_eq!(count(tables.table(&meta).await.expect("table")).await, 100);
    let dead = buckets.objects.lock().len();
    assert_eq!(dead, 1, "one dead-letter object");
    assert!(crate::tables::Tables::committed(
        &tables.table(&meta).await.expect("table"),
        &meta,
        0
    ));
    // The checkpoint is lost (the intent is put back, the cursors removed): a new delivery
    // redoes delivery 0, finds its snapshot, and appends nothing.
    let prefix = engine.channel_state_prefix(&id);
    let stored = engine.store().meta().scan_prefix(&prefix).expect("scan");
    let mut ops: Vec<rivulet_log::MetaOp> = stored
        .iter()
        .filter(|(key, _)| key.contains("/c/"))
        .map(|(key, _)| rivulet_log::MetaOp::Delete { key: key.clone() })
        .collect();
    let table = tables.table(&meta).await.expect("table");
    let snapshot = table.metadata().current_snapshot().expect("snapshot");
    let ranges: Vec<(u32, u64, u64)> = serde_json::from_str(
        &snapshot.summary().additional_properties[crate::tables::RANGES_PROPERTY],
    )
    .expect("ranges");
    assert!(ranges.iter().any(|&(_, from, to)| to > from), "{ranges:?}");
    ops.push(rivulet_log::MetaOp::Put {
        key: format!("{prefix}intent"),
        value: serde_json::to_vec(&serde_json::json!({
            "number": 0, "time_ms": T0 + 400_000, "ranges": ranges, "done": []
        }))
        .expect("json"),
    });
    engine.store().meta().commit(&ops).expect("commit");
    let restarted = Delivery::new(engine.clone(), buckets.clone(), Settings::default())
        .with_tables(tables.clone());
    restarted.step(T0 + 800_000).await;
    assert_eq!(count(tables.table(&meta).await.expect("table")).await, 100);
}
