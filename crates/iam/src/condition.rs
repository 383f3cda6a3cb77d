//! The `Condition` element: operators (String*, Numeric*, Date*, Bool, IpAddress, Arn*,
//! Null), the `…IfExists` suffix and the `ForAnyValue:` / `ForAllValues:` set qualifiers.
//! Several keys under one operator, and several operators, must all hold; several values for
//! one key are alternatives (for negated operators: none may match).

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::glob::glob;
use crate::{PolicyError, invalid};

/// The request's condition keys. Keys are case-insensitive, as in IAM; an absent key is
/// `None`; a multi-valued key (such as `aws:TagKeys`) has several values.
pub trait Context {
    fn get(&self, key: &str) -> Option<Vec<String>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    ArnLike,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone)]
pub struct Condition {
    test: Test,
    negated: bool,
    if_exists: bool,
    quantifier: Quantifier,
    key: String,
    values: Vec<String>,
}

fn operator(name: &str) -> Option<(Test, bool)> {
    use Test::*;
    Some(match name {
        "StringEquals" => (StringEquals, false),
        "StringNotEquals" => (StringEquals, true),
        "StringEqualsIgnoreCase" => (StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (StringEqualsIgnoreCase, true),
        "StringLike" => (StringLike, false),
        "StringNotLike" => (StringLike, true),
        "NumericEquals" => (NumericEquals, false),
        "NumericNotEquals" => (NumericEquals, true),
        "NumericLessThan" => (NumericLessThan, false),
        "NumericLessThanEquals" => (NumericLessThanEquals, false),
        "NumericGreaterThan" => (NumericGreaterThan, false),
        "NumericGreaterThanEquals" => (NumericGreaterThanEquals, false),
        "DateEquals" => (DateEquals, false),
        "DateNotEquals" => (DateEquals, true),
        "DateLessThan" => (DateLessThan, false),
        "DateLessThanEquals" => (DateLessThanEquals, false),
        "DateGreaterThan" => (DateGreaterThan, false),
        "DateGreaterThanEquals" => (DateGreaterThanEquals, false),
        "Bool" => (Bool, false),
        "IpAddress" => (IpAddress, false),
        "NotIpAddress" => (IpAddress, true),
        "ArnEquals" | "ArnLike" => (ArnLike, false),
        "ArnNotEquals" | "ArnNotLike" => (ArnLike, true),
        "Null" => (Null, false),
        _ => return None,
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses a `Condition` block: `{ "Operator": { "key": value-or-values, … }, … }`.
pub fn parse_block(block: &Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (name, keys) in block {
        let (quantifier, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
            (Quantifier::ForAnyValue, rest)
        } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
            (Quantifier::ForAllValues, rest)
        } else {
            (Quantifier::Single, name.as_str())
        };
        let (rest, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let (test, negated) = operator(rest)
            .filter(|(test, _)| !(if_exists && *test == Test::Null))
            .ok_or_else(|| invalid(format!("Invalid Condition type : {name}")))?;
        let Value::Object(keys) = keys else {
            return Err(invalid(format!(
                "Condition operator {name} must map condition keys to values"
            )));
        };
        for (key, values) in keys {
            let values = match values {
                Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
                one => scalar(one).map(|v| vec![v]),
            }
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(format!("Invalid value for condition key {key}")))?;
            for value in &values {
                if !value_is_valid(test, value) {
                    return Err(invalid(format!(
                        "Invalid value \"{value}\" for condition {name} on {key}"
                    )));
                }
            }
            out.push(Condition {
                test,
                negated,
                if_exists,
                quantifier,
                key: key.clone(),
                values,
            });
        }
    }
    Ok(out)
}

/// Values that can never be compared are refused when the policy is written, not ignored at
/// request time.
fn value_is_valid(test: Test, value: &str) -> bool {
    use Test::*;
    match test {
        NumericEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => value.parse::<f64>().is_ok(),
        DateEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => epoch_seconds(value).is_some(),
        IpAddress => parse_net(value).is_some(),
        Bool | Null => value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"),
        _ => true,
    }
}

/// ISO 8601 (RFC 3339, or a bare date) or epoch seconds, as IAM accepts for Date conditions.
pub fn epoch_seconds(text: &str) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(n) = text.parse::<f64>() {
        return Some(n);
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.unix_timestamp_nanos() as f64 / 1e9);
    }
    // A bare date: midnight UTC.
    let mut parts = text.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() as f64)
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Replaces `${key}` policy variables with the request's (single) value; `None` when a
/// variable has no value, so the element cannot match.
pub fn substitute(pattern: &str, context: &dyn Context) -> Option<String> {
    if !pattern.contains("${") {
        return Some(pattern.to_string());
    }
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let values = context.get(&after[..end])?;
        if values.len() != 1 {
            return None;
        }
        out.push_str(&values[0]);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

fn compare(test: Test, actual: &str, expected: &str) -> bool {
    use Test::*;
    let numbers = |parse: fn(&str) -> Option<f64>| Some((parse(actual)?, parse(expected)?));
    let ordered =
        |pair: Option<(f64, f64)>, f: fn(f64, f64) -> bool| pair.is_some_and(|(a, e)| f(a, e));
    match test {
        StringEquals => actual == expected,
        StringEqualsIgnoreCase => actual.to_lowercase() == expected.to_lowercase(),
        StringLike => glob(expected, actual),
        NumericEquals => ordered(numbers(|s| s.parse().ok()), |a, e| a == e),
        NumericLessThan => ordered(numbers(|s| s.parse().ok()), |a, e| a < e),
        NumericLessThanEquals => ordered(numbers(|s| s.parse().ok()), |a, e| a <= e),
        NumericGreaterThan => ordered(numbers(|s| s.parse().ok()), |a, e| a > e),
        NumericGreaterThanEquals => ordered(numbers(|s| s.parse().ok()), |a, e| a >= e),
        DateEquals => ordered(numbers(epoch_seconds), |a, e| a == e),
        DateLessThan => ordered(numbers(epoch_seconds), |a, e| a < e),
        DateLessThanEquals => ordered(numbers(epoch_seconds), |a, e| a <= e),
        DateGreaterThan => ordered(numbers(epoch_seconds), |a, e| a > e),
        DateGreaterThanEquals => ordered(numbers(epoch_seconds), |a, e| a >= e),
        Bool => actual.eq_ignore_ascii_case(expected),
        IpAddress => match (actual.parse::<std::net::IpAddr>(), parse_net(expected)) {
            (Ok(ip), Some(net)) => net.contains(&ip),
            _ => false,
        },
        ArnLike => arn_like(expected, actual),
        Null => false,
    }
}

impl Condition {
    pub fn holds(&self, context: &dyn Context) -> bool {
        let present = context.get(&self.key).filter(|v| !v.is_empty());
        if self.test == Test::Null {
            let want_absent = |v: &String| v.eq_ignore_ascii_case("true");
            return self
                .values
                .iter()
                .any(|v| want_absent(v) == present.is_none());
        }
        let Some(actual) = present else {
            if self.if_exists {
                return true;
            }
            return match self.quantifier {
                Quantifier::ForAllValues => true,
                Quantifier::ForAnyValue => false,
                Quantifier::Single => self.negated,
            };
        };
        let matches_one = |value: &String| {
            let expected: Vec<String> = self
                .values
                .iter()
                .filter_map(|e| substitute(e, context))
                .collect();
            let any = expected.iter().any(|e| compare(self.test, value, e));
            any != self.negated
        };
        match self.quantifier {
            Quantifier::ForAllValues => actual.iter().all(matches_one),
            Quantifier::Single | Quantifier::ForAnyValue => actual.iter().any(matches_one),
        }
    }
}
