//! The HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process and
//! Raft are running) and `/readyz` (this node can serve reads: it knows a
//! leader and has applied close to the commit index it last heard).

use openraft::async_runtime::watch::WatchReceiver;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics;
use crate::node::Node;

pub async fn serve(
    node: Arc<Node>,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(node);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind the HTTP address {addr}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("HTTP server failed")
}

async fn metrics_text(State(node): State<Arc<Node>>) -> impl IntoResponse {
    node.recipes.publish_cache_size();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
}

async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match &node.raft.metrics().borrow_watched().running_state {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(fatal) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {fatal}\n"),
        ),
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let m = node.raft.metrics().borrow_watched().clone();
    let index = |l: &Option<crate::raft::typ::LogId>| l.as_ref().map_or(0, |l| l.index());
    let lag = index(&m.local_committed).saturating_sub(index(&m.last_applied));
    if m.running_state.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "raft stopped\n".to_string(),
        );
    }
    if m.current_leader.is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no known leader\n".to_string(),
        );
    }
    if lag > node.config.ready_max_apply_lag {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("applied index lags the commit index by {lag} entries\n"),
        );
    }
    (StatusCode::OK, "ready\n".to_string())
}
