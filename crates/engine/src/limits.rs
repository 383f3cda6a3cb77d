//! Shard throughput limits, AWS's numbers: per shard, writes of 1 MiB/s (data plus partition
//! keys) and 1,000 records/s; reads of 2 MiB/s and 5 GetRecords calls/s; 5 GetShardIterator
//! calls/s. Token buckets refilled by the time passed in (the engine reads no clock), holding
//! one second of burst. A record bigger than the write bucket is allowed when the bucket is
//! full and leaves it in debt, delaying the shard's next writes. Read bytes are charged after
//! the answer and hold no credit: the next read waits until the bytes are paid for, so a
//! 10 MiB GetRecords answer throttles the shard's reads for the next 5 s, as on AWS.

use parking_lot::Mutex;

/// Per-shard write throughput, bytes per second.
pub const WRITE_BYTES_PER_SECOND: f64 = 1_048_576.0;
/// Per-shard write rate, records per second.
pub const WRITE_RECORDS_PER_SECOND: f64 = 1_000.0;
/// Per-shard read throughput, bytes per second.
pub const READ_BYTES_PER_SECOND: f64 = 2_097_152.0;
/// Per-shard GetRecords calls per second.
pub const READ_CALLS_PER_SECOND: f64 = 5.0;
/// Per-shard GetShardIterator calls per second.
pub const ITERATOR_CALLS_PER_SECOND: f64 = 5.0;

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    per_ms: f64,
    at_ms: i64,
}

impl Bucket {
    fn new(per_second: f64, now_ms: i64) -> Bucket {
        Bucket {
            tokens: per_second,
            capacity: per_second,
            per_ms: per_second / 1000.0,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        if now_ms > self.at_ms {
            let gained = (now_ms - self.at_ms) as f64 * self.per_ms;
            self.tokens = (self.tokens + gained).min(self.capacity);
            self.at_ms = now_ms;
        }
    }

    /// Whether `amount` may pass now: it fits, or it is bigger than the bucket and the bucket
    /// is full (then the bucket goes into debt).
    fn allows(&mut self, amount: f64, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens >= amount || self.tokens >= self.capacity
    }

    fn take(&mut self, amount: f64) {
        self.tokens -= amount;
    }
}

#[derive(Debug)]
struct Buckets {
    write_bytes: Bucket,
    write_records: Bucket,
    read_bytes: Bucket,
    read_calls: Bucket,
    iterator_calls: Bucket,
    /// What this node admitted since its usage was last taken (`ShardLimits::take_usage`).
    local: Usage,
}

/// What a shard's buckets admitted: in a cluster each node tells the others what it admitted,
/// and charges what they did to its own buckets, so the limits hold for the shard as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub write_bytes: f64,
    pub write_records: f64,
    pub read_calls: f64,
    pub read_bytes: f64,
    pub iterator_calls: f64,
}

impl Usage {
    /// Nothing was admitted.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// One shard's buckets. Kept in memory only: a restart starts every shard with full buckets.
#[derive(Debug)]
pub struct ShardLimits {
    buckets: Mutex<Buckets>,
}

impl ShardLimits {
    /// Full buckets for rates multiplied by `scale`.
    pub fn new(scale: f64, now_ms: i64) -> ShardLimits {
        let bucket = |rate: f64| Bucket::new(rate * scale, now_ms);
        ShardLimits {
            buckets: Mutex::new(Buckets {
                write_bytes: bucket(WRITE_BYTES_PER_SECOND),
                write_records: bucket(WRITE_RECORDS_PER_SECOND),
                read_bytes: Bucket {
                    tokens: 0.0,
                    capacity: 0.0,
                    per_ms: READ_BYTES_PER_SECOND * scale / 1000.0,
                    at_ms: now_ms,
                },
                read_calls: bucket(READ_CALLS_PER_SECOND),
                iterator_calls: bucket(ITERATOR_CALLS_PER_SECOND),
                local: Usage::default(),
            }),
        }
    }

    /// What these buckets admitted since the last call.
    pub fn take_usage(&self) -> Usage {
        std::mem::take(&mut self.buckets.lock().local)
    }

    /// Charges what another node admitted on the same shard (possibly into debt, which the
    /// refill pays back before this node admits more).
    pub fn charge_usage(&self, usage: &Usage, now_ms: i64) {
        let mut guard = self.buckets.lock();
        let b = &mut *guard;
        for (bucket, amount) in [
            (&mut b.write_bytes, usage.write_bytes),
            (&mut b.write_records, usage.write_records),
            (&mut b.read_calls, usage.read_calls),
            (&mut b.iterator_calls, usage.iterator_calls),
        ] {
            bucket.refill(now_ms);
            bucket.take(amount);
        }
        b.read_bytes.refill(now_ms);
        b.read_bytes.take(usage.read_bytes);
    }

    /// Admits one record of `bytes` (data plus partition key), or says it is throttled.
    pub fn admit_write(&self, bytes: usize, now_ms: i64) -> bool {
        self.writes().admit(bytes, now_ms)
    }

    /// Holds the shard's buckets while a request's records are admitted one by one.
    pub fn writes(&self) -> Writes<'_> {
        Writes(self.buckets.lock())
    }

    /// Admits a GetRecords call: a call token, and no read debt outstanding.
    pub fn admit_read(&self, now_ms: i64) -> bool {
        let mut b = self.buckets.lock();
        b.read_bytes.refill(now_ms);
        if b.read_bytes.tokens >= 0.0 && b.read_calls.allows(1.0, now_ms) {
            b.read_calls.take(1.0);
            b.local.read_calls += 1.0;
            true
        } else {
            false
        }
    }

    /// Charges the bytes a GetRecords call returned (possibly into debt).
    pub fn charge_read(&self, bytes: usize) {
        let mut b = self.buckets.lock();
        b.read_bytes.take(bytes as f64);
        b.local.read_bytes += bytes as f64;
    }

    /// Admits a GetShardIterator call.
    pub fn admit_iterator(&self, now_ms: i64) -> bool {
        let mut b = self.buckets.lock();
        if b.iterator_calls.allows(1.0, now_ms) {
            b.iterator_calls.take(1.0);
            b.local.iterator_calls += 1.0;
            true
        } else {
            false
        }
    }
}

/// A shard's write buckets, held for the records of one request.
pub struct Writes<'a>(parking_lot::MutexGuard<'a, Buckets>);

impl Writes<'_> {
    /// Admits one record of `bytes` (data plus partition key), or says it is throttled.
    pub fn admit(&mut self, bytes: usize, now_ms: i64) -> bool {
        let b = &mut *self.0;
        let bytes = bytes as f64;
        if b.write_bytes.allows(bytes, now_ms) && b.write_records.allows(1.0, now_ms) {
            b.write_bytes.take(bytes);
            b.write_records.take(1.0);
            b.local.write_bytes += bytes;
            b.local.write_records += 1.0;
            true
        } else {
            false
        }
    }
}

/// Whose budget a control-plane call spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Stream,
}

/// The published rates of the control-plane operations (calls per second, from the service
/// model's documentation) and their scope. `None` for the data plane, which shard buckets limit
/// instead, and for SubscribeToShard, limited per consumer and shard.
pub fn control_rate(operation: &str) -> Option<(f64, Scope)> {
    Some(match operation {
        "PutRecord" | "PutRecords" | "GetRecords" | "GetShardIterator" | "SubscribeToShard" => {
            return None;
        }
        "DescribeStream" => (10.0, Scope::Account),
        "DescribeLimits" => (1.0, Scope::Account),
        "DescribeStreamSummary" => (20.0, Scope::Account),
        "DescribeStreamConsumer" => (20.0, Scope::Stream),
        "DeregisterStreamConsumer" | "ListStreamConsumers" => (5.0, Scope::Stream),
        "ListShards" => (1_000.0, Scope::Stream),
        "UpdateShardCount" => (10.0, Scope::Account),
        // AddTagsToStream, CreateStream, DeleteStream, ListStreams, ListTagsForStream,
        // MergeShards, SplitShard, RemoveTagsFromStream, RegisterStreamConsumer: 5/s; the
        // model states no rate for the rest, which get the same.
        _ => (5.0, Scope::Account),
    })
}

/// Call-rate buckets keyed by (operation, scope), for the control plane and SubscribeToShard.
#[derive(Debug, Default)]
pub struct CallLimits {
    buckets: Mutex<std::collections::HashMap<(String, String), Bucket>>,
}

impl CallLimits {
    /// Admits one call of `operation` in `scope` (the account, a stream, a consumer and shard)
    /// at `per_second`.
    pub fn admit(&self, operation: &str, scope: &str, per_second: f64, now_ms: i64) -> bool {
        let mut buckets = self.buckets.lock();
        let bucket = buckets
            .entry((operation.to_string(), scope.to_string()))
            .or_insert_with(|| Bucket::new(per_second, now_ms));
        if bucket.allows(1.0, now_ms) {
            bucket.take(1.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn a_thousand_records_a_second() {
        let limits = ShardLimits::new(1.0, T0);
        let admitted = (0..3000).filter(|_| limits.admit_write(10, T0)).count();
        assert_eq!(admitted, 1000);
        // Half a second refills half the bucket.
        let admitted = (0..3000)
            .filter(|_| limits.admit_write(10, T0 + 500))
            .count();
        assert_eq!(admitted, 500);
    }

    #[test]
    fn a_mebibyte_a_second_and_large_records_go_into_debt() {
        let limits = ShardLimits::new(1.0, T0);
        assert!(limits.admit_write(600 << 10, T0));
        assert!(!limits.admit_write(600 << 10, T0), "only 424 KiB left");
        assert!(limits.admit_write(400 << 10, T0));
        // A 5 MiB record passes on a full bucket and blocks writes for about five seconds.
        assert!(limits.admit_write(5 << 20, T0 + 2_000));
        assert!(!limits.admit_write(1, T0 + 4_000));
        assert!(limits.admit_write(1, T0 + 7_100));
    }

    #[test]
    fn reads_are_five_calls_and_two_mebibytes_a_second() {
        let limits = ShardLimits::new(1.0, T0);
        assert_eq!((0..10).filter(|_| limits.admit_read(T0)).count(), 5);
        // A 10 MiB answer throttles reads for the next five seconds.
        let limits = ShardLimits::new(1.0, T0);
        assert!(limits.admit_read(T0));
        limits.charge_read(10 << 20);
        assert!(!limits.admit_read(T0 + 3_000));
        assert!(!limits.admit_read(T0 + 4_999));
        assert!(limits.admit_read(T0 + 5_000));
    }

    #[test]
    fn control_calls_are_limited_per_operation_and_scope() {
        let limits = CallLimits::default();
        let (rate, scope) = control_rate("DescribeStream").unwrap();
        assert_eq!(scope, Scope::Account);
        assert_eq!(
            (0..20)
                .filter(|_| limits.admit("DescribeStream", "s", rate, T0))
                .count(),
            10
        );
        assert!(limits.admit("DescribeStream", "other", rate, T0));
        assert!(limits.admit("ListStreams", "s", 5.0, T0));
        assert!(limits.admit("DescribeStream", "s", rate, T0 + 100));
        assert_eq!(control_rate("GetRecords"), None);
        assert_eq!(control_rate("DescribeLimits"), Some((1.0, Scope::Account)));
        assert_eq!(control_rate("ListShards"), Some((1_000.0, Scope::Stream)));
    }

    #[test]
    fn scale_multiplies_every_rate() {
        let limits = ShardLimits::new(2.0, T0);
        assert_eq!(
            (0..5000).filter(|_| limits.admit_write(1, T0)).count(),
            2000
        );
        assert_eq!((0..20).filter(|_| limits.admit_iterator(T0)).count(), 10);
    }
}
