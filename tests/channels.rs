//! Channels end to end (issue 15): the control plane's answers and AWS's rules, delivery into
//! local bucket folders in every record format and compression, and each record once across
//! a kill -9. `aws-sdk-kinesis` has no channel operations yet, so channel calls are raw JSON
//! requests (`util::call`); streams and puts go through the SDK.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use serde_json::{Value, json};

use crate::queues::{on_demand_stream, op};
use crate::util::{Process, aws_error, call, client};

const OWNER: &str = "000000000000";
const ROLE: &str = "arn:aws:iam::000000000000:role/kinesis-delivery";

fn s3_channel(name: &str, stream_arn: &str, format: &str, s3: Value) -> Value {
    json!({
        "ChannelName": name,
        "ServiceExecutionRoleARN": ROLE,
        "StreamConfigurationList": [
            {"StreamARN": stream_arn, "RecordConfiguration": {"RecordFormatType": format}}
        ],
        "S3DestinationConfiguration": s3,
    })
}

fn storage(bucket: &str, compression: &str) -> Value {
    json!({
        "StorageConfiguration": {
            "BucketARN": format!("arn:aws:s3:::{bucket}"),
            "ExpectedBucketOwner": OWNER,
            "CompressionType": compression,
        }
    })
}

/// The error a call answers: (status, type, message).
async fn refused(addr: SocketAddr, operation: &str, body: Value) -> (u16, String, String) {
    let response = call(addr, operation, &body.to_string()).await;
    aws_error(&response)
}

/// Waits until the channel leaves CREATING/UPDATING; returns its description.
async fn settled(addr: SocketAddr, arn: &str) -> Value {
    for _ in 0..500 {
        let described = op(addr, "DescribeChannel", json!({"ChannelARN": arn})).await;
        let status = described["ChannelDescription"]["ChannelStatus"].clone();
        if status != "CREATING" && status != "UPDATING" {
            return described["ChannelDescription"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("channel {arn} did not settle");
}

async fn create(addr: SocketAddr, body: Value) -> String {
    let created = op(addr, "CreateChannel", body).await;
    assert_eq!(created["ChannelDescription"]["ChannelStatus"], "CREATING");
    created["ChannelDescription"]["ChannelARN"]
        .as_str()
        .expect("arn")
        .to_string()
}

fn server_args(data: &Path, buckets: &Path) -> Vec<String> {
    [
        "--data-dir",
        data.to_str().expect("path"),
        "--bucket-dir",
        buckets.to_str().expect("path"),
        // 300 s of freshness become 1 s.
        "--channel-time-scale",
        "300",
        "--create-stream-ms",
        "0",
        "--delete-stream-ms",
        "0",
        "--update-stream-ms",
        "0",
        // Channel operations are limited to 5 a second per account, as AWS.
        "--limits",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn(args: &[String]) -> Process {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::spawn(&args)
}

/// Every file under `dir` (relative path → bytes), temporary files excluded.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with('.') {
                let relative = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .to_string();
                out.insert(relative, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

fn decompress(key: &str, body: &[u8]) -> Vec<u8> {
    if key.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("gzip");
        out
    } else if key.ends_with(".zst") {
        zstd::stream::decode_all(body).expect("zstd")
    } else {
        body.to_vec()
    }
}

/// The records of a BYTE_ARRAY object: a 4-byte big-endian length, then the bytes.
fn unframe(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let length = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        out.push(body[4..4 + length].to_vec());
        body = &body[4 + length..];
    }
    assert!(body.is_empty(), "a torn BYTE_ARRAY object");
    out
}

/// Waits (a minute at most) until the JSON records `{"i": n}` in the objects under `bucket`
/// number `records`, then checks each of 0..records is there exactly once; returns the count.
async fn every_record_once(bucket: &Path, records: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut numbers: Vec<u64> = Vec::new();
        for (key, body) in files(bucket) {
            for line in String::from_utf8_lossy(&decompress(&key, &body)).lines() {
                let value: Value = serde_json::from_str(line).expect("json");
                numbers.push(value["i"].as_u64().expect("i"));
            }
        }
        numbers.sort_unstable();
        if numbers.len() >= records {
            let mut unique = numbers.clone();
            unique.dedup();
            assert_eq!(unique.len(), numbers.len(), "a record was delivered twice");
            assert_eq!(numbers, (0..records as u64).collect::<Vec<_>>());
            return numbers.len();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {records} delivered",
            numbers.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn put_all(c: &Client, stream: &str, records: &[Vec<u8>]) {
    for chunk in records.chunks(500) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, data)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{i}"))
                    .data(Blob::new(data.clone()))
                    .build()
                    .expect("entry")
            })
            .collect();
        crate::util::put_all(c, stream, entries).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_answers_like_aws() {
    let dir = tempfile::tempdir().expect("dir");
    let buckets = dir.path().join("buckets");
    std::fs::create_dir_all(buckets.join("lake")).expect("bucket");
    let server = spawn(&server_args(&dir.path().join("data"), &buckets));
    let addr = server.addr;
    let c = client(addr);
    let stream = on_demand_stream(&c, "orders").await;

    // AWS's rules, each refused with its exception.
    let cases = [
        (
            json!({"ChannelName": "x", "ServiceExecutionRoleARN": ROLE,
                   "StreamConfigurationList": [{"StreamARN": stream,
                        "RecordConfiguration": {"RecordFormatType": "JSON"}}]}),
            "InvalidArgumentException",
            "Specify either S3DestinationConfiguration or S3TablesDestinationConfiguration, \
             but not both.",
        ),
        (
            s3_channel("x", &stream, "GSR_JSON", storage("lake", "NONE")),
            "InvalidArgumentException",
            "RecordFormatType GSR_JSON is supported only for streaming table \
             (S3TablesDestinationConfiguration) destinations.",
        ),
        (
            {
                let mut body = s3_channel("x", &stream, "JSON", storage("lake", "NONE"));
                body["S3DestinationConfiguration"]["DataFreshnessInSeconds"] = json!(299);
                body
            },
            "InvalidArgumentException",
            "DataFreshnessInSeconds 299 is out of range: it must be between 300 and 900 \
             seconds.",
        ),
        (
            {
                let mut body = s3_channel("x", &stream, "JSON", storage("lake", "GZIP"));
                body["S3DestinationConfiguration"]["StorageConfiguration"]["OutputKeyTemplate"] =
                    json!("data/!{yyyy}/!{shard-id}");
                body
            },
            "InvalidArgumentException",
            "Invalid OutputKeyTemplate: !{shard-id} is not a known variable.",
        ),
        (
            {
                let mut body = s3_channel("x", &stream, "JSON", storage("lake", "GZIP"));
                body["S3DestinationConfiguration"]["StorageConfiguration"]["OutputKeyTemplate"] =
                    json!("data/!{yyyy}");
                body
            },
            "InvalidArgumentException",
            "Invalid OutputKeyTemplate: with CompressionType GZIP the template must end with \
             !{extension}.",
        ),
        (
            s3_channel(
                "x",
                "arn:aws:kinesis:us-east-1:000000000000:stream/missing",
                "JSON",
                storage("lake", "NONE"),
            ),
            "ResourceNotFoundException",
            "Stream missing under account 000000000000 not found.",
        ),
    ];
    for (body, kind, message) in cases {
        let (status, got_kind, got_message) = refused(addr, "CreateChannel", body).await;
        assert_eq!((status, got_kind.as_str()), (400, kind), "{got_message}");
        assert_eq!(got_message, message);
    }
    // A provisioned stream cannot have channels.
    crate::util::create_stream(&c, "provisioned").await;
    let provisioned = crate::util::stream_arn(&c, "provisioned").await;
    let (_, kind, message) = refused(
        addr,
        "CreateChannel",
        s3_channel("x", &provisioned, "JSON", storage("lake", "NONE")),
    )
    .await;
    assert_eq!(kind, "ValidationException");
    assert!(message.contains("ON_DEMAND capacity mode"), "{message}");

    // A channel, described with AWS's defaults.
    let mut body = s3_channel("to-lake", &stream, "JSON", storage("lake", "ZSTD"));
    body["Tags"] = json!({"team": "data"});
    let arn = create(addr, body).await;
    assert!(
        arn.starts_with("arn:aws:kinesis:us-east-1:000000000000:channel/"),
        "{arn}"
    );
    let described = settled(addr, &arn).await;
    assert_eq!(described["ChannelStatus"], "ACTIVE");
    let id = described["ChannelId"].as_str().expect("id");
    assert_eq!(
        arn,
        format!("arn:aws:kinesis:us-east-1:000000000000:channel/{id}")
    );
    let s3 = &described["S3DestinationConfiguration"];
    assert_eq!(s3["DataFreshnessInSeconds"], 300);
    assert_eq!(
        s3["StorageConfiguration"]["OutputKeyTemplate"],
        "kinesis-channel/!{channel-name}/!{channel-id}/!{yyyy}/!{MM}/!{dd}/!{HH}/\
         !{channel-name}-!{channel-id}-!{yyyy}-!{MM}-!{dd}-!{HH}-!{mm}!{extension}"
    );
    assert_eq!(s3["StorageConfiguration"]["StorageClass"], "STANDARD");
    assert_eq!(
        s3["DeadLetterQueueS3Configuration"]["ErrorOutputPrefix"],
        format!("kinesis-channel/errors/to-lake/{id}/")
    );
    assert_eq!(
        described["LoggingConfiguration"],
        json!({"CloudWatchLogs": {"Enabled": false}})
    );
    assert_eq!(
        described["StreamConfigurationList"][0]["StreamARN"],
        json!(stream)
    );

    // The same name again; a second channel of the same kind on the stream.
    let (_, kind, message) = refused(
        addr,
        "CreateChannel",
        s3_channel("to-lake", &stream, "JSON", storage("lake", "NONE")),
    )
    .await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        (
            "ResourceInUseException",
            "Channel to-lake under account 000000000000 already exists."
        )
    );
    let (_, kind, _) = refused(
        addr,
        "CreateChannel",
        s3_channel("other", &stream, "JSON", storage("lake", "NONE")),
    )
    .await;
    assert_eq!(kind, "LimitExceededException");

    // Tags on the channel ARN.
    op(
        addr,
        "TagResource",
        json!({"ResourceARN": arn, "Tags": {"env": "test"}}),
    )
    .await;
    let tags = op(addr, "ListTagsForResource", json!({"ResourceARN": arn})).await;
    assert_eq!(
        tags["Tags"],
        json!([{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "data"}])
    );
    op(
        addr,
        "UntagResource",
        json!({"ResourceARN": arn, "TagKeys": ["team"]}),
    )
    .await;
    let tags = op(addr, "ListTagsForResource", json!({"ResourceARN": arn})).await;
    assert_eq!(tags["Tags"], json!([{"Key": "env", "Value": "test"}]));

    // A channel has no resource policy.
    let (_, kind, message) = refused(addr, "GetResourcePolicy", json!({"ResourceARN": arn})).await;
    assert_eq!(
        (kind.as_str(), message.as_str()),
        (
            "InvalidArgumentException",
            format!("Invalid ResourceARN {arn}.").as_str()
        )
    );

    // UpdateChannel: only the freshness and the logging, through UPDATING.
    let (_, kind, _) = refused(
        addr,
        "UpdateChannel",
        json!({"ChannelARN": arn, "S3TablesDestinationConfiguration": {"DataFreshnessInSeconds": 600}}),
    )
    .await;
    assert_eq!(kind, "InvalidArgumentException");
    let updated = op(
        addr,
        "UpdateChannel",
        json!({"ChannelARN": arn, "S3DestinationConfiguration": {"DataFreshnessInSeconds": 600},
               "LoggingConfiguration": {"CloudWatchLogs": {"Enabled": true}}}),
    )
    .await;
    assert_eq!(updated["ChannelDescription"]["ChannelStatus"], "UPDATING");
    let described = settled(addr, &arn).await;
    assert_eq!(described["ChannelStatus"], "ACTIVE");
    assert_eq!(
        described["S3DestinationConfiguration"]["DataFreshnessInSeconds"],
        600
    );
    assert_eq!(
        described["LoggingConfiguration"]["CloudWatchLogs"],
        json!({"Enabled": true, "LogGroupName": format!("/aws/kinesis/to-lake/{id}"),
               "LogStreamName": "DestinationDelivery"})
    );

    // A channel whose bucket does not exist FAILS with the reason.
    let second = on_demand_stream(&c, "audit").await;
    let failed = create(
        addr,
        s3_channel("to-nowhere", &second, "STRING", storage("nowhere", "NONE")),
    )
    .await;
    let described = settled(addr, &failed).await;
    assert_eq!(described["ChannelStatus"], "FAILED");
    let reason = described["ChannelStatusReason"].as_str().expect("reason");
    assert!(
        reason.starts_with("The specified bucket does not exist: nowhere"),
        "{reason}"
    );

    // ListChannels: by name, filtered by stream, a page at a time.
    let listed = op(addr, "ListChannels", json!({})).await;
    let names: Vec<&str> = listed["ChannelSummaries"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["ChannelName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["to-lake", "to-nowhere"]);
    assert_eq!(
        listed["ChannelSummaries"][0]["ChannelDestinationType"],
        "S3"
    );
    let page = op(addr, "ListChannels", json!({"MaxResults": 1})).await;
    assert_eq!(page["ChannelSummaries"].as_array().map(Vec::len), Some(1));
    let token = page["NextToken"].as_str().expect("token");
    let next = op(
        addr,
        "ListChannels",
        json!({"MaxResults": 1, "NextToken": token}),
    )
    .await;
    assert_eq!(next["ChannelSummaries"][0]["ChannelName"], "to-nowhere");
    assert!(next.get("NextToken").is_none());
    let filtered = op(
        addr,
        "ListChannels",
        json!({"StreamFilter": [{"StreamARN": second}]}),
    )
    .await;
    assert_eq!(filtered["ChannelSummaries"][0]["ChannelName"], "to-nowhere");
    assert_eq!(
        filtered["ChannelSummaries"].as_array().map(Vec::len),
        Some(1)
    );

    // A stream with channels is not deleted; once they are gone it is.
    let (_, kind, message) = refused(addr, "DeleteStream", json!({"StreamName": "orders"})).await;
    assert_eq!(kind, "ResourceInUseException");
    assert!(message.contains("channels associated"), "{message}");
    op(addr, "DeleteChannel", json!({"ChannelARN": arn})).await;
    let mut gone = false;
    for _ in 0..200 {
        let response = call(
            addr,
            "DescribeChannel",
            &json!({"ChannelARN": arn}).to_string(),
        )
        .await;
        if response.status == 400 {
            let (_, kind, message) = aws_error(&response);
            assert_eq!(kind, "ResourceNotFoundException");
            assert_eq!(
                message,
                format!("Channel {arn} under account 000000000000 not found.")
            );
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the channel was not deleted");
    op(addr, "DeleteStream", json!({"StreamName": "orders"})).await;
}

/// Each format and compression: every record put arrives once, in order per shard, and
/// records the format cannot carry go to the dead-letter prefix with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_bucket_objects_once_in_every_format() {
    let dir = tempfile::tempdir().expect("dir");
    let buckets = dir.path().join("buckets");
    std::fs::create_dir_all(buckets.join("lake")).expect("bucket");
    let server = spawn(&server_args(&dir.path().join("data"), &buckets));
    let addr = server.addr;
    let c = client(addr);
    let cases = [
        ("JSON", "NONE"),
        ("JSON", "GZIP"),
        ("STRING", "ZSTD"),
        ("BYTE_ARRAY", "GZIP"),
    ];
    let mut expected = Vec::new();
    for (n, (format, compression)) in cases.iter().enumerate() {
        let name = format!("s{n}");
        let stream = on_demand_stream(&c, &name).await;
        let mut body = s3_channel(
            &format!("c{n}"),
            &stream,
            format,
            storage("lake", compression),
        );
        body["S3DestinationConfiguration"]["StorageConfiguration"]["OutputKeyTemplate"] = json!(
            format!("{name}/!{{yyyy}}/!{{MM}}/!{{channel-name}}!{{extension}}")
        );
        let arn = create(addr, body).await;
        assert_eq!(settled(addr, &arn).await["ChannelStatus"], "ACTIVE");
        let good: Vec<Vec<u8>> = (0..2_500)
            .map(|i| match *format {
                "BYTE_ARRAY" => vec![(i % 256) as u8, 0, b'\n', (i / 256) as u8],
                _ => format!("{{\"n\":{n},\"i\":{i}}}").into_bytes(),
            })
            .collect();
        let bad: Vec<Vec<u8>> = match *format {
            "JSON" => vec![b"not json".to_vec(), b"{\"open\":".to_vec()],
            "STRING" => vec![vec![0xff, 0xfe], b"two\nlines".to_vec()],
            _ => Vec::new(),
        };
        let mut all = good.clone();
        all.extend(bad.iter().cloned());
        put_all(&c, &name, &all).await;
        expected.push((name, *format, good, bad.len()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let objects = files(&buckets.join("lake"));
        let mut complete = true;
        for (name, format, good, dead) in &expected {
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut dead_letters = Vec::new();
            for (key, body) in &objects {
                if key.starts_with(&format!("{name}/")) {
                    let plain = decompress(key, body);
                    if *format == "BYTE_ARRAY" {
                        got.extend(unframe(&plain));
                    } else {
                        got.extend(
                            plain
                                .split(|&b| b == b'\n')
                                .filter(|l| !l.is_empty())
                                .map(<[u8]>::to_vec),
                        );
                    }
                } else if key.starts_with("kinesis-channel/errors/")
                    && key.contains(&format!("/c{}-", &name[1..]))
                {
                    for line in String::from_utf8_lossy(body).lines() {
                        dead_letters.push(serde_json::from_str::<Value>(line).expect("json"));
                    }
                }
            }
            if got.len() < good.len() || dead_letters.len() < *dead {
                complete = false;
                continue;
            }
            let mut sorted_got = got.clone();
            sorted_got.sort();
            let mut sorted_good = good.clone();
            sorted_good.sort();
            assert_eq!(sorted_got, sorted_good, "{name}: every record once");
            assert_eq!(dead_letters.len(), *dead, "{name}");
            for letter in &dead_letters {
                assert!(letter["errorCode"].is_string(), "{letter}");
                assert!(letter["sequenceNumber"].is_string(), "{letter}");
                assert!(letter.get("data").is_none(), "no payload: {letter}");
            }
        }
        if complete {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered in time: {:?}",
            objects.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keys follow the template, the unique suffix, then the extension.
    let keys: Vec<String> = files(&buckets.join("lake")).into_keys().collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("s1/") && k.contains("/c1-") && k.ends_with(".gz")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("s2/") && k.ends_with(".zst")),
        "{keys:?}"
    );
}

/// kill -9 while records are being put and delivered: after a restart, every record put
/// (and acknowledged) is in the bucket exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_delivery_delivers_every_record_once() {
    const RECORDS: usize = 10_000;
    let dir = tempfile::tempdir().expect("dir");
    let buckets = dir.path().join("buckets");
    std::fs::create_dir_all(buckets.join("lake")).expect("bucket");
    let args = server_args(&dir.path().join("data"), &buckets);
    let mut server = spawn(&args);
    let c = client(server.addr);
    let stream = on_demand_stream(&c, "k").await;
    let arn = create(
        server.addr,
        s3_channel("c", &stream, "JSON", storage("lake", "GZIP")),
    )
    .await;
    assert_eq!(settled(server.addr, &arn).await["ChannelStatus"], "ACTIVE");
    let records: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    // Half, in batches a few hundred milliseconds apart, so several objects are written;
    // then the kill, while deliveries run.
    for chunk in records[..RECORDS / 2].chunks(500) {
        put_all(&c, "k", chunk).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    server.kill();
    let before = files(&buckets.join("lake")).len();
    let server = spawn(&args);
    let c = client(server.addr);
    put_all(&c, "k", &records[RECORDS / 2..]).await;
    let delivered = every_record_once(&buckets.join("lake"), RECORDS).await;
    assert_eq!(delivered, RECORDS, "({before} objects before the kill)");
}

/// Cluster mode: a channel made through a follower, records put through every node, and the
/// leader's delivery writes each record once into the shared bucket folder; every node
/// describes the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_delivers_through_its_leader() {
    const RECORDS: usize = 3_000;
    let dir = tempfile::tempdir().expect("dir");
    let buckets = dir.path().join("buckets");
    std::fs::create_dir_all(buckets.join("lake")).expect("bucket");
    let nats = rivulet_cluster::servers::NatsCluster::start(3)
        .await
        .expect("nats cluster");
    let mut config = rivulet_server::ServerConfig::for_tests();
    config.bucket_dir = Some(buckets.clone());
    config.channel_time_scale = 300;
    let nodes = crate::util::ClusterNodes::start(&nats, "rc", 3, config).await;
    let addrs = nodes.addrs();
    let stream = on_demand_stream(&nodes.client, "shared").await;
    // Made through a follower, which forwards it to the leader.
    let arn = create(
        addrs[1],
        s3_channel("c", &stream, "JSON", storage("lake", "ZSTD")),
    )
    .await;
    assert_eq!(settled(addrs[2], &arn).await["ChannelStatus"], "ACTIVE");
    let records: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    put_all(&nodes.client, "shared", &records).await;
    every_record_once(&buckets.join("lake"), RECORDS).await;
    for addr in &addrs {
        let listed = op(*addr, "ListChannels", json!({})).await;
        assert_eq!(listed["ChannelSummaries"][0]["ChannelARN"], json!(arn));
    }
    // Every node's metrics page counts what the leader delivered (the totals travel with
    // the checkpoints).
    for addr in &addrs {
        let mut counted = None;
        for _ in 0..100 {
            let page = crate::util::raw_path(*addr, "GET", "/_rivulet/metrics", &[], b"").await;
            let text = String::from_utf8_lossy(&page.body).to_string();
            counted = text
                .lines()
                .find(|l| {
                    l.starts_with("rivulet_channel_records_delivered_total")
                        && l.contains("ChannelName=\"c\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok());
            if counted == Some(RECORDS as u64) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(counted, Some(RECORDS as u64), "node {addr}");
    }
    op(addrs[2], "DeleteChannel", json!({"ChannelARN": arn})).await;
    nodes.stop().await;
}

/// EncryptionConfiguration on a bucket folder: every object (and dead letter) is sealed with
/// a fresh data key of the channel's KMS key, holds no plaintext, and `rivulet kms
/// open-object` gives the records back; `alias/aws/kinesis` is refused, as AWS refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_in_bucket_folders_are_encrypted_with_the_channel_s_key() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("kms-keys.toml");
    crate::encryption::kms_cli(&key_file, &["create-key", "--alias", "alias/lake"]);
    let buckets = dir.path().join("buckets");
    std::fs::create_dir_all(buckets.join("lake")).expect("bucket");
    let mut args = server_args(&dir.path().join("data"), &buckets);
    args.extend(["--kms-keys".to_string(), key_file.display().to_string()]);
    let server = spawn(&args);
    let addr = server.addr;
    let c = client(addr);
    let stream = on_demand_stream(&c, "secret").await;
    let mut body = s3_channel("sealed", &stream, "JSON", storage("lake", "GZIP"));
    body["EncryptionConfiguration"] =
        json!({"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"});
    let (_, kind, _) = refused(addr, "CreateChannel", body.clone()).await;
    assert_eq!(kind, "InvalidArgumentException");
    body["EncryptionConfiguration"]["KeyId"] = json!("alias/nope");
    let (_, kind, _) = refused(addr, "CreateChannel", body.clone()).await;
    assert_eq!(kind, "KMSNotFoundException");
    body["EncryptionConfiguration"]["KeyId"] = json!("alias/lake");
    let arn = create(addr, body).await;
    assert_eq!(settled(addr, &arn).await["ChannelStatus"], "ACTIVE");
    let records: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("{{\"i\":{i},\"card\":\"4111-{i:04}\"}}").into_bytes())
        .collect();
    put_all(&c, "secret", &records).await;
    put_all(&c, "secret", &[b"not json".to_vec()]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut numbers = loop {
        let (mut found, mut dead) = (Vec::new(), 0);
        for (key, body) in files(&buckets.join("lake")) {
            assert!(body.starts_with(b"RVLENC01"), "{key} is not sealed");
            assert!(
                !body.windows(5).any(|w| w == b"4111-" || w == b"\"i\":0"),
                "{key} holds plaintext"
            );
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
                .args(["kms", "open-object", "--kms-keys"])
                .arg(&key_file)
                .arg(buckets.join("lake").join(&key))
                .output()
                .expect("rivulet kms open-object");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let plain = decompress(&key, &output.stdout);
            for line in String::from_utf8_lossy(&plain).lines() {
                let value: Value = serde_json::from_str(line).expect("json");
                match value["i"].as_u64() {
                    Some(i) => found.push(i),
                    None => {
                        assert_eq!(value["errorCode"], "DESERIALIZATION_ERROR", "{value}");
                        dead += 1;
                    }
                }
            }
        }
        if found.len() >= 500 && dead == 1 {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} delivered",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    numbers.sort_unstable();
    assert_eq!(numbers, (0..500).collect::<Vec<_>>());
}
