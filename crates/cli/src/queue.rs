//! `rivulet queue receive`: a queue's records on stdout, one line each, for the shell, with a
//! progress line on stderr. With `--ack`, each batch is acknowledged once its lines are
//! written (at least once into the pipe: a crash between the two redelivers them).
//!
//! `aws-sdk-kinesis` has no queue operations yet, so these calls are made here: JSON 1.1
//! requests signed with SigV4 (`aws-sigv4`, the SDK's own signer) with the credentials and
//! region the SDK's configuration resolves, over hyper (HTTPS through rustls).

use std::io::Write;
use std::time::SystemTime;

use aws_sdk_kinesis::config::ProvideCredentials;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use serde_json::{Value, json};

/// `rivulet queue …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// Receive a queue's records: each record's data on its own line (base64 when it is not
    /// UTF-8 text without newlines)
    Receive(ReceiveArgs),
}

/// `rivulet queue receive`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiveArgs {
    /// The queue's ARN
    #[arg(long)]
    pub queue: String,
    /// Acknowledge each batch once its lines are written
    #[arg(long)]
    pub ack: bool,
    /// Receive from the queue's dead letters instead
    #[arg(long)]
    pub dead_letters: bool,
    /// Stop after this many records
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after the first receive that finds nothing
    #[arg(long)]
    pub until_empty: bool,
    /// Records per call (1–10)
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// Long-poll for up to this many seconds per call (1–20)
    #[arg(long, default_value_t = 20)]
    pub wait: u32,
    /// Visibility timeout for the records received [default: the queue's]
    #[arg(long)]
    pub visibility: Option<u32>,
    /// No progress line
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: crate::Connection,
}

/// What a receive run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveSummary {
    pub received: u64,
    pub acknowledged: u64,
}

/// A signed JSON 1.1 caller of one endpoint, for operations the SDK does not have.
pub struct Caller {
    endpoint: String,
    region: String,
    credentials: aws_sdk_kinesis::config::Credentials,
    http: HttpClient<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<bytes::Bytes>,
    >,
}

impl Caller {
    /// A caller with the credentials and region the SDK's configuration resolves.
    pub async fn new(connection: &crate::Connection) -> anyhow::Result<Caller> {
        let config = connection.sdk_config(None).await;
        let region = config
            .region()
            .map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| anyhow::anyhow!("no credentials"))?
            .provide_credentials()
            .await
            .map_err(|e| anyhow::anyhow!("credentials: {e}"))?;
        Caller::with(&connection.endpoint_url, &region, credentials)
    }

    /// A caller signing with `credentials` for `region`.
    pub fn with(
        endpoint: &str,
        region: &str,
        credentials: aws_sdk_kinesis::config::Credentials,
    ) -> anyhow::Result<Caller> {
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| anyhow::anyhow!("TLS set-up: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = HttpClient::builder(hyper_util::rt::TokioExecutor::new()).build(tls);
        Ok(Caller {
            endpoint: endpoint.trim_end_matches('/').to_string() + "/",
            region: region.to_string(),
            credentials,
            http,
        })
    }

    /// One operation; the answer's document, or the service's error as `CODE: message`.
    pub async fn call(&self, operation: &str, input: &Value) -> anyhow::Result<Value> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let body = input.to_string().into_bytes();
        let target = format!("Kinesis_20131202.{operation}");
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &target)
            .body(Full::new(bytes::Bytes::from(body.clone())))?;
        let host = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        request.headers_mut().insert("host", host.parse()?);
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesis")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            &self.endpoint,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        instructions.apply_to_request_http1x(&mut request);
        let response = self.http.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let document: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("{operation}: HTTP {status}, not JSON ({e}): {bytes:?}")
            })?
        };
        if !status.is_success() {
            let code = document["__type"]
                .as_str()
                .unwrap_or("Unknown")
                .rsplit('#')
                .next()
                .unwrap_or("Unknown")
                .to_string();
            let message = document["message"]
                .as_str()
                .or_else(|| document["Message"].as_str())
                .unwrap_or_default();
            anyhow::bail!("{code}: {message}");
        }
        Ok(document)
    }
}

/// A record's data as one line.
fn line(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if !text.contains(['\n', '\r']) => text.to_string(),
        _ => base64::engine::general_purpose::STANDARD.encode(data),
    }
}

/// `rivulet queue`, as a boxed future (see [`crate::Task`]).
pub fn run_task(command: QueueCommand) -> crate::Task<ReceiveSummary> {
    Box::pin(async move {
        match command {
            QueueCommand::Receive(args) => receive(args).await,
        }
    })
}

/// `rivulet queue receive`.
pub async fn receive(args: ReceiveArgs) -> anyhow::Result<ReceiveSummary> {
    if !(1..=10).contains(&args.limit) {
        anyhow::bail!("--limit must be 1 to 10");
    }
    if !(1..=20).contains(&args.wait) {
        anyhow::bail!("--wait must be 1 to 20");
    }
    let caller = Caller::new(&args.connection).await?;
    let (receive_op, ack_op) = if args.dead_letters {
        (
            "ReceiveDeadLetterQueueRecords",
            "AcknowledgeDeadLetterQueueRecords",
        )
    } else {
        ("ReceiveQueueRecords", "AcknowledgeQueueRecords")
    };
    let bar = crate::spinner(
        args.quiet,
        "{spinner} {pos} records received{msg} ({per_sec}, {elapsed})",
    );
    let mut summary = ReceiveSummary::default();
    let stdout = std::io::stdout();
    loop {
        let remaining = args.count.map(|c| c.saturating_sub(summary.received));
        if remaining == Some(0) {
            break;
        }
        let limit = remaining.map_or(args.limit, |r| r.min(u64::from(args.limit)) as u32);
        let mut input =
            json!({"QueueARN": args.queue, "Limit": limit, "WaitTimeSeconds": args.wait});
        if let Some(visibility) = args.visibility {
            input["VisibilityTimeoutSeconds"] = json!(visibility);
        }
        let answer = caller.call(receive_op, &input).await?;
        let records = answer["QueueRecords"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if records.is_empty() {
            if args.until_empty {
                break;
            }
            continue;
        }
        {
            let mut out = stdout.lock();
            for record in &records {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(record["Data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                writeln!(out, "{}", line(&data))?;
            }
            out.flush()?;
        }
        summary.received += records.len() as u64;
        bar.set_position(summary.received);
        if args.ack {
            let entries: Vec<Value> = records
                .iter()
                .map(|r| json!({"ReceiptHandle": r["ReceiptHandle"]}))
                .collect();
            let answer = caller
                .call(ack_op, &json!({"QueueARN": args.queue, "Entries": entries}))
                .await?;
            summary.acknowledged += answer["Successful"].as_array().map_or(0, Vec::len) as u64;
            for failed in answer["Failed"].as_array().into_iter().flatten() {
                bar.suspend(|| {
                    eprintln!(
                        "not acknowledged: {}: {}",
                        failed["ErrorCode"].as_str().unwrap_or_default(),
                        failed["ErrorMessage"].as_str().unwrap_or_default()
                    )
                });
            }
            bar.set_message(format!(", {} acknowledged", summary.acknowledged));
        }
    }
    bar.finish_and_clear();
    if !args.quiet {
        eprintln!(
            "{} records received, {} acknowledged",
            summary.received, summary.acknowledged
        );
    }
    Ok(summary)
}
