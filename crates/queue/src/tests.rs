//! Delivery on the engine's controlled clock: visibility timeouts to the millisecond,
//! retention, and state loaded again by a fresh process's `Queues`.

use std::sync::Arc;

use rivulet_engine::{
    CreateQueue, CreateStream, Engine, EngineConfig, PutEntry, QueueAttributesInput, StreamMode,
    StreamTarget,
};
use rivulet_log::{MemBackend, Store, StoreConfig};

use crate::{Change, Path, Queues, Received, Take};

const T0: i64 = 1_800_000_000_000;
const HOUR_MS: i64 = 3_600_000;

fn engine() -> Engine {
    let store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).expect("store");
    Engine::open(
        store,
        EngineConfig {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            ..EngineConfig::default()
        },
    )
    .expect("engine")
}

/// An on-demand stream with `records` records put at `T0`, and a TRIM_HORIZON queue on it
/// with a 30 s visibility timeout; returns the queue's ARN.
async fn queue_over(engine: &Engine, records: usize, max_receives: Option<u32>) -> String {
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
            T0 - 10,
        )
        .expect("stream");
    engine.tick(T0 - 5).expect("tick");
    let data: Vec<String> = (0..records).map(|i| format!("r{i}")).collect();
    let entries: Vec<PutEntry<'_>> = data
        .iter()
        .map(|d| PutEntry {
            partition_key: Some(d),
            explicit_hash_key: None,
            data: d.as_bytes(),
        })
        .collect();
    engine
        .put_records(&StreamTarget::name("s"), &entries, None, true, T0)
        .expect("put")
        .finish()
        .await
        .expect("durable");
    let dead_letter = max_receives.map(|m| ("BUILT_IN", Some(m)));
    let view = engine
        .create_queue(
            &CreateQueue {
                name: "q",
                streams: vec![(&engine.stream_arn("s"), Some("TRIM_HORIZON"), None)],
                attributes: QueueAttributesInput {
                    visibility_timeout_s: Some(30),
                    dead_letter,
                },
                tags: Vec::new(),
            },
            T0 + 1,
        )
        .expect("queue");
    engine.tick(T0 + 2).expect("tick");
    view.arn
}

async fn take(queues: &Queues, engine: &Engine, arn: &str, path: Path, now: i64) -> Take {
    queues
        .receive(engine, arn, path, 10, None, now)
        .await
        .expect("receive")
}

fn records(take: Take) -> Vec<Received> {
    match take {
        Take::Records(records) => records,
        Take::Wait(_) => Vec::new(),
    }
}

#[tokio::test]
async fn a_record_comes_back_when_its_timeout_ends_and_not_a_millisecond_before() {
    let engine = engine();
    let arn = queue_over(&engine, 3, None).await;
    let queues = Queues::default();
    let first = records(take(&queues, &engine, &arn, Path::Normal, T0 + 1_000).await);
    assert_eq!(first.len(), 3);
    match take(&queues, &engine, &arn, Path::Normal, T0 + 30_999).await {
        Take::Wait(wake) => assert_eq!(wake.at_ms, Some(T0 + 31_000), "wakes at the timeout"),
        Take::Records(r) => panic!("redelivered early: {r:?}"),
    }
    let again = records(take(&queues, &engine, &arn, Path::Normal, T0 + 31_000).await);
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|r| r.receive_count == 2));
    assert!(again.iter().all(|r| r.first_receive_ms == T0 + 1_000));
    let ids: Vec<&str> = first.iter().map(|r| r.record_id.as_str()).collect();
    assert!(again.iter().all(|r| ids.contains(&r.record_id.as_str())));
    // The first receipts' handles are stale now; the new ones work.
    let stale: Vec<(&str, Change)> = first
        .iter()
        .map(|r| (r.receipt_handle.as_str(), Change::Acknowledge))
        .collect();
    let result = queues
        .change(&engine, &arn, Path::Normal, &stale, T0 + 31_001)
        .await
        .expect("change");
    assert_eq!(result.failed.len(), 3);
    assert!(
        result
            .failed
            .iter()
            .all(|f| f.code == "ResourceNotFoundException")
    );
}

#[tokio::test]
async fn records_past_retention_are_not_delivered_from_the_queue_or_its_dead_letters() {
    let engine = engine();
    let arn = queue_over(&engine, 4, Some(1)).await;
    let queues = Queues::default();
    let got = records(take(&queues, &engine, &arn, Path::Normal, T0 + 1_000).await);
    assert_eq!(got.len(), 4);
    // Two die (MaxReceiveCount 1) when their timeout ends; two are given back at once.
    let back: Vec<(&str, Change)> = got[2..]
        .iter()
        .map(|r| (r.receipt_handle.as_str(), Change::Visibility(0)))
        .collect();
    queues
        .change(&engine, &arn, Path::Normal, &back, T0 + 2_000)
        .await
        .expect("change");
    let dead = records(take(&queues, &engine, &arn, Path::DeadLetter, T0 + 40_000).await);
    assert_eq!(
        dead.len(),
        4,
        "every record received once is dead at MaxReceiveCount 1"
    );
    // 24 hours after they arrived, nothing is delivered, dead or not.
    let late = T0 + 24 * HOUR_MS + 60_000;
    assert!(records(take(&queues, &engine, &arn, Path::DeadLetter, late).await).is_empty());
    assert!(records(take(&queues, &engine, &arn, Path::Normal, late).await).is_empty());
    let counts = queues.metrics(&engine, late).await;
    assert_eq!(
        counts[0].counts.dead, 0,
        "past retention, dropped: {counts:?}"
    );
}

#[tokio::test]
async fn a_new_process_finds_acknowledgements_receipts_and_dead_letters() {
    let engine = engine();
    let arn = queue_over(&engine, 6, Some(2)).await;
    let before = Queues::default();
    let got = records(take(&before, &engine, &arn, Path::Normal, T0 + 1_000).await);
    assert_eq!(got.len(), 6);
    let acked: Vec<(&str, Change)> = got[..2]
        .iter()
        .map(|r| (r.receipt_handle.as_str(), Change::Acknowledge))
        .collect();
    before
        .change(&engine, &arn, Path::Normal, &acked, T0 + 2_000)
        .await
        .expect("ack");
    // Another process: only what was stored.
    let after = Queues::default();
    match take(&after, &engine, &arn, Path::Normal, T0 + 3_000).await {
        Take::Wait(wake) => assert_eq!(wake.at_ms, Some(T0 + 31_000), "still in flight"),
        Take::Records(r) => panic!("in-flight records handed out again: {r:?}"),
    }
    // The old receipt handles of records still in flight work in the new process.
    let extend = [(got[2].receipt_handle.as_str(), Change::Visibility(600))];
    let result = after
        .change(&engine, &arn, Path::Normal, &extend, T0 + 4_000)
        .await
        .expect("extend");
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    let again = records(take(&after, &engine, &arn, Path::Normal, T0 + 31_000).await);
    let mut data: Vec<String> = again
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    data.sort();
    let mut expected: Vec<String> = got[3..]
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    expected.sort();
    assert_eq!(data, expected, "not the acknowledged, not the extended");
    assert!(again.iter().all(|r| r.receive_count == 2));
    // Their second timeout ends: dead letters, also for a third process.
    let third = Queues::default();
    let dead = records(take(&third, &engine, &arn, Path::DeadLetter, T0 + 61_000).await);
    assert_eq!(dead.len(), 3);
}
