//! Durability as appenders see it: the journal's groups, published once synced (see
//! `journal`), each log's durable end, and the [`Durable`]s and [`DurableSet`]s waiting on
//! them. With a journal a log's durable end is not published by the writer: a log settles it
//! from the groups it appended to when a reader asks (`LogInner::settle`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::LogError;

/// Why a log stopped accepting appends.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// A write or sync failed; the text is the first error.
    Io(String),
    /// The log was removed.
    Removed,
}

/// A log's durability state, shared with its [`Durable`]s.
///
/// Publishing runs when a settle moves the log's durable end (`LogInner::settle`), or at each
/// append on a volatile store, so it costs an atomic when nobody waits:
/// the watch async waiters use exists only once one has subscribed, and the condition
/// variable is signalled only while a blocking waiter is counted.
#[derive(Debug)]
pub(crate) struct DurableState {
    log_id: String,
    /// The log's store-wide number, as [`GroupSignal`]'s failure notes name it.
    uid: u64,
    /// One past the last durable record.
    end: AtomicU64,
    /// `end` for async waiters and `Log::watch_end`, created by the first subscriber.
    watch: Mutex<Option<watch::Sender<u64>>>,
    /// Set (for good) once `watch` exists.
    watched: AtomicBool,
    failure: Mutex<Option<Failure>>,
    /// Set once `failure` is: the checks on every append and wake-up read this, not the lock.
    failed: AtomicBool,
    /// The last journal group published when the log failed (set before `failed`): a failed
    /// log settles the groups up to it, which were durable before it failed, and no later.
    published_at_failure: AtomicU64,
    /// Threads blocked in [`Durable::wait_blocking`] on this log's end.
    blocked: Blocked,
    /// The store's journal group signal, when a journal makes appends durable.
    pub(crate) group_signal: Option<Arc<GroupSignal>>,
}

impl DurableState {
    pub fn new(log_id: String, uid: u64, end: u64, group_signal: Option<Arc<GroupSignal>>) -> Self {
        Self {
            group_signal,
            log_id,
            uid,
            end: AtomicU64::new(end),
            watch: Mutex::new(None),
            watched: AtomicBool::new(false),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            published_at_failure: AtomicU64::new(0),
            blocked: Blocked::default(),
        }
    }

    pub fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }

    /// Whether a receiver of `subscribe` is still held.
    pub fn has_watchers(&self) -> bool {
        self.watch
            .lock()
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut watch = self.watch.lock();
        // Set before `end` is read: a publish that missed the flag stored its end before, so
        // the read below sees it (both sequentially consistent).
        self.watched.store(true, Ordering::SeqCst);
        let current = self.end();
        let sender = watch.get_or_insert_with(|| watch::Sender::new(current));
        sender.send_if_modified(|value| raise(value, current));
        sender.subscribe()
    }

    pub fn failure(&self) -> Option<Failure> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().clone()
    }

    /// The last journal group published when the log failed (0 until it fails).
    pub fn published_at_failure(&self) -> u64 {
        self.published_at_failure.load(Ordering::Relaxed)
    }

    pub fn failure_error(&self) -> Option<LogError> {
        self.failure().map(|failure| self.error_for(failure))
    }

    fn error_for(&self, failure: Failure) -> LogError {
        match failure {
            Failure::Io(reason) => LogError::Failed {
                log: self.log_id.clone(),
                reason,
            },
            Failure::Removed => LogError::Removed {
                log: self.log_id.clone(),
            },
        }
    }

    /// Moves the durable end forward (never back) and wakes the waiters it satisfies.
    pub fn publish(&self, end: u64) {
        if self.end.fetch_max(end, Ordering::SeqCst) >= end {
            return;
        }
        if self.watched.load(Ordering::SeqCst)
            && let Some(sender) = &*self.watch.lock()
        {
            sender.send_if_modified(|value| raise(value, end));
        }
        self.blocked.wake();
    }

    /// Puts the log in a failed state (the first failure wins) and wakes every waiter. The
    /// first failure also notes the log against its journal groups not yet published, up to
    /// `last_group` (the last it appended to), so a request that appended to it in one of
    /// them fails, not acknowledged.
    pub fn fail(&self, failure: Failure, last_group: u64) {
        let first = {
            let mut held = self.failure.lock();
            let first = held.is_none();
            held.get_or_insert(failure);
            first
        };
        if first && let Some(signal) = &self.group_signal {
            let published = signal.note_failed_log(self.uid, last_group);
            self.published_at_failure
                .store(published, Ordering::Relaxed);
        }
        self.failed.store(true, Ordering::Release);
        // Wakes async waiters without changing the value; they recheck the failure.
        if let Some(sender) = &*self.watch.lock() {
            sender.send_modify(|_| {});
        }
        // Not counted first: `failed` is not stored sequentially consistent with the count.
        self.blocked.wake_always();
    }

    /// `Some` once the wait for `end` is over: reached, or failed first.
    fn check(&self, end: u64) -> Option<Result<(), LogError>> {
        if self.end() >= end {
            return Some(Ok(()));
        }
        self.failure_error().map(Err)
    }
}

/// The result of an append.
#[derive(Debug)]
#[must_use = "an append is not durable until its Durable completes"]
pub struct Appended {
    /// Offset of the batch's first record; the others follow consecutively.
    pub first_offset: u64,
    /// The timestamp stored with the batch (the requested one, clamped to be non-decreasing).
    pub timestamp_ms: i64,
    /// Completes when the batch is on disk.
    pub durable: Durable,
}

/// Raises a watched value to `to`; says whether it moved.
fn raise(value: &mut u64, to: u64) -> bool {
    let moved = to > *value;
    *value = (*value).max(to);
    moved
}

/// The journal's progress as waiters see it: the last group synced, so that a request that
/// appended to many logs waits once, not once per log, and no log is touched per group.
///
/// A publish wakes only the waiters it satisfies: requests in flight wait for two or three
/// different groups, and a watch channel would wake all of them at every group.
#[derive(Debug, Default)]
pub(crate) struct GroupSignal {
    published: AtomicU64,
    /// The last group of a range noted in `unpublished_groups`: the one check a
    /// [`DurableSet`] makes when no such range reaches its first group.
    unpublished: AtomicU64,
    /// The latest ranges of groups in which a log did not publish (it failed, or was removed,
    /// while they were not published yet), oldest first, at most `UNPUBLISHED_KEPT`, each
    /// with those logs' uids: a set whose first group is at or before `unpublished` fails
    /// only if one of its own logs is among them in its range (or its range starts before
    /// the oldest kept).
    unpublished_groups: Mutex<std::collections::VecDeque<(u64, u64, Vec<u64>)>>,
    failed: AtomicBool,
    /// Tasks waiting, with the group each waits for.
    waiters: Mutex<Vec<(u64, Waker)>>,
    /// Threads blocked in [`GroupSignal::wait_blocking`].
    blocked: Blocked,
}

/// Threads blocked until a condition holds, woken by whoever makes it hold: a wake costs one
/// atomic load while none is blocked.
#[derive(Debug, Default)]
struct Blocked {
    lock: Mutex<()>,
    wake: Condvar,
    count: AtomicUsize,
}

impl Blocked {
    /// After the condition's (sequentially consistent) store: wakes the blocked threads, if
    /// any. One not counted yet counts before its check, so its check sees the store.
    fn wake(&self) {
        if self.count.load(Ordering::SeqCst) > 0 {
            self.wake_always();
        }
    }

    /// Wakes the blocked threads, counted or not.
    fn wake_always(&self) {
        // Taking the lock orders this wake after a waiter's check: none is lost.
        let _guard = self.lock.lock();
        self.wake.notify_all();
    }

    /// Blocks until `done` answers.
    fn wait<T>(&self, mut done: impl FnMut() -> Option<T>) -> T {
        let mut guard = self.lock.lock();
        self.count.fetch_add(1, Ordering::SeqCst);
        let answer = loop {
            if let Some(answer) = done() {
                break answer;
            }
            self.wake.wait(&mut guard);
        };
        self.count.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

impl GroupSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Group `seq` is synced, and every fill its appends asked for was done (or failed).
    pub fn publish(&self, seq: u64) {
        {
            // Under the failures' lock: a failure noted is wholly before or after this.
            let _failures = self.unpublished_groups.lock();
            if self.published.fetch_max(seq, Ordering::SeqCst) >= seq {
                return;
            }
        }
        // After the store: a waiter that checks under the lock before this sees its waker
        // taken here, one that checks after sees `published`.
        let mut waiters = self.waiters.lock();
        for (_, waker) in waiters.extract_if(.., |(wanted, _)| *wanted <= seq) {
            waker.wake();
        }
        drop(waiters);
        self.blocked.wake();
    }

    /// The last group published.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// The log `uid`, whose last append went to group `last_group`, failed or was removed:
    /// its appends in the groups not published yet are not acknowledged. Nothing is noted
    /// when they all were. Returns the last group published before the failure.
    pub fn note_failed_log(&self, uid: u64, last_group: u64) -> u64 {
        let mut groups = self.unpublished_groups.lock();
        // Under the lock `publish` stores under: a group is published before or after this.
        let first = self.published() + 1;
        if last_group >= first {
            Self::push_unpublished(&mut groups, first, last_group, vec![uid]);
            // Under the lock: a set that sees the number finds the range in the list.
            self.unpublished.fetch_max(last_group, Ordering::SeqCst);
        }
        first - 1
    }

    /// The logs `uids` did not publish in groups `first..=last`.
    #[cfg(test)]
    pub fn note_unpublished(&self, first: u64, last: u64, uids: Vec<u64>) {
        let mut groups = self.unpublished_groups.lock();
        Self::push_unpublished(&mut groups, first, last, uids);
        self.unpublished.fetch_max(last, Ordering::SeqCst);
    }

    fn push_unpublished(
        groups: &mut std::collections::VecDeque<(u64, u64, Vec<u64>)>,
        first: u64,
        last: u64,
        uids: Vec<u64>,
    ) {
        if groups.len() == UNPUBLISHED_KEPT {
            groups.pop_front();
        }
        groups.push_back((first, last, uids));
    }

    /// Whether one of the logs `uids` did not publish in a group in `first..=last` (asked once
    /// `last` has published).
    fn unpublished_in(&self, first: u64, last: u64, uids: &[u64]) -> bool {
        if self.unpublished.load(Ordering::SeqCst) < first {
            return false;
        }
        let groups = self.unpublished_groups.lock();
        // Past the oldest kept, an older range may have been dropped from the list: fail.
        let oldest_kept = groups.front().map_or(u64::MAX, |(seq, _, _)| *seq);
        let dropped = groups.len() == UNPUBLISHED_KEPT && first < oldest_kept;
        dropped
            || groups.iter().any(|(from, to, failed)| {
                *from <= last && first <= *to && failed.iter().any(|uid| uids.contains(uid))
            })
    }

    /// Why appends to the logs `uids` in groups `first..=last` are not durable, once `last`
    /// has settled: the journal failed before publishing it, or one of those logs did not
    /// publish in that range. `None`: they are durable.
    fn failure_in(&self, first: u64, last: u64, uids: &[u64]) -> Option<&'static str> {
        if self.published() < last {
            Some("the journal failed")
        } else if self.unpublished_in(first, last, uids) {
            Some("a log of the journal groups holding this request's appends failed")
        } else {
            None
        }
    }

    /// Whether the journal failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The journal failed: no group will publish again. Wakes every waiter.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for (_, waker) in waiters {
            waker.wake();
        }
        self.blocked.wake();
    }

    /// Blocks the calling thread until group `seq` has published or the journal failed.
    fn wait_blocking(&self, seq: u64) {
        self.blocked.wait(|| self.settled(seq).then_some(()));
    }

    /// Whether waiting for `seq` is over: published, or the journal failed.
    fn settled(&self, seq: u64) -> bool {
        self.published.load(Ordering::SeqCst) >= seq || self.failed()
    }

    /// Completes once group `seq` has published or the journal failed.
    fn wait(&self, seq: u64) -> GroupWait<'_> {
        GroupWait { signal: self, seq }
    }
}

/// Ranges of unpublished groups a [`GroupSignal`] lists: each is a log that failed, or was
/// removed, while appends to it waited for a group.
const UNPUBLISHED_KEPT: usize = 64;

/// [`GroupSignal::wait`]'s future.
struct GroupWait<'a> {
    signal: &'a GroupSignal,
    seq: u64,
}

impl std::future::Future for GroupWait<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (signal, seq) = (self.signal, self.seq);
        if signal.settled(seq) {
            return Poll::Ready(());
        }
        let mut waiters = signal.waiters.lock();
        // Checked again under the lock, which publish and fail take after their stores.
        if signal.settled(seq) {
            return Poll::Ready(());
        }
        match waiters
            .iter_mut()
            .find(|(wanted, waker)| *wanted == seq && waker.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => waiters.push((seq, cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// The appends of one request to many logs, waited for at once (see [`crate::Log::append_to`]).
///
/// Appends a journal group covers are kept as the range of groups that hold them and their
/// logs' uids, not as a [`Durable`] each: over hundreds of logs a request would otherwise take
/// and drop a count on each log's state, and read each one's durable end, all cold. Once the
/// last group has published, the set is done unless one of its logs did not publish in one of
/// those groups (a write or sync failed, or the log was removed): the request then fails, not
/// acknowledged, and a client retries it.
#[derive(Debug, Default)]
#[must_use = "the appends are not durable until the set's wait completes"]
pub struct DurableSet {
    /// The journal's signal, and the first and last groups holding this set's appends.
    groups: Option<(Arc<GroupSignal>, u64, u64)>,
    /// The uids of the logs those appends went to.
    logs: Vec<u64>,
    /// Appends no journal group covers.
    others: Vec<Durable>,
}

impl DurableSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for the appends to `logs` logs (one request's shards).
    pub fn with_capacity(logs: usize) -> Self {
        Self {
            logs: Vec::with_capacity(logs),
            ..Self::default()
        }
    }

    /// Adds an append to the log `uid` held by journal group `seq` of `signal`'s journal;
    /// `false` (nothing added) for another journal's.
    pub(crate) fn add_group(&mut self, signal: &Arc<GroupSignal>, seq: u64, uid: u64) -> bool {
        match &mut self.groups {
            None => self.groups = Some((Arc::clone(signal), seq, seq)),
            Some((held, first, last)) if Arc::ptr_eq(held, signal) => {
                (*first, *last) = ((*first).min(seq), (*last).max(seq));
            }
            Some(_) => return false,
        }
        self.logs.push(uid);
        true
    }

    /// Adds an append to wait for on its own.
    pub(crate) fn add(&mut self, durable: Durable) {
        self.others.push(durable);
    }

    /// Waits for every append; fails as described above, or with the first failure found.
    pub async fn wait(self) -> Result<(), LogError> {
        if let Some((signal, first, last)) = &self.groups {
            signal.wait(*last).await;
            // Groups that published before the journal failed stay durable.
            if let Some(reason) = signal.failure_in(*first, *last, &self.logs) {
                return Err(LogError::Failed {
                    log: format!("journal groups {first}..={last}"),
                    reason: reason.to_string(),
                });
            }
        }
        Durable::wait_all(self.others).await
    }
}

/// Completes when an append is on disk (after the `fdatasync` that covers it), or fails if
/// the sync failed or the log was removed first.
#[derive(Debug)]
pub struct Durable {
    state: Arc<DurableState>,
    /// The log's durable end that means "done": one past the append's last offset.
    end: u64,
    /// The journal group holding the append, when a journal makes it durable (its signal is
    /// the log's, `DurableState::group_signal`: no shared count changes per append).
    group: Option<u64>,
}

impl Durable {
    pub(crate) fn new(state: Arc<DurableState>, end: u64, group: Option<u64>) -> Self {
        Self { state, end, group }
    }

    /// The journal's signal and group, when a journal group covers the append.
    fn grouped(&self) -> Option<(&Arc<GroupSignal>, u64)> {
        Some((self.state.group_signal.as_ref()?, self.group?))
    }

    /// Once its group has settled: whether the append is durable (see
    /// [`GroupSignal::failure_in`]), with the log's own failure as the error when it has one.
    fn group_outcome(&self, signal: &GroupSignal, seq: u64) -> Result<(), LogError> {
        match signal.failure_in(seq, seq, &[self.state.uid]) {
            None => Ok(()),
            Some(reason) => Err(self
                .state
                .failure_error()
                .unwrap_or_else(|| LogError::Failed {
                    log: self.state.log_id.clone(),
                    reason: reason.to_string(),
                })),
        }
    }

    /// Waits for every one of `durables` ([`Durable::wait`]'s one, or the appends of a
    /// [`DurableSet`] that no journal group of its own covers): one wait for the last journal
    /// group among them, then a check of each, waiting on its own only for one no group
    /// covers (or another journal's). Fails with the first failure found.
    async fn wait_all(durables: Vec<Durable>) -> Result<(), LogError> {
        let last = durables
            .iter()
            .filter_map(Durable::grouped)
            .max_by_key(|(_, seq)| *seq);
        if let Some((signal, seq)) = last {
            signal.wait(seq).await;
        }
        for durable in durables {
            match durable.grouped() {
                Some((signal, seq)) => {
                    signal.wait(seq).await;
                    durable.group_outcome(signal, seq)?;
                }
                None => match durable.state.check(durable.end) {
                    Some(result) => result?,
                    None => durable.wait_on_log().await?,
                },
            }
        }
        Ok(())
    }

    /// Waits without blocking a tokio worker thread (through the journal's group, as
    /// [`Durable::wait_all`] does, so the log itself need not be watched).
    pub async fn wait(self) -> Result<(), LogError> {
        Self::wait_all(vec![self]).await
    }

    /// Waits on the log's own durable end: for an append no journal group covers.
    async fn wait_on_log(self) -> Result<(), LogError> {
        let mut receiver = self.state.subscribe();
        let state = &self.state;
        let end = self.end;
        // The sender lives in `state`, which we hold, so the channel cannot close; the result
        // only says the condition held, and `check` below says which way.
        let waited = receiver
            .wait_for(|durable_end| *durable_end >= end || state.failure().is_some())
            .await;
        drop(waited);
        self.state.check(self.end).unwrap_or(Err(LogError::Closed))
    }

    /// Blocks the calling thread until done.
    pub fn wait_blocking(self) -> Result<(), LogError> {
        if let Some((signal, seq)) = self.grouped() {
            signal.wait_blocking(seq);
            return self.group_outcome(signal, seq);
        }
        self.state.blocked.wait(|| self.state.check(self.end))
    }

    /// Whether the append is already durable (without waiting).
    pub fn is_durable(&self) -> bool {
        match self.grouped() {
            Some((signal, seq)) => {
                signal.published() >= seq && self.group_outcome(signal, seq).is_ok()
            }
            None => self.state.end() >= self.end,
        }
    }
}

/// What the store counts of its syncs.
#[derive(Default)]
pub(crate) struct SyncShared {
    /// Segment `fdatasync`s done so far (by checkpoints, rolls and shutdown).
    pub sync_count: AtomicU64,
}

impl SyncShared {
    pub fn count_sync(&self) {
        self.sync_count.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (Arc::clone(&counter), Waker::from(counter))
    }

    /// A publish wakes the waiters of the groups it covers and no other; a failure wakes
    /// every one that is left.
    #[test]
    fn a_group_wakes_only_its_waiters() {
        let signal = GroupSignal::new();
        let (counts, wakers): (Vec<_>, Vec<_>) = (0..3).map(|_| counter()).unzip();
        let mut waits: Vec<_> = (1..=3u64).map(|seq| Box::pin(signal.wait(seq))).collect();
        for (wait, waker) in waits.iter_mut().zip(&wakers) {
            let mut cx = Context::from_waker(waker);
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            // A second poll by the same task registers nothing more.
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiters.lock().len(), 3);
        signal.publish(2);
        let woken = |counts: &[Arc<Counter>]| {
            counts
                .iter()
                .map(|c| c.0.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        };
        assert_eq!(woken(&counts), [1, 1, 0]);
        for (wait, waker) in waits.iter_mut().zip(&wakers).take(2) {
            assert!(
                wait.as_mut()
                    .poll(&mut Context::from_waker(waker))
                    .is_ready()
            );
        }
        // Publishing an earlier group again changes nothing.
        signal.publish(1);
        assert_eq!(woken(&counts), [1, 1, 0]);
        signal.fail();
        assert_eq!(woken(&counts), [1, 1, 1]);
        assert!(
            waits[2]
                .as_mut()
                .poll(&mut Context::from_waker(&wakers[2]))
                .is_ready()
        );
        // After a failure a new wait ends at once.
        let late = pin!(signal.wait(9));
        assert!(late.poll(&mut Context::from_waker(&wakers[0])).is_ready());
        assert!(signal.waiters.lock().is_empty());
    }

    /// Polls a future once, as a task whose wakes nobody counts.
    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A set waits for its last group, then fails when one of its logs did not publish in a
    /// group of its range, or the journal failed before its last group published. Another
    /// log's failure, or a failure outside its range, is not its concern.
    #[test]
    fn a_set_waits_for_its_last_group_and_fails_when_one_of_its_logs_did_not_publish() {
        // (group, log uid) of each append.
        let set_of = |signal: &Arc<GroupSignal>, appends: &[(u64, u64)]| {
            let mut set = DurableSet::new();
            for &(seq, uid) in appends {
                assert!(set.add_group(signal, seq, uid));
            }
            set
        };
        let signal = Arc::new(GroupSignal::new());
        let mut wait = pin!(set_of(&signal, &[(5, 1), (4, 2), (6, 3)]).wait());
        assert!(poll_once(wait.as_mut()).is_pending());
        signal.publish(5);
        assert!(poll_once(wait.as_mut()).is_pending());
        signal.note_unpublished(3, 3, vec![1]);
        signal.publish(6);
        assert!(matches!(poll_once(wait.as_mut()), Poll::Ready(Ok(()))));

        // Log 2 did not publish in group 8: the set that wrote to it over 7..=9 fails once 9
        // publishes; the set that wrote only to log 3 in group 8 does not.
        let mut wait = pin!(set_of(&signal, &[(7, 1), (9, 2)]).wait());
        let mut other_log = pin!(set_of(&signal, &[(8, 3)]).wait());
        signal.note_unpublished(8, 8, vec![2]);
        signal.publish(8);
        assert!(matches!(poll_once(other_log.as_mut()), Poll::Ready(Ok(()))));
        assert!(poll_once(wait.as_mut()).is_pending());
        signal.publish(9);
        assert!(matches!(
            poll_once(wait.as_mut()),
            Poll::Ready(Err(LogError::Failed { .. }))
        ));
        // Groups after a set's range are not its concern, even when noted before it looks.
        let mut wait = pin!(set_of(&signal, &[(10, 1)]).wait());
        signal.publish(10);
        signal.note_unpublished(11, 11, vec![1]);
        signal.publish(11);
        assert!(matches!(poll_once(wait.as_mut()), Poll::Ready(Ok(()))));

        // Another journal's group is refused (its append waits on its own).
        let other = Arc::new(GroupSignal::new());
        let mut set = set_of(&signal, &[(12, 1)]);
        assert!(!set.add_group(&other, 12, 1));

        // The journal failed: every set still waiting fails; one whose groups all published
        // before the failure does not.
        let mut wait = pin!(set.wait());
        let published = pin!(set_of(&signal, &[(10, 1)]).wait());
        signal.fail();
        assert!(matches!(
            poll_once(wait.as_mut()),
            Poll::Ready(Err(LogError::Failed { .. }))
        ));
        assert!(matches!(poll_once(published), Poll::Ready(Ok(()))));
    }

    /// A log that fails notes itself against its groups not published yet, up to the last it
    /// appended to: appends to it there fail; its appends in groups published before, and
    /// other logs' appends, do not. A log whose groups have all published notes nothing.
    #[test]
    fn a_failed_log_fails_its_appends_in_the_groups_not_yet_published() {
        let signal = Arc::new(GroupSignal::new());
        signal.publish(3);
        assert_eq!(signal.note_failed_log(7, 6), 3);
        // Its last group, 2, has published: nothing to note.
        assert_eq!(signal.note_failed_log(9, 2), 3);
        signal.publish(6);
        let outcome = |seq: u64, uid: u64| {
            let mut set = DurableSet::new();
            assert!(set.add_group(&signal, seq, uid));
            let mut wait = Box::pin(set.wait());
            poll_once(wait.as_mut())
        };
        assert!(matches!(outcome(3, 7), Poll::Ready(Ok(()))));
        assert!(matches!(outcome(4, 7), Poll::Ready(Err(_))));
        assert!(matches!(outcome(6, 7), Poll::Ready(Err(_))));
        assert!(matches!(outcome(5, 8), Poll::Ready(Ok(()))));
        assert!(signal.unpublished_groups.lock().len() == 1);
        assert!(matches!(outcome(2, 9), Poll::Ready(Ok(()))));
    }

    /// The signal lists the latest unpublished groups only: a set whose range starts before
    /// the oldest one kept fails, as one of its groups may have been dropped from the list.
    #[test]
    fn a_set_older_than_the_unpublished_groups_kept_fails() {
        let signal = Arc::new(GroupSignal::new());
        let wait_for = |first: u64, last: u64, uid: u64| {
            let mut set = DurableSet::new();
            assert!(set.add_group(&signal, first, uid) && set.add_group(&signal, last, uid));
            let mut wait = Box::pin(set.wait());
            poll_once(wait.as_mut())
        };
        // Log 1 in groups 100, 102, …: one more than the list keeps, so 100 is dropped.
        for k in 0..=UNPUBLISHED_KEPT as u64 {
            signal.note_unpublished(100 + 2 * k, 100 + 2 * k, vec![1]);
        }
        signal.publish(100 + 2 * UNPUBLISHED_KEPT as u64 + 1);
        assert!(matches!(wait_for(99, 101, 2), Poll::Ready(Err(_))));
        assert!(matches!(wait_for(103, 103, 1), Poll::Ready(Ok(()))));
        assert!(matches!(wait_for(103, 104, 1), Poll::Ready(Err(_))));
        assert!(matches!(wait_for(103, 104, 2), Poll::Ready(Ok(()))));
        assert!(matches!(wait_for(1_000, 1_000, 1), Poll::Pending));
    }
}
