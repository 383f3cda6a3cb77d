//! Sequence numbers: 47 hex digits (about 56 decimal digits), laid out like the live service's.
//!
//! As hex, most significant first:
//! `2` · `0` · shard creation time, epoch s (8) · shard index (8) · per-shard record counter (16)
//! · record arrival time, epoch s (8) · stream tag (4) · `2`.
//! The counter sits above the arrival time, so numbers strictly increase with the counter within
//! a shard; the shard index makes them unique within a stream, and the stream tag (derived from
//! the stream's name and creation time) lets the server reject numbers from another stream.
//! Unlike the live service we keep the whole shard index, so any number decodes to one shard.

/// Hex digits in an encoded sequence number.
const HEX_DIGITS: usize = 47;
/// Decimal digits the largest 47-hex-digit number can have.
const DECIMAL_DIGITS_MAX: usize = 57;

/// Decimal digits a 192-bit number can have.
const SEQUENCE_DIGITS_MAX: usize = 63;

/// A sequence number's decimal text, kept inline (no allocation per record).
#[derive(Clone, Copy)]
pub struct SequenceNumber {
    len: u8,
    digits: [u8; SEQUENCE_DIGITS_MAX],
}

impl SequenceNumber {
    /// The decimal text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SequenceNumber {}

impl PartialEq<str> for SequenceNumber {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// The fields a sequence number carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqParts {
    pub shard_created_s: u32,
    pub shard_index: u32,
    pub counter: u64,
    pub arrival_s: u32,
    pub stream_tag: u16,
}

/// What a client-supplied sequence number decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A number of our layout.
    Full(SeqParts),
    /// A short number (such as `5`): it names a shard index and nothing else.
    Short { shard_index: u64 },
    /// Zero, which the live service answers with InternalFailure.
    Zero,
    /// Not a number we could have issued.
    Invalid,
}

/// A 192-bit unsigned integer as little-endian 64-bit limbs: enough for 47 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct U192([u64; 3]);

impl U192 {
    fn from_decimal(text: &str) -> Option<U192> {
        if text.is_empty() || text.len() > DECIMAL_DIGITS_MAX + 1 {
            return None;
        }
        let mut limbs = [0u64; 3];
        for byte in text.bytes() {
            if !byte.is_ascii_digit() {
                return None;
            }
            let mut carry = u128::from(byte - b'0');
            for limb in &mut limbs {
                let product = u128::from(*limb) * 10 + carry;
                *limb = product as u64;
                carry = product >> 64;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(U192(limbs))
    }

    fn to_decimal(self) -> SequenceNumber {
        // Base-10^9 chunks by long division over 32-bit limbs: every step is a u64 division by
        // a constant, which compiles to multiplications (u128 division would be a libcall).
        const CHUNK: u64 = 1_000_000_000;
        let mut limbs = [0u32; 6]; // most significant first
        for (i, limb) in self.0.iter().rev().enumerate() {
            limbs[2 * i] = (limb >> 32) as u32;
            limbs[2 * i + 1] = *limb as u32;
        }
        let mut chunks = [0u32; 7];
        let mut count = 0;
        loop {
            let mut remainder = 0u64;
            for limb in &mut limbs {
                let value = (remainder << 32) | u64::from(*limb);
                *limb = (value / CHUNK) as u32;
                remainder = value % CHUNK;
            }
            chunks[count] = remainder as u32;
            count += 1;
            if limbs == [0; 6] || count == chunks.len() {
                break;
            }
        }
        let mut out = SequenceNumber {
            len: 0,
            digits: [0; SEQUENCE_DIGITS_MAX],
        };
        for (i, chunk) in chunks[..count].iter().rev().enumerate() {
            let mut digits = [0u8; 9];
            let mut n = *chunk;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            // The leading chunk has no leading zeros (but zero itself is one digit).
            let skip = if i == 0 {
                digits.iter().take(8).take_while(|&&d| d == b'0').count()
            } else {
                0
            };
            let len = usize::from(out.len);
            let part = &digits[skip..];
            out.digits[len..len + part.len()].copy_from_slice(part);
            out.len += part.len() as u8;
        }
        out
    }

    /// Bits `[low, low + width)`.
    fn bits(self, low: u32, width: u32) -> u64 {
        debug_assert!(width <= 64);
        let value = (u128::from(self.0[1]) << 64) | u128::from(self.0[0]);
        let high = u128::from(self.0[2]);
        let field = if low >= 128 {
            high >> (low - 128)
        } else if low + width <= 128 {
            value >> low
        } else {
            (value >> low) | (high << (128 - low))
        };
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        (field as u64) & mask
    }

    fn set_bits(&mut self, low: u32, width: u32, field: u64) {
        for bit in 0..width {
            if field >> bit & 1 == 1 {
                let at = low + bit;
                self.0[(at / 64) as usize] |= 1u64 << (at % 64);
            }
        }
    }

    fn bit_length(self) -> u32 {
        for (i, limb) in self.0.iter().enumerate().rev() {
            if *limb != 0 {
                return i as u32 * 64 + 64 - limb.leading_zeros();
            }
        }
        0
    }
}

// Field positions, in bits from the least significant end (4 bits per hex digit).
const TAIL_LOW: u32 = 0; // the trailing `2`
const TAG_LOW: u32 = 4;
const ARRIVAL_LOW: u32 = 20;
const COUNTER_LOW: u32 = 52;
const SHARD_LOW: u32 = 116;
const CREATED_LOW: u32 = 148;
const ZERO_LOW: u32 = 180;
const HEAD_LOW: u32 = 184; // the leading `2`

/// Encodes a sequence number as its decimal string.
pub fn encode(parts: SeqParts) -> SequenceNumber {
    let mut n = U192::default();
    n.set_bits(TAIL_LOW, 4, 2);
    n.set_bits(TAG_LOW, 16, u64::from(parts.stream_tag));
    n.set_bits(ARRIVAL_LOW, 32, u64::from(parts.arrival_s));
    n.set_bits(COUNTER_LOW, 64, parts.counter);
    n.set_bits(SHARD_LOW, 32, u64::from(parts.shard_index));
    n.set_bits(CREATED_LOW, 32, u64::from(parts.shard_created_s));
    n.set_bits(HEAD_LOW, 4, 2);
    n.to_decimal()
}

/// `2^COUNTER_LOW` in decimal: what one more on the counter adds to a sequence number.
const COUNTER_STEP_DECIMAL: &[u8] = b"4503599627370496";

impl SequenceNumber {
    /// The number with the counter one higher (the caller checks the counter does not wrap).
    fn plus_counter_step(&self) -> SequenceNumber {
        let mut out = *self;
        let len = usize::from(out.len);
        let mut carry = 0u8;
        let mut i = 0;
        while i < len && (i < COUNTER_STEP_DECIMAL.len() || carry > 0) {
            let at = len - 1 - i;
            let add = COUNTER_STEP_DECIMAL
                .len()
                .checked_sub(1 + i)
                .map_or(0, |j| COUNTER_STEP_DECIMAL[j] - b'0');
            let digit = out.digits[at] - b'0' + add + carry;
            out.digits[at] = b'0' + digit % 10;
            carry = digit / 10;
            i += 1;
        }
        if carry > 0 && len < SEQUENCE_DIGITS_MAX {
            out.digits.copy_within(0..len, 1);
            out.digits[0] = b'0' + carry;
            out.len += 1;
        }
        out
    }
}

/// Encodes runs of sequence numbers: a number whose counter is one more than the previous
/// one's, all else equal (the records of one batch), costs a short decimal addition instead of
/// a full conversion.
#[derive(Default)]
pub struct SeqEncoder {
    last: Option<(SeqParts, SequenceNumber)>,
}

impl SeqEncoder {
    pub fn encode(&mut self, parts: SeqParts) -> SequenceNumber {
        let text = match &self.last {
            Some((prev, text))
                if prev.counter.checked_add(1) == Some(parts.counter)
                    && SeqParts {
                        counter: parts.counter,
                        ..*prev
                    } == parts =>
            {
                text.plus_counter_step()
            }
            _ => encode(parts),
        };
        self.last = Some((parts, text));
        text
    }
}

/// Decodes a client-supplied sequence number (already checked against the model's pattern).
pub fn decode(text: &str) -> Decoded {
    let Some(n) = U192::from_decimal(text) else {
        return Decoded::Invalid;
    };
    if n.0 == [0, 0, 0] {
        return Decoded::Zero;
    }
    let bits = n.bit_length();
    if bits <= (HEX_DIGITS as u32 - 1) * 4 - 3 {
        // Fewer hex digits than our layout: the live service reads a shard index out of such
        // numbers (`5` names shardId-000000000005); so do we, from the low 64 bits.
        return if n.0[1] == 0 && n.0[2] == 0 {
            Decoded::Short {
                shard_index: n.0[0],
            }
        } else {
            Decoded::Invalid
        };
    }
    if n.bits(HEAD_LOW, 8) != 2 || n.bits(ZERO_LOW, 4) != 0 || n.bits(TAIL_LOW, 4) != 2 {
        return Decoded::Invalid;
    }
    Decoded::Full(SeqParts {
        shard_created_s: n.bits(CREATED_LOW, 32) as u32,
        shard_index: n.bits(SHARD_LOW, 32) as u32,
        counter: n.bits(COUNTER_LOW, 64),
        arrival_s: n.bits(ARRIVAL_LOW, 32) as u32,
        stream_tag: n.bits(TAG_LOW, 16) as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(parts: SeqParts) -> String {
        encode(parts).to_string()
    }
    use proptest::prelude::*;

    fn parts(counter: u64) -> SeqParts {
        SeqParts {
            shard_created_s: 1_700_000_000,
            shard_index: 3,
            counter,
            arrival_s: 1_700_000_100,
            stream_tag: 0xbeef,
        }
    }

    #[test]
    fn has_aws_length() {
        let text = enc(parts(0));
        assert!((55..=57).contains(&text.len()), "{text}");
        assert!(text.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn short_and_zero_numbers() {
        assert_eq!(decode("5"), Decoded::Short { shard_index: 5 });
        assert_eq!(decode("0"), Decoded::Zero);
        assert_eq!(decode("12x"), Decoded::Invalid);
        assert_eq!(decode(&"9".repeat(100)), Decoded::Invalid);
    }

    proptest! {
        #[test]
        fn round_trips(created in any::<u32>(), shard in any::<u32>(), counter in any::<u64>(),
                       arrival in any::<u32>(), tag in any::<u16>()) {
            let p = SeqParts { shard_created_s: created, shard_index: shard, counter,
                               arrival_s: arrival, stream_tag: tag };
            prop_assert_eq!(decode(&enc(p)), Decoded::Full(p));
        }

        #[test]
        fn strictly_increasing_with_counter(a in 0u64..u64::MAX, arrival_a in any::<u32>(),
                                            arrival_b in any::<u32>()) {
            let mut first = parts(a);
            first.arrival_s = arrival_a;
            let mut second = parts(a + 1);
            second.arrival_s = arrival_b;
            let (x, y) = (enc(first), enc(second));
            // Same-length decimals compare like numbers; longer means larger.
            prop_assert!((x.len(), &x) < (y.len(), &y));
        }

        #[test]
        fn any_digit_string_decodes_without_panic(text in "[0-9]{1,130}") {
            let _ = decode(&text);
        }
    }

    proptest! {
        #[test]
        fn runs_encode_like_single_numbers(
            created in any::<u32>(), shard in any::<u32>(), counter in any::<u64>(),
            arrival in any::<u32>(), tag in any::<u16>(), run in 1usize..40,
        ) {
            let mut encoder = SeqEncoder::default();
            let first = SeqParts { shard_created_s: created, shard_index: shard, counter,
                arrival_s: arrival, stream_tag: tag };
            for k in 0..run as u64 {
                let Some(counter) = counter.checked_add(k) else { break };
                let parts = SeqParts { counter, ..first };
                prop_assert_eq!(encoder.encode(parts).to_string(), enc(parts));
            }
        }
    }

    #[test]
    fn counter_step_is_two_to_the_counter_offset() {
        assert_eq!(
            COUNTER_STEP_DECIMAL,
            (1u64 << COUNTER_LOW).to_string().as_bytes()
        );
        // A carry out of the top digit lengthens the number.
        let mut nines = SequenceNumber {
            len: 20,
            digits: [b'9'; SEQUENCE_DIGITS_MAX],
        };
        nines.digits[20..].fill(0);
        let next = nines.plus_counter_step();
        assert_eq!(
            next.as_str(),
            (99_999_999_999_999_999_999u128 + (1u128 << COUNTER_LOW)).to_string()
        );
    }
}
