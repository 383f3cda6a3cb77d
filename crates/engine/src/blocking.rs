//! Tests drive the engine's asynchronous operations to completion on the test's thread.

use std::future::Future;

use crate::{
    ApiError, Engine, GetShardIterator, PutEntry, PutResult, RecordsBatch, Result, StartAt,
    StreamTarget, Subscription, SubscriptionEvent,
};

/// Runs `future` to completion on a current-thread runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

/// A put once durable: its per-entry results.
#[derive(Debug)]
pub(crate) struct Settled {
    pub results: Vec<std::result::Result<PutResult, ApiError>>,
}

/// The engine's asynchronous operations, waited for.
impl Engine {
    pub(crate) fn put_records_now(
        &self,
        target: &StreamTarget<'_>,
        entries: &[PutEntry<'_>],
        ordering: Option<&str>,
        batch: bool,
        now_ms: i64,
    ) -> Result<Settled> {
        let outcome = self.put_records(target, entries, ordering, batch, now_ms)?;
        Ok(Settled {
            results: block_on(outcome.finish())?,
        })
    }

    pub(crate) fn get_shard_iterator_now(
        &self,
        request: &GetShardIterator<'_>,
        now_ms: i64,
    ) -> Result<String> {
        block_on(self.get_shard_iterator(request, now_ms))
    }

    pub(crate) fn get_records_now(
        &self,
        iterator: &str,
        limit: Option<u32>,
        now_ms: i64,
    ) -> Result<RecordsBatch> {
        block_on(self.get_records(iterator, limit, now_ms))
    }

    pub(crate) fn subscribe_now(
        &self,
        consumer_arn: &str,
        shard: &str,
        start: &StartAt<'_>,
        now_ms: i64,
    ) -> Result<Subscription> {
        block_on(self.subscribe(consumer_arn, shard, start, now_ms))
    }

    pub(crate) fn next_event_now(
        &self,
        sub: &mut Subscription,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<SubscriptionEvent> {
        block_on(self.next_event(sub, max_bytes, now_ms))
    }
}
