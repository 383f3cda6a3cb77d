//! What a delivered object holds: records framed by the channel's record format, compressed,
//! and the object's key from the channel's template.

use std::io::Write;

use rivulet_engine::channels::{KEY_TEMPLATE_DEFAULT, KeyPart, RecordFormat, parse_key_template};

/// Why a record cannot be delivered: the dead letter's `errorCode` and `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

/// Appends `data` to `out` framed by `format`, or says why it cannot be delivered:
/// - JSON: a JSON document per line; one written over several lines is written compactly;
/// - STRING: UTF-8 text per line, without line breaks of its own;
/// - BYTE_ARRAY: a 4-byte big-endian length, then the bytes as they are.
pub fn frame(format: RecordFormat, data: &[u8], out: &mut Vec<u8>) -> Result<(), Rejection> {
    match format {
        RecordFormat::Json | RecordFormat::GsrJson => {
            let value: serde_json::Value =
                serde_json::from_slice(data).map_err(|error| Rejection {
                    code: "DESERIALIZATION_ERROR",
                    message: format!("The record is not valid JSON: {error}."),
                })?;
            if data.contains(&b'\n') || data.contains(&b'\r') {
                // serde_json writes a document on one line.
                serde_json::to_writer(&mut *out, &value).map_err(|error| Rejection {
                    code: "DESERIALIZATION_ERROR",
                    message: format!("The record could not be written: {error}."),
                })?;
            } else {
                out.extend_from_slice(trim_ascii(data));
            }
            out.push(b'\n');
        }
        RecordFormat::String => {
            let text = std::str::from_utf8(data).map_err(|error| Rejection {
                code: "DESERIALIZATION_ERROR",
                message: format!("The record is not valid UTF-8: {error}."),
            })?;
            if text.contains(['\n', '\r']) {
                return Err(Rejection {
                    code: "INVALID_RECORD",
                    message: "A STRING record holding a line break cannot be delivered one \
                              record per line."
                        .to_string(),
                });
            }
            out.extend_from_slice(data);
            out.push(b'\n');
        }
        RecordFormat::ByteArray => {
            let length = u32::try_from(data.len()).map_err(|_| Rejection {
                code: "INVALID_RECORD",
                message: "The record is too large.".to_string(),
            })?;
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

fn trim_ascii(data: &[u8]) -> &[u8] {
    data.trim_ascii()
}

/// Compresses an object's body (`CompressionType`), and its key's extension.
pub fn compress(compression: &str, body: Vec<u8>) -> std::io::Result<Vec<u8>> {
    match compression {
        "GZIP" => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::default(),
            );
            encoder.write_all(&body)?;
            encoder.finish()
        }
        "ZSTD" => zstd::bulk::compress(&body, 3),
        _ => Ok(body),
    }
}

/// The extension `!{extension}` stands for.
pub fn extension(compression: &str) -> &'static str {
    match compression {
        "GZIP" => ".gz",
        "ZSTD" => ".zst",
        _ => "",
    }
}

/// What a key template's variables stand for in one object.
pub struct KeyContext<'a> {
    pub channel_name: &'a str,
    pub channel_id: &'a str,
    pub stream_name: &'a str,
    /// The object's time, in milliseconds since the epoch (UTC).
    pub time_ms: i64,
    pub compression: &'a str,
    /// The unique suffix AWS appends to every key (before the extension).
    pub suffix: &'a str,
}

/// The key of an object: the template expanded, the unique suffix, then the extension.
pub fn object_key(template: Option<&str>, context: &KeyContext<'_>) -> String {
    let template = template.unwrap_or(KEY_TEMPLATE_DEFAULT);
    let time = time::OffsetDateTime::from_unix_timestamp(context.time_ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut key = String::new();
    let mut ending = String::new();
    // The template was checked when the channel was created.
    for part in parse_key_template(template).unwrap_or_default() {
        match part {
            KeyPart::Literal(text) => key.push_str(text),
            KeyPart::Variable(name) => match name {
                "channel-name" => key.push_str(context.channel_name),
                "channel-id" => key.push_str(context.channel_id),
                "stream-name" => key.push_str(context.stream_name),
                "yyyy" => key.push_str(&format!("{:04}", time.year())),
                "yy" => key.push_str(&format!("{:02}", time.year().rem_euclid(100))),
                "MM" => key.push_str(&format!("{:02}", u8::from(time.month()))),
                "dd" => key.push_str(&format!("{:02}", time.day())),
                "HH" => key.push_str(&format!("{:02}", time.hour())),
                "mm" => key.push_str(&format!("{:02}", time.minute())),
                _ => {}
            },
            KeyPart::Extension(None) => ending.push_str(extension(context.compression)),
            KeyPart::Extension(Some(literal)) => ending.push_str(literal),
        }
    }
    key.push_str(context.suffix);
    key.push_str(&ending);
    key
}

/// The dead-letter key: under the error prefix, by hour, JSON lines.
pub fn dead_letter_key(prefix: &str, context: &KeyContext<'_>) -> String {
    let template = "!{yyyy}/!{MM}/!{dd}/!{HH}/!{channel-name}-!{channel-id}-errors-!{yyyy}-!{MM}-\
                    !{dd}-!{HH}-!{mm}!{extension:.json}";
    let plain = KeyContext {
        compression: "NONE",
        ..*context
    };
    format!("{prefix}{}", object_key(Some(template), &plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(compression: &str) -> KeyContext<'_> {
        KeyContext {
            channel_name: "orders",
            channel_id: "abc",
            stream_name: "s",
            time_ms: 1_767_323_640_000, // 2026-01-02T03:14:00Z
            compression,
            suffix: "-x",
        }
    }

    #[test]
    fn keys_expand_the_template_then_the_suffix_then_the_extension() {
        assert_eq!(
            object_key(None, &context("GZIP")),
            "kinesis-channel/orders/abc/2026/01/02/03/orders-abc-2026-01-02-03-14-x.gz"
        );
        assert_eq!(
            object_key(Some("!{stream-name}/!{yy}"), &context("NONE")),
            "s/26-x"
        );
        assert_eq!(
            dead_letter_key("kinesis-channel/errors/orders/abc/", &context("ZSTD")),
            "kinesis-channel/errors/orders/abc/2026/01/02/03/orders-abc-errors-2026-01-02-03-14-x.json"
        );
    }

    #[test]
    fn records_are_framed_by_format() {
        let mut out = Vec::new();
        frame(RecordFormat::Json, b"{\"a\": 1}", &mut out).unwrap();
        frame(RecordFormat::Json, b"{\n \"b\": [1, 2]\n}", &mut out).unwrap();
        assert_eq!(out, b"{\"a\": 1}\n{\"b\":[1,2]}\n");
        assert_eq!(
            frame(RecordFormat::Json, b"nope", &mut out)
                .unwrap_err()
                .code,
            "DESERIALIZATION_ERROR"
        );
        let mut out = Vec::new();
        frame(RecordFormat::String, "héllo".as_bytes(), &mut out).unwrap();
        assert!(frame(RecordFormat::String, b"a\nb", &mut out).is_err());
        assert!(frame(RecordFormat::String, &[0xff], &mut out).is_err());
        assert_eq!(out, "héllo\n".as_bytes());
        let mut out = Vec::new();
        frame(RecordFormat::ByteArray, &[0, 10, 255], &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 3, 0, 10, 255]);
    }

    #[test]
    fn compression_round_trips() {
        let body = b"line\n".repeat(1000);
        let gz = compress("GZIP", body.clone()).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, body);
        let zst = compress("ZSTD", body.clone()).unwrap();
        assert_eq!(zstd::bulk::decompress(&zst, body.len()).unwrap(), body);
        assert_eq!(compress("NONE", body.clone()).unwrap(), body);
    }
}
