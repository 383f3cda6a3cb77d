//! Streams, consumers and queues addressed by ARN: resource policies (Put/Get/DeleteResourcePolicy),
//! tags through TagResource / UntagResource / ListTagsForResource (streams and consumers), and
//! what authorization reads of a resource (its policy and tags). The policy text is kept as
//! given; its grammar is checked by the caller (the engine does not read JSON).

use crate::consumers::{ConsumerTarget, parse_consumer_arn};
use crate::control::{TAGS_PER_STREAM_MAX, check_tags, merge_tags, sort_tags};
use crate::meta::StreamMeta;
use crate::{ApiError, Engine, ErrorKind, Result, StreamTarget, parse_stream_arn};

/// What authorization reads of a stream or consumer.
#[derive(Debug, Clone, Default)]
pub struct ResourceAccess {
    /// The resource policy's text, if it has one.
    pub policy: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// How `with_resource` touches the resource.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    /// Tags change in any state.
    Change,
    /// Policies change only on an ACTIVE stream.
    ChangeWhenActive,
}

/// What a resource ARN names.
enum Resource<'a> {
    Stream,
    Consumer(&'a str),
    Queue,
    /// A channel: tags, no resource policy.
    Channel,
}

/// A stream named by a resource ARN.
fn stream_target(arn: &str) -> Result<StreamTarget<'_>> {
    parse_stream_arn(arn)
        .ok_or_else(|| ApiError::invalid(format!("Invalid ResourceARN {arn}.")))?;
    Ok(StreamTarget {
        name: None,
        arn: Some(arn),
    })
}

/// Resource policies name streams, consumers and queues; a channel ARN is not one of them.
fn refuse_channel(arn: &str) -> Result<()> {
    if crate::channels::is_channel_arn(arn) {
        return Err(ApiError::invalid(format!("Invalid ResourceARN {arn}.")));
    }
    Ok(())
}

impl Engine {
    /// Runs `f` on the policy and tags of the stream or consumer `arn` names, under the
    /// stream's lock; a change is persisted before the lock is released.
    fn with_resource<T>(
        &self,
        arn: &str,
        access: Access,
        now_ms: i64,
        f: impl FnOnce(&mut Option<String>, &mut Vec<(String, String)>) -> Result<T>,
    ) -> Result<T> {
        let (stream_arn, resource) = if crate::queues::parse_queue_arn(arn).is_some() {
            (arn, Resource::Queue)
        } else if crate::channels::is_channel_arn(arn) {
            (arn, Resource::Channel)
        } else if arn.contains("/consumer/") {
            let parsed = parse_consumer_arn(arn)
                .ok_or_else(|| ApiError::invalid(format!("Invalid ResourceARN {arn}.")))?;
            (parsed.stream_arn, Resource::Consumer(arn))
        } else {
            parse_stream_arn(arn)
                .ok_or_else(|| ApiError::invalid(format!("Invalid ResourceARN {arn}.")))?;
            (arn, Resource::Stream)
        };
        let (stream, consumer_name, queue_id) = match resource {
            Resource::Channel => {
                // Channels have no resource policy: what `f` sees is always none.
                let change = access != Access::Read;
                return self
                    .with_channel(arn, change, now_ms, |channel| {
                        f(&mut None, &mut channel.tags)
                    })
                    .map(|(out, _)| out);
            }
            Resource::Stream => {
                let target = StreamTarget {
                    name: None,
                    arn: Some(stream_arn),
                };
                (self.stream_by_target(&target, now_ms)?.1, None, None)
            }
            Resource::Queue => {
                let (stream, id) = self.find_queue(stream_arn, now_ms)?;
                (stream, None, Some(id))
            }
            Resource::Consumer(consumer_arn) => {
                let target = ConsumerTarget {
                    stream_arn: None,
                    consumer_name: None,
                    consumer_arn: Some(consumer_arn),
                };
                let (stream, name) = self.find_consumer(&target, now_ms)?;
                (stream, Some(name), None)
            }
        };
        let mut state = stream.state.write();
        if access == Access::ChangeWhenActive {
            self.require_active(&state)?;
        }
        let meta: &mut StreamMeta = &mut state.meta;
        let out = match (&consumer_name, &queue_id) {
            (_, Some(id)) => {
                let queue = meta
                    .queues
                    .iter_mut()
                    .find(|q| &q.id == id)
                    .ok_or_else(|| self.queue_not_found(arn))?;
                f(&mut queue.resource_policy, &mut queue.tags)?
            }
            (None, None) => f(&mut meta.resource_policy, &mut meta.tags)?,
            (Some(name), None) => {
                let consumer = meta
                    .consumers
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| ApiError::not_found(format!("Consumer {arn} not found.")))?;
                f(&mut consumer.resource_policy, &mut consumer.tags)?
            }
        };
        if access != Access::Read {
            self.persist(&state.meta)?;
        }
        Ok(out)
    }

    /// PutResourcePolicy: replaces the resource's policy.
    pub fn put_resource_policy(&self, arn: &str, policy: &str, now_ms: i64) -> Result<()> {
        refuse_channel(arn)?;
        self.with_resource(arn, Access::ChangeWhenActive, now_ms, |current, _| {
            *current = Some(policy.to_string());
            Ok(())
        })
    }

    /// GetResourcePolicy: the policy, or `{}` when there is none (as AWS answers).
    pub fn get_resource_policy(&self, arn: &str, now_ms: i64) -> Result<String> {
        refuse_channel(arn)?;
        self.with_resource(arn, Access::Read, now_ms, |current, _| {
            Ok(current.clone().unwrap_or_else(|| "{}".to_string()))
        })
    }

    /// DeleteResourcePolicy. Deleting a policy that is not there changes nothing.
    pub fn delete_resource_policy(&self, arn: &str, now_ms: i64) -> Result<()> {
        refuse_channel(arn)?;
        self.with_resource(arn, Access::ChangeWhenActive, now_ms, |current, _| {
            *current = None;
            Ok(())
        })
    }

    /// For authorization: the resource's policy and tags, or `None` when `arn` names nothing
    /// that exists (the operation itself then gives the error).
    pub fn resource_access(&self, arn: &str, now_ms: i64) -> Option<ResourceAccess> {
        self.with_resource(arn, Access::Read, now_ms, |policy, tags| {
            Ok(ResourceAccess {
                policy: policy.clone(),
                tags: tags.clone(),
            })
        })
        .ok()
    }

    /// TagResource on a stream (AddTagsToStream, with its checks and messages) or a consumer
    /// (the character check; past the limit, LimitExceededException).
    pub fn tag_resource(&self, arn: &str, tags: &[(String, String)], now_ms: i64) -> Result<()> {
        let kind = if crate::queues::parse_queue_arn(arn).is_some() {
            "queue"
        } else if crate::channels::is_channel_arn(arn) {
            "channel"
        } else if arn.contains("/consumer/") {
            "consumer"
        } else {
            return self.add_tags(&stream_target(arn)?, tags, now_ms);
        };
        check_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let account = self.config.account_id.clone();
        self.with_resource(arn, Access::Change, now_ms, |_, current| {
            merge_tags(current, tags, || {
                ApiError::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "Failed to add tags to {kind} {arn} under account {account} because a \
                         given {kind} cannot have more than {TAGS_PER_STREAM_MAX} tags.",
                    ),
                )
            })
        })
    }

    /// UntagResource on a stream (RemoveTagsFromStream) or a consumer.
    pub fn untag_resource(&self, arn: &str, keys: &[String], now_ms: i64) -> Result<()> {
        if crate::queues::parse_queue_arn(arn).is_none()
            && !crate::channels::is_channel_arn(arn)
            && !arn.contains("/consumer/")
        {
            return self.remove_tags(&stream_target(arn)?, keys, now_ms);
        }
        check_tags(keys.iter().map(|k| (k.as_str(), "")))?;
        self.with_resource(arn, Access::Change, now_ms, |_, current| {
            current.retain(|(k, _)| !keys.contains(k));
            Ok(())
        })
    }

    /// ListTagsForResource on a stream or consumer, in ListTagsForStream's order.
    pub fn resource_tags(&self, arn: &str, now_ms: i64) -> Result<Vec<(String, String)>> {
        let mut tags = self.with_resource(arn, Access::Read, now_ms, |_, tags| Ok(tags.clone()))?;
        sort_tags(&mut tags);
        Ok(tags)
    }

    /// The ARN of the stream a shard iterator reads, if this engine issued it.
    pub fn iterator_stream_arn(&self, iterator: &str) -> Option<String> {
        self.open_iterator(iterator)
            .ok()
            .map(|position| self.stream_arn(&position.stream))
    }

    /// The ARN of the consumer `name` of the stream `stream_arn`, if it exists.
    pub fn consumer_arn_by_name(
        &self,
        stream_arn: &str,
        name: &str,
        now_ms: i64,
    ) -> Option<String> {
        let target = ConsumerTarget {
            stream_arn: Some(stream_arn),
            consumer_name: Some(name),
            consumer_arn: None,
        };
        let (stream, name) = self.find_consumer(&target, now_ms).ok()?;
        let state = stream.state.read();
        let consumer = state.meta.consumers.iter().find(|c| c.name == name)?;
        Some(self.consumer_arn(&state.meta.name, consumer))
    }
}
