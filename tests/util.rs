//! Shared test helpers: start a server on port 0, build SDK clients, send raw requests.

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use rivulet_server::{Server, ServerConfig, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running server and a client pointed at it.
pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub client: Client,
}

impl TestServer {
    /// An in-memory server with no lifecycle delays.
    pub async fn start() -> TestServer {
        Self::with_config(ServerConfig::for_tests()).await
    }

    /// A server with the given configuration (its listen address should use port 0).
    pub async fn with_config(config: ServerConfig) -> TestServer {
        // A restart on the same data dir may find the stopped server's directory lock still
        // held for a moment: its last references are dropped by other tasks of this process
        // (a separate process would have exited). Wait for it, briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let server = loop {
            match Server::start(config.clone()).await {
                Ok(server) => break server,
                Err(error)
                    if format!("{error:#}").contains("in use by another process")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(error) => panic!("server starts: {error:?}"),
            }
        };
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            addr,
            client: client(addr),
        }
    }

    /// A durable server over `dir`.
    pub async fn on_disk(dir: &std::path::Path) -> TestServer {
        let mut config = ServerConfig::for_tests();
        config.storage = Storage::Dir(dir.to_path_buf());
        Self::with_config(config).await
    }

    /// Stops the server cleanly.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// An SDK client for a server at `addr`.
pub fn client(addr: SocketAddr) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(format!("http://{addr}"))
        .build();
    Client::from_conf(config)
}

/// An SDK client that makes one attempt per call: the SDK retries LimitExceededException and
/// 500s by default, which would hide the first answer a test wants to see.
pub fn client_without_retries(addr: SocketAddr) -> Client {
    let config = client(addr)
        .config()
        .to_builder()
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// The (code, message) of an SDK error.
pub fn error_of<E: ProvideErrorMetadata>(error: E) -> (String, String) {
    (
        error.code().unwrap_or_default().to_string(),
        error.message().unwrap_or_default().to_string(),
    )
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Signed-looking headers: the server checks SigV4 is present and well-formed, not its value.
pub const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/kinesis/aws4_request, \
                        SignedHeaders=host;x-amz-date, Signature=0000";

/// Sends one request to `/` over a fresh connection and reads the whole answer.
pub async fn raw(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    raw_path(addr, method, "/", headers, body).await
}

/// Sends one request to `path` over a fresh connection and reads the whole answer.
pub async fn raw_path(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("response in time")
        .expect("read");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = out;
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A JSON 1.1 request for `operation`, with auth headers.
pub async fn call(addr: SocketAddr, operation: &str, body: &str) -> RawResponse {
    let target = format!("Kinesis_20131202.{operation}");
    raw(
        addr,
        "POST",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", &target),
            ("Authorization", AUTH),
            ("X-Amz-Date", "20260101T000000Z"),
        ],
        body.as_bytes(),
    )
    .await
}

/// A CBOR request for `operation`, with auth headers.
pub async fn call_cbor(addr: SocketAddr, operation: &str, body: &[u8]) -> RawResponse {
    let target = format!("Kinesis_20131202.{operation}");
    raw(
        addr,
        "POST",
        &[
            ("Content-Type", "application/x-amz-cbor-1.1"),
            ("X-Amz-Target", &target),
            ("Authorization", AUTH),
            ("X-Amz-Date", "20260101T000000Z"),
        ],
        body,
    )
    .await
}

/// Creates a one-shard stream and returns its ARN.
pub async fn create_stream(c: &Client, name: &str) -> String {
    c.create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await
        .expect("create");
    stream_arn(c, name).await
}

/// The ARN of the stream `name`.
pub async fn stream_arn(c: &Client, name: &str) -> String {
    c.describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .expect("summary")
        .stream_description_summary()
        .expect("summary")
        .stream_arn()
        .to_string()
}

/// Registers consumer `name` on the stream `stream_arn` and returns the consumer's ARN.
pub async fn register_consumer(c: &Client, stream_arn: &str, name: &str) -> String {
    c.register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
        .expect("register")
        .consumer()
        .expect("consumer")
        .consumer_arn()
        .to_string()
}

/// Credentials whose principals may do anything with Kinesis (with `--auth sigv4`, a principal
/// without an allowing policy is denied everything).
pub fn allow_all(
    list: Vec<rivulet_server::sigv4::Credential>,
) -> rivulet_server::sigv4::Credentials {
    let arns: Vec<String> = list.iter().map(|c| c.principal_arn.clone()).collect();
    let mut credentials = rivulet_server::sigv4::Credentials::from_list(list);
    for arn in arns {
        let policy = rivulet_iam::Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*"}]}"#,
            rivulet_iam::Kind::Identity,
        )
        .expect("allow-all policy");
        credentials.attach(&arn, policy);
    }
    credentials
}

/// Waits (up to 5 s) until the stream `name` is ACTIVE, e.g. after an update.
pub async fn wait_active(c: &Client, name: &str) {
    wait_active_within(c, name, std::time::Duration::from_secs(5)).await;
}

/// Waits until the stream `name` is ACTIVE, within `limit`; an answer that it does not exist
/// (yet, on another node of a cluster) is waited through too.
pub async fn wait_active_within(c: &Client, name: &str, limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        let summary = c.describe_stream_summary().stream_name(name).send().await;
        if let Ok(summary) = summary
            && summary
                .stream_description_summary()
                .is_some_and(|s| s.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} did not become ACTIVE within {limit:?}");
}

/// A TRIM_HORIZON iterator for `shard` of the stream `name`.
pub async fn trim_horizon(c: &Client, name: &str, shard: &str) -> String {
    c.get_shard_iterator()
        .stream_name(name)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("iterator")
}

/// An error answer as (status, `__type`, message), the message under `message` or `Message`.
pub fn aws_error(response: &RawResponse) -> (u16, String, String) {
    let body = response.json();
    (
        response.status,
        body["__type"].as_str().unwrap_or_default().to_string(),
        body["message"]
            .as_str()
            .or(body["Message"].as_str())
            .unwrap_or_default()
            .to_string(),
    )
}

/// Every record of `shard` of the stream `name`, from TRIM_HORIZON to the end.
pub async fn read_all(c: &Client, name: &str, shard: &str) -> Vec<aws_sdk_kinesis::types::Record> {
    let mut iterator = trim_horizon(c, name, shard).await;
    let mut out = Vec::new();
    loop {
        let page = c
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .expect("records");
        let empty = page.records().is_empty();
        out.extend(page.records().iter().cloned());
        match page.next_shard_iterator() {
            Some(next) if !empty => iterator = next.to_string(),
            _ => return out,
        }
    }
}

/// The first GetRecords page of `shard` from the position `kind` (and `sequence`) names.
pub async fn first_page(
    c: &Client,
    name: &str,
    shard: &str,
    kind: aws_sdk_kinesis::types::ShardIteratorType,
    sequence: Option<&str>,
) -> aws_sdk_kinesis::operation::get_records::GetRecordsOutput {
    first_page_from(c, name, shard, kind, sequence, None).await
}

/// [`first_page`] with an AT_TIMESTAMP iterator's time too (ms since the epoch).
pub async fn first_page_from(
    c: &Client,
    name: &str,
    shard: &str,
    kind: aws_sdk_kinesis::types::ShardIteratorType,
    sequence: Option<&str>,
    timestamp_ms: Option<i64>,
) -> aws_sdk_kinesis::operation::get_records::GetRecordsOutput {
    let iterator = c
        .get_shard_iterator()
        .stream_name(name)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence.map(str::to_string))
        .set_timestamp(timestamp_ms.map(aws_sdk_kinesis::primitives::DateTime::from_millis))
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("iterator");
    c.get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .expect("records")
}

/// A `rivulet serve` process. Dropping it kills it (SIGKILL) and reaps it, so a failing test
/// leaves no server behind.
pub struct Process {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Process {
    /// `rivulet serve --listen 127.0.0.1:0` with `args`; returns once it listens.
    pub fn spawn(args: &[&str]) -> Process {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn rivulet");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let addr = line.trim().rsplit(' ').next().and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line: {line:?}");
        };
        Process { child, addr }
    }

    /// kill -9, and wait until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// PutRecords entries: partition key `key(i)` and data `data(i)` for each `i` of `range`.
pub fn entries(
    range: std::ops::Range<usize>,
    key: impl Fn(usize) -> String,
    data: impl Fn(usize) -> Vec<u8>,
) -> Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry> {
    range
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(key(i))
                .data(aws_sdk_kinesis::primitives::Blob::new(data(i)))
                .build()
                .expect("entry")
        })
        .collect()
}

/// One PutRecords of `entries` to `stream`, every entry accepted.
pub async fn put_all(
    c: &Client,
    stream: &str,
    entries: Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry>,
) {
    let out = c
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(out.failed_record_count(), Some(0));
}

/// The shards of `stream` (one ListShards page).
pub async fn shards_of(c: &Client, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    c.list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards")
        .shards()
        .to_vec()
}

/// Sends each request to the next of `nodes` in turn (before it is signed), as a client
/// behind a round-robin load balancer would.
#[derive(Debug)]
struct Spread {
    nodes: Vec<SocketAddr>,
    next: std::sync::atomic::AtomicUsize,
}

impl aws_sdk_kinesis::config::Intercept for Spread {
    fn name(&self) -> &'static str {
        "Spread"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextMut<
            '_,
        >,
        _components: &aws_sdk_kinesis::config::RuntimeComponents,
        _cfg: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let node = self.nodes[turn % self.nodes.len()];
        let request = context.request_mut();
        let path = request
            .uri()
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|at| rest[at..].to_string()))
            .unwrap_or_else(|| "/".to_string());
        request.set_uri(format!("http://{node}{path}"))?;
        Ok(())
    }
}

/// Rivulet nodes of one cluster deployment, in this process, and a client whose requests go
/// to each node in turn.
pub struct ClusterNodes {
    nodes: Vec<TestServer>,
    pub client: Client,
}

impl ClusterNodes {
    /// `count` nodes with `config` (its storage replaced) on `nats`, under `prefix`; the first
    /// leads.
    pub async fn start(
        nats: &rivulet_cluster::servers::NatsCluster,
        prefix: &str,
        count: usize,
        config: ServerConfig,
    ) -> ClusterNodes {
        Self::start_lagging(nats, prefix, count, config, Duration::ZERO).await
    }

    /// [`ClusterNodes::start`] with followers that take in the metadata other nodes commit
    /// only `lag` after it comes (a slow node).
    pub async fn start_lagging(
        nats: &rivulet_cluster::servers::NatsCluster,
        prefix: &str,
        count: usize,
        config: ServerConfig,
        lag: Duration,
    ) -> ClusterNodes {
        let mut nodes = Vec::new();
        for i in 0..count {
            let mut config = config.clone();
            config.storage = Storage::Cluster(Box::new(rivulet_cluster::store::ClusterSettings {
                // The first node leads at once; the others need not wait to.
                leader_wait: Duration::from_millis(if i == 0 { 5000 } else { 100 }),
                follow_lag: lag,
                ..nats.settings(&format!("{prefix}-{i}"), prefix)
            }));
            nodes.push(TestServer::with_config(config).await);
        }
        let spread = Spread {
            nodes: nodes.iter().map(|node| node.addr).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        };
        let client = Client::from_conf(
            nodes[0]
                .client
                .config()
                .to_builder()
                .interceptor(spread)
                .build(),
        );
        ClusterNodes { nodes, client }
    }

    /// Each node's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|node| node.addr).collect()
    }

    /// Stops every node cleanly.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}
