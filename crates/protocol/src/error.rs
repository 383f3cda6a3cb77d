//! AWS error envelopes, and the decoding failures that become them.

use crate::model::Kind;

/// An error as AWS sends it: an exception name, an optional message and an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {}", message.as_deref().unwrap_or(""))]
pub struct AwsError {
    /// The exception name, e.g. `ValidationException`; sent as `__type`.
    pub code: String,
    /// The message; `None` sends no message member at all.
    pub message: Option<String>,
    /// The HTTP status.
    pub status: u16,
    /// Send the message as `Message` rather than `message` (AWS does for serialization errors).
    pub capital_message: bool,
}

impl AwsError {
    /// A client error (HTTP 400) with a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> AwsError {
        AwsError {
            code: code.into(),
            message: Some(message.into()),
            status: 400,
            capital_message: false,
        }
    }

    /// A client error (HTTP 400) without a message, e.g. `{"__type":"SerializationException"}`.
    pub fn without_message(code: impl Into<String>) -> AwsError {
        AwsError {
            code: code.into(),
            message: None,
            status: 400,
            capital_message: false,
        }
    }

    /// `InternalFailure` (HTTP 500).
    pub fn internal(message: impl Into<String>) -> AwsError {
        AwsError {
            status: 500,
            ..AwsError::new("InternalFailure", message)
        }
    }

    /// `ValidationException` with `message`.
    pub fn validation(message: impl Into<String>) -> AwsError {
        AwsError::new("ValidationException", message)
    }

    /// `UnknownOperationException`, without a message, as AWS answers an unknown target.
    pub fn unknown_operation() -> AwsError {
        AwsError::without_message("UnknownOperationException")
    }

    /// `SerializationException` without a message: the body did not parse.
    pub fn serialization() -> AwsError {
        AwsError::without_message("SerializationException")
    }

    /// `SerializationException` with a capital `Message`: a member had the wrong type.
    pub fn serialization_type(message: impl Into<String>) -> AwsError {
        AwsError {
            capital_message: true,
            ..AwsError::new("SerializationException", message)
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not well-formed JSON or CBOR (or nested too deep).
    #[error("malformed body")]
    Malformed,
    /// Well-formed, but a member has the wrong type; the text is AWS's (Jackson's) message.
    #[error("{0}")]
    Type(String),
}

impl From<DecodeError> for AwsError {
    fn from(error: DecodeError) -> AwsError {
        match error {
            DecodeError::Malformed => AwsError::serialization(),
            DecodeError::Type(message) => AwsError::serialization_type(message),
        }
    }
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(_: minicbor::decode::Error) -> DecodeError {
        DecodeError::Malformed
    }
}

/// What the body held where a shape expected something else.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found<'a> {
    Bool,
    Number,
    /// A string, with its text (booleans quote it).
    Str(&'a str),
    Bytes,
    List,
    Map,
}

/// The type-mismatch error AWS's Jackson-based deserializer reports for `found` in a `kind` slot.
pub(crate) fn mismatch(kind: Kind, found: Found<'_>) -> DecodeError {
    let class = match found {
        Found::List => return DecodeError::Type("Start of list found where not expected".into()),
        Found::Map => {
            return DecodeError::Type("Start of structure or map found where not expected.".into());
        }
        Found::Bool => "class java.lang.Boolean",
        // How the service's JSON reader holds every number it has not converted yet.
        Found::Number => "class com.amazon.coral.value.json.numbers.TruncatingBigNumber",
        Found::Str(_) => "class java.lang.String",
        Found::Bytes => "class [B",
    };
    let message = match kind {
        Kind::List => "Expected list or null".to_owned(),
        Kind::Map => "Expected map or null".to_owned(),
        Kind::Structure => "Expected null".to_owned(),
        Kind::Boolean => match found {
            // Jackson upper-cases the text it failed to read as a boolean.
            Found::Str(text) => format!(
                "'{}' can not be converted to an Boolean",
                text.to_uppercase()
            ),
            _ => format!("{class} can not be converted to an Boolean"),
        },
        Kind::String => format!("{class} can not be converted to an String"),
        Kind::Integer => format!("{class} can not be converted to an Integer"),
        Kind::Long => format!("{class} can not be converted to an Long"),
        Kind::Double => format!("{class} can not be converted to an Double"),
        Kind::Blob => format!("{class} can not be converted to a Blob"),
        // Timestamps are read only from numbers: numeric text and ISO dates alike are refused.
        Kind::Timestamp => format!("{class} can not be converted to milliseconds since epoch"),
    };
    DecodeError::Type(message)
}

/// Jackson's overflow message for a number outside an `integer` or `long` shape's range.
pub(crate) fn out_of_range(kind: Kind, text: &str) -> DecodeError {
    let (name, min, max) = match kind {
        Kind::Integer => ("int", i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => ("long", i64::MIN, i64::MAX),
    };
    DecodeError::Type(format!(
        "Numeric value ({text}) out of range of {name} ({min} - {max})"
    ))
}

/// The message for a string that is not valid base64, checked as AWS checks it: length first,
/// then the first character outside the alphabet (or a `=` before a non-`=`), then the padding
/// bits of the last symbol.
pub(crate) fn bad_base64(text: &str) -> DecodeError {
    let length = text.encode_utf16().count();
    let reason = if !length.is_multiple_of(4) {
        format!("Base64 encoded length is expected a multiple of 4 bytes but found: {length}")
    } else {
        let mut chars = text.chars().peekable();
        let mut invalid = None;
        while let Some(c) = chars.next() {
            let in_alphabet = c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
            let pad_then_data = c == '=' && chars.peek().is_some_and(|&next| next != '=');
            if !in_alphabet || pad_then_data {
                invalid = Some(c);
                break;
            }
        }
        match invalid {
            Some(c) => format!("Invalid Base64 character: '{c}'"),
            // The misspelling is AWS's.
            None => "Invalid last non-pad Base64 character dectected".to_owned(),
        }
    };
    DecodeError::Type(format!("'{text}' can not be converted to a Blob: {reason}"))
}
