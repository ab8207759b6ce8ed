//! The Raft log, the vote and the last purged log id, on a durable log of
//! segment files ([`recipestore_wal::Log`]).
//!
//! What each sync protects:
//! - **An entry counts only once it is on stable storage.** `append` writes
//!   the entries and hands openraft's callback to the flusher thread, which
//!   calls it only after an `fdatasync` that covers them. The leader counts
//!   its own copy towards a quorum, and a follower acknowledges an entry to
//!   the leader, only through that callback; so an acknowledged write is on
//!   the disks of a quorum. The flusher completes every callback that queued
//!   up while the previous `fdatasync` ran with the next one (group commit).
//! - **A vote is durable before it is acted on** (`save_vote` returns after
//!   the meta file is replaced and synced): a node that forgot its vote
//!   could vote twice in one term.
//! - **A truncation is durable before entries are appended in its place**:
//!   otherwise a crash could bring back the conflicting entries behind new
//!   ones, two entries for one log id on one disk.
//! - **A purge is recorded before entries go**, and openraft purges only
//!   behind a snapshot that is itself durable (see the state machine), so a
//!   crash never leaves a gap between the snapshot and the log.
//!
//! The committed log id is not persisted. Openraft needs it only to restore
//! a leader without an election or to re-apply at start-up; leader restore
//! is off (see the configuration), and a restarted node learns the commit
//! index from the leader and applies the rest then.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use recipestore_wal::Log;
use recipestore_wal::Options;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::mpsc;

use super::TypeConfig;
use super::typ::Entry;
use super::typ::LogId;
use super::typ::Vote;
use crate::codec::decode_io;
use crate::codec::encode_io;
use crate::metrics;

/// What the log keeps beside its entries, replaced atomically as a whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

struct Inner {
    log: Log,
    meta: Meta,
    tail: Tail,
}

impl Inner {
    fn save_meta(&mut self, meta: Meta) -> io::Result<()> {
        self.log.set_meta(&encode_io(&meta)?)?;
        self.meta = meta;
        Ok(())
    }

    fn entry(&self, index: u64) -> io::Result<Option<Entry>> {
        if let Some(entry) = self.tail.get(index) {
            return Ok(Some(entry.clone()));
        }
        match self.log.read(index)? {
            Some(bytes) => decode_io(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// The newest entries of the log, as appended. Each entry is read back
/// soon after its append: by the leader's replication to every follower and
/// by the state machine, which would otherwise read, verify and decode it
/// from the segment file each time (a fourteenth of a loaded leader's CPU).
/// Each entry it holds is the log's entry at that index: appends extend
/// it, truncation and purging cut it as they cut the log.
#[derive(Default)]
struct Tail {
    entries: VecDeque<(Entry, usize)>,
    /// Encoded size of the entries held.
    bytes: usize,
}

/// The encoded size of the entries [`Tail`] keeps at most: several seconds
/// of writes, enough for a follower that lags by a few batches.
const TAIL_BYTES: usize = 8 << 20;

impl Tail {
    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.0.index();
        let (entry, _) = self
            .entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)?;
        Some(entry)
    }

    /// Follows an append of `entries` (with their encoded sizes) to the log.
    fn extend(&mut self, entries: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in entries {
            // `get` counts on consecutive indexes: entries appended to the
            // log past the tail (before the node starts) end it.
            if self
                .entries
                .back()
                .is_some_and(|(last, _)| last.index() + 1 != entry.index())
            {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.bytes > TAIL_BYTES {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// Follows a truncation of the log after `index` (`None`: all of it).
    fn truncate_after(&mut self, index: Option<u64>) {
        while let Some((entry, size)) = self.entries.back() {
            if index.is_some_and(|keep| entry.index() <= keep) {
                break;
            }
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    /// Follows a purge of the log through `index`.
    fn purge_through(&mut self, index: u64) {
        while let Some((entry, size)) = self.entries.front() {
            if entry.index() > index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_front();
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends waiting for the flusher. Openraft appends one batch at a time and
/// the flusher takes every waiting callback per fdatasync, so this fills
/// only when the disk stalls; then appends wait here (backpressure on the
/// Raft core) rather than queue without bound.
const FLUSH_QUEUE: usize = 1024;

/// The Raft log. Cloning shares the same log and flusher.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    flush_requests: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir` and starts its flusher thread,
    /// which stops when the last clone is dropped.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let (log, recovery) = Log::open(dir, Options::default())?;
        if recovery.torn_tail.is_some() {
            tracing::warn!(%recovery, "cut a torn write at the end of the raft log");
        } else {
            tracing::info!(%recovery, "opened the raft log");
        }
        let meta = match log.meta() {
            Some(bytes) => decode_io(bytes)?,
            None => Meta::default(),
        };
        let inner = Arc::new(Mutex::new(Inner {
            log,
            meta,
            tail: Tail::default(),
        }));
        let (flush_requests, pending) = mpsc::channel(FLUSH_QUEUE);
        let flusher = inner.clone();
        std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || flush_loop(&flusher, pending))?;
        Ok(Self {
            inner,
            flush_requests,
        })
    }

    /// Moves the log that releases up to 0.1 kept in sled's `raft` tree
    /// into this log, then drops the tree. Crash-safe: the meta is written
    /// last, and an import that finds no meta starts over.
    pub fn import_sled_log(&self, db: &sled::Db) -> io::Result<()> {
        const TREE: &[u8] = b"raft";
        if !db.tree_names().iter().any(|name| name == TREE) {
            return Ok(());
        }
        let tree = db.open_tree(TREE).map_err(io::Error::other)?;
        let mut inner = lock(&self.inner);
        if inner.log.meta().is_none() {
            let read = |key: &[u8]| -> io::Result<Option<sled::IVec>> {
                tree.get(key).map_err(io::Error::other)
            };
            let meta = Meta {
                vote: read(b"m/vote")?.map(|v| decode_io(&v)).transpose()?,
                last_purged: read(b"m/purged")?.map(|v| decode_io(&v)).transpose()?,
            };
            inner.log.truncate_all()?;
            if let Some(purged) = meta.last_purged {
                inner.log.purge_through(purged.index())?;
            }
            let mut count = 0u64;
            for kv in tree.scan_prefix(b"l") {
                let (_, value) = kv.map_err(io::Error::other)?;
                let entry: Entry = decode_io(&value)?;
                inner.log.append(entry.index(), &value)?;
                count += 1;
            }
            inner.log.sync()?;
            inner.save_meta(meta)?;
            tracing::info!(entries = count, "moved the raft log out of sled");
        }
        drop(inner);
        db.drop_tree(TREE).map_err(io::Error::other)?;
        Ok(())
    }

    /// Starts the log of a new data directory after `last`, with `vote`:
    /// a data directory restored from a backup whose snapshot ends at
    /// `last`. Refuses a log that holds anything already.
    pub fn seed(dir: &Path, last: LogId, vote: Vote) -> io::Result<()> {
        let (mut log, _) = Log::open(dir, Options::default())?;
        if log.meta().is_some() || log.last_index().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already holds a raft log", dir.display()),
            ));
        }
        // Durable (as every meta is) before the node starts: the vote for
        // the reason `save_vote` gives, the purge point so that the log
        // and the snapshot meet.
        log.purge_through(last.index())?;
        log.set_meta(&encode_io(&Meta {
            vote: Some(vote),
            last_purged: Some(last),
        })?)
    }

    /// Appends `entry` and syncs it, before the node starts: for an entry
    /// that recovery writes as if a leader had (see `recovery`).
    pub fn append_before_start(&self, entry: &Entry) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        inner.log.append(entry.index(), &encode_io(entry)?)?;
        inner.log.sync()
    }

    /// Runs blocking log I/O off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(io::Error::other)?
    }
}

/// Every entry in the log of a stopped node, in index order, with its log
/// id: for tools and checks that compare logs across nodes.
pub fn read_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let (log, _) = Log::open(dir, Options::default())?;
    let (Some(first), Some(last)) = (log.first_index(), log.last_index()) else {
        return Ok(Vec::new());
    };
    (first..=last)
        .map(|index| match log.read(index)? {
            Some(bytes) => decode_io(&bytes),
            None => Err(io::Error::other(format!("entry {index} is missing"))),
        })
        .collect()
}

/// Completes appends in batches: every callback that queued up while the
/// previous fdatasync ran is covered by the next one.
fn flush_loop(inner: &Mutex<Inner>, mut pending: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Some(first) = pending.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = pending.try_recv() {
            batch.push(more);
        }
        // Every entry whose append returned before this call is covered.
        let handle = lock(inner).log.sync_handle();
        let started = Instant::now();
        let result = handle.sync();
        metrics::observe_fsync(started.elapsed(), batch.len());
        for callback in batch {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("failed to fsync the raft log: {e}"),
                )),
            };
            callback.io_completed(result);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = lock(&self.inner);
        let (Some(first), Some(last)) = (inner.log.first_index(), inner.log.last_index()) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) if *i == 0 => return Ok(Vec::new()),
            Bound::Excluded(i) => i - 1,
            Bound::Unbounded => last,
        }
        .min(last);
        let mut entries = Vec::new();
        for index in start..=end {
            match inner.entry(index)? {
                Some(entry) => entries.push(entry),
                None => break,
            }
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner).meta.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = lock(&self.inner);
        let last_purged_log_id = inner.meta.last_purged;
        let last_log_id = match inner.log.last_index() {
            Some(index) => inner.entry(index)?.map(|e| e.log_id()),
            None => None,
        }
        .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.blocking(move |inner| {
            let meta = Meta {
                vote: Some(vote),
                ..inner.meta.clone()
            };
            inner.save_meta(meta)
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(encode_io)
            .collect::<io::Result<Vec<_>>>()?;
        let records: Vec<(u64, &[u8])> = entries
            .iter()
            .zip(&encoded)
            .map(|(entry, bytes)| (entry.index(), bytes.as_slice()))
            .collect();
        {
            let mut inner = lock(&self.inner);
            inner.log.append_batch(&records)?;
            let sizes = encoded.iter().map(Vec::len);
            inner.tail.extend(entries.into_iter().zip(sizes));
        }
        self.flush_requests
            .send(callback)
            .await
            .map_err(|_| io::Error::other("the raft log flusher stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.blocking(move |inner| {
            let keep = last_log_id.map(|id| id.index());
            inner.tail.truncate_after(keep);
            match keep {
                Some(index) => inner.log.truncate_after(index),
                None => inner.log.truncate_all(),
            }
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.blocking(move |inner| {
            let meta = Meta {
                last_purged: Some(log_id),
                ..inner.meta.clone()
            };
            inner.save_meta(meta)?;
            inner.tail.purge_through(log_id.index());
            inner.log.purge_through(log_id.index())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;
    use crate::raft::typ::CommittedLeaderId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new_blank(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    fn held(tail: &Tail) -> Vec<(u64, u64)> {
        let ids = tail.entries.iter().map(|(e, _)| e.log_id());
        ids.map(|id| (id.leader_id.term, id.index)).collect()
    }

    #[test]
    fn the_tail_follows_appends_truncation_and_purging() {
        let mut tail = Tail::default();
        tail.extend((1..=5).map(|i| (entry(1, i), 10)));
        assert_eq!(tail.get(3).map(|e| e.index()), Some(3));
        assert!(tail.get(0).is_none() && tail.get(6).is_none());

        // A new leader overwrites 4 and 5.
        tail.truncate_after(Some(3));
        tail.extend((4..=5).map(|i| (entry(2, i), 10)));
        assert_eq!(held(&tail), [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5)]);

        tail.purge_through(2);
        assert_eq!(held(&tail), [(1, 3), (2, 4), (2, 5)]);
        assert!(tail.get(2).is_none());
        assert_eq!(tail.bytes, 30);

        tail.truncate_after(None);
        assert!(held(&tail).is_empty());
        assert_eq!(tail.bytes, 0);
    }

    #[test]
    fn entries_that_do_not_follow_on_start_the_tail_again() {
        let mut tail = Tail::default();
        tail.extend((1..=3).map(|i| (entry(1, i), 10)));
        tail.extend([(entry(1, 7), 10)]);
        assert_eq!(held(&tail), [(1, 7)]);
        assert!(tail.get(3).is_none());
        assert_eq!(tail.bytes, 10);
    }

    #[test]
    fn the_tail_keeps_the_newest_entries_within_its_size() {
        let mut tail = Tail::default();
        tail.extend((1..=4).map(|i| (entry(1, i), TAIL_BYTES / 3)));
        assert_eq!(held(&tail), [(1, 2), (1, 3), (1, 4)]);
        assert!(tail.get(1).is_none());
        assert_eq!(tail.get(2).map(|e| e.index()), Some(2));
    }
}
