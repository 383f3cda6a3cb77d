//! Engine tests with a controlled clock, over in-memory storage.

use std::sync::Arc;

use rivulet_log::{MemBackend, Store, StoreConfig};

use crate::*;

const T0: i64 = 1_700_000_000_000;
const HOUR_MS: i64 = 3_600_000;

fn engine_with(config: EngineConfig) -> Engine {
    let store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    Engine::open(store, config).unwrap()
}

fn engine() -> Engine {
    engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        ..EngineConfig::default()
    })
}

fn create(engine: &Engine, name: &str, shards: u32, now: i64) {
    engine
        .create_stream(
            CreateStream {
                name: name.into(),
                shard_count: Some(shards),
                ..CreateStream::default()
            },
            now,
        )
        .unwrap();
}

fn put(engine: &Engine, stream: &str, key: &str, data: &[u8], now: i64) -> PutResult {
    let entry = PutEntry {
        partition_key: Some(key),
        explicit_hash_key: None,
        data,
    };
    let outcome = engine
        .put_records_now(&StreamTarget::name(stream), &[entry], None, false, now)
        .unwrap();
    outcome.results.into_iter().next().unwrap().unwrap()
}

fn iterator(engine: &Engine, stream: &str, shard: &str, kind: IteratorType, now: i64) -> String {
    engine
        .get_shard_iterator_now(
            &GetShardIterator {
                target: StreamTarget::name(stream),
                shard_id: shard,
                iterator_type: kind,
                starting_sequence_number: None,
                timestamp_ms: None,
            },
            now,
        )
        .unwrap()
}

/// Checks an error's kind and exact message.
fn check<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, message: &str) {
    let error = result.unwrap_err();
    assert_eq!((error.kind, error.message.as_str()), (kind, message));
}

#[test]
fn expired_iterator_message_names_both_times() {
    let e = engine();
    create(&e, "s", 1, T0);
    let it = iterator(
        &e,
        "s",
        "shardId-000000000000",
        IteratorType::TrimHorizon,
        T0,
    );
    assert!(e.get_records_now(&it, None, T0 + TOKEN_TTL_MS).is_ok());
    check(
        e.get_records_now(&it, None, T0 + TOKEN_TTL_MS + 1),
        ErrorKind::ExpiredIterator,
        "Iterator expired. The iterator was created at time Tue Nov 14 22:13:20 UTC 2023 while \
         right now it is Tue Nov 14 22:18:20 UTC 2023 which is further in the future than the \
         tolerated delay of 300000 milliseconds.",
    );
}

#[test]
fn data_past_retention_leaves_the_log() {
    let e = engine();
    create(&e, "s", 1, T0);
    put(&e, "s", "k", b"old", T0);
    e.tick(T0 + 23 * HOUR_MS).unwrap();
    let it = iterator(
        &e,
        "s",
        "shardId-000000000000",
        IteratorType::TrimHorizon,
        T0 + 23 * HOUR_MS,
    );
    assert_eq!(
        e.get_records_now(&it, None, T0 + 23 * HOUR_MS)
            .unwrap()
            .records
            .len(),
        1
    );
    let later = T0 + 25 * HOUR_MS;
    e.tick(later).unwrap();
    put(&e, "s", "k", b"new", later);
    let it = iterator(
        &e,
        "s",
        "shardId-000000000000",
        IteratorType::TrimHorizon,
        later,
    );
    let records = e.get_records_now(&it, None, later).unwrap().records;
    assert_eq!(
        records.iter().map(|r| r.data.as_ref()).collect::<Vec<_>>(),
        [b"new"]
    );
}

#[test]
fn updating_state_blocks_resharding_and_keeps_writes_flowing() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 1000,
        ..EngineConfig::default()
    });
    create(&e, "u", 1, T0);
    let half = "170141183460469231731687303715884105728";
    e.split_shard(&StreamTarget::name("u"), "shardId-000000000000", half, T0)
        .unwrap();
    check(
        e.split_shard(
            &StreamTarget::name("u"),
            "shardId-000000000000",
            half,
            T0 + 1,
        ),
        ErrorKind::ResourceInUse,
        "Stream u under account 000000000000 not ACTIVE, instead in state UPDATING",
    );
    assert_eq!(
        put(&e, "u", "a", b"during", T0 + 2).shard_id(),
        "shardId-000000000000"
    );
    let view = e
        .describe_stream_summary(&StreamTarget::name("u"), T0 + 999)
        .unwrap();
    assert_eq!(view.status, StreamStatus::Updating);
    let view = e
        .describe_stream_summary(&StreamTarget::name("u"), T0 + 1000)
        .unwrap();
    assert_eq!(view.status, StreamStatus::Active);
    assert_eq!(view.open_shard_count, 2);
    let placed = put(&e, "u", "a", b"after", T0 + 1001);
    assert_ne!(placed.shard_id(), "shardId-000000000000");
}

#[test]
fn shard_limit_is_enforced_with_aws_message() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        shard_limit: 3,
        ..EngineConfig::default()
    });
    create(&e, "a", 2, T0);
    check(
        e.create_stream(
            CreateStream {
                name: "b".into(),
                shard_count: Some(2),
                ..CreateStream::default()
            },
            T0,
        ),
        ErrorKind::LimitExceeded,
        "This request would exceed the shard limit for the account 000000000000 in us-east-1. \
         Current shard count for the account: 2. Limit: 3. Number of additional shards that \
         would have resulted from this request: 2. Refer to the AWS Service Limits page \
         (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current \
         limits and how to request higher limits.",
    );
}

#[test]
fn sequence_numbers_from_another_stream_are_rejected() {
    let e = engine();
    create(&e, "one", 1, T0);
    create(&e, "two", 1, T0 + 5000);
    let seq = put(&e, "one", "k", b"x", T0 + 6000).sequence_number;
    let request = GetShardIterator {
        target: StreamTarget::name("two"),
        shard_id: "shardId-000000000000",
        iterator_type: IteratorType::AtSequenceNumber,
        starting_sequence_number: Some(seq.as_str()),
        timestamp_ms: None,
    };
    check(
        e.get_shard_iterator_now(&request, T0 + 7000),
        ErrorKind::InvalidArgument,
        &format!(
            "StartingSequenceNumber {seq} used in GetShardIterator on shard shardId-000000000000 \
             in stream two under account 000000000000 is invalid because it did not come from \
             this stream."
        ),
    );
    let small = GetShardIterator {
        starting_sequence_number: Some("5"),
        ..request
    };
    check(
        e.get_shard_iterator_now(&small, T0 + 7000),
        ErrorKind::InvalidArgument,
        "Invalid StartingSequenceNumber. It encodes shardId-000000000005, while it was used in a \
         call to a shard with shardId-000000000000",
    );
    let zero = GetShardIterator {
        starting_sequence_number: Some("0"),
        ..request
    };
    assert_eq!(
        e.get_shard_iterator_now(&zero, T0).unwrap_err().kind,
        ErrorKind::InternalFailure
    );
}

#[test]
fn list_shards_tokens_expire_after_300_seconds() {
    let e = engine();
    create(&e, "l", 3, T0);
    let page = e
        .list_shards(
            &ListShards {
                target: StreamTarget::name("l"),
                max_results: Some(1),
                ..ListShards::default()
            },
            T0,
        )
        .unwrap();
    let token = page.next_token.unwrap();
    let next = ListShards {
        next_token: Some(&token),
        ..ListShards::default()
    };
    assert_eq!(
        e.list_shards(&next, T0 + TOKEN_TTL_MS)
            .unwrap()
            .shards
            .len(),
        2
    );
    assert_eq!(
        e.list_shards(&next, T0 + TOKEN_TTL_MS + 1)
            .unwrap_err()
            .kind,
        ErrorKind::ExpiredNextToken
    );
    check(
        e.list_shards(&ListShards::default(), T0),
        ErrorKind::InvalidArgument,
        "Either NextToken or StreamName should be provided.",
    );
}

#[test]
fn retention_messages_match_aws() {
    let e = engine();
    create(&e, "r", 1, T0);
    let target = StreamTarget::name("r");
    check(
        e.change_retention(&target, 48, false, T0),
        ErrorKind::InvalidArgument,
        "Requested retention period (48 hours) for stream r can not be longer than existing \
         retention period (24 hours). Use IncreaseRetentionPeriod API.",
    );
    check(
        e.change_retention(&target, 8761, true, T0),
        ErrorKind::InvalidArgument,
        "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) \
         is too long.",
    );
    check(
        e.add_tags(&target, &[("a*".into(), "b".into())], T0),
        ErrorKind::InvalidArgument,
        "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white \
         space, _ . / = + - % @.",
    );
    check(
        e.split_shard(&target, "shardId-000000000007", "12345", T0),
        ErrorKind::ResourceNotFound,
        "Could not find shard shardId-000000000007 in stream r under account 000000000000.",
    );
}

#[test]
fn streams_and_records_survive_reopening_the_store() {
    let backend = Arc::new(MemBackend::new());
    let config = EngineConfig {
        create_stream_ms: 0,
        ..EngineConfig::default()
    };
    let store = Store::open(backend.clone(), StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config.clone()).unwrap();
    create(&e, "keep", 2, T0);
    let placed = put(&e, "keep", "k", b"v", T0);
    let it = iterator(
        &e,
        "keep",
        &placed.shard_id(),
        IteratorType::TrimHorizon,
        T0,
    );
    store.shutdown();
    drop(e);
    let store = Store::open(backend, StoreConfig::default()).unwrap();
    let e = Engine::open(store, config).unwrap();
    // Iterators are sealed with a persisted secret, so they outlive a restart.
    let batch = e.get_records_now(&it, None, T0 + 1).unwrap();
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].sequence_number, placed.sequence_number);
}

#[test]
fn consumers_follow_the_lifecycle_and_limits() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 1000,
        delete_stream_ms: 1000,
        update_stream_ms: 0,
        ..EngineConfig::default()
    });
    create(&e, "c", 1, T0);
    e.tick(T0 + 1000).unwrap();
    let arn = e.stream_arn("c");
    let now = T0 + 2000;
    for i in 0..5 {
        let view = e
            .register_consumer(&arn, &format!("c{i}"), &[], now)
            .unwrap();
        assert_eq!(view.status, ConsumerStatus::Creating);
    }
    let sixth = e.register_consumer(&arn, "c5", &[], now).unwrap_err();
    assert_eq!(sixth.kind, ErrorKind::LimitExceeded);
    let target = ConsumerTarget {
        stream_arn: Some(&arn),
        consumer_name: Some("c0"),
        consumer_arn: None,
    };
    assert_eq!(
        e.describe_consumer(&target, now + 999).unwrap().status,
        ConsumerStatus::Creating
    );
    assert_eq!(
        e.describe_consumer(&target, now + 1000).unwrap().status,
        ConsumerStatus::Active
    );
    e.deregister_consumer(&target, now + 1000).unwrap();
    assert_eq!(
        e.describe_consumer(&target, now + 1500).unwrap().status,
        ConsumerStatus::Deleting
    );
    e.tick(now + 2000).unwrap();
    assert_eq!(
        e.describe_consumer(&target, now + 2000).unwrap_err().kind,
        ErrorKind::ResourceNotFound
    );
}

#[test]
fn after_a_shards_starting_sequence_number_comes_its_first_record() {
    let e = engine();
    create(&e, "s", 1, T0);
    let first = put(&e, "s", "k", b"one", T0 + 1);
    put(&e, "s", "k", b"two", T0 + 2);
    let shards = e
        .describe_stream(&StreamTarget::name("s"), None, None, T0 + 3)
        .unwrap()
        .shards;
    let starting = shards[0].starting_sequence_number.clone();
    for kind in [
        IteratorType::AtSequenceNumber,
        IteratorType::AfterSequenceNumber,
    ] {
        let it = e
            .get_shard_iterator_now(
                &GetShardIterator {
                    target: StreamTarget::name("s"),
                    shard_id: "shardId-000000000000",
                    iterator_type: kind,
                    starting_sequence_number: Some(&starting),
                    timestamp_ms: None,
                },
                T0 + 3,
            )
            .unwrap();
        let batch = e.get_records_now(&it, None, T0 + 3).unwrap();
        assert_eq!(batch.records.len(), 2, "{kind:?}");
        assert_eq!(batch.records[0].sequence_number, first.sequence_number);
    }
}

#[test]
fn subscriptions_claim_their_shard_and_deliver_records() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        ..EngineConfig::default()
    });
    create(&e, "s", 1, T0);
    let arn = e.stream_arn("s");
    let consumer = e.register_consumer(&arn, "reader", &[], T0).unwrap();
    let start = StartAt {
        kind: IteratorType::TrimHorizon,
        sequence_number: None,
        timestamp_ms: None,
    };
    put(&e, "s", "k", b"one", T0 + 10);
    let mut first = e
        .subscribe_now(&consumer.arn, "shardId-000000000000", &start, T0 + 100)
        .unwrap();
    check(
        e.subscribe_now(&consumer.arn, "shardId-000000000000", &start, T0 + 4_000)
            .map(|_| ()),
        ErrorKind::ResourceInUse,
        "Another active subscription exists for this consumer: \
         000000000000:s:shardId-000000000000:reader",
    );
    let event = e.next_event_now(&mut first, 1 << 20, T0 + 200).unwrap();
    assert_eq!(event.records.len(), 1);
    assert_eq!(
        event.continuation_sequence_number,
        event.records[0].sequence_number
    );
    let idle = e.next_event_now(&mut first, 1 << 20, T0 + 300).unwrap();
    assert!(idle.records.is_empty());
    // Resuming after the continuation number finds the next record, not the last again.
    put(&e, "s", "k", b"two", T0 + 400);
    let resume = StartAt {
        kind: IteratorType::AfterSequenceNumber,
        sequence_number: Some(idle.continuation_sequence_number.as_str()),
        timestamp_ms: None,
    };
    // After 5 s a new subscription takes over; the old one learns it.
    let mut second = e
        .subscribe_now(&consumer.arn, "shardId-000000000000", &resume, T0 + 5_100)
        .unwrap();
    assert!(*first.superseded.borrow());
    e.end_subscription(&first);
    let event = e.next_event_now(&mut second, 1 << 20, T0 + 5_200).unwrap();
    let data: Vec<&[u8]> = event.records.iter().map(|r| r.data.as_ref()).collect();
    assert_eq!(data, [b"two".as_slice()]);
    e.end_subscription(&second);
    // A split closes the shard: the next event carries its children, once drained.
    e.split_shard(
        &StreamTarget::name("s"),
        "shardId-000000000000",
        "170141183460469231731687303715884105728",
        T0 + 6_000,
    )
    .unwrap();
    e.tick(T0 + 6_001).unwrap();
    let mut third = e
        .subscribe_now(&consumer.arn, "shardId-000000000000", &start, T0 + 12_000)
        .unwrap();
    let event = e.next_event_now(&mut third, 1 << 20, T0 + 12_001).unwrap();
    assert_eq!(event.records.len(), 2);
    let children = event
        .child_shards
        .expect("children at the end of a closed shard");
    assert_eq!(children.len(), 2);
    // A consumer that is not ACTIVE cannot subscribe; a deregistered one ends subscriptions.
    let target = ConsumerTarget {
        stream_arn: Some(&arn),
        consumer_name: Some("reader"),
        consumer_arn: None,
    };
    e.deregister_consumer(&target, T0 + 13_000).unwrap();
    assert_eq!(
        e.next_event_now(&mut third, 1 << 20, T0 + 13_001)
            .unwrap_err()
            .kind,
        ErrorKind::ResourceNotFound
    );
}

#[test]
fn shards_throttle_writes_reads_and_iterators_at_aws_rates() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        limits_scale: Some(1.0),
        ..EngineConfig::default()
    });
    create(&e, "t", 1, T0);
    let data = [0u8; 10];
    let entries: Vec<PutEntry<'_>> = (0..500)
        .map(|_| PutEntry {
            partition_key: Some("k"),
            explicit_hash_key: None,
            data: &data,
        })
        .collect();
    // 1,000 records a second: two batches pass, the third is refused entry by entry.
    for _ in 0..2 {
        let outcome = e
            .put_records_now(&StreamTarget::name("t"), &entries, None, true, T0 + 1)
            .unwrap();
        assert!(outcome.results.iter().all(|r| r.is_ok()));
        // Reads see durable records only: wait, as the server does before answering.
    }
    let third = e
        .put_records_now(&StreamTarget::name("t"), &entries, None, true, T0 + 1)
        .unwrap();
    assert!(third.results.iter().all(|r| r.is_err()));
    let error = third.results[0].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::ProvisionedThroughputExceeded);
    assert_eq!(
        error.message,
        "Rate exceeded for shard shardId-000000000000 in stream t under account 000000000000."
    );
    // PutRecord is refused as a whole, with the same error.
    check(
        e.put_records_now(&StreamTarget::name("t"), &entries[..1], None, false, T0 + 1)
            .map(|_| ()),
        ErrorKind::ProvisionedThroughputExceeded,
        "Rate exceeded for shard shardId-000000000000 in stream t under account 000000000000.",
    );
    // A tenth of a second later, a hundred more fit.
    let later = e
        .put_records_now(&StreamTarget::name("t"), &entries, None, true, T0 + 101)
        .unwrap();
    assert_eq!(later.results.iter().filter(|r| r.is_ok()).count(), 100);
    assert!(e.throttled_count() >= 900);
    // Five GetShardIterator calls a second per shard.
    let iterators: Vec<Result<String>> = (0..6)
        .map(|_| {
            e.get_shard_iterator_now(
                &GetShardIterator {
                    target: StreamTarget::name("t"),
                    shard_id: "shardId-000000000000",
                    iterator_type: IteratorType::TrimHorizon,
                    starting_sequence_number: None,
                    timestamp_ms: None,
                },
                T0 + 200,
            )
        })
        .collect();
    assert_eq!(iterators.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(
        iterators[5].as_ref().unwrap_err().kind,
        ErrorKind::ProvisionedThroughputExceeded
    );
    // Reads: 1,100 records of 11 bytes is ~12 KB: the next read waits ~6 ms for the bytes.
    let it = iterators[0].as_ref().unwrap();
    let batch = e.get_records_now(it, None, T0 + 300).unwrap();
    assert_eq!(batch.records.len(), 1100);
    let next = batch.next_shard_iterator.unwrap();
    assert_eq!(
        e.get_records_now(&next, None, T0 + 301).unwrap_err().kind,
        ErrorKind::ProvisionedThroughputExceeded
    );
    assert!(e.get_records_now(&next, None, T0 + 310).is_ok());
}

#[test]
fn account_limits_creating_streams_and_call_rates() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 1_000,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        limits_scale: Some(1.0),
        ..EngineConfig::default()
    });
    for i in 0..5 {
        create(&e, &format!("s{i}"), 1, T0);
    }
    let sixth = e.create_stream(
        CreateStream {
            name: "s5".into(),
            shard_count: Some(1),
            ..CreateStream::default()
        },
        T0 + 10,
    );
    check(
        sixth,
        ErrorKind::LimitExceeded,
        "This request would have exceed the limit on the number of streams that can \
         simultaneously be in CREATING or DELETING for the account 000000000000. Limit: 5.",
    );
    // Once they are ACTIVE there is room again.
    create(&e, "s5", 1, T0 + 1_000);
    // Call rates: DescribeLimits 1/s per account, ListShards 1,000/s per stream.
    e.admit_call("DescribeLimits", None, T0).unwrap();
    check(
        e.admit_call("DescribeLimits", None, T0 + 500),
        ErrorKind::LimitExceeded,
        "Rate exceeded for account 000000000000.",
    );
    e.admit_call("DescribeLimits", None, T0 + 1_500).unwrap();
    let s0 = StreamTarget::name("s0");
    let s1 = StreamTarget::name("s1");
    let passed = (0..1_200)
        .filter(|_| e.admit_call("ListShards", Some(&s0), T0).is_ok())
        .count();
    assert_eq!(passed, 1_000);
    e.admit_call("ListShards", Some(&s1), T0).unwrap();
    check(
        e.admit_call("ListShards", Some(&s0), T0),
        ErrorKind::LimitExceeded,
        "Rate exceeded for stream s0 under account 000000000000.",
    );
    // The data plane is not limited here.
    e.admit_call("PutRecords", Some(&s0), T0).unwrap();
}

#[test]
fn a_throttled_get_records_names_the_shard_as_aws_does_now() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        limits_scale: Some(1.0),
        ..EngineConfig::default()
    });
    create(&e, "r", 1, T0);
    let it = iterator(
        &e,
        "r",
        "shardId-000000000000",
        IteratorType::TrimHorizon,
        T0,
    );
    let mut next = it;
    for _ in 0..5 {
        next = e
            .get_records_now(&next, None, T0 + 1)
            .unwrap()
            .next_shard_iterator
            .unwrap();
    }
    check(
        e.get_records_now(&next, None, T0 + 1).map(|_| ()),
        ErrorKind::ProvisionedThroughputExceeded,
        "Rate exceeded for Shard - 000000000000/r/shardId-000000000000",
    );
}

#[test]
fn stream_mode_switches_keep_the_shards_twice_a_day() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 500,
        ..EngineConfig::default()
    });
    create(&e, "m", 3, T0);
    let target = StreamTarget::name("m");
    e.update_stream_mode(&target, StreamMode::OnDemand, T0 + 1)
        .unwrap();
    let during = e.describe_stream_summary(&target, T0 + 2).unwrap();
    assert_eq!(
        (during.status, during.mode),
        (StreamStatus::Updating, StreamMode::Provisioned)
    );
    let after = e.describe_stream_summary(&target, T0 + 501).unwrap();
    assert_eq!(
        (after.status, after.mode, after.open_shard_count),
        (StreamStatus::Active, StreamMode::OnDemand, 3)
    );
    check(
        e.update_stream_mode(&target, StreamMode::OnDemand, T0 + 600),
        ErrorKind::InvalidArgument,
        "Stream m under account 000000000000 is already in ON_DEMAND mode.",
    );
    e.update_stream_mode(&target, StreamMode::Provisioned, T0 + 600)
        .unwrap();
    e.tick(T0 + 1_200).unwrap();
    check(
        e.update_stream_mode(&target, StreamMode::OnDemand, T0 + 1_300),
        ErrorKind::LimitExceeded,
        "Rate exceeded for stream m under account 000000000000.",
    );
    // A day after the first switch, another is allowed.
    e.update_stream_mode(&target, StreamMode::OnDemand, T0 + 86_400_002)
        .unwrap();
}

#[test]
fn on_demand_streams_split_hot_shards() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        limits_scale: Some(1.0),
        ..EngineConfig::default()
    });
    create_on_demand(&e);
    let data = [0u8; 100];
    let hot: Vec<PutEntry<'_>> = (0..80)
        .map(|_| PutEntry {
            partition_key: Some("k"),
            explicit_hash_key: Some("0"),
            data: &data,
        })
        .collect();
    // 800 records/s into shard 0 (80 % of its capacity) for 7 s, ticking as the server does.
    let mut now = T0 + 1_000;
    let mut throttled = 0;
    while now < T0 + 8_000 {
        let outcome = e
            .put_records_now(&StreamTarget::name("od"), &hot, None, true, now)
            .unwrap();
        throttled += outcome.results.iter().filter(|r| r.is_err()).count();
        e.tick(now).unwrap();
        now += 100;
    }
    assert_eq!(throttled, 0);
    let shards = e
        .list_shards(
            &ListShards {
                target: StreamTarget::name("od"),
                ..ListShards::default()
            },
            now,
        )
        .unwrap()
        .shards;
    let open: Vec<&ShardView> = shards
        .iter()
        .filter(|s| s.ending_sequence_number.is_none())
        .collect();
    assert_eq!(open.len(), 5, "shard 0 split in two: {shards:?}");
    let children: Vec<&ShardView> = shards
        .iter()
        .filter(|s| s.parent_shard_id.as_deref() == Some("shardId-000000000000"))
        .collect();
    assert_eq!(children.len(), 2);
    // The cold shards were left alone.
    assert!(
        shards
            .iter()
            .any(|s| s.shard_id == "shardId-000000000001" && s.ending_sequence_number.is_none())
    );
    // Writes now land in the child that owns hash key 0.
    let placed = e
        .put_records_now(&StreamTarget::name("od"), &hot[..1], None, false, now)
        .unwrap();
    let placed = placed.results[0].as_ref().unwrap();
    assert_eq!(placed.shard_id(), children[0].shard_id);
}

#[test]
fn auto_record_distribution_spreads_records_and_needs_on_demand() {
    let e = engine();
    check(
        e.create_stream(
            CreateStream {
                name: "p".into(),
                shard_count: Some(2),
                record_distribution: Some(RecordDistribution::Auto),
                ..CreateStream::default()
            },
            T0,
        ),
        ErrorKind::InvalidArgument,
        "Record distribution strategy AUTO is only supported for streams in ON_DEMAND mode. \
         Stream p under account 000000000000 is in PROVISIONED mode.",
    );
    e.create_stream(
        CreateStream {
            name: "a".into(),
            mode: Some(StreamMode::OnDemand),
            record_distribution: Some(RecordDistribution::Auto),
            ..CreateStream::default()
        },
        T0,
    )
    .unwrap();
    let data = [1u8; 4];
    // Same key, and even no key: spread evenly over the 4 shards.
    let entries: Vec<PutEntry<'_>> = (0..40)
        .map(|i| PutEntry {
            partition_key: (i % 2 == 0).then_some("same"),
            explicit_hash_key: None,
            data: &data,
        })
        .collect();
    let outcome = e
        .put_records_now(&StreamTarget::name("a"), &entries, None, true, T0 + 1)
        .unwrap();
    let mut per_shard = std::collections::HashMap::new();
    for r in &outcome.results {
        *per_shard
            .entry(r.as_ref().unwrap().shard_index)
            .or_insert(0) += 1;
    }
    assert_eq!(per_shard.len(), 4);
    assert!(per_shard.values().all(|&n| n == 10), "{per_shard:?}");
    assert_eq!(
        e.describe_stream_summary(&StreamTarget::name("a"), T0 + 1)
            .unwrap()
            .record_distribution,
        RecordDistribution::Auto
    );
    // Back to keys: the same key always lands on one shard; a missing key is refused again.
    e.update_record_distribution(
        &StreamTarget::name("a"),
        RecordDistribution::UserPartitionKey,
        T0 + 2,
    )
    .unwrap();
    let outcome = e
        .put_records_now(&StreamTarget::name("a"), &entries[..1], None, true, T0 + 3)
        .unwrap();
    let first = outcome.results[0].as_ref().unwrap().shard_index;
    for _ in 0..5 {
        let again = e
            .put_records_now(&StreamTarget::name("a"), &entries[..1], None, true, T0 + 3)
            .unwrap();
        assert_eq!(again.results[0].as_ref().unwrap().shard_index, first);
    }
    assert_eq!(
        e.put_records_now(&StreamTarget::name("a"), &entries[1..2], None, true, T0 + 3)
            .unwrap_err()
            .kind,
        ErrorKind::Validation
    );
    // A provisioned stream cannot take AUTO, and an AUTO stream cannot turn provisioned.
    create(&e, "prov", 1, T0);
    assert_eq!(
        e.update_record_distribution(
            &StreamTarget::name("prov"),
            RecordDistribution::Auto,
            T0 + 4
        )
        .unwrap_err()
        .kind,
        ErrorKind::InvalidArgument
    );
    e.update_record_distribution(&StreamTarget::name("a"), RecordDistribution::Auto, T0 + 5)
        .unwrap();
    assert_eq!(
        e.update_stream_mode(&StreamTarget::name("a"), StreamMode::Provisioned, T0 + 6)
            .unwrap_err()
            .kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn subscribe_to_shard_is_one_call_a_second_per_consumer_and_shard() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        limits_scale: Some(1.0),
        ..EngineConfig::default()
    });
    create(&e, "s", 2, T0);
    let consumer = e
        .register_consumer(&e.stream_arn("s"), "c", &[], T0)
        .unwrap();
    let start = StartAt {
        kind: IteratorType::Latest,
        sequence_number: None,
        timestamp_ms: None,
    };
    let first = e
        .subscribe_now(&consumer.arn, "shardId-000000000000", &start, T0 + 10)
        .unwrap();
    e.end_subscription(&first);
    check(
        e.subscribe_now(&consumer.arn, "shardId-000000000000", &start, T0 + 500)
            .map(|_| ()),
        ErrorKind::LimitExceeded,
        "Rate exceeded for stream s under account 000000000000.",
    );
    // Another shard has its own allowance; a second later the first shard does too.
    let other = e
        .subscribe_now(&consumer.arn, "shardId-000000000001", &start, T0 + 500)
        .unwrap();
    e.end_subscription(&other);
    let again = e
        .subscribe_now(&consumer.arn, "shardId-000000000000", &start, T0 + 1_010)
        .unwrap();
    e.end_subscription(&again);
}

#[test]
fn split_and_merge_check_in_aws_order() {
    let e = engine_with(EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 1000,
        shard_limit: 2,
        ..EngineConfig::default()
    });
    create(&e, "p", 2, T0);
    let (p, nope) = (StreamTarget::name("p"), StreamTarget::name("nope"));
    // An id that is not one is refused as sent, before the stream is looked up.
    for bad in ["ABKLFD8", "2.14E4", "2147483648", "shardId-002147483648"] {
        check(
            e.split_shard(&nope, bad, "1", T0),
            ErrorKind::ResourceNotFound,
            &format!("Could not find shard {bad} in stream nope under account 000000000000."),
        );
        check(
            e.merge_shards(&nope, "shardId-000000000000", bad, T0),
            ErrorKind::ResourceNotFound,
            &format!("Could not find shard {bad} in stream nope under account 000000000000."),
        );
    }
    check(
        e.merge_shards(&nope, "0", "1", T0),
        ErrorKind::ResourceNotFound,
        "Stream nope under account 000000000000 not found.",
    );
    // A missing shard is named as normalised, and comes before the shard limit.
    check(
        e.split_shard(&p, "x-9", "1", T0),
        ErrorKind::ResourceNotFound,
        "Could not find shard shardId-000000000009 in stream p under account 000000000000.",
    );
    // The shard limit comes before the hash key.
    let limit = e.split_shard(&p, "-000", "1", T0).unwrap_err();
    assert_eq!(limit.kind, ErrorKind::LimitExceeded, "{limit:?}");
    // Merging is ordered: AdjacentShardToMerge starts where ShardToMerge ends.
    check(
        e.merge_shards(&p, "shardId-000000000001", "shardId-000000000000", T0),
        ErrorKind::InvalidArgument,
        "Shards shardId-000000000001 and shardId-000000000000 in stream p under account \
         000000000000 are not an adjacent pair of shards eligible for merging",
    );
    e.merge_shards(&p, "0", "1", T0).unwrap();
    check(
        e.split_shard(&p, "0", "1", T0 + 1),
        ErrorKind::ResourceInUse,
        "Stream p under account 000000000000 not ACTIVE, instead in state UPDATING",
    );
    check(
        e.split_shard(&p, "shardId-x", "1", T0 + 1),
        ErrorKind::ResourceNotFound,
        "Could not find shard shardId-x in stream p under account 000000000000.",
    );
    let merged = e
        .list_shards(
            &ListShards {
                target: p,
                filter: Some(ShardFilter::AtLatest),
                ..ListShards::default()
            },
            T0 + 1000,
        )
        .unwrap();
    assert_eq!(merged.shards.len(), 1);
    let child = &merged.shards[0];
    assert_eq!(
        (
            child.parent_shard_id.as_deref(),
            child.adjacent_parent_shard_id.as_deref()
        ),
        (Some("shardId-000000000000"), Some("shardId-000000000001"))
    );
}

#[test]
fn uniform_scaling_merges_pairs_in_hash_order() {
    // `apply_step` asserts every merge is ordered (debug builds): scale down and back up.
    let e = engine();
    create(&e, "w", 5, T0);
    let w = StreamTarget::name("w");
    for (at, target) in [(T0, 3), (T0 + 1, 2), (T0 + 2, 4), (T0 + 3, 3)] {
        e.update_shard_count(&w, target, at).unwrap();
        let view = e.describe_stream_summary(&w, at).unwrap();
        assert_eq!(view.open_shard_count, target);
    }
}

#[test]
fn get_shard_iterator_reads_the_shard_id_first() {
    let e = engine();
    create(&e, "g", 1, T0);
    let request = |stream: &'static str, shard: &'static str| GetShardIterator {
        target: StreamTarget::name(stream),
        shard_id: shard,
        iterator_type: IteratorType::TrimHorizon,
        starting_sequence_number: None,
        timestamp_ms: None,
    };
    check(
        e.get_shard_iterator_now(&request("nope", "2.14E4"), T0),
        ErrorKind::ResourceNotFound,
        "Could not find shard 2.14E4 in stream nope under account 000000000000.",
    );
    check(
        e.get_shard_iterator_now(&request("nope", "-002147483647"), T0),
        ErrorKind::ResourceNotFound,
        "Shard shardId-002147483647 in stream nope under account 000000000000 does not exist",
    );
    check(
        e.get_shard_iterator_now(&request("g", "5"), T0),
        ErrorKind::ResourceNotFound,
        "Shard shardId-000000000005 in stream g under account 000000000000 does not exist",
    );
    e.get_shard_iterator_now(&request("g", "x-0"), T0).unwrap();
}

#[test]
fn throttle_metrics_have_a_zero_data_point_from_the_first_call() {
    use crate::metrics::{Metric, Statistic};
    let e = engine();
    create(&e, "z", 2, T0);
    let window = |metric| {
        e.metric_window("z", None, metric, T0 / 1000 - 60, T0 / 1000 + 60)
            .expect("stream")
    };
    let write = Metric::WriteProvisionedThroughputExceeded;
    let read = Metric::ReadProvisionedThroughputExceeded;
    assert_eq!(window(write).statistic(Statistic::Sum), None);
    let placed = put(&e, "z", "k", b"v", T0);
    assert_eq!(window(write).statistic(Statistic::Maximum), Some(0.0));
    assert_eq!(window(read).statistic(Statistic::Sum), None);
    let it = iterator(&e, "z", &placed.shard_id(), IteratorType::TrimHorizon, T0);
    e.get_records_now(&it, None, T0).unwrap();
    assert_eq!(window(read).statistic(Statistic::Maximum), Some(0.0));
    // SubscribeToShard's throttle series too, from its first successful call.
    let subscribe = Metric::SubscribeToShardRateExceeded;
    assert_eq!(window(subscribe).statistic(Statistic::Sum), None);
    let consumer = e
        .register_consumer(&e.stream_arn("z"), "c", &[], T0)
        .unwrap();
    let start = StartAt {
        kind: IteratorType::Latest,
        sequence_number: None,
        timestamp_ms: None,
    };
    // A missing shard is named as normalised, an unreadable one as sent.
    check(
        e.subscribe_now(&consumer.arn, "x-7", &start, T0)
            .map(|_| ()),
        ErrorKind::ResourceNotFound,
        "Shard shardId-000000000007 in stream z under account 000000000000 does not exist",
    );
    check(
        e.subscribe_now(&consumer.arn, "ABKLFD8", &start, T0)
            .map(|_| ()),
        ErrorKind::ResourceNotFound,
        "Shard ABKLFD8 in stream z under account 000000000000 does not exist",
    );
    let sub = e.subscribe_now(&consumer.arn, "0", &start, T0).unwrap();
    assert_eq!(window(subscribe).statistic(Statistic::Maximum), Some(0.0));
    e.end_subscription(&sub);
}

/// A PutRecords gives the stream-level IncomingRecords, IncomingBytes and
/// WriteProvisionedThroughputExceeded one data point per shard it writes to (merged before
/// they are recorded, which must not change the statistics).
#[test]
fn a_put_records_gives_one_stream_data_point_per_shard_written() {
    use crate::metrics::{Metric, Statistic};
    let e = engine();
    create(&e, "m", 4, T0);
    let quarter = u128::MAX / 4 + 1;
    let keys = [
        "0".to_string(),
        "1".to_string(),
        quarter.to_string(),
        (3 * quarter).to_string(),
    ];
    let data = [7u8; 10];
    let entries: Vec<PutEntry<'_>> = keys
        .iter()
        .map(|key| PutEntry {
            partition_key: Some("pk"),
            explicit_hash_key: Some(key.as_str()),
            data: &data,
        })
        .collect();
    let outcome = e
        .put_records_now(&StreamTarget::name("m"), &entries, None, true, T0)
        .unwrap();
    assert!(outcome.results.iter().all(|r| r.is_ok()));
    let window = |metric| {
        e.metric_window("m", None, metric, T0 / 1000 - 60, T0 / 1000 + 60)
            .expect("stream")
    };
    let records = window(Metric::IncomingRecords);
    assert_eq!(records.statistic(Statistic::SampleCount), Some(3.0));
    assert_eq!(records.statistic(Statistic::Sum), Some(4.0));
    assert_eq!(records.statistic(Statistic::Maximum), Some(2.0));
    assert_eq!(records.statistic(Statistic::Minimum), Some(1.0));
    let bytes = window(Metric::IncomingBytes);
    assert_eq!(bytes.statistic(Statistic::SampleCount), Some(3.0));
    assert_eq!(bytes.statistic(Statistic::Sum), Some(4.0 * 12.0));
    assert_eq!(bytes.statistic(Statistic::Maximum), Some(24.0));
    let throttled = window(Metric::WriteProvisionedThroughputExceeded);
    assert_eq!(throttled.statistic(Statistic::SampleCount), Some(3.0));
    assert_eq!(throttled.statistic(Statistic::Sum), Some(0.0));
    // The running totals agree.
    let stream = e.streams.read().get("m").cloned().expect("stream");
    let total = stream
        .metrics
        .stream_totals()
        .total(Metric::IncomingRecords);
    assert_eq!((total.sum, total.count), (4.0, 3));
}

#[test]
fn a_store_is_copied_into_an_empty_one_and_never_over_data() {
    let source_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let config = EngineConfig {
        create_stream_ms: 0,
        ..EngineConfig::default()
    };
    let source = Engine::open(source_store.clone(), config.clone()).unwrap();
    create(&source, "copied", 1, T0);
    for i in 0..5 {
        put(&source, "copied", "k", format!("r{i}").as_bytes(), T0 + i);
    }
    let target_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let copied =
        blocking::block_on(migrate::copy_store(&*source_store, &*target_store, None)).unwrap();
    assert_eq!((copied.streams, copied.shards, copied.records), (1, 1, 5));
    let target = Engine::open(target_store.clone(), config.clone()).unwrap();
    let it = iterator(
        &target,
        "copied",
        "shardId-000000000000",
        IteratorType::TrimHorizon,
        T0 + 10,
    );
    let batch = target.get_records_now(&it, None, T0 + 10).unwrap();
    let data: Vec<&[u8]> = batch.records.iter().map(|r| &r.data[..]).collect();
    assert_eq!(data, [b"r0", b"r1", b"r2", b"r3", b"r4"]);
    assert_eq!(batch.records[4].arrival_ms, T0 + 4);
    // A migration cut short (records copied, no metadata yet) and run again stores nothing
    // twice: the leftover records are removed first.
    let retried_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    blocking::block_on(migrate::copy_store(&*source_store, &*retried_store, None)).unwrap();
    let metadata: Vec<rivulet_log::MetaOp> = retried_store
        .meta()
        .scan_prefix("")
        .unwrap()
        .into_iter()
        .map(|(key, _)| rivulet_log::MetaOp::Delete { key })
        .collect();
    retried_store.meta().commit(&metadata).unwrap();
    blocking::block_on(migrate::copy_store(&*source_store, &*retried_store, None)).unwrap();
    let retried = Engine::open(retried_store.clone(), config.clone()).unwrap();
    let it = iterator(
        &retried,
        "copied",
        "shardId-000000000000",
        IteratorType::TrimHorizon,
        T0 + 10,
    );
    assert_eq!(
        retried
            .get_records_now(&it, None, T0 + 10)
            .unwrap()
            .records
            .len(),
        5
    );
    // Into a store that holds streams: refused, nothing written.
    let again = blocking::block_on(migrate::copy_store(&*source_store, &*target_store, None));
    check(
        again,
        ErrorKind::InvalidArgument,
        "The destination already holds data (stream/copied); migrate into a new deployment.",
    );
}

#[test]
fn a_store_with_queues_is_not_migrated() {
    let source_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let config = EngineConfig {
        create_stream_ms: 0,
        ..EngineConfig::default()
    };
    let source = Engine::open(source_store.clone(), config).unwrap();
    create_on_demand_named(&source, "queued");
    source
        .create_queue(
            &crate::CreateQueue {
                name: "q",
                streams: vec![(&source.stream_arn("queued"), None, None)],
                attributes: Default::default(),
                tags: Vec::new(),
            },
            T0 + 1,
        )
        .unwrap();
    let target_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let refused = blocking::block_on(migrate::copy_store(&*source_store, &*target_store, None));
    let error = refused.expect_err("queues are not migrated");
    assert_eq!(error.kind, ErrorKind::InvalidArgument);
    assert!(error.message.contains("holds queues"), "{}", error.message);
    assert!(target_store.meta().scan_prefix("").unwrap().is_empty());
}

/// A key service for one deployment: its ARNs carry the deployment's name, and it unwraps
/// only the data keys it wrapped.
struct Vault(&'static str);

impl crate::encryption::KeyService for Vault {
    fn resolve(&self, account: &str, key_id: &str) -> Result<String> {
        Ok(format!(
            "arn:aws:kms:us-east-1:{account}:key/{}-{key_id}",
            self.0
        ))
    }
    fn check(&self, _key_arn: &str) -> Result<()> {
        Ok(())
    }
    fn generate_data_key(&self, key_arn: &str) -> Result<([u8; 32], Vec<u8>)> {
        assert!(key_arn.contains(&format!("key/{}-", self.0)), "{key_arn}");
        let plain = [key_arn.len() as u8; 32];
        Ok((plain, plain.iter().map(|b| b ^ 0x5a).collect()))
    }
    fn decrypt_data_key(&self, key_arn: &str, wrapped: &[u8]) -> Result<[u8; 32]> {
        if !key_arn.contains(&format!("key/{}-", self.0)) {
            return Err(ApiError::new(
                ErrorKind::KmsAccessDenied,
                "not this vault's key",
            ));
        }
        let plain: Vec<u8> = wrapped.iter().map(|b| b ^ 0x5a).collect();
        Ok(plain.try_into().unwrap())
    }
}

/// Encrypted records are migrated encrypted: the destination seals them again under data
/// keys of its own key service (the AWS-managed key is the destination's), records written
/// after encryption stopped stay plaintext, and the streams name the destination's keys.
#[test]
fn encrypted_records_are_migrated_sealed_with_the_destination_s_keys() {
    use crate::encryption::DataKeys;

    let config = EngineConfig {
        create_stream_ms: 0,
        update_stream_ms: 0,
        ..EngineConfig::default()
    };
    let source_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let source_keys = DataKeys::open(source_store.clone(), Arc::new(Vault("src"))).unwrap();
    let source = Engine::open_with_keys(
        source_store.clone(),
        config.clone(),
        Some(source_keys.clone()),
    )
    .unwrap();
    let encrypt = |name: &str, key: &str, now: i64| {
        source
            .start_stream_encryption(&StreamTarget::name(name), "KMS", key, now)
            .unwrap();
        source.tick(now + 1).unwrap();
    };
    create(&source, "sealed", 1, T0);
    create(&source, "managed", 2, T0);
    // Encrypted, and no record written since: no data key of its own yet.
    create(&source, "fresh", 1, T0);
    encrypt("sealed", "k1", T0 + 1);
    encrypt("managed", "alias/aws/kinesis", T0 + 1);
    encrypt("fresh", "k2", T0 + 1);
    for i in 0..3 {
        put(
            &source,
            "sealed",
            "k",
            format!("s{i}").as_bytes(),
            T0 + 10 + i,
        );
    }
    source
        .stop_stream_encryption(&StreamTarget::name("sealed"), "KMS", "k1", T0 + 20)
        .unwrap();
    source.tick(T0 + 21).unwrap();
    put(&source, "sealed", "k", b"p0", T0 + 22);
    put(&source, "sealed", "k", b"p1", T0 + 22);
    put(&source, "managed", "k", b"m0", T0 + 23);
    let src_arn = |key: &str| format!("arn:aws:kms:us-east-1:000000000000:key/src-{key}");
    let dst_arn = |key: &str| format!("arn:aws:kms:us-east-1:000000000000:key/dst-{key}");

    let target_store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    // Without the key files: refused, nothing written.
    let refused = blocking::block_on(migrate::copy_store(&*source_store, &*target_store, None));
    let error = refused.expect_err("encrypted streams need the key files");
    assert!(
        error.message.contains("needs the key files"),
        "{}",
        error.message
    );
    assert!(target_store.meta().scan_prefix("").unwrap().is_empty());

    let target_keys = DataKeys::open(target_store.clone(), Arc::new(Vault("dst"))).unwrap();
    // Every key the store's encryption uses, a stream's key without data keys too.
    let mut used = migrate::kms_keys_used(&*source_store).unwrap();
    used.sort();
    let mut want = vec![src_arn("alias/aws/kinesis"), src_arn("k1"), src_arn("k2")];
    want.sort();
    assert_eq!(used, want);
    let mut reencrypt = migrate::Reencrypt {
        source: source_keys,
        target: target_keys.clone(),
        key_arns: [
            (src_arn("k1"), dst_arn("k1")),
            (src_arn("k2"), dst_arn("k2")),
        ]
        .into_iter()
        .collect(),
    };
    // A key the source's key file lacks: refused, naming it.
    let missing = blocking::block_on(migrate::copy_store(
        &*source_store,
        &*target_store,
        Some(&reencrypt),
    ));
    let error = missing.expect_err("the managed key is not mapped");
    assert!(
        error.message.contains(&src_arn("alias/aws/kinesis")),
        "{}",
        error.message
    );
    // With every key: copied (what the failed attempt left is started over).
    reencrypt
        .key_arns
        .insert(src_arn("alias/aws/kinesis"), dst_arn("alias/aws/kinesis"));
    let copied = blocking::block_on(migrate::copy_store(
        &*source_store,
        &*target_store,
        Some(&reencrypt),
    ))
    .unwrap();
    assert_eq!((copied.streams, copied.shards, copied.records), (3, 4, 6));
    drop(reencrypt);

    // The destination reads them with its own keys only ("dst" unwraps no "src" key).
    let target = Engine::open_with_keys(target_store.clone(), config, Some(target_keys)).unwrap();
    let read = |stream: &str, shard: &str| {
        let it = iterator(&target, stream, shard, IteratorType::TrimHorizon, T0 + 30);
        let batch = target.get_records_now(&it, None, T0 + 30).unwrap();
        batch
            .records
            .iter()
            .map(|r| (String::from_utf8(r.data.to_vec()).unwrap(), r.encrypted))
            .collect::<Vec<_>>()
    };
    let sealed = read("sealed", "shardId-000000000000");
    assert_eq!(
        sealed,
        [
            ("s0".to_string(), true),
            ("s1".to_string(), true),
            ("s2".to_string(), true),
            ("p0".to_string(), false),
            ("p1".to_string(), false),
        ]
    );
    let mut managed = read("managed", "shardId-000000000000");
    managed.extend(read("managed", "shardId-000000000001"));
    assert_eq!(managed, [("m0".to_string(), true)]);
    // The streams name the destination's keys; the KeyId the caller gave is kept.
    let described = target
        .describe_stream_summary(&StreamTarget::name("managed"), T0 + 30)
        .unwrap();
    let encryption = described.encryption.expect("encrypted");
    assert_eq!(encryption.key_arn, dst_arn("alias/aws/kinesis"));
    assert_eq!(encryption.key_id, "alias/aws/kinesis");
    let fresh = target
        .describe_stream_summary(&StreamTarget::name("fresh"), T0 + 30)
        .unwrap();
    assert_eq!(fresh.encryption.expect("encrypted").key_arn, dst_arn("k2"));
    // No data key of the source was copied: the destination has its own two, one a stream.
    let stored = target_store
        .meta()
        .scan_prefix("datakey/")
        .unwrap()
        .into_iter()
        .filter(|(_, value)| crate::encryption::is_live_data_key(value))
        .count();
    assert_eq!(stored, 2);
}

/// A store whose puts to shard 1 land late, as a cluster's do on a shard another node just
/// closed.
struct LateOnShardOne(Arc<Store>);

impl crate::storage::RecordStore for LateOnShardOne {
    fn log(&self, id: &str) -> Result<Arc<dyn crate::storage::ShardLog>> {
        crate::storage::RecordStore::log(&*self.0, id)
    }
    fn log_ids(&self) -> Result<Vec<String>> {
        crate::storage::RecordStore::log_ids(&*self.0)
    }
    fn remove_log(&self, id: &str) -> Result<()> {
        crate::storage::RecordStore::remove_log(&*self.0, id)
    }
    fn remove_stream(&self, stream_key: &str, ids: &[String]) -> Result<()> {
        crate::storage::RecordStore::remove_stream(&*self.0, stream_key, ids)
    }
    fn put(
        &self,
        writes: &[crate::storage::ShardWrite<'_>],
        timestamp_ms: i64,
    ) -> Result<crate::storage::PendingPut> {
        let late: Vec<bool> = writes
            .iter()
            .map(|w| {
                w.log
                    .as_any()
                    .downcast_ref::<rivulet_log::Log>()
                    .is_some_and(|log| log.id().ends_with("shardId-000000000001"))
            })
            .collect();
        let pending = crate::storage::RecordStore::put(&*self.0, writes, timestamp_ms)?;
        Ok(Box::pin(async move {
            let mut placed = pending.await?;
            for (p, late) in placed.iter_mut().zip(late) {
                p.late = late;
            }
            Ok(placed)
        }))
    }
    fn meta(&self) -> &dyn crate::storage::MetaBackend {
        crate::storage::RecordStore::meta(&*self.0)
    }
    fn set_keyring(&self, keyring: Arc<dyn rivulet_log::Keyring>) {
        crate::storage::RecordStore::set_keyring(&*self.0, keyring)
    }
    fn shutdown(&self) {
        crate::storage::RecordStore::shutdown(&*self.0)
    }
}

#[test]
fn records_that_land_late_fail_and_are_not_counted_as_incoming() {
    let store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let e = Engine::open(
        Arc::new(LateOnShardOne(store)),
        EngineConfig {
            create_stream_ms: 0,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    create(&e, "late", 2, T0);
    // Explicit hash keys: two records to shard 0, three to shard 1 (which lands late).
    let half = (u128::MAX / 2 + 1).to_string();
    let entries: Vec<PutEntry<'_>> = ["0", "1", half.as_str(), half.as_str(), half.as_str()]
        .iter()
        .map(|hash| PutEntry {
            partition_key: Some("k"),
            explicit_hash_key: Some(hash),
            data: b"12345",
        })
        .collect();
    let settled = e
        .put_records_now(&StreamTarget::name("late"), &entries, None, true, T0 + 1)
        .unwrap();
    let failed: Vec<bool> = settled.results.iter().map(|r| r.is_err()).collect();
    assert_eq!(failed, [false, false, true, true, true]);
    let sum = |metric| {
        e.metric_window("late", None, metric, T0 / 1000 - 60, T0 / 1000 + 60)
            .unwrap()
            .statistic(crate::metrics::Statistic::Sum)
    };
    assert_eq!(sum(crate::metrics::Metric::IncomingRecords), Some(2.0));
    assert_eq!(sum(crate::metrics::Metric::IncomingBytes), Some(12.0));
    assert_eq!(
        sum(crate::metrics::Metric::PutRecordsSuccessfulRecords),
        Some(2.0)
    );
    assert_eq!(
        sum(crate::metrics::Metric::PutRecordsFailedRecords),
        Some(3.0)
    );
}

/// An on-demand engine at AWS's pace × 60 (a 15-minute step is 15 s, the 30-day window 12 h,
/// a scale-down step 6 min) with 10 records/s per shard, as `--on-demand-time-scale 60
/// --limits-scale 0.01` would make it.
fn on_demand_engine(shard_limit: u32) -> Engine {
    let e = engine_with(on_demand_config(shard_limit));
    create_on_demand(&e);
    e
}

fn on_demand_config(shard_limit: u32) -> EngineConfig {
    EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        limits_scale: Some(0.01),
        on_demand_time_scale: 60.0,
        shard_limit,
        ..EngineConfig::default()
    }
}

/// Creates the on-demand stream "od" (4 shards) at T0.
fn create_on_demand(e: &Engine) {
    create_on_demand_named(e, "od");
}

/// Creates an on-demand stream (4 shards) at T0.
fn create_on_demand_named(e: &Engine, name: &str) {
    e.create_stream(
        CreateStream {
            name: name.into(),
            mode: Some(StreamMode::OnDemand),
            ..CreateStream::default()
        },
        T0,
    )
    .unwrap();
}

/// What a run of [`offer`] saw.
#[derive(Default)]
struct Offered {
    offered: usize,
    throttled: usize,
    /// (second since T0, throttled in it, open shards at its end), one per second.
    seconds: Vec<(i64, usize, usize)>,
}

fn open_shards(e: &Engine, now: i64) -> Vec<ShardView> {
    e.list_shards(
        &ListShards {
            target: StreamTarget::name("od"),
            ..ListShards::default()
        },
        now,
    )
    .unwrap()
    .shards
    .into_iter()
    .filter(|s| s.ending_sequence_number.is_none())
    .collect()
}

/// Offers `rate` records/s of 10 bytes to "od" from `from` to `to` (ms), spread evenly over
/// the hash key space, a tenth every 100 ms, ticking as the server does.
fn offer(e: &Engine, rate: usize, from: i64, to: i64, seen: &mut Offered) {
    let data = [7u8; 10];
    let mut now = from;
    let mut round = 0u128;
    let mut throttled_this_second = 0;
    let mut sent = 0usize;
    while now < to {
        // The records due by the end of this 100 ms at `rate`.
        let per_put = ((now + 100 - from) as usize * rate / 1000) - sent;
        sent += per_put;
        let stride = u128::MAX / per_put.max(1) as u128;
        // Each round shifts the keys, so every part of every range takes its share.
        let keys: Vec<String> = (0..per_put as u128)
            .map(|j| (j * stride + (round * 7_919 % 97) * (stride / 97)).to_string())
            .collect();
        let entries: Vec<PutEntry<'_>> = keys
            .iter()
            .map(|k| PutEntry {
                partition_key: Some("k"),
                explicit_hash_key: Some(k.as_str()),
                data: &data,
            })
            .collect();
        if !entries.is_empty() {
            let outcome = e
                .put_records_now(&StreamTarget::name("od"), &entries, None, true, now)
                .unwrap();
            let failed = outcome.results.iter().filter(|r| r.is_err()).count();
            seen.offered += entries.len();
            seen.throttled += failed;
            throttled_this_second += failed;
        }
        e.tick(now).unwrap();
        now += 100;
        round += 1;
        if (now - T0) % 1000 == 0 {
            let open = open_shards(e, now).len();
            seen.seconds
                .push(((now - T0) / 1000, throttled_this_second, open));
            throttled_this_second = 0;
        }
    }
}

/// The seconds at which the open shard count changed, with the new count.
fn steps(seen: &Offered, start: usize) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    let mut last = start;
    for &(second, _, open) in &seen.seconds {
        if open != last {
            out.push((second, open));
            last = open;
        }
    }
    out
}

#[test]
fn an_on_demand_spike_is_throttled_then_absorbed_in_doubling_steps() {
    let e = on_demand_engine(20_000);
    // 400 records/s: ten times the new stream's 4 shards × 10 records/s.
    let mut seen = Offered::default();
    offer(&e, 400, T0, T0 + 80_000, &mut seen);
    let steps = steps(&seen, 4);
    // One step per 15 s (AWS's 15 minutes), each at most doubling: 4 steps to take the
    // spike, then one more for twice its peak.
    let counts: Vec<usize> = steps.iter().map(|s| s.1).collect();
    assert_eq!(counts, vec![8, 16, 32, 64, 128], "steps: {steps:?}");
    for pair in steps.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 15, "steps 15 s apart: {steps:?}");
    }
    // Throttled until the fourth step, not after it.
    let absorbed_at = steps[3].0;
    let before: usize = seen
        .seconds
        .iter()
        .filter(|s| s.0 <= steps[3].0)
        .map(|s| s.1)
        .sum();
    assert!(
        before > 5_000,
        "the spike was throttled until then: {before}"
    );
    let after: usize = seen
        .seconds
        .iter()
        .filter(|s| s.0 > absorbed_at + 1)
        .map(|s| s.1)
        .sum();
    assert_eq!(after, 0, "absorbed after the fourth step ({absorbed_at} s)");
    // Lineage: every split shows in ListShards.
    let all = e
        .list_shards(
            &ListShards {
                target: StreamTarget::name("od"),
                ..ListShards::default()
            },
            T0 + 80_000,
        )
        .unwrap()
        .shards;
    assert_eq!(all.len(), 4 + 2 * (4 + 8 + 16 + 32 + 64));
}

#[test]
fn an_on_demand_stream_takes_each_doubling_without_throttling() {
    let e = on_demand_engine(20_000);
    let mut seen = Offered::default();
    // 1.8 shards' worth, then 3.6, 7.2 and 14.4: each level twice the last, held 20 s (longer
    // than the 15 s step).
    for (i, rate) in [18, 36, 72, 144].into_iter().enumerate() {
        let from = T0 + i as i64 * 20_000;
        offer(&e, rate, from, from + 20_000, &mut seen);
    }
    assert_eq!(seen.throttled, 0, "steps: {:?}", steps(&seen, 4));
    assert_eq!(seen.offered, (18 + 36 + 72 + 144) * 20);
    // The stream grew only as the traffic did, keeping every shard able to take twice its
    // load: 14.4 shards' worth on 32 shards.
    let open = open_shards(&e, T0 + 80_000).len();
    assert_eq!(open, 32, "steps: {:?}", steps(&seen, 4));
}

#[test]
fn an_on_demand_stream_scales_back_down_once_its_peak_leaves_the_window() {
    let e = on_demand_engine(20_000);
    let mut seen = Offered::default();
    offer(&e, 400, T0, T0 + 80_000, &mut seen);
    let before = open_shards(&e, T0 + 80_000);
    assert_eq!(before.len(), 128);
    // No load from here. The peak stays for the 30-day window (12 h at this scale): the
    // capacity stays with it.
    let mut now = T0 + 80_000;
    let mut counts = vec![(now, 128)];
    while now < T0 + 14 * HOUR_MS {
        now += 10_000;
        e.tick(now).unwrap();
        let open = open_shards(&e, now).len();
        if open != counts.last().unwrap().1 {
            counts.push((now, open));
        }
    }
    // The shards split for headroom beyond twice the peak (40 shards' worth) merge first,
    // one step (6 min, AWS's 6 hours) after the last split; twice the peak stays until the
    // peak leaves the window, then the stream halves per step down to the 4 it started with.
    let shrinking: Vec<usize> = counts.iter().map(|c| c.1).collect();
    assert_eq!(shrinking, vec![128, 80, 40, 20, 10, 5, 4], "{counts:?}");
    assert!(counts[1].0 - T0 < HOUR_MS, "{counts:?}");
    assert!(
        counts[2].0 - T0 >= 12 * HOUR_MS,
        "twice the peak kept within the window: {counts:?}"
    );
    for pair in counts[1..].windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 6 * 60_000, "{counts:?}");
    }
    // Merges keep lineage: each open shard has two parents.
    let open = open_shards(&e, now);
    assert!(
        open.iter()
            .all(|s| s.parent_shard_id.is_some() && s.adjacent_parent_shard_id.is_some()),
        "{open:?}"
    );
    // A reader of a shard that was merged away reaches its end and is told where the records
    // go next.
    let mut it = iterator(
        &e,
        "od",
        &before[0].shard_id,
        IteratorType::TrimHorizon,
        now,
    );
    let children = loop {
        let batch = e.get_records_now(&it, None, now).unwrap();
        match batch.next_shard_iterator {
            Some(next) => it = next,
            None => break batch.child_shards.unwrap_or_default(),
        }
    };
    assert_eq!(children.len(), 1, "merged into one child");
    // And it scales up again when traffic comes back.
    let mut seen = Offered::default();
    offer(&e, 80, now, now + 10_000, &mut seen);
    assert!(open_shards(&e, now + 10_000).len() > 4);
}

#[test]
fn releasing_warm_capacity_scales_an_on_demand_stream_down_at_once() {
    let e = on_demand_engine(20_000);
    let mut seen = Offered::default();
    offer(&e, 400, T0, T0 + 80_000, &mut seen);
    assert_eq!(open_shards(&e, T0 + 80_000).len(), 128);
    let now = T0 + 200_000;
    // Warm throughput needs the minimum throughput billing commitment (On-demand Advantage).
    let refused = e
        .update_warm_throughput(&StreamTarget::name("od"), 4, now)
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::InvalidArgument);
    e.update_account_settings(true, now).unwrap();
    let (_, warm) = e
        .update_warm_throughput(&StreamTarget::name("od"), 4, now)
        .unwrap();
    assert_eq!((warm.target_mibps, warm.current_mibps), (4, 128));
    assert_eq!(open_shards(&e, now + 1).len(), 4);
    // The burst behind the capacity is forgotten: the stream does not scale up again.
    for second in 1..60 {
        e.tick(now + second * 1_000).unwrap();
    }
    assert_eq!(open_shards(&e, now + 60_000).len(), 4);
}

#[test]
fn on_demand_scaling_stops_at_the_account_shard_limit() {
    let e = on_demand_engine(10);
    let mut seen = Offered::default();
    offer(&e, 400, T0, T0 + 60_000, &mut seen);
    let counts: Vec<usize> = steps(&seen, 4).iter().map(|s| s.1).collect();
    assert_eq!(counts, vec![8, 10], "never more shards than the quota");
    let view = e
        .metrics_snapshot(T0 + 60_000)
        .into_iter()
        .find(|v| v.name == "od")
        .and_then(|v| v.on_demand)
        .unwrap();
    // Counted once per step (15 s here), not once a second.
    assert!((1..=4).contains(&view.shard_limit_hits), "{view:?}");
    assert!(view.target_shards > 10, "{view:?}");
    // The quota's error is the one CreateStream and UpdateShardCount give.
    let error = e
        .create_stream(
            CreateStream {
                name: "more".into(),
                mode: Some(StreamMode::OnDemand),
                ..CreateStream::default()
            },
            T0 + 60_000,
        )
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::LimitExceeded);
}

#[test]
fn an_on_demand_stream_s_peaks_survive_a_restart() {
    let backend = Arc::new(MemBackend::new());
    let config = on_demand_config(20_000);
    let store = Store::open(backend.clone(), StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config.clone()).unwrap();
    create_on_demand(&e);
    let mut seen = Offered::default();
    offer(&e, 400, T0, T0 + 80_000, &mut seen);
    store.shutdown();
    drop(e);
    let store = Store::open(backend, StoreConfig::default()).unwrap();
    let e = Engine::open(store, config).unwrap();
    // A new process has no meters, but the window's peak is in the stream's metadata: the
    // stream keeps twice it (80 shards) rather than falling back to 4.
    let mut now = T0 + 80_000;
    while now < T0 + 2 * HOUR_MS {
        now += 10_000;
        e.tick(now).unwrap();
    }
    assert_eq!(open_shards(&e, now).len(), 80);
}

/// Commits `key` (with an empty document) straight into the store's metadata, as a commit in
/// flight would.
fn put_meta_key(store: &Store, key: &str) {
    store
        .meta()
        .commit(&[rivulet_log::MetaOp::Put {
            key: key.to_string(),
            value: b"{}".to_vec(),
        }])
        .unwrap();
}

/// A deleted queue's delivery state goes with it, even what a commit in flight as it went
/// wrote afterwards (removed again a minute later), and what a crash left (removed when the
/// store is opened again).
#[test]
fn a_deleted_queue_s_delivery_state_does_not_outlive_it() {
    let backend = Arc::new(MemBackend::new());
    let config = EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        ..EngineConfig::default()
    };
    let store = Store::open(backend.clone(), StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config.clone()).unwrap();
    create_on_demand(&e);
    let queue = e
        .create_queue(
            &crate::CreateQueue {
                name: "q",
                streams: vec![(&e.stream_arn("od"), None, None)],
                attributes: Default::default(),
                tags: Vec::new(),
            },
            T0 + 1,
        )
        .unwrap();
    let id = e.queue_ids().into_iter().next().unwrap();
    let prefix = e.queue_state_prefix(&id);
    let write = |key: &str| put_meta_key(&store, key);
    write(&format!("{prefix}c/0"));
    e.delete_queue(&queue.arn, T0 + 2).unwrap();
    assert!(store.meta().scan_prefix(&prefix).unwrap().is_empty());
    // A commit that was in flight lands after the deletion.
    write(&format!("{prefix}b/0/0"));
    e.tick(T0 + 30_000).unwrap();
    assert_eq!(store.meta().scan_prefix(&prefix).unwrap().len(), 1);
    e.tick(T0 + 62_002).unwrap();
    assert!(store.meta().scan_prefix(&prefix).unwrap().is_empty());
    // What a process stopped before its sweep left: gone when the store opens again.
    write(&format!("{prefix}b/0/1"));
    store.shutdown();
    drop(e);
    let store = Store::open(backend, StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config).unwrap();
    assert!(store.meta().scan_prefix(&prefix).unwrap().is_empty());
    assert!(e.queue_ids().is_empty());
}

/// A deleted channel's delivery state goes with it, and what a checkpoint commit in flight
/// as it went wrote afterwards goes a minute later.
#[test]
fn a_deleted_channel_s_delivery_state_does_not_outlive_it() {
    let config = EngineConfig {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        ..EngineConfig::default()
    };
    let store = Store::open(Arc::new(MemBackend::new()), StoreConfig::default()).unwrap();
    let e = Engine::open(store.clone(), config).unwrap();
    create_on_demand(&e);
    let channel = e
        .create_channel(
            &crate::channels::CreateChannel {
                name: "c".into(),
                role_arn: "arn:aws:iam::000000000000:role/delivery".into(),
                streams: vec![(e.stream_arn("od"), "JSON".into(), None)],
                s3: Some((
                    Some(300),
                    None,
                    crate::channels::S3Storage {
                        bucket_arn: "arn:aws:s3:::lake".into(),
                        expected_owner: "000000000000".into(),
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
            T0 + 1,
        )
        .unwrap();
    let prefix = e.channel_state_prefix(&channel.meta.id);
    let write = |key: &str| put_meta_key(&store, key);
    write(&format!("{prefix}c/0"));
    e.delete_channel(&channel.arn, T0 + 2).unwrap();
    e.tick(T0 + 3).unwrap();
    assert!(store.meta().scan_prefix(&prefix).unwrap().is_empty());
    // A checkpoint commit that was in flight lands after the deletion.
    write(&format!("{prefix}c/1"));
    e.tick(T0 + 30_000).unwrap();
    assert_eq!(store.meta().scan_prefix(&prefix).unwrap().len(), 1);
    e.tick(T0 + 60_004).unwrap();
    assert!(store.meta().scan_prefix(&prefix).unwrap().is_empty());
}

#[test]
fn a_stream_switched_to_on_demand_keeps_its_shards_for_a_step() {
    let e = engine_with(on_demand_config(20_000));
    create(&e, "od", 8, T0);
    e.update_stream_mode(&StreamTarget::name("od"), StreamMode::OnDemand, T0 + 1_000)
        .unwrap();
    // Idle: its target is the 4 a new on-demand stream has, but the shards stay for a
    // scale-down step (6 min at this scale) after the switch, then halve.
    let mut now = T0 + 1_000;
    while now < T0 + 1_000 + 6 * 60_000 - 1_000 {
        now += 1_000;
        e.tick(now).unwrap();
    }
    assert_eq!(open_shards(&e, now).len(), 8);
    e.tick(T0 + 1_000 + 6 * 60_000).unwrap();
    assert_eq!(open_shards(&e, T0 + 1_000 + 6 * 60_000).len(), 4);
}
