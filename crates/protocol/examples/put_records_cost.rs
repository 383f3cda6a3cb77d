//! Measures decode + validate of a 500 × 100 B PutRecords in both formats (the hot path's
//! budget is well under 100 µs). Run: `cargo run --release -p rivulet-protocol --example
//! put_records_cost`.

use std::time::Instant;

use rivulet_protocol::{Format, Value, decode_request, encode_response};

/// Decodes per measurement; the minimum of several rounds filters out scheduling noise.
const ITERATIONS: u32 = 2_000;
const ROUNDS: u32 = 5;

fn main() {
    let records: Vec<Value> = (0..500)
        .map(|i| {
            Value::map()
                .with("Data", vec![(i % 251) as u8; 100])
                .with("PartitionKey", format!("partition-key-{i:06}"))
                .build()
        })
        .collect();
    let request = Value::map()
        .with("Records", records)
        .with("StreamName", "stream")
        .build();
    for format in [Format::Json, Format::Cbor] {
        let body = encode_response(format, &request);
        let mut best = f64::MAX;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..ITERATIONS {
                let decoded = decode_request("PutRecords", format, std::hint::black_box(&body));
                std::hint::black_box(decoded.is_ok());
            }
            best = best.min(start.elapsed().as_secs_f64() / f64::from(ITERATIONS));
        }
        println!(
            "{format:?}: {} bytes, {:.1} µs per request",
            body.len(),
            best * 1e6
        );
    }
}
