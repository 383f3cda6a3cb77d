//! IAM-style policies: the JSON policy language (Effect, Principal/NotPrincipal,
//! Action/NotAction, Resource/NotResource, Condition) parsed and validated, and evaluated the
//! way IAM evaluates identity and resource policies together:
//!
//! 1. an explicit `Deny` in any applicable policy wins;
//! 2. within one account, an `Allow` in an identity policy *or* in the resource policy allows;
//! 3. across accounts, both the caller's identity policies *and* the resource's policy must
//!    allow;
//! 4. otherwise the request is denied (no allow means deny).
//!
//! An account's root user (`arn:aws:iam::ACCOUNT:root`) is not subject to identity policies.
//! No I/O, no clock: what a condition may test is given by the caller through [`Context`].

use serde_json::{Map, Value};

mod condition;
mod glob;

use condition::Condition;
pub use condition::Context;
use glob::glob;

/// Which kind of document a policy is: identity policies name no principal, resource policies
/// must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Identity,
    Resource,
}

/// A parsed, validated policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or its complement (`NotAction`, `NotResource`, `NotPrincipal`).
#[derive(Debug, Clone)]
struct Patterns {
    values: Vec<String>,
    negated: bool,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    principals: Option<Patterns>,
    actions: Patterns,
    resources: Option<Patterns>,
    conditions: Vec<Condition>,
}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

fn invalid(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

/// A string or a non-empty array of strings, as the policy grammar allows for most elements.
fn strings(value: &Value, element: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(invalid(format!(
                    "{element} must be a string or array of strings"
                ))),
            })
            .collect(),
        _ => Err(invalid(format!(
            "{element} must be a string or a non-empty array of strings"
        ))),
    }
}

/// One of two mutually exclusive elements (`Action` / `NotAction`, …).
fn patterns(
    statement: &Map<String, Value>,
    positive: &str,
    negative: &str,
) -> Result<Option<Patterns>, PolicyError> {
    match (statement.get(positive), statement.get(negative)) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "Statement cannot contain both {positive} and {negative}"
        ))),
        (Some(v), None) => Ok(Some(Patterns {
            values: strings(v, positive)?,
            negated: false,
        })),
        (None, Some(v)) => Ok(Some(Patterns {
            values: strings(v, negative)?,
            negated: true,
        })),
        (None, None) => Ok(None),
    }
}

/// `"*"`, `{"AWS": …}`, `{"Service": …}`, `{"Federated": …}`, `{"CanonicalUser": …}`. Only AWS
/// principals can be callers here; the other kinds are kept as names no caller has.
fn principal_values(value: &Value, element: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) if s == "*" => Ok(vec!["*".into()]),
        Value::Object(map) if !map.is_empty() => {
            let mut out = Vec::new();
            for (kind, names) in map {
                let names = strings(names, element)?;
                match kind.as_str() {
                    "AWS" => {
                        for name in names {
                            if !(name == "*" || is_account_id(&name) || name.starts_with("arn:")) {
                                return Err(invalid(format!(
                                    "Invalid principal in policy: \"AWS\":\"{name}\""
                                )));
                            }
                            out.push(name);
                        }
                    }
                    "Service" | "Federated" | "CanonicalUser" => {
                        out.extend(names.into_iter().map(|n| format!("{kind}:{n}")));
                    }
                    other => {
                        return Err(invalid(format!(
                            "Invalid principal in policy: unknown principal type \"{other}\""
                        )));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(invalid(format!("Invalid principal in policy: {element}"))),
    }
}

fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

const STATEMENT_KEYS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

impl Policy {
    /// Parses and validates a policy document (JSON text).
    pub fn parse(text: &str, kind: Kind) -> Result<Policy, PolicyError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| invalid(format!("Policy is not valid JSON: {e}")))?;
        Policy::from_value(&value, kind)
    }

    /// Validates a policy document already parsed as JSON.
    pub fn from_value(value: &Value, kind: Kind) -> Result<Policy, PolicyError> {
        let Value::Object(document) = value else {
            return Err(invalid("Policy document must be a JSON object"));
        };
        for key in document.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(invalid(format!(
                    "Policy document has an unknown element: {key}"
                )));
            }
        }
        if let Some(version) = document.get("Version")
            && !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17"))
        {
            return Err(invalid(
                "The policy Version must be \"2012-10-17\" or \"2008-10-17\"",
            ));
        }
        let statements = match document.get("Statement") {
            Some(Value::Array(list)) if !list.is_empty() => list.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err(invalid("Policy document must contain a Statement")),
        };
        let statements = statements
            .into_iter()
            .map(|s| Statement::parse(s, kind))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// What this policy says about `request`: an explicit deny, an allow, or nothing.
    pub fn evaluate(&self, request: &Request<'_>) -> Outcome {
        let mut outcome = Outcome::NotApplicable;
        for statement in &self.statements {
            if statement.applies(request) {
                match statement.effect {
                    Effect::Deny => return Outcome::Deny,
                    Effect::Allow => outcome = Outcome::Allow,
                }
            }
        }
        outcome
    }

    /// Every action the statements name, with `true` for those of `NotAction`.
    pub fn actions(&self) -> impl Iterator<Item = (&str, bool)> {
        self.statements.iter().flat_map(|s| {
            s.actions
                .values
                .iter()
                .map(move |a| (a.as_str(), s.actions.negated))
        })
    }

    /// Every principal the statements name (`Service:…`, `Federated:…` and `CanonicalUser:…`
    /// prefixed with their kind), with `true` for those of `NotPrincipal`.
    pub fn principals(&self) -> impl Iterator<Item = (&str, bool)> {
        self.statements.iter().flat_map(|s| {
            s.principals
                .iter()
                .flat_map(|p| p.values.iter().map(move |v| (v.as_str(), p.negated)))
        })
    }
}

impl Statement {
    fn parse(value: &Value, kind: Kind) -> Result<Statement, PolicyError> {
        let Value::Object(statement) = value else {
            return Err(invalid("Each Statement must be a JSON object"));
        };
        for key in statement.keys() {
            if !STATEMENT_KEYS.contains(&key.as_str()) {
                return Err(invalid(format!("Statement has an unknown element: {key}")));
            }
        }
        let effect = match statement.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            Some(other) => {
                return Err(invalid(format!(
                    "Effect must be \"Allow\" or \"Deny\", not \"{other}\""
                )));
            }
            None => return Err(invalid("Statement is missing the Effect element")),
        };
        let principals = match (statement.get("Principal"), statement.get("NotPrincipal")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "Statement cannot contain both Principal and NotPrincipal",
                ));
            }
            (Some(v), None) => Some(Patterns {
                values: principal_values(v, "Principal")?,
                negated: false,
            }),
            (None, Some(v)) => Some(Patterns {
                values: principal_values(v, "NotPrincipal")?,
                negated: true,
            }),
            (None, None) => None,
        };
        match (kind, &principals) {
            (Kind::Identity, Some(_)) => {
                return Err(invalid(
                    "Identity policies cannot contain Principal or NotPrincipal",
                ));
            }
            (Kind::Resource, None) => {
                return Err(invalid("Resource policy statements must name a Principal"));
            }
            _ => {}
        }
        let actions = patterns(statement, "Action", "NotAction")?
            .ok_or_else(|| invalid("Statement must contain Action or NotAction"))?;
        for action in &actions.values {
            if action != "*" && !action.contains(':') {
                return Err(invalid(format!(
                    "Action \"{action}\" must be of the form service:action"
                )));
            }
        }
        let resources = patterns(statement, "Resource", "NotResource")?;
        if kind == Kind::Identity && resources.is_none() {
            return Err(invalid("Statement must contain Resource or NotResource"));
        }
        let conditions = match statement.get("Condition") {
            None => Vec::new(),
            Some(Value::Object(block)) => condition::parse_block(block)?,
            Some(_) => return Err(invalid("Condition must be a JSON object")),
        };
        Ok(Statement {
            effect,
            principals,
            actions,
            resources,
            conditions,
        })
    }

    fn applies(&self, request: &Request<'_>) -> bool {
        if let Some(principals) = &self.principals {
            let named = principals
                .values
                .iter()
                .any(|p| principal_matches(p, request.principal_arn, request.principal_account));
            if named == principals.negated {
                return false;
            }
        }
        let action_named = self.actions.values.iter().any(|a| {
            glob(
                &a.to_ascii_lowercase(),
                &request.action.to_ascii_lowercase(),
            )
        });
        if action_named == self.actions.negated {
            return false;
        }
        if let Some(resources) = &self.resources {
            let named = resources.values.iter().any(|pattern| {
                condition::substitute(pattern, request.context)
                    .is_some_and(|p| glob(&p, request.resource))
            });
            if named == resources.negated {
                return false;
            }
        }
        self.conditions.iter().all(|c| c.holds(request.context))
    }
}

/// The role an assumed-role session belongs to
/// (`arn:aws:sts::A:assumed-role/R/S` → `arn:aws:iam::A:role/R`).
fn role_of_session(arn: &str) -> Option<String> {
    let rest = arn.strip_prefix("arn:aws:sts::")?;
    let (account, resource) = rest.split_once(':')?;
    let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
    Some(format!("arn:aws:iam::{account}:role/{role}"))
}

fn principal_matches(pattern: &str, arn: &str, account: &str) -> bool {
    if pattern == "*" || pattern == arn {
        return true;
    }
    if is_account_id(pattern) {
        return pattern == account;
    }
    if let Some(root_account) = pattern
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.strip_suffix(":root"))
    {
        return root_account == account;
    }
    role_of_session(arn).is_some_and(|role| role == pattern)
}

/// What one policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    NotApplicable,
}

/// The request as policies see it.
pub struct Request<'a> {
    /// The caller: a user, role session or root ARN.
    pub principal_arn: &'a str,
    pub principal_account: &'a str,
    /// `service:Operation`, e.g. `kinesis:PutRecord`.
    pub action: &'a str,
    /// The resource's ARN, or `*` for actions on no resource.
    pub resource: &'a str,
    /// The account that owns the resource.
    pub resource_account: &'a str,
    /// Condition keys.
    pub context: &'a dyn Context,
}

/// Why a request was denied; each gives AWS's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    ExplicitDenyInIdentityPolicy,
    ExplicitDenyInResourcePolicy,
    NoIdentityPolicyAllows,
    NoResourcePolicyAllows,
}

impl Denial {
    /// AWS's AccessDeniedException message for this denial.
    pub fn message(self, request: &Request<'_>) -> String {
        let on = if request.resource == "*" {
            String::new()
        } else {
            format!(" on resource: {}", request.resource)
        };
        let head = format!(
            "User: {} is not authorized to perform: {}{on}",
            request.principal_arn, request.action
        );
        match self {
            Denial::ExplicitDenyInIdentityPolicy => {
                format!("{head} with an explicit deny in an identity-based policy")
            }
            Denial::ExplicitDenyInResourcePolicy => {
                format!("{head} with an explicit deny in a resource-based policy")
            }
            Denial::NoIdentityPolicyAllows => format!(
                "{head} because no identity-based policy allows the {} action",
                request.action
            ),
            Denial::NoResourcePolicyAllows => format!(
                "{head} because no resource-based policy allows the {} action",
                request.action
            ),
        }
    }
}

/// Whether `arn` is an account's root user.
pub fn is_root(arn: &str) -> bool {
    arn.starts_with("arn:aws:iam::") && arn.ends_with(":root")
}

/// IAM's decision for `request`, given the caller's identity policies and the resource's
/// policy (if it has one).
pub fn authorize(
    identity: &[Policy],
    resource_policy: Option<&Policy>,
    request: &Request<'_>,
) -> Result<(), Denial> {
    let mut from_identity = if is_root(request.principal_arn) {
        Outcome::Allow
    } else {
        Outcome::NotApplicable
    };
    for policy in identity {
        match policy.evaluate(request) {
            Outcome::Deny => return Err(Denial::ExplicitDenyInIdentityPolicy),
            Outcome::Allow => from_identity = Outcome::Allow,
            Outcome::NotApplicable => {}
        }
    }
    let from_resource = resource_policy.map_or(Outcome::NotApplicable, |p| p.evaluate(request));
    if from_resource == Outcome::Deny {
        return Err(Denial::ExplicitDenyInResourcePolicy);
    }
    let same_account = request.principal_account == request.resource_account;
    if same_account {
        if from_identity == Outcome::Allow || from_resource == Outcome::Allow {
            return Ok(());
        }
        return Err(Denial::NoIdentityPolicyAllows);
    }
    if from_identity != Outcome::Allow {
        return Err(Denial::NoIdentityPolicyAllows);
    }
    if from_resource != Outcome::Allow {
        return Err(Denial::NoResourcePolicyAllows);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
