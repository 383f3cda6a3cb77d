//! One function per operation: arguments out of a decoded request `Value`, the engine call,
//! and the response `Value`. Requests reach here already validated against the model.

use rivulet_engine::metrics::Metric;
use rivulet_engine::{
    ApiError, ConsumerTarget, ConsumerView, CreateStream, Engine, ErrorKind, GetShardIterator,
    IteratorType, ListShards, PutEntry, RecordDistribution, ShardFilter, ShardView, StreamMode,
    StreamTarget, StreamView,
};
use rivulet_protocol::{AwsError, Format, Value, Writer};

/// What an operation answers: a response document or an AWS error.
pub type Reply = Result<Value, AwsError>;

/// Converts an engine error into the error the client sees.
pub fn aws_error(error: ApiError) -> AwsError {
    let mut out = AwsError::new(error.kind.code(), error.message);
    if error.kind == ErrorKind::InternalFailure {
        out.status = 500;
    }
    out
}

pub(crate) fn field<'v>(input: &'v Value, name: &str) -> Option<&'v Value> {
    match input {
        Value::Map(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
        _ => None,
    }
    .filter(|v| !matches!(v, Value::Null))
}

pub(crate) fn text<'v>(input: &'v Value, name: &str) -> Option<&'v str> {
    match field(input, name) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

pub(crate) fn int(input: &Value, name: &str) -> Option<i64> {
    match field(input, name) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    }
}

fn u32_arg(input: &Value, name: &str) -> Option<u32> {
    int(input, name).map(|n| n.clamp(0, i64::from(u32::MAX)) as u32)
}

fn flag(input: &Value, name: &str) -> bool {
    matches!(field(input, name), Some(Value::Bool(true)))
}

fn blob<'v>(input: &'v Value, name: &str) -> Option<&'v [u8]> {
    match field(input, name) {
        Some(Value::Blob(b)) => Some(b),
        _ => None,
    }
}

pub(crate) fn timestamp_ms(input: &Value, name: &str) -> Option<i64> {
    match field(input, name) {
        Some(Value::Timestamp(secs)) => Some((secs * 1000.0).round() as i64),
        _ => None,
    }
}

pub(crate) fn list<'v>(input: &'v Value, name: &str) -> &'v [Value] {
    match field(input, name) {
        Some(Value::List(items)) => items,
        _ => &[],
    }
}

pub(crate) fn string_map(input: &Value, name: &str) -> Vec<(String, String)> {
    match field(input, name) {
        Some(Value::Map(members)) => members
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Str(s) => s.clone(),
                    _ => String::new(),
                };
                (k.clone(), value)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn target(input: &Value) -> StreamTarget<'_> {
    StreamTarget {
        name: text(input, "StreamName"),
        arn: text(input, "StreamARN"),
    }
}

/// Builds a structure from members, leaving out `None`s.
/// ListQueues' and ListChannels' StreamFilter (StreamARN and creation time) and MaxResults.
pub(crate) fn list_filters(input: &Value) -> (Vec<(&str, Option<i64>)>, Option<u32>) {
    let filters = list(input, "StreamFilter")
        .iter()
        .map(|f| {
            (
                text(f, "StreamARN").unwrap_or_default(),
                timestamp_ms(f, "StreamCreationTimestamp"),
            )
        })
        .collect();
    let max = int(input, "MaxResults").map(|m| m.clamp(0, i64::from(u32::MAX)) as u32);
    (filters, max)
}

pub(crate) fn obj<const N: usize>(members: [(&str, Option<Value>); N]) -> Value {
    Value::Map(
        members
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

pub(crate) fn s(text: impl Into<String>) -> Option<Value> {
    Some(Value::Str(text.into()))
}

fn n(number: impl Into<i64>) -> Option<Value> {
    Some(Value::Int(number.into()))
}

pub(crate) fn ts(ms: i64) -> Option<Value> {
    Some(Value::Timestamp(ms as f64 / 1000.0))
}

fn mode_details(mode: StreamMode) -> Option<Value> {
    Some(obj([("StreamMode", s(mode.as_str()))]))
}

fn metric_names(names: &[String]) -> Option<Value> {
    Some(Value::List(names.iter().cloned().map(Value::Str).collect()))
}

fn enhanced_monitoring(view: &StreamView) -> Option<Value> {
    Some(Value::List(vec![obj([(
        "ShardLevelMetrics",
        metric_names(&view.shard_level_metrics),
    )])]))
}

fn shard_value(shard: ShardView) -> Value {
    obj([
        ("ShardId", s(shard.shard_id)),
        ("ParentShardId", shard.parent_shard_id.map(Value::Str)),
        (
            "AdjacentParentShardId",
            shard.adjacent_parent_shard_id.map(Value::Str),
        ),
        (
            "HashKeyRange",
            Some(obj([
                ("StartingHashKey", s(shard.starting_hash_key)),
                ("EndingHashKey", s(shard.ending_hash_key)),
            ])),
        ),
        (
            "SequenceNumberRange",
            Some(obj([
                ("StartingSequenceNumber", s(shard.starting_sequence_number)),
                (
                    "EndingSequenceNumber",
                    shard.ending_sequence_number.map(Value::Str),
                ),
            ])),
        ),
    ])
}

/// `EncryptionType` and `KeyId` of a stream description.
fn encryption_members(view: &StreamView) -> (Option<Value>, Option<Value>) {
    match &view.encryption {
        Some(e) => (s("KMS"), s(e.key_id.clone())),
        None => (s("NONE"), None),
    }
}

fn summary_value(view: StreamView) -> Value {
    let (encryption_type, key_id) = encryption_members(&view);
    let monitoring = enhanced_monitoring(&view);
    obj([
        ("StreamName", s(view.name)),
        ("StreamARN", s(view.arn)),
        ("StreamId", s(view.stream_id)),
        ("StreamStatus", s(view.status.as_str())),
        ("StreamModeDetails", mode_details(view.mode)),
        ("RetentionPeriodHours", n(view.retention_hours)),
        ("StreamCreationTimestamp", ts(view.created_ms)),
        ("EnhancedMonitoring", monitoring),
        ("EncryptionType", encryption_type),
        ("KeyId", key_id),
        ("OpenShardCount", n(view.open_shard_count)),
        ("ConsumerCount", n(view.consumer_count)),
        ("QueueCount", n(view.queue_count)),
        ("MaxRecordSizeInKiB", n(view.max_record_size_kib)),
        (
            "RecordDistributionStrategy",
            s(view.record_distribution.as_str()),
        ),
        ("WarmThroughput", view.warm_throughput.map(warm_value)),
    ])
}

fn commitment_value(c: rivulet_engine::CommitmentView) -> Value {
    obj([
        ("Status", s(c.status)),
        ("StartedAt", c.started_ms.and_then(ts)),
        ("EndedAt", c.ended_ms.and_then(ts)),
        (
            "EarliestAllowedEndAt",
            c.earliest_allowed_end_ms.and_then(ts),
        ),
    ])
}

fn warm_value(w: rivulet_engine::WarmThroughput) -> Value {
    obj([
        ("TargetMiBps", n(w.target_mibps)),
        ("CurrentMiBps", n(w.current_mibps)),
    ])
}

/// A `Consumer` (or, with the stream's ARN, a `ConsumerDescription`).
fn consumer_value(c: ConsumerView, with_stream: bool) -> Value {
    obj([
        ("ConsumerName", s(c.name)),
        ("ConsumerARN", s(c.arn)),
        ("ConsumerStatus", s(c.status.as_str())),
        ("ConsumerCreationTimestamp", ts(c.created_ms)),
        ("StreamARN", with_stream.then_some(Value::Str(c.stream_arn))),
    ])
}

fn consumer_target(input: &Value) -> ConsumerTarget<'_> {
    ConsumerTarget {
        stream_arn: text(input, "StreamARN"),
        consumer_name: text(input, "ConsumerName"),
        consumer_arn: text(input, "ConsumerARN"),
    }
}

fn dry_run_error() -> AwsError {
    AwsError::new(
        "DryRunOperationException",
        "Request would have succeeded, but DryRun flag is set.",
    )
}

/// Answers one operation with its encoded response body. `now_ms` is the wall clock, read
/// once per request by the caller. The data-plane operations write their responses straight
/// into the body; the rest build a `Value` first.
pub async fn dispatch(
    engine: &Engine,
    operation: &str,
    input: &Value,
    now_ms: i64,
    format: Format,
) -> Result<Vec<u8>, AwsError> {
    match operation {
        "PutRecord" => put_record(engine, input, now_ms, format).await,
        "PutRecords" => put_records(engine, input, now_ms, format).await,
        "GetRecords" => get_records(engine, input, now_ms, format)
            .await
            .map_err(aws_error),
        operation if crate::queues::is_data_operation(operation) => {
            let value = crate::queues::data(engine, operation, input, crate::http::now_ms)
                .await
                .map_err(aws_error)?;
            Ok(rivulet_protocol::encode_response(format, &value))
        }
        "GetShardIterator" => {
            engine
                .admit_call(operation, Some(&target(input)), now_ms)
                .map_err(aws_error)?;
            let value = get_shard_iterator(engine, input, now_ms)
                .await
                .map_err(aws_error)?;
            Ok(rivulet_protocol::encode_response(format, &value))
        }
        _ => {
            let stream = target(input);
            let named = stream.name.is_some() || stream.arn.is_some();
            engine
                .admit_call(operation, named.then_some(&stream), now_ms)
                .map_err(aws_error)?;
            let value = answer(engine, operation, input, now_ms)?;
            // An operation without an output shape answers an empty body, not `{}`.
            Ok(if rivulet_protocol::has_output(operation) {
                rivulet_protocol::encode_response(format, &value)
            } else {
                Vec::new()
            })
        }
    }
}

/// Answers a control-plane operation as a response document.
fn answer(engine: &Engine, operation: &str, input: &Value, now_ms: i64) -> Reply {
    if let Some(result) = crate::queues::answer(engine, operation, input, now_ms) {
        return result.map_err(aws_error);
    }
    if let Some(result) = crate::channels::answer(engine, operation, input, now_ms) {
        return result.map_err(aws_error);
    }
    let result = match operation {
        "CreateStream" => create_stream(engine, input, now_ms),
        "DeleteStream" => engine
            .delete_stream(
                &target(input),
                flag(input, "EnforceConsumerDeletion"),
                now_ms,
            )
            .map(|()| Value::Map(vec![])),
        "DescribeAccountSettings" => Ok(obj([(
            "MinimumThroughputBillingCommitment",
            Some(commitment_value(engine.describe_account_settings(now_ms))),
        )])),
        "UpdateAccountSettings" => {
            let enable = field(input, "MinimumThroughputBillingCommitment")
                .and_then(|c| text(c, "Status"))
                == Some("ENABLED");
            engine.update_account_settings(enable, now_ms).map(|view| {
                obj([(
                    "MinimumThroughputBillingCommitment",
                    Some(commitment_value(view)),
                )])
            })
        }
        "UpdateStreamWarmThroughput" => engine
            .update_warm_throughput(
                &target(input),
                u32_arg(input, "WarmThroughputMiBps").unwrap_or(0),
                now_ms,
            )
            .map(|(arn, warm)| {
                let name = arn.rsplit('/').next().unwrap_or_default().to_string();
                obj([
                    ("StreamARN", s(arn)),
                    ("StreamName", s(name)),
                    ("WarmThroughput", Some(warm_value(warm))),
                ])
            }),
        "UpdateStreamRecordDistributionStrategy" => engine
            .update_record_distribution(
                &target(input),
                text(input, "RecordDistributionStrategy")
                    .and_then(RecordDistribution::parse)
                    .unwrap_or_default(),
                now_ms,
            )
            .map(|()| Value::Map(vec![])),
        "UpdateStreamMode" => {
            let mode = match field(input, "StreamModeDetails").and_then(|d| text(d, "StreamMode")) {
                Some("ON_DEMAND") => StreamMode::OnDemand,
                _ => StreamMode::Provisioned,
            };
            engine
                .update_stream_mode(&target(input), mode, now_ms)
                .map(|()| Value::Map(vec![]))
        }
        "RegisterStreamConsumer" => engine
            .register_consumer(
                text(input, "StreamARN").unwrap_or_default(),
                text(input, "ConsumerName").unwrap_or_default(),
                &string_map(input, "Tags"),
                now_ms,
            )
            .map(|c| obj([("Consumer", Some(consumer_value(c, false)))])),
        "DescribeStreamConsumer" => engine
            .describe_consumer(&consumer_target(input), now_ms)
            .map(|c| obj([("ConsumerDescription", Some(consumer_value(c, true)))])),
        "DeregisterStreamConsumer" => engine
            .deregister_consumer(&consumer_target(input), now_ms)
            .map(|()| Value::Map(vec![])),
        "ListStreamConsumers" => engine
            .list_consumers(
                text(input, "StreamARN").unwrap_or_default(),
                u32_arg(input, "MaxResults"),
                text(input, "NextToken"),
                timestamp_ms(input, "StreamCreationTimestamp"),
                now_ms,
            )
            .map(|list| {
                obj([
                    (
                        "Consumers",
                        Some(Value::List(
                            list.consumers
                                .into_iter()
                                .map(|c| consumer_value(c, false))
                                .collect(),
                        )),
                    ),
                    ("NextToken", list.next_token.map(Value::Str)),
                ])
            }),
        "DescribeStream" => describe_stream(engine, input, now_ms),
        "DescribeStreamSummary" => engine
            .describe_stream_summary(&target(input), now_ms)
            .map(|v| obj([("StreamDescriptionSummary", Some(summary_value(v)))])),
        "ListStreams" => list_streams(engine, input, now_ms),
        "ListShards" => list_shards(engine, input, now_ms),
        "IncreaseStreamRetentionPeriod" | "DecreaseStreamRetentionPeriod" => engine
            .change_retention(
                &target(input),
                u32_arg(input, "RetentionPeriodHours").unwrap_or(0),
                operation == "IncreaseStreamRetentionPeriod",
                now_ms,
            )
            .map(|()| Value::Map(vec![])),
        "AddTagsToStream" => engine
            .add_tags(&target(input), &string_map(input, "Tags"), now_ms)
            .map(|()| Value::Map(vec![])),
        "RemoveTagsFromStream" => remove_tags(engine, &target(input), input, now_ms),
        "ListTagsForStream" => list_tags_for_stream(engine, input, now_ms),
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            resource_tags(engine, operation, input, now_ms)
        }
        "EnableEnhancedMonitoring" | "DisableEnhancedMonitoring" => {
            let requested: Vec<String> = list(input, "ShardLevelMetrics")
                .iter()
                .filter_map(|m| match m {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            engine
                .change_enhanced_monitoring(
                    &target(input),
                    &requested,
                    operation == "EnableEnhancedMonitoring",
                    now_ms,
                )
                .map(|change| {
                    obj([
                        ("StreamName", s(change.stream_name)),
                        ("CurrentShardLevelMetrics", metric_names(&change.current)),
                        ("DesiredShardLevelMetrics", metric_names(&change.desired)),
                        ("StreamARN", s(change.stream_arn)),
                    ])
                })
        }
        "StartStreamEncryption" | "StopStreamEncryption" => {
            let encryption_type = text(input, "EncryptionType").unwrap_or_default();
            let key_id = text(input, "KeyId").unwrap_or_default();
            let stream = target(input);
            if operation == "StartStreamEncryption" {
                engine.start_stream_encryption(&stream, encryption_type, key_id, now_ms)
            } else {
                engine.stop_stream_encryption(&stream, encryption_type, key_id, now_ms)
            }
            .map(|()| Value::Map(vec![]))
        }
        "PutResourcePolicy" | "GetResourcePolicy" | "DeleteResourcePolicy" => {
            return resource_policy(engine, operation, input, now_ms);
        }
        "SplitShard" => engine
            .split_shard(
                &target(input),
                text(input, "ShardToSplit").unwrap_or_default(),
                text(input, "NewStartingHashKey").unwrap_or_default(),
                now_ms,
            )
            .map(|()| Value::Map(vec![])),
        "MergeShards" => engine
            .merge_shards(
                &target(input),
                text(input, "ShardToMerge").unwrap_or_default(),
                text(input, "AdjacentShardToMerge").unwrap_or_default(),
                now_ms,
            )
            .map(|()| Value::Map(vec![])),
        "UpdateShardCount" => update_shard_count(engine, input, now_ms),
        "UpdateMaxRecordSize" => engine
            .update_max_record_size(
                &target(input),
                u32_arg(input, "MaxRecordSizeInKiB").unwrap_or(0),
                now_ms,
            )
            .map(|()| Value::Map(vec![])),
        "DescribeLimits" => {
            let limits = engine.describe_limits();
            Ok(obj([
                ("ShardLimit", n(limits.shard_limit)),
                ("OpenShardCount", n(limits.open_shard_count)),
                ("OnDemandStreamCount", n(limits.on_demand_stream_count)),
                (
                    "OnDemandStreamCountLimit",
                    n(limits.on_demand_stream_count_limit),
                ),
            ]))
        }
        // Every other operation of the model is one this server does not serve yet: answer as
        // AWS answers an operation it does not know, never with a fake success.
        _ => return Err(unknown_operation()),
    };
    result.map_err(aws_error)
}

/// The answer to an operation the server does not serve.
pub fn unknown_operation() -> AwsError {
    AwsError {
        code: "UnknownOperationException".into(),
        message: None,
        status: 400,
        capital_message: false,
    }
}

fn create_stream(engine: &Engine, input: &Value, now_ms: i64) -> Result<Value, ApiError> {
    let mode = field(input, "StreamModeDetails")
        .and_then(|d| text(d, "StreamMode"))
        .map(|m| {
            if m == "ON_DEMAND" {
                StreamMode::OnDemand
            } else {
                StreamMode::Provisioned
            }
        });
    engine.create_stream(
        CreateStream {
            name: text(input, "StreamName").unwrap_or_default().to_string(),
            shard_count: u32_arg(input, "ShardCount"),
            mode,
            tags: string_map(input, "Tags"),
            max_record_size_kib: u32_arg(input, "MaxRecordSizeInKiB"),
            record_distribution: text(input, "RecordDistributionStrategy")
                .and_then(RecordDistribution::parse),
            warm_throughput_mibps: u32_arg(input, "WarmThroughputMiBps"),
        },
        now_ms,
    )?;
    Ok(Value::Map(vec![]))
}

fn describe_stream(engine: &Engine, input: &Value, now_ms: i64) -> Result<Value, ApiError> {
    let d = engine.describe_stream(
        &target(input),
        u32_arg(input, "Limit"),
        text(input, "ExclusiveStartShardId"),
        now_ms,
    )?;
    let view = d.stream;
    let (encryption_type, key_id) = encryption_members(&view);
    let monitoring = enhanced_monitoring(&view);
    Ok(obj([(
        "StreamDescription",
        Some(obj([
            ("StreamName", s(view.name)),
            ("StreamARN", s(view.arn)),
            ("StreamStatus", s(view.status.as_str())),
            ("StreamModeDetails", mode_details(view.mode)),
            (
                "Shards",
                Some(Value::List(d.shards.into_iter().map(shard_value).collect())),
            ),
            ("HasMoreShards", Some(Value::Bool(d.has_more_shards))),
            ("RetentionPeriodHours", n(view.retention_hours)),
            ("StreamCreationTimestamp", ts(view.created_ms)),
            ("EnhancedMonitoring", monitoring),
            ("EncryptionType", encryption_type),
            ("KeyId", key_id),
        ])),
    )]))
}

fn list_streams(engine: &Engine, input: &Value, now_ms: i64) -> Result<Value, ApiError> {
    let list = engine.list_streams(
        u32_arg(input, "Limit"),
        text(input, "ExclusiveStartStreamName"),
        text(input, "NextToken"),
        now_ms,
    )?;
    let names = list
        .streams
        .iter()
        .map(|v| Value::Str(v.name.clone()))
        .collect();
    let summaries = list
        .streams
        .into_iter()
        .map(|v| {
            obj([
                ("StreamName", s(v.name)),
                ("StreamARN", s(v.arn)),
                ("StreamStatus", s(v.status.as_str())),
                ("StreamModeDetails", mode_details(v.mode)),
                ("StreamCreationTimestamp", ts(v.created_ms)),
            ])
        })
        .collect();
    Ok(obj([
        ("StreamNames", Some(Value::List(names))),
        ("HasMoreStreams", Some(Value::Bool(list.has_more))),
        ("NextToken", list.next_token.map(Value::Str)),
        ("StreamSummaries", Some(Value::List(summaries))),
    ]))
}

fn list_shards(engine: &Engine, input: &Value, now_ms: i64) -> Result<Value, ApiError> {
    let filter = match field(input, "ShardFilter") {
        None => None,
        Some(f) => {
            let kind = text(f, "Type").unwrap_or_default();
            let shard = text(f, "ShardId");
            let time = timestamp_ms(f, "Timestamp");
            Some(match kind {
                "AFTER_SHARD_ID" => {
                    let id = shard.ok_or_else(|| {
                        ApiError::invalid(
                            "Must specify ShardId in ShardFilter when Type is AFTER_SHARD_ID.",
                        )
                    })?;
                    ShardFilter::AfterShardId(rivulet_engine::meta::parse_shard_id(id).unwrap_or(0))
                }
                "AT_TRIM_HORIZON" => ShardFilter::AtTrimHorizon,
                "FROM_TRIM_HORIZON" => ShardFilter::FromTrimHorizon,
                "AT_LATEST" => ShardFilter::AtLatest,
                "AT_TIMESTAMP" | "FROM_TIMESTAMP" => {
                    let time = time.ok_or_else(|| {
                        ApiError::invalid(format!(
                            "Must specify Timestamp in ShardFilter when Type is {kind}."
                        ))
                    })?;
                    if kind == "AT_TIMESTAMP" {
                        ShardFilter::AtTimestamp(time)
                    } else {
                        ShardFilter::FromTimestamp(time)
                    }
                }
                _ => {
                    return Err(ApiError::invalid(format!(
                        "Invalid ShardFilter Type {kind}."
                    )));
                }
            })
        }
    };
    if text(input, "NextToken").is_some()
        && (filter.is_some() || text(input, "ExclusiveStartShardId").is_some())
    {
        return Err(ApiError::invalid(
            "NextToken cannot be provided together with ExclusiveStartShardId or ShardFilter.",
        ));
    }
    let list = engine.list_shards(
        &ListShards {
            target: target(input),
            next_token: text(input, "NextToken"),
            exclusive_start_shard_id: text(input, "ExclusiveStartShardId"),
            max_results: u32_arg(input, "MaxResults"),
            stream_creation_timestamp_ms: timestamp_ms(input, "StreamCreationTimestamp"),
            filter,
        },
        now_ms,
    )?;
    Ok(obj([
        (
            "Shards",
            Some(Value::List(
                list.shards.into_iter().map(shard_value).collect(),
            )),
        ),
        ("NextToken", list.next_token.map(Value::Str)),
    ]))
}

fn remove_tags(
    engine: &Engine,
    stream: &StreamTarget<'_>,
    input: &Value,
    now_ms: i64,
) -> Result<Value, ApiError> {
    engine.remove_tags(stream, &tag_keys(input), now_ms)?;
    Ok(Value::Map(vec![]))
}

/// The `TagKeys` list of UntagResource and RemoveTagsFromStream.
pub(crate) fn tag_keys(input: &Value) -> Vec<String> {
    list(input, "TagKeys")
        .iter()
        .filter_map(|k| match k {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn tag_list(tags: Vec<(String, String)>) -> Value {
    Value::List(
        tags.into_iter()
            .map(|(k, v)| obj([("Key", s(k)), ("Value", s(v))]))
            .collect(),
    )
}

fn list_tags_for_stream(engine: &Engine, input: &Value, now_ms: i64) -> Result<Value, ApiError> {
    let tags = engine.list_tags(
        &target(input),
        text(input, "ExclusiveStartTagKey"),
        u32_arg(input, "Limit"),
        now_ms,
    )?;
    Ok(obj([
        ("Tags", Some(tag_list(tags.tags))),
        ("HasMoreTags", Some(Value::Bool(tags.has_more))),
    ]))
}

fn resource_tags(
    engine: &Engine,
    operation: &str,
    input: &Value,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let arn = text(input, "ResourceARN").unwrap_or_default();
    match operation {
        "TagResource" => {
            engine.tag_resource(arn, &string_map(input, "Tags"), now_ms)?;
            Ok(Value::Map(vec![]))
        }
        "UntagResource" => {
            engine.untag_resource(arn, &tag_keys(input), now_ms)?;
            Ok(Value::Map(vec![]))
        }
        _ => Ok(obj([(
            "Tags",
            Some(tag_list(engine.resource_tags(arn, now_ms)?)),
        )])),
    }
}

/// PutResourcePolicy, GetResourcePolicy and DeleteResourcePolicy.
fn resource_policy(engine: &Engine, operation: &str, input: &Value, now_ms: i64) -> Reply {
    let arn = text(input, "ResourceARN").unwrap_or_default();
    let result = match operation {
        "PutResourcePolicy" => {
            let policy = text(input, "Policy").unwrap_or_default();
            crate::authz::check_resource_policy(arn, policy)?;
            engine
                .put_resource_policy(arn, policy, now_ms)
                .map(|()| Value::Map(vec![]))
        }
        "DeleteResourcePolicy" => engine
            .delete_resource_policy(arn, now_ms)
            .map(|()| Value::Map(vec![])),
        _ => engine
            .get_resource_policy(arn, now_ms)
            .map(|policy| obj([("Policy", s(policy))])),
    };
    result.map_err(aws_error)
}

fn update_shard_count(engine: &Engine, input: &Value, now_ms: i64) -> Result<Value, ApiError> {
    let stream = target(input);
    let name = engine.resolve(&stream)?;
    let target_count = u32_arg(input, "TargetShardCount").unwrap_or(0);
    let current = engine.update_shard_count(&stream, target_count, now_ms)?;
    Ok(obj([
        ("StreamName", s(name.clone())),
        ("CurrentShardCount", n(current)),
        ("TargetShardCount", n(target_count)),
        ("StreamARN", s(engine.stream_arn(&name))),
    ]))
}

async fn get_shard_iterator(
    engine: &Engine,
    input: &Value,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let kind = text(input, "ShardIteratorType")
        .and_then(IteratorType::parse)
        .ok_or_else(|| ApiError::invalid("Invalid ShardIteratorType."))?;
    let iterator = engine
        .get_shard_iterator(
            &GetShardIterator {
                target: target(input),
                shard_id: text(input, "ShardId").unwrap_or_default(),
                iterator_type: kind,
                starting_sequence_number: text(input, "StartingSequenceNumber"),
                timestamp_ms: timestamp_ms(input, "Timestamp"),
            },
            now_ms,
        )
        .await?;
    if flag(input, "DryRun") {
        return Err(ApiError::new(
            ErrorKind::DryRunOperation,
            dry_run_error().message.unwrap_or_default(),
        ));
    }
    Ok(obj([("ShardIterator", s(iterator))]))
}

async fn get_records(
    engine: &Engine,
    input: &Value,
    now_ms: i64,
    format: Format,
) -> Result<Vec<u8>, ApiError> {
    let started = std::time::Instant::now();
    let batch = engine
        .get_records(
            text(input, "ShardIterator").unwrap_or_default(),
            u32_arg(input, "Limit"),
            now_ms,
        )
        .await?;
    if flag(input, "DryRun") {
        return Err(ApiError::new(
            ErrorKind::DryRunOperation,
            dry_run_error().message.unwrap_or_default(),
        ));
    }
    let mut w = Writer::new(
        format,
        256 + batch.bytes * 4 / 3 + batch.records.len() * 160,
    );
    let members = 2
        + usize::from(batch.next_shard_iterator.is_some())
        + usize::from(batch.child_shards.is_some());
    w.begin_map(members);
    w.key("Records");
    write_records(&mut w, &batch.records);
    if let Some(next) = &batch.next_shard_iterator {
        w.key("NextShardIterator").str(next);
    }
    w.key("MillisBehindLatest").int(batch.millis_behind_latest);
    if let Some(children) = &batch.child_shards {
        w.key("ChildShards");
        write_child_shards(&mut w, children);
    }
    w.end_map();
    batch
        .metrics
        .record_latency(Metric::GetRecordsLatency, elapsed_ms(started), now_ms);
    Ok(w.finish())
}

fn elapsed_ms(started: std::time::Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// A list of `Record`s (GetRecords, SubscribeToShardEvent).
pub(crate) fn write_records(w: &mut Writer, records: &[rivulet_engine::OutRecord]) {
    w.begin_list(records.len());
    for r in records {
        w.begin_map(if r.encrypted { 5 } else { 4 });
        w.key("SequenceNumber").str(r.sequence_number.as_str());
        w.key("ApproximateArrivalTimestamp")
            .timestamp_ms(r.arrival_ms);
        w.key("Data").blob(&r.data);
        let key = String::from_utf8_lossy(&r.partition_key);
        w.key("PartitionKey").str(&key);
        if r.encrypted {
            w.key("EncryptionType").str("KMS");
        }
        w.end_map();
    }
    w.end_list();
}

/// A list of `ChildShard`s.
pub(crate) fn write_child_shards(w: &mut Writer, children: &[rivulet_engine::ChildShard]) {
    w.begin_list(children.len());
    for c in children {
        w.begin_map(3);
        w.key("ShardId").str(&c.shard_id);
        w.key("ParentShards").begin_list(c.parent_shards.len());
        for parent in &c.parent_shards {
            w.str(parent);
        }
        w.end_list();
        w.key("HashKeyRange").begin_map(2);
        w.key("StartingHashKey").str(&c.starting_hash_key);
        w.key("EndingHashKey").str(&c.ending_hash_key);
        w.end_map();
        w.end_map();
    }
    w.end_list();
}

fn dry_run_put<T>(engine: &Engine, input: &Value, now_ms: i64) -> Result<T, AwsError> {
    // Every check a put makes, without writing: the stream must exist and accept writes.
    let view = engine
        .describe_stream_summary(&target(input), now_ms)
        .map_err(aws_error)?;
    if !matches!(
        view.status,
        rivulet_engine::StreamStatus::Active | rivulet_engine::StreamStatus::Updating
    ) {
        return Err(aws_error(ApiError::not_found(format!(
            "Stream {} under account {} not found.",
            view.name,
            engine.config().account_id
        ))));
    }
    Err(dry_run_error())
}

async fn put_record(
    engine: &Engine,
    input: &Value,
    now_ms: i64,
    format: Format,
) -> Result<Vec<u8>, AwsError> {
    if flag(input, "DryRun") {
        return dry_run_put(engine, input, now_ms);
    }
    let entry = PutEntry {
        partition_key: text(input, "PartitionKey"),
        explicit_hash_key: text(input, "ExplicitHashKey"),
        data: blob(input, "Data").unwrap_or_default(),
    };
    let started = std::time::Instant::now();
    let outcome = engine
        .put_records(
            &target(input),
            &[entry],
            text(input, "SequenceNumberForOrdering"),
            false,
            now_ms,
        )
        .map_err(aws_error)?;
    let (encrypted, metrics) = (outcome.encrypted, outcome.metrics.clone());
    let results = outcome.finish().await.map_err(aws_error)?;
    metrics.record_latency(Metric::PutRecordLatency, elapsed_ms(started), now_ms);
    let result = match results.first() {
        Some(Ok(result)) => result,
        Some(Err(error)) => return Err(aws_error(error.clone())),
        None => return Err(AwsError::internal("no result")),
    };
    let mut w = Writer::new(format, 128);
    w.begin_map(if encrypted { 3 } else { 2 });
    w.key("ShardId").str(result.shard_id_text().as_str());
    w.key("SequenceNumber").str(result.sequence_number.as_str());
    if encrypted {
        w.key("EncryptionType").str("KMS");
    }
    w.end_map();
    Ok(w.finish())
}

async fn put_records(
    engine: &Engine,
    input: &Value,
    now_ms: i64,
    format: Format,
) -> Result<Vec<u8>, AwsError> {
    if flag(input, "DryRun") {
        return dry_run_put(engine, input, now_ms);
    }
    let entries: Vec<PutEntry<'_>> = list(input, "Records")
        .iter()
        .map(|r| PutEntry {
            partition_key: text(r, "PartitionKey"),
            explicit_hash_key: text(r, "ExplicitHashKey"),
            data: blob(r, "Data").unwrap_or_default(),
        })
        .collect();
    let started = std::time::Instant::now();
    let outcome = engine
        .put_records(&target(input), &entries, None, true, now_ms)
        .map_err(aws_error)?;
    let (encrypted, metrics) = (outcome.encrypted, outcome.metrics.clone());
    let results = outcome.finish().await.map_err(aws_error)?;
    metrics.record_latency(Metric::PutRecordsLatency, elapsed_ms(started), now_ms);
    let failed = results.iter().filter(|r| r.is_err()).count();
    let mut w = Writer::new(format, 64 + results.len() * 110);
    w.begin_map(if encrypted { 3 } else { 2 });
    w.key("FailedRecordCount").int(failed as i64);
    if encrypted {
        w.key("EncryptionType").str("KMS");
    }
    w.key("Records").begin_list(results.len());
    for r in &results {
        match r {
            Ok(r) => {
                w.begin_map(2);
                w.key("SequenceNumber").str(r.sequence_number.as_str());
                w.key("ShardId").str(r.shard_id_text().as_str());
                w.end_map();
            }
            // A failed entry carries its error instead (AWS: ErrorCode and ErrorMessage).
            Err(error) => {
                w.begin_map(2);
                w.key("ErrorCode").str(error.kind.code());
                w.key("ErrorMessage").str(&error.message);
                w.end_map();
            }
        }
    }
    w.end_list();
    w.end_map();
    Ok(w.finish())
}
