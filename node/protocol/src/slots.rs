//! Where a recipe lives in a sharded store: every name falls in one of
//! [`SLOTS`] hash slots, and each slot belongs to one shard (one Raft
//! group). The hash is part of the protocol: clients, nodes and the
//! operator must agree on it, so it never changes.
//!
//! A name's slot is the 64-bit FNV-1a hash of its UTF-8 bytes, modulo
//! [`SLOTS`]. FNV-1a is short enough to write in any language and spreads
//! names that differ only in their last bytes ("soup-1", "soup-2") across
//! slots.

/// How many hash slots the names are spread over. A store can have at most
/// this many shards.
pub const SLOTS: u16 = 1024;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash slot of the recipe called `name`.
pub fn slot_of(name: &str) -> u16 {
    let hash = name.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    (hash % u64::from(SLOTS)) as u16
}

/// Slots split into `shards` contiguous ranges of nearly equal size, the
/// first ranges one slot longer when they do not divide evenly: shard `k`
/// owns `range(k)`. The placement of a store created with `shards` shards.
pub fn even_split(shards: u16) -> Vec<std::ops::Range<u16>> {
    assert!(
        (1..=SLOTS).contains(&shards),
        "a store has 1 to {SLOTS} shards"
    );
    let (base, extra) = (SLOTS / shards, SLOTS % shards);
    let mut start = 0;
    (0..shards)
        .map(|k| {
            let len = base + u16::from(k < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed values: another implementation of the hash must give these.
    #[test]
    fn the_slot_of_a_name_is_fnv1a_64_modulo_1024() {
        assert_eq!(slot_of(""), (0xcbf2_9ce4_8422_2325u64 % 1024) as u16);
        assert_eq!(slot_of("a"), (0xaf63_dc4c_8601_ec8cu64 % 1024) as u16);
        assert_eq!(slot_of("foobar"), (0x8594_4171_f739_67e8u64 % 1024) as u16);
    }

    #[test]
    fn names_spread_over_every_slot() {
        let mut hits = vec![0u32; SLOTS as usize];
        for i in 0..100_000 {
            hits[slot_of(&format!("recipe-{i}")) as usize] += 1;
        }
        let (min, max) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
        // About 98 a slot; a poor hash leaves slots empty or doubles some.
        assert!(*min > 50 && *max < 150, "min {min} max {max}");
    }

    #[test]
    fn an_even_split_covers_every_slot_once_in_nearly_equal_ranges() {
        for shards in [1, 2, 3, 7, 1000, SLOTS] {
            let ranges = even_split(shards);
            assert_eq!(ranges.len(), shards as usize);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, SLOTS);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
            let lens: Vec<_> = ranges.iter().map(|r| r.len()).collect();
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
        }
        assert_eq!(even_split(3), vec![0..342, 342..683, 683..1024]);
    }
}
