//! Leases on a real 3-server R3 cluster: one holder at a time, a takeover after the holder
//! dies (once the lease has gone unrenewed for its duration), at once after a release, and a
//! deposed holder's fenced commit refused whole.

use std::sync::Arc;
use std::time::Duration;

use rivulet_cluster::lease::{Leadership, LeaseConfig};
use rivulet_cluster::meta::{ClusterMeta, MetaError, MetaOp};
use rivulet_cluster::servers::NatsCluster;

// Renewals have over 3 s to land before the lease runs out: enough on a loaded machine.
const CONFIG: LeaseConfig = LeaseConfig {
    duration: Duration::from_millis(4000),
    renew_every: Duration::from_millis(800),
};

/// Waits for `leadership` to hold its lease; the deadline is for a loaded machine.
async fn acquired(leadership: &Leadership) -> u64 {
    tokio::time::timeout(Duration::from_secs(30), leadership.acquired())
        .await
        .expect("the lease was taken in time")
}

fn put(key: &str, value: &str) -> MetaOp {
    MetaOp::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_moves_when_its_holder_dies_and_fences_the_old_one() {
    let cluster = NatsCluster::start(3).await.expect("start nats");
    let open = || async {
        let client = cluster.connect().await.expect("connect");
        Arc::new(ClusterMeta::open(client, "riv", 3).await.expect("open"))
    };
    let (meta_a, meta_b) = (open().await, open().await);
    let a = Leadership::campaign(meta_a.clone(), "lease/leader", "a", CONFIG).expect("a");
    let term_a = acquired(&a).await;
    let b = Leadership::campaign(meta_b.clone(), "lease/leader", "b", CONFIG).expect("b");
    // While a renews, b never takes the lease: several of its durations pass.
    tokio::time::sleep(CONFIG.duration * 2).await;
    assert_eq!(a.term(), Some(term_a));
    assert_eq!(b.term(), None);
    // The leader's fenced commit goes through (and renews the lease).
    a.commit(&[put("work/a", "1")]).await.expect("a commits");
    assert_eq!(meta_a.get("work/a").as_deref(), Some(&b"1"[..]));

    // a dies without a word; b takes over once the lease has gone unrenewed, in a later
    // term.
    let last = meta_a.get_versioned("lease/leader").expect("held").revision;
    a.abandon();
    let term_b = acquired(&b).await;
    assert!(term_b > term_a);
    // What a deposed leader would still send (its fenced commit on its last revision) is
    // refused whole.
    let refused = meta_a
        .commit_if(
            &[put("work/late", "1"), put("lease/leader", "a")],
            &[("lease/leader", last)],
        )
        .await;
    assert!(matches!(refused, Err(MetaError::Conflict { .. })));
    assert_eq!(meta_b.get("work/late"), None);
    b.commit(&[put("work/b", "1")]).await.expect("b commits");
    b.abandon();

    // A release hands a lease over at once: with a minute-long lease, c gets it long before
    // it could have run out.
    let long = LeaseConfig {
        duration: Duration::from_secs(60),
        renew_every: Duration::from_secs(20),
    };
    let holder = Leadership::campaign(meta_a.clone(), "lease/long", "h", long).expect("h");
    acquired(&holder).await;
    let c = Leadership::campaign(meta_b.clone(), "lease/long", "c", long).expect("c");
    tokio::time::sleep(CONFIG.duration).await;
    assert_eq!(c.term(), None);
    holder.release().await.expect("release");
    acquired(&c).await;
    c.commit(&[put("work/c", "1")]).await.expect("c commits");
    c.release().await.expect("release");
    cluster.stop().await.expect("stop");
}
