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

/// One slot changing owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub slot: u16,
    pub from: u16,
    pub to: u16,
}

/// The slot moves that take a store whose slot `s` belongs to `owners[s]`
/// to `shards` shards of nearly equal shares (shard `k`'s share is the
/// length of `even_split(shards)[k]`), moving as few slots as those shares
/// allow: a shard numbered `shards` or above gives all its slots away; any
/// other keeps its slots up to its share and gives away its highest ones
/// beyond it; the slots given away go, lowest first, to the shards short of
/// their share, lowest shard first. Ordered by slot.
pub fn rebalance(owners: &[u16], shards: u16) -> Vec<Move> {
    let shares: Vec<usize> = even_split(shards).iter().map(|r| r.len()).collect();
    let mut owned: Vec<Vec<u16>> = vec![Vec::new(); usize::from(SLOTS)];
    for (slot, &owner) in owners.iter().enumerate() {
        owned[usize::from(owner)].push(slot as u16);
    }
    let mut freed: Vec<(u16, u16)> = Vec::new();
    for (shard, slots) in owned.iter_mut().enumerate() {
        let share = shares.get(shard).copied().unwrap_or(0);
        if slots.len() > share {
            freed.extend(slots.drain(share..).map(|slot| (slot, shard as u16)));
        }
    }
    freed.sort_unstable();
    let mut freed = freed.into_iter();
    let mut moves = Vec::new();
    for (shard, share) in shares.iter().enumerate() {
        let short = share.saturating_sub(owned[shard].len());
        moves.extend(freed.by_ref().take(short).map(|(slot, from)| Move {
            slot,
            from,
            to: shard as u16,
        }));
    }
    moves.sort_unstable_by_key(|m| m.slot);
    moves
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

    /// Owners after `moves`, checking each moves a slot from its owner.
    fn applied(mut owners: Vec<u16>, moves: &[Move]) -> Vec<u16> {
        for m in moves {
            assert_eq!(owners[usize::from(m.slot)], m.from, "{m:?}");
            owners[usize::from(m.slot)] = m.to;
        }
        owners
    }

    fn new_store(shards: u16) -> Vec<u16> {
        applied(vec![0; usize::from(SLOTS)], &rebalance(&[0; 1024], shards))
    }

    #[test]
    fn a_new_store_s_rebalance_is_the_even_split() {
        for shards in [1, 2, 3, 8] {
            let owners = new_store(shards);
            for (shard, range) in even_split(shards).into_iter().enumerate() {
                assert!(
                    range
                        .clone()
                        .all(|s| owners[usize::from(s)] == shard as u16)
                );
            }
        }
    }

    #[test]
    fn resharding_moves_only_what_the_shares_require() {
        // (from, to, slots moved): the excess of the shards over their
        // shares, which no plan can do with less.
        let cases = [
            (1, 2, 512),
            (2, 3, 341),
            (3, 2, 341),
            (2, 1, 512),
            (3, 4, 256),
            (4, 3, 256),
            (1, 8, 896),
            (8, 5, 384),
        ];
        for (from, to, expected) in cases {
            let moves = rebalance(&new_store(from), to);
            assert_eq!(moves.len(), expected, "{from} -> {to}");
            let owners = applied(new_store(from), &moves);
            let mut counts = vec![0usize; usize::from(to)];
            for owner in &owners {
                counts[usize::from(*owner)] += 1;
            }
            let shares: Vec<usize> = even_split(to).iter().map(|r| r.len()).collect();
            assert_eq!(counts, shares, "{from} -> {to}");
            assert!(
                rebalance(&owners, to).is_empty(),
                "balanced: nothing left to move"
            );
        }
    }

    #[test]
    fn a_store_grown_and_shrunk_step_by_step_stays_balanced() {
        let mut owners = new_store(1);
        for shards in [2, 3, 5, 4, 7, 2, 1, 6] {
            let moves = rebalance(&owners, shards);
            let mut moved: Vec<u16> = moves.iter().map(|m| m.slot).collect();
            moved.dedup();
            assert_eq!(moved.len(), moves.len(), "a slot moves once");
            owners = applied(owners, &moves);
            let shares: Vec<usize> = even_split(shards).iter().map(|r| r.len()).collect();
            for (shard, share) in shares.iter().enumerate() {
                let count = owners.iter().filter(|o| usize::from(**o) == shard).count();
                assert_eq!(count, *share, "shard {shard} of {shards}");
            }
        }
    }
}
