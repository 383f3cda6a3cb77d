//! Shard-iterator parsing never panics and never accepts a token it did not seal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rivulet_engine::token::{Kind, TokenCodec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let codec = TokenCodec::new([42; 32]);
    if let Some(payload) = codec.open(Kind::ShardIterator, text) {
        // Anything accepted must be exactly what sealing that payload produces.
        let sealed = codec.seal(Kind::ShardIterator, &payload);
        let stripped = text.trim_matches('"');
        assert_eq!(sealed, stripped);
    }
});
