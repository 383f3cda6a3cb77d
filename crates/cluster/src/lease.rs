//! Leases over the cluster's metadata: which node leads the background work (and, later, owns
//! a shard's writes), moving to another node within seconds when the holder dies.
//!
//! A lease is one metadata key whose value names its holder. The holder renews it with a
//! compare-and-set every `renew_every`; it counts the lease as held until `duration` after it
//! *sent* its last successful renewal. Another node takes the lease only after it has seen the
//! same revision, unchanged, for a whole `duration` measured from when *it* first saw it,
//! which is after the holder sent it: so the two never both count the lease as held, whatever
//! their clocks say (only their rates must agree), and nothing depends on the servers' TTLs.
//! A holder that stops cleanly deletes the key, and the next node takes it at once.
//!
//! Fencing: [`Leadership::commit`] writes the leader's metadata changes in the same atomic
//! batch as a renewal, on the lease's current revision, so a deposed leader's late write fails
//! whole ([`MetaError::Conflict`]) instead of overwriting its successor's.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::meta::{ClusterMeta, MetaError, MetaOp};

/// How long a lease lasts without renewal, and how often its holder renews it.
#[derive(Clone, Copy, Debug)]
pub struct LeaseConfig {
    /// A holder that has not renewed for this long is taken over.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`: a renewal may be slow).
    pub renew_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(6),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// Who holds a lease, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    node: String,
    /// Distinguishes two runs of a node with the same name.
    incarnation: String,
}

/// The state of this node's campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The lease's revision when this node took it: its term, which grows with every takeover.
    pub term: u64,
    /// The lease's current revision (the last renewal).
    revision: u64,
    /// The lease is held until then, unless renewed.
    until: Instant,
}

/// This node's campaign for one lease: it holds the lease whenever it can, until dropped.
pub struct Leadership {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What the campaign task and the handle share.
struct Shared {
    meta: Arc<ClusterMeta>,
    key: String,
    holder: Vec<u8>,
    config: LeaseConfig,
    state: watch::Sender<Option<Held>>,
    /// Held while the lease key is written (a renewal, or a fenced commit), so the two never
    /// race on the same revision.
    writes: tokio::sync::Mutex<()>,
}

impl Leadership {
    /// Starts campaigning for lease `key` as node `node`.
    pub fn campaign(
        meta: Arc<ClusterMeta>,
        key: &str,
        node: &str,
        config: LeaseConfig,
    ) -> Result<Leadership, MetaError> {
        let holder = Holder {
            node: node.to_string(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
        };
        let holder =
            serde_json::to_vec(&holder).map_err(|error| MetaError::Nats(error.to_string()))?;
        let shared = Arc::new(Shared {
            meta,
            key: key.to_string(),
            holder,
            config,
            state: watch::channel(None).0,
            writes: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(campaign(Arc::clone(&shared)));
        Ok(Leadership { shared, task })
    }

    /// The term this node holds the lease in, if it holds it now.
    pub fn term(&self) -> Option<u64> {
        let held = (*self.shared.state.borrow())?;
        (Instant::now() < held.until).then_some(held.term)
    }

    /// Waits until this node holds the lease; returns the term.
    pub async fn acquired(&self) -> u64 {
        let mut state = self.shared.state.subscribe();
        loop {
            if let Some(term) = self.term() {
                return term;
            }
            // The sender lives in `self.shared`, so this only fails if `self` is gone.
            let _ = state.changed().await;
        }
    }

    /// Commits `ops` only if this node still holds the lease, renewing it in the same atomic
    /// batch. A deposed leader gets [`MetaError::Conflict`] and nothing is applied.
    pub async fn commit(&self, ops: &[MetaOp]) -> Result<u64, MetaError> {
        let shared = &self.shared;
        let _writing = shared.writes.lock().await;
        let held = (*shared.state.borrow())
            .filter(|held| Instant::now() < held.until)
            .ok_or(MetaError::Conflict { current: None })?;
        let mut all = ops.to_vec();
        // Last, so the batch's last revision is the lease's new one.
        all.push(MetaOp::Put {
            key: shared.key.clone(),
            value: shared.holder.clone(),
        });
        let sent = Instant::now();
        let result = shared
            .meta
            .commit_if(&all, &[(shared.key.as_str(), held.revision)])
            .await;
        match &result {
            Ok(revision) => {
                shared.state.send_replace(Some(Held {
                    revision: *revision,
                    until: sent + shared.config.duration,
                    ..held
                }));
            }
            Err(MetaError::Conflict { .. }) => {
                shared.state.send_replace(None);
            }
            Err(_) => {}
        }
        result
    }

    /// Stops campaigning as a crash would: no renewal, no release; others take the lease
    /// once it has gone unrenewed for its duration.
    pub fn abandon(&self) {
        self.task.abort();
    }

    /// Stops campaigning and gives the lease back at once if held, so another node takes it
    /// without waiting for it to expire.
    pub async fn release(&self) -> Result<(), MetaError> {
        self.task.abort();
        let shared = &self.shared;
        let _writing = shared.writes.lock().await;
        shared.state.send_replace(None);
        if let Ok(current) = shared.meta.get_versioned(&shared.key)
            && current.value == shared.holder
        {
            let delete = MetaOp::Delete {
                key: shared.key.clone(),
            };
            let expected = [(shared.key.as_str(), current.revision)];
            match shared.meta.commit_if(&[delete], &expected).await {
                Ok(_) | Err(MetaError::Conflict { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn campaign(shared: Arc<Shared>) {
    let Shared {
        meta,
        key,
        holder,
        config,
        state,
        writes,
    } = &*shared;
    let config = *config;
    let mut changes = meta.changes();
    // Another holder's revision and when this node first saw it.
    let mut watching: Option<(u64, Instant)> = None;
    loop {
        let writing = writes.lock().await;
        let held = *state.borrow();
        let now = Instant::now();
        let next = match (held, meta.get_versioned(key)) {
            // Held: renew on the revision this node last wrote.
            (Some(held), Ok(current)) if current.revision == held.revision => {
                let due = held
                    .until
                    .checked_sub(config.duration)
                    .map_or(now, |sent| sent + config.renew_every);
                if now < due {
                    due
                } else {
                    let sent = Instant::now();
                    let renewal = MetaOp::Put {
                        key: key.clone(),
                        value: holder.clone(),
                    };
                    match meta.commit_if(&[renewal], &[(key, held.revision)]).await {
                        Ok(revision) => {
                            state.send_replace(Some(Held {
                                revision,
                                until: sent + config.duration,
                                ..held
                            }));
                        }
                        Err(MetaError::Conflict { .. }) => {
                            state.send_replace(None);
                        }
                        // No answer: keep trying, a little later, until the lease runs out.
                        Err(_) => {
                            if Instant::now() >= held.until {
                                state.send_replace(None);
                            }
                            drop(writing);
                            tokio::time::sleep(config.renew_every / 4).await;
                        }
                    }
                    continue;
                }
            }
            // A write of this node's whose answer was lost (a renewal or a fenced commit that
            // timed out but landed): still held, until the lease runs out from the last write
            // this node knows it sent in time.
            (Some(held), Ok(current))
                if current.value == *holder && current.revision > held.revision =>
            {
                state.send_replace(Some(Held {
                    revision: current.revision,
                    ..held
                }));
                continue;
            }
            // Held, but the key changed under this node: a successor took it.
            (Some(_), _) => {
                state.send_replace(None);
                continue;
            }
            // Free: take it.
            (None, Err(absent)) => {
                watching = None;
                take(meta, key, holder, absent, config, state).await;
                continue;
            }
            (None, Ok(current)) => match watching {
                Some((revision, since)) if revision == current.revision => {
                    if now >= since + config.duration {
                        take(meta, key, holder, revision, config, state).await;
                        watching = None;
                        continue;
                    }
                    since + config.duration
                }
                _ => {
                    watching = Some((current.revision, now));
                    now + config.duration
                }
            },
        };
        drop(writing);
        // Sleep until the next deadline, or until the metadata changes.
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    state.send_replace(None);
                    return;
                }
            }
        }
    }
}

/// Takes the lease if its revision is still `revision`.
async fn take(
    meta: &ClusterMeta,
    key: &str,
    holder: &[u8],
    revision: u64,
    config: LeaseConfig,
    state: &watch::Sender<Option<Held>>,
) {
    let sent = Instant::now();
    let op = MetaOp::Put {
        key: key.to_string(),
        value: holder.to_vec(),
    };
    match meta.commit_if(&[op], &[(key, revision)]).await {
        Ok(revision) => {
            state.send_replace(Some(Held {
                term: revision,
                revision,
                until: sent + config.duration,
            }));
        }
        // Someone else was faster, or no answer: look again.
        Err(_) => tokio::time::sleep(config.renew_every / 4).await,
    }
}
