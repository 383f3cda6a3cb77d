//! The messages of AWS-BEHAVIOUR.md that the SDK and wire suites do not already reach, asserted
//! word for word over a real socket. (Clock-dependent ones — iterator expiry, UPDATING, the shard
//! limit — are in the engine's clock-controlled tests.)

use crate::util::{TestServer, aws_error as error, call, raw, raw_path};

#[tokio::test]
async fn sequence_number_and_iterator_messages() {
    let t = TestServer::start().await;
    for name in ["m", "other"] {
        // Numbers name their stream by their shard's creation second, as AWS's do: the two
        // streams' shards must not share one.
        if name == "other" {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
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

/// Asserts an answer is `400` with exception `kind` and exactly `message`.
fn assert_error(response: &crate::util::RawResponse, kind: &str, message: &str) {
    assert_eq!(
        error(response),
        (400, kind.to_string(), message.to_string()),
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

const INVALID_CHARACTERS: &str = "Some tags contain invalid characters. Valid characters: \
                                  Unicode letters, digits, white space, _ . / = + - % @.";

/// AWS's `%` message, after the character check lets `%` through.
fn percent_refused(verb_and_preposition: &str, stream: &str) -> String {
    format!(
        "Failed to {verb_and_preposition} stream {stream} under account 000000000000 because some \
         tags contained illegal characters. The allowed characters are Unicode letters, \
         white-spaces, '_',',','/','=','+','-','@'."
    )
}

#[tokio::test]
async fn tags_are_checked_in_aws_order_with_aws_words() {
    let t = TestServer::start().await;
    let ok = |r: crate::util::RawResponse| {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };
    ok(call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"t","ShardCount":1}"#,
    )
    .await);

    // The stream is looked up first.
    assert_error(
        &call(
            t.addr,
            "AddTagsToStream",
            r#"{"StreamName":"nope","Tags":{"a;b":"%"}}"#,
        )
        .await,
        "ResourceNotFoundException",
        "Stream nope under account 000000000000 not found.",
    );
    // Tab, newline, `;` and `,` are not "white space"; they fail before `%` is looked at.
    for tags in [
        r#"{"a\tb":"v"}"#,
        r#"{"k":"line\nbreak"}"#,
        r#"{"a;b":"v"}"#,
        r#"{"k":"a,b"}"#,
        r#"{"k%":"a,b"}"#,
    ] {
        let body = format!(r#"{{"StreamName":"t","Tags":{tags}}}"#);
        assert_error(
            &call(t.addr, "AddTagsToStream", &body).await,
            "InvalidArgumentException",
            INVALID_CHARACTERS,
        );
    }
    for tags in [r#"{"50%":"v"}"#, r#"{"k":"100%"}"#] {
        let body = format!(r#"{{"StreamName":"t","Tags":{tags}}}"#);
        assert_error(
            &call(t.addr, "AddTagsToStream", &body).await,
            "InvalidArgumentException",
            &percent_refused("add tags to", "t"),
        );
    }
    assert_error(
        &call(
            t.addr,
            "RemoveTagsFromStream",
            r#"{"StreamName":"t","TagKeys":["ok","50%"]}"#,
        )
        .await,
        "InvalidArgumentException",
        &percent_refused("remove tags from", "t"),
    );
    assert_error(
        &call(
            t.addr,
            "RemoveTagsFromStream",
            r#"{"StreamName":"t","TagKeys":["a,b"]}"#,
        )
        .await,
        "InvalidArgumentException",
        INVALID_CHARACTERS,
    );
    // TagResource on a stream is AddTagsToStream; CreateStream's tags pass the same checks.
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/t";
    assert_error(
        &call(
            t.addr,
            "TagResource",
            &format!(r#"{{"ResourceARN":"{arn}","Tags":{{"50%":"v"}}}}"#),
        )
        .await,
        "InvalidArgumentException",
        &percent_refused("add tags to", "t"),
    );
    assert_error(
        &call(
            t.addr,
            "CreateStream",
            r#"{"StreamName":"c","ShardCount":1,"Tags":{"k":"100%"}}"#,
        )
        .await,
        "InvalidArgumentException",
        &percent_refused("add tags to", "c"),
    );
    assert_error(
        &call(
            t.addr,
            "CreateStream",
            r#"{"StreamName":"c","ShardCount":1,"Tags":{"k":"a;b"}}"#,
        )
        .await,
        "InvalidArgumentException",
        INVALID_CHARACTERS,
    );

    // Every allowed character: letters of any script, digits, space, _ . / = + - @.
    ok(call(
        t.addr,
        "AddTagsToStream",
        r#"{"StreamName":"t","Tags":{"Ünïcode ключ 9_./=+-@":"値 0_./=+-@ ","empty":""}}"#,
    )
    .await);
    // 50 distinct keys in all; overwriting one of them is no new key.
    let many: Vec<String> = (0..48).map(|i| format!(r#""k{i:02}":"v""#)).collect();
    ok(call(
        t.addr,
        "AddTagsToStream",
        &format!(r#"{{"StreamName":"t","Tags":{{{}}}}}"#, many.join(",")),
    )
    .await);
    ok(call(
        t.addr,
        "AddTagsToStream",
        r#"{"StreamName":"t","Tags":{"k00":"new"}}"#,
    )
    .await);
    // The 51st key: InvalidArgumentException, and the text says 10 (AWS's words).
    assert_error(
        &call(
            t.addr,
            "AddTagsToStream",
            r#"{"StreamName":"t","Tags":{"k00":"again","one-more":"v"}}"#,
        )
        .await,
        "InvalidArgumentException",
        "Failed to add tags to stream t under account 000000000000 because a given stream \
         cannot have more than 10 tags associated with it.",
    );
    let listed = call(
        t.addr,
        "ListTagsForStream",
        r#"{"StreamName":"t","ExclusiveStartTagKey":"k47"}"#,
    )
    .await;
    assert_eq!(listed.status, 200);
    let keys: Vec<String> = listed.json()["Tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["Key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys, ["Ünïcode ключ 9_./=+-@"]);
    t.stop().await;
}

#[tokio::test]
async fn list_tags_for_stream_sorts_by_utf16_and_pages_from_any_key() {
    let t = TestServer::start().await;
    // U+1D49C (a surrogate pair in UTF-16) sorts before U+FF21, unlike in code point order.
    let keys = [
        "\u{FF21}",
        "a",
        "Zb",
        " ",
        "_",
        "0",
        "\u{1D49C}",
        "=",
        "+",
        "ÿ",
        "/",
        "@",
    ];
    let tags: Vec<String> = keys.iter().map(|k| format!(r#""{k}":"v""#)).collect();
    let created = call(
        t.addr,
        "CreateStream",
        &format!(
            r#"{{"StreamName":"o","ShardCount":1,"Tags":{{{}}}}}"#,
            tags.join(",")
        ),
    )
    .await;
    assert_eq!(created.status, 200);
    let list = |extra: &'static str| async move {
        let r = call(
            t.addr,
            "ListTagsForStream",
            &format!(r#"{{"StreamName":"o"{extra}}}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let body = r.json();
        let keys: Vec<String> = body["Tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t["Key"].as_str().unwrap_or_default().to_string())
            .collect();
        (keys, body["HasMoreTags"].as_bool().expect("HasMoreTags"))
    };
    let sorted = [
        " ",
        "+",
        "/",
        "0",
        "=",
        "@",
        "Zb",
        "_",
        "a",
        "ÿ",
        "\u{1D49C}",
        "\u{FF21}",
    ];
    assert_eq!(list("").await, (sorted.map(String::from).to_vec(), false));
    // A start key that is no key: the keys strictly after it.
    assert_eq!(
        list(r#","ExclusiveStartTagKey":"1","Limit":2"#).await,
        (vec!["=".to_string(), "@".to_string()], true)
    );
    assert_eq!(
        list(r#","ExclusiveStartTagKey":"a","Limit":3"#).await,
        (sorted[9..].iter().map(|k| k.to_string()).collect(), false)
    );
    assert_eq!(
        list(r#","ExclusiveStartTagKey":"\uD835\uDC9C""#).await,
        (vec!["\u{FF21}".to_string()], false)
    );
    assert_eq!(
        list(r#","ExclusiveStartTagKey":"\uFF21""#).await,
        (vec![], false)
    );
    // ListTagsForResource lists in the same order.
    let by_arn = call(
        t.addr,
        "ListTagsForResource",
        r#"{"ResourceARN":"arn:aws:kinesis:us-east-1:000000000000:stream/o"}"#,
    )
    .await;
    let keys: Vec<&str> = by_arn.json()["Tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["Key"].as_str().unwrap_or_default())
        .map(|k| {
            sorted
                .iter()
                .find(|s| **s == k)
                .copied()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(keys, sorted);
    t.stop().await;
}

#[tokio::test]
async fn shard_ids_are_read_first_and_named_normalised() {
    let t = TestServer::start().await;
    let created = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"s","ShardCount":2}"#,
    )
    .await;
    assert_eq!(created.status, 200);
    let iterator = |stream: &'static str, shard: &'static str| async move {
        call(
            t.addr,
            "GetShardIterator",
            &format!(
                r#"{{"StreamName":"{stream}","ShardId":"{shard}","ShardIteratorType":"LATEST"}}"#
            ),
        )
        .await
    };
    // Not a shard id: refused as sent, before the stream is looked up.
    for bad in ["ABKLFD8", "2.14E4", "2147483648", "shardId-002147483648"] {
        let refused =
            format!("Could not find shard {bad} in stream nope under account 000000000000.");
        assert_error(
            &iterator("nope", bad).await,
            "ResourceNotFoundException",
            &refused,
        );
        let split = call(
            t.addr,
            "SplitShard",
            &format!(r#"{{"StreamName":"nope","ShardToSplit":"{bad}","NewStartingHashKey":"1"}}"#),
        )
        .await;
        assert_error(&split, "ResourceNotFoundException", &refused);
        let merge = call(
            t.addr,
            "MergeShards",
            &format!(
                r#"{{"StreamName":"nope","ShardToMerge":"0","AdjacentShardToMerge":"{bad}"}}"#
            ),
        )
        .await;
        assert_error(&merge, "ResourceNotFoundException", &refused);
    }
    // A shard id: an unknown stream is a shard that does not exist, named normalised.
    assert_error(
        &iterator("nope", "shardId-002147483647").await,
        "ResourceNotFoundException",
        "Shard shardId-002147483647 in stream nope under account 000000000000 does not exist",
    );
    assert_error(
        &iterator("s", "-005").await,
        "ResourceNotFoundException",
        "Shard shardId-000000000005 in stream s under account 000000000000 does not exist",
    );
    for good in ["shardId-1", "x-1", "-001", "1", "shardId-000000000001"] {
        assert_eq!(iterator("s", good).await.status, 200, "{good}");
    }
    // SplitShard and MergeShards: then the stream, then the shard (normalised).
    assert_error(
        &call(
            t.addr,
            "SplitShard",
            r#"{"StreamName":"nope","ShardToSplit":"5","NewStartingHashKey":"1"}"#,
        )
        .await,
        "ResourceNotFoundException",
        "Stream nope under account 000000000000 not found.",
    );
    assert_error(
        &call(
            t.addr,
            "SplitShard",
            r#"{"StreamName":"s","ShardToSplit":"x-9","NewStartingHashKey":"1"}"#,
        )
        .await,
        "ResourceNotFoundException",
        "Could not find shard shardId-000000000009 in stream s under account 000000000000.",
    );
    assert_error(
        &call(
            t.addr,
            "MergeShards",
            r#"{"StreamName":"s","ShardToMerge":"0","AdjacentShardToMerge":"7"}"#,
        )
        .await,
        "ResourceNotFoundException",
        "Could not find shard shardId-000000000007 in stream s under account 000000000000.",
    );
    assert_error(
        &call(
            t.addr,
            "SplitShard",
            r#"{"StreamName":"s","ShardToSplit":"0","NewStartingHashKey":"1"}"#,
        )
        .await,
        "InvalidArgumentException",
        "NewStartingHashKey 1 used in SplitShard() on shard shardId-000000000000 in stream s \
         under account 000000000000 is not both greater than one plus the shard's \
         StartingHashKey 0 and less than the shard's EndingHashKey \
         170141183460469231731687303715884105727.",
    );
    t.stop().await;
}

/// Regression: MergeShards accepted ShardToMerge and AdjacentShardToMerge swapped and merged
/// them; AWS requires AdjacentShardToMerge to start right after ShardToMerge ends.
#[tokio::test]
async fn merge_shards_refuses_a_swapped_pair() {
    let t = TestServer::start().await;
    let created = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"m","ShardCount":2}"#,
    )
    .await;
    assert_eq!(created.status, 200);
    assert_error(
        &call(
            t.addr,
            "MergeShards",
            r#"{"StreamName":"m","ShardToMerge":"shardId-000000000001","AdjacentShardToMerge":"shardId-000000000000"}"#,
        )
        .await,
        "InvalidArgumentException",
        "Shards shardId-000000000001 and shardId-000000000000 in stream m under account \
         000000000000 are not an adjacent pair of shards eligible for merging",
    );
    let shards = call(t.addr, "ListShards", r#"{"StreamName":"m"}"#).await;
    assert_eq!(shards.json()["Shards"].as_array().map(Vec::len), Some(2));
    let merged = call(
        t.addr,
        "MergeShards",
        r#"{"StreamName":"m","ShardToMerge":"shardId-000000000000","AdjacentShardToMerge":"shardId-000000000001"}"#,
    )
    .await;
    assert_eq!(merged.status, 200);
    let shards = call(t.addr, "ListShards", r#"{"StreamName":"m"}"#)
        .await
        .json();
    assert_eq!(shards["Shards"][2]["ParentShardId"], "shardId-000000000000");
    assert_eq!(
        shards["Shards"][2]["AdjacentParentShardId"],
        "shardId-000000000001"
    );
    t.stop().await;
}

#[tokio::test]
async fn get_records_of_a_deleted_stream_names_the_shard() {
    let t = TestServer::start().await;
    let create = || {
        call(
            t.addr,
            "CreateStream",
            r#"{"StreamName":"d","ShardCount":2}"#,
        )
    };
    assert_eq!(create().await.status, 200);
    let iterator = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"d","ShardId":"shardId-000000000001","ShardIteratorType":"TRIM_HORIZON"}"#,
    )
    .await
    .json()["ShardIterator"]
        .as_str()
        .expect("iterator")
        .to_string();
    let read = || async {
        call(
            t.addr,
            "GetRecords",
            &format!(r#"{{"ShardIterator":"{iterator}"}}"#),
        )
        .await
    };
    assert_eq!(read().await.status, 200);
    let deleted = call(t.addr, "DeleteStream", r#"{"StreamName":"d"}"#).await;
    assert_eq!(deleted.status, 200);
    let gone = "Shard shardId-000000000001 in stream d under account 000000000000 does not exist";
    assert_error(&read().await, "ResourceNotFoundException", gone);
    // Re-created under the same name, without that shard.
    let recreated = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"d","ShardCount":1}"#,
    )
    .await;
    assert_eq!(recreated.status, 200);
    assert_error(&read().await, "ResourceNotFoundException", gone);
    t.stop().await;
}

#[tokio::test]
async fn throttle_series_appear_at_zero_with_the_first_call() {
    let t = TestServer::start().await;
    let metrics = || async {
        let page = raw_path(t.addr, "GET", "/_rivulet/metrics", &[], b"").await;
        assert_eq!(page.status, 200);
        String::from_utf8(page.body).expect("utf-8")
    };
    let line = |text: &str, metric: &str, stream: &str| {
        let prefix =
            format!("kinesis_{metric}{{AccountId=\"000000000000\",StreamName=\"{stream}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
    };
    for stream in ["one", "batch"] {
        let created = call(
            t.addr,
            "CreateStream",
            &format!(r#"{{"StreamName":"{stream}","ShardCount":2}}"#),
        )
        .await;
        assert_eq!(created.status, 200);
    }
    let text = metrics().await;
    for stream in ["one", "batch"] {
        assert_eq!(
            line(&text, "WriteProvisionedThroughputExceeded", stream),
            None
        );
    }
    let put = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"one","Data":"aGk=","PartitionKey":"a"}"#,
    )
    .await;
    assert_eq!(put.status, 200);
    let puts = call(
        t.addr,
        "PutRecords",
        r#"{"StreamName":"batch","Records":[{"Data":"aGk=","PartitionKey":"a"},{"Data":"aGk=","PartitionKey":"b"}]}"#,
    )
    .await;
    assert_eq!(puts.status, 200);
    let text = metrics().await;
    for stream in ["one", "batch"] {
        assert_eq!(
            line(&text, "WriteProvisionedThroughputExceeded", stream).as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            line(&text, "ReadProvisionedThroughputExceeded", stream),
            None
        );
    }
    let iterator = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"one","ShardId":"0","ShardIteratorType":"TRIM_HORIZON"}"#,
    )
    .await
    .json()["ShardIterator"]
        .as_str()
        .expect("iterator")
        .to_string();
    let read = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{iterator}"}}"#),
    )
    .await;
    assert_eq!(read.status, 200);
    let text = metrics().await;
    assert_eq!(
        line(&text, "ReadProvisionedThroughputExceeded", "one").as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        line(&text, "ReadProvisionedThroughputExceeded", "batch"),
        None
    );
    t.stop().await;
}
