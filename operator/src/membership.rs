//! Raft membership planning: from what is observed right now (desired
//! replicas, the pods that exist, and each node's own admin `Status`) decide
//! the one next step that moves the cluster towards the desired voters without
//! ever risking quorum.
//!
//! The planner is a pure function with no Kubernetes types and no memory of
//! earlier calls: an operator restarted in the middle of a change observes the
//! half-done change and continues it. Its rules, in order:
//!
//! 1. Not initialized anywhere: initialize ordinal 0 alone, once. If the
//!    resource already recorded a cluster id but every reachable node is empty,
//!    the data is gone: refuse rather than silently start a new cluster.
//! 2. No current leader of the cluster (highest term, in touch with its
//!    quorum): wait. Nothing changes membership without one. If no node
//!    holds the recorded cluster any more, refuse whatever cluster they hold.
//!    If so many voters answer without the cluster's data that a quorum can
//!    never form again, refuse (`QuorumLost`) until a person names a
//!    survivor in the force-recovery annotation; then restart that survivor
//!    as the only voter (`ForceNewCluster`), and the rules below add the
//!    others back.
//! 3. A learner inside the desired ordinals: promote it once caught up.
//! 4. A learner above the desired ordinals (a scale-out reversed midway):
//!    remove it. Learners do not vote, so this never touches quorum.
//! 5. The StatefulSet has pods above the highest voter and above the desired
//!    count: shrink it (the removal of those voters is already committed).
//! 6. A voter above the desired ordinals: remove the highest one, moving
//!    leadership away first if it is the leader.
//! 7. A desired pod that is running, reachable and not yet a member: add it as
//!    a learner. A node that belongs to another cluster is refused.
//! 8. Membership is steady: roll the pods onto the StatefulSet's update
//!    revision, one member at a time, the leader last ([`crate::rollout`]).
//!
//! Every membership change keeps a healthy (caught-up) majority of both the
//! current and the new voter set, since joint consensus needs both, and at
//! most one voter is added or removed per step. A pod that is down or
//! restarting changes nothing: scale-in is decided by `desired_replicas` alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::rollout::{self, Gate};

/// Node id: the StatefulSet ordinal of the node's pod.
pub type NodeId = u64;

/// A member as Raft knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// `host:port` of the peer (Raft + admin) server.
    pub peer_addr: String,
    /// `host:port` of the client server.
    pub client_addr: String,
}

/// Role a node reports for itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
    #[default]
    Unknown,
}

/// One node's answer to the admin `Status` call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    /// Empty until the node is initialized or has joined a cluster.
    pub cluster_id: String,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub voters: Vec<Member>,
    pub learners: Vec<Member>,
    pub last_log_index: u64,
    pub committed_index: u64,
    /// On the leader: highest log index known replicated to each member.
    pub matched_index: BTreeMap<NodeId, u64>,
    /// On the leader: time since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Client requests the node admitted and shed over its last `recent_seconds`.
    pub recent_admitted: u64,
    pub recent_shed: u64,
    pub recent_seconds: u64,
    /// The shedding settings the node runs with, when it says.
    pub shedding: Option<recipestore_settings::Shedding>,
    /// The placement the node's group holds; `None` in an unsharded store.
    pub placement: Option<crate::placement::GroupPlacement>,
}

impl NodeStatus {
    pub fn voter_ids(&self) -> BTreeSet<NodeId> {
        self.voters.iter().map(|m| m.id).collect()
    }

    pub fn learner_ids(&self) -> BTreeSet<NodeId> {
        self.learners.iter().map(|m| m.id).collect()
    }

    /// How far `id` trails this node's log, when this node is the leader and knows.
    pub fn lag_of(&self, id: NodeId) -> Option<u64> {
        if id == self.id {
            return Some(0);
        }
        self.matched_index
            .get(&id)
            .map(|m| self.last_log_index.saturating_sub(*m))
    }
}

/// A pod of the StatefulSet as the planner needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The member this pod runs, with its stable addresses.
    pub member: Member,
    /// The container runs and the pod is not being deleted. The readiness
    /// probe is deliberately not used to gate joining: a node reports ready
    /// only once it serves, which may need it to be a member first.
    pub running: bool,
    /// The pod's Ready condition: what a rolling upgrade waits for.
    pub ready: bool,
    /// The pod is being deleted (its replacement comes from the update
    /// revision).
    pub deleting: bool,
    /// The StatefulSet revision the pod was created from.
    pub revision: Option<String>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Desired number of voters (`spec.replicas`).
    pub desired_replicas: u32,
    /// Current `spec.replicas` of the StatefulSet, 0 if it does not exist yet.
    pub statefulset_replicas: u32,
    /// Pods that exist, by ordinal.
    pub pods: BTreeMap<NodeId, Pod>,
    /// Nodes that answered `Status`, by ordinal.
    pub nodes: BTreeMap<NodeId, NodeStatus>,
    /// Cluster id recorded in the resource's status once initialized.
    pub recorded_cluster_id: Option<String>,
    /// The member a person named to recover a lost quorum with, as written
    /// in the resource's `recipestore.dev/force-recovery` annotation.
    pub force_recovery: Option<String>,
    /// The member the nodes' configuration tells to force a new cluster.
    pub forcing: Option<NodeId>,
    /// The StatefulSet revision every pod should run (`status.updateRevision`).
    pub update_revision: Option<String>,
}

/// Tunables of the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A member whose log trails the leader's by at most this many entries is caught up.
    pub max_catch_up_lag: u64,
    /// A leader that has not heard from a quorum for longer is not trusted to lead.
    pub max_quorum_ack_millis: u64,
    /// A rolling upgrade waits while a member sheds a larger share of its
    /// recent client requests.
    pub max_shed_percent: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_catch_up_lag: 64,
            max_quorum_ack_millis: 5_000,
            max_shed_percent: 5,
        }
    }
}

/// The one next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the cluster on this node, with itself as the only voter.
    Initialize { member: Member },
    /// Add a non-voting member that starts receiving the log.
    AddLearner { member: Member },
    /// Make a caught-up learner a voter: `voters` is the new voter set.
    PromoteLearner {
        id: NodeId,
        voters: BTreeSet<NodeId>,
    },
    /// Drop a learner that is no longer wanted.
    RemoveLearner { id: NodeId },
    /// Hand leadership away from a voter that is about to be removed or restarted.
    TransferLeadership {
        from: NodeId,
        to: NodeId,
        before: Handoff,
    },
    /// Drop one voter: `voters` is the new voter set.
    RemoveVoter {
        id: NodeId,
        voters: BTreeSet<NodeId>,
    },
    /// Delete the pod of this member so that the StatefulSet recreates it
    /// from `revision`: one step of a rolling upgrade.
    RestartMember { id: NodeId, revision: String },
    /// Shrink the StatefulSet; the members it drops are already removed.
    ShrinkStatefulSet { from: u32, to: u32 },
    /// Restart this survivor of a lost quorum as its cluster's only voter
    /// (the node's `--force-new-cluster`), as a person asked.
    ForceNewCluster { id: NodeId },
    /// Nothing can be done safely right now.
    Wait(WaitReason),
    /// Something needs a person: the planner will not act on it.
    Refuse(Refusal),
    /// The membership matches the spec.
    Steady,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The pod of this ordinal does not exist yet.
    PodMissing(NodeId),
    /// The pod exists but its container is not running.
    PodNotRunning(NodeId),
    /// The node did not answer `Status`.
    NodeUnreachable(NodeId),
    /// No node is leader, or the leader is stale or out of touch with its quorum.
    NoLeader,
    /// A learner is still replicating the log.
    LearnerCatchingUp { id: NodeId, lag: Option<u64> },
    /// The change would leave fewer healthy voters than a quorum of the new set.
    QuorumAtRisk { healthy: usize, voters: usize },
    /// The survivor restarts as its cluster's only voter.
    ForcingNewCluster(NodeId),
    /// A rolling upgrade waits for a gate.
    RollHeld(Gate),
}

/// What a leadership hand-off prepares for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// The leader leaves the voters (scale-in).
    Removal,
    /// The leader's pod restarts on a new revision (rolling upgrade).
    Restart,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node's data belongs to another cluster: it is fenced and never joined.
    Fenced { id: NodeId, cluster_id: String },
    /// The recorded cluster is gone: nodes answer but none has its data.
    ClusterLost { cluster_id: String },
    /// The elected leader belongs to another cluster than the recorded one.
    ForeignCluster { expected: String, found: String },
    /// Too many voters lost their data for a quorum ever to form again.
    QuorumLost {
        voters: BTreeSet<NodeId>,
        lost: BTreeSet<NodeId>,
        survivors: Vec<Survivor>,
    },
    /// The force-recovery annotation names no survivor of a lost quorum.
    NotASurvivor {
        named: String,
        survivors: Vec<Survivor>,
    },
}

/// A voter that still holds its cluster's data after the quorum was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Survivor {
    pub id: NodeId,
    pub last_log_index: u64,
    pub term: u64,
}

/// The annotation with which a person names the member to recover a lost
/// quorum with.
pub const FORCE_RECOVERY_ANNOTATION: &str = "recipestore.dev/force-recovery";

/// A node that answered with another cluster's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    pub id: NodeId,
    pub cluster_id: String,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub step: Step,
    /// `spec.replicas` the StatefulSet should have after this step.
    pub statefulset_replicas: u32,
    /// The leader the step is sent to, when there is one.
    pub leader: Option<Member>,
    /// The cluster the nodes should belong to, once known.
    pub cluster_id: Option<String>,
    /// Nodes reporting another cluster's id.
    pub fenced: Vec<Fenced>,
    /// The member the nodes' configuration should tell to force a new
    /// cluster: set while one recovers a lost quorum.
    pub forcing: Option<NodeId>,
    /// The force-recovery annotation has done its work (a leader is back)
    /// and should go, so that it never acts on a later loss unasked.
    pub clear_force_recovery: bool,
}

impl Step {
    /// Whether this step changes the cluster (as opposed to waiting or refusing).
    pub fn is_change(&self) -> bool {
        !matches!(self, Step::Wait(_) | Step::Refuse(_) | Step::Steady)
    }

    /// PascalCase name, used as Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Step::Initialize { .. } => "Initialize",
            Step::AddLearner { .. } => "AddLearner",
            Step::PromoteLearner { .. } => "PromoteLearner",
            Step::RemoveLearner { .. } => "RemoveLearner",
            Step::TransferLeadership { .. } => "TransferLeadership",
            Step::RemoveVoter { .. } => "RemoveVoter",
            Step::RestartMember { .. } => "RestartMember",
            Step::ShrinkStatefulSet { .. } => "ShrinkStatefulSet",
            Step::ForceNewCluster { .. } => "ForceNewCluster",
            Step::Wait(w) => w.reason(),
            Step::Refuse(r) => r.reason(),
            Step::Steady => "Steady",
        }
    }
}

impl WaitReason {
    pub fn reason(&self) -> &'static str {
        match self {
            WaitReason::PodMissing(_) => "WaitingForPod",
            WaitReason::PodNotRunning(_) => "WaitingForPod",
            WaitReason::NodeUnreachable(_) => "NodeUnreachable",
            WaitReason::NoLeader => "NoLeader",
            WaitReason::LearnerCatchingUp { .. } => "LearnerCatchingUp",
            WaitReason::QuorumAtRisk { .. } => "QuorumAtRisk",
            WaitReason::ForcingNewCluster(_) => "ForcingNewCluster",
            WaitReason::RollHeld(_) => "RollHeld",
        }
    }
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Fenced { .. } => "NodeFenced",
            Refusal::ClusterLost { .. } => "ClusterLost",
            Refusal::ForeignCluster { .. } => "ForeignCluster",
            Refusal::QuorumLost { .. } => "QuorumLost",
            Refusal::NotASurvivor { .. } => "NotASurvivor",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Initialize { member } => {
                write!(f, "initializing the cluster on node {}", member.id)
            }
            Step::AddLearner { member } => {
                write!(
                    f,
                    "adding node {} ({}) as a learner",
                    member.id, member.peer_addr
                )
            }
            Step::PromoteLearner { id, voters } => {
                write!(
                    f,
                    "promoting caught-up learner {id} to voter; voters become {voters:?}"
                )
            }
            Step::RemoveLearner { id } => {
                write!(
                    f,
                    "removing learner {id}, which is above the desired replicas"
                )
            }
            Step::TransferLeadership { from, to, before } => {
                let next = match before {
                    Handoff::Removal => "removing",
                    Handoff::Restart => "restarting",
                };
                write!(
                    f,
                    "moving leadership from node {from} to node {to} before {next} node {from}"
                )
            }
            Step::RestartMember { id, revision } => write!(
                f,
                "restarting node {id} to update it to revision {revision}"
            ),
            Step::RemoveVoter { id, voters } => {
                write!(f, "removing voter {id}; voters become {voters:?}")
            }
            Step::ShrinkStatefulSet { from, to } => {
                write!(f, "shrinking the StatefulSet from {from} to {to} pods")
            }
            Step::ForceNewCluster { id } => write!(
                f,
                "restarting node {id} as the only voter of its cluster, as the {FORCE_RECOVERY_ANNOTATION} annotation asks; the other members then rejoin as new ones"
            ),
            Step::Wait(w) => write!(f, "{w}"),
            Step::Refuse(r) => write!(f, "{r}"),
            Step::Steady => write!(f, "membership matches the spec"),
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::PodMissing(id) => {
                write!(f, "waiting for the pod of node {id} to be created")
            }
            WaitReason::PodNotRunning(id) => write!(f, "waiting for the pod of node {id} to run"),
            WaitReason::NodeUnreachable(id) => write!(f, "node {id} does not answer its admin API"),
            WaitReason::NoLeader => {
                write!(f, "the cluster has no leader; membership is left alone")
            }
            WaitReason::LearnerCatchingUp { id, lag: Some(lag) } => {
                write!(f, "learner {id} is {lag} entries behind the leader")
            }
            WaitReason::LearnerCatchingUp { id, lag: None } => {
                write!(
                    f,
                    "learner {id} has not reported progress to the leader yet"
                )
            }
            WaitReason::QuorumAtRisk { healthy, voters } => write!(
                f,
                "only {healthy} of {voters} voters would be healthy after the change; waiting for members to recover"
            ),
            WaitReason::ForcingNewCluster(id) => write!(
                f,
                "waiting for node {id} to restart as the only voter of its cluster"
            ),
            WaitReason::RollHeld(gate) => write!(f, "rolling upgrade held: {gate}"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Fenced { id, cluster_id } => write!(
                f,
                "node {id} holds data of another cluster ({cluster_id}); it is fenced and will not be joined — delete its volume to reuse it"
            ),
            Refusal::ClusterLost { cluster_id } => write!(
                f,
                "no reachable node holds data of cluster {cluster_id}; refusing to initialize a new, empty cluster over it"
            ),
            Refusal::ForeignCluster { expected, found } => write!(
                f,
                "the elected leader belongs to cluster {found}, not to the recorded cluster {expected}"
            ),
            Refusal::QuorumLost {
                voters,
                lost,
                survivors,
            } => {
                write!(
                    f,
                    "quorum lost: voters {lost:?} of {voters:?} lost their data, so no leader can be elected again; survivors: {}",
                    describe(survivors)
                )?;
                match most_up_to_date(survivors) {
                    Some(best) => write!(
                        f,
                        "; node {best} is the most up to date: to restart it as the only voter, keeping its data, and add the others back, annotate the RecipeStore with {FORCE_RECOVERY_ANNOTATION}={best:?} (writes acknowledged by a quorum without it are lost)",
                        best = best.to_string()
                    ),
                    None => write!(f, "; none holds the data, restore from a backup"),
                }
            }
            Refusal::NotASurvivor { named, survivors } => write!(
                f,
                "{FORCE_RECOVERY_ANNOTATION}={named:?} names no survivor of the lost quorum; survivors: {}",
                describe(survivors)
            ),
        }
    }
}

/// Survivors as `node 1 (log 1520, term 4), ...`.
fn describe(survivors: &[Survivor]) -> String {
    if survivors.is_empty() {
        return "none".to_owned();
    }
    survivors
        .iter()
        .map(|s| format!("node {} (log {}, term {})", s.id, s.last_log_index, s.term))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The survivor with the longest log (then the newest term): the one that
/// holds every entry any survivor holds.
pub fn most_up_to_date(survivors: &[Survivor]) -> Option<NodeId> {
    survivors
        .iter()
        .max_by_key(|s| (s.last_log_index, s.term, std::cmp::Reverse(s.id)))
        .map(|s| s.id)
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Plans the one next step. Pure and deterministic.
pub fn plan(observed: &Observed, policy: &Policy) -> Plan {
    let desired = observed.desired_replicas;
    let current = observed.statefulset_replicas;
    // Growing the StatefulSet is always safe: a new pod joins nothing until
    // it is added. Shrinking is only ever a planned step.
    let grown = current.max(desired);
    let mut plan = Plan {
        step: Step::Steady,
        statefulset_replicas: grown,
        leader: None,
        cluster_id: observed.recorded_cluster_id.clone(),
        fenced: Vec::new(),
        forcing: None,
        clear_force_recovery: false,
    };

    let any_initialized = observed.nodes.values().any(|n| !n.cluster_id.is_empty());
    if !any_initialized {
        plan.step = plan_bootstrap(observed);
        return plan;
    }

    let Some(leader) = find_leader(observed, policy) else {
        plan.fenced = fenced(observed, observed.recorded_cluster_id.as_deref());
        (plan.step, plan.forcing) = plan_without_leader(observed);
        return plan;
    };
    plan.clear_force_recovery = observed.force_recovery.is_some();
    if let Some(expected) = &observed.recorded_cluster_id
        && *expected != leader.cluster_id
    {
        plan.fenced = fenced(observed, Some(expected));
        plan.step = Step::Refuse(Refusal::ForeignCluster {
            expected: expected.clone(),
            found: leader.cluster_id.clone(),
        });
        return plan;
    }
    plan.cluster_id = Some(leader.cluster_id.clone());
    plan.fenced = fenced(observed, Some(&leader.cluster_id));
    plan.leader = leader
        .voters
        .iter()
        .find(|m| m.id == leader.id)
        .cloned()
        .or_else(|| observed.pods.get(&leader.id).map(|p| p.member.clone()));

    let voters = leader.voter_ids();
    let learners = leader.learner_ids();
    let in_desired = |id: NodeId| id < u64::from(desired);

    // Rule 3: promote the lowest learner that should be a voter.
    if let Some(&id) = learners.iter().find(|id| in_desired(**id)) {
        let lag = leader.lag_of(id);
        if lag.is_none_or(|lag| lag > policy.max_catch_up_lag) {
            plan.step = Step::Wait(WaitReason::LearnerCatchingUp { id, lag });
            return plan;
        }
        let mut next = voters.clone();
        next.insert(id);
        plan.step = guarded_change(leader, policy, &next, || Step::PromoteLearner {
            id,
            voters: next.clone(),
        });
        return plan;
    }

    // Rule 4: a learner that should not exist leaves, highest first.
    if let Some(&id) = learners.iter().rev().find(|id| !in_desired(**id)) {
        plan.step = Step::RemoveLearner { id };
        return plan;
    }

    // Rule 5: drop pods whose members are already gone, never below `desired`
    // and never below the highest voter.
    let highest_voter = voters.iter().next_back().copied();
    let needed = highest_voter.map_or(0, |v| u32::try_from(v + 1).unwrap_or(u32::MAX));
    let target = desired.max(needed);
    if target < current {
        plan.statefulset_replicas = target;
        plan.step = Step::ShrinkStatefulSet {
            from: current,
            to: target,
        };
        return plan;
    }

    // Rule 6: remove the highest voter beyond the desired ordinals.
    if let Some(id) = highest_voter.filter(|v| !in_desired(*v)) {
        let mut next = voters.clone();
        next.remove(&id);
        if next.is_empty() {
            plan.step = Step::Wait(WaitReason::QuorumAtRisk {
                healthy: 0,
                voters: 0,
            });
            return plan;
        }
        if id == leader.id {
            let successor = next
                .iter()
                .copied()
                .find(|v| is_healthy(leader, policy, *v));
            plan.step = match successor {
                Some(to) => Step::TransferLeadership {
                    from: id,
                    to,
                    before: Handoff::Removal,
                },
                None => Step::Wait(WaitReason::QuorumAtRisk {
                    healthy: 0,
                    voters: next.len(),
                }),
            };
            return plan;
        }
        plan.step = guarded_change(leader, policy, &next, || Step::RemoveVoter {
            id,
            voters: next.clone(),
        });
        return plan;
    }

    // Rule 7: add the lowest desired ordinal that is not a member yet.
    let missing = (0..u64::from(desired)).find(|id| !voters.contains(id) && !learners.contains(id));
    if let Some(id) = missing {
        plan.step = match (observed.pods.get(&id), observed.nodes.get(&id)) {
            (None, _) => Step::Wait(WaitReason::PodMissing(id)),
            (Some(pod), _) if !pod.running => Step::Wait(WaitReason::PodNotRunning(id)),
            (Some(_), None) => Step::Wait(WaitReason::NodeUnreachable(id)),
            (Some(_), Some(node))
                if !node.cluster_id.is_empty() && node.cluster_id != leader.cluster_id =>
            {
                Step::Refuse(Refusal::Fenced {
                    id,
                    cluster_id: node.cluster_id.clone(),
                })
            }
            (Some(pod), Some(_)) => Step::AddLearner {
                member: pod.member.clone(),
            },
        };
        return plan;
    }

    // Rule 8: membership is steady; roll pods onto a new revision.
    if let Some(step) = rollout::plan(observed, leader, policy) {
        plan.step = step;
    }
    plan
}

/// Rule 2 when no leader is found: wait for one, unless too many voters
/// lost their data for a quorum ever to form again. Then only a person can
/// choose to go on with a survivor's data (the force-recovery annotation);
/// answers the step and the member the nodes' configuration should tell
/// to force a new cluster.
fn plan_without_leader(observed: &Observed) -> (Step, Option<NodeId>) {
    let wait = (Step::Wait(WaitReason::NoLeader), None);
    // The voters as the node that saw the newest term knows them.
    let cluster = |n: &&NodeStatus| {
        !n.cluster_id.is_empty()
            && observed
                .recorded_cluster_id
                .as_ref()
                .is_none_or(|c| *c == n.cluster_id)
    };
    let Some(view) = observed
        .nodes
        .values()
        .filter(cluster)
        .max_by_key(|n| (n.term, n.last_log_index))
    else {
        return wait;
    };
    let voters = view.voter_ids();
    // A voter whose node answers without the cluster's data lost it for
    // good (a new volume); one that does not answer may still come back.
    let lost: BTreeSet<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| {
            observed
                .nodes
                .get(id)
                .is_some_and(|n| n.cluster_id != view.cluster_id)
        })
        .collect();
    if voters.len() - lost.len() >= quorum(voters.len()) {
        return wait;
    }
    let survivors: Vec<Survivor> = voters
        .iter()
        .filter_map(|id| observed.nodes.get(id))
        .filter(|n| n.cluster_id == view.cluster_id)
        .map(|n| Survivor {
            id: n.id,
            last_log_index: n.last_log_index,
            term: n.term,
        })
        .collect();
    let Some(named) = &observed.force_recovery else {
        let refusal = Refusal::QuorumLost {
            voters,
            lost,
            survivors,
        };
        return (Step::Refuse(refusal), None);
    };
    let Some(id) = named
        .trim()
        .parse::<NodeId>()
        .ok()
        .filter(|id| survivors.iter().any(|s| s.id == *id))
    else {
        let refusal = Refusal::NotASurvivor {
            named: named.clone(),
            survivors,
        };
        return (Step::Refuse(refusal), None);
    };
    if observed.forcing == Some(id) {
        return (Step::Wait(WaitReason::ForcingNewCluster(id)), Some(id));
    }
    (Step::ForceNewCluster { id }, Some(id))
}

/// Rule 1: nothing is initialized anywhere.
fn plan_bootstrap(observed: &Observed) -> Step {
    if let Some(cluster_id) = &observed.recorded_cluster_id {
        // Nodes answering with empty data while a cluster was recorded means
        // the volumes were lost; starting over would hide that.
        return if observed.nodes.is_empty() {
            Step::Wait(WaitReason::NodeUnreachable(0))
        } else {
            Step::Refuse(Refusal::ClusterLost {
                cluster_id: cluster_id.clone(),
            })
        };
    }
    if observed.desired_replicas == 0 {
        return Step::Steady;
    }
    match (observed.pods.get(&0), observed.nodes.get(&0)) {
        (None, _) => Step::Wait(WaitReason::PodMissing(0)),
        (Some(pod), _) if !pod.running => Step::Wait(WaitReason::PodNotRunning(0)),
        (Some(_), None) => Step::Wait(WaitReason::NodeUnreachable(0)),
        (Some(pod), Some(_)) => Step::Initialize {
            member: pod.member.clone(),
        },
    }
}

/// The leader with the highest term, provided no node of its cluster has seen
/// a newer term (it would be a deposed leader that has not noticed yet) and it
/// heard from a quorum recently.
fn find_leader<'a>(observed: &'a Observed, policy: &Policy) -> Option<&'a NodeStatus> {
    let candidates = observed.nodes.values().filter(|n| {
        n.role == Role::Leader
            && observed
                .recorded_cluster_id
                .as_ref()
                .is_none_or(|c| *c == n.cluster_id)
    });
    let recorded_is_gone = observed
        .recorded_cluster_id
        .as_ref()
        .is_some_and(|c| !observed.nodes.values().any(|n| n.cluster_id == *c));
    let leader = candidates.max_by_key(|n| (n.term, n.id)).or_else(|| {
        // No answering node holds the recorded cluster: whatever leads the
        // nodes now is another cluster, to be reported rather than ignored.
        // While any node still holds the recorded cluster, its leader is
        // merely not elected or not answering yet.
        observed
            .nodes
            .values()
            .filter(|n| recorded_is_gone && n.role == Role::Leader)
            .max_by_key(|n| (n.term, n.id))
    })?;
    let newest_term = observed
        .nodes
        .values()
        .filter(|n| n.cluster_id == leader.cluster_id)
        .map(|n| n.term)
        .max()
        .unwrap_or(leader.term);
    let in_touch = leader
        .millis_since_quorum_ack
        .is_none_or(|ms| ms <= policy.max_quorum_ack_millis);
    (leader.term >= newest_term && in_touch && leader.voter_ids().contains(&leader.id))
        .then_some(leader)
}

fn fenced(observed: &Observed, cluster_id: Option<&str>) -> Vec<Fenced> {
    let Some(cluster_id) = cluster_id else {
        return Vec::new();
    };
    observed
        .nodes
        .values()
        .filter(|n| !n.cluster_id.is_empty() && n.cluster_id != cluster_id)
        .map(|n| Fenced {
            id: n.id,
            cluster_id: n.cluster_id.clone(),
        })
        .collect()
}

/// A voter is healthy when the leader sees its log caught up. The leader
/// itself is healthy by definition.
pub fn is_healthy(leader: &NodeStatus, policy: &Policy, id: NodeId) -> bool {
    leader
        .lag_of(id)
        .is_some_and(|lag| lag <= policy.max_catch_up_lag)
}

/// Emits `change` only if a quorum of both the current and the new voter set
/// is healthy: the change goes through joint consensus, which needs both to
/// commit, and the cluster must stay available afterwards.
fn guarded_change(
    leader: &NodeStatus,
    policy: &Policy,
    next: &BTreeSet<NodeId>,
    change: impl FnOnce() -> Step,
) -> Step {
    let current = leader.voter_ids();
    for set in [&current, next] {
        let healthy = set
            .iter()
            .filter(|id| is_healthy(leader, policy, **id))
            .count();
        if healthy < quorum(set.len()) {
            return Step::Wait(WaitReason::QuorumAtRisk {
                healthy,
                voters: set.len(),
            });
        }
    }
    change()
}

#[cfg(test)]
mod tests;
