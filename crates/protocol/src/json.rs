//! JSON 1.1: a shape-directed decoder (one pass, typed as it goes) and the encoder.
//!
//! Hand-written rather than serde_json so that type errors carry AWS's texts, unknown members
//! are skipped without building values, and blobs decode straight from the body's bytes.

use std::borrow::Cow;

use crate::Format;
use crate::decode::{
    DEPTH_MAX, StructBuilder, finish_map, from_float, from_integer, from_text, member_index,
};
use crate::error::{DecodeError, Found, mismatch};
use crate::model::{Kind, NO_SHAPE, Shape, shape};
use crate::value::Value;
use crate::writer::Writer;

/// Decodes `body` as the structure `input` (`NO_SHAPE`: any object, nothing kept). The
/// document must be an object (an array is a wrong type); an empty body, a scalar or anything
/// not well-formed is malformed.
pub(crate) fn decode(input: u16, body: &[u8]) -> Result<Value, DecodeError> {
    let mut parser = Parser::new(body)?;
    parser.skip_ws();
    if !matches!(parser.peek(), Some(b'{' | b'[')) {
        return Err(DecodeError::Malformed);
    }
    let value = if input == NO_SHAPE {
        if parser.peek() != Some(b'{') {
            return Err(DecodeError::Malformed);
        }
        parser.skip_value(0)?;
        Value::Map(Vec::new())
    } else {
        parser.value(shape(input), 0)?
    };
    parser.skip_ws();
    if parser.pos != body.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(value)
}

/// Checks that `body` is one well-formed JSON object or array, whatever its members.
pub(crate) fn check(body: &[u8]) -> Result<(), DecodeError> {
    let mut parser = Parser::new(body)?;
    parser.skip_ws();
    if !matches!(parser.peek(), Some(b'{' | b'[')) {
        return Err(DecodeError::Malformed);
    }
    parser.skip_value(0)?;
    parser.skip_ws();
    if parser.pos != body.len() {
        return Err(DecodeError::Malformed);
    }
    Ok(())
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// A scanned JSON number: its text and whether it has a fraction or an exponent.
struct Number<'a> {
    text: &'a str,
    integral: bool,
}

impl<'a> Parser<'a> {
    fn new(body: &'a [u8]) -> Result<Parser<'a>, DecodeError> {
        // Jackson rejects malformed UTF-8; checking once up front lets the parser slice freely.
        let text = std::str::from_utf8(body).map_err(|_| DecodeError::Malformed)?;
        Ok(Parser {
            text,
            bytes: body,
            pos: 0,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), DecodeError> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(DecodeError::Malformed)
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), DecodeError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(DecodeError::Malformed)
        }
    }

    /// Decodes one value for `shape`, typed by the shape.
    fn value(&mut self, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
        if depth > DEPTH_MAX {
            return Err(DecodeError::Malformed);
        }
        self.skip_ws();
        match self.peek() {
            Some(b'n') => self.literal("null").map(|()| Value::Null),
            Some(b'{') => match shape.kind {
                Kind::Structure => self.structure(shape, depth),
                Kind::Map => self.map(shape, depth),
                kind => Err(mismatch(kind, Found::Map)),
            },
            Some(b'[') => match shape.kind {
                Kind::List => self.list(shape, depth),
                kind => Err(mismatch(kind, Found::List)),
            },
            Some(b'"') => {
                if shape.kind == Kind::Blob {
                    return self.blob();
                }
                let text = self.string()?;
                from_text(shape, text)
            }
            Some(b't') => {
                self.literal("true")?;
                match shape.kind {
                    Kind::Boolean => Ok(Value::Bool(true)),
                    kind => Err(mismatch(kind, Found::Bool)),
                }
            }
            Some(b'f') => {
                self.literal("false")?;
                match shape.kind {
                    Kind::Boolean => Ok(Value::Bool(false)),
                    kind => Err(mismatch(kind, Found::Bool)),
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let number = self.number()?;
                let text = || number.text.to_owned();
                if number.integral {
                    match number.text.parse::<i128>() {
                        Ok(n) => from_integer(shape, n, false, text),
                        // Beyond i128: out of range for every integer shape.
                        Err(_) => match shape.kind {
                            Kind::Double | Kind::Timestamp => {
                                let f = number.text.parse().map_err(|_| DecodeError::Malformed)?;
                                from_float(shape, f, text)
                            }
                            _ => from_integer(shape, i128::MAX, false, text),
                        },
                    }
                } else {
                    let f: f64 = number.text.parse().map_err(|_| DecodeError::Malformed)?;
                    from_float(shape, f, text)
                }
            }
            _ => Err(DecodeError::Malformed),
        }
    }

    fn structure(&mut self, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
        self.pos += 1; // '{'
        let mut builder = StructBuilder::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(builder.build());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(DecodeError::Malformed);
            }
            let key = self.string()?;
            self.expect(b':')?;
            match member_index(shape, &key) {
                Some(index) => {
                    let member = &shape.members[index];
                    let value = self.value(crate::model::shape(member.shape), depth + 1)?;
                    builder.set(index, member.name, value);
                }
                // AWS ignores members it does not know.
                None => self.skip_value(depth + 1)?,
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(builder.build());
                }
                _ => return Err(DecodeError::Malformed),
            }
        }
    }

    fn map(&mut self, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
        self.pos += 1; // '{'
        let value_shape = crate::model::shape(shape.element);
        let mut entries = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Map(entries));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(DecodeError::Malformed);
            }
            let key = self.string()?.into_owned();
            self.expect(b':')?;
            let value = self.value(value_shape, depth + 1)?;
            entries.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(finish_map(entries));
                }
                _ => return Err(DecodeError::Malformed),
            }
        }
    }

    fn list(&mut self, shape: &'static Shape, depth: u32) -> Result<Value, DecodeError> {
        self.pos += 1; // '['
        let element = crate::model::shape(shape.element);
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::List(items));
        }
        loop {
            items.push(self.value(element, depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                _ => return Err(DecodeError::Malformed),
            }
        }
    }

    /// A blob: base64 decoded straight from the body unless the string has escapes.
    fn blob(&mut self) -> Result<Value, DecodeError> {
        let (raw, escaped) = self.scan_string()?;
        let text = if escaped {
            unescape(raw)?
        } else {
            Cow::Borrowed(raw)
        };
        crate::decode::blob_from_base64(&text).map(Value::Blob)
    }

    /// A string token, unescaped.
    fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let (raw, escaped) = self.scan_string()?;
        if escaped {
            unescape(raw)
        } else {
            Ok(Cow::Borrowed(raw))
        }
    }

    /// Scans a string token starting at its opening quote; returns its raw contents and whether
    /// they contain escapes.
    fn scan_string(&mut self) -> Result<(&'a str, bool), DecodeError> {
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        let bytes = self.bytes;
        loop {
            // Eight bytes at a time while none is a quote, a backslash or a control character:
            // blobs are long runs of base64, and this is most of the parsing time.
            while let Some(chunk) = bytes.get(i..i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                if needs_attention(u64::from_le_bytes(word)) {
                    break;
                }
                i += 8;
            }
            match bytes.get(i) {
                None => return Err(DecodeError::Malformed),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(&b) if b < 0x20 => return Err(DecodeError::Malformed),
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        // Quotes and backslashes are ASCII, so `start..i` lies on character boundaries.
        let raw = self.text.get(start..i).ok_or(DecodeError::Malformed)?;
        Ok((raw, escaped))
    }

    fn number(&mut self) -> Result<Number<'a>, DecodeError> {
        let start = self.pos;
        let digits = |p: &mut Parser<'a>| {
            let from = p.pos;
            while p.peek().is_some_and(|b| b.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return Err(DecodeError::Malformed);
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integral = false;
            if digits(self) == 0 {
                return Err(DecodeError::Malformed);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integral = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(DecodeError::Malformed);
            }
        }
        let text = self
            .text
            .get(start..self.pos)
            .ok_or(DecodeError::Malformed)?;
        Ok(Number { text, integral })
    }

    /// Skips one value of any type, checking it is well-formed.
    fn skip_value(&mut self, depth: u32) -> Result<(), DecodeError> {
        if depth > DEPTH_MAX {
            return Err(DecodeError::Malformed);
        }
        self.skip_ws();
        match self.peek() {
            Some(b'n') => self.literal("null"),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'"') => self.scan_string().and_then(|(raw, escaped)| {
                if escaped {
                    unescape(raw).map(drop)
                } else {
                    Ok(())
                }
            }),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(open @ (b'{' | b'[')) => {
                self.pos += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                self.skip_ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.skip_ws();
                        if self.peek() != Some(b'"') {
                            return Err(DecodeError::Malformed);
                        }
                        self.skip_value(depth + 1)?;
                        self.expect(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b) if b == close => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(DecodeError::Malformed),
                    }
                }
            }
            _ => Err(DecodeError::Malformed),
        }
    }
}

/// Whether any byte of `word` is `"`, `\` or below 0x20 (the classic SWAR zero-byte test).
fn needs_attention(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control != 0
}

/// Resolves the escapes of a string token's raw contents.
fn unescape(raw: &str) -> Result<Cow<'_, str>, DecodeError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = match chars.next().ok_or(DecodeError::Malformed)? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let unit = hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must pair with a following `\uDC00`-`\uDFFF`.
                    let rest = chars.as_str();
                    if let Some(low_text) = rest.strip_prefix("\\u") {
                        let mut low_chars = low_text.chars();
                        let low = hex4(&mut low_chars)?;
                        if (0xDC00..0xE000).contains(&low) {
                            chars = low_chars;
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                            continue;
                        }
                    }
                }
                // A lone surrogate cannot be UTF-8; Java would later write it as a replacement.
                char::from_u32(unit).unwrap_or('\u{FFFD}')
            }
            _ => return Err(DecodeError::Malformed),
        };
        out.push(escaped);
    }
    Ok(Cow::Owned(out))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, DecodeError> {
    let mut unit = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or(DecodeError::Malformed)?;
        unit = unit * 16 + digit;
    }
    Ok(unit)
}

/// Encodes `value` as JSON. `Null` members of maps are left out.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut writer = Writer::new(Format::Json, 256);
    writer.value(value);
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_finds_special_bytes() {
        assert!(!needs_attention(u64::from_le_bytes(*b"QUJDRA==")));
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = special;
                assert!(
                    needs_attention(u64::from_le_bytes(word)),
                    "{special} at {at}"
                );
            }
        }
        assert!(!needs_attention(u64::from_le_bytes([
            0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'
        ])));
    }

    #[test]
    fn timestamps_are_plain_decimals() {
        let cases: &[(f64, &str)] = &[
            (1_506_440_188.749, "1506440188.749"),
            (1_506_440_188.0, "1506440188"),
            (1_506_440_188.5, "1506440188.5"),
            (1_506_440_188.05, "1506440188.05"),
            (0.0, "0"),
            (-1.5, "-1.5"),
            (1e11, "100000000000"),
        ];
        for (secs, expected) in cases {
            let out = encode(&Value::Timestamp(*secs));
            assert_eq!(String::from_utf8(out).unwrap(), *expected);
        }
    }

    #[test]
    fn strings_are_escaped() {
        let out = encode(&Value::Str("a\"b\\c\nd\u{1}é\u{2028}".into()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é\u{2028}\""
        );
    }

    #[test]
    fn unescapes_surrogate_pairs_and_lone_surrogates() {
        assert_eq!(unescape("\\ud83d\\ude00x").unwrap(), "😀x");
        assert_eq!(unescape("\\ud83dx").unwrap(), "\u{FFFD}x");
        assert_eq!(unescape("\\/\\b\\f").unwrap(), "/\u{8}\u{c}");
        assert!(unescape("\\x").is_err());
        assert!(unescape("\\u12").is_err());
    }
}
