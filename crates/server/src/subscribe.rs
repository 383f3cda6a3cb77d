//! SubscribeToShard over HTTP/1.1 (chunked) or HTTP/2: an event-stream response whose events
//! a task pushes as soon as the shard's durable end moves — no polling loop. The task sends
//! `initial-response` first, an event at least every [`HEARTBEAT`] without data, ends the
//! subscription after [`SUBSCRIPTION_LIFETIME`] (both AWS's; [`Timing`] lets tests shorten
//! them), at the end of a closed shard (with
//! `ChildShards`), when a newer subscription takes over (a `ResourceInUseException` frame), at
//! shutdown, or when the client goes away. At most [`EVENTS_BUFFERED`] events wait for a slow
//! client, and a subscription reads no faster than [`BYTES_PER_SECOND`].

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use rivulet_engine::{Engine, IteratorType, StartAt, Subscription, SubscriptionEvent};
use rivulet_protocol::eventstream;
use rivulet_protocol::{AwsError, Format, Value, Writer};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::api::{self, aws_error};

/// An event at least this often, records or not.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A subscription ends after this long; the client subscribes again.
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(300);
/// Read throughput per subscription (per consumer and shard), as AWS allows.
pub const BYTES_PER_SECOND: u64 = 2 << 20;
/// A subscription's clock: AWS's values by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat: Duration,
    pub lifetime: Duration,
    pub bytes_per_second: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: HEARTBEAT,
            lifetime: SUBSCRIPTION_LIFETIME,
            bytes_per_second: BYTES_PER_SECOND,
        }
    }
}

/// Record bytes per event at most.
const EVENT_BYTES_MAX: usize = 1 << 20;
/// Events encoded ahead of a slow client.
const EVENTS_BUFFERED: usize = 2;

/// The body of a SubscribeToShard response: event-stream messages from the push task.
pub struct EventBody {
    events: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.events
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn field<'v>(input: &'v Value, name: &str) -> Option<&'v Value> {
    input.get(name).filter(|v| !v.is_null())
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// Starts a subscription, or answers why not (an ordinary error response).
pub async fn start(
    engine: Arc<Engine>,
    input: &Value,
    format: Format,
    now_ms: i64,
    stopping: watch::Receiver<bool>,
    timing: Timing,
) -> Result<EventBody, AwsError> {
    let position = field(input, "StartingPosition");
    let kind = text(position.and_then(|p| field(p, "Type")))
        .and_then(IteratorType::parse)
        .unwrap_or(IteratorType::Latest);
    let start = StartAt {
        kind,
        sequence_number: text(position.and_then(|p| field(p, "SequenceNumber"))),
        timestamp_ms: position
            .and_then(|p| field(p, "Timestamp"))
            .and_then(Value::as_timestamp_ms),
    };
    let subscription = engine
        .subscribe(
            text(field(input, "ConsumerARN")).unwrap_or_default(),
            text(field(input, "ShardId")).unwrap_or_default(),
            &start,
            now_ms,
        )
        .await
        .map_err(aws_error)?;
    let (events, receiver) = mpsc::channel(EVENTS_BUFFERED);
    tokio::spawn(push(engine, subscription, events, format, stopping, timing));
    Ok(EventBody { events: receiver })
}

fn event_payload(format: Format, event: &SubscriptionEvent) -> Vec<u8> {
    let mut w = Writer::new(
        format,
        256 + event.bytes * 4 / 3 + event.records.len() * 160,
    );
    w.begin_map(3 + usize::from(event.child_shards.is_some()));
    w.key("Records");
    api::write_records(&mut w, &event.records);
    w.key("ContinuationSequenceNumber")
        .str(event.continuation_sequence_number.as_str());
    w.key("MillisBehindLatest").int(event.millis_behind_latest);
    if let Some(children) = &event.child_shards {
        w.key("ChildShards");
        api::write_child_shards(&mut w, children);
    }
    w.end_map();
    w.finish()
}

fn exception_frame(format: Format, code: &str, message: &str) -> Bytes {
    let mut w = Writer::new(format, 64 + message.len());
    w.begin_map(1).key("message").str(message).end_map();
    Bytes::from(eventstream::exception(
        code,
        format.content_type(),
        &w.finish(),
    ))
}

/// The subscription's task: pushes events until one of the ends in the module doc.
async fn push(
    engine: Arc<Engine>,
    mut sub: Subscription,
    events: mpsc::Sender<Bytes>,
    format: Format,
    mut stopping: watch::Receiver<bool>,
    timing: Timing,
) {
    let content_type = format.content_type();
    let empty = rivulet_protocol::encode_response(format, &Value::Map(Vec::new()));
    let initial = eventstream::event("initial-response", content_type, &empty);
    if events.send(Bytes::from(initial)).await.is_err() {
        engine.end_subscription(&sub);
        return;
    }
    let started = Instant::now();
    let deadline = started + timing.lifetime;
    let mut last_event = started;
    let mut bytes_sent = 0u64;
    let mut data_open = true;
    loop {
        if *sub.superseded.borrow() {
            let frame = exception_frame(
                format,
                "ResourceInUseException",
                "Another subscription for this consumer and shard has taken over.",
            );
            let _ = events.send(frame).await;
            break;
        }
        // Mark the current durable end seen before reading, so a change after the read wakes us.
        sub.data.borrow_and_update();
        // Small enough reads that the rate below is smooth, not one burst then a long pause.
        let read_bytes = EVENT_BYTES_MAX.min((timing.bytes_per_second / 5).max(1) as usize);
        let event = match engine
            .next_event(&mut sub, read_bytes, crate::http::now_ms())
            .await
        {
            Ok(event) => event,
            Err(error) => {
                let _ = events
                    .send(exception_frame(format, error.kind.code(), &error.message))
                    .await;
                break;
            }
        };
        let has_records = !event.records.is_empty();
        let at_end = event.child_shards.is_some();
        if has_records || at_end || last_event.elapsed() >= timing.heartbeat {
            bytes_sent += event.bytes as u64;
            let frame = eventstream::event(
                "SubscribeToShardEvent",
                content_type,
                &event_payload(format, &event),
            );
            if events.send(Bytes::from(frame)).await.is_err() {
                break; // The client went away.
            }
            last_event = Instant::now();
        }
        if at_end || Instant::now() >= deadline {
            break;
        }
        // Stay within the read rate: the bytes sent so far may not outrun the clock.
        let allowed_at = started
            + Duration::from_secs_f64(bytes_sent as f64 / timing.bytes_per_second.max(1) as f64);
        if allowed_at > Instant::now() {
            tokio::time::sleep_until(allowed_at.min(deadline)).await;
        }
        if has_records {
            continue; // There may be more right away.
        }
        if *sub.data.borrow() > sub.position() {
            // The shard holds records past the position that this read did not return. A put
            // acknowledged while the read was under way: read again at once. Else a replica
            // that lags past the store's own waiting (cluster mode): read again shortly.
            if !sub.data.has_changed().unwrap_or(false) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        }
        let wake = (last_event + timing.heartbeat).min(deadline);
        tokio::select! {
            changed = sub.data.changed(), if data_open => {
                // The log was removed: the next read reports why; until then, only timers.
                data_open = changed.is_ok();
            }
            _ = sub.superseded.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = stopping.changed() => break,
            _ = events.closed() => break,
        }
        if *stopping.borrow() {
            break;
        }
    }
    engine.end_subscription(&sub);
}
