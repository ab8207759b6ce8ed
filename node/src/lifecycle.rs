//! A node's lifecycle: opening storage, starting Raft and the servers, the
//! background tasks (Raft metrics, periodic snapshots), and a shutdown that
//! hands leadership to a caught-up voter first.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::sync::watch;

use crate::cache::RecipeCache;
use crate::config::NodeConfig;
use crate::identity::Identity;
use crate::metrics;
use crate::node::Node;
use crate::overload::Overload;
use crate::raft::Member;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::network::PeerChannels;
use crate::raft::state_machine::StateMachine;
use crate::raft::typ;

/// Where a node with data directory `data_dir` keeps its Raft log.
pub fn raft_log_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("raft-log")
}

/// Where a node with data directory `data_dir` keeps its snapshots.
pub fn snapshot_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("snapshots")
}

/// sled's page cache. Its default, 1 GiB, would hold most of a store in
/// memory a second time: downloads are served from the recipe cache
/// (`cache.maxBytes`) first, and listings and misses read few pages each.
const SLED_CACHE_BYTES: u64 = 32 << 20;

/// A started node; dropping it does not stop it, [`RunningNode::shutdown`] does.
pub struct RunningNode {
    pub node: Arc<Node>,
    db: sled::Db,
    stop: watch::Sender<bool>,
    /// Each server by name.
    servers: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl RunningNode {
    /// Opens storage, starts Raft and binds every port.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let id = config.node_id()?;
        let raft_config = Arc::new(config.raft_config()?);
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "failed to create data directory {}",
                config.data_dir.display()
            )
        })?;
        let identity = Arc::new(Identity::open(
            &config.data_dir,
            id,
            config.cluster_id.as_deref(),
        )?);
        let db = sled::Config::new()
            .path(config.data_dir.join("db"))
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .with_context(|| {
                format!(
                    "failed to open the database in {}",
                    config.data_dir.display()
                )
            })?;
        let log_dir = raft_log_dir(&config.data_dir);
        let log_store = LogStore::open(&log_dir)
            .with_context(|| format!("failed to open the raft log in {}", log_dir.display()))?;
        log_store
            .import_sled_log(&db)
            .context("failed to move the raft log out of the database")?;
        let cache = RecipeCache::new(config.settings.cache.bytes());
        let state_machine = StateMachine::open(&db, &snapshot_dir(&config.data_dir), cache)?;
        let recipes = state_machine.recipes();
        let peer_channels = PeerChannels::default();
        let raft = typ::Raft::new(
            id,
            raft_config,
            Network::new(
                identity.clone(),
                peer_channels.clone(),
                Duration::from_millis(config.settings.raft.election_timeout_min_ms),
            ),
            log_store,
            state_machine,
        )
        .await
        .context("failed to start Raft")?;
        let member = Member {
            peer_addr: config.advertised_peer_addr(),
            client_addr: config.advertised_client_addr(),
        };
        let node = Arc::new(Node {
            id,
            raft,
            recipes,
            identity,
            config: config.clone(),
            member,
            overload: Overload::start(&config.settings, &config.sampling),
            peer_channels,
        });
        metrics::initialize_labels();

        let (stop, stopped) = watch::channel(false);
        let servers = vec![
            (
                "peer",
                tokio::spawn(crate::server::serve_peer(
                    node.clone(),
                    config.peer_addr,
                    stopped.clone(),
                )),
            ),
            (
                "client",
                tokio::spawn(crate::server::serve_client(
                    node.clone(),
                    config.client_addr,
                    stopped.clone(),
                )),
            ),
            (
                "http",
                tokio::spawn(crate::http::serve(
                    node.clone(),
                    config.http_addr,
                    stopped.clone(),
                )),
            ),
        ];
        tokio::spawn(publish_raft_metrics(node.clone(), stopped.clone()));
        if let Some(interval) = config.snapshot_interval() {
            tokio::spawn(snapshot_periodically(node.clone(), interval, stopped));
        }
        tracing::info!(id, peer = %node.member.peer_addr, client = %node.member.client_addr, "node started");
        Ok(Self {
            node,
            db,
            stop,
            servers,
        })
    }

    /// Waits until a server fails (returning its error) or `shutdown` is requested.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let (result, _, _) =
            futures::future::select_all(self.servers.iter_mut().map(|(_, server)| server)).await;
        result.context("server task panicked")?
    }

    /// Hands leadership to a caught-up voter, stops the servers, stops Raft
    /// and flushes storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if self.node.is_leader() {
            hand_over_leadership(&self.node).await;
        }
        let _ = self.stop.send(true);
        for (name, server) in self.servers {
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                tracing::warn!(
                    server = name,
                    "a server still had calls open after 5 s; stopping anyway"
                );
            }
        }
        self.node
            .raft
            .shutdown()
            .await
            .context("failed to stop Raft")?;
        self.db
            .flush_async()
            .await
            .context("failed to flush storage")?;
        tracing::info!(id = self.node.id, "node stopped");
        Ok(())
    }
}

/// Transfers leadership to the most caught-up other voter, waiting briefly
/// for the handover so clients see a short, clean leader change.
async fn hand_over_leadership(node: &Node) {
    let target = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow_watched();
        let matched = m.replication.clone().unwrap_or_default();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != node.id)
            .max_by_key(|id| matched.get(id).cloned().flatten().map(|l| l.index()))
    };
    let Some(target) = target else { return };
    if node.raft.trigger().transfer_leader(target).await.is_err() {
        return;
    }
    let _ = node
        .raft
        .wait(Some(Duration::from_secs(3)))
        .metrics(
            |m| m.current_leader != Some(node.id),
            "leadership handed over",
        )
        .await;
}

/// Mirrors openraft's metrics into Prometheus whenever they change.
async fn publish_raft_metrics(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut metrics = node.raft.metrics();
    let mut previous_leader = None;
    loop {
        {
            let m = metrics.borrow_and_update();
            metrics::observe_raft(&m, previous_leader);
            previous_leader = m.current_leader;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stopped.changed() => return,
        }
    }
}

/// Builds a snapshot every `interval` when entries were applied since the last.
async fn snapshot_periodically(
    node: Arc<Node>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let (applied, snapshot) = {
            let m = node.raft.metrics().borrow_watched().clone();
            (
                m.last_applied.map(|l| l.index()),
                m.snapshot.map(|l| l.index()),
            )
        };
        if applied > snapshot && node.raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}
