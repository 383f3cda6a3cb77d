//! Sequence numbers: 47 hex digits (about 56 decimal digits) in the live service's layout.
//!
//! As hex, most significant first (AWS's version-2 layout, field for field):
//! `2` · shard creation time, epoch s (9) · the shard index's low hex digit (1) · counter (16,
//! top bit always clear) · `00` · record arrival time, epoch s (9) · the whole shard index as a
//! signed 32-bit value (8) · `2` (the version).
//! The counter sits above the arrival time, so numbers strictly increase with the counter within
//! a shard. Our counter is the shard's log offset (AWS shares one counter across a stream's
//! shards; see docs/compatibility.md). A number names its shard by creation time and index, so
//! the server rejects numbers of another shard or of an earlier stream of the same name.
//!
//! Shards created by releases before this layout keep the layout they started with
//! ([`Layout::Legacy`]): `2` · `0` · creation s (8) · shard index (8) · counter (16) · arrival s
//! (8) · stream tag (4) · `2`. Switching a live shard would make its new numbers compare below
//! its old ones (shard indexes with a zero low hex digit), and numbers already handed out must
//! keep working; new shards, including every child of a split or merge, use AWS's layout.

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

/// A base of 10^9: a chunk's nine digits.
const CHUNK: u64 = 1_000_000_000;
/// Chunks of nine digits that hold any 192-bit number (58 digits at most).
const CHUNKS: usize = 7;
/// A number in base 10^9, least significant chunk first.
type Chunks = [u64; CHUNKS];

/// The eight decimal digits of `n` (below 10^8) as ASCII, most significant first, computed
/// in lanes of one 64-bit word: halves of four digits, then pairs, then digits.
fn eight_digits(n: u32) -> [u8; 8] {
    let n = u64::from(n);
    let halves = (n / 10_000) | ((n % 10_000) << 32);
    // Each half (below 10^4) over 100: `x * 5243 >> 19` is exact there.
    let hundreds = ((halves * 5243) >> 19) & 0x0000_007f_0000_007f;
    let pairs = hundreds | (halves - hundreds * 100) << 16;
    // Each pair (below 100) over 10: `x * 103 >> 10` is exact there.
    let tens = ((pairs * 103) >> 10) & 0x000f_000f_000f_000f;
    let digits = tens | (pairs - tens * 10) << 8;
    (digits + 0x3030_3030_3030_3030).to_le_bytes()
}

impl SequenceNumber {
    /// The decimal text of a number given in chunks (each below 10^9): the leading chunk
    /// without leading zeros (zero itself is one digit), the others nine digits each.
    fn from_chunks(chunks: &Chunks) -> SequenceNumber {
        let nine = |chunk: u64| {
            let n = chunk as u32;
            let mut nine = [0u8; 9];
            nine[0] = b'0' + (n / 100_000_000) as u8;
            nine[1..].copy_from_slice(&eight_digits(n % 100_000_000));
            nine
        };
        let top = chunks.iter().rposition(|&c| c != 0).unwrap_or(0);
        let mut out = SequenceNumber {
            len: 0,
            digits: [0; SEQUENCE_DIGITS_MAX],
        };
        let leading = nine(chunks[top]);
        let zeros = leading.iter().take(8).take_while(|&&d| d == b'0').count();
        let lead_len = 9 - zeros;
        for (to, from) in out.digits.iter_mut().zip(&leading[zeros..]) {
            *to = *from;
        }
        // Fixed-length copies: a copy of a length known only at run time is a call.
        for (slot, &chunk) in out.digits[lead_len..]
            .chunks_exact_mut(9)
            .zip(chunks[..top].iter().rev())
        {
            slot.copy_from_slice(&nine(chunk));
        }
        out.len = (lead_len + 9 * top) as u8;
        out
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

/// Which layout a shard's sequence numbers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The live service's layout: every shard created by this release.
    Aws,
    /// The layout of earlier releases, kept by the shards they created (`stream_tag` tells the
    /// stream's incarnations apart).
    Legacy { stream_tag: u16 },
}

/// The fields a sequence number carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqParts {
    pub shard_created_s: u32,
    pub shard_index: u32,
    /// Below 2^63: the top bit is clear in AWS's layout.
    pub counter: u64,
    /// 0 marks a position between records, not a record.
    pub arrival_s: u32,
    pub layout: Layout,
}

/// The fields of a client-supplied number in AWS's layout, as the service reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsParts {
    pub shard_created_s: u64,
    /// The low hex digit of the shard index, kept apart from the index itself.
    pub index_low: u8,
    pub counter: u64,
    pub arrival_s: u64,
    /// Read as a signed 32-bit value, as the service does (`80000000` is -2147483648).
    pub shard_index: i32,
}

impl AwsParts {
    /// Whether the number was issued by `shard` (its index and creation second).
    pub fn is_of(&self, shard_index: u32, shard_created_s: u32) -> bool {
        self.shard_index as u32 == shard_index
            && u32::from(self.index_low) == shard_index & 0xf
            && self.shard_created_s == u64::from(shard_created_s)
    }
}

/// What a client-supplied sequence number decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A number in AWS's layout (version 2).
    Aws(AwsParts),
    /// A version-1 number (last hex digit `1`): PutRecord accepts it for ordering.
    Version1,
    /// A short number (such as `5`): it names a shard index and nothing else.
    Short { shard_index: u64 },
    /// Zero, which the live service answers with InternalFailure.
    Zero,
    /// Not a number the service could have issued.
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
        SequenceNumber::from_chunks(&self.to_chunks())
    }

    /// The number in base 10^9, least significant chunk first, by long division over 32-bit
    /// limbs: every step is a u64 division by a constant, which compiles to multiplications
    /// (u128 division would be a libcall).
    fn to_chunks(self) -> Chunks {
        let mut limbs = [0u32; 6]; // most significant first
        for (i, limb) in self.0.iter().rev().enumerate() {
            limbs[2 * i] = (limb >> 32) as u32;
            limbs[2 * i + 1] = *limb as u32;
        }
        let mut chunks = [0u64; CHUNKS];
        for chunk in &mut chunks {
            let mut remainder = 0u64;
            for limb in &mut limbs {
                let value = (remainder << 32) | u64::from(*limb);
                *limb = (value / CHUNK) as u32;
                remainder = value % CHUNK;
            }
            *chunk = remainder;
            if limbs == [0; 6] {
                break;
            }
        }
        chunks
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

// AWS's layout: field positions in bits from the least significant end (4 bits a hex digit).
const VERSION_LOW: u32 = 0; // the trailing `2`
const INDEX_LOW: u32 = 4;
const ARRIVAL_LOW: u32 = 36;
const PAD_LOW: u32 = 72; // `00`
const COUNTER_LOW: u32 = 80;
const INDEX_DIGIT_LOW: u32 = 144;
const CREATED_LOW: u32 = 148;
const HEAD_LOW: u32 = 184; // the leading `2`
/// The counter's top bit, which numbers the service issues never set.
const COUNTER_TOP_BIT: u64 = 1 << 63;

// The legacy layout's field positions.
mod legacy {
    pub const TAIL_LOW: u32 = 0;
    pub const TAG_LOW: u32 = 4;
    pub const ARRIVAL_LOW: u32 = 20;
    pub const COUNTER_LOW: u32 = 52;
    pub const SHARD_LOW: u32 = 116;
    pub const CREATED_LOW: u32 = 148;
    pub const ZERO_LOW: u32 = 180;
}

/// Encodes a sequence number as its decimal string.
pub fn encode(parts: SeqParts) -> SequenceNumber {
    number(parts).to_decimal()
}

/// The number a sequence number's parts make.
fn number(parts: SeqParts) -> U192 {
    let mut n = U192::default();
    match parts.layout {
        Layout::Aws => {
            debug_assert!(parts.counter & COUNTER_TOP_BIT == 0);
            n.set_bits(VERSION_LOW, 4, 2);
            n.set_bits(INDEX_LOW, 32, u64::from(parts.shard_index));
            n.set_bits(ARRIVAL_LOW, 36, u64::from(parts.arrival_s));
            n.set_bits(COUNTER_LOW, 64, parts.counter & !COUNTER_TOP_BIT);
            n.set_bits(INDEX_DIGIT_LOW, 4, u64::from(parts.shard_index & 0xf));
            n.set_bits(CREATED_LOW, 36, u64::from(parts.shard_created_s));
        }
        Layout::Legacy { stream_tag } => {
            n.set_bits(legacy::TAIL_LOW, 4, 2);
            n.set_bits(legacy::TAG_LOW, 16, u64::from(stream_tag));
            n.set_bits(legacy::ARRIVAL_LOW, 32, u64::from(parts.arrival_s));
            n.set_bits(legacy::COUNTER_LOW, 64, parts.counter);
            n.set_bits(legacy::SHARD_LOW, 32, u64::from(parts.shard_index));
            n.set_bits(legacy::CREATED_LOW, 32, u64::from(parts.shard_created_s));
        }
    }
    n.set_bits(HEAD_LOW, 4, 2);
    n
}

/// What one more on the counter adds to a sequence number, `2^COUNTER_LOW` of the layout, in
/// chunks: the counter times it, plus the number with a zero counter, is the number.
fn counter_step_chunks(layout: Layout) -> [u64; 3] {
    match layout {
        // 1208925819614629174706176 = 2^80
        Layout::Aws => [174_706_176, 819_614_629, 1_208_925],
        // 4503599627370496 = 2^52
        Layout::Legacy { .. } => [627_370_496, 4_503_599, 0],
    }
}

/// What one more on the arrival second adds to a sequence number, `2^ARRIVAL_LOW` of the
/// layout, in chunks.
fn arrival_step_chunks(layout: Layout) -> [u64; 2] {
    match layout {
        // 68719476736 = 2^36
        Layout::Aws => [719_476_736, 68],
        // 1048576 = 2^20
        Layout::Legacy { .. } => [1_048_576, 0],
    }
}

/// The sequence numbers of one shard. The number with a zero counter and arrival second is
/// kept in chunks; a number adds the arrival second times `2^ARRIVAL_LOW` and the counter times
/// `2^COUNTER_LOW` in base 10^9 (a few products and a carry), then formats it. No state
/// changes, so the puts of a shard share it without a lock (a route holds one; a put in flight
/// holds a copy).
#[derive(Debug, Clone, Copy)]
pub struct ShardNumbers {
    shard_created_s: u32,
    shard_index: u32,
    layout: Layout,
    base: Chunks,
}

impl ShardNumbers {
    pub fn new(shard_created_s: u32, shard_index: u32, layout: Layout) -> Self {
        let parts = SeqParts {
            shard_created_s,
            shard_index,
            counter: 0,
            arrival_s: 0,
            layout,
        };
        ShardNumbers {
            shard_created_s,
            shard_index,
            layout,
            base: number(parts).to_chunks(),
        }
    }

    /// The sequence number of the shard's record `counter`, which arrived at `arrival_s`.
    pub fn encode(&self, counter: u64, arrival_s: u32) -> SequenceNumber {
        if counter & COUNTER_TOP_BIT != 0 {
            // Never issued (offsets stay below 2^63); AWS's layout would drop the bit.
            return encode(SeqParts {
                shard_created_s: self.shard_created_s,
                shard_index: self.shard_index,
                counter,
                arrival_s,
                layout: self.layout,
            });
        }
        let [c0, c1, c2] = [
            counter % CHUNK,
            counter / CHUNK % CHUNK,
            counter / (CHUNK * CHUNK),
        ];
        let [s0, s1, s2] = counter_step_chunks(self.layout);
        let arrival = u64::from(arrival_s);
        let [a0, a1] = [arrival % CHUNK, arrival / CHUNK];
        let [t0, t1] = arrival_step_chunks(self.layout);
        // Every product is below 10^18 (the top counter chunk is below 10, the top arrival
        // chunk below 5), so a chunk's sum with the base and the carry stays below 2^64.
        let products = [
            c0 * s0 + a0 * t0,
            c0 * s1 + c1 * s0 + a0 * t1 + a1 * t0,
            c0 * s2 + c1 * s1 + c2 * s0 + a1 * t1,
            c1 * s2 + c2 * s1,
            c2 * s2,
            0,
            0,
        ];
        let mut out = [0u64; CHUNKS];
        let mut carry = 0u64;
        for ((slot, base), product) in out.iter_mut().zip(self.base).zip(products) {
            let value = base + product + carry;
            *slot = value % CHUNK;
            carry = value / CHUNK;
        }
        SequenceNumber::from_chunks(&out)
    }
}

/// Decodes a client-supplied sequence number (already checked against the model's pattern) as
/// the service reads it.
pub fn decode(text: &str) -> Decoded {
    let Some(n) = U192::from_decimal(text) else {
        return Decoded::Invalid;
    };
    if n.0 == [0, 0, 0] {
        return Decoded::Zero;
    }
    if n.bit_length() <= (HEX_DIGITS as u32 - 1) * 4 - 3 {
        // Fewer hex digits than the layout: the live service reads a shard index out of such
        // numbers (`5` names shardId-000000000005); so do we, from the low 64 bits.
        return if n.0[1] == 0 && n.0[2] == 0 {
            Decoded::Short {
                shard_index: n.0[0],
            }
        } else {
            Decoded::Invalid
        };
    }
    if n.bits(HEAD_LOW, 8) != 2 {
        return Decoded::Invalid;
    }
    match n.bits(VERSION_LOW, 4) {
        1 => return Decoded::Version1,
        2 => {}
        _ => return Decoded::Invalid,
    }
    let counter = n.bits(COUNTER_LOW, 64);
    if counter & COUNTER_TOP_BIT != 0 || n.bits(PAD_LOW, 8) != 0 {
        return Decoded::Invalid;
    }
    Decoded::Aws(AwsParts {
        shard_created_s: n.bits(CREATED_LOW, 36),
        index_low: n.bits(INDEX_DIGIT_LOW, 4) as u8,
        counter,
        arrival_s: n.bits(ARRIVAL_LOW, 36),
        shard_index: n.bits(INDEX_LOW, 32) as u32 as i32,
    })
}

/// Reads `text` in the legacy layout, if it is a number of the stream with `stream_tag`.
pub fn decode_legacy(text: &str, stream_tag: u16) -> Option<SeqParts> {
    let n = U192::from_decimal(text)?;
    let well_formed = n.bits(HEAD_LOW, 8) == 2
        && n.bits(legacy::ZERO_LOW, 4) == 0
        && n.bits(legacy::TAIL_LOW, 4) == 2
        && n.bits(legacy::TAG_LOW, 16) == u64::from(stream_tag);
    well_formed.then(|| SeqParts {
        shard_created_s: n.bits(legacy::CREATED_LOW, 32) as u32,
        shard_index: n.bits(legacy::SHARD_LOW, 32) as u32,
        counter: n.bits(legacy::COUNTER_LOW, 64),
        arrival_s: n.bits(legacy::ARRIVAL_LOW, 32) as u32,
        layout: Layout::Legacy { stream_tag },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEGACY: Layout = Layout::Legacy { stream_tag: 0xbeef };

    fn enc(parts: SeqParts) -> String {
        encode(parts).to_string()
    }

    fn hex(text: &str) -> String {
        let n = U192::from_decimal(text).unwrap();
        format!("{:x}{:016x}{:016x}", n.0[2], n.0[1], n.0[0])
            .trim_start_matches('0')
            .to_string()
    }

    fn parts(counter: u64, layout: Layout) -> SeqParts {
        SeqParts {
            shard_created_s: 1_700_000_000,
            shard_index: 3,
            counter,
            arrival_s: 1_700_000_100,
            layout,
        }
    }

    fn layouts() -> impl Strategy<Value = Layout> {
        prop_oneof![
            Just(Layout::Aws),
            any::<u16>().prop_map(|stream_tag| Layout::Legacy { stream_tag }),
        ]
    }

    #[test]
    fn has_aws_length_and_fields() {
        let text = enc(parts(0x1234, Layout::Aws));
        assert!((55..=57).contains(&text.len()), "{text}");
        assert!(text.bytes().all(|b| b.is_ascii_digit()));
        // `2` · created (9) · index digit · counter (16) · `00` · arrival (9) · index (8) · `2`.
        assert_eq!(
            hex(&text),
            "206553f100300000000000012340006553f164000000032"
        );
        let mut eleven = parts(7, Layout::Aws);
        eleven.shard_index = 11;
        assert!(hex(&enc(eleven)).ends_with("0000000b2"));
        assert!(hex(&enc(eleven)).starts_with("206553f100b0"));
        assert_eq!(hex(&text).len(), HEX_DIGITS);
    }

    #[test]
    fn short_zero_and_foreign_numbers() {
        assert_eq!(decode("5"), Decoded::Short { shard_index: 5 });
        assert_eq!(decode("0"), Decoded::Zero);
        assert_eq!(decode("12x"), Decoded::Invalid);
        assert_eq!(decode(&"9".repeat(100)), Decoded::Invalid);
        let from_hex = |h: &str| {
            let mut n = U192::default();
            for (i, c) in h.bytes().rev().enumerate() {
                let digit = (c as char).to_digit(16).unwrap();
                n.set_bits(i as u32 * 4, 4, u64::from(digit));
            }
            n.to_decimal().to_string()
        };
        // The counter's top bit is never set by the service.
        let top = from_hex("206553f100080000000000000000006553f164000000002");
        assert_eq!(decode(&top), Decoded::Invalid);
        // The index field is signed.
        let signed = from_hex("206553f100000000000000000000006553f164800000002");
        match decode(&signed) {
            Decoded::Aws(p) => assert_eq!(p.shard_index, i32::MIN),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            format!("shardId-{:012}", i64::from(i32::MIN)),
            "shardId--02147483648"
        );
        let version1 = from_hex("206553f100000000000000000000006553f164000000001");
        assert_eq!(decode(&version1), Decoded::Version1);
    }

    #[test]
    fn legacy_numbers_are_the_earlier_releases_numbers() {
        // `2` · `0` · created (8) · shard (8) · counter (16) · arrival (8) · tag (4) · `2`.
        assert_eq!(
            hex(&enc(parts(0x1234, LEGACY))),
            "206553f1000000000300000000000012346553f164beef2"
        );
    }

    #[test]
    fn legacy_numbers_decode_only_with_their_tag() {
        let p = parts(42, LEGACY);
        let text = enc(p);
        assert_eq!(decode_legacy(&text, 0xbeef), Some(p));
        assert_eq!(decode_legacy(&text, 0xbeee), None);
        assert_eq!(decode_legacy(&enc(parts(42, Layout::Aws)), 0xbeef), None);
    }

    proptest! {
        #[test]
        fn round_trips(created in any::<u32>(), shard in any::<u32>(), counter in 0..=i64::MAX as u64,
                       arrival in any::<u32>(), tag in any::<u16>()) {
            let p = SeqParts { shard_created_s: created, shard_index: shard, counter,
                               arrival_s: arrival, layout: Layout::Aws };
            let Decoded::Aws(got) = decode(&enc(p)) else { panic!("not AWS's layout") };
            prop_assert!(got.is_of(shard, created));
            prop_assert_eq!(got.counter, counter);
            prop_assert_eq!(got.arrival_s, u64::from(arrival));
            let legacy = SeqParts { layout: Layout::Legacy { stream_tag: tag }, ..p };
            prop_assert_eq!(decode_legacy(&enc(legacy), tag), Some(legacy));
        }

        #[test]
        fn strictly_increasing_with_counter(a in 0u64..i64::MAX as u64, arrival_a in any::<u32>(),
                                            arrival_b in any::<u32>(), layout in layouts()) {
            let mut first = parts(a, layout);
            first.arrival_s = arrival_a;
            let mut second = parts(a + 1, layout);
            second.arrival_s = arrival_b;
            let (x, y) = (enc(first), enc(second));
            // Same-length decimals compare like numbers; longer means larger.
            prop_assert!((x.len(), &x) < (y.len(), &y));
        }

        #[test]
        fn any_digit_string_decodes_without_panic(text in "[0-9]{1,130}") {
            let _ = decode(&text);
            let _ = decode_legacy(&text, 7);
        }

        #[test]
        fn a_shards_numbers_are_the_single_numbers(
            created in any::<u32>(), shard in any::<u32>(), layout in layouts(),
            records in proptest::collection::vec(
                (
                    prop_oneof![
                        0..100u64,
                        0..i64::MAX as u64,
                        (i64::MAX as u64 - 100)..=i64::MAX as u64,
                    ],
                    prop_oneof![any::<u32>(), Just(0), Just(u32::MAX)],
                ),
                1..40,
            ),
        ) {
            let numbers = ShardNumbers::new(created, shard, layout);
            for (counter, arrival_s) in records {
                let parts = SeqParts { shard_created_s: created, shard_index: shard, counter,
                    arrival_s, layout };
                prop_assert_eq!(numbers.encode(counter, arrival_s).to_string(), enc(parts));
            }
        }
    }

    #[test]
    fn steps_are_two_to_the_fields_offsets() {
        let value = |chunks: &[u64]| {
            chunks
                .iter()
                .rev()
                .fold(0u128, |n, &c| n * u128::from(CHUNK) + u128::from(c))
        };
        for (layout, counter_low, arrival_low) in [
            (Layout::Aws, COUNTER_LOW, ARRIVAL_LOW),
            (LEGACY, legacy::COUNTER_LOW, legacy::ARRIVAL_LOW),
        ] {
            assert_eq!(value(&counter_step_chunks(layout)), 1u128 << counter_low);
            assert_eq!(value(&arrival_step_chunks(layout)), 1u128 << arrival_low);
        }
    }

    /// Decimal digits by repeated division by ten, one digit at a time: slow and plain, so a
    /// check on the chunked conversion.
    fn plain_decimal(n: U192) -> String {
        let mut limbs = n.0;
        let mut digits = Vec::new();
        loop {
            let mut remainder = 0u128;
            for limb in limbs.iter_mut().rev() {
                let value = (remainder << 64) | u128::from(*limb);
                *limb = (value / 10) as u64;
                remainder = value % 10;
            }
            digits.push(b'0' + remainder as u8);
            if limbs == [0; 3] {
                break;
            }
        }
        digits.reverse();
        String::from_utf8(digits).unwrap()
    }

    proptest! {
        #[test]
        fn eight_digits_are_the_numbers(n in 0..100_000_000u32) {
            let text = format!("{n:08}");
            prop_assert_eq!(&eight_digits(n)[..], text.as_bytes());
        }

        #[test]
        fn decimal_text_is_the_numbers(
            limbs in prop_oneof![
                any::<[u64; 3]>(),
                any::<u64>().prop_map(|n| [n, 0, 0]),
                (0..2_000_000_000u64).prop_map(|n| [n, 0, 0]),
                Just([0, 0, 0]),
                Just([u64::MAX; 3]),
            ],
        ) {
            let n = U192(limbs);
            prop_assert_eq!(n.to_decimal().to_string(), plain_decimal(n));
        }
    }
}
