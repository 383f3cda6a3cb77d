//! `Value`: a decoded request or a response to encode, independent of the wire format.

/// A decoded request or response document, shape-directed: blobs and timestamps are typed.
///
/// Maps keep their members in order; `Null` members of a map are omitted when encoding, so a
/// response can carry optional members as `Null` (see [`MapBuilder::with_opt`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON null / CBOR null or undefined; for a member, the same as absent.
    Null,
    /// A boolean.
    Bool(bool),
    /// An `integer` or `long` shape.
    Int(i64),
    /// A `double` or `float` shape.
    Float(f64),
    /// A string shape (including enums).
    Str(String),
    /// A blob shape: base64 in JSON, a byte string in CBOR.
    Blob(Vec<u8>),
    /// Epoch seconds with a millisecond fraction.
    Timestamp(f64),
    /// A list shape.
    List(Vec<Value>),
    /// A structure or map shape, members in order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// Starts building a `Map` value.
    pub fn map() -> MapBuilder {
        MapBuilder::default()
    }

    /// A timestamp from epoch milliseconds.
    pub fn timestamp_ms(ms: i64) -> Value {
        Value::Timestamp(ms as f64 / 1000.0)
    }

    /// The member `member` of a map; `None` when absent, `Null`, or when `self` is not a map.
    pub fn get(&self, member: &str) -> Option<&Value> {
        match self {
            Value::Map(members) => members
                .iter()
                .find(|(name, _)| name == member)
                .map(|(_, value)| value)
                .filter(|value| !value.is_null()),
            _ => None,
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The number of an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The number of a `Float` or an `Int`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(n) => Some(*n as f64),
            _ => None,
        }
    }

    /// The flag of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The bytes of a `Blob`.
    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The items of a `List`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The members of a `Map`, in order (including `Null` ones).
    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(members) => Some(members),
            _ => None,
        }
    }

    /// The epoch seconds of a `Timestamp`.
    pub fn as_timestamp(&self) -> Option<f64> {
        match self {
            Value::Timestamp(secs) => Some(*secs),
            _ => None,
        }
    }

    /// The epoch milliseconds of a `Timestamp`, rounded to the nearest millisecond.
    pub fn as_timestamp_ms(&self) -> Option<i64> {
        self.as_timestamp().map(seconds_to_ms)
    }
}

/// Epoch seconds to whole milliseconds; saturates outside `i64` (an `as` cast does).
pub(crate) fn seconds_to_ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

/// Builds a `Value::Map` member by member.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapBuilder {
    members: Vec<(String, Value)>,
}

impl MapBuilder {
    /// Adds a member.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> MapBuilder {
        self.members.push((name.into(), value.into()));
        self
    }

    /// Adds a member only when `value` is `Some`.
    pub fn with_opt<V: Into<Value>>(self, name: impl Into<String>, value: Option<V>) -> MapBuilder {
        match value {
            Some(value) => self.with(name, value),
            None => self,
        }
    }

    /// Finishes the map.
    pub fn build(self) -> Value {
        Value::Map(self.members)
    }
}

impl From<MapBuilder> for Value {
    fn from(builder: MapBuilder) -> Value {
        builder.build()
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Str(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Str(text)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Int(n.into())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Int(n.into())
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Value {
        Value::List(items)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Value {
        Value::Blob(bytes)
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Value {
        Value::Blob(bytes.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Value {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(members: I) -> Value {
        Value::Map(
            members
                .into_iter()
                .map(|(name, value)| (name.into(), value))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_accessors() {
        let v = Value::map()
            .with("StreamName", "s")
            .with("ShardCount", 2)
            .with_opt("NextToken", None::<String>)
            .with_opt("HasMore", Some(true))
            .with("Data", vec![1u8, 2])
            .with("Items", vec![Value::from("a")])
            .with("Nothing", Value::Null)
            .with("At", Value::timestamp_ms(1_506_440_188_749))
            .build();
        assert_eq!(v.get("StreamName").and_then(Value::as_str), Some("s"));
        assert_eq!(v.get("ShardCount").and_then(Value::as_i64), Some(2));
        assert_eq!(v.get("NextToken"), None);
        assert_eq!(v.get("Nothing"), None);
        assert_eq!(v.get("HasMore").and_then(Value::as_bool), Some(true));
        assert_eq!(v.get("Data").and_then(Value::as_blob), Some(&[1u8, 2][..]));
        assert_eq!(
            v.get("Items").and_then(Value::as_list).map(<[Value]>::len),
            Some(1)
        );
        assert_eq!(
            v.get("At").and_then(Value::as_timestamp_ms),
            Some(1_506_440_188_749)
        );
        assert_eq!(Value::from("x").get("x"), None);
        let collected: Value = [("A", Value::from(1))].into_iter().collect();
        assert_eq!(collected, Value::Map(vec![("A".into(), Value::Int(1))]));
    }
}
