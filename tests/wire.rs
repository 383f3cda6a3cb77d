//! The wire protocol over raw sockets: envelope errors, validation messages, JSON and CBOR.

use crate::util::{AUTH, TestServer, call, call_cbor, raw};

#[tokio::test]
async fn envelope_errors_match_aws() {
    let t = TestServer::start().await;
    let denied = raw(t.addr, "GET", &[], b"").await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        String::from_utf8_lossy(&denied.body),
        "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n"
    );
    let no_target = raw(
        t.addr,
        "POST",
        &[("Content-Type", "application/x-amz-json-1.1")],
        b"{}",
    )
    .await;
    assert_eq!(no_target.status, 403);
    let unknown = call(t.addr, "Frobnicate", "{}").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["__type"], "UnknownOperationException");
    let no_auth = raw(
        t.addr,
        "POST",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(no_auth.status, 400);
    assert_eq!(
        no_auth.json()["__type"],
        "MissingAuthenticationTokenException"
    );
    assert_eq!(no_auth.json()["message"], "Missing Authentication Token");
    let garbage = call(t.addr, "ListStreams", "{not json").await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["__type"], "SerializationException");
    let ok = call(t.addr, "ListStreams", "").await;
    assert_eq!(ok.status, 200);
    assert!(
        ok.header("x-amzn-RequestId")
            .is_some_and(|id| id.len() == 36)
    );
    let id2 = ok.header("x-amz-id-2").unwrap();
    assert!((64..=80).contains(&id2.len()));
    assert_eq!(
        ok.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let preflight = raw(
        t.addr,
        "OPTIONS",
        &[
            ("Origin", "http://example.com"),
            (
                "Access-Control-Request-Headers",
                "x-amz-target,content-type",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-amz-target,content-type")
    );
    // An operation of the model this server does not serve yet is not faked.
    let consumers = call(t.addr, "ListQueues", r#"{}"#).await;
    assert_eq!(consumers.status, 400);
    assert_eq!(consumers.json()["__type"], "UnknownOperationException");
    t.stop().await;
}

#[tokio::test]
async fn validation_messages_match_aws() {
    let t = TestServer::start().await;
    let long = "a".repeat(129);
    let r = call(
        t.addr,
        "CreateStream",
        &format!(r#"{{"StreamName":"{long}","ShardCount":1}}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "ValidationException");
    assert_eq!(
        r.json()["message"],
        format!(
            "1 validation error detected: Value '{long}' at 'streamName' failed to satisfy constraint: Member must have length less than or equal to 128"
        )
    );
    let r = call(t.addr, "CreateStream", r#"{"ShardCount":0}"#).await;
    assert_eq!(
        r.json()["message"],
        "2 validation errors detected: Value null at 'streamName' failed to satisfy constraint: Member must not be null; Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"
    );
    let r = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"a b","ShardCount":1}"#,
    )
    .await;
    assert_eq!(
        r.json()["message"],
        "1 validation error detected: Value 'a b' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    );
    let r = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"x","ShardCount":"1"}"#,
    )
    .await;
    assert_eq!(r.json()["__type"], "SerializationException");
    let records: Vec<String> = (0..501)
        .map(|_| r#"{"Data":"AAAA","PartitionKey":"k"}"#.to_string())
        .collect();
    let r = call(
        t.addr,
        "PutRecords",
        &format!(r#"{{"StreamName":"x","Records":[{}]}}"#, records.join(",")),
    )
    .await;
    assert!(
        r.json()["message"].as_str().unwrap().contains(
            "at 'records' failed to satisfy constraint: Member must have length less than or equal to 500"
        ),
        "{}",
        r.json()
    );
    let r = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"nope","Data":"AAAA","PartitionKey":"k"}"#,
    )
    .await;
    assert_eq!(r.json()["__type"], "ResourceNotFoundException");
    assert_eq!(
        r.json()["message"],
        "Stream nope under account 000000000000 not found."
    );
    t.stop().await;
}

#[tokio::test]
async fn json_put_get_and_dry_run() {
    let t = TestServer::start().await;
    assert_eq!(
        call(
            t.addr,
            "CreateStream",
            r#"{"StreamName":"j","ShardCount":1}"#
        )
        .await
        .status,
        200
    );
    let dry = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"j","Data":"aGk=","PartitionKey":"k","DryRun":true}"#,
    )
    .await;
    assert_eq!(dry.json()["__type"], "DryRunOperationException");
    let put = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"j","Data":"aGk=","PartitionKey":"k"}"#,
    )
    .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let it = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"j","ShardId":"shardId-000000000000","ShardIteratorType":"TRIM_HORIZON"}"#,
    )
    .await;
    let iterator = it.json()["ShardIterator"].as_str().unwrap().to_string();
    // The live service accepts an iterator wrapped in double quotes.
    let quoted = serde_json::json!({"ShardIterator": format!("\"{iterator}\"")}).to_string();
    let got = call(t.addr, "GetRecords", &quoted).await;
    assert_eq!(got.status, 200);
    let body = got.json();
    assert_eq!(body["Records"][0]["Data"], "aGk=");
    assert_eq!(body["Records"][0]["PartitionKey"], "k");
    assert_eq!(
        body["Records"][0]["SequenceNumber"],
        put.json()["SequenceNumber"]
    );
    let ts = body["Records"][0]["ApproximateArrivalTimestamp"]
        .as_f64()
        .unwrap();
    let raw = std::str::from_utf8(&got.body).unwrap();
    let field = raw
        .split("\"ApproximateArrivalTimestamp\":")
        .nth(1)
        .unwrap();
    let number: String = field
        .chars()
        .take_while(|c| !matches!(c, ',' | '}'))
        .collect();
    assert!(
        number.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "plain decimal timestamp: {number}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ts).abs() < 60.0, "timestamps are epoch seconds");
    t.stop().await;
}

/// Appends a CBOR text string (definite length, < 24 bytes or 1-byte length).
fn text(out: &mut Vec<u8>, s: &str) {
    if s.len() < 24 {
        out.push(0x60 | s.len() as u8);
    } else {
        out.push(0x78);
        out.push(s.len() as u8);
    }
    out.extend_from_slice(s.as_bytes());
}

#[tokio::test]
async fn cbor_as_the_java_sdk_sends_it() {
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
    // PutRecord: an indefinite-length map, as the Java SDK writes it.
    let mut body = vec![0xbf];
    text(&mut body, "StreamName");
    text(&mut body, "c");
    text(&mut body, "PartitionKey");
    text(&mut body, "pk");
    text(&mut body, "Data");
    body.extend_from_slice(&[0x43, 1, 2, 3]);
    body.push(0xff);
    let put = call_cbor(t.addr, "PutRecord", &body).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(
        put.header("content-type"),
        Some("application/x-amz-cbor-1.1")
    );
    // DescribeStreamSummary: the creation timestamp comes back as tag 1 around epoch ms.
    let mut body = vec![0xbf];
    text(&mut body, "StreamName");
    text(&mut body, "c");
    body.push(0xff);
    let summary = call_cbor(t.addr, "DescribeStreamSummary", &body).await;
    assert_eq!(summary.status, 200);
    let key = b"StreamCreationTimestamp";
    let at = summary
        .body
        .windows(key.len())
        .position(|w| w == key)
        .expect("timestamp key")
        + key.len();
    assert_eq!(summary.body[at], 0xc1, "tag 1");
    assert_eq!(summary.body[at + 1], 0x1b, "a 64-bit integer");
    let ms = u64::from_be_bytes(summary.body[at + 2..at + 10].try_into().unwrap());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now_ms.abs_diff(ms) < 60_000,
        "milliseconds, not seconds: {ms}"
    );
    // AT_TIMESTAMP with a tag-1 millisecond timestamp in an indefinite map.
    let mut body = vec![0xbf];
    text(&mut body, "StreamName");
    text(&mut body, "c");
    text(&mut body, "ShardId");
    text(&mut body, "shardId-000000000000");
    text(&mut body, "ShardIteratorType");
    text(&mut body, "AT_TIMESTAMP");
    text(&mut body, "Timestamp");
    body.push(0xc1);
    body.push(0x1b);
    body.extend_from_slice(&(now_ms - 60_000).to_be_bytes());
    body.push(0xff);
    let it = call_cbor(t.addr, "GetShardIterator", &body).await;
    assert_eq!(it.status, 200, "{}", String::from_utf8_lossy(&it.body));
    let bad = call_cbor(t.addr, "ListStreams", &[0xbf, 0x61]).await;
    assert_eq!(bad.status, 400);
    let _ = AUTH;
    t.stop().await;
}

#[tokio::test]
async fn plain_application_json_is_accepted() {
    let t = TestServer::start().await;
    let response = raw(
        t.addr,
        "POST",
        &[
            ("Content-Type", "application/json"),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
            ("Authorization", AUTH),
            ("X-Amz-Date", "20260101T000000Z"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["StreamNames"], serde_json::json!([]));
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.contains("json"))
    );
    t.stop().await;
}

/// Splits an event-stream body into (`:event-type` or `:exception-type`, `:content-type`,
/// payload) triples.
fn event_messages(mut body: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 16 {
        let total = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
        let headers_len = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
        let headers = &body[12..12 + headers_len];
        let (mut kind, mut content_type) = (String::new(), String::new());
        let mut at = 0;
        while at < headers.len() {
            let name_len = headers[at] as usize;
            let name = std::str::from_utf8(&headers[at + 1..at + 1 + name_len]).unwrap();
            assert_eq!(headers[at + 1 + name_len], 7, "string header");
            let value_at = at + 2 + name_len;
            let value_len =
                u16::from_be_bytes(headers[value_at..value_at + 2].try_into().unwrap()) as usize;
            let value =
                std::str::from_utf8(&headers[value_at + 2..value_at + 2 + value_len]).unwrap();
            match name {
                ":event-type" | ":exception-type" => kind = value.to_string(),
                ":content-type" => content_type = value.to_string(),
                _ => {}
            }
            at = value_at + 2 + value_len;
        }
        out.push((
            kind,
            content_type,
            body[12 + headers_len..total - 4].to_vec(),
        ));
        body = &body[total..];
    }
    out
}

#[tokio::test]
async fn cbor_subscribe_to_shard_gets_cbor_events() {
    let mut config = rivulet_server::ServerConfig::for_tests();
    config.subscription.lifetime = std::time::Duration::from_millis(800);
    let t = TestServer::with_config(config).await;
    assert_eq!(
        call(
            t.addr,
            "CreateStream",
            r#"{"StreamName":"cb","ShardCount":1}"#
        )
        .await
        .status,
        200
    );
    let registered = call(
        t.addr,
        "RegisterStreamConsumer",
        r#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/cb","ConsumerName":"java"}"#,
    )
    .await;
    let consumer_arn = registered.json()["Consumer"]["ConsumerARN"]
        .as_str()
        .expect("arn")
        .to_string();
    let put = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"cb","Data":"AQID","PartitionKey":"pk"}"#,
    )
    .await;
    assert_eq!(put.status, 200);
    // As the Java SDK writes it: indefinite-length maps, a tag-1 millisecond timestamp.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let mut body = vec![0xbf];
    text(&mut body, "ConsumerARN");
    body.push(0x78);
    body.push(consumer_arn.len() as u8);
    body.extend_from_slice(consumer_arn.as_bytes());
    text(&mut body, "ShardId");
    text(&mut body, "shardId-000000000000");
    text(&mut body, "StartingPosition");
    body.push(0xbf);
    text(&mut body, "Type");
    text(&mut body, "AT_TIMESTAMP");
    text(&mut body, "Timestamp");
    body.extend_from_slice(&[0xc1, 0x1b]);
    body.extend_from_slice(&an_hour_ago.to_be_bytes());
    body.push(0xff);
    body.push(0xff);
    // The subscription ends after its (shortened) lifetime, so the whole body can be read.
    let response = call_cbor(t.addr, "SubscribeToShard", &body).await;
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let messages = event_messages(&response.body);
    assert_eq!(messages[0].0, "initial-response");
    let (kind, content_type, payload) = &messages[1];
    assert_eq!(kind, "SubscribeToShardEvent");
    assert_eq!(content_type, "application/x-amz-cbor-1.1");
    let mut d = minicbor::Decoder::new(payload);
    let members = d.map().expect("map").expect("definite");
    let mut data = None;
    let mut arrival_ms = None;
    for _ in 0..members {
        match d.str().expect("key") {
            "Records" => {
                assert_eq!(d.array().expect("array"), Some(1));
                let fields = d.map().expect("record").expect("definite");
                for _ in 0..fields {
                    match d.str().expect("key") {
                        "Data" => data = Some(d.bytes().expect("bytes").to_vec()),
                        "ApproximateArrivalTimestamp" => {
                            assert_eq!(d.tag().expect("tag"), minicbor::data::Tag::new(1));
                            arrival_ms = Some(d.u64().expect("ms"));
                        }
                        _ => d.skip().expect("skip"),
                    }
                }
            }
            _ => d.skip().expect("skip"),
        }
    }
    assert_eq!(data.as_deref(), Some(&[1u8, 2, 3][..]));
    assert!(arrival_ms.expect("timestamp") > an_hour_ago, "milliseconds");
    t.stop().await;
}
