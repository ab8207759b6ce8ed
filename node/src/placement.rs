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
}

/// Where a recipe is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// By this group.
    Here,
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
        }
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
        Ok(Self {
            shard,
            epoch: placement.epoch,
            owners,
            shards,
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
        }
    }
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
}
