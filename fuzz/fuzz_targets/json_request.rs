//! JSON request decoding never panics, whatever the body, for every operation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rivulet_protocol::{Format, decode_request};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let operations: Vec<&str> = rivulet_protocol::operation_names().collect();
    let operation = operations[usize::from(selector) % operations.len()];
    let _ = decode_request(operation, Format::Json, body);
});
