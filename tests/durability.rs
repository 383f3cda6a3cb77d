//! Durability: data survives a clean restart and a kill -9 under concurrent write load.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};

use crate::util::{TestServer, client};

/// Every record of a stream, per shard in shard order: (shard, partition key, data, sequence).
async fn read_all(c: &Client, stream: &str) -> Vec<(String, String, Vec<u8>, String)> {
    let shards = c
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut it = c
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator")
            .shard_iterator()
            .map(str::to_string);
        while let Some(iterator) = it {
            let page = c
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
                .expect("get records");
            for r in page.records() {
                out.push((
                    shard.shard_id().to_string(),
                    r.partition_key().to_string(),
                    r.data().as_ref().to_vec(),
                    r.sequence_number().to_string(),
                ));
            }
            it = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_string)
            };
        }
    }
    out
}

#[tokio::test]
async fn records_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::on_disk(dir.path()).await;
    t.client
        .create_stream()
        .stream_name("d")
        .shard_count(2)
        .send()
        .await
        .unwrap();
    for batch in 0..4 {
        let entries = (0..250).map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("{batch}-{i}"))
                .data(Blob::new(format!("payload {batch} {i}")))
                .build()
                .unwrap()
        });
        t.client
            .put_records()
            .stream_name("d")
            .set_records(Some(entries.collect()))
            .send()
            .await
            .unwrap();
    }
    let before = read_all(&t.client, "d").await;
    assert_eq!(before.len(), 1000);
    t.stop().await;

    let t = TestServer::on_disk(dir.path()).await;
    let after = read_all(&t.client, "d").await;
    assert_eq!(
        before, after,
        "every record back, in order, with the same sequence numbers"
    );
    let more = t
        .client
        .put_record()
        .stream_name("d")
        .partition_key("0-0")
        .data(Blob::new("new"))
        .send()
        .await
        .unwrap();
    let last_same_shard = after.iter().rfind(|r| r.0 == more.shard_id()).unwrap();
    let (a, b) = (&last_same_shard.3, more.sequence_number());
    assert!(
        (b.len(), b) > (a.len(), a.as_str()),
        "numbering continues after a restart"
    );
    t.stop().await;
}

struct Process {
    child: Child,
    addr: SocketAddr,
}

fn spawn_server(dir: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--create-stream-ms",
            "0",
            "--limits",
            "off",
            "--log",
            "warn",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rivulet");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    Process { child, addr }
}

/// Kill -9 a server under concurrent write load, many times; every acknowledged record must be
/// there afterwards, exactly once, and in acknowledgement order within each writer and shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_load_loses_no_acknowledged_record() {
    const ROUNDS: usize = 6;
    const WRITERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut first = true;
    for round in 0..ROUNDS {
        let mut server = spawn_server(dir.path());
        let c = client(server.addr);
        if first {
            c.create_stream()
                .stream_name("crash")
                .shard_count(2)
                .send()
                .await
                .unwrap();
            first = false;
        }
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let c = c.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("w{w}");
                    let data = format!("r{round}-w{w}-n{n}");
                    let entries = vec![
                        PutRecordsRequestEntry::builder()
                            .partition_key(&key)
                            .data(Blob::new(format!("{data}-a")))
                            .build()
                            .unwrap(),
                        PutRecordsRequestEntry::builder()
                            .partition_key(&key)
                            .data(Blob::new(format!("{data}-b")))
                            .build()
                            .unwrap(),
                    ];
                    match c
                        .put_records()
                        .stream_name("crash")
                        .set_records(Some(entries))
                        .send()
                        .await
                    {
                        Ok(_) => {
                            let mut acked = acked.lock().unwrap();
                            acked.push((key.clone(), format!("{data}-a")));
                            acked.push((key, format!("{data}-b")));
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(150 + 97 * round as u64 % 300)).await;
        server.child.kill().expect("kill -9");
        let _ = server.child.wait();
        for task in tasks {
            let _ = task.await;
        }
    }
    let server = spawn_server(dir.path());
    let c = client(server.addr);
    let stored = read_all(&c, "crash").await;
    let mut child = server.child;
    let _ = child.kill();
    let _ = child.wait();

    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 100,
        "the load generator made progress: {}",
        acked.len()
    );
    let stored_data: Vec<String> = stored
        .iter()
        .map(|r| String::from_utf8(r.2.clone()).unwrap())
        .collect();
    let unique: HashSet<&String> = stored_data.iter().collect();
    assert_eq!(unique.len(), stored_data.len(), "no record is stored twice");
    // Within each writer (one partition key, so one shard) stored order follows ack order.
    let mut position: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, data) in stored_data.iter().enumerate() {
        position.insert(data.as_str(), i);
    }
    let mut last_per_writer: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, data) in acked.iter() {
        let at = *position
            .get(data.as_str())
            .unwrap_or_else(|| panic!("acknowledged record {data} lost"));
        if let Some(previous) = last_per_writer.insert(key.as_str(), at) {
            assert!(previous < at, "{data} stored out of acknowledgement order");
        }
    }
}

/// A flipped bit in a stored batch: the server starts, reports the damage on the read that meets
/// it, and keeps serving every other record.
#[tokio::test]
async fn corrupted_batch_is_reported_and_the_rest_is_served() {
    use crate::util::call;
    let dir = tempfile::tempdir().expect("tempdir");
    let markers = [
        "first-record-aaaa",
        "second-record-bbbb",
        "third-record-cccc",
    ];
    let mut sequences = Vec::new();
    {
        let t = TestServer::on_disk(dir.path()).await;
        let c = &t.client;
        c.create_stream()
            .stream_name("hurt")
            .shard_count(1)
            .send()
            .await
            .expect("create");
        c.create_stream()
            .stream_name("fine")
            .shard_count(1)
            .send()
            .await
            .expect("create");
        for (stream, marker) in markers
            .iter()
            .map(|m| ("hurt", *m))
            .chain([("fine", "untouched")])
        {
            let put = c
                .put_record()
                .stream_name(stream)
                .partition_key("k")
                .data(Blob::new(marker.as_bytes()))
                .send()
                .await
                .expect("put");
            sequences.push(put.sequence_number().to_string());
        }
        t.stop().await;
    }
    // Flip one bit inside the second record's data, wherever the segment holds it.
    let mut flipped = 0;
    for entry in walk(dir.path()) {
        if entry.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&entry).expect("read segment");
            if let Some(at) = bytes
                .windows(markers[1].len())
                .position(|w| w == markers[1].as_bytes())
            {
                bytes[at + 3] ^= 0x10;
                std::fs::write(&entry, &bytes).expect("write segment");
                flipped += 1;
            }
        }
    }
    assert_eq!(flipped, 1, "the record's bytes are in one segment");

    let t = TestServer::on_disk(dir.path()).await;
    let iterator = |kind: &str, extra: String| {
        format!(
            r#"{{"StreamName":"hurt","ShardId":"shardId-000000000000","ShardIteratorType":"{kind}"{extra}}}"#
        )
    };
    let first = call(
        t.addr,
        "GetShardIterator",
        &iterator("TRIM_HORIZON", String::new()),
    )
    .await;
    let it = first.json()["ShardIterator"]
        .as_str()
        .expect("iterator")
        .to_string();
    let page = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    )
    .await;
    assert_eq!(page.status, 200);
    let records = page.json()["Records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 1, "the read stops before the damage");
    assert_eq!(
        records[0]["SequenceNumber"].as_str(),
        Some(sequences[0].as_str())
    );
    let next = page.json()["NextShardIterator"]
        .as_str()
        .expect("next")
        .to_string();
    let damaged = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{next}"}}"#),
    )
    .await;
    assert_eq!(damaged.status, 500);
    // As AWS sends it: no message (the segment and byte go to the server's log).
    assert_eq!(damaged.body, br#"{"__type":"InternalFailure"}"#);
    // Past the damage, and in other streams, everything is served.
    let after = call(
        t.addr,
        "GetShardIterator",
        &iterator(
            "AT_SEQUENCE_NUMBER",
            format!(r#","StartingSequenceNumber":"{}""#, sequences[2]),
        ),
    )
    .await;
    let it = after.json()["ShardIterator"]
        .as_str()
        .expect("iterator")
        .to_string();
    let page = call(
        t.addr,
        "GetRecords",
        &format!(r#"{{"ShardIterator":"{it}"}}"#),
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.json()["Records"][0]["SequenceNumber"].as_str(),
        Some(sequences[2].as_str())
    );
    let fine = read_all(&t.client, "fine").await;
    assert_eq!(fine.len(), 1);
    assert_eq!(fine[0].2, b"untouched");
    // Writes go on.
    t.client
        .put_record()
        .stream_name("hurt")
        .partition_key("k")
        .data(Blob::new("fourth"))
        .send()
        .await
        .expect("put after damage");
    t.stop().await;
}

/// Every file under `root`.
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
