//! `--auth sigv4` authorization end to end through the Rust SDK: identity policies (Allow,
//! Deny, wildcards, NotAction, Resource, conditions on aws:SourceIp, aws:CurrentTime and
//! aws:ResourceTag), resource policies on streams and consumers (their validation, `{}` when
//! there is none, cross-account access), AWS's AccessDeniedException messages, the
//! denial log line of the real binary, and the console's sign-in and per-page permissions.

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials as SdkCredentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use rivulet_iam::{Kind, Policy};
use rivulet_server::ServerConfig;
use rivulet_server::sigv4::{Credential, Credentials};

use crate::util::{TestServer, error_of};

const HOME: &str = "000000000000";
const OTHER: &str = "111111111111";

fn sdk(addr: std::net::SocketAddr, key: &str) -> Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SdkCredentials::new(key, "secret", None, None, "test"))
        .endpoint_url(format!("http://{addr}"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn user(key: &str, account: &str, principal: &str) -> Credential {
    Credential {
        access_key_id: key.into(),
        secret_access_key: "secret".into(),
        account_id: account.into(),
        principal_arn: principal.into(),
        session_token: None,
        expires: None,
    }
}

fn arn_of(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user/{name}")
}

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:{HOME}:stream/{name}")
}

/// The principals of these tests, each with its identity policies.
fn credentials() -> Credentials {
    let mut credentials = Credentials::from_list(vec![
        user("AKIDROOT", HOME, &format!("arn:aws:iam::{HOME}:root")),
        user("AKIDREADER", HOME, &arn_of(HOME, "reader")),
        user("AKIDWRITER", HOME, &arn_of(HOME, "writer")),
        user("AKIDFAR", HOME, &arn_of(HOME, "far")),
        user("AKIDLATE", HOME, &arn_of(HOME, "late")),
        user("AKIDTAGGED", HOME, &arn_of(HOME, "tagged")),
        user("AKIDNOBODY", HOME, &arn_of(HOME, "nobody")),
        user("AKIDBOB", OTHER, &arn_of(OTHER, "bob")),
        user("AKIDCAROL", OTHER, &arn_of(OTHER, "carol")),
        user("AKIDSTREAMONLY", HOME, &arn_of(HOME, "streamonly")),
        user("AKIDWITHKEY", HOME, &arn_of(HOME, "withkey")),
        user("AKIDPASSER", HOME, &arn_of(HOME, "passer")),
        user(
            "AKIDOTHERROOT",
            OTHER,
            &format!("arn:aws:iam::{OTHER}:root"),
        ),
        Credential {
            session_token: Some("token".into()),
            ..user("AKIDTEMP", HOME, &format!("arn:aws:iam::{HOME}:root"))
        },
    ]);
    let mut attach = |name: &str, account: &str, document: &str| {
        let policy = Policy::parse(document, Kind::Identity).expect("test policy");
        credentials.attach(&arn_of(account, name), policy);
    };
    attach(
        "reader",
        HOME,
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["kinesis:Get*","kinesis:Describe*","kinesis:List*"],
             "Resource":["arn:aws:kinesis:*:000000000000:stream/*","arn:aws:kinesis:*:000000000000:*/*/consumer/*"]},
            {"Effect":"Allow","Action":"kinesis:ListStreams","Resource":"*"},
            {"Effect":"Deny","Action":"kinesis:GetRecords","Resource":"arn:aws:kinesis:*:*:stream/secret"}]}"#,
    );
    attach(
        "writer",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","NotAction":"kinesis:Delete*","Resource":"*"}]}"#,
    );
    attach(
        "far",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*",
            "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
    );
    attach(
        "late",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*",
            "Condition":{"DateLessThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}}]}"#,
    );
    attach(
        "tagged",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*",
            "Condition":{"StringEquals":{"aws:ResourceTag/team":"data"},
                         "IpAddress":{"aws:SourceIp":["127.0.0.0/8","::1"]}}}]}"#,
    );
    attach(
        "streamonly",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*",
            "Resource":"arn:aws:kinesis:*:000000000000:stream/*"}]}"#,
    );
    attach(
        "withkey",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*",
            "Resource":["arn:aws:kinesis:*:000000000000:stream/*",
                        "arn:aws:kms:us-east-1:000000000000:key/*"]}]}"#,
    );
    attach(
        "passer",
        HOME,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*",
            "Resource":"arn:aws:kinesis:*:000000000000:*"},
            {"Effect":"Allow","Action":"iam:PassRole",
             "Resource":"arn:aws:iam::000000000000:role/delivery-*"}]}"#,
    );
    attach(
        "bob",
        OTHER,
        r#"{"Statement":[{"Effect":"Allow","Action":"kinesis:*","Resource":"*"}]}"#,
    );
    credentials
}

/// A server that verifies signatures against [`credentials`].
async fn server() -> TestServer {
    let mut config = ServerConfig::for_tests();
    config.credentials = Some(Arc::new(credentials()));
    TestServer::with_config(config).await
}

async fn denied<T, E, R>(result: Result<T, aws_sdk_kinesis::error::SdkError<E, R>>) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    let error = match result {
        Ok(_) => panic!("expected AccessDeniedException, the call succeeded"),
        Err(error) => error,
    };
    let (code, message) = error_of(error);
    assert_eq!(code, "AccessDeniedException", "{message}");
    message
}

fn not_authorized(who: &str, action: &str, resource: &str, why: &str) -> String {
    format!(
        "User: {who} is not authorized to perform: kinesis:{action} on resource: {resource} {why}"
    )
}

fn no_identity_allow(action: &str) -> String {
    format!("because no identity-based policy allows the kinesis:{action} action")
}

#[tokio::test]
async fn identity_policies_decide() {
    let t = server().await;
    let root = sdk(t.addr, "AKIDROOT");
    for name in ["open", "secret"] {
        crate::util::create_stream(&root, name).await;
        root.put_record()
            .stream_name(name)
            .partition_key("k")
            .data(Blob::new("hello"))
            .send()
            .await
            .expect("root may put");
    }

    // The reader: Get*, Describe*, List* on the account's streams, but not GetRecords on secret.
    let reader = sdk(t.addr, "AKIDREADER");
    reader
        .describe_stream_summary()
        .stream_name("open")
        .send()
        .await
        .expect("Describe* allowed");
    reader
        .list_streams()
        .send()
        .await
        .expect("ListStreams allowed");
    let iterator = |name: &'static str| {
        let reader = reader.clone();
        async move { crate::util::trim_horizon(&reader, name, "shardId-000000000000").await }
    };
    let records = reader
        .get_records()
        .shard_iterator(iterator("open").await)
        .send()
        .await
        .expect("GetRecords allowed");
    assert_eq!(records.records().len(), 1);
    let put = reader
        .put_record()
        .stream_name("open")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await;
    assert_eq!(
        denied(put).await,
        not_authorized(
            &arn_of(HOME, "reader"),
            "PutRecord",
            &stream_arn("open"),
            &no_identity_allow("PutRecord")
        )
    );
    // The resource of GetRecords is the stream its iterator reads.
    let secret = reader
        .get_records()
        .shard_iterator(iterator("secret").await)
        .send()
        .await;
    assert_eq!(
        denied(secret).await,
        not_authorized(
            &arn_of(HOME, "reader"),
            "GetRecords",
            &stream_arn("secret"),
            "with an explicit deny in an identity-based policy"
        )
    );

    // NotAction: everything but Delete*.
    let writer = sdk(t.addr, "AKIDWRITER");
    writer
        .put_record()
        .stream_name("open")
        .partition_key("k")
        .data(Blob::new("w"))
        .send()
        .await
        .expect("NotAction allows PutRecord");
    let delete = writer.delete_stream().stream_name("open").send().await;
    assert_eq!(
        denied(delete).await,
        not_authorized(
            &arn_of(HOME, "writer"),
            "DeleteStream",
            &stream_arn("open"),
            &no_identity_allow("DeleteStream")
        )
    );

    // Conditions: the caller's address (loopback here) and the current time.
    let far = sdk(t.addr, "AKIDFAR").list_streams().send().await;
    assert_eq!(
        denied(far).await,
        format!(
            "User: {} is not authorized to perform: kinesis:ListStreams {}",
            arn_of(HOME, "far"),
            no_identity_allow("ListStreams")
        )
    );
    let late = sdk(t.addr, "AKIDLATE")
        .describe_stream_summary()
        .stream_name("open")
        .send()
        .await;
    denied(late).await;

    // aws:ResourceTag: only streams tagged team=data.
    root.add_tags_to_stream()
        .stream_name("open")
        .tags("team", "data")
        .send()
        .await
        .expect("tag");
    let tagged = sdk(t.addr, "AKIDTAGGED");
    tagged
        .describe_stream_summary()
        .stream_name("open")
        .send()
        .await
        .expect("tagged stream allowed");
    denied(
        tagged
            .describe_stream_summary()
            .stream_name("secret")
            .send()
            .await,
    )
    .await;

    // No policy at all: nothing is allowed.
    let nobody = sdk(t.addr, "AKIDNOBODY");
    let list = nobody.list_streams().send().await;
    assert_eq!(
        denied(list).await,
        format!(
            "User: {} is not authorized to perform: kinesis:ListStreams {}",
            arn_of(HOME, "nobody"),
            no_identity_allow("ListStreams")
        )
    );
    t.stop().await;
}

#[tokio::test]
async fn resource_policies_grant_and_deny() {
    let t = server().await;
    let root = sdk(t.addr, "AKIDROOT");
    let arn = crate::util::create_stream(&root, "shared").await;
    root.put_record()
        .stream_name("shared")
        .partition_key("k")
        .data(Blob::new("from home"))
        .send()
        .await
        .expect("put");
    let policy_of = |arn: String| {
        let root = root.clone();
        async move {
            root.get_resource_policy()
                .resource_arn(arn)
                .send()
                .await
                .expect("get policy")
                .policy()
                .to_string()
        }
    };
    assert_eq!(policy_of(arn.clone()).await, "{}");

    // Another account's user, allowed kinesis:* by its own policies, still needs the stream's.
    let bob = sdk(t.addr, "AKIDBOB");
    let summary = bob.describe_stream_summary().stream_arn(&arn).send().await;
    assert_eq!(
        denied(summary).await,
        not_authorized(
            &arn_of(OTHER, "bob"),
            "DescribeStreamSummary",
            &arn,
            "because no resource-based policy allows the kinesis:DescribeStreamSummary action"
        )
    );

    // Policies Kinesis refuses.
    let grant = |actions: &str, principal: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"share","Effect":"Allow","Principal":{{"AWS":{principal}}},"Action":{actions},"Resource":"{arn}"}}]}}"#
        )
    };
    for bad in [
        "not json".to_string(),
        grant(r#""kinesis:*""#, r#""111111111111""#),
        grant(r#""kinesis:DeleteStream""#, r#""111111111111""#),
        grant(r#""kinesis:GetRecords""#, r#""*""#),
        grant(r#""kinesis:GetRecords""#, r#""bob""#),
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"111111111111"}},"Action":"kinesis:GetRecords","Resource":"{arn}","Sid":"{}"}}]}}"#,
            "x".repeat(21 * 1024)
        ),
    ] {
        let refused = root
            .put_resource_policy()
            .resource_arn(&arn)
            .policy(&bad)
            .send()
            .await
            .expect_err("invalid policy refused");
        assert_eq!(
            error_of(refused.into_service_error()).0,
            "InvalidArgumentException",
            "{bad}"
        );
    }
    assert_eq!(policy_of(arn.clone()).await, "{}");

    let shared = grant(
        r#"["kinesis:DescribeStreamSummary","kinesis:ListShards","kinesis:GetShardIterator","kinesis:GetRecords","kinesis:PutRecord"]"#,
        r#""arn:aws:iam::111111111111:root""#,
    );
    root.put_resource_policy()
        .resource_arn(&arn)
        .policy(&shared)
        .send()
        .await
        .expect("put policy");
    assert_eq!(policy_of(arn.clone()).await, shared);

    // Now bob reads and writes the other account's stream by its ARN.
    bob.describe_stream_summary()
        .stream_arn(&arn)
        .send()
        .await
        .expect("shared summary");
    let shards = bob
        .list_shards()
        .stream_arn(&arn)
        .send()
        .await
        .expect("shared shards");
    assert_eq!(shards.shards().len(), 1);
    bob.put_record()
        .stream_arn(&arn)
        .partition_key("k")
        .data(Blob::new("from bob"))
        .send()
        .await
        .expect("shared put");
    let iterator = bob
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("shared iterator");
    let records = bob
        .get_records()
        .stream_arn(&arn)
        .shard_iterator(iterator.shard_iterator().expect("iterator"))
        .send()
        .await
        .expect("shared records");
    let data: Vec<&[u8]> = records
        .records()
        .iter()
        .map(|r| r.data().as_ref())
        .collect();
    assert_eq!(data, [b"from home".as_slice(), b"from bob".as_slice()]);
    // Bob's own account still has no such stream, and what was not granted stays denied.
    assert!(
        bob.list_streams()
            .send()
            .await
            .expect("own list")
            .stream_names()
            .is_empty()
    );
    let delete = bob.delete_stream().stream_arn(&arn).send().await;
    assert_eq!(
        denied(delete).await,
        not_authorized(
            &arn_of(OTHER, "bob"),
            "DeleteStream",
            &arn,
            "because no resource-based policy allows the kinesis:DeleteStream action"
        )
    );
    // Across accounts the caller's own policies must allow too.
    let carol = sdk(t.addr, "AKIDCAROL")
        .describe_stream_summary()
        .stream_arn(&arn)
        .send()
        .await;
    assert_eq!(
        denied(carol).await,
        not_authorized(
            &arn_of(OTHER, "carol"),
            "DescribeStreamSummary",
            &arn,
            &no_identity_allow("DescribeStreamSummary")
        )
    );

    // Within one account a resource policy alone is enough; its Deny beats an identity Allow.
    let same_account = format!(
        r#"{{"Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"{nobody}"}},"Action":"kinesis:PutRecord","Resource":"{arn}"}},
            {{"Effect":"Deny","Principal":{{"AWS":"{reader}"}},"Action":"kinesis:GetShardIterator","Resource":"{arn}"}}]}}"#,
        nobody = arn_of(HOME, "nobody"),
        reader = arn_of(HOME, "reader"),
    );
    root.put_resource_policy()
        .resource_arn(&arn)
        .policy(&same_account)
        .send()
        .await
        .expect("replace policy");
    sdk(t.addr, "AKIDNOBODY")
        .put_record()
        .stream_name("shared")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .expect("granted by the resource policy");
    let iterator = sdk(t.addr, "AKIDREADER")
        .get_shard_iterator()
        .stream_name("shared")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await;
    assert_eq!(
        denied(iterator).await,
        not_authorized(
            &arn_of(HOME, "reader"),
            "GetShardIterator",
            &arn,
            "with an explicit deny in a resource-based policy"
        )
    );
    // The replaced policy no longer shares the stream; deleting leaves `{}`.
    denied(bob.describe_stream_summary().stream_arn(&arn).send().await).await;
    root.delete_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .expect("delete policy");
    assert_eq!(policy_of(arn.clone()).await, "{}");
    t.stop().await;
}

#[tokio::test]
async fn consumers_have_their_own_policies_and_tags() {
    let t = server().await;
    let root = sdk(t.addr, "AKIDROOT");
    let arn = crate::util::create_stream(&root, "fan").await;
    let consumer = crate::util::register_consumer(&root, &arn, "reader-app").await;

    root.tag_resource()
        .resource_arn(&consumer)
        .tags("team", "data")
        .send()
        .await
        .expect("tag consumer");
    let tags = root
        .list_tags_for_resource()
        .resource_arn(&consumer)
        .send()
        .await
        .expect("consumer tags");
    let pairs: Vec<(&str, &str)> = tags
        .tags()
        .iter()
        .map(|t| (t.key(), t.value().unwrap_or_default()))
        .collect();
    assert_eq!(pairs, [("team", "data")]);

    let bob = sdk(t.addr, "AKIDBOB");
    denied(
        bob.describe_stream_consumer()
            .consumer_arn(&consumer)
            .send()
            .await,
    )
    .await;
    // A consumer's policy grants consumer actions only.
    let grant = |action: &str| {
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{OTHER}"}},"Action":"{action}","Resource":"{consumer}"}}]}}"#
        )
    };
    let refused = root
        .put_resource_policy()
        .resource_arn(&consumer)
        .policy(grant("kinesis:GetRecords"))
        .send()
        .await
        .expect_err("stream action on a consumer");
    assert_eq!(
        error_of(refused.into_service_error()).0,
        "InvalidArgumentException"
    );
    root.put_resource_policy()
        .resource_arn(&consumer)
        .policy(grant("kinesis:DescribeStreamConsumer"))
        .send()
        .await
        .expect("consumer policy");
    let described = bob
        .describe_stream_consumer()
        .consumer_arn(&consumer)
        .send()
        .await
        .expect("shared consumer");
    assert_eq!(
        described.consumer_description().map(|c| c.consumer_name()),
        Some("reader-app")
    );
    // The stream's own policy is untouched.
    let stream_policy = root
        .get_resource_policy()
        .resource_arn(&arn)
        .send()
        .await
        .expect("stream policy");
    assert_eq!(stream_policy.policy(), "{}");
    t.stop().await;
}

/// The real binary logs every denial with principal, action and resource.
#[tokio::test]
async fn denials_are_logged() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials.toml");
    std::fs::write(
        &file,
        r#"
[[credentials]]
access_key_id = "AKIDNOBODY"
secret_access_key = "secret"
account_id = "000000000000"
principal_arn = "arn:aws:iam::000000000000:user/nobody"

[[credentials]]
access_key_id = "AKIDREADER"
secret_access_key = "secret"
account_id = "000000000000"
principal_arn = "arn:aws:iam::000000000000:user/reader"

[[policies]]
principal_arn = "arn:aws:iam::000000000000:user/reader"
name = "read-only"
document = { Version = "2012-10-17", Statement = [{ Effect = "Allow", Action = ["kinesis:List*", "kinesis:Describe*"], Resource = "*" }] }
"#,
    )
    .expect("write credentials");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
            "--auth",
            "sigv4",
        ])
        .arg("--credentials")
        .arg(&file)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rivulet");
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
    sdk(addr, "AKIDREADER")
        .list_streams()
        .send()
        .await
        .expect("the read-only policy allows listing");
    denied(sdk(addr, "AKIDNOBODY").list_streams().send().await).await;
    denied(
        sdk(addr, "AKIDREADER")
            .create_stream()
            .stream_name("nope")
            .shard_count(1)
            .send()
            .await,
    )
    .await;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), stderr.next_line())
            .await
            .expect("a log line in time")
            .expect("read")
            .expect("log line");
        if line.contains("access denied") {
            seen.push(line);
        }
    }
    assert!(
        seen[0].contains("principal=arn:aws:iam::000000000000:user/nobody")
            && seen[0].contains("action=kinesis:ListStreams")
            && seen[0].contains("resource=*"),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].contains("principal=arn:aws:iam::000000000000:user/reader")
            && seen[1].contains("action=kinesis:CreateStream")
            && seen[1].contains("resource=arn:aws:kinesis:us-east-1:000000000000:stream/nope"),
        "{}",
        seen[1]
    );
    child.kill().await.expect("stop rivulet");
}

#[tokio::test]
async fn stream_encryption_needs_the_key_allowed_too() {
    let t = server().await;
    let root = sdk(t.addr, "AKIDROOT");
    crate::util::create_stream(&root, "enc").await;
    let start = |client: &Client| {
        client
            .start_stream_encryption()
            .stream_name("enc")
            .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
            .key_id("alias/aws/kinesis")
            .send()
    };
    let stop = |client: &Client| {
        client
            .stop_stream_encryption()
            .stream_name("enc")
            .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
            .key_id("alias/aws/kinesis")
            .send()
    };
    // Allowed on the stream but not on the key (the action's kmsKey resource): denied, and
    // the message names the key.
    let stream_only = sdk(t.addr, "AKIDSTREAMONLY");
    let message = denied(start(&stream_only).await).await;
    let prefix = format!(
        "User: {} is not authorized to perform: kinesis:StartStreamEncryption on resource: \
         arn:aws:kms:us-east-1:{HOME}:key/",
        arn_of(HOME, "streamonly")
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(
        message.ends_with(&no_identity_allow("StartStreamEncryption")),
        "{message}"
    );
    let summary = root
        .describe_stream_summary()
        .stream_name("enc")
        .send()
        .await
        .expect("describe");
    let description = summary.stream_description_summary().expect("summary");
    assert_eq!(
        description.encryption_type(),
        Some(&aws_sdk_kinesis::types::EncryptionType::None)
    );

    // Allowed on both: done.
    let with_key = sdk(t.addr, "AKIDWITHKEY");
    start(&with_key).await.expect("allowed on stream and key");
    crate::util::wait_active(&root, "enc").await;
    let message = denied(stop(&stream_only).await).await;
    assert!(message.contains(":key/"), "{message}");
    stop(&with_key).await.expect("allowed on stream and key");

    // An unknown key is not an authorization matter: the operation's own error answers.
    let unknown = stream_only
        .start_stream_encryption()
        .stream_name("enc")
        .encryption_type(aws_sdk_kinesis::types::EncryptionType::Kms)
        .key_id("alias/nope")
        .send()
        .await;
    crate::util::wait_active(&root, "enc").await;
    let (code, _) = error_of(unknown.expect_err("unknown key"));
    assert_ne!(code, "AccessDeniedException");
}

/// CreateChannel passes the service execution role to Kinesis: the caller needs
/// iam:PassRole on it, besides kinesis:CreateChannel.
#[tokio::test]
async fn creating_a_channel_needs_iam_pass_role_on_its_role() {
    let t = server().await;
    let root = sdk(t.addr, "AKIDROOT");
    root.create_stream()
        .stream_name("lake")
        .stream_mode_details(
            aws_sdk_kinesis::types::StreamModeDetails::builder()
                .stream_mode(aws_sdk_kinesis::types::StreamMode::OnDemand)
                .build()
                .expect("mode"),
        )
        .send()
        .await
        .expect("create");
    crate::util::wait_active(&root, "lake").await;
    let signed = |key: &str| {
        rivulet_cli::queue::Caller::with(
            &format!("http://{}", t.addr),
            "us-east-1",
            aws_sdk_kinesis::config::Credentials::new(key, "secret", None, None, "test"),
        )
        .expect("caller")
    };
    let body = |role: &str| {
        serde_json::json!({
            "ChannelName": "to-lake",
            "ServiceExecutionRoleARN": format!("arn:aws:iam::{HOME}:role/{role}"),
            "StreamConfigurationList": [{"StreamARN": stream_arn("lake"),
                "RecordConfiguration": {"RecordFormatType": "JSON"}}],
            "S3DestinationConfiguration": {"StorageConfiguration": {
                "BucketARN": "arn:aws:s3:::lake", "ExpectedBucketOwner": HOME,
                "CompressionType": "NONE"}},
        })
    };
    let error = signed("AKIDSTREAMONLY")
        .call("CreateChannel", &body("delivery-lake"))
        .await
        .expect_err("no iam:PassRole");
    assert_eq!(
        error.to_string(),
        format!(
            "AccessDeniedException: User: {} is not authorized to perform: iam:PassRole on \
             resource: arn:aws:iam::{HOME}:role/delivery-lake because no identity-based policy \
             allows the iam:PassRole action",
            arn_of(HOME, "streamonly")
        )
    );
    // Allowed to pass other roles only.
    let passer = signed("AKIDPASSER");
    let error = passer
        .call("CreateChannel", &body("admin"))
        .await
        .expect_err("not this role");
    assert!(error.to_string().contains("iam:PassRole"), "{error}");
    let created = passer
        .call("CreateChannel", &body("delivery-lake"))
        .await
        .expect("allowed");
    assert_eq!(created["ChannelDescription"]["ChannelStatus"], "CREATING");
}

/// Under `--auth sigv4` the console, metrics and alarms need HTTP Basic credentials (an access
/// key id and its secret) and the actions behind each page: DescribeStreamSummary to list a
/// stream, GetRecords to browse it, CloudWatch's actions for metrics and alarms. The health
/// and readiness probes stay open.
#[tokio::test]
async fn console_pages_need_credentials_and_permissions() {
    use base64::Engine as _;
    let t = server().await;
    let root = sdk(t.addr, "AKIDROOT");
    crate::util::create_stream(&root, "open").await;
    crate::util::create_stream(&root, "secret").await;
    root.put_record()
        .stream_name("open")
        .partition_key("k")
        .data(Blob::new("hello"))
        .send()
        .await
        .expect("put");
    let basic = |key: &str, secret: &str| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        format!("Basic {token}")
    };
    let get = |path: &'static str, authorization: Option<String>| {
        let addr = t.addr;
        async move {
            let headers: Vec<(&str, &str)> = match &authorization {
                Some(value) => vec![("Authorization", value.as_str())],
                None => vec![],
            };
            crate::util::raw_path(addr, "GET", path, &headers, b"").await
        }
    };

    // The probes need nothing.
    assert_eq!(get("/_rivulet/health", None).await.status, 200);
    assert_eq!(get("/_rivulet/ready", None).await.status, 200);

    // Everything else: 401 with a Basic challenge without valid credentials.
    for authorization in [
        None,
        Some(basic("AKIDREADER", "wrong")),
        Some(basic("AKIDUNKNOWN", "secret")),
        Some("Basic not-base64!".to_string()),
    ] {
        for path in [
            "/_rivulet/",
            "/_rivulet/console.js",
            "/_rivulet/api/streams",
            "/_rivulet/api/records?stream=open&shard=shardId-000000000000",
            "/_rivulet/metrics",
            "/_rivulet/alarms",
        ] {
            let page = get(path, authorization.clone()).await;
            assert_eq!(page.status, 401, "{path} with {authorization:?}");
            assert!(
                page.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Basic realm=\"Rivulet\"")),
                "{path}: {:?}",
                page.headers
            );
            assert_eq!(page.json()["__type"], "UnrecognizedClientException");
        }
    }

    let head = crate::util::raw_path(t.addr, "HEAD", "/_rivulet/metrics", &[], b"").await;
    assert_eq!(head.status, 401);

    // Signed in, the page itself needs no permission.
    let nobody = Some(basic("AKIDNOBODY", "secret"));
    assert_eq!(get("/_rivulet/", nobody.clone()).await.status, 200);
    // The scheme's name is case-insensitive.
    let lower = nobody.as_deref().map(|v| v.replacen("Basic", "basic", 1));
    assert_eq!(get("/_rivulet/", lower).await.status, 200);

    // The stream list shows what the principal may describe: nothing for a principal without
    // permissions or from another account (no resource policy shares these streams).
    let names = |page: crate::util::RawResponse| -> Vec<String> {
        let mut names: Vec<String> = page.json()["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    };
    let reader = Some(basic("AKIDREADER", "secret"));
    assert_eq!(
        names(get("/_rivulet/api/streams", reader.clone()).await),
        ["open", "secret"]
    );
    assert!(names(get("/_rivulet/api/streams", nobody.clone()).await).is_empty());
    let bob = Some(basic("AKIDBOB", "secret"));
    assert!(names(get("/_rivulet/api/streams", bob).await).is_empty());

    // Browsing records is GetRecords: the reader's policy denies it on "secret".
    let open = get(
        "/_rivulet/api/records?stream=open&shard=shardId-000000000000",
        reader.clone(),
    )
    .await;
    assert_eq!(open.status, 200);
    assert_eq!(open.json()["records"].as_array().map(Vec::len), Some(1));
    let secret = get(
        "/_rivulet/api/records?stream=secret&shard=shardId-000000000000",
        reader.clone(),
    )
    .await;
    assert_eq!(secret.status, 403);
    assert_eq!(secret.json()["__type"], "AccessDeniedException");
    assert_eq!(
        secret.json()["message"],
        not_authorized(
            &arn_of(HOME, "reader"),
            "GetRecords",
            &stream_arn("secret"),
            "with an explicit deny in an identity-based policy"
        )
    );

    // Metrics and alarms are CloudWatch's: the reader has no CloudWatch permissions, the
    // account's root has every permission.
    let metrics = get("/_rivulet/metrics", reader.clone()).await;
    assert_eq!(metrics.status, 403);
    assert_eq!(
        metrics.json()["message"],
        format!(
            "User: {} is not authorized to perform: cloudwatch:GetMetricData because no \
             identity-based policy allows the cloudwatch:GetMetricData action",
            arn_of(HOME, "reader")
        )
    );
    assert_eq!(get("/_rivulet/alarms", reader).await.status, 403);
    let admin = Some(basic("AKIDROOT", "secret"));
    let metrics = get("/_rivulet/metrics", admin.clone()).await;
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("StreamName=\"open\""));
    assert_eq!(get("/_rivulet/alarms", admin).await.status, 200);

    // Another account's root may read CloudWatch in its own account: it sees its own
    // account's metrics, not this one's streams, and cannot browse them.
    let other = Some(basic("AKIDOTHERROOT", "secret"));
    let metrics = get("/_rivulet/metrics", other.clone()).await;
    assert_eq!(metrics.status, 200);
    assert!(
        !String::from_utf8_lossy(&metrics.body).contains("StreamName=\"open\""),
        "{}",
        String::from_utf8_lossy(&metrics.body)
    );
    assert!(names(get("/_rivulet/api/streams", other.clone()).await).is_empty());
    let theirs = get(
        "/_rivulet/api/records?account=000000000000&stream=open&shard=shardId-000000000000",
        other.clone(),
    )
    .await;
    assert_eq!(theirs.status, 403);
    // An account the server does not serve: the same denial, nothing about the account.
    let nowhere = get(
        "/_rivulet/api/records?account=999999999999&stream=open&shard=shardId-000000000000",
        other,
    )
    .await;
    assert_eq!(nowhere.status, 403);
    assert_eq!(nowhere.json()["__type"], "AccessDeniedException");
}
