//! SubscribeToShard, the engine's half: who may subscribe (an ACTIVE consumer, one
//! subscription per consumer and shard, a newer one taking over after 5 s), where it starts,
//! and the events it delivers. The server owns the connection and the timing (pushing as soon
//! as the shard's durable end moves, heartbeats, the 5-minute limit, the 2 MiB/s rate).

use std::collections::HashMap;

use tokio::sync::watch;

use crate::consumers::parse_consumer_arn;
use crate::data::{ChildShard, OutRecord, StartAt, check_start};
use crate::meta::{ConsumerStatus, parse_shard_id, shard_id};
use crate::metrics::Metric;
use crate::seq::{self, SequenceNumber};
use crate::{ApiError, Engine, Result, StreamStatus};

/// How long a subscription holds its (consumer, shard) against a newer one.
pub const SUBSCRIPTION_TAKEOVER_MS: i64 = 5_000;

/// The registry of live subscriptions, keyed by consumer ARN and shard.
#[derive(Default)]
pub(crate) struct Subscriptions {
    slots: parking_lot::Mutex<HashMap<(String, u32), Slot>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// In a cluster: the slots every node sees.
    shared: Option<std::sync::Arc<dyn crate::storage::SharedSlots>>,
}

impl Subscriptions {
    pub(crate) fn new(shared: Option<std::sync::Arc<dyn crate::storage::SharedSlots>>) -> Self {
        Subscriptions {
            shared,
            ..Default::default()
        }
    }
}

struct Slot {
    generation: u64,
    started_ms: i64,
    superseded: std::sync::Arc<watch::Sender<bool>>,
}

/// A slot's name among the nodes: the consumer's ARN and the shard.
fn shared_key(key: &(String, u32)) -> String {
    format!("{}#{}", key.0, key.1)
}

/// A live subscription: where it is, and what to wait on.
pub struct Subscription {
    key: (String, u32),
    generation: u64,
    stream: String,
    stream_created_ms: i64,
    consumer: String,
    shard: u32,
    offset: u64,
    /// Moves whenever the shard's durable end does: new records to push.
    pub data: watch::Receiver<u64>,
    /// Turns `true` when a newer subscription has taken this one's place.
    pub superseded: watch::Receiver<bool>,
}

/// One SubscribeToShardEvent.
#[derive(Debug, Clone)]
pub struct SubscriptionEvent {
    pub records: Vec<OutRecord>,
    /// The records' data and partition keys, in bytes.
    pub bytes: usize,
    pub continuation_sequence_number: SequenceNumber,
    pub millis_behind_latest: i64,
    /// Set at the end of a closed shard; the subscription ends after this event.
    pub child_shards: Option<Vec<ChildShard>>,
}

impl Subscription {
    /// Where the next event's records start.
    pub fn position(&self) -> u64 {
        self.offset
    }
}

impl Engine {
    /// SubscribeToShard: checks the consumer and shard, claims the (consumer, shard) slot and
    /// resolves the starting position.
    pub async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &str,
        start: &StartAt<'_>,
        now_ms: i64,
    ) -> Result<Subscription> {
        check_start(start, now_ms)?;
        let account = &self.config.account_id;
        let parsed = parse_consumer_arn(consumer_arn)
            .ok_or_else(|| ApiError::invalid(format!("Invalid ConsumerARN {consumer_arn}.")))?;
        let stream = self.stream_for_consumers(parsed.stream_arn, now_ms)?;
        let (name, index, start, log, consumer_name, stream_created_ms, enabled) = {
            let state = stream.state.read();
            let name = state.meta.name.clone();
            let consumer = state
                .meta
                .consumers
                .iter()
                .find(|c| {
                    c.name == parsed.name && c.created_ms.div_euclid(1000) == parsed.created_s
                })
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "Consumer {consumer_arn} under account {account} not found."
                    ))
                })?;
            if consumer.status != ConsumerStatus::Active {
                return Err(ApiError::in_use(format!(
                    "Consumer {} with creation timestamp {} under stream: {name} , account {account} \
                     is not in ACTIVE status.",
                    consumer.name, parsed.created_s
                )));
            }
            if !matches!(
                state.meta.status,
                StreamStatus::Active | StreamStatus::Updating
            ) {
                return Err(self.not_found(&name));
            }
            let index = parse_shard_id(shard).ok_or_else(|| self.shard_not_found(&name, shard))?;
            // Later messages name the shard as AWS normalises it.
            let normalised = shard_id(index);
            let shard_missing = || self.shard_not_found(&name, &normalised);
            let start = self.start_position(
                &state,
                index,
                start,
                "SubscribeToShard",
                &shard_missing,
                now_ms,
            )?;
            let log = state.logs.get(&index).ok_or_else(shard_missing)?.clone();
            let consumer_name = consumer.name.clone();
            let stream_created_ms = state.meta.created_ms;
            let enabled = state.meta.enabled_shard_metrics();
            (
                name,
                index,
                start,
                log,
                consumer_name,
                stream_created_ms,
                enabled,
            )
        };
        let offset = start.resolve().await?;
        let data = log.watch_end()?;
        let key = (consumer_arn.to_string(), index);
        let generation = self
            .subscriptions
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (superseded_tx, superseded) = watch::channel(false);
        let superseded_tx = std::sync::Arc::new(superseded_tx);
        let in_use = || {
            ApiError::in_use(format!(
                "Another active subscription exists for this consumer: \
                 {account}:{name}:{}:{}",
                shard_id(index),
                consumer_name
            ))
        };
        {
            let slots = self.subscriptions.slots.lock();
            if let Some(live) = slots.get(&key)
                && now_ms - live.started_ms < SUBSCRIPTION_TAKEOVER_MS
            {
                return Err(in_use());
            }
            // One SubscribeToShard a second per consumer and shard.
            if let Some(scale) = self.config.limits_scale
                && !self.calls.admit(
                    "SubscribeToShard",
                    &format!("{}#{index}", key.0),
                    scale,
                    now_ms,
                )
            {
                stream.observe_enabled(
                    &enabled,
                    None,
                    &[(Metric::SubscribeToShardRateExceeded, 1.0)],
                    now_ms,
                );
                return Err(self.call_rate_exceeded(Some(&name)));
            }
        }
        // In a cluster, the rule holds across nodes: the slot is taken there too.
        if let Some(shared) = &self.subscriptions.shared
            && !shared.claim(
                &shared_key(&key),
                generation,
                now_ms,
                SUBSCRIPTION_TAKEOVER_MS,
                superseded_tx.clone(),
            )?
        {
            return Err(in_use());
        }
        {
            let mut slots = self.subscriptions.slots.lock();
            // A subscription older than 5 s gives way to this one.
            if let Some(live) = slots.get(&key) {
                live.superseded.send_replace(true);
            }
            slots.insert(
                key.clone(),
                Slot {
                    generation,
                    started_ms: now_ms,
                    superseded: superseded_tx,
                },
            );
        }
        stream.observe_enabled(
            &enabled,
            None,
            // The throttle series exists, at 0, from the first call on (alarms need it).
            &[
                (Metric::SubscribeToShardSuccess, 1.0),
                (Metric::SubscribeToShardRateExceeded, 0.0),
            ],
            now_ms,
        );
        Ok(Subscription {
            key,
            generation,
            stream: name,
            stream_created_ms,
            consumer: consumer_name,
            shard: index,
            offset,
            data,
            superseded,
        })
    }

    /// The next event of a subscription: the records from its position (at most about
    /// `max_bytes`), possibly none. Fails if the stream, shard or consumer went away.
    pub async fn next_event(
        &self,
        sub: &mut Subscription,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<SubscriptionEvent> {
        let stream = self.stream(&sub.stream, now_ms)?;
        self.settle_consumers(&sub.stream, &stream, now_ms)?;
        let (plan, enabled) = {
            let state = stream.state.read();
            let account = &self.config.account_id;
            if state.meta.created_ms != sub.stream_created_ms
                || state.meta.status == StreamStatus::Deleting
            {
                return Err(self.not_found(&sub.stream));
            }
            if !state
                .meta
                .consumers
                .iter()
                .any(|c| c.name == sub.consumer && c.status == ConsumerStatus::Active)
            {
                return Err(ApiError::not_found(format!(
                    "Consumer {} under account {account} not found.",
                    sub.key.0
                )));
            }
            let shard_missing = || self.shard_not_found(&sub.stream, &shard_id(sub.shard));
            let mut plan = self.plan_read(
                &state,
                sub.shard,
                sub.offset,
                crate::data::GET_RECORDS_LIMIT_MAX as usize,
                max_bytes,
                &shard_missing,
            )?;
            plan.tail = true;
            (plan, state.meta.enabled_shard_metrics())
        };
        let (layout, created_s) = (plan.layout, plan.created_s);
        let read = plan.run(now_ms).await?;
        sub.offset = read.next_offset;
        let age = read.iterator_age_ms(now_ms) as f64;
        stream.observe_enabled(
            &enabled,
            Some(sub.shard),
            &[
                (Metric::SubscribeToShardEventBytes, read.bytes as f64),
                (
                    Metric::SubscribeToShardEventRecords,
                    read.records.len() as f64,
                ),
                (Metric::SubscribeToShardEventSuccess, 1.0),
                (
                    Metric::SubscribeToShardEventMillisBehindLatest,
                    read.millis_behind_latest as f64,
                ),
                (Metric::OutgoingBytes, read.bytes as f64),
                (Metric::OutgoingRecords, read.records.len() as f64),
                (Metric::IteratorAgeMilliseconds, age),
            ],
            now_ms,
        );
        stream
            .metrics
            .record_consumer_lag(&sub.consumer, read.millis_behind_latest, now_ms);
        self.subscription_bytes
            .fetch_add(read.bytes as u64, std::sync::atomic::Ordering::Relaxed);
        let continuation = match read.records.last() {
            Some(last) => last.sequence_number,
            // No record yet: a position marker for the gap before the next one.
            None => seq::encode(seq::SeqParts {
                shard_created_s: created_s,
                shard_index: sub.shard,
                counter: read.next_offset,
                arrival_s: 0,
                layout,
            }),
        };
        Ok(SubscriptionEvent {
            records: read.records,
            bytes: read.bytes,
            continuation_sequence_number: continuation,
            millis_behind_latest: read.millis_behind_latest,
            child_shards: read.child_shards,
        })
    }

    /// Releases a subscription's slot (unless a newer one already holds it).
    pub fn end_subscription(&self, sub: &Subscription) {
        let mut slots = self.subscriptions.slots.lock();
        if slots
            .get(&sub.key)
            .is_some_and(|s| s.generation == sub.generation)
        {
            slots.remove(&sub.key);
        }
        drop(slots);
        if let Some(shared) = &self.subscriptions.shared {
            shared.release(&shared_key(&sub.key), sub.generation);
        }
    }
}
