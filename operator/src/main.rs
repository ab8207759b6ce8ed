//! `recipestore-operator`: runs the RecipeStore controller with metrics,
//! health checks, structured logs and Lease-based leader election.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use prometheus::Registry;
use recipestore_operator::admin::GrpcAdmin;
use recipestore_operator::controller::{self, Context};
use recipestore_operator::integrations::Integrations;
use recipestore_operator::leader::{self, LeaseConfig};
use recipestore_operator::membership::Policy;
use recipestore_operator::metrics::Metrics;
use recipestore_operator::telemetry::{self, LogFormat};
use recipestore_operator::{FIELD_MANAGER, http};
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);

    let registry = Registry::new();
    let metrics = Metrics::register(&registry).context("failed to register metrics")?;
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(http::serve(args.http_addr, registry, async {
        let _ = http_stopped.await;
    }));
    info!(addr = %args.http_addr, "serving /metrics and /healthz");

    let client = Client::try_default()
        .await
        .context("failed to create a Kubernetes client")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{FIELD_MANAGER}-{}", std::process::id()));

    let mut leadership = if args.leader_election {
        let config = LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration_seconds: args.lease_duration_seconds,
            grace_seconds: (args.lease_duration_seconds / 3).max(1),
        };
        info!(lease = %config.name, namespace = %config.namespace, %identity, "waiting for the leader Lease");
        let held = leader::acquire(client.clone(), &config)
            .await
            .context("leader election failed")?;
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
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(identity),
            },
        ),
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
    let outcome = tokio::select! {
        () = controller::run(ctx, Some(args.watch_namespace.clone()).filter(|ns| !ns.is_empty())) => {
            info!("controller stopped on a shutdown signal");
            Ok(())
        }
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
    let _ = stop_http.send(());
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => error!(%error, "HTTP server failed"),
        Err(error) => error!(%error, "HTTP server task failed"),
    }
    outcome
}
