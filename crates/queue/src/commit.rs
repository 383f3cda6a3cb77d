//! A group commit per queue: changes join the open batch (in the order the queue's state
//! made them), and one caller commits everything that joined so far in one metadata
//! commit, which the others then find done.

use std::sync::{Arc, OnceLock};

use rivulet_log::MetaOp;

/// What commits a batch's changes to the metadata store.
pub(crate) type CommitFn = Arc<dyn Fn(&[MetaOp]) -> Result<(), String> + Send + Sync>;

/// Changes committed together, and the outcome they share.
#[derive(Default)]
pub(crate) struct Batch {
    ops: parking_lot::Mutex<Vec<MetaOp>>,
    result: OnceLock<Result<(), String>>,
}

#[derive(Default)]
pub(crate) struct Committer {
    open: parking_lot::Mutex<Arc<Batch>>,
    /// Held while a batch is committed: batches commit one after another, in order.
    committing: tokio::sync::Mutex<()>,
}

impl Committer {
    /// Adds changes to the open batch; returns it, to wait for with [`Committer::durable`].
    pub(crate) fn add(&self, ops: impl IntoIterator<Item = MetaOp>) -> Arc<Batch> {
        let open = self.open.lock();
        open.ops.lock().extend(ops);
        open.clone()
    }

    /// Waits until `batch` is durable, committing the open batch if nobody else has.
    pub(crate) async fn durable(&self, batch: &Arc<Batch>, meta: &CommitFn) -> Result<(), String> {
        if let Some(result) = batch.result.get() {
            return result.clone();
        }
        let _turn = self.committing.lock().await;
        if let Some(result) = batch.result.get() {
            return result.clone();
        }
        // Not committed, and batches are committed only under `committing`: so `batch` is
        // still the open one.
        let taken = std::mem::take(&mut *self.open.lock());
        let ops = coalesce(std::mem::take(&mut *taken.ops.lock()));
        let result = if ops.is_empty() {
            Ok(())
        } else {
            let commit = meta.clone();
            tokio::task::spawn_blocking(move || {
                // A cluster's atomic batches hold at most about a thousand messages.
                ops.chunks(COMMIT_OPS_MAX)
                    .try_for_each(|chunk| commit(chunk))
            })
            .await
            .unwrap_or_else(|e| Err(format!("the commit task failed: {e}")))
        };
        let _ = taken.result.set(result.clone());
        if !Arc::ptr_eq(&taken, batch) {
            // Cannot happen (see above); answer from what was committed anyway.
            return batch.result.get().cloned().unwrap_or(result);
        }
        result
    }
}

/// Changes per metadata commit (the lease's renewal rides along in a cluster).
const COMMIT_OPS_MAX: usize = 500;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_share_commits() {
        let commits = Arc::new(parking_lot::Mutex::new(Vec::<usize>::new()));
        let seen = commits.clone();
        let meta: CommitFn = Arc::new(move |ops: &[MetaOp]| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            seen.lock().push(ops.len());
            Ok(())
        });
        let committer = Arc::new(Committer::default());
        let mut tasks = Vec::new();
        for i in 0..40 {
            let committer = committer.clone();
            let meta = meta.clone();
            tasks.push(tokio::spawn(async move {
                let batch = committer.add([MetaOp::Delete {
                    key: format!("k{i}"),
                }]);
                committer.durable(&batch, &meta).await
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
}
