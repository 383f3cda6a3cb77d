//! Partition-key hashing and the 128-bit hash-key space.

use md5::{Digest, Md5};

/// The hash key a partition key routes to: MD5 of its UTF-8 bytes, read big-endian.
pub fn partition_hash(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// Parses an `ExplicitHashKey`: a decimal in `0..=2^128-1`, or `None` when out of range.
pub fn parse_hash_key(text: &str) -> Option<u128> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u128>().ok()
}

/// The hash ranges AWS gives `count` new shards: equal widths, the last one ending at 2^128-1.
pub fn initial_ranges(count: u32) -> Vec<(u128, u128)> {
    assert!(count > 0);
    if count == 1 {
        return vec![(0, u128::MAX)];
    }
    let n = u128::from(count);
    // floor(2^128 / n), computed without a 129-bit type.
    let width = if u128::MAX % n == n - 1 {
        u128::MAX / n + 1
    } else {
        u128::MAX / n
    };
    (0..n)
        .map(|i| {
            let start = i * width;
            let end = if i == n - 1 {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            (start, end)
        })
        .collect()
}

/// Finds, among ranges sorted by their start, the last one starting at or below a hash key,
/// in a step or two whatever their number: a directory of the top bits of the key space (two
/// slots or more per range) gives the few ranges a slot can hold, which are then searched.
/// A plain binary search over 512 shards took nine dependent, mostly mispredicted steps per
/// record, the largest part of the engine's put loop at that width.
#[derive(Debug, Default, Clone)]
pub struct StartIndex {
    starts: Vec<u128>,
    /// The key's top `bits` choose a slot (0 when there are no ranges).
    bits: u32,
    /// Per slot, and one past the last: the last range starting at or below the slot's first
    /// key (0 if none does).
    slots: Vec<u32>,
}

/// The directory's most slots: 2^16 (256 KiB), enough for two per shard of the widest stream.
const START_INDEX_BITS_MAX: u32 = 16;

impl StartIndex {
    /// The directory over `starts`, which must be sorted.
    pub fn new(starts: Vec<u128>) -> StartIndex {
        debug_assert!(starts.is_sorted());
        if starts.is_empty() {
            return StartIndex::default();
        }
        let bits =
            (starts.len().next_power_of_two().trailing_zeros() + 1).clamp(1, START_INDEX_BITS_MAX);
        let shift = 128 - bits;
        let slots = (0..=(1u128 << bits))
            .map(|slot| {
                // Past the last slot: the key space's end (the last range for every key).
                let first = slot.checked_shl(shift).filter(|_| slot < 1 << bits);
                let at = match first {
                    Some(first) => starts.partition_point(|&s| s <= first),
                    None => starts.len(),
                };
                at.saturating_sub(1) as u32
            })
            .collect();
        StartIndex {
            starts,
            bits,
            slots,
        }
    }

    /// The position of the last range starting at or below `hash`; `None` when every range
    /// starts above it (or there are none).
    pub fn find(&self, hash: u128) -> Option<usize> {
        if self.bits == 0 {
            return None;
        }
        let slot = (hash >> (128 - self.bits)) as usize;
        let low = *self.slots.get(slot)? as usize;
        let high = *self.slots.get(slot + 1)? as usize;
        // Every range starting at or below `hash` is at or below `high`, which starts at or
        // below the next slot's first key; `low` starts at or below this slot's.
        let above = self.starts.get(low + 1..=high).unwrap_or_default();
        let at = low + above.partition_point(|&s| s <= hash);
        (*self.starts.get(at)? <= hash).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_md5_routes() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(partition_hash("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn initial_ranges_match_aws() {
        let one = initial_ranges(1);
        assert_eq!(one, vec![(0, u128::MAX)]);
        let two = initial_ranges(2);
        assert_eq!(two[0], (0, (1u128 << 127) - 1));
        assert_eq!(two[1], (1u128 << 127, u128::MAX));
        // Three shards: AWS shows 113427455640312821154458202477256070484 as the first end.
        let three = initial_ranges(3);
        assert_eq!(three[0].1, 113427455640312821154458202477256070484);
        assert_eq!(three[2].1, u128::MAX);
    }

    #[test]
    fn hash_key_parsing() {
        assert_eq!(parse_hash_key("0"), Some(0));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Some(u128::MAX)
        );
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211456"),
            None
        );
        assert_eq!(parse_hash_key("-1"), None);
        assert_eq!(parse_hash_key(""), None);
    }

    proptest! {
        #[test]
        fn ranges_tile_the_space(count in 1u32..2000) {
            let ranges = initial_ranges(count);
            prop_assert_eq!(ranges.len(), count as usize);
            prop_assert_eq!(ranges[0].0, 0);
            prop_assert_eq!(ranges[ranges.len() - 1].1, u128::MAX);
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].0 <= pair[0].1);
                prop_assert_eq!(pair[0].1 + 1, pair[1].0);
            }
        }

        #[test]
        fn the_start_index_finds_what_a_binary_search_finds(
            mut starts in proptest::collection::vec(any::<u128>(), 0..300),
            // Narrow ranges packed in one slot, like a shard split many times over.
            packed in proptest::collection::vec(0u128..1000, 0..40),
            even in 0u32..40,
            keys in proptest::collection::vec(any::<u128>(), 1..50),
        ) {
            starts.extend(packed.iter().map(|low| (1u128 << 100) + low));
            if even > 0 {
                starts.extend(initial_ranges(even).iter().map(|r| r.0));
            }
            starts.sort_unstable();
            starts.dedup();
            let index = StartIndex::new(starts.clone());
            let probes = keys
                .iter()
                .copied()
                .chain(starts.iter().flat_map(|&s| [s, s.wrapping_sub(1), s.saturating_add(1)]))
                .chain([0, u128::MAX, (1u128 << 100) + 500]);
            for hash in probes {
                let expected = starts.partition_point(|&s| s <= hash).checked_sub(1);
                prop_assert_eq!(index.find(hash), expected, "hash {}", hash);
            }
        }

        #[test]
        fn every_key_hashes_into_exactly_one_range(key in ".{1,64}", count in 1u32..64) {
            let hash = partition_hash(&key);
            let ranges = initial_ranges(count);
            let owners = ranges.iter().filter(|(s, e)| *s <= hash && hash <= *e).count();
            prop_assert_eq!(owners, 1);
        }
    }
}
