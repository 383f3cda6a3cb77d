//! Batched direct gets (ADR-31; a stream with `allow_direct`): one request to
//! `$JS.API.DIRECT.GET.<stream>` answered by up to `batch` messages, each with its stream
//! sequence, subject and time in headers, then an empty message with status `204 EOB` whose
//! `Nats-Num-Pending` counts what matched after the last message sent. `404` means nothing
//! matched. Any replica may answer, so what a follower returns may lag the leader.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{NATS_SEQUENCE, NATS_SUBJECT, NATS_TIME_STAMP};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

/// A batched direct get: from `seq` (or the first message at or after `start_time`), the next
/// `batch` messages whose subject matches `next_by_subj`, within `max_bytes`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DirectGet {
    /// The first stream sequence to consider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Start at the first message stored at or after this time (RFC 3339) instead of `seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Only messages on this subject (wildcards allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_by_subj: Option<String>,
    /// At most this many messages.
    pub batch: usize,
    /// At most about this many bytes (the server stops after the message that passes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
}

/// A message as the stream stored it.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// When the stream stored it (RFC 3339, nanoseconds).
    pub time: String,
    /// Its headers, with the server's `Nats-*` ones.
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
}

/// What one batched direct get returned.
#[derive(Clone, Debug, Default)]
pub struct DirectBatch {
    /// The messages, in stream order.
    pub messages: Vec<StoredMessage>,
    /// Messages matching the request after the last one returned (0 when it reached the end).
    pub num_pending: u64,
}

/// Why a direct get failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Publishing the request or subscribing to its answer failed.
    #[error("direct get: {0}")]
    Nats(String),
    /// No answer in time (or no server answers direct gets for the stream).
    #[error("direct get: no answer within {0:?}")]
    TimedOut(Duration),
    /// The server refused the request (`408` bad request, `413` too many subjects, …).
    #[error("direct get refused: {status} {description}")]
    Refused {
        /// The status.
        status: u16,
        /// The server's text.
        description: String,
    },
    /// A message lacked the headers a direct get's answer has.
    #[error("direct get: malformed answer: {0}")]
    Malformed(&'static str),
}

/// Runs `request` on the JetStream stream `stream` (API prefix `api_prefix`, `$JS.API` unless
/// the account or domain says otherwise), waiting at most `timeout` for all of it.
pub async fn direct_get_batch(
    client: &async_nats::Client,
    api_prefix: &str,
    stream: &str,
    request: &DirectGet,
    timeout: Duration,
) -> Result<DirectBatch, DirectError> {
    if request.batch == 0 {
        // The server would answer one message and no end of batch.
        return Err(DirectError::Refused {
            status: 400,
            description: "a batched direct get needs a batch of at least 1".into(),
        });
    }
    // Subscribing and publishing too: while the client reconnects it takes no commands.
    let run = async {
        let body =
            serde_json::to_vec(request).map_err(|error| DirectError::Nats(error.to_string()))?;
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| DirectError::Nats(error.to_string()))?;
        client
            .publish_with_reply(
                format!("{api_prefix}.DIRECT.GET.{stream}"),
                inbox,
                Bytes::from(body),
            )
            .await
            .map_err(|error| DirectError::Nats(error.to_string()))?;
        let mut batch = DirectBatch::default();
        loop {
            let message = match tokio::time::timeout(timeout, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err(DirectError::Nats("the connection closed".into())),
                Err(_) => return Err(DirectError::TimedOut(timeout)),
            };
            if let Some(status) = message.status {
                return match status.as_u16() {
                    204 => {
                        batch.num_pending = header_u64(&message.headers, "Nats-Num-Pending")
                            .ok_or(DirectError::Malformed(
                                "the end of batch has no Nats-Num-Pending",
                            ))?;
                        Ok(batch)
                    }
                    // Nothing matched.
                    404 => Ok(batch),
                    503 => Err(DirectError::TimedOut(timeout)),
                    other => Err(DirectError::Refused {
                        status: other,
                        description: message.description.unwrap_or_default(),
                    }),
                };
            }
            let headers = message
                .headers
                .ok_or(DirectError::Malformed("a message without headers"))?;
            let text = |name| headers.get(name).map(|value| value.as_str().to_owned());
            let stored = StoredMessage {
                subject: text(NATS_SUBJECT).ok_or(DirectError::Malformed("no Nats-Subject"))?,
                sequence: text(NATS_SEQUENCE)
                    .and_then(|value| value.parse().ok())
                    .ok_or(DirectError::Malformed("no Nats-Sequence"))?,
                time: text(NATS_TIME_STAMP).ok_or(DirectError::Malformed("no Nats-Time-Stamp"))?,
                payload: message.payload,
                headers,
            };
            batch.messages.push(stored);
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(DirectError::TimedOut(timeout)))
}

fn header_u64(headers: &Option<HeaderMap>, name: &str) -> Option<u64> {
    headers.as_ref()?.get(name)?.as_str().parse().ok()
}
