//! Placement of a sharded store's hash slots: from what the shards' groups
//! report (each group's placement, if it holds one) and what the status
//! recorded, decide which shard serves which slots now, and the one next
//! step towards the even split of `spec.shards`.
//!
//! Like [`crate::membership`], a pure planner without Kubernetes types or
//! memory of earlier calls. The groups are the authority: a placement is an
//! entry of a group's Raft log, and the node refuses one that breaks its
//! rules (`node/src/placement.rs`). Its rules, in order:
//!
//! 1. The store's current slot map is the placement of the highest epoch a
//!    group holds. Without one, it is the map of an unsharded store (shard
//!    0 serves every slot without a placement) when the status recorded
//!    that the store ran unsharded: a store created with one shard is never
//!    placed, and after growing it keeps serving every slot from shard 0.
//!    Without either, the store is new and no shard serves yet.
//! 2. A new store of one shard: nothing to place; it runs unsharded.
//! 3. A new store of several shards: once every shard's group is
//!    initialized and led, place each (epoch 1, the even split, every
//!    shard's members' client addresses). A group that holds the very same
//!    placement answers success, so a placement cut short is finished by
//!    sending it again.
//! 4. A group that serves slots in the current map but holds no placement
//!    (the placing of a new store cut short): place it with the current map.
//! 5. The members of a shard changed (a scale-out or scale-in), so the
//!    newest placement reaches them at other client addresses: place the
//!    same slot map with the addresses now at the next epoch in every
//!    placed group (a group takes a newer placement that keeps its slots).
//!    A group left at an older epoch (such a change cut short) is given
//!    the newest placement.
//! 6. The current map differs from the even split of `spec.shards`, or a
//!    move is under way (a group hands slots over, or the groups' maps
//!    differ, as a move changes its two groups' first; this is checked
//!    before rules 4 and 5): slots must move between groups
//!    ([`Decision::Move`]), one step per pass by the slot-move driver
//!    (`recipestore_client::reshard::step`), which places the added
//!    shards, finishes a move left half done, moves the next batch, and
//!    readdresses every group once the map is the target's. A shard beyond
//!    `spec.shards` keeps its objects, owning no slot once they moved.
//! 7. Otherwise the placement is steady.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use recipestore_protocol::pb;
use recipestore_protocol::slots::{self, Move, SLOTS};

/// A group's placement as its node reports it (`StatusResponse.placement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPlacement {
    pub shard: u16,
    pub epoch: u64,
    /// The owning shard of each slot, indexed by slot.
    pub owners: Vec<u16>,
    /// The client addresses of each shard listed.
    pub shards: BTreeMap<u16, Vec<String>>,
    /// How many of its slots the group is handing over to another: a move
    /// is under way.
    pub releasing: usize,
}

/// One shard as the placement planner needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub shard: u16,
    /// The peer address of the group's leader, once initialized and led.
    pub leader: Option<String>,
    /// The placement the group's leader holds.
    pub placement: Option<GroupPlacement>,
    /// Where the shard is reached: its voters' client addresses.
    pub client_addrs: Vec<String>,
    /// Its voters' peer addresses, where the slot-move driver calls it.
    pub peer_addrs: Vec<String>,
}

/// Which shard serves each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    /// The placement's epoch; `None` for an unsharded store's shard 0.
    pub epoch: Option<u64>,
    /// The owning shard of each slot, indexed by slot.
    pub owners: Vec<u16>,
}

impl SlotMap {
    /// The even split of `shards` shards, as placed at `epoch`.
    pub fn even(shards: u16, epoch: Option<u64>) -> Self {
        let mut owners = vec![0; usize::from(SLOTS)];
        for (shard, range) in slots::even_split(shards).into_iter().enumerate() {
            for slot in range {
                owners[usize::from(slot)] = shard as u16;
            }
        }
        Self { epoch, owners }
    }

    /// Whether `shard` serves any slot.
    pub fn serves(&self, shard: u16) -> bool {
        self.owners.contains(&shard)
    }

    /// How many slots `shard` serves.
    pub fn slots_of(&self, shard: u16) -> u32 {
        self.owners.iter().filter(|&&o| o == shard).count() as u32
    }

    /// `shard`'s slots as inclusive ranges: `0-341,700-711`.
    pub fn ranges_of(&self, shard: u16) -> String {
        let slots: Vec<u16> = (0..SLOTS)
            .filter(|&s| self.owners[usize::from(s)] == shard)
            .collect();
        ranges(&slots)
    }
}

/// What the planner is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// `spec.shards`.
    pub target: u16,
    /// Every shard that exists, in order, from shard 0.
    pub shards: Vec<Shard>,
    /// The status recorded that the store ran unsharded: shard 0 holds
    /// every recipe without a placement.
    pub ran_unsharded: bool,
}

/// A placement to record in one shard's group.
#[derive(Clone, Debug, PartialEq)]
pub struct Placing {
    pub shard: u16,
    /// The group's leader, which records it through its log.
    pub leader: String,
    pub placement: pb::Placement,
}

/// Slots that must move before the store has `spec.shards` shards of even
/// shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMove {
    pub target: u16,
    /// The planned moves, as few as even shares allow, ordered by slot.
    pub moves: Vec<Move>,
}

impl std::fmt::Display for PendingMove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut from: Vec<u16> = self.moves.iter().map(|m| m.from).collect();
        let mut to: Vec<u16> = self.moves.iter().map(|m| m.to).collect();
        from.sort_unstable();
        from.dedup();
        to.sort_unstable();
        to.dedup();
        write!(
            f,
            "spec.shards is {}: {} of {SLOTS} slots must move from shard(s) {from:?} to shard(s) {to:?}; \
             moving slots between the shards of a running store is not built yet, so the shards \
             keep the slots they serve (a shard beyond spec.shards keeps running) and the added \
             shards serve none",
            self.target,
            self.moves.len(),
        )
    }
}

/// The one next placement step.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A store of one shard, never placed: shard 0 serves every slot.
    Unsharded,
    /// Nothing to place until this changes.
    Wait(String),
    /// Record these placements (rules 3 and 4).
    Place(Vec<Placing>),
    /// Slots must move between groups (rule 5).
    Move(PendingMove),
    /// Every group holds the store's placement and it is the target's.
    Steady,
}

/// The current slot map (rule 1): `None` for a new store no shard serves yet.
pub fn current(inputs: &Inputs) -> Option<SlotMap> {
    let newest = inputs
        .shards
        .iter()
        .filter_map(|s| s.placement.as_ref())
        .max_by_key(|p| p.epoch);
    match newest {
        Some(p) => Some(SlotMap {
            epoch: Some(p.epoch),
            owners: p.owners.clone(),
        }),
        None if inputs.ran_unsharded => Some(SlotMap::even(1, None)),
        None => None,
    }
}

pub fn plan(inputs: &Inputs) -> Decision {
    let Some(current) = current(inputs) else {
        return place_new_store(inputs);
    };
    // Rule 6 first while a move is under way: a group hands slots over, or
    // the groups' maps differ (a move changed its two groups' first). The
    // slot-move driver finishes it, and readdresses every group after.
    let placed: Vec<&GroupPlacement> = inputs
        .shards
        .iter()
        .filter_map(|s| s.placement.as_ref())
        .collect();
    let moving = placed.iter().any(|p| p.releasing > 0)
        || placed.windows(2).any(|w| w[0].owners != w[1].owners);
    if moving {
        return Decision::Move(PendingMove {
            target: inputs.target,
            moves: slots::rebalance(&own_slots(&placed), inputs.target),
        });
    }
    if let Some(epoch) = current.epoch {
        let unplaced: Vec<&Shard> = inputs
            .shards
            .iter()
            .filter(|s| s.placement.is_none() && current.serves(s.shard))
            .collect();
        if !unplaced.is_empty() {
            return place(inputs, &unplaced, &current.owners, epoch);
        }
        if let Some(placing) = readdress(inputs, &current.owners, epoch) {
            return placing;
        }
    }
    let owners: Vec<u16> = current.owners.clone();
    let moves = slots::rebalance(&owners, inputs.target);
    if !moves.is_empty() {
        return Decision::Move(PendingMove {
            target: inputs.target,
            moves,
        });
    }
    match current.epoch {
        None => Decision::Unsharded,
        Some(_) => Decision::Steady,
    }
}

/// Ascending `slots` as inclusive ranges: `0-341,700-711`.
pub fn ranges(slots: &[u16]) -> String {
    let mut ranges = String::new();
    let mut i = 0;
    while i < slots.len() {
        let start = slots[i];
        while i + 1 < slots.len() && slots[i + 1] == slots[i] + 1 {
            i += 1;
        }
        if !ranges.is_empty() {
            ranges.push(',');
        }
        let _ = write!(ranges, "{start}-{}", slots[i]);
        i += 1;
    }
    ranges
}

/// Who owns each slot by the groups' own records: the group whose
/// placement gives it the slot (the later one where two do, a move's
/// destination having acquired it before its source ceded it).
fn own_slots(placed: &[&GroupPlacement]) -> Vec<u16> {
    let mut owners = vec![0; usize::from(SLOTS)];
    for p in placed {
        for (slot, &owner) in p.owners.iter().enumerate() {
            if owner == p.shard {
                owners[slot] = owner;
            }
        }
    }
    owners
}

/// Rules 2 and 3.
fn place_new_store(inputs: &Inputs) -> Decision {
    if inputs.target <= 1 {
        return Decision::Unsharded;
    }
    let members: Vec<&Shard> = inputs
        .shards
        .iter()
        .filter(|s| s.shard < inputs.target)
        .collect();
    if members.len() < usize::from(inputs.target) {
        return Decision::Wait(format!(
            "{} of {} shards exist; the store is placed once every shard's group is initialized",
            members.len(),
            inputs.target
        ));
    }
    let owners = SlotMap::even(inputs.target, Some(1)).owners;
    place(inputs, &members, &owners, 1)
}

/// Rule 5: the placed groups given the newest slot map again, with the
/// shards' addresses now, when those changed (at the next epoch) or when
/// a group holds an older epoch (at the newest).
fn readdress(inputs: &Inputs, owners: &[u16], epoch: u64) -> Option<Decision> {
    let placed: Vec<&Shard> = inputs
        .shards
        .iter()
        .filter(|s| s.placement.is_some())
        .collect();
    let newest = placed
        .iter()
        .filter_map(|s| s.placement.as_ref())
        .find(|p| p.epoch == epoch)?;
    let now: BTreeMap<u16, Vec<String>> = endpoints(inputs, owners)
        .into_iter()
        .filter_map(|e| Some((u16::try_from(e.shard).ok()?, e.client_addrs)))
        .collect();
    if newest.shards != now {
        return Some(place(inputs, &placed, owners, epoch + 1));
    }
    let behind: Vec<&Shard> = placed
        .into_iter()
        .filter(|s| s.placement.as_ref().is_some_and(|p| p.epoch < epoch))
        .collect();
    (!behind.is_empty()).then(|| place(inputs, &behind, owners, epoch))
}

/// The shards a placement of `owners` lists, each at its client
/// addresses: those `spec.shards` asks for (a shard added owns no slot
/// until slots move to it, and answers listings with none) and those
/// owning slots in it; the slot-move driver lists the same.
fn endpoints(inputs: &Inputs, owners: &[u16]) -> Vec<pb::ShardEndpoints> {
    inputs
        .shards
        .iter()
        .filter(|s| s.shard < inputs.target || owners.contains(&s.shard))
        .map(|s| pb::ShardEndpoints {
            shard: u32::from(s.shard),
            client_addrs: s.client_addrs.clone(),
        })
        .collect()
}

/// Placements of `shards` in a store of `owners` at `epoch`, every shard
/// the map names reached at its members' client addresses; waits for a
/// group without a leader.
fn place(inputs: &Inputs, shards: &[&Shard], owners: &[u16], epoch: u64) -> Decision {
    if let Some(waiting) = shards.iter().find(|s| s.leader.is_none()) {
        return Decision::Wait(format!(
            "shard {}'s group has no leader yet: the store is placed once every shard's group is initialized and led",
            waiting.shard
        ));
    }
    let endpoints = endpoints(inputs, owners);
    Decision::Place(
        shards
            .iter()
            .filter_map(|s| {
                Some(Placing {
                    shard: s.shard,
                    leader: s.leader.clone()?,
                    placement: pb::Placement {
                        shard: u32::from(s.shard),
                        epoch,
                        owners: owners.iter().map(|&o| u32::from(o)).collect(),
                        shards: endpoints.clone(),
                        released: Vec::new(),
                        acquired: Vec::new(),
                    },
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(k: u16, led: bool, placement: Option<GroupPlacement>) -> Shard {
        Shard {
            shard: k,
            leader: led.then(|| format!("s{k}-0:7071")),
            placement,
            client_addrs: vec![format!("s{k}-0:7070"), format!("s{k}-1:7070")],
            peer_addrs: vec![format!("s{k}-0:7071"), format!("s{k}-1:7071")],
        }
    }

    /// Shard `k`'s group placed at epoch 1 in the even split of `shards`,
    /// every shard reached where [`shard`] says.
    fn placed(k: u16, shards: u16) -> Option<GroupPlacement> {
        Some(GroupPlacement {
            shard: k,
            epoch: 1,
            owners: SlotMap::even(shards, Some(1)).owners,
            shards: (0..shards)
                .map(|s| (s, shard(s, true, None).client_addrs))
                .collect(),
            releasing: 0,
        })
    }

    fn inputs(target: u16, shards: Vec<Shard>, ran_unsharded: bool) -> Inputs {
        Inputs {
            target,
            shards,
            ran_unsharded,
        }
    }

    #[test]
    fn a_store_of_one_shard_is_never_placed() {
        let new = inputs(1, vec![shard(0, true, None)], false);
        assert_eq!(plan(&new), Decision::Unsharded);
        assert_eq!(current(&new), None);
        let running = inputs(1, vec![shard(0, true, None)], true);
        assert_eq!(plan(&running), Decision::Unsharded);
        assert_eq!(current(&running), Some(SlotMap::even(1, None)));
    }

    #[test]
    fn a_new_sharded_store_waits_for_every_group_then_places_each_evenly_at_epoch_1() {
        let waiting = inputs(3, vec![shard(0, true, None), shard(1, true, None)], false);
        assert!(matches!(plan(&waiting), Decision::Wait(w) if w.contains("2 of 3 shards")));
        let unled = inputs(
            3,
            vec![
                shard(0, true, None),
                shard(1, false, None),
                shard(2, true, None),
            ],
            false,
        );
        assert!(matches!(plan(&unled), Decision::Wait(w) if w.contains("shard 1's group")));

        let ready = inputs(3, (0..3).map(|k| shard(k, true, None)).collect(), false);
        let Decision::Place(placings) = plan(&ready) else {
            panic!("places the store: {:?}", plan(&ready));
        };
        assert_eq!(
            placings.iter().map(|p| p.shard).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for p in &placings {
            assert_eq!(p.leader, format!("s{}-0:7071", p.shard));
            assert_eq!(p.placement.shard, u32::from(p.shard));
            assert_eq!(p.placement.epoch, 1);
            assert_eq!(p.placement.owners.len(), usize::from(SLOTS));
            assert_eq!(p.placement.owners[0], 0);
            assert_eq!(p.placement.owners[341], 0);
            assert_eq!(p.placement.owners[342], 1);
            assert_eq!(p.placement.owners[1023], 2);
            let listed: Vec<(u32, usize)> = p
                .placement
                .shards
                .iter()
                .map(|s| (s.shard, s.client_addrs.len()))
                .collect();
            assert_eq!(listed, [(0, 2), (1, 2), (2, 2)]);
        }
    }

    #[test]
    fn a_placement_cut_short_is_finished_with_the_same_map() {
        let half = inputs(
            2,
            vec![shard(0, true, placed(0, 2)), shard(1, true, None)],
            false,
        );
        let Decision::Place(placings) = plan(&half) else {
            panic!("finishes the placement: {:?}", plan(&half));
        };
        assert_eq!(placings.len(), 1);
        assert_eq!(placings[0].shard, 1);
        assert_eq!(placings[0].placement.epoch, 1);
        let done = inputs(
            2,
            vec![shard(0, true, placed(0, 2)), shard(1, true, placed(1, 2))],
            false,
        );
        assert_eq!(plan(&done), Decision::Steady);
    }

    #[test]
    fn a_grown_unsharded_store_places_nothing_and_reports_the_moves() {
        let grown = inputs(2, vec![shard(0, true, None), shard(1, true, None)], true);
        let Decision::Move(pending) = plan(&grown) else {
            panic!("slots must move: {:?}", plan(&grown));
        };
        assert_eq!(pending.moves.len(), 512);
        assert!(pending.moves.iter().all(|m| m.from == 0 && m.to == 1));
        let said = pending.to_string();
        assert!(
            said.contains("512 of 1024 slots must move from shard(s) [0] to shard(s) [1]"),
            "{said}"
        );
        assert_eq!(current(&grown), Some(SlotMap::even(1, None)));
    }

    #[test]
    fn a_shrunk_store_keeps_every_shard_s_slots_and_reports_the_moves() {
        let shrunk = inputs(
            2,
            (0..3).map(|k| shard(k, true, placed(k, 3))).collect(),
            false,
        );
        let Decision::Move(pending) = plan(&shrunk) else {
            panic!("slots must move: {:?}", plan(&shrunk));
        };
        assert!(pending.moves.iter().all(|m| m.from == 2));
        assert_eq!(current(&shrunk).unwrap().slots_of(2), 341);
    }

    #[test]
    fn a_shard_added_to_a_placed_store_is_listed_then_given_slots_by_moves() {
        let mut grown = inputs(
            3,
            vec![
                shard(0, true, placed(0, 2)),
                shard(1, true, placed(1, 2)),
                shard(2, true, None),
            ],
            false,
        );
        // The placed groups list it, at the next epoch, with their slots.
        let Decision::Place(placings) = plan(&grown) else {
            panic!("the added shard is listed first: {:?}", plan(&grown));
        };
        assert_eq!(placings.iter().map(|p| p.shard).collect::<Vec<_>>(), [0, 1]);
        assert!(
            placings
                .iter()
                .all(|p| p.placement.epoch == 2 && p.placement.shards.len() == 3)
        );
        let added = grown.shards[2].client_addrs.clone();
        for k in 0..2 {
            let listed = grown.shards[k].placement.as_mut().unwrap();
            listed.epoch = 2;
            listed.shards.insert(2, added.clone());
        }
        // Then slots move to it; it is placed by the slot-move driver.
        assert!(matches!(plan(&grown), Decision::Move(m) if m.moves.iter().all(|m| m.to == 2)));
    }

    #[test]
    fn a_move_under_way_is_the_driver_s_to_finish() {
        let mut releasing = placed(0, 2).unwrap();
        releasing.releasing = 8;
        let moving = inputs(
            2,
            vec![
                shard(0, true, Some(releasing)),
                shard(1, true, placed(1, 2)),
            ],
            false,
        );
        assert!(matches!(plan(&moving), Decision::Move(m) if m.moves.is_empty()));
        // A move changed its two groups' maps first; the third's differs.
        let mut ahead = placed(0, 3).unwrap();
        ahead.owners[0] = 2;
        let diverged = inputs(
            3,
            vec![
                shard(0, true, Some(ahead)),
                shard(1, true, placed(1, 3)),
                shard(2, true, placed(2, 3)),
            ],
            false,
        );
        assert!(matches!(plan(&diverged), Decision::Move(_)));
    }

    #[test]
    fn changed_members_are_placed_again_at_the_next_epoch_with_the_same_slots() {
        let mut shards: Vec<Shard> = (0..2).map(|k| shard(k, true, placed(k, 2))).collect();
        assert_eq!(plan(&inputs(2, shards.clone(), false)), Decision::Steady);
        shards[1].client_addrs.push("s1-2:7070".to_owned());
        let Decision::Place(placings) = plan(&inputs(2, shards.clone(), false)) else {
            panic!("placed again");
        };
        assert_eq!(placings.iter().map(|p| p.shard).collect::<Vec<_>>(), [0, 1]);
        for p in &placings {
            assert_eq!(p.placement.epoch, 2);
            assert_eq!(
                p.placement.owners,
                placed(0, 2)
                    .unwrap()
                    .owners
                    .iter()
                    .map(|&o| u32::from(o))
                    .collect::<Vec<_>>()
            );
            assert_eq!(p.placement.shards[1].client_addrs.len(), 3);
        }
        // Shard 0 took it, shard 1 did not yet: shard 1 is given epoch 2.
        let mut newer = placed(0, 2).unwrap();
        newer.epoch = 2;
        newer.shards.insert(1, shards[1].client_addrs.clone());
        shards[0].placement = Some(newer);
        let Decision::Place(placings) = plan(&inputs(2, shards.clone(), false)) else {
            panic!("the group behind is brought to the newest epoch");
        };
        assert_eq!(placings.len(), 1);
        assert_eq!((placings[0].shard, placings[0].placement.epoch), (1, 2));
    }

    #[test]
    fn slot_ranges_read_as_inclusive_ranges() {
        let map = SlotMap::even(3, Some(1));
        assert_eq!(map.ranges_of(0), "0-341");
        assert_eq!(map.ranges_of(2), "683-1023");
        assert_eq!(map.ranges_of(3), "");
        let mut owners = map.owners.clone();
        owners[700] = 0;
        let moved = SlotMap {
            epoch: Some(2),
            owners,
        };
        assert_eq!(moved.ranges_of(0), "0-341,700-700");
        assert_eq!(moved.slots_of(0), 343);
    }
}
