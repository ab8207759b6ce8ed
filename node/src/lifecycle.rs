//! A node's lifecycle: opening storage, starting Raft and the servers, the
//! background tasks (Raft metrics, periodic snapshots), and a shutdown that
//! hands leadership to a caught-up voter first.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

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
use crate::raft::proposer::Proposer;
use crate::raft::state_machine::SnapshotRecipes;
use crate::raft::state_machine::StateMachine;
use crate::raft::typ;
use crate::read_index::ReadIndexes;
use crate::recovery;
use crate::tls::NodeTls;

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
        let mut log_store = LogStore::open(&log_dir)
            .with_context(|| format!("failed to open the raft log in {}", log_dir.display()))?;
        log_store
            .import_sled_log(&db)
            .context("failed to move the raft log out of the database")?;
        let member = Member {
            peer_addr: config.advertised_peer_addr(),
            client_addr: config.advertised_client_addr(),
        };
        if config.forces_new_cluster(id) {
            let outcome = recovery::force_new_cluster(&identity, &mut log_store, member.clone())
                .await
                .context("--force-new-cluster failed")?;
            match outcome {
                recovery::Outcome::Forced(entry) => tracing::warn!(
                    term = entry.term,
                    index = entry.index,
                    "forced a new cluster: this node is its only voter; add the other members \
                     back as learners, promote them, then restart this node without \
                     --force-new-cluster"
                ),
                recovery::Outcome::AlreadyForced(entry) => tracing::warn!(
                    term = entry.term,
                    index = entry.index,
                    "--force-new-cluster is set, but an earlier start already forced a new \
                     cluster; nothing changed: remove the flag"
                ),
            }
        }
        let cache = RecipeCache::new(config.settings.cache.bytes());
        let state_machine = StateMachine::open(&db, &snapshot_dir(&config.data_dir), cache)?;
        let recipes = state_machine.recipes();
        let snapshot_recipes = state_machine.snapshot_recipes();
        let tls = NodeTls::load(&config.tls).context("TLS cannot be set up")?;
        let peer_channels = PeerChannels::new(tls.clone());
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
        let node = Arc::new(Node {
            id,
            proposer: Proposer::start(raft.clone()),
            read_indexes: ReadIndexes::default(),
            raft,
            recipes,
            identity,
            config: config.clone(),
            member,
            overload: Overload::start(&config.settings, &config.sampling),
            tls: tls.clone(),
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
        if let Some(tls) = tls {
            tokio::spawn(tls.reload_when_changed(stopped.clone()));
        }
        tokio::spawn(snapshot_when_due(
            node.clone(),
            config.snapshot_policy(),
            snapshot_recipes,
            stopped,
        ));
        tracing::info!(
            id,
            peer = %node.member.peer_addr,
            client = %node.member.client_addr,
            tls = node.tls.is_some(),
            "node started"
        );
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
    // The shard and epoch of the placement last published.
    let mut published = None;
    loop {
        {
            let m = metrics.borrow_and_update();
            metrics::observe_raft(&m, previous_leader);
            previous_leader = m.current_leader;
            // A placement changes only by applying an entry, which changes
            // openraft's metrics too; published only when it changed, as
            // the metrics change with every applied batch. Its shard and
            // epoch name it: a shard's slots never change within an epoch.
            let placement = node.recipes.placement();
            let now = placement.as_deref().map(|p| (p.shard, p.epoch));
            if published != Some(now) {
                metrics::observe_placement(placement.as_deref());
                published = Some(now);
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stopped.changed() => return,
        }
    }
}

/// When a node builds a snapshot. A snapshot rewrites the whole state: at a
/// fixed count of entries, a store of 100k recipes of 1 KiB was rewritten
/// every 10,000 writes, which took a third of the write throughput and
/// stalled writes for up to a second each time on the benchmark machine.
/// Waiting for as many entries as half the recipes bounds the rewriting to
/// two recipes per write, at the cost of a log up to half the state's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot before the next, at least.
    pub min_logs: u64,
    /// Build one this long after the last, if anything was applied since.
    pub interval: Option<Duration>,
}

impl SnapshotPolicy {
    /// Whether a snapshot is due, `applied` entries after the last one,
    /// which held `recipes` recipes and was built `age` ago.
    pub fn due(&self, applied: u64, recipes: u64, age: Duration) -> bool {
        applied > 0
            && (applied >= self.min_logs.max(recipes / 2)
                || self.interval.is_some_and(|interval| age >= interval))
    }
}

/// How often the snapshot policy looks at the applied index.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(100);

/// A requested snapshot not built within this is requested again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(60);

/// Builds a snapshot whenever `policy` says one is due.
async fn snapshot_when_due(
    node: Arc<Node>,
    policy: SnapshotPolicy,
    snapshot_recipes: SnapshotRecipes,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(SNAPSHOT_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_snapshot = None;
    let mut built_at = Instant::now();
    let mut requested_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let (applied, snapshot) = {
            let metrics = node.raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.last_applied.as_ref().map_or(0, |l| l.index()),
                m.snapshot.as_ref().map(|l| l.index()),
            )
        };
        if snapshot != last_snapshot {
            last_snapshot = snapshot;
            built_at = Instant::now();
            requested_at = None;
        }
        if requested_at.is_some_and(|at| at.elapsed() < SNAPSHOT_RETRY) {
            continue;
        }
        let since = applied.saturating_sub(snapshot.unwrap_or(0));
        if policy.due(since, snapshot_recipes.get(), built_at.elapsed()) {
            if node.raft.trigger().snapshot().await.is_err() {
                return;
            }
            requested_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_state_waits_for_entries_in_proportion_to_its_size() {
        let policy = SnapshotPolicy {
            min_logs: 10_000,
            interval: None,
        };
        let minute = Duration::from_secs(60);
        // A small state: the fixed count.
        assert!(!policy.due(9_999, 1_000, minute));
        assert!(policy.due(10_000, 1_000, minute));
        // 100k recipes: half as many entries.
        assert!(!policy.due(10_000, 100_000, minute));
        assert!(!policy.due(49_999, 100_000, minute));
        assert!(policy.due(50_000, 100_000, minute));
        // Nothing applied: never.
        assert!(!policy.due(0, 0, minute));
    }

    #[test]
    fn the_interval_builds_one_when_anything_was_applied() {
        let policy = SnapshotPolicy {
            min_logs: 10_000,
            interval: Some(Duration::from_secs(600)),
        };
        assert!(!policy.due(1, 100_000, Duration::from_secs(599)));
        assert!(policy.due(1, 100_000, Duration::from_secs(600)));
        assert!(!policy.due(0, 100_000, Duration::from_secs(6_000)));
    }
}
