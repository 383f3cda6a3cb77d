//! Sequence-number decoding never panics, and what it decodes re-encodes to the same number.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rivulet_engine::seq::{Decoded, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Decoded::Full(parts) = decode(text) {
        let again = encode(parts);
        assert_eq!(decode(again.as_str()), Decoded::Full(parts));
    }
});
