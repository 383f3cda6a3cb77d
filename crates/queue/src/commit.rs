//! A group commit per queue: changes join the open batch (while the queue's state is held,
//! so in the order the state made them), and a flusher task of its own commits the batches
//! one after another, each in one metadata commit. The flusher is spawned, not run by a
//! request, so a client that goes away never leaves a batch half done; and once a commit
//! fails, every later batch fails too (they were built on what it did) until the state is
//! loaded again from the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rivulet_log::MetaOp;
use tokio::sync::Notify;

/// What commits a batch's changes to the metadata store.
pub(crate) type CommitFn = Arc<dyn Fn(&[MetaOp]) -> Result<(), String> + Send + Sync>;

/// Changes committed together, and the outcome they share.
#[derive(Default)]
pub(crate) struct Batch {
    ops: parking_lot::Mutex<Vec<MetaOp>>,
    result: OnceLock<Result<(), String>>,
    done: Notify,
}

pub(crate) struct Committer {
    commit: CommitFn,
    open: parking_lot::Mutex<Arc<Batch>>,
    /// A flusher task is running.
    flushing: AtomicBool,
    /// A commit failed: later batches fail without being committed, until `reset`.
    poisoned: AtomicBool,
    /// Rings when the flusher stops (nothing left to commit).
    idle: Notify,
}

/// Changes per metadata commit (the lease's renewal rides along in a cluster).
const COMMIT_OPS_MAX: usize = 500;

impl Committer {
    pub(crate) fn new(commit: CommitFn) -> Arc<Committer> {
        Arc::new(Committer {
            commit,
            open: parking_lot::Mutex::new(Arc::new(Batch::default())),
            flushing: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            idle: Notify::new(),
        })
    }

    /// Adds changes to the open batch; returns it, to wait for with [`Committer::durable`].
    /// Call it while holding the state that made the changes.
    pub(crate) fn add(self: &Arc<Self>, ops: Vec<MetaOp>) -> Arc<Batch> {
        let open = self.open.lock();
        open.ops.lock().extend(ops);
        let batch = open.clone();
        drop(open);
        self.start();
        batch
    }

    /// Starts the flusher unless it runs.
    fn start(self: &Arc<Self>) {
        if !self.flushing.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move { me.flush().await });
        }
    }

    async fn flush(self: Arc<Self>) {
        loop {
            let batch = std::mem::take(&mut *self.open.lock());
            let ops = coalesce(std::mem::take(&mut *batch.ops.lock()));
            let result = if self.poisoned.load(Ordering::Acquire) {
                Err("an earlier change to this queue's state could not be stored".to_string())
            } else if ops.is_empty() {
                Ok(())
            } else {
                let commit = self.commit.clone();
                tokio::task::spawn_blocking(move || {
                    // A cluster's atomic batches hold at most about a thousand messages.
                    ops.chunks(COMMIT_OPS_MAX)
                        .try_for_each(|chunk| commit(chunk))
                })
                .await
                .unwrap_or_else(|e| Err(format!("the commit task failed: {e}")))
            };
            if result.is_err() {
                self.poisoned.store(true, Ordering::Release);
            }
            let _ = batch.result.set(result);
            batch.done.notify_waiters();
            // Stop when nothing is open; a change added meanwhile restarts the loop.
            let pending = !self.open.lock().ops.lock().is_empty();
            if pending {
                continue;
            }
            self.flushing.store(false, Ordering::Release);
            self.idle.notify_waiters();
            let pending = !self.open.lock().ops.lock().is_empty();
            if !pending || self.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Waits until `batch` is committed (or failed).
    pub(crate) async fn durable(&self, batch: &Arc<Batch>) -> Result<(), String> {
        loop {
            let notified = batch.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = batch.result.get() {
                return result.clone();
            }
            notified.await;
        }
    }

    /// Waits until every batch added so far is settled, then accepts commits again: for
    /// loading the state anew after a failure.
    pub(crate) async fn reset(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if !self.flushing.load(Ordering::Acquire) && self.open.lock().ops.lock().is_empty() {
                break;
            }
            idle.await;
        }
        self.poisoned.store(false, Ordering::Release);
    }

    /// Whether a commit failed since the last `reset`.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

/// The batch's changes with only the last one of each key, in the order of those last ones:
/// what applying them all in order leaves, and what a cluster's commit accepts (one message
/// per key).
fn coalesce(ops: Vec<MetaOp>) -> Vec<MetaOp> {
    let key = |op: &MetaOp| match op {
        MetaOp::Put { key, .. } | MetaOp::Delete { key } => key.clone(),
    };
    let mut last: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        last.insert(key(op), index);
    }
    ops.into_iter()
        .enumerate()
        .filter(|(index, op)| last.get(&key(op)) == Some(index))
        .map(|(_, op)| op)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_each_key_s_last_change() {
        let put = |key: &str, value: u8| MetaOp::Put {
            key: key.into(),
            value: vec![value],
        };
        let ops = vec![
            put("a", 1),
            put("b", 1),
            MetaOp::Delete { key: "a".into() },
            put("b", 2),
            put("c", 1),
        ];
        assert_eq!(
            coalesce(ops),
            vec![MetaOp::Delete { key: "a".into() }, put("b", 2), put("c", 1)]
        );
    }

    fn counting(commits: &Arc<parking_lot::Mutex<Vec<usize>>>, fail: bool) -> CommitFn {
        let seen = commits.clone();
        Arc::new(move |ops: &[MetaOp]| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            seen.lock().push(ops.len());
            if fail { Err("refused".into()) } else { Ok(()) }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_share_commits() {
        let commits = Arc::new(parking_lot::Mutex::new(Vec::<usize>::new()));
        let committer = Committer::new(counting(&commits, false));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move {
                let batch = committer.add(vec![MetaOp::Delete {
                    key: format!("k{i}"),
                }]);
                committer.durable(&batch).await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("joins"), Ok(()));
        }
        let commits = commits.lock();
        assert_eq!(
            commits.iter().sum::<usize>(),
            40,
            "every change committed once"
        );
        assert!(commits.len() < 40, "some commits were shared: {commits:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_that_goes_away_leaves_the_batch_committed() {
        let commits = Arc::new(parking_lot::Mutex::new(Vec::<usize>::new()));
        let committer = Committer::new(counting(&commits, false));
        let first = committer.add(vec![MetaOp::Delete { key: "a".into() }]);
        // The first waiter is dropped at once; the batch is still committed, and a later
        // waiter of the same batch hears so.
        drop(tokio::time::timeout(
            std::time::Duration::from_micros(1),
            committer.durable(&first),
        ));
        assert_eq!(committer.durable(&first).await, Ok(()));
        assert_eq!(commits.lock().iter().sum::<usize>(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_commit_later_batches_fail_until_reset() {
        let commits = Arc::new(parking_lot::Mutex::new(Vec::<usize>::new()));
        let committer = Committer::new(counting(&commits, true));
        let first = committer.add(vec![MetaOp::Delete { key: "a".into() }]);
        assert!(committer.durable(&first).await.is_err());
        assert!(committer.is_poisoned());
        let second = committer.add(vec![MetaOp::Delete { key: "b".into() }]);
        assert!(committer.durable(&second).await.is_err());
        assert_eq!(
            commits.lock().len(),
            1,
            "the later batch was never committed"
        );
        committer.reset().await;
        assert!(!committer.is_poisoned());
    }
}
