//! Operation sequences checked against a reference model (a `Vec` of records).

use std::sync::Arc;

use proptest::prelude::*;
use rivulet_log::{Log, MemBackend, NewRecord, Store, StoreConfig};

#[derive(Clone, Debug)]
enum Op {
    Append {
        values: Vec<Vec<u8>>,
        timestamp_ms: i64,
        gap: u64,
    },
    Read {
        from: u64,
        max_records: usize,
        max_bytes: usize,
    },
    Seek {
        timestamp_ms: i64,
    },
    Trim {
        cutoff_ms: i64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..5),
            0i64..400,
            prop_oneof![4 => Just(0u64), 1 => 1u64..20],
        )
            .prop_map(|(values, timestamp_ms, gap)| Op::Append { values, timestamp_ms, gap }),
        3 => (0u64..120, 0usize..8, 0usize..400)
            .prop_map(|(from, max_records, max_bytes)| Op::Read { from, max_records, max_bytes }),
        1 => (0i64..450).prop_map(|timestamp_ms| Op::Seek { timestamp_ms }),
        1 => (0i64..450).prop_map(|cutoff_ms| Op::Trim { cutoff_ms }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Record {
    offset: u64,
    timestamp_ms: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[derive(Default)]
struct Model {
    records: Vec<Record>,
    next_offset: u64,
    last_timestamp_ms: i64,
}

fn check(ops: Vec<Op>, segment_bytes_max: u64) -> Result<(), TestCaseError> {
    let backend = Arc::new(MemBackend::new());
    let config = StoreConfig {
        segment_bytes_max,
        index_interval_bytes: 100,
        ..StoreConfig::default()
    };
    let mut store = Store::open(backend.clone(), config).map_err(fail)?;
    let mut log: Arc<Log> = store.log("m/0").map_err(fail)?;
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append {
                values,
                timestamp_ms,
                gap,
            } => {
                let min = if gap == 0 { 0 } else { model.next_offset + gap };
                let records: Vec<NewRecord<'_>> = values
                    .iter()
                    .map(|value| NewRecord {
                        key: &value[..value.len().min(3)],
                        value,
                    })
                    .collect();
                let appended = log.append(&records, timestamp_ms, min).map_err(fail)?;
                appended.durable.wait_blocking().map_err(fail)?;
                let first = model.next_offset.max(min);
                let stored = timestamp_ms.max(model.last_timestamp_ms);
                prop_assert_eq!(
                    (appended.first_offset, appended.timestamp_ms),
                    (first, stored)
                );
                for (i, value) in values.iter().enumerate() {
                    model.records.push(Record {
                        offset: first + i as u64,
                        timestamp_ms: stored,
                        key: value[..value.len().min(3)].to_vec(),
                        value: value.clone(),
                    });
                }
                model.next_offset = first + values.len() as u64;
                model.last_timestamp_ms = stored;
            }
            Op::Read {
                from,
                max_records,
                max_bytes,
            } => {
                let got = log.read(from, max_records, max_bytes).map_err(fail)?;
                let mut expected = Vec::new();
                let mut bytes = 0;
                for record in model.records.iter().filter(|r| r.offset >= from) {
                    let size = record.key.len() + record.value.len();
                    if expected.len() >= max_records
                        || (!expected.is_empty() && bytes + size > max_bytes)
                    {
                        break;
                    }
                    bytes += size;
                    expected.push(record.clone());
                }
                let got_records: Vec<Record> = got
                    .records
                    .iter()
                    .map(|r| Record {
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key.to_vec(),
                        value: r.value.to_vec(),
                    })
                    .collect();
                prop_assert_eq!(&got_records, &expected);
                let start = model
                    .records
                    .first()
                    .map_or(model.next_offset, |r| r.offset);
                let next = expected.last().map_or(from.max(start), |r| r.offset + 1);
                prop_assert_eq!(got.next_offset, next);
            }
            Op::Seek { timestamp_ms } => {
                let expected = model
                    .records
                    .iter()
                    .find(|r| r.timestamp_ms >= timestamp_ms)
                    .map_or(model.next_offset, |r| r.offset);
                prop_assert_eq!(
                    log.offset_at_timestamp(timestamp_ms).map_err(fail)?,
                    expected
                );
            }
            Op::Trim { cutoff_ms } => {
                let dropped = log.trim_older_than(cutoff_ms).map_err(fail)? as usize;
                prop_assert!(dropped <= model.records.len());
                // Whole segments go, oldest first, and only those entirely older than the cutoff.
                prop_assert!(
                    model.records[..dropped]
                        .iter()
                        .all(|r| r.timestamp_ms < cutoff_ms)
                );
                if segment_bytes_max == 1 {
                    // One batch per segment: exactly the records older than the cutoff go.
                    let older = model
                        .records
                        .iter()
                        .filter(|r| r.timestamp_ms < cutoff_ms)
                        .count();
                    prop_assert_eq!(dropped, older);
                }
                model.records.drain(..dropped);
            }
            Op::Reopen => {
                store.shutdown();
                drop(log);
                store = Store::open(backend.clone(), config).map_err(fail)?;
                log = store.log("m/0").map_err(fail)?;
                // The clamp's floor is the newest retained record's timestamp: a log trimmed
                // empty forgets it across a reopen (documented in docs/storage-format.md).
                if model.records.is_empty() {
                    model.last_timestamp_ms = i64::MIN;
                }
            }
        }
        let start = model
            .records
            .first()
            .map_or(model.next_offset, |r| r.offset);
        prop_assert_eq!(log.start_offset().expect("start_offset"), start);
        prop_assert_eq!(log.end_offset().expect("end_offset"), model.next_offset);
        prop_assert_eq!(log.next_offset().expect("next_offset"), model.next_offset);
    }
    Ok(())
}

fn fail(error: rivulet_log::LogError) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_reference_model(
        ops in prop::collection::vec(op(), 1..60),
        segment_bytes_max in prop_oneof![Just(1u64), Just(400), Just(64 << 20)],
    ) {
        check(ops, segment_bytes_max)?;
    }
}
