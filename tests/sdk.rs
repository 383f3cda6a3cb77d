//! Every operation through the `aws-sdk-kinesis` crate, over HTTP/1.1 to a real server.

use std::collections::BTreeMap;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ScalingType, ShardFilter, ShardFilterType, ShardIteratorType,
    StreamMode, StreamModeDetails, StreamStatus,
};

use crate::util::{TestServer, error_of};

async fn create(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create");
}

async fn shard_ids(client: &Client, name: &str) -> Vec<String> {
    let out = client
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .expect("list shards");
    out.shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect()
}

async fn iterator(client: &Client, name: &str, shard: &str, kind: ShardIteratorType) -> String {
    client
        .get_shard_iterator()
        .stream_name(name)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .send()
        .await
        .expect("iterator")
        .shard_iterator()
        .expect("has iterator")
        .to_string()
}

/// Reads a shard from `iterator` until it returns no records (open) or ends (closed).
async fn drain(
    client: &Client,
    mut iterator: String,
) -> (Vec<(String, Vec<u8>, String)>, Option<Vec<String>>) {
    let mut out = Vec::new();
    loop {
        let page = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .expect("get records");
        for r in page.records() {
            out.push((
                r.partition_key().to_string(),
                r.data().as_ref().to_vec(),
                r.sequence_number().to_string(),
            ));
        }
        match page.next_shard_iterator() {
            None => {
                let children = page
                    .child_shards()
                    .iter()
                    .map(|c| c.shard_id().to_string())
                    .collect();
                return (out, Some(children));
            }
            Some(next) if page.records().is_empty() => {
                let _ = next;
                return (out, None);
            }
            Some(next) => iterator = next.to_string(),
        }
    }
}

#[tokio::test]
async fn stream_lifecycle_create_describe_list_delete() {
    let t = TestServer::start().await;
    stream_lifecycle_create_describe_list_delete_on(t.client.clone()).await;
    t.stop().await;
}

async fn stream_lifecycle_create_describe_list_delete_on(c: Client) {
    let c = &c;
    create(c, "alpha", 3).await;
    c.create_stream()
        .stream_name("beta")
        .send()
        .await
        .expect("on-demand create");
    let d = c
        .describe_stream()
        .stream_name("alpha")
        .send()
        .await
        .unwrap();
    let d = d.stream_description().unwrap();
    assert_eq!(d.stream_name(), "alpha");
    assert_eq!(
        d.stream_arn(),
        "arn:aws:kinesis:us-east-1:000000000000:stream/alpha"
    );
    assert_eq!(d.stream_status(), &StreamStatus::Active);
    assert_eq!(d.shards().len(), 3);
    assert_eq!(d.shards()[0].shard_id(), "shardId-000000000000");
    assert_eq!(
        d.shards()[0].hash_key_range().unwrap().starting_hash_key(),
        "0"
    );
    assert_eq!(
        d.shards()[2].hash_key_range().unwrap().ending_hash_key(),
        "340282366920938463463374607431768211455"
    );
    assert_eq!(d.retention_period_hours(), 24);
    assert_eq!(d.encryption_type().map(|e| e.as_str()), Some("NONE"));
    assert_eq!(d.enhanced_monitoring().len(), 1);
    assert_eq!(
        d.stream_mode_details().unwrap().stream_mode(),
        &StreamMode::Provisioned
    );

    let beta = c
        .describe_stream_summary()
        .stream_name("beta")
        .send()
        .await
        .unwrap();
    let beta = beta.stream_description_summary().unwrap();
    assert_eq!(beta.open_shard_count(), 4);
    assert_eq!(
        beta.stream_mode_details().unwrap().stream_mode(),
        &StreamMode::OnDemand
    );

    let list = c.list_streams().send().await.unwrap();
    assert_eq!(list.stream_names(), ["alpha", "beta"]);
    assert!(!list.has_more_streams());
    assert_eq!(list.stream_summaries().len(), 2);
    let page = c.list_streams().limit(1).send().await.unwrap();
    assert_eq!(page.stream_names(), ["alpha"]);
    assert!(page.has_more_streams());
    let rest = c
        .list_streams()
        .next_token(page.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.stream_names(), ["beta"]);
    let after = c
        .list_streams()
        .exclusive_start_stream_name("alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(after.stream_names(), ["beta"]);

    let dup = c
        .create_stream()
        .stream_name("alpha")
        .shard_count(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(dup.into_service_error()),
        (
            "ResourceInUseException".into(),
            "Stream alpha under account 000000000000 already exists.".into()
        )
    );
    c.delete_stream().stream_name("alpha").send().await.unwrap();
    let gone = c
        .describe_stream()
        .stream_name("alpha")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(gone.into_service_error()),
        (
            "ResourceNotFoundException".into(),
            "Stream alpha under account 000000000000 not found.".into()
        )
    );
    let limits = c.describe_limits().send().await.unwrap();
    assert_eq!(limits.shard_limit(), 20_000);
    assert_eq!(limits.open_shard_count(), 4);
    assert_eq!(limits.on_demand_stream_count(), 1);
}

#[tokio::test]
async fn put_and_get_round_trip_every_iterator_type() {
    let t = TestServer::start().await;
    put_and_get_round_trip_every_iterator_type_on(t.client.clone()).await;
    t.stop().await;
}

async fn put_and_get_round_trip_every_iterator_type_on(c: Client) {
    let c = &c;
    create(c, "s", 1).await;
    let before = DateTime::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - 1000,
    );
    let mut seqs = Vec::new();
    for i in 0..5 {
        let out = c
            .put_record()
            .stream_name("s")
            .partition_key(format!("key-{i}"))
            .data(Blob::new(format!("record {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(out.shard_id(), "shardId-000000000000");
        seqs.push(out.sequence_number().to_string());
    }
    let as_num = |s: &String| (s.len(), s.clone());
    for pair in seqs.windows(2) {
        assert!(
            as_num(&pair[0]) < as_num(&pair[1]),
            "sequence numbers increase"
        );
    }
    let shard = "shardId-000000000000";
    let (all, _) = drain(
        c,
        iterator(c, "s", shard, ShardIteratorType::TrimHorizon).await,
    )
    .await;
    assert_eq!(all.len(), 5);
    assert_eq!(all[2].0, "key-2");
    assert_eq!(all[2].1, b"record 2");
    assert_eq!(all.iter().map(|r| r.2.clone()).collect::<Vec<_>>(), seqs);

    let at = c
        .get_shard_iterator()
        .stream_name("s")
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(&seqs[3])
        .send()
        .await
        .unwrap();
    let (from3, _) = drain(c, at.shard_iterator().unwrap().to_string()).await;
    assert_eq!(from3.len(), 2);
    assert_eq!(from3[0].2, seqs[3]);
    let after = c
        .get_shard_iterator()
        .stream_name("s")
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
        .starting_sequence_number(&seqs[3])
        .send()
        .await
        .unwrap();
    let (from4, _) = drain(c, after.shard_iterator().unwrap().to_string()).await;
    assert_eq!(
        from4.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        vec![seqs[4].clone()]
    );

    let latest = iterator(c, "s", shard, ShardIteratorType::Latest).await;
    let empty = c
        .get_records()
        .shard_iterator(&latest)
        .send()
        .await
        .unwrap();
    assert!(empty.records().is_empty());
    assert_eq!(empty.millis_behind_latest(), Some(0));
    c.put_record()
        .stream_name("s")
        .partition_key("late")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap();
    let next = c
        .get_records()
        .shard_iterator(empty.next_shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(next.records().len(), 1);
    assert_eq!(next.records()[0].partition_key(), "late");

    let ts = c
        .get_shard_iterator()
        .stream_name("s")
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(before)
        .send()
        .await
        .unwrap();
    let (from_ts, _) = drain(c, ts.shard_iterator().unwrap().to_string()).await;
    assert_eq!(from_ts.len(), 6);

    let limited = c
        .get_records()
        .shard_iterator(iterator(c, "s", shard, ShardIteratorType::TrimHorizon).await)
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.records().len(), 2);
    assert!(limited.millis_behind_latest().unwrap() >= 0);
}

#[tokio::test]
async fn put_records_routes_by_md5_and_explicit_hash_key() {
    let t = TestServer::start().await;
    put_records_routes_by_md5_and_explicit_hash_key_on(t.client.clone()).await;
    t.stop().await;
}

async fn put_records_routes_by_md5_and_explicit_hash_key_on(c: Client) {
    let c = &c;
    create(c, "batch", 4).await;
    let entries: Vec<PutRecordsRequestEntry> = (0..500)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("pk-{i}"))
                .data(Blob::new(vec![(i % 251) as u8; 100]))
                .build()
                .unwrap()
        })
        .collect();
    let out = c
        .put_records()
        .stream_name("batch")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(out.records().len(), 500);
    // The shard each record went to is the one whose range holds MD5(partition key).
    let d = c
        .describe_stream()
        .stream_name("batch")
        .send()
        .await
        .unwrap();
    let ranges: Vec<(u128, u128, String)> = d
        .stream_description()
        .unwrap()
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                r.starting_hash_key().parse().unwrap(),
                r.ending_hash_key().parse().unwrap(),
                s.shard_id().to_string(),
            )
        })
        .collect();
    let mut per_shard: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in out.records().iter().enumerate() {
        use md5::Digest;
        let hash = u128::from_be_bytes(md5::Md5::digest(format!("pk-{i}").as_bytes()).into());
        let owner = ranges
            .iter()
            .find(|(s, e, _)| *s <= hash && hash <= *e)
            .unwrap();
        assert_eq!(r.shard_id(), Some(owner.2.as_str()));
        *per_shard.entry(owner.2.clone()).or_default() += 1;
    }
    let mut total = 0;
    for (shard, expected) in &per_shard {
        let (records, _) = drain(
            c,
            iterator(c, "batch", shard, ShardIteratorType::TrimHorizon).await,
        )
        .await;
        assert_eq!(records.len(), *expected);
        total += records.len();
        for pair in records.windows(2) {
            let n: Vec<usize> = pair.iter().map(|r| r.0[3..].parse().unwrap()).collect();
            assert!(n[0] < n[1], "request order is kept within a shard");
        }
    }
    assert_eq!(total, 500);
    let explicit = c
        .put_record()
        .stream_name("batch")
        .partition_key("x")
        .explicit_hash_key("340282366920938463463374607431768211455")
        .data(Blob::new("last"))
        .send()
        .await
        .unwrap();
    assert_eq!(explicit.shard_id(), "shardId-000000000003");
    let bad = c
        .put_record()
        .stream_name("batch")
        .partition_key("x")
        .explicit_hash_key("340282366920938463463374607431768211456")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(bad.into_service_error()), (
        "InvalidArgumentException".into(),
        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was 340282366920938463463374607431768211456".into()
    ));
}

#[tokio::test]
async fn split_and_merge_keep_lineage_and_end_parents_with_child_shards() {
    let t = TestServer::start().await;
    split_and_merge_keep_lineage_and_end_parents_with_child_shards_on(t.client.clone()).await;
    t.stop().await;
}

async fn split_and_merge_keep_lineage_and_end_parents_with_child_shards_on(c: Client) {
    let c = &c;
    create(c, "re", 1).await;
    c.put_record()
        .stream_name("re")
        .partition_key("a")
        .data(Blob::new("before"))
        .send()
        .await
        .unwrap();
    let parent_iter = iterator(
        c,
        "re",
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
    )
    .await;
    c.split_shard()
        .stream_name("re")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    let ids = shard_ids(c, "re").await;
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002"
        ]
    );
    let (records, children) = drain(c, parent_iter).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        children,
        Some(vec![
            "shardId-000000000001".to_string(),
            "shardId-000000000002".to_string()
        ])
    );
    let d = c.describe_stream().stream_name("re").send().await.unwrap();
    let shards = d.stream_description().unwrap().shards();
    assert!(
        shards[0]
            .sequence_number_range()
            .unwrap()
            .ending_sequence_number()
            .is_some()
    );
    assert_eq!(shards[1].parent_shard_id(), Some("shardId-000000000000"));
    assert_eq!(
        shards[1].hash_key_range().unwrap().ending_hash_key(),
        "170141183460469231731687303715884105727"
    );

    let again = c
        .split_shard()
        .stream_name("re")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("5")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(again.into_service_error()).1,
        "Shard shardId-000000000000 in stream re under account 000000000000 has already been merged or split, and thus is not eligible for merging or splitting."
    );
    let bad_key = c
        .split_shard()
        .stream_name("re")
        .shard_to_split("shardId-000000000001")
        .new_starting_hash_key("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(bad_key.into_service_error()).1,
        "NewStartingHashKey 1 used in SplitShard() on shard shardId-000000000001 in stream re under account 000000000000 is not both greater than one plus the shard's StartingHashKey 0 and less than the shard's EndingHashKey 170141183460469231731687303715884105727."
    );

    c.merge_shards()
        .stream_name("re")
        .shard_to_merge("shardId-000000000001")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .unwrap();
    let open = c
        .list_shards()
        .stream_name("re")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(open.shards().len(), 1);
    let merged = &open.shards()[0];
    assert_eq!(merged.shard_id(), "shardId-000000000003");
    assert_eq!(merged.parent_shard_id(), Some("shardId-000000000001"));
    assert_eq!(
        merged.adjacent_parent_shard_id(),
        Some("shardId-000000000002")
    );
    assert_eq!(merged.hash_key_range().unwrap().starting_hash_key(), "0");

    create(c, "three", 3).await;
    let not_adjacent = c
        .merge_shards()
        .stream_name("three")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(not_adjacent.into_service_error()).1,
        "Shards shardId-000000000000 and shardId-000000000002 in stream three under account 000000000000 are not an adjacent pair of shards eligible for merging"
    );
}

#[tokio::test]
async fn update_shard_count_scales_uniformly_both_ways() {
    let t = TestServer::start().await;
    update_shard_count_scales_uniformly_both_ways_on(t.client.clone()).await;
    t.stop().await;
}

async fn update_shard_count_scales_uniformly_both_ways_on(c: Client) {
    let c = &c;
    create(c, "u", 2).await;
    let up = c
        .update_shard_count()
        .stream_name("u")
        .target_shard_count(3)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    assert_eq!(up.current_shard_count(), Some(2));
    assert_eq!(up.target_shard_count(), Some(3));
    let open = c
        .list_shards()
        .stream_name("u")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ranges: Vec<(u128, u128)> = open
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                r.starting_hash_key().parse().unwrap(),
                r.ending_hash_key().parse().unwrap(),
            )
        })
        .collect();
    let mut sorted = ranges.clone();
    sorted.sort();
    assert_eq!(sorted.len(), 3);
    assert_eq!(sorted[0].0, 0);
    assert_eq!(sorted[2].1, u128::MAX);
    assert_eq!(sorted[0].1, 113427455640312821154458202477256070484);
    for pair in sorted.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0);
    }
    for shard in c
        .list_shards()
        .stream_name("u")
        .send()
        .await
        .unwrap()
        .shards()
    {
        let parents = shard.parent_shard_id().iter().count()
            + shard.adjacent_parent_shard_id().iter().count();
        assert!(parents <= 2);
    }
    let down = c
        .update_shard_count()
        .stream_name("u")
        .target_shard_count(2)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    assert_eq!(down.current_shard_count(), Some(3));
    let summary = c
        .describe_stream_summary()
        .stream_name("u")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        2
    );
    let too_many = c
        .update_shard_count()
        .stream_name("u")
        .target_shard_count(5)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(too_many.into_service_error()).0,
        "InvalidArgumentException"
    );
}

#[tokio::test]
async fn retention_tags_and_max_record_size() {
    let t = TestServer::start().await;
    retention_tags_and_max_record_size_on(t.client.clone()).await;
    t.stop().await;
}

async fn retention_tags_and_max_record_size_on(c: Client) {
    let c = &c;
    create(c, "r", 1).await;
    c.increase_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(48)
        .send()
        .await
        .unwrap();
    let short = c
        .increase_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(30)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(short.into_service_error()).1,
        "Requested retention period (30 hours) for stream r can not be shorter than existing retention period (48 hours). Use DecreaseRetentionPeriod API."
    );
    let min = c
        .decrease_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(min.into_service_error()).1,
        "Minimum allowed retention period is 24 hours. Requested retention period (1 hours) is too short."
    );
    c.decrease_stream_retention_period()
        .stream_name("r")
        .retention_period_hours(24)
        .send()
        .await
        .unwrap();

    c.add_tags_to_stream()
        .stream_name("r")
        .tags("team", "data")
        .tags("env", "test")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_for_stream()
        .stream_name("r")
        .send()
        .await
        .unwrap();
    let pairs: Vec<(&str, Option<&str>)> =
        tags.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(pairs, [("env", Some("test")), ("team", Some("data"))]);
    let page = c
        .list_tags_for_stream()
        .stream_name("r")
        .limit(1)
        .send()
        .await
        .unwrap();
    assert!(page.has_more_tags());
    c.remove_tags_from_stream()
        .stream_name("r")
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/r";
    c.tag_resource()
        .resource_arn(arn)
        .tags("k", "v")
        .send()
        .await
        .unwrap();
    let by_arn = c
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(by_arn.tags().len(), 2);
    c.untag_resource()
        .resource_arn(arn)
        .tag_keys("k")
        .send()
        .await
        .unwrap();
    let bad = c
        .add_tags_to_stream()
        .stream_name("r")
        .tags("bad*key", "v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(bad.into_service_error()).0,
        "InvalidArgumentException"
    );

    let big = vec![0u8; 1024 * 1024];
    let too_big = c
        .put_record()
        .stream_name("r")
        .partition_key("k")
        .data(Blob::new(big.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(too_big.into_service_error()).0,
        "ValidationException"
    );
    c.update_max_record_size()
        .stream_arn(arn)
        .max_record_size_in_kib(2048)
        .send()
        .await
        .unwrap();
    c.put_record()
        .stream_arn(arn)
        .partition_key("k")
        .data(Blob::new(big))
        .send()
        .await
        .unwrap();
    let wrong_account = c
        .describe_stream_summary()
        .stream_arn("arn:aws:kinesis:us-east-1:111111111111:stream/r")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(wrong_account.into_service_error()).0,
        "ResourceNotFoundException"
    );
}

#[tokio::test]
async fn list_shards_filters_and_pagination() {
    let t = TestServer::start().await;
    list_shards_filters_and_pagination_on(t.client.clone()).await;
    t.stop().await;
}

async fn list_shards_filters_and_pagination_on(c: Client) {
    let c = &c;
    create(c, "ls", 5).await;
    let first = c
        .list_shards()
        .stream_name("ls")
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.shards().len(), 2);
    let token = first.next_token().unwrap().to_string();
    let second = c
        .list_shards()
        .next_token(&token)
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(second.shards()[0].shard_id(), "shardId-000000000002");
    let both = c
        .list_shards()
        .stream_name("ls")
        .next_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(both.into_service_error()).1,
        "NextToken and StreamName cannot be provided together."
    );
    let after = c
        .list_shards()
        .stream_name("ls")
        .exclusive_start_shard_id("shardId-000000000003")
        .send()
        .await
        .unwrap();
    assert_eq!(after.shards().len(), 1);
    let filtered = c
        .list_shards()
        .stream_name("ls")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AfterShardId)
                .shard_id("shardId-000000000001")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.shards().len(), 3);
    let horizon = c
        .list_shards()
        .stream_name("ls")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtTrimHorizon)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(horizon.shards().len(), 5);
    let page = c
        .describe_stream()
        .stream_name("ls")
        .limit(2)
        .send()
        .await
        .unwrap();
    assert!(page.stream_description().unwrap().has_more_shards());
    let rest = c
        .describe_stream()
        .stream_name("ls")
        .exclusive_start_shard_id("shardId-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(rest.stream_description().unwrap().shards().len(), 3);
}

#[tokio::test]
async fn iterator_and_sequence_number_errors_match_aws() {
    let t = TestServer::start().await;
    iterator_and_sequence_number_errors_match_aws_on(t.client.clone()).await;
    t.stop().await;
}

async fn iterator_and_sequence_number_errors_match_aws_on(c: Client) {
    let c = &c;
    create(c, "e", 2).await;
    let put = c
        .put_record()
        .stream_name("e")
        .partition_key("a")
        .explicit_hash_key("0")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap();
    let seq0 = put.sequence_number().to_string();
    let wrong_shard = c
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-000000000001")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(&seq0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(wrong_shard.into_service_error()).1,
        "Invalid StartingSequenceNumber. It encodes shardId-000000000000, while it was used in a call to a shard with shardId-000000000001"
    );
    let missing = c
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-000000000001")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(missing.into_service_error()).1,
        "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber."
    );
    let no_shard = c
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-000000000009")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(no_shard.into_service_error()).1,
        "Shard shardId-000000000009 in stream e under account 000000000000 does not exist"
    );
    let lenient = c
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-0")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let page = c
        .get_records()
        .shard_iterator(lenient.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.records().len(), 1);
    let bad = c
        .get_records()
        .shard_iterator("AAAAAAAAAAE=")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(bad.into_service_error()),
        (
            "InvalidArgumentException".into(),
            "Invalid ShardIterator.".into()
        )
    );
    let ordered = c
        .put_record()
        .stream_name("e")
        .partition_key("a")
        .explicit_hash_key("0")
        .sequence_number_for_ordering(&seq0)
        .data(Blob::new("y"))
        .send()
        .await
        .unwrap();
    assert!(
        (ordered.sequence_number().len(), ordered.sequence_number()) > (seq0.len(), seq0.as_str())
    );
    let future = c
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(DateTime::from_secs(4_000_000_000))
        .send()
        .await
        .unwrap_err();
    assert!(error_of(future.into_service_error()).1.starts_with(
        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: 4000000000000, currentTimestampInMillis: "));
}

/// Lifecycle delays of 300 ms: CREATING and DELETING are seen.
fn slow_lifecycle() -> rivulet_server::ServerConfig {
    let mut config = rivulet_server::ServerConfig::for_tests();
    config.engine.create_stream_ms = 300;
    config.engine.delete_stream_ms = 300;
    config
}

#[tokio::test]
async fn lifecycle_delays_show_creating_and_deleting() {
    let t = TestServer::with_config(slow_lifecycle()).await;
    lifecycle_delays_show_creating_and_deleting_on(t.client.clone()).await;
    t.stop().await;
}

async fn lifecycle_delays_show_creating_and_deleting_on(c: Client) {
    let c = &c;
    create(c, "slow", 1).await;
    let d = c
        .describe_stream_summary()
        .stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.stream_description_summary().unwrap().stream_status(),
        &StreamStatus::Creating
    );
    let early = c
        .put_record()
        .stream_name("slow")
        .partition_key("a")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(early.into_service_error()).0,
        "ResourceNotFoundException"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let d = c
        .describe_stream_summary()
        .stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.stream_description_summary().unwrap().stream_status(),
        &StreamStatus::Active
    );
    c.delete_stream().stream_name("slow").send().await.unwrap();
    let d = c
        .describe_stream_summary()
        .stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.stream_description_summary().unwrap().stream_status(),
        &StreamStatus::Deleting
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        c.describe_stream_summary()
            .stream_name("slow")
            .send()
            .await
            .is_err()
    );
    let _ = StreamModeDetails::builder()
        .stream_mode(StreamMode::OnDemand)
        .build();
}

/// A test body: the suite's assertions against whatever `c` talks to.
type Body = fn(Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The suite above through three cluster nodes (`--cluster` on a 3-server R3 NATS cluster; a
/// deployment of its own for each test), each request sent to the next node in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_through_three_cluster_nodes() {
    let nats = rivulet_cluster::servers::NatsCluster::start(3)
        .await
        .expect("nats cluster");
    let suite: Vec<(&str, rivulet_server::ServerConfig, Body)> = vec![
        (
            "stream_lifecycle_create_describe_list_delete",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(stream_lifecycle_create_describe_list_delete_on(c)),
        ),
        (
            "put_and_get_round_trip_every_iterator_type",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(put_and_get_round_trip_every_iterator_type_on(c)),
        ),
        (
            "put_records_routes_by_md5_and_explicit_hash_key",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(put_records_routes_by_md5_and_explicit_hash_key_on(c)),
        ),
        (
            "split_and_merge_keep_lineage_and_end_parents_with_child_shards",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(split_and_merge_keep_lineage_and_end_parents_with_child_shards_on(c)),
        ),
        (
            "update_shard_count_scales_uniformly_both_ways",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(update_shard_count_scales_uniformly_both_ways_on(c)),
        ),
        (
            "retention_tags_and_max_record_size",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(retention_tags_and_max_record_size_on(c)),
        ),
        (
            "list_shards_filters_and_pagination",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(list_shards_filters_and_pagination_on(c)),
        ),
        (
            "iterator_and_sequence_number_errors_match_aws",
            rivulet_server::ServerConfig::for_tests(),
            |c| Box::pin(iterator_and_sequence_number_errors_match_aws_on(c)),
        ),
        (
            "lifecycle_delays_show_creating_and_deleting",
            slow_lifecycle(),
            |c| Box::pin(lifecycle_delays_show_creating_and_deleting_on(c)),
        ),
    ];
    for (i, (name, config, body)) in suite.into_iter().enumerate() {
        eprintln!("through three cluster nodes: {name}");
        // Followers take 200 ms to take in what another node committed (a loaded machine's
        // might): no answer may depend on how soon they do.
        let lag = std::time::Duration::from_millis(200);
        let nodes =
            crate::util::ClusterNodes::start_lagging(&nats, &format!("sdk{i}"), 3, config, lag)
                .await;
        body(nodes.client.clone()).await;
        nodes.stop().await;
    }
    nats.stop().await.expect("stop nats");
}
