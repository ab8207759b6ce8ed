//! One fault-injection run: a cluster of real node processes on loopback,
//! the recorded workload, faults of one kind until the time is up, then
//! heal, read every key through every node, stop the nodes, compare their
//! Raft logs on disk and check the history.
//!
//! With more than one shard, the faulted cluster is shard 0 of a sharded
//! store whose other shards run untouched: the workload reaches every node
//! of every shard, so calls are passed on into and out of the shard under
//! faults.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use recipectl::local_cluster::LocalCluster;
use recipectl::local_cluster::place_new_store;
use recipectl::local_cluster::shard_data_root;
use recipestore::lifecycle::raft_log_dir;
use recipestore::placement::VERSION_EPOCH_SHIFT;
use recipestore_client::reshard;
use recipestore_protocol::pb::Consistency;
use recipestore_protocol::slots::SLOTS;
use recipestore_protocol::slots::even_split;
use recipestore_protocol::slots::slot_of;
use serde::Serialize;
use tokio::sync::watch;

use crate::faults;
use crate::faults::Fault;
use crate::history;
use crate::history::Call;
use crate::history::Op;
use crate::history::Outcome;
use crate::linearizability;
use crate::local_reads;
use crate::logs;
use crate::network::Network;
use crate::workload;
use crate::workload::Recorder;
use crate::workload::WorkloadConfig;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub fault: Fault,
    pub duration: Duration,
    pub seed: u64,
    pub workload: WorkloadConfig,
    /// The `recipestore-node` binary.
    pub node_binary: PathBuf,
    /// Flags passed to every node.
    pub node_args: Vec<String>,
    /// Shards of the store: 1 (unsharded), or the faulted shard and
    /// healthy ones of three nodes each.
    pub shards: u16,
    /// Move slots between the shards throughout the run: the last shard
    /// gives its slots to the others, then takes its share back, over and
    /// over, so moves run into and out of the faulted shard.
    pub reshard: bool,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub fault: String,
    pub seed: u64,
    pub faults_injected: usize,
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Longest stretch without a successful write, in milliseconds.
    pub longest_write_gap_ms: u64,
    /// Linearizability violations and LOCAL read violations, explained.
    pub violations: Vec<String>,
    /// Keys whose check ran out of budget.
    pub inconclusive: Vec<String>,
    /// Log ids two nodes hold with different entries.
    pub divergent_log_ids: Vec<String>,
    /// Slots moved between shards during the run.
    pub slots_moved: usize,
    /// The history, saved when something was found.
    pub history_file: Option<PathBuf>,
}

impl RunReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.divergent_log_ids.is_empty()
    }
}

/// The `recipestore-node` binary beside the running executable (a test's
/// `deps/` folder counts as beside `target/<profile>/`), or
/// `$RECIPESTORE_NODE_BINARY`.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RECIPESTORE_NODE_BINARY") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("recipestore-node"))
        .find(|path| path.exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "recipestore-node not found beside {}; build it or set RECIPESTORE_NODE_BINARY",
                exe.display()
            )
        })
}

/// A free range of ports for `nodes` nodes, below the ephemeral range.
pub fn free_base_port(rng: &mut impl Rng, nodes: u64) -> u16 {
    loop {
        let base = rng.random_range(200..320u16) * 100;
        let free = (0..nodes as u16).all(|node| {
            (0..3u16).all(|offset| {
                std::net::TcpListener::bind(("127.0.0.1", base + node * 10 + offset)).is_ok()
            })
        });
        if free {
            return base;
        }
    }
}

/// Runs one fault-injection run in `dir` (which keeps the nodes' data and
/// logs, and the history when something was found).
pub async fn run(config: &RunConfig, dir: &Path) -> anyhow::Result<RunReport> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    // Shedding off: a shed is a definite failure the checker accepts, but
    // on two busy cores it would refuse much of the workload and hide
    // what the faults do.
    let args: Vec<&str> = std::iter::once("--shed-enabled=false")
        .chain(config.node_args.iter().map(String::as_str))
        .collect();
    let fault = config.fault;
    anyhow::ensure!(
        !config.reshard || config.shards > 1,
        "moving slots needs two shards or more"
    );
    // With partitions, every node of every shard has a namespace of its
    // own (the healthy shards' after the faulted one's), so that calls
    // pass between the shards; the cuts are between the faulted shard's.
    let healthy_nodes = 3 * u64::from(config.shards - 1);
    let network = fault
        .partitions()
        .then(|| Network::create(fault.nodes() + healthy_nodes))
        .transpose()?;
    let base = free_base_port(&mut rng, fault.nodes());
    let mut cluster = LocalCluster::new(&config.node_binary, dir, base, fault.voters(), &args)?;
    while (cluster.nodes.len() as u64) < fault.nodes() {
        cluster.push_node();
    }
    if let Some(network) = &network {
        for node in &mut cluster.nodes {
            node.place(&network.host(node.id), &network.launcher(node.id));
        }
    }
    // The nodes beyond the voters are spares: started, not members.
    let spares = cluster.nodes.split_off(fault.voters() as usize);
    let mut healthy = Vec::new();
    let mut bases = vec![base];
    for k in 1..config.shards {
        let base = loop {
            let base = free_base_port(&mut rng, 3);
            if !bases.contains(&base) {
                break base;
            }
        };
        bases.push(base);
        let root = shard_data_root(dir, k);
        let mut shard = LocalCluster::new(&config.node_binary, &root, base, 3, &args)?;
        if let Some(network) = &network {
            for node in &mut shard.nodes {
                let id = fault.nodes() + 3 * u64::from(k - 1) + node.id;
                node.place(&network.host(id), &network.launcher(id));
            }
        }
        healthy.push(shard);
    }
    cluster.start_all()?;
    cluster.initialize(Duration::from_secs(30)).await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    for shard in &mut healthy {
        shard.start_all()?;
        shard.initialize(Duration::from_secs(30)).await?;
    }
    if !healthy.is_empty() {
        let shards: Vec<&LocalCluster> = std::iter::once(&cluster).chain(&healthy).collect();
        place_new_store(&shards, Duration::from_secs(30)).await?;
    }
    // The driver reaches the faulted shard through its voters, the
    // spares being no members.
    let moved_shards: Vec<reshard::Shard> = std::iter::once(&cluster)
        .chain(&healthy)
        .enumerate()
        .map(|(k, shard)| reshard::Shard {
            shard: k as u16,
            admins: shard.nodes.iter().map(|n| n.admin()).collect(),
            client_addrs: shard.client_endpoints(),
        })
        .collect();
    cluster.nodes.extend(spares);
    cluster.start_all()?;

    let recorder = Recorder::new();
    let (stop, stopped) = watch::channel(false);
    let mut endpoints = cluster.client_endpoints();
    endpoints.extend(healthy.iter().flat_map(LocalCluster::client_endpoints));
    let clients: Vec<_> = (0..config.workload.clients)
        .map(|id| {
            tokio::spawn(workload::run_client(
                id,
                endpoints.clone(),
                config.workload.clone(),
                config.seed.wrapping_mul(1000).wrapping_add(u64::from(id)),
                recorder.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    let mover = config.reshard.then(|| {
        let stopped = stopped.clone();
        let shards = config.shards;
        tokio::spawn(async move {
            let pace = reshard::Pace {
                batch_slots: 64,
                ..reshard::Pace::default()
            };
            let (mut moved, mut target) = (0, shards - 1);
            // A resharding started goes to its end: stopped half way, it
            // would leave slots whose calls wait for the next run.
            while !*stopped.borrow() {
                moved += reshard::reshard(&moved_shards, target, pace, |_| {})
                    .await?
                    .slots_moved;
                target = if target == shards { shards - 1 } else { shards };
            }
            anyhow::Ok(moved)
        })
    });

    let deadline = Instant::now() + config.duration;
    let mut faults_injected = 0;
    let mut fault_log = Vec::new();
    while Instant::now() < deadline {
        // Faults are spaced out, not synchronized with anything.
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        if let Some(line) = faults::inject(fault, &mut cluster, network.as_ref(), &mut rng).await? {
            faults_injected += 1;
            fault_log.push(line);
        }
    }
    let _ = stop.send(true);
    for client in clients {
        client.await??;
    }
    let slots_moved = match mover {
        Some(mover) => mover.await?.context("moving slots")?,
        None => 0,
    };

    if let Some(network) = &network {
        network.heal()?;
    }
    heal(&mut cluster)?;
    cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let shards: Vec<&LocalCluster> = std::iter::once(&cluster).chain(&healthy).collect();
    for (k, shard) in shards.iter().enumerate() {
        read_everything(shard, 1000 + 100 * k as u32, &recorder, &config.workload).await?;
    }
    let mut divergent_log_ids = Vec::new();
    for (k, shard) in std::iter::once(&mut cluster)
        .chain(&mut healthy)
        .enumerate()
    {
        await_convergence(shard, Duration::from_secs(60)).await?;
        shard.stop_all(Duration::from_secs(10));
        let dirs: Vec<(u64, PathBuf)> = shard
            .nodes
            .iter()
            .map(|n| (n.id, raft_log_dir(&n.data_dir)))
            .collect();
        let node_logs = logs::read_logs(dirs.iter().map(|(id, dir)| (*id, dir.as_path())))?;
        divergent_log_ids.extend(
            logs::divergent_log_ids(&node_logs)?
                .into_iter()
                .map(|d| format!("shard {k}, {}: {:?}", d.log_id, d.holders)),
        );
    }

    let ops = recorder.ops();
    let mut report = check(
        config,
        &ops,
        faults_injected,
        divergent_log_ids,
        slots_moved,
    );
    if !report.is_clean() {
        let path = dir.join("history.jsonl");
        history::save_jsonl(&path, &ops)?;
        std::fs::write(dir.join("faults.txt"), fault_log.join("\n"))?;
        report.history_file = Some(path);
    }
    Ok(report)
}

/// Which log wrote `key` at `version` in a store of `shards` shards, split
/// evenly at first, whose slots may have moved since: a version carries
/// the epoch at which its shard received the key's slot (see
/// `recipestore::placement::VERSION_EPOCH_SHIFT`), 0 for the shard that
/// owned it from the start, and each epoch's slots go to one shard only.
pub fn log_of(shards: u16) -> impl Fn(&str, u64) -> u64 {
    let ranges = even_split(shards);
    move |key, version| match version >> VERSION_EPOCH_SHIFT {
        0 => {
            let slot = slot_of(key);
            ranges
                .iter()
                .position(|range| range.contains(&slot))
                .expect("every slot has an owner") as u64
        }
        epoch => u64::from(SLOTS) + epoch,
    }
}

/// Resumes paused nodes and starts stopped ones.
fn heal(cluster: &mut LocalCluster) -> anyhow::Result<()> {
    for node in &cluster.nodes {
        node.signal(nix::sys::signal::Signal::SIGCONT)?;
    }
    cluster.start_all()
}

/// Reads every key linearizably through every node of `cluster`, recording
/// the reads as clients `first_reader` on: each must see every write
/// acknowledged before it.
async fn read_everything(
    cluster: &LocalCluster,
    first_reader: u32,
    recorder: &Recorder,
    workload: &WorkloadConfig,
) -> anyhow::Result<()> {
    for node in &cluster.nodes {
        let client = workload::workload_client(&[node.client_addr()], Duration::from_secs(10))?;
        let reader = first_reader + node.id as u32;
        for k in 0..workload.keys {
            let key = workload::key_name(k);
            let call = Call::Get { key: key.clone() };
            let run = client.download(&key, Consistency::Linearizable, None);
            recorder.record(reader, call, run, workload::found).await;
        }
    }
    Ok(())
}

/// Polls until every member has applied everything the leader committed.
async fn await_convergence(cluster: &LocalCluster, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let mut applied = BTreeMap::new();
        let mut members = Vec::new();
        let mut committed = 0;
        for node in &cluster.nodes {
            if let Ok(status) = node.status().await {
                applied.insert(node.id, status.applied_index);
                if status.leader_id == Some(node.id) {
                    committed = status.committed_index;
                    members = status
                        .voters
                        .iter()
                        .chain(&status.learners)
                        .map(|m| m.id)
                        .collect();
                }
            }
        }
        if committed > 0
            && members
                .iter()
                .all(|id| applied.get(id).is_some_and(|a| *a >= committed))
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "members did not converge within {wait:?}: applied {applied:?}, leader committed {committed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check(
    config: &RunConfig,
    ops: &[Op],
    faults_injected: usize,
    divergent_log_ids: Vec<String>,
    slots_moved: usize,
) -> RunReport {
    let (mut ok, mut failed, mut unknown) = (0, 0, 0);
    for op in ops {
        match op.outcome {
            Outcome::Failed { .. } => failed += 1,
            Outcome::Unknown { .. } => unknown += 1,
            _ => ok += 1,
        }
    }
    let mut write_times: Vec<u64> = ops
        .iter()
        .filter(|op| {
            matches!(
                op.outcome,
                Outcome::Written { .. } | Outcome::Deleted { .. }
            )
        })
        .filter_map(|op| op.complete_ns)
        .collect();
    write_times.sort_unstable();
    let longest_write_gap_ms = write_times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .max()
        .unwrap_or(0);

    let mut violations = Vec::new();
    let mut inconclusive = Vec::new();
    let linear = linearizability::check_spaced(
        ops,
        &linearizability::Config::default(),
        &log_of(config.shards),
    );
    violations.extend(
        linear
            .violations()
            .map(|(key, v)| format!("{key}: {}", v.explanation)),
    );
    violations.extend(linear.cross_key.iter().map(|v| v.explanation.clone()));
    violations.extend(
        linear
            .malformed
            .iter()
            .map(|(i, why)| format!("op {i} malformed: {why}")),
    );
    let local = local_reads::check(ops);
    violations.extend(
        local
            .violations
            .iter()
            .map(|v| format!("LOCAL read {}: {}", v.op, v.explanation)),
    );
    inconclusive.extend(linear.keys.iter().filter_map(|(key, r)| match &r.verdict {
        linearizability::Verdict::Inconclusive(why) => Some(format!("{key}: {why}")),
        _ => None,
    }));
    RunReport {
        fault: config.fault.to_string(),
        seed: config.seed,
        faults_injected,
        operations: ops.len(),
        ok,
        failed,
        unknown,
        longest_write_gap_ms,
        violations,
        inconclusive,
        divergent_log_ids,
        slots_moved,
        history_file: None,
    }
}
