//! Bounded work queues, each drained by a pool of workers. A request waits
//! in its queue until a worker takes it; the queue knows its depth and its
//! recent wait and service times, so the shedder can predict whether a
//! request would miss its deadline. A queue's pool may grow under a backlog
//! and shrink back when workers sit idle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::metrics;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A job waiting for a worker.
struct Queued {
    enqueued: Instant,
    /// When the caller stops waiting; a job taken after it is dropped.
    deadline: Option<Instant>,
    run: Job,
    /// Told when the job is dropped unrun because its deadline passed.
    expired: oneshot::Sender<()>,
}

/// How a queue is sized.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub capacity: usize,
    pub min_workers: usize,
    pub max_workers: usize,
    /// An idle worker above the minimum exits after this long.
    pub idle_timeout: Duration,
}

/// Why a submitted job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// Its deadline passed while it waited.
    Expired,
    /// The queue is shutting down.
    Closed,
}

struct Shared {
    name: &'static str,
    config: QueueConfig,
    receiver: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    depth: AtomicUsize,
    workers: AtomicUsize,
    busy: AtomicUsize,
    /// Smoothed service time of a job, in microseconds.
    service_us: Mutex<f64>,
}

/// A bounded queue with its worker pool.
#[derive(Clone)]
pub struct WorkQueue {
    sender: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

impl WorkQueue {
    /// Creates the queue and starts its minimum number of workers.
    pub fn new(name: &'static str, config: QueueConfig) -> Self {
        // The channel holds every admitted job; admission keeps it under capacity.
        let (sender, receiver) = mpsc::channel(config.capacity.max(1));
        let queue = Self {
            sender,
            shared: Arc::new(Shared {
                name,
                config,
                receiver: tokio::sync::Mutex::new(receiver),
                depth: AtomicUsize::new(0),
                workers: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                service_us: Mutex::new(1_000.0),
            }),
        };
        for _ in 0..config.min_workers.max(1) {
            queue.spawn_worker();
        }
        queue
    }

    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    pub fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.shared.config.capacity
    }

    pub fn workers(&self) -> usize {
        self.shared.workers.load(Ordering::Relaxed)
    }

    /// Recent time a worker spends on one job.
    pub fn service_time(&self) -> Duration {
        Duration::from_micros(
            *self
                .shared
                .service_us
                .lock()
                .unwrap_or_else(|e| e.into_inner()) as u64,
        )
    }

    /// Expected wait for a job submitted now: the jobs ahead of it, served
    /// in parallel by the current workers.
    pub fn expected_wait(&self) -> Duration {
        let workers = self.workers().max(1) as u32;
        let ahead = self.depth() as u32;
        self.service_time() * ahead / workers
    }

    /// Queues `job` and waits for its result. Sheds nothing itself: the
    /// caller has already admitted the job.
    pub async fn run<T, F>(&self, deadline: Option<Instant>, job: F) -> Result<T, NotRun>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (result_tx, result_rx) = oneshot::channel();
        let (expired_tx, expired_rx) = oneshot::channel();
        let queued = Queued {
            enqueued: Instant::now(),
            deadline,
            run: Box::pin(async move {
                let _ = result_tx.send(job.await);
            }),
            expired: expired_tx,
        };
        self.shared.depth.fetch_add(1, Ordering::Relaxed);
        metrics::observe_queue_depth(self.name(), self.depth());
        self.grow_if_backlogged();
        if self.sender.send(queued).await.is_err() {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(NotRun::Closed);
        }
        tokio::select! {
            // Only an explicit signal means the job expired (the sender is
            // dropped unused when the job runs). An expired job is dropped
            // right after the signal, which also closes `result_rx`: check
            // the signal first.
            biased;
            Ok(()) = expired_rx => Err(NotRun::Expired),
            result = result_rx => result.map_err(|_| NotRun::Closed),
        }
    }

    fn grow_if_backlogged(&self) {
        let shared = &self.shared;
        let workers = shared.workers.load(Ordering::Relaxed);
        let idle = workers.saturating_sub(shared.busy.load(Ordering::Relaxed));
        if shared.depth.load(Ordering::Relaxed) > idle && workers < shared.config.max_workers {
            self.spawn_worker();
        }
    }

    fn spawn_worker(&self) {
        let shared = self.shared.clone();
        let count = shared.workers.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::observe_queue_workers(shared.name, count);
        tokio::spawn(async move {
            loop {
                let next = {
                    let mut receiver = shared.receiver.lock().await;
                    tokio::time::timeout(shared.config.idle_timeout, receiver.recv()).await
                };
                let queued = match next {
                    Ok(Some(queued)) => queued,
                    Ok(None) => break,
                    Err(_idle) => {
                        // Leave only while above the minimum; the
                        // compare-exchange keeps two workers from both leaving.
                        let workers = shared.workers.load(Ordering::Relaxed);
                        if workers > shared.config.min_workers.max(1)
                            && shared
                                .workers
                                .compare_exchange(
                                    workers,
                                    workers - 1,
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                )
                                .is_ok()
                        {
                            metrics::observe_queue_workers(shared.name, workers - 1);
                            return;
                        }
                        continue;
                    }
                };
                let depth = shared.depth.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::observe_queue_depth(shared.name, depth);
                let waited = queued.enqueued.elapsed();
                metrics::observe_queue_wait(shared.name, waited);
                // Checked again after the queue: a job whose caller has
                // given up is not worth a worker's time.
                if queued.deadline.is_some_and(|d| Instant::now() >= d) {
                    let _ = queued.expired.send(());
                    continue;
                }
                shared.busy.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                queued.run.await;
                let took = started.elapsed().as_micros() as f64;
                {
                    let mut service = shared.service_us.lock().unwrap_or_else(|e| e.into_inner());
                    *service += 0.2 * (took - *service);
                }
                shared.busy.fetch_sub(1, Ordering::Relaxed);
            }
            let left = shared.workers.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::observe_queue_workers(shared.name, left);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capacity: usize, min: usize, max: usize) -> QueueConfig {
        QueueConfig {
            capacity,
            min_workers: min,
            max_workers: max,
            idle_timeout: Duration::from_millis(100),
        }
    }

    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_and_return_their_results() {
        let q = WorkQueue::new("test", config(8, 1, 2));
        assert_eq!(q.run(None, async { 6 * 7 }).await, Ok(42));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_grows_under_a_burst_and_shrinks_after() {
        let q = WorkQueue::new("burst", config(64, 1, 8));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut jobs = Vec::new();
        for _ in 0..16 {
            let (q, gate) = (q.clone(), gate.clone());
            jobs.push(tokio::spawn(async move {
                q.run(None, async move {
                    let _permit = gate.acquire().await;
                })
                .await
            }));
        }
        wait_for("the pool to grow to its maximum", || q.workers() == 8).await;
        gate.add_permits(16);
        for job in jobs {
            assert_eq!(job.await.unwrap(), Ok(()));
        }
        wait_for("idle workers to leave", || q.workers() == 1).await;
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_deadline_passed_in_the_queue_is_not_run() {
        let q = WorkQueue::new("deadline", config(8, 1, 1));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let blocker = {
            let (q, gate) = (q.clone(), gate.clone());
            tokio::spawn(async move {
                q.run(None, async move {
                    let _permit = gate.acquire().await;
                })
                .await
            })
        };
        wait_for("the single worker to be busy", || {
            q.shared.busy.load(Ordering::Relaxed) == 1
        })
        .await;
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let late = q.run(
            Some(Instant::now() + Duration::from_millis(20)),
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
            },
        );
        let releaser = async {
            // Release the worker only after the queued job's deadline.
            wait_for("the deadline to pass", || q.depth() == 1).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
            gate.add_permits(1);
        };
        let (result, ()) = tokio::join!(late, releaser);
        assert_eq!(result, Err(NotRun::Expired));
        assert_eq!(ran.load(Ordering::Relaxed), 0);
        assert_eq!(blocker.await.unwrap(), Ok(()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expected_wait_grows_with_depth() {
        let q = WorkQueue::new("wait", config(8, 1, 1));
        assert_eq!(q.expected_wait(), Duration::ZERO);
        q.shared.depth.store(4, Ordering::Relaxed);
        assert_eq!(q.expected_wait(), q.service_time() * 4);
    }
}
