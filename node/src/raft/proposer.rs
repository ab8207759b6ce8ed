//! Writes proposed together: the commands that reach the leader in one turn
//! of the scheduler go to Raft as one batch, and share one log append, one
//! fdatasync and one AppendEntries per follower.
//!
//! Openraft merges the writes it finds queued when its core runs, but a
//! request handler that proposes wakes the core, and tokio runs a task that
//! was just woken next. Under load the core took writes one at a time and
//! each paid for its own append, flush and replication round: at 256
//! writers the leader fdatasynced every 3 writes while its followers, which
//! receive writes already batched, did so every 60. The proposer lets one
//! turn of the scheduler pass before it hands over what has queued: every
//! handler already runnable adds its write first. With nothing else to run,
//! the turn is one poll of the I/O driver, so a lone write is not held.

use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use super::Command;
use super::TypeConfig;
use super::typ;
use crate::metrics;

/// What Raft answers for one proposed write.
pub type Proposed = ClientWriteResult<TypeConfig>;

type Responder = ProgressResponder<TypeConfig, Proposed>;

/// Writes waiting for their batch, at most. Uploads are bounded before
/// they get here (the upload queue and its workers), so this fills only if
/// the Raft core stalls; then proposing waits.
const QUEUE: usize = 4096;

/// Hands writes to Raft in batches. Cloning shares the batcher, which
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<(Command, Responder)>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: typ::Raft) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(propose_loop(raft, waiting));
        Self { queue }
    }

    /// Proposes `command` with the writes around it and waits until it is
    /// applied. `None` when Raft stopped first: the command may or may not
    /// have been proposed.
    pub async fn propose(&self, command: Command) -> Option<Proposed> {
        let (responder, answer): (Responder, oneshot::Receiver<Proposed>) =
            ProgressResponder::complete_only();
        self.queue.send((command, responder)).await.ok()?;
        answer.await.ok()
    }
}

async fn propose_loop(raft: typ::Raft, mut waiting: mpsc::Receiver<(Command, Responder)>) {
    let mut batch = Vec::new();
    while waiting.recv_many(&mut batch, QUEUE).await > 0 {
        // tokio wakes a yielding task only after the tasks already runnable
        // have run and the I/O driver has been polled.
        tokio::task::yield_now().await;
        while let Ok(more) = waiting.try_recv() {
            batch.push(more);
        }
        metrics::observe_proposal_batch(batch.len());
        // Each send finds the core's channel open and does not wait, so
        // the core, woken once, finds the whole batch queued and makes it
        // one append.
        for (command, responder) in batch.drain(..) {
            if raft.write(command).responder(responder).await.is_err() {
                // Raft stopped: dropping the responders tells the callers.
                return;
            }
        }
    }
}
