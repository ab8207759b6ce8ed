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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{self, Handle};

    use super::*;

    /// Merges a patch into a stored object the way the API server would for
    /// the fields a Lease has: objects merge, `null` removes.
    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    /// A one-object API server holding the Lease.
    async fn serve_lease(
        mut handle: Handle<Request<Body>, Response<Body>>,
        lease: Arc<Mutex<Option<Value>>>,
    ) {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut stored = lease.lock().unwrap();
            let reply = match method {
                Method::GET => stored.clone(),
                Method::POST => {
                    let mut created = body;
                    created["metadata"]["resourceVersion"] = json!("1");
                    *stored = Some(created);
                    stored.clone()
                }
                Method::PATCH => {
                    let mut object = stored.clone().unwrap_or_else(|| body.clone());
                    merge(&mut object, &body);
                    let version = object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("0")
                        .parse::<u64>()
                        .unwrap();
                    object["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                    *stored = Some(object);
                    stored.clone()
                }
                Method::DELETE => stored.take(),
                _ => None,
            };
            let response = match reply {
                Some(object) => {
                    Response::builder().body(Body::from(serde_json::to_vec(&object).unwrap()))
                }
                None => Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::from(
                        serde_json::to_vec(
                            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"}),
                        )
                        .unwrap(),
                    )),
            };
            send.send_response(response.unwrap());
        }
    }

    #[tokio::test]
    async fn acquires_a_free_lease_and_releases_it() {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let lease = Arc::new(Mutex::new(None));
        tokio::spawn(serve_lease(handle, lease.clone()));
        let client = Client::new(service, "ops");
        let config = LeaseConfig {
            namespace: "ops".to_owned(),
            name: "recipestore-operator".to_owned(),
            identity: "operator-a".to_owned(),
            duration_seconds: 15,
            grace_seconds: 5,
        };

        let leadership = tokio::time::timeout(Duration::from_secs(10), acquire(client, &config))
            .await
            .expect("a free lease is taken at once")
            .expect("lease acquired");
        let holder = |lease: &Mutex<Option<Value>>| {
            lease
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        };
        assert_eq!(holder(&lease).as_deref(), Some("operator-a"));

        tokio::time::timeout(Duration::from_secs(10), leadership.release())
            .await
            .expect("release finishes");
        assert_eq!(holder(&lease), None, "a released lease has no holder");
    }
}
