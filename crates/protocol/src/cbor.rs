//! CBOR 1.1 (as the Java SDK speaks it): a shape-directed decoder and the encoder.
//!
//! Requests may use indefinite lengths for maps, arrays, text and byte strings (the Java SDK
//! sends indefinite-length maps). Timestamps are tag 1 around an integer of epoch
//! **milliseconds** in both directions — not RFC 8949's seconds; the Java SDK depends on it. A
//! floating-point timestamp is read as seconds, the RFC's meaning, since the Java SDK never
//! sends one. Responses use definite lengths.

use std::borrow::Cow;

use minicbor::Decoder;
use minicbor::data::{Tag, Type};

use crate::Format;
use crate::decode::{
    DEPTH_MAX, StructBuilder, finish_map, from_float, from_integer, from_text, member_index,
};
use crate::error::{DecodeError, Found, mismatch};
use crate::model::{Kind, NO_SHAPE, Shape, shape};
use crate::value::Value;
use crate::writer::Writer;

/// The break byte that ends an indefinite-length item.
const BREAK: u8 = 0xff;
/// Preallocation cap for definite lengths, which a hostile body can set to anything.
const PREALLOCATE_MAX: usize = 64;

/// Decodes `body` as the structure `input` (`NO_SHAPE`: any map, nothing kept). The item must
/// be a map (an array is a wrong type); an empty body, a scalar or anything not well-formed is
/// malformed.
pub(crate) fn decode(input: u16, body: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder::new(body);
    let top = d.datatype()?;
    if !is_document(top) {
        return Err(DecodeError::Malformed);
    }
    let value = if input == NO_SHAPE {
        if !matches!(top, Type::Map | Type::MapIndef) {
            return Err(DecodeError::Malformed);
        }
        d.skip()?;
        Value::Map(Vec::new())
    } else {
        value(&mut d, shape(input), 0)?
    };
    if d.position() != body.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}

/// Checks that `body` is one well-formed CBOR map or array, whatever its contents.
pub(crate) fn check(body: &[u8]) -> Result<(), DecodeError> {
    let mut d = Decoder::new(body);
    if !is_document(d.datatype()?) {
        return Err(DecodeError::Malformed);
    }
    d.skip()?;
    if d.position() != body.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(())
}

/// Whether an item of this type can be a request document (a map, or an array that is then
/// a wrong type); scalars are not.
fn is_document(datatype: Type) -> bool {
    matches!(
        datatype,
        Type::Map | Type::MapIndef | Type::Array | Type::ArrayIndef
    )
}

/// `{"__type": code}` as an indefinite-length map, as AWS writes its framework's errors.
pub(crate) fn encode_indefinite_error(code: &str) -> Vec<u8> {
    let mut members = Writer::new(Format::Cbor, code.len() + 10);
    members.str("__type").str(code);
    let members = members.finish();
    let mut out = Vec::with_capacity(members.len() + 2);
    out.push(0xbf);
    out.extend_from_slice(&members);
    out.push(BREAK);
    out
}

/// Decodes one item for `shape`, typed by the shape.
fn value(d: &mut Decoder<'_>, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
    if depth > DEPTH_MAX {
        return Err(DecodeError::Malformed);
    }
    // Tags only matter for timestamps, where tag 1 is expected; others are looked through.
    let mut datatype = d.datatype()?;
    while datatype == Type::Tag {
        let _: Tag = d.tag()?;
        datatype = d.datatype()?;
    }
    match datatype {
        Type::Null => d.null().map(|()| Value::Null).map_err(Into::into),
        Type::Undefined => d.undefined().map(|()| Value::Null).map_err(Into::into),
        Type::Bool => {
            let b = d.bool()?;
            match shape.kind {
                Kind::Boolean => Ok(Value::Bool(b)),
                kind => Err(mismatch(kind, Found::Bool)),
            }
        }
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => {
            let n = i128::from(d.int()?);
            from_integer(shape, n, true, || n.to_string())
        }
        Type::F16 | Type::F32 | Type::F64 => {
            let f = d.f64()?;
            from_float(shape, f, || format!("{f:?}"))
        }
        Type::String | Type::StringIndef => {
            let text = text(d, datatype)?;
            from_text(shape, text)
        }
        Type::Bytes | Type::BytesIndef => {
            let bytes = bytes(d, datatype)?;
            match shape.kind {
                Kind::Blob => Ok(Value::Blob(bytes.into_owned())),
                kind => Err(mismatch(kind, Found::Bytes)),
            }
        }
        Type::Array | Type::ArrayIndef => match shape.kind {
            Kind::List => list(d, shape, depth),
            kind => Err(mismatch(kind, Found::List)),
        },
        Type::Map | Type::MapIndef => match shape.kind {
            Kind::Structure => structure(d, shape, depth),
            Kind::Map => map(d, shape, depth),
            kind => Err(mismatch(kind, Found::Map)),
        },
        Type::Simple | Type::Tag | Type::Break | Type::Unknown(_) => Err(DecodeError::Malformed),
    }
}

/// Counts down the items of a definite- or indefinite-length array or map.
struct Items(Option<u64>);

impl Items {
    /// Whether another item follows; consumes the break of an indefinite item.
    fn next(&mut self, d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
        match &mut self.0 {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if d.input().get(d.position()) == Some(&BREAK) {
                    d.set_position(d.position() + 1);
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }

    fn capacity(&self) -> usize {
        self.0.map_or(0, |n| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(PREALLOCATE_MAX)
        })
    }
}

fn structure(d: &mut Decoder<'_>, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
    let mut items = Items(d.map()?);
    let mut builder = StructBuilder::new();
    while items.next(d)? {
        let key = key(d)?;
        match member_index(shape, &key) {
            Some(index) => {
                let member = &shape.members[index];
                let value = value(d, crate::model::shape(member.shape), depth + 1)?;
                builder.set(index, member.name, value);
            }
            // AWS ignores members it does not know.
            None => d.skip()?,
        }
    }
    Ok(builder.build())
}

fn map(d: &mut Decoder<'_>, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
    let mut items = Items(d.map()?);
    let value_shape = crate::model::shape(shape.element);
    let mut entries = Vec::with_capacity(items.capacity());
    while items.next(d)? {
        let key = key(d)?.into_owned();
        entries.push((key, value(d, value_shape, depth + 1)?));
    }
    Ok(finish_map(entries))
}

fn list(d: &mut Decoder<'_>, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
    let mut items = Items(d.array()?);
    let element = crate::model::shape(shape.element);
    let mut values = Vec::with_capacity(items.capacity());
    while items.next(d)? {
        values.push(value(d, element, depth + 1)?);
    }
    Ok(Value::List(values))
}

/// A map key: text, definite or indefinite.
fn key<'b>(d: &mut Decoder<'b>) -> Result<Cow<'b, str>, DecodeError> {
    match d.datatype()? {
        datatype @ (Type::String | Type::StringIndef) => text(d, datatype),
        _ => Err(DecodeError::Malformed),
    }
}

/// A text string of type `datatype` (definite or indefinite) at the decoder's position.
fn text<'b>(d: &mut Decoder<'b>, datatype: Type) -> Result<Cow<'b, str>, DecodeError> {
    if datatype == Type::String {
        return Ok(Cow::Borrowed(d.str()?));
    }
    let mut out = String::new();
    for chunk in d.str_iter()? {
        out.push_str(chunk?);
    }
    Ok(Cow::Owned(out))
}

/// A byte string of type `datatype` (definite or indefinite) at the decoder's position.
fn bytes<'b>(d: &mut Decoder<'b>, datatype: Type) -> Result<Cow<'b, [u8]>, DecodeError> {
    if datatype == Type::Bytes {
        return Ok(Cow::Borrowed(d.bytes()?));
    }
    let mut out = Vec::new();
    for chunk in d.bytes_iter()? {
        out.extend_from_slice(chunk?);
    }
    Ok(Cow::Owned(out))
}

/// Encodes `value` as CBOR with definite lengths. `Null` members of maps are left out.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut writer = Writer::new(Format::Cbor, 256);
    writer.value(value);
    writer.finish()
}
