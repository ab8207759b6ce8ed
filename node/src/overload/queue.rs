//! Bounded work queues, each drained by a pool of workers. A request waits
//! in its queue until a worker takes it; the queue knows its depth and its
//! recent wait and service times, so the shedder can predict whether a
//! request would miss its deadline. A queue's pool may grow under a backlog
//! and shrink back when workers sit idle.
//!
//! Queue delay is controlled as in CoDel: a queue that has not been empty
//! for a whole interval is a standing queue, not a burst, and a job that
//! then waited longer than the target is dropped when dequeued. Overload
//! thus shows as time spent waiting, whatever its cause (CPU, a slow
//! leader, a saturated disk), and the jobs that do run are fresh.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::metrics;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A job waiting for a worker.
struct Queued {
    enqueued: Instant,
    /// When the caller stops waiting; a job taken after it is dropped.
    deadline: Option<Instant>,
    run: Job,
    /// Told why, when the job is dropped unrun.
    dropped: oneshot::Sender<NotRun>,
}

/// How a queue is sized.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub capacity: usize,
    pub min_workers: usize,
    pub max_workers: usize,
    /// An idle worker above the minimum exits after this long.
    pub idle_timeout: Duration,
    /// Drop jobs that waited longer than this in a standing queue; `None`
    /// lets jobs wait until their own deadline.
    pub delay_target: Option<Duration>,
    /// A queue not empty for this long is standing.
    pub delay_interval: Duration,
}

/// Why a submitted job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// Its deadline passed while it waited.
    Expired,
    /// It waited longer than the delay target in a standing queue.
    Overdue,
    /// The queue is shutting down.
    Closed,
}

struct Shared {
    name: &'static str,
    config: QueueConfig,
    /// Every worker waits on the channel at once (it is multi-consumer), so
    /// a burst of jobs wakes as many workers in one scheduling round. Behind
    /// a shared lock only the worker holding it could take a job, and a
    /// burst of k jobs needed k rounds of a saturated scheduler.
    receiver: async_channel::Receiver<Queued>,
    depth: AtomicUsize,
    workers: AtomicUsize,
    busy: AtomicUsize,
    /// Smoothed service time of a job, in microseconds.
    service_us: Mutex<f64>,
    /// The reference point of `last_empty_us`.
    epoch: Instant,
    /// When the queue was last seen empty, in microseconds since `epoch`.
    last_empty_us: AtomicU64,
    /// How long the job a worker took last had waited, in microseconds.
    last_wait_us: AtomicU64,
}

impl Shared {
    fn mark_empty(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.last_empty_us.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether the queue has held jobs for the whole delay interval.
    fn standing(&self, now: Instant) -> bool {
        let last_empty =
            self.epoch + Duration::from_micros(self.last_empty_us.load(Ordering::Relaxed));
        now.saturating_duration_since(last_empty) >= self.config.delay_interval
    }

    /// Whether the queue is over its delay target: standing, and its last
    /// job waited longer than the target. Never without a target.
    fn over_target(&self, now: Instant) -> bool {
        self.config.delay_target.is_some_and(|target| {
            Duration::from_micros(self.last_wait_us.load(Ordering::Relaxed)) > target
                && self.standing(now)
        })
    }

    /// Why a dequeued job should not run, if it should not: a job whose
    /// caller has given up, or that has outwaited a standing queue's
    /// target, is not worth a worker's time.
    fn drop_reason(&self, queued: &Queued, now: Instant, waited: Duration) -> Option<NotRun> {
        if queued.deadline.is_some_and(|d| now >= d) {
            return Some(NotRun::Expired);
        }
        let target = self.config.delay_target?;
        (waited > target && self.standing(now)).then_some(NotRun::Overdue)
    }
}

/// A bounded queue with its worker pool.
#[derive(Clone)]
pub struct WorkQueue {
    sender: async_channel::Sender<Queued>,
    shared: Arc<Shared>,
}

impl WorkQueue {
    /// Creates the queue and starts its minimum number of workers.
    pub fn new(name: &'static str, config: QueueConfig) -> Self {
        // The channel holds every admitted job; admission keeps it under capacity.
        let (sender, receiver) = async_channel::bounded(config.capacity.max(1));
        let queue = Self {
            sender,
            shared: Arc::new(Shared {
                name,
                config,
                receiver,
                depth: AtomicUsize::new(0),
                workers: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                service_us: Mutex::new(1_000.0),
                epoch: Instant::now(),
                last_empty_us: AtomicU64::new(0),
                last_wait_us: AtomicU64::new(0),
            }),
        };
        for _ in 0..config.min_workers.max(1) {
            spawn_worker(&queue.shared);
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

    /// Whether jobs leave this queue later than its delay target while it
    /// stands: the node cannot keep its latency objective for them.
    pub fn over_delay_target(&self) -> bool {
        self.shared.over_target(Instant::now())
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
        let (dropped_tx, dropped_rx) = oneshot::channel();
        let queued = Queued {
            enqueued: Instant::now(),
            deadline,
            run: Box::pin(async move {
                let _ = result_tx.send(job.await);
            }),
            dropped: dropped_tx,
        };
        if self.shared.depth.fetch_add(1, Ordering::Relaxed) == 0 {
            self.shared.mark_empty();
        }
        metrics::observe_queue_depth(self.name(), self.depth());
        grow_if_backlogged(&self.shared);
        if self.sender.send(queued).await.is_err() {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(NotRun::Closed);
        }
        tokio::select! {
            // Only an explicit signal means the job was dropped unrun (the
            // sender is dropped unused when the job runs). The job is dropped
            // right after the signal, which also closes `result_rx`: check
            // the signal first.
            biased;
            Ok(why) = dropped_rx => Err(why),
            result = result_rx => result.map_err(|_| NotRun::Closed),
        }
    }
}

/// Adds a worker while more jobs wait than workers are idle. Checked when a
/// job arrives and again when a worker takes one, so a burst that arrived
/// faster than workers started still grows the pool.
fn grow_if_backlogged(shared: &Arc<Shared>) {
    let workers = shared.workers.load(Ordering::Relaxed);
    let idle = workers.saturating_sub(shared.busy.load(Ordering::Relaxed));
    // The compare-exchange keeps two concurrent checks from both adding
    // the last worker allowed.
    if shared.depth.load(Ordering::Relaxed) > idle
        && workers < shared.config.max_workers
        && shared
            .workers
            .compare_exchange(workers, workers + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        start_worker(shared, workers + 1);
    }
}

fn spawn_worker(shared: &Arc<Shared>) {
    let count = shared.workers.fetch_add(1, Ordering::Relaxed) + 1;
    start_worker(shared, count);
}

/// Starts a worker already counted in `shared.workers` (now `count`).
fn start_worker(shared: &Arc<Shared>, count: usize) {
    let shared = shared.clone();
    metrics::observe_queue_workers(shared.name, count);
    tokio::spawn(async move {
        loop {
            let next =
                tokio::time::timeout(shared.config.idle_timeout, shared.receiver.recv()).await;
            let queued = match next {
                Ok(Ok(queued)) => queued,
                // Every sender is gone: the queue is closed.
                Ok(Err(_closed)) => break,
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
            // Busy before the check: counted idle, this worker would hide
            // one waiting job from it, and with every worker then busy no
            // later check might come to add the missing worker.
            shared.busy.fetch_add(1, Ordering::Relaxed);
            grow_if_backlogged(&shared);
            metrics::observe_queue_depth(shared.name, depth);
            let now = Instant::now();
            let waited = now - queued.enqueued;
            metrics::observe_queue_wait(shared.name, waited);
            shared
                .last_wait_us
                .store(waited.as_micros() as u64, Ordering::Relaxed);
            let dropped = shared.drop_reason(&queued, now, waited);
            if depth == 0 {
                shared.mark_empty();
            }
            if let Some(why) = dropped {
                shared.busy.fetch_sub(1, Ordering::Relaxed);
                let _ = queued.dropped.send(why);
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capacity: usize, min: usize, max: usize) -> QueueConfig {
        QueueConfig {
            capacity,
            min_workers: min,
            max_workers: max,
            idle_timeout: Duration::from_millis(100),
            delay_target: None,
            delay_interval: Duration::from_millis(100),
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

    /// Keeps a one-worker queue's worker busy, queues behind it a job that
    /// counts its runs (with `deadline` from now, if any), and frees the
    /// worker after `held`: the queued job's fate and its run count.
    async fn queued_behind_a_busy_worker(
        q: &WorkQueue,
        deadline: Option<Duration>,
        held: Duration,
    ) -> (Result<(), NotRun>, usize) {
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
        let queued = q.run(deadline.map(|d| Instant::now() + d), async move {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let releaser = async {
            wait_for("the job to queue", || q.depth() == 1).await;
            // The queue's state depends on time passing: let it.
            tokio::time::sleep(held).await;
            gate.add_permits(1);
        };
        let (result, ()) = tokio::join!(queued, releaser);
        assert_eq!(blocker.await.unwrap(), Ok(()));
        (result, ran.load(Ordering::Relaxed))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_deadline_passed_in_the_queue_is_not_run() {
        let q = WorkQueue::new("deadline", config(8, 1, 1));
        let (result, runs) = queued_behind_a_busy_worker(
            &q,
            Some(Duration::from_millis(20)),
            Duration::from_millis(40),
        )
        .await;
        assert_eq!(result, Err(NotRun::Expired));
        assert_eq!(runs, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standing_queue_drops_jobs_that_waited_past_the_target() {
        let q = WorkQueue::new(
            "standing",
            QueueConfig {
                delay_target: Some(Duration::from_millis(10)),
                delay_interval: Duration::from_millis(30),
                ..config(8, 1, 1)
            },
        );
        let (result, runs) = queued_behind_a_busy_worker(&q, None, Duration::from_millis(80)).await;
        assert_eq!(result, Err(NotRun::Overdue));
        assert_eq!(runs, 0);
        // Once it has drained, the queue serves again.
        assert_eq!(q.run(None, async { 7 }).await, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_shorter_than_the_interval_waits_past_the_target() {
        let q = WorkQueue::new(
            "burst",
            QueueConfig {
                delay_target: Some(Duration::from_millis(10)),
                delay_interval: Duration::from_secs(30),
                ..config(8, 1, 1)
            },
        );
        let (result, runs) = queued_behind_a_busy_worker(&q, None, Duration::from_millis(80)).await;
        assert_eq!(result, Ok(()));
        assert_eq!(runs, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_standing_queue_whose_jobs_waited_past_the_target_is_over_it() {
        let q = WorkQueue::new(
            "objective",
            QueueConfig {
                delay_target: Some(Duration::from_millis(10)),
                delay_interval: Duration::from_millis(30),
                ..config(8, 1, 1)
            },
        );
        let shared = &q.shared;
        // Last seen empty at the epoch; 50 ms later it has stood 50 ms.
        let later = shared.epoch + Duration::from_millis(50);
        shared.last_wait_us.store(9_000, Ordering::Relaxed);
        assert!(!shared.over_target(later), "jobs leave within the target");
        shared.last_wait_us.store(11_000, Ordering::Relaxed);
        assert!(shared.over_target(later));
        let soon = shared.epoch + Duration::from_millis(20);
        assert!(!shared.over_target(soon), "a burst, not a standing queue");
        let without_target = WorkQueue::new("no target", config(8, 1, 1));
        without_target
            .shared
            .last_wait_us
            .store(u64::MAX, Ordering::Relaxed);
        assert!(!without_target.shared.over_target(later));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expected_wait_grows_with_depth() {
        let q = WorkQueue::new("wait", config(8, 1, 1));
        assert_eq!(q.expected_wait(), Duration::ZERO);
        q.shared.depth.store(4, Ordering::Relaxed);
        assert_eq!(q.expected_wait(), q.service_time() * 4);
    }
}
