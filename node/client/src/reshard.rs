//! Resharding a running store: moving hash slots between its shards while
//! clients read and write, as `recipectl` and the operator drive it.
//!
//! Every decision is recorded in the shards' own Raft logs (see the node's
//! `placement` module), so this driver keeps no state of its own: it reads
//! each shard's placement, finishes any move a previous run left half done,
//! and then moves the slots [`slots::rebalance`] plans, a batch at a time.
//! A batch of slots goes from shard A to shard B at an epoch above any the
//! store has used:
//!
//! 1. **copy**: A's recipes in the slots are imported into B, page by page,
//!    at their versions, paced to `bytes_per_second`; A serves throughout;
//! 2. **release**: A stops serving the slots; calls for them wait;
//! 3. **catch up**: what A changed since the copy (by comparing names and
//!    versions) is imported into B, and B's copies of recipes A deleted
//!    are removed;
//! 4. **acquire**: B serves the slots, with every write A acknowledged;
//! 5. **cede**: A records B as their owner and drops its copies; the calls
//!    that waited go on to B.
//!
//! Killed at any point, a run leaves each shard's record consistent, and
//! the next run resumes from it: a batch released and not acquired is
//! caught up and acquired, or, if its destination is to leave the store,
//! rolled back (the source reclaims it); one acquired and not ceded is
//! ceded.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use recipestore_protocol::pb;
use recipestore_protocol::slots;
use recipestore_protocol::slots::SLOTS;

use crate::admin::AdminClient;
use crate::admin::AdminError;

/// One shard of the store as the driver reaches it.
#[derive(Debug, Clone)]
pub struct Shard {
    pub shard: u16,
    /// A client of each member's admin API.
    pub admins: Vec<AdminClient>,
    /// Each member's client address, as other shards pass calls on to it.
    pub client_addrs: Vec<String>,
}

/// How fast and in which pieces slots move.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Most slots moved as one batch: the slots whose calls wait together
    /// while the batch switches shards.
    pub batch_slots: usize,
    /// Most bytes of recipes copied per second, so that the copy leaves the
    /// shards' disks and CPUs to their clients.
    pub bytes_per_second: u64,
    /// Most bytes of recipes in one page of a copy: one Raft entry.
    pub page_bytes: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            batch_slots: 64,
            bytes_per_second: 32 << 20,
            page_bytes: 512 << 10,
        }
    }
}

/// How far a resharding got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Slots this run moved, and those plus the slots still to move.
    pub slots_moved: usize,
    pub slots_total: usize,
    /// Recipes and bytes of content copied between shards, catching up included.
    pub recipes_copied: u64,
    pub bytes_copied: u64,
}

/// How many refused steps in a row [`reshard`] takes again.
const REFUSALS_RETRIED: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    #[error("shard {shard}: {source}")]
    Admin {
        shard: u16,
        #[source]
        source: AdminError,
    },
    #[error("{0}")]
    Store(String),
}

impl ReshardError {
    /// Whether a shard refused a call (FAILED_PRECONDITION): the shard's
    /// answer to the state it holds, not a failure to reach it.
    pub fn is_refusal(&self) -> bool {
        match self {
            ReshardError::Admin { source, .. } => source
                .status()
                .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition),
            ReshardError::Store(_) => false,
        }
    }
}

/// A batch of slots moving from one shard to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub from: u16,
    pub to: u16,
    pub slots: Vec<u16>,
}

/// The moves that take a store whose slot `s` belongs to `owners[s]` to
/// `shards` shards, in batches of at most `batch_slots` slots between the
/// same two shards.
pub fn plan(owners: &[u16], shards: u16, batch_slots: usize) -> Vec<Batch> {
    let mut by_pair: BTreeMap<(u16, u16), Vec<u16>> = BTreeMap::new();
    for m in slots::rebalance(owners, shards) {
        by_pair.entry((m.from, m.to)).or_default().push(m.slot);
    }
    by_pair
        .into_iter()
        .flat_map(|((from, to), slots)| {
            slots
                .chunks(batch_slots.max(1))
                .map(|chunk| Batch {
                    from,
                    to,
                    slots: chunk.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What catching up changes in the destination's copies: the names whose
/// version at the source differs from the copy's (or that it lacks), and
/// the names it holds that the source no longer has.
pub fn catch_up(source: &[(String, u64)], copies: &[(String, u64)]) -> (Vec<String>, Vec<String>) {
    let held: HashMap<&str, u64> = copies.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let at_source: HashMap<&str, u64> = source.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let changed = source
        .iter()
        .filter(|(name, version)| held.get(name.as_str()) != Some(version))
        .map(|(name, _)| name.clone())
        .collect();
    let removed = copies
        .iter()
        .filter(|(name, _)| !at_source.contains_key(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    (changed, removed)
}

/// The store as its shards record it: who owns each slot, and the moves
/// a previous run left between release and cede.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub owners: Vec<u16>,
    /// Released batches, by source, destination and epoch.
    pub unfinished: Vec<(Batch, u64)>,
    /// The highest epoch any shard holds.
    pub epoch: u64,
}

/// Reads the record from each shard's own placement (`None`: a shard not
/// placed yet, which owns nothing, unless no shard is placed: then shard 0
/// is an unsharded store, owning every slot). A slot is owned by the shard whose
/// own placement says so; a slot acquired by its destination and not yet
/// ceded by its source is the destination's.
pub fn record(placements: &BTreeMap<u16, Option<pb::Placement>>) -> Result<Record, String> {
    let placed: Vec<&pb::Placement> = placements.values().flatten().collect();
    if placed.is_empty() {
        // Shards added beside it hold nothing: placing one that held
        // recipes outside its slots is refused by the shard itself.
        return if placements.contains_key(&0) {
            Ok(Record {
                owners: vec![0; usize::from(SLOTS)],
                unfinished: Vec::new(),
                epoch: 0,
            })
        } else {
            Err("no shard holds a placement and there is no shard 0, the unsharded store".into())
        };
    }
    let mut owners: Vec<Option<u16>> = vec![None; usize::from(SLOTS)];
    let mut unfinished: BTreeMap<(u16, u16, u64), Vec<u16>> = BTreeMap::new();
    for p in &placed {
        let shard = p.shard as u16;
        let released: HashMap<u32, &pb::SlotHandover> =
            p.released.iter().map(|h| (h.slot, h)).collect();
        for (slot, &owner) in p.owners.iter().enumerate() {
            if owner != p.shard {
                continue;
            }
            if let Some(h) = released.get(&(slot as u32)) {
                unfinished
                    .entry((shard, h.to as u16, h.epoch))
                    .or_default()
                    .push(slot as u16);
                // The destination's once it acquired it.
                let acquired = placed.iter().any(|d| {
                    d.shard == h.to
                        && d.owners.get(slot) == Some(&h.to)
                        && d.acquired
                            .iter()
                            .any(|a| a.slot == slot as u32 && a.epoch == h.epoch)
                });
                if acquired {
                    continue;
                }
            }
            match owners[slot] {
                Some(other) if other != shard => {
                    return Err(format!(
                        "slot {slot} is owned by both shard {other} and shard {shard}"
                    ));
                }
                _ => owners[slot] = Some(shard),
            }
        }
    }
    let owners = owners
        .into_iter()
        .enumerate()
        .map(|(slot, owner)| owner.ok_or_else(|| format!("no shard owns slot {slot}")))
        .collect::<Result<Vec<u16>, String>>()?;
    Ok(Record {
        owners,
        unfinished: unfinished
            .into_iter()
            .map(|((from, to, epoch), slots)| (Batch { from, to, slots }, epoch))
            .collect(),
        epoch: placed.iter().map(|p| p.epoch).max().unwrap_or(0),
    })
}

/// What one [`step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// The batch it moved, finished (a move a previous step left half
    /// done) or rolled back; `None`: the store was at its target already.
    pub batch: Option<Batch>,
    /// Whether `batch` was rolled back rather than moved.
    pub rolled_back: bool,
    /// Slots still to move to reach the target, after this step.
    pub remaining: usize,
    /// Recipes and bytes of content this step copied.
    pub recipes_copied: u64,
    pub bytes_copied: u64,
}

/// Takes the store one step toward shards `0..target` holding even shares
/// and the shards numbered `target` and above none: finishes (or rolls
/// back) a move left half done, or moves the next batch; once nothing is
/// left to move, makes every shard route by the final map. Each step reads
/// the shards' records afresh, so steps may be taken by different
/// processes, one at a time. `shards` must include every shard that holds
/// slots, and those from `0` to `target - 1`, each running (created and
/// initialized).
pub async fn step(shards: &[Shard], target: u16, pace: Pace) -> Result<Step, ReshardError> {
    if target == 0 {
        return Err(ReshardError::Store("a store has at least one shard".into()));
    }
    let by_number: BTreeMap<u16, &Shard> = shards.iter().map(|s| (s.shard, s)).collect();
    if let Some(missing) = (0..target).find(|k| !by_number.contains_key(k)) {
        return Err(ReshardError::Store(format!(
            "shard {missing} is not running: a store of {target} shards needs shards 0 to {}",
            target - 1
        )));
    }
    let mut driver = Driver {
        shards: by_number,
        pace,
        copy_started: Instant::now(),
        recipes_copied: 0,
        bytes_copied: 0,
    };
    // A move left half done is finished first: until then its slots are
    // claimed by two shards' records.
    let mut done = None;
    if let Some((batch, epoch)) = driver.read_record().await?.unfinished.into_iter().next() {
        let rolled_back = driver.finish(&batch, epoch, target).await?;
        done = Some((batch, rolled_back));
    }
    let every = driver.shards.keys().copied().max().unwrap_or(0) + 1;
    let record = driver.settle(every).await?;
    let mut batches = plan(&record.owners, target, pace.batch_slots);
    if done.is_none() && !batches.is_empty() {
        let batch = batches.remove(0);
        driver.move_batch(&batch, record.epoch + 1).await?;
        done = Some((batch, false));
    }
    if batches.is_empty() {
        // Every shard routes by the final map; the shards from `target`
        // on, which own nothing now, are listed no more.
        driver.settle(target).await?;
    }
    let (batch, rolled_back) = match done {
        Some((batch, rolled_back)) => (Some(batch), rolled_back),
        None => (None, false),
    };
    Ok(Step {
        batch,
        rolled_back,
        remaining: batches.iter().map(|b| b.slots.len()).sum(),
        recipes_copied: driver.recipes_copied,
        bytes_copied: driver.bytes_copied,
    })
}

/// Takes [`step`]s until the store is at `target` shards, reporting after
/// each; answers what moved. A step a shard refused is taken again from
/// fresh records, a few times: a refusal may come of a view of a shard
/// read just before its leader changed.
pub async fn reshard(
    shards: &[Shard],
    target: u16,
    pace: Pace,
    mut report: impl FnMut(&Progress),
) -> Result<Progress, ReshardError> {
    let mut progress = Progress::default();
    let mut refusals = 0;
    loop {
        let step = match step(shards, target, pace).await {
            Err(e) if e.is_refusal() && refusals < REFUSALS_RETRIED => {
                tracing::info!(error = %e, "a step was refused; reading the shards again");
                refusals += 1;
                continue;
            }
            result => result?,
        };
        let Some(batch) = step.batch else {
            return Ok(progress);
        };
        if !step.rolled_back {
            progress.slots_moved += batch.slots.len();
        }
        progress.slots_total = progress.slots_moved + step.remaining;
        progress.recipes_copied += step.recipes_copied;
        progress.bytes_copied += step.bytes_copied;
        report(&progress);
        if step.remaining == 0 {
            return Ok(progress);
        }
    }
}

struct Driver<'a> {
    shards: BTreeMap<u16, &'a Shard>,
    pace: Pace,
    /// When this step started copying, and what it copied since: the pace.
    copy_started: Instant,
    recipes_copied: u64,
    bytes_copied: u64,
}

impl Driver<'_> {
    /// Runs `call` on the members of `shard` in turn until one answers,
    /// for up to [`SHARD_PATIENCE`] while none does (a shard electing a
    /// leader, a member restarting). Every call is safe to repeat: a step
    /// taken is taken again as done, an import writes the same copies, and
    /// a call that timed out yet commits later does so before the retry
    /// that followed it (Raft commits a deposed leader's entry only ahead
    /// of its successor's).
    async fn on_shard<T, F, Fut>(&self, shard: u16, call: F) -> Result<T, ReshardError>
    where
        F: Fn(AdminClient) -> Fut,
        Fut: Future<Output = Result<T, AdminError>>,
    {
        let members = self
            .shards
            .get(&shard)
            .map(|s| s.admins.as_slice())
            .unwrap_or_default();
        let deadline = Instant::now() + SHARD_PATIENCE;
        let mut pause = Duration::from_millis(50);
        loop {
            let mut last = None;
            for admin in members {
                match call(admin.clone()).await {
                    Ok(answer) => return Ok(answer),
                    // A refusal is the shard's answer, the same on any member.
                    Err(e)
                        if e.status().is_some_and(|s| {
                            matches!(
                                s.code(),
                                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
                            )
                        }) =>
                    {
                        return Err(ReshardError::Admin { shard, source: e });
                    }
                    Err(e) => last = Some(e),
                }
            }
            match last {
                Some(source) if Instant::now() >= deadline => {
                    return Err(ReshardError::Admin { shard, source });
                }
                Some(e) => tracing::debug!(shard, error = %e, "no member answered; retrying"),
                None => {
                    return Err(ReshardError::Store(format!(
                        "shard {shard} has no member to call"
                    )));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Each shard's placement as its leader applied it: a follower's may
    /// lag, and so may a new leader's until it applied what it committed.
    /// Decisions taken on a view that is still stale are refused by the
    /// shards (see the module's comment), never applied wrongly.
    async fn placements(&self) -> Result<BTreeMap<u16, Option<pb::Placement>>, ReshardError> {
        let mut placements = BTreeMap::new();
        for &shard in self.shards.keys() {
            let status = self
                .on_shard(shard, |admin| async move {
                    let mut status = admin.status().await?;
                    // A leader the driver was not given (a member added
                    // since) is reached where its followers say.
                    let named = status
                        .leader_id
                        .filter(|&id| id != status.id)
                        .and_then(|id| status.voters.iter().find(|m| m.id == id))
                        .map(|m| m.peer_addr.clone());
                    if let Some(leader) = named {
                        status = admin.reach(&leader)?.status().await?;
                    }
                    let current = status.role == pb::Role::Leader as i32
                        && status.applied_index >= status.committed_index;
                    match current {
                        true => Ok(status),
                        false => Err(AdminError::Call {
                            call: "Status",
                            addr: admin.addr().to_owned(),
                            source: tonic::Status::unavailable("not the leader, or behind it"),
                        }),
                    }
                })
                .await?;
            placements.insert(shard, status.placement);
        }
        Ok(placements)
    }

    async fn read_record(&self) -> Result<Record, ReshardError> {
        record(&self.placements().await?).map_err(ReshardError::Store)
    }

    /// Makes every shard hold the store's record of owners and list the
    /// shards below `listed` (and any owning slots), so that each passes
    /// calls on to the others: places the shards not placed yet, and gives
    /// the others a newer placement where theirs differs.
    async fn settle(&self, listed: u16) -> Result<Record, ReshardError> {
        let placements = self.placements().await?;
        let record = record(&placements).map_err(ReshardError::Store)?;
        let expected = self.endpoints(&record, listed);
        let settled = |p: &pb::Placement| {
            p.owners
                .iter()
                .map(|&o| o as u16)
                .eq(record.owners.iter().copied())
                && p.shards == expected
        };
        if placements.values().all(|p| p.as_ref().is_some_and(settled)) {
            return Ok(record);
        }
        self.readdress(&record, listed).await?;
        self.read_record().await
    }

    /// Where the shards below `listed`, and any owning slots in `record`,
    /// are reached.
    fn endpoints(&self, record: &Record, listed: u16) -> Vec<pb::ShardEndpoints> {
        self.shards
            .values()
            .filter(|s| s.shard < listed || record.owners.contains(&s.shard))
            .map(|s| pb::ShardEndpoints {
                shard: u32::from(s.shard),
                client_addrs: s.client_addrs.clone(),
            })
            .collect()
    }

    /// Gives every shard the placement of `record` at a new epoch, listing
    /// the shards below `listed` (and any owning slots).
    async fn readdress(&self, record: &Record, listed: u16) -> Result<(), ReshardError> {
        let epoch = record.epoch + 1;
        let endpoints = self.endpoints(record, listed);
        for &shard in self.shards.keys() {
            let placement = pb::Placement {
                shard: u32::from(shard),
                epoch,
                owners: record.owners.iter().map(|&o| u32::from(o)).collect(),
                shards: endpoints.clone(),
                released: Vec::new(),
                acquired: Vec::new(),
            };
            self.on_shard(shard, |admin| {
                let placement = placement.clone();
                async move { admin.place(placement).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn step(
        &self,
        on: u16,
        step: pb::MoveStep,
        batch: &Batch,
        other: u16,
        epoch: u64,
    ) -> Result<(), ReshardError> {
        let request = pb::MoveSlotsRequest {
            step: step as i32,
            slots: batch.slots.iter().map(|&s| u32::from(s)).collect(),
            shard: u32::from(other),
            epoch,
        };
        self.on_shard(on, |admin| {
            let request = request.clone();
            async move { admin.move_slots(request).await }
        })
        .await
    }

    async fn move_batch(&mut self, batch: &Batch, epoch: u64) -> Result<(), ReshardError> {
        let pages = self.copy(batch.from, batch.to, &batch.slots).await?;
        tracing::info!(
            from = batch.from,
            to = batch.to,
            slots = batch.slots.len(),
            pages,
            epoch,
            "copied; releasing"
        );
        self.step(batch.from, pb::MoveStep::Release, batch, batch.to, epoch)
            .await?;
        self.finish(batch, epoch, u16::MAX).await.map(|_| ())
    }

    /// Catches the destination up with the released batch, makes it the
    /// owner, and has the source cede the slots; or, when the destination
    /// is to leave the store (numbered `target` or above) and has not
    /// acquired them, has the source serve them again; answers whether it
    /// rolled the move back.
    async fn finish(
        &mut self,
        batch: &Batch,
        epoch: u64,
        target: u16,
    ) -> Result<bool, ReshardError> {
        let placements = self.placements().await?;
        let acquired = placements
            .get(&batch.to)
            .and_then(Option::as_ref)
            .is_some_and(|d| {
                batch.slots.iter().all(|&s| {
                    d.acquired
                        .iter()
                        .any(|a| a.slot == u32::from(s) && a.epoch == epoch)
                })
            });
        if !acquired && batch.to >= target {
            tracing::info!(
                from = batch.from,
                to = batch.to,
                epoch,
                "rolling back a move"
            );
            self.step(batch.from, pb::MoveStep::Reclaim, batch, batch.to, epoch)
                .await?;
            return Ok(true);
        }
        if !acquired {
            let source = self.versions(batch.from, &batch.slots).await?;
            let copies = self.versions(batch.to, &batch.slots).await?;
            let (changed, removed) = catch_up(&source, &copies);
            match self
                .copy_names(batch.from, batch.to, &batch.slots, changed, removed)
                .await
            {
                // The destination owns a slot of the batch: it acquired
                // them all, on a view read before it did; it refused the
                // copies, and nothing is left to catch up.
                Err(e @ ReshardError::Admin { shard, .. })
                    if shard == batch.to && e.is_refusal() => {}
                result => result?,
            }
            self.step(batch.to, pb::MoveStep::Acquire, batch, batch.from, epoch)
                .await?;
        }
        self.step(batch.from, pb::MoveStep::Cede, batch, batch.to, epoch)
            .await?;
        Ok(false)
    }

    /// Copies every recipe of `slots` from shard `from` to shard `to`;
    /// answers the pages copied.
    async fn copy(&mut self, from: u16, to: u16, slots: &[u16]) -> Result<usize, ReshardError> {
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let page = self
                .export(from, slots, after.clone(), Vec::new(), false)
                .await?;
            self.import(to, page.recipes, Vec::new()).await?;
            pages += 1;
            if page.next.is_empty() {
                return Ok(pages);
            }
            after = page.next;
        }
    }

    /// Copies the recipes `names` of `slots` from `from` to `to` and removes
    /// `removed` from `to`'s copies.
    async fn copy_names(
        &mut self,
        from: u16,
        to: u16,
        slots: &[u16],
        names: Vec<String>,
        removed: Vec<String>,
    ) -> Result<(), ReshardError> {
        let mut left = names.as_slice();
        while !left.is_empty() {
            let chunk = &left[..left.len().min(NAMES_PER_PAGE)];
            let page = self
                .export(from, slots, String::new(), chunk.to_vec(), false)
                .await?;
            // A page full of bytes stops after `next`: the names after it
            // are asked for again.
            let considered = match page.next.as_str() {
                "" => chunk.len(),
                next => chunk
                    .iter()
                    .position(|n| n == next)
                    .map_or(chunk.len(), |p| p + 1),
            };
            // A name considered and missing from the page was deleted since
            // it was listed: the source holds no recipe under it any more.
            let present: Vec<&str> = page.recipes.iter().map(|r| r.name.as_str()).collect();
            let gone: Vec<String> = chunk[..considered]
                .iter()
                .filter(|n| !present.contains(&n.as_str()))
                .cloned()
                .collect();
            self.import(to, page.recipes, gone).await?;
            left = &left[considered..];
        }
        for chunk in removed.chunks(NAMES_PER_PAGE) {
            self.import(to, Vec::new(), chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// The names and versions shard `shard` holds in `slots`.
    async fn versions(
        &self,
        shard: u16,
        slots: &[u16],
    ) -> Result<Vec<(String, u64)>, ReshardError> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .export(shard, slots, after.clone(), Vec::new(), true)
                .await?;
            all.extend(page.recipes.into_iter().map(|r| (r.name, r.version)));
            if page.next.is_empty() {
                return Ok(all);
            }
            after = page.next;
        }
    }

    async fn export(
        &self,
        shard: u16,
        slots: &[u16],
        after: String,
        names: Vec<String>,
        versions_only: bool,
    ) -> Result<pb::ExportSlotsResponse, ReshardError> {
        let request = pb::ExportSlotsRequest {
            slots: slots.iter().map(|&s| u32::from(s)).collect(),
            after,
            names,
            versions_only,
            max_bytes: self.pace.page_bytes,
        };
        self.on_shard(shard, |admin| {
            let request = request.clone();
            async move { admin.export_slots(request).await }
        })
        .await
    }

    /// Imports `recipes` and removes `removed` in shard `to`, pacing the
    /// copy to the configured rate.
    async fn import(
        &mut self,
        to: u16,
        recipes: Vec<pb::ExportedRecipe>,
        removed: Vec<String>,
    ) -> Result<(), ReshardError> {
        if recipes.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let bytes: u64 = recipes.iter().map(|r| r.content.len() as u64).sum();
        let count = recipes.len() as u64;
        let request = pb::ImportRecipesRequest { recipes, removed };
        self.on_shard(to, |admin| {
            let request = request.clone();
            async move { admin.import_recipes(request).await }
        })
        .await?;
        self.recipes_copied += count;
        self.bytes_copied += bytes;
        let due = Duration::from_secs_f64(
            self.bytes_copied as f64 / self.pace.bytes_per_second.max(1) as f64,
        );
        if let Some(early) = due.checked_sub(self.copy_started.elapsed()) {
            tokio::time::sleep(early).await;
        }
        Ok(())
    }
}

/// Most names asked for in one page of a catch-up.
const NAMES_PER_PAGE: usize = 1024;

/// How long a shard may answer no call before resharding gives up (to be
/// resumed by the next run): several elections, and a member's restart.
const SHARD_PATIENCE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(shard: u32, owners: &[u16], epoch: u64) -> pb::Placement {
        pb::Placement {
            shard,
            epoch,
            owners: owners.iter().map(|&o| u32::from(o)).collect(),
            shards: Vec::new(),
            released: Vec::new(),
            acquired: Vec::new(),
        }
    }

    fn halves() -> Vec<u16> {
        (0..SLOTS).map(|s| u16::from(s >= SLOTS / 2)).collect()
    }

    #[test]
    fn batches_join_the_slots_between_the_same_two_shards() {
        let batches = plan(&halves(), 3, 100);
        // 1024 = 342 + 341 + 341: shard 0 gives 170, shard 1 gives 171.
        let from0: usize = batches
            .iter()
            .filter(|b| b.from == 0)
            .map(|b| b.slots.len())
            .sum();
        let from1: usize = batches
            .iter()
            .filter(|b| b.from == 1)
            .map(|b| b.slots.len())
            .sum();
        assert_eq!((from0, from1), (170, 171));
        assert!(batches.iter().all(|b| b.to == 2 && b.slots.len() <= 100));
        assert_eq!(batches.len(), 4);
        assert!(plan(&halves(), 2, 100).is_empty());
    }

    #[test]
    fn catching_up_copies_what_changed_and_removes_what_went() {
        let s = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(n, v)| (n.to_string(), *v))
                .collect::<Vec<_>>()
        };
        let source = s(&[("kept", 3), ("rewritten", 9), ("new", 12)]);
        let copies = s(&[("kept", 3), ("rewritten", 4), ("deleted", 5)]);
        assert_eq!(
            catch_up(&source, &copies),
            (
                vec!["rewritten".to_string(), "new".to_string()],
                vec!["deleted".to_string()]
            )
        );
        assert_eq!(catch_up(&source, &source), (vec![], vec![]));
    }

    #[test]
    fn the_record_is_read_from_each_shard_s_own_placement() {
        let halves = halves();
        // A new, unplaced shard beside placed ones owns nothing.
        let grown = BTreeMap::from([
            (0, Some(placement(0, &halves, 3))),
            (1, Some(placement(1, &halves, 3))),
            (2, None),
        ]);
        let r = record(&grown).unwrap();
        assert_eq!((r.owners.clone(), r.epoch), (halves.clone(), 3));
        assert!(r.unfinished.is_empty());

        // Shard 0 released slots 0 and 1 to shard 1 at epoch 4; shard 1
        // acquired slot... both, so they are shard 1's, and the batch is
        // unfinished until shard 0 cedes them.
        let mut source = placement(0, &halves, 4);
        source.released = [0, 1]
            .map(|slot| pb::SlotHandover {
                slot,
                to: 1,
                epoch: 4,
            })
            .to_vec();
        let mut destination = placement(1, &halves, 3);
        let released = BTreeMap::from([(0, Some(source.clone())), (1, Some(destination.clone()))]);
        let r = record(&released).unwrap();
        assert_eq!(r.owners[..2], [0, 0], "not acquired: still the source's");
        assert_eq!(
            r.unfinished,
            vec![(
                Batch {
                    from: 0,
                    to: 1,
                    slots: vec![0, 1]
                },
                4
            )]
        );
        destination.epoch = 4;
        destination.owners[0] = 1;
        destination.owners[1] = 1;
        destination.acquired = [0, 1].map(|slot| pb::SlotEpoch { slot, epoch: 4 }).to_vec();
        let acquired = BTreeMap::from([(0, Some(source)), (1, Some(destination.clone()))]);
        let r = record(&acquired).unwrap();
        assert_eq!((r.owners[..2].to_vec(), r.epoch), (vec![1, 1], 4));
        assert_eq!(r.unfinished.len(), 1, "still to cede");

        // Two shards claiming a slot, or none, is refused.
        let mut both = placement(0, &halves, 3);
        both.owners[700] = 0;
        let claimed = BTreeMap::from([(0, Some(both)), (1, Some(placement(1, &halves, 3)))]);
        assert!(record(&claimed).unwrap_err().contains("slot 700"));
        let mut neither = halves.clone();
        neither[5] = 1;
        let lost = BTreeMap::from([
            (0, Some(placement(0, &neither, 3))),
            (1, Some(placement(1, &halves, 3))),
        ]);
        assert!(record(&lost).unwrap_err().contains("no shard owns slot 5"));
        // An unsharded store growing: shard 0 holds every slot.
        let growing = BTreeMap::from([(0, None), (1, None)]);
        assert_eq!(record(&growing).unwrap().owners, vec![0; 1024]);
        let headless = BTreeMap::from([(1, None)]);
        assert!(record(&headless).unwrap_err().contains("no shard 0"));
    }
}
