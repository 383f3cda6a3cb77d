//! The command line against a real server: `rivulet apply` (plan, create, update, unchanged,
//! dry run), `rivulet put` from stdin and `rivulet tail` across a split, `rivulet plan`.

use std::io::Write;
use std::process::{Command, Stdio};

use aws_sdk_kinesis::types::{EncryptionType, MetricsName, ShardFilterType, StreamMode};

use crate::util::{TestServer, client_without_retries};

fn rivulet(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rivulet");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("rivulet ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// The server runs on the test's runtime while the CLI process is awaited: two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_plans_creates_updates_and_leaves_alone() {
    let t = TestServer::start().await;
    let endpoint = format!("http://{}", t.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("streams.toml");
    let write = |text: &str| std::fs::write(&file, text).expect("write streams file");
    write(
        r#"
[[stream]]
name = "orders"
shard_count = 2
retention_period = 48
encryption_type = "KMS"
kms_key_id = "alias/aws/kinesis"
shard_level_metrics = ["IncomingBytes", "IncomingRecords"]
tags = { team = "data", env = "dev" }

[[stream]]
name = "clicks"
stream_mode_details = { stream_mode = "ON_DEMAND" }
"#,
    );
    let path = file.to_str().expect("path");
    let args = |extra: &[&'static str]| {
        let mut all = vec!["apply", "-f", path, "--endpoint-url", endpoint.as_str()];
        all.extend_from_slice(extra);
        all.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |extra: &[&'static str]| {
        let owned = args(extra);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        rivulet(&refs, None)
    };

    // --dry-run prints the plan and changes nothing.
    let (ok, out, err) = run(&["--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("+ orders: create (PROVISIONED, 2 shards;"),
        "{out}"
    );
    assert!(out.contains("+ clicks: create (ON_DEMAND)"), "{out}");
    assert!(
        out.contains("Plan: 2 to create, 0 to update, 0 unchanged."),
        "{out}"
    );
    let c = client_without_retries(t.addr);
    assert!(
        c.list_streams()
            .send()
            .await
            .expect("list")
            .stream_names()
            .is_empty()
    );

    let (ok, out, err) = run(&[]);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains("orders: done") && out.contains("clicks: done"),
        "{out}"
    );
    let summary = c
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await
        .expect("summary");
    let s = summary.stream_description_summary().expect("summary");
    assert_eq!(s.open_shard_count(), 2);
    assert_eq!(s.retention_period_hours(), 48);
    assert_eq!(s.encryption_type(), Some(&EncryptionType::Kms));
    assert_eq!(s.key_id(), Some("alias/aws/kinesis"));
    assert_eq!(
        s.enhanced_monitoring()[0].shard_level_metrics(),
        [MetricsName::IncomingBytes, MetricsName::IncomingRecords]
    );
    let clicks = c
        .describe_stream_summary()
        .stream_name("clicks")
        .send()
        .await
        .expect("summary");
    assert_eq!(
        clicks
            .stream_description_summary()
            .and_then(|s| s.stream_mode_details())
            .map(|m| m.stream_mode().clone()),
        Some(StreamMode::OnDemand)
    );

    // Applying the same file again changes nothing.
    let (ok, out, _) = run(&[]);
    assert!(ok);
    assert!(
        out.contains("= orders: unchanged") && out.contains("= clicks: unchanged"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 0 to create, 0 to update, 2 unchanged."),
        "{out}"
    );

    // A changed file updates exactly what changed.
    write(
        r#"
[[stream]]
name = "orders"
shard_count = 4
retention_period = 24
shard_level_metrics = ["IncomingBytes"]
tags = { team = "payments" }

[[stream]]
name = "clicks"
stream_mode_details = { stream_mode = "ON_DEMAND" }
"#,
    );
    let (ok, out, err) = run(&[]);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains(
            "~ orders: shard_count 2 → 4; retention_period 48 → 24; encryption KMS \
             (alias/aws/kinesis) → NONE; shard_level_metrics − IncomingRecords; tags + \
             team=payments; tags − env"
        ),
        "{out}"
    );
    assert!(
        out.contains("Plan: 0 to create, 1 to update, 1 unchanged."),
        "{out}"
    );
    let s = c
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await
        .expect("summary");
    let s = s.stream_description_summary().expect("summary");
    assert_eq!((s.open_shard_count(), s.retention_period_hours()), (4, 24));
    assert_eq!(s.encryption_type(), Some(&EncryptionType::None));
    let tags = c
        .list_tags_for_stream()
        .stream_name("orders")
        .send()
        .await
        .expect("tags");
    let tags: Vec<(&str, &str)> = tags
        .tags()
        .iter()
        .map(|t| (t.key(), t.value().unwrap_or_default()))
        .collect();
    assert_eq!(tags, [("team", "payments")]);

    // A bad file is refused before anything is touched.
    write("[[stream]]\nname = \"bad\"\n");
    let (ok, _, err) = run(&[]);
    assert!(!ok);
    assert!(
        err.contains("a PROVISIONED stream needs shard_count"),
        "{err}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_tail_follow_a_stream_through_a_split() {
    let t = TestServer::start().await;
    let endpoint = format!("http://{}", t.addr);
    let c = client_without_retries(t.addr);
    crate::util::create_stream(&c, "events").await;
    let lines: String = (0..1200)
        .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 7))
        .collect();
    let (ok, _, err) = rivulet(
        &[
            "put",
            "--stream",
            "events",
            "--key-field",
            "user",
            "--endpoint-url",
            &endpoint,
            "--quiet",
        ],
        Some(&lines),
    );
    assert!(ok, "{err}");
    assert!(err.contains("put 1200 records"), "{err}");

    // Split the shard, then put more: tail reads the parent before its children (and, after
    // the merge below, both children before the merged shard).
    let shard = c
        .list_shards()
        .stream_name("events")
        .send()
        .await
        .expect("shards")
        .shards()[0]
        .clone();
    c.split_shard()
        .stream_name("events")
        .shard_to_split(shard.shard_id())
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .expect("split");
    let more: String = (1200..1500)
        .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 7))
        .collect();
    let (ok, _, err) = rivulet(
        &[
            "put",
            "--stream",
            "events",
            "--key-field",
            "user",
            "--endpoint-url",
            &endpoint,
            "--quiet",
            "--batch",
            "100",
        ],
        Some(&more),
    );
    assert!(ok, "{err}");
    let open = c
        .list_shards()
        .stream_name("events")
        .shard_filter(
            aws_sdk_kinesis::types::ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("open shards");
    assert_eq!(open.shards().len(), 2);

    // And merge the two children back: the merged shard has two parents.
    let children: Vec<String> = open
        .shards()
        .iter()
        .map(|s| s.shard_id().to_string())
        .collect();
    c.merge_shards()
        .stream_name("events")
        .shard_to_merge(&children[0])
        .adjacent_shard_to_merge(&children[1])
        .send()
        .await
        .expect("merge");
    let last: String = (1500..1600)
        .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 7))
        .collect();
    let (ok, _, err) = rivulet(
        &[
            "put",
            "--stream",
            "events",
            "--key-field",
            "user",
            "--endpoint-url",
            &endpoint,
            "--quiet",
        ],
        Some(&last),
    );
    assert!(ok, "{err}");

    let (ok, out, err) = rivulet(
        &[
            "tail",
            "--stream",
            "events",
            "--from",
            "trim-horizon",
            "--format",
            "json",
            "--max-records",
            "1600",
            "--endpoint-url",
            &endpoint,
        ],
        None,
    );
    assert!(ok, "{err}");
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(records.len(), 1600);
    // Per user (partition key), records come in the order they were put, across the split.
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for r in &records {
        assert_eq!(r["encoding"], "utf-8");
        let data: serde_json::Value =
            serde_json::from_str(r["data"].as_str().expect("data")).expect("record JSON");
        let user = data["user"].as_str().expect("user").to_string();
        assert_eq!(r["partitionKey"], user.as_str());
        let n = data["n"].as_i64().expect("n");
        if let Some(previous) = last.insert(user, n) {
            assert!(n > previous, "out of order: {previous} then {n}");
        }
    }
    let mut all: Vec<i64> = records
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r["data"].as_str().unwrap_or("{}"))
                .ok()
                .and_then(|d| d["n"].as_i64())
                .unwrap_or(-1)
        })
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..1600).collect::<Vec<_>>(),
        "every record exactly once"
    );
    t.stop().await;
}

#[test]
fn plan_prints_its_reasoning() {
    let (ok, out, err) = rivulet(
        &[
            "plan",
            "--records-per-second",
            "5000",
            "--average-record-kb",
            "2",
            "--peak-multiplier",
            "3",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("write throughput: 29.30 MiB/s"), "{out}");
    assert!(out.contains("→ 30 shards"), "{out}");
    assert!(out.contains("ON_DEMAND"), "{out}");
}

/// `serve --streams FILE` declares the streams as the server starts.
#[tokio::test]
async fn serve_applies_a_streams_file_at_start() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("streams.toml");
    std::fs::write(
        &file,
        "[[stream]]\nname = \"declared\"\nshard_count = 3\ntags = { owner = \"ops\" }\n",
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
            "--create-stream-ms",
            "0",
        ])
        .arg("--streams")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = stdout
            .next_line()
            .await
            .expect("read")
            .expect("listening line");
        if let Some(addr) = line.strip_prefix("rivulet listening on ") {
            break addr.parse().expect("address");
        }
    };
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), stderr.next_line())
            .await
            .expect("the streams applied in time")
            .expect("read")
            .expect("a log line");
        if line.contains("declared: done") {
            break;
        }
    }
    let c = client_without_retries(addr);
    let summary = c
        .describe_stream_summary()
        .stream_name("declared")
        .send()
        .await
        .expect("declared stream");
    assert_eq!(
        summary
            .stream_description_summary()
            .map(|s| s.open_shard_count()),
        Some(3)
    );
    child.kill().await.expect("stop");
}

/// `rivulet bench`: a JSON line per result on stdout, the summary table on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_json_lines_and_a_table() {
    let t = TestServer::start().await;
    let endpoint = t.addr.to_string();
    let (ok, out, err) = rivulet(
        &[
            "bench",
            "--endpoint",
            &endpoint,
            "--shards",
            "1",
            "put-records",
            "--seconds",
            "1",
            "--connections",
            "1",
            "--batch",
            "10",
        ],
        None,
    );
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(line["workload"], "put-records-100B");
    assert!(
        line["records_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{line}"
    );
    assert!(
        err.contains("server") && err.contains("put-records-100B"),
        "{err}"
    );
    t.stop().await;
}
