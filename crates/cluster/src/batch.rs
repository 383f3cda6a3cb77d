//! JetStream atomic batch publishes (ADR-50; nats-server 2.12 or later, on a stream with
//! `allow_atomic`).
//!
//! A batch is a run of messages sharing `Nats-Batch-Id`, numbered 1.. by
//! `Nats-Batch-Sequence`, the last one carrying `Nats-Batch-Commit: 1`. The stream's leader
//! stages them and, at the commit, runs every check (expected sequences, duplicate ids) and
//! stores all of them with consecutive stream sequences, or none: on a replicated stream the
//! followers apply a batch only with its commit, so no reader sees part of one. Messages before
//! the commit are plain publishes on the same connection (NATS keeps a connection's order),
//! and the commit is a request whose answer is the batch's acknowledgement or its error.
//! The server takes up to 1,000 messages per batch and abandons a batch idle for 10 s.

use async_nats::HeaderMap;
use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use bytes::Bytes;
use serde::Deserialize;

use crate::api::{ApiError, Envelope};

/// The most messages the server takes in one batch (its default `max_msgs`).
pub const BATCH_MESSAGES_MAX: usize = 1000;

/// One message of a batch.
#[derive(Clone, Debug)]
pub struct BatchMessage {
    /// The subject it is published to (one of the stream's).
    pub subject: String,
    /// Its own headers; the batch headers are added to them.
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
}

/// A committed batch: its messages took the stream sequences
/// `last_sequence + 1 - count ..= last_sequence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchAck {
    /// The JetStream stream that stored it.
    pub stream: String,
    /// The stream sequence of its last message.
    pub last_sequence: u64,
    /// How many messages it stored.
    pub count: u64,
}

impl BatchAck {
    /// The stream sequence of its first message.
    pub fn first_sequence(&self) -> u64 {
        self.last_sequence + 1 - self.count
    }
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The server refused it: nothing of it is stored. See [`crate::api`] for the codes the
    /// backend acts on.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No answer (a timeout, a lost connection, no stream on the subject): the batch may or
    /// may not have been committed; its message ids tell on a retry.
    #[error("the batch's commit got no answer: {0}")]
    Unanswered(String),
    /// The batch was empty or larger than the server takes.
    #[error("a batch holds 1 to {BATCH_MESSAGES_MAX} messages, not {0}")]
    Size(usize),
    /// A message is larger than the server takes (its `max_payload`): refused before it was
    /// sent, so nothing of the batch is stored.
    #[error("a message is too large for the server: {0}")]
    TooLarge(String),
    /// The answer was not a batch acknowledgement.
    #[error("the batch's commit got an answer that is not an acknowledgement: {0}")]
    Answer(String),
}

#[derive(Deserialize)]
struct Ack {
    stream: String,
    seq: u64,
    #[serde(default)]
    count: Option<u64>,
}

/// Publishes `messages` as one atomic batch named `batch_id` (at most 64 characters, unique
/// among the batches in flight) and waits for the commit's answer (as long as the client's
/// request timeout).
pub async fn publish_atomic(
    client: &async_nats::Client,
    batch_id: &str,
    messages: Vec<BatchMessage>,
) -> Result<BatchAck, BatchError> {
    publish_atomic_within(client, batch_id, messages, None).await
}

/// [`publish_atomic`], waiting at most `timeout` for the commit's answer.
pub async fn publish_atomic_within(
    client: &async_nats::Client,
    batch_id: &str,
    messages: Vec<BatchMessage>,
    timeout: Option<std::time::Duration>,
) -> Result<BatchAck, BatchError> {
    let count = messages.len();
    if count == 0 || count > BATCH_MESSAGES_MAX {
        return Err(BatchError::Size(count));
    }
    // The whole batch, not only the wait for its answer: while the client reconnects it
    // stops taking commands, and a publish would wait for as long as that takes.
    let within = timeout.unwrap_or(DEFAULT_TIMEOUT);
    let send = async move {
        let mut commit = None;
        for (i, message) in messages.into_iter().enumerate() {
            let BatchMessage {
                subject,
                mut headers,
                payload,
            } = message;
            headers.insert(NATS_BATCH_ID, batch_id);
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            if i + 1 == count {
                headers.insert(NATS_BATCH_COMMIT, "1");
                commit = Some((subject, headers, payload));
            } else {
                client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|error| {
                        let too_large = matches!(
                            error.kind(),
                            async_nats::client::PublishErrorKind::MaxPayloadExceeded
                        );
                        send_error(&error, too_large)
                    })?;
            }
        }
        let (subject, headers, payload) = commit.ok_or(BatchError::Size(0))?;
        let mut request = async_nats::Request::new().headers(headers).payload(payload);
        if timeout.is_some() {
            request = request.timeout(timeout);
        }
        let answer = client
            .send_request(subject, request)
            .await
            .map_err(|error| {
                let too_large = matches!(
                    error.kind(),
                    async_nats::client::RequestErrorKind::MaxPayloadExceeded
                );
                send_error(&error, too_large)
            })?;
        let envelope: Envelope<Ack> = serde_json::from_slice(&answer.payload).map_err(|_| {
            BatchError::Answer(String::from_utf8_lossy(&answer.payload).into_owned())
        })?;
        if let Some(error) = envelope.error {
            return Err(error.into());
        }
        let ack = envelope.ok.ok_or_else(|| {
            BatchError::Answer(String::from_utf8_lossy(&answer.payload).into_owned())
        })?;
        // A batch of one is acknowledged like a plain publish, without `count`.
        let stored = ack.count.unwrap_or(1);
        if stored != count as u64 || ack.seq < stored {
            return Err(BatchError::Answer(format!(
                "{count} messages sent, {stored} stored ending at {}",
                ack.seq
            )));
        }
        Ok(BatchAck {
            stream: ack.stream,
            last_sequence: ack.seq,
            count: stored,
        })
    };
    tokio::time::timeout(within, send)
        .await
        .unwrap_or_else(|_| {
            Err(BatchError::Unanswered(format!(
                "no answer within {within:?}"
            )))
        })
}

/// What `publish_atomic_within` waits for at most when not told.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A failed send: refused before anything was sent when the message was too large (definite),
/// else without an answer (the batch may or may not be stored).
fn send_error(error: &dyn std::fmt::Display, too_large: bool) -> BatchError {
    if too_large {
        BatchError::TooLarge(error.to_string())
    } else {
        BatchError::Unanswered(error.to_string())
    }
}
