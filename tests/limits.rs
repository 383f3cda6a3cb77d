//! Shard throughput limits over the wire: partial PutRecords failures with per-entry errors,
//! PutRecord and GetShardIterator refused with ProvisionedThroughputExceededException.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use rivulet_server::ServerConfig;

use crate::util::{TestServer, client_without_retries, error_of};

#[tokio::test]
async fn a_throttled_shard_fails_entries_and_requests_like_aws() {
    let mut config = ServerConfig::for_tests();
    // A hundredth of AWS's rates: 10 records/s per shard.
    config.engine.limits_scale = Some(0.01);
    let t = TestServer::with_config(config).await;
    let c = &client_without_retries(t.addr);
    c.create_stream()
        .stream_name("slow")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    let entries: Vec<PutRecordsRequestEntry> = (0..30)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("k{i}"))
                .data(Blob::new(vec![1u8; 10]))
                .build()
                .expect("entry")
        })
        .collect();
    let out = c
        .put_records()
        .stream_name("slow")
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    let failed = out.failed_record_count().unwrap_or_default();
    assert!((19..=20).contains(&failed), "{failed} failed");
    let records = out.records();
    assert!(records[..10].iter().all(|r| r.sequence_number().is_some()));
    let refused = &records[29];
    assert!(refused.sequence_number().is_none() && refused.shard_id().is_none());
    assert_eq!(
        refused.error_code(),
        Some("ProvisionedThroughputExceededException")
    );
    assert_eq!(
        refused.error_message(),
        Some(
            "Rate exceeded for shard shardId-000000000000 in stream slow under account 000000000000."
        )
    );
    let single = c
        .put_record()
        .stream_name("slow")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(
        error_of(single.into_service_error()),
        (
            "ProvisionedThroughputExceededException".into(),
            "Rate exceeded for shard shardId-000000000000 in stream slow under account \
             000000000000."
                .into()
        )
    );
    // GetShardIterator: 5 a second at AWS's rate, so 0.05 here: the first passes, the next
    // is refused.
    let iterator = || {
        c.get_shard_iterator()
            .stream_name("slow")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
    };
    iterator().await.expect("first iterator");
    let second = iterator().await.expect_err("throttled");
    assert_eq!(
        error_of(second.into_service_error()).0,
        "ProvisionedThroughputExceededException"
    );
    t.stop().await;
}

#[tokio::test]
async fn control_plane_calls_are_limited_per_account() {
    let mut config = ServerConfig::for_tests();
    config.engine.limits_scale = Some(1.0);
    let t = TestServer::with_config(config).await;
    let c = &client_without_retries(t.addr);
    c.create_stream()
        .stream_name("busy")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    // DescribeLimits: one call a second.
    c.describe_limits().send().await.expect("first");
    let second = c.describe_limits().send().await.expect_err("over 1/s");
    assert_eq!(
        error_of(second.into_service_error()),
        (
            "LimitExceededException".into(),
            "Rate exceeded for account 000000000000.".into()
        )
    );
    // DescribeStream: ten a second.
    let mut refused = None;
    for _ in 0..11 {
        if let Err(error) = c.describe_stream().stream_name("busy").send().await {
            refused = Some(error_of(error.into_service_error()));
            break;
        }
    }
    assert_eq!(
        refused,
        Some((
            "LimitExceededException".into(),
            "Rate exceeded for stream busy under account 000000000000.".into()
        ))
    );
    // Data-plane calls are limited by shard, not by these.
    for i in 0..20 {
        c.put_record()
            .stream_name("busy")
            .partition_key(format!("{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new("x"))
            .send()
            .await
            .expect("put");
    }
    t.stop().await;
}
