//! The replicated state machine: recipes with their versions on sled, the
//! last applied log id and membership, and snapshots as files.
//!
//! Recipes, the applied id and the membership share one tree, so the entries
//! openraft hands over together are applied in one atomic batch, with the
//! last applied id (one write per batch, not per entry). The state machine
//! is not fsync'd (sled syncs it in the background): what it loses in a
//! crash is rebuilt from durable parts. The log keeps every entry after the last snapshot, and
//! a snapshot is durable before openraft purges the log behind it: it is
//! written to a temporary file, fsync'd, renamed and its directory fsync'd,
//! and it carries its own metadata, so the newest snapshot file *is* the
//! current snapshot. At start-up openraft installs it when the state machine
//! is behind it, then re-applies the log.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use futures::TryStreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::ApplyResponder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::Mutex;

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

const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const RECIPE_PREFIX: &[u8] = b"r/";
/// A snapshot file: this magic, its metadata as one record, then the
/// recipes as name/value record pairs.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RSSNAP02";
/// The first format, without metadata, still sent by a leader of an older
/// release during an upgrade.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"RSSNAP01";
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

fn recipe_key(name: &str) -> Vec<u8> {
    [RECIPE_PREFIX, name.as_bytes()].concat()
}

/// A recipe as stored: its content and the log index of its last write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub content: Vec<u8>,
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
/// Reads go through the cache. Coherence: applying an entry (sled write +
/// cache update) and filling the cache after a miss (sled read + cache
/// insert) both hold `fill_lock`, so a fill can never put back a value that
/// an apply has already replaced or deleted.
#[derive(Clone)]
pub struct Recipes {
    tree: sled::Tree,
    cache: RecipeCache,
    fill_lock: Arc<std::sync::Mutex<()>>,
}

impl Recipes {
    /// The recipe as of this node's last applied entry.
    pub fn get(&self, name: &str) -> io::Result<Option<Arc<Recipe>>> {
        if let Some(hit) = self.cache.get(name) {
            return Ok(Some(hit));
        }
        let _fill = self.fill_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(recipe) = self.get_stored(name)? else {
            return Ok(None);
        };
        let recipe = Arc::new(recipe);
        self.cache.insert(name, recipe.clone());
        Ok(Some(recipe))
    }

    fn get_stored(&self, name: &str) -> io::Result<Option<Recipe>> {
        read_meta(&self.tree, &recipe_key(name))
    }

    /// The stored version of a recipe, from the cache when it holds it.
    fn get_stored_version(&self, name: &str) -> io::Result<Option<u64>> {
        if let Some(hit) = self.cache.get(name) {
            return Ok(Some(hit.version));
        }
        Ok(self.get_stored(name)?.map(|r| r.version))
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
        let start = match after {
            Some(after) => {
                let mut key = recipe_key(after);
                key.push(0);
                key
            }
            None => recipe_key(prefix),
        };
        let full_prefix = recipe_key(prefix);
        let mut out = Vec::new();
        for kv in self.tree.range(start..) {
            let (key, value) = kv.map_err(io_err)?;
            if !key.starts_with(&full_prefix) || out.len() >= limit {
                break;
            }
            let recipe: Recipe = decode_io(&value)?;
            out.push(RecipeSummary {
                name: String::from_utf8_lossy(&key[RECIPE_PREFIX.len()..]).into_owned(),
                version: recipe.version,
                size_bytes: recipe.content.len() as u64,
            });
        }
        Ok(out)
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    tree: sled::Tree,
    recipes: Recipes,
    snapshot_dir: PathBuf,
    /// Held while applying and while dumping a snapshot, so a snapshot is the
    /// exact state at its last applied id.
    apply_lock: Arc<Mutex<()>>,
}

impl StateMachine {
    /// Opens the state machine in `db`, with snapshots under `snapshot_dir`
    /// and reads served through `cache`.
    pub fn open(db: &sled::Db, snapshot_dir: &Path, cache: RecipeCache) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        let tree = db.open_tree("sm").map_err(io_err)?;
        Ok(Self {
            recipes: Recipes {
                tree: tree.clone(),
                cache,
                fill_lock: Arc::default(),
            },
            tree,
            snapshot_dir: snapshot_dir.to_path_buf(),
            apply_lock: Arc::new(Mutex::new(())),
        })
    }

    /// A read handle for the services.
    pub fn recipes(&self) -> Recipes {
        self.recipes.clone()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        read_meta(&self.tree, key)
    }

    /// Computes the outcome of `command` and stages its write in `batch`;
    /// returns the cache change to make once the batch is applied.
    /// `staged` holds the version each name has after the writes already
    /// staged (`None`: deleted), which a later entry of the batch must see.
    fn apply_command(
        &self,
        index: u64,
        command: &Command,
        batch: &mut sled::Batch,
        staged: &mut HashMap<String, Option<u64>>,
    ) -> io::Result<(Outcome, Option<CacheChange>)> {
        let (name, if_version) = match command {
            Command::Put {
                name, if_version, ..
            }
            | Command::Delete { name, if_version } => (name, *if_version),
        };
        let current = match staged.get(name) {
            Some(version) => *version,
            None => self.recipes.get_stored_version(name)?,
        };
        if let Some(expected) = if_version
            && current.unwrap_or(0) != expected
        {
            return Ok((Outcome::VersionMismatch { expected, current }, None));
        }
        Ok(match command {
            Command::Put { name, content, .. } => {
                let recipe = Recipe {
                    version: index,
                    content: content.clone(),
                };
                batch.insert(recipe_key(name), encode_io(&recipe)?);
                staged.insert(name.clone(), Some(index));
                let change = CacheChange::Put(name.clone(), Arc::new(recipe));
                (Outcome::Written { version: index }, Some(change))
            }
            Command::Delete { name, .. } => {
                if current.is_none() {
                    return Ok((Outcome::NotFound, None));
                }
                batch.remove(recipe_key(name));
                staged.insert(name.clone(), None);
                (
                    Outcome::Deleted { version: index },
                    Some(CacheChange::Remove(name.clone())),
                )
            }
        })
    }
}

/// Applied entries not yet written: one sled batch for all of them, so
/// applying costs one write per batch rather than one per entry.
#[derive(Default)]
struct Pending {
    batch: sled::Batch,
    staged: HashMap<String, Option<u64>>,
    applied: Option<LogId>,
    entries: usize,
    changes: Vec<CacheChange>,
    replies: Vec<(ApplyResponder<TypeConfig>, Outcome)>,
}

/// Most entries applied in one batch: bounds the memory a long replay
/// (after a restart) holds before writing.
const APPLY_BATCH_ENTRIES: usize = 512;

/// How an applied entry changes the cache.
enum CacheChange {
    Put(String, Arc<Recipe>),
    Remove(String),
}

impl StateMachine {
    /// Writes the pending entries and the last applied id in one atomic
    /// batch, updates the cache, then answers the writers. The batch is not
    /// synced: the state machine is rebuilt from the durable log and
    /// snapshot after a crash (see the module's comment).
    fn commit(&self, pending: Pending) -> io::Result<()> {
        let Pending {
            mut batch,
            applied,
            changes,
            replies,
            ..
        } = pending;
        let Some(applied) = applied else {
            return Ok(());
        };
        batch.insert(APPLIED, encode_io(&Some(applied))?);
        {
            let _fill = self
                .recipes
                .fill_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.tree.apply_batch(batch).map_err(io_err)?;
            for change in changes {
                match change {
                    CacheChange::Put(name, recipe) => self.recipes.cache.insert(&name, recipe),
                    CacheChange::Remove(name) => self.recipes.cache.invalidate(&name),
                }
            }
        }
        for (responder, outcome) in replies {
            responder.send(outcome);
        }
        Ok(())
    }
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

/// Writes `meta` and every recipe of `tree` to `path`, durably: through a
/// temporary file that is fsync'd, renamed, and its directory fsync'd.
fn write_snapshot_file(tree: &sled::Tree, meta: &SnapshotMeta, path: &Path) -> io::Result<u64> {
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::new(File::create(&tmp)?);
    out.write_all(SNAPSHOT_MAGIC)?;
    write_record(&mut out, &encode_io(meta)?)?;
    let mut count = 0u64;
    for kv in tree.scan_prefix(RECIPE_PREFIX) {
        let (key, value) = kv.map_err(io_err)?;
        write_record(&mut out, &key[RECIPE_PREFIX.len()..])?;
        write_record(&mut out, &value)?;
        count += 1;
    }
    persist(out, &tmp, path)?;
    Ok(count)
}

/// Makes a written snapshot file durable under its final name.
fn persist(out: BufWriter<File>, tmp: &Path, path: &Path) -> io::Result<()> {
    let file = out.into_inner().map_err(|e| e.into_error())?;
    // The snapshot replaces the log entries it covers, which openraft purges
    // as soon as this returns: its bytes must be on stable storage first...
    file.sync_all()?;
    std::fs::rename(tmp, path)?;
    // ...and so must its name, or a power loss would leave the purged log
    // with no snapshot to stand for it.
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a snapshot's magic and, in the current format, its metadata.
fn read_snapshot_header(input: &mut impl Read) -> io::Result<Option<SnapshotMeta>> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    match &magic {
        SNAPSHOT_MAGIC => {
            let meta = read_record(input)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "snapshot ends before its metadata",
                )
            })?;
            decode_io(&meta).map(Some)
        }
        SNAPSHOT_MAGIC_V1 => Ok(None),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a RecipeStore snapshot",
        )),
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
        let mut input = BufReader::new(File::open(&path)?);
        let Some(meta) = read_snapshot_header(&mut input)? else {
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
fn write_record(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(bytes)
}

/// Reads one length-prefixed record; `None` at a clean end of file.
fn read_record(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut bytes = vec![0; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

/// Builds snapshots from a consistent view of the state machine.
pub struct SnapshotBuilder {
    tree: sled::Tree,
    snapshot_dir: PathBuf,
    apply_lock: Arc<Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = Instant::now();
        let guard = self.apply_lock.lock().await;
        let last_log_id: Option<LogId> = read_meta(&self.tree, APPLIED)?;
        let last_membership: StoredMembership =
            read_meta(&self.tree, MEMBERSHIP)?.unwrap_or_default();
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        let file = snapshot_file_name(&meta);
        let path = self.snapshot_dir.join(&file);
        let tree = self.tree.clone();
        let (write_meta, write_path) = (meta.clone(), path.clone());
        tokio::task::spawn_blocking(move || write_snapshot_file(&tree, &write_meta, &write_path))
            .await
            .map_err(io::Error::other)??;
        drop(guard);
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
        Ok((
            self.read_meta(APPLIED)?,
            self.read_meta(MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let _guard = self.apply_lock.lock().await;
        let mut pending = Pending::default();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let (outcome, change) = match &entry.payload {
                EntryPayload::Blank => (Outcome::Applied, None),
                EntryPayload::Normal(command) => self.apply_command(
                    log_id.index(),
                    command,
                    &mut pending.batch,
                    &mut pending.staged,
                )?,
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    pending.batch.insert(MEMBERSHIP, encode_io(&stored)?);
                    (Outcome::Applied, None)
                }
            };
            pending.applied = Some(log_id);
            pending.entries += 1;
            pending.changes.extend(change);
            if let Some(responder) = responder {
                pending.replies.push((responder, outcome));
            }
            if pending.entries >= APPLY_BATCH_ENTRIES {
                self.commit(std::mem::take(&mut pending))?;
            }
        }
        self.commit(pending)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            tree: self.tree.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            apply_lock: self.apply_lock.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: File,
    ) -> Result<(), io::Error> {
        let _guard = self.apply_lock.lock().await;
        let file = snapshot_file_name(meta);
        let path = self.snapshot_dir.join(&file);
        let tree = self.tree.clone();
        let recipes = self.recipes.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut input = BufReader::new(snapshot);
            // The metadata openraft hands over is authoritative; a copy in
            // the file (the sender's) describes the same snapshot.
            read_snapshot_header(&mut input)?;
            // Replace the whole state in one atomic batch.
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(RECIPE_PREFIX).keys() {
                batch.remove(key.map_err(io_err)?);
            }
            let tmp = path.with_extension("tmp");
            let mut copy = BufWriter::new(File::create(&tmp)?);
            copy.write_all(SNAPSHOT_MAGIC)?;
            write_record(&mut copy, &encode_io(&meta)?)?;
            while let Some(name) = read_record(&mut input)? {
                let value = read_record(&mut input)?.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "snapshot ends inside a record",
                    )
                })?;
                write_record(&mut copy, &name)?;
                write_record(&mut copy, &value)?;
                batch.insert([RECIPE_PREFIX, &name].concat(), value);
            }
            batch.insert(APPLIED, encode_io(&meta.last_log_id)?);
            batch.insert(MEMBERSHIP, encode_io(&meta.last_membership)?);
            // Durable before the state machine moves past the log it
            // replaces: openraft may purge that log once this returns.
            persist(copy, &tmp, &path)?;
            let _fill = recipes.fill_lock.lock().unwrap_or_else(|e| e.into_inner());
            tree.apply_batch(batch).map_err(io_err)?;
            recipes.cache.clear();
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
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

    type Leader = openraft::alias::CommittedLeaderIdOf<TypeConfig>;

    fn entry(index: u64, command: Command) -> Entry {
        Entry::new_normal(LogId::new(Leader::new(1, 0), index), command)
    }

    fn put(name: &str, if_version: Option<u64>) -> Command {
        Command::Put {
            name: name.into(),
            content: b"x".to_vec(),
            if_version,
        }
    }

    fn delete(name: &str, if_version: Option<u64>) -> Command {
        Command::Delete {
            name: name.into(),
            if_version,
        }
    }

    /// Entries applied in one batch see the writes of the entries before
    /// them, as they would one at a time.
    #[tokio::test]
    async fn conditions_in_one_batch_see_the_earlier_entries_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        // No cache: every version comes from sled or from the batch.
        let mut sm =
            StateMachine::open(&db, &dir.path().join("snapshots"), RecipeCache::new(0)).unwrap();
        let entries = [
            entry(1, put("a", None)),
            entry(2, put("a", Some(1))),
            entry(3, put("a", Some(1))),
            entry(4, delete("b", None)),
            entry(5, put("b", Some(0))),
            entry(6, delete("b", Some(5))),
            entry(7, put("b", Some(0))),
        ];
        let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();

        let recipes = sm.recipes();
        assert_eq!(recipes.get("a").unwrap().unwrap().version, 2);
        assert_eq!(recipes.get("b").unwrap().unwrap().version, 7);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index()), Some(7));
    }
}
