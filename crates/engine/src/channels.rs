//! Channels, the control plane: CreateChannel, DescribeChannel, ListChannels, UpdateChannel,
//! DeleteChannel. A channel (`ChannelMeta`) lives in its source stream's document beside the
//! stream's queues and consumers, so DeleteStream refuses while channels exist under one
//! lock, and cluster mode shares channels like every other metadata. Delivery (reading the
//! stream, writing objects, checkpoints) is `rivulet-channel`'s; this module gives it
//! `channel_sources` and `channel_read`, and takes back the outcome of the destination check
//! that ends CREATING (`finish_channel_creation`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::meta::{StreamMeta, StreamMode, StreamStatus};
use crate::storage::ShardLog;
use crate::token::Kind;
use crate::{ApiError, Engine, ErrorKind, Result, ShardRead};

/// The metadata prefix of channels' delivery state (`channel/<id>/…`).
pub const CHANNEL_STATE_PREFIX: &str = "channel/";
/// ListChannels' page size when MaxResults is absent, and its largest page.
const LIST_CHANNELS_MAX: usize = 100;
/// DataFreshnessInSeconds when absent.
pub const FRESHNESS_DEFAULT_S: u32 = 300;
/// The S3 key template when OutputKeyTemplate is absent (AWS's documented default).
pub const KEY_TEMPLATE_DEFAULT: &str = "kinesis-channel/!{channel-name}/!{channel-id}/!{yyyy}/!{MM}/\
     !{dd}/!{HH}/!{channel-name}-!{channel-id}-!{yyyy}-!{MM}-!{dd}-!{HH}-!{mm}!{extension}";
/// The storage class when StorageClass is absent.
pub const STORAGE_CLASS_DEFAULT: &str = "STANDARD";
/// The longest unique suffix appended to an expanded key template.
pub const KEY_SUFFIX_MAX: usize = 38;
/// The longest expanded key template.
pub const EXPANDED_KEY_MAX: usize = 1024 - KEY_SUFFIX_MAX;

/// A channel's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelStatus {
    Creating,
    Active,
    Updating,
    Deleting,
    Failed,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Creating => "CREATING",
            ChannelStatus::Active => "ACTIVE",
            ChannelStatus::Updating => "UPDATING",
            ChannelStatus::Deleting => "DELETING",
            ChannelStatus::Failed => "FAILED",
        }
    }
}

/// The format of the source stream's records (`RecordFormatType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordFormat {
    GsrJson,
    Json,
    String,
    ByteArray,
}

impl RecordFormat {
    pub fn parse(text: &str) -> Option<RecordFormat> {
        Some(match text {
            "GSR_JSON" => RecordFormat::GsrJson,
            "JSON" => RecordFormat::Json,
            "STRING" => RecordFormat::String,
            "BYTE_ARRAY" => RecordFormat::ByteArray,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::GsrJson => "GSR_JSON",
            RecordFormat::Json => "JSON",
            RecordFormat::String => "STRING",
            RecordFormat::ByteArray => "BYTE_ARRAY",
        }
    }
}

/// An S3 bucket for dead letters (`DeadLetterQueueS3Configuration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterTarget {
    pub bucket_arn: String,
    pub expected_owner: String,
    pub error_prefix: Option<String>,
}

/// `S3StorageConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Storage {
    pub bucket_arn: String,
    pub expected_owner: String,
    pub key_template: Option<String>,
    pub storage_class: Option<String>,
    /// NONE, GZIP or ZSTD.
    pub compression: String,
}

/// One streaming table (`S3TablesConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableTarget {
    pub table_bucket_arn: String,
    pub namespace: String,
    pub table: String,
    /// NONE, ZSTD or SNAPPY.
    pub compression: String,
    /// The partition fields: (transform, source column).
    pub partition: Option<Vec<(String, String)>>,
}

/// Where a channel delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    S3(S3Storage),
    Tables(TableTarget),
}

impl Destination {
    /// `ChannelDestinationType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::S3(_) => "S3",
            Destination::Tables(_) => "S3_TABLES",
        }
    }
}

/// `ChannelLoggingConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLogging {
    pub enabled: bool,
    pub log_group: Option<String>,
    pub log_stream: Option<String>,
}

/// A channel, as persisted in its stream's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMeta {
    /// The generated id (`ChannelId`).
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    pub status: ChannelStatus,
    /// When the current CREATING / UPDATING / DELETING delay ends (CREATING then waits for
    /// the destination check).
    pub status_until_ms: Option<i64>,
    /// Why the channel FAILED.
    #[serde(default)]
    pub reason: Option<String>,
    pub role_arn: String,
    pub format: RecordFormat,
    #[serde(default)]
    pub schema_arn: Option<String>,
    pub freshness_s: u32,
    pub dead_letter: Option<DeadLetterTarget>,
    pub destination: Destination,
    /// `ChannelEncryptionConfiguration`'s KeyId, as given.
    #[serde(default)]
    pub encryption_key: Option<String>,
    #[serde(default)]
    pub logging: ChannelLogging,
    /// UpdateChannel's changes, applied when UPDATING ends.
    #[serde(default)]
    pub pending: Option<ChannelUpdate>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl ChannelMeta {
    /// The default error prefix: `kinesis-channel/errors/<name>/<id>/`.
    pub fn error_prefix_default(&self) -> String {
        format!("kinesis-channel/errors/{}/{}/", self.name, self.id)
    }

    /// The dead-letter target in effect: the configured one, or the destination bucket, under
    /// the error prefix given or the default one.
    pub fn dead_letter_in_effect(&self) -> DeadLetterTarget {
        let prefix = |given: &Option<String>| {
            Some(given.clone().unwrap_or_else(|| self.error_prefix_default()))
        };
        match (&self.dead_letter, &self.destination) {
            (Some(target), _) => DeadLetterTarget {
                error_prefix: prefix(&target.error_prefix),
                ..target.clone()
            },
            (None, Destination::S3(storage)) => DeadLetterTarget {
                bucket_arn: storage.bucket_arn.clone(),
                expected_owner: storage.expected_owner.clone(),
                error_prefix: prefix(&None),
            },
            (None, Destination::Tables(table)) => DeadLetterTarget {
                bucket_arn: table.table_bucket_arn.clone(),
                expected_owner: String::new(),
                error_prefix: prefix(&None),
            },
        }
    }
}

/// UpdateChannel's request: only the data freshness and the logging may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelUpdate {
    /// The destination kind the request named with its freshness (S3 or S3_TABLES).
    #[serde(default)]
    pub destination_kind: Option<String>,
    pub freshness_s: Option<u32>,
    pub logging: Option<ChannelLogging>,
}

/// CreateChannel's arguments, as the edge decoded them.
#[derive(Debug, Clone)]
pub struct CreateChannel {
    pub name: String,
    pub role_arn: String,
    /// (StreamARN, RecordFormatType, GSRSchemaARN) per entry of StreamConfigurationList.
    pub streams: Vec<(String, String, Option<String>)>,
    /// S3DestinationConfiguration: (freshness, dead letters, storage).
    pub s3: Option<(Option<i64>, Option<DeadLetterTarget>, S3Storage)>,
    /// S3TablesDestinationConfiguration: (freshness, dead letters, tables).
    pub tables: Option<(Option<i64>, DeadLetterTarget, Vec<TableTarget>)>,
    /// (EncryptionType, KeyId).
    pub encryption: Option<(String, String)>,
    pub logging: Option<ChannelLogging>,
    pub tags: Vec<(String, String)>,
}

/// What DescribeChannel, CreateChannel, UpdateChannel and ListChannels report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelView {
    pub arn: String,
    pub stream_arn: String,
    pub stream_created_ms: i64,
    pub meta: ChannelMeta,
}

/// A page of ListChannels.
#[derive(Debug, Clone)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
    pub next_token: Option<String>,
}

/// One shard of a channel's stream, for delivery.
#[derive(Clone)]
pub struct ChannelShard {
    pub index: u32,
    pub created_ms: i64,
    /// The shards it was split or merged from.
    pub parents: Vec<u32>,
    /// Set once the shard closed: one past its last position.
    pub end_offset: Option<u64>,
    pub log: Arc<dyn ShardLog>,
}

/// A channel and its stream as delivery needs them, taken under the stream's lock.
#[derive(Clone)]
pub struct ChannelSource {
    pub arn: String,
    pub meta: ChannelMeta,
    pub stream_name: String,
    pub stream_key: String,
    pub encryption: Option<crate::StreamEncryption>,
    /// Every shard the stream still holds, open or closed, by index.
    pub shards: Vec<ChannelShard>,
}

/// The region, account and id in `arn:aws:kinesis:REGION:ACCOUNT:channel/ID`.
pub(crate) fn parse_channel_arn(arn: &str) -> Option<(&str, &str, &str)> {
    crate::queues::parse_resource_arn(arn, "channel/")
}

/// Whether `arn` names a channel (`arn:aws:kinesis:REGION:ACCOUNT:channel/…`).
pub fn is_channel_arn(arn: &str) -> bool {
    parse_channel_arn(arn).is_some()
}

/// DataFreshnessInSeconds' range.
pub const FRESHNESS_MIN_S: i64 = 300;
pub const FRESHNESS_MAX_S: i64 = 900;

fn freshness(value: Option<i64>) -> Result<u32> {
    match value {
        None => Ok(FRESHNESS_DEFAULT_S),
        Some(s) if (FRESHNESS_MIN_S..=FRESHNESS_MAX_S).contains(&s) => Ok(s as u32),
        Some(s) => Err(ApiError::invalid(format!(
            "DataFreshnessInSeconds {s} is out of range: it must be between {FRESHNESS_MIN_S} \
             and {FRESHNESS_MAX_S} seconds."
        ))),
    }
}

/// The account in an S3 or S3 Tables ARN's bucket owner check, and the bucket's name.
pub fn bucket_name(bucket_arn: &str) -> Option<&str> {
    bucket_arn
        .split_once(":s3:::")
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

impl Engine {
    /// The ARN of the channel whose id is `id`.
    pub fn channel_arn(&self, id: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:channel/{id}",
            self.config.region, self.config.account_id
        )
    }

    /// The metadata prefix under which channel `id`'s delivery state is kept.
    pub fn channel_state_prefix(&self, id: &str) -> String {
        format!("{}{CHANNEL_STATE_PREFIX}{id}/", self.config.namespace)
    }

    fn channel_view(&self, meta: &StreamMeta, channel: &ChannelMeta) -> ChannelView {
        ChannelView {
            arn: self.channel_arn(&channel.id),
            stream_arn: self.stream_arn(&meta.name),
            stream_created_ms: meta.created_ms,
            meta: channel.clone(),
        }
    }

    pub(crate) fn channel_not_found(&self, arn: &str) -> ApiError {
        ApiError::not_found(format!(
            "Channel {arn} under account {} not found.",
            self.config.account_id
        ))
    }

    /// The stream holding the channel `arn` names, with lifecycle steps applied, and the
    /// channel's id.
    pub(crate) fn find_channel(
        &self,
        arn: &str,
        now_ms: i64,
    ) -> Result<(Arc<crate::Stream>, String)> {
        let (region, account, id) = parse_channel_arn(arn)
            .ok_or_else(|| ApiError::invalid(format!("Invalid ChannelARN {arn}.")))?;
        if region != self.config.region || account != self.config.account_id {
            return Err(self.channel_not_found(arn));
        }
        let matches = |c: &ChannelMeta| c.id == id;
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        for stream in streams {
            if stream.state.read().meta.channels.iter().any(matches) {
                self.settle_channels(&stream, now_ms)?;
                let state = stream.state.read();
                if let Some(channel) = state.meta.channels.iter().find(|c| matches(c)) {
                    return Ok((stream.clone(), channel.id.clone()));
                }
            }
        }
        Err(self.channel_not_found(arn))
    }

    /// Finishes channel UPDATING and DELETING steps whose delay has passed (the writer
    /// only). CREATING ends with the destination check (`finish_channel_creation`).
    pub(crate) fn settle_channels(&self, stream: &Arc<crate::Stream>, now_ms: i64) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let due = |c: &ChannelMeta| {
            matches!(c.status, ChannelStatus::Updating | ChannelStatus::Deleting)
                && c.status_until_ms.is_some_and(|until| until <= now_ms)
        };
        if !stream.state.read().meta.channels.iter().any(due) {
            return Ok(());
        }
        let mut state = stream.state.write();
        let mut gone = Vec::new();
        let channels = std::mem::take(&mut state.meta.channels);
        state.meta.channels = channels
            .into_iter()
            .filter_map(|mut c| {
                if !due(&c) {
                    return Some(c);
                }
                if c.status == ChannelStatus::Deleting {
                    gone.push(c.id);
                    return None;
                }
                if let Some(update) = c.pending.take() {
                    if let Some(freshness) = update.freshness_s {
                        c.freshness_s = freshness;
                    }
                    if let Some(logging) = update.logging {
                        c.logging = logging;
                    }
                }
                c.status = ChannelStatus::Active;
                c.status_until_ms = None;
                Some(c)
            })
            .collect();
        // The delivery state goes first: a crash in between leaves a DELETING channel, whose
        // removal is then done again; what a commit in flight writes after it goes a minute
        // later.
        for id in &gone {
            self.forget_state(&self.channel_state_prefix(id), now_ms)?;
        }
        self.persist(&state.meta)
    }

    /// Removes every delivery-state key of channel `id`.
    fn remove_channel_state(&self, id: &str) -> Result<()> {
        self.remove_meta_prefix(&self.channel_state_prefix(id))
    }

    /// Removes the delivery state of every channel no stream has (deleted before a restart
    /// or a change of leader finished the removal).
    pub(crate) fn remove_orphaned_channel_state(&self) -> Result<()> {
        let stored =
            self.stored_state_ids(&format!("{}{CHANNEL_STATE_PREFIX}", self.config.namespace))?;
        let live: std::collections::HashSet<String> = self
            .streams
            .read()
            .values()
            .flat_map(|s| {
                s.state
                    .read()
                    .meta
                    .channels
                    .iter()
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for id in stored.into_iter().filter(|id| !live.contains(id)) {
            tracing::info!(channel = %id, "removing an orphaned channel's delivery state");
            self.remove_channel_state(&id)?;
        }
        Ok(())
    }

    /// CreateChannel.
    pub fn create_channel(&self, request: &CreateChannel, now_ms: i64) -> Result<ChannelView> {
        let account = self.config.account_id.clone();
        let [(stream_arn, format, schema_arn)] = request.streams.as_slice() else {
            return Err(ApiError::invalid(
                "StreamConfigurationList must contain exactly one stream: a channel currently \
                 supports one source stream.",
            ));
        };
        let format = RecordFormat::parse(format)
            .ok_or_else(|| ApiError::invalid(format!("Invalid RecordFormatType {format}.")))?;
        let (freshness_s, dead_letter, destination) = match (&request.s3, &request.tables) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ApiError::invalid(
                    "Specify either S3DestinationConfiguration or \
                     S3TablesDestinationConfiguration, but not both.",
                ));
            }
            (Some((fresh, dead, storage)), None) => {
                if let Some(template) = &storage.key_template {
                    check_key_template(template, &storage.compression)?;
                }
                if format == RecordFormat::GsrJson {
                    return Err(ApiError::invalid(
                        "RecordFormatType GSR_JSON is supported only for streaming table \
                         (S3TablesDestinationConfiguration) destinations.",
                    ));
                }
                if schema_arn.is_some() {
                    return Err(ApiError::invalid(
                        "GSRSchemaARN can be specified only for streaming table \
                         (S3TablesDestinationConfiguration) destinations.",
                    ));
                }
                (
                    freshness(*fresh)?,
                    dead.clone(),
                    Destination::S3(storage.clone()),
                )
            }
            (None, Some((fresh, dead, tables))) => {
                let [table] = tables.as_slice() else {
                    return Err(ApiError::invalid(
                        "S3TablesConfigurationList must contain exactly one table: a channel \
                         currently supports one streaming table.",
                    ));
                };
                if !matches!(format, RecordFormat::Json | RecordFormat::GsrJson) {
                    return Err(ApiError::invalid(format!(
                        "RecordFormatType {} is not supported for streaming table \
                         (S3TablesDestinationConfiguration) destinations: use JSON or GSR_JSON.",
                        format.as_str()
                    )));
                }
                if schema_arn.is_none() {
                    return Err(ApiError::invalid(
                        "GSRSchemaARN is required when the channel destination is a streaming \
                         table.",
                    ));
                }
                (
                    freshness(*fresh)?,
                    Some(dead.clone()),
                    Destination::Tables(table.clone()),
                )
            }
        };
        let encryption_key = match &request.encryption {
            None => None,
            Some((_, key_id)) => {
                if key_id == "alias/aws/kinesis" || key_id.ends_with(":alias/aws/kinesis") {
                    return Err(ApiError::invalid(
                        "The Amazon Kinesis Data Streams service key (alias/aws/kinesis) \
                         cannot encrypt a channel's destination: use a customer managed key.",
                    ));
                }
                // The key must exist and be usable now, as KMS answers.
                self.data_keys()?.kms().resolve(&account, key_id)?;
                Some(key_id.clone())
            }
        };
        if request.tags.len() > crate::control::TAGS_PER_STREAM_MAX {
            return Err(ApiError::invalid(format!(
                "Failed to create channel {} under account {account} because a channel cannot \
                 have more than {} tags.",
                request.name,
                crate::control::TAGS_PER_STREAM_MAX
            )));
        }
        crate::control::check_tags(request.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let stream = self.stream_for_consumers(stream_arn, now_ms)?;
        self.settle_channels(&stream, now_ms)?;
        // Names are unique in the account: one creation at a time checks and takes one.
        let _creating = self.queue_creation.lock();
        if self.channel_name_taken(&request.name) {
            return Err(ApiError::in_use(format!(
                "Channel {} under account {account} already exists.",
                request.name
            )));
        }
        let mut state = stream.state.write();
        let stream_name = state.meta.name.clone();
        if !matches!(
            state.meta.status,
            StreamStatus::Active | StreamStatus::Updating
        ) {
            return Err(ApiError::in_use(format!(
                "Stream {stream_name} under account {account} not ACTIVE, instead in state {}",
                state.meta.status.as_str()
            )));
        }
        if state.meta.mode != StreamMode::OnDemand {
            return Err(ApiError::new(
                ErrorKind::Validation,
                format!(
                    "Channels are supported only on data streams in ON_DEMAND capacity mode. \
                     Stream {stream_name} under account {account} is in {} capacity mode.",
                    state.meta.mode.as_str()
                ),
            ));
        }
        // A stream has at most one delivery of each kind: one to a general purpose bucket,
        // one to streaming tables.
        if let Some(other) = state
            .meta
            .channels
            .iter()
            .find(|c| c.destination.kind() == destination.kind())
        {
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "Stream {stream_name} under account {account} already has channel {} \
                     delivering to {}. A stream can have one channel per destination type.",
                    other.name,
                    destination.kind()
                ),
            ));
        }
        let mut id_bytes = [0u8; 16];
        getrandom::fill(&mut id_bytes)
            .map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
        // A UUID (version 4), as AWS's channel ids are.
        id_bytes[6] = (id_bytes[6] & 0x0f) | 0x40;
        id_bytes[8] = (id_bytes[8] & 0x3f) | 0x80;
        let hex: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let id = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        let channel = ChannelMeta {
            id,
            name: request.name.clone(),
            created_ms: now_ms,
            status: ChannelStatus::Creating,
            status_until_ms: Some(now_ms + self.config.create_stream_ms),
            reason: None,
            role_arn: request.role_arn.clone(),
            format,
            schema_arn: schema_arn.clone(),
            freshness_s,
            dead_letter,
            destination,
            encryption_key,
            logging: request.logging.clone().unwrap_or_default(),
            pending: None,
            tags: request.tags.clone(),
        };
        state.meta.channels.push(channel.clone());
        self.persist(&state.meta)?;
        Ok(self.channel_view(&state.meta, &channel))
    }

    fn channel_name_taken(&self, name: &str) -> bool {
        self.streams
            .read()
            .values()
            .any(|s| s.state.read().meta.channels.iter().any(|c| c.name == name))
    }

    /// Runs `f` on the channel `arn` names under its stream's lock (persisting the document
    /// when `change`), and describes the channel as it then is. Tags (`resources.rs`), Describe,
    /// Update and Delete all go through here.
    pub(crate) fn with_channel<T>(
        &self,
        arn: &str,
        change: bool,
        now_ms: i64,
        f: impl FnOnce(&mut ChannelMeta) -> Result<T>,
    ) -> Result<(T, ChannelView)> {
        let (stream, id) = self.find_channel(arn, now_ms)?;
        let mut state = stream.state.write();
        let channel = state
            .meta
            .channels
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| self.channel_not_found(arn))?;
        let out = f(channel)?;
        let channel = channel.clone();
        if change {
            self.persist(&state.meta)?;
        }
        Ok((out, self.channel_view(&state.meta, &channel)))
    }

    /// DescribeChannel.
    pub fn describe_channel(&self, arn: &str, now_ms: i64) -> Result<ChannelView> {
        self.with_channel(arn, false, now_ms, |_| Ok(()))
            .map(|(_, view)| view)
    }

    /// UpdateChannel: the channel goes UPDATING, and the changes apply when it ends.
    pub fn update_channel(
        &self,
        arn: &str,
        update: &ChannelUpdate,
        now_ms: i64,
    ) -> Result<ChannelView> {
        let next_freshness = update.freshness_s.map(|s| freshness(Some(i64::from(s))));
        let delay = self.config.update_stream_ms;
        let account = &self.config.account_id;
        let changed = self.with_channel(arn, true, now_ms, |channel| {
            if channel.status != ChannelStatus::Active {
                return Err(ApiError::in_use(format!(
                    "Channel {arn} under account {account} not ACTIVE, instead in state {}",
                    channel.status.as_str()
                )));
            }
            if let Some(kind) = &update.destination_kind
                && kind != channel.destination.kind()
            {
                return Err(ApiError::invalid(format!(
                    "Channel {arn} delivers to {}: its update must name that destination.",
                    if channel.destination.kind() == "S3" {
                        "a general purpose S3 bucket (S3DestinationConfiguration)"
                    } else {
                        "a streaming table (S3TablesDestinationConfiguration)"
                    }
                )));
            }
            if let Some(next) = next_freshness {
                next?;
            }
            channel.status = ChannelStatus::Updating;
            channel.status_until_ms = Some(now_ms + delay);
            channel.pending = Some(update.clone());
            Ok(())
        });
        changed.map(|(_, view)| view)
    }

    /// DeleteChannel: the channel goes DELETING, then away with its delivery state.
    pub fn delete_channel(&self, arn: &str, now_ms: i64) -> Result<()> {
        let delay = self.config.delete_stream_ms;
        self.with_channel(arn, true, now_ms, |c| {
            if c.status != ChannelStatus::Deleting {
                c.status = ChannelStatus::Deleting;
                c.status_until_ms = Some(now_ms + delay);
                c.pending = None;
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// ListChannels: every channel of the account, or those on the streams `filters` name
    /// (StreamARN and, optionally, the stream's creation time), by name.
    pub fn list_channels(
        &self,
        max_results: Option<u32>,
        next_token: Option<&str>,
        filters: &[(&str, Option<i64>)],
        now_ms: i64,
    ) -> Result<ChannelList> {
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        let mut all: Vec<ChannelView> = Vec::new();
        for stream in streams {
            self.settle_channels(&stream, now_ms)?;
            let state = stream.state.read();
            let wanted = self.stream_filtered(&state.meta, filters);
            if wanted {
                all.extend(
                    state
                        .meta
                        .channels
                        .iter()
                        .map(|c| self.channel_view(&state.meta, c)),
                );
            }
        }
        let limit = max_results
            .map_or(LIST_CHANNELS_MAX, |m| m as usize)
            .clamp(1, LIST_CHANNELS_MAX);
        let (channels, next_token) = self.page_by_key(
            Kind::ListChannels,
            all,
            |c| c.meta.name.clone(),
            filters,
            next_token,
            limit,
            now_ms,
        )?;
        Ok(ChannelList {
            channels,
            next_token,
        })
    }

    /// Every channel of the account, as described (no lifecycle step is applied).
    pub fn channel_views(&self) -> Vec<ChannelView> {
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        let mut views: Vec<ChannelView> = streams
            .iter()
            .flat_map(|stream| {
                let state = stream.state.read();
                state
                    .meta
                    .channels
                    .iter()
                    .map(|c| self.channel_view(&state.meta, c))
                    .collect::<Vec<_>>()
            })
            .collect();
        views.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        views
    }

    /// Every channel of the account with its stream's shards, for delivery (DELETING ones
    /// too: delivery stops for them).
    pub fn channel_sources(&self, now_ms: i64) -> Vec<ChannelSource> {
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        let mut sources = Vec::new();
        for stream in streams {
            if stream.state.read().meta.channels.is_empty() {
                continue;
            }
            if let Err(error) = self.settle_channels(&stream, now_ms) {
                tracing::warn!(%error, "settling channels");
            }
            let state = stream.state.read();
            let shards: Vec<ChannelShard> = state
                .meta
                .shards
                .iter()
                .filter_map(|shard| {
                    Some(ChannelShard {
                        index: shard.index,
                        created_ms: shard.created_ms,
                        parents: shard
                            .parent
                            .into_iter()
                            .chain(shard.adjacent_parent)
                            .collect(),
                        end_offset: shard.end_offset,
                        log: state.logs.get(&shard.index)?.clone(),
                    })
                })
                .collect();
            for channel in &state.meta.channels {
                sources.push(ChannelSource {
                    arn: self.channel_arn(&channel.id),
                    meta: channel.clone(),
                    stream_name: state.meta.name.clone(),
                    stream_key: state.meta.key.clone(),
                    encryption: state.meta.encryption.clone(),
                    shards: shards.clone(),
                });
            }
        }
        sources
    }

    /// Ends CREATING after the destination check: ACTIVE, or FAILED with `outcome`'s reason
    /// (the writer only; a channel no longer CREATING is left as it is).
    pub fn finish_channel_creation(
        &self,
        channel_id: &str,
        outcome: std::result::Result<(), String>,
        now_ms: i64,
    ) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let streams: Vec<Arc<crate::Stream>> = self.streams.read().values().cloned().collect();
        for stream in streams {
            let mut state = stream.state.write();
            let Some(channel) = state.meta.channels.iter_mut().find(|c| c.id == channel_id) else {
                continue;
            };
            if channel.status != ChannelStatus::Creating
                || channel.status_until_ms.is_some_and(|until| until > now_ms)
            {
                return Ok(());
            }
            channel.status_until_ms = None;
            match outcome {
                Ok(()) => channel.status = ChannelStatus::Active,
                Err(reason) => {
                    channel.status = ChannelStatus::Failed;
                    channel.reason = Some(reason);
                }
            }
            return self.persist(&state.meta);
        }
        Ok(())
    }

    /// Reads up to `limit` records (about `max_bytes`, at least one) of shard `index` of a
    /// channel's stream from `from`, as GetRecords would (decrypted, with the KMS key's state
    /// checked), without limits or metrics.
    pub async fn channel_read(
        &self,
        source: &ChannelSource,
        index: u32,
        from: u64,
        limit: usize,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<ShardRead> {
        self.check_read_key(source.encryption.as_ref())?;
        let stream = self.stream(&source.stream_name, now_ms)?;
        let plan = {
            let state = stream.state.read();
            if state.meta.key != source.stream_key {
                return Err(self.channel_not_found(&source.arn));
            }
            let missing = || {
                ApiError::not_found(format!(
                    "Shard {} of stream {} under account {} not found.",
                    crate::meta::shard_id(index),
                    source.stream_name,
                    self.config.account_id
                ))
            };
            self.plan_read(&state, index, from, limit, max_bytes, &missing)?
        };
        plan.run(now_ms).await
    }
}

/// The variables of an S3 key template (`!{name}`), all times in UTC.
const KEY_VARIABLES: &[&str] = &[
    "channel-name",
    "channel-id",
    "stream-name",
    "yyyy",
    "yy",
    "MM",
    "dd",
    "HH",
    "mm",
];

/// One piece of a parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart<'a> {
    Literal(&'a str),
    Variable(&'a str),
    /// `!{extension}` (None) or `!{extension:.literal}` (Some).
    Extension(Option<&'a str>),
}

/// Parses an OutputKeyTemplate by AWS's rules: only known variables, closed braces, one
/// extension placeholder at the end, literal characters from the allowed set, no `..`, no
/// `.` segment, no leading `/` and no `//`.
pub fn parse_key_template(template: &str) -> std::result::Result<Vec<KeyPart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("!{") {
            let close = after
                .find('}')
                .ok_or_else(|| "a placeholder is not closed with }".to_string())?;
            let name = &after[..close];
            rest = &after[close + 1..];
            if name == "extension" {
                parts.push(KeyPart::Extension(None));
            } else if let Some(literal) = name.strip_prefix("extension:") {
                let valid = literal.starts_with('.')
                    && literal.len() > 1
                    && literal.bytes().all(|b| b == b'.' || b.is_ascii_lowercase());
                if !valid {
                    return Err(format!(
                        "the extension {literal} must start with a period and contain only \
                         lowercase letters and periods"
                    ));
                }
                parts.push(KeyPart::Extension(Some(literal)));
            } else if KEY_VARIABLES.contains(&name) {
                parts.push(KeyPart::Variable(name));
            } else {
                return Err(format!("!{{{name}}} is not a known variable"));
            }
            continue;
        }
        let end = rest.find("!{").unwrap_or(rest.len());
        let literal = &rest[..end];
        if let Some(bad) = literal
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!-_'.*()/=".contains(*c)))
        {
            return Err(format!("the character {bad} is not allowed"));
        }
        parts.push(KeyPart::Literal(literal));
        rest = &rest[end..];
    }
    let extensions = parts
        .iter()
        .filter(|p| matches!(p, KeyPart::Extension(_)))
        .count();
    if extensions > 1 || (extensions == 1 && !matches!(parts.last(), Some(KeyPart::Extension(_)))) {
        return Err("at most one extension placeholder, and it must come last".to_string());
    }
    let literal: String = parts
        .iter()
        .map(|p| match p {
            KeyPart::Literal(text) => *text,
            _ => "x",
        })
        .collect();
    if literal.starts_with('/')
        || literal.contains("//")
        || literal.contains("..")
        || literal.split('/').any(|segment| segment == ".")
    {
        return Err(
            "a key cannot start with /, contain // or .., or have a segment that is .".to_string(),
        );
    }
    Ok(parts)
}

/// CreateChannel's check of OutputKeyTemplate: its grammar, and an extension placeholder
/// when the objects are compressed.
fn check_key_template(template: &str, compression: &str) -> Result<()> {
    let invalid = |why: String| ApiError::invalid(format!("Invalid OutputKeyTemplate: {why}."));
    let parts = parse_key_template(template).map_err(invalid)?;
    if compression != "NONE" && !parts.iter().any(|p| matches!(p, KeyPart::Extension(_))) {
        return Err(invalid(format!(
            "with CompressionType {compression} the template must end with !{{extension}}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_arns_parse() {
        let arn = "arn:aws:kinesis:us-east-1:123456789012:channel/abc";
        assert!(is_channel_arn(arn));
        assert!(!is_channel_arn(
            "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
        ));
        assert!(!is_channel_arn("arn:aws:kinesis:us-east-1:12345:channel/x"));
        assert_eq!(
            parse_channel_arn("arn:aws:kinesis:us-east-1:123456789012:channel/a-b"),
            Some(("us-east-1", "123456789012", "a-b"))
        );
        assert_eq!(bucket_name("arn:aws:s3:::my-bucket"), Some("my-bucket"));
        assert_eq!(
            parse_channel_arn("arn:aws:kinesis:us-east-1:123456789012:channel/a-b"),
            Some(("us-east-1", "123456789012", "a-b"))
        );
        assert_eq!(bucket_name("arn:aws:s3:::"), None);
    }

    #[test]
    fn key_templates_follow_aws_s_rules() {
        assert!(parse_key_template(KEY_TEMPLATE_DEFAULT).is_ok());
        assert!(parse_key_template("!{channel-name}/!{channel-id}").is_ok());
        assert!(parse_key_template("logs/!{yyyy}!{extension:.json.gz}").is_ok());
        for bad in [
            "!{partition-id}",
            "a/!{yyyy",
            "/a",
            "a//b",
            "a/../b",
            "a/./b",
            "a!{extension}b",
            "a!{extension}!{extension}",
            "a!{extension:json}",
            "a b",
        ] {
            assert!(parse_key_template(bad).is_err(), "{bad}");
        }
        assert!(check_key_template("a/!{yyyy}", "GZIP").is_err());
        assert!(check_key_template("a/!{yyyy}", "NONE").is_ok());
    }

    #[test]
    fn freshness_has_a_default_and_a_range() {
        assert_eq!(freshness(None), Ok(FRESHNESS_DEFAULT_S));
        assert_eq!(freshness(Some(900)), Ok(900));
        assert!(freshness(Some(299)).is_err());
        assert!(freshness(Some(FRESHNESS_MAX_S + 1)).is_err());
        assert!(freshness(Some(-1)).is_err());
    }
}
