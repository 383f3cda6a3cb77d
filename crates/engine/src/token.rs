//! Opaque, tamper-evident tokens: shard iterators and pagination tokens.
//!
//! A token is base64 (standard alphabet) of `00 00 00 00 00 00 00 01` · kind (1 byte) · payload ·
//! the first 16 bytes of HMAC-SHA256(secret, everything before it). The secret lives in the
//! metadata store, so tokens survive a restart; a forged or truncated token fails the MAC.
//!
//! Shard iterators are shaped like the live service's: their payload is padded with zeros so
//! the decoded token is 152 + 16·k bytes. Readers read the payload's fields and ignore the
//! padding, so iterators of earlier releases (unpadded) still open until they expire.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const MAGIC: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 1];
const MAC_BYTES: usize = 16;
/// Bytes of the token secret.
pub const SECRET_BYTES: usize = 32;
/// The longest token string we hand out (the model caps shard iterators at 512 characters).
const TOKEN_CHARS_MAX: usize = 512;
/// A shard iterator decodes to `ITERATOR_BYTES_MIN + ITERATOR_BYTES_STEP * k` bytes, as AWS's.
const ITERATOR_BYTES_MIN: usize = 152;
const ITERATOR_BYTES_STEP: usize = 16;

/// What a token is for; a token of one kind is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    ShardIterator = 1,
    ListShards = 2,
    ListStreams = 3,
    ListStreamConsumers = 4,
    QueueReceipt = 5,
    ListQueues = 6,
    ListChannels = 7,
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenCodec {
    /// HMAC-SHA256 keyed once with the secret; each token clones it.
    keyed: Hmac<Sha256>,
}

/// SHA-256's block size: HMAC zero-pads shorter keys to it, so a padded key is the same key.
const HMAC_KEY_BYTES: usize = 64;

impl TokenCodec {
    /// A codec for this secret.
    pub fn new(secret: [u8; SECRET_BYTES]) -> Self {
        let mut key = [0u8; HMAC_KEY_BYTES];
        key[..SECRET_BYTES].copy_from_slice(&secret);
        TokenCodec {
            keyed: <Hmac<Sha256> as KeyInit>::new(&key.into()),
        }
    }

    fn mac(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = self.keyed.clone();
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }

    /// Seals a payload into a token string.
    pub fn seal(&self, kind: Kind, payload: &[u8]) -> String {
        let unpadded = MAGIC.len() + 1 + payload.len() + MAC_BYTES;
        let len = match kind {
            Kind::ShardIterator => {
                let steps = unpadded
                    .saturating_sub(ITERATOR_BYTES_MIN)
                    .div_ceil(ITERATOR_BYTES_STEP);
                ITERATOR_BYTES_MIN + steps * ITERATOR_BYTES_STEP
            }
            _ => unpadded,
        };
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&MAGIC);
        bytes.push(kind as u8);
        bytes.extend_from_slice(payload);
        bytes.resize(len - MAC_BYTES, 0);
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        let text = STANDARD.encode(&bytes);
        debug_assert!(text.len() <= TOKEN_CHARS_MAX);
        text
    }

    /// Opens a token of `kind`, returning its payload, or `None` if it is not one of ours.
    /// Surrounding double quotes are accepted, as the live service accepts quoted iterators.
    pub fn open(&self, kind: Kind, text: &str) -> Option<Vec<u8>> {
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        let bytes = STANDARD.decode(text).ok()?;
        if bytes.len() < MAGIC.len() + 1 + MAC_BYTES || bytes[..MAGIC.len()] != MAGIC {
            return None;
        }
        if bytes[MAGIC.len()] != kind as u8 {
            return None;
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        let expected = self.mac(body);
        // Constant-time enough for a MAC check: compare every byte.
        let diff = expected
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return None;
        }
        Some(body[MAGIC.len() + 1..].to_vec())
    }
}

/// A little-endian writer for token payloads.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(self, v: i64) -> Self {
        self.u64(v as u64)
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(mut self, v: &str) -> Self {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(&v.as_bytes()[..usize::from(len)]);
        self
    }
}

/// A little-endian reader for token payloads; every read is checked.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn str(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        String::from_utf8(self.take(usize::from(len))?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn padded_key_is_the_same_hmac_key() {
        // Tokens issued before the key was pre-padded must still open.
        let secret = [9u8; SECRET_BYTES];
        let mut reference = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
        reference.update(b"payload");
        let full = reference.finalize().into_bytes();
        assert_eq!(
            TokenCodec::new(secret).mac(b"payload")[..],
            full[..MAC_BYTES]
        );
    }

    use super::*;

    #[test]
    fn iterators_have_aws_lengths_and_old_ones_still_open() {
        let codec = TokenCodec::new([7; SECRET_BYTES]);
        for name_len in [1usize, 50, 87, 88, 128] {
            let payload = Writer::default().str(&"s".repeat(name_len)).u64(42).0;
            let token = codec.seal(Kind::ShardIterator, &payload);
            let bytes = STANDARD.decode(&token).unwrap();
            assert!(bytes.len() >= ITERATOR_BYTES_MIN, "{}", bytes.len());
            assert_eq!((bytes.len() - ITERATOR_BYTES_MIN) % ITERATOR_BYTES_STEP, 0);
            assert_eq!(bytes[..8], MAGIC);
            let opened = codec.open(Kind::ShardIterator, &token).unwrap();
            assert_eq!(opened[..payload.len()], payload[..]);
            assert!(opened[payload.len()..].iter().all(|&b| b == 0));
        }
        // An unpadded iterator, as earlier releases sealed them.
        let payload = Writer::default().str("stream").u64(42).0;
        let mut old = MAGIC.to_vec();
        old.push(Kind::ShardIterator as u8);
        old.extend_from_slice(&payload);
        let mac = codec.mac(&old);
        old.extend_from_slice(&mac);
        let token = STANDARD.encode(&old);
        assert_eq!(codec.open(Kind::ShardIterator, &token), Some(payload));
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let codec = TokenCodec::new([7; SECRET_BYTES]);
        let payload = Writer::default().str("stream").u64(42).0;
        let token = codec.seal(Kind::ShardIterator, &payload);
        assert_eq!(codec.open(Kind::ListShards, &token), None);
        let token = codec.seal(Kind::ListStreams, &payload);
        assert_eq!(codec.open(Kind::ListStreams, &token), Some(payload.clone()));
        assert_eq!(
            codec.open(Kind::ListStreams, &format!("\"{token}\"")),
            Some(payload)
        );
        assert_eq!(codec.open(Kind::ListShards, &token), None);
        let mut bytes = STANDARD.decode(&token).unwrap();
        bytes[10] ^= 1;
        assert_eq!(
            codec.open(Kind::ListStreams, &STANDARD.encode(&bytes)),
            None
        );
        assert_eq!(codec.open(Kind::ListStreams, "garbage"), None);
        let other = TokenCodec::new([8; SECRET_BYTES]);
        assert_eq!(other.open(Kind::ListStreams, &token), None);
    }
}
