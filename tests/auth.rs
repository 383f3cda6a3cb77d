//! `--auth sigv4`: real SDK signatures verified end to end; wrong secrets, unknown keys,
//! skewed clocks and expired session tokens refused with AWS's exceptions.

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials as SdkCredentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use rivulet_server::ServerConfig;
use rivulet_server::sigv4::Credential;

use crate::util::{AUTH, TestServer, allow_all, error_of, raw};

pub(crate) fn credential(
    key: &str,
    secret: &str,
    token: Option<&str>,
    expires: Option<i64>,
) -> Credential {
    Credential {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        account_id: "000000000000".into(),
        principal_arn: format!("arn:aws:iam::000000000000:user/{key}"),
        session_token: token.map(str::to_string),
        expires,
    }
}

pub(crate) fn sdk(
    addr: std::net::SocketAddr,
    key: &str,
    secret: &str,
    token: Option<&str>,
) -> Client {
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
    config.credentials = Some(Arc::new(allow_all(vec![
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

#[tokio::test]
async fn each_account_sees_only_its_own_streams_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = Arc::new(allow_all(vec![
        credential("AKIDHOME", "home-secret", None, None),
        Credential {
            account_id: "111111111111".into(),
            ..credential("AKIDOTHER", "other-secret", None, None)
        },
    ]));
    let start = || {
        let mut config = ServerConfig::for_tests();
        config.storage = rivulet_server::Storage::Dir(dir.path().to_path_buf());
        config.credentials = Some(credentials.clone());
        TestServer::with_config(config)
    };
    let t = start().await;
    let home = sdk(t.addr, "AKIDHOME", "home-secret", None);
    let other = sdk(t.addr, "AKIDOTHER", "other-secret", None);
    write_apart(&home, &other).await;
    t.stop().await;

    // After a restart each account still has exactly its own streams and records.
    let t = start().await;
    let home = sdk(t.addr, "AKIDHOME", "home-secret", None);
    let other = sdk(t.addr, "AKIDOTHER", "other-secret", None);
    check_apart(&home, &other).await;
    t.stop().await;
}

/// Account 000000000000 (`home`) and account 111111111111 (`other`) each create stream
/// `same-name` and put one record ("home", "other"); `home` also creates `home-only`.
pub(crate) async fn write_apart(home: &Client, other: &Client) {
    for (client, data) in [(&home, "home"), (&other, "other")] {
        client
            .create_stream()
            .stream_name("same-name")
            .shard_count(1)
            .send()
            .await
            .expect("create");
        crate::util::wait_active_within(client, "same-name", std::time::Duration::from_secs(10))
            .await;
        client
            .put_record()
            .stream_name("same-name")
            .partition_key("k")
            .data(Blob::new(data))
            .send()
            .await
            .expect("put");
    }
    home.create_stream()
        .stream_name("home-only")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    crate::util::wait_active_within(home, "home-only", std::time::Duration::from_secs(10)).await;
}

/// What [`write_apart`] wrote, each account seeing only its own.
pub(crate) async fn check_apart(home: &Client, other: &Client) {
    let names = |c: Client| async move {
        c.list_streams()
            .send()
            .await
            .expect("list")
            .stream_names()
            .to_vec()
    };
    assert_eq!(names(home.clone()).await, ["home-only", "same-name"]);
    assert_eq!(names(other.clone()).await, ["same-name"]);
    let summary = other
        .describe_stream_summary()
        .stream_name("same-name")
        .send()
        .await
        .expect("summary");
    assert_eq!(
        summary.stream_description_summary().map(|s| s.stream_arn()),
        Some("arn:aws:kinesis:us-east-1:111111111111:stream/same-name")
    );
    let missing = other
        .describe_stream_summary()
        .stream_name("home-only")
        .send()
        .await
        .expect_err("not this account's");
    assert_eq!(
        error_of(missing.into_service_error()).1,
        "Stream home-only under account 111111111111 not found."
    );
    for (client, expected) in [(home, b"home".as_slice()), (other, b"other".as_slice())] {
        let it = client
            .get_shard_iterator()
            .stream_name("same-name")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator");
        let records = client
            .get_records()
            .shard_iterator(it.shard_iterator().expect("iterator"))
            .send()
            .await
            .expect("records");
        let data: Vec<&[u8]> = records
            .records()
            .iter()
            .map(|r| r.data().as_ref())
            .collect();
        assert_eq!(data, [expected]);
    }
}
