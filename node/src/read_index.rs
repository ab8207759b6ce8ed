//! Read indexes shared by the linearizable reads waiting for one.
//!
//! A linearizable read needs a read index obtained after it arrived: the
//! leader's commit index once a quorum has confirmed its leadership. A
//! follower got one from the leader per read, a peer call each, which made
//! linearizable reads cost more than the writes of the same size. Here, one
//! fetch at a time runs per node, and the reads that arrive while it runs
//! wait for the next one, which then serves them all. Each read is thus
//! served by a fetch that started after it arrived, as linearizability
//! needs (etcd batches its ReadIndex requests the same way).
//!
//! No task of its own: the first read to find no fetch running fetches, and
//! when it is done hands the turn to the oldest read that waits, which
//! fetches for everyone waiting then. A reader that gives up (its deadline,
//! a dropped call) while it fetches passes the turn on, and the readers its
//! fetch was to serve wait for the next.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::NodeError;

enum Turn {
    /// The read index of a fetch that started after the reader arrived.
    Done(Result<u64, NodeError>),
    /// No fetch runs: this reader fetches for every reader waiting.
    Fetch,
}

#[derive(Default)]
struct State {
    fetching: bool,
    waiting: VecDeque<oneshot::Sender<Turn>>,
}

/// The readers of one node waiting for a read index.
#[derive(Default)]
pub struct ReadIndexes {
    state: Mutex<State>,
}

impl ReadIndexes {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read index obtained after this call began: from the fetch running
    /// next, which `fetch` performs if it falls to this caller. Waits at
    /// most `wait` for another caller's fetch.
    pub async fn get<F, Fut>(&self, wait: Duration, fetch: F) -> Result<u64, NodeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, NodeError>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let rx = {
                let mut state = self.state();
                if !state.fetching {
                    state.fetching = true;
                    break;
                }
                let (tx, rx) = oneshot::channel();
                state.waiting.push_back(tx);
                rx
            };
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Turn::Done(result))) => return result,
                Ok(Ok(Turn::Fetch)) => break,
                // The fetch that was to serve this reader was abandoned
                // with its reader: wait for the next one.
                Ok(Err(_)) => {}
                Err(_) => {
                    return Err(NodeError::DeadlineExceeded(
                        "no read index within the deadline".into(),
                    ));
                }
            }
        }
        let turn = Holding { readers: self };
        let served: Vec<_> = std::mem::take(&mut self.state().waiting).into();
        let result = fetch().await;
        for reader in served {
            let _ = reader.send(Turn::Done(result.clone()));
        }
        drop(turn);
        result
    }
}

/// The turn to fetch, held by one reader; passed on when dropped, whether
/// the fetch finished or its reader gave up.
struct Holding<'a> {
    readers: &'a ReadIndexes,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut state = self.readers.state();
        while let Some(next) = state.waiting.pop_front() {
            if next.send(Turn::Fetch).is_ok() {
                return;
            }
        }
        state.fetching = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;

    use tokio::sync::Notify;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn readers_that_arrive_during_a_fetch_share_the_next_one() {
        let readers = Arc::new(ReadIndexes::default());
        let fetches = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let fetch = |fetches: Arc<AtomicU64>, release: Arc<Notify>| async move {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            release.notified().await;
            Ok(n * 100)
        };
        // The first reader fetches, and holds the fetch until released.
        let first = tokio::spawn({
            let (readers, fetches, release) = (readers.clone(), fetches.clone(), release.clone());
            async move { readers.get(WAIT, || fetch(fetches, release)).await }
        });
        while fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Ten more arrive while it runs: none may use its result.
        let later: Vec<_> = (0..10)
            .map(|_| {
                let (readers, fetches, release) =
                    (readers.clone(), fetches.clone(), release.clone());
                tokio::spawn(async move { readers.get(WAIT, || fetch(fetches, release)).await })
            })
            .collect();
        while readers.state().waiting.len() < 10 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 100);
        while fetches.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        for reader in later {
            assert_eq!(reader.await.unwrap().unwrap(), 200);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert!(!readers.state().fetching);
    }

    #[tokio::test]
    async fn a_reader_that_gives_up_while_fetching_passes_the_turn_on() {
        let readers = Arc::new(ReadIndexes::default());
        let stuck = tokio::spawn({
            let readers = readers.clone();
            async move {
                readers
                    .get(WAIT, std::future::pending::<Result<u64, NodeError>>)
                    .await
            }
        });
        while !readers.state().fetching {
            tokio::task::yield_now().await;
        }
        let waiter = tokio::spawn({
            let readers = readers.clone();
            async move { readers.get(WAIT, || async { Ok(7) }).await }
        });
        while readers.state().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        stuck.abort();
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        assert!(!readers.state().fetching);
    }

    #[tokio::test]
    async fn readers_served_by_an_abandoned_fetch_wait_for_the_next() {
        let readers = Arc::new(ReadIndexes::default());
        let release = Arc::new(Notify::new());
        let first = tokio::spawn({
            let (readers, release) = (readers.clone(), release.clone());
            async move {
                readers
                    .get(WAIT, || async move {
                        release.notified().await;
                        Ok(1)
                    })
                    .await
            }
        });
        while !readers.state().fetching {
            tokio::task::yield_now().await;
        }
        let stuck = tokio::spawn({
            let readers = readers.clone();
            async move {
                readers
                    .get(WAIT, std::future::pending::<Result<u64, NodeError>>)
                    .await
            }
        });
        while readers.state().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        let served = tokio::spawn({
            let readers = readers.clone();
            async move { readers.get(WAIT, || async { Ok(9) }).await }
        });
        while readers.state().waiting.len() < 2 {
            tokio::task::yield_now().await;
        }
        // The stuck reader gets the turn and takes the last one to serve.
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        while !readers.state().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        stuck.abort();
        assert_eq!(served.await.unwrap().unwrap(), 9);
        assert!(!readers.state().fetching);
    }

    #[tokio::test]
    async fn a_failed_fetch_fails_its_readers_and_the_next_one_runs() {
        let readers = ReadIndexes::default();
        let result = readers
            .get(WAIT, || async {
                Err(NodeError::Unavailable("no leader".into()))
            })
            .await;
        assert!(matches!(result, Err(NodeError::Unavailable(_))));
        assert_eq!(readers.get(WAIT, || async { Ok(3) }).await.unwrap(), 3);
    }
}
