//! `Writer`: a response encoder that writes JSON or CBOR straight into a buffer, member by
//! member, so the hot responses (GetRecords, PutRecords) need no intermediate [`Value`] tree.
//! [`Value`] responses are encoded through it too, so both paths produce identical bytes.
//!
//! Containers take their member count up front (CBOR uses definite lengths, as AWS does); JSON
//! ignores it. Debug builds check that the count matches what was written.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::Format;
use crate::decode::BASE64;
use crate::value::{Value, seconds_to_ms};

const TAG_EPOCH: u8 = 0xc1; // CBOR tag 1 (epoch time), one byte.

/// Writes one response document.
pub struct Writer {
    format: Format,
    out: Vec<u8>,
    /// JSON: the next key or value in the current container needs a comma first.
    comma: bool,
    #[cfg(debug_assertions)]
    open: Vec<u64>,
}

impl Writer {
    /// A writer for `format`, with room for `capacity` bytes.
    pub fn new(format: Format, capacity: usize) -> Writer {
        Writer {
            format,
            out: Vec::with_capacity(capacity),
            comma: false,
            #[cfg(debug_assertions)]
            open: Vec::new(),
        }
    }

    /// The encoded document.
    pub fn finish(self) -> Vec<u8> {
        #[cfg(debug_assertions)]
        debug_assert!(self.open.is_empty(), "unclosed containers: {:?}", self.open);
        self.out
    }

    fn item(&mut self) {
        #[cfg(debug_assertions)]
        if let Some(left) = self.open.last_mut() {
            debug_assert!(*left > 0, "more members than announced");
            *left -= 1;
        }
    }

    fn json_separator(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
    }

    fn cbor_head(&mut self, major: u8, n: u64) {
        let major = major << 5;
        match n {
            0..=23 => self.out.push(major | n as u8),
            24..=0xff => self.out.extend_from_slice(&[major | 24, n as u8]),
            0x100..=0xffff => {
                self.out.push(major | 25);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.out.push(major | 26);
                self.out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            _ => {
                self.out.push(major | 27);
                self.out.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    fn open(&mut self, members: usize, json: u8, cbor_major: u8) -> &mut Self {
        match self.format {
            Format::Json => {
                self.json_separator();
                self.out.push(json);
                self.comma = false;
            }
            Format::Cbor => self.cbor_head(cbor_major, members as u64),
        }
        #[cfg(debug_assertions)]
        self.open.push(members as u64);
        self
    }

    fn close(&mut self, json: u8) -> &mut Self {
        #[cfg(debug_assertions)]
        {
            let left = self.open.pop();
            debug_assert_eq!(left, Some(0), "fewer members than announced");
        }
        if self.format == Format::Json {
            self.out.push(json);
            self.comma = true;
        }
        self
    }

    /// Opens a structure or map of exactly `members` members (each a [`Writer::key`] and a
    /// value).
    pub fn begin_map(&mut self, members: usize) -> &mut Self {
        self.item();
        self.open(members, b'{', 5)
    }

    /// Closes the innermost map.
    pub fn end_map(&mut self) -> &mut Self {
        self.close(b'}')
    }

    /// Opens a list of exactly `items` items.
    pub fn begin_list(&mut self, items: usize) -> &mut Self {
        self.item();
        self.open(items, b'[', 4)
    }

    /// Closes the innermost list.
    pub fn end_list(&mut self) -> &mut Self {
        self.close(b']')
    }

    /// A member name; the next call writes its value.
    pub fn key(&mut self, name: &str) -> &mut Self {
        self.item();
        match self.format {
            Format::Json => {
                self.json_separator();
                write_json_string(&mut self.out, name);
                self.out.push(b':');
                self.comma = false;
            }
            Format::Cbor => self.text(name),
        }
        #[cfg(debug_assertions)]
        if let Some(left) = self.open.last_mut() {
            // The value that follows belongs to this member.
            *left += 1;
        }
        self
    }

    fn text(&mut self, text: &str) {
        self.cbor_head(3, text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
    }

    fn scalar(&mut self) {
        self.item();
        if self.format == Format::Json {
            self.json_separator();
            self.comma = true;
        }
    }

    /// A string.
    pub fn str(&mut self, text: &str) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json => write_json_string(&mut self.out, text),
            Format::Cbor => self.text(text),
        }
        self
    }

    /// A blob: base64 in JSON, a byte string in CBOR.
    pub fn blob(&mut self, bytes: &[u8]) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json => {
                self.out.push(b'"');
                let start = self.out.len();
                self.out.resize(start + bytes.len().div_ceil(3) * 4, 0);
                let written = BASE64
                    .encode_slice(bytes, &mut self.out[start..])
                    .unwrap_or(0);
                self.out.truncate(start + written);
                self.out.push(b'"');
            }
            Format::Cbor => {
                self.cbor_head(2, bytes.len() as u64);
                self.out.extend_from_slice(bytes);
            }
        }
        self
    }

    /// An integer.
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json => {
                if n < 0 {
                    self.out.push(b'-');
                }
                let mut buf = itoa_buf();
                self.out
                    .extend_from_slice(format_u64(&mut buf, n.unsigned_abs()));
            }
            Format::Cbor => {
                if n >= 0 {
                    self.cbor_head(0, n as u64);
                } else {
                    self.cbor_head(1, !(n as u64));
                }
            }
        }
        self
    }

    /// A boolean.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json => self
                .out
                .extend_from_slice(if b { b"true" } else { b"false" }),
            Format::Cbor => self.out.push(if b { 0xf5 } else { 0xf4 }),
        }
        self
    }

    /// A double.
    pub fn float(&mut self, f: f64) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json if f.is_finite() => {
                // Display never uses exponent notation: always a valid JSON number.
                let mut text = String::new();
                let _ = write!(text, "{f}");
                self.out.extend_from_slice(text.as_bytes());
            }
            Format::Json => self.out.extend_from_slice(b"null"),
            Format::Cbor => {
                self.out.push(0xfb);
                self.out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
        }
        self
    }

    /// A null.
    pub fn null(&mut self) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json => self.out.extend_from_slice(b"null"),
            Format::Cbor => self.out.push(0xf6),
        }
        self
    }

    /// A timestamp from epoch milliseconds: a plain decimal of seconds in JSON
    /// (`1506440188.749`), tag 1 around integer milliseconds in CBOR.
    pub fn timestamp_ms(&mut self, ms: i64) -> &mut Self {
        self.scalar();
        match self.format {
            Format::Json => {
                if ms < 0 {
                    self.out.push(b'-');
                }
                let abs = ms.unsigned_abs();
                let (whole, frac) = (abs / 1000, abs % 1000);
                let mut buf = itoa_buf();
                self.out.extend_from_slice(format_u64(&mut buf, whole));
                if frac != 0 {
                    let digits = [
                        b'0' + (frac / 100) as u8,
                        b'0' + (frac / 10 % 10) as u8,
                        b'0' + (frac % 10) as u8,
                    ];
                    let keep = if frac % 100 == 0 {
                        1
                    } else if frac % 10 == 0 {
                        2
                    } else {
                        3
                    };
                    self.out.push(b'.');
                    self.out.extend_from_slice(&digits[..keep]);
                }
            }
            Format::Cbor => {
                self.out.push(TAG_EPOCH);
                // The tag wraps the integer; `int` would count a second item.
                if ms >= 0 {
                    self.cbor_head(0, ms as u64);
                } else {
                    self.cbor_head(1, !(ms as u64));
                }
            }
        }
        self
    }

    /// A whole [`Value`]; `Null` members of maps are left out.
    pub fn value(&mut self, value: &Value) -> &mut Self {
        match value {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(*b),
            Value::Int(n) => self.int(*n),
            Value::Float(f) => self.float(*f),
            Value::Str(text) => self.str(text),
            Value::Blob(bytes) => self.blob(bytes),
            Value::Timestamp(secs) if secs.is_finite() => self.timestamp_ms(seconds_to_ms(*secs)),
            Value::Timestamp(_) => self.null(),
            Value::List(items) => {
                self.begin_list(items.len());
                for item in items {
                    self.value(item);
                }
                self.end_list()
            }
            Value::Map(members) => {
                let present = members.iter().filter(|(_, v)| !v.is_null());
                self.begin_map(present.clone().count());
                for (name, member) in present {
                    self.key(name).value(member);
                }
                self.end_map()
            }
        }
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn format_u64(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// A JSON string literal with the escapes RFC 8259 requires.
pub(crate) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most strings (sequence numbers, shard ids, names) need no escape: one pass without an
    // early exit, which compiles to vector compares, then one copy.
    let plain = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        Value::map()
            .with(
                "Records",
                Value::List(vec![
                    Value::map()
                        .with("SequenceNumber", "4959")
                        .with(
                            "ApproximateArrivalTimestamp",
                            Value::timestamp_ms(1_506_440_188_749),
                        )
                        .with("Data", Value::Blob(b"hi\x00there".to_vec()))
                        .with("PartitionKey", "k\"\n\u{1}")
                        .build(),
                ]),
            )
            .with("MillisBehindLatest", -0i64)
            .with_opt::<String>("NextShardIterator", None)
            .with("Flag", Value::Bool(true))
            .with("Big", 1i64 << 40)
            .with("Negative", -25i64)
            .with("Ratio", Value::Float(0.5))
            .build()
    }

    proptest::proptest! {
        #[test]
        fn any_string_reads_back_as_itself(text in "(?s).{0,40}|[ -~]{0,80}") {
            let mut out = Vec::new();
            write_json_string(&mut out, &text);
            let read: String = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(read, text);
        }
    }

    #[test]
    fn json_matches_the_value_encoding() {
        let mut w = Writer::new(Format::Json, 0);
        w.value(&sample());
        let text = String::from_utf8(w.finish()).unwrap();
        assert_eq!(
            text,
            r#"{"Records":[{"SequenceNumber":"4959","ApproximateArrivalTimestamp":1506440188.749,"Data":"aGkAdGhlcmU=","PartitionKey":"k\"\n\u0001"}],"MillisBehindLatest":0,"Flag":true,"Big":1099511627776,"Negative":-25,"Ratio":0.5}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["Records"][0]["PartitionKey"], "k\"\n\u{1}");
    }

    #[test]
    fn cbor_round_trips_through_minicbor() {
        let mut w = Writer::new(Format::Cbor, 0);
        w.value(&sample());
        let bytes = w.finish();
        let mut d = minicbor::Decoder::new(&bytes);
        assert_eq!(d.map().unwrap(), Some(6));
        assert_eq!(d.str().unwrap(), "Records");
        assert_eq!(d.array().unwrap(), Some(1));
        assert_eq!(d.map().unwrap(), Some(4));
        assert_eq!(d.str().unwrap(), "SequenceNumber");
        assert_eq!(d.str().unwrap(), "4959");
        assert_eq!(d.str().unwrap(), "ApproximateArrivalTimestamp");
        assert_eq!(d.tag().unwrap(), minicbor::data::Tag::new(1));
        assert_eq!(d.i64().unwrap(), 1_506_440_188_749);
        assert_eq!(d.str().unwrap(), "Data");
        assert_eq!(d.bytes().unwrap(), b"hi\x00there");
        assert_eq!(d.str().unwrap(), "PartitionKey");
        assert_eq!(d.str().unwrap(), "k\"\n\u{1}");
        assert_eq!(d.str().unwrap(), "MillisBehindLatest");
        assert_eq!(d.i64().unwrap(), 0);
        assert_eq!(d.str().unwrap(), "Flag");
        assert!(d.bool().unwrap());
        assert_eq!(d.str().unwrap(), "Big");
        assert_eq!(d.i64().unwrap(), 1 << 40);
        assert_eq!(d.str().unwrap(), "Negative");
        assert_eq!(d.i64().unwrap(), -25);
        assert_eq!(d.str().unwrap(), "Ratio");
        assert_eq!(d.f64().unwrap(), 0.5);
        assert_eq!(d.position(), bytes.len());
    }

    #[test]
    fn timestamps_keep_only_significant_fraction_digits() {
        for (ms, text) in [
            (1_506_440_188_749, "1506440188.749"),
            (1_506_440_188_500, "1506440188.5"),
            (1_506_440_188_050, "1506440188.05"),
            (1_506_440_188_000, "1506440188"),
            (-1_500, "-1.5"),
        ] {
            let mut w = Writer::new(Format::Json, 0);
            w.timestamp_ms(ms);
            assert_eq!(String::from_utf8(w.finish()).unwrap(), text);
        }
    }
}
