//! SubscribeToShard through `aws-sdk-kinesis` (HTTP/1.1, JSON event stream): records pushed as
//! they become durable, continuation numbers, the 5 s takeover rule, ChildShards at the end of
//! a closed shard.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    ShardIteratorType, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};

use crate::util::{TestServer, client_without_retries, create_stream, error_of, register_consumer};

async fn consumer(c: &Client, stream: &str) -> String {
    let arn = create_stream(c, stream).await;
    register_consumer(c, &arn, "pushed").await
}

async fn put(c: &Client, stream: &str, data: &str) -> String {
    c.put_record()
        .stream_name(stream)
        .partition_key("k")
        .data(Blob::new(data))
        .send()
        .await
        .expect("put")
        .sequence_number()
        .to_string()
}

fn position(kind: ShardIteratorType, sequence: Option<&str>) -> StartingPosition {
    StartingPosition::builder()
        .r#type(kind)
        .set_sequence_number(sequence.map(str::to_string))
        .build()
        .expect("position")
}

/// Events until `records` records have arrived (or the stream ends), within `limit`.
async fn collect(
    events: &mut aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        SubscribeToShardEventStream,
        SubscribeToShardEventStreamError,
    >,
    records: usize,
    limit: Duration,
) -> Vec<SubscribeToShardEvent> {
    let mut out = Vec::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while seen < records {
        let next = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("events in time")
            .expect("event");
        match next {
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => {
                seen += event.records().len();
                let end = !event.child_shards().is_empty();
                out.push(event);
                if end {
                    break;
                }
            }
            Some(other) => panic!("unexpected event {other:?}"),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn records_are_pushed_and_a_second_subscriber_waits_five_seconds() {
    let t = TestServer::start().await;
    let c = &client_without_retries(t.addr);
    let consumer_arn = consumer(c, "push").await;
    let mut sequences = Vec::new();
    for data in ["a", "b", "c"] {
        sequences.push(put(c, "push", data).await);
    }
    let subscribe = |kind, sequence: Option<String>| {
        let consumer_arn = consumer_arn.clone();
        async move {
            c.subscribe_to_shard()
                .consumer_arn(consumer_arn)
                .shard_id("shardId-000000000000")
                .starting_position(position(kind, sequence.as_deref()))
                .send()
                .await
        }
    };
    let mut first = subscribe(ShardIteratorType::TrimHorizon, None)
        .await
        .expect("subscribe");
    let events = collect(&mut first.event_stream, 3, Duration::from_secs(10)).await;
    let got: Vec<String> = events
        .iter()
        .flat_map(|e| e.records())
        .map(|r| r.sequence_number().to_string())
        .collect();
    assert_eq!(got, sequences);
    let last = events.last().expect("an event");
    assert_eq!(last.continuation_sequence_number(), sequences[2]);
    assert_eq!(last.millis_behind_latest(), 0);

    // New records are pushed without polling.
    let started = std::time::Instant::now();
    let fourth = put(c, "push", "d").await;
    let pushed = collect(&mut first.event_stream, 1, Duration::from_secs(3)).await;
    assert_eq!(pushed[0].records()[0].sequence_number(), fourth);
    assert_eq!(pushed[0].records()[0].data().as_ref(), b"d");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A second subscription within 5 s is refused with AWS's message.
    let refused = subscribe(ShardIteratorType::Latest, None)
        .await
        .expect_err("in use");
    assert_eq!(
        error_of(refused.into_service_error()),
        (
            "ResourceInUseException".into(),
            "Another active subscription exists for this consumer: \
             000000000000:push:shardId-000000000000:pushed"
                .into()
        )
    );
    // After 5 s a new one (resuming after the continuation number) takes over; the old
    // stream gets ResourceInUseException.
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let mut second = subscribe(ShardIteratorType::AfterSequenceNumber, Some(fourth.clone()))
        .await
        .expect("takeover");
    let mut old_ended = false;
    for _ in 0..5 {
        match tokio::time::timeout(Duration::from_secs(3), first.event_stream.recv())
            .await
            .expect("old stream answers")
        {
            Err(error) => {
                // Event-stream errors arrive as the modeled variant (no error code).
                assert!(
                    matches!(
                        error.into_service_error(),
                        SubscribeToShardEventStreamError::ResourceInUseException(_)
                    ),
                    "ResourceInUseException"
                );
                old_ended = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(_)) => {} // a heartbeat that was already on its way
        }
    }
    assert!(
        old_ended,
        "the superseded subscription ends with ResourceInUseException"
    );
    let fifth = put(c, "push", "e").await;
    let resumed = collect(&mut second.event_stream, 1, Duration::from_secs(3)).await;
    let got: Vec<&str> = resumed
        .iter()
        .flat_map(|e| e.records())
        .map(|r| r.sequence_number())
        .collect();
    assert_eq!(got, [fifth.as_str()]);
    t.stop().await;
}

#[tokio::test]
async fn a_closed_shard_ends_with_its_children() {
    let t = TestServer::start().await;
    let c = &client_without_retries(t.addr);
    let consumer_arn = consumer(c, "split").await;
    put(c, "split", "before").await;
    let mut sub = c
        .subscribe_to_shard()
        .consumer_arn(&consumer_arn)
        .shard_id("shardId-000000000000")
        .starting_position(position(ShardIteratorType::TrimHorizon, None))
        .send()
        .await
        .expect("subscribe");
    let first = collect(&mut sub.event_stream, 1, Duration::from_secs(5)).await;
    assert_eq!(first[0].records().len(), 1);
    c.split_shard()
        .stream_name("split")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .expect("split");
    // The split lands within the tick; the subscription then drains and ends with children.
    let mut children = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while children.is_empty() {
        let event = tokio::time::timeout_at(deadline, sub.event_stream.recv())
            .await
            .expect("the end of the shard in time")
            .expect("event");
        match event {
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)) => {
                children = e
                    .child_shards()
                    .iter()
                    .map(|c| c.shard_id().to_string())
                    .collect();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
    let end = tokio::time::timeout(Duration::from_secs(3), sub.event_stream.recv())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    t.stop().await;
}

#[tokio::test]
async fn heartbeats_lifetime_rate_and_disconnect() {
    let mut config = rivulet_server::ServerConfig::for_tests();
    config.subscription = rivulet_server::subscribe::Timing {
        heartbeat: Duration::from_millis(200),
        lifetime: Duration::from_millis(1_500),
        bytes_per_second: 200_000,
    };
    let t = TestServer::with_config(config).await;
    let c = &client_without_retries(t.addr);
    let consumer_arn = consumer(c, "clock").await;
    let subscribe = |kind| {
        let consumer_arn = consumer_arn.clone();
        async move {
            c.subscribe_to_shard()
                .consumer_arn(consumer_arn)
                .shard_id("shardId-000000000000")
                .starting_position(position(kind, None))
                .send()
                .await
        }
    };
    // Without data: heartbeat events, each with a continuation number; the end after the
    // lifetime.
    let started = std::time::Instant::now();
    let mut sub = subscribe(ShardIteratorType::Latest)
        .await
        .expect("subscribe");
    let mut heartbeats = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), sub.event_stream.recv())
            .await
            .expect("an event or the end in time")
            .expect("event");
        match next {
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)) => {
                assert!(e.records().is_empty());
                assert!(e.continuation_sequence_number().len() > 50);
                heartbeats += 1;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    let lasted = started.elapsed();
    assert!(heartbeats >= 4, "{heartbeats} heartbeats");
    assert!(
        lasted >= Duration::from_millis(1_400) && lasted < Duration::from_secs(4),
        "{lasted:?}"
    );

    // The ended subscription released its slot; a disconnect releases it too.
    let sub = subscribe(ShardIteratorType::Latest)
        .await
        .expect("after the end");
    let dropped_at = std::time::Instant::now();
    drop(sub);
    let mut again = None;
    while dropped_at.elapsed() < Duration::from_secs(4) {
        match subscribe(ShardIteratorType::TrimHorizon).await {
            Ok(sub) => {
                again = Some(sub);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut sub = again.expect("a disconnect frees the slot well before the 5 s takeover");

    // 600 kB at 200 kB/s: about three seconds, not one burst.
    let big = vec![7u8; 100_000];
    let sent = std::time::Instant::now();
    for _ in 0..6 {
        c.put_record()
            .stream_name("clock")
            .partition_key("k")
            .data(Blob::new(big.clone()))
            .send()
            .await
            .expect("put");
    }
    let mut received = 0;
    let mut continuation = String::new();
    while received < 6 {
        match tokio::time::timeout(Duration::from_secs(10), sub.event_stream.recv())
            .await
            .expect("in time")
            .expect("event")
        {
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)) => {
                received += e.records().len();
                continuation = e.continuation_sequence_number().to_string();
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                // The 1.5 s lifetime ended it: resume after the continuation, as clients do.
                sub = c
                    .subscribe_to_shard()
                    .consumer_arn(&consumer_arn)
                    .shard_id("shardId-000000000000")
                    .starting_position(position(
                        ShardIteratorType::AfterSequenceNumber,
                        Some(&continuation),
                    ))
                    .send()
                    .await
                    .expect("resubscribe");
            }
        }
    }
    assert_eq!(
        received, 6,
        "every record exactly once across resubscriptions"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(2_000),
        "{:?}",
        sent.elapsed()
    );
    t.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_little() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = rivulet_server::ServerConfig::for_tests();
    // No rate limit: only the bounded buffering may hold the reader back.
    config.subscription.bytes_per_second = u64::MAX / 4;
    let t = TestServer::with_config(config).await;
    let c = &client_without_retries(t.addr);
    let consumer_arn = consumer(c, "stalled").await;
    // 48 MiB in the shard.
    let record = Blob::new(vec![9u8; (1 << 20) - 16]);
    for _ in 0..48 {
        c.put_record()
            .stream_name("stalled")
            .partition_key("k")
            .data(record.clone())
            .send()
            .await
            .expect("put");
    }
    // Subscribe over a raw socket, read the response head, then stop reading.
    let body = format!(
        r#"{{"ConsumerARN":"{consumer_arn}","ShardId":"shardId-000000000000","StartingPosition":{{"Type":"TRIM_HORIZON"}}}}"#
    );
    let mut socket = tokio::net::TcpStream::connect(t.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: Kinesis_20131202.SubscribeToShard\r\nX-Amz-Date: 20260101T000000Z\r\n\
         Authorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
        crate::util::AUTH,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("send");
    let mut first = [0u8; 512];
    let n = socket.read(&mut first).await.expect("response head");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let engine = t.server.as_ref().expect("server").engine().clone();
    let read = engine.subscription_bytes_read();
    // Two buffered events of at most 1 MiB, what the socket buffers absorb, and one event in
    // hand: far from the 48 MiB a reader without back-pressure would have pulled in.
    assert!(
        read < 24 << 20,
        "{} MiB read for a stalled client",
        read >> 20
    );
    // Disconnecting frees the subscription: a new one is accepted at once.
    drop(socket);
    // (Within the 5 s takeover window of the stalled subscription, so only its release
    // explains an acceptance.)
    let mut resumed = None;
    for _ in 0..20 {
        match c
            .subscribe_to_shard()
            .consumer_arn(&consumer_arn)
            .shard_id("shardId-000000000000")
            .starting_position(position(ShardIteratorType::Latest, None))
            .send()
            .await
        {
            Ok(sub) => {
                resumed = Some(sub);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        resumed.is_some(),
        "the slot is freed once the client is gone"
    );
    t.stop().await;
}
