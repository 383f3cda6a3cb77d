//! Cluster mode (`--cluster`) on a real 3-server NATS cluster with R3 JetStream, driven
//! through `aws-sdk-kinesis`: one Rivulet node (records, metadata and resharding live in
//! JetStream, and another node serves them as they were), then three nodes as processes
//! with requests spread over them, and a kill -9 of the leader.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use rivulet_cluster::servers::NatsCluster;
use rivulet_cluster::store::ClusterSettings;
use rivulet_server::{ServerConfig, Storage};

use crate::util::{
    Process, TestServer, client, first_page, register_consumer, stream_arn, wait_active,
    wait_active_within,
};

fn settings(cluster: &NatsCluster, node: &str, leader_wait: Duration) -> ClusterSettings {
    ClusterSettings {
        leader_wait,
        ..cluster.settings(node, "riv")
    }
}

fn config(settings: ClusterSettings) -> ServerConfig {
    let mut config = ServerConfig::for_tests();
    config.storage = Storage::Cluster(Box::new(settings));
    config
}

/// Every record of `shard` from TRIM_HORIZON: (sequence number, data).
async fn read_all(
    c: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
) -> Vec<(String, Vec<u8>)> {
    crate::util::read_all(c, stream, shard)
        .await
        .iter()
        .map(|r| (r.sequence_number().to_string(), r.data().as_ref().to_vec()))
        .collect()
}

async fn list_shards(
    c: &aws_sdk_kinesis::Client,
) -> aws_sdk_kinesis::operation::list_shards::ListShardsOutput {
    c.list_shards()
        .stream_name("orders")
        .send()
        .await
        .expect("list shards")
}

/// A subscription from LATEST to `shard`, once consumer `consumer_arn` is ACTIVE.
async fn subscribe_latest(
    c: &aws_sdk_kinesis::Client,
    consumer_arn: &str,
    shard: &str,
) -> aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
> {
    for _ in 0..200 {
        let status = c
            .describe_stream_consumer()
            .consumer_arn(consumer_arn)
            .send()
            .await
            .expect("describe consumer")
            .consumer_description()
            .map(|d| d.consumer_status().clone());
        if status == Some(aws_sdk_kinesis::types::ConsumerStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    subscribe(c, consumer_arn, shard)
        .await
        .expect("subscribe")
        .event_stream
}

/// SubscribeToShard from LATEST.
async fn subscribe(
    c: &aws_sdk_kinesis::Client,
    consumer_arn: &str,
    shard: &str,
) -> Result<
    aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput,
    aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError,
> {
    c.subscribe_to_shard()
        .consumer_arn(consumer_arn)
        .shard_id(shard)
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .expect("position"),
        )
        .send()
        .await
        .map_err(|e| e.into_service_error())
}

/// The data of the first record a subscription pushes (within 10 s).
async fn first_pushed(
    events: &mut aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        SubscribeToShardEventStream,
        aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
    >,
) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.expect("event") {
                Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))
                    if !event.records().is_empty() =>
                {
                    return event.records()[0].data().as_ref().to_vec();
                }
                Some(_) => continue,
                None => panic!("the subscription ended"),
            }
        }
    })
    .await
    .expect("pushed in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_kinesis_from_jetstream_and_a_restart_keeps_everything() {
    let mut nats = NatsCluster::start(3).await.expect("nats cluster");
    let node = TestServer::with_config(config(settings(&nats, "a", Duration::from_secs(10)))).await;
    let c = &node.client;

    c.create_stream()
        .stream_name("orders")
        .shard_count(4)
        .send()
        .await
        .expect("create");
    wait_active(c, "orders").await;

    // PutRecords over every shard, then PutRecord: each shard's numbers strictly increase.
    let entries: Vec<PutRecordsRequestEntry> = (0..200)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(format!("record-{i}")))
                .build()
                .expect("entry")
        })
        .collect();
    let put = c
        .put_records()
        .stream_name("orders")
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(put.failed_record_count(), Some(0));
    let single = c
        .put_record()
        .stream_name("orders")
        .partition_key("key-7")
        .data(Blob::new("record-200"))
        .send()
        .await
        .expect("put record");

    let mut expected: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (i, r) in put.records().iter().enumerate() {
        expected
            .entry(r.shard_id().expect("shard").to_string())
            .or_default()
            .push((
                r.sequence_number().expect("sequence").to_string(),
                format!("record-{i}"),
            ));
    }
    expected
        .entry(single.shard_id().to_string())
        .or_default()
        .push((single.sequence_number().to_string(), "record-200".into()));
    let shards = list_shards(c).await;
    assert_eq!(shards.shards().len(), 4);
    let mut read = 0;
    for shard in shards.shards() {
        let records = read_all(c, "orders", shard.shard_id()).await;
        let want = expected.remove(shard.shard_id()).unwrap_or_default();
        let got: Vec<(String, String)> = records
            .iter()
            .map(|(seq, data)| (seq.clone(), String::from_utf8_lossy(data).into_owned()))
            .collect();
        assert_eq!(
            got,
            want,
            "shard {}: every record once, in order",
            shard.shard_id()
        );
        // Decimal numbers of up to 56 digits: compared by length, then digit by digit.
        let numbers: Vec<(usize, &str)> = records
            .iter()
            .map(|(seq, _)| (seq.len(), seq.as_str()))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "numbers increase");
        read += records.len();
    }
    assert_eq!(read, 201);

    // AT_SEQUENCE_NUMBER and AFTER_SEQUENCE_NUMBER start where the numbers say; LATEST
    // starts after the last record.
    let shard = single.shard_id().to_string();
    let page = first_page(
        c,
        "orders",
        &shard,
        ShardIteratorType::AtSequenceNumber,
        Some(single.sequence_number()),
    )
    .await;
    assert_eq!(page.records().len(), 1);
    assert_eq!(page.records()[0].data().as_ref(), b"record-200");
    let empty = first_page(c, "orders", &shard, ShardIteratorType::Latest, None).await;
    assert!(empty.records().is_empty());
    c.put_record()
        .stream_name("orders")
        .partition_key("key-7")
        .data(Blob::new("after-latest"))
        .send()
        .await
        .expect("put");
    let after = c
        .get_records()
        .shard_iterator(empty.next_shard_iterator().expect("next"))
        .send()
        .await
        .expect("get");
    assert_eq!(after.records().len(), 1);
    assert_eq!(after.records()[0].data().as_ref(), b"after-latest");

    // Resharding: the parent closes where its records end, the children take new writes.
    c.split_shard()
        .stream_name("orders")
        .shard_to_split(&shard)
        .new_starting_hash_key(
            shards
                .shards()
                .iter()
                .find(|s| s.shard_id() == shard)
                .and_then(|s| s.hash_key_range())
                .map(|range| {
                    let start: u128 = range.starting_hash_key().parse().expect("start");
                    let end: u128 = range.ending_hash_key().parse().expect("end");
                    (start + (end - start) / 2).to_string()
                })
                .expect("range"),
        )
        .send()
        .await
        .expect("split");
    wait_active(c, "orders").await;
    let parent = read_all(c, "orders", &shard).await;
    let last_page = first_page(
        c,
        "orders",
        &shard,
        ShardIteratorType::AfterSequenceNumber,
        Some(&parent.last().expect("records").0),
    )
    .await;
    assert_eq!(
        last_page.child_shards().len(),
        2,
        "the closed parent names its children"
    );
    assert!(last_page.next_shard_iterator().is_none());

    // An enhanced fan-out consumer gets a record pushed.
    let stream_arn = stream_arn(c, "orders").await;
    let consumer_arn = register_consumer(c, &stream_arn, "pushed").await;
    let child = last_page.child_shards()[0].shard_id().to_string();
    let mut events = subscribe_latest(c, &consumer_arn, &child).await;
    let child_range = last_page.child_shards()[0]
        .hash_key_range()
        .expect("range")
        .starting_hash_key()
        .to_string();
    c.put_record()
        .stream_name("orders")
        .partition_key("any")
        .explicit_hash_key(&child_range)
        .data(Blob::new("pushed"))
        .send()
        .await
        .expect("put to child");
    let pushed = first_pushed(&mut events).await;
    assert_eq!(pushed, b"pushed");
    drop(events);

    // A resource policy, to find again after the restarts.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},"Action":"kinesis:GetRecords","Resource":"{stream_arn}"}}]}}"#
    );
    c.put_resource_policy()
        .resource_arn(&stream_arn)
        .policy(&policy)
        .send()
        .await
        .expect("put policy");

    // Node a stops (giving the lease back); node b then leads, with the same streams and
    // records.
    node.stop().await;
    let b = TestServer::with_config(config(settings(&nats, "b", Duration::from_secs(10)))).await;
    let c = &b.client;
    let names = c.list_streams().send().await.expect("list");
    assert_eq!(names.stream_names(), ["orders"]);
    let again = read_all(c, "orders", &shard).await;
    assert_eq!(
        again, parent,
        "the closed parent reads the same after a restart"
    );
    let shards = list_shards(c).await;
    assert_eq!(shards.shards().len(), 6, "4 shards, one split in two");

    // The whole cluster restarts: every NATS server killed, then started again, and a node
    // on it finds every stream, consumer, policy and record.
    b.stop().await;
    for i in 0..3 {
        nats.kill(i).await.expect("kill nats");
    }
    for i in 0..3 {
        nats.restart(i).await.expect("restart nats");
    }
    nats.wait_ready(Duration::from_secs(60))
        .await
        .expect("nats ready");
    let b = TestServer::with_config(config(settings(&nats, "c", Duration::from_secs(10)))).await;
    let c = &b.client;
    assert_eq!(
        read_all(c, "orders", &shard).await,
        parent,
        "records survive a whole-cluster restart"
    );
    let consumers = c
        .list_stream_consumers()
        .stream_arn(&stream_arn)
        .send()
        .await
        .expect("consumers");
    assert_eq!(consumers.consumers().len(), 1);
    assert_eq!(consumers.consumers()[0].consumer_name(), "pushed");
    let kept = c
        .get_resource_policy()
        .resource_arn(&stream_arn)
        .send()
        .await
        .expect("policy");
    assert_eq!(kept.policy(), policy);
    assert_eq!(list_shards(c).await.shards().len(), 6);

    // Deleting the stream removes its JetStream stream.
    c.delete_stream()
        .stream_name("orders")
        .enforce_consumer_deletion(true)
        .send()
        .await
        .expect("delete");
    for _ in 0..200 {
        if c.list_streams()
            .send()
            .await
            .expect("list")
            .stream_names()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nats_client = nats.connect().await.expect("connect");
    let left = rivulet_cluster::records::JetStreamRecords::new(nats_client, "riv", 3)
        .ids()
        .await
        .expect("record streams");
    assert!(left.is_empty(), "no record stream is left: {left:?}");
    b.stop().await;
    nats.stop().await.expect("stop nats");
}

/// Every record once, per shard in order, whichever node wrote or reads it; control-plane
/// calls on any node; a subscription on one node woken by puts on another; kill -9 of the
/// leader: its subscriptions end with an error, the other nodes' clients see none, and
/// leadership (a new stream becoming ACTIVE needs the leader's tick) moves within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_everything_and_survive_the_leader_s_death() {
    let nats = NatsCluster::start(3).await.expect("nats cluster");
    let urls = nats.urls();
    let node = |name: &str| {
        spawn_node(
            &urls,
            name,
            "riv3",
            &["--update-stream-ms", "0", "--limits", "off"],
        )
    };
    // The first node leads (a deployment without a leader takes the first that asks).
    let mut a = node("a");
    let (b, c) = (node("b"), node("c"));
    let (ca, cb, cc) = (client(a.addr), client(b.addr), client(c.addr));

    // Created through a follower (forwarded to the leader), ACTIVE as another follower sees it.
    cb.create_stream()
        .stream_name("multi")
        .shard_count(4)
        .send()
        .await
        .expect("create through a follower");
    // Another node applies the change a moment later (its copy of the metadata follows).
    wait_active_within(&cc, "multi", Duration::from_secs(10)).await;

    // Puts through all three nodes at once.
    let mut writers = Vec::new();
    for (w, client) in [ca.clone(), cb.clone(), cc.clone()].into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for round in 0..10 {
                let entries: Vec<PutRecordsRequestEntry> = (0..50)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("k{w}-{round}-{i}"))
                            .data(Blob::new(format!("w{w}-{round}-{i}")))
                            .build()
                            .expect("entry")
                    })
                    .collect();
                let put = client
                    .put_records()
                    .stream_name("multi")
                    .set_records(Some(entries))
                    .send()
                    .await
                    .expect("put records");
                assert_eq!(put.failed_record_count(), Some(0));
                for (i, r) in put.records().iter().enumerate() {
                    sent.push((
                        r.shard_id().expect("shard").to_string(),
                        r.sequence_number().expect("number").to_string(),
                        format!("w{w}-{round}-{i}"),
                    ));
                }
            }
            sent
        }));
    }
    let mut sent = Vec::new();
    for writer in writers {
        sent.extend(writer.await.expect("writer"));
    }
    let shards = ca
        .list_shards()
        .stream_name("multi")
        .send()
        .await
        .expect("list shards");
    // Records acknowledged through other nodes become readable here within milliseconds
    // (their put notices): read until every one is there, or 10 s.
    sent.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let mut stored = Vec::new();
        for (i, shard) in shards.shards().iter().enumerate() {
            // Each shard read through another node.
            let reader = [&ca, &cb, &cc][i % 3];
            let records = read_all(reader, "multi", shard.shard_id()).await;
            let numbers: Vec<(usize, &str)> = records
                .iter()
                .map(|(seq, _)| (seq.len(), seq.as_str()))
                .collect();
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "numbers increase");
            stored.extend(records.into_iter().map(|(seq, data)| {
                (
                    shard.shard_id().to_string(),
                    seq,
                    String::from_utf8_lossy(&data).into_owned(),
                )
            }));
        }
        if stored.len() >= sent.len() || tokio::time::Instant::now() >= deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stored = stored;
    stored.sort();
    let missing: Vec<_> = sent.iter().filter(|r| !stored.contains(r)).collect();
    let extra: Vec<_> = stored.iter().filter(|r| !sent.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && stored.len() == sent.len(),
        "every acknowledged record once, where it was placed: {} sent, {} stored, missing \
         {missing:?}, not sent {extra:?}",
        sent.len(),
        stored.len()
    );

    // A split through a follower; writes through another follower then reach the children.
    let first = &shards.shards()[0];
    let range = first.hash_key_range().expect("range");
    let (start, end): (u128, u128) = (
        range.starting_hash_key().parse().expect("start"),
        range.ending_hash_key().parse().expect("end"),
    );
    cc.split_shard()
        .stream_name("multi")
        .shard_to_split(first.shard_id())
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("split through a follower");
    wait_active_within(&cb, "multi", Duration::from_secs(10)).await;
    let put = cb
        .put_record()
        .stream_name("multi")
        .partition_key("x")
        .explicit_hash_key(start.to_string())
        .data(Blob::new("to a child"))
        .send()
        .await
        .expect("put after the split");
    assert_ne!(put.shard_id(), first.shard_id(), "the parent is closed");

    // A subscription on a follower wakes for a put through the leader.
    let stream_arn = stream_arn(&ca, "multi").await;
    let consumer_arn = register_consumer(&cb, &stream_arn, "watcher").await;
    let mut events = subscribe_latest(&cc, &consumer_arn, put.shard_id()).await;
    ca.put_record()
        .stream_name("multi")
        .partition_key("x")
        .explicit_hash_key(start.to_string())
        .data(Blob::new("pushed across nodes"))
        .send()
        .await
        .expect("put through the leader");
    let pushed = first_pushed(&mut events).await;
    assert_eq!(pushed, b"pushed across nodes");
    // The consumer's lag, noted by the node serving the subscription, shows on the others'
    // consoles too (within the second it takes to share).
    let mut lag = serde_json::Value::Null;
    for _ in 0..50 {
        let streams = crate::util::raw_path(a.addr, "GET", "/_rivulet/api/streams", &[], b"")
            .await
            .json();
        lag = streams["streams"][0]["consumers"][0]["millis_behind"].clone();
        if lag.is_number() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lag.is_number(),
        "no lag of the consumer on another node: {lag}"
    );
    // One subscription per consumer and shard, across nodes: a second one within 5 s, on
    // another node, is refused.
    let second = subscribe(&ca, &consumer_arn, put.shard_id())
        .await
        .map(|_| ());
    assert!(
        matches!(
            second,
            Err(aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError::ResourceInUseException(_))
        ),
        "{second:?}"
    );
    drop(events);

    // A subscription on the node about to die (its slot free again: the one above ended).
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let mut dying = subscribe_latest(&ca, &consumer_arn, put.shard_id()).await;

    // kill -9 the leader while a follower's client writes: it sees no error, and a stream
    // created after the kill becomes ACTIVE once the leadership has moved.
    let writing = tokio::spawn({
        let cb = cb.clone();
        async move {
            let mut ok = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < until {
                cb.put_record()
                    .stream_name("multi")
                    .partition_key(format!("during-{ok}"))
                    .data(Blob::new("during"))
                    .send()
                    .await
                    .expect("a follower's put while the leader dies");
                ok += 1;
            }
            ok
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = std::time::Instant::now();
    a.kill();
    // Its subscription ends with an error (the SDKs retry a broken event stream).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match dying.recv().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the subscription ends when its node dies");
    assert!(ended.is_err(), "ended with an error: {ended:?}");
    let puts = writing.await.expect("writer");
    assert!(puts > 0);
    cc.create_stream()
        .stream_name("after")
        .shard_count(1)
        .send()
        .await
        .expect("create after the leader died");
    wait_active_within(&cb, "after", Duration::from_secs(15)).await;
    let moved = killed.elapsed();
    assert!(
        moved < Duration::from_secs(10),
        "leadership moved in {moved:?}"
    );
    eprintln!("leadership moved {moved:?} after kill -9 of the leader");
    drop((b, c));
    nats.stop().await.expect("stop nats");
}

/// A `rivulet serve --cluster` process on `urls`, with `extra` flags.
fn spawn_node(urls: &str, name: &str, prefix: &str, extra: &[&str]) -> Process {
    let mut args = vec![
        "--cluster",
        urls,
        "--node-name",
        name,
        "--nats-prefix",
        prefix,
        "--create-stream-ms",
        "0",
        "--log",
        "warn",
    ];
    args.extend_from_slice(extra);
    Process::spawn(&args)
}

/// Throughput limits hold for a shard as a whole across nodes, within 10 %: three nodes each
/// offered the shard's whole rate for 6 s accept about the rate once, not three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_s_limits_hold_across_nodes() {
    let nats = NatsCluster::start(3).await.expect("nats cluster");
    let urls = nats.urls();
    // 0.2 of AWS's rates: 200 records/s per shard.
    let node = |name: &str| {
        spawn_node(
            &urls,
            name,
            "rivl",
            &["--limits", "aws", "--limits-scale", "0.2"],
        )
    };
    let a = node("a");
    let (b, c) = (node("b"), node("c"));
    let clients: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|p| crate::util::client_without_retries(p.addr))
        .collect();
    clients[0]
        .create_stream()
        .stream_name("limited")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    wait_active_within(&clients[1], "limited", Duration::from_secs(10)).await;
    // Each node is offered 200 records/s (10 every 50 ms): 600/s in all, 3× the limit.
    let started = tokio::time::Instant::now();
    let mut offered = Vec::new();
    for client in clients.clone() {
        offered.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while started.elapsed() < Duration::from_secs(6) {
                tick.tick().await;
                let entries: Vec<PutRecordsRequestEntry> = (0..10)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("k{i}"))
                            .data(Blob::new("x"))
                            .build()
                            .expect("entry")
                    })
                    .collect();
                let put = client
                    .put_records()
                    .stream_name("limited")
                    .set_records(Some(entries))
                    .send()
                    .await
                    .expect("put");
                let ok = put
                    .records()
                    .iter()
                    .filter(|r| r.error_code().is_none())
                    .count();
                accepted.push((started.elapsed(), ok));
            }
            accepted
        }));
    }
    let mut in_window = 0;
    for node in offered {
        // Seconds 2 to 6: past the buckets' first second of burst on every node.
        in_window += node
            .await
            .expect("writer")
            .iter()
            .filter(|(at, _)| *at >= Duration::from_secs(2))
            .map(|(_, ok)| ok)
            .sum::<usize>();
    }
    let expected = 200.0 * 4.0;
    let ratio = in_window as f64 / expected;
    eprintln!("accepted {in_window} in 4 s against a limit of {expected} ({ratio:.2})");
    assert!(
        (0.9..=1.1).contains(&ratio),
        "accepted {in_window} records in 4 s, the shard's limit is {expected}"
    );
    drop((a, b, c));
    nats.stop().await.expect("stop nats");
}

/// Encryption at rest across nodes: with one key file shared by every node, a stream
/// encrypted through one node is written through any node, JetStream's files hold none of its
/// data or partition keys in plaintext, and a node started later reads every record (the
/// data keys are stored wrapped, and the AWS-managed key is the same on every node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_streams_leave_only_ciphertext_in_jetstream() {
    use aws_sdk_kinesis::types::EncryptionType;

    let nats = NatsCluster::start(3).await.expect("nats cluster");
    let urls = nats.urls();
    let keys_dir = tempfile::tempdir().expect("key dir");
    let keys = keys_dir.path().join("kms-keys.toml");
    crate::encryption::kms_cli(&keys, &["init"]);
    let keys_arg = keys.display().to_string();
    let node = |name: &str| spawn_node(&urls, name, "rive", &["--kms-keys", &keys_arg]);
    let a = node("a");
    let b = node("b");
    let (ca, cb) = (client(a.addr), client(b.addr));

    ca.create_stream()
        .stream_name("sealed")
        .shard_count(2)
        .send()
        .await
        .expect("create");
    wait_active_within(&cb, "sealed", Duration::from_secs(10)).await;
    // Through the follower: forwarded to the leader, whose key service resolves the alias.
    cb.start_stream_encryption()
        .stream_name("sealed")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .expect("start encryption");
    wait_active_within(&ca, "sealed", Duration::from_secs(10)).await;
    wait_active_within(&cb, "sealed", Duration::from_secs(10)).await;

    // Written through both nodes: each seals with a data key of its own.
    let entries = crate::util::entries(
        0..20,
        |i| format!("sealed-key-{i}"),
        |i| format!("sealed-secret-{i}").into_bytes(),
    );
    let put = ca
        .put_records()
        .stream_name("sealed")
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(put.failed_record_count(), Some(0));
    assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
    let single = cb
        .put_record()
        .stream_name("sealed")
        .partition_key("sealed-key-20")
        .data(Blob::new("sealed-secret-20"))
        .send()
        .await
        .expect("put record");
    assert_eq!(single.encryption_type(), Some(&EncryptionType::Kms));

    // A plaintext stream beside it: its data is found in the files (the search works).
    ca.create_stream()
        .stream_name("plain")
        .shard_count(1)
        .send()
        .await
        .expect("create plain");
    wait_active_within(&ca, "plain", Duration::from_secs(10)).await;
    ca.put_record()
        .stream_name("plain")
        .partition_key("k")
        .data(Blob::new("plain-visible-marker"))
        .send()
        .await
        .expect("put plain");

    // Every node reads all of it back, a node started afterwards too.
    let c = node("c");
    let cc = client(c.addr);
    wait_active_within(&cc, "sealed", Duration::from_secs(10)).await;
    for reader in [&ca, &cb, &cc] {
        let mut data = Vec::new();
        for shard in ["shardId-000000000000", "shardId-000000000001"] {
            for record in crate::util::read_all(reader, "sealed", shard).await {
                assert_eq!(record.encryption_type(), Some(&EncryptionType::Kms));
                data.push(String::from_utf8(record.data().as_ref().to_vec()).expect("utf-8"));
            }
        }
        data.sort();
        let mut want: Vec<String> = (0..21).map(|i| format!("sealed-secret-{i}")).collect();
        want.sort();
        assert_eq!(data, want);
    }

    assert!(
        !crate::encryption::files_containing(nats.dir(), b"plain-visible-marker").is_empty(),
        "the plaintext stream's record is in JetStream's files"
    );
    for needle in [&b"sealed-secret"[..], b"sealed-key"] {
        let found = crate::encryption::files_containing(nats.dir(), needle);
        assert!(found.is_empty(), "plaintext in {found:?}");
    }
    drop((a, b, c));
    nats.stop().await.expect("stop nats");
}

/// The cluster's totals: writes through one node show in every node's metrics (the console's
/// totals, which alarms and Prometheus read too), each console answer names its node, and
/// the leader's on-demand scaling counts writes made through another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_counts_the_cluster_s_traffic() {
    use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails};

    let nats = NatsCluster::start(3).await.expect("nats cluster");
    let urls = nats.urls();
    // A shard takes 1 record/s here, so a few records a second make it hot.
    let node = |name: &str| spawn_node(&urls, name, "rivt", &["--limits-scale", "0.001"]);
    let a = node("a");
    let b = node("b");
    let cb = client(b.addr);
    cb.create_stream()
        .stream_name("busy")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .expect("mode"),
        )
        .send()
        .await
        .expect("create");
    wait_active_within(&cb, "busy", Duration::from_secs(10)).await;
    // From the console (DescribeStreamSummary's rate is scaled down too).
    let open_shards = |addr| async move {
        crate::util::raw_path(addr, "GET", "/_rivulet/api/streams", &[], b"")
            .await
            .json()["streams"][0]["open_shards"]
            .as_u64()
            .expect("open shards")
    };
    let initial = open_shards(a.addr).await;

    // Writes through the follower only, for 8 s.
    let mut accepted = 0;
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let mut round = 0;
    while std::time::Instant::now() < until {
        let entries = crate::util::entries(0..8, |i| format!("k{round}-{i}"), |_| b"x".to_vec());
        let put = cb
            .put_records()
            .stream_name("busy")
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        // Entries that landed on a shard the leader had just split fail (InternalFailure),
        // and are not counted either.
        accepted += 8 - put.failed_record_count().unwrap_or(0);
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted > 0);

    // Both consoles show every accepted record (the other node's within a second or two),
    // and say which node answered.
    for (process, name) in [(&a, "a"), (&b, "b")] {
        let mut seen = serde_json::Value::Null;
        for _ in 0..100 {
            let page =
                crate::util::raw_path(process.addr, "GET", "/_rivulet/api/streams", &[], b"").await;
            let node = page
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-rivulet-node"))
                .map(|(_, v)| v.clone());
            assert_eq!(node.as_deref(), Some(name));
            let streams = page.json();
            assert_eq!(streams["node"], name);
            assert_eq!(streams["leader"], name == "a");
            seen = streams["streams"][0]["totals"]["IncomingRecords"].clone();
            if seen == serde_json::json!(accepted as f64) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, serde_json::json!(accepted as f64), "node {name}");
    }

    // The leader split hot shards it never wrote to itself.
    let mut open = initial;
    for _ in 0..100 {
        open = open_shards(a.addr).await;
        if open > initial {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(open > initial, "still {open} open shards");
    drop((a, b));
    nats.stop().await.expect("stop nats");
}

/// PEM files of a CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn mutual_tls(dir: &std::path::Path) -> rivulet_cluster::servers::ServerTls {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).expect("sign");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    };
    let (cert, key) = issue(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    let (client_cert, client_key) =
        issue(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "client");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write ca");
    rivulet_cluster::servers::ServerTls {
        ca: ca_path,
        cert,
        key,
        client_cert,
        client_key,
    }
}

/// NATS servers that require TLS and verify clients: a node given the CA and a client
/// certificate (`--nats-tls-*`) serves Kinesis on them; a file that is not PEM stops the node
/// at start-up with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_nats_over_mutual_tls() {
    let certs = tempfile::tempdir().expect("cert dir");
    let tls = mutual_tls(certs.path());
    let nats = NatsCluster::start_with(1, Some(tls.clone()))
        .await
        .expect("nats with tls");
    let path = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key) = (path(&tls.ca), path(&tls.client_cert), path(&tls.client_key));
    let node = spawn_node(
        &nats.urls(),
        "a",
        "rtls",
        &[
            "--replicas",
            "1",
            "--nats-tls-ca",
            &ca,
            "--nats-tls-cert",
            &cert,
            "--nats-tls-key",
            &key,
        ],
    );
    let c = client(node.addr);
    c.create_stream()
        .stream_name("secure")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    wait_active(&c, "secure").await;
    c.put_record()
        .stream_name("secure")
        .partition_key("k")
        .data(Blob::new("over tls"))
        .send()
        .await
        .expect("put");
    let records = read_all(&c, "secure", "shardId-000000000000").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].1, b"over tls");

    let log = std::fs::read_to_string(nats.dir().join("n1.log")).expect("nats log");
    assert!(log.contains("TLS required for client connections"), "{log}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            &nats.urls(),
        ])
        .args(["--nats-tls-ca", "Cargo.toml"])
        .output()
        .expect("run rivulet");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--nats-tls-ca Cargo.toml is not PEM"),
        "{stderr}"
    );
    drop(node);
    nats.stop().await.expect("stop nats");
}

/// Each shard of `stream`: its id, parents, whether it is closed, and its records' data and
/// arrival times in order.
type ShardCopy = (String, Vec<String>, bool, Vec<(Vec<u8>, i64)>);

async fn shard_copies(c: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ShardCopy> {
    let mut out = Vec::new();
    for shard in crate::util::shards_of(c, stream).await {
        let records = crate::util::read_all(c, stream, shard.shard_id())
            .await
            .iter()
            .map(|r| {
                let at = r.approximate_arrival_timestamp().expect("arrival");
                (r.data().as_ref().to_vec(), at.to_millis().expect("ms"))
            })
            .collect();
        let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect();
        let closed = shard
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some();
        out.push((shard.shard_id().to_string(), parents, closed, records));
    }
    out
}

/// A wide stream read back as a KCL application reads it: every shard of a 64-shard stream
/// at once, through two nodes in turn (one wrote the records, one did not), in small pages.
/// Each shard gives exactly its records in order: the nodes serve these reads from one read
/// of the JetStream stream (`rivulet_cluster::dense`), handing each shard its part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_of_a_wide_stream_reads_back_in_order_through_any_node() {
    let nats = NatsCluster::start(1).await.expect("nats");
    let nodes =
        crate::util::ClusterNodes::start(&nats, "rwide", 2, ServerConfig::for_tests()).await;
    let c = &nodes.client;
    c.create_stream()
        .stream_name("wide")
        .shard_count(64)
        .send()
        .await
        .expect("create");
    wait_active_within(c, "wide", Duration::from_secs(10)).await;
    // Shard n owns hash keys from n * 2^128 / 64: each record names its shard explicitly.
    let shard_key = |shard: u128| (shard * (u128::MAX / 64 + 1) + 7).to_string();
    let mut want: Vec<Vec<String>> = vec![Vec::new(); 64];
    for round in 0..10 {
        let entries: Vec<PutRecordsRequestEntry> = (0..500u128)
            .map(|i| {
                let shard = (i * 37 + round) % 64;
                let data = format!("{shard}-{round}-{i}");
                want[shard as usize].push(data.clone());
                PutRecordsRequestEntry::builder()
                    .partition_key("k")
                    .explicit_hash_key(shard_key(shard))
                    .data(Blob::new(data))
                    .build()
                    .expect("entry")
            })
            .collect();
        crate::util::put_all(c, "wide", entries).await;
    }
    let shards = crate::util::shards_of(c, "wide").await;
    let mut readers = Vec::new();
    for (at, shard) in shards.iter().enumerate() {
        let (c, id) = (c.clone(), shard.shard_id().to_string());
        readers.push(tokio::spawn(async move {
            let mut iterator = crate::util::trim_horizon(&c, "wide", &id).await;
            let mut got = Vec::new();
            loop {
                let page = c
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(25)
                    .send()
                    .await
                    .expect("get records");
                if page.records().is_empty() {
                    return (at, got);
                }
                got.extend(
                    page.records()
                        .iter()
                        .map(|r| String::from_utf8_lossy(r.data().as_ref()).into_owned()),
                );
                iterator = page.next_shard_iterator().expect("open shard").to_string();
            }
        }));
    }
    for reader in readers {
        let (at, got) = reader.await.expect("reader");
        assert_eq!(got, want[at], "shard {at}");
    }
    nodes.stop().await;
    nats.stop().await.expect("stop nats");
}

/// Quorum lost, through the Kinesis API: with two of three NATS servers killed, PutRecord
/// answers an AWS error the SDKs retry (InternalFailure, HTTP 500) within seconds, never a
/// false acknowledgement; once a second server is back, puts succeed again, and every
/// acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_puts_answer_an_aws_error_then_recover() {
    let mut nats = NatsCluster::start(3).await.expect("nats cluster");
    let node = TestServer::with_config(config(ClusterSettings {
        timeout: Duration::from_secs(2),
        ..settings(&nats, "a", Duration::from_secs(10))
    }))
    .await;
    let c = crate::util::client_without_retries(node.addr);
    c.create_stream()
        .stream_name("q")
        .shard_count(1)
        .send()
        .await
        .expect("create");
    wait_active_within(&c, "q", Duration::from_secs(10)).await;
    let put = |data: &'static str| {
        c.put_record()
            .stream_name("q")
            .partition_key("k")
            .data(Blob::new(data))
            .send()
    };
    put("before").await.expect("a put with a quorum");

    nats.kill(1).await.expect("kill");
    nats.kill(2).await.expect("kill");
    let started = std::time::Instant::now();
    let refused = put("no-quorum")
        .await
        .expect_err("no acknowledgement without a quorum");
    let (code, _) = crate::util::error_of(refused);
    assert_eq!(code, "InternalFailure");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    nats.restart(1).await.expect("restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match put("after").await {
            Ok(_) => break,
            Err(error) => {
                let (code, message) = crate::util::error_of(error);
                assert_eq!(code, "InternalFailure", "{message}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "no recovery: {message}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    // Both acknowledged records read back (the refused one may or may not have been
    // stored: an error is no acknowledgement either way).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let data: Vec<Vec<u8>> = crate::util::read_all(&c, "q", "shardId-000000000000")
            .await
            .iter()
            .map(|r| r.data().as_ref().to_vec())
            .collect();
        if data.last().map(Vec::as_slice) == Some(&b"after"[..]) {
            assert_eq!(data.first().map(Vec::as_slice), Some(&b"before"[..]));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never read back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop().await;
    nats.stop().await.expect("stop nats");
}

/// Runs `rivulet migrate` from `data` into the deployment on `urls` under `prefix` (one
/// replica), with `extra` arguments; retried while the stopped server's directory lock is
/// still held by its last tasks.
fn run_migrate(
    urls: &str,
    prefix: &str,
    data: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"));
    command
        .args([
            "migrate",
            "--to",
            urls,
            "--replicas",
            "1",
            "--nats-prefix",
            prefix,
        ])
        .args(extra)
        .arg("--from")
        .arg(data);
    let mut done = command.output().expect("run rivulet migrate");
    for _ in 0..50 {
        if done.status.success() || !String::from_utf8_lossy(&done.stderr).contains("in use") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        done = command.output().expect("run rivulet migrate");
    }
    done
}

/// `rivulet migrate`: a stopped single node's data dir moves into a new deployment: streams
/// with their shards (a closed parent stays closed, its children keep their parents),
/// records in order with their arrival times, tags and consumers. A deployment with a
/// running node is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_data_dir_moves_into_a_cluster() {
    let data = tempfile::tempdir().expect("data dir");
    let single = TestServer::on_disk(data.path()).await;
    let c = &single.client;
    c.create_stream()
        .stream_name("moved")
        .shard_count(2)
        .send()
        .await
        .expect("create");
    wait_active(c, "moved").await;
    let put = |range: std::ops::Range<usize>, tag: &'static str| {
        let c = c.clone();
        async move {
            let entries = crate::util::entries(
                range,
                |i| format!("key-{i}"),
                move |i| format!("{tag}-{i}").into_bytes(),
            );
            crate::util::put_all(&c, "moved", entries).await;
        }
    };
    put(0..30, "before").await;
    // A time between the two puts, for AT_TIMESTAMP after the migration.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.split_shard()
        .stream_name("moved")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("85070591730234615865843651857942052864")
        .send()
        .await
        .expect("split");
    wait_active(c, "moved").await;
    put(30..40, "after").await;
    c.add_tags_to_stream()
        .stream_name("moved")
        .tags("team", "data")
        .send()
        .await
        .expect("tags");
    let arn = stream_arn(c, "moved").await;
    register_consumer(c, &arn, "reader").await;
    let expected = shard_copies(c, "moved").await;
    assert_eq!(expected.len(), 4);
    single.stop().await;

    let nats = NatsCluster::start(1).await.expect("nats");
    let urls = nats.urls();
    let migrate = || run_migrate(&urls, "rmig", data.path(), &[]);
    let done = migrate();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.contains("migrated 1 streams (4 shards, 40 records)"),
        "{stdout}"
    );

    let node = spawn_node(&urls, "a", "rmig", &["--replicas", "1"]);
    let cc = client(node.addr);
    assert_eq!(shard_copies(&cc, "moved").await, expected);
    let tags = cc
        .list_tags_for_stream()
        .stream_name("moved")
        .send()
        .await
        .expect("tags");
    assert_eq!(tags.tags()[0].key(), "team");
    let consumers = cc
        .list_stream_consumers()
        .stream_arn(&arn)
        .send()
        .await
        .expect("consumers");
    assert_eq!(consumers.consumers()[0].consumer_name(), "reader");
    // AT_TIMESTAMP goes by the records' own arrival times, not by when the migration stored
    // them: each shard's first record at or after `between_ms`, or none.
    let mut found_after = 0;
    for (shard, _, _, records) in &expected {
        let page = crate::util::first_page_from(
            &cc,
            "moved",
            shard,
            ShardIteratorType::AtTimestamp,
            None,
            Some(between_ms),
        )
        .await;
        let first = page.records().first().map(|r| r.data().as_ref().to_vec());
        let wanted = records
            .iter()
            .find(|(_, arrived)| *arrived >= between_ms)
            .map(|(data, _)| data.clone());
        assert_eq!(first, wanted, "{shard}");
        found_after += usize::from(wanted.is_some());
    }
    assert!(found_after >= 2, "the check saw records after the time");
    // The deployment runs now: a second migration is refused.
    let refused = migrate();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("leads this deployment"), "{stderr}");
    drop(node);
    nats.stop().await.expect("stop nats");
}

/// `rivulet migrate` with encrypted streams: given the single node's key file and the
/// deployment's, the copies are sealed again (JetStream's files hold no plaintext of them),
/// under the same customer-managed key (added to the deployment's file) or the deployment's
/// own AWS-managed key; records written after encryption stopped stay plaintext; a node on
/// the shared key file reads everything back. Without the deployment's key file the
/// migration is refused, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_streams_move_into_a_cluster_encrypted() {
    use aws_sdk_kinesis::types::EncryptionType;

    let data = tempfile::tempdir().expect("data dir");
    let keys = tempfile::tempdir().expect("key dir");
    let single_keys = keys.path().join("single.toml");
    let shared_keys = keys.path().join("shared.toml");
    let created =
        crate::encryption::kms_cli(&single_keys, &["create-key", "--alias", "alias/orders"]);
    let orders_arn = created.split_whitespace().nth(1).expect("arn").to_string();
    let single =
        TestServer::with_config(crate::encryption::server_config(data.path(), &single_keys)).await;
    let c = &single.client;
    for (stream, key) in [("orders", "alias/orders"), ("managed", "alias/aws/kinesis")] {
        c.create_stream()
            .stream_name(stream)
            .shard_count(2)
            .send()
            .await
            .expect("create");
        wait_active(c, stream).await;
        crate::encryption::start_encryption(c, stream, key).await;
        wait_active(c, stream).await;
    }
    let put = |stream: &'static str, tag: &'static str| {
        let c = c.clone();
        async move {
            let entries = crate::util::entries(
                0..10,
                move |i| format!("{tag}-key-{i}"),
                move |i| format!("{tag}-{i}").into_bytes(),
            );
            crate::util::put_all(&c, stream, entries).await;
        }
    };
    put("orders", "sealed-orders").await;
    put("managed", "sealed-managed").await;
    c.stop_stream_encryption()
        .stream_name("orders")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/orders")
        .send()
        .await
        .expect("stop encryption");
    wait_active(c, "orders").await;
    put("orders", "plain-orders").await;
    single.stop().await;

    let nats = NatsCluster::start(1).await.expect("nats");
    let urls = nats.urls();
    let single_keys_arg = single_keys.display().to_string();
    let shared_keys_arg = shared_keys.display().to_string();
    let migrate = |extra: &[&str]| {
        let mut args = vec!["--from-kms-keys", &single_keys_arg];
        args.extend_from_slice(extra);
        run_migrate(&urls, "renc", data.path(), &args)
    };
    let refused = migrate(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("give --kms-keys"), "{stderr}");
    let done = migrate(&["--kms-keys", &shared_keys_arg]);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.contains("migrated 2 streams (4 shards, 30 records)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("added 1 customer-managed keys and a managed_root"),
        "{stdout}"
    );

    // No plaintext of the sealed records in JetStream's files; the plain ones are there.
    for needle in [&b"sealed-orders"[..], b"sealed-managed"] {
        let found = crate::encryption::files_containing(nats.dir(), needle);
        assert!(found.is_empty(), "plaintext in {found:?}");
    }
    assert!(!crate::encryption::files_containing(nats.dir(), b"plain-orders").is_empty());

    let shared = shared_keys.display().to_string();
    let node = spawn_node(
        &urls,
        "a",
        "renc",
        &["--replicas", "1", "--kms-keys", &shared],
    );
    let cc = client(node.addr);
    let read = |stream: &'static str| {
        let cc = cc.clone();
        async move {
            let mut out = Vec::new();
            for shard in ["shardId-000000000000", "shardId-000000000001"] {
                for record in crate::util::read_all(&cc, stream, shard).await {
                    let data = String::from_utf8(record.data().as_ref().to_vec()).expect("utf-8");
                    let sealed = record.encryption_type() == Some(&EncryptionType::Kms);
                    out.push((data, sealed));
                }
            }
            out.sort();
            out
        }
    };
    let mut want: Vec<(String, bool)> = (0..10)
        .map(|i| (format!("plain-orders-{i}"), false))
        .chain((0..10).map(|i| (format!("sealed-orders-{i}"), true)))
        .collect();
    want.sort();
    assert_eq!(read("orders").await, want);
    let mut want: Vec<(String, bool)> = (0..10)
        .map(|i| (format!("sealed-managed-{i}"), true))
        .collect();
    want.sort();
    assert_eq!(read("managed").await, want);
    // The managed stream is under the deployment's AWS-managed key now, and still encrypted:
    // new writes are sealed too. The customer-managed key is the same key.
    let summary = cc
        .describe_stream_summary()
        .stream_name("managed")
        .send()
        .await
        .expect("describe");
    let description = summary.stream_description_summary().expect("summary");
    assert_eq!(description.encryption_type(), Some(&EncryptionType::Kms));
    assert_eq!(description.key_id(), Some("alias/aws/kinesis"));
    let put = cc
        .put_record()
        .stream_name("managed")
        .partition_key("k")
        .data(Blob::new("after-the-move"))
        .send()
        .await
        .expect("put after");
    assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
    assert!(crate::encryption::kms_cli(&shared_keys, &["list-keys"]).contains(&orders_arn));
    drop(node);
    nats.stop().await.expect("stop nats");
}

/// kill -9 of the NATS server leading a busy stream, under write load through Rivulet: no
/// acknowledged record is lost, none is stored twice, each shard keeps the order of the
/// acknowledgements; writes resume once NATS has elected a new leader; the restarted server
/// catches up. The client does not retry (a retried request is a new put, as on AWS), so
/// every record is sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_leader_of_a_busy_stream_loses_no_acknowledged_record() {
    let mut nats = NatsCluster::start(3).await.expect("nats cluster");
    let node = TestServer::with_config(config(settings(&nats, "a", Duration::from_secs(10)))).await;
    let c = aws_sdk_kinesis::Client::from_conf(
        node.client
            .config()
            .to_builder()
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build(),
    );
    c.create_stream()
        .stream_name("busy")
        .shard_count(4)
        .send()
        .await
        .expect("create");
    wait_active(&c, "busy").await;
    let watcher = nats.connect().await.expect("connect");
    let names = nats
        .stream_names(&watcher, "riv_D_")
        .await
        .expect("stream names");
    assert_eq!(names.len(), 1, "{names:?}");
    let jetstream = names[0].clone();

    // (shard, sequence number, data) of every acknowledged record, in acknowledgement order.
    let mut acknowledged: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut failed = 0;
    let mut killed: Option<(usize, std::time::Instant)> = None;
    let mut resumed = None;
    let start = std::time::Instant::now();
    let mut request = 0;
    while start.elapsed() < Duration::from_secs(22) {
        if killed.is_none() && start.elapsed() > Duration::from_secs(3) {
            let leader = nats
                .stream_leader(&watcher, &jetstream)
                .await
                .expect("leader");
            let index = nats.index_of(&leader).expect("a known server");
            nats.kill(index).await.expect("kill -9");
            killed = Some((index, std::time::Instant::now()));
        }
        let entries = crate::util::entries(
            0..50,
            |i| format!("key-{i}"),
            |i| format!("r{request}-{i}").into_bytes(),
        );
        match c
            .put_records()
            .stream_name("busy")
            .set_records(Some(entries.clone()))
            .send()
            .await
        {
            Ok(out) => {
                for (entry, result) in entries.iter().zip(out.records()) {
                    match (result.shard_id(), result.sequence_number()) {
                        (Some(shard), Some(sequence)) => acknowledged.push((
                            shard.to_string(),
                            sequence.to_string(),
                            entry.data().as_ref().to_vec(),
                        )),
                        _ => failed += 1,
                    }
                }
                if let Some((_, at)) = killed
                    && resumed.is_none()
                    && out.failed_record_count() == Some(0)
                {
                    resumed = Some(at.elapsed());
                }
            }
            Err(_) => failed += 50,
        }
        request += 1;
    }
    let (index, _) = killed.expect("killed");
    let resumed = resumed.expect("writes resumed after the kill");
    eprintln!(
        "writes resumed {resumed:?} after the kill; {} records acknowledged, {failed} failed",
        acknowledged.len()
    );
    // NATS elects a new leader after its election timeout, random in 4-9 s; a put in flight
    // waits for its answer first.
    assert!(
        resumed < Duration::from_secs(15),
        "writes resumed after {resumed:?}"
    );
    nats.restart(index).await.expect("restart");
    nats.wait_current(&watcher, &jetstream)
        .await
        .expect("the restarted server catches up");

    let mut stored: HashMap<Vec<u8>, usize> = HashMap::new();
    for shard in crate::util::shards_of(&c, "busy").await {
        let records = read_all(&c, "busy", shard.shard_id()).await;
        for (_, data) in &records {
            *stored.entry(data.clone()).or_default() += 1;
        }
        let want: Vec<(String, Vec<u8>)> = acknowledged
            .iter()
            .filter(|(s, _, _)| s == shard.shard_id())
            .map(|(_, sequence, data)| (sequence.clone(), data.clone()))
            .collect();
        let kept: Vec<(String, Vec<u8>)> = records
            .into_iter()
            .filter(|record| want.contains(record))
            .collect();
        assert_eq!(
            kept,
            want,
            "{}: acknowledged records lost or out of order",
            shard.shard_id()
        );
    }
    assert!(stored.values().all(|&n| n == 1), "a record is stored twice");
    drop(node);
    nats.stop().await.expect("stop nats");
}

/// `--auth sigv4` with two accounts on two nodes: each account's requests, through either
/// node (a follower forwards them to the leader with their account), see only that
/// account's streams and records, also after every node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_stay_apart_across_nodes() {
    use crate::auth::{credential, sdk};
    use rivulet_server::sigv4::Credential;

    let nats = NatsCluster::start(3).await.expect("nats cluster");
    let credentials = std::sync::Arc::new(crate::util::allow_all(vec![
        credential("AKIDHOME", "home-secret", None, None),
        Credential {
            account_id: "111111111111".into(),
            ..credential("AKIDOTHER", "other-secret", None, None)
        },
    ]));
    let mut config = ServerConfig::for_tests();
    config.credentials = Some(credentials);
    let nodes = crate::util::ClusterNodes::start(&nats, "racct", 2, config.clone()).await;
    let [leader, follower] = nodes.addrs()[..] else {
        panic!("two nodes")
    };
    // Each account writes through another node than it reads through afterwards.
    let home = sdk(leader, "AKIDHOME", "home-secret", None);
    let other = sdk(follower, "AKIDOTHER", "other-secret", None);
    crate::auth::write_apart(&home, &other).await;
    nodes.stop().await;

    let nodes = crate::util::ClusterNodes::start(&nats, "racct", 2, config).await;
    let [first, second] = nodes.addrs()[..] else {
        panic!("two nodes")
    };
    let home = sdk(second, "AKIDHOME", "home-secret", None);
    let other = sdk(first, "AKIDOTHER", "other-secret", None);
    crate::auth::check_apart(&home, &other).await;
    nodes.stop().await;
    nats.stop().await.expect("stop nats");
}

/// Read your writes across nodes: a change answered through one node is in the descriptions
/// and listings every other node gives right after (a follower catches up before answering
/// them), for tags and resharding, many times over, on followers that are slow to follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_through_one_node_is_seen_through_every_other_at_once() {
    let nats = NatsCluster::start(3).await.expect("nats cluster");
    // Followers that take 300 ms to take in what another node committed, as a loaded
    // machine's may: what they answer must not depend on it.
    let lag = Duration::from_millis(300);
    let nodes =
        crate::util::ClusterNodes::start_lagging(&nats, "ryw", 3, ServerConfig::for_tests(), lag)
            .await;
    let clients: Vec<aws_sdk_kinesis::Client> = nodes.addrs().into_iter().map(client).collect();
    clients[0]
        .create_stream()
        .stream_name("ryw")
        .shard_count(1)
        .send()
        .await
        .unwrap();
    wait_active(&clients[0], "ryw").await;
    for round in 0..12usize {
        // Each round writes through another node (a follower two rounds in three).
        let writer = &clients[round % 3];
        writer
            .add_tags_to_stream()
            .stream_name("ryw")
            .tags(format!("t{round}"), "v")
            .send()
            .await
            .unwrap();
        for reader in clients.iter() {
            let tags = reader
                .list_tags_for_stream()
                .stream_name("ryw")
                .send()
                .await
                .unwrap();
            assert_eq!(tags.tags().len(), round + 1, "round {round}");
        }
    }
    // Splits and merges, each read back at once through the two other nodes.
    for round in 0..6usize {
        let writer = &clients[round % 3];
        let open: Vec<aws_sdk_kinesis::types::Shard> = crate::util::shards_of(writer, "ryw")
            .await
            .into_iter()
            .filter(|s| {
                s.sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none()
            })
            .collect();
        if round % 2 == 0 {
            writer
                .split_shard()
                .stream_name("ryw")
                .shard_to_split(open[0].shard_id())
                .new_starting_hash_key("170141183460469231731687303715884105728")
                .send()
                .await
                .unwrap();
        } else {
            writer
                .merge_shards()
                .stream_name("ryw")
                .shard_to_merge(open[0].shard_id())
                .adjacent_shard_to_merge(open[1].shard_id())
                .send()
                .await
                .unwrap();
        }
        wait_active(writer, "ryw").await;
        let expected = if round % 2 == 0 { 2 } else { 1 };
        for (i, reader) in clients.iter().enumerate() {
            let summary = reader
                .describe_stream_summary()
                .stream_name("ryw")
                .send()
                .await
                .unwrap();
            let described = summary.stream_description_summary().unwrap();
            assert_eq!(
                described.open_shard_count(),
                expected,
                "round {round}, node {i}"
            );
        }
    }
    nodes.stop().await;
    nats.stop().await.expect("stop nats");
}

/// NATS authentication beyond user/password and tokens: a node brings an NKey seed
/// (`--nats-nkey`) to servers that list its public key, or a `.creds` file (`--nats-creds`)
/// to a 3-server cluster in operator (JWT) mode; a node with credentials the servers do not
/// know is refused with the reason, and a file that is not a seed is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_authenticate_to_nats_with_an_nkey_or_a_creds_file() {
    use rivulet_cluster::servers::NatsAuth;
    for (auth, size) in [(NatsAuth::NKey, 1), (NatsAuth::Operator, 3)] {
        let nats = NatsCluster::start_with_auth(size, None, Some(auth))
            .await
            .unwrap_or_else(|error| panic!("nats with {auth:?}: {error}"));
        let settings = nats.settings("x", "x");
        let (flag, file) = match auth {
            NatsAuth::NKey => ("--nats-nkey", settings.nkey_seed.expect("seed file")),
            NatsAuth::Operator => ("--nats-creds", settings.credentials.expect("creds file")),
        };
        let file = file.display().to_string();
        let replicas = size.to_string();
        let node = spawn_node(
            &nats.urls(),
            "a",
            "rauth",
            &["--replicas", &replicas, flag, &file],
        );
        // Meanwhile, a node whose key the servers do not know.
        let stranger = nats.dir().join("stranger.nk");
        let seed = nkeys_seed_for_test();
        std::fs::write(&stranger, seed).expect("stranger seed");
        let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cluster",
                &nats.urls(),
            ])
            .arg("--nats-nkey")
            .arg(&stranger)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run rivulet");
        let c = client(node.addr);
        c.create_stream()
            .stream_name("authed")
            .shard_count(1)
            .send()
            .await
            .unwrap_or_else(|error| panic!("create with {auth:?}: {error:?}"));
        wait_active(&c, "authed").await;
        c.put_record()
            .stream_name("authed")
            .partition_key("k")
            .data(Blob::new(format!("{auth:?}")))
            .send()
            .await
            .expect("put");
        let records = read_all(&c, "authed", "shardId-000000000000").await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1, format!("{auth:?}").into_bytes());
        let refused = tokio::time::timeout(Duration::from_secs(20), refused.wait_with_output())
            .await
            .expect("refused without waiting out the connection timeout")
            .expect("run rivulet");
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
        assert!(
            stderr.contains("refused this node's credentials")
                && stderr.contains("authorization violation"),
            "{stderr}"
        );
        drop(node);
        nats.stop().await.expect("stop nats");
    }
    // Not a seed; two ways at once: refused before connecting.
    for (args, says) in [
        (
            vec!["--nats-nkey", "Cargo.toml"],
            "--nats-nkey Cargo.toml: not an NKey seed",
        ),
        (
            vec!["--nats-nkey", "Cargo.toml", "--nats-token", "t"],
            "give one way to authenticate to NATS",
        ),
    ] {
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--cluster", "nats://127.0.0.1:1"])
            .args(&args)
            .output()
            .expect("run rivulet");
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// A fresh user NKey seed, no server knows.
fn nkeys_seed_for_test() -> String {
    rivulet_cluster::servers::new_user_seed()
}
