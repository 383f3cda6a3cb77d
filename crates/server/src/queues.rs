//! The 12 queue operations at the edge: arguments out of the decoded request, the engine's
//! control plane (`rivulet_engine::queues`) or `rivulet-queue`'s delivery, and the answer.
//! The long poll of the two Receive operations lives here, since it waits on the clock.

use std::time::Duration;

use rivulet_engine::{ApiError, CreateQueue, DeadLetter, Engine, QueueAttributesInput, QueueView};
use rivulet_protocol::Value;
use rivulet_queue::{BatchResult, Change, Path, Queues, Received, Take};

use crate::api::{field, int, list, obj, s, string_map, text, timestamp_ms, ts};

/// ReceiveQueueRecords' `Limit` when absent.
const RECEIVE_LIMIT_DEFAULT: i64 = 10;
/// ReceiveQueueRecords' `WaitTimeSeconds` when absent.
const WAIT_SECONDS_DEFAULT: i64 = 9;

fn attributes(input: &Value) -> QueueAttributesInput<'_> {
    let Some(attributes) = field(input, "QueueAttributes") else {
        return QueueAttributesInput::default();
    };
    QueueAttributesInput {
        visibility_timeout_s: int(attributes, "VisibilityTimeoutSeconds")
            .map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
        dead_letter: field(attributes, "DeadLetterConfiguration").map(|d| {
            (
                text(d, "TargetType").unwrap_or_default(),
                int(d, "MaxReceiveCount").map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
            )
        }),
    }
}

/// A `QueueDescription`.
fn description(view: QueueView) -> Value {
    let mut start = vec![(
        "Type".to_string(),
        Value::Str(view.start.kind.as_str().into()),
    )];
    if let Some(at) = view.start_shown_ms {
        start.push(("Timestamp".into(), Value::Timestamp(at as f64 / 1000.0)));
    }
    let dead_letter = match view.attributes.dead_letter {
        DeadLetter::BuiltIn { max_receive_count } => obj([
            ("TargetType", s("BUILT_IN")),
            (
                "MaxReceiveCount",
                Some(Value::Int(i64::from(max_receive_count))),
            ),
        ]),
        DeadLetter::None => obj([("TargetType", s("NONE"))]),
    };
    obj([
        ("QueueName", s(view.name)),
        ("QueueARN", s(view.arn)),
        ("QueueStatus", s(view.status.as_str())),
        ("QueueCreationTimestamp", ts(view.created_ms)),
        (
            "StreamConfigurationList",
            Some(Value::List(vec![obj([
                ("StreamARN", s(view.stream_arn)),
                ("StartingPosition", Some(Value::Map(start))),
            ])])),
        ),
        (
            "QueueAttributes",
            Some(obj([
                (
                    "VisibilityTimeoutSeconds",
                    Some(Value::Int(i64::from(view.attributes.visibility_timeout_s))),
                ),
                ("DeadLetterConfiguration", Some(dead_letter)),
            ])),
        ),
    ])
}

/// A `QueueSummary`.
fn summary(view: QueueView) -> Value {
    obj([
        ("QueueName", s(view.name)),
        ("QueueARN", s(view.arn)),
        ("QueueStatus", s(view.status.as_str())),
        ("QueueCreationTimestamp", ts(view.created_ms)),
        (
            "Streams",
            Some(Value::List(vec![obj([
                ("StreamARN", s(view.stream_arn)),
                ("StreamCreationTimestamp", ts(view.stream_created_ms)),
            ])])),
        ),
    ])
}

/// The control-plane queue operations, or `None` for any other operation.
pub(crate) fn answer(
    engine: &Engine,
    operation: &str,
    input: &Value,
    now_ms: i64,
) -> Option<Result<Value, ApiError>> {
    let arn = || text(input, "QueueARN").unwrap_or_default();
    Some(match operation {
        "CreateQueue" => {
            let streams = list(input, "StreamConfigurationList")
                .iter()
                .map(|entry| {
                    let start = field(entry, "StartingPosition");
                    (
                        text(entry, "StreamARN").unwrap_or_default(),
                        start.and_then(|s| text(s, "Type")),
                        start.and_then(|s| timestamp_ms(s, "Timestamp")),
                    )
                })
                .collect();
            let request = CreateQueue {
                name: text(input, "QueueName").unwrap_or_default(),
                streams,
                attributes: attributes(input),
                tags: string_map(input, "Tags"),
            };
            engine
                .create_queue(&request, now_ms)
                .map(|view| obj([("QueueDescription", Some(description(view)))]))
        }
        "DescribeQueue" => engine
            .describe_queue(arn(), now_ms)
            .map(|view| obj([("QueueDescription", Some(description(view)))])),
        "UpdateQueue" => engine
            .update_queue(arn(), &attributes(input), now_ms)
            .map(|view| obj([("QueueDescription", Some(description(view)))])),
        "DeleteQueue" => engine
            .delete_queue(arn(), now_ms)
            .map(|()| Value::Map(vec![])),
        "ListQueues" => {
            let (filters, max) = crate::api::list_filters(input);
            engine
                .list_queues(max, text(input, "NextToken"), &filters, now_ms)
                .map(|page| {
                    obj([
                        (
                            "QueueSummaries",
                            Some(Value::List(page.queues.into_iter().map(summary).collect())),
                        ),
                        ("NextToken", page.next_token.map(Value::Str)),
                    ])
                })
        }
        _ => return None,
    })
}

/// Whether `operation` is one of the queue data operations [`data`] answers.
pub(crate) fn is_data_operation(operation: &str) -> bool {
    matches!(
        operation,
        "ReceiveQueueRecords"
            | "ReceiveDeadLetterQueueRecords"
            | "AcknowledgeQueueRecords"
            | "AcknowledgeDeadLetterQueueRecords"
            | "UpdateQueueRecordsVisibility"
            | "UpdateDeadLetterQueueRecordsVisibility"
            | "RestoreDeadLetterQueueRecords"
    )
}

fn record_value(record: Received) -> Value {
    obj([
        ("ReceiptHandle", s(record.receipt_handle)),
        ("RecordId", s(record.record_id)),
        (
            "PartitionKey",
            s(String::from_utf8_lossy(&record.partition_key).into_owned()),
        ),
        ("Data", Some(Value::Blob(record.data.to_vec()))),
        ("ApproximateArrivalTimestamp", ts(record.arrival_ms)),
        ("FirstReceiveTimestamp", ts(record.first_receive_ms)),
        (
            "ReceiveCount",
            Some(Value::Int(i64::from(record.receive_count))),
        ),
    ])
}

fn batch_value(result: BatchResult) -> Value {
    obj([
        (
            "Successful",
            Some(Value::List(
                result
                    .successful
                    .into_iter()
                    .map(|h| obj([("ReceiptHandle", s(h))]))
                    .collect(),
            )),
        ),
        (
            "Failed",
            Some(Value::List(
                result
                    .failed
                    .into_iter()
                    .map(|e| {
                        obj([
                            ("ReceiptHandle", s(e.receipt_handle)),
                            ("ErrorCode", s(e.code)),
                            ("ErrorMessage", s(e.message)),
                        ])
                    })
                    .collect(),
            )),
        ),
    ])
}

/// The queue data operations. `now` reads the clock (the long poll reads it again after
/// each wake-up).
pub(crate) async fn data(
    engine: &Engine,
    operation: &str,
    input: &Value,
    now: fn() -> i64,
) -> Result<Value, ApiError> {
    let arn = text(input, "QueueARN").unwrap_or_default();
    let queues = Queues::of(engine);
    let path = if operation.contains("DeadLetter") {
        Path::DeadLetter
    } else {
        Path::Normal
    };
    match operation {
        "ReceiveQueueRecords" | "ReceiveDeadLetterQueueRecords" => {
            let limit = int(input, "Limit")
                .unwrap_or(RECEIVE_LIMIT_DEFAULT)
                .clamp(1, 10) as usize;
            let wait_s = int(input, "WaitTimeSeconds")
                .unwrap_or(WAIT_SECONDS_DEFAULT)
                .clamp(0, 20);
            let visibility =
                int(input, "VisibilityTimeoutSeconds").map(|v| v.clamp(0, 43_200) as u32);
            let deadline = now() + wait_s * 1000;
            let mut stopping = queues.stopping();
            loop {
                let now_ms = now();
                match queues
                    .receive(engine, arn, path, limit, visibility, now_ms)
                    .await?
                {
                    Take::Records(records) => {
                        return Ok(obj([(
                            "QueueRecords",
                            Some(Value::List(records.into_iter().map(record_value).collect())),
                        )]));
                    }
                    Take::Wait(wake) => {
                        // A node that stopped leading mid-poll answers what it has (nothing):
                        // the client's next receive reaches the new leader.
                        if now_ms >= deadline || !engine.is_writer() || *stopping.borrow() {
                            return Ok(obj([("QueueRecords", Some(Value::List(Vec::new())))]));
                        }
                        // Also look again each second: a split's new shards are not watched.
                        let until = wake
                            .at_ms
                            .map_or(deadline, |at| at.min(deadline))
                            .min(now_ms + 1000);
                        let sleep = Duration::from_millis((until - now_ms).max(1) as u64);
                        let mut changes = wake.changes;
                        let mut ends = wake.ends;
                        if ends.is_empty() {
                            tokio::select! {
                                _ = changes.changed() => {}
                                _ = stopping.changed() => {}
                                () = tokio::time::sleep(sleep) => {}
                            }
                        } else {
                            let moved = futures_util::future::select_all(
                                ends.iter_mut().map(|end| Box::pin(end.changed())),
                            );
                            tokio::select! {
                                _ = changes.changed() => {}
                                _ = stopping.changed() => {}
                                _ = moved => {}
                                () = tokio::time::sleep(sleep) => {}
                            }
                        }
                    }
                }
            }
        }
        _ => {
            let entries: Vec<(&str, Change)> = list(input, "Entries")
                .iter()
                .map(|entry| {
                    let handle = text(entry, "ReceiptHandle").unwrap_or_default();
                    let change = match operation {
                        "AcknowledgeQueueRecords" | "AcknowledgeDeadLetterQueueRecords" => {
                            Change::Acknowledge
                        }
                        "RestoreDeadLetterQueueRecords" => Change::Restore,
                        _ => Change::Visibility(
                            int(entry, "VisibilityTimeoutSeconds")
                                .unwrap_or(0)
                                .clamp(0, 43_200) as u32,
                        ),
                    };
                    (handle, change)
                })
                .collect();
            let result = queues.change(engine, arn, path, &entries, now()).await?;
            Ok(batch_value(result))
        }
    }
}
