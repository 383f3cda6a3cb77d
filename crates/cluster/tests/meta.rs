//! Cluster metadata on a real 3-server R3 cluster: commits are atomic and seen by every
//! node, compare-and-set refuses a stale writer whole, and a node opened later starts from
//! the same state.

use std::time::Duration;

use rivulet_cluster::meta::{ClusterMeta, MetaError, MetaOp};
use rivulet_cluster::servers::NatsCluster;

fn put(key: &str, value: &str) -> MetaOp {
    MetaOp::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

/// Waits until `meta` has applied `revision` (committed by another node).
async fn caught_up(meta: &ClusterMeta, revision: u64) {
    let mut changes = meta.changes();
    tokio::time::timeout(
        Duration::from_secs(10),
        changes.wait_for(|applied| *applied >= revision),
    )
    .await
    .expect("caught up in time")
    .expect("follower running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_atomic_commits_and_compare_and_set() {
    let cluster = NatsCluster::start(3).await.expect("start nats");
    let a = ClusterMeta::open(cluster.connect().await.expect("connect"), "riv", 3)
        .await
        .expect("node a");
    let b = ClusterMeta::open(cluster.connect().await.expect("connect"), "riv", 3)
        .await
        .expect("node b");

    // Node a commits; it reads its own write at once, node b once it has caught up.
    let first = a
        .commit(&[
            put("stream/s1", "one"),
            put("stream/s2", "two"),
            put("other/x", "x"),
        ])
        .await
        .expect("commit");
    assert_eq!(a.get("stream/s1").as_deref(), Some(&b"one"[..]));
    caught_up(&b, first).await;
    let streams: Vec<(String, Vec<u8>)> = b.scan_prefix("stream/");
    assert_eq!(
        streams,
        [
            ("stream/s1".to_string(), b"one".to_vec()),
            ("stream/s2".to_string(), b"two".to_vec())
        ]
    );

    // A delete and a put in one commit.
    let second = b
        .commit(&[
            MetaOp::Delete {
                key: "stream/s1".into(),
            },
            put("stream/s3", "three"),
        ])
        .await
        .expect("commit");
    caught_up(&a, second).await;
    assert_eq!(a.get("stream/s1"), None);
    assert_eq!(a.scan_prefix("stream/").len(), 2);

    // Both nodes try to take the same key; the second, on a stale revision, fails whole.
    let absent = a.get_versioned("lease/leader").expect_err("absent");
    assert_eq!(absent, b.get_versioned("lease/leader").expect_err("absent"));
    let taken = a
        .commit_if(&[put("lease/leader", "a")], &[("lease/leader", absent)])
        .await
        .expect("a takes the lease");
    let lost = b
        .commit_if(
            &[put("lease/leader", "b"), put("stream/s4", "lost")],
            &[("lease/leader", absent)],
        )
        .await;
    match lost {
        Err(MetaError::Conflict { current }) => assert_eq!(current, Some(taken)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    caught_up(&b, taken).await;
    assert_eq!(b.get("lease/leader").as_deref(), Some(&b"a"[..]));
    assert_eq!(
        b.get("stream/s4"),
        None,
        "nothing of the refused commit applied"
    );
    // On the current revision it succeeds; a recreated key after a delete too.
    let current = b.get_versioned("lease/leader").expect("present").revision;
    b.commit_if(&[put("lease/leader", "b")], &[("lease/leader", current)])
        .await
        .expect("b takes the lease over");
    let deleted = b.get_versioned("stream/s1").expect_err("deleted");
    assert!(deleted > 0, "a deleted key's revision is its tombstone's");
    b.commit_if(&[put("stream/s1", "again")], &[("stream/s1", deleted)])
        .await
        .expect("recreate");

    // A node opened now starts from the same state.
    let c = ClusterMeta::open(cluster.connect().await.expect("connect"), "riv", 3)
        .await
        .expect("node c");
    assert_eq!(c.scan_prefix(""), b.scan_prefix(""));
    assert_eq!(c.get("lease/leader").as_deref(), Some(&b"b"[..]));
    assert!(matches!(
        c.commit(&[put("k", "1"), put("k", "2")]).await,
        Err(MetaError::DuplicateKey(_))
    ));
    assert!(matches!(
        c.commit(&[put("", "1")]).await,
        Err(MetaError::EmptyKey)
    ));
    cluster.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_a_killed_server() {
    let mut cluster = NatsCluster::start(3).await.expect("start nats");
    let meta = ClusterMeta::open(cluster.connect().await.expect("connect"), "riv", 3)
        .await
        .expect("open");
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        if i == 10 {
            // Whichever server it was (leader or follower), the other two keep a quorum.
            cluster.kill(0).await.expect("kill");
        }
        if i == 20 {
            cluster.restart(0).await.expect("restart");
        }
        let key = format!("k/{i:02}");
        // A commit that got no answer may or may not have landed; only answered ones count.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match meta.commit(&[put(&key, &i.to_string())]).await {
                Ok(_) => {
                    acknowledged.push(key.clone());
                    break;
                }
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no commit for 60 s: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    assert_eq!(acknowledged.len(), 30);
    // A node that starts now sees every acknowledged commit.
    let fresh = ClusterMeta::open(cluster.connect().await.expect("connect"), "riv", 3)
        .await
        .expect("open again");
    let keys: Vec<String> = fresh
        .scan_prefix("k/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, acknowledged);
    cluster.stop().await.expect("stop");
}
