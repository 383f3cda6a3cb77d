//! The 5 channel operations at the edge: arguments out of the decoded request, the engine's
//! control plane (`rivulet_engine::channels`), and the answer. Delivery runs in
//! `rivulet-channel`, started by the server.

use rivulet_engine::channels::{
    ChannelLogging, ChannelUpdate, ChannelView, CreateChannel, DeadLetterTarget, Destination,
    KEY_TEMPLATE_DEFAULT, S3Storage, STORAGE_CLASS_DEFAULT, TableTarget,
};
use rivulet_engine::{ApiError, Engine};
use rivulet_protocol::Value;

use crate::api::{field, int, list, obj, s, string_map, text, ts};

fn dead_letter(input: &Value) -> Option<DeadLetterTarget> {
    let d = field(input, "DeadLetterQueueS3Configuration")?;
    Some(DeadLetterTarget {
        bucket_arn: text(d, "BucketARN").unwrap_or_default().to_string(),
        expected_owner: text(d, "ExpectedBucketOwner")
            .unwrap_or_default()
            .to_string(),
        error_prefix: text(d, "ErrorOutputPrefix").map(str::to_string),
    })
}

fn logging(input: &Value) -> Option<ChannelLogging> {
    let logs = field(field(input, "LoggingConfiguration")?, "CloudWatchLogs")?;
    Some(ChannelLogging {
        enabled: matches!(field(logs, "Enabled"), Some(Value::Bool(true))),
        log_group: text(logs, "LogGroupName").map(str::to_string),
        log_stream: text(logs, "LogStreamName").map(str::to_string),
    })
}

fn create_request(input: &Value) -> CreateChannel {
    let streams = list(input, "StreamConfigurationList")
        .iter()
        .map(|entry| {
            let record = field(entry, "RecordConfiguration");
            (
                text(entry, "StreamARN").unwrap_or_default().to_string(),
                record
                    .and_then(|r| text(r, "RecordFormatType"))
                    .unwrap_or_default()
                    .to_string(),
                record
                    .and_then(|r| text(r, "GSRSchemaARN"))
                    .map(str::to_string),
            )
        })
        .collect();
    let s3 = field(input, "S3DestinationConfiguration").map(|d| {
        let storage = field(d, "StorageConfiguration");
        let get = |name| storage.and_then(|st| text(st, name));
        (
            int(d, "DataFreshnessInSeconds"),
            dead_letter(d),
            S3Storage {
                bucket_arn: get("BucketARN").unwrap_or_default().to_string(),
                expected_owner: get("ExpectedBucketOwner").unwrap_or_default().to_string(),
                key_template: get("OutputKeyTemplate").map(str::to_string),
                storage_class: get("StorageClass").map(str::to_string),
                compression: get("CompressionType").unwrap_or("NONE").to_string(),
            },
        )
    });
    let tables = field(input, "S3TablesDestinationConfiguration").map(|d| {
        let tables = list(d, "S3TablesConfigurationList")
            .iter()
            .map(|t| TableTarget {
                table_bucket_arn: text(t, "TableBucketARN").unwrap_or_default().to_string(),
                namespace: text(t, "Namespace").unwrap_or_default().to_string(),
                table: text(t, "TableName").unwrap_or_default().to_string(),
                compression: text(t, "CompressionType").unwrap_or("NONE").to_string(),
                partition: field(t, "PartitionSpec").map(|spec| {
                    list(spec, "PartitionFields")
                        .iter()
                        .map(|f| {
                            (
                                text(f, "Transform").unwrap_or_default().to_string(),
                                text(f, "SourceName").unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                }),
            })
            .collect();
        (
            int(d, "DataFreshnessInSeconds"),
            dead_letter(d).unwrap_or(DeadLetterTarget {
                bucket_arn: String::new(),
                expected_owner: String::new(),
                error_prefix: None,
            }),
            tables,
        )
    });
    CreateChannel {
        name: text(input, "ChannelName").unwrap_or_default().to_string(),
        role_arn: text(input, "ServiceExecutionRoleARN")
            .unwrap_or_default()
            .to_string(),
        streams,
        s3,
        tables,
        encryption: field(input, "EncryptionConfiguration").map(|e| {
            (
                text(e, "EncryptionType").unwrap_or_default().to_string(),
                text(e, "KeyId").unwrap_or_default().to_string(),
            )
        }),
        logging: logging(input),
        tags: string_map(input, "Tags"),
    }
}

fn dead_letter_value(target: DeadLetterTarget) -> Option<Value> {
    obj([
        ("BucketARN", s(target.bucket_arn)),
        ("ExpectedBucketOwner", s(target.expected_owner)),
        ("ErrorOutputPrefix", target.error_prefix.map(Value::Str)),
    ])
    .into()
}

/// A `ChannelDescription`, with the defaults in effect filled in.
fn description(view: ChannelView) -> Value {
    let meta = &view.meta;
    let mut record = vec![(
        "RecordFormatType".to_string(),
        Value::Str(meta.format.as_str().into()),
    )];
    if let Some(schema) = &meta.schema_arn {
        record.push(("GSRSchemaARN".into(), Value::Str(schema.clone())));
    }
    let dead = meta.dead_letter_in_effect();
    let freshness = Some(Value::Int(i64::from(meta.freshness_s)));
    let (s3, tables) = match &meta.destination {
        Destination::S3(storage) => (
            obj([
                ("DataFreshnessInSeconds", freshness),
                ("DeadLetterQueueS3Configuration", dead_letter_value(dead)),
                (
                    "StorageConfiguration",
                    Some(obj([
                        ("BucketARN", s(storage.bucket_arn.clone())),
                        ("ExpectedBucketOwner", s(storage.expected_owner.clone())),
                        (
                            "OutputKeyTemplate",
                            s(storage
                                .key_template
                                .clone()
                                .unwrap_or_else(|| KEY_TEMPLATE_DEFAULT.to_string())),
                        ),
                        (
                            "StorageClass",
                            s(storage
                                .storage_class
                                .clone()
                                .unwrap_or_else(|| STORAGE_CLASS_DEFAULT.to_string())),
                        ),
                        ("CompressionType", s(storage.compression.clone())),
                    ])),
                ),
            ])
            .into(),
            None,
        ),
        Destination::Tables(table) => {
            let partition = table.partition.as_ref().map(|fields| {
                obj([(
                    "PartitionFields",
                    Some(Value::List(
                        fields
                            .iter()
                            .map(|(transform, source)| {
                                obj([
                                    ("Transform", s(transform.clone())),
                                    ("SourceName", s(source.clone())),
                                ])
                            })
                            .collect(),
                    )),
                )])
            });
            (
                None,
                obj([
                    ("DataFreshnessInSeconds", freshness),
                    ("DeadLetterQueueS3Configuration", dead_letter_value(dead)),
                    (
                        "S3TablesConfigurationList",
                        Some(Value::List(vec![obj([
                            ("TableBucketARN", s(table.table_bucket_arn.clone())),
                            ("Namespace", s(table.namespace.clone())),
                            ("TableName", s(table.table.clone())),
                            ("CompressionType", s(table.compression.clone())),
                            ("PartitionSpec", partition),
                        ])])),
                    ),
                ])
                .into(),
            )
        }
    };
    let logs = &meta.logging;
    let log_group = logs
        .log_group
        .clone()
        .unwrap_or_else(|| format!("/aws/kinesis/{}/{}", meta.name, meta.id));
    let log_stream = logs
        .log_stream
        .clone()
        .unwrap_or_else(|| "DestinationDelivery".to_string());
    let logging = obj([(
        "CloudWatchLogs",
        Some(obj([
            ("Enabled", Some(Value::Bool(logs.enabled))),
            (
                "LogGroupName",
                logs.enabled.then_some(Value::Str(log_group)),
            ),
            (
                "LogStreamName",
                logs.enabled.then_some(Value::Str(log_stream)),
            ),
        ])),
    )]);
    obj([
        ("ChannelName", s(meta.name.clone())),
        ("ChannelARN", s(view.arn.clone())),
        ("ChannelId", s(meta.id.clone())),
        ("ChannelStatus", s(meta.status.as_str())),
        ("ChannelStatusReason", meta.reason.clone().map(Value::Str)),
        ("ChannelCreationTimestamp", ts(meta.created_ms)),
        ("ServiceExecutionRoleARN", s(meta.role_arn.clone())),
        (
            "StreamConfigurationList",
            Some(Value::List(vec![obj([
                ("StreamARN", s(view.stream_arn.clone())),
                ("StreamCreationTimestamp", ts(view.stream_created_ms)),
                ("RecordConfiguration", Some(Value::Map(record))),
            ])])),
        ),
        ("S3DestinationConfiguration", s3),
        ("S3TablesDestinationConfiguration", tables),
        (
            "EncryptionConfiguration",
            meta.encryption_key
                .clone()
                .map(|key| obj([("EncryptionType", s("KMS")), ("KeyId", s(key))])),
        ),
        ("LoggingConfiguration", Some(logging)),
    ])
}

/// A `ChannelSummary`.
fn summary(view: ChannelView) -> Value {
    let meta = &view.meta;
    obj([
        ("ChannelName", s(meta.name.clone())),
        ("ChannelARN", s(view.arn.clone())),
        ("ChannelId", s(meta.id.clone())),
        ("ChannelStatus", s(meta.status.as_str())),
        ("ChannelStatusReason", meta.reason.clone().map(Value::Str)),
        ("ChannelCreationTimestamp", ts(meta.created_ms)),
        ("ChannelDestinationType", s(meta.destination.kind())),
        (
            "Streams",
            Some(Value::List(vec![obj([
                ("StreamARN", s(view.stream_arn.clone())),
                ("StreamCreationTimestamp", ts(view.stream_created_ms)),
            ])])),
        ),
    ])
}

/// Answers a channel control-plane operation, or `None` for any other operation.
pub(crate) fn answer(
    engine: &Engine,
    operation: &str,
    input: &Value,
    now_ms: i64,
) -> Option<Result<Value, ApiError>> {
    let arn = || text(input, "ChannelARN").unwrap_or_default();
    let described = |view| obj([("ChannelDescription", Some(description(view)))]);
    Some(match operation {
        "CreateChannel" => engine
            .create_channel(&create_request(input), now_ms)
            .map(described),
        "DescribeChannel" => engine.describe_channel(arn(), now_ms).map(described),
        "UpdateChannel" => {
            let s3 = field(input, "S3DestinationConfiguration");
            let tables = field(input, "S3TablesDestinationConfiguration");
            if s3.is_some() && tables.is_some() {
                return Some(Err(ApiError::invalid(
                    "Specify either S3DestinationConfiguration or \
                     S3TablesDestinationConfiguration, but not both.",
                )));
            }
            let (kind, freshness) = match (s3, tables) {
                (Some(d), _) => (Some("S3"), int(d, "DataFreshnessInSeconds")),
                (_, Some(d)) => (Some("S3_TABLES"), int(d, "DataFreshnessInSeconds")),
                _ => (None, None),
            };
            let update = ChannelUpdate {
                destination_kind: kind.map(str::to_string),
                freshness_s: freshness.map(|f| f.clamp(0, i64::from(u32::MAX)) as u32),
                logging: logging(input),
            };
            engine.update_channel(arn(), &update, now_ms).map(described)
        }
        "DeleteChannel" => engine
            .delete_channel(arn(), now_ms)
            .map(|()| Value::Map(vec![])),
        "ListChannels" => {
            let (filters, max) = crate::api::list_filters(input);
            engine
                .list_channels(max, text(input, "NextToken"), &filters, now_ms)
                .map(|page| {
                    obj([
                        (
                            "ChannelSummaries",
                            Some(Value::List(
                                page.channels.into_iter().map(summary).collect(),
                            )),
                        ),
                        ("NextToken", page.next_token.map(Value::Str)),
                    ])
                })
        }
        _ => return None,
    })
}
