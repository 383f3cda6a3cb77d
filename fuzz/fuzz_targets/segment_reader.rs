//! The segment reader never panics on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rivulet_log::decode_segment(data);
});
