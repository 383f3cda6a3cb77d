//! The wire protocol over raw sockets: envelope errors, validation messages, JSON and CBOR.

use crate::util::{AUTH, RawResponse, TestServer, call, call_cbor, raw, raw_path};

const XML_403: &[u8] = b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n";
const XML_404: &[u8] = b"<UnknownOperationException/>\n";
const JSON_11: &str = "application/x-amz-json-1.1";
const CBOR_11: &str = "application/x-amz-cbor-1.1";

/// `{"__type": code}` as AWS's framework writes it in CBOR: an indefinite-length map.
fn cbor_envelope(code: &str) -> Vec<u8> {
    let mut out = vec![0xbf];
    text(&mut out, "__type");
    text(&mut out, code);
    out.push(0xff);
    out
}

/// Asserts an answer byte for byte: status, `Content-Type` (`None`: absent), body, and the
/// request-id headers every answer but a preflight has.
#[track_caller]
fn check(r: &RawResponse, status: u16, content_type: Option<&str>, body: &[u8]) {
    let shown = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "{shown} {:?}", r.headers);
    assert_eq!(r.header("content-type"), content_type, "{shown}");
    assert_eq!(r.body, body, "{shown}");
    let length = r
        .header("content-length")
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(length, Some(body.len()), "{:?}", r.headers);
    let request_id = r.header("x-amzn-RequestId").expect("x-amzn-RequestId");
    assert!(uuid_like(request_id), "{request_id}");
    let id2 = r.header("x-amz-id-2").expect("x-amz-id-2");
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, id2)
        .expect("x-amz-id-2 is standard base64");
    assert!((64..=80).contains(&decoded.len()), "{id2}");
    assert_eq!(
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &decoded),
        id2
    );
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A POST to `/` with these headers (`Content-Type` and `X-Amz-Target` only when `Some`).
async fn post(
    addr: std::net::SocketAddr,
    content_type: Option<&str>,
    target: Option<&str>,
    signed: bool,
    body: &[u8],
) -> RawResponse {
    let mut headers = Vec::new();
    if let Some(content_type) = content_type {
        headers.push(("Content-Type", content_type));
    }
    if let Some(target) = target {
        headers.push(("X-Amz-Target", target));
    }
    if signed {
        headers.push(("Authorization", AUTH));
        headers.push(("X-Amz-Date", "20260101T000000Z"));
    }
    raw(addr, "POST", &headers, body).await
}

/// Section 1 of "Recorded answers in detail": every envelope answer, in AWS's order of checks.
#[tokio::test]
async fn envelope_answers_in_aws_order() {
    let t = TestServer::start().await;
    let a = t.addr;
    const LIST: &str = "Kinesis_20131202.ListStreams";
    let list = Some(LIST);
    // 1. Not POST: the 403 XML, without a Content-Type; OPTIONS without Origin is one of them.
    for method in ["GET", "PUT", "DELETE", "OPTIONS"] {
        let r = raw(a, method, &[("X-Amz-Target", LIST)], b"").await;
        check(&r, 403, None, XML_403);
    }
    // 2. An empty body: 400 before anything else (no auth check), CBOR unless the media type is
    //    exactly JSON 1.1; SerializationException for a known target, else UnknownOperation.
    let serialization_json = br#"{"__type":"SerializationException"}"#;
    let unknown_json = br#"{"__type":"UnknownOperationException"}"#;
    let cases: &[(Option<&str>, Option<&str>, &str, &str)] = &[
        (None, list, CBOR_11, "SerializationException"),
        (Some(JSON_11), list, JSON_11, "SerializationException"),
        (
            Some(" application/x-amz-json-1.1 ; charset=utf-8"),
            list,
            JSON_11,
            "SerializationException",
        ),
        (Some(CBOR_11), list, CBOR_11, "SerializationException"),
        (
            Some("application/json"),
            list,
            CBOR_11,
            "SerializationException",
        ),
        (
            Some("application/x-amz-json-1.0"),
            list,
            CBOR_11,
            "SerializationException",
        ),
        (Some(JSON_11), None, JSON_11, "UnknownOperationException"),
        (
            Some(JSON_11),
            Some("Kinesis_20131202.Frobnicate"),
            JSON_11,
            "UnknownOperationException",
        ),
        (
            Some("text/plain"),
            Some("Whatever"),
            CBOR_11,
            "UnknownOperationException",
        ),
    ];
    for &(content_type, target, answer_type, code) in cases {
        let r = post(a, content_type, target, false, b"").await;
        let body = if answer_type == JSON_11 {
            format!(r#"{{"__type":"{code}"}}"#).into_bytes()
        } else {
            cbor_envelope(code)
        };
        check(&r, 400, Some(answer_type), &body);
    }
    // 3. A body in a media type AWS does not serve: the 403 without a `Service.Operation`
    //    target, else a 404; neither has a Content-Type.
    for target in [None, Some("Whatever"), Some("Kinesis_20131202.")] {
        let r = post(a, Some("text/plain"), target, true, b"{}").await;
        check(&r, 403, None, XML_403);
    }
    for (content_type, target) in [
        (Some("text/plain"), list),
        (None, list),
        (Some("application/x-amz-json-1.0"), Some("Foo.Bar")),
    ] {
        let r = post(a, content_type, target, true, b"{}").await;
        check(&r, 404, None, XML_404);
    }
    // 4. A body that does not parse, or a scalar: SerializationException without a message in
    //    the request's format, whatever the target, before authentication.
    for body in [&b"hello"[..], b"23", b"\"x\"", b"{\"a\":1"] {
        for target in [list, Some("Kinesis_20131202.Frobnicate"), None] {
            let r = post(a, Some(JSON_11), target, false, body).await;
            check(&r, 400, Some(JSON_11), serialization_json);
        }
    }
    let r = post(a, Some(CBOR_11), list, false, b"hello").await;
    check(
        &r,
        400,
        Some(CBOR_11),
        &cbor_envelope("SerializationException"),
    );
    // 4–5. Plain application/json: the Coral envelope, never dispatched, no auth check.
    let coral = |code: &str| {
        format!(r#"{{"Output":{{"__type":"com.amazon.coral.service#{code}"}},"Version":"1.0"}}"#)
            .into_bytes()
    };
    let r = post(a, Some("application/json"), list, false, b"hello").await;
    check(
        &r,
        400,
        Some("application/json"),
        &coral("SerializationException"),
    );
    for (target, signed) in [(list, true), (list, false), (None, false)] {
        let r = post(a, Some("application/json"), target, signed, b"{}").await;
        check(
            &r,
            404,
            Some("application/json"),
            &coral("UnknownOperationException"),
        );
    }
    // 6. An unknown target (or none) with a parseable body.
    for target in [None, Some("Kinesis_20131202.Frobnicate"), Some("Whatever")] {
        let r = post(a, Some(JSON_11), target, false, b"{}").await;
        check(&r, 400, Some(JSON_11), unknown_json);
        let r = post(a, Some(CBOR_11), target, false, &[0xa0]).await;
        check(
            &r,
            400,
            Some(CBOR_11),
            &cbor_envelope("UnknownOperationException"),
        );
    }
    // 7. Then authentication; a wrong type is only reported after it.
    let missing = br#"{"__type":"MissingAuthenticationTokenException","message":"Missing Authentication Token"}"#;
    let r = post(a, Some(JSON_11), list, false, b"{}").await;
    check(&r, 400, Some(JSON_11), missing);
    let r = post(a, Some(JSON_11), list, false, br#"{"Limit":"x"}"#).await;
    check(&r, 400, Some(JSON_11), missing);
    let query = |path: &'static str| async move {
        let headers = [("Content-Type", JSON_11), ("X-Amz-Target", LIST)];
        raw_path(a, "POST", path, &headers, b"{}").await
    };
    let all_five = "AWS query-string parameters must include 'X-Amz-Algorithm'. AWS \
                    query-string parameters must include 'X-Amz-Credential'. AWS query-string \
                    parameters must include 'X-Amz-Signature'. AWS query-string parameters must \
                    include 'X-Amz-SignedHeaders'. AWS query-string parameters must include \
                    'X-Amz-Date'. Re-examine the query-string parameters.";
    let incomplete = |message: &str| {
        format!(r#"{{"__type":"IncompleteSignatureException","message":"{message}"}}"#).into_bytes()
    };
    for path in [
        "/?X-Amz-Algorithm",
        "/?X-Amz-Algorithm=",
        "/?X-Amz-Algorithm=&X-Amz-Date=",
    ] {
        check(
            &query(path).await,
            400,
            Some(JSON_11),
            &incomplete(all_five),
        );
    }
    let r = query(
        "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=&X-Amz-Signature=0&\
         X-Amz-SignedHeaders=host&X-Amz-Date=20260101T000000Z",
    )
    .await;
    check(
        &r,
        400,
        Some(JSON_11),
        &incomplete(
            "AWS query-string parameters must include 'X-Amz-Credential'. Re-examine the \
             query-string parameters.",
        ),
    );
    // Past every check: an ordinary answer.
    let r = post(a, Some(JSON_11), list, true, b"{}").await;
    check(
        &r,
        200,
        Some(JSON_11),
        br#"{"StreamNames":[],"HasMoreStreams":false,"StreamSummaries":[]}"#,
    );
    t.stop().await;
}

/// A CORS preflight echoes what the browser asks for and has no `x-amz-id-2`; every other
/// answer to a request with `Origin` exposes AWS's headers.
#[tokio::test]
async fn cors_preflight_echoes_the_request() {
    let t = TestServer::start().await;
    let r = raw(
        t.addr,
        "OPTIONS",
        &[
            ("Origin", "http://example.com"),
            ("Access-Control-Request-Method", "PUT"),
            (
                "Access-Control-Request-Headers",
                "x-amz-target,content-type",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.header("content-type"), None);
    assert_eq!(r.header("x-amz-id-2"), None);
    assert!(r.header("x-amzn-RequestId").is_some_and(uuid_like));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-max-age"), Some("172800"));
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-amz-target,content-type")
    );
    assert_eq!(r.header("access-control-expose-headers"), None);
    // Each only when asked; signed or not makes no difference.
    let r = raw(
        t.addr,
        "OPTIONS",
        &[("Origin", "http://example.com"), ("Authorization", AUTH)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-methods"), None);
    assert_eq!(r.header("access-control-allow-headers"), None);
    assert_eq!(r.header("x-amz-id-2"), None);
    // An ordinary answer to a browser.
    let r = raw(
        t.addr,
        "POST",
        &[
            ("Origin", "http://example.com"),
            ("Content-Type", JSON_11),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
            ("Authorization", AUTH),
            ("X-Amz-Date", "20260101T000000Z"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some(
            "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
        )
    );
    assert!(r.header("x-amz-id-2").is_some());
    t.stop().await;
}

/// Operations without an output shape answer 200 with an empty body, in JSON and CBOR; a
/// top-level InternalFailure is 500 without a message.
#[tokio::test]
async fn empty_outputs_and_internal_failure() {
    let t = TestServer::start().await;
    let r = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"e","ShardCount":1}"#,
    )
    .await;
    check(&r, 200, Some(JSON_11), b"");
    crate::util::wait_active(&t.client, "e").await;
    let r = call(
        t.addr,
        "AddTagsToStream",
        r#"{"StreamName":"e","Tags":{"a":"b"}}"#,
    )
    .await;
    check(&r, 200, Some(JSON_11), b"");
    let mut body = vec![0xbf];
    text(&mut body, "StreamName");
    text(&mut body, "e");
    text(&mut body, "TagKeys");
    body.extend_from_slice(&[0x81, 0x61, b'a']);
    body.push(0xff);
    let r = call_cbor(t.addr, "RemoveTagsFromStream", &body).await;
    check(&r, 200, Some(CBOR_11), b"");
    // An operation with an output still answers a document.
    let r = call(t.addr, "ListTagsForStream", r#"{"StreamName":"e"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Tags"], serde_json::json!([]));
    // `0` as a sequence number is an internal failure on the live service.
    let r = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"e","ShardId":"shardId-000000000000","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"0"}"#,
    )
    .await;
    check(&r, 500, Some(JSON_11), br#"{"__type":"InternalFailure"}"#);
    t.stop().await;
}

/// Section 2: SerializationException texts, byte for byte.
#[tokio::test]
async fn serialization_exception_texts() {
    let t = TestServer::start().await;
    let number = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be \
                  converted to";
    let cases: &[(&str, &str, String)] = &[
        (
            "PutRecord",
            r#"{"StreamName":23}"#,
            format!("{number} an String"),
        ),
        (
            "PutRecord",
            r#"{"PartitionKey":-2147483648}"#,
            format!("{number} an String"),
        ),
        (
            "PutRecord",
            r#"{"StreamName":2147483648}"#,
            format!("{number} an String"),
        ),
        ("PutRecord", r#"{"Data":34.56}"#, format!("{number} a Blob")),
        (
            "PutRecord",
            r#"{"DryRun":23}"#,
            format!("{number} an Boolean"),
        ),
        (
            "GetShardIterator",
            r#"{"Timestamp":"1506440188"}"#,
            "class java.lang.String can not be converted to milliseconds since epoch".into(),
        ),
        (
            "GetShardIterator",
            r#"{"Timestamp":"2017-09-26T15:36:28Z"}"#,
            "class java.lang.String can not be converted to milliseconds since epoch".into(),
        ),
        (
            "ListStreamConsumers",
            r#"{"StreamCreationTimestamp":true}"#,
            "class java.lang.Boolean can not be converted to milliseconds since epoch".into(),
        ),
    ];
    for (op, body, message) in cases {
        let r = call(t.addr, op, body).await;
        let expected = format!(r#"{{"__type":"SerializationException","Message":"{message}"}}"#);
        check(&r, 400, Some(JSON_11), expected.as_bytes());
    }
    // A number is accepted as a timestamp.
    let r = call(
        t.addr,
        "ListStreamConsumers",
        r#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/none","StreamCreationTimestamp":1506440188.5}"#,
    )
    .await;
    assert_eq!(r.json()["__type"], "ResourceNotFoundException");
    t.stop().await;
}

/// Section 3: enum sets in the service's order, structures in lists with AWS's hash, patterns
/// as the model spells them.
#[tokio::test]
async fn validation_exception_texts() {
    let t = TestServer::start().await;
    let validation = |message: &str| {
        format!(r#"{{"__type":"ValidationException","message":"{message}"}}"#).into_bytes()
    };
    let r = call(
        t.addr,
        "GetShardIterator",
        r#"{"StreamName":"s","ShardId":"shardId-000000000000","ShardIteratorType":"NEXT"}"#,
    )
    .await;
    check(
        &r,
        400,
        Some(JSON_11),
        &validation(
            "1 validation error detected: Value 'NEXT' at 'shardIteratorType' failed to satisfy \
             constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, \
             AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
        ),
    );
    let r = call(
        t.addr,
        "CreateStream",
        r#"{"StreamName":"s","StreamModeDetails":{"StreamMode":"BOTH"}}"#,
    )
    .await;
    check(
        &r,
        400,
        Some(JSON_11),
        &validation(
            "1 validation error detected: Value 'BOTH' at 'streamModeDetails.streamMode' failed \
             to satisfy constraint: Member must satisfy enum value set: [ON_DEMAND, PROVISIONED]",
        ),
    );
    let r = call(
        t.addr,
        "StartStreamEncryption",
        r#"{"StreamName":"s","EncryptionType":"AES","KeyId":"k"}"#,
    )
    .await;
    check(
        &r,
        400,
        Some(JSON_11),
        &validation(
            "1 validation error detected: Value 'AES' at 'encryptionType' failed to satisfy \
             constraint: Member must satisfy enum value set: [KMS, NONE]",
        ),
    );
    // 501 empty entries: the list rendered with each entry's hash, then nine more violations.
    let records = vec![r#"{"PartitionKey":"","Data":""}"#; 501].join(",");
    let r = call(
        t.addr,
        "PutRecords",
        &format!(r#"{{"StreamName":"s","Records":[{records}]}}"#),
    )
    .await;
    let entry = "com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310";
    let mut message = format!(
        "10 validation errors detected: Value '[{}]' at 'records' failed to satisfy constraint: \
         Member must have length less than or equal to 500",
        vec![entry; 501].join(", ")
    );
    for i in 1..=9 {
        message.push_str(&format!(
            "; Value '' at 'records.{i}.member.partitionKey' failed to satisfy constraint: \
             Member must have length greater than or equal to 1"
        ));
    }
    check(&r, 400, Some(JSON_11), &validation(&message));
    // A pattern exactly as the model spells it.
    let r = call(
        t.addr,
        "PutRecord",
        r#"{"StreamName":"s","PartitionKey":"k","Data":"","ExplicitHashKey":"x"}"#,
    )
    .await;
    check(
        &r,
        400,
        Some(JSON_11),
        &validation(
            r#"1 validation error detected: Value 'x' at 'explicitHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,38}))$"#,
        ),
    );
    t.stop().await;
}

#[tokio::test]
async fn envelope_errors_match_aws() {
    let t = TestServer::start().await;
    let denied = raw(t.addr, "GET", &[], b"").await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        String::from_utf8_lossy(&denied.body),
        "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n"
    );
    // A JSON 1.1 POST without a target is an unknown operation, not the 403.
    let no_target = raw(
        t.addr,
        "POST",
        &[("Content-Type", "application/x-amz-json-1.1")],
        b"{}",
    )
    .await;
    assert_eq!(no_target.status, 400);
    assert_eq!(no_target.json()["__type"], "UnknownOperationException");
    let unknown = call(t.addr, "Frobnicate", "{}").await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["__type"], "UnknownOperationException");
    let garbage = call(t.addr, "ListStreams", "{not json").await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["__type"], "SerializationException");
    let empty = call(t.addr, "ListStreams", "").await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json()["__type"], "SerializationException");
    // Every operation of the model is served now: ListChannels answers its (empty) list.
    let channels = call(t.addr, "ListChannels", r#"{}"#).await;
    assert_eq!(channels.status, 200);
    assert_eq!(channels.json()["ChannelSummaries"], serde_json::json!([]));
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
