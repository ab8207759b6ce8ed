//! The Raft log, vote and committed/purged log ids on sled.
//!
//! Everything lives in one tree so that a purge (new purged id + removed
//! entries) is a single atomic batch. Appends are written at once and
//! acknowledged to openraft only after an fsync; a dedicated flusher task
//! coalesces the appends that arrive while a flush is running into the next
//! one (group commit), so throughput is not bounded by one fsync per entry.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::time::Instant;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use tokio::sync::mpsc;

use super::TypeConfig;
use super::typ::Entry;
use super::typ::LogId;
use super::typ::Vote;
use crate::codec::decode_io;
use crate::codec::encode_io;
use crate::metrics;

const VOTE: &[u8] = b"m/vote";
const COMMITTED: &[u8] = b"m/committed";
const PURGED: &[u8] = b"m/purged";
const LOG_PREFIX: u8 = b'l';

/// A log key sorts by index: the prefix byte, then the big-endian index.
fn log_key(index: u64) -> [u8; 9] {
    let mut key = [LOG_PREFIX; 9];
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

/// The sled-backed Raft log. Cloning shares the same tree and flusher.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    tree: sled::Tree,
    flush_requests: mpsc::UnboundedSender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens the log in `db` and starts its flusher on the current runtime.
    pub fn open(db: &sled::Db) -> io::Result<Self> {
        let tree = db.open_tree("raft").map_err(io_err)?;
        let (flush_requests, pending) = mpsc::unbounded_channel();
        tokio::spawn(flush_loop(db.clone(), pending));
        Ok(Self {
            db: db.clone(),
            tree,
            flush_requests,
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.tree.get(key).map_err(io_err)? {
            Some(bytes) => decode_io(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn flush(&self) -> io::Result<()> {
        let started = Instant::now();
        self.db.flush_async().await.map_err(io_err)?;
        metrics::observe_fsync(started.elapsed(), 1);
        Ok(())
    }
}

/// Completes appends in batches: every callback that queued up while the
/// previous fsync ran is covered by the next one.
async fn flush_loop(db: sled::Db, mut pending: mpsc::UnboundedReceiver<IOFlushed<TypeConfig>>) {
    let mut batch = Vec::new();
    while pending.recv_many(&mut batch, 4096).await > 0 {
        let started = Instant::now();
        let result = db.flush_async().await;
        metrics::observe_fsync(started.elapsed(), batch.len());
        for callback in batch.drain(..) {
            let result = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(io::Error::other(format!("failed to fsync raft log: {e}"))),
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
        let start = match range.start_bound() {
            Bound::Included(i) => log_key(*i),
            Bound::Excluded(i) => log_key(i.saturating_add(1)),
            Bound::Unbounded => log_key(0),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(log_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(*i)),
            Bound::Unbounded => Bound::Included(log_key(u64::MAX)),
        };
        self.tree
            .range::<[u8; 9], _>((Bound::Included(start), end))
            .map(|kv| {
                let (_, value) = kv.map_err(io_err)?;
                decode_io(&value)
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED)?;
        let last_entry = self
            .tree
            .range(log_key(0)..=log_key(u64::MAX))
            .next_back()
            .transpose()
            .map_err(io_err)?;
        let last_log_id = match last_entry {
            Some((_, value)) => Some(decode_io::<Entry>(&value)?.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.tree.insert(VOTE, encode_io(vote)?).map_err(io_err)?;
        // A vote must survive a crash before it is acted on.
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on purpose: a lost committed id is recomputed by the
        // leader; saving it lets a restart re-apply up to it sooner.
        self.tree
            .insert(COMMITTED, encode_io(&committed)?)
            .map_err(io_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&log_key(entry.index()), encode_io(&entry)?);
        }
        self.tree.apply_batch(batch).map_err(io_err)?;
        self.flush_requests
            .send(callback)
            .map_err(|_| io::Error::other("raft log flusher stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut batch = sled::Batch::default();
        for key in self.tree.range(log_key(from)..=log_key(u64::MAX)).keys() {
            batch.remove(key.map_err(io_err)?);
        }
        self.tree.apply_batch(batch).map_err(io_err)?;
        // Conflicting entries must not reappear after a crash.
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut batch = sled::Batch::default();
        batch.insert(PURGED, encode_io(&log_id)?);
        for key in self.tree.range(log_key(0)..=log_key(log_id.index())).keys() {
            batch.remove(key.map_err(io_err)?);
        }
        self.tree.apply_batch(batch).map_err(io_err)
    }
}
