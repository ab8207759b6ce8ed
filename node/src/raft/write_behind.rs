//! Applied writes on their way into sled, off the path that answers writers.
//!
//! Applying an entry updates memory (this overlay and the cache) and hands
//! the sled writes to a writer thread, which writes at most one sled batch
//! per [`WRITE_INTERVAL`], merging every batch that waited for it. A sled
//! batch of more than one write seals sled's write buffer, waits for an I/O
//! thread to take it, and starts write-back of it to the disk: done inline
//! for each applied batch, sled's threads and disk kicks took a quarter of
//! a single-client cluster's CPU, and the wait held the async worker (on
//! one core, the whole node) each time. etcd paces its backend the same
//! way (a commit every 100 ms).
//!
//! Reads see applied writes at once: until the writer has put a write into
//! sled, the overlay holds it, and readers look there first. Each batch
//! carries the last applied log id, and the writer applies batches in order
//! as one atomic sled batch, so sled always holds the state at some applied
//! id; what a crash loses of it is re-applied from the durable log (see the
//! state machine's module comment).
//!
//! A snapshot is dumped from sled held still ([`WriteBehind::hold`]) while
//! applying goes on in memory: the writer waits, the overlay grows.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::OwnedRwLockWriteGuard;
use tokio::sync::RwLock;
use tokio::sync::mpsc;
use tokio::sync::watch;

use super::state_machine::Recipe;

/// A recipe's state after its last applied write: `None` once deleted.
pub type Staged = Option<Arc<Recipe>>;

/// One key's write in sled: a value, or `None` to remove it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// The least time between two sled batches. What a crash loses of it is
/// re-applied from the log, so it trades only memory (the overlay) and a
/// snapshot's wait for the writer against sled's per-batch cost.
const WRITE_INTERVAL: Duration = Duration::from_millis(50);

/// Batches handed over but not yet written, at most: room for an interval
/// of single-entry batches at several thousand writes a second. A full
/// queue makes apply wait for sled rather than hold ever more in memory.
const QUEUE: usize = 1024;

struct Batch {
    seq: u64,
    writes: Vec<Write>,
    /// The recipes the batch writes, released from the overlay once written.
    names: Vec<String>,
}

#[derive(Default)]
struct Overlay {
    /// Unwritten recipes with the sequence number of the batch that writes
    /// them.
    recipes: HashMap<String, (u64, Staged)>,
    /// The sequence number of the last batch handed over.
    sent: u64,
}

/// The overlay and the handle of its writer thread. Cloning shares both.
#[derive(Clone)]
pub struct WriteBehind {
    overlay: Arc<Mutex<Overlay>>,
    batches: mpsc::Sender<Batch>,
    /// The sequence number of the last batch written; closed if the writer
    /// failed.
    written: watch::Receiver<u64>,
    /// Read by the writer around each sled batch; [`WriteBehind::hold`]
    /// takes it for writing.
    sled_hold: Arc<RwLock<()>>,
}

/// Keeps the writer from changing sled until dropped.
pub type SledHeld = OwnedRwLockWriteGuard<()>;

impl WriteBehind {
    /// Starts the writer thread for `tree`; it stops when the last clone is
    /// dropped.
    pub fn start(tree: sled::Tree) -> io::Result<Self> {
        let overlay = Arc::new(Mutex::new(Overlay::default()));
        let (batches, queued) = mpsc::channel(QUEUE);
        let (written_tx, written) = watch::channel(0);
        let sled_hold = Arc::new(RwLock::new(()));
        let (writer, writer_hold) = (overlay.clone(), sled_hold.clone());
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(&tree, &writer, &writer_hold, queued, &written_tx))?;
        Ok(Self {
            overlay,
            batches,
            written,
            sled_hold,
        })
    }

    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The recipe as applied, if a write to it is not in sled yet.
    pub fn get(&self, name: &str) -> Option<Staged> {
        self.overlay()
            .recipes
            .get(name)
            .map(|(_, staged)| staged.clone())
    }

    /// The unwritten recipes whose names start with `prefix`, strictly after
    /// `after` when given, in name order.
    pub fn range(&self, prefix: &str, after: Option<&str>) -> BTreeMap<String, Staged> {
        self.overlay()
            .recipes
            .iter()
            .filter(|(name, _)| name.starts_with(prefix) && after.is_none_or(|a| name.as_str() > a))
            .map(|(name, (_, staged))| (name.clone(), staged.clone()))
            .collect()
    }

    /// Puts `staged` into the overlay: reads see it from now on. Call
    /// [`WriteBehind::send`] with the same batch's writes next; batches are
    /// written in the order they were staged.
    pub fn stage(&self, staged: HashMap<String, Staged>) -> StagedBatch {
        let mut overlay = self.overlay();
        overlay.sent += 1;
        let seq = overlay.sent;
        let names = staged.keys().cloned().collect();
        for (name, recipe) in staged {
            overlay.recipes.insert(name, (seq, recipe));
        }
        StagedBatch { seq, names }
    }

    /// Hands a staged batch's sled writes to the writer; waits while the
    /// writer is a full queue behind.
    pub async fn send(&self, staged: StagedBatch, writes: Vec<Write>) -> io::Result<()> {
        let batch = Batch {
            seq: staged.seq,
            writes,
            names: staged.names,
        };
        self.batches.send(batch).await.map_err(|_| writer_failed())
    }

    /// Waits until every batch handed over is in sled.
    pub async fn drain(&self) -> io::Result<()> {
        let sent = self.overlay().sent;
        let mut written = self.written.clone();
        written
            .wait_for(|&written| written >= sent)
            .await
            .map(|_| ())
            .map_err(|_| writer_failed())
    }

    /// Waits until every batch handed over is in sled, then keeps sled as
    /// it is until the guard is dropped: batches handed over meanwhile wait
    /// in the queue, and reads find them in the overlay. Call it while no
    /// batch is being handed over (the state machine's apply lock), so that
    /// sled holds exactly the state applied when it returns.
    pub async fn hold(&self) -> io::Result<SledHeld> {
        self.drain().await?;
        Ok(self.sled_hold.clone().write_owned().await)
    }
}

/// A batch staged in the overlay, to be sent to the writer.
#[must_use = "a staged batch must be sent to the writer"]
pub struct StagedBatch {
    seq: u64,
    names: Vec<String>,
}

fn writer_failed() -> io::Error {
    io::Error::other("the state machine's writer stopped after a failed write; see the log")
}

/// Writes batches in order, at most one sled batch per interval, with
/// every batch that queued up by then.
fn write_loop(
    tree: &sled::Tree,
    overlay: &Mutex<Overlay>,
    sled_hold: &RwLock<()>,
    mut queued: mpsc::Receiver<Batch>,
    written: &watch::Sender<u64>,
) {
    let mut last_write: Option<Instant> = None;
    while let Some(first) = queued.blocking_recv() {
        if let Some(wait) = last_write.and_then(|at| WRITE_INTERVAL.checked_sub(at.elapsed())) {
            std::thread::sleep(wait);
        }
        let mut batches = vec![first];
        while let Ok(more) = queued.try_recv() {
            batches.push(more);
        }
        let mut merged = sled::Batch::default();
        for batch in &batches {
            for (key, value) in &batch.writes {
                match value {
                    Some(value) => merged.insert(key.as_slice(), value.as_slice()),
                    None => merged.remove(key.as_slice()),
                }
            }
        }
        let _not_held = sled_hold.blocking_read();
        if let Err(e) = tree.apply_batch(merged) {
            // Closing `written` fails every later apply and drain: the node
            // stops on a storage error rather than serve a state it cannot
            // keep.
            tracing::error!(error = %e, "failed to write applied entries to the state machine");
            return;
        }
        let mut overlay = overlay.lock().unwrap_or_else(|e| e.into_inner());
        for batch in &batches {
            for name in &batch.names {
                // A later unwritten batch may have written the same recipe.
                if overlay
                    .recipes
                    .get(name)
                    .is_some_and(|(seq, _)| *seq == batch.seq)
                {
                    overlay.recipes.remove(name);
                }
            }
        }
        drop(overlay);
        last_write = Some(Instant::now());
        let last = batches.last().map_or(0, |b| b.seq);
        written.send_replace(last);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn recipe(version: u64) -> Staged {
        Some(Arc::new(Recipe {
            version,
            content: Bytes::from_static(b"x"),
        }))
    }

    /// Hands `name` at `version` to the writer.
    async fn write(unwritten: &WriteBehind, name: &str, version: u64) {
        let staged = unwritten.stage(HashMap::from([(name.to_string(), recipe(version))]));
        let value = version.to_be_bytes().to_vec();
        unwritten
            .send(staged, vec![(name.as_bytes().to_vec(), Some(value))])
            .await
            .unwrap();
    }

    /// While sled is held, writes handed over are read from the overlay and
    /// reach sled only once it is released.
    #[tokio::test]
    async fn held_sled_keeps_the_state_of_the_hold_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::Config::new()
            .path(dir.path())
            .open()
            .unwrap()
            .open_tree("sm")
            .unwrap();
        let unwritten = WriteBehind::start(tree.clone()).unwrap();
        write(&unwritten, "a", 1).await;
        let held = unwritten.hold().await.unwrap();
        assert!(
            tree.get("a").unwrap().is_some(),
            "written before the hold returned"
        );

        write(&unwritten, "a", 2).await;
        write(&unwritten, "b", 3).await;
        assert_eq!(unwritten.get("a"), Some(recipe(2)));
        assert_eq!(unwritten.get("b"), Some(recipe(3)));
        let drained = tokio::time::timeout(4 * WRITE_INTERVAL, unwritten.drain()).await;
        assert!(drained.is_err(), "the writer waits while sled is held");
        assert_eq!(
            tree.get("a").unwrap().unwrap(),
            1u64.to_be_bytes().as_slice()
        );
        assert!(tree.get("b").unwrap().is_none());

        drop(held);
        unwritten.drain().await.unwrap();
        assert_eq!(
            tree.get("a").unwrap().unwrap(),
            2u64.to_be_bytes().as_slice()
        );
        assert_eq!(
            tree.get("b").unwrap().unwrap(),
            3u64.to_be_bytes().as_slice()
        );
        assert_eq!(
            unwritten.get("a"),
            None,
            "released from the overlay once written"
        );
    }
}
