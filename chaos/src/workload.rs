//! The workload: concurrent clients issuing random operations on a few keys
//! and recording every one of them (invocation and completion times, call,
//! outcome) for the checkers.
//!
//! A reply's status code decides what the outcome means, as the API
//! documents: UNAVAILABLE and RESOURCE_EXHAUSTED mean "not executed", so a
//! write with that answer is a definite failure; any other failure of a
//! write (UNKNOWN, DEADLINE_EXCEEDED, a broken connection...) may have taken
//! effect and is recorded as unknown. If a node broke that contract, the
//! checker would see an effect nobody accounted for.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_client::current_version;
use recipestore_protocol::pb::Consistency;
use tokio::sync::watch;
use tonic::Code;
use tonic::Status;

use crate::history::Call;
use crate::history::ListEntry;
use crate::history::Op;
use crate::history::Outcome;

/// How long a client waits after a definite failure before its next call.
const FAILURE_PAUSE: Duration = Duration::from_millis(20);

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients: u32,
    pub keys: usize,
    /// Deadline of each call.
    pub timeout: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            clients: 10,
            keys: 5,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The operations recorded so far, on a clock shared by every client.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            ops: Arc::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Runs `call` and records it with the outcome `interpret` makes of it.
    pub async fn record<T>(
        &self,
        client: u32,
        call: Call,
        run: impl Future<Output = Result<T, Status>>,
        interpret: impl FnOnce(Result<T, Status>) -> Outcome,
    ) -> Outcome {
        let invoke_ns = self.now_ns();
        let outcome = interpret(run.await);
        let op = Op {
            client,
            invoke_ns,
            complete_ns: Some(self.now_ns()),
            call,
            outcome: outcome.clone(),
        };
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        outcome
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The name of key `i` in a run's key space.
pub fn key_name(i: usize) -> String {
    format!("chaos/k{i}")
}

/// A client as the workload uses it: few retries, no self-throttling (the
/// checker wants to see every answer), a short deadline.
pub fn workload_client(endpoints: &[String], timeout: Duration) -> anyhow::Result<Client> {
    let policy = RetryPolicy {
        max_attempts: 3,
        throttle_ratio: None,
        ..RetryPolicy::default()
    };
    Client::with_policy(endpoints, policy, timeout)
}

/// What a failed write means: not executed, or maybe executed.
fn write_failure(status: &Status) -> Outcome {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::InvalidArgument => Outcome::Failed {
            reason: format!("{:?}: {}", status.code(), status.message()),
        },
        Code::FailedPrecondition => Outcome::VersionMismatch {
            current: current_version(status).filter(|v| *v > 0),
        },
        _ => Outcome::Unknown {
            reason: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}

fn read_failure(status: &Status) -> Outcome {
    match status.code() {
        Code::NotFound => Outcome::Absent,
        _ => Outcome::Failed {
            reason: format!("{:?}: {}", status.code(), status.message()),
        },
    }
}

/// One client: issues random operations until `stop` turns true.
pub async fn run_client(
    id: u32,
    endpoints: Vec<String>,
    config: WorkloadConfig,
    seed: u64,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = workload_client(&endpoints, config.timeout)?;
    let mut rng = StdRng::seed_from_u64(seed);
    // Per key: the version this client last saw it at (0: absent), for
    // conditions; and the highest version it has seen, which a LOCAL read
    // passes as `min_version` so that it never goes back in time (a key
    // seen absent may have been deleted at any later index).
    let mut current = vec![0u64; config.keys];
    let mut seen = vec![0u64; config.keys];
    let mut sequence = 0u64;
    while !*stop.borrow_and_update() {
        let k = rng.random_range(0..config.keys);
        let key = key_name(k);
        let dice = rng.random_range(0..100);
        sequence += 1;
        let outcome = match dice {
            0..40 => {
                let value = format!("c{id}-{sequence}");
                let if_version = (dice >= 25).then_some(current[k]);
                let call = Call::Put {
                    key: key.clone(),
                    value: value.clone(),
                    if_version,
                };
                let run = client.upload(&key, value.into_bytes(), if_version);
                recorder
                    .record(id, call, run, |r| match r {
                        Ok(reply) => Outcome::Written {
                            version: reply.version,
                        },
                        Err(status) => write_failure(&status),
                    })
                    .await
            }
            40..50 => {
                let if_version = (dice >= 45).then_some(current[k]);
                let call = Call::Delete {
                    key: key.clone(),
                    if_version,
                };
                let run = client.delete(&key, if_version);
                recorder
                    .record(id, call, run, |r| match r {
                        Ok(reply) => Outcome::Deleted {
                            version: reply.version,
                        },
                        Err(status) if status.code() == Code::NotFound => Outcome::NotFound,
                        Err(status) => write_failure(&status),
                    })
                    .await
            }
            50..80 => {
                let call = Call::Get { key: key.clone() };
                let run = client.download(&key, Consistency::Linearizable, None);
                recorder.record(id, call, run, found).await
            }
            80..90 => {
                let min_version = seen[k];
                let call = Call::LocalRead {
                    key: key.clone(),
                    min_version,
                };
                let run = client.download(&key, Consistency::Local, Some(min_version));
                recorder.record(id, call, run, found).await
            }
            _ => {
                let prefix = "chaos/".to_string();
                let call = Call::List {
                    prefix: prefix.clone(),
                };
                let run = client.list(&prefix, 1000, "", Consistency::Linearizable);
                recorder
                    .record(id, call, run, |r| match r {
                        Ok(page) => Outcome::Listed {
                            entries: page
                                .recipes
                                .into_iter()
                                .map(|r| ListEntry {
                                    key: r.name,
                                    version: r.version,
                                })
                                .collect(),
                        },
                        Err(status) => read_failure(&status),
                    })
                    .await
            }
        };
        match outcome {
            Outcome::Written { version } | Outcome::Found { version, .. } => {
                current[k] = version;
                seen[k] = seen[k].max(version);
            }
            Outcome::Deleted { version } => {
                current[k] = 0;
                seen[k] = seen[k].max(version);
            }
            Outcome::VersionMismatch { current: found } => {
                current[k] = found.unwrap_or(0);
                seen[k] = seen[k].max(current[k]);
            }
            Outcome::Absent | Outcome::NotFound => current[k] = 0,
            // A node that is down answers at once: pace the retries.
            Outcome::Failed { .. } => tokio::time::sleep(FAILURE_PAUSE).await,
            _ => {}
        }
    }
    Ok(())
}

/// The outcome of a download.
pub fn found(result: Result<recipestore_protocol::pb::DownloadResponse, Status>) -> Outcome {
    match result {
        Ok(reply) => Outcome::Found {
            value: String::from_utf8_lossy(&reply.content).into_owned(),
            version: reply.version,
        },
        Err(status) => read_failure(&status),
    }
}
