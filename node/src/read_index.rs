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
//! fetch was to serve wait for the next. A fetch also gives up at its
//! fetcher's deadline; the readers it served that have time left wait for
//! the next fetch rather than fail with it.

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
                // A fetch gives up at its own reader's deadline: a reader
                // with time left waits for the next one rather than fail
                // with it.
                Ok(Ok(Turn::Done(Err(
                    NodeError::DeadlineExceeded(_) | NodeError::Unavailable(_),
                )))) if tokio::time::Instant::now() < deadline => {}
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

    use recipestore_testkit::eventually;
    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// A reader on a task of its own, which fetches with `fetch` if the
    /// turn falls to it.
    fn reader<F, Fut>(readers: &Arc<ReadIndexes>, fetch: F) -> JoinHandle<Result<u64, NodeError>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, NodeError>> + Send + 'static,
    {
        let readers = readers.clone();
        tokio::spawn(async move { readers.get(WAIT, fetch).await })
    }

    /// A fetch that ends when `release` is notified, with `index`.
    async fn held(release: Arc<Notify>, index: u64) -> Result<u64, NodeError> {
        release.notified().await;
        Ok(index)
    }

    /// Lets the other tasks run until `done` holds, for at most [`WAIT`].
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        eventually(WAIT, what, || std::future::ready(done().then_some(()))).await
    }

    fn waiting(readers: &ReadIndexes) -> usize {
        readers.state().waiting.len()
    }

    /// A reader whose fetch, once it runs, answers `index` when the
    /// returned `Notify` is notified; returns once it is fetching.
    async fn fetching_until_released(
        readers: &Arc<ReadIndexes>,
        index: u64,
    ) -> (JoinHandle<Result<u64, NodeError>>, Arc<Notify>) {
        let release = Arc::new(Notify::new());
        let fetcher = reader(readers, {
            let release = release.clone();
            move || held(release, index)
        });
        until("a fetch", || readers.state().fetching).await;
        (fetcher, release)
    }

    /// A reader that fetches with `fetch` if the turn falls to it; returns
    /// once it is the `nth` reader waiting.
    async fn nth_waiting<F, Fut>(
        readers: &Arc<ReadIndexes>,
        nth: usize,
        fetch: F,
    ) -> JoinHandle<Result<u64, NodeError>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, NodeError>> + Send + 'static,
    {
        let waiter = reader(readers, fetch);
        until(&format!("{nth} waiting"), || waiting(readers) == nth).await;
        waiter
    }

    #[tokio::test]
    async fn readers_that_arrive_during_a_fetch_share_the_next_one() {
        let readers = Arc::new(ReadIndexes::default());
        let fetches = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let fetch = {
            let (fetches, release) = (fetches.clone(), release.clone());
            move || {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                held(release, n * 100)
            }
        };
        let first = reader(&readers, fetch.clone());
        until("the first fetch", || fetches.load(Ordering::SeqCst) == 1).await;
        // Ten more arrive while it runs: none may use its result.
        let later: Vec<_> = (0..10).map(|_| reader(&readers, fetch.clone())).collect();
        until("10 waiting", || waiting(&readers) == 10).await;
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 100);
        until("the second fetch", || fetches.load(Ordering::SeqCst) == 2).await;
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
        let stuck = reader(&readers, std::future::pending);
        until("a fetch", || readers.state().fetching).await;
        let waiter = nth_waiting(&readers, 1, || async { Ok(7) }).await;
        stuck.abort();
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        assert!(!readers.state().fetching);
    }

    #[tokio::test]
    async fn readers_served_by_an_abandoned_fetch_wait_for_the_next() {
        let readers = Arc::new(ReadIndexes::default());
        let (first, release) = fetching_until_released(&readers, 1).await;
        let stuck = nth_waiting(&readers, 1, std::future::pending).await;
        let served = nth_waiting(&readers, 2, || async { Ok(9) }).await;
        // The stuck reader gets the turn and takes the last one to serve.
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        until("0 waiting", || waiting(&readers) == 0).await;
        stuck.abort();
        assert_eq!(served.await.unwrap().unwrap(), 9);
        assert!(!readers.state().fetching);
    }

    #[tokio::test]
    async fn a_reader_with_time_left_outlasts_a_fetch_that_gave_up_sooner() {
        let readers = Arc::new(ReadIndexes::default());
        let (first, first_done) = fetching_until_released(&readers, 1).await;
        // The hasty reader waits first, so the next fetch falls to it, and
        // it gives up at its own deadline.
        let hasty_done = Arc::new(Notify::new());
        let hasty = nth_waiting(&readers, 1, {
            let release = hasty_done.clone();
            || async move {
                release.notified().await;
                Err(NodeError::DeadlineExceeded("no leader yet".into()))
            }
        })
        .await;
        let patient = nth_waiting(&readers, 2, || async { Ok(5) }).await;
        first_done.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        // The hasty reader's fetch took the patient one along.
        until("0 waiting", || waiting(&readers) == 0).await;
        hasty_done.notify_one();
        assert!(matches!(
            hasty.await.unwrap(),
            Err(NodeError::DeadlineExceeded(_))
        ));
        assert_eq!(patient.await.unwrap().unwrap(), 5);
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
