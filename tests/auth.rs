//! `--auth sigv4`: real SDK signatures verified end to end; wrong secrets, unknown keys,
//! skewed clocks and expired session tokens refused with AWS's exceptions.

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials as SdkCredentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use rivulet_server::ServerConfig;
use rivulet_server::sigv4::{Credential, Credentials};

use crate::util::{AUTH, TestServer, error_of, raw};

fn credential(key: &str, secret: &str, token: Option<&str>, expires: Option<i64>) -> Credential {
    Credential {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        account_id: "000000000000".into(),
        principal_arn: format!("arn:aws:iam::000000000000:user/{key}"),
        session_token: token.map(str::to_string),
        expires,
    }
}

fn sdk(addr: std::net::SocketAddr, key: &str, secret: &str, token: Option<&str>) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SdkCredentials::new(
            key,
            secret,
            token.map(str::to_string),
            None,
            "test",
        ))
        .endpoint_url(format!("http://{addr}"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn signatures_are_verified() {
    let mut config = ServerConfig::for_tests();
    config.credentials = Some(Arc::new(Credentials::from_list(vec![
        credential("AKIDGOOD", "good-secret", None, None),
        credential(
            "ASIATEMP",
            "temp-secret",
            Some("token-1"),
            Some(4_102_444_800),
        ),
        credential(
            "ASIAOLD",
            "old-secret",
            Some("token-2"),
            Some(1_000_000_000),
        ),
    ])));
    let t = TestServer::with_config(config).await;

    // A correctly signed client works for every kind of call, bodies of any size included.
    let good = sdk(t.addr, "AKIDGOOD", "good-secret", None);
    good.create_stream()
        .stream_name("signed")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    good.put_record()
        .stream_name("signed")
        .partition_key("k")
        .data(Blob::new(vec![3u8; 200_000]))
        .send()
        .await
        .expect("signed put");
    good.list_streams().send().await.expect("list");

    // Temporary credentials with their session token.
    let temp = sdk(t.addr, "ASIATEMP", "temp-secret", Some("token-1"));
    temp.describe_stream_summary()
        .stream_name("signed")
        .send()
        .await
        .expect("session credentials");

    let wrong = sdk(t.addr, "AKIDGOOD", "not-the-secret", None)
        .list_streams()
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(
        error_of(wrong.into_service_error()),
        (
            "InvalidSignatureException".into(),
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .into()
        )
    );
    let unknown = sdk(t.addr, "AKIDNOBODY", "x", None)
        .list_streams()
        .send()
        .await
        .expect_err("unknown key");
    assert_eq!(
        error_of(unknown.into_service_error()),
        (
            "UnrecognizedClientException".into(),
            "The security token included in the request is invalid.".into()
        )
    );
    let expired = sdk(t.addr, "ASIAOLD", "old-secret", Some("token-2"))
        .list_streams()
        .send()
        .await
        .expect_err("expired session");
    assert_eq!(
        error_of(expired.into_service_error()),
        (
            "ExpiredTokenException".into(),
            "The security token included in the request is expired".into()
        )
    );
    // A signature from 2026-01-01 is far outside the 15 minutes allowed.
    let skewed = raw(
        t.addr,
        "POST",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
            ("Authorization", &AUTH.replace("AKIDTEST", "AKIDGOOD")),
            ("X-Amz-Date", "20260101T000000Z"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(skewed.status, 400);
    assert_eq!(skewed.json()["__type"], "InvalidSignatureException");
    let message = skewed.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.starts_with("Signature expired: 20260101T000000Z is now earlier than "),
        "{message}"
    );
    t.stop().await;
}
