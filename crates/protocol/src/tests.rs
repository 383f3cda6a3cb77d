//! Data-driven tests of the public API: every case goes through `check`.

use crate::{AwsError, Format, Value, decode_request, encode_error, encode_response};

/// What a request should decode to.
#[derive(Debug)]
enum Expect<'a> {
    /// Decodes and validates.
    Valid,
    /// Decodes and validates to exactly this value.
    Decoded(Value),
    /// `SerializationException` without a message: not well-formed.
    Malformed,
    /// `SerializationException` with this capital `Message`: a wrong type.
    WrongType(&'a str),
    /// `ValidationException` with this message.
    Invalid(&'a str),
}

/// A request body in one format.
struct Body {
    format: Format,
    bytes: Vec<u8>,
}

fn json(text: impl Into<String>) -> Body {
    Body {
        format: Format::Json,
        bytes: text.into().into_bytes(),
    }
}

fn cbor(bytes: impl Into<Vec<u8>>) -> Body {
    Body {
        format: Format::Cbor,
        bytes: bytes.into(),
    }
}

/// The one test helper: decodes `body` for `op` and compares with `expected`.
#[track_caller]
fn check(op: &str, body: Body, expected: Expect<'_>) {
    let got = decode_request(op, body.format, &body.bytes);
    let excerpt = String::from_utf8_lossy(&body.bytes[..body.bytes.len().min(200)]).into_owned();
    match (expected, got) {
        (Expect::Valid, Ok(_)) => {}
        (Expect::Decoded(value), Ok(got)) => assert_eq!(got, value, "{op} {excerpt}"),
        (Expect::Malformed, Err(error)) => {
            assert_eq!(error, AwsError::serialization(), "{op} {excerpt}");
        }
        (Expect::WrongType(message), Err(error)) => {
            assert_eq!(
                error,
                AwsError::serialization_type(message),
                "{op} {excerpt}"
            );
        }
        (Expect::Invalid(message), Err(error)) => {
            assert_eq!(error, AwsError::validation(message), "{op} {excerpt}");
        }
        (expected, got) => panic!("{op} {excerpt}: expected {expected:?}, got {got:?}"),
    }
}

fn map(members: Vec<(&str, Value)>) -> Value {
    members.into_iter().collect()
}

fn s(text: &str) -> Value {
    Value::from(text)
}

/// `Value 'v' at 'path' failed to satisfy constraint: c`.
fn violation(value: &str, path: &str, constraint: &str) -> String {
    format!("Value {value} at '{path}' failed to satisfy constraint: {constraint}")
}

fn detected(violations: &[String]) -> String {
    let plural = if violations.len() == 1 { "" } else { "s" };
    format!(
        "{} validation error{plural} detected: {}",
        violations.len(),
        violations.join("; ")
    )
}

const NOT_NULL: &str = "Member must not be null";
const NAME_PATTERN: &str = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+";
const HASH_KEY_PATTERN: &str =
    "Member must satisfy regular expression pattern: ^(0|([1-9]\\d{0,38}))$";

#[test]
fn valid_json_requests() {
    check(
        "PutRecords",
        json(r#"{"StreamName":"s","Records":[{"PartitionKey":"k","Data":"AAEC"}],"Extra":[1,{}]}"#),
        // Members come out in model order (Records before StreamName), unknown ones dropped.
        Expect::Decoded(map(vec![
            (
                "Records",
                Value::List(vec![map(vec![
                    ("Data", Value::Blob(vec![0, 1, 2])),
                    ("PartitionKey", s("k")),
                ])]),
            ),
            ("StreamName", s("s")),
        ])),
    );
    check(
        "CreateStream",
        json(r#" { "StreamName" : "my-stream_1.x", "ShardCount" : 2 , "Tags":{"a":"b"}} "#),
        Expect::Decoded(map(vec![
            ("StreamName", s("my-stream_1.x")),
            ("ShardCount", Value::Int(2)),
            ("Tags", map(vec![("a", s("b"))])),
        ])),
    );
    // A fraction in an integer member is truncated, as Jackson does.
    check(
        "CreateStream",
        json(r#"{"StreamName":"s","ShardCount":2.7}"#),
        Expect::Decoded(map(vec![
            ("StreamName", s("s")),
            ("ShardCount", Value::Int(2)),
        ])),
    );
    // JSON null is an absent member.
    check(
        "CreateStream",
        json(r#"{"StreamName":"s","ShardCount":null}"#),
        Expect::Decoded(map(vec![("StreamName", s("s"))])),
    );
    // A repeated member: the last one wins.
    check(
        "CreateStream",
        json(r#"{"StreamName":"a","StreamName":"b"}"#),
        Expect::Decoded(map(vec![("StreamName", s("b"))])),
    );
    check(
        "GetShardIterator",
        json(
            r#"{"StreamName":"s","ShardId":"shardId-000000000000",
                "ShardIteratorType":"AT_TIMESTAMP","Timestamp":1506440188.749}"#,
        ),
        Expect::Decoded(map(vec![
            ("StreamName", s("s")),
            ("ShardId", s("shardId-000000000000")),
            ("ShardIteratorType", s("AT_TIMESTAMP")),
            ("Timestamp", Value::Timestamp(1_506_440_188.749)),
        ])),
    );
    check(
        "GetShardIterator",
        json(r#"{"ShardId":"0","ShardIteratorType":"AT_TIMESTAMP","Timestamp":1506440188}"#),
        Expect::Decoded(map(vec![
            ("ShardId", s("0")),
            ("ShardIteratorType", s("AT_TIMESTAMP")),
            ("Timestamp", Value::Timestamp(1_506_440_188.0)),
        ])),
    );
    check("ListStreams", json("{}"), Expect::Decoded(map(vec![])));
    check(
        "DescribeLimits",
        json(r#"{"Unknown":{"x":[null,true,-1.5e3,"\u00e9"]}}"#),
        Expect::Valid,
    );
    check(
        "EnableEnhancedMonitoring",
        json(r#"{"StreamName":"s","ShardLevelMetrics":["ALL","IncomingBytes"]}"#),
        Expect::Valid,
    );
    check(
        "PutRecord",
        json(r#"{"StreamName":"s","PartitionKey":"\u00e9\ud83d\ude00","Data":"","DryRun":"true"}"#),
        Expect::Decoded(map(vec![
            ("StreamName", s("s")),
            ("Data", Value::Blob(vec![])),
            ("PartitionKey", s("é😀")),
            ("DryRun", Value::Bool(true)),
        ])),
    );
    // Escaped slashes in base64, as some encoders write them.
    check(
        "PutRecord",
        json(r#"{"StreamName":"s","PartitionKey":"k","Data":"\/w=="}"#),
        Expect::Decoded(map(vec![
            ("StreamName", s("s")),
            ("Data", Value::Blob(vec![0xff])),
            ("PartitionKey", s("k")),
        ])),
    );
    check(
        "PutRecords",
        json(format!(
            r#"{{"StreamName":"s","Records":[
                {{"PartitionKey":"k","Data":"","ExplicitHashKey":"{}"}}]}}"#,
            "3".repeat(39)
        )),
        Expect::Valid,
    );
}

#[test]
fn validation_errors() {
    check(
        "CreateStream",
        json("{}"),
        Expect::Invalid(&detected(&[violation("null", "streamName", NOT_NULL)])),
    );
    let long = "a".repeat(129);
    check(
        "CreateStream",
        json(format!(r#"{{"StreamName":"{long}"}}"#)),
        Expect::Invalid(&detected(&[violation(
            &format!("'{long}'"),
            "streamName",
            "Member must have length less than or equal to 128",
        )])),
    );
    check(
        "DescribeStreamSummary",
        json(r#"{"StreamName":"a b"}"#),
        Expect::Invalid(&detected(&[violation("'a b'", "streamName", NAME_PATTERN)])),
    );
    // Pattern before length, plural.
    check(
        "DescribeStreamSummary",
        json(r#"{"StreamName":""}"#),
        Expect::Invalid(&detected(&[
            violation("''", "streamName", NAME_PATTERN),
            violation(
                "''",
                "streamName",
                "Member must have length greater than or equal to 1",
            ),
        ])),
    );
    check(
        "GetShardIterator",
        json(r#"{"StreamName":"s","ShardIteratorType":"FOO"}"#),
        Expect::Invalid(&detected(&[
            violation("null", "shardId", NOT_NULL),
            violation(
                "'FOO'",
                "shardIteratorType",
                "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, \
                 AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
            ),
        ])),
    );
    check(
        "GetRecords",
        json(r#"{"ShardIterator":"x","Limit":0}"#),
        Expect::Invalid(&detected(&[violation(
            "'0'",
            "limit",
            "Member must have value greater than or equal to 1",
        )])),
    );
    check(
        "GetRecords",
        json(r#"{"Limit":10001}"#),
        Expect::Invalid(&detected(&[
            violation("null", "shardIterator", NOT_NULL),
            violation(
                "'10001'",
                "limit",
                "Member must have value less than or equal to 10000",
            ),
        ])),
    );
    check(
        "SubscribeToShard",
        json(
            r#"{"ConsumerARN":"arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1",
                "ShardId":"shardId-0","StartingPosition":{}}"#,
        ),
        Expect::Invalid(&detected(&[violation(
            "null",
            "startingPosition.type",
            NOT_NULL,
        )])),
    );
}

#[test]
fn put_records_validation_errors() {
    // Nested paths, model order inside a record, then the stream name.
    check(
        "PutRecords",
        json(r#"{"StreamName":"","Records":[{"PartitionKey":"","Data":"","ExplicitHashKey":""}]}"#),
        Expect::Invalid(&detected(&[
            violation("''", "records.1.member.explicitHashKey", HASH_KEY_PATTERN),
            violation(
                "''",
                "records.1.member.partitionKey",
                "Member must have length greater than or equal to 1",
            ),
            violation("''", "streamName", NAME_PATTERN),
            violation(
                "''",
                "streamName",
                "Member must have length greater than or equal to 1",
            ),
        ])),
    );
    let key = "k".repeat(257);
    check(
        "PutRecords",
        json(format!(
            r#"{{"StreamName":"s","Records":[{{"PartitionKey":"k","Data":""}},
                {{"PartitionKey":"{key}","Data":"AA=="}}]}}"#
        )),
        Expect::Invalid(&detected(&[violation(
            &format!("'{key}'"),
            "records.2.member.partitionKey",
            "Member must have length less than or equal to 256",
        )])),
    );
    check(
        "PutRecords",
        json(r#"{"StreamName":"s","Records":[{"PartitionKey":"k"}]}"#),
        Expect::Invalid(&detected(&[violation(
            "null",
            "records.1.member.data",
            NOT_NULL,
        )])),
    );
    // A blob over 10 MiB renders as Java's HeapByteBuffer.
    let data = vec![0u8; 10 * 1024 * 1024 + 1];
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
    check(
        "PutRecords",
        json(format!(
            r#"{{"StreamName":"s","Records":[{{"PartitionKey":"k","Data":"{encoded}"}}]}}"#
        )),
        Expect::Invalid(&detected(&[violation(
            "'java.nio.HeapByteBuffer[pos=0 lim=10485761 cap=10485761]'",
            "records.1.member.data",
            "Member must have length less than or equal to 10485760",
        )])),
    );
    check(
        "PutRecords",
        json(r#"{"StreamName":"s","Records":[]}"#),
        Expect::Invalid(&detected(&[violation(
            "'[]'",
            "records",
            "Member must have length greater than or equal to 1",
        )])),
    );
}

/// AWS's answer to 501 empty records, recorded from the live service: the list violation, then
/// violations up to 10 in all, counted as 10.
#[test]
fn put_records_too_many_records_stops_at_ten_violations() {
    let records = vec![r#"{"PartitionKey":"","Data":""}"#; 501].join(",");
    let entry = "com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310";
    let mut expected = vec![violation(
        &format!("'[{}]'", vec![entry; 501].join(", ")),
        "records",
        "Member must have length less than or equal to 500",
    )];
    for i in 1..=9 {
        expected.push(violation(
            "''",
            &format!("records.{i}.member.partitionKey"),
            "Member must have length greater than or equal to 1",
        ));
    }
    check(
        "PutRecords",
        json(format!(r#"{{"StreamName":"","Records":[{records}]}}"#)),
        Expect::Invalid(&detected(&expected)),
    );
    let records = vec![r#"{"PartitionKey":"k","Data":"AA=="}"#; 501].join(",");
    let message = decode_request(
        "PutRecords",
        Format::Json,
        format!(r#"{{"StreamName":"s","Records":[{records}]}}"#).as_bytes(),
    )
    .unwrap_err()
    .message
    .unwrap();
    assert!(
        message.starts_with("1 validation error detected: Value '[com.amazonaws"),
        "{message}"
    );
    assert!(
        message.ends_with(
            "]' at 'records' failed to satisfy constraint: Member must have length \
                           less than or equal to 500"
        ),
        "{message}"
    );
}

#[test]
fn collection_item_constraints() {
    let tag_key_constraints = "[Member must have length less than or equal to 128, \
                               Member must have length greater than or equal to 1]";
    let long = "a".repeat(129);
    check(
        "AddTagsToStream",
        json(format!(r#"{{"StreamName":"s","Tags":{{"{long}":"3"}}}}"#)),
        Expect::Invalid(&detected(&[violation(
            &format!("'{{{long}=3}}'"),
            "tags",
            &format!("Map keys must satisfy constraint: {tag_key_constraints}"),
        )])),
    );
    let value = "v".repeat(257);
    check(
        "AddTagsToStream",
        json(format!(r#"{{"StreamName":"s","Tags":{{"a":"{value}"}}}}"#)),
        Expect::Invalid(&detected(&[violation(
            &format!("'{{a={value}}}'"),
            "tags",
            "Map value must satisfy constraint: [Member must have length less than or equal to \
             256, Member must have length greater than or equal to 0]",
        )])),
    );
    check(
        "AddTagsToStream",
        json(r#"{"StreamName":"s","Tags":{}}"#),
        Expect::Invalid(&detected(&[violation(
            "'{}'",
            "tags",
            "Member must have length greater than or equal to 1",
        )])),
    );
    check(
        "RemoveTagsFromStream",
        json(r#"{"StreamName":"s","TagKeys":["a",""]}"#),
        Expect::Invalid(&detected(&[violation(
            "'[a, ]'",
            "tagKeys",
            &format!("Member must satisfy constraint: {tag_key_constraints}"),
        )])),
    );
    check(
        "EnableEnhancedMonitoring",
        json(r#"{"StreamName":"s","ShardLevelMetrics":["Foo"]}"#),
        Expect::Invalid(&detected(&[violation(
            "'[Foo]'",
            "shardLevelMetrics",
            "Member must satisfy constraint: [Member must satisfy enum value set: [ALL, \
             IteratorAgeMilliseconds, IncomingBytes, WriteProvisionedThroughputExceeded, \
             OutgoingRecords, ReadProvisionedThroughputExceeded, IncomingRecords, OutgoingBytes]]",
        )])),
    );
}

#[test]
fn serialization_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "CreateStream",
            r#"{"StreamName":1}"#,
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        ),
        (
            "CreateStream",
            r#"{"StreamName":true}"#,
            "class java.lang.Boolean can not be converted to an String",
        ),
        (
            "CreateStream",
            r#"{"StreamName":{}}"#,
            "Start of structure or map found where not expected.",
        ),
        (
            "CreateStream",
            r#"{"StreamName":[]}"#,
            "Start of list found where not expected",
        ),
        (
            "CreateStream",
            r#"{"ShardCount":"1"}"#,
            "class java.lang.String can not be converted to an Integer",
        ),
        (
            "CreateStream",
            r#"{"ShardCount":false}"#,
            "class java.lang.Boolean can not be converted to an Integer",
        ),
        (
            "CreateStream",
            r#"{"ShardCount":3000000000}"#,
            "Numeric value (3000000000) out of range of int (-2147483648 - 2147483647)",
        ),
        (
            "CreateStream",
            r#"{"ShardCount":1e10}"#,
            "Numeric value (1e10) out of range of int (-2147483648 - 2147483647)",
        ),
        ("CreateStream", r#"{"Tags":"x"}"#, "Expected map or null"),
        (
            "CreateStream",
            r#"{"Tags":[]}"#,
            "Start of list found where not expected",
        ),
        (
            "CreateStream",
            r#"{"StreamModeDetails":"x"}"#,
            "Expected null",
        ),
        (
            "CreateStream",
            r#"{"StreamModeDetails":[]}"#,
            "Start of list found where not expected",
        ),
        ("PutRecords", r#"{"Records":"x"}"#, "Expected list or null"),
        (
            "PutRecords",
            r#"{"Records":{}}"#,
            "Start of structure or map found where not expected.",
        ),
        ("PutRecords", r#"{"Records":["x"]}"#, "Expected null"),
        (
            "PutRecords",
            r#"{"Records":[{"Data":true}]}"#,
            "class java.lang.Boolean can not be converted to a Blob",
        ),
        (
            "PutRecords",
            r#"{"Records":[{"Data":12}]}"#,
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to a Blob",
        ),
        (
            "PutRecord",
            r#"{"Data":"abc"}"#,
            "'abc' can not be converted to a Blob: Base64 encoded length is expected a multiple \
             of 4 bytes but found: 3",
        ),
        (
            "PutRecord",
            r#"{"Data":"ab!d"}"#,
            "'ab!d' can not be converted to a Blob: Invalid Base64 character: '!'",
        ),
        (
            "PutRecord",
            r#"{"Data":"AB=C"}"#,
            "'AB=C' can not be converted to a Blob: Invalid Base64 character: '='",
        ),
        (
            "PutRecord",
            r#"{"Data":"AB=="}"#,
            "'AB==' can not be converted to a Blob: Invalid last non-pad Base64 character \
             dectected",
        ),
        (
            "PutRecord",
            r#"{"Data":"ééé"}"#,
            "'ééé' can not be converted to a Blob: Base64 encoded length is expected a multiple \
             of 4 bytes but found: 3",
        ),
        (
            "PutRecord",
            r#"{"DryRun":"maybe"}"#,
            "'MAYBE' can not be converted to an Boolean",
        ),
        (
            "PutRecord",
            r#"{"DryRun":1}"#,
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an Boolean",
        ),
        (
            "GetShardIterator",
            r#"{"Timestamp":true}"#,
            "class java.lang.Boolean can not be converted to milliseconds since epoch",
        ),
        // Timestamps are read from numbers only: any text, numeric or ISO 8601, is refused.
        (
            "GetShardIterator",
            r#"{"Timestamp":"soon"}"#,
            "class java.lang.String can not be converted to milliseconds since epoch",
        ),
        (
            "GetShardIterator",
            r#"{"Timestamp":"1506440188.749"}"#,
            "class java.lang.String can not be converted to milliseconds since epoch",
        ),
        (
            "ListStreamConsumers",
            r#"{"StreamCreationTimestamp":"2017-09-26T15:36:28Z"}"#,
            "class java.lang.String can not be converted to milliseconds since epoch",
        ),
        (
            "CreateStream",
            r#"{"StreamName":-2147483648}"#,
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted \
             to an String",
        ),
        (
            "CreateStream",
            r#"{"StreamName":34.56}"#,
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted \
             to an String",
        ),
        // The first wrong type in document order wins, before any validation.
        (
            "PutRecords",
            r#"{"StreamName":"","Records":[{"Data":"AA=="},{"Data":1}]}"#,
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to a Blob",
        ),
        // A top-level document that is not an object.
        (
            "ListStreams",
            "[]",
            "Start of list found where not expected",
        ),
    ];
    for (op, body, message) in cases {
        check(op, json(*body), Expect::WrongType(message));
    }
}

#[test]
fn malformed_bodies() {
    let cases: &[&[u8]] = &[
        b"{",
        b"}",
        b"{\"a\":}",
        b"{\"StreamName\":\"s\",}",
        b"{\"Records\":[{\"Data\":\"AA==\"},]}",
        b"{\"a\":01}",
        b"{\"a\":-}",
        b"{\"a\":1.}",
        b"{\"a\":nul}",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"unterminated}",
        b"{\"a\":\"tab\there\"}",
        b"{} x",
        b"{}{}",
        b"{a:1}",
        b"{\"StreamName\":\"\xff\"}",
        b"nope",
        // Empty, blank, or a scalar: never read as `{}`.
        b"",
        b"  ",
        b"\"x\"",
        b"23",
        b"null",
        b"true",
        // A malformation anywhere wins over an earlier wrong type.
        b"{\"StreamName\":1,",
        b"{\"ShardCount\":\"x\"} x",
    ];
    for body in cases {
        check(
            "CreateStream",
            Body {
                format: Format::Json,
                bytes: body.to_vec(),
            },
            Expect::Malformed,
        );
    }
    let deep = format!(
        r#"{{"Unknown":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    check("ListStreams", json(deep), Expect::Malformed);
    assert_eq!(
        decode_request("NoSuchOperation", Format::Json, b"{}"),
        Err(AwsError::unknown_operation())
    );
}

/// CBOR text string header for `text` (short texts only).
fn ctext(text: &str) -> Vec<u8> {
    assert!(text.len() < 24);
    let mut out = vec![0x60 + text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn cbor_requests() {
    // A definite map, as any encoder writes it.
    check(
        "PutRecord",
        cbor(concat(&[
            &[0xa3],
            &ctext("StreamName"),
            &ctext("s"),
            &ctext("Data"),
            &[0x42, 0x01, 0x02],
            &ctext("PartitionKey"),
            &ctext("k"),
        ])),
        Expect::Decoded(map(vec![
            ("StreamName", s("s")),
            ("Data", Value::Blob(vec![1, 2])),
            ("PartitionKey", s("k")),
        ])),
    );
    // Indefinite everything, as the Java SDK writes maps: map, array, text and byte strings.
    check(
        "PutRecords",
        cbor(concat(&[
            &[0xbf],
            &[0x7f],
            &ctext("Stream"),
            &ctext("Name"),
            &[0xff],
            &[0x7f, 0x61, b's', 0xff],
            &ctext("Records"),
            &[0x9f, 0xbf],
            &ctext("Data"),
            &[0x5f, 0x41, 0x01, 0x42, 0x02, 0x03, 0xff],
            &ctext("PartitionKey"),
            &ctext("k"),
            &ctext("Ignored"),
            &[0xbf, 0x61, b'x', 0x9f, 0x01, 0xff, 0xff],
            &[0xff, 0xff],
            &[0xff],
        ])),
        Expect::Decoded(map(vec![
            (
                "Records",
                Value::List(vec![map(vec![
                    ("Data", Value::Blob(vec![1, 2, 3])),
                    ("PartitionKey", s("k")),
                ])]),
            ),
            ("StreamName", s("s")),
        ])),
    );
    // Tag 1 around integer milliseconds.
    let ms = 1_506_440_188_749u64.to_be_bytes();
    let timestamp_request = |timestamp: &[u8]| {
        cbor(concat(&[
            &[0xbf],
            &ctext("ShardId"),
            &ctext("0"),
            &ctext("ShardIteratorType"),
            &ctext("AT_TIMESTAMP"),
            &ctext("Timestamp"),
            timestamp,
            &[0xff],
        ]))
    };
    let expected = map(vec![
        ("ShardId", s("0")),
        ("ShardIteratorType", s("AT_TIMESTAMP")),
        ("Timestamp", Value::Timestamp(1_506_440_188.749)),
    ]);
    check(
        "GetShardIterator",
        timestamp_request(&concat(&[&[0xc1, 0x1b], &ms])),
        Expect::Decoded(expected.clone()),
    );
    // A float is RFC 8949 seconds.
    let secs = 1_506_440_188.749f64.to_be_bytes();
    check(
        "GetShardIterator",
        timestamp_request(&concat(&[&[0xc1, 0xfb], &secs])),
        Expect::Decoded(expected),
    );
    // Integers of every width; null members are absent.
    check(
        "GetRecords",
        cbor(concat(&[
            &[0xa2],
            &ctext("ShardIterator"),
            &ctext("it"),
            &ctext("Limit"),
            &[0x19, 0x03, 0xe8],
        ])),
        Expect::Decoded(map(vec![
            ("ShardIterator", s("it")),
            ("Limit", Value::Int(1000)),
        ])),
    );
    check(
        "GetRecords",
        cbor(concat(&[
            &[0xa2],
            &ctext("ShardIterator"),
            &ctext("it"),
            &ctext("Limit"),
            &[0xf6],
        ])),
        Expect::Decoded(map(vec![("ShardIterator", s("it"))])),
    );
    check(
        "GetRecords",
        cbor(concat(&[
            &[0xa2],
            &ctext("ShardIterator"),
            &ctext("it"),
            &ctext("Limit"),
            &[0x20],
        ])),
        Expect::Invalid(&detected(&[violation(
            "'-1'",
            "limit",
            "Member must have value greater than or equal to 1",
        )])),
    );
    check("ListStreams", cbor(vec![]), Expect::Malformed);
    check("ListStreams", cbor(vec![0x61, b'x']), Expect::Malformed);
    check("ListStreams", cbor(vec![0xf6]), Expect::Malformed);
    check(
        "ListStreams",
        cbor(vec![0xa0]),
        Expect::Decoded(map(vec![])),
    );
    check(
        "ListStreams",
        cbor(vec![0xbf, 0xff]),
        Expect::Decoded(map(vec![])),
    );
    // Wrong types.
    check(
        "CreateStream",
        cbor(concat(&[&[0xa1], &ctext("StreamName"), &[0x01]])),
        Expect::WrongType(
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        ),
    );
    check(
        "CreateStream",
        cbor(concat(&[&[0xa1], &ctext("StreamName"), &[0x41, 0x61]])),
        Expect::WrongType("class [B can not be converted to an String"),
    );
    check(
        "PutRecords",
        cbor(concat(&[&[0xa1], &ctext("Records"), &[0xa0]])),
        Expect::WrongType("Start of structure or map found where not expected."),
    );
    // Not well-formed: truncated, trailing bytes, non-text key, unterminated indefinite map,
    // invalid UTF-8, a lone break.
    let malformed: &[&[u8]] = &[
        &[0xa1, 0x6a, b'S'],
        &[0xa0, 0x00],
        &[0xa1, 0x01, 0x01],
        &[0xbf, 0x61, b'a', 0x01],
        &[0xa1, 0x61, 0xff, 0x01],
        &[0xff],
        &[0x1c],
    ];
    for body in malformed {
        check("CreateStream", cbor(*body), Expect::Malformed);
    }
    // Validation runs the same for CBOR.
    let long = "a".repeat(129);
    let mut body = concat(&[&[0xa1], &ctext("StreamName"), &[0x78, 129]]);
    body.extend_from_slice(long.as_bytes());
    check(
        "CreateStream",
        cbor(body),
        Expect::Invalid(&detected(&[violation(
            &format!("'{long}'"),
            "streamName",
            "Member must have length less than or equal to 128",
        )])),
    );
}

/// A response with every kind of value, as `encode_response` writes it.
fn sample_response() -> Value {
    Value::map()
        .with("StreamName", "s\"q\\\n")
        .with("Data", vec![0u8, 1, 2, 255])
        .with(
            "ApproximateArrivalTimestamp",
            Value::timestamp_ms(1_506_440_188_749),
        )
        .with("Whole", Value::timestamp_ms(1_506_440_188_000))
        .with("Count", 3)
        .with("Open", true)
        .with("Missing", Value::Null)
        .with(
            "List",
            vec![Value::from("a"), Value::Null, Value::map().build()],
        )
        .build()
}

#[test]
fn json_responses() {
    let body = encode_response(Format::Json, &sample_response());
    assert_eq!(
        String::from_utf8(body.clone()).unwrap(),
        concat!(
            r#"{"StreamName":"s\"q\\\n","Data":"AAEC/w==","ApproximateArrivalTimestamp":"#,
            r#"1506440188.749,"Whole":1506440188,"Count":3,"Open":true,"List":["a",null,{}]}"#,
        )
    );
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        parsed["ApproximateArrivalTimestamp"].as_f64(),
        Some(1_506_440_188.749)
    );
    assert_eq!(
        encode_error(
            Format::Json,
            &AwsError::new("ResourceNotFoundException", "Stream s not found.")
        ),
        br#"{"__type":"ResourceNotFoundException","message":"Stream s not found."}"#
    );
    assert_eq!(
        encode_error(Format::Json, &AwsError::serialization_type("Expected null")),
        br#"{"__type":"SerializationException","Message":"Expected null"}"#
    );
    assert_eq!(
        encode_error(Format::Json, &AwsError::unknown_operation()),
        br#"{"__type":"UnknownOperationException"}"#
    );
}

#[test]
fn cbor_responses() {
    let value = Value::map()
        .with("T", Value::timestamp_ms(1_506_440_188_749))
        .with("D", vec![1u8, 2])
        .with("N", Value::Null)
        .with("L", vec![Value::from(-1), Value::from(false)])
        .build();
    let mut expected = vec![0xa3, 0x61, b'T', 0xc1, 0x1b];
    expected.extend_from_slice(&1_506_440_188_749u64.to_be_bytes());
    expected.extend_from_slice(&[0x61, b'D', 0x42, 1, 2, 0x61, b'L', 0x82, 0x20, 0xf4]);
    assert_eq!(encode_response(Format::Cbor, &value), expected);
    let mut expected = vec![0xa2];
    expected.extend(ctext("__type"));
    expected.extend(ctext("InternalFailure"));
    expected.extend(ctext("message"));
    expected.extend(ctext("boom"));
    let error = AwsError::internal("boom");
    assert_eq!(error.status, 500);
    assert_eq!(encode_error(Format::Cbor, &error), expected);
}

#[test]
fn envelopes_and_formats() {
    let (status, body) = crate::envelope_access_denied();
    assert_eq!(status, 403);
    assert_eq!(
        body,
        b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be \
          authorized</Message>\n</AccessDeniedException>\n"
    );
    let cases = [
        ("application/x-amz-json-1.1", Some(Format::Json)),
        ("application/json", None),
        (
            "Application/X-Amz-Json-1.1; charset=utf-8",
            Some(Format::Json),
        ),
        ("application/x-amz-cbor-1.1", Some(Format::Cbor)),
        ("application/x-amz-json-1.0", None),
        ("text/plain", None),
        ("", None),
    ];
    for (content_type, format) in cases {
        assert_eq!(
            Format::from_content_type(content_type),
            format,
            "{content_type}"
        );
    }
    assert_eq!(Format::Json.content_type(), "application/x-amz-json-1.1");
    assert_eq!(Format::Cbor.content_type(), "application/x-amz-cbor-1.1");
    assert_eq!(crate::operation_names().count(), 57);
    assert!(crate::operation_names().all(crate::is_operation));
    assert!(crate::is_operation("SubscribeToShard"));
    assert!(!crate::is_operation("subscribeToShard"));
}

#[test]
fn media_types_and_the_empty_body_format() {
    use crate::Media;
    let cases = [
        (None, Media::Other, Format::Cbor),
        (
            Some("application/x-amz-json-1.1"),
            Media::Kinesis(Format::Json),
            Format::Json,
        ),
        (
            Some(" application/x-amz-json-1.1 ; charset=utf-8"),
            Media::Kinesis(Format::Json),
            Format::Json,
        ),
        (
            Some("application/x-amz-cbor-1.1"),
            Media::Kinesis(Format::Cbor),
            Format::Cbor,
        ),
        (Some("application/json"), Media::Coral, Format::Cbor),
        (
            Some("application/json; charset=utf-8"),
            Media::Coral,
            Format::Cbor,
        ),
        (
            Some("application/x-amz-json-1.0"),
            Media::Other,
            Format::Cbor,
        ),
        (Some("text/plain"), Media::Other, Format::Cbor),
        (Some(""), Media::Other, Format::Cbor),
    ];
    for (content_type, media, empty) in cases {
        assert_eq!(Media::of(content_type), media, "{content_type:?}");
        assert_eq!(
            Format::of_empty_body(content_type),
            empty,
            "{content_type:?}"
        );
    }
}

#[test]
fn documents_are_objects_or_arrays() {
    let good: &[(Format, &[u8])] = &[
        (Format::Json, b"{}"),
        (Format::Json, b" [1, {\"a\": null}] "),
        (Format::Cbor, &[0xa0]),
        (Format::Cbor, &[0xbf, 0xff]),
        (Format::Cbor, &[0x80]),
    ];
    for (format, body) in good {
        assert_eq!(crate::check_document(*format, body), Ok(()), "{body:?}");
    }
    let bad: &[(Format, &[u8])] = &[
        (Format::Json, b""),
        (Format::Json, b"hello"),
        (Format::Json, b"23"),
        (Format::Json, b"\"x\""),
        (Format::Json, b"null"),
        (Format::Json, b"{} {}"),
        (Format::Cbor, b""),
        (Format::Cbor, &[0x17]),
        (Format::Cbor, &[0x61, b'x']),
        (Format::Cbor, &[0xbf]),
        (Format::Cbor, b"hello"),
    ];
    for (format, body) in bad {
        assert_eq!(
            crate::check_document(*format, body),
            Err(AwsError::serialization()),
            "{body:?}"
        );
    }
}

#[test]
fn envelope_bodies() {
    let mut unknown = vec![0xbf];
    unknown.extend(ctext("__type"));
    unknown.extend([0x78, 0x19]);
    unknown.extend(b"UnknownOperationException");
    unknown.push(0xff);
    assert_eq!(
        encode_error(Format::Cbor, &AwsError::unknown_operation()),
        unknown
    );
    let internal = AwsError {
        message: None,
        ..AwsError::internal("")
    };
    assert_eq!(
        encode_error(Format::Json, &internal),
        br#"{"__type":"InternalFailure"}"#
    );
    assert_eq!(
        crate::coral_envelope("SerializationException"),
        br#"{"Output":{"__type":"com.amazon.coral.service#SerializationException"},"Version":"1.0"}"#
    );
    assert_eq!(
        crate::envelope_unknown_operation(),
        (404, &b"<UnknownOperationException/>\n"[..])
    );
}

#[test]
fn operations_without_output() {
    for op in [
        "AddTagsToStream",
        "CreateStream",
        "DeleteStream",
        "MergeShards",
        "SplitShard",
        "IncreaseStreamRetentionPeriod",
        "UpdateStreamMode",
    ] {
        assert!(!crate::has_output(op), "{op}");
    }
    for op in [
        "ListStreams",
        "PutRecord",
        "EnableEnhancedMonitoring",
        "GetRecords",
    ] {
        assert!(crate::has_output(op), "{op}");
    }
    assert!(!crate::has_output("Frobnicate"));
}

/// Enum sets print in AWS's order: ascending `String.hashCode() & 31`, ties later-in-model
/// first.
#[test]
fn enum_sets_print_in_aws_order() {
    check(
        "UpdateStreamMode",
        json(
            r#"{"StreamARN":"arn:aws:kinesis:r:123456789012:stream/s","StreamModeDetails":{"StreamMode":"x"}}"#,
        ),
        Expect::Invalid(&detected(&[violation(
            "'x'",
            "streamModeDetails.streamMode",
            "Member must satisfy enum value set: [ON_DEMAND, PROVISIONED]",
        )])),
    );
    check(
        "StartStreamEncryption",
        json(r#"{"StreamName":"s","EncryptionType":"x","KeyId":"k"}"#),
        Expect::Invalid(&detected(&[violation(
            "'x'",
            "encryptionType",
            "Member must satisfy enum value set: [KMS, NONE]",
        )])),
    );
}

/// A structure in a list renders as `Class@hash` with AWS's hash: the class name's hash + 62,
/// then `31·h + member` over the members in model order (Data, ExplicitHashKey, PartitionKey).
#[test]
fn structures_in_lists_render_with_aws_hash() {
    let records = vec![r#"{"PartitionKey":"","Data":""}"#; 501].join(",");
    let message = decode_request(
        "PutRecords",
        Format::Json,
        format!(r#"{{"StreamName":"s","Records":[{records}]}}"#).as_bytes(),
    )
    .unwrap_err()
    .message
    .unwrap();
    assert!(
        message.starts_with(
            "10 validation errors detected: Value '[com.amazonaws.kinesis.v20131202.\
             PutRecordsRequestEntry@c965e310, com.amazonaws.kinesis.v20131202.\
             PutRecordsRequestEntry@c965e310, "
        ),
        "{message}"
    );
    // Absent Data counts 0 like "", an empty blob 1; a one-byte blob 31 + b.
    let hash = |entry: &str| {
        let records = vec![entry; 501].join(",");
        let message = decode_request(
            "PutRecords",
            Format::Json,
            format!(r#"{{"StreamName":"s","Records":[{records}]}}"#).as_bytes(),
        )
        .unwrap_err()
        .message
        .unwrap();
        let at = message.find('@').unwrap() + 1;
        let end = message[at..].find(',').unwrap() + at;
        u32::from_str_radix(&message[at..end], 16).unwrap()
    };
    let class = "com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry"
        .encode_utf16()
        .fold(0u32, |h, u| h.wrapping_mul(31).wrapping_add(u32::from(u)));
    let fold = |members: [u32; 3]| {
        members.iter().fold(class.wrapping_add(62), |h, m| {
            h.wrapping_mul(31).wrapping_add(*m)
        })
    };
    assert_eq!(hash(r#"{"PartitionKey":"k"}"#), fold([0, 0, 107]));
    assert_eq!(
        hash(r#"{"PartitionKey":"k","Data":"AQ=="}"#),
        fold([32, 0, 107])
    );
    assert_eq!(
        hash(r#"{"PartitionKey":"k","Data":"","ExplicitHashKey":"1"}"#),
        fold([1, 49, 107])
    );
}

/// Not timed: a full-size PutRecords decodes and validates in both formats.
#[test]
fn put_records_of_500_records_decodes() {
    let record = Value::map()
        .with("Data", vec![7u8; 100])
        .with("PartitionKey", "partition-key-0001")
        .build();
    let request = Value::map()
        .with("Records", vec![record; 500])
        .with("StreamName", "stream")
        .build();
    for format in [Format::Json, Format::Cbor] {
        let body = encode_response(format, &request);
        let decoded = decode_request("PutRecords", format, &body).unwrap();
        assert_eq!(decoded, request, "{format:?}");
    }
}

/// The generated tables match the service model: reruns the generator in check mode.
#[test]
fn model_gen_is_current() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = crate_dir.join("../../../shared/reference/kinesis-2013-12-02/service-2.json");
    if !model.exists() {
        println!(
            "note: {} not found; skipping the model_gen.rs freshness check",
            model.display()
        );
        return;
    }
    let status = std::process::Command::new("python3")
        .arg(crate_dir.join("tools/gen_model.py"))
        .arg("--check")
        .arg("--model")
        .arg(&model)
        .status();
    match status {
        Ok(status) => assert!(
            status.success(),
            "model_gen.rs is stale: run tools/gen_model.py"
        ),
        Err(error) => println!("note: python3 unavailable ({error}); skipping the freshness check"),
    }
}

mod properties {
    use proptest::prelude::*;

    use crate::model::{self, Kind};
    use crate::{Format, Value, cbor, decode_request, json, model_gen::OPERATIONS};

    /// A deterministic pseudo-random source (SplitMix64) so one proptest seed builds one value.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            const SAMPLES: &[char] = &[
                'a', 'Z', '0', '"', '\\', '\n', '\u{1}', 'é', '€', '😀', ' ', '/',
            ];
            (0..self.below(12))
                .map(|_| SAMPLES[self.below(SAMPLES.len() as u64) as usize])
                .collect()
        }
    }

    /// A random value of the given shape (types right; constraints not necessarily met).
    fn value_of(rng: &mut Rng, shape_id: u16, depth: u32) -> Value {
        let shape = model::shape(shape_id);
        match shape.kind {
            Kind::Structure => {
                let mut members = Vec::new();
                for member in shape.members {
                    if depth < 6 && rng.below(2) == 0 {
                        members.push((
                            member.name.to_owned(),
                            value_of(rng, member.shape, depth + 1),
                        ));
                    }
                }
                Value::Map(members)
            }
            Kind::List => {
                let n = if depth < 6 { rng.below(4) } else { 0 };
                Value::List(
                    (0..n)
                        .map(|_| value_of(rng, shape.element, depth + 1))
                        .collect(),
                )
            }
            Kind::Map => {
                let n = if depth < 6 { rng.below(4) } else { 0 };
                Value::Map(
                    (0..n)
                        .map(|i| {
                            (
                                format!("{i}{}", rng.string()),
                                value_of(rng, shape.element, depth + 1),
                            )
                        })
                        .collect(),
                )
            }
            Kind::String => Value::Str(rng.string()),
            Kind::Integer => Value::Int(i64::from(rng.next() as i32)),
            Kind::Long => Value::Int(rng.next() as i64),
            Kind::Double => Value::Float(f64::from(rng.next() as i32) / 7.0),
            Kind::Boolean => Value::Bool(rng.below(2) == 0),
            Kind::Timestamp => Value::timestamp_ms((rng.next() >> 22) as i64 - (1 << 40)),
            Kind::Blob => Value::Blob((0..rng.below(40)).map(|_| rng.next() as u8).collect()),
        }
    }

    proptest! {
        #[test]
        fn json_round_trips(seed in any::<u64>(), op in 0..OPERATIONS.len()) {
            let input = OPERATIONS[op].input;
            let value = value_of(&mut Rng(seed), input, 0);
            let body = json::encode(&value);
            prop_assert_eq!(json::decode(input, &body), Ok(value));
        }

        #[test]
        fn cbor_round_trips(seed in any::<u64>(), op in 0..OPERATIONS.len()) {
            let input = OPERATIONS[op].input;
            let value = value_of(&mut Rng(seed), input, 0);
            let body = cbor::encode(&value);
            prop_assert_eq!(cbor::decode(input, &body), Ok(value));
        }

        #[test]
        fn random_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            op in 0..OPERATIONS.len(),
        ) {
            let name = OPERATIONS[op].name;
            let _ = decode_request(name, Format::Json, &body);
            let _ = decode_request(name, Format::Cbor, &body);
        }

        /// Corrupting a valid body anywhere never panics either (random bytes rarely get deep).
        #[test]
        fn corrupted_bodies_never_panic(
            seed in any::<u64>(),
            op in 0..OPERATIONS.len(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let input = OPERATIONS[op].input;
            let value = value_of(&mut Rng(seed), input, 0);
            let bodies =
                [(Format::Json, json::encode(&value)), (Format::Cbor, cbor::encode(&value))];
            for (format, mut body) in bodies {
                for (at, byte) in &edits {
                    if !body.is_empty() {
                        let at = at % body.len();
                        body[at] = *byte;
                    }
                }
                let _ = decode_request(OPERATIONS[op].name, format, &body);
                let cut = body.len() / 2;
                let _ = decode_request(OPERATIONS[op].name, format, &body[..cut]);
            }
        }
    }
}
