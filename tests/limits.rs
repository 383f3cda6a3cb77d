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

#[tokio::test]
async fn account_commitment_gates_warm_throughput_and_modes_switch() {
    use aws_sdk_kinesis::types::{
        MinimumThroughputBillingCommitmentInput, MinimumThroughputBillingCommitmentInputStatus,
        MinimumThroughputBillingCommitmentOutputStatus, StreamMode, StreamModeDetails,
    };
    let t = TestServer::start().await;
    let c = &client_without_retries(t.addr);
    let settings = c
        .describe_account_settings()
        .send()
        .await
        .expect("describe");
    assert_eq!(
        settings
            .minimum_throughput_billing_commitment()
            .map(|m| m.status()),
        Some(&MinimumThroughputBillingCommitmentOutputStatus::Disabled)
    );
    c.create_stream()
        .stream_name("warm")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .expect("mode"),
        )
        .send()
        .await
        .expect("create on-demand");
    // Without the commitment, warm throughput is refused.
    let refused = c
        .update_stream_warm_throughput()
        .stream_name("warm")
        .warm_throughput_mibps(8)
        .send()
        .await
        .expect_err("no commitment");
    assert_eq!(
        error_of(refused.into_service_error()).0,
        "InvalidArgumentException"
    );
    let enabled = c
        .update_account_settings()
        .minimum_throughput_billing_commitment(
            MinimumThroughputBillingCommitmentInput::builder()
                .status(MinimumThroughputBillingCommitmentInputStatus::Enabled)
                .build()
                .expect("input"),
        )
        .send()
        .await
        .expect("enable");
    let commitment = enabled
        .minimum_throughput_billing_commitment()
        .expect("commitment");
    assert_eq!(
        commitment.status(),
        &MinimumThroughputBillingCommitmentOutputStatus::Enabled
    );
    assert!(commitment.earliest_allowed_end_at().is_some());
    let warm = c
        .update_stream_warm_throughput()
        .stream_name("warm")
        .warm_throughput_mibps(8)
        .send()
        .await
        .expect("warm throughput");
    assert_eq!(warm.stream_name(), Some("warm"));
    let w = warm.warm_throughput().expect("warm");
    assert_eq!((w.target_mibps(), w.current_mibps()), (Some(8), Some(4)));
    let summary = c
        .describe_stream_summary()
        .stream_name("warm")
        .send()
        .await
        .expect("summary");
    let d = summary.stream_description_summary().expect("summary");
    assert_eq!(d.open_shard_count(), 8);
    assert_eq!(d.warm_throughput().and_then(|w| w.current_mibps()), Some(8));
    // The same or a lower value releases the excess capacity: with no traffic, down to 4.
    let released = c
        .update_stream_warm_throughput()
        .stream_name("warm")
        .warm_throughput_mibps(4)
        .send()
        .await
        .expect("release");
    let w = released.warm_throughput().expect("warm");
    assert_eq!((w.target_mibps(), w.current_mibps()), (Some(4), Some(8)));
    let d = c
        .describe_stream_summary()
        .stream_name("warm")
        .send()
        .await
        .expect("summary");
    let d = d.stream_description_summary().expect("summary");
    assert_eq!(d.open_shard_count(), 4);
    let w = d.warm_throughput().expect("warm");
    assert_eq!((w.target_mibps(), w.current_mibps()), (Some(4), Some(4)));
    // Disabling within the first day keeps it until the earliest allowed end.
    let disabled = c
        .update_account_settings()
        .minimum_throughput_billing_commitment(
            MinimumThroughputBillingCommitmentInput::builder()
                .status(MinimumThroughputBillingCommitmentInputStatus::Disabled)
                .build()
                .expect("input"),
        )
        .send()
        .await
        .expect("disable");
    assert_eq!(
        disabled
            .minimum_throughput_billing_commitment()
            .map(|m| m.status()),
        Some(&MinimumThroughputBillingCommitmentOutputStatus::EnabledUntilEarliestAllowedEnd)
    );
    // Mode switch keeps the shards.
    c.update_stream_mode()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/warm")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::Provisioned)
                .build()
                .expect("mode"),
        )
        .send()
        .await
        .expect("to provisioned");
    let summary = c
        .describe_stream_summary()
        .stream_name("warm")
        .send()
        .await
        .expect("summary");
    let d = summary.stream_description_summary().expect("summary");
    assert_eq!(
        d.stream_mode_details().map(|m| m.stream_mode()),
        Some(&StreamMode::Provisioned)
    );
    assert_eq!(d.open_shard_count(), 4);
    t.stop().await;
}
