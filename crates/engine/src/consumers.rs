//! Enhanced fan-out consumers: RegisterStreamConsumer, DescribeStreamConsumer,
//! ListStreamConsumers, DeregisterStreamConsumer, and their CREATING → ACTIVE and DELETING →
//! gone lifecycle (the stream's create and delete delays). Consumers live in their stream's
//! metadata document, so they are persisted and deleted with it.

use crate::meta::{ConsumerMeta, ConsumerStatus, StreamMeta, StreamStatus};
use crate::token::{Kind, Reader, Writer};
use crate::{ApiError, Engine, ErrorKind, Result, Stream, StreamTarget};

/// Registered consumers per stream.
pub const CONSUMERS_PER_STREAM_MAX: usize = 20;
/// Consumers that may be CREATING at once, per stream.
pub const CONSUMERS_CREATING_MAX: usize = 5;
/// ListStreamConsumers page size when MaxResults is absent, and its ceiling.
const LIST_CONSUMERS_DEFAULT: usize = 100;

/// What DescribeStreamConsumer and RegisterStreamConsumer report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerView {
    pub name: String,
    pub arn: String,
    pub status: ConsumerStatus,
    pub created_ms: i64,
    pub stream_arn: String,
}

/// The ways a consumer is named: its ARN, or its stream's ARN and its name.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumerTarget<'a> {
    pub stream_arn: Option<&'a str>,
    pub consumer_name: Option<&'a str>,
    pub consumer_arn: Option<&'a str>,
}

/// A ListStreamConsumers page.
#[derive(Debug, Clone)]
pub struct ConsumerList {
    pub consumers: Vec<ConsumerView>,
    pub next_token: Option<String>,
}

/// The parts of `arn:aws:kinesis:REGION:ACCOUNT:stream/STREAM/consumer/NAME:SECONDS`.
pub(crate) struct ConsumerArn<'a> {
    pub stream_arn: &'a str,
    pub name: &'a str,
    pub created_s: i64,
}

pub(crate) fn parse_consumer_arn(arn: &str) -> Option<ConsumerArn<'_>> {
    let (stream_arn, rest) = arn.split_once("/consumer/")?;
    crate::parse_stream_arn(stream_arn)?;
    let (name, seconds) = rest.rsplit_once(':')?;
    if name.is_empty() || seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ConsumerArn {
        stream_arn,
        name,
        created_s: seconds.parse().ok()?,
    })
}

impl Engine {
    pub(crate) fn consumer_arn(&self, stream: &str, consumer: &ConsumerMeta) -> String {
        format!(
            "{}/consumer/{}:{}",
            self.stream_arn(stream),
            consumer.name,
            consumer.created_ms.div_euclid(1000)
        )
    }

    fn consumer_view(&self, meta: &StreamMeta, consumer: &ConsumerMeta) -> ConsumerView {
        ConsumerView {
            name: consumer.name.clone(),
            arn: self.consumer_arn(&meta.name, consumer),
            status: consumer.status,
            created_ms: consumer.created_ms,
            stream_arn: self.stream_arn(&meta.name),
        }
    }

    /// The stream a StreamARN argument names, with due lifecycle steps applied.
    pub(crate) fn stream_for_consumers(
        &self,
        stream_arn: &str,
        now_ms: i64,
    ) -> Result<std::sync::Arc<Stream>> {
        let target = StreamTarget {
            name: None,
            arn: Some(stream_arn),
        };
        let (name, stream) = self.stream_by_target(&target, now_ms)?;
        self.settle_consumers(&name, &stream, now_ms)?;
        Ok(stream)
    }

    /// Finishes consumer registrations and deregistrations whose delay has passed.
    pub(crate) fn settle_consumers(
        &self,
        _name: &str,
        stream: &std::sync::Arc<Stream>,
        now_ms: i64,
    ) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let due = |c: &ConsumerMeta| c.status_until_ms.is_some_and(|until| until <= now_ms);
        if !stream.state.read().meta.consumers.iter().any(due) {
            return Ok(());
        }
        let mut state = stream.state.write();
        let consumers = std::mem::take(&mut state.meta.consumers);
        state.meta.consumers = consumers
            .into_iter()
            .filter_map(|mut c| match (due(&c), c.status) {
                (true, ConsumerStatus::Deleting) => None,
                (true, _) => {
                    c.status = ConsumerStatus::Active;
                    c.status_until_ms = None;
                    Some(c)
                }
                (false, _) => Some(c),
            })
            .collect();
        self.persist(&state.meta)
    }

    /// RegisterStreamConsumer.
    pub fn register_consumer(
        &self,
        stream_arn: &str,
        consumer_name: &str,
        tags: &[(String, String)],
        now_ms: i64,
    ) -> Result<ConsumerView> {
        crate::control::check_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let stream = self.stream_for_consumers(stream_arn, now_ms)?;
        let mut state = stream.state.write();
        let account = &self.config.account_id;
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
        if state.meta.consumers.iter().any(|c| c.name == consumer_name) {
            return Err(ApiError::in_use(format!(
                "Consumer {consumer_name} under stream {stream_name} under account {account} \
                 already exists."
            )));
        }
        // Queues count against the same limit.
        if state.meta.consumers.len() + state.meta.queues.len() >= CONSUMERS_PER_STREAM_MAX {
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "Consumer limit of {CONSUMERS_PER_STREAM_MAX} reached for stream \
                     {stream_name} under account {account}."
                ),
            ));
        }
        let creating = state
            .meta
            .consumers
            .iter()
            .filter(|c| c.status == ConsumerStatus::Creating)
            .count();
        if creating >= CONSUMERS_CREATING_MAX {
            return Err(ApiError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "Stream {stream_name} under account {account} already has \
                     {CONSUMERS_CREATING_MAX} consumers in CREATING state. Wait for at least one \
                     of them to become ACTIVE before registering another."
                ),
            ));
        }
        // AWS reports the creation time in whole seconds, the ones the ARN ends with.
        let created_ms = now_ms - now_ms.rem_euclid(1000);
        let delay = self.config.create_stream_ms;
        let consumer = ConsumerMeta {
            name: consumer_name.to_string(),
            created_ms,
            status: if delay > 0 {
                ConsumerStatus::Creating
            } else {
                ConsumerStatus::Active
            },
            status_until_ms: (delay > 0).then_some(now_ms + delay),
            tags: tags.to_vec(),
            resource_policy: None,
        };
        state.meta.consumers.push(consumer.clone());
        self.persist(&state.meta)?;
        let mut view = self.consumer_view(&state.meta, &consumer);
        // AWS answers the registration itself with CREATING, however short the wait.
        view.status = ConsumerStatus::Creating;
        Ok(view)
    }

    /// Finds the consumer a target names; `Err` with AWS's message when the arguments do not
    /// name one.
    pub(crate) fn find_consumer(
        &self,
        target: &ConsumerTarget<'_>,
        now_ms: i64,
    ) -> Result<(std::sync::Arc<Stream>, String)> {
        let account = &self.config.account_id;
        match (target.consumer_arn, target.stream_arn, target.consumer_name) {
            (Some(arn), None, None) => {
                let parsed = parse_consumer_arn(arn)
                    .ok_or_else(|| ApiError::invalid(format!("Invalid ConsumerARN {arn}.")))?;
                let stream = self.stream_for_consumers(parsed.stream_arn, now_ms)?;
                let state = stream.state.read();
                let found = state.meta.consumers.iter().any(|c| {
                    c.name == parsed.name && c.created_ms.div_euclid(1000) == parsed.created_s
                });
                if !found {
                    return Err(ApiError::not_found(format!(
                        "Consumer {arn} under account {account} not found."
                    )));
                }
                drop(state);
                Ok((stream, parsed.name.to_string()))
            }
            (None, Some(stream_arn), Some(name)) => {
                let stream = self.stream_for_consumers(stream_arn, now_ms)?;
                let state = stream.state.read();
                if !state.meta.consumers.iter().any(|c| c.name == name) {
                    return Err(ApiError::not_found(format!(
                        "Consumer {name} under stream {} under account {account} not found.",
                        state.meta.name
                    )));
                }
                drop(state);
                Ok((stream, name.to_string()))
            }
            _ => Err(ApiError::invalid(
                "Either ConsumerARN or both ConsumerName and StreamARN must be provided.",
            )),
        }
    }

    /// DescribeStreamConsumer.
    pub fn describe_consumer(
        &self,
        target: &ConsumerTarget<'_>,
        now_ms: i64,
    ) -> Result<ConsumerView> {
        let (stream, name) = self.find_consumer(target, now_ms)?;
        let state = stream.state.read();
        state
            .meta
            .consumers
            .iter()
            .find(|c| c.name == name)
            .map(|c| self.consumer_view(&state.meta, c))
            .ok_or_else(|| ApiError::internal("consumer vanished"))
    }

    /// DeregisterStreamConsumer: the consumer goes DELETING, then away.
    pub fn deregister_consumer(&self, target: &ConsumerTarget<'_>, now_ms: i64) -> Result<()> {
        let (stream, name) = self.find_consumer(target, now_ms)?;
        let mut state = stream.state.write();
        let delay = self.config.delete_stream_ms;
        if delay > 0 {
            if let Some(c) = state.meta.consumers.iter_mut().find(|c| c.name == name)
                && c.status != ConsumerStatus::Deleting
            {
                c.status = ConsumerStatus::Deleting;
                c.status_until_ms = Some(now_ms + delay);
            }
        } else {
            state.meta.consumers.retain(|c| c.name != name);
        }
        self.persist(&state.meta)
    }

    /// ListStreamConsumers.
    pub fn list_consumers(
        &self,
        stream_arn: &str,
        max_results: Option<u32>,
        next_token: Option<&str>,
        stream_creation_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<ConsumerList> {
        let stream = self.stream_for_consumers(stream_arn, now_ms)?;
        let state = stream.state.read();
        if stream_creation_ms
            .is_some_and(|ms| ms.div_euclid(1000) != state.meta.created_ms.div_euclid(1000))
        {
            return Err(ApiError::not_found(format!(
                "Stream {} under account {} not found.",
                state.meta.name, self.config.account_id
            )));
        }
        let invalid_token = |token: &str| ApiError::invalid(format!("Invalid NextToken: {token}"));
        let mut skip = 0usize;
        if let Some(token) = next_token {
            let payload = self
                .tokens
                .open(Kind::ListStreamConsumers, token)
                .ok_or_else(|| invalid_token(token))?;
            let mut reader = Reader(&payload);
            let (key, position, issued) = match (reader.str(), reader.i64(), reader.i64()) {
                (Some(key), Some(position), Some(issued)) => (key, position, issued),
                _ => return Err(invalid_token(token)),
            };
            if key != state.meta.key {
                return Err(invalid_token(token));
            }
            crate::check_token_age(token, issued, now_ms)?;
            skip = usize::try_from(position).unwrap_or(usize::MAX);
        }
        let limit = max_results
            .map_or(LIST_CONSUMERS_DEFAULT, |m| m as usize)
            .min(LIST_CONSUMERS_DEFAULT);
        let consumers: Vec<ConsumerView> = state
            .meta
            .consumers
            .iter()
            .skip(skip)
            .take(limit)
            .map(|c| self.consumer_view(&state.meta, c))
            .collect();
        let end = skip.saturating_add(consumers.len());
        let next_token = (end < state.meta.consumers.len()).then(|| {
            self.tokens.seal(
                Kind::ListStreamConsumers,
                &Writer::default()
                    .str(&state.meta.key)
                    .i64(end as i64)
                    .i64(now_ms)
                    .0,
            )
        });
        Ok(ConsumerList {
            consumers,
            next_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_arns_parse() {
        let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1700000000";
        let parsed = parse_consumer_arn(arn).expect("parses");
        assert_eq!(
            (parsed.stream_arn, parsed.name, parsed.created_s),
            (
                "arn:aws:kinesis:us-east-1:000000000000:stream/s",
                "c",
                1_700_000_000
            )
        );
        for bad in [
            "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c",
            "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/:12",
            "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:x",
            "arn:aws:sqs:us-east-1:000000000000:stream/s/consumer/c:12",
        ] {
            assert!(parse_consumer_arn(bad).is_none(), "{bad}");
        }
    }
}
