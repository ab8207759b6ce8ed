//! The replicated state machine: recipes with their versions on sled, the
//! last applied log id and membership, and snapshots as files.
//!
//! Recipes, the applied id and the membership share one tree, so the entries
//! openraft hands over together are applied in one atomic batch, with the
//! last applied id (one write per batch, not per entry). Applying answers
//! the writers once memory holds the new state; a writer thread puts it into
//! sled behind them ([`super::write_behind`]). The state machine is not
//! fsync'd (sled syncs it in the background): what it loses in a crash is
//! rebuilt from durable parts. The log keeps every entry after the last snapshot, and
//! a snapshot is durable before openraft purges the log behind it: it is
//! written to a temporary file, fsync'd, renamed and its directory fsync'd,
//! and it carries its own metadata, so the newest snapshot file *is* the
//! current snapshot. At start-up openraft installs it when the state machine
//! is behind it, then re-applies the log.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use futures::TryStreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::ApplyResponder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use recipestore_protocol::slots::slot_of;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::sync::watch;

use super::Command;
use super::Outcome;
use super::TypeConfig;
use super::typ::LogId;
use super::typ::Snapshot;
use super::typ::SnapshotMeta;
use super::typ::StoredMembership;
use crate::cache::RecipeCache;
use crate::codec::decode_io;
use crate::codec::encode_io;
use crate::metrics;
use crate::placement;
use crate::placement::MoveStep;
use crate::placement::Placement;
use crate::placement::Route;

use super::snapshot_file::SnapshotEnd;
use super::snapshot_file::SnapshotReader;
use super::snapshot_file::SnapshotWriter;
use super::snapshot_file::persist;
use super::snapshot_file::read_end;
use super::write_behind::Staged;
use super::write_behind::Write as SledWrite;
use super::write_behind::WriteBehind;

const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
/// The shard's placement; absent in an unsharded store.
const PLACEMENT: &[u8] = b"m/placement";
const RECIPE_PREFIX: &[u8] = b"r/";
const SNAPSHOT_SUFFIX: &str = ".snap";

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

fn read_meta<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> io::Result<Option<T>> {
    match tree.get(key).map_err(io_err)? {
        Some(bytes) => decode_io(&bytes).map(Some),
        None => Ok(None),
    }
}

fn read_placement(tree: &sled::Tree) -> io::Result<Option<Placement>> {
    read_meta(tree, PLACEMENT)
}

fn recipe_key(name: &str) -> Vec<u8> {
    [RECIPE_PREFIX, name.as_bytes()].concat()
}

/// A recipe as stored: its content and the log index of its last write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub version: u64,
    pub content: Bytes,
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeSummary {
    pub name: String,
    pub version: u64,
    pub size_bytes: u64,
}

/// Read access to the applied recipes, shared with the gRPC services.
///
/// Reads go through the cache, then the applied writes not yet in sled,
/// then sled. Coherence: applying entries (overlay + cache update) and
/// filling the cache after a miss (overlay or sled read + cache insert) both
/// hold `fill_lock`, so a fill can never put back a value that an apply has
/// already replaced or deleted. Installing a snapshot holds `fill_lock` and
/// `installing` for writing while it replaces sled's recipes batch by
/// batch: no read sees a state between the old and the new.
#[derive(Clone)]
pub struct Recipes {
    tree: sled::Tree,
    unwritten: WriteBehind,
    cache: RecipeCache,
    fill_lock: Arc<std::sync::Mutex<()>>,
    installing: Arc<std::sync::RwLock<()>>,
    /// The applied placement: changed with the entries that change it.
    placement: Arc<watch::Sender<Option<Arc<Placement>>>>,
}

impl Recipes {
    /// The shard's placement as of the last applied entry; `None` in an
    /// unsharded store.
    pub fn placement(&self) -> Option<Arc<Placement>> {
        self.placement.borrow().clone()
    }

    /// The placement, seen as it changes: what calls for a moving slot
    /// wait on.
    pub fn placement_changes(&self) -> watch::Receiver<Option<Arc<Placement>>> {
        self.placement.subscribe()
    }

    fn set_placement(&self, placement: Option<Arc<Placement>>) {
        self.placement.send_replace(placement);
    }

    /// Whether any recipe lies in a slot `placement` does not give its
    /// shard, or in `staged` (writes not applied yet).
    fn holds_recipes_outside(
        &self,
        placement: &Placement,
        staged: &HashMap<String, Staged>,
    ) -> io::Result<bool> {
        let outside = self.names_where(staged, |name| !placement.owns(slot_of(name)))?;
        Ok(!outside.is_empty())
    }

    /// The names of the recipes, as `staged` (writes not applied yet)
    /// leaves them, that `keep` keeps.
    fn names_where(
        &self,
        staged: &HashMap<String, Staged>,
        keep: impl Fn(&str) -> bool,
    ) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = staged
            .iter()
            .filter(|(name, r)| r.is_some() && keep(name))
            .map(|(name, _)| name.clone())
            .collect();
        let mut after: Option<String> = None;
        loop {
            let page = self.list("", after.as_deref(), 1024)?;
            names.extend(
                page.iter()
                    .filter(|r| keep(&r.name) && !staged.contains_key(&r.name))
                    .map(|r| r.name.clone()),
            );
            match page.last() {
                Some(last) if page.len() == 1024 => after = Some(last.name.clone()),
                _ => return Ok(names),
            }
        }
    }

    /// The recipe as of this node's last applied entry.
    pub fn get(&self, name: &str) -> io::Result<Option<Arc<Recipe>>> {
        if let Some(hit) = self.cache.get(name) {
            return Ok(Some(hit));
        }
        let _fill = self.fill_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(recipe) = self.get_uncached(name)? else {
            return Ok(None);
        };
        self.cache.insert(name, recipe.clone());
        Ok(Some(recipe))
    }

    /// The recipe from the unwritten writes, else from sled.
    fn get_uncached(&self, name: &str) -> io::Result<Option<Arc<Recipe>>> {
        if let Some(staged) = self.unwritten.get(name) {
            return Ok(staged);
        }
        Ok(read_meta(&self.tree, &recipe_key(name))?.map(Arc::new))
    }

    /// The recipe, from the cache when it holds it, without filling the
    /// cache: for copying a slot's recipes away, which reads each once.
    pub fn peek(&self, name: &str) -> io::Result<Option<Arc<Recipe>>> {
        if let Some(hit) = self.cache.peek(name) {
            return Ok(Some(hit));
        }
        self.get_uncached(name)
    }

    /// The applied version of a recipe, from the cache when it holds it.
    fn get_version(&self, name: &str) -> io::Result<Option<u64>> {
        if let Some(hit) = self.cache.peek(name) {
            return Ok(Some(hit.version));
        }
        Ok(self.get_uncached(name)?.map(|r| r.version))
    }

    /// Writes the state to `file` as a snapshot: every entry applied
    /// before the call and perhaps a few after it, exactly as of the applied
    /// id in the metadata returned. For backups: Raft's own snapshots are
    /// built by [`SnapshotBuilder`], which also keeps them.
    pub async fn dump(&self, file: File) -> io::Result<(SnapshotMeta, SnapshotEnd)> {
        // Sled goes from one applied batch to the next, each written
        // atomically with its applied id: held still, it is the state as of
        // the id it records, and it holds every batch handed over so far.
        let held = self.unwritten.hold().await?;
        let tree = self.tree.clone();
        let installing = self.installing.clone();
        tokio::task::spawn_blocking(move || {
            let _held = held;
            // An install replaces sled batch by batch, not through the
            // writer: a dump meanwhile would mix the old and the new state.
            let _installed = installing.read().unwrap_or_else(|e| e.into_inner());
            let meta = applied_meta(&tree)?;
            let placement = read_placement(&tree)?;
            let writer = SnapshotWriter::new(file, &meta, placement.as_ref())?;
            let (out, end) = write_recipes(&tree, writer)?;
            out.into_inner().map_err(|e| e.into_error())?;
            Ok((meta, end))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Publishes the cache's size to the metrics.
    pub fn publish_cache_size(&self) {
        self.cache.publish_size();
    }

    /// Up to `limit` recipes whose names start with `prefix`, in name order,
    /// strictly after `after` when given.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<RecipeSummary>> {
        self.list_where(prefix, after, limit, |_| true)
    }

    /// [`Recipes::list`] of the recipes whose names `keep` keeps.
    pub fn list_where(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> io::Result<Vec<RecipeSummary>> {
        let start = match after {
            Some(after) => {
                let mut key = recipe_key(after);
                key.push(0);
                key
            }
            None => recipe_key(prefix),
        };
        let full_prefix = recipe_key(prefix);
        let _installed = self.installing.read().unwrap_or_else(|e| e.into_inner());
        // Taken before sled is read: a write the writer moves into sled
        // meanwhile is then found in one or both, never in neither.
        let mut unwritten = self.unwritten.range(prefix, after).into_iter().peekable();
        let mut out = Vec::new();
        let push = |out: &mut Vec<RecipeSummary>, name: String, recipe: &Recipe| {
            if keep(&name) {
                out.push(RecipeSummary {
                    name,
                    version: recipe.version,
                    size_bytes: recipe.content.len() as u64,
                });
            }
        };
        for kv in self.tree.range(start..) {
            let (key, value) = kv.map_err(io_err)?;
            if !key.starts_with(&full_prefix) || out.len() >= limit {
                break;
            }
            let name = String::from_utf8_lossy(&key[RECIPE_PREFIX.len()..]).into_owned();
            while let Some((staged_name, staged)) = unwritten.next_if(|(n, _)| *n < name) {
                if let Some(recipe) = staged {
                    push(&mut out, staged_name, &recipe);
                }
            }
            match unwritten.next_if(|(n, _)| *n == name) {
                // Newer than sled's copy, or its deletion.
                Some((_, staged)) => {
                    if let Some(recipe) = staged {
                        push(&mut out, name, &recipe);
                    }
                }
                None => push(&mut out, name, &decode_io(&value)?),
            }
        }
        for (name, staged) in unwritten {
            if let Some(recipe) = staged {
                push(&mut out, name, &recipe);
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// How many recipes the newest snapshot holds: what building the next one
/// will cost, for the snapshot policy.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRecipes(Arc<AtomicU64>);

impl SnapshotRecipes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, recipes: u64) {
        self.0.store(recipes, Ordering::Relaxed);
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    tree: sled::Tree,
    recipes: Recipes,
    snapshot_dir: PathBuf,
    snapshot_recipes: SnapshotRecipes,
    /// Held while applying and while dumping a snapshot, so a snapshot is the
    /// exact state at its last applied id.
    apply_lock: Arc<Mutex<()>>,
}

impl StateMachine {
    /// Opens the state machine in `db`, with snapshots under `snapshot_dir`
    /// and reads served through `cache`, and starts its writer thread.
    pub fn open(db: &sled::Db, snapshot_dir: &Path, cache: RecipeCache) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        let tree = db.open_tree("sm").map_err(io_err)?;
        let snapshot_recipes = SnapshotRecipes::default();
        if let Some((_, newest)) = newest_snapshot(snapshot_dir)?
            && let Some(end) = read_end(&newest)?
        {
            snapshot_recipes.set(end.recipes);
        }
        let placement = read_placement(&tree)?.map(Arc::new);
        Ok(Self {
            snapshot_recipes,
            recipes: Recipes {
                tree: tree.clone(),
                unwritten: WriteBehind::start(tree.clone())?,
                cache,
                fill_lock: Arc::default(),
                installing: Arc::default(),
                placement: Arc::new(watch::Sender::new(placement)),
            },
            tree,
            snapshot_dir: snapshot_dir.to_path_buf(),
            apply_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The size of the newest snapshot, kept current.
    pub fn snapshot_recipes(&self) -> SnapshotRecipes {
        self.snapshot_recipes.clone()
    }

    /// A read handle for the services.
    pub fn recipes(&self) -> Recipes {
        self.recipes.clone()
    }

    /// Computes the outcome of `command` and stages its write in `pending`,
    /// whose earlier entries it sees.
    fn apply_command(
        &self,
        index: u64,
        command: &Command,
        pending: &mut Pending,
    ) -> io::Result<Outcome> {
        let (name, if_version) = match command {
            Command::Put {
                name, if_version, ..
            }
            | Command::Delete { name, if_version } => (name, *if_version),
            Command::Place(next) => return self.apply_placement(next, pending),
            Command::Import(recipes) => return self.apply_import(recipes, pending),
            Command::Move(step) => return self.apply_move(step, pending),
        };
        // The shard decides here, in log order, whether it owns the
        // recipe: a write that reached it under an older placement, or
        // while its slot moves, is refused the same way on every member.
        let placement = self.placement(pending);
        match Placement::route(placement.as_deref(), name) {
            Route::Here => {}
            Route::Moving(slot) => return Ok(Outcome::Moving { slot }),
            Route::Elsewhere(owner) => {
                return Ok(Outcome::Moved {
                    slot: owner.slot,
                    shard: owner.shard,
                    epoch: owner.epoch,
                });
            }
        }
        let version = Placement::version(placement.as_deref(), slot_of(name), index);
        // An unconditional upload needs nothing of the recipe it replaces:
        // its version is its own log index. Looking that recipe up anyway
        // was a sled read and decode per applied write on every member
        // whose cache does not hold it.
        let unconditional_upload = if_version.is_none() && matches!(command, Command::Put { .. });
        let current = if unconditional_upload {
            None
        } else {
            match pending.staged.get(name) {
                Some(staged) => staged.as_ref().map(|r| r.version),
                None => self.recipes.get_version(name)?,
            }
        };
        if let Some(expected) = if_version
            && current.unwrap_or(0) != expected
        {
            return Ok(Outcome::VersionMismatch { expected, current });
        }
        Ok(match command {
            Command::Put { name, content, .. } => {
                let recipe = Recipe {
                    version,
                    content: content.clone(),
                };
                pending.stage(name, Some(recipe))?;
                Outcome::Written { version }
            }
            Command::Delete { name, .. } => {
                if current.is_none() {
                    return Ok(Outcome::NotFound);
                }
                pending.stage(name, None)?;
                Outcome::Deleted { version }
            }
            Command::Place(_) | Command::Import(_) | Command::Move(_) => {
                unreachable!("answered above")
            }
        })
    }

    /// Writes copies of recipes whose slots the shard does not own, so no
    /// call reads them until a move gives it the slots.
    fn apply_import(
        &self,
        recipes: &[(String, Option<Recipe>)],
        pending: &mut Pending,
    ) -> io::Result<Outcome> {
        let Some(placement) = self.placement(pending) else {
            return Ok(Outcome::Refused {
                reason: "an unsharded store owns every slot: it takes no copies".into(),
            });
        };
        if let Some((name, _)) = recipes
            .iter()
            .find(|(name, _)| placement.owns(slot_of(name)))
        {
            return Ok(Outcome::Refused {
                reason: format!(
                    "recipe {name:?} is in slot {}, which shard {} owns: a copy would replace it",
                    slot_of(name),
                    placement.shard
                ),
            });
        }
        for (name, recipe) in recipes {
            pending.stage(name, recipe.clone())?;
        }
        Ok(Outcome::Applied)
    }

    /// Takes one step of a move; ceding slots drops the shard's copies of
    /// their recipes.
    fn apply_move(&self, step: &MoveStep, pending: &mut Pending) -> io::Result<Outcome> {
        let Some(placement) = self.placement(pending) else {
            return Ok(Outcome::Refused {
                reason: "an unsharded store moves no slots: place it first".into(),
            });
        };
        let next = match placement.step(step) {
            Err(reason) => return Ok(Outcome::Refused { reason }),
            Ok(None) => return Ok(Outcome::Applied),
            Ok(Some(next)) => next,
        };
        if let MoveStep::Cede { slots, .. } = step {
            let slots: HashSet<u16> = slots.iter().copied().collect();
            for name in self
                .recipes
                .names_where(&pending.staged, |name| slots.contains(&slot_of(name)))?
            {
                pending.stage(&name, None)?;
            }
        }
        pending.set_placement(next)?;
        Ok(Outcome::Applied)
    }

    /// The placement as of the entries in `pending`: one they set, else
    /// the applied one.
    fn placement(&self, pending: &Pending) -> Option<Arc<Placement>> {
        pending
            .placement
            .clone()
            .or_else(|| self.recipes.placement())
    }

    /// Takes the placement `next` if the rules in [`crate::placement`]
    /// allow it.
    fn apply_placement(&self, next: &Placement, pending: &mut Pending) -> io::Result<Outcome> {
        let current = self.placement(pending);
        let next = next.clone().keeping_moves(current.as_deref());
        let refused = |reason| Ok(Outcome::Refused { reason });
        match placement::check(current.as_deref(), &next) {
            Err(reason) => return refused(reason),
            Ok(placement::Change::None) => return Ok(Outcome::Applied),
            Ok(placement::Change::First) => {
                if self.recipes.holds_recipes_outside(&next, &pending.staged)? {
                    return refused(format!(
                        "shard {} holds recipes in slots the placement gives to other shards; \
                         they would be lost",
                        next.shard
                    ));
                }
            }
            Ok(placement::Change::Newer) => {}
        }
        pending.set_placement(next)?;
        Ok(Outcome::Applied)
    }
}

/// Entries being applied together: one sled batch for all of them, so
/// applying costs one write per batch rather than one per entry.
#[derive(Default)]
struct Pending {
    writes: Vec<SledWrite>,
    /// Each recipe the entries wrote, as they left it.
    staged: HashMap<String, Staged>,
    /// The recipes uploaded through this node: entries a client here
    /// waits for.
    uploaded: HashSet<String>,
    applied: Option<LogId>,
    /// A placement the entries gave the shard.
    placement: Option<Arc<Placement>>,
    entries: usize,
    replies: Vec<(ApplyResponder<TypeConfig>, Outcome)>,
}

/// Most entries applied in one batch: bounds the memory a long replay
/// (after a restart) holds before writing.
const APPLY_BATCH_ENTRIES: usize = 512;

impl Pending {
    /// Writes `recipe` under `name` (`None`: removes it).
    fn stage(&mut self, name: &str, recipe: Option<Recipe>) -> io::Result<()> {
        let encoded = recipe.as_ref().map(encode_io).transpose()?;
        self.writes.push((recipe_key(name), encoded));
        self.staged.insert(name.to_owned(), recipe.map(Arc::new));
        Ok(())
    }

    fn set_placement(&mut self, placement: Placement) -> io::Result<()> {
        self.writes
            .push((PLACEMENT.to_vec(), Some(encode_io(&placement)?)));
        self.placement = Some(Arc::new(placement));
        Ok(())
    }
}

impl StateMachine {
    /// Makes the pending entries visible to reads (overlay and cache), hands
    /// their writes and the last applied id to the writer as one atomic
    /// batch, then answers the writers. The batch is not synced: the state
    /// machine is rebuilt from the durable log and snapshot after a crash
    /// (see the module's comment).
    async fn commit(&self, pending: Pending) -> io::Result<()> {
        let Pending {
            mut writes,
            staged,
            uploaded,
            applied,
            placement,
            replies,
            ..
        } = pending;
        let Some(applied) = applied else {
            return Ok(());
        };
        writes.push((APPLIED.to_vec(), Some(encode_io(&Some(applied))?)));
        let batch = {
            let _fill = self
                .recipes
                .fill_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // The node that served an upload caches the recipe, as a
            // download does; the other members only keep their copies
            // current, at no cost for recipes they do not serve.
            if placement.is_some() {
                self.recipes.set_placement(placement);
            }
            for (name, recipe) in &staged {
                match recipe {
                    Some(recipe) if uploaded.contains(name) => {
                        self.recipes.cache.insert(name, recipe.clone());
                    }
                    _ => self.recipes.cache.replace(name, recipe.clone()),
                }
            }
            self.recipes.unwritten.stage(staged)
        };
        self.recipes.unwritten.send(batch, writes).await?;
        for (responder, outcome) in replies {
            responder.send(outcome);
        }
        Ok(())
    }

    /// The applied id and membership, once every applied entry is in sled.
    async fn read_applied_state(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.recipes.unwritten.drain().await?;
        let meta = applied_meta(&self.tree)?;
        Ok((meta.last_log_id, meta.last_membership))
    }
}

/// The metadata of the state in `tree`: its applied id and membership.
fn applied_meta(tree: &sled::Tree) -> io::Result<SnapshotMeta> {
    Ok(SnapshotMeta {
        last_log_id: read_meta(tree, APPLIED)?,
        last_membership: read_meta(tree, MEMBERSHIP)?.unwrap_or_default(),
    })
}

/// Removes snapshot files other than `keep`; a failure only costs disk space.
fn remove_stale_snapshots(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn snapshot_file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!(
            "{}-{}-{}{SNAPSHOT_SUFFIX}",
            id.committed_leader_id().term,
            id.committed_leader_id().node_id,
            id.index()
        ),
        None => format!("empty{SNAPSHOT_SUFFIX}"),
    }
}

/// Copies the snapshot `input` into `dir` under `meta` in place of its own
/// metadata, durably, and answers the copy's path and end. The copy is in
/// the current format, whichever `input` is in; a cut or damaged `input`
/// fails here, before the copy has a snapshot's name.
fn keep_snapshot(
    dir: &Path,
    meta: &SnapshotMeta,
    input: impl io::Read,
) -> io::Result<(PathBuf, SnapshotEnd)> {
    let path = dir.join(snapshot_file_name(meta));
    let (_, mut input) = SnapshotReader::open(input)?;
    let tmp = path.with_extension("tmp");
    let mut copy = SnapshotWriter::create(&tmp, meta, input.placement())?;
    while let Some((name, value)) = input.next_recipe()? {
        copy.recipe(&name, &value)?;
    }
    let (copy, end) = copy.finish()?;
    persist(copy, &tmp, &path)?;
    Ok((path, end))
}

/// Makes the snapshot `input` the current snapshot of a new data
/// directory's state machine, whose snapshots are kept in `dir`, under
/// `meta`: a data directory restored from a backup. At start openraft finds
/// the state machine behind the snapshot and installs it.
pub fn seed_snapshot(
    dir: &Path,
    meta: &SnapshotMeta,
    input: impl io::Read,
) -> io::Result<SnapshotEnd> {
    std::fs::create_dir_all(dir)?;
    keep_snapshot(dir, meta, input).map(|(_, end)| end)
}

/// Writes `meta` and every recipe of `tree` to `path`, durably: through a
/// temporary file that is fsync'd, renamed, and its directory fsync'd.
fn write_snapshot_file(
    tree: &sled::Tree,
    meta: &SnapshotMeta,
    path: &Path,
) -> io::Result<SnapshotEnd> {
    let tmp = path.with_extension("tmp");
    let placement = read_placement(tree)?;
    let writer = SnapshotWriter::create(&tmp, meta, placement.as_ref())?;
    let (out, end) = write_recipes(tree, writer)?;
    persist(out, &tmp, path)?;
    Ok(end)
}

/// Writes every recipe of `tree` to `out` and ends it.
fn write_recipes(
    tree: &sled::Tree,
    mut out: SnapshotWriter,
) -> io::Result<(BufWriter<File>, SnapshotEnd)> {
    for kv in tree.scan_prefix(RECIPE_PREFIX) {
        let (key, value) = kv.map_err(io_err)?;
        out.recipe(&key[RECIPE_PREFIX.len()..], &value)?;
    }
    out.finish()
}

/// Most writes in one sled batch when a snapshot is installed. Sled copies
/// a batch whole into its log before applying it: a new member caught up
/// with 100k recipes of 1 KiB in 3.3 s when they went in as one batch, in
/// 1.5 s in batches of 1,000.
const INSTALL_BATCH_ENTRIES: usize = 1024;

/// Replaces the state in `tree` with the snapshot file at `path`, described
/// by `meta`: removes every recipe, inserts the file's, then sets the
/// applied id and membership in the last batch. The batches are not one
/// atomic write: the caller keeps reads out meanwhile, and the applied id
/// changes only once all the recipes are in (see `install_snapshot` for a
/// crash part-way). Answers the snapshot's placement.
fn replace_state(
    tree: &sled::Tree,
    path: &Path,
    meta: &SnapshotMeta,
) -> io::Result<Option<Placement>> {
    let mut batches = Batches::new(tree);
    for key in tree.scan_prefix(RECIPE_PREFIX).keys() {
        batches.push(key.map_err(io_err)?.to_vec(), None)?;
    }
    let (_, mut input) = SnapshotReader::open(BufReader::new(File::open(path)?))?;
    while let Some((name, value)) = input.next_recipe()? {
        batches.push([RECIPE_PREFIX, &name].concat(), Some(value))?;
    }
    batches.push(APPLIED.to_vec(), Some(encode_io(&meta.last_log_id)?))?;
    batches.push(MEMBERSHIP.to_vec(), Some(encode_io(&meta.last_membership)?))?;
    let placement = input.placement().cloned();
    let encoded = placement.as_ref().map(encode_io).transpose()?;
    batches.push(PLACEMENT.to_vec(), encoded)?;
    batches.finish()?;
    Ok(placement)
}

/// Writes to a tree in sled batches of [`INSTALL_BATCH_ENTRIES`], in order.
struct Batches<'t> {
    tree: &'t sled::Tree,
    batch: sled::Batch,
    len: usize,
}

impl<'t> Batches<'t> {
    fn new(tree: &'t sled::Tree) -> Self {
        Self {
            tree,
            batch: sled::Batch::default(),
            len: 0,
        }
    }

    /// Sets `key` to `value`, or removes it when `value` is `None`.
    fn push(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> io::Result<()> {
        match value {
            Some(value) => self.batch.insert(key, value),
            None => self.batch.remove(key),
        }
        self.len += 1;
        if self.len == INSTALL_BATCH_ENTRIES {
            self.finish()?;
        }
        Ok(())
    }

    /// Applies what is pending.
    fn finish(&mut self) -> io::Result<()> {
        self.len = 0;
        self.tree
            .apply_batch(std::mem::take(&mut self.batch))
            .map_err(io_err)
    }
}

/// The newest complete snapshot in `dir`: the one covering the highest log
/// id. Temporary files of an interrupted write are not snapshots.
fn newest_snapshot(dir: &Path) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
    let mut newest: Option<(SnapshotMeta, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(SNAPSHOT_SUFFIX) {
            continue;
        }
        let (Some(meta), _) = SnapshotReader::open(BufReader::new(File::open(&path)?))? else {
            continue;
        };
        if newest
            .as_ref()
            .is_none_or(|(best, _)| meta.last_log_id > best.last_log_id)
        {
            newest = Some((meta, path));
        }
    }
    Ok(newest)
}
/// Builds snapshots from a consistent view of the state machine.
pub struct SnapshotBuilder {
    tree: sled::Tree,
    unwritten: WriteBehind,
    snapshot_dir: PathBuf,
    snapshot_recipes: SnapshotRecipes,
    apply_lock: Arc<Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = Instant::now();
        let applying = self.apply_lock.lock().await;
        // Sled holds everything applied once this returns, and nothing more
        // until `held` is dropped.
        let held = self.unwritten.hold().await?;
        let meta = applied_meta(&self.tree)?;
        // Applying goes on in memory while sled is dumped: holding the
        // apply lock instead stalled every write for each snapshot, for as
        // long as writing out the whole store takes.
        drop(applying);
        let file = snapshot_file_name(&meta);
        let path = self.snapshot_dir.join(&file);
        let tree = self.tree.clone();
        let (write_meta, write_path) = (meta.clone(), path.clone());
        let end = tokio::task::spawn_blocking(move || {
            let _held = held;
            write_snapshot_file(&tree, &write_meta, &write_path)
        })
        .await
        .map_err(io::Error::other)??;
        self.snapshot_recipes.set(end.recipes);
        remove_stale_snapshots(&self.snapshot_dir, &file);
        metrics::observe_snapshot_build(started.elapsed());
        Ok(Snapshot {
            meta,
            snapshot: File::open(&path)?,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.read_applied_state().await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let _guard = self.apply_lock.lock().await;
        let mut pending = Pending::default();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Normal(command) => {
                    self.apply_command(log_id.index(), command, &mut pending)?
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    pending
                        .writes
                        .push((MEMBERSHIP.to_vec(), Some(encode_io(&stored)?)));
                    Outcome::Applied
                }
            };
            pending.applied = Some(log_id);
            pending.entries += 1;
            if let Some(responder) = responder {
                if let (EntryPayload::Normal(Command::Put { name, .. }), Outcome::Written { .. }) =
                    (&entry.payload, &outcome)
                {
                    pending.uploaded.insert(name.clone());
                }
                pending.replies.push((responder, outcome));
            }
            if pending.entries >= APPLY_BATCH_ENTRIES {
                self.commit(std::mem::take(&mut pending)).await?;
            }
        }
        self.commit(pending).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            tree: self.tree.clone(),
            unwritten: self.recipes.unwritten.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            snapshot_recipes: self.snapshot_recipes.clone(),
            apply_lock: self.apply_lock.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: File,
    ) -> Result<(), io::Error> {
        let _guard = self.apply_lock.lock().await;
        // The snapshot replaces the whole state: no earlier write may land
        // in sled after it.
        self.recipes.unwritten.drain().await?;
        let file = snapshot_file_name(meta);
        let dir = self.snapshot_dir.clone();
        let tree = self.tree.clone();
        let recipes = self.recipes.clone();
        let meta = meta.clone();
        let end = tokio::task::spawn_blocking(move || -> io::Result<SnapshotEnd> {
            // The metadata openraft hands over is authoritative; a copy in
            // the file (the sender's) describes the same snapshot. Durable
            // before the state machine moves past the log it replaces, as
            // openraft may purge that log once this returns; and before
            // sled changes, so that a crash part-way through the
            // replacement leaves this the newest snapshot, ahead of the
            // applied id, which openraft then installs again at start.
            let (path, end) = keep_snapshot(&dir, &meta, BufReader::new(snapshot))?;
            let _installing = recipes
                .installing
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let _fill = recipes.fill_lock.lock().unwrap_or_else(|e| e.into_inner());
            let placement = replace_state(&tree, &path, &meta)?;
            recipes.set_placement(placement.map(Arc::new));
            recipes.cache.clear();
            Ok(end)
        })
        .await
        .map_err(io::Error::other)??;
        self.snapshot_recipes.set(end.recipes);
        remove_stale_snapshots(&self.snapshot_dir, &file);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.snapshot_dir.clone();
        let Some((meta, path)) = tokio::task::spawn_blocking(move || newest_snapshot(&dir))
            .await
            .map_err(io::Error::other)??
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: File::open(path)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;
    use crate::raft::typ::Entry;

    use crate::raft::typ::CommittedLeaderId as Leader;

    fn entry(index: u64, command: Command) -> Entry {
        Entry::new_normal(LogId::new(Leader::new(1, 0), index), command)
    }

    fn put(name: &str, if_version: Option<u64>) -> Command {
        Command::Put {
            name: name.into(),
            content: Bytes::from_static(b"x"),
            if_version,
        }
    }

    fn delete(name: &str, if_version: Option<u64>) -> Command {
        Command::Delete {
            name: name.into(),
            if_version,
        }
    }

    fn open(dir: &Path) -> StateMachine {
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        // No cache: every read comes from the unwritten writes or sled.
        StateMachine::open(&db, &dir.join("snapshots"), RecipeCache::new(0)).unwrap()
    }

    async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();
    }

    fn names(rows: &[RecipeSummary]) -> Vec<(&str, u64)> {
        rows.iter().map(|r| (r.name.as_str(), r.version)).collect()
    }

    /// Reads and listings see every applied entry, whether the writer has
    /// put it into sled yet or not; a snapshot holds them all.
    #[tokio::test]
    async fn reads_lists_and_snapshots_see_writes_not_yet_in_sled() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        apply(
            &mut sm,
            vec![
                entry(1, put("b", None)),
                entry(2, put("d", None)),
                entry(3, put("f", None)),
            ],
        )
        .await;
        sm.recipes.unwritten.drain().await.unwrap();
        // A batch staged but not yet sent: the writer cannot have put it
        // into sled, so reads find it only in the overlay.
        let recipes = sm.recipes();
        let recipe = |version| Recipe {
            version,
            content: Bytes::from_static(b"x"),
        };
        let staged = recipes.unwritten.stage(HashMap::from([
            ("a".to_string(), Some(Arc::new(recipe(4)))),
            ("d".to_string(), None),
            ("e".to_string(), Some(Arc::new(recipe(5)))),
            ("f".to_string(), Some(Arc::new(recipe(6)))),
        ]));
        assert_eq!(recipes.get("d").unwrap(), None, "deleted, not yet in sled");
        assert_eq!(recipes.get("f").unwrap().unwrap().version, 6);
        assert_eq!(recipes.get("b").unwrap().unwrap().version, 1);
        assert_eq!(
            names(&recipes.list("", None, 10).unwrap()),
            [("a", 4), ("b", 1), ("e", 5), ("f", 6)]
        );
        assert_eq!(
            names(&recipes.list("", Some("a"), 2).unwrap()),
            [("b", 1), ("e", 5)]
        );
        assert_eq!(names(&recipes.list("", Some("e"), 2).unwrap()), [("f", 6)]);
        let written = |version| Some(encode_io(&recipe(version)).unwrap());
        let applied = LogId::new(Leader::new(1, 0), 6);
        let writes = vec![
            (recipe_key("a"), written(4)),
            (recipe_key("d"), None),
            (recipe_key("e"), written(5)),
            (recipe_key("f"), written(6)),
            (APPLIED.to_vec(), Some(encode_io(&Some(applied)).unwrap())),
        ];
        recipes.unwritten.send(staged, writes).await.unwrap();

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index()), Some(6));
        assert!(recipes.unwritten.range("", None).is_empty(), "all in sled");
        assert_eq!(
            names(&recipes.list("", None, 10).unwrap()),
            [("a", 4), ("b", 1), ("e", 5), ("f", 6)]
        );
        let mut restored = open(&dir.path().join("restored"));
        restored
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(
            names(&restored.recipes().list("", None, 10).unwrap()),
            [("a", 4), ("b", 1), ("e", 5), ("f", 6)]
        );
    }

    /// Applies a put of `content` to each name, one entry each, after
    /// the state machine's last applied index.
    async fn put_all(sm: &mut StateMachine, names: impl Iterator<Item = String>, content: &[u8]) {
        let (applied, _) = sm.applied_state().await.unwrap();
        let first = applied.map_or(1, |l| l.index() + 1);
        let entries = names
            .zip(first..)
            .map(|(name, index)| {
                let command = Command::Put {
                    name,
                    content: Bytes::copy_from_slice(content),
                    if_version: None,
                };
                entry(index, command)
            })
            .collect();
        apply(sm, entries).await;
        sm.recipes.unwritten.drain().await.unwrap();
    }

    /// A snapshot of several install batches replaces a state of several
    /// batches; an install cut off part-way leaves the applied id where it
    /// was, behind the snapshot already stored, so openraft installs that
    /// snapshot again at start-up (as below) and the state comes out whole.
    #[tokio::test]
    async fn a_snapshot_install_cut_off_part_way_is_redone_whole() {
        let recipes = 3 * INSTALL_BATCH_ENTRIES;
        let dir = tempfile::tempdir().unwrap();
        let mut source = open(&dir.path().join("source"));
        put_all(
            &mut source,
            (0..recipes).map(|i| format!("new-{i:05}")),
            b"new",
        )
        .await;
        let snapshot = source
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let expected = source.recipes().list("", None, usize::MAX).unwrap();
        assert_eq!(expected.len(), recipes);

        let mut target = open(&dir.path().join("target"));
        put_all(
            &mut target,
            (0..recipes - 1).map(|i| format!("old-{i:05}")),
            b"old",
        )
        .await;
        let (old_applied, _) = target.applied_state().await.unwrap();
        // The snapshot file, cut short inside a record two thirds of the
        // way through: the replacement fails after some batches went in.
        let file = std::fs::read(
            dir.path()
                .join("source/snapshots")
                .join(snapshot_file_name(&snapshot.meta)),
        )
        .unwrap();
        let mut end_of_record = 8;
        while end_of_record < file.len() * 2 / 3 {
            let len = &file[end_of_record..end_of_record + 4];
            end_of_record += 4 + u32::from_be_bytes(len.try_into().unwrap()) as usize;
        }
        let cut = dir.path().join("cut.snap");
        std::fs::write(&cut, &file[..end_of_record - 1]).unwrap();
        let error = replace_state(&target.tree, &cut, &snapshot.meta).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let (applied, _) = target.applied_state().await.unwrap();
        assert_eq!(
            applied, old_applied,
            "the applied id moves only once all is in"
        );
        let listed = target.recipes().list("", None, usize::MAX).unwrap();
        assert_ne!(listed, expected, "part of the snapshot went in");

        // Start-up: the snapshot install stored before changing sled is
        // ahead of the applied id, so openraft installs it again.
        let stored = target.snapshot_dir.join(snapshot_file_name(&snapshot.meta));
        std::fs::write(&stored, &file).unwrap();
        let current = target.get_current_snapshot().await.unwrap().unwrap();
        assert!(current.meta.last_log_id > applied);
        target
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(
            target.recipes().list("", None, usize::MAX).unwrap(),
            expected
        );
        let (applied, membership) = target.applied_state().await.unwrap();
        assert_eq!(applied, snapshot.meta.last_log_id);
        assert_eq!(membership, snapshot.meta.last_membership);
    }

    /// Entries applied in one batch see the writes of the entries before
    /// them, as they would one at a time.
    #[tokio::test]
    async fn conditions_in_one_batch_see_the_earlier_entries_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let entries = [
            entry(1, put("a", None)),
            entry(2, put("a", Some(1))),
            entry(3, put("a", Some(1))),
            entry(4, delete("b", None)),
            entry(5, put("b", Some(0))),
            entry(6, delete("b", Some(5))),
            entry(7, put("b", Some(0))),
        ];
        apply(&mut sm, entries.to_vec()).await;

        let recipes = sm.recipes();
        assert_eq!(recipes.get("a").unwrap().unwrap().version, 2);
        assert_eq!(recipes.get("b").unwrap().unwrap().version, 7);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index()), Some(7));
    }

    /// A name that shard `shard` of two owns.
    fn name_in_shard(shard: u16) -> String {
        let half = recipestore_protocol::slots::SLOTS / 2;
        (0..)
            .map(|i| format!("recipe-{i}"))
            .find(|n| (recipestore_protocol::slots::slot_of(n) >= half) == (shard == 1))
            .unwrap()
    }

    /// A shard applies writes to its own slots only, the same way on every
    /// member, and its placement goes with its snapshots.
    #[tokio::test]
    async fn a_shard_applies_writes_in_its_slots_only_and_its_snapshots_carry_its_placement() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let placement = crate::placement::tests::placement(1, 2, 1);
        let (mine, theirs) = (name_in_shard(1), name_in_shard(0));
        apply(
            &mut sm,
            vec![
                entry(1, Command::Place(Box::new(placement.clone()))),
                entry(2, put(&mine, None)),
                entry(3, put(&theirs, None)),
            ],
        )
        .await;
        let recipes = sm.recipes();
        assert_eq!(recipes.get(&mine).unwrap().unwrap().version, 2);
        assert_eq!(recipes.get(&theirs).unwrap(), None);
        assert_eq!(recipes.placement().as_deref(), Some(&placement));
        let slot = recipestore_protocol::slots::slot_of(&theirs);
        for command in [put(&theirs, None), delete(&theirs, None)] {
            let outcome = sm.apply_command(4, &command, &mut Pending::default());
            assert_eq!(
                outcome.unwrap(),
                Outcome::Moved {
                    slot,
                    shard: 0,
                    epoch: 1
                }
            );
        }

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut restored = open(&dir.path().join("restored"));
        restored
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(restored.recipes().placement().as_deref(), Some(&placement));
        // Where a restart finds it.
        assert_eq!(read_placement(&restored.tree).unwrap(), Some(placement));
    }

    /// An unsharded store with recipes can become a one-shard store, not
    /// a shard that would leave its recipes in other shards' slots.
    #[tokio::test]
    async fn a_first_placement_that_would_strand_recipes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        apply(&mut sm, vec![entry(1, put(&name_in_shard(0), None))]).await;
        let half = crate::placement::tests::placement(1, 2, 1);
        let refused = sm.apply_command(2, &Command::Place(Box::new(half)), &mut Pending::default());
        match refused.unwrap() {
            Outcome::Refused { reason } => assert!(reason.contains("would be lost"), "{reason}"),
            other => panic!("took the placement: {other:?}"),
        }
        assert_eq!(sm.recipes().placement(), None);
        let whole = crate::placement::tests::placement(0, 1, 1);
        apply(
            &mut sm,
            vec![entry(2, Command::Place(Box::new(whole.clone())))],
        )
        .await;
        assert_eq!(sm.recipes().placement().as_deref(), Some(&whole));
    }

    /// A slot moves between two shards' state machines: the destination's
    /// copies serve nothing until it acquires the slot, the source's writes
    /// wait from its release, and the destination's versions of the recipe
    /// continue above the source's.
    #[tokio::test]
    async fn a_slot_moves_between_shards_and_its_versions_keep_growing() {
        use crate::placement::MoveStep;
        use crate::placement::VERSION_EPOCH_SHIFT;
        let dir = tempfile::tempdir().unwrap();
        let mut source = open(&dir.path().join("a"));
        let mut destination = open(&dir.path().join("b"));
        let (name, theirs) = (name_in_shard(0), name_in_shard(1));
        let slot = recipestore_protocol::slots::slot_of(&name);
        let place =
            |shard| Command::Place(Box::new(crate::placement::tests::placement(shard, 2, 1)));
        apply(
            &mut source,
            vec![entry(1, place(0)), entry(2, put(&name, None))],
        )
        .await;
        apply(&mut destination, vec![entry(1, place(1))]).await;

        // Copies of its own slots' recipes, which they would replace, are refused.
        let copy = |n: &str| {
            Command::Import(vec![(
                n.to_string(),
                Some(Recipe {
                    version: 2,
                    content: Bytes::from_static(b"x"),
                }),
            )])
        };
        let refused = destination.apply_command(2, &copy(&theirs), &mut Pending::default());
        assert!(
            matches!(refused.unwrap(), Outcome::Refused { reason } if reason.contains("a copy would replace it"))
        );
        apply(&mut destination, vec![entry(2, copy(&name))]).await;
        let served = |sm: &StateMachine| {
            let placement = sm.recipes().placement();
            let rows = sm
                .recipes()
                .list_where("", None, 10, |n| {
                    placement
                        .as_ref()
                        .is_none_or(|p| p.owns(recipestore_protocol::slots::slot_of(n)))
                })
                .unwrap();
            rows.into_iter()
                .map(|r| (r.name, r.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(served(&destination), []);
        let write = destination.apply_command(3, &put(&name, None), &mut Pending::default());
        assert!(matches!(write.unwrap(), Outcome::Moved { shard: 0, .. }));

        let step = |step| Command::Move(step);
        let release = step(MoveStep::Release {
            slots: vec![slot],
            to: 1,
            epoch: 2,
        });
        apply(
            &mut source,
            vec![entry(3, release.clone()), entry(4, release)],
        )
        .await;
        let waits = source.apply_command(5, &put(&name, None), &mut Pending::default());
        assert_eq!(waits.unwrap(), Outcome::Moving { slot });

        apply(
            &mut destination,
            vec![entry(
                3,
                step(MoveStep::Acquire {
                    slots: vec![slot],
                    from: 0,
                    epoch: 2,
                }),
            )],
        )
        .await;
        apply(&mut destination, vec![entry(4, put(&name, Some(2)))]).await;
        let version = (2 << VERSION_EPOCH_SHIFT) | 4;
        assert_eq!(served(&destination), [(name.clone(), version)]);

        let cede = step(MoveStep::Cede {
            slots: vec![slot],
            to: 1,
            epoch: 2,
        });
        apply(&mut source, vec![entry(5, cede)]).await;
        assert_eq!(
            source.recipes().get(&name).unwrap(),
            None,
            "the copy is dropped"
        );
        let write = source.apply_command(6, &put(&name, None), &mut Pending::default());
        assert!(matches!(
            write.unwrap(),
            Outcome::Moved {
                shard: 1,
                epoch: 2,
                ..
            }
        ));
        // A later placement from outside keeps the shard's own record.
        let mut later = crate::placement::tests::placement(1, 2, 3);
        later.owners[usize::from(slot)] = 1;
        apply(
            &mut destination,
            vec![entry(5, Command::Place(Box::new(later)))],
        )
        .await;
        let held = destination.recipes().placement().unwrap();
        assert_eq!((held.epoch, held.acquired.get(&slot)), (3, Some(&2)));
        apply(&mut destination, vec![entry(6, put(&name, Some(version)))]).await;
        assert_eq!(
            served(&destination),
            [(name, (2 << VERSION_EPOCH_SHIFT) | 6)]
        );
    }
}
