//! Encryption at rest end to end: StartStreamEncryption / StopStreamEncryption through the SDK,
//! records that report their EncryptionType, no plaintext anywhere under the data dir, reads
//! across a restart, and the KMS exceptions for missing, disabled and pending-deletion keys —
//! with the key file managed by `rivulet kms` while the server runs.

use std::path::Path;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{EncryptionType, PutRecordsRequestEntry};
use rivulet_server::ServerConfig;

use crate::util::{TestServer, client_without_retries, create_stream, error_of, read_all};

const PLAINTEXT: &str = "PLAINTEXT-CANARY-7f3a9c: card 4111-1111-1111-1111";
const PARTITION_KEY: &str = "customer-partition-key-canary";

pub(crate) fn server_config(data: &Path, keys: &Path) -> ServerConfig {
    let mut config = ServerConfig::for_tests();
    config.storage = rivulet_server::Storage::Dir(data.to_path_buf());
    config.kms_keys = Some(keys.to_path_buf());
    config
}

pub(crate) async fn start_encryption(c: &Client, stream: &str, key: &str) {
    c.start_stream_encryption()
        .stream_name(stream)
        .encryption_type(EncryptionType::Kms)
        .key_id(key)
        .send()
        .await
        .expect("start encryption");
}

async fn summary_of(c: &Client, stream: &str) -> aws_sdk_kinesis::types::StreamDescriptionSummary {
    c.describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .expect("summary")
        .stream_description_summary
        .expect("summary")
}

pub(crate) fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .expect("read")
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn encrypted_records_never_reach_the_disk_in_plaintext() {
    let data = tempfile::tempdir().expect("data dir");
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("kms-keys.toml");
    let t = TestServer::with_config(server_config(data.path(), &key_file)).await;
    let c = client_without_retries(t.addr);
    create_stream(&c, "vault").await;
    c.put_record()
        .stream_name("vault")
        .partition_key("before")
        .data(Blob::new("written before encryption"))
        .send()
        .await
        .expect("plain put");
    start_encryption(&c, "vault", "alias/aws/kinesis").await;
    let summary = summary_of(&c, "vault").await;
    assert_eq!(summary.encryption_type(), Some(&EncryptionType::Kms));
    assert_eq!(summary.key_id(), Some("alias/aws/kinesis"));
    let described = c
        .describe_stream()
        .stream_name("vault")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        described.stream_description().and_then(|d| d.key_id()),
        Some("alias/aws/kinesis")
    );

    let put = c
        .put_record()
        .stream_name("vault")
        .partition_key(PARTITION_KEY)
        .data(Blob::new(PLAINTEXT))
        .send()
        .await
        .expect("encrypted put");
    assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
    let batch = c
        .put_records()
        .stream_name("vault")
        .set_records(Some(
            (0..50)
                .map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(PARTITION_KEY)
                        .data(Blob::new(format!("{PLAINTEXT} #{i}")))
                        .build()
                        .expect("entry")
                })
                .collect(),
        ))
        .send()
        .await
        .expect("encrypted batch");
    assert_eq!(batch.encryption_type(), Some(&EncryptionType::Kms));
    assert_eq!(batch.failed_record_count(), Some(0));

    let check = |records: Vec<aws_sdk_kinesis::types::Record>| {
        assert_eq!(records.len(), 52);
        assert_eq!(records[0].data().as_ref(), b"written before encryption");
        assert_eq!(records[0].encryption_type(), None);
        assert_eq!(records[1].data().as_ref(), PLAINTEXT.as_bytes());
        assert_eq!(records[1].partition_key(), PARTITION_KEY);
        for (i, record) in records[2..].iter().enumerate() {
            assert_eq!(
                record.data().as_ref(),
                format!("{PLAINTEXT} #{i}").as_bytes()
            );
            assert_eq!(record.encryption_type(), Some(&EncryptionType::Kms));
        }
    };
    check(read_all(&c, "vault", "shardId-000000000000").await);
    t.stop().await;

    // Nothing under the data dir holds the plaintext or the partition key; the one record
    // written before encryption is there as written (so the scan does find what is there).
    assert_eq!(
        files_containing(data.path(), PLAINTEXT.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(data.path(), PARTITION_KEY.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(data.path(), b"written before encryption").len(),
        1
    );
    // The master key lives in the key file, outside the data dir, and is not in it either.
    let key_text = std::fs::read_to_string(&key_file).expect("key file");
    assert!(key_text.contains("alias/aws/kinesis"));
    for line in key_text.lines().filter(|l| l.trim_start().starts_with('"')) {
        let material = line.trim().trim_matches([',', '"']);
        assert!(files_containing(data.path(), material.as_bytes()).is_empty());
    }

    // After a restart with the same key file everything reads back.
    let t = TestServer::with_config(server_config(data.path(), &key_file)).await;
    let c = client_without_retries(t.addr);
    check(read_all(&c, "vault", "shardId-000000000000").await);

    // StopStreamEncryption: later records are stored as written; earlier ones still decrypt.
    c.stop_stream_encryption()
        .stream_name("vault")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .expect("stop encryption");
    let summary = summary_of(&c, "vault").await;
    assert_eq!(summary.encryption_type(), Some(&EncryptionType::None));
    assert_eq!(summary.key_id(), None);
    let plain = c
        .put_record()
        .stream_name("vault")
        .partition_key("after")
        .data(Blob::new("after stop"))
        .send()
        .await
        .expect("put after stop");
    assert_eq!(plain.encryption_type(), None);
    let records = read_all(&c, "vault", "shardId-000000000000").await;
    assert_eq!(records.len(), 53);
    assert_eq!(records[52].encryption_type(), None);
    assert_eq!(records[51].encryption_type(), Some(&EncryptionType::Kms));
    t.stop().await;
}

pub(crate) fn kms_cli(key_file: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .arg("kms")
        .args(args)
        .arg("--kms-keys")
        .arg(key_file)
        .output()
        .expect("run rivulet kms");
    assert!(
        output.status.success(),
        "rivulet kms {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Retries `call` until the server has reloaded the key file (it checks every tick).
pub(crate) async fn eventually<F, Fut>(what: &str, mut call: F) -> (String, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<(String, String)>>,
{
    for _ in 0..100 {
        if let Some(error) = call().await {
            return error;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{what}: the server never saw the key file change");
}

#[tokio::test]
async fn kms_keys_are_resolved_and_their_state_is_enforced() {
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("kms-keys.toml");
    let created = kms_cli(
        &key_file,
        &[
            "create-key",
            "--alias",
            "alias/orders",
            "--description",
            "orders",
        ],
    );
    let mut words = created.split_whitespace();
    let (key_id, key_arn) = (
        words.next().expect("id").to_string(),
        words.next().expect("arn").to_string(),
    );
    assert_eq!(
        key_arn,
        format!("arn:aws:kms:us-east-1:000000000000:key/{key_id}")
    );

    let mut config = ServerConfig::for_tests();
    config.kms_keys = Some(key_file.clone());
    let t = TestServer::with_config(config).await;
    let c = client_without_retries(t.addr);
    create_stream(&c, "orders").await;
    let start = |key: &str| {
        c.start_stream_encryption()
            .stream_name("orders")
            .encryption_type(EncryptionType::Kms)
            .key_id(key)
            .send()
    };
    let refused = start("alias/missing").await.expect_err("unknown alias");
    assert_eq!(
        error_of(refused.into_service_error()),
        (
            "KMSNotFoundException".into(),
            "Alias arn:aws:kms:us-east-1:000000000000:alias/missing is not found.".into()
        )
    );
    let refused = start("1234abcd-12ab-34cd-56ef-1234567890ab")
        .await
        .expect_err("unknown key");
    assert_eq!(
        error_of(refused.into_service_error()),
        (
            "KMSNotFoundException".into(),
            "Key 'arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab' \
             does not exist"
                .into()
        )
    );
    let refused = start("arn:aws:kms:us-east-1:111111111111:key/other")
        .await
        .expect_err("another account's key");
    assert_eq!(
        error_of(refused.into_service_error()).0,
        "KMSAccessDeniedException"
    );
    let refused = c
        .start_stream_encryption()
        .stream_name("orders")
        .encryption_type(EncryptionType::None)
        .key_id("alias/orders")
        .send()
        .await
        .expect_err("type NONE");
    assert_eq!(
        error_of(refused.into_service_error()).0,
        "InvalidArgumentException"
    );
    // Every form of KeyId names the same key; DescribeStream shows the form given.
    for form in [
        key_id.as_str(),
        key_arn.as_str(),
        "arn:aws:kms:us-east-1:000000000000:alias/orders",
        "alias/orders",
    ] {
        start(form).await.expect("start with a customer key");
        let summary = c
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await
            .expect("summary");
        assert_eq!(
            summary
                .stream_description_summary()
                .and_then(|s| s.key_id()),
            Some(form)
        );
    }
    let put = || {
        c.put_record()
            .stream_name("orders")
            .partition_key("k")
            .data(Blob::new("order 1"))
            .send()
    };
    put().await.expect("put with an enabled key");

    // Disabled with the CLI while the server runs: writes and reads are refused.
    kms_cli(&key_file, &["disable-key", "alias/orders"]);
    let disabled = eventually("disable", || async {
        put().await.err().map(|e| error_of(e.into_service_error()))
    })
    .await;
    assert_eq!(
        disabled,
        (
            "KMSDisabledException".into(),
            format!("{key_arn} is disabled.")
        )
    );
    let iterator = crate::util::trim_horizon(&c, "orders", "shardId-000000000000").await;
    let read = c
        .get_records()
        .shard_iterator(&iterator)
        .send()
        .await
        .expect_err("read with a disabled key");
    assert_eq!(
        error_of(read.into_service_error()).0,
        "KMSDisabledException"
    );

    // Pending deletion: KMSInvalidStateException, also for StartStreamEncryption.
    kms_cli(&key_file, &["schedule-key-deletion", &key_id]);
    let pending = eventually("schedule deletion", || async {
        match put().await {
            Err(e) => {
                let error = error_of(e.into_service_error());
                (error.0 == "KMSInvalidStateException").then_some(error)
            }
            Ok(_) => None,
        }
    })
    .await;
    assert_eq!(pending.1, format!("{key_arn} is pending deletion."));
    let refused = start("alias/orders").await.expect_err("pending deletion");
    assert_eq!(
        error_of(refused.into_service_error()).0,
        "KMSInvalidStateException"
    );

    // Cancelled (the key comes back disabled), rotated and enabled: reads and writes work,
    // old records included.
    kms_cli(&key_file, &["cancel-key-deletion", &key_id]);
    kms_cli(&key_file, &["rotate-key", &key_id]);
    kms_cli(&key_file, &["enable-key", &key_id]);
    eventually("enable", || async {
        put().await.ok().map(|_| Default::default())
    })
    .await;
    let records = c
        .get_records()
        .shard_iterator(&iterator)
        .send()
        .await
        .expect("read with the key enabled again");
    // The first put, any that landed before the server saw the key disabled, and the one that
    // saw it enabled again.
    assert!(records.records().len() >= 2);
    assert!(
        records
            .records()
            .iter()
            .all(|r| r.data().as_ref() == b"order 1")
    );
    let listed = kms_cli(&key_file, &["list-keys"]);
    assert!(
        listed.contains(&key_arn) && listed.contains("versions=2"),
        "{listed}"
    );
    t.stop().await;
}

/// The stream is UPDATING while encryption starts, takes writes meanwhile (already
/// encrypted), and turns ACTIVE after the update delay.
#[tokio::test]
async fn starting_encryption_updates_the_stream_like_aws() {
    let mut config = ServerConfig::for_tests();
    config.engine.update_stream_ms = 300;
    let t = TestServer::with_config(config).await;
    let c = client_without_retries(t.addr);
    create_stream(&c, "slow").await;
    start_encryption(&c, "slow", "alias/aws/kinesis").await;
    let status = || async {
        c.describe_stream_summary()
            .stream_name("slow")
            .send()
            .await
            .expect("summary")
            .stream_description_summary()
            .map(|s| s.stream_status().clone())
    };
    assert_eq!(
        status().await,
        Some(aws_sdk_kinesis::types::StreamStatus::Updating)
    );
    let put = c
        .put_record()
        .stream_name("slow")
        .partition_key("k")
        .data(Blob::new("during the update"))
        .send()
        .await
        .expect("put while UPDATING");
    assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
    // A second change while UPDATING is refused, as AWS refuses it.
    let busy = c
        .stop_stream_encryption()
        .stream_name("slow")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .expect_err("UPDATING");
    assert_eq!(
        error_of(busy.into_service_error()),
        (
            "ResourceInUseException".into(),
            "Stream slow under account 000000000000 not ACTIVE, instead in state UPDATING".into()
        )
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        status().await,
        Some(aws_sdk_kinesis::types::StreamStatus::Active)
    );
    t.stop().await;
}

/// Reads of encrypted records whose KMS key is gone fail with KMS's exceptions, and a
/// tampered ciphertext fails the read instead of being returned.
#[tokio::test]
async fn lost_keys_and_tampered_ciphertext_are_refused() {
    let data = tempfile::tempdir().expect("data dir");
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("kms-keys.toml");
    let t = TestServer::with_config(server_config(data.path(), &key_file)).await;
    let c = client_without_retries(t.addr);
    create_stream(&c, "fragile").await;
    start_encryption(&c, "fragile", "alias/aws/kinesis").await;
    for i in 0..3 {
        c.put_record()
            .stream_name("fragile")
            .partition_key("k")
            .data(Blob::new(format!("{PLAINTEXT} {i}")))
            .send()
            .await
            .expect("put");
    }
    t.stop().await;

    // Flip one ciphertext bit of the second batch and fix both checksums, so only the
    // authentication tag can notice.
    let mut segments = Vec::new();
    let mut stack = vec![data.path().join("logs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "seg") {
                segments.push(path);
            }
        }
    }
    assert_eq!(segments.len(), 1, "{segments:?}");
    let mut bytes = std::fs::read(&segments[0]).expect("segment");
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("u32"));
    let second = u32_at(&bytes, 8) as usize;
    let len = u32_at(&bytes, second + 8) as usize;
    assert_eq!(u32_at(&bytes, second + 36), 1, "the batch is encrypted");
    bytes[second + 40 + 16 + 5] ^= 0x01;
    let body_crc = crc32c::crc32c(&bytes[second + 40..second + len]);
    bytes[second + 12..second + 16].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[second + 8..second + 40]);
    bytes[second + 4..second + 8].copy_from_slice(&header_crc.to_le_bytes());
    std::fs::write(&segments[0], &bytes).expect("write segment");

    let t = TestServer::with_config(server_config(data.path(), &key_file)).await;
    let c = client_without_retries(t.addr);
    let from_start = crate::util::trim_horizon(&c, "fragile", "shardId-000000000000").await;
    let first = c
        .get_records()
        .shard_iterator(from_start)
        .limit(1)
        .send()
        .await
        .expect("the first batch is intact");
    assert_eq!(
        first.records()[0].data().as_ref(),
        format!("{PLAINTEXT} 0").as_bytes()
    );
    let damaged = c
        .get_records()
        .shard_iterator(first.next_shard_iterator().expect("next"))
        .send()
        .await
        .expect_err("the tampered batch is not returned");
    let (code, message) = error_of(damaged.into_service_error());
    assert_eq!(code, "InternalFailure");
    // As AWS sends it: no message (the reason goes to the server's log).
    assert_eq!(message, "");
    c.stop_stream_encryption()
        .stream_name("fragile")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .expect("stop");
    t.stop().await;

    // With the key file gone, the records encrypted under its key cannot be read.
    std::fs::remove_file(&key_file).expect("remove key file");
    let t = TestServer::with_config(server_config(data.path(), &key_file)).await;
    let c = client_without_retries(t.addr);
    let from_start = crate::util::trim_horizon(&c, "fragile", "shardId-000000000000").await;
    let lost = c
        .get_records()
        .shard_iterator(from_start)
        .send()
        .await
        .expect_err("key gone");
    assert_eq!(
        error_of(lost.into_service_error()),
        (
            "KMSAccessDeniedException".into(),
            "The ciphertext references a key that doesn't exist or that you don't have access \
             to."
            .into()
        )
    );
    t.stop().await;
}
