//! Test harness: clusters of real `recipestore-node` processes on loopback,
//! a background writer that records every acknowledged upload, and polling
//! helpers with deadlines (never sleeps as synchronization).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use recipectl::local_cluster::LocalCluster;
use recipectl::local_cluster::LocalStore;
use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_protocol::pb;
pub use recipestore_testkit::eventually;
use recipestore_testkit::{FAST_RAFT, free_node_ports};
use tempfile::TempDir;
use tonic::transport::ClientTlsConfig;

/// Set, every test cluster runs mutual TLS, and every client the helpers
/// below make speaks it: the suites run once without and once with TLS.
const TLS_ENV: &str = "RECIPESTORE_TEST_TLS";

pub struct TestCluster {
    pub cluster: LocalCluster,
    /// Holds the data until the processes above are stopped.
    _dir: TempDir,
    /// The fake cgroup the nodes read their CPU usage from.
    cgroup: TempDir,
}

impl TestCluster {
    /// Lays out `count` nodes without starting them. The nodes read CPU
    /// usage from a fake cgroup that reports an idle CPU (see [`FakeCpu`]),
    /// so a busy test machine does not make them shed.
    pub fn layout(count: u64, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cgroup = FakeCpu::create();
        let args = node_args(&cgroup, extra_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cluster =
            LocalCluster::new(&node_binary(), dir.path(), free_node_ports(), count, &args)
                .expect("layout");
        if std::env::var_os(TLS_ENV).is_some() {
            cluster.use_tls().expect("certificates");
        }
        Self {
            cluster,
            _dir: dir,
            cgroup,
        }
    }

    /// Starts `count` nodes, initializes them as voters and waits for a leader.
    pub async fn start(count: u64, extra_args: &[&str]) -> Self {
        Self::layout(count, extra_args).launch().await
    }

    /// Starts the nodes laid out, initializes them as voters and waits for a
    /// leader.
    pub async fn launch(mut self) -> Self {
        self.cluster.start_all().expect("start nodes");
        self.cluster
            .initialize(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("initialize: {e:#}\n{}", self.logs()));
        self.leader().await;
        self
    }

    pub async fn leader(&self) -> u64 {
        self.cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()))
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.cluster
            .nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client over every node's client port.
    pub fn client(&self) -> Client {
        tls_client_for(&self.cluster.client_endpoints(), self.client_tls())
    }

    /// A client of one node only.
    pub fn node_client(&self, id: u64) -> Client {
        tls_client_for(
            &[self.cluster.nodes[id as usize].client_addr()],
            self.client_tls(),
        )
    }

    /// A client of `endpoints` with its own policy and deadline.
    pub fn client_with(
        &self,
        endpoints: &[String],
        policy: RetryPolicy,
        timeout: Duration,
    ) -> Client {
        Client::with_tls(endpoints, policy, timeout, self.client_tls()).expect("client")
    }

    /// What clients present when the cluster runs TLS: an administrator's
    /// certificate, good on both ports.
    pub fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.cluster.tls().map(|tls| tls.admin().clone())
    }

    /// A channel to a node's peer port as a member dials it.
    pub fn member_channel(&self, peer_addr: &str) -> tonic::transport::Channel {
        let tls = self
            .cluster
            .tls()
            .map(|tls| tls.member().expect("member certificate"));
        recipestore_tls::endpoint(peer_addr, tls.as_ref())
            .expect("endpoint")
            .connect_lazy()
    }
}

/// The node binary under test.
fn node_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_recipestore-node"))
}

/// Every test node's flags: fast Raft timings, CPU read from `cgroup`, then
/// `extra_args`.
fn node_args(cgroup: &TempDir, extra_args: &[&str]) -> Vec<String> {
    let cgroup_dir = cgroup.path().to_string_lossy();
    let mut args: Vec<String> = FAST_RAFT.iter().map(|a| a.to_string()).collect();
    args.extend(["--cgroup-dir", &cgroup_dir, "--cpu-sample-ms", "50"].map(String::from));
    args.extend(extra_args.iter().map(|a| a.to_string()));
    args
}

/// A sharded store of real node processes: `shards` clusters of `nodes`
/// nodes each, placed as `recipectl local up --shards` places them.
pub struct TestStore {
    pub store: LocalStore,
    _dir: TempDir,
    _cgroup: TempDir,
}

impl TestStore {
    pub async fn start(shards: u16, nodes: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cgroup = FakeCpu::create();
        let args = node_args(&cgroup, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut store = LocalStore::new(
            &node_binary(),
            dir.path(),
            free_node_ports(),
            shards,
            nodes,
            &args,
        )
        .expect("layout");
        if std::env::var_os(TLS_ENV).is_some() {
            store.use_tls(dir.path()).expect("certificates");
        }
        let mut this = Self {
            store,
            _dir: dir,
            _cgroup: cgroup,
        };
        this.store.start_all().expect("start nodes");
        if let Err(e) = this.store.initialize(Duration::from_secs(30)).await {
            panic!("initialize: {e:#}\n{}", this.logs());
        }
        for shard in &this.store.shards {
            shard
                .wait_for_leader(Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        this
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&mut self) -> String {
        self.store
            .nodes()
            .map(|n| format!("--- {} ---\n{}", n.data_dir.display(), n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.store.shards[0].tls().map(|tls| tls.admin().clone())
    }

    /// A client of every node of every shard.
    pub fn client(&self) -> Client {
        tls_client_for(&self.store.client_endpoints(), self.client_tls())
    }

    /// The sum of `series` over every node of every shard.
    pub async fn metric_sum(&mut self, series: &str) -> f64 {
        let addrs: Vec<String> = self.store.nodes().map(|n| n.http_addr()).collect();
        let mut sum = 0.0;
        for addr in addrs {
            sum += metric_at(&addr, series).await;
        }
        sum
    }

    /// A client of one node: node `id` of shard `shard`.
    pub fn node_client(&self, shard: usize, id: usize) -> Client {
        let addr = self.store.shards[shard].nodes[id].client_addr();
        tls_client_for(&[addr], self.client_tls())
    }

    /// A raw gRPC client of one node's client port, whose calls carry
    /// exactly the metadata the test gives them.
    pub async fn raw_client(
        &self,
        shard: usize,
        id: usize,
    ) -> pb::recipes_client::RecipesClient<tonic::transport::Channel> {
        let addr = self.store.shards[shard].nodes[id].client_addr();
        let channel = recipestore_tls::endpoint(&addr, self.client_tls().as_ref())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        pb::recipes_client::RecipesClient::new(channel)
    }
}

/// A fake cgroup v2 CPU controller: one CPU whose usage the test sets.
pub struct FakeCpu {
    stop: Arc<AtomicBool>,
}

impl FakeCpu {
    /// A cgroup directory reporting an idle CPU. It lives in memory where
    /// the machine has a tmpfs: on the disk, the usage writes of
    /// [`FakeCpu::saturated`] could wait behind other tests' fdatasyncs for
    /// longer than a sample interval, which then reads as an idle CPU.
    fn create() -> TempDir {
        let in_memory = std::path::Path::new("/dev/shm");
        let dir = if in_memory.is_dir() {
            tempfile::tempdir_in(in_memory)
        } else {
            tempfile::tempdir()
        }
        .expect("cgroup dir");
        std::fs::write(dir.path().join("cpu.max"), "100000 100000\n").expect("cpu.max");
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 0\n").expect("cpu.stat");
        dir
    }

    /// Reports a saturated CPU from now on, until dropped.
    ///
    /// The node reads 0 % for any sample interval in which this writer did
    /// not run, so the writer must not fall behind on a loaded machine: usage
    /// grows at a thousand times wall-clock speed (one write per interval,
    /// however late, reads as 100 %), it writes every 2 ms against the
    /// node's 50 ms interval, and it asks for the highest scheduling
    /// priority it is allowed (as root, nice -20), so the test's own load
    /// does not starve it.
    pub fn saturated(cluster: &TestCluster) -> Self {
        let path = cluster.cgroup.path().join("cpu.stat");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            // SAFETY: setpriority only reads its integer arguments; `who` 0
            // is the calling thread. Failing (not root) leaves nice at 0.
            unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, -20) };
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let usage = started.elapsed().as_micros() as u64 * 1000;
                let tmp = path.with_extension("tmp");
                let _ = std::fs::write(&tmp, format!("usage_usec {usage}\n"));
                let _ = std::fs::rename(&tmp, &path);
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = std::fs::write(&path, "usage_usec 0\n");
        });
        Self { stop }
    }
}

impl Drop for FakeCpu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A patient client, over TLS when `tls` is given.
pub fn tls_client_for(endpoints: &[String], tls: Option<ClientTlsConfig>) -> Client {
    let policy = RetryPolicy {
        max_attempts: 40,
        max_delay: Duration::from_millis(500),
        budget: 1_000.0,
        ..RetryPolicy::default()
    };
    Client::with_tls(endpoints, policy, Duration::from_secs(5), tls).expect("client")
}

/// Acknowledged uploads: name to (version, content).
pub type Acked = BTreeMap<String, (u64, Vec<u8>)>;

/// Uploads `<tag>-<i>` in a loop and records each acknowledged write.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    pub fn start(client: Client, tag: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, a, tag) = (stop.clone(), acked.clone(), tag.to_string());
        let task = tokio::spawn(async move {
            let mut failures = 0;
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let name = format!("{tag}-{i:06}");
                let content =
                    format!("recipe {name}: rice, eggs, {i} pinches of salt").into_bytes();
                match client.upload(&name, content.clone(), None).await {
                    Ok(reply) => {
                        a.lock().unwrap().insert(name, (reply.version, content));
                    }
                    Err(_) => failures += 1,
                }
                i += 1;
            }
            failures
        });
        Self { stop, acked, task }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` more uploads than now are acknowledged.
    pub async fn await_progress(&self, n: usize, wait: Duration) {
        let target = self.acked_count() + n;
        eventually(wait, "writes to be acknowledged", || async {
            (self.acked_count() >= target).then_some(())
        })
        .await;
    }

    /// Stops writing; returns every acknowledged upload.
    pub async fn finish(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        Arc::try_unwrap(self.acked)
            .expect("writer done")
            .into_inner()
            .unwrap()
    }
}

/// Asserts every acknowledged upload is readable, linearizably, with its
/// version and content.
pub async fn assert_all_readable(client: &Client, acked: &Acked) {
    assert!(!acked.is_empty(), "the writer acknowledged nothing");
    for (name, (version, content)) in acked {
        let reply = client
            .download(name, pb::Consistency::Linearizable, None)
            .await
            .unwrap_or_else(|s| {
                panic!("acknowledged upload {name} (version {version}) is not readable: {s}")
            });
        assert_eq!(reply.version, *version, "version of {name}");
        assert_eq!(&reply.content, content, "content of {name}");
    }
}

/// A plain HTTP/1.0 GET; returns the status code and body, `None` when the
/// server is not answering.
/// The value of one sample line (`name{labels} value`) on a node's /metrics.
pub async fn metric(c: &TestCluster, node: u64, series: &str) -> f64 {
    metric_at(&c.cluster.nodes[node as usize].http_addr(), series).await
}

/// The value of `series` on the node whose HTTP address is `addr`.
pub async fn metric_at(addr: &str, series: &str) -> f64 {
    let (_, text) = http_get(addr, "/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
