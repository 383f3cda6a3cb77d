//! Copying every stream of one store into another through the storage seam (`rivulet migrate`:
//! a single node's data dir into a cluster). Records are copied shard by shard, in order, with
//! their arrival times; a closed shard is closed again in the destination, at the end its
//! copy has there; then the metadata (streams, consumers, policies, tags, account settings)
//! is committed, streams last-written so that a copy cut short leaves no stream visible (its
//! records are orphans a cluster's leader removes). Positions are the destination's, so
//! sequence numbers change: consumers resume by time (AT_TIMESTAMP, which finds the copies by
//! their own arrival times through `ShardMeta::copied_end`) or from TRIM_HORIZON.
//!
//! Encrypted records stay encrypted: the source's keyring opens them as they are read, and
//! each stream's copies are sealed again with a data key the destination makes under the
//! stream's KMS key ([`Reencrypt`]). The source's wrapped data keys are not copied.

use std::collections::HashMap;
use std::sync::Arc;

use rivulet_log::{DataKey, Encryption, MetaOp, NewRecord};

use crate::encryption::{DATA_KEY_PREFIX, DataKeys};
use crate::meta::{StreamMeta, shard_id};
use crate::storage::{RecordStore, ShardWrite};
use crate::{ApiError, Result, STREAM_KEY_PREFIX};

/// Records read from the source per page.
const PAGE_RECORDS: usize = 1000;
/// Bytes read from the source per page (about).
const PAGE_BYTES: usize = 4 << 20;
/// Records written to the destination per put, at most (a JetStream atomic batch takes 1,000
/// messages).
const PUT_RECORDS: usize = 500;
/// Metadata keys per commit.
const COMMIT_KEYS: usize = 200;

/// What a copy moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub streams: usize,
    pub shards: usize,
    pub records: u64,
    /// Metadata keys other than streams (consumers, policies, tags, settings).
    pub other_keys: usize,
}

/// What re-encrypts a source's encrypted records in the destination.
pub struct Reencrypt {
    /// The source store's keyring (its reads come back opened).
    pub source: Arc<DataKeys>,
    /// The destination store's keyring: it makes each encrypted stream's new data key.
    pub target: Arc<DataKeys>,
    /// Each KMS key ARN of the source → the same key's ARN in the destination (they differ
    /// for AWS-managed keys, which each deployment has its own of).
    pub key_arns: HashMap<String, String>,
}

impl Reencrypt {
    fn target_arn(&self, source_arn: &str, stream: &str) -> Result<String> {
        self.key_arns.get(source_arn).cloned().ok_or_else(|| {
            ApiError::invalid(format!(
                "Stream {stream} is encrypted with KMS key {source_arn}, which the source's key \
                 file does not hold."
            ))
        })
    }
}

fn is_stream_key(key: &str) -> bool {
    let rest = match key.strip_prefix("acct-") {
        Some(rest) => rest.split_once('/').map_or("", |(_, rest)| rest),
        None => key,
    };
    rest.starts_with(STREAM_KEY_PREFIX)
}

/// Copies everything `from` holds into `to`, which must hold no stream, consumer or other
/// account data yet (only keys under `__rivulet/`, a cluster's own, the token secret, and
/// data keys an earlier attempt made). A source with encrypted records needs `reencrypt`.
/// Refuses a source with queues or channels (their delivery state names positions the copy
/// changes).
pub async fn copy_store(
    from: &dyn RecordStore,
    to: &dyn RecordStore,
    reencrypt: Option<&Reencrypt>,
) -> Result<Copied> {
    let source = from.meta().scan_prefix("")?;
    if reencrypt.is_none() && !keys_used(&source).is_empty() {
        return Err(ApiError::invalid(
            "The data dir holds encrypted streams: migrating them needs the key files (the \
             source's and the deployment's).",
        ));
    }
    // A queue's delivery state names positions in its stream's logs, which the copy
    // numbers anew: cursors would point at other records; so do channels' checkpoints.
    let metas: Vec<StreamMeta> = source
        .iter()
        .filter(|(key, _)| is_stream_key(key))
        .filter_map(|(_, value)| serde_json::from_slice(value).ok())
        .collect();
    let queued = metas.iter().any(|meta| !meta.queues.is_empty());
    let delivered = metas.iter().any(|meta| !meta.channels.is_empty());
    if delivered {
        return Err(ApiError::invalid(
            "The data dir holds channels; migrating them is not supported: their checkpoints \
             name positions the copy changes. Delete the channels, migrate, and create them \
             again.",
        ));
    }
    if queued {
        return Err(ApiError::invalid(
            "The data dir holds queues; migrating them is not supported: their delivery \
             state names positions the copy changes. Let their consumers finish, delete the \
             queues, migrate, and create them again.",
        ));
    }
    if let Some((key, _)) = to.meta().scan_prefix("")?.into_iter().find(|(key, _)| {
        !key.starts_with("__rivulet/")
            && key != crate::SECRET_KEY
            && !key.starts_with(DATA_KEY_PREFIX)
    }) {
        return Err(ApiError::invalid(format!(
            "The destination already holds data ({key}); migrate into a new deployment."
        )));
    }
    // Records without metadata are an interrupted earlier migration's: start over, so that a
    // retry stores nothing twice.
    let mut leftovers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for id in to.log_ids()? {
        if let Some((key, _)) = id.rsplit_once('/') {
            leftovers.entry(key.to_string()).or_default().push(id);
        }
    }
    for (key, ids) in leftovers {
        to.remove_stream(&key, &ids)?;
    }
    let mut copied = Copied::default();
    let mut streams = Vec::new();
    let mut others = Vec::new();
    for (key, value) in source {
        // The source's data keys are wrapped by its own KMS keys: the destination makes its own.
        if key.starts_with(DATA_KEY_PREFIX) {
            continue;
        }
        if !is_stream_key(&key) {
            copied.other_keys += 1;
            others.push(MetaOp::Put { key, value });
            continue;
        }
        let mut meta: StreamMeta = serde_json::from_slice(&value)
            .map_err(|e| ApiError::internal(format!("stream metadata {key}: {e}")))?;
        let mut sealing = Sealing {
            reencrypt,
            stream: &meta,
            key: None,
        };
        for shard in &meta.shards {
            let id = format!("{}/{}", meta.key, shard_id(shard.index));
            copied.records +=
                copy_shard(from, to, &id, shard.end_offset, shard.index, &mut sealing).await?;
        }
        if let (Some(reencrypt), Some(encryption)) = (reencrypt, meta.encryption.as_mut()) {
            let arn = reencrypt.target_arn(&encryption.key_arn, &meta.name)?;
            // A KeyId that named the source's key by its ARN or id names the destination's.
            if encryption.key_id == encryption.key_arn
                || encryption
                    .key_arn
                    .ends_with(&format!("key/{}", encryption.key_id))
            {
                encryption.key_id = arn.clone();
            }
            encryption.key_arn = arn;
        }
        for shard in &mut meta.shards {
            let id = format!("{}/{}", meta.key, shard_id(shard.index));
            let log = to.log(&id)?;
            if shard.end_offset.is_some() {
                shard.end_offset = Some(log.close()?);
            }
            // AT_TIMESTAMP finds the copies by their own arrival times.
            shard.copied_end = Some(match shard.end_offset {
                Some(end) => end,
                None => log.end_offset().await?,
            });
            copied.shards += 1;
        }
        copied.streams += 1;
        let value = serde_json::to_vec(&meta)
            .map_err(|e| ApiError::internal(format!("stream metadata {key}: {e}")))?;
        streams.push(MetaOp::Put { key, value });
    }
    for ops in others
        .chunks(COMMIT_KEYS)
        .chain(streams.chunks(COMMIT_KEYS))
    {
        to.meta().commit(ops)?;
    }
    Ok(copied)
}

/// The KMS keys a store's encryption uses: those wrapping its live data keys (the records
/// sealed with them) and those its streams are encrypted with now (a stream may have none
/// of its data keys yet). Empty: no key file is needed to migrate it.
pub fn kms_keys_used(store: &dyn RecordStore) -> Result<Vec<String>> {
    Ok(keys_used(&store.meta().scan_prefix("")?))
}

/// [`kms_keys_used`] over a store's metadata entries.
fn keys_used(entries: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut arns: Vec<String> = Vec::new();
    for (key, value) in entries {
        let arn = if key.starts_with(DATA_KEY_PREFIX) {
            serde_json::from_slice::<crate::encryption::WrappedKey>(value)
                .ok()
                .filter(|entry| !entry.deleted)
                .map(|entry| entry.key_arn)
        } else if is_stream_key(key) {
            serde_json::from_slice::<StreamMeta>(value)
                .ok()
                .and_then(|meta| meta.encryption)
                .map(|encryption| encryption.key_arn)
        } else {
            None
        };
        if let Some(arn) = arn
            && !arns.contains(&arn)
        {
            arns.push(arn);
        }
    }
    arns
}

/// The data key one stream's encrypted copies are sealed with, made on first need.
struct Sealing<'a> {
    reencrypt: Option<&'a Reencrypt>,
    stream: &'a StreamMeta,
    key: Option<Arc<DataKey>>,
}

impl Sealing<'_> {
    fn key(&mut self) -> Result<Arc<DataKey>> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        let name = &self.stream.name;
        let reencrypt = self.reencrypt.ok_or_else(|| {
            ApiError::invalid(format!(
                "Stream {name} holds encrypted records, and no key files were given."
            ))
        })?;
        // The stream's key now, or (encryption stopped since) the key of its newest data key.
        let source_arn = match &self.stream.encryption {
            Some(encryption) => encryption.key_arn.clone(),
            None => reencrypt
                .source
                .stream_key_arns(&self.stream.key)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ApiError::internal(format!("stream {name}: encrypted records without a key"))
                })?,
        };
        let arn = reencrypt.target_arn(&source_arn, name)?;
        let key = reencrypt.target.generate(&arn, &self.stream.key)?;
        self.key = Some(key.clone());
        Ok(key)
    }
}

/// Copies the records of log `id` (shard `index`) below `end` (all of them without one),
/// sealing again those stored encrypted; says how many.
async fn copy_shard(
    from: &dyn RecordStore,
    to: &dyn RecordStore,
    id: &str,
    end: Option<u64>,
    index: u32,
    sealing: &mut Sealing<'_>,
) -> Result<u64> {
    let source = from.log(id)?;
    let target = to.log(id)?;
    let mut position = source.start_offset().await?;
    let mut copied = 0u64;
    loop {
        let page = source.read(position, PAGE_RECORDS, PAGE_BYTES).await?;
        let records: Vec<_> = page
            .records
            .iter()
            .filter(|record| end.is_none_or(|end| record.offset < end))
            .collect();
        if records.is_empty() {
            break;
        }
        // One put per run of records that arrived together (a put keeps one arrival time) and
        // were stored alike (encrypted or not).
        for run in
            records.chunk_by(|a, b| a.timestamp_ms == b.timestamp_ms && a.encrypted == b.encrypted)
        {
            let key = match run[0].encrypted {
                true => Some(sealing.key()?),
                false => None,
            };
            for part in run.chunks(PUT_RECORDS) {
                let batch: Vec<NewRecord<'_>> = part
                    .iter()
                    .map(|record| NewRecord {
                        key: &record.key,
                        value: &record.value,
                    })
                    .collect();
                let write = ShardWrite {
                    log: &*target,
                    records: &batch,
                    seal: key.as_deref().map(|key| Encryption {
                        key,
                        nonce_prefix: index,
                    }),
                };
                let placed = to.put(&[write], part[0].timestamp_ms)?.await?;
                if placed.iter().any(|placed| placed.late) {
                    return Err(ApiError::internal(format!("{id}: closed while copied")));
                }
                copied += part.len() as u64;
            }
        }
        position = page.next_offset.max(position + 1);
    }
    Ok(copied)
}
