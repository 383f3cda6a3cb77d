//! Upgrade: a `rivulet serve` data dir written by an earlier release (the frozen `serve-v1`
//! fixture, made by `scripts/make-upgrade-fixture.sh` before the store-wide journal) is served
//! as it was: the same streams, shards, records, sequence numbers and arrival times; the
//! numbers handed out then still open iterators; puts continue with larger numbers; the
//! encrypted stream's records decrypt with the committed key file; and a restart changes none
//! of it.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rivulet_server::{ServerConfig, Storage};
use serde_json::Value;

use crate::util::TestServer;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/serve-v1");

/// A record as the fixture and GetRecords give it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    sequence_number: String,
    partition_key: String,
    data: Vec<u8>,
    arrival_ms: i64,
    encryption_type: String,
}

/// One shard of the fixture: its id, starting hash key and starting sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ShardInfo {
    shard_id: String,
    starting_hash_key: String,
    ending_hash_key: String,
    starting_sequence_number: String,
}

/// One stream of the fixture.
#[derive(Clone, Debug)]
struct StreamInfo {
    arn: String,
    creation_ms: i64,
    retention_hours: i32,
    encryption_type: String,
    key_id: Option<String>,
    shards: Vec<ShardInfo>,
    /// Records per shard id, in read order.
    records: BTreeMap<String, Vec<Rec>>,
}

fn text(value: &Value) -> String {
    value.as_str().expect("a string").to_string()
}

fn load() -> (i64, BTreeMap<String, StreamInfo>) {
    let path = Path::new(FIXTURE).join("expected.json");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse");
    let streams = expected["streams"]
        .as_object()
        .expect("streams")
        .iter()
        .map(|(name, s)| {
            let shards = s["shards"]
                .as_array()
                .expect("shards")
                .iter()
                .map(|shard| ShardInfo {
                    shard_id: text(&shard["shard_id"]),
                    starting_hash_key: text(&shard["starting_hash_key"]),
                    ending_hash_key: text(&shard["ending_hash_key"]),
                    starting_sequence_number: text(&shard["starting_sequence_number"]),
                })
                .collect::<Vec<_>>();
            let mut records: BTreeMap<String, Vec<Rec>> = shards
                .iter()
                .map(|shard| (shard.shard_id.clone(), Vec::new()))
                .collect();
            for r in s["records"].as_array().expect("records") {
                records
                    .get_mut(r["shard_id"].as_str().expect("shard"))
                    .expect("a listed shard")
                    .push(Rec {
                        sequence_number: text(&r["sequence_number"]),
                        partition_key: text(&r["partition_key"]),
                        data: STANDARD.decode(text(&r["data_base64"])).expect("base64"),
                        arrival_ms: r["approximate_arrival_ms"].as_i64().expect("arrival"),
                        encryption_type: text(&r["encryption_type"]),
                    });
            }
            let info = StreamInfo {
                arn: text(&s["arn"]),
                creation_ms: s["creation_ms"].as_i64().expect("creation"),
                retention_hours: s["retention_hours"].as_i64().expect("retention") as i32,
                encryption_type: text(&s["encryption_type"]),
                key_id: s["key_id"].as_str().map(str::to_string),
                shards,
                records,
            };
            (name.clone(), info)
        })
        .collect();
    (
        expected["made_at_ms"].as_i64().expect("made_at_ms"),
        streams,
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A server over the copied data dir, with the copied key file beside (not inside) it.
async fn start(root: &Path) -> TestServer {
    let mut config = ServerConfig::for_tests();
    config.storage = Storage::Dir(root.join("data"));
    config.kms_keys = Some(root.join("kms-keys.toml"));
    TestServer::with_config(config).await
}

/// Sequence numbers are decimal without leading zeros: longer is larger.
fn seq_greater(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// Epoch milliseconds, rounded: JSON carries seconds with a fraction, which the SDK reads as
/// a float, so `to_millis` can land one below what the server sent.
fn ms(time: &aws_sdk_kinesis::primitives::DateTime) -> i64 {
    time.secs() * 1000 + i64::from((time.subsec_nanos() + 500_000) / 1_000_000)
}

fn rec(r: &aws_sdk_kinesis::types::Record) -> Rec {
    Rec {
        sequence_number: r.sequence_number().to_string(),
        partition_key: r.partition_key().to_string(),
        data: r.data().as_ref().to_vec(),
        arrival_ms: ms(r.approximate_arrival_timestamp().expect("arrival")),
        encryption_type: r
            .encryption_type()
            .map_or("NONE", |e| e.as_str())
            .to_string(),
    }
}

/// Every record of a shard from an iterator of `kind` (with `sequence` for the
/// AT/AFTER_SEQUENCE_NUMBER kinds), read in pages of `limit`.
async fn read(
    c: &Client,
    stream: &str,
    shard: &str,
    kind: ShardIteratorType,
    sequence: Option<&str>,
    limit: i32,
) -> Vec<Rec> {
    let mut iterator = c
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence.map(str::to_string))
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("iterator");
    let mut out = Vec::new();
    loop {
        let page = c
            .get_records()
            .shard_iterator(&iterator)
            .limit(limit)
            .send()
            .await
            .expect("get records");
        out.extend(page.records().iter().map(rec));
        match page.next_shard_iterator() {
            Some(next) if !page.records().is_empty() => iterator = next.to_string(),
            _ => return out,
        }
    }
}

/// Asserts that the server describes and serves every stream of `streams` as recorded; with
/// `every_number`, also from an iterator at and after each record's sequence number.
async fn check(c: &Client, streams: &BTreeMap<String, StreamInfo>, every_number: bool) {
    for (name, info) in streams {
        let summary = c
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("summary")
            .stream_description_summary
            .expect("summary");
        assert_eq!(summary.stream_arn(), info.arn);
        let creation = ms(summary.stream_creation_timestamp());
        assert_eq!(creation, info.creation_ms, "{name}: creation time");
        assert_eq!(summary.retention_period_hours(), info.retention_hours);
        let encryption = summary.encryption_type().map_or("NONE", |e| e.as_str());
        assert_eq!(encryption, info.encryption_type, "{name}: encryption");
        assert_eq!(summary.key_id(), info.key_id.as_deref(), "{name}: key id");

        let listed = c
            .list_shards()
            .stream_name(name)
            .send()
            .await
            .expect("list shards");
        let shards: Vec<ShardInfo> = listed
            .shards()
            .iter()
            .map(|s| {
                let hash = s.hash_key_range().expect("hash range");
                ShardInfo {
                    shard_id: s.shard_id().to_string(),
                    starting_hash_key: hash.starting_hash_key().to_string(),
                    ending_hash_key: hash.ending_hash_key().to_string(),
                    starting_sequence_number: s
                        .sequence_number_range()
                        .expect("sequence range")
                        .starting_sequence_number()
                        .to_string(),
                }
            })
            .collect();
        assert_eq!(shards, info.shards, "{name}: shards");

        for (shard, records) in &info.records {
            let trim = ShardIteratorType::TrimHorizon;
            let all = read(c, name, shard, trim.clone(), None, 10_000).await;
            assert_eq!(&all, records, "{name} {shard}: every record");
            assert_eq!(&read(c, name, shard, trim, None, 2).await, records);
            if !every_number {
                continue;
            }
            // The numbers handed out before the upgrade still open iterators.
            for (i, r) in records.iter().enumerate() {
                let seq = Some(r.sequence_number.as_str());
                let kind = ShardIteratorType::AtSequenceNumber;
                let at = read(c, name, shard, kind, seq, 10_000).await;
                assert_eq!(at, records[i..], "{name} {shard}: at {}", r.sequence_number);
                let kind = ShardIteratorType::AfterSequenceNumber;
                let after = read(c, name, shard, kind, seq, 10_000).await;
                assert_eq!(after, records[i + 1..], "{name} {shard}: after");
            }
        }
    }
}

/// Puts one record into every shard of every stream (by explicit hash key), checks that its
/// number is larger than every earlier one of its shard, and adds it to `streams`.
async fn put_one_per_shard(c: &Client, streams: &mut BTreeMap<String, StreamInfo>, round: u32) {
    for (name, info) in streams.iter_mut() {
        let entries = info
            .shards
            .iter()
            .map(|shard| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("after-upgrade-{round}"))
                    .explicit_hash_key(&shard.starting_hash_key)
                    .data(Blob::new(format!(
                        "{name} {} round {round}",
                        shard.shard_id
                    )))
                    .build()
                    .expect("entry")
            })
            .collect::<Vec<_>>();
        let answer = c
            .put_records()
            .stream_name(name)
            .set_records(Some(entries.clone()))
            .send()
            .await
            .expect("put records");
        assert_eq!(answer.failed_record_count(), Some(0));
        let encryption = answer.encryption_type().map_or("NONE", |e| e.as_str());
        assert_eq!(
            encryption, info.encryption_type,
            "{name}: puts are encrypted as before"
        );
        for ((entry, result), shard) in entries.iter().zip(answer.records()).zip(&info.shards) {
            assert_eq!(result.shard_id(), Some(shard.shard_id.as_str()));
            let seq = result
                .sequence_number()
                .expect("sequence number")
                .to_string();
            let records = info.records.get_mut(&shard.shard_id).expect("shard");
            for earlier in records.iter() {
                assert!(
                    seq_greater(&seq, &earlier.sequence_number),
                    "{name} {}: {seq} after {}",
                    shard.shard_id,
                    earlier.sequence_number
                );
            }
            let last = records.last().map(|r| r.sequence_number.clone());
            let new = read(
                c,
                name,
                &shard.shard_id,
                ShardIteratorType::AfterSequenceNumber,
                last.as_deref(),
                100,
            )
            .await;
            assert_eq!(
                new.len(),
                1,
                "{name} {}: the new record only",
                shard.shard_id
            );
            assert_eq!(new[0].sequence_number, seq);
            assert_eq!(new[0].data, entry.data().as_ref());
            assert_eq!(new[0].encryption_type, info.encryption_type);
            records.push(new[0].clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_v1_data_dir_serves_every_record_and_sequence_number_and_continues() {
    let (made_at_ms, mut streams) = load();
    // The server trims by its own clock: past the streams' retention (8,760 hours, the
    // maximum) the fixture's records are gone, and only a fixture made anew can test this.
    let retention_ms = streams
        .values()
        .map(|s| i64::from(s.retention_hours) * 3_600_000)
        .min()
        .expect("a stream");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let age_ms = now_ms - made_at_ms;
    assert!(
        age_ms < retention_ms - 86_400_000,
        "the serve-v1 fixture is {} days old, too close to its streams' retention: see \
         scripts/make-upgrade-fixture.sh to make it anew",
        age_ms / 86_400_000
    );
    assert!(streams.values().any(|s| s.encryption_type == "KMS"));

    let root = tempfile::tempdir().expect("tempdir");
    copy_tree(&Path::new(FIXTURE).join("data"), &root.path().join("data"));
    std::fs::copy(
        Path::new(FIXTURE).join("kms-keys.toml"),
        root.path().join("kms-keys.toml"),
    )
    .expect("copy key file");

    let t = start(root.path()).await;
    check(&t.client, &streams, true).await;
    put_one_per_shard(&t.client, &mut streams, 1).await;
    check(&t.client, &streams, false).await;
    t.stop().await;

    // After a restart: everything again, and puts still continue.
    let t = start(root.path()).await;
    check(&t.client, &streams, true).await;
    put_one_per_shard(&t.client, &mut streams, 2).await;
    check(&t.client, &streams, false).await;
    t.stop().await;
}
