//! Queues end to end (issue 14): competing consumers, redelivery, dead letters and restore,
//! and delivery state across a kill -9. `aws-sdk-kinesis` has no queue operations yet, so
//! queue calls are raw JSON requests (`util::call`); streams and puts go through the SDK.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamMode, StreamModeDetails};
use serde_json::{Value, json};

use crate::util::{Process, TestServer, call, client};

/// One queue operation; panics unless it answers 200.
pub(crate) async fn op(addr: SocketAddr, operation: &str, body: Value) -> Value {
    let response = call(addr, operation, &body.to_string()).await;
    assert_eq!(
        response.status,
        200,
        "{operation}: {}",
        String::from_utf8_lossy(&response.body)
    );
    if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    }
}

/// An on-demand stream (queues need one), ACTIVE; returns its ARN.
pub(crate) async fn on_demand_stream(c: &Client, name: &str) -> String {
    c.create_stream()
        .stream_name(name)
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .expect("mode"),
        )
        .send()
        .await
        .expect("create stream");
    crate::util::wait_active(c, name).await;
    crate::util::stream_arn(c, name).await
}

/// Creates a queue and waits until it is ACTIVE; returns its ARN.
pub(crate) async fn create_queue(
    addr: SocketAddr,
    name: &str,
    stream_arn: &str,
    start: &str,
    attributes: Value,
) -> String {
    let created = op(
        addr,
        "CreateQueue",
        json!({
            "QueueName": name,
            "StreamConfigurationList": [{"StreamARN": stream_arn, "StartingPosition": {"Type": start}}],
            "QueueAttributes": attributes,
        }),
    )
    .await;
    assert_eq!(created["QueueDescription"]["QueueStatus"], "CREATING");
    let arn = created["QueueDescription"]["QueueARN"]
        .as_str()
        .expect("arn")
        .to_string();
    for _ in 0..200 {
        let described = op(addr, "DescribeQueue", json!({"QueueARN": arn})).await;
        if described["QueueDescription"]["QueueStatus"] == "ACTIVE" {
            return arn;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue {arn} never became ACTIVE");
}

/// Puts `count` records `r<i>` (500 per PutRecords), every one accepted.
pub(crate) async fn put(c: &Client, stream: &str, range: std::ops::Range<usize>) {
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(500) {
        let mut pending: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{i}"))
                    .data(Blob::new(format!("r{i}")))
                    .build()
                    .expect("entry")
            })
            .collect();
        while !pending.is_empty() {
            let out = c
                .put_records()
                .stream_name(stream)
                .set_records(Some(pending.clone()))
                .send()
                .await
                .expect("put records");
            pending = pending
                .into_iter()
                .zip(out.records())
                .filter(|(_, r)| r.error_code().is_some())
                .map(|(e, _)| e)
                .collect();
        }
    }
}

/// A received record: (data as text, receipt handle, record id, receive count).
type Got = (String, String, String, i64);

pub(crate) async fn receive(
    addr: SocketAddr,
    operation: &str,
    queue: &str,
    wait_s: i64,
) -> Vec<Got> {
    let answer = op(
        addr,
        operation,
        json!({"QueueARN": queue, "Limit": 10, "WaitTimeSeconds": wait_s}),
    )
    .await;
    answer["QueueRecords"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let data = base64_decode(r["Data"].as_str().expect("data"));
            (
                String::from_utf8(data).expect("utf-8"),
                r["ReceiptHandle"].as_str().expect("handle").to_string(),
                r["RecordId"].as_str().expect("id").to_string(),
                r["ReceiveCount"].as_i64().expect("count"),
            )
        })
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Acknowledges (or changes, by `operation`) each handle; returns the failed entries' codes.
async fn batch(addr: SocketAddr, operation: &str, queue: &str, entries: Vec<Value>) -> Vec<String> {
    let mut failed = Vec::new();
    for chunk in entries.chunks(10) {
        let answer = op(
            addr,
            operation,
            json!({"QueueARN": queue, "Entries": chunk}),
        )
        .await;
        assert_eq!(
            answer["Successful"].as_array().expect("successful").len()
                + answer["Failed"].as_array().expect("failed").len(),
            chunk.len()
        );
        failed.extend(
            answer["Failed"]
                .as_array()
                .expect("failed")
                .iter()
                .map(|f| f["ErrorCode"].as_str().unwrap_or_default().to_string()),
        );
    }
    failed
}

fn handles(got: &[Got]) -> Vec<Value> {
    got.iter()
        .map(|(_, handle, _, _)| json!({"ReceiptHandle": handle}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_competing_consumers_get_every_record_exactly_once() {
    const RECORDS: usize = 100_000;
    let t = TestServer::start().await;
    let stream_arn = on_demand_stream(&t.client, "many").await;
    let queue = create_queue(t.addr, "workers", &stream_arn, "TRIM_HORIZON", json!({})).await;
    put(&t.client, "many", 0..RECORDS).await;
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let ids: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (seen, ids, queue, addr) = (seen.clone(), ids.clone(), queue.clone(), t.addr);
        workers.push(tokio::spawn(async move {
            loop {
                let got = receive(addr, "ReceiveQueueRecords", &queue, 1).await;
                if got.is_empty() {
                    if seen.lock().unwrap().len() >= RECORDS {
                        return;
                    }
                    continue;
                }
                for (data, _, id, count) in &got {
                    assert_eq!(*count, 1, "{data} delivered again");
                    *seen.lock().unwrap().entry(data.clone()).or_default() += 1;
                    assert!(
                        ids.lock().unwrap().insert(id.clone()),
                        "record id {id} twice"
                    );
                }
                let failed = batch(addr, "AcknowledgeQueueRecords", &queue, handles(&got)).await;
                assert!(failed.is_empty(), "acknowledgements failed: {failed:?}");
            }
        }));
    }
    let all = async {
        for worker in workers {
            worker.await.expect("worker");
        }
    };
    tokio::time::timeout(Duration::from_secs(600), all)
        .await
        .expect("the workers finish");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), RECORDS, "every record received");
        assert!(seen.values().all(|n| *n == 1), "none received twice");
    }
    // Nothing is left: no record visible, in flight or dead.
    assert!(
        receive(t.addr, "ReceiveQueueRecords", &queue, 1)
            .await
            .is_empty()
    );
    assert!(
        receive(t.addr, "ReceiveDeadLetterQueueRecords", &queue, 1)
            .await
            .is_empty()
    );
    t.stop().await;
}

#[tokio::test]
async fn unacknowledged_records_come_back_then_die_and_restore_brings_them_back() {
    let t = TestServer::start().await;
    let stream_arn = on_demand_stream(&t.client, "dead").await;
    let queue = create_queue(
        t.addr,
        "retry",
        &stream_arn,
        "LATEST",
        json!({"VisibilityTimeoutSeconds": 1,
               "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 3}}),
    )
    .await;
    put(&t.client, "dead", 0..5).await;
    let all = |got: &[Got]| {
        let mut d: Vec<String> = got.iter().map(|g| g.0.clone()).collect();
        d.sort();
        d
    };
    let expected: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    // Three receipts, none acknowledged: each comes back after its 1 s timeout.
    let mut ids = HashMap::new();
    for round in 1..=3 {
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend(receive(t.addr, "ReceiveQueueRecords", &queue, 5).await);
        }
        if round > 1 {
            assert!(
                started.elapsed() >= Duration::from_millis(700),
                "came back before its visibility timeout"
            );
        }
        assert_eq!(all(&got), expected);
        for (data, _, id, count) in &got {
            assert_eq!(*count, round, "{data}");
            assert_eq!(ids.entry(data.clone()).or_insert_with(|| id.clone()), id);
        }
    }
    // The third timeout ends: they are dead letters, out of normal delivery.
    assert!(
        receive(t.addr, "ReceiveQueueRecords", &queue, 2)
            .await
            .is_empty()
    );
    let mut dead = Vec::new();
    while dead.len() < 5 {
        dead.extend(receive(t.addr, "ReceiveDeadLetterQueueRecords", &queue, 2).await);
    }
    assert_eq!(all(&dead), expected);
    for (data, _, id, _) in &dead {
        assert_eq!(&ids[data], id, "the same RecordId as a dead letter");
    }
    // A dead-letter handle is not a normal one, and the reverse.
    let wrong = batch(
        t.addr,
        "AcknowledgeQueueRecords",
        &queue,
        handles(&dead[..1]),
    )
    .await;
    assert_eq!(wrong, ["InvalidArgumentException"]);
    // Acknowledge one dead letter, restore the others: they are received again, counted
    // from 1, and the acknowledged one never comes back.
    assert!(
        batch(
            t.addr,
            "AcknowledgeDeadLetterQueueRecords",
            &queue,
            handles(&dead[..1])
        )
        .await
        .is_empty()
    );
    assert!(
        batch(
            t.addr,
            "RestoreDeadLetterQueueRecords",
            &queue,
            handles(&dead[1..])
        )
        .await
        .is_empty()
    );
    let again = receive(t.addr, "ReceiveQueueRecords", &queue, 2).await;
    assert_eq!(all(&again), all(&dead[1..]));
    assert!(again.iter().all(|g| g.3 == 1), "counts reset: {again:?}");
    // A handle acknowledged twice fails the second time, alone.
    let mut twice = handles(&again[..1]);
    twice.push(twice[0].clone());
    let failed = batch(t.addr, "AcknowledgeQueueRecords", &queue, twice).await;
    assert_eq!(failed, ["ResourceNotFoundException"]);
    // Visibility 0 makes a record visible at once.
    let failed = batch(
        t.addr,
        "UpdateQueueRecordsVisibility",
        &queue,
        vec![json!({"ReceiptHandle": again[1].1, "VisibilityTimeoutSeconds": 0})],
    )
    .await;
    assert!(failed.is_empty());
    let back = receive(t.addr, "ReceiveQueueRecords", &queue, 1).await;
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].0.as_str(), back[0].3), (again[1].0.as_str(), 2));
    t.stop().await;
}

/// kill -9 while 4 consumers receive and acknowledge: after the restart every record is
/// delivered, and none whose acknowledgement was answered comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivery_state_survives_kill_9() {
    const RECORDS: usize = 5_000;
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().to_str().expect("path").to_string();
    let args = [
        "--data-dir",
        data_dir.as_str(),
        "--create-stream-ms",
        "0",
        "--delete-stream-ms",
        "0",
        "--update-stream-ms",
        "0",
    ];
    let mut server = Process::spawn(&args);
    let c = client(server.addr);
    let stream_arn = on_demand_stream(&c, "k").await;
    let queue = create_queue(
        server.addr,
        "q",
        &stream_arn,
        "TRIM_HORIZON",
        json!({"VisibilityTimeoutSeconds": 2}),
    )
    .await;
    put(&c, "k", 0..RECORDS).await;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Acknowledgements sent whose answer never came (the kill): stored or not.
    let unanswered: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (acked, unanswered, queue, addr) = (
            acked.clone(),
            unanswered.clone(),
            queue.clone(),
            server.addr,
        );
        workers.push(tokio::spawn(async move {
            loop {
                let response = call(
                    addr,
                    "ReceiveQueueRecords",
                    &json!({"QueueARN": queue, "Limit": 10, "WaitTimeSeconds": 1}).to_string(),
                )
                .await;
                if response.status != 200 {
                    return;
                }
                let records = response.json()["QueueRecords"].clone();
                let got: Vec<(String, String)> = records
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let data = base64_decode(r["Data"].as_str().unwrap_or_default());
                        (
                            String::from_utf8(data).unwrap_or_default(),
                            r["ReceiptHandle"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                let entries: Vec<Value> = got
                    .iter()
                    .map(|(_, h)| json!({"ReceiptHandle": h}))
                    .collect();
                if entries.is_empty() {
                    continue;
                }
                unanswered
                    .lock()
                    .unwrap()
                    .extend(got.iter().map(|(data, _)| data.clone()));
                let response = call(
                    addr,
                    "AcknowledgeQueueRecords",
                    &json!({"QueueARN": queue, "Entries": entries}).to_string(),
                )
                .await;
                if response.status != 200 {
                    return;
                }
                let answer = response.json();
                let ok: HashSet<&str> = answer["Successful"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["ReceiptHandle"].as_str())
                    .collect();
                let mut acked = acked.lock().unwrap();
                let mut unanswered = unanswered.lock().unwrap();
                for (data, handle) in &got {
                    unanswered.remove(data);
                    if ok.contains(handle.as_str()) {
                        acked.insert(data.clone());
                    }
                }
            }
        }));
    }
    // Kill once about a third is acknowledged.
    while acked.lock().unwrap().len() < RECORDS / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    for worker in workers {
        let _ = worker.await;
    }
    let acked_before = acked.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    assert!(acked_before.len() < RECORDS, "killed mid-run");
    let server = Process::spawn(&args);
    let mut after: HashSet<String> = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // Done once every record is acknowledged before, received after, or was in an
    // acknowledgement whose answer the kill cut off (stored, so gone, or not, so back).
    let covered = |after: &HashSet<String>| {
        after
            .union(&acked_before)
            .chain(unanswered.difference(after))
            .collect::<HashSet<_>>()
            .len()
    };
    while covered(&after) < RECORDS {
        assert!(
            std::time::Instant::now() < deadline,
            "records lost: {} acknowledged before, {} after",
            acked_before.len(),
            after.len()
        );
        let got = receive(server.addr, "ReceiveQueueRecords", &queue, 3).await;
        for (data, ..) in &got {
            assert!(
                !acked_before.contains(data),
                "{data} came back after its acknowledgement was answered"
            );
            after.insert(data.clone());
        }
        let failed = batch(
            server.addr,
            "AcknowledgeQueueRecords",
            &queue,
            handles(&got),
        )
        .await;
        assert!(failed.is_empty(), "{failed:?}");
    }
    assert!(
        unanswered.len() <= 40,
        "at most one batch per consumer was cut off: {}",
        unanswered.len()
    );
    let all: HashSet<String> = acked_before
        .union(&after)
        .chain(unanswered.iter())
        .cloned()
        .collect();
    assert_eq!(all.len(), RECORDS, "every record delivered");
    drop(server);
}

/// `rivulet queue receive` against a server that verifies signatures: every record on its own
/// line, acknowledged, and nothing left afterwards. The queue is made with signed raw calls
/// (`rivulet_cli::queue::Caller`, the CLI's own signer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_receives_and_acknowledges_with_real_signatures() {
    let mut config = rivulet_server::ServerConfig::for_tests();
    config.credentials = Some(Arc::new(crate::util::allow_all(vec![
        crate::auth::credential("AKIDQUEUE", "queue-secret", None, None),
    ])));
    let t = TestServer::with_config(config).await;
    let sdk = crate::auth::sdk(t.addr, "AKIDQUEUE", "queue-secret", None);
    let stream_arn = on_demand_stream(&sdk, "cli").await;
    let endpoint = format!("http://{}", t.addr);
    let signed = rivulet_cli::queue::Caller::with(
        &endpoint,
        "us-east-1",
        rivulet_cli::Credentials::new("AKIDQUEUE", "queue-secret", None, None, "test"),
    )
    .expect("caller");
    let created = signed
        .call(
            "CreateQueue",
            &json!({"QueueName": "shell", "StreamConfigurationList": [
                {"StreamARN": stream_arn, "StartingPosition": {"Type": "TRIM_HORIZON"}}]}),
        )
        .await
        .expect("CreateQueue, signed");
    let queue = created["QueueDescription"]["QueueARN"]
        .as_str()
        .expect("arn")
        .to_string();
    // A wrong secret is refused.
    let forged = rivulet_cli::queue::Caller::with(
        &endpoint,
        "us-east-1",
        rivulet_cli::Credentials::new("AKIDQUEUE", "wrong", None, None, "test"),
    )
    .expect("caller");
    let refused = forged
        .call("DescribeQueue", &json!({"QueueARN": queue}))
        .await
        .expect_err("a bad signature");
    assert!(
        refused.to_string().starts_with("InvalidSignatureException"),
        "{refused}"
    );
    put(&sdk, "cli", 0..25).await;
    let run = |args: Vec<String>| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "AKIDQUEUE")
            .env("AWS_SECRET_ACCESS_KEY", "queue-secret")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .output()
            .expect("rivulet queue runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let args = |extra: &[&str]| {
        let mut all: Vec<String> = [
            "queue",
            "receive",
            "--queue",
            &queue,
            "--endpoint-url",
            &endpoint,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    // The ACTIVE wait: CreateQueue answered CREATING; a receive then finds nothing yet or
    // everything, so take the 25 records with --count.
    let (out, err) = run(args(&["--ack", "--count", "25", "--wait", "2"]));
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(lines, expected);
    assert!(
        err.contains("25 records received, 25 acknowledged"),
        "{err}"
    );
    let (out, _) = run(args(&["--until-empty", "--wait", "1", "--quiet"]));
    assert_eq!(out, "", "everything was acknowledged");
    t.stop().await;
}

/// `/_rivulet/metrics` and the console's queue API count visible, in-flight and dead
/// records, and receives, acknowledgements and redeliveries.
#[tokio::test]
async fn queue_metrics_count_what_the_queue_holds() {
    let t = TestServer::start().await;
    let stream_arn = on_demand_stream(&t.client, "m").await;
    let queue = create_queue(
        t.addr,
        "metered",
        &stream_arn,
        "TRIM_HORIZON",
        json!({"VisibilityTimeoutSeconds": 60,
               "DeadLetterConfiguration": {"TargetType": "BUILT_IN", "MaxReceiveCount": 1}}),
    )
    .await;
    put(&t.client, "m", 0..10).await;
    let got = receive(t.addr, "ReceiveQueueRecords", &queue, 1).await;
    let mut got_all = got.clone();
    while got_all.len() < 4 {
        got_all.extend(receive(t.addr, "ReceiveQueueRecords", &queue, 1).await);
    }
    // Keep 4 in flight: give the rest back (visibility 0: they die, MaxReceiveCount 1),
    // acknowledging one of those 4 first.
    let (kept, back) = got_all.split_at(4);
    assert!(
        batch(
            t.addr,
            "AcknowledgeQueueRecords",
            &queue,
            handles(&kept[..1])
        )
        .await
        .is_empty()
    );
    let back: Vec<Value> = back
        .iter()
        .map(|g| json!({"ReceiptHandle": g.1, "VisibilityTimeoutSeconds": 0}))
        .collect();
    let dead_count = back.len() as u64;
    assert!(
        batch(t.addr, "UpdateQueueRecordsVisibility", &queue, back)
            .await
            .is_empty()
    );
    let received = got_all.len() as u64;
    let page = crate::util::raw_path(t.addr, "GET", "/_rivulet/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&page.body).into_owned();
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains("QueueName=\"metered\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(value("rivulet_queue_in_flight_records"), 3);
    assert_eq!(value("rivulet_queue_dead_letter_records"), dead_count);
    assert_eq!(value("rivulet_queue_visible_records"), 10 - received);
    assert_eq!(value("rivulet_queue_receives_total"), received);
    assert_eq!(value("rivulet_queue_acknowledgements_total"), 1);
    assert_eq!(value("rivulet_queue_redeliveries_total"), 0);
    let api = crate::util::raw_path(t.addr, "GET", "/_rivulet/api/queues", &[], b"").await;
    let api = api.json();
    let row = &api["queues"][0];
    assert_eq!(row["name"], "metered");
    assert_eq!(row["stream"], "m");
    assert_eq!(row["in_flight"], 3);
    assert_eq!(row["totals"]["receives"], received);
    t.stop().await;
}

/// Cluster mode: consumers on three nodes compete for one queue. Only the leader delivers
/// (the others forward), so no record is handed out twice within its visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_on_three_cluster_nodes_share_one_queue() {
    const RECORDS: usize = 3_000;
    let nats = rivulet_cluster::servers::NatsCluster::start(3)
        .await
        .expect("nats cluster");
    let nodes =
        crate::util::ClusterNodes::start(&nats, "rq", 3, rivulet_server::ServerConfig::for_tests())
            .await;
    let addrs = nodes.addrs();
    let stream_arn = on_demand_stream(&nodes.client, "shared").await;
    // Made through a follower, which forwards it to the leader.
    let queue = create_queue(
        addrs[1],
        "competing",
        &stream_arn,
        "TRIM_HORIZON",
        json!({}),
    )
    .await;
    put(&nodes.client, "shared", 0..RECORDS).await;
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for addr in addrs.iter().copied() {
        let (seen, queue) = (seen.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                let got = receive(addr, "ReceiveQueueRecords", &queue, 1).await;
                if got.is_empty() {
                    if seen.lock().unwrap().len() >= RECORDS {
                        return mine;
                    }
                    continue;
                }
                mine += got.len();
                for (data, _, _, count) in &got {
                    assert_eq!(*count, 1, "{data} handed out twice");
                    *seen.lock().unwrap().entry(data.clone()).or_default() += 1;
                }
                let failed = batch(addr, "AcknowledgeQueueRecords", &queue, handles(&got)).await;
                assert!(failed.is_empty(), "{failed:?}");
            }
        }));
    }
    let mut per_node = Vec::new();
    for worker in workers {
        per_node.push(
            tokio::time::timeout(Duration::from_secs(300), worker)
                .await
                .expect("the consumers finish")
                .expect("consumer"),
        );
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), RECORDS, "every record delivered");
        assert!(seen.values().all(|n| *n == 1), "none twice");
    }
    assert!(
        per_node.iter().all(|n| *n > 0),
        "every node's consumer got records: {per_node:?}"
    );
    // Every node describes the queue and counts it on its stream.
    for addr in &addrs {
        let described = op(*addr, "DescribeQueue", json!({"QueueARN": queue})).await;
        assert_eq!(described["QueueDescription"]["QueueStatus"], "ACTIVE");
    }
    nodes.stop().await;
    nats.stop().await.expect("stop nats");
}

/// An encrypted stream's queue delivers plaintext, and its Receive answers the KMS
/// exceptions when the key is disabled (ReceiveQueueRecords lists them), then works again.
#[tokio::test]
async fn an_encrypted_stream_s_queue_delivers_plaintext_and_enforces_the_key() {
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("kms-keys.toml");
    crate::encryption::kms_cli(&key_file, &["create-key", "--alias", "alias/q"]);
    let data = tempfile::tempdir().expect("data dir");
    let mut config = rivulet_server::ServerConfig::for_tests();
    config.storage = rivulet_server::Storage::Dir(data.path().to_path_buf());
    config.kms_keys = Some(key_file.clone());
    let t = TestServer::with_config(config).await;
    let stream_arn = on_demand_stream(&t.client, "sealed").await;
    t.client
        .start_stream_encryption()
        .stream_name("sealed")
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
        .key_id("alias/q")
        .send()
        .await
        .expect("start encryption");
    crate::util::wait_active(&t.client, "sealed").await;
    let queue = create_queue(t.addr, "plain", &stream_arn, "TRIM_HORIZON", json!({})).await;
    put(&t.client, "sealed", 0..3).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(receive(t.addr, "ReceiveQueueRecords", &queue, 2).await);
    }
    let mut data: Vec<String> = got.iter().map(|g| g.0.clone()).collect();
    data.sort();
    assert_eq!(data, ["r0", "r1", "r2"]);
    // Disabled: Receive fails with KMSDisabledException (once the server reads the file).
    crate::encryption::kms_cli(&key_file, &["disable-key", "alias/q"]);
    let (code, _) = crate::encryption::eventually("disable", || async {
        let response = call(
            t.addr,
            "ReceiveQueueRecords",
            &json!({"QueueARN": queue, "WaitTimeSeconds": 1}).to_string(),
        )
        .await;
        (response.status == 400)
            .then(|| crate::util::aws_error(&response))
            .map(|(_, c, m)| (c, m))
    })
    .await;
    assert_eq!(code, "KMSDisabledException");
    // Acknowledging reads no record data: it works meanwhile.
    assert!(
        batch(t.addr, "AcknowledgeQueueRecords", &queue, handles(&got))
            .await
            .is_empty()
    );
    crate::encryption::kms_cli(&key_file, &["enable-key", "alias/q"]);
    // Once the server has read the key file again, writes work too.
    for _ in 0..200 {
        let put = t
            .client
            .put_record()
            .stream_name("sealed")
            .partition_key("k3")
            .data(Blob::new("r3"))
            .send()
            .await;
        if put.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = Vec::new();
    for _ in 0..100 {
        let response = call(
            t.addr,
            "ReceiveQueueRecords",
            &json!({"QueueARN": queue, "WaitTimeSeconds": 1}).to_string(),
        )
        .await;
        if response.status == 200 {
            again = receive(t.addr, "ReceiveQueueRecords", &queue, 2).await;
            again.extend(
                response.json()["QueueRecords"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let data = base64_decode(r["Data"].as_str().unwrap_or_default());
                        (
                            String::from_utf8(data).unwrap_or_default(),
                            String::new(),
                            String::new(),
                            1,
                        )
                    }),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        again.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["r3"]
    );
    t.stop().await;
}

/// A server that stops answers its queue long polls at once (empty), instead of holding the
/// shutdown until they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_its_long_polls() {
    let t = TestServer::start().await;
    let stream_arn = on_demand_stream(&t.client, "stopping").await;
    let queue = create_queue(t.addr, "idle", &stream_arn, "LATEST", json!({})).await;
    let addr = t.addr;
    let poll = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let response = call(
            addr,
            "ReceiveQueueRecords",
            &json!({"QueueARN": queue, "WaitTimeSeconds": 20}).to_string(),
        )
        .await;
        (response.status, response.json(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = std::time::Instant::now();
    t.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the shutdown took {:?}",
        stopping.elapsed()
    );
    let (status, answer, waited) = poll.await.expect("poll");
    assert_eq!(status, 200);
    assert_eq!(answer["QueueRecords"], json!([]));
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
}
