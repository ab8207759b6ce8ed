//! A cluster of `recipestore-node` processes on loopback: what
//! `recipectl local up` runs, and what the integration tests drive.
//!
//! Node `i` (its id is its index, like a StatefulSet ordinal) listens on
//! `base + 10*i` (client), `+1` (peer) and `+2` (HTTP), and keeps its data in
//! `<data-dir>/node-<i>`, with its log in `<data-dir>/node-<i>.log`.

use std::fs::OpenOptions;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use recipestore::placement::Placement;
use recipestore_client::admin::AdminClient;
use recipestore_client::admin::Timeouts;
use recipestore_client::reshard;
use recipestore_protocol::pb;
use tonic::transport::ClientTlsConfig;

use crate::local_tls::LocalTls;

/// One node process and where it listens.
pub struct NodeProcess {
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    log_file: PathBuf,
    binary: PathBuf,
    extra_args: Vec<String>,
    /// The IP the node listens on and is reached at.
    host: String,
    /// A command the node's command line is appended to, to start it
    /// elsewhere (e.g. `ip netns exec NAME`); empty to run it directly.
    launcher: Vec<String>,
    /// The administrator's TLS config, when the node runs TLS.
    admin_tls: Option<ClientTlsConfig>,
    child: Option<Child>,
}

/// Where every node listens unless placed elsewhere.
const LOOPBACK: &str = "127.0.0.1";

/// Node `id`'s data directory under `data_root`.
pub fn node_data_dir(data_root: &Path, id: u64) -> PathBuf {
    data_root.join(format!("node-{id}"))
}

/// Shard `k`'s data root in a sharded store under `data_root`.
pub fn shard_data_root(data_root: &Path, k: u16) -> PathBuf {
    data_root.join(format!("shard-{k}"))
}

/// Gives each of `shards`, shard `k` at index `k`, its placement in a new
/// store of that many shards (slots split evenly), retrying while they
/// elect leaders. Idempotent: a shard keeps the placement it holds.
pub async fn place_new_store(shards: &[&LocalCluster], wait: Duration) -> anyhow::Result<()> {
    let addrs: Vec<Vec<String>> = shards.iter().map(|s| s.client_endpoints()).collect();
    for (k, shard) in shards.iter().enumerate() {
        let placement = Placement::new_store(k as u16, &addrs);
        shard
            .place(placement.to_pb(), wait)
            .await
            .with_context(|| format!("shard {k} did not take its placement"))?;
    }
    Ok(())
}

/// How many shards the store under `data_root` holds (0: none yet). A
/// store that started unsharded keeps its nodes in `data_root`, as shard 0,
/// its later shards in `shard-k`.
pub fn shards_held(data_root: &Path) -> u16 {
    let unsharded = node_data_dir(data_root, 0).is_dir();
    let first = u16::from(unsharded);
    let found = (first..)
        .take_while(|&k| shard_data_root(data_root, k).is_dir())
        .count() as u16;
    first + found
}

/// Checks that `count` nodes fit above `base_port`.
fn check_ports(base_port: u16, count: u64) -> anyhow::Result<()> {
    let top = u64::from(base_port) + 10 * count;
    anyhow::ensure!(
        top <= 65_535,
        "base port {base_port} leaves no room for {count} nodes"
    );
    Ok(())
}

/// The members of a cluster of `count` nodes laid out from `base_port` on
/// loopback, as `recipectl local up` runs them.
pub fn loopback_members(base_port: u16, count: u64) -> anyhow::Result<Vec<pb::Member>> {
    check_ports(base_port, count)?;
    // Laid out only, never started: no binary or data directory is used.
    Ok((0..count)
        .map(|id| NodeProcess::new(Path::new(""), Path::new(""), base_port, id).member())
        .collect())
}

impl NodeProcess {
    pub fn new(binary: &Path, data_root: &Path, base_port: u16, id: u64) -> Self {
        let base = base_port + 10 * id as u16;
        Self {
            id,
            client_port: base,
            peer_port: base + 1,
            http_port: base + 2,
            data_dir: node_data_dir(data_root, id),
            log_file: data_root.join(format!("node-{id}.log")),
            binary: binary.to_path_buf(),
            extra_args: Vec::new(),
            host: LOOPBACK.into(),
            launcher: Vec::new(),
            admin_tls: None,
            child: None,
        }
    }

    /// Runs the node at `host` (an IP of this machine or of a network
    /// namespace), started through `launcher`; loopback and no launcher by
    /// default.
    pub fn place(&mut self, host: &str, launcher: &[String]) {
        self.host = host.to_string();
        self.launcher = launcher.to_vec();
    }

    /// Extra flags passed on every start (e.g. Raft timings in tests).
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Runs the node with `tls`'s certificates; its admin client presents
    /// the administrator's.
    pub fn use_tls(&mut self, tls: &LocalTls) {
        let args = tls.node_args();
        self.extra_args.extend(args);
        self.admin_tls = Some(tls.admin().clone());
    }

    /// Adds flags passed on every later start.
    pub fn add_args(&mut self, args: &[&str]) {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
    }

    pub fn client_addr(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }

    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.host, self.peer_port)
    }

    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.host, self.http_port)
    }

    pub fn member(&self) -> pb::Member {
        pb::Member {
            id: self.id,
            peer_addr: self.peer_addr(),
            client_addr: self.client_addr(),
        }
    }

    /// The command that starts this node, with `data_dir` as its data.
    pub fn command(&self, data_dir: &Path) -> Command {
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("--id")
            .arg(self.id.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--client-addr")
            .arg(self.client_addr())
            .arg("--peer-addr")
            .arg(self.peer_addr())
            .arg("--http-addr")
            .arg(self.http_addr())
            .args(&self.extra_args);
        command
    }

    /// Starts the process, appending its output to its log file.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("cannot open {}", self.log_file.display()))?;
        let child = self
            .command(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the process gets no chance to flush or hand over.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` to the running process (SIGSTOP and SIGCONT pause and
    /// resume it); a stopped node is left alone.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), signal)
                .with_context(|| format!("cannot send {signal} to node {}", self.id))?;
        }
        Ok(())
    }

    /// The exit status if the process has exited on its own.
    /// Reports it once: the node then counts as stopped.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The admin client of this node.
    pub fn admin(&self) -> AdminClient {
        self.admin_with(Duration::from_secs(10))
    }

    fn admin_with(&self, request: Duration) -> AdminClient {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request,
        };
        AdminClient::with_tls(&self.peer_addr(), timeouts, self.admin_tls.as_ref())
            .expect("a loopback address is valid")
    }

    /// This node's status, with a short deadline: a stopped node must not
    /// hold up a poll of the cluster.
    pub async fn status(&self) -> anyhow::Result<pb::StatusResponse> {
        Ok(self.admin_with(Duration::from_secs(2)).status().await?)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `call` until it answers anything but UNAVAILABLE (nodes starting,
/// no leader yet), or `wait` is over.
async fn while_starting<T, Fut>(wait: Duration, call: impl Fn() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = Result<T, recipestore_client::admin::AdminError>>,
{
    let deadline = Instant::now() + wait;
    loop {
        match call().await {
            Ok(reply) => return Ok(reply),
            Err(e)
                if e.status().map(tonic::Status::code) == Some(tonic::Code::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A set of node processes sharing a data root and a port range.
pub struct LocalCluster {
    pub nodes: Vec<NodeProcess>,
    binary: PathBuf,
    data_root: PathBuf,
    base_port: u16,
    extra_args: Vec<String>,
    tls: Option<LocalTls>,
}

impl LocalCluster {
    /// Lays out `count` nodes; nothing starts yet.
    pub fn new(
        binary: &Path,
        data_root: &Path,
        base_port: u16,
        count: u64,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(count >= 1, "a cluster needs at least one node");
        check_ports(base_port, count)?;
        std::fs::create_dir_all(data_root)
            .with_context(|| format!("cannot create {}", data_root.display()))?;
        let mut cluster = Self {
            nodes: Vec::new(),
            binary: binary.to_path_buf(),
            data_root: data_root.to_path_buf(),
            base_port,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            tls: None,
        };
        for _ in 0..count {
            cluster.push_node();
        }
        Ok(cluster)
    }

    /// Lays out one more node (not started, not a member).
    pub fn push_node(&mut self) -> &mut NodeProcess {
        let id = self.nodes.len() as u64;
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let mut node =
            NodeProcess::new(&self.binary, &self.data_root, self.base_port, id).with_args(&args);
        if let Some(tls) = &self.tls {
            node.use_tls(tls);
        }
        self.nodes.push(node);
        self.nodes.last_mut().expect("just pushed")
    }

    /// Runs every node, and those laid out later, with TLS: certificates
    /// made under `<data-dir>/tls/` (or found there from an earlier run).
    pub fn use_tls(&mut self) -> anyhow::Result<&LocalTls> {
        let root = self.data_root.clone();
        self.use_tls_in(&root)
    }

    /// [`Self::use_tls`] with the certificates under `<root>/tls/`, which
    /// the shards of a store share.
    fn use_tls_in(&mut self, root: &Path) -> anyhow::Result<&LocalTls> {
        let tls = LocalTls::create(root, &[LOOPBACK.to_string()])?;
        for node in &mut self.nodes {
            node.use_tls(&tls);
        }
        Ok(self.tls.insert(tls))
    }

    /// The cluster's certificates, when it runs TLS.
    pub fn tls(&self) -> Option<&LocalTls> {
        self.tls.as_ref()
    }

    /// Where this cluster's nodes keep their data.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.start()?;
            }
        }
        Ok(())
    }

    pub fn stop_all(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            node.stop(grace);
        }
    }

    pub fn client_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(NodeProcess::client_addr).collect()
    }

    pub fn peer_endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(NodeProcess::peer_addr).collect()
    }

    /// Initializes the cluster on node 0 with every laid-out node as a voter,
    /// retrying while the nodes start. Idempotent across restarts.
    pub async fn initialize(&self, wait: Duration) -> anyhow::Result<pb::InitializeResponse> {
        let members: Vec<pb::Member> = self.nodes.iter().map(NodeProcess::member).collect();
        let admin = self.nodes[0].admin();
        while_starting(wait, || admin.initialize(members.clone())).await
    }

    /// Records `placement` in this cluster, a shard, through node 0,
    /// retrying while the nodes start or elect a leader. Idempotent.
    pub async fn place(&self, placement: pb::Placement, wait: Duration) -> anyhow::Result<u64> {
        let admin = self.nodes[0].admin();
        while_starting(wait, || admin.place(placement.clone())).await
    }

    /// Polls until a majority of running nodes name the same running node as
    /// leader; returns its id.
    pub async fn wait_for_leader(&self, wait: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + wait;
        loop {
            let mut votes = std::collections::BTreeMap::<u64, usize>::new();
            let running = self.nodes.iter().filter(|n| n.is_running()).count();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                if let Ok(status) = node.status().await
                    && let Some(leader) = status.leader_id
                {
                    *votes.entry(leader).or_default() += 1;
                }
            }
            let is_running = |id: u64| {
                self.nodes
                    .get(id as usize)
                    .is_none_or(NodeProcess::is_running)
            };
            if let Some((leader, _)) = votes
                .into_iter()
                .find(|(id, n)| *n * 2 > running && is_running(*id))
            {
                return Ok(leader);
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader within {wait:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        &mut self.nodes[id as usize]
    }
}

/// A store on loopback: one cluster per shard, each a Raft group of its
/// own. With one shard, the cluster is the store, unsharded, in the data
/// directory itself; with more, shard `k`'s cluster is in
/// `<data-dir>/shard-<k>`, its nodes' ports from `base + 10 * nodes * k`.
pub struct LocalStore {
    pub shards: Vec<LocalCluster>,
    /// The shards the data directory held before this run laid any out.
    held: u16,
    layout: Layout,
}

/// How a store's shards are laid out, kept to lay out more.
struct Layout {
    binary: PathBuf,
    data_root: PathBuf,
    base_port: u16,
    nodes: u64,
    extra_args: Vec<String>,
    /// Shard 0 keeps its nodes in `data_root` (a store that started unsharded).
    unsharded_root: bool,
    tls: bool,
}

impl LocalStore {
    /// Lays out `shards` clusters of `nodes` nodes, or as many as the data
    /// directory holds if more (see [`LocalStore::reshard`]); nothing starts yet.
    pub fn new(
        binary: &Path,
        data_root: &Path,
        base_port: u16,
        shards: u16,
        nodes: u64,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(shards >= 1, "a store needs at least one shard");
        let held = shards_held(data_root);
        let unsharded_root = node_data_dir(data_root, 0).is_dir() || (held == 0 && shards == 1);
        let mut store = Self {
            shards: Vec::new(),
            held,
            layout: Layout {
                binary: binary.to_path_buf(),
                data_root: data_root.to_path_buf(),
                base_port,
                nodes,
                extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                unsharded_root,
                tls: false,
            },
        };
        store.add_shards(shards.max(held))?;
        Ok(store)
    }

    /// The shards the data directory held before this run.
    pub fn held(&self) -> u16 {
        self.held
    }

    /// Lays out shards up to `shards` in all, with TLS if the store runs
    /// it; nothing starts yet.
    pub fn add_shards(&mut self, shards: u16) -> anyhow::Result<()> {
        let l = &self.layout;
        check_ports(l.base_port, l.nodes * u64::from(shards))?;
        for k in self.shards.len() as u16..shards {
            let base = l.base_port + 10 * l.nodes as u16 * k;
            let root = match k == 0 && l.unsharded_root {
                true => l.data_root.clone(),
                false => shard_data_root(&l.data_root, k),
            };
            let args: Vec<&str> = l.extra_args.iter().map(String::as_str).collect();
            let mut shard = LocalCluster::new(&l.binary, &root, base, l.nodes, &args)?;
            if l.tls {
                shard.use_tls_in(&l.data_root)?;
            }
            self.shards.push(shard);
        }
        Ok(())
    }

    /// Moves slots until shards `0..target` hold even shares and the others
    /// none (see `recipestore_client::reshard`); every laid-out shard must
    /// be running and initialized. Resumes a resharding left half done.
    pub async fn reshard(
        &self,
        target: u16,
        pace: reshard::Pace,
        report: impl FnMut(&reshard::Progress),
    ) -> anyhow::Result<reshard::Progress> {
        let shards: Vec<reshard::Shard> = self
            .shards
            .iter()
            .enumerate()
            .map(|(k, shard)| reshard::Shard {
                shard: k as u16,
                admins: shard.nodes.iter().map(NodeProcess::admin).collect(),
                client_addrs: shard.client_endpoints(),
            })
            .collect();
        Ok(reshard::reshard(&shards, target, pace, report).await?)
    }

    /// Stops the shards from `target` on, which own no slot once
    /// [`LocalStore::reshard`] took the store to `target` shards, and
    /// removes their data.
    pub fn retire_shards(&mut self, target: u16, grace: Duration) -> anyhow::Result<()> {
        while self.shards.len() > usize::from(target) {
            let k = self.shards.len() as u16 - 1;
            let mut shard = self.shards.pop().expect("more shards than the target");
            shard.stop_all(grace);
            let root = shard_data_root(&self.layout.data_root, k);
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("cannot remove {}", root.display()))?;
        }
        Ok(())
    }

    /// Runs every shard's nodes with TLS, one CA for the whole store, its
    /// certificates under `<data_root>/tls/`.
    pub fn use_tls(&mut self, data_root: &Path) -> anyhow::Result<&LocalTls> {
        self.layout.tls = true;
        for shard in &mut self.shards {
            shard.use_tls_in(data_root)?;
        }
        Ok(self.shards[0].tls().expect("just set"))
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        self.shards.iter_mut().try_for_each(LocalCluster::start_all)
    }

    pub fn stop_all(&mut self, grace: Duration) {
        for shard in &mut self.shards {
            shard.stop_all(grace);
        }
    }

    /// Every shard's nodes' client addresses, shard by shard.
    pub fn client_endpoints(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(LocalCluster::client_endpoints)
            .collect()
    }

    pub fn peer_endpoints(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(LocalCluster::peer_endpoints)
            .collect()
    }

    /// Every node of every shard.
    pub fn nodes(&mut self) -> impl Iterator<Item = &mut NodeProcess> {
        self.shards
            .iter_mut()
            .flat_map(|shard| shard.nodes.iter_mut())
    }

    /// Initializes every shard, then, in a new store of several, gives
    /// each its placement in a store of this many shards (slots split
    /// evenly). Idempotent across restarts; the shards of a store that held
    /// data before are placed by [`LocalStore::reshard`].
    pub async fn initialize(&self, wait: Duration) -> anyhow::Result<Vec<pb::InitializeResponse>> {
        let mut replies = Vec::new();
        for shard in &self.shards {
            replies.push(shard.initialize(wait).await?);
        }
        if self.held == 0 && self.shards.len() > 1 {
            let shards: Vec<&LocalCluster> = self.shards.iter().collect();
            place_new_store(&shards, wait).await?;
        }
        Ok(replies)
    }
}
