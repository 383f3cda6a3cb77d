//! What the JSON and CBOR decoders share: turning scalars into typed values for a shape, and
//! building structures in model order.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::PAD;
use base64::engine::simd::Simd;

use crate::error::{DecodeError, Found, bad_base64, mismatch, out_of_range};
use crate::model::{Kind, Shape};
use crate::value::Value;

/// How deep documents may nest. The model's input shapes nest far less; the bound keeps hostile
/// bodies (`[[[[…`) from exhausting the stack while skipping unknown members.
pub(crate) const DEPTH_MAX: u32 = 64;

/// Most structure members a shape may have: presence is tracked in a `u64` bit set.
pub(crate) const MEMBERS_MAX: usize = 64;

/// The standard-alphabet, padded base64 engine, SIMD-accelerated when the CPU allows.
pub(crate) static BASE64: LazyLock<Simd> = LazyLock::new(|| Simd::standard(PAD));

/// Decodes a base64 string as AWS does for a blob member.
pub(crate) fn blob_from_base64(text: &str) -> Result<Vec<u8>, DecodeError> {
    if text.len().is_multiple_of(4)
        && let Ok(bytes) = BASE64.decode(text)
    {
        return Ok(bytes);
    }
    Err(bad_base64(text))
}

/// The value of a string token in a slot of kind `kind`.
pub(crate) fn from_text(
    shape: &Shape,
    text: std::borrow::Cow<'_, str>,
) -> Result<Value, DecodeError> {
    match shape.kind {
        Kind::String => Ok(Value::Str(text.into_owned())),
        Kind::Blob => blob_from_base64(&text).map(Value::Blob),
        Kind::Boolean => match text.to_ascii_lowercase().as_str() {
            // Jackson's lenient boolean coercion, which AWS inherits.
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(mismatch(shape.kind, Found::Str(&text))),
        },
        kind => Err(mismatch(kind, Found::Str(&text))),
    }
}

/// The value of an integral number in a slot of kind `kind`; `text` renders it for messages.
/// For timestamps `as_ms` says whether the integer counts milliseconds (CBOR) or seconds (JSON).
pub(crate) fn from_integer(
    shape: &Shape,
    n: i128,
    as_ms: bool,
    text: impl FnOnce() -> String,
) -> Result<Value, DecodeError> {
    match shape.kind {
        Kind::Integer => match i32::try_from(n) {
            Ok(n) => Ok(Value::Int(n.into())),
            Err(_) => Err(out_of_range(Kind::Integer, &text())),
        },
        Kind::Long => match i64::try_from(n) {
            Ok(n) => Ok(Value::Int(n)),
            Err(_) => Err(out_of_range(Kind::Long, &text())),
        },
        Kind::Double => Ok(Value::Float(n as f64)),
        Kind::Timestamp if as_ms => Ok(Value::Timestamp(n as f64 / 1000.0)),
        Kind::Timestamp => Ok(Value::Timestamp(n as f64)),
        kind => Err(mismatch(kind, Found::Number)),
    }
}

/// The value of a fractional number in a slot of kind `kind` (timestamps: epoch seconds).
pub(crate) fn from_float(
    shape: &Shape,
    f: f64,
    text: impl FnOnce() -> String,
) -> Result<Value, DecodeError> {
    match shape.kind {
        // Jackson truncates a fraction toward zero when it reads an integer.
        Kind::Integer
            if f.is_finite()
                && f.trunc() >= f64::from(i32::MIN)
                && f.trunc() <= f64::from(i32::MAX) =>
        {
            Ok(Value::Int(f.trunc() as i64))
        }
        Kind::Long
            if f.is_finite()
                && f.trunc() >= -9.223_372_036_854_776e18
                && f.trunc() < 9.223_372_036_854_776e18 =>
        {
            Ok(Value::Int(f.trunc() as i64))
        }
        Kind::Integer | Kind::Long => Err(out_of_range(shape.kind, &text())),
        Kind::Double => Ok(Value::Float(f)),
        Kind::Timestamp if f.is_finite() => Ok(Value::Timestamp(f)),
        kind => Err(mismatch(kind, Found::Number)),
    }
}

/// A structure under construction: members kept in model order whatever the wire order, so
/// validation walks members and values in step, and a repeated member replaces the earlier one.
pub(crate) struct StructBuilder {
    entries: Vec<(String, Value)>,
    /// Bit `i` set: member `i` is present.
    present: u64,
}

impl StructBuilder {
    pub(crate) fn new() -> StructBuilder {
        StructBuilder {
            entries: Vec::new(),
            present: 0,
        }
    }

    /// Sets member `index` (named `name`); `Null` removes it, as JSON null means absent.
    pub(crate) fn set(&mut self, index: usize, name: &'static str, value: Value) {
        debug_assert!(index < MEMBERS_MAX);
        let bit = 1u64 << index;
        let position = (self.present & (bit - 1)).count_ones() as usize;
        let exists = self.present & bit != 0;
        match (exists, value) {
            (true, Value::Null) => {
                self.entries.remove(position);
                self.present &= !bit;
            }
            (true, value) => self.entries[position].1 = value,
            (false, Value::Null) => {}
            (false, value) => {
                self.entries.insert(position, (name.to_owned(), value));
                self.present |= bit;
            }
        }
    }

    pub(crate) fn build(self) -> Value {
        Value::Map(self.entries)
    }
}

/// The index of the member named `name` in a structure shape.
pub(crate) fn member_index(shape: &Shape, name: &str) -> Option<usize> {
    shape.members.iter().position(|member| member.name == name)
}

/// Keeps the last of repeated map keys, as a Java `HashMap` keeps the last `put`, and drops
/// null values (a map value cannot be absent).
pub(crate) fn finish_map(mut entries: Vec<(String, Value)>) -> Value {
    entries.retain(|(_, value)| !value.is_null());
    if entries.len() > 1 {
        let mut seen = HashSet::with_capacity(entries.len());
        let repeated = !entries.iter().all(|(key, _)| seen.insert(key.as_str()));
        if repeated {
            let mut seen = HashSet::with_capacity(entries.len());
            let mut kept: Vec<(String, Value)> = Vec::with_capacity(entries.len());
            for (key, value) in entries.into_iter().rev() {
                if seen.insert(key.clone()) {
                    kept.push((key, value));
                }
            }
            kept.reverse();
            return Value::Map(kept);
        }
    }
    Value::Map(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_map_keys_keep_the_last_value() {
        let entries = vec![
            ("a".to_owned(), Value::from("1")),
            ("b".to_owned(), Value::from("2")),
            ("a".to_owned(), Value::from("3")),
            ("c".to_owned(), Value::Null),
        ];
        let expected = Value::Map(vec![
            ("b".into(), Value::from("2")),
            ("a".into(), Value::from("3")),
        ]);
        assert_eq!(finish_map(entries), expected);
    }
}
