//! A cluster node's roles, over its store and its engines (`rivulet serve --cluster`): the
//! engines write metadata while this node holds the leader's lease and follow it otherwise;
//! a follower catches up on demand; every node shares what its shards' limits admitted and
//! what it observed (metrics, on-demand write meters), so limits hold per shard and every
//! node shows the cluster's totals. The server adds what needs HTTP: forwarding requests to
//! the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rivulet_engine::Engine;
use rivulet_engine::storage::RecordStore;
use serde::{Deserialize, Serialize};

use crate::store::ClusterStore;

/// How often a node tells the others what its shards' limits admitted.
const USAGE_EVERY: Duration = Duration::from_millis(100);
/// How often a node tells the others what it observed (in every this many usage rounds: 1 s).
const OBSERVED_EVERY_ROUNDS: u32 = 10;
/// How long catching up waits for this node's copy of the metadata.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long catching up waits for the follower loop before refreshing an engine itself.
const FOLLOWER_WAIT: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Brings this node's copy of the metadata, and `engine`, up to everything committed
/// anywhere so far; says whether it could. A follower answers from its copy,
/// which trails the leader's commits by milliseconds: a request that found no such stream
/// (or consumer) catches up and is answered again, so a client that created a stream
/// through one node finds it through any other at once.
pub async fn catch_up(store: &ClusterStore, engine: &Engine) -> bool {
    if store.is_leader() && engine.is_writer() {
        return false;
    }
    let latest = match store.latest_revision().await {
        Ok(latest) => latest,
        Err(error) => {
            tracing::warn!(%error, "cannot catch up with the metadata");
            return false;
        }
    };
    // The follower loop takes every change in within milliseconds: wait for it rather than
    // read every stream's document again here. Only if it does not come (this node is
    // becoming the leader, or the loop is stuck) does this request refresh the engine itself.
    let account = &engine.config().account_id;
    if store.wait_refreshed(account, latest, FOLLOWER_WAIT).await {
        return true;
    }
    // The copy may hold the change already while the engine has not taken it in yet.
    store.wait_applied(latest, CATCH_UP_TIMEOUT).await && engine.refresh().is_ok()
}

/// Follows the lease and the metadata: the engines write while this node leads (after
/// catching up), and follow every change another node stored otherwise.
pub async fn follow(store: Arc<ClusterStore>, accounts: Arc<HashMap<String, Arc<Engine>>>) {
    let Some(mut changes) = store.meta().changes() else {
        return;
    };
    let mut check = tokio::time::interval(Duration::from_millis(50));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first round takes in what the copy holds now.
    let mut first = true;
    loop {
        let moved = std::mem::take(&mut first)
            || tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                _ = check.tick() => false,
            };
        let leader = store.is_leader();
        if moved && !leader && !store.follow_lag().is_zero() {
            tokio::time::sleep(store.follow_lag()).await;
        }
        let accounts = accounts.clone();
        // What the copy held before the engines look: they take in at least this much.
        let revision = store.applied();
        let settled = tokio::task::spawn_blocking(move || {
            // The accounts whose engine took the stored metadata in just now; one engine's
            // failure holds back neither the others nor their readers.
            let mut took_in = Vec::new();
            for (account, engine) in accounts.iter() {
                let step = || -> Result<bool, rivulet_engine::ApiError> {
                    if leader != engine.is_writer() {
                        // Catch up as a follower first, then write (or stop writing).
                        engine.set_writer(false);
                        engine.refresh()?;
                        engine.set_writer(leader);
                        if leader {
                            tracing::info!(%account, "leading");
                            engine.remove_orphans()?;
                        }
                        Ok(true)
                    } else if moved && !leader {
                        engine.refresh()?;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                };
                match step() {
                    Ok(true) => took_in.push(account.clone()),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%account, %error, "following the cluster's metadata");
                    }
                }
            }
            took_in
        })
        .await;
        for account in settled.unwrap_or_default() {
            store.set_refreshed(&account, revision);
        }
    }
}

/// Shares throughput use and observations with the other nodes on `<prefix>.l`: every 100 ms
/// what this node's shards admitted, charged to the others' buckets (so a shard's limits hold
/// for the shard as a whole, not once per node); every second what it observed (metric data
/// points, on-demand write meters), counted by the others as theirs (so every node's metrics,
/// console and alarms show the cluster's totals, and the leader's on-demand scaling sees every
/// node's writes).
pub async fn share_usage(store: Arc<ClusterStore>, accounts: Arc<HashMap<String, Arc<Engine>>>) {
    let subject = format!("{}.l", store.prefix());
    let me = store.node_name().to_string();
    let mut others = match store.client().subscribe(subject.clone()).await {
        Ok(others) => others,
        Err(error) => {
            tracing::error!(%error, "cannot share throughput use and observations");
            return;
        }
    };
    for engine in accounts.values() {
        engine.set_sharing(true);
    }
    let mut every = tokio::time::interval(USAGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u32;
    loop {
        tokio::select! {
            _ = every.tick() => {
                round = round.wrapping_add(1);
                for (account, engine) in accounts.iter() {
                    let usage = engine.take_usage();
                    let observed = if round.is_multiple_of(OBSERVED_EVERY_ROUNDS) {
                        engine.take_observed()
                    } else {
                        Vec::new()
                    };
                    if usage.is_empty() && observed.is_empty() {
                        continue;
                    }
                    for shared in pack(&me, account, usage, observed, now_ms()) {
                        let Ok(payload) = serde_json::to_vec(&shared) else { continue };
                        if let Err(error) =
                            store.client().publish(subject.clone(), payload.into()).await
                        {
                            tracing::debug!(%error, "throughput use and observations not shared");
                        }
                    }
                }
            }
            message = others.next() => {
                let Some(message) = message else { return };
                let Ok(shared) = serde_json::from_slice::<Shared>(&message.payload) else {
                    continue;
                };
                if shared.node == me {
                    continue;
                }
                let Some(engine) = accounts.get(&shared.account) else { continue };
                let now = now_ms();
                for (stream, shard, usage) in &shared.usage {
                    engine.charge_usage(stream, *shard, usage, now);
                }
                // Counted as of now, by this node's clock (as the usage above): another
                // node's clock may run ahead of this one's.
                for observed in &shared.observed {
                    engine.apply_observed(observed, now);
                }
            }
        }
    }
}

/// One message on `<prefix>.l`: what a node's shards admitted and what it observed, for one
/// account. A round's worth may take several (see [`pack`]); each is applied on its own.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shared {
    node: String,
    account: String,
    #[serde(default)]
    usage: Vec<(String, u32, rivulet_engine::limits::Usage)>,
    /// What the node observed, and when it looked (ms since the epoch, its clock).
    #[serde(default)]
    observed: Vec<rivulet_engine::share::Observed>,
    #[serde(default)]
    at_ms: i64,
}

/// Entries (usage, data points, write meters, lags) per message: each is at most a few
/// hundred bytes of JSON, so a message stays well below NATS's 1 MB payload limit whatever
/// the number of streams and shards.
const ENTRIES_PER_MESSAGE: usize = 2_000;

/// A round's usage and observations as messages of at most [`ENTRIES_PER_MESSAGE`] entries,
/// a stream's observations split across messages where needed (every entry adds to what the
/// receiver counts, so the parts add up to the whole).
fn pack(
    node: &str,
    account: &str,
    usage: Vec<(String, u32, rivulet_engine::limits::Usage)>,
    observed: Vec<rivulet_engine::share::Observed>,
    at_ms: i64,
) -> Vec<Shared> {
    use rivulet_engine::share::Observed;
    let fresh = || Shared {
        node: node.to_string(),
        account: account.to_string(),
        at_ms,
        ..Shared::default()
    };
    let mut messages = Vec::new();
    let mut current = fresh();
    let mut entries = 0usize;
    for entry in usage {
        if entries == ENTRIES_PER_MESSAGE {
            messages.push(std::mem::replace(&mut current, fresh()));
            entries = 0;
        }
        current.usage.push(entry);
        entries += 1;
    }
    for whole in observed {
        let Observed {
            stream,
            points,
            writes,
            lags,
        } = whole;
        let part = || Observed {
            stream: stream.clone(),
            points: Vec::new(),
            writes: Vec::new(),
            lags: Vec::new(),
        };
        let mut piece = part();
        let mut points = points.into_iter();
        let mut writes = writes.into_iter();
        let mut lags = lags.into_iter();
        loop {
            if entries == ENTRIES_PER_MESSAGE {
                let full = std::mem::replace(&mut piece, part());
                if !(full.points.is_empty() && full.writes.is_empty() && full.lags.is_empty()) {
                    current.observed.push(full);
                }
                messages.push(std::mem::replace(&mut current, fresh()));
                entries = 0;
            }
            if let Some(point) = points.next() {
                piece.points.push(point);
            } else if let Some(write) = writes.next() {
                piece.writes.push(write);
            } else if let Some(lag) = lags.next() {
                piece.lags.push(lag);
            } else {
                break;
            }
            entries += 1;
        }
        if !(piece.points.is_empty() && piece.writes.is_empty() && piece.lags.is_empty()) {
            current.observed.push(piece);
        }
    }
    if entries > 0 || messages.is_empty() {
        messages.push(current);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_engine::share::Observed;

    #[test]
    fn a_large_round_is_shared_in_messages_below_the_payload_limit() {
        // 300 streams of 64 shards, every shard-level metric and its writes: 240 k entries.
        let observed: Vec<Observed> = (0..300)
            .map(|s| Observed {
                stream: format!("acct-123456789012/stream-{s:04}-0123456789abcdef"),
                points: (0..64u32)
                    .flat_map(|shard| {
                        (0..11).map(move |m| {
                            (
                                Some(shard),
                                format!("WriteProvisionedThroughputExceeded{m}"),
                                { rivulet_engine::metrics::Stat::default() },
                            )
                        })
                    })
                    .collect(),
                writes: (0..64u32).map(|shard| (shard, 1e6, 1e3)).collect(),
                lags: vec![(
                    "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1".into(),
                    5,
                    6,
                )],
            })
            .collect();
        let usage: Vec<_> = (0..5_000u32)
            .map(|i| {
                (
                    format!("stream-{i}"),
                    i,
                    rivulet_engine::limits::Usage::default(),
                )
            })
            .collect();
        let total_points: usize = observed.iter().map(|o| o.points.len()).sum();
        let messages = pack("node-a", "123456789012", usage, observed, 42);
        assert!(messages.len() > 100);
        let (mut points, mut writes, mut lags, mut usages) = (0, 0, 0, 0);
        for message in &messages {
            let bytes = serde_json::to_vec(message).unwrap().len();
            assert!(bytes < 1 << 20, "{bytes} bytes");
            assert_eq!((message.node.as_str(), message.at_ms), ("node-a", 42));
            usages += message.usage.len();
            for o in &message.observed {
                points += o.points.len();
                writes += o.writes.len();
                lags += o.lags.len();
            }
        }
        assert_eq!(
            (points, writes, lags, usages),
            (total_points, 300 * 64, 300, 5_000)
        );
        // A quiet round is one small message.
        assert_eq!(pack("n", "a", Vec::new(), Vec::new(), 0).len(), 1);
    }
}
