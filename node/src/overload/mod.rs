//! Overload protection (seed 000, "Mitigation Strategies"): every client
//! request is admitted or shed by [`shed::decide`] against the sampled CPU
//! and memory and its queue's state, then waits in a bounded per-operation
//! queue for a worker. A shed request gets RESOURCE_EXHAUSTED with a
//! retry-after hint and has had no effect.

pub mod cpu;
pub mod queue;
pub mod recent;
pub mod shed;

use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use self::cpu::Gauges;
use self::queue::NotRun;
use self::queue::QueueConfig;
use self::queue::WorkQueue;
use self::recent::RecentRequests;
use self::shed::Load;
use self::shed::Op;
use self::shed::ShedPolicy;
use self::shed::ShedReason;
use recipestore_settings::NodeSettings;
use recipestore_settings::Shedding;

use crate::config::SamplingConfig;
use crate::error::NodeError;
use crate::metrics;

/// The shortest retry-after hint: retrying sooner only adds load.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(50);
/// The hint when CPU is the reason: CPU is sampled this slowly.
const CPU_RETRY_AFTER: Duration = Duration::from_millis(500);

pub struct Overload {
    /// The shedding settings and the policy made of them; replaced whole
    /// by [`Overload::reconfigure`].
    shedding: RwLock<(Shedding, ShedPolicy)>,
    gauges: Arc<Gauges>,
    uploads: WorkQueue,
    downloads: WorkQueue,
    /// Admitted and shed client requests of the last seconds.
    pub recent: RecentRequests,
    sampler: tokio::task::JoinHandle<()>,
}

impl Drop for Overload {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// How long a download worker above the minimum stays idle before it exits:
/// long enough to carry a pool through the gaps of a bursty load, short
/// enough to give the memory back soon after it.
const WORKER_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

impl Overload {
    /// Starts the resource sampler and both worker pools.
    pub fn start(settings: &NodeSettings, sampling: &SamplingConfig) -> Self {
        let gauges = Arc::new(Gauges::default());
        let source = cpu::Source::new(
            &sampling.cgroup_dir,
            std::path::Path::new("/proc"),
            sampling.cpu_fallback,
        );
        let mut sampler = cpu::Sampler::new(source);
        sampler.sample(&gauges);
        let sampler = sampler.spawn(
            gauges.clone(),
            Duration::from_millis(sampling.cpu_sample_ms),
        );
        let queues = &settings.queues;
        // Queue-delay shedding is part of shedding: off with it.
        let delay_target = |ms: u32| {
            settings
                .shedding
                .enabled
                .then(|| Duration::from_millis(u64::from(ms)))
        };
        let delay_interval = Duration::from_millis(u64::from(queues.delay_interval_ms));
        let count = |n: u32| n as usize;
        Self {
            shedding: RwLock::new((
                settings.shedding.clone(),
                ShedPolicy::from(&settings.shedding),
            )),
            gauges,
            uploads: WorkQueue::new(
                "upload",
                QueueConfig {
                    capacity: count(queues.upload_capacity),
                    min_workers: count(queues.upload_workers),
                    max_workers: count(queues.upload_workers),
                    idle_timeout: WORKER_IDLE_TIMEOUT,
                    delay_target: delay_target(queues.upload_delay_target_ms),
                    delay_interval,
                },
            ),
            downloads: WorkQueue::new(
                "download",
                QueueConfig {
                    capacity: count(queues.download_capacity),
                    min_workers: count(queues.download_workers_min),
                    max_workers: count(queues.download_workers_max),
                    idle_timeout: WORKER_IDLE_TIMEOUT,
                    delay_target: delay_target(queues.delay_target_ms),
                    delay_interval,
                },
            ),
            recent: RecentRequests::default(),
            sampler,
        }
    }

    /// Admits `job` for `op` or sheds it, then runs it through the op's
    /// queue. `deadline` is the caller's remaining time, when it set one.
    pub async fn run<T, F>(
        &self,
        op: Op,
        deadline: Option<Duration>,
        job: F,
    ) -> Result<T, NodeError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, NodeError>> + Send + 'static,
    {
        let queue = match op {
            Op::Upload => &self.uploads,
            Op::Download => &self.downloads,
        };
        let load = Load {
            cpu_percent: self.gauges.cpu_percent(),
            queue_len: queue.depth(),
            queue_capacity: queue.capacity(),
            over_delay_target: queue.over_delay_target(),
            expected_wait: queue.expected_wait(),
            service_time: queue.service_time(),
            time_left: deadline,
            memory_available_bytes: self.gauges.memory_available(),
        };
        let decided = {
            let shedding = self.shedding.read().unwrap_or_else(PoisonError::into_inner);
            shed::decide(&shedding.1, op, &load, rand::random::<f64>())
        };
        if let Err(reason) = decided {
            return Err(self.shed(op, reason, &load));
        }
        let deadline_at = deadline.map(|d| Instant::now() + d);
        match queue.run(deadline_at, job).await {
            Ok(result) => {
                self.recent.record(false);
                result
            }
            Err(NotRun::Expired) => Err(self.shed(op, ShedReason::Deadline, &load)),
            Err(NotRun::Overdue) => Err(self.shed(op, ShedReason::QueueDelay, &load)),
            Err(NotRun::Closed) => Err(NodeError::ShuttingDown),
        }
    }

    /// The shedding settings the node runs with.
    pub fn shedding(&self) -> Shedding {
        let shedding = self.shedding.read().unwrap_or_else(PoisonError::into_inner);
        shedding.0.clone()
    }

    /// Runs with `shedding` from now on, but for `enabled`, which also
    /// decides at start whether the queues shed by delay and so needs a
    /// restart. Answers whether anything changed.
    pub fn reconfigure(&self, shedding: &Shedding) -> bool {
        let mut current = self
            .shedding
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let next = Shedding {
            enabled: current.0.enabled,
            ..shedding.clone()
        };
        if next == current.0 {
            return false;
        }
        *current = (next.clone(), ShedPolicy::from(&next));
        true
    }

    /// A shed with its retry-after hint; counts it.
    fn shed(&self, op: Op, reason: ShedReason, load: &Load) -> NodeError {
        self.recent.record(true);
        metrics::observe_shed(op.label(), reason.label());
        let retry_after = match reason {
            ShedReason::CpuPriority | ShedReason::CpuProbabilistic => CPU_RETRY_AFTER,
            _ => (load.expected_wait + load.service_time).max(MIN_RETRY_AFTER),
        };
        NodeError::Shed {
            op,
            reason,
            load: format!(
                "cpu {:.0} %, queue {}/{}, expected wait {} ms",
                load.cpu_percent,
                load.queue_len,
                load.queue_capacity,
                load.expected_wait.as_millis()
            ),
            retry_after,
        }
    }
}
