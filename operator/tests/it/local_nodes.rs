//! The membership planner and executor driving real `recipestore-node`
//! processes on loopback, with a small stand-in for the StatefulSet: pods are
//! processes, ordinals are node ids, scaling starts or kills them.
//!
//! Runs when the node binary is found (in `RECIPESTORE_BIN_DIR`, or the
//! workspace's `target/debug`); otherwise it says so and passes, since the
//! operator crate cannot build the node binary itself (`scripts/test.sh`
//! builds it first).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use recipestore_operator::admin::{GrpcAdmin, NodeAdmin, ShardAddrs};
use recipestore_operator::executor;
use recipestore_operator::membership::{
    Handoff, Member, NodeId, Observed, Pod, Policy, Refusal, Step,
};
use recipestore_operator::placement;
use recipestore_protocol::pb::recipes_client::RecipesClient;
use recipestore_protocol::pb::{Consistency, DownloadRequest, UploadRequest};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::time::{Instant, MissedTickBehavior, interval, timeout};

use recipestore_testkit::{FAST_RAFT, find_binary, free_port};

const CONVERGE_WITHIN: Duration = Duration::from_secs(90);
/// The pods' termination grace period, as the operator sets it.
const TERMINATION_GRACE: Duration = Duration::from_secs(60);
/// How often the stand-in operator reconciles, like the controller's requeue.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// One "pod": a node process with its own ports and data directory.
struct LocalNode {
    member: Member,
    child: Child,
    /// The revision of the stand-in StatefulSet the pod was started from.
    revision: String,
}

/// A stand-in StatefulSet: ordinal `i` runs node `i`; data directories
/// survive a restart and are deleted on scale-in (`whenScaled: Delete`).
struct LocalStatefulSet {
    binary: PathBuf,
    root: tempfile::TempDir,
    replicas: u32,
    pods: BTreeMap<NodeId, LocalNode>,
    /// Ports stay with an ordinal, as DNS names do in a cluster.
    addresses: BTreeMap<NodeId, (Member, u16)>,
    /// The member the shared configuration tells to force a new cluster,
    /// as the operator's ConfigMap does: every pod started gets it.
    forcing: Option<NodeId>,
    /// The pod template's revision: pods started from now on run it.
    revision: String,
}

impl LocalStatefulSet {
    fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            root: tempfile::tempdir().unwrap(),
            replicas: 0,
            pods: BTreeMap::new(),
            addresses: BTreeMap::new(),
            forcing: None,
            revision: "r1".to_owned(),
        }
    }

    fn member(&mut self, id: NodeId) -> (Member, u16) {
        self.addresses
            .entry(id)
            .or_insert_with(|| {
                let (client, peer, http) = (free_port(), free_port(), free_port());
                let member = Member {
                    id,
                    peer_addr: format!("127.0.0.1:{peer}"),
                    client_addr: format!("127.0.0.1:{client}"),
                };
                (member, http)
            })
            .clone()
    }

    fn data_dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    fn start(&mut self, id: NodeId) {
        let (member, http_port) = self.member(id);
        let log = std::fs::File::create(self.root.path().join(format!("node-{id}.log"))).unwrap();
        let port = |addr: &str| addr.rsplit_once(':').unwrap().1.to_owned();
        let mut command = Command::new(&self.binary);
        if let Some(forcing) = self.forcing {
            command.env("RECIPESTORE_FORCE_NEW_CLUSTER", forcing.to_string());
        }
        let child = command
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .arg("--client-addr")
            .arg(format!("127.0.0.1:{}", port(&member.client_addr)))
            .arg("--peer-addr")
            .arg(format!("127.0.0.1:{}", port(&member.peer_addr)))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--advertise-addr")
            .arg("127.0.0.1")
            // The test machine's CPU is shared with builds: shedding would
            // refuse the writes this test must see succeed.
            .args(["--shed-enabled", "false"])
            .args(FAST_RAFT)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("node binary starts");
        let revision = self.revision.clone();
        self.pods.insert(
            id,
            LocalNode {
                member,
                child,
                revision,
            },
        );
    }

    /// Stops a pod as Kubernetes deletes one: SIGTERM, then SIGKILL after
    /// the termination grace period.
    async fn terminate(&mut self, id: NodeId) {
        let Some(mut node) = self.pods.remove(&id) else {
            return;
        };
        if let Some(pid) = node.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        }
        if timeout(TERMINATION_GRACE, node.child.wait()).await.is_err() {
            node.child.kill().await.unwrap();
        }
    }

    /// Kills a pod's process; the StatefulSet controller would restart it.
    async fn kill(&mut self, id: NodeId) {
        if let Some(mut node) = self.pods.remove(&id) {
            node.child.kill().await.unwrap();
        }
    }

    /// Makes the running pods match `replicas`, like the StatefulSet controller.
    async fn scale(&mut self, replicas: u32) {
        for id in 0..u64::from(replicas) {
            if !self.pods.contains_key(&id) {
                self.start(id);
            }
        }
        let extra: Vec<NodeId> = self
            .pods
            .keys()
            .copied()
            .filter(|id| *id >= u64::from(replicas))
            .collect();
        // A StatefulSet scales in by deleting pods, which Kubernetes
        // terminates gracefully: calls in flight on them finish.
        for id in extra {
            self.terminate(id).await;
            std::fs::remove_dir_all(self.data_dir(id)).ok();
        }
        self.replicas = replicas;
    }

    fn observed(&self, desired: u32, driver: &Driver) -> Observed {
        Observed {
            desired_replicas: desired,
            statefulset_replicas: self.replicas,
            pods: self
                .pods
                .values()
                .map(|n| {
                    (
                        n.member.id,
                        Pod {
                            member: n.member.clone(),
                            running: true,
                            ready: true,
                            deleting: false,
                            revision: Some(n.revision.clone()),
                        },
                    )
                })
                .collect(),
            nodes: BTreeMap::new(),
            recorded_cluster_id: driver.cluster_id.clone(),
            force_recovery: driver.force_recovery.clone(),
            forcing: driver.forcing,
            update_revision: Some(self.revision.clone()),
        }
    }

    fn client_addrs(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<String> {
        ids.into_iter()
            .filter_map(|id| self.addresses.get(&id).map(|(m, _)| m.client_addr.clone()))
            .collect()
    }

    /// Each node's process state and the end of its log, for failure messages.
    fn log_tail(&mut self) -> String {
        let mut out = String::new();
        let ids: Vec<NodeId> = self.addresses.keys().copied().collect();
        for id in ids {
            let log = std::fs::read_to_string(self.root.path().join(format!("node-{id}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let process = match self.pods.get_mut(&id).map(|n| n.child.try_wait()) {
                None => "not running".to_owned(),
                Some(Ok(None)) => "running".to_owned(),
                Some(Ok(Some(exit))) => format!("exited: {exit}"),
                Some(Err(error)) => format!("unknown: {error}"),
            };
            out.push_str(&format!("--- node {id} ({process})\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The stand-in operator: what the controller does, minus Kubernetes.
struct Driver {
    admin: GrpcAdmin,
    policy: Policy,
    cluster_id: Option<String>,
    steps: Vec<Step>,
    /// The force-recovery annotation, as a person sets it.
    force_recovery: Option<String>,
    /// The member told to force a new cluster, as the status records it.
    forcing: Option<NodeId>,
    /// When each leadership hand-off was asked for.
    handoffs: Vec<Instant>,
}

enum Stopped {
    Converged,
    Interrupted,
}

impl Driver {
    fn new(cluster_id: Option<String>) -> Self {
        let admin = GrpcAdmin::new(Duration::from_millis(500), Duration::from_secs(5));
        Self {
            admin,
            policy: Policy::default(),
            cluster_id,
            steps: Vec::new(),
            force_recovery: None,
            forcing: None,
            handoffs: Vec::new(),
        }
    }

    /// Reconciles until the voters are exactly `0..desired`, or until
    /// `interrupt` returns true for a performed step (a crash after it).
    async fn run(
        &mut self,
        sts: &mut LocalStatefulSet,
        desired: u32,
        interrupt: impl Fn(&Step) -> bool,
    ) -> Stopped {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        let mut ticks = interval(RECONCILE_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            ticks.tick().await;
            assert!(
                Instant::now() < deadline,
                "no convergence to {desired} voters; steps so far: {:?}\nlast round: {last}\n{}",
                self.steps,
                sts.log_tail()
            );
            let observed = sts.observed(desired, self);
            let (observed, plan) =
                match executor::advance(&self.admin, observed, &self.policy).await {
                    Ok(done) => done,
                    // A failed step is retried from a fresh observation, as a requeue would.
                    Err(error) => {
                        last = format!("{error}: {:?}", std::error::Error::source(&error));
                        continue;
                    }
                };
            last = format!(
                "{:?}; nodes answering: {:?}",
                plan.step,
                observed.nodes.keys()
            );
            if plan.cluster_id.is_some() {
                self.cluster_id.clone_from(&plan.cluster_id);
            }
            self.forcing = plan.forcing;
            sts.forcing = plan.forcing;
            if plan.clear_force_recovery {
                self.force_recovery = None;
            }
            match plan.step {
                Step::ForceNewCluster { id } => {
                    sts.kill(id).await;
                    sts.start(id);
                }
                Step::RestartMember { id, .. } => {
                    sts.terminate(id).await;
                    sts.start(id);
                }
                Step::TransferLeadership { .. } => self.handoffs.push(Instant::now()),
                _ => {}
            }
            if plan.step.is_change() {
                self.steps.push(plan.step.clone());
            }
            assert!(
                plan.fenced.is_empty(),
                "no node is fenced: {:?}",
                plan.fenced
            );
            sts.scale(plan.statefulset_replicas).await;
            if interrupt(&plan.step) {
                return Stopped::Interrupted;
            }
            let voters = plan
                .leader
                .as_ref()
                .and_then(|l| observed.nodes.get(&l.id))
                .map(|n| n.voter_ids())
                .unwrap_or_default();
            if plan.step == Step::Steady
                && voters == (0..u64::from(desired)).collect()
                && sts.replicas == desired
            {
                return Stopped::Converged;
            }
        }
    }
}

/// `replicas` pods, driven until their voters are exactly those.
async fn converged(binary: PathBuf, replicas: u32) -> (LocalStatefulSet, Driver) {
    let mut sts = LocalStatefulSet::new(binary);
    sts.scale(replicas).await;
    let mut driver = Driver::new(None);
    assert!(matches!(
        driver.run(&mut sts, replicas, |_| false).await,
        Stopped::Converged
    ));
    (sts, driver)
}

/// The leader, as node 0 knows it.
async fn leader_of(sts: &LocalStatefulSet, driver: &Driver) -> NodeId {
    driver
        .admin
        .status(&sts.pods[&0].member.peer_addr)
        .await
        .unwrap()
        .leader_id
        .expect("a leader after convergence")
}

/// Recipes whose upload was acknowledged: name and content.
type Acknowledged = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Uploads recipes through the given nodes until stopped; remembers what
/// was acknowledged.
async fn write_continuously(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Acknowledged,
) -> Option<String> {
    let mut n = 0u64;
    let mut last_error = None;
    while !stop.load(Ordering::Relaxed) {
        let addr = &addrs[usize::try_from(n).unwrap() % addrs.len()];
        let name = format!("recipe-{n:05}");
        let content = format!("{n} eggs, {} cups of flour", n % 7).into_bytes();
        n += 1;
        let attempt = async {
            let mut client = RecipesClient::connect(format!("http://{addr}"))
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let request = UploadRequest {
                name: name.clone(),
                content: content.clone(),
                if_version: None,
            };
            client
                .upload(request)
                .await
                .map_err(|e| format!("upload to {addr}: {e}"))
        };
        match timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(_)) => acked.lock().await.push((name, content)),
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => last_error = Some(format!("upload to {addr} timed out")),
        }
    }
    last_error
}

/// The node binary, or `None` after saying why the test is skipped.
fn node_binary() -> Option<PathBuf> {
    let binary = find_binary("recipestore-node");
    if binary.is_none() {
        eprintln!(
            "skipped: recipestore-node binary not found (build it with `cargo build -p recipestore`)"
        );
    }
    binary
}

/// Reads every recipe of `acked` back, linearizably, through the node at
/// `addr`, waiting for it to listen (it may have just restarted).
async fn assert_read_back(addr: &str, acked: &[(String, Vec<u8>)]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match RecipesClient::connect(format!("http://{addr}")).await {
            Ok(client) => break client,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no node listens at {addr}: {e}"),
        }
    };
    for (name, content) in acked {
        let request = DownloadRequest {
            name: name.clone(),
            consistency: Consistency::Linearizable as i32,
            min_version: None,
        };
        let reply = client
            .download(request)
            .await
            .unwrap_or_else(|e| panic!("{name} lost: {e}"));
        assert_eq!(&reply.into_inner().content, content, "{name} content");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_steps_drive_real_nodes_one_three_five_three_without_losing_writes() {
    let Some(binary) = node_binary() else {
        return;
    };
    let mut sts = LocalStatefulSet::new(binary);

    // 1 voter: bootstrap on ordinal 0.
    sts.scale(1).await;
    let mut driver = Driver::new(None);
    assert!(matches!(
        driver.run(&mut sts, 1, |_| false).await,
        Stopped::Converged
    ));
    assert!(
        matches!(driver.steps[0], Step::Initialize { .. }),
        "{:?}",
        driver.steps
    );

    // 1 → 3 voters.
    assert!(matches!(
        driver.run(&mut sts, 3, |_| false).await,
        Stopped::Converged
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_continuously(
        sts.client_addrs(0..3),
        stop.clone(),
        acked.clone(),
    ));

    // 3 → 5 voters; pod 3 is killed right after it was added as a learner,
    // and comes back with its data, as a StatefulSet pod would.
    let added_three = |s: &Step| matches!(s, Step::AddLearner { member } if member.id == 3);
    assert!(matches!(
        driver.run(&mut sts, 5, added_three).await,
        Stopped::Interrupted
    ));
    sts.kill(3).await;
    sts.start(3);
    assert!(matches!(
        driver.run(&mut sts, 5, |_| false).await,
        Stopped::Converged
    ));

    // 5 → 3 voters; the operator "crashes" right after the first removal,
    // a voter that stays is killed and restarted meanwhile, and a new
    // operator, with no memory, finishes the change from observed state.
    let removed_one = |s: &Step| matches!(s, Step::RemoveVoter { .. });
    assert!(matches!(
        driver.run(&mut sts, 3, removed_one).await,
        Stopped::Interrupted
    ));
    sts.kill(1).await;
    sts.start(1);
    let mut restarted = Driver::new(driver.cluster_id.clone());
    assert!(matches!(
        restarted.run(&mut sts, 3, |_| false).await,
        Stopped::Converged
    ));
    assert_eq!(sts.pods.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);

    stop.store(true, Ordering::Relaxed);
    let last_write_error = writer.await.unwrap();

    // Nothing acknowledged is lost.
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 10,
        "writes kept flowing during the changes: {} acknowledged, last error: {last_write_error:?}",
        acked.len()
    );
    // Node 1 was restarted during the change.
    assert_read_back(&sts.client_addrs([1]).pop().unwrap(), &acked).await;

    eprintln!("{} writes acknowledged and read back", acked.len());

    // Every membership step went one voter at a time.
    let all_steps: Vec<&Step> = driver.steps.iter().chain(&restarted.steps).collect();
    let removals = all_steps
        .iter()
        .filter(|s| matches!(s, Step::RemoveVoter { .. }))
        .count();
    assert_eq!(removals, 2, "{all_steps:?}");
    let status = restarted
        .admin
        .status(&sts.pods[&0].member.peer_addr)
        .await
        .unwrap();
    assert_eq!(status.voter_ids(), [0, 1, 2].into_iter().collect());
    eprintln!("steps: {all_steps:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_is_recovered_from_the_survivor_a_person_names() {
    let Some(binary) = node_binary() else {
        return;
    };
    let (mut sts, mut driver) = converged(binary, 3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(write_continuously(
        sts.client_addrs([0]),
        stop.clone(),
        acked.clone(),
    ));
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while acked.lock().await.len() < 20 {
        assert!(Instant::now() < deadline, "no writes acknowledged");
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Node 0 holds every acknowledged write (they went through it; read
    // the last one back to be sure it applied it). Then every pod stops,
    // and pods 1 and 2 come back with new, empty volumes.
    let acked = acked.lock().await.clone();
    assert_read_back(
        &sts.client_addrs([0]).pop().unwrap(),
        &acked[acked.len() - 1..],
    )
    .await;
    for id in 0..3 {
        sts.kill(id).await;
    }
    for id in [1, 2] {
        std::fs::remove_dir_all(sts.data_dir(id)).unwrap();
    }
    for id in 0..3 {
        sts.start(id);
    }

    // No quorum can form: the planner refuses until a person names node 0.
    let lost = |s: &Step| matches!(s, Step::Refuse(Refusal::QuorumLost { .. }));
    assert!(matches!(
        driver.run(&mut sts, 3, lost).await,
        Stopped::Interrupted
    ));
    driver.force_recovery = Some("0".to_owned());
    assert!(matches!(
        driver.run(&mut sts, 3, |_| false).await,
        Stopped::Converged
    ));
    assert!(
        driver.steps.contains(&Step::ForceNewCluster { id: 0 }),
        "{:?}",
        driver.steps
    );
    assert_eq!(driver.force_recovery, None, "the annotation is cleared");
    assert_eq!(driver.forcing, None);

    // Every acknowledged write is there, through a member that rejoined.
    assert_read_back(&sts.client_addrs([2]).pop().unwrap(), &acked).await;
}

/// What a writer saw: uploads that failed for good, and the longest time
/// between two acknowledged uploads (how long the store was unavailable).
struct Writes {
    failures: Vec<(Instant, String)>,
    longest_gap: Duration,
}

/// Uploads recipes through a retrying client of every node, as an
/// application behind the client Service would, until stopped; remembers
/// what was acknowledged.
async fn write_through_client(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Acknowledged,
) -> Writes {
    let client = recipestore_client::Client::new(&addrs).unwrap();
    let mut writes = Writes {
        failures: Vec::new(),
        longest_gap: Duration::ZERO,
    };
    let mut last_ack = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("written-{n:05}");
        let content = format!("{n} onions, {} cloves of garlic", n % 5).into_bytes();
        n += 1;
        match client.upload(&name, content.clone(), None).await {
            Ok(_) => {
                acked.lock().await.push((name, content));
                writes.longest_gap = writes.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
            }
            Err(status) => writes.failures.push((Instant::now(), status.to_string())),
        }
    }
    writes
}

/// How long around a leadership hand-off writes may fail: the old leader
/// steps down and a new one must be elected and learn its commit index.
const HANDOFF_WINDOW: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_restarts_followers_then_the_leader_under_writes_without_losing_any() {
    let Some(binary) = node_binary() else {
        return;
    };
    for replicas in [3u32, 5] {
        let (mut sts, mut driver) = converged(binary.clone(), replicas).await;
        let leader = leader_of(&sts, &driver).await;

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writer = tokio::spawn(write_through_client(
            sts.client_addrs(0..u64::from(replicas)),
            stop.clone(),
            acked.clone(),
        ));

        // A new pod template: the planner rolls every pod onto it.
        sts.revision = "r2".to_owned();
        driver.steps.clear();
        let started = Instant::now();
        assert!(matches!(
            driver.run(&mut sts, replicas, |_| false).await,
            Stopped::Converged
        ));
        let rolled_in = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let Writes { failures, .. } = writer.await.unwrap();

        let restarted: Vec<NodeId> = driver
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::RestartMember { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(
            restarted.len(),
            replicas as usize,
            "each member restarted once: {:?}",
            driver.steps
        );
        // The leader, whichever it was by then, handed leadership over and
        // was restarted last, after every follower.
        let handed_off = driver.steps.iter().rev().find_map(|s| match s {
            Step::TransferLeadership {
                from,
                before: Handoff::Restart,
                ..
            } => Some(*from),
            _ => None,
        });
        assert_eq!(
            restarted.last().copied(),
            handed_off,
            "the leader is restarted last: {:?}",
            driver.steps
        );
        assert!(sts.pods.values().all(|p| p.revision == "r2"));
        let outside_handoff: Vec<_> = failures
            .iter()
            .filter(|(at, _)| {
                !driver
                    .handoffs
                    .iter()
                    .any(|h| *at >= *h && *at - *h <= HANDOFF_WINDOW)
            })
            .collect();
        assert!(
            outside_handoff.is_empty(),
            "writes failed outside the leader hand-off: {outside_handoff:?}"
        );

        // Nothing acknowledged is lost, read through the leader of before.
        let acked = acked.lock().await.clone();
        assert!(acked.len() > 10, "writes flowed: {}", acked.len());
        assert_read_back(&sts.client_addrs([leader]).pop().unwrap(), &acked).await;
        eprintln!(
            "{replicas} members rolled in {rolled_in:.1?} under {} acknowledged writes, {} failed within the hand-off window",
            acked.len(),
            failures.len()
        );
    }
}

/// The longest a store may be unavailable to a retrying client while its
/// membership changes: one election (at most 1.2 s with the test timings),
/// the client's backoff, and slack for a two-core machine running builds.
const ONE_ELECTION: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_three_five_three_one_three_under_writes_loses_nothing() {
    let Some(binary) = node_binary() else {
        return;
    };
    let (mut sts, mut driver) = converged(binary, 3).await;
    // Node 0 stays through every size: leadership on it keeps every
    // scale-in below from needing a hand-off, so move it away on purpose.
    let leader = leader_of(&sts, &driver).await;
    if leader != 2 {
        let addr = sts.pods[&leader].member.peer_addr.clone();
        driver.admin.transfer_leadership(&addr, 2).await.unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    // The addresses of pods 3 and 4 are fixed before they exist, as DNS names are.
    sts.member(3);
    sts.member(4);
    let writer = tokio::spawn(write_through_client(
        sts.client_addrs(0..5),
        stop.clone(),
        acked.clone(),
    ));
    let mut sizes = Vec::new();
    for replicas in [5, 3, 1, 3] {
        let started = Instant::now();
        assert!(matches!(
            driver.run(&mut sts, replicas, |_| false).await,
            Stopped::Converged
        ));
        sizes.push((replicas, started.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();

    let acked = acked.lock().await.clone();
    assert!(acked.len() > 10, "writes flowed: {}", acked.len());
    assert!(
        writes.failures.is_empty(),
        "writes failed: {:?}",
        writes.failures
    );
    assert!(
        writes.longest_gap <= ONE_ELECTION,
        "unavailable for {:?}",
        writes.longest_gap
    );
    assert!(
        driver.steps.iter().any(|s| matches!(
            s,
            Step::TransferLeadership {
                from: 2,
                before: Handoff::Removal,
                ..
            }
        )),
        "the leader was moved before its removal: {:?}",
        driver.steps
    );
    assert_read_back(&sts.client_addrs([1]).pop().unwrap(), &acked).await;
    eprintln!(
        "3→5→3→1→3 in {sizes:.1?} under {} acknowledged writes, longest gap {:.1?}",
        acked.len(),
        writes.longest_gap
    );
}

/// Two shards of real nodes, each driven by the membership planner, placed
/// by the placement planner as the controller places a new store; then a
/// recipe of shard 1's slots, written through shard 0's node, is read
/// through shard 1's, and a placement sent again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_placement_planner_places_two_shards_of_real_nodes_that_pass_calls_on() {
    let Some(binary) = node_binary() else {
        return;
    };
    let (shard0, driver0) = converged(binary.clone(), 1).await;
    let (shard1, driver1) = converged(binary, 1).await;
    let admin = &driver0.admin;
    let stores = [(&shard0, &driver0), (&shard1, &driver1)];

    let observe = || observe_shards(&stores, 2, false);
    let placings = match placement::plan(&observe().await) {
        placement::Decision::Place(placings) => placings,
        other => panic!("a new store of two led shards is placed: {other:?}"),
    };
    assert_eq!(placings.len(), 2);
    for placing in &placings {
        let epoch = admin
            .place(&placing.leader, placing.placement.clone())
            .await
            .unwrap_or_else(|e| panic!("shard {} placed: {e}", placing.shard));
        assert_eq!(epoch, 1);
    }
    // The groups report their placements: the planner is steady, and the
    // same placement sent again is taken as done.
    let placed = observe().await;
    assert_eq!(placement::plan(&placed), placement::Decision::Steady);
    let owned: Vec<usize> = placed
        .shards
        .iter()
        .map(|s| {
            let p = s.placement.as_ref().expect("a placement");
            p.owners.iter().filter(|&&o| o == s.shard).count()
        })
        .collect();
    assert_eq!(owned, [512, 512]);
    assert_eq!(
        admin
            .place(&placings[1].leader, placings[1].placement.clone())
            .await
            .unwrap(),
        1
    );

    // A name in shard 1's slots, written through shard 0's node.
    let name = (0..)
        .map(|i| format!("soup-{i}"))
        .find(|n| recipestore_protocol::slots::slot_of(n) >= 512)
        .unwrap();
    let content = b"leeks, potatoes, stock".to_vec();
    let through_shard0 = shard0.pods[&0].member.client_addr.clone();
    let mut client = RecipesClient::connect(format!("http://{through_shard0}"))
        .await
        .unwrap();
    client
        .upload(UploadRequest {
            name: name.clone(),
            content: content.clone(),
            if_version: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{name} written through shard 0: {e}"));
    // Shard 1 holds it: read there, and through shard 0 again.
    assert_read_back(
        &shard1.pods[&0].member.client_addr,
        &[(name.clone(), content.clone())],
    )
    .await;
    assert_read_back(&through_shard0, &[(name, content)]).await;
}

/// A store that ran with one shard of real nodes grows to two and shrinks
/// back as the controller drives it: the placement planner asks for moves,
/// and each pass takes one step of the slot-move driver, while a client
/// writes through every node; no write fails and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_one_step_a_pass_to_a_second_shard_and_back_under_writes() {
    let Some(binary) = node_binary() else {
        return;
    };
    let (shard0, driver0) = converged(binary.clone(), 1).await;
    let (shard1, driver1) = converged(binary, 1).await;
    let admin = &driver0.admin;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut endpoints = shard0.client_addrs([0]);
    endpoints.extend(shard1.client_addrs([0]));
    let writer = tokio::spawn(write_through_client(endpoints, stop.clone(), acked.clone()));

    let stores = [(&shard0, &driver0), (&shard1, &driver1)];
    for target in [2, 1] {
        let mut steps = 0;
        loop {
            let inputs = observe_shards(&stores, target, true).await;
            match placement::plan(&inputs) {
                placement::Decision::Move(_) => {}
                placement::Decision::Steady => break,
                other => panic!("to {target} shards: {other:?}"),
            }
            let addrs = ShardAddrs::of(&inputs);
            let pace = recipestore_client::reshard::Pace {
                batch_slots: 128,
                ..recipestore_client::reshard::Pace::default()
            };
            admin
                .reshard_step(&addrs, target, pace)
                .await
                .unwrap_or_else(|e| panic!("a step to {target} shards: {e}"));
            steps += 1;
            assert!(
                steps <= 10,
                "to {target} shards in 4 batches and a last step"
            );
        }
        // 512 slots in batches of 128: four steps, the last of which also
        // readdresses every group (growing also placed both groups first).
        assert_eq!(steps, 4, "to {target} shards");
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(
        writes.failures.is_empty(),
        "writes failed: {:?}",
        writes.failures
    );
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 10, "writes flowed: {}", acked.len());
    assert_read_back(&shard0.client_addrs([0]).pop().unwrap(), &acked).await;
}

/// What the controller gives the placement planner for shards `stores`
/// (shard k at index k): each group as its leader reports it.
async fn observe_shards(
    stores: &[(&LocalStatefulSet, &Driver)],
    target: u16,
    ran_unsharded: bool,
) -> placement::Inputs {
    let mut shards = Vec::new();
    for (k, (sts, driver)) in stores.iter().enumerate() {
        let leader = leader_of(sts, driver).await;
        let leader_addr = sts.pods[&leader].member.peer_addr.clone();
        let status = driver.admin.status(&leader_addr).await.unwrap();
        shards.push(placement::Shard {
            shard: u16::try_from(k).unwrap(),
            leader: Some(leader_addr.clone()),
            placement: status.placement,
            client_addrs: sts.client_addrs([0]),
            peer_addrs: vec![leader_addr],
        });
    }
    placement::Inputs {
        target,
        shards,
        ran_unsharded,
    }
}
