//! The faults a run injects into a cluster of real node processes, and how
//! each is healed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use rand::Rng;
use rand::rngs::StdRng;
use recipectl::local_cluster::LocalCluster;

use crate::network::Network;

/// A kind of fault; a run injects one kind repeatedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL a random node, restart it after 0.1-5 s.
    KillNode,
    /// SIGKILL the leader, restart it after 0.1-5 s; half the restarts
    /// come back within the election timeout.
    KillLeader,
    /// SIGKILL every node at once, restart them all after 0.1-2 s.
    KillAll,
    /// SIGSTOP a random node for 0.2-4 s.
    PauseNode,
    /// SIGSTOP the leader for 0.2-4 s.
    PauseLeader,
    /// Add a learner, promote it, remove a random voter (often the
    /// leader), over and over, while the workload runs.
    Membership,
    /// Cut the leader off from every other node for 0.5-4 s (clients still
    /// reach it).
    IsolateLeader,
    /// Cut a random node off from the others for 0.5-4 s.
    IsolateNode,
    /// Cut the link between the leader and one follower for 0.5-4 s; the
    /// other follower still sees both (a bridge).
    Bridge,
    /// Five voters split 3/2 at random for 0.5-4 s.
    Split,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::KillNode,
        Fault::KillLeader,
        Fault::KillAll,
        Fault::PauseNode,
        Fault::PauseLeader,
        Fault::Membership,
        Fault::IsolateLeader,
        Fault::IsolateNode,
        Fault::Bridge,
        Fault::Split,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillNode => "kill-node",
            Fault::KillLeader => "kill-leader",
            Fault::KillAll => "kill-all",
            Fault::PauseNode => "pause-node",
            Fault::PauseLeader => "pause-leader",
            Fault::Membership => "membership",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateNode => "isolate-node",
            Fault::Bridge => "bridge",
            Fault::Split => "split",
        }
    }

    /// Voters the cluster starts with.
    pub fn voters(self) -> u64 {
        if self == Fault::Split { 5 } else { 3 }
    }

    /// Node processes the cluster lays out: membership runs keep a spare
    /// that takes turns with the voters.
    pub fn nodes(self) -> u64 {
        self.voters() + u64::from(self == Fault::Membership)
    }

    /// Whether the nodes need network namespaces of their own.
    pub fn partitions(self) -> bool {
        matches!(
            self,
            Fault::IsolateLeader | Fault::IsolateNode | Fault::Bridge | Fault::Split
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?}; one of {}", names.join(", "))
            })
    }
}

/// The leader a majority of running nodes agree on, if any within `wait`.
async fn leader(cluster: &LocalCluster, wait: Duration) -> Option<u64> {
    cluster.wait_for_leader(wait).await.ok()
}

fn random_running(cluster: &LocalCluster, rng: &mut StdRng) -> Option<u64> {
    let running: Vec<u64> = cluster
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(|n| n.id)
        .collect();
    (!running.is_empty()).then(|| running[rng.random_range(0..running.len())])
}

/// How long a killed node stays down: half the time shorter than an
/// election timeout, so it comes back before anyone elects a new leader.
fn downtime(rng: &mut StdRng) -> Duration {
    if rng.random_bool(0.5) {
        Duration::from_millis(rng.random_range(100..400))
    } else {
        Duration::from_millis(rng.random_range(400..5000))
    }
}

/// Injects one fault of `kind` and heals it; returns a line describing it,
/// or `None` when the cluster gave no target (no leader agreed on).
pub async fn inject(
    kind: Fault,
    cluster: &mut LocalCluster,
    network: Option<&Network>,
    rng: &mut StdRng,
) -> anyhow::Result<Option<String>> {
    if kind.partitions() {
        let network = network.ok_or_else(|| anyhow::anyhow!("{kind} needs a network"))?;
        return partition(kind, cluster, network, rng).await;
    }
    match kind {
        Fault::KillNode | Fault::KillLeader => {
            let target = if kind == Fault::KillLeader {
                leader(cluster, Duration::from_secs(3)).await
            } else {
                random_running(cluster, rng)
            };
            let Some(id) = target else { return Ok(None) };
            let down = downtime(rng);
            cluster.node(id).kill();
            tokio::time::sleep(down).await;
            cluster.node(id).start()?;
            Ok(Some(format!("killed node {id}, restarted after {down:?}")))
        }
        Fault::KillAll => {
            let down = Duration::from_millis(rng.random_range(100..2000));
            for node in &mut cluster.nodes {
                node.kill();
            }
            tokio::time::sleep(down).await;
            cluster.start_all()?;
            Ok(Some(format!("killed every node, restarted after {down:?}")))
        }
        Fault::PauseNode | Fault::PauseLeader => {
            let target = if kind == Fault::PauseLeader {
                leader(cluster, Duration::from_secs(3)).await
            } else {
                random_running(cluster, rng)
            };
            let Some(id) = target else { return Ok(None) };
            let pause = Duration::from_millis(rng.random_range(200..4000));
            cluster.node(id).signal(Signal::SIGSTOP)?;
            tokio::time::sleep(pause).await;
            cluster.node(id).signal(Signal::SIGCONT)?;
            Ok(Some(format!("paused node {id} for {pause:?}")))
        }
        Fault::Membership => change_membership(cluster, rng).await,
        Fault::IsolateLeader | Fault::IsolateNode | Fault::Bridge | Fault::Split => {
            unreachable!("partitions are handled above")
        }
    }
}

/// Cuts links between nodes as `kind` says, waits, heals.
async fn partition(
    kind: Fault,
    cluster: &LocalCluster,
    network: &Network,
    rng: &mut StdRng,
) -> anyhow::Result<Option<String>> {
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let leader = leader(cluster, Duration::from_secs(3)).await;
    let cuts: Vec<(u64, u64)> = match kind {
        Fault::IsolateLeader | Fault::IsolateNode => {
            let target = if kind == Fault::IsolateLeader {
                let Some(leader) = leader else {
                    return Ok(None);
                };
                leader
            } else {
                ids[rng.random_range(0..ids.len())]
            };
            ids.iter()
                .filter(|id| **id != target)
                .map(|id| (target, *id))
                .collect()
        }
        Fault::Bridge => {
            let Some(leader) = leader else {
                return Ok(None);
            };
            let followers: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
            vec![(leader, followers[rng.random_range(0..followers.len())])]
        }
        Fault::Split => {
            let mut shuffled = ids.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            let (minority, majority) = shuffled.split_at(2);
            minority
                .iter()
                .flat_map(|a| majority.iter().map(move |b| (*a, *b)))
                .collect()
        }
        _ => unreachable!("not a partition"),
    };
    let length = Duration::from_millis(rng.random_range(500..4000));
    for (a, b) in &cuts {
        network.cut(*a, *b)?;
    }
    tokio::time::sleep(length).await;
    network.heal()?;
    Ok(Some(format!(
        "cut {cuts:?} for {length:?} (leader was {leader:?})"
    )))
}

/// One membership step: bring the member that is not a voter in as a
/// learner and promote it, or, with four voters, remove a random one.
async fn change_membership(
    cluster: &mut LocalCluster,
    rng: &mut StdRng,
) -> anyhow::Result<Option<String>> {
    let Some(leader_id) = leader(cluster, Duration::from_secs(3)).await else {
        return Ok(None);
    };
    let status = cluster.nodes[leader_id as usize].status().await?;
    let voters: Vec<u64> = status.voters.iter().map(|m| m.id).collect();
    let admin = cluster.nodes[leader_id as usize].admin();
    if voters.len() > 3 {
        let id = voters[rng.random_range(0..voters.len())];
        return Ok(Some(match admin.remove_member(id).await {
            Ok(_) => format!("removed voter {id} (leader {leader_id})"),
            Err(e) => format!("removing voter {id} failed: {e}"),
        }));
    }
    let Some(spare) = cluster.nodes.iter().find(|n| !voters.contains(&n.id)) else {
        return Ok(None);
    };
    let member = spare.member();
    let id = member.id;
    if let Err(e) = admin.add_learner(member, true).await {
        return Ok(Some(format!("adding learner {id} failed: {e}")));
    }
    Ok(Some(match admin.promote(id).await {
        Ok(_) => format!("added and promoted node {id}"),
        Err(e) => format!("promoting node {id} failed: {e}"),
    }))
}
