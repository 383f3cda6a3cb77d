//! AWS event-stream framing (`application/vnd.amazon.eventstream`), as SubscribeToShard sends
//! it: each message is a prelude (total length, headers length, CRC32 of those 8 bytes), string
//! headers, a payload, and a CRC32 of everything before it. All integers big-endian.

/// The content type of an event-stream response.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

const HEADER_TYPE_STRING: u8 = 7;

/// One message with string headers.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let headers_len: usize = headers
        .iter()
        .map(|(name, value)| 1 + name.len() + 1 + 2 + value.len())
        .sum();
    let total = 12 + headers_len + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    for (name, value) in headers {
        // Names are ours (short constants); values are bounded by the caller's types.
        out.push(name.len().min(255) as u8);
        out.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
        out.push(HEADER_TYPE_STRING);
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An event message: `:message-type event`, its `:event-type` and payload content type.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Vec<u8> {
    message(
        &[
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", content_type),
        ],
        payload,
    )
}

/// An exception message: `:message-type exception` and its `:exception-type`.
pub fn exception(exception_type: &str, content_type: &str, payload: &[u8]) -> Vec<u8> {
    message(
        &[
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", content_type),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;
    use aws_smithy_types::event_stream::HeaderValue;

    #[test]
    fn the_sdk_decoder_reads_our_messages() {
        let bytes = event(
            "SubscribeToShardEvent",
            "application/x-amz-json-1.1",
            br#"{"Records":[]}"#,
        );
        let mut buf = bytes.as_slice();
        let message = read_message_from(&mut buf).expect("valid message");
        assert!(buf.is_empty());
        assert_eq!(message.payload().as_ref(), br#"{"Records":[]}"#);
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .map(|h| h.value().clone())
        };
        assert_eq!(
            header(":event-type"),
            Some(HeaderValue::String("SubscribeToShardEvent".into()))
        );
        assert_eq!(
            header(":message-type"),
            Some(HeaderValue::String("event".into()))
        );
        // A flipped bit fails the checksum.
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(read_message_from(&mut damaged.as_slice()).is_err());
        let empty = exception(
            "ResourceInUseException",
            "application/x-amz-json-1.1",
            b"{}",
        );
        assert!(read_message_from(&mut empty.as_slice()).is_ok());
    }
}
