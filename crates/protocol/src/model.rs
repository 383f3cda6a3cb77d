//! The service model's input shapes as static tables (filled in by `model_gen.rs`), and the
//! lookups decoding and validation need.

use std::sync::OnceLock;

use regex::Regex;

use crate::model_gen::{OPERATIONS, PATTERN_COUNT, PATTERNS, SHAPES};

/// The id of "no shape" (an operation without input, a non-collection's element).
pub(crate) const NO_SHAPE: u16 = u16::MAX;

/// The type of a shape, as the model names it.
// Not every kind occurs in today's input shapes (`long` and `double` only in outputs), but the
// generator emits them if a model update brings them in.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Structure,
    List,
    Map,
    String,
    Integer,
    Long,
    Double,
    Boolean,
    Timestamp,
    Blob,
}

/// One shape of the model with the constraints validation checks.
#[derive(Debug)]
pub(crate) struct Shape {
    pub name: &'static str,
    pub kind: Kind,
    /// Minimum length (strings, blobs, lists, maps) or value (numbers).
    pub min: Option<i64>,
    /// Maximum length (strings, blobs, lists, maps) or value (numbers).
    pub max: Option<i64>,
    /// Index into `PATTERNS`.
    pub pattern: Option<u16>,
    /// Allowed values, in the order AWS prints the set (see `tools/gen_model.py`), not the
    /// model's.
    pub enum_values: &'static [&'static str],
    /// Structure members in model order.
    pub members: &'static [Member],
    /// List member or map value shape.
    pub element: u16,
    /// Map key shape.
    pub key: u16,
}

/// A structure member.
#[derive(Debug)]
pub(crate) struct Member {
    /// The name on the wire (JSON key, CBOR map key).
    pub name: &'static str,
    /// The name in validation messages: lowerCamel, as AWS renders paths.
    pub path: &'static str,
    pub shape: u16,
    pub required: bool,
}

/// An operation, its input shape, and whether the model gives it an output shape.
#[derive(Debug)]
pub(crate) struct Operation {
    pub name: &'static str,
    pub input: u16,
    pub output: bool,
}

/// A model pattern: the Java text quoted in messages and its `regex`-crate translation.
#[derive(Debug)]
pub(crate) struct Pattern {
    pub java: &'static str,
    pub rust: &'static str,
}

impl Shape {
    const fn base(name: &'static str, kind: Kind, min: Option<i64>, max: Option<i64>) -> Shape {
        Shape {
            name,
            kind,
            min,
            max,
            pattern: None,
            enum_values: &[],
            members: &[],
            element: NO_SHAPE,
            key: NO_SHAPE,
        }
    }

    /// A structure shape.
    pub(crate) const fn structure(name: &'static str, members: &'static [Member]) -> Shape {
        Shape {
            members,
            ..Shape::base(name, Kind::Structure, None, None)
        }
    }

    /// A list shape.
    pub(crate) const fn list(
        name: &'static str,
        min: Option<i64>,
        max: Option<i64>,
        element: u16,
    ) -> Shape {
        Shape {
            element,
            ..Shape::base(name, Kind::List, min, max)
        }
    }

    /// A map shape.
    pub(crate) const fn map(
        name: &'static str,
        min: Option<i64>,
        max: Option<i64>,
        key: u16,
        value: u16,
    ) -> Shape {
        Shape {
            key,
            element: value,
            ..Shape::base(name, Kind::Map, min, max)
        }
    }

    /// A string shape.
    pub(crate) const fn string(
        name: &'static str,
        min: Option<i64>,
        max: Option<i64>,
        pattern: Option<u16>,
        enum_values: &'static [&'static str],
    ) -> Shape {
        Shape {
            pattern,
            enum_values,
            ..Shape::base(name, Kind::String, min, max)
        }
    }

    /// Any other shape: numbers, booleans, timestamps, blobs.
    pub(crate) const fn scalar(
        name: &'static str,
        kind: Kind,
        min: Option<i64>,
        max: Option<i64>,
    ) -> Shape {
        Shape::base(name, kind, min, max)
    }
}

impl Member {
    /// A structure member.
    pub(crate) const fn new(
        name: &'static str,
        path: &'static str,
        shape: u16,
        required: bool,
    ) -> Member {
        Member {
            name,
            path,
            shape,
            required,
        }
    }
}

/// The shape with id `id`; ids come from the generated tables, so they are always in range.
pub(crate) fn shape(id: u16) -> &'static Shape {
    &SHAPES[usize::from(id)]
}

/// The operation named `name`, by binary search over the sorted table.
pub(crate) fn operation(name: &str) -> Option<&'static Operation> {
    OPERATIONS
        .binary_search_by(|op| op.name.cmp(name))
        .ok()
        .map(|i| &OPERATIONS[i])
}

/// Whether operation `name` has an output shape (`false` for unknown names too).
pub(crate) fn has_output(name: &str) -> bool {
    operation(name).is_some_and(|op| op.output)
}

/// All operation names, sorted.
pub(crate) fn operation_names() -> impl Iterator<Item = &'static str> {
    OPERATIONS.iter().map(|op| op.name)
}

/// The Java text of pattern `id`, as AWS quotes it in messages.
pub(crate) fn pattern_text(id: u16) -> &'static str {
    PATTERNS[usize::from(id)].java
}

/// Whether `text` fully matches pattern `id` (Java `String.matches` semantics).
pub(crate) fn pattern_matches(id: u16, text: &str) -> bool {
    static COMPILED: [OnceLock<Option<Regex>>; PATTERN_COUNT] =
        [const { OnceLock::new() }; PATTERN_COUNT];
    let index = usize::from(id);
    let compiled = COMPILED[index].get_or_init(|| Regex::new(PATTERNS[index].rust).ok());
    match compiled {
        Some(regex) => regex.is_match(text),
        // Unreachable: a unit test compiles every pattern. Accepting beats failing every request.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for (i, pattern) in PATTERNS.iter().enumerate() {
            assert!(
                Regex::new(pattern.rust).is_ok(),
                "pattern {i} {:?}",
                pattern.rust
            );
        }
    }

    /// Each pattern of the model on text it must accept and text it must reject.
    #[test]
    fn patterns_match_like_java() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "[a-zA-Z0-9_.-]+",
                &["my-stream_1.x"],
                &["", "a b", "ü", "a/b"],
            ),
            (
                "^(0|([1-9]\\d{0,38}))$",
                &["0", "1", &"9".repeat(39)],
                &["01", "", &"9".repeat(40)],
            ),
            (
                "^(0|([1-9]\\d{0,128}))$",
                &["49590338271490256608559692538361571095921575989136588898"],
                &["-1", "1a", "١"],
            ),
            (
                "\\d{12}",
                &["123456789012"],
                &["12345678901", "１２３４５６７８９０１２"],
            ),
            (
                "arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
                &["arn:aws:kinesis:us-east-1:123456789012:stream/s"],
                &[
                    "arn:aws:kinesis:us-east-1:123456789012:stream/a b",
                    "arn:aws:kinesis:us\neast:123456789012:stream/s",
                ],
            ),
            (
                "arn:aws.*:kinesis:.*:\\d{12}:channel/\\S+",
                &["arn:aws:kinesis:r:123456789012:channel/c"],
                &["arn:aws:kinesis:r:123456789012:stream/c"],
            ),
            (
                "arn:aws.*:kinesis:.*:\\d{12}:queue/\\S+",
                &["arn:aws-cn:kinesis:r:123456789012:queue/q"],
                &["arn:aws:kinesis:r:12345678901:queue/q"],
            ),
            (
                "arn:aws.*:kinesis:.*:\\d{12}:.*(stream|channel|queue)/\\S+",
                &[
                    "arn:aws:kinesis:r:123456789012:stream/s",
                    "arn:aws:kinesis:r:123456789012:x/queue/q",
                ],
                &["arn:aws:kinesis:r:123456789012:table/t"],
            ),
            (
                concat!(
                    "^(arn):aws.*:kinesis:.*:\\d{12}:.*stream\\/[a-zA-Z0-9_.-]+",
                    "\\/consumer\\/[a-zA-Z0-9_.-]+:[0-9]+",
                ),
                &["arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1506440188"],
                &[
                    "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c",
                    "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c d:1",
                ],
            ),
            (
                "[a-z0-9]{20}-[a-z0-9]{3}",
                &["abcdefghij0123456789-abc"],
                &["abcdefghij0123456789-ab", "ABCDEFGHIJ0123456789-abc"],
            ),
            (
                "arn:aws[-a-z0-9]*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+",
                &["arn:aws:iam::123456789012:role/my-role/x=y"],
                &["arn:aws:iam::123456789012:role/a b"],
            ),
            (
                concat!(
                    "arn:aws[-a-z0-9]*:glue:[-a-z0-9]+:\\d{12}:",
                    "schema/[-a-zA-Z0-9_$#.]+/[-a-zA-Z0-9_$#.]+",
                ),
                &["arn:aws:glue:us-east-1:123456789012:schema/r$#/s.1"],
                &["arn:aws:glue:us-east-1:123456789012:schema/r"],
            ),
            (
                "arn:aws[-a-z0-9]*:s3:::[a-z0-9._-]{3,63}",
                &["arn:aws:s3:::my.bucket-1"],
                &["arn:aws:s3:::ab", "arn:aws:s3:::Bucket"],
            ),
            (
                "[0-9A-Za-z!\\-_'.*()\\/]+",
                &["a-b_c'd.e*(f)/g!"],
                &["a=b", "a\\b"],
            ),
            (
                "[0-9A-Za-z!\\-_'.*()\\/=:{}]+",
                &["prefix/{yyyy}=x:y"],
                &["a b", "a\\b"],
            ),
            (
                "arn:aws[-a-z0-9]*:s3tables:[-a-z0-9]+:\\d{12}:bucket/[a-z0-9_-]{3,63}",
                &["arn:aws:s3tables:us-east-1:123456789012:bucket/tb_1"],
                &["arn:aws:s3tables:us-east-1:123456789012:bucket/TB"],
            ),
            ("[0-9a-z_]+", &["ns_1"], &["Ns", "a-b"]),
            ("[a-zA-Z0-9\\.\\_]+", &["a.b_C"], &["a-b", "a\\b"]),
            (
                "[\\.\\-_/#A-Za-z0-9]+",
                &["/aws/kinesis#1.x-y_z"],
                &["a b", "a\\b"],
            ),
            ("[^:*]*", &["", "anything goes"], &["a:b", "a*b"]),
        ];
        assert_eq!(
            cases.len(),
            PATTERN_COUNT,
            "a model pattern has no test case"
        );
        for (java, accepted, rejected) in cases {
            let id = PATTERNS.iter().position(|p| p.java == *java);
            let id = u16::try_from(id.unwrap_or_else(|| panic!("{java} not in model"))).unwrap();
            for text in *accepted {
                assert!(pattern_matches(id, text), "{java} should accept {text:?}");
            }
            for text in *rejected {
                assert!(!pattern_matches(id, text), "{java} should reject {text:?}");
            }
        }
    }

    #[test]
    fn operations_are_sorted_and_found() {
        assert_eq!(OPERATIONS.len(), 57);
        assert!(OPERATIONS.windows(2).all(|w| w[0].name < w[1].name));
        for op in &OPERATIONS {
            assert!(std::ptr::eq(operation(op.name).unwrap(), op));
        }
        assert!(operation("putRecords").is_none());
    }
}
