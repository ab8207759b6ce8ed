//! Leader election through a `coordination.k8s.io` Lease, so that two or more
//! operator replicas can run and exactly one reconciles.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica, usually the pod name.
    pub identity: String,
    /// A holder that has not renewed for this long loses the lease.
    pub duration_seconds: u64,
    /// Renew this long before expiry; also the clock skew tolerated between nodes.
    pub grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("failed to use the leader Lease")]
    Lease(#[from] LeaseManagerError),
    #[error("the Lease watcher stopped before this replica became leader")]
    WatcherStopped,
}

/// Held leadership. Dropping it (or [`Leadership::release`]) frees the lease.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: Client, config: &LeaseConfig) -> Result<Leadership, LeaderError> {
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration_seconds)
        .with_grace(config.grace_seconds)
        .build()
        .await?;
    let (mut state, task) = manager.watch().await;
    while !*state.borrow_and_update() {
        if state.changed().await.is_err() {
            // The manager's task ended: report why.
            return Err(match task.await {
                Ok(Err(error)) => LeaderError::Lease(error),
                _ => LeaderError::WatcherStopped,
            });
        }
    }
    Ok(Leadership { state, task })
}

impl Leadership {
    /// Completes when the lease is lost (or can no longer be renewed).
    pub async fn lost(&mut self) {
        loop {
            if self.state.changed().await.is_err() || !*self.state.borrow_and_update() {
                return;
            }
        }
    }

    /// Gives the lease up so that another replica takes over at once.
    pub async fn release(self) {
        // Closing the channel makes the manager release the lease and stop.
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "failed to release the leader lease"),
            Err(error) => tracing::warn!(%error, "lease task failed"),
        }
    }
}
