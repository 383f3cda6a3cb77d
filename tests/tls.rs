//! TLS: `--tls-listen` with a generated self-signed certificate; ALPN negotiates HTTP/2, and
//! the Rust SDK (which speaks HTTP/2 only over TLS) works end to end, SubscribeToShard included.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rivulet_server::{ServerConfig, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::util::{AUTH, TestServer, create_stream, register_consumer};

async fn tls_server_with(
    credentials: Option<rivulet_server::sigv4::Credentials>,
) -> (TestServer, std::net::SocketAddr, Vec<u8>) {
    let mut config = ServerConfig::for_tests();
    config.credentials = credentials.map(Arc::new);
    config.tls = Some(TlsConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert: None,
        key: None,
    });
    let t = TestServer::with_config(config).await;
    let server = t.server.as_ref().expect("running");
    let addr = server.tls_addr().expect("TLS address");
    let (path, self_signed) = server.tls_certificate().expect("certificate").clone();
    assert!(self_signed);
    let pem = std::fs::read(&path).expect("certificate file");
    (t, addr, pem)
}

async fn tls_server() -> (TestServer, std::net::SocketAddr, Vec<u8>) {
    tls_server_with(None).await
}

fn remove_generated(pem_dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(pem_dir);
}

#[tokio::test]
async fn alpn_negotiates_h2_and_http_1_1() {
    let (t, addr, pem) = tls_server().await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("trust");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    for (alpn, version) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let stream = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        let request = http::Request::post(format!("https://localhost:{}/", addr.port()))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "Kinesis_20131202.ListStreams")
            .header("x-amz-date", "20260101T000000Z")
            .header("authorization", AUTH)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let response = if version == http::Version::HTTP_2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("response")
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("http/1.1");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("response")
        };
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            &body[..],
            br#"{"StreamNames":[],"HasMoreStreams":false,"StreamSummaries":[]}"#
        );
    }
    let dir = t
        .server
        .as_ref()
        .and_then(|s| s.tls_certificate())
        .map(|(p, _)| p.clone());
    t.stop().await;
    if let Some(dir) = dir.as_deref().and_then(std::path::Path::parent) {
        remove_generated(dir);
    }
}

#[tokio::test]
async fn the_rust_sdk_works_over_https() {
    // With signatures verified: over HTTP/2 the host comes from `:authority`.
    let (t, addr, pem) = tls_server_with(Some(crate::util::allow_all(vec![
        rivulet_server::sigv4::Credential {
            access_key_id: "AKIDTLS".into(),
            secret_access_key: "secret".into(),
            account_id: "000000000000".into(),
            principal_arn: "arn:aws:iam::000000000000:user/tls".into(),
            session_token: None,
            expires: None,
        },
    ])))
    .await;
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
                .build()
                .expect("TLS context"),
        )
        .build_https();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTLS", "secret", None, None, "test"))
        .endpoint_url(format!("https://localhost:{}", addr.port()))
        .http_client(http_client)
        .build();
    let c = Client::from_conf(config);
    let arn = create_stream(&c, "secure").await;
    let consumer = register_consumer(&c, &arn, "tls").await;
    let put = c
        .put_record()
        .stream_name("secure")
        .partition_key("k")
        .data(Blob::new("over h2"))
        .send()
        .await
        .expect("put");
    let mut sub = c
        .subscribe_to_shard()
        .consumer_arn(consumer)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::TrimHorizon)
                .build()
                .expect("position"),
        )
        .send()
        .await
        .expect("subscribe over HTTP/2 + TLS");
    let event = tokio::time::timeout(Duration::from_secs(10), sub.event_stream.recv())
        .await
        .expect("in time")
        .expect("event");
    match event {
        Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)) => {
            assert_eq!(e.records().len(), 1);
            assert_eq!(e.records()[0].sequence_number(), put.sequence_number());
        }
        other => panic!("unexpected {other:?}"),
    }
    drop(sub);
    let dir = t
        .server
        .as_ref()
        .and_then(|s| s.tls_certificate())
        .map(|(p, _)| p.clone());
    t.stop().await;
    if let Some(dir) = dir.as_deref().and_then(std::path::Path::parent) {
        remove_generated(dir);
    }
}

#[test]
fn the_binary_prints_its_self_signed_certificate_and_accepts_given_ones() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rivulet");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut out = Vec::new();
        for _ in 0..3 {
            match lines.next() {
                Some(Ok(line)) => {
                    let done = line.starts_with("rivulet TLS listening") && !extra.is_empty();
                    out.push(line);
                    if done || out.len() == 3 {
                        break;
                    }
                }
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        out
    };
    let generated = run(&[]);
    assert!(
        generated[0].starts_with("rivulet listening on 127.0.0.1:"),
        "{generated:?}"
    );
    assert!(
        generated[1].starts_with("rivulet TLS listening on 127.0.0.1:"),
        "{generated:?}"
    );
    let path = generated[2]
        .strip_prefix("rivulet TLS self-signed certificate (trust it in clients): ")
        .expect("the certificate's path is printed");
    assert!(
        std::fs::read_to_string(path)
            .expect("pem")
            .contains("BEGIN CERTIFICATE")
    );
    assert!(path.starts_with(dir.path().join("data").to_str().expect("utf8")));

    // A certificate and key of the user's own.
    let own =
        rcgen::generate_simple_self_signed(vec!["kinesis.internal".to_string()]).expect("cert");
    let cert = dir.path().join("own.pem");
    let key = dir.path().join("own.key");
    std::fs::write(&cert, own.cert.pem()).expect("write");
    std::fs::write(&key, own.signing_key.serialize_pem()).expect("write");
    let given = run(&[
        "--tls-cert",
        cert.to_str().expect("utf8"),
        "--tls-key",
        key.to_str().expect("utf8"),
    ]);
    assert!(
        given[1].starts_with("rivulet TLS listening on 127.0.0.1:"),
        "{given:?}"
    );
    assert_eq!(given.len(), 2, "no self-signed line: {given:?}");
    // A key that does not belong to the certificate is refused at start.
    let other = rcgen::generate_simple_self_signed(vec!["x".to_string()]).expect("cert");
    std::fs::write(&key, other.signing_key.serialize_pem()).expect("write");
    let refused = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("certificate and key do not match"));
}
