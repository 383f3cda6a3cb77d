//! Constraint validation of a decoded request against the model, with AWS's messages.
//!
//! Members are checked in model order, depth first. For one member the checks run in this
//! order, each adding at most one violation:
//! 1. required: `Member must not be null` (nothing else is checked for an absent member);
//! 2. pattern: `Member must satisfy regular expression pattern: P`;
//! 3. length (strings in UTF-16 units as Java counts them, blobs in bytes, lists, maps):
//!    `Member must have length greater than or equal to N`, then `… less than or equal to N`;
//! 4. value (integers): `Member must have value greater than or equal to N`, then `… less …`;
//! 5. enum: `Member must satisfy enum value set: [A, B]`, in the order AWS prints the set (not
//!    the model's; the generator sorts `enum_values` so);
//! 6. contents: structure members; list items (structures at `path.I.member`, 1-based;
//!    a list of scalars gets one violation at the list's path, `Member must satisfy
//!    constraint: [C, …]` listing the item shape's constraints); map keys and values likewise
//!    (`Map keys must satisfy constraint: […]`, `Map value must satisfy constraint: […]`).
//!
//! The order (pattern before length) and the collection forms are AWS's, as recorded from the
//! live service. AWS stops after 10 violations and reports that count: a 501-record PutRecords
//! with 501 empty partition keys answers `10 validation errors detected: …`.

use std::fmt::Write as _;

use crate::error::AwsError;
use crate::model::{self, Kind, Shape};
use crate::value::Value;

/// Most violations AWS lists (and counts) in one `ValidationException`.
pub(crate) const VIOLATIONS_MAX: usize = 10;

/// Validates `value` (decoded for structure `input`); `Err` is a `ValidationException`.
pub(crate) fn validate(input: u16, value: &Value) -> Result<(), AwsError> {
    let mut validator = Validator {
        violations: Vec::new(),
        path: Vec::new(),
    };
    validator.structure(model::shape(input), value);
    let violations = validator.violations;
    if violations.is_empty() {
        return Ok(());
    }
    let plural = if violations.len() == 1 { "" } else { "s" };
    Err(AwsError::validation(format!(
        "{} validation error{plural} detected: {}",
        violations.len(),
        violations.join("; ")
    )))
}

/// One step of the path to a member, rendered joined by dots.
#[derive(Clone, Copy)]
enum Step<'v> {
    Member(&'static str),
    /// A list item, 0-based here, rendered 1-based followed by `.member`.
    Item(usize),
    /// A map value, rendered as its key followed by `.member`.
    Key(&'v str),
}

struct Validator<'v> {
    violations: Vec<String>,
    path: Vec<Step<'v>>,
}

impl<'v> Validator<'v> {
    fn full(&self) -> bool {
        self.violations.len() >= VIOLATIONS_MAX
    }

    fn violation(&mut self, shape: &Shape, value: Option<&Value>, constraint: &str) {
        if self.full() {
            return;
        }
        let mut path = String::new();
        for (i, step) in self.path.iter().enumerate() {
            if i > 0 {
                path.push('.');
            }
            let _ = match step {
                Step::Member(name) => write!(path, "{name}"),
                Step::Item(index) => write!(path, "{}.member", index + 1),
                Step::Key(key) => write!(path, "{key}.member"),
            };
        }
        let rendered = match value {
            None | Some(Value::Null) => "null".to_owned(),
            Some(value) => format!("'{}'", render(shape, value)),
        };
        self.violations.push(format!(
            "Value {rendered} at '{path}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// Checks the members of a structure value.
    fn structure(&mut self, shape: &'static Shape, value: &'v Value) {
        let entries = value.as_map().unwrap_or(&[]);
        // Decoders store members in model order, so one cursor finds them all.
        let mut cursor = 0;
        for member in shape.members {
            if self.full() {
                return;
            }
            let found = match entries.get(cursor) {
                Some((name, value)) if name == member.name => {
                    cursor += 1;
                    Some(value)
                }
                _ => None,
            };
            self.path.push(Step::Member(member.path));
            self.member(model::shape(member.shape), found, member.required);
            self.path.pop();
        }
    }

    /// Checks one member (or list item, or map value) at the current path.
    fn member(&mut self, shape: &'static Shape, value: Option<&'v Value>, required: bool) {
        let value = match value {
            Some(Value::Null) | None => {
                if required {
                    self.violation(shape, None, "Member must not be null");
                }
                return;
            }
            Some(value) => value,
        };
        for constraint in scalar_violations(shape, value) {
            self.violation(shape, Some(value), &constraint);
        }
        match (shape.kind, value) {
            (Kind::Structure, _) => self.structure(shape, value),
            (Kind::List, Value::List(items)) => {
                let element = model::shape(shape.element);
                if element.kind == Kind::Structure {
                    for (i, item) in items.iter().enumerate() {
                        if self.full() {
                            return;
                        }
                        self.path.push(Step::Item(i));
                        // A list cannot hold an absent structure.
                        self.member(element, Some(item), true);
                        self.path.pop();
                    }
                } else if items.iter().any(|item| !scalar_ok(element, item)) {
                    let message =
                        format!("Member must satisfy constraint: [{}]", describe(element));
                    self.violation(shape, Some(value), &message);
                }
            }
            (Kind::Map, Value::Map(entries)) => {
                let key = model::shape(shape.key);
                if entries
                    .iter()
                    .any(|(k, _)| !scalar_ok(key, &Value::Str(k.clone())))
                {
                    let message = format!("Map keys must satisfy constraint: [{}]", describe(key));
                    self.violation(shape, Some(value), &message);
                }
                let element = model::shape(shape.element);
                if matches!(element.kind, Kind::Structure | Kind::List | Kind::Map) {
                    for (k, item) in entries {
                        if self.full() {
                            return;
                        }
                        self.path.push(Step::Key(k));
                        self.member(element, Some(item), true);
                        self.path.pop();
                    }
                } else if entries.iter().any(|(_, item)| !scalar_ok(element, item)) {
                    let message =
                        format!("Map value must satisfy constraint: [{}]", describe(element));
                    self.violation(shape, Some(value), &message);
                }
            }
            _ => {}
        }
    }
}

/// The length Java reports: UTF-16 units for strings, bytes for blobs, items for collections.
fn length(value: &Value) -> Option<i64> {
    let n = match value {
        Value::Str(text) if text.is_ascii() => text.len(),
        Value::Str(text) => text.encode_utf16().count(),
        Value::Blob(bytes) => bytes.len(),
        Value::List(items) => items.len(),
        Value::Map(entries) => entries.len(),
        _ => return None,
    };
    i64::try_from(n).ok()
}

/// The violated constraints of a value itself (not its contents), in the documented order.
fn scalar_violations(shape: &Shape, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let constrained = shape.min.is_some()
        || shape.max.is_some()
        || shape.pattern.is_some()
        || !shape.enum_values.is_empty();
    if !constrained {
        return out;
    }
    if let (Some(pattern), Value::Str(text)) = (shape.pattern, value)
        && !model::pattern_matches(pattern, text)
    {
        out.push(format!(
            "Member must satisfy regular expression pattern: {}",
            model::pattern_text(pattern)
        ));
    }
    let sized = matches!(
        shape.kind,
        Kind::String | Kind::Blob | Kind::List | Kind::Map
    );
    if sized && let Some(len) = length(value) {
        if let Some(min) = shape.min.filter(|&min| len < min) {
            out.push(format!(
                "Member must have length greater than or equal to {min}"
            ));
        }
        if let Some(max) = shape.max.filter(|&max| len > max) {
            out.push(format!(
                "Member must have length less than or equal to {max}"
            ));
        }
    }
    if let Value::Int(n) = value {
        if let Some(min) = shape.min.filter(|&min| *n < min) {
            out.push(format!(
                "Member must have value greater than or equal to {min}"
            ));
        }
        if let Some(max) = shape.max.filter(|&max| *n > max) {
            out.push(format!(
                "Member must have value less than or equal to {max}"
            ));
        }
    }
    if let Value::Str(text) = value
        && !shape.enum_values.is_empty()
        && !shape.enum_values.contains(&text.as_str())
    {
        out.push(format!(
            "Member must satisfy enum value set: [{}]",
            shape.enum_values.join(", ")
        ));
    }
    out
}

/// Whether a list item or map key/value satisfies its shape (a null item does not).
fn scalar_ok(shape: &Shape, value: &Value) -> bool {
    !value.is_null() && scalar_violations(shape, value).is_empty()
}

/// Every constraint of an item shape, as AWS lists them inside `[…]`: maximum before minimum.
fn describe(shape: &Shape) -> String {
    let mut parts = Vec::new();
    let sized = matches!(
        shape.kind,
        Kind::String | Kind::Blob | Kind::List | Kind::Map
    );
    let what = if sized { "length" } else { "value" };
    if let Some(max) = shape.max {
        parts.push(format!(
            "Member must have {what} less than or equal to {max}"
        ));
    }
    if let Some(min) = shape.min {
        parts.push(format!(
            "Member must have {what} greater than or equal to {min}"
        ));
    }
    if let Some(pattern) = shape.pattern {
        parts.push(format!(
            "Member must satisfy regular expression pattern: {}",
            model::pattern_text(pattern)
        ));
    }
    if !shape.enum_values.is_empty() {
        parts.push(format!(
            "Member must satisfy enum value set: [{}]",
            shape.enum_values.join(", ")
        ));
    }
    parts.join(", ")
}

/// A value as Java's `toString` renders it in AWS's messages.
fn render(shape: &Shape, value: &Value) -> String {
    match (shape.kind, value) {
        (_, Value::Null) => "null".to_owned(),
        (_, Value::Str(text)) => text.clone(),
        (_, Value::Int(n)) => n.to_string(),
        (_, Value::Bool(b)) => b.to_string(),
        (_, Value::Float(f)) => format!("{f:?}"),
        (_, Value::Timestamp(secs)) => format!("{secs:?}"),
        (_, Value::Blob(bytes)) => {
            format!(
                "java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]",
                bytes.len()
            )
        }
        (Kind::Structure, _) => {
            format!("{CLASS_PREFIX}{}@{:x}", shape.name, java_hash(shape, value))
        }
        (_, Value::List(items)) => {
            let element = model::shape(shape.element);
            let parts: Vec<String> = items.iter().map(|item| render(element, item)).collect();
            format!("[{}]", parts.join(", "))
        }
        (_, Value::Map(entries)) => {
            let element = model::shape(shape.element);
            let parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{k}={}", render(element, v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// The package of the service's generated classes, as `Class@hash` renderings print it.
const CLASS_PREFIX: &str = "com.amazonaws.kinesis.v20131202.";

/// Java's `String.hashCode()`: over UTF-16 code units, wrapping.
fn string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Java's `hashCode` of a value, for the `Class@hash` rendering of structures. A structure
/// starts from its class name's hash plus 62, then folds `h = 31·h + member` over its members
/// in model order, an absent member counting 0 — what AWS prints: an entry
/// `{"PartitionKey":"","Data":""}` is `PutRecordsRequestEntry@c965e310`.
fn java_hash(shape: &Shape, value: &Value) -> u32 {
    let hash = match value {
        Value::Null => 0i32,
        Value::Bool(b) => {
            if *b {
                1231
            } else {
                1237
            }
        }
        Value::Int(n) if shape.kind == Kind::Integer => *n as i32,
        Value::Int(n) => (*n ^ ((*n as u64) >> 32) as i64) as i32,
        Value::Float(f) => {
            let bits = f.to_bits();
            (bits ^ (bits >> 32)) as i32
        }
        Value::Timestamp(secs) => {
            let ms = crate::value::seconds_to_ms(*secs);
            (ms ^ ((ms as u64) >> 32) as i64) as i32
        }
        Value::Str(text) => string_hash(text),
        // HeapByteBuffer hashes its remaining bytes from the last to the first.
        Value::Blob(bytes) => bytes.iter().rev().fold(1i32, |h, &b| {
            h.wrapping_mul(31).wrapping_add(i32::from(b as i8))
        }),
        Value::List(items) => {
            let element = model::shape(shape.element);
            items.iter().fold(1i32, |h, item| {
                h.wrapping_mul(31)
                    .wrapping_add(java_hash(element, item) as i32)
            })
        }
        Value::Map(entries) if shape.kind == Kind::Structure => {
            let class = string_hash(&format!("{CLASS_PREFIX}{}", shape.name));
            let mut h = class.wrapping_add(62);
            // Decoders keep members in model order, so one cursor finds them all.
            let mut cursor = 0;
            for member in shape.members {
                let member_hash = match entries.get(cursor) {
                    Some((name, value)) if name == member.name => {
                        cursor += 1;
                        java_hash(model::shape(member.shape), value) as i32
                    }
                    _ => 0,
                };
                h = h.wrapping_mul(31).wrapping_add(member_hash);
            }
            h
        }
        Value::Map(entries) => {
            let key = model::shape(shape.key);
            let element = model::shape(shape.element);
            entries.iter().fold(0i32, |h, (k, v)| {
                let pair = java_hash(key, &Value::Str(k.clone())) ^ java_hash(element, v);
                h.wrapping_add(pair as i32)
            })
        }
    };
    hash as u32
}
