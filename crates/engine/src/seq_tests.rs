//! Sequence numbers across a release upgrade: shards of a data dir written before AWS's layout
//! keep their numbers; shards created since use AWS's.

use std::sync::Arc;

use rivulet_log::{MemBackend, MetaOp, Store, StoreConfig};

use crate::seq::{self, Decoded};
use crate::*;

const T0: i64 = 1_700_000_000_000;

fn config() -> EngineConfig {
    EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        ..EngineConfig::default()
    }
}

fn put(e: &Engine, key: &str, ordering: Option<&str>, now: i64) -> PutResult {
    let entry = PutEntry {
        partition_key: Some(key),
        explicit_hash_key: None,
        data: b"v",
    };
    let outcome = e
        .put_records_now(&StreamTarget::name("old"), &[entry], ordering, false, now)
        .unwrap();
    outcome.results.into_iter().next().unwrap().unwrap()
}

fn read_at(e: &Engine, shard: &str, number: &str, now: i64) -> Result<RecordsBatch> {
    let it = e.get_shard_iterator_now(
        &GetShardIterator {
            target: StreamTarget::name("old"),
            shard_id: shard,
            iterator_type: IteratorType::AtSequenceNumber,
            starting_sequence_number: Some(number),
            timestamp_ms: None,
        },
        now,
    )?;
    e.get_records_now(&it, None, now)
}

/// Rewrites the stream's metadata as a release before `seq_layout` wrote it; returns the
/// stream's tag.
fn forget_layouts(store: &Store) -> u16 {
    let key = "stream/old";
    let stored = store.meta().get(key).unwrap().unwrap();
    let tag = serde_json::from_slice::<meta::StreamMeta>(&stored)
        .unwrap()
        .stream_tag();
    let mut doc: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    for shard in doc["shards"].as_array_mut().unwrap() {
        shard.as_object_mut().unwrap().remove("seq_layout").unwrap();
    }
    let value = serde_json::to_vec(&doc).unwrap();
    store
        .meta()
        .commit(&[MetaOp::Put {
            key: key.into(),
            value,
        }])
        .unwrap();
    tag
}

fn is_aws_number_of(number: &str, shard: u32) -> bool {
    matches!(seq::decode(number), Decoded::Aws(p) if p.shard_index as u32 == shard)
}

#[test]
fn an_earlier_releases_shards_keep_their_numbers_and_new_shards_use_aws_layout() {
    let backend = Arc::new(MemBackend::new());
    let store = Store::open(backend.clone(), StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config()).unwrap();
    e.create_stream(
        CreateStream {
            name: "old".into(),
            shard_count: Some(1),
            ..CreateStream::default()
        },
        T0,
    )
    .unwrap();
    // A new stream's shards use AWS's layout.
    assert!(is_aws_number_of(
        put(&e, "k", None, T0).sequence_number.as_str(),
        0
    ));
    store.shutdown();
    drop(e);

    // The data dir as the previous release left it: no layout recorded.
    let store = Store::open(backend.clone(), StoreConfig::default()).unwrap();
    let tag = forget_layouts(&store);
    store.shutdown();
    let store = Store::open(backend.clone(), StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config()).unwrap();
    let first = put(&e, "k", None, T0 + 1_000).sequence_number;
    let legacy = seq::decode_legacy(first.as_str(), tag).expect("a legacy number");
    assert_eq!((legacy.shard_index, legacy.counter), (0, 1));
    // Numbers handed out in the old layout still work where clients send them back.
    let batch = read_at(&e, "shardId-000000000000", first.as_str(), T0 + 2_000).unwrap();
    assert_eq!(batch.records[0].sequence_number, first);
    let second = put(&e, "k", Some(first.as_str()), T0 + 3_000).sequence_number;
    let (a, b) = (first.as_str(), second.as_str());
    assert!((a.len(), a) < (b.len(), b), "{a} then {b}");

    // A split's children are new shards: AWS's layout.
    e.split_shard(
        &StreamTarget::name("old"),
        "shardId-000000000000",
        &(1u128 << 127).to_string(),
        T0 + 4_000,
    )
    .unwrap();
    e.tick(T0 + 4_000).unwrap();
    let child = put(&e, "k", Some(second.as_str()), T0 + 5_000);
    assert_ne!(child.shard_index, 0);
    assert!(is_aws_number_of(
        child.sequence_number.as_str(),
        child.shard_index
    ));
    let shard = child.shard_id();
    let batch = read_at(&e, &shard, child.sequence_number.as_str(), T0 + 6_000).unwrap();
    assert_eq!(batch.records[0].sequence_number, child.sequence_number);
    // The parent's number is not the child's.
    assert_eq!(
        read_at(&e, &shard, first.as_str(), T0 + 6_000)
            .unwrap_err()
            .kind,
        ErrorKind::InvalidArgument
    );
    store.shutdown();
    drop(e);

    // Both layouts survive another restart.
    let store = Store::open(backend, StoreConfig::default()).unwrap();
    let e = Engine::open(store, config()).unwrap();
    let batch = read_at(&e, "shardId-000000000000", second.as_str(), T0 + 7_000).unwrap();
    assert_eq!(batch.records[0].sequence_number, second);
    let batch = read_at(&e, &shard, child.sequence_number.as_str(), T0 + 7_000).unwrap();
    assert_eq!(batch.records[0].sequence_number, child.sequence_number);
}
