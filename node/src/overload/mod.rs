//! Overload protection (seed 000, "Mitigation Strategies"): every client
//! request is admitted or shed by [`shed::decide`] against the sampled CPU
//! and memory and its queue's state, then waits in a bounded per-operation
//! queue for a worker. A shed request gets RESOURCE_EXHAUSTED with a
//! retry-after hint and has had no effect.

pub mod cpu;
pub mod queue;
pub mod shed;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tonic::Status;
use tonic::metadata::MetadataValue;

use self::cpu::Gauges;
use self::queue::NotRun;
use self::queue::QueueConfig;
use self::queue::WorkQueue;
use self::shed::Load;
use self::shed::Op;
use self::shed::ShedPolicy;
use self::shed::ShedReason;
use crate::client::RETRY_AFTER_METADATA;
use crate::config::OverloadConfig;
use crate::metrics;

/// The shortest retry-after hint: retrying sooner only adds load.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(50);
/// The hint when CPU is the reason: CPU is sampled this slowly.
const CPU_RETRY_AFTER: Duration = Duration::from_millis(500);

pub struct Overload {
    policy: ShedPolicy,
    gauges: Arc<Gauges>,
    uploads: WorkQueue,
    downloads: WorkQueue,
    sampler: tokio::task::JoinHandle<()>,
}

impl Drop for Overload {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl Overload {
    /// Starts the resource sampler and both worker pools.
    pub fn start(config: &OverloadConfig) -> Self {
        let gauges = Arc::new(Gauges::default());
        let source = cpu::Source::new(
            &config.cgroup_dir,
            std::path::Path::new("/proc"),
            config.cpu_fallback,
        );
        let mut sampler = cpu::Sampler::new(source);
        sampler.sample(&gauges);
        let sampler = sampler.spawn(gauges.clone(), Duration::from_millis(config.cpu_sample_ms));
        let idle_timeout = Duration::from_secs(2);
        let delay_target = config
            .shed_enabled
            .then(|| Duration::from_millis(config.queue_delay_target_ms));
        let delay_interval = Duration::from_millis(config.queue_delay_interval_ms);
        Self {
            policy: config.policy(),
            gauges,
            uploads: WorkQueue::new(
                "upload",
                QueueConfig {
                    capacity: config.upload_queue_capacity,
                    min_workers: config.upload_workers,
                    max_workers: config.upload_workers,
                    idle_timeout,
                    delay_target,
                    delay_interval,
                },
            ),
            downloads: WorkQueue::new(
                "download",
                QueueConfig {
                    capacity: config.download_queue_capacity,
                    min_workers: config.download_workers_min,
                    max_workers: config.download_workers_max,
                    idle_timeout,
                    delay_target,
                    delay_interval,
                },
            ),
            sampler,
        }
    }

    /// Admits `job` for `op` or sheds it, then runs it through the op's
    /// queue. `deadline` is the caller's remaining time, when it set one.
    pub async fn run<T, F>(&self, op: Op, deadline: Option<Duration>, job: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let queue = match op {
            Op::Upload => &self.uploads,
            Op::Download => &self.downloads,
        };
        let load = Load {
            cpu_percent: self.gauges.cpu_percent(),
            queue_len: queue.depth(),
            queue_capacity: queue.capacity(),
            expected_wait: queue.expected_wait(),
            service_time: queue.service_time(),
            time_left: deadline,
            memory_available_bytes: self.gauges.memory_available(),
        };
        if let Err(reason) = shed::decide(&self.policy, op, &load, rand::random::<f64>()) {
            return Err(shed_status(op, reason, &load));
        }
        let deadline_at = deadline.map(|d| Instant::now() + d);
        match queue.run(deadline_at, job).await {
            Ok(result) => result,
            Err(NotRun::Expired) => Err(shed_status(op, ShedReason::Deadline, &load)),
            Err(NotRun::Overdue) => Err(shed_status(op, ShedReason::QueueDelay, &load)),
            Err(NotRun::Closed) => Err(Status::unavailable("the node is shutting down")),
        }
    }
}

/// RESOURCE_EXHAUSTED with a retry-after hint; counts the shed.
fn shed_status(op: Op, reason: ShedReason, load: &Load) -> Status {
    metrics::observe_shed(op.label(), reason.label());
    let retry_after = match reason {
        ShedReason::CpuPriority | ShedReason::CpuProbabilistic => CPU_RETRY_AFTER,
        _ => (load.expected_wait + load.service_time).max(MIN_RETRY_AFTER),
    };
    let mut status = Status::resource_exhausted(format!(
        "{} shed ({}): cpu {:.0} %, queue {}/{}, expected wait {} ms; retry after {} ms",
        op.label(),
        reason.label(),
        load.cpu_percent,
        load.queue_len,
        load.queue_capacity,
        load.expected_wait.as_millis(),
        retry_after.as_millis()
    ));
    if let Ok(value) = MetadataValue::try_from(retry_after.as_millis().to_string()) {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}
