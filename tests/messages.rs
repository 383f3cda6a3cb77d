//! The messages of AWS-BEHAVIOUR.md that the SDK and wire suites do not already reach, asserted
//! word for word over a real socket. (Clock-dependent ones — iterator expiry, UPDATING, the shard
//! limit — are in the engine's clock-controlled tests.)

use crate::util::{TestServer, call, raw};

fn error(response: &crate::util::RawResponse) -> (u16, String, String) {
    let body = response.json();
    (
        response.status,
        body["__type"].as_str().unwrap_or_default().to_string(),
        body["message"]
            .as_str()
            .or(body["Message"].as_str())
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn sequence_number_and_iterator_messages() {
    let t = TestServer::start().await;
    for name in ["m", "other"] {
        let created = call(
            t.addr,
            "CreateStream",
            &format!(r#"{{"StreamName":"{name}","ShardCount":2}}"#),
        )
        .await;
        assert_eq!(created.status, 200);
    }
    let put = |stream: &'static str| async move {
        let r = call(
            t.addr,
            "PutRecord",
            &format!(r#"{{"StreamName":"{stream}","Data":"aGk=","PartitionKey":"a","ExplicitHashKey":"0"}}"#),
        )
        .await;
        assert_eq!(r.status, 200);
        r.json()["SequenceNumber"].as_str().unwrap().to_string()
    };
    let ours = put("m").await;
    let theirs = put("other").await;

    // A number of the same shard index from another stream.
    let foreign = call(
        t.addr,
        "GetShardIterator",
        &format!(
            r#"{{"StreamName":"m","ShardId":"shardId-000000000000","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"{theirs}"}}"#
        ),
    )
    .await;
    assert_eq!(
        error(&foreign),
        (
            400,
            "InvalidArgumentException".into(),
            format!(
                "StartingSequenceNumber {theirs} used in GetShardIterator on shard \
                 shardId-000000000000 in stream m under account 000000000000 is invalid \
                 because it did not come from this stream."
            )
        )
    );

    // A long number whose layout is impossible (leading digit pattern that decodes to nothing).
    let garbage = "9".repeat(56);
    let invalid = call(
        t.addr,
        "GetShardIterator",
        &format!(
            r#"{{"StreamName":"m","ShardId":"shardId-000000000000","ShardIteratorType":"AFTER_SEQUENCE_NUMBER","StartingSequenceNumber":"{garbage}"}}"#
        ),
    )
    .await;
    assert_eq!(
        error(&invalid),
        (
            400,
            "InvalidArgumentException".into(),
            format!(
                "StartingSequenceNumber {garbage} used in GetShardIterator on shard \
                 shardId-000000000000 in stream m under account 000000000000 is invalid."
            )
        )
    );

    // `0` is an internal failure on the live service.
    let zero = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"m","ShardId":"shardId-000000000000","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"0"}"#,
    )
    .await;
    assert_eq!(zero.status, 500);
    assert_eq!(zero.json()["__type"], "InternalFailure");

    // AT_TIMESTAMP without a timestamp.
    let no_ts = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"m","ShardId":"shardId-000000000000","ShardIteratorType":"AT_TIMESTAMP"}"#,
    )
    .await;
    assert_eq!(
        error(&no_ts),
        (
            400,
            "InvalidArgumentException".into(),
            "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. \
             Current request has no timestamp parameter."
                .into()
        )
    );

    // An unknown shard: reads say it does not exist, resharding that it cannot be found.
    let read = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"m","ShardId":"shardId-000000000009","ShardIteratorType":"LATEST"}"#,
    )
    .await;
    assert_eq!(
        error(&read).2,
        "Shard shardId-000000000009 in stream m under account 000000000000 does not exist"
    );
    let missing = call(
        t.addr,
        "SplitShard",
        r#"{"StreamName":"m","ShardToSplit":"shardId-000000000009","NewStartingHashKey":"1"}"#,
    )
    .await;
    assert_eq!(
        error(&missing),
        (
            400,
            "ResourceNotFoundException".into(),
            "Could not find shard shardId-000000000009 in stream m under account 000000000000."
                .into()
        )
    );

    // SequenceNumberForOrdering that cannot be a sequence number.
    let ordering = call(
        t.addr,
        "PutRecord",
        &format!(
            r#"{{"StreamName":"m","Data":"aGk=","PartitionKey":"a","SequenceNumberForOrdering":"{garbage}"}}"#
        ),
    )
    .await;
    assert_eq!(
        error(&ordering),
        (
            400,
            "InvalidArgumentException".into(),
            format!(
                "ExclusiveMinimumSequenceNumber {garbage} used in PutRecord on stream m under \
                 account 000000000000 is invalid."
            )
        )
    );
    // A valid one orders the next record after it.
    let ordered = call(
        t.addr,
        "PutRecord",
        &format!(
            r#"{{"StreamName":"m","Data":"aGk=","PartitionKey":"a","ExplicitHashKey":"0","SequenceNumberForOrdering":"{ours}"}}"#
        ),
    )
    .await;
    assert_eq!(ordered.status, 200);
    let next = ordered.json()["SequenceNumber"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.len() > ours.len() || (next.len() == ours.len() && next > ours));
    t.stop().await;
}

#[tokio::test]
async fn control_plane_messages() {
    let t = TestServer::start().await;
    assert_eq!(
        call(
            t.addr,
            "CreateStream",
            r#"{"StreamName":"c","ShardCount":1}"#
        )
        .await
        .status,
        200
    );
    let both = call(t.addr, "ListShards", r#"{}"#).await;
    assert_eq!(
        error(&both),
        (
            400,
            "InvalidArgumentException".into(),
            "Either NextToken or StreamName should be provided.".into()
        )
    );
    let longer = call(
        t.addr,
        "DecreaseStreamRetentionPeriod",
        r#"{"StreamName":"c","RetentionPeriodHours":48}"#,
    )
    .await;
    assert_eq!(
        error(&longer),
        (
            400,
            "InvalidArgumentException".into(),
            "Requested retention period (48 hours) for stream c can not be longer than existing \
             retention period (24 hours). Use IncreaseRetentionPeriod API."
                .into()
        )
    );
    let tags = call(
        t.addr,
        "AddTagsToStream",
        r#"{"StreamName":"c","Tags":{"bad#key":"v"}}"#,
    )
    .await;
    assert_eq!(
        error(&tags),
        (
            400,
            "InvalidArgumentException".into(),
            "Some tags contain invalid characters. Valid characters: Unicode letters, digits, \
             white space, _ . / = + - % @."
                .into()
        )
    );
    let blob = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"c","Data":"abc","PartitionKey":"k"}"#,
    )
    .await;
    assert_eq!(
        error(&blob),
        (
            400,
            "SerializationException".into(),
            "'abc' can not be converted to a Blob: Base64 encoded length is expected a multiple \
             of 4 bytes but found: 3"
                .into()
        )
    );
    let incomplete = raw(
        t.addr,
        "POST",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            ),
        ],
        b"{}",
    )
    .await;
    let (status, code, message) = error(&incomplete);
    assert_eq!(
        (status, code.as_str()),
        (400, "IncompleteSignatureException")
    );
    assert!(
        message.starts_with("Authorization header requires 'Credential' parameter."),
        "{message}"
    );
    t.stop().await;
}
