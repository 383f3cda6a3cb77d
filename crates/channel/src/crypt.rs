//! Objects encrypted by Rivulet's own key service, for bucket folders (S3 endpoints get
//! SSE-KMS headers instead). An encrypted object is an envelope:
//!
//! ```text
//! "RVLENC01" · header length (u32, big-endian) · header (JSON) · AES-256-GCM ciphertext+tag
//! header = {"algorithm": "AES-256-GCM", "key_arn": …, "wrapped_key": base64, "nonce": base64}
//! ```
//!
//! Each object gets a fresh data key from the KMS key (its ciphertext in the header, so only
//! the key service can unwrap it) and a random nonce; the header is the cipher's associated
//! data, so it cannot be changed unnoticed. `rivulet kms open-object` turns one back into
//! plaintext.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use rivulet_engine::encryption::KeyService;
use serde::{Deserialize, Serialize};

/// The first bytes of an encrypted object.
pub const MAGIC: &[u8; 8] = b"RVLENC01";

#[derive(Serialize, Deserialize)]
struct Header {
    algorithm: String,
    key_arn: String,
    wrapped_key: String,
    nonce: String,
}

fn cipher(key: &[u8; 32]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| "the data key does not fit AES-256-GCM".to_string())
}

/// Encrypts `plain` under a fresh data key of `key_arn`.
pub fn seal(kms: &dyn KeyService, key_arn: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
    let (key, wrapped) = kms.generate_data_key(key_arn).map_err(|e| e.message)?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let header = serde_json::to_vec(&Header {
        algorithm: "AES-256-GCM".into(),
        key_arn: key_arn.to_string(),
        wrapped_key: b64.encode(&wrapped),
        nonce: b64.encode(nonce),
    })
    .map_err(|e| e.to_string())?;
    let mut body = plain.to_vec();
    cipher(&key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&header[..]),
            &mut body,
        )
        .map_err(|_| "encryption failed".to_string())?;
    let length = u32::try_from(header.len()).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decrypts an object `seal` made.
pub fn open(kms: &dyn KeyService, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let rest = sealed
        .strip_prefix(&MAGIC[..])
        .ok_or("not an object Rivulet encrypted (no RVLENC01 header)")?;
    let (length, rest) = rest.split_at_checked(4).ok_or("a torn header")?;
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    let (header_bytes, body) = rest.split_at_checked(length).ok_or("a torn header")?;
    let header: Header =
        serde_json::from_slice(header_bytes).map_err(|e| format!("a damaged header: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let wrapped = b64
        .decode(&header.wrapped_key)
        .map_err(|e| format!("a damaged header: {e}"))?;
    let nonce: [u8; NONCE_LEN] = b64
        .decode(&header.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or("a damaged header: the nonce")?;
    let key = kms
        .decrypt_data_key(&header.key_arn, &wrapped)
        .map_err(|e| e.message)?;
    let mut body = body.to_vec();
    let plain = cipher(&key)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header_bytes),
            &mut body,
        )
        .map_err(|_| "the object fails authentication: damaged, or not this key's".to_string())?;
    Ok(plain.to_vec())
}
