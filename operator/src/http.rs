//! The operator's HTTP endpoint: `/metrics` for Prometheus, `/healthz`
//! (alive) and `/readyz` (its CRD is installed and current) for the kubelet.
//! It serves on every replica, leader or not.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// Whether the operator can do its work, and if not, why.
#[derive(Debug)]
pub struct Readiness(RwLock<Result<(), String>>);

impl Readiness {
    /// Not ready until told otherwise, for `reason`.
    pub fn not_yet(reason: &str) -> Self {
        Self(RwLock::new(Err(reason.to_owned())))
    }

    pub fn set(&self, state: Result<(), String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = state;
    }

    pub fn get(&self) -> Result<(), String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Clone)]
struct Shared {
    registry: Registry,
    readiness: Arc<Readiness>,
}

pub fn router(registry: Registry, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared {
            registry,
            readiness,
        })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&shared.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.readiness.get() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::Metrics;

    async fn get(registry: &Registry, path: &str) -> (StatusCode, String) {
        get_with(registry, Arc::new(Readiness::not_yet("starting")), path).await
    }

    async fn get_with(
        registry: &Registry,
        readiness: Arc<Readiness>,
        path: &str,
    ) -> (StatusCode, String) {
        let response = router(registry.clone(), readiness)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        assert_eq!(
            get(&Registry::new(), "/healthz").await,
            (StatusCode::OK, "ok".to_owned())
        );
    }

    #[tokio::test]
    async fn readyz_says_why_until_ready() {
        let readiness = Arc::new(Readiness::not_yet("the CRD is not installed"));
        let registry = Registry::new();
        assert_eq!(
            get_with(&registry, readiness.clone(), "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the CRD is not installed".to_owned()
            )
        );
        readiness.set(Ok(()));
        assert_eq!(
            get_with(&registry, readiness, "/readyz").await,
            (StatusCode::OK, "ok".to_owned())
        );
    }

    #[tokio::test]
    async fn metrics_exposes_operator_metrics_in_text_format() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        drop(metrics.reconcile_started());
        let (status, body) = get(&registry, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("recipestore_operator_reconciles_total 1"),
            "{body}"
        );
    }
}
