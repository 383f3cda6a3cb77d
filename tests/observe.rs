//! What Rivulet serves about itself under `/_rivulet/`: Prometheus metrics with CloudWatch's
//! names and dimensions (shard level only as EnableEnhancedMonitoring says), health and
//! readiness, and JSON logs.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{MetricsName, PutRecordsRequestEntry};
use rivulet_server::ServerConfig;

use crate::util::{TestServer, client_without_retries, create_stream, raw_path};

async fn metrics(addr: std::net::SocketAddr) -> String {
    let page = raw_path(addr, "GET", "/_rivulet/metrics", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    String::from_utf8(page.body).expect("utf-8")
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn prometheus_metrics_follow_cloudwatch_and_enhanced_monitoring() {
    let mut config = ServerConfig::for_tests();
    config.engine.limits_scale = Some(0.01); // 10 records/s per shard: throttling shows up
    let t = TestServer::with_config(config).await;
    let c = client_without_retries(t.addr);
    create_stream(&c, "metered").await;
    let stream = "AccountId=\"000000000000\",StreamName=\"metered\"";
    let shard =
        "AccountId=\"000000000000\",StreamName=\"metered\",ShardId=\"shardId-000000000000\"";
    c.put_record()
        .stream_name("metered")
        .partition_key("k")
        .data(Blob::new("12345"))
        .send()
        .await
        .expect("put");
    let batch = c
        .put_records()
        .stream_name("metered")
        .set_records(Some(
            (0..20)
                .map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("k{i:02}"))
                        .data(Blob::new("abcde"))
                        .build()
                        .expect("entry")
                })
                .collect(),
        ))
        .send()
        .await
        .expect("put records");
    let throttled = batch.failed_record_count().unwrap_or_default();
    assert!(throttled > 0, "the limit should refuse some of 20 records");
    let accepted = 20 - throttled;
    let iterator = crate::util::trim_horizon(&c, "metered", "shardId-000000000000").await;
    let read = c
        .get_records()
        .shard_iterator(&iterator)
        .send()
        .await
        .expect("get records");
    let read_count = read.records().len() as f64;
    assert_eq!(read_count, f64::from(accepted + 1));

    let text = metrics(t.addr).await;
    let of = |name: &str| value(&text, &format!("kinesis_{name}{{{stream}}}"));
    assert_eq!(of("IncomingRecords"), Some(f64::from(accepted + 1)));
    assert_eq!(of("IncomingBytes"), Some(f64::from(6 + accepted * 8)));
    assert_eq!(of("PutRecord_Success"), Some(1.0));
    assert_eq!(of("PutRecord_Bytes"), Some(6.0));
    assert_eq!(of("PutRecords_TotalRecords"), Some(20.0));
    assert_eq!(
        of("PutRecords_SuccessfulRecords"),
        Some(f64::from(accepted))
    );
    assert_eq!(
        of("PutRecords_ThrottledRecords"),
        Some(f64::from(throttled))
    );
    assert_eq!(
        of("WriteProvisionedThroughputExceeded"),
        Some(f64::from(throttled))
    );
    assert_eq!(of("GetRecords_Records"), Some(read_count));
    assert_eq!(of("OutgoingRecords"), Some(read_count));
    assert_eq!(of("GetRecords_Success"), Some(1.0));
    assert!(of("GetRecords_IteratorAgeMilliseconds").is_some());
    assert!(of("PutRecord_Latency").is_some_and(|ms| ms >= 0.0));
    assert!(text.contains("# TYPE kinesis_IncomingRecords counter"));
    assert!(text.contains("# TYPE kinesis_GetRecords_IteratorAgeMilliseconds gauge"));
    assert!(text.contains(
        "# HELP kinesis_PutRecords_TotalRecords AWS/Kinesis PutRecords.TotalRecords (Count)"
    ));
    assert!(
        !text.contains("ShardId="),
        "no shard level before enhanced monitoring"
    );

    // Enhanced monitoring: only the chosen shard-level metrics appear, per shard.
    let enabled = c
        .enable_enhanced_monitoring()
        .stream_name("metered")
        .shard_level_metrics(MetricsName::IncomingRecords)
        .shard_level_metrics(MetricsName::ReadProvisionedThroughputExceeded)
        .send()
        .await
        .expect("enable");
    assert!(enabled.current_shard_level_metrics().is_empty());
    assert_eq!(
        enabled.desired_shard_level_metrics(),
        [
            MetricsName::IncomingRecords,
            MetricsName::ReadProvisionedThroughputExceeded
        ]
    );
    assert_eq!(
        enabled.stream_arn(),
        Some("arn:aws:kinesis:us-east-1:000000000000:stream/metered")
    );
    let described = c
        .describe_stream()
        .stream_name("metered")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        described
            .stream_description()
            .map(|d| d.enhanced_monitoring()[0].shard_level_metrics().to_vec()),
        Some(vec![
            MetricsName::IncomingRecords,
            MetricsName::ReadProvisionedThroughputExceeded
        ])
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the write bucket refills
    c.put_record()
        .stream_name("metered")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .expect("put");
    // A twentieth of a GetRecords call per second: the second read is throttled.
    let throttled_read = c
        .get_records()
        .shard_iterator(read.next_shard_iterator().expect("next"))
        .send()
        .await
        .expect_err("read throttled");
    assert_eq!(
        crate::util::error_of(throttled_read.into_service_error()).0,
        "ProvisionedThroughputExceededException"
    );
    let text = metrics(t.addr).await;
    assert_eq!(
        value(&text, &format!("kinesis_IncomingRecords{{{shard}}}")),
        Some(1.0)
    );
    for labels in [shard, stream] {
        assert_eq!(
            value(
                &text,
                &format!("kinesis_ReadProvisionedThroughputExceeded{{{labels}}}")
            ),
            Some(1.0)
        );
    }
    assert_eq!(
        value(&text, &format!("kinesis_OutgoingRecords{{{shard}}}")),
        None
    );

    let disabled = c
        .disable_enhanced_monitoring()
        .stream_name("metered")
        .shard_level_metrics(MetricsName::All)
        .send()
        .await
        .expect("disable");
    assert_eq!(disabled.current_shard_level_metrics().len(), 2);
    assert!(disabled.desired_shard_level_metrics().is_empty());
    assert!(!metrics(t.addr).await.contains("ShardId="));

    // Deleting the stream removes its series.
    c.delete_stream()
        .stream_name("metered")
        .send()
        .await
        .expect("delete");
    for _ in 0..50 {
        if !metrics(t.addr).await.contains("metered") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!metrics(t.addr).await.contains("StreamName=\"metered\""));
    t.stop().await;
}

#[tokio::test]
async fn health_readiness_and_the_reserved_prefix() {
    let t = TestServer::start().await;
    let health = raw_path(t.addr, "GET", "/_rivulet/health", &[], b"").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, "ok".into())
    );
    let ready = raw_path(t.addr, "GET", "/_rivulet/ready", &[], b"").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, "ready".into())
    );
    assert_eq!(
        raw_path(t.addr, "GET", "/_rivulet/nothing", &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        raw_path(t.addr, "POST", "/_rivulet/metrics", &[], b"")
            .await
            .status,
        405
    );
    // Outside the prefix everything answers as AWS does.
    let other = raw_path(t.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(other.status, 403);
    assert!(String::from_utf8_lossy(&other.body).contains("<AccessDeniedException>"));
    t.stop().await;
}

#[tokio::test]
async fn json_logs() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
            "--log-format",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rivulet");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), stderr.next_line())
        .await
        .expect("a log line in time")
        .expect("read")
        .expect("a line");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(entry["level"], "INFO");
    assert_eq!(entry["message"], "rivulet is serving the Kinesis API");
    assert!(
        entry["listen"]
            .as_str()
            .is_some_and(|l| l.starts_with("127.0.0.1:"))
    );
    child.kill().await.expect("stop");
}

/// An alarm from the configuration fires on real puts, shows at `/_rivulet/alarms` and POSTs
/// its change to the webhook.
#[tokio::test]
async fn alarms_fire_and_call_the_webhook() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("hook");
    let hook_addr = hook.local_addr().expect("addr");
    let (posted_tx, mut posted) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = hook.accept().await {
            let tx = posted_tx.clone();
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            let _ = tx.send(body.to_string());
                            let _ = socket
                                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            break;
                        }
                    }
                }
            });
        }
    });
    let rule: rivulet_server::alarms::AlarmRule = toml::from_str(
        r#"
alarm_name = "hot-stream"
metric_name = "IncomingRecords"
statistic = "Sum"
period = 10
evaluation_periods = 1
comparison_operator = "GreaterThanOrEqualToThreshold"
threshold = 10
dimensions = { StreamName = "hot" }
"#,
    )
    .expect("rule");
    let mut config = ServerConfig::for_tests();
    config.alarms = vec![rule];
    config.alarm_webhook = Some(format!("http://{hook_addr}/alarms"));
    let t = TestServer::with_config(config).await;
    let alarms = || async {
        raw_path(t.addr, "GET", "/_rivulet/alarms", &[], b"")
            .await
            .json()["alarms"][0]
            .clone()
    };
    assert_eq!(alarms().await["state"], "INSUFFICIENT_DATA");
    let c = client_without_retries(t.addr);
    create_stream(&c, "hot").await;
    c.put_records()
        .stream_name("hot")
        .set_records(Some(
            (0..25)
                .map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("k{i}"))
                        .data(Blob::new("x"))
                        .build()
                        .expect("entry")
                })
                .collect(),
        ))
        .send()
        .await
        .expect("put");
    // The 10 s period holding the puts must end before CloudWatch's rules can judge it.
    let body = tokio::time::timeout(std::time::Duration::from_secs(25), posted.recv())
        .await
        .expect("a webhook call in time")
        .expect("body");
    let note: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(note["AlarmName"], "hot-stream");
    assert_eq!(note["NewStateValue"], "ALARM");
    assert_eq!(note["OldStateValue"], "INSUFFICIENT_DATA");
    assert_eq!(note["Trigger"]["MetricName"], "IncomingRecords");
    assert_eq!(note["Trigger"]["Dimensions"][0]["value"], "hot");
    let shown = alarms().await;
    assert_eq!(shown["state"], "ALARM");
    assert_eq!(shown["datapoints"][0], 25.0);
    t.stop().await;
}

#[tokio::test]
async fn browsers_are_sent_to_the_console_and_its_api_answers() {
    let t = TestServer::start().await;
    let browser = raw_path(
        t.addr,
        "GET",
        "/",
        &[("Accept", "text/html,application/xhtml+xml")],
        b"",
    )
    .await;
    assert_eq!(browser.status, 302);
    assert_eq!(browser.header("location"), Some("/_rivulet/"));
    // A signed request, or one that does not want HTML, still gets AWS's answer.
    for headers in [
        vec![
            ("Accept", "text/html"),
            ("Authorization", crate::util::AUTH),
        ],
        vec![("Accept", "*/*")],
    ] {
        let aws = raw_path(t.addr, "GET", "/", &headers, b"").await;
        assert_eq!(aws.status, 403, "{headers:?}");
    }
    let page = raw_path(t.addr, "GET", "/_rivulet/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<title>Rivulet console</title>"));
    for asset in ["/_rivulet/console.js", "/_rivulet/console.css"] {
        assert_eq!(raw_path(t.addr, "GET", asset, &[], b"").await.status, 200);
    }

    let c = client_without_retries(t.addr);
    create_stream(&c, "browsed").await;
    c.put_record()
        .stream_name("browsed")
        .partition_key("pk")
        .data(Blob::new(r#"{"hello":"world"}"#))
        .send()
        .await
        .expect("put");
    let streams = raw_path(t.addr, "GET", "/_rivulet/api/streams", &[], b"")
        .await
        .json();
    let stream = &streams["streams"][0];
    assert_eq!(stream["name"], "browsed");
    assert_eq!(stream["status"], "ACTIVE");
    assert_eq!(stream["totals"]["IncomingRecords"], 1.0);
    assert_eq!(stream["shards"][0]["start"], 0.0);
    assert_eq!(stream["shards"][0]["end"], 1.0);
    let records = raw_path(
        t.addr,
        "GET",
        "/_rivulet/api/records?stream=browsed&shard=shardId-000000000000&position=TRIM_HORIZON",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(records["records"][0]["partition_key"], "pk");
    assert_eq!(records["records"][0]["data"], "eyJoZWxsbyI6IndvcmxkIn0=");
    // Browsing reads without iterators or limits, and is not a GetRecords in the metrics.
    let text = metrics(t.addr).await;
    assert!(!text.contains("kinesis_GetRecords_Records"), "{text}");
    let missing = raw_path(
        t.addr,
        "GET",
        "/_rivulet/api/records?stream=nope&shard=shardId-000000000000",
        &[],
        b"",
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["__type"], "ResourceNotFoundException");
    t.stop().await;
}

/// An on-demand stream under a spike, at `--on-demand-time-scale 60` (AWS's 15-minute step
/// in 15 s): throttled at first, split once within seconds, and not again before the step's
/// time is up; its load, peak and target are on `/_rivulet/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_spike_shows_in_the_scaler_s_metrics() {
    let mut config = ServerConfig::for_tests();
    config.engine.limits_scale = Some(0.01); // 10 records/s per shard
    config.engine.on_demand_time_scale = 60.0;
    let t = TestServer::with_config(config).await;
    let c = client_without_retries(t.addr);
    c.create_stream()
        .stream_name("spiky")
        .stream_mode_details(
            aws_sdk_kinesis::types::StreamModeDetails::builder()
                .stream_mode(aws_sdk_kinesis::types::StreamMode::OnDemand)
                .build()
                .expect("mode"),
        )
        .send()
        .await
        .expect("create");
    let open = || async {
        c.describe_stream_summary()
            .stream_name("spiky")
            .send()
            .await
            .expect("summary")
            .stream_description_summary()
            .expect("summary")
            .open_shard_count()
    };
    // 400 records/s offered (ten times the 40 the 4 shards take), for 8 s.
    let started = std::time::Instant::now();
    let (mut offered, mut throttled) = (0, 0);
    let mut round = 0;
    while started.elapsed() < std::time::Duration::from_secs(8) {
        let entries = (0..40)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("k{round}-{i}"))
                    .data(Blob::new("0123456789"))
                    .build()
                    .expect("entry")
            })
            .collect();
        let put = c
            .put_records()
            .stream_name("spiky")
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        offered += 40;
        throttled += put.failed_record_count().unwrap_or(0);
        round += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        throttled > offered / 2,
        "{throttled} of {offered} throttled"
    );
    // One step (every shard ran hot): 8 shards, and no second step within 15 s of it.
    assert_eq!(open().await, 8);
    let text = metrics(t.addr).await;
    let stream = "{AccountId=\"000000000000\",StreamName=\"spiky\"}";
    let peak = value(&text, &format!("rivulet_on_demand_peak_shards{stream}")).expect("peak");
    // Accepted writes, averaged over 5 s: the 4 shards' 40 records/s, then the 8 shards' 80
    // (and the new shards' first burst).
    assert!((3.0..=12.0).contains(&peak), "peak {peak}\n{text}");
    let target = value(&text, &format!("rivulet_on_demand_target_shards{stream}")).expect("target");
    assert!(target >= 8.0, "target {target}");
    assert_eq!(
        value(
            &text,
            &format!("rivulet_on_demand_shard_limit_hits_total{stream}")
        ),
        Some(0.0)
    );
    assert!(value(&text, &format!("rivulet_on_demand_load_shards{stream}")).is_some());
}
