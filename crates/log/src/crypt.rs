//! Encryption at rest of batch bodies: AES-256-GCM (aws-lc-rs) with data keys that the store's
//! owner provides. An encrypted batch (header flag `FLAG_ENCRYPTED`) has the body
//! `key_id u32 · nonce 12 bytes · ciphertext of the records · GCM tag 16 bytes`; the additional
//! authenticated data is the header's bytes 16..40 (first offset, timestamp, record count,
//! flags), so an encrypted body cannot be moved to another place in the log unnoticed.
//!
//! Nonces are `nonce_prefix u32 · first_offset u64`. The caller guarantees that one
//! [`DataKey`] never seals two batches with the same pair — Rivulet uses a fresh data key per
//! stream per process run and the shard's index as prefix, and a log's offsets only grow.

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::LogError;

/// Header flag: the body is encrypted.
pub const FLAG_ENCRYPTED: u32 = 1;
/// Bytes an encrypted body adds before the ciphertext: key id and nonce.
pub const CRYPT_PREFIX_BYTES: usize = 4 + NONCE_LEN;
/// Bytes of the GCM tag after the ciphertext.
pub const CRYPT_TAG_BYTES: usize = 16;
/// Everything encryption adds to a body.
pub const CRYPT_OVERHEAD_BYTES: usize = CRYPT_PREFIX_BYTES + CRYPT_TAG_BYTES;

/// A 256-bit data key, named by an id unique within the store.
pub struct DataKey {
    id: u32,
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish()
    }
}

impl DataKey {
    /// A data key from its 32 bytes (AES-256 takes any 32 bytes; the library's refusal is
    /// reported rather than assumed impossible).
    pub fn new(id: u32, bytes: &[u8; 32]) -> Result<DataKey, LogError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map(LessSafeKey::new)
            .map_err(|_| LogError::Encryption {
                reason: "the AES-256-GCM key was refused".into(),
            })?;
        Ok(DataKey { id, key })
    }

    /// The key's id, stored in every batch it seals.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Seals `in_out` in place and appends the GCM tag (for stores that seal records one by
    /// one). The caller guarantees `nonce` is never used twice with this key.
    pub fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        // GCM refuses only inputs beyond 64 GiB.
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| LogError::Encryption {
                reason: "AES-256-GCM refused the record".into(),
            })
    }

    /// Opens what [`DataKey::seal`] sealed, in place: the plaintext is the returned prefix of
    /// `in_out`; `None` when it fails authentication (tampered, moved, or another key's).
    pub fn open<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .ok()
    }
}

/// How an append is encrypted: the key and the nonce prefix this log uses with it.
#[derive(Clone, Copy, Debug)]
pub struct Encryption<'a> {
    /// The data key.
    pub key: &'a DataKey,
    /// The nonce's first four bytes, distinct for every log sharing `key`.
    pub nonce_prefix: u32,
}

/// Where a store finds the data key of an encrypted batch when reading it.
pub trait Keyring: Send + Sync {
    /// The data key with this id, if it is known and usable.
    fn data_key(&self, id: u32) -> Option<Arc<DataKey>>;
}

fn nonce(prefix: u32, first_offset: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&prefix.to_le_bytes());
    n[4..].copy_from_slice(&first_offset.to_le_bytes());
    n
}

/// Encrypts the batch in `buf` in place: `buf` holds the header (bytes 16..40 already written,
/// they are the additional authenticated data), `CRYPT_PREFIX_BYTES` of room, then the
/// plaintext records; the tag is appended.
pub(crate) fn encrypt_batch(
    seal: &Encryption<'_>,
    buf: &mut Vec<u8>,
    body_start: usize,
) -> Result<(), LogError> {
    let mut aad = [0u8; 24];
    aad.copy_from_slice(&buf[16..40]);
    let mut first_offset = [0u8; 8];
    first_offset.copy_from_slice(&buf[16..24]);
    let n = nonce(seal.nonce_prefix, u64::from_le_bytes(first_offset));
    buf[body_start..body_start + 4].copy_from_slice(&seal.key.id.to_le_bytes());
    buf[body_start + 4..body_start + CRYPT_PREFIX_BYTES].copy_from_slice(&n);
    let tag = seal
        .key
        .key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(n),
            Aad::from(aad),
            &mut buf[body_start + CRYPT_PREFIX_BYTES..],
        )
        // GCM refuses only inputs beyond 64 GiB; batches are at most 64 MiB.
        .map_err(|_| LogError::Encryption {
            reason: "AES-256-GCM refused the batch".into(),
        })?;
    buf.extend_from_slice(tag.as_ref());
    Ok(())
}

/// The key id an encrypted body names, if the body is long enough to name one.
pub(crate) fn key_id(body: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = body.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Decrypts an encrypted body in place with `key`: afterwards the plaintext records lie at
/// `body[CRYPT_PREFIX_BYTES..CRYPT_PREFIX_BYTES + len]`, `len` returned; `Err` when the body
/// fails authentication (tampered, moved, or encrypted with another key).
pub(crate) fn open_body(key: &DataKey, aad: &[u8], body: &mut [u8]) -> Result<usize, &'static str> {
    if body.len() < CRYPT_OVERHEAD_BYTES {
        return Err("encrypted body too short");
    }
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&body[4..CRYPT_PREFIX_BYTES]);
    let plain = key
        .key
        .open_in_place(
            Nonce::assume_unique_for_key(n),
            Aad::from(aad),
            &mut body[CRYPT_PREFIX_BYTES..],
        )
        .map_err(|_| "encrypted batch failed authentication")?;
    Ok(plain.len())
}
