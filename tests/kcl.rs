//! The KCL's access pattern (the KCL itself needs Maven, which this machine lacks): list the
//! shards, lease each one, read parents to their end before their children, checkpoint by
//! sequence number, and let a second worker resume from the checkpoints after the first stops
//! mid-shard. Every record is processed exactly once, in order per partition key.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{Shard, ShardIteratorType};

use crate::util::TestServer;

const STREAM: &str = "kcl";

async fn produce(c: &Client, from: usize, to: usize) {
    for i in from..to {
        c.put_record()
            .stream_name(STREAM)
            .partition_key(format!("key-{}", i % 7))
            .data(Blob::new(i.to_string()))
            .send()
            .await
            .expect("put");
    }
}

/// The lease table: per shard, the checkpoint and whether it reached SHARD_END.
#[derive(Default)]
struct Leases {
    checkpoint: HashMap<String, String>,
    finished: HashSet<String>,
}

/// One worker: processes eligible shards until every shard is finished, or until it has
/// processed `budget` records (then it "crashes", keeping only its checkpoints).
async fn worker(
    c: &Client,
    leases: &mut Leases,
    processed: &mut Vec<(String, String, usize)>,
    budget: usize,
) {
    let mut done = 0;
    loop {
        let shards: Vec<Shard> = c
            .list_shards()
            .stream_name(STREAM)
            .send()
            .await
            .expect("list shards")
            .shards()
            .to_vec();
        let eligible: Vec<&Shard> = shards
            .iter()
            .filter(|s| !leases.finished.contains(s.shard_id()))
            .filter(|s| {
                s.parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .all(|p| leases.finished.contains(p))
            })
            .collect();
        if eligible.is_empty() {
            return;
        }
        for shard in eligible {
            let id = shard.shard_id().to_string();
            let request = c.get_shard_iterator().stream_name(STREAM).shard_id(&id);
            let request = match leases.checkpoint.get(&id) {
                Some(seq) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq),
                None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let mut it = request
                .send()
                .await
                .expect("iterator")
                .shard_iterator()
                .map(str::to_string);
            while let Some(iterator) = it {
                let page = c
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(4)
                    .send()
                    .await
                    .expect("get records");
                for r in page.records() {
                    let value: usize = std::str::from_utf8(r.data().as_ref())
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    processed.push((id.clone(), r.partition_key().to_string(), value));
                    leases
                        .checkpoint
                        .insert(id.clone(), r.sequence_number().to_string());
                    done += 1;
                    if done == budget {
                        return; // crash: only the checkpoints survive
                    }
                }
                if page.next_shard_iterator().is_none() {
                    assert!(
                        !page.child_shards().is_empty(),
                        "a closed shard ends with its children"
                    );
                    leases.finished.insert(id.clone());
                    break;
                }
                if page.records().is_empty() && page.millis_behind_latest() == Some(0) {
                    if shard
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_none()
                    {
                        // An open shard read to its tip: done for now.
                        leases.finished.insert(id.clone());
                    }
                    break;
                }
                it = page.next_shard_iterator().map(str::to_string);
            }
        }
    }
}

#[tokio::test]
async fn kcl_style_consumption_across_splits_merges_and_a_restart() {
    let t = TestServer::start().await;
    let c = &t.client;
    c.create_stream()
        .stream_name(STREAM)
        .shard_count(2)
        .send()
        .await
        .expect("create");
    produce(c, 0, 40).await;
    c.split_shard()
        .stream_name(STREAM)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((1u128 << 126).to_string())
        .send()
        .await
        .expect("split");
    crate::util::wait_active(c, STREAM).await;
    produce(c, 40, 80).await;
    c.merge_shards()
        .stream_name(STREAM)
        .shard_to_merge("shardId-000000000003")
        .adjacent_shard_to_merge("shardId-000000000001")
        .send()
        .await
        .expect("merge");
    crate::util::wait_active(c, STREAM).await;
    produce(c, 80, 120).await;

    let mut leases = Leases::default();
    let mut processed = Vec::new();
    worker(c, &mut leases, &mut processed, 50).await;
    assert_eq!(processed.len(), 50, "the first worker stops mid-way");
    worker(c, &mut leases, &mut processed, usize::MAX).await;

    // Exactly once.
    let values: Vec<usize> = processed.iter().map(|p| p.2).collect();
    let unique: HashSet<usize> = values.iter().copied().collect();
    assert_eq!(values.len(), 120, "{values:?}");
    assert_eq!(unique.len(), 120);
    // In order per partition key (a key moves to a child only after its parent is drained).
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, key, value) in &processed {
        per_key.entry(key.clone()).or_default().push(*value);
    }
    for (key, seen) in per_key {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{key}: {seen:?}");
    }
    // Parents before children.
    let position = |shard: &str| processed.iter().rposition(|p| p.0 == shard);
    let first = |shard: &str| processed.iter().position(|p| p.0 == shard);
    for (parent, child) in [
        ("shardId-000000000000", "shardId-000000000002"),
        ("shardId-000000000001", "shardId-000000000004"),
        ("shardId-000000000003", "shardId-000000000004"),
    ] {
        if let (Some(last_parent), Some(first_child)) = (position(parent), first(child)) {
            assert!(last_parent < first_child, "{parent} before {child}");
        }
    }
    t.stop().await;
}
