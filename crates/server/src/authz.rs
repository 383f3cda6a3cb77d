//! `--auth sigv4` authorization: after the signature names the caller, decide with IAM's rules
//! ([`rivulet_iam::authorize`]) whether it may perform the operation on the resource, and pick
//! the engine (account) that owns the resource — a caller reaches another account's stream by
//! its ARN when that stream's resource policy allows it.
//!
//! The action is `kinesis:<Operation>`; the resource is the stream or consumer ARN the request
//! names (or `*` for operations on no resource, as the Service Authorization Reference lists
//! them). Condition keys: `aws:SourceIp`, `aws:CurrentTime`, `aws:EpochTime`,
//! `aws:SecureTransport`, `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:PrincipalType`,
//! `aws:username`, `aws:RequestedRegion`, `aws:ResourceTag/…`, `aws:RequestTag/…` and
//! `aws:TagKeys`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use rivulet_engine::Engine;
use rivulet_iam::{Context, Kind, Policy, Request};
use rivulet_protocol::{AwsError, Value};

use crate::api::{field, string_map, tag_keys, text};
use crate::sigv4::{Credential, Credentials};

/// Operations whose IAM action has no resource type.
const NO_RESOURCE: &[&str] = &[
    "ListStreams",
    "DescribeLimits",
    "DescribeAccountSettings",
    "UpdateAccountSettings",
    "EnableEnhancedMonitoring",
    "DisableEnhancedMonitoring",
    "UpdateShardCount",
    "UpdateStreamMode",
];

/// Operations addressed by `ResourceARN`.
const BY_RESOURCE_ARN: &[&str] = &[
    "PutResourcePolicy",
    "GetResourcePolicy",
    "DeleteResourcePolicy",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

/// Operations on a consumer.
const ON_CONSUMER: &[&str] = &[
    "DescribeStreamConsumer",
    "DeregisterStreamConsumer",
    "SubscribeToShard",
];

/// What a request is, as authorization sees it.
pub struct Call<'a> {
    /// A Kinesis operation (`PutRecord`: the action `kinesis:PutRecord`), or another service's
    /// action written out (`cloudwatch:DescribeAlarms`), which is on no resource.
    pub operation: &'a str,
    pub input: &'a Value,
    pub caller: &'a Credential,
    pub peer: Option<IpAddr>,
    pub secure: bool,
    pub now_ms: i64,
    /// Whether a denial is logged (the console's stream list filters quietly).
    pub log_denial: bool,
}

/// Parsed resource policies, by their text (policies are re-read only when they change).
#[derive(Default)]
pub struct PolicyCache {
    parsed: Mutex<HashMap<String, Arc<Policy>>>,
}

/// How many distinct policy texts the cache keeps before it starts over.
const CACHE_ENTRIES_MAX: usize = 4096;

impl PolicyCache {
    fn get(&self, text: &str) -> Option<Arc<Policy>> {
        let mut parsed = self.parsed.lock();
        if let Some(policy) = parsed.get(text) {
            return Some(policy.clone());
        }
        // Stored policies were validated when they were put; one that no longer parses grants
        // nothing.
        let policy = Arc::new(Policy::parse(text, Kind::Resource).ok()?);
        if parsed.len() >= CACHE_ENTRIES_MAX {
            parsed.clear();
        }
        parsed.insert(text.to_string(), policy.clone());
        Some(policy)
    }
}

/// The account an ARN names (`arn:aws:kinesis:REGION:ACCOUNT:…`).
fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4)
}

/// The resource the request acts on, and the engine that owns it.
fn resource(
    call: &Call<'_>,
    own: &Arc<Engine>,
    accounts: &HashMap<String, Arc<Engine>>,
) -> (String, Arc<Engine>) {
    let owner = |arn: &str| {
        arn_account(arn)
            .and_then(|account| accounts.get(account))
            .cloned()
            .unwrap_or_else(|| own.clone())
    };
    let input = call.input;
    let op = call.operation;
    // Another service's action (`cloudwatch:GetMetricData` for the metrics page) is on no
    // resource here.
    if NO_RESOURCE.contains(&op) || op.contains(':') {
        return ("*".into(), own.clone());
    }
    if BY_RESOURCE_ARN.contains(&op) {
        let arn = text(input, "ResourceARN").unwrap_or_default().to_string();
        let engine = owner(&arn);
        return (arn, engine);
    }
    if ON_CONSUMER.contains(&op) {
        if let Some(arn) = text(input, "ConsumerARN") {
            return (arn.to_string(), owner(arn));
        }
        let stream_arn = text(input, "StreamARN").unwrap_or_default();
        let engine = owner(stream_arn);
        let arn = text(input, "ConsumerName")
            .and_then(|name| engine.consumer_arn_by_name(stream_arn, name, call.now_ms))
            .unwrap_or_else(|| stream_arn.to_string());
        return (arn, engine);
    }
    if let Some(arn) = text(input, "QueueARN") {
        return (arn.to_string(), owner(arn));
    }
    if let Some(arn) = text(input, "ChannelARN") {
        return (arn.to_string(), owner(arn));
    }
    if matches!(op, "CreateQueue" | "CreateChannel")
        && let Some(arn) = crate::api::list(input, "StreamConfigurationList")
            .first()
            .and_then(|entry| text(entry, "StreamARN"))
    {
        return (arn.to_string(), owner(arn));
    }
    if let Some(arn) = text(input, "StreamARN") {
        return (arn.to_string(), owner(arn));
    }
    if let Some(name) = text(input, "StreamName") {
        return (own.stream_arn(name), own.clone());
    }
    if op == "GetRecords" {
        // The iterator names the stream; it was issued by the engine that owns it.
        let iterator = text(input, "ShardIterator").unwrap_or_default();
        let iterator = iterator.trim_matches('"');
        for engine in std::iter::once(own).chain(accounts.values()) {
            if let Some(arn) = engine.iterator_stream_arn(iterator) {
                return (arn, engine.clone());
            }
        }
    }
    ("*".into(), own.clone())
}

/// The request's condition keys.
struct Keys<'a> {
    call: &'a Call<'a>,
    region: &'a str,
    resource_tags: &'a [(String, String)],
}

impl Context for Keys<'_> {
    fn get(&self, key: &str) -> Option<Vec<String>> {
        let one = |v: String| Some(vec![v]);
        let lower = key.to_ascii_lowercase();
        let call = self.call;
        let principal = call.caller.principal_arn.as_str();
        match lower.as_str() {
            "aws:sourceip" => call.peer.map(|ip| vec![ip.to_canonical().to_string()]),
            "aws:currenttime" => one(rivulet_engine::time::iso_extended(call.now_ms)),
            "aws:epochtime" => one((call.now_ms / 1000).to_string()),
            "aws:securetransport" => one(call.secure.to_string()),
            "aws:principalarn" => one(principal.to_string()),
            "aws:principalaccount" => one(call.caller.account_id.clone()),
            "aws:principaltype" => one(principal_type(principal).to_string()),
            "aws:username" => principal
                .split_once(":user/")
                .map(|(_, path)| vec![path.rsplit('/').next().unwrap_or(path).to_string()]),
            "aws:requestedregion" => one(self.region.to_string()),
            "aws:tagkeys" => {
                let mut keys: Vec<String> = string_map(call.input, "Tags")
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                keys.extend(tag_keys(call.input));
                (!keys.is_empty()).then_some(keys)
            }
            _ => {
                if let Some(tag) = key.get("aws:ResourceTag/".len()..)
                    && lower.starts_with("aws:resourcetag/")
                {
                    return self
                        .resource_tags
                        .iter()
                        .find(|(k, _)| k == tag)
                        .map(|(_, v)| vec![v.clone()]);
                }
                if let Some(tag) = key.get("aws:RequestTag/".len()..)
                    && lower.starts_with("aws:requesttag/")
                {
                    return field(call.input, "Tags").and(
                        string_map(call.input, "Tags")
                            .into_iter()
                            .find(|(k, _)| k == tag)
                            .map(|(_, v)| vec![v]),
                    );
                }
                None
            }
        }
    }
}

fn principal_type(arn: &str) -> &'static str {
    if rivulet_iam::is_root(arn) {
        "Account"
    } else if arn.contains(":assumed-role/") {
        "AssumedRole"
    } else if arn.contains(":federated-user/") {
        "FederatedUser"
    } else {
        "User"
    }
}

/// Decides whether `call` may proceed; returns the engine to serve it with, or
/// AccessDeniedException (logged with principal, action and resource).
pub fn authorize(
    call: &Call<'_>,
    credentials: &Credentials,
    own: &Arc<Engine>,
    accounts: &HashMap<String, Arc<Engine>>,
    cache: &PolicyCache,
) -> Result<Arc<Engine>, AwsError> {
    let (resource_arn, engine) = resource(call, own, accounts);
    // The policy that governs a consumer is the consumer's own.
    let access = if resource_arn == "*" {
        Default::default()
    } else {
        engine
            .resource_access(&resource_arn, call.now_ms)
            .unwrap_or_default()
    };
    let resource_policy = access.policy.as_deref().and_then(|t| cache.get(t));
    let action = if call.operation.contains(':') {
        call.operation.to_string()
    } else {
        format!("kinesis:{}", call.operation)
    };
    let config = engine.config();
    let keys = Keys {
        call,
        region: &config.region,
        resource_tags: &access.tags,
    };
    let request = Request {
        principal_arn: &call.caller.principal_arn,
        principal_account: &call.caller.account_id,
        action: &action,
        resource: &resource_arn,
        resource_account: if resource_arn == "*" {
            &call.caller.account_id
        } else {
            arn_account(&resource_arn).unwrap_or(&config.account_id)
        },
        context: &keys,
    };
    let identity = credentials.policies_of(&call.caller.principal_arn);
    let mut decision = rivulet_iam::authorize(identity, resource_policy.as_deref(), &request);
    // Start/StopStreamEncryption act on two resources (the Service Authorization Reference
    // lists kmsKey beside stream): the caller's policies must allow the action on the key too.
    // A key that does not resolve is left to the operation's KMS errors.
    let key_arn = match call.operation {
        "StartStreamEncryption" | "StopStreamEncryption" if decision.is_ok() => {
            text(call.input, "KeyId").and_then(|key_id| engine.kms_key_arn(key_id))
        }
        _ => None,
    };
    let on_key = key_arn.as_deref().map(|key_arn| Request {
        resource: key_arn,
        resource_account: arn_account(key_arn).unwrap_or(&config.account_id),
        ..request
    });
    if let Some(on_key) = &on_key {
        decision = rivulet_iam::authorize(identity, None, on_key);
    }
    // CreateChannel passes its service execution role to Kinesis: the caller's policies must
    // allow iam:PassRole on that role, as AWS requires.
    let role = match call.operation {
        "CreateChannel" if decision.is_ok() => text(call.input, "ServiceExecutionRoleARN"),
        _ => None,
    };
    let on_role = role.map(|role_arn| Request {
        action: "iam:PassRole",
        resource: role_arn,
        resource_account: arn_account(role_arn).unwrap_or(&config.account_id),
        ..request
    });
    if let Some(on_role) = &on_role {
        decision = rivulet_iam::authorize(identity, None, on_role);
    }
    let request = on_key.as_ref().or(on_role.as_ref()).unwrap_or(&request);
    let action = request.action.to_string();
    let resource_arn = request.resource;
    match decision {
        Ok(()) => Ok(engine),
        Err(denial) => {
            if call.log_denial {
                tracing::warn!(
                principal = %call.caller.principal_arn,
                action = %action,
                resource = %resource_arn,
                    reason = ?denial,
                    "access denied"
                );
            }
            Err(AwsError {
                code: "AccessDeniedException".into(),
                message: Some(denial.message(request)),
                status: 400,
                capital_message: true,
            })
        }
    }
}

/// The largest resource policy Kinesis accepts.
pub const RESOURCE_POLICY_BYTES_MAX: usize = 20 * 1024;

/// Actions a stream's resource policy may grant (the Kinesis Developer Guide's list of actions
/// that can be shared, with DescribeStream, which its cross-account Lambda example uses).
const STREAM_SHAREABLE: &[&str] = &[
    "kinesis:DescribeStreamSummary",
    "kinesis:DescribeStream",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
    "kinesis:PutRecord",
    "kinesis:PutRecords",
];

/// Actions a consumer's resource policy may grant.
const CONSUMER_SHAREABLE: &[&str] = &["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"];

/// Actions a queue's resource policy may grant: its data operations and DescribeQueue.
const QUEUE_SHAREABLE: &[&str] = &[
    "kinesis:DescribeQueue",
    "kinesis:ReceiveQueueRecords",
    "kinesis:AcknowledgeQueueRecords",
    "kinesis:UpdateQueueRecordsVisibility",
    "kinesis:ReceiveDeadLetterQueueRecords",
    "kinesis:AcknowledgeDeadLetterQueueRecords",
    "kinesis:UpdateDeadLetterQueueRecordsVisibility",
    "kinesis:RestoreDeadLetterQueueRecords",
];

fn invalid_policy(message: impl Into<String>) -> AwsError {
    AwsError::new("InvalidArgumentException", message)
}

/// PutResourcePolicy's checks: a valid policy document within Kinesis's limits — at most
/// 20 KB, only shareable actions named one by one, only AWS principals named one by one.
pub fn check_resource_policy(resource_arn: &str, text: &str) -> Result<(), AwsError> {
    if text.len() > RESOURCE_POLICY_BYTES_MAX {
        return Err(invalid_policy(format!(
            "Policy size {} bytes exceeds the maximum allowed size of {RESOURCE_POLICY_BYTES_MAX} \
             bytes.",
            text.len()
        )));
    }
    let policy = Policy::parse(text, Kind::Resource)
        .map_err(|e| invalid_policy(format!("Invalid policy: {e}")))?;
    let shareable = if rivulet_engine::is_queue_arn(resource_arn) {
        QUEUE_SHAREABLE
    } else if resource_arn.contains("/consumer/") {
        CONSUMER_SHAREABLE
    } else {
        STREAM_SHAREABLE
    };
    for (action, negated) in policy.actions() {
        if negated {
            return Err(invalid_policy(
                "Invalid policy: NotAction is not supported in resource-based policies.",
            ));
        }
        if action.contains(['*', '?']) {
            return Err(invalid_policy(format!(
                "Invalid policy: wildcard actions are not supported: {action}."
            )));
        }
        if !shareable.iter().any(|a| a.eq_ignore_ascii_case(action)) {
            return Err(invalid_policy(format!(
                "Invalid policy: action {action} is not supported for this resource. Supported \
                 actions: {}.",
                shareable.join(", ")
            )));
        }
    }
    for (principal, negated) in policy.principals() {
        if negated {
            return Err(invalid_policy(
                "Invalid policy: NotPrincipal is not supported in resource-based policies.",
            ));
        }
        if principal == "*" {
            return Err(invalid_policy(
                "Invalid policy: wildcard principals are not supported.",
            ));
        }
        if !(principal.starts_with("arn:") || principal.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid_policy(format!(
                "Invalid policy: principal {principal} is not supported; only AWS accounts, \
                 users and roles can be principals."
            )));
        }
    }
    Ok(())
}
