//! `recipestore-operator`: runs the RecipeStore controller with metrics,
//! health checks, structured logs and Lease-based leader election.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use prometheus::Registry;
use recipestore_operator::admin::GrpcAdmin;
use recipestore_operator::controller::{self, Context};
use recipestore_operator::http::Readiness;
use recipestore_operator::integrations::Integrations;
use recipestore_operator::leader::{self, LeaseConfig};
use recipestore_operator::membership::Policy;
use recipestore_operator::metrics::Metrics;
use recipestore_operator::preflight::{self, SelfReport};
use recipestore_operator::telemetry::{self, LogFormat};
use recipestore_operator::{FIELD_MANAGER, http};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(version, about = "Kubernetes operator for RecipeStore clusters")]
struct Args {
    /// Address of the HTTP server (`/metrics`, `/healthz`).
    #[arg(
        long,
        env = "RECIPESTORE_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "RECIPESTORE_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Reconcile only while holding the leader Lease (turn off for a single local replica).
    #[arg(long, env = "RECIPESTORE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "RECIPESTORE_OPERATOR_LEASE_NAME",
        default_value = "recipestore-operator"
    )]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease and in Events (the operator's pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease holder may go without renewing.
    #[arg(
        long,
        env = "RECIPESTORE_OPERATOR_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    lease_duration_seconds: u64,
    /// Watch only this namespace (empty: every namespace).
    #[arg(long, env = "RECIPESTORE_OPERATOR_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Learners this many entries behind the leader, or fewer, count as caught up.
    #[arg(long, env = "RECIPESTORE_OPERATOR_MAX_CATCH_UP_LAG", default_value_t = Policy::default().max_catch_up_lag)]
    max_catch_up_lag: u64,
}

/// Completes at the first SIGTERM or SIGINT. Registered before anything
/// else, so a stop request is never missed, and shared by every phase.
fn shutdown_signal() -> anyhow::Result<Shared<BoxFuture<'static, ()>>> {
    let mut terminate = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received; shutting down"),
            _ = interrupt.recv() => info!("SIGINT received; shutting down"),
        }
    }
    .boxed()
    .shared())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let shutdown = shutdown_signal()?;

    let registry = Registry::new();
    let metrics = Metrics::register(&registry).context("failed to register metrics")?;
    let readiness = Arc::new(Readiness::not_yet("checking the RecipeStore CRD"));
    let listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.http_addr))?;
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(http::serve(listener, registry, readiness.clone(), async {
        let _ = http_stopped.await;
    }));
    info!(addr = %args.http_addr, "serving /metrics, /healthz and /readyz");

    let outcome = operate(&args, metrics, &readiness, shutdown).await;

    let _ = stop_http.send(());
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => error!(%error, "HTTP server failed"),
        Err(error) => error!(%error, "HTTP server task failed"),
    }
    outcome
}

/// Checks the CRD, takes the leader Lease and runs the controller until
/// `shutdown`, or until the Lease is lost.
async fn operate(
    args: &Args,
    metrics: Metrics,
    readiness: &Readiness,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("failed to create a Kubernetes client")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{FIELD_MANAGER}-{}", std::process::id()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity.clone()),
        },
    );
    let own_pod = args.identity.as_ref().map(|name| ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(name.clone()),
        namespace: Some(args.lease_namespace.clone()),
        ..ObjectReference::default()
    });
    // Until the controller runs there is nothing to finish: a stop request
    // ends each waiting phase at once.
    let report = SelfReport {
        recorder: recorder.clone(),
        pod: own_pod,
    };
    tokio::select! {
        () = preflight::wait_until_installed(&client, readiness, &report) => {}
        () = shutdown.clone() => return Ok(()),
    }

    let mut leadership = if args.leader_election {
        let config = LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration_seconds: args.lease_duration_seconds,
            grace_seconds: (args.lease_duration_seconds / 3).max(1),
        };
        info!(lease = %config.name, namespace = %config.namespace, %identity, "waiting for the leader Lease");
        let held = tokio::select! {
            held = leader::acquire(client.clone(), &config) => held.context("leader election failed")?,
            () = shutdown.clone() => return Ok(()),
        };
        info!("holding the leader Lease; starting the controller");
        Some(held)
    } else {
        None
    };
    metrics.set_leader(true);

    let integrations = Arc::new(Integrations::default());
    integrations.refresh(&client).await;
    tokio::spawn({
        let integrations = integrations.clone();
        let client = client.clone();
        async move { integrations.refresh_periodically(client).await }
    });
    let ctx = Arc::new(Context {
        recorder,
        client,
        metrics: metrics.clone(),
        admin: Arc::new(GrpcAdmin::default()),
        policy: Policy {
            max_catch_up_lag: args.max_catch_up_lag,
            ..Policy::default()
        },
        integrations,
    });

    let lost = async {
        match leadership.as_mut() {
            Some(held) => held.lost().await,
            None => std::future::pending().await,
        }
    };
    let watch_namespace = Some(args.watch_namespace.clone()).filter(|ns| !ns.is_empty());
    let outcome = tokio::select! {
        () = controller::run(ctx, watch_namespace, shutdown) => Ok(()),
        () = lost => {
            // Another replica may already reconcile: stop at once and let the
            // pod restart into a follower.
            error!("lost the leader Lease");
            Err(anyhow::anyhow!("lost the leader Lease"))
        }
    };
    metrics.set_leader(false);
    if let Some(held) = leadership {
        held.release().await;
    }
    outcome
}
