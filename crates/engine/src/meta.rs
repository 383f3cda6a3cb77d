//! Stream and shard metadata as persisted in the metadata store (one document per stream).

use serde::{Deserialize, Serialize};

/// A stream's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl StreamStatus {
    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Creating => "CREATING",
            StreamStatus::Active => "ACTIVE",
            StreamStatus::Updating => "UPDATING",
            StreamStatus::Deleting => "DELETING",
        }
    }
}

/// Capacity mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

impl StreamMode {
    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Provisioned => "PROVISIONED",
            StreamMode::OnDemand => "ON_DEMAND",
        }
    }
}

/// An enhanced fan-out consumer's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerStatus {
    Creating,
    Active,
    Deleting,
}

impl ConsumerStatus {
    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerStatus::Creating => "CREATING",
            ConsumerStatus::Active => "ACTIVE",
            ConsumerStatus::Deleting => "DELETING",
        }
    }
}

/// A registered consumer of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    pub name: String,
    /// Registration time; its epoch seconds end the consumer's ARN.
    pub created_ms: i64,
    pub status: ConsumerStatus,
    /// When the current CREATING / DELETING state ends.
    pub status_until_ms: Option<i64>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The consumer's resource policy (PutResourcePolicy), as the JSON text given.
    #[serde(default)]
    pub resource_policy: Option<String>,
}

/// How records are placed on shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RecordDistribution {
    /// By the MD5 of the partition key (or the explicit hash key): AWS's default.
    #[default]
    UserPartitionKey,
    /// Evenly, ignoring partition keys (on-demand streams only).
    Auto,
}

impl RecordDistribution {
    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordDistribution::UserPartitionKey => "USER_PARTITION_KEY",
            RecordDistribution::Auto => "AUTO",
        }
    }

    /// Parses AWS's name.
    pub fn parse(text: &str) -> Option<RecordDistribution> {
        match text {
            "USER_PARTITION_KEY" => Some(RecordDistribution::UserPartitionKey),
            "AUTO" => Some(RecordDistribution::Auto),
            _ => None,
        }
    }
}

/// One shard, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub index: u32,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    /// Hash keys as decimal strings: serde_json cannot carry u128 in every reader.
    pub start_hash: String,
    pub end_hash: String,
    pub created_ms: i64,
    /// Set when a split or merge closed the shard.
    pub closed_ms: Option<i64>,
    /// One past the last offset the shard holds, set when it closes.
    pub end_offset: Option<u64>,
    /// The layout of the shard's sequence numbers; shards written before the field existed
    /// keep the legacy layout (see `seq`).
    #[serde(default)]
    pub seq_layout: SeqLayout,
    /// Records below this position were copied in by `rivulet migrate`: the store took them
    /// in at the migration's time, so AT_TIMESTAMP finds them by their own arrival times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_end: Option<u64>,
}

/// Which sequence-number layout a shard uses, as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SeqLayout {
    /// The layout of releases before AWS's was adopted: what a shard without the field has.
    #[default]
    Legacy,
    /// AWS's layout: every shard created since.
    Aws,
}

impl ShardMeta {
    /// The starting hash key.
    pub fn start(&self) -> u128 {
        self.start_hash.parse().unwrap_or(0)
    }
    /// The ending hash key.
    pub fn end(&self) -> u128 {
        self.end_hash.parse().unwrap_or(u128::MAX)
    }
    /// Whether the shard still accepts writes.
    pub fn is_open(&self) -> bool {
        self.closed_ms.is_none()
    }
}

/// A change that takes effect when the UPDATING delay has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pending {
    Split {
        shard: u32,
        new_start: String,
    },
    Merge {
        shard: u32,
        adjacent: u32,
    },
    UniformScaling {
        target: u32,
    },
    /// UpdateStreamMode: the capacity mode changes; the shards stay.
    Mode {
        mode: StreamMode,
    },
    /// Start/StopStreamEncryption: the stream's encryption once the update ends.
    Encryption {
        encryption: Option<StreamEncryption>,
    },
}

/// A stream's server-side encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEncryption {
    /// The KeyId as the caller gave it (DescribeStream shows it so).
    pub key_id: String,
    /// The KMS key it resolved to.
    pub key_arn: String,
}

/// Everything the server keeps about one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub name: String,
    /// Unique per incarnation: the logs of a deleted stream never mix with a new one's.
    pub key: String,
    pub stream_id: String,
    pub created_ms: i64,
    pub status: StreamStatus,
    /// When the current CREATING / UPDATING / DELETING state ends.
    pub status_until_ms: Option<i64>,
    pub pending: Vec<Pending>,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub max_record_size_kib: u32,
    pub shards: Vec<ShardMeta>,
    pub next_shard_index: u32,
    pub tags: Vec<(String, String)>,
    /// Times of recent UpdateShardCount calls, for AWS's rolling 24 h allowance.
    pub scaling_history_ms: Vec<i64>,
    /// Enhanced fan-out consumers, in registration order.
    #[serde(default)]
    pub consumers: Vec<ConsumerMeta>,
    /// Times of recent UpdateStreamMode calls, for AWS's two per rolling 24 h.
    #[serde(default)]
    pub mode_switches_ms: Vec<i64>,
    /// How records are placed on shards.
    #[serde(default)]
    pub record_distribution: RecordDistribution,
    /// The warm throughput asked for (on-demand streams), MiB/s.
    #[serde(default)]
    pub warm_throughput_mibps: Option<u32>,
    /// The stream's resource policy (PutResourcePolicy), as the JSON text given.
    #[serde(default)]
    pub resource_policy: Option<String>,
    /// Server-side encryption (StartStreamEncryption); `None` stores records unencrypted.
    #[serde(default)]
    pub encryption: Option<StreamEncryption>,
    /// Times of recent Start/StopStreamEncryption calls, for the 25 per rolling 24 h.
    #[serde(default)]
    pub encryption_changes_ms: Vec<i64>,
    /// Shard-level metrics EnableEnhancedMonitoring turned on, by API name, in AWS's order.
    #[serde(default)]
    pub shard_level_metrics: Vec<String>,
    /// Queues on the stream (CreateQueue), in creation order.
    #[serde(default)]
    pub queues: Vec<crate::queues::QueueMeta>,
    /// Channels delivering the stream (CreateChannel), in creation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<crate::channels::ChannelMeta>,
    /// What an on-demand stream's capacity follows: its peaks and scaling steps.
    #[serde(default, skip_serializing_if = "crate::autoscale::History::is_empty")]
    pub on_demand: crate::autoscale::History,
}

impl StreamMeta {
    /// The enabled shard-level metrics.
    pub fn enabled_shard_metrics(&self) -> Vec<crate::metrics::Metric> {
        crate::metrics::SHARD_LEVEL_METRICS
            .iter()
            .filter(|(name, _)| self.shard_level_metrics.iter().any(|n| n == name))
            .map(|(_, metric)| *metric)
            .collect()
    }

    /// The 16-bit tag legacy-layout sequence numbers carry to tell this stream apart.
    pub fn stream_tag(&self) -> u16 {
        // FNV-1a over the incarnation key: stable across restarts and versions.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.key.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        (hash ^ (hash >> 16)) as u16
    }

    /// The sequence-number layout of `shard`.
    pub fn seq_layout(&self, shard: &ShardMeta) -> crate::seq::Layout {
        match shard.seq_layout {
            SeqLayout::Aws => crate::seq::Layout::Aws,
            SeqLayout::Legacy => crate::seq::Layout::Legacy {
                stream_tag: self.stream_tag(),
            },
        }
    }

    /// The fields a number of `shard` carries, but for its counter and arrival time.
    pub fn seq_parts(
        &self,
        shard: &ShardMeta,
        counter: u64,
        arrival_s: u32,
    ) -> crate::seq::SeqParts {
        crate::seq::SeqParts {
            shard_created_s: (shard.created_ms / 1000) as u32,
            shard_index: shard.index,
            counter,
            arrival_s,
            layout: self.seq_layout(shard),
        }
    }

    /// The shard with this index.
    pub fn shard(&self, index: u32) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.index == index)
    }

    /// Open shards, sorted by starting hash key.
    pub fn open_shards(&self) -> Vec<&ShardMeta> {
        let mut open: Vec<&ShardMeta> = self.shards.iter().filter(|s| s.is_open()).collect();
        open.sort_by_key(|s| s.start());
        open
    }
}

/// The name AWS gives shard `index`.
pub fn shard_id(index: u32) -> String {
    ShardIdText::new(index).as_str().to_string()
}

/// A shard id's text without an allocation, for answers that name a shard per record: a `u32`
/// has at most 10 digits, so the id is always `shardId-` and 12 zero-padded digits.
#[derive(Clone, Copy)]
pub struct ShardIdText([u8; 20]);

impl ShardIdText {
    pub fn new(index: u32) -> ShardIdText {
        let mut text = *b"shardId-000000000000";
        let mut rest = index;
        for digit in text[8..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        ShardIdText(text)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and `shardId-` are ever written.
        std::str::from_utf8(&self.0).unwrap_or("shardId-")
    }
}

/// Largest shard index a `ShardId` argument may name: AWS reads the number as a Java `int`.
pub const SHARD_INDEX_MAX: u32 = i32::MAX as u32;

/// Reads a `ShardId` argument as AWS does: the text after its last hyphen (or all of it) must
/// be ASCII digits worth at most `SHARD_INDEX_MAX`, so `shardId-5`, `x-5`, `-005` and `5` all
/// name shard 5. Messages then name it as `shard_id` writes it.
pub fn parse_shard_id(text: &str) -> Option<u32> {
    let digits = text.rsplit('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Any number of leading zeros; a value too large for u64 is too large for an `int` too.
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n <= SHARD_INDEX_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_parse_like_aws() {
        assert_eq!(parse_shard_id("shardId-000000000000"), Some(0));
        assert_eq!(parse_shard_id("shardId-0"), Some(0));
        assert_eq!(parse_shard_id("anything-12"), Some(12));
        assert_eq!(parse_shard_id("7"), Some(7));
        assert_eq!(parse_shard_id("shardId-"), None);
        assert_eq!(parse_shard_id("shardId-x1"), None);
        assert_eq!(parse_shard_id("x-5"), Some(5));
        assert_eq!(parse_shard_id("-005"), Some(5));
        assert_eq!(parse_shard_id("shardId-002147483647"), Some(2_147_483_647));
        assert_eq!(parse_shard_id(&format!("{}1", "0".repeat(40))), Some(1));
        for refused in [
            "ABKLFD8",
            "2.14E4",
            "2147483648",
            "shardId-002147483648",
            "99999999999999999999999",
            "+5",
            "shardId-5 ",
        ] {
            assert_eq!(parse_shard_id(refused), None, "{refused}");
        }
        assert_eq!(shard_id(5), "shardId-000000000005");
    }
}
