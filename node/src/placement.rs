//! The store's placement as one shard knows it: which shard this Raft group
//! is, which hash slots it owns, and where every shard is reached.
//!
//! A placement is recorded through Raft (`Command::Place`), so a group
//! serves a slot exactly from the log index that gives it the slot: what it
//! owns is decided by applying entries, in the same order on every member.
//! A group with no placement recorded is an unsharded store, the only shard,
//! owning every slot: stores created before sharding keep working.
//!
//! Which placements a group takes ([`check`]):
//!
//! 1. A group never changes shard.
//! 2. Epochs only grow; the placement the group holds, sent again, is
//!    taken as already done (an administrator's retry).
//! 3. Once placed, a group keeps the slots it owns: a later placement may
//!    only change the epoch and where the shards are reached. A first
//!    placement may give the group any slots, provided it holds no recipe
//!    in the others (the state machine, which alone knows its recipes,
//!    checks that part).
//! 4. A group's slots change only by moves ([`Placement::step`]), whose
//!    record is the group's own: a placement sent later keeps it. A slot
//!    moves from shard A to shard B at an epoch higher than any the store
//!    has used, in steps each group takes in its log:
//!    - B imports copies of the slot's recipes, at their versions, while
//!      A serves the slot (it owns no copy's slot, so none is served);
//!    - A *releases* the slot to B: from that entry it serves the slot no
//!      more, and calls for it wait; B imports what changed since the copy;
//!    - B *acquires* the slot: it serves it from that entry, every write A
//!      acknowledged in hand, its versions above A's (see [`VERSION_EPOCH_SHIFT`]);
//!    - A *cedes* the slot: it records B as the owner, drops its copies, and
//!      the calls that waited go on to B.
//!
//!    A has released and not ceded a slot while B may or may not own it:
//!    that is when neither serves it. Until B acquires it, A may *reclaim*
//!    it instead and serve it again.

use std::collections::BTreeMap;

use recipestore_protocol::pb;
use recipestore_protocol::slots::SLOTS;
use recipestore_protocol::slots::even_split;
use recipestore_protocol::slots::slot_of;
use serde::Deserialize;
use serde::Serialize;

/// The store's placement, as given to the group of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The shard this group is.
    pub shard: u16,
    /// Grows with every change of the store's placement.
    pub epoch: u64,
    /// The owning shard of each slot, indexed by slot.
    pub owners: Vec<u16>,
    /// The client addresses of each shard's members.
    pub shards: BTreeMap<u16, Vec<String>>,
    /// Slots this group owns but is handing over: it serves them no more
    /// (writes and reads wait) until the move ends.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub released: BTreeMap<u16, Handover>,
    /// The epoch at which this group received each slot it got by a move:
    /// the high bits of the versions it writes there (see [`Placement::version`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acquired: BTreeMap<u16, u64>,
}

/// Where a released slot goes, and at which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub to: u16,
    pub epoch: u64,
}

/// How far a version's epoch is shifted: a version is `epoch × 2^40 +
/// index`, with `epoch` the one at which the writing group received the
/// recipe's slot (0 for a slot it always had), so a recipe's versions keep
/// growing as it moves between shards whose logs are at unrelated indexes.
/// 2^40 log entries is some 35 years at 1,000 writes per second.
pub const VERSION_EPOCH_SHIFT: u32 = 40;

/// One step of moving slots between shards, as a group records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStep {
    /// The source stops serving `slots` for shard `to`, at `epoch`.
    Release {
        slots: Vec<u16>,
        to: u16,
        epoch: u64,
    },
    /// The destination owns `slots` from `epoch`, with the copies it holds.
    Acquire {
        slots: Vec<u16>,
        from: u16,
        epoch: u64,
    },
    /// The source records `to` as the owner of `slots` and drops its copies.
    Cede {
        slots: Vec<u16>,
        to: u16,
        epoch: u64,
    },
    /// The source serves released `slots` again: a move given up.
    Reclaim { slots: Vec<u16> },
}

impl MoveStep {
    pub fn slots(&self) -> &[u16] {
        match self {
            MoveStep::Release { slots, .. }
            | MoveStep::Acquire { slots, .. }
            | MoveStep::Cede { slots, .. }
            | MoveStep::Reclaim { slots } => slots,
        }
    }
}

/// Where a recipe is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// By this group.
    Here,
    /// By no group until the move of its slot ends: the caller waits.
    Moving(u16),
    /// By another shard.
    Elsewhere(Owner),
}

/// The shard that owns a slot, as a placement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub slot: u16,
    pub shard: u16,
    pub epoch: u64,
    /// Its members' client addresses.
    pub addrs: Vec<String>,
}

/// What taking a placement changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the group holds this placement already.
    None,
    /// The group's first placement.
    First,
    /// A newer placement with the same owned slots.
    Newer,
}

impl Placement {
    /// Shard `shard`'s placement in a new store of `addrs.len()` shards,
    /// shard `k` reached at `addrs[k]`: the slots split in even contiguous
    /// ranges, at epoch 1.
    pub fn new_store(shard: u16, addrs: &[Vec<String>]) -> Self {
        let shards = u16::try_from(addrs.len()).unwrap_or(u16::MAX);
        let mut owners = vec![0; usize::from(SLOTS)];
        for (owner, range) in even_split(shards).into_iter().enumerate() {
            for slot in range {
                owners[usize::from(slot)] = owner as u16;
            }
        }
        Self {
            shard,
            epoch: 1,
            owners,
            shards: (0..shards).zip(addrs.iter().cloned()).collect(),
            released: BTreeMap::new(),
            acquired: BTreeMap::new(),
        }
    }

    /// The version of a write to `slot` at log index `index` (see
    /// [`VERSION_EPOCH_SHIFT`]); `None`: an unsharded store, whose
    /// versions are log indexes.
    pub fn version(placement: Option<&Self>, slot: u16, index: u64) -> u64 {
        let epoch = placement
            .and_then(|p| p.acquired.get(&slot).copied())
            .unwrap_or(0);
        (epoch << VERSION_EPOCH_SHIFT) | index
    }

    /// Where the recipe called `name` is served under `placement` (`None`:
    /// an unsharded store, which serves every recipe).
    pub fn route(placement: Option<&Self>, name: &str) -> Route {
        match placement {
            Some(placement) => placement.route_slot(slot_of(name)),
            None => Route::Here,
        }
    }

    fn route_slot(&self, slot: u16) -> Route {
        if self.released.contains_key(&slot) {
            return Route::Moving(slot);
        }
        if self.owns(slot) {
            return Route::Here;
        }
        let shard = self.owners[usize::from(slot)];
        Route::Elsewhere(Owner {
            slot,
            shard,
            epoch: self.epoch,
            addrs: self.shards.get(&shard).cloned().unwrap_or_default(),
        })
    }

    /// Whether this group owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.owners[usize::from(slot)] == self.shard
    }

    /// How many slots this group owns.
    pub fn owned_slots(&self) -> usize {
        self.owners.iter().filter(|&&s| s == self.shard).count()
    }

    /// The other shards and their members' client addresses.
    pub fn other_shards(&self) -> impl Iterator<Item = (u16, &[String])> {
        self.shards
            .iter()
            .filter(|(shard, _)| **shard != self.shard)
            .map(|(shard, addrs)| (*shard, addrs.as_slice()))
    }

    /// A placement from the wire, checked whole: one owner per slot, and
    /// every owning shard reachable.
    pub fn from_pb(placement: pb::Placement) -> Result<Self, String> {
        let narrow = |value: u32, what: &str| {
            u16::try_from(value)
                .ok()
                .filter(|&v| v < SLOTS)
                .ok_or_else(|| {
                    format!(
                        "{what} {value} is not a shard: shards are 0 to {}",
                        SLOTS - 1
                    )
                })
        };
        let shard = narrow(placement.shard, "shard")?;
        if placement.epoch == 0 {
            return Err("a placement's epoch starts at 1".into());
        }
        if placement.owners.len() != usize::from(SLOTS) {
            return Err(format!(
                "a placement names the owner of each of the {SLOTS} slots, not {}",
                placement.owners.len()
            ));
        }
        let owners = placement
            .owners
            .iter()
            .map(|&owner| narrow(owner, "owner"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut shards = BTreeMap::new();
        for endpoints in placement.shards {
            let id = narrow(endpoints.shard, "shard")?;
            if endpoints.client_addrs.iter().any(|a| a.trim().is_empty()) {
                return Err(format!("shard {id} has an empty client address"));
            }
            // Listings ask every shard listed.
            if endpoints.client_addrs.is_empty() {
                return Err(format!("shard {id} is listed without a client address"));
            }
            if shards.insert(id, endpoints.client_addrs).is_some() {
                return Err(format!("shard {id} is listed twice"));
            }
        }
        for owner in &owners {
            if !shards.contains_key(owner) && *owner != shard {
                return Err(format!(
                    "shard {owner} owns slots but has no client address"
                ));
            }
        }
        let mut released = BTreeMap::new();
        for h in placement.released {
            released.insert(
                narrow_slot(h.slot)?,
                Handover {
                    to: narrow(h.to, "shard")?,
                    epoch: h.epoch,
                },
            );
        }
        let mut acquired = BTreeMap::new();
        for a in placement.acquired {
            acquired.insert(narrow_slot(a.slot)?, a.epoch);
        }
        Ok(Self {
            shard,
            epoch: placement.epoch,
            owners,
            shards,
            released,
            acquired,
        })
    }

    pub fn to_pb(&self) -> pb::Placement {
        pb::Placement {
            shard: u32::from(self.shard),
            epoch: self.epoch,
            owners: self.owners.iter().map(|&o| u32::from(o)).collect(),
            shards: self
                .shards
                .iter()
                .map(|(shard, addrs)| pb::ShardEndpoints {
                    shard: u32::from(*shard),
                    client_addrs: addrs.clone(),
                })
                .collect(),
            released: self
                .released
                .iter()
                .map(|(slot, h)| pb::SlotHandover {
                    slot: u32::from(*slot),
                    to: u32::from(h.to),
                    epoch: h.epoch,
                })
                .collect(),
            acquired: self
                .acquired
                .iter()
                .map(|(slot, epoch)| pb::SlotEpoch {
                    slot: u32::from(*slot),
                    epoch: *epoch,
                })
                .collect(),
        }
    }
}

impl Placement {
    /// `self` as a group holding `current` records it: with the group's
    /// own record of its moves, not the sender's (a first placement has
    /// none).
    pub fn keeping_moves(self, current: Option<&Placement>) -> Placement {
        Placement {
            released: current.map(|c| c.released.clone()).unwrap_or_default(),
            acquired: current.map(|c| c.acquired.clone()).unwrap_or_default(),
            ..self
        }
    }

    /// The placement after the group takes `step` (rule 4 of the module's
    /// comment); `None` when it took it already.
    pub fn step(&self, step: &MoveStep) -> Result<Option<Placement>, String> {
        let slots = step.slots();
        if slots.is_empty() {
            return Err("the step names no slot".into());
        }
        if let Some(&slot) = slots.iter().find(|&&s| s >= SLOTS) {
            return Err(format!("{slot} is not a slot"));
        }
        let all = |f: &dyn Fn(u16) -> bool| slots.iter().all(|&s| f(s));
        let mut next = self.clone();
        let fresh_epoch = |epoch: u64| {
            if epoch <= self.epoch {
                Err(format!(
                    "the group holds a placement of epoch {}; a move takes a higher epoch than {epoch}",
                    self.epoch
                ))
            } else {
                Ok(())
            }
        };
        match *step {
            MoveStep::Release { to, epoch, .. } => {
                let handover = Handover { to, epoch };
                if all(&|s| self.released.get(&s) == Some(&handover)) {
                    return Ok(None);
                }
                if to == self.shard {
                    return Err(format!("shard {to} cannot release slots to itself"));
                }
                if !self.shards.contains_key(&to) {
                    return Err(format!(
                        "shard {to} is not in the placement: it has no address"
                    ));
                }
                if let Some(s) = slots.iter().find(|&&s| !self.owns(s)) {
                    return Err(format!("slot {s} is not this shard's to release"));
                }
                if let Some(s) = slots.iter().find(|&&s| self.released.contains_key(&s)) {
                    return Err(format!("slot {s} is being handed over already"));
                }
                fresh_epoch(epoch)?;
                next.released.extend(slots.iter().map(|&s| (s, handover)));
                next.epoch = epoch;
            }
            MoveStep::Acquire { epoch, .. } => {
                if all(&|s| self.owns(s) && self.acquired.get(&s) == Some(&epoch)) {
                    return Ok(None);
                }
                if let Some(s) = slots.iter().find(|&&s| self.owns(s)) {
                    return Err(format!("slot {s} is this shard's already"));
                }
                fresh_epoch(epoch)?;
                for &s in slots {
                    next.owners[usize::from(s)] = self.shard;
                    next.acquired.insert(s, epoch);
                }
                next.epoch = epoch;
            }
            MoveStep::Cede { to, epoch, .. } => {
                if all(&|s| self.owners[usize::from(s)] == to && !self.released.contains_key(&s)) {
                    return Ok(None);
                }
                let handover = Handover { to, epoch };
                if let Some(s) = slots
                    .iter()
                    .find(|&&s| self.released.get(&s) != Some(&handover))
                {
                    return Err(format!(
                        "slot {s} was not released to shard {to} at epoch {epoch}"
                    ));
                }
                for &s in slots {
                    next.owners[usize::from(s)] = to;
                    next.released.remove(&s);
                    next.acquired.remove(&s);
                }
            }
            MoveStep::Reclaim { .. } => {
                if all(&|s| self.owns(s) && !self.released.contains_key(&s)) {
                    return Ok(None);
                }
                if let Some(s) = slots.iter().find(|&&s| !self.released.contains_key(&s)) {
                    return Err(format!("slot {s} is not being handed over"));
                }
                for s in slots {
                    next.released.remove(s);
                }
            }
        }
        Ok(Some(next))
    }
}

/// A slot number from the wire.
pub fn narrow_slot(slot: u32) -> Result<u16, String> {
    u16::try_from(slot)
        .ok()
        .filter(|&s| s < SLOTS)
        .ok_or_else(|| format!("{slot} is not a slot: slots are 0 to {}", SLOTS - 1))
}

/// Whether a group holding `current` takes `next`, by the rules in the
/// module's comment.
pub fn check(current: Option<&Placement>, next: &Placement) -> Result<Change, String> {
    let Some(current) = current else {
        return Ok(Change::First);
    };
    if current == next {
        return Ok(Change::None);
    }
    if next.shard != current.shard {
        return Err(format!(
            "this group is shard {}, not shard {}",
            current.shard, next.shard
        ));
    }
    if next.epoch <= current.epoch {
        return Err(format!(
            "the group holds a placement of epoch {}, which one of epoch {} cannot replace",
            current.epoch, next.epoch
        ));
    }
    let changed = (0..SLOTS)
        .filter(|&slot| current.owns(slot) != next.owns(slot))
        .count();
    if changed > 0 {
        return Err(format!(
            "the placement would change the owner of {changed} of this shard's slots; \
             a shard's slots change only by moving them"
        ));
    }
    Ok(Change::Newer)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Shard `shard`'s placement in a store of `shards` shards, shard `s`
    /// at 10.0.0.s, at `epoch`.
    pub(crate) fn placement(shard: u16, shards: u16, epoch: u64) -> Placement {
        let addrs: Vec<_> = (0..shards)
            .map(|s| vec![format!("10.0.0.{s}:7070")])
            .collect();
        Placement {
            epoch,
            ..Placement::new_store(shard, &addrs)
        }
    }

    #[test]
    fn an_unsharded_store_serves_every_recipe() {
        assert_eq!(Placement::route(None, "soup"), Route::Here);
    }

    #[test]
    fn a_recipe_is_routed_to_the_shard_owning_its_slot() {
        let shard1 = placement(1, 3, 4);
        let mut served = [0, 0, 0];
        for i in 0..3000 {
            let name = format!("recipe-{i}");
            let owner = shard1.owners[usize::from(slot_of(&name))];
            match Placement::route(Some(&shard1), &name) {
                Route::Here => assert_eq!(owner, 1),
                Route::Moving(_) => panic!("nothing moves"),
                Route::Elsewhere(to) => {
                    assert_eq!((to.shard, to.epoch), (owner, 4));
                    assert_eq!(to.addrs, vec![format!("10.0.0.{owner}:7070")]);
                }
            }
            served[usize::from(owner)] += 1;
        }
        assert!(served.iter().all(|&n| n > 800), "{served:?}");
    }

    #[test]
    fn a_placement_round_trips_through_the_wire() {
        let p = placement(2, 3, 9);
        assert_eq!(Placement::from_pb(p.to_pb()), Ok(p));
    }

    #[test]
    fn a_bad_placement_from_the_wire_is_refused_with_the_reason() {
        let good = placement(0, 2, 1).to_pb();
        type Spoil = fn(&mut pb::Placement);
        let cases: [(&str, Spoil); 7] = [
            ("epoch starts at 1", |p| p.epoch = 0),
            ("not 1023", |p| {
                p.owners.pop();
            }),
            ("owner 5000 is not a shard", |p| p.owners[3] = 5000),
            ("shard 1 owns slots but has no client address", |p| {
                p.shards.retain(|s| s.shard != 1)
            }),
            ("shard 1 is listed twice", |p| {
                let again = p.shards[1].clone();
                p.shards.push(again)
            }),
            ("shard 1 is listed without a client address", |p| {
                p.shards[1].client_addrs.clear()
            }),
            ("empty client address", |p| {
                p.shards[1].client_addrs.push(" ".into())
            }),
        ];
        for (expected, spoil) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            let error = Placement::from_pb(bad).unwrap_err();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn which_placements_a_group_takes() {
        let held = placement(1, 3, 5);
        let mut moved = placement(1, 3, 6);
        moved.owners[0] = 1;
        let mut readdressed = placement(1, 3, 6);
        readdressed.shards.insert(0, vec!["10.0.1.0:7070".into()]);
        let cases = [
            (None, placement(1, 3, 1), Ok(Change::First)),
            (Some(&held), held.clone(), Ok(Change::None)),
            (Some(&held), readdressed, Ok(Change::Newer)),
            (
                Some(&held),
                placement(1, 3, 4),
                Err("epoch 5, which one of epoch 4 cannot"),
            ),
            (
                Some(&held),
                Placement {
                    shard: 2,
                    ..placement(1, 3, 6)
                },
                Err("not shard 2"),
            ),
            (
                Some(&held),
                moved,
                Err("change the owner of 1 of this shard's slots"),
            ),
        ];
        for (current, next, expected) in cases {
            let got = check(current, &next);
            match expected {
                Ok(change) => assert_eq!(got, Ok(change)),
                Err(reason) => {
                    let error = got.unwrap_err();
                    assert!(error.contains(reason), "{reason:?} not in {error:?}");
                }
            }
        }
    }

    #[test]
    fn which_move_steps_a_group_takes() {
        let mut held = placement(0, 2, 5);
        held.released.insert(3, Handover { to: 1, epoch: 5 });
        let release = |slots: Vec<u16>, to, epoch| MoveStep::Release { slots, to, epoch };
        // Each case: a name, the step, and `Ok(None)` (taken already),
        // `Ok(Some(what the placement then shows))` or `Err(the reason)`.
        type Expected = Result<Option<&'static str>, &'static str>;
        let cases: Vec<(&str, MoveStep, Expected)> = vec![
            ("again", release(vec![3], 1, 5), Ok(None)),
            (
                "release",
                release(vec![4], 1, 6),
                Ok(Some("released 3,4 epoch 6")),
            ),
            ("to itself", release(vec![4], 0, 6), Err("to itself")),
            (
                "unknown shard",
                release(vec![4], 7, 6),
                Err("shard 7 is not in the placement"),
            ),
            (
                "not mine",
                release(vec![600], 1, 6),
                Err("slot 600 is not this shard's"),
            ),
            (
                "twice",
                release(vec![3, 4], 1, 6),
                Err("slot 3 is being handed over"),
            ),
            (
                "old epoch",
                release(vec![4], 1, 5),
                Err("a move takes a higher epoch"),
            ),
            ("no slot", release(vec![], 1, 6), Err("names no slot")),
            (
                "acquire",
                MoveStep::Acquire {
                    slots: vec![600],
                    from: 1,
                    epoch: 6,
                },
                Ok(Some("owns 600 epoch 6")),
            ),
            (
                "acquire mine",
                MoveStep::Acquire {
                    slots: vec![4],
                    from: 1,
                    epoch: 6,
                },
                Err("slot 4 is this shard's"),
            ),
            (
                "cede",
                MoveStep::Cede {
                    slots: vec![3],
                    to: 1,
                    epoch: 5,
                },
                Ok(Some("gave 3")),
            ),
            (
                "cede unreleased",
                MoveStep::Cede {
                    slots: vec![4],
                    to: 1,
                    epoch: 5,
                },
                Err("slot 4 was not released"),
            ),
            (
                "cede elsewhere",
                MoveStep::Cede {
                    slots: vec![3],
                    to: 1,
                    epoch: 4,
                },
                Err("at epoch 4"),
            ),
            (
                "reclaim",
                MoveStep::Reclaim { slots: vec![3] },
                Ok(Some("serves 3")),
            ),
            (
                "reclaim unreleased",
                MoveStep::Reclaim { slots: vec![4, 3] },
                Err("slot 4 is not being handed over"),
            ),
        ];
        for (case, step, expected) in cases {
            let got = held.step(&step);
            match (expected, got) {
                (Ok(None), Ok(None)) => {}
                (Ok(Some(what)), Ok(Some(next))) => {
                    let seen = match what {
                        "released 3,4 epoch 6" => {
                            next.released.keys().eq([3, 4].iter()) && next.epoch == 6
                        }
                        "owns 600 epoch 6" => {
                            next.owns(600) && next.acquired.get(&600) == Some(&6) && next.epoch == 6
                        }
                        "gave 3" => {
                            next.owners[3] == 1 && next.released.is_empty() && next.epoch == 5
                        }
                        "serves 3" => next.owns(3) && next.released.is_empty(),
                        _ => unreachable!(),
                    };
                    assert!(seen, "{case}: {next:?}");
                }
                (Err(reason), Err(error)) => assert!(
                    error.contains(reason),
                    "{case}: {reason:?} not in {error:?}"
                ),
                (expected, got) => panic!("{case}: expected {expected:?}, got {got:?}"),
            }
        }
        // A ceded slot is done: ceding again is taken as done, reclaiming refused.
        let ceded = held
            .step(&MoveStep::Cede {
                slots: vec![3],
                to: 1,
                epoch: 5,
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            ceded.step(&MoveStep::Cede {
                slots: vec![3],
                to: 1,
                epoch: 5
            }),
            Ok(None)
        );
        assert!(ceded.step(&MoveStep::Reclaim { slots: vec![3] }).is_err());
        // The slot moving is served by no one; its versions there start above.
        assert_eq!(held.route_slot(3), Route::Moving(3));
        let acquired = held
            .step(&MoveStep::Acquire {
                slots: vec![600],
                from: 1,
                epoch: 6,
            })
            .unwrap()
            .unwrap();
        assert_eq!(Placement::version(Some(&acquired), 600, 7), (6 << 40) | 7);
        assert_eq!(Placement::version(Some(&acquired), 4, 7), 7);
        assert_eq!(Placement::version(None, 4, 7), 7);
    }

    #[test]
    fn a_placement_sent_later_keeps_the_group_s_own_record_of_moves() {
        let mut held = placement(0, 2, 5);
        held.released.insert(3, Handover { to: 1, epoch: 5 });
        let mut sent = placement(0, 2, 6);
        sent.acquired.insert(9, 4);
        let kept = sent.keeping_moves(Some(&held));
        assert_eq!(
            (kept.released.clone(), kept.acquired.clone(), kept.epoch),
            (held.released.clone(), BTreeMap::new(), 6)
        );
        assert!(placement(0, 2, 1).keeping_moves(None).released.is_empty());
    }
}
