//! The JetStream pieces the cluster backend stands on, against a real 3-server R3 cluster:
//! atomic batches, batched direct gets, fencing by an epoch subject, and retries recognized
//! by message ids.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use rivulet_cluster::api::{BATCH_DUPLICATE_MESSAGE_ID, WRONG_LAST_SEQUENCE};
use rivulet_cluster::servers::NatsCluster;
use rivulet_cluster::{
    BatchError, BatchMessage, DirectBatch, DirectGet, StoredMessage, direct_get_batch,
    publish_atomic,
};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn create_stream(client: &async_nats::Client, name: &str, subjects: &str) {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![subjects.to_string()],
            num_replicas: 3,
            allow_direct: true,
            allow_atomic_publish: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("create the stream");
}

/// `count` messages on `subject`, bodies `prefix-0`, `prefix-1`, …, each with a message id.
fn messages(subject: &str, prefix: &str, count: usize) -> Vec<BatchMessage> {
    (0..count)
        .map(|i| {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{prefix}:{i}").as_str());
            BatchMessage {
                subject: subject.to_string(),
                headers,
                payload: Bytes::from(format!("{prefix}-{i}")),
            }
        })
        .collect()
}

/// Up to `batch` messages of `subject` in `stream` from sequence `seq`.
async fn read(
    client: &async_nats::Client,
    stream: &str,
    subject: &str,
    seq: u64,
    batch: usize,
) -> DirectBatch {
    let request = DirectGet {
        seq: Some(seq),
        next_by_subj: Some(subject.into()),
        batch,
        ..Default::default()
    };
    direct_get_batch(client, "$JS.API", stream, &request, TIMEOUT)
        .await
        .expect("direct get")
}

fn bodies<'a>(messages: impl IntoIterator<Item = &'a StoredMessage>) -> Vec<String> {
    messages
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

fn api_code(error: BatchError) -> u32 {
    match error {
        BatchError::Api(error) => error.err_code,
        other => panic!("expected the server's refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_stored_whole_in_sequence_and_read_back_per_subject() {
    let cluster = NatsCluster::start(3).await.expect("start nats");
    let client = cluster.connect().await.expect("connect");
    create_stream(&client, "RIV_T", "riv.t.>").await;

    // Two shards' batches, one after the other: each takes consecutive sequences.
    let a = publish_atomic(&client, "batch-a", messages("riv.t.d.0", "a", 500))
        .await
        .expect("batch a");
    let b = publish_atomic(&client, "batch-b", messages("riv.t.d.1", "b", 300))
        .await
        .expect("batch b");
    assert_eq!(
        (a.first_sequence(), a.last_sequence, a.count),
        (1, 500, 500)
    );
    assert_eq!(
        (b.first_sequence(), b.last_sequence, b.count),
        (501, 800, 300)
    );
    let c = publish_atomic(&client, "batch-c", messages("riv.t.d.0", "c", 10))
        .await
        .expect("batch c");
    assert_eq!(c.first_sequence(), 801);

    cluster
        .wait_current(&client, "RIV_T")
        .await
        .expect("replicas");
    // Shard 0 read back by subject, in pages, skipping shard 1's records.
    let first = read(&client, "RIV_T", "riv.t.d.0", 1, 400).await;
    assert_eq!(first.messages.len(), 400);
    assert_eq!(first.num_pending, 110);
    let rest = read(&client, "RIV_T", "riv.t.d.0", 401, 1000).await;
    assert_eq!(rest.num_pending, 0);
    let expected: Vec<String> = (0..500)
        .map(|i| format!("a-{i}"))
        .chain((0..10).map(|i| format!("c-{i}")))
        .collect();
    assert_eq!(
        bodies(first.messages.iter().chain(&rest.messages)),
        expected
    );
    let sequences: Vec<u64> = rest.messages.iter().map(|m| m.sequence).collect();
    assert_eq!(sequences[..100], (401..=500).collect::<Vec<_>>()[..]);
    assert_eq!(sequences[100..], (801..=810).collect::<Vec<_>>()[..]);
    assert!(rest.messages.iter().all(|m| m.subject == "riv.t.d.0"));

    // Nothing on a subject never written.
    assert!(
        read(&client, "RIV_T", "riv.t.d.9", 1, 10)
            .await
            .messages
            .is_empty()
    );

    // A retry of a committed batch (same message ids) is refused whole, and stores nothing.
    let retry = publish_atomic(&client, "batch-a-again", messages("riv.t.d.0", "a", 500)).await;
    assert_eq!(
        api_code(retry.expect_err("a duplicate batch")),
        BATCH_DUPLICATE_MESSAGE_ID
    );
    let after = read(&client, "RIV_T", "riv.t.d.0", 811, 1000).await;
    assert!(after.messages.is_empty());
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_is_fenced_by_the_epoch_subject() {
    let cluster = NatsCluster::start(3).await.expect("start nats");
    let client = cluster.connect().await.expect("connect");
    create_stream(&client, "RIV_F", "riv.f.>").await;
    let js = jetstream::new(client.clone());
    let epoch_subject = "riv.f.e.0";
    // Each owner claims the shard by a compare-and-set on its epoch subject.
    let claim = |previous: u64| {
        let js = js.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                previous.to_string().as_str(),
            );
            js.publish_with_headers(epoch_subject, headers, Bytes::new())
                .await
                .expect("publish the epoch")
                .await
                .map(|ack| ack.sequence)
        }
    };
    // A write fenced by epoch `epoch`: its first message names the epoch subject's last
    // sequence.
    let write = |epoch: u64, id: &'static str| {
        let client = client.clone();
        async move {
            let mut batch = messages("riv.f.d.0", id, 3);
            let headers = &mut batch[0].headers;
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                epoch.to_string().as_str(),
            );
            headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", epoch_subject);
            publish_atomic(&client, id, batch).await
        }
    };
    let first = claim(0).await.expect("the first owner's epoch");
    write(first, "w1").await.expect("the first owner writes");
    // A second claim on a stale epoch loses; on the current one it wins.
    assert!(claim(0).await.is_err());
    let second = claim(first).await.expect("the second owner's epoch");
    // The first owner, unaware, is refused and stores nothing; the second writes.
    let stale = write(first, "w2").await.expect_err("a stale owner");
    match &stale {
        BatchError::Api(error) => {
            assert_eq!(error.err_code, WRONG_LAST_SEQUENCE);
            assert_eq!(error.current_sequence(), Some(second));
        }
        other => panic!("expected a fencing refusal, got {other}"),
    }
    write(second, "w3").await.expect("the second owner writes");
    let stored = read(&client, "RIV_F", "riv.f.d.0", 1, 100).await;
    assert_eq!(
        bodies(&stored.messages),
        ["w1-0", "w1-1", "w1-2", "w3-0", "w3-1", "w3-2"]
    );
    cluster.stop().await.expect("stop");
}
