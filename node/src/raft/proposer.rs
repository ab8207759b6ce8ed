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
//!
//! Batches in flight are limited too: at most [`BATCHES_IN_FLIGHT`] are
//! proposed and not yet answered. Writes that arrive meanwhile wait
//! together and go as one batch when a slot frees. Under load a batch then
//! grows with the time a round takes (append, replication, commit, apply),
//! not with one turn of the scheduler, and what each batch costs once (a
//! log append and its fdatasync, an AppendEntries to and an answer from
//! each follower, the commit notice after it) is shared by more writes: at
//! 256 writers with the servers on one CPU, about 15 % less CPU per write
//! and 15 to 20 % more writes a second than with no limit (BENCHMARKS.md).
//! A lone write finds a slot free and goes at once.

use std::future::Future;
use std::sync::Arc;

use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
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

/// Batches proposed and not yet answered, at most: one can replicate while
/// the one before it commits and applies, so the disk and the network stay
/// busy, and every other write waits to join the next batch. With one, a
/// batch would wait for the whole round of the one before it.
const BATCHES_IN_FLIGHT: usize = 2;

/// A write waiting for its batch.
struct Waiting {
    command: Command,
    responder: Responder,
    /// Where the caller receives its share of its batch's slot.
    slot: oneshot::Sender<BatchSlot>,
}

/// One of the [`BATCHES_IN_FLIGHT`] slots, shared by the callers of one
/// batch until each has its answer (or gives up): the slot frees with the
/// last share.
type BatchSlot = Arc<OwnedSemaphorePermit>;

/// Hands writes to Raft in batches. Cloning shares the batcher, which
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Waiting>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: typ::Raft) -> Self {
        Self::with_submit(move |batch| {
            let raft = raft.clone();
            async move {
                // Each write finds the core's channel open and does not
                // wait, so the core, woken once, finds the whole batch
                // queued and makes it one append.
                for (command, responder) in batch {
                    if raft.write(command).responder(responder).await.is_err() {
                        return false;
                    }
                }
                true
            }
        })
    }

    /// Starts the batching task, which hands each batch to `submit`; false
    /// from it means Raft stopped.
    fn with_submit<F, Fut>(submit: F) -> Self
    where
        F: FnMut(Vec<(Command, Responder)>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(propose_loop(waiting, submit));
        Self { queue }
    }

    /// Proposes `command` with the writes around it and waits until it is
    /// applied. `None` when Raft stopped first: the command may or may not
    /// have been proposed.
    pub async fn propose(&self, command: Command) -> Option<Proposed> {
        let (responder, answer): (Responder, oneshot::Receiver<Proposed>) =
            ProgressResponder::complete_only();
        let (slot, share) = oneshot::channel();
        let waiting = Waiting {
            command,
            responder,
            slot,
        };
        self.queue.send(waiting).await.ok()?;
        // Held until the answer, so that the batch's slot frees once every
        // write in it is answered.
        let _share = share.await;
        answer.await.ok()
    }
}

async fn propose_loop<F, Fut>(mut waiting: mpsc::Receiver<Waiting>, mut submit: F)
where
    F: FnMut(Vec<(Command, Responder)>) -> Fut,
    Fut: Future<Output = bool>,
{
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut queued = Vec::new();
    while waiting.recv_many(&mut queued, QUEUE).await > 0 {
        // Writes go on queuing while every slot is taken.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let slot = Arc::new(slot);
        // tokio wakes a yielding task only after the tasks already runnable
        // have run and the I/O driver has been polled.
        tokio::task::yield_now().await;
        while let Ok(more) = waiting.try_recv() {
            queued.push(more);
        }
        metrics::observe_proposal_batch(queued.len());
        let batch = queued
            .drain(..)
            .map(|write| {
                // A caller that gave up no longer takes its share.
                let _ = write.slot.send(slot.clone());
                (write.command, write.responder)
            })
            .collect();
        if !submit(batch).await {
            // Raft stopped: dropping the responders tells the callers.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::task::JoinHandle;

    use super::*;

    type Submitted = mpsc::UnboundedReceiver<Vec<(String, Responder)>>;

    /// A proposer whose batches come out of the returned channel, each
    /// write named with its responder.
    fn proposer() -> (Proposer, Submitted) {
        let (submitted, batches) = mpsc::unbounded_channel();
        let proposer = Proposer::with_submit(move |batch: Vec<(Command, Responder)>| {
            let named = batch
                .into_iter()
                .map(|(command, responder)| match command {
                    Command::Put { name, .. } | Command::Delete { name, .. } => (name, responder),
                    _ => unreachable!("these tests propose uploads"),
                })
                .collect();
            std::future::ready(submitted.send(named).is_ok())
        });
        (proposer, batches)
    }

    fn propose(proposer: &Proposer, name: &str) -> JoinHandle<Option<Proposed>> {
        let proposer = proposer.clone();
        let command = Command::Put {
            name: name.to_string(),
            content: Bytes::from_static(b"soup"),
            if_version: None,
        };
        tokio::spawn(async move { proposer.propose(command).await })
    }

    /// Lets every task run until none can go on: with the clock paused,
    /// tokio moves it on only once the runtime is idle.
    async fn settle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// The batches submitted so far, as names.
    fn batches(submitted: &mut Submitted) -> Vec<Vec<(String, Responder)>> {
        std::iter::from_fn(|| submitted.try_recv().ok()).collect()
    }

    fn names(batch: &[(String, Responder)]) -> Vec<&str> {
        batch.iter().map(|(name, _)| name.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn writes_wait_for_a_free_slot_and_then_go_as_one_batch() {
        let (proposer, mut submitted) = proposer();
        let first = propose(&proposer, "first");
        settle().await;
        let second = propose(&proposer, "second");
        settle().await;
        let mut unanswered = batches(&mut submitted);
        assert_eq!(
            unanswered.iter().map(|b| names(b)).collect::<Vec<_>>(),
            [["first"], ["second"]],
            "a lone write goes at once while a slot is free"
        );

        let waiting: Vec<_> = ["third", "fourth", "fifth"]
            .into_iter()
            .map(|name| propose(&proposer, name))
            .collect();
        settle().await;
        assert!(
            batches(&mut submitted).is_empty(),
            "writes went while {BATCHES_IN_FLIGHT} batches were unanswered"
        );

        // Answering the first batch (here: dropping its responder) frees
        // its slot, and everything that waited goes together.
        drop(unanswered.remove(0));
        assert!(first.await.unwrap().is_none());
        settle().await;
        let next = batches(&mut submitted);
        assert_eq!(
            next.iter().map(|b| names(b)).collect::<Vec<_>>(),
            [["third", "fourth", "fifth"]]
        );

        drop((unanswered, next));
        assert!(second.await.unwrap().is_none());
        for write in waiting {
            assert!(write.await.unwrap().is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_frees_its_share_of_the_slot() {
        let (proposer, mut submitted) = proposer();
        let gave_up = propose(&proposer, "gave-up");
        let other = propose(&proposer, "other");
        settle().await;
        let mut first = batches(&mut submitted);
        assert_eq!(names(&first[0]), ["gave-up", "other"]);
        let _second = propose(&proposer, "second");
        settle().await;
        let unanswered = batches(&mut submitted);
        assert_eq!(unanswered.len(), 1);

        let _waits = propose(&proposer, "waits");
        settle().await;
        assert!(batches(&mut submitted).is_empty());
        // One caller of the first batch stops waiting, the other is
        // answered: the slot frees although the first write's responder
        // is still held.
        gave_up.abort();
        let (_, answered) = first[0].pop().unwrap();
        drop(answered);
        assert!(other.await.unwrap().is_none());
        settle().await;
        assert_eq!(
            batches(&mut submitted)
                .iter()
                .map(|b| names(b))
                .collect::<Vec<_>>(),
            [["waits"]]
        );
    }
}
