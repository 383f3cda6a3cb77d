//! Sequence-number decoding never panics, and what it decodes re-encodes to the same number, in
//! AWS's layout and in the legacy one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rivulet_engine::seq::{Decoded, Layout, SeqParts, decode, decode_legacy, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Decoded::Aws(parts) = decode(text)
        && let (Ok(created), Ok(arrival)) =
            (u32::try_from(parts.shard_created_s), u32::try_from(parts.arrival_s))
        && u32::from(parts.index_low) == parts.shard_index as u32 & 0xf
    {
        let again = encode(SeqParts {
            shard_created_s: created,
            shard_index: parts.shard_index as u32,
            counter: parts.counter,
            arrival_s: arrival,
            layout: Layout::Aws,
        });
        assert_eq!(decode(again.as_str()), Decoded::Aws(parts));
    }
    if let Some(parts) = decode_legacy(text, 0x1234) {
        assert_eq!(decode_legacy(encode(parts).as_str(), 0x1234), Some(parts));
    }
});
