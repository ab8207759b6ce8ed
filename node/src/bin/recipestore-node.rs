//! `recipestore-node`: one RecipeStore node. Runs until SIGTERM or Ctrl-C,
//! then hands over leadership and stops cleanly.

use clap::Parser;
use recipestore::config::LogFormat;
use recipestore::config::NodeConfig;
use recipestore::lifecycle::RunningNode;
use tokio::signal::unix::SignalKind;
use tokio::signal::unix::signal;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's allocator: a leader under write load spent
/// a seventh of its CPU in glibc's frees and chunk consolidation, and
/// jemalloc's per-thread caches and size classes keep a long-running
/// server's memory from fragmenting.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = NodeConfig::parse();
    let filter = EnvFilter::try_from_env("RECIPESTORE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let mut node = match RunningNode::start(config).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("recipestore-node: {e:#}");
            std::process::exit(2);
        }
    };
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = node.wait() => result?,
        _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
    }
    node.shutdown().await
}
