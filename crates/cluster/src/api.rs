//! The JetStream API's error answers (`{"error":{"code":…,"err_code":…,"description":…}}`).

use serde::Deserialize;

/// An error the JetStream API answered with.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, thiserror::Error)]
#[error("JetStream error {err_code} (HTTP {code}): {description}")]
pub struct ApiError {
    /// The HTTP-style status (400, 404, 429, 503, …).
    pub code: u16,
    /// JetStream's own error code, which says what failed.
    #[serde(default)]
    pub err_code: u32,
    /// The server's text.
    #[serde(default)]
    pub description: String,
}

/// `Nats-Expected-Last-Subject-Sequence` or `Nats-Expected-Last-Sequence` did not match: the
/// description names the current sequence ("wrong last sequence: N").
pub const WRONG_LAST_SEQUENCE: u32 = 10071;
/// An expected-sequence check met a write to the same subject still in flight (clustered
/// streams), or such a header where a batch does not allow it: retry, it is not a mismatch.
pub const IN_FLIGHT_CONFLICT: u32 = 10164;
/// An atomic batch held a `Nats-Msg-Id` the duplicate window already knew: the batch (or one
/// with the same ids) was stored before.
pub const BATCH_DUPLICATE_MESSAGE_ID: u32 = 10201;
/// A message with the same `Nats-Msg-Id` is still being stored (clustered streams): an
/// earlier attempt may yet commit, so the write is retried, never reported stored.
pub const DUPLICATE_IN_PROCESS: u32 = 10158;
/// Too many atomic batches in flight on the stream or the server.
pub const BATCH_TOO_MANY_INFLIGHT: u32 = 10210;
/// The batch was incomplete: a gap in `Nats-Batch-Sequence` (messages lost in a reconnect, or
/// the first message refused for too many batches in flight, an answer nobody hears), or it
/// was abandoned, or the stream's leader changed meanwhile. Nothing of it was stored.
pub const BATCH_INCOMPLETE: u32 = 10176;

impl ApiError {
    /// The current last sequence a [`WRONG_LAST_SEQUENCE`] error names, if it names one.
    pub fn current_sequence(&self) -> Option<u64> {
        if self.err_code != WRONG_LAST_SEQUENCE {
            return None;
        }
        self.description.rsplit_once(": ")?.1.trim().parse().ok()
    }

    /// Whether the write may simply be sent again: contention, or the server's in-flight cap.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.err_code,
            IN_FLIGHT_CONFLICT | BATCH_TOO_MANY_INFLIGHT | DUPLICATE_IN_PROCESS | BATCH_INCOMPLETE
        ) || self.code == 503
    }
}

/// The envelope of any JetStream API answer that may be an error.
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    #[serde(default)]
    pub error: Option<ApiError>,
    #[serde(flatten)]
    pub ok: Option<T>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_and_classified() {
        let json =
            r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 42"}}"#;
        let envelope: Envelope<serde_json::Value> = serde_json::from_str(json).unwrap();
        let error = envelope.error.unwrap();
        assert_eq!(error.current_sequence(), Some(42));
        assert!(!error.is_retryable());
        let contention = ApiError {
            code: 400,
            err_code: IN_FLIGHT_CONFLICT,
            description: "wrong last sequence".into(),
        };
        assert_eq!(contention.current_sequence(), None);
        assert!(contention.is_retryable());
    }
}
