//! Encrypted batches: round trips, plaintext never on disk, tampering
//! detected, a missing key reported, recovery and rolls across encrypted batches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rivulet_log::{
    DataKey, Encryption, FileBackend, Keyring, LogError, NewRecord, Store, StoreConfig,
};

use crate::util::{read_all, small_config};

#[derive(Default)]
struct Keys(parking_lot::Mutex<HashMap<u32, Arc<DataKey>>>);

impl Keyring for Keys {
    fn data_key(&self, id: u32) -> Option<Arc<DataKey>> {
        self.0.lock().get(&id).cloned()
    }
}

const SECRET: &[u8] = b"the plaintext nobody may find on disk";

fn open(root: &Path, config: StoreConfig, keys: &Arc<Keys>) -> Arc<Store> {
    let backend = Arc::new(FileBackend::new(root).expect("backend"));
    let store = Store::open(backend, config).expect("open");
    store.set_keyring(keys.clone());
    store
}

fn put(log: &rivulet_log::Log, key: &[u8], value: &[u8], seal: Option<Encryption<'_>>) -> u64 {
    let appended = log
        .append_encrypted(&[NewRecord { key, value }], 1_000, 0, seal)
        .expect("append");
    appended.durable.wait_blocking().expect("durable");
    appended.first_offset
}

fn files_contain(root: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn encrypted_batches_round_trip_and_leave_no_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Arc::new(Keys::default());
    let key = Arc::new(DataKey::new(7, &[42u8; 32]).expect("key"));
    keys.0.lock().insert(7, key.clone());
    let seal = Encryption {
        key: &key,
        nonce_prefix: 3,
    };
    {
        let store = open(dir.path(), small_config(), &keys);
        let log = store.log("enc").expect("log");
        put(&log, b"plain-key", b"plain value", None);
        // Enough encrypted batches to roll segments and write sealed indexes.
        for i in 0..40u8 {
            let value = [SECRET, &[i]].concat();
            put(&log, b"secret-partition-key", &value, Some(seal));
        }
        let records = read_all(&log, 0);
        assert_eq!(records.len(), 41);
        assert!(!records[0].encrypted);
        assert_eq!(&records[0].value[..], b"plain value");
        for (i, record) in records[1..].iter().enumerate() {
            assert!(record.encrypted);
            assert_eq!(&record.key[..], b"secret-partition-key");
            assert_eq!(&record.value[..], &[SECRET, &[i as u8]].concat()[..]);
        }
        store.shutdown();
    }
    assert!(
        !files_contain(dir.path(), SECRET),
        "plaintext value on disk"
    );
    assert!(
        !files_contain(dir.path(), b"secret-partition-key"),
        "plaintext key on disk"
    );
    assert!(
        files_contain(dir.path(), b"plain value"),
        "the scan finds what is there"
    );

    // After a reopen (recovery scans encrypted batches by checksum) everything reads back.
    let store = open(dir.path(), small_config(), &keys);
    let log = store.log("enc").expect("log");
    assert_eq!(read_all(&log, 0).len(), 41);
    put(
        &log,
        b"k",
        b"after reopen",
        Some(Encryption {
            key: &Arc::new(DataKey::new(8, &[9u8; 32]).expect("key")),
            nonce_prefix: 3,
        }),
    );
    // A key the keyring does not know: the read says so instead of returning bytes.
    match log.read(41, 10, 1 << 20) {
        Err(LogError::KeyUnavailable { key_id: 8, .. }) => {}
        other => panic!("expected KeyUnavailable, got {other:?}"),
    }
    store.shutdown();
}

#[test]
fn tampered_ciphertext_is_detected_not_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Arc::new(Keys::default());
    let key = Arc::new(DataKey::new(1, &[1u8; 32]).expect("key"));
    keys.0.lock().insert(1, key.clone());
    let seal = Encryption {
        key: &key,
        nonce_prefix: 0,
    };
    {
        let store = open(dir.path(), StoreConfig::default(), &keys);
        let log = store.log("t").expect("log");
        for _ in 0..3 {
            put(&log, b"k", SECRET, Some(seal));
        }
        store.shutdown();
    }
    // Flip one ciphertext bit of the middle batch and fix both checksums, as an attacker who
    // knows the format would: only the authentication tag can notice.
    let path = dir.path().join("logs/t/00000000000000000000.seg");
    let mut bytes = std::fs::read(&path).expect("read");
    let batch_len = u32::from_le_bytes(bytes[8..12].try_into().expect("len")) as usize;
    let middle = batch_len;
    bytes[middle + 40 + 16 + 3] ^= 0x10;
    let body_crc = crc32c::crc32c(&bytes[middle + 40..middle + batch_len]);
    bytes[middle + 12..middle + 16].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[middle + 8..middle + 40]);
    bytes[middle + 4..middle + 8].copy_from_slice(&header_crc.to_le_bytes());
    std::fs::write(&path, &bytes).expect("write");

    let store = open(dir.path(), StoreConfig::default(), &keys);
    let log = store.log("t").expect("log");
    let first = log.read(0, 1, 1 << 20).expect("first batch is intact");
    assert_eq!(&first.records[0].value[..], SECRET);
    match log.read(1, 10, 1 << 20) {
        Err(LogError::Corrupt { reason, .. }) => {
            assert_eq!(reason, "encrypted batch failed authentication")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The batch after the damage is still served.
    let last = log.read(2, 10, 1 << 20).expect("last batch");
    assert_eq!(last.records.len(), 1);
    assert_eq!(&last.records[0].value[..], SECRET);
    store.shutdown();
}
