//! The load generator. Open loop: requests leave on a schedule whatever the
//! replies do, so an overloaded server sees real overload, and latency is
//! measured from the scheduled send time (no coordinated omission). Closed
//! loop: each client sends its next request when the last one returns, to
//! find the most a cluster serves.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use rand::SeedableRng;
use rand::rngs::StdRng;
use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_client::is_throttled;
use recipestore_protocol::pb::Consistency;
use tonic::Code;

use super::etcd::EtcdTarget;
use super::report::Outcome;
use super::report::Recorder;
use super::workload::Mix;
use super::workload::Op;
use super::workload::OpKind;
use super::workload::Schedule;

/// A system under test.
pub enum Target {
    /// RecipeStore through the client library, one client per connection slot.
    Store {
        clients: Vec<Client>,
        consistency: Consistency,
    },
    Etcd(EtcdTarget),
}

impl Target {
    /// RecipeStore with `connections` independent clients, each starting its
    /// round-robin at a different endpoint.
    pub fn store(
        endpoints: &[String],
        connections: usize,
        policy: RetryPolicy,
        deadline: Duration,
        consistency: Consistency,
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let clients = (0..connections.max(1))
            .map(|i| {
                let mut rotated = endpoints.to_vec();
                rotated.rotate_left(i % endpoints.len().max(1));
                Client::with_tls(&rotated, policy.clone(), deadline, tls.cloned())
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Target::Store {
            clients,
            consistency,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Store { .. } => "recipestore",
            Target::Etcd(_) => "etcd",
        }
    }

    /// Sends `op` on behalf of `client`.
    pub async fn execute(&self, client: usize, op: Op) -> Outcome {
        match self {
            Target::Store {
                clients,
                consistency,
            } => {
                let c = &clients[client % clients.len()];
                let result = match op.kind {
                    OpKind::Upload => c.upload(&op.key, op.value, None).await.map(|_| ()),
                    OpKind::Download => c.download(&op.key, *consistency, None).await.map(|_| ()),
                };
                match result {
                    Ok(()) => Outcome::Ok,
                    Err(status) if is_throttled(&status) => Outcome::Throttled,
                    Err(status) => classify(status.code()),
                }
            }
            Target::Etcd(etcd) => etcd.execute(client, op).await,
        }
    }
}

/// The outcome a gRPC status code counts as.
pub fn classify(code: Code) -> Outcome {
    match code {
        Code::Ok => Outcome::Ok,
        Code::ResourceExhausted => Outcome::Shed,
        Code::DeadlineExceeded | Code::Cancelled => Outcome::Deadline,
        _ => Outcome::Error,
    }
}

/// How requests are paced.
#[derive(Debug, Clone)]
pub enum Pacing {
    /// Requests leave at the schedule's rate, spread round-robin over clients.
    Open(Schedule),
    /// Each client keeps one request in flight.
    Closed,
}

/// One run of the generator.
pub struct Run {
    pub pacing: Pacing,
    pub mix: Mix,
    pub clients: usize,
    pub duration: Duration,
    pub deadline: Duration,
    /// Open loop: requests in flight beyond this are counted as dropped.
    pub max_in_flight: usize,
    pub seed: u64,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    pub label: String,
}

impl Run {
    pub async fn execute(&self, target: Arc<Target>) -> Recorder {
        let recorder = Arc::new(Mutex::new(Recorder::new(self.deadline)));
        let started = Instant::now();
        let bar = self.progress_bar(started, recorder.clone());
        match &self.pacing {
            Pacing::Open(schedule) => self.open(schedule, target, recorder.clone(), started).await,
            Pacing::Closed => self.closed(target, recorder.clone(), started).await,
        }
        if let Some((bar, ticker)) = bar {
            ticker.abort();
            bar.finish_and_clear();
        }
        let recorder = recorder.lock().unwrap_or_else(|e| e.into_inner());
        recorder.clone()
    }

    async fn open(
        &self,
        schedule: &Schedule,
        target: Arc<Target>,
        recorder: Arc<Mutex<Recorder>>,
        started: Instant,
    ) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut times = schedule.send_times(self.duration.as_secs_f64()).peekable();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0usize;
        let mut tasks = tokio::task::JoinSet::new();
        while times.peek().is_some() {
            tick.tick().await;
            let now = started.elapsed().as_secs_f64();
            while let Some(t) = times.next_if(|t| *t <= now) {
                let scheduled = Duration::from_secs_f64(t);
                let client = seq % self.clients;
                seq += 1;
                let op = self.mix.op(client, &mut rng);
                lock(&recorder).offered(scheduled);
                if in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
                    lock(&recorder).record(op.kind, scheduled, scheduled, Outcome::Dropped);
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (target, recorder, in_flight) =
                    (target.clone(), recorder.clone(), in_flight.clone());
                // The deadline runs from the scheduled time: a request the
                // generator sends late has less of it left.
                let remaining = self.deadline.saturating_sub(started.elapsed() - scheduled);
                tasks.spawn(async move {
                    let kind = op.kind;
                    let outcome = timed(&target, client, op, remaining).await;
                    lock(&recorder).record(kind, scheduled, started.elapsed(), outcome);
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            // Reap finished tasks so the set does not grow with the run.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn closed(&self, target: Arc<Target>, recorder: Arc<Mutex<Recorder>>, started: Instant) {
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..self.clients {
            let (target, recorder, mix) = (target.clone(), recorder.clone(), self.mix.clone());
            let (duration, deadline) = (self.duration, self.deadline);
            let seed = self.seed.wrapping_add(client as u64 * 7919);
            tasks.spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                while started.elapsed() < duration {
                    let op = mix.op(client, &mut rng);
                    let kind = op.kind;
                    let sent = started.elapsed();
                    lock(&recorder).offered(sent);
                    let outcome = timed(&target, client, op, deadline).await;
                    lock(&recorder).record(kind, sent, started.elapsed(), outcome);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn progress_bar(
        &self,
        started: Instant,
        recorder: Arc<Mutex<Recorder>>,
    ) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
        use std::io::IsTerminal;
        if !self.progress || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(
            Some(self.duration.as_millis() as u64),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(self.label.clone());
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let total = lock(&recorder).total();
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!(
                        "{:.0} good/s, {} shed, {} past deadline, {} errors",
                        total.good as f64 / secs,
                        total.shed,
                        total.deadline + total.late,
                        total.errors + total.dropped
                    ));
                }
            })
        };
        Some((bar, ticker))
    }
}

fn lock(recorder: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `op`, giving up (and dropping the call) after `deadline`.
async fn timed(target: &Target, client: usize, op: Op, deadline: Duration) -> Outcome {
    if deadline.is_zero() {
        return Outcome::Deadline;
    }
    tokio::time::timeout(deadline, target.execute(client, op))
        .await
        .unwrap_or(Outcome::Deadline)
}

/// How long setup keeps retrying one upload.
const SETUP_PATIENCE: Duration = Duration::from_secs(60);

/// Uploads `ops` with `concurrency` in flight and the library's default
/// retries; the setup of the read and seed workloads. Returns the upload
/// latency recorder.
pub async fn preload(
    target: &Arc<Target>,
    ops: Vec<(usize, Op)>,
    concurrency: usize,
    deadline: Duration,
) -> anyhow::Result<Recorder> {
    let recorder = Arc::new(Mutex::new(Recorder::new(deadline)));
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(ops));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, queue, recorder) = (target.clone(), queue.clone(), recorder.clone());
        tasks.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((client, op)) = next else {
                    return anyhow::Ok(());
                };
                let mut attempt = 0;
                let first = Instant::now();
                loop {
                    let sent = started.elapsed();
                    let outcome = timed(&target, client, op.clone(), deadline).await;
                    lock(&recorder).record(op.kind, sent, started.elapsed(), outcome);
                    if outcome == Outcome::Ok {
                        break;
                    }
                    attempt += 1;
                    // A busy cluster may shed uploads for a while: keep
                    // trying for up to a minute.
                    anyhow::ensure!(
                        first.elapsed() < SETUP_PATIENCE,
                        "cannot upload {} during setup within {SETUP_PATIENCE:?}: {outcome:?}",
                        op.key
                    );
                    tokio::time::sleep(RetryPolicy::default().backoff(attempt)).await;
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let recorder = lock(&recorder).clone();
    Ok(recorder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_outcomes() {
        assert_eq!(classify(Code::ResourceExhausted), Outcome::Shed);
        assert_eq!(classify(Code::DeadlineExceeded), Outcome::Deadline);
        assert_eq!(classify(Code::Cancelled), Outcome::Deadline);
        assert_eq!(classify(Code::Unavailable), Outcome::Error);
        assert_eq!(classify(Code::NotFound), Outcome::Error);
        assert_eq!(classify(Code::Ok), Outcome::Ok);
    }
}
