//! Status of a RecipeStore, computed from what was observed on this reconcile
//! (StatefulSet counts, the leader's view of the members, the plan), never
//! remembered. Conditions keep their transition time while unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{MemberRole, MemberStatus, Phase, RecipeStoreStatus};
use crate::membership::{NodeStatus, Observed, Plan, Policy, Step, WaitReason};
use crate::topology::Topology;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What the status is computed from.
pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub topology: &'a Topology,
    /// `status.replicas` and `status.readyReplicas` of the StatefulSet.
    pub pods: i32,
    pub ready_pods: i32,
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    pub policy: &'a Policy,
    pub previous: Option<&'a RecipeStoreStatus>,
    pub now: Time,
}

/// A condition before timestamps are attached.
struct Verdict {
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

pub fn compute(inputs: &Inputs<'_>) -> RecipeStoreStatus {
    let plan = inputs.plan;
    let leader = plan
        .leader
        .as_ref()
        .and_then(|l| inputs.observed.nodes.get(&l.id));
    let members = leader
        .map(|l| members(l, inputs.policy))
        .unwrap_or_default();
    let desired = inputs.observed.desired_replicas;
    let healthy_voters = members
        .iter()
        .filter(|m| m.role == MemberRole::Voter && m.caught_up)
        .count();
    let voters = members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .count();

    let available = match leader {
        Some(l) => Verdict {
            type_: AVAILABLE,
            status: true,
            reason: "LeaderElected",
            message: format!(
                "node {} leads term {} with {healthy_voters} of {voters} voters caught up",
                l.id, l.term
            ),
        },
        None if plan.cluster_id.is_none() => Verdict {
            type_: AVAILABLE,
            status: false,
            reason: "NotInitialized",
            message: "the Raft cluster has not been initialized yet".to_owned(),
        },
        None => Verdict {
            type_: AVAILABLE,
            status: false,
            reason: "NoLeader",
            message: "no node reports itself as a current leader".to_owned(),
        },
    };

    let progressing = match &plan.step {
        Step::Steady => Verdict {
            type_: PROGRESSING,
            status: false,
            reason: "Reconciled",
            message: format!("{desired} voters as specified"),
        },
        Step::Refuse(_) => Verdict {
            type_: PROGRESSING,
            status: false,
            reason: plan.step.reason(),
            message: plan.step.to_string(),
        },
        step => Verdict {
            type_: PROGRESSING,
            status: true,
            reason: step.reason(),
            message: step.to_string(),
        },
    };

    let degraded = if let Step::Refuse(refusal) = &plan.step {
        Verdict {
            type_: DEGRADED,
            status: true,
            reason: refusal.reason(),
            message: refusal.to_string(),
        }
    } else if let Some(f) = plan.fenced.first() {
        Verdict {
            type_: DEGRADED,
            status: true,
            reason: "NodeFenced",
            message: format!(
                "node {} holds data of another cluster ({}); it is not joined",
                f.id, f.cluster_id
            ),
        }
    } else if plan.cluster_id.is_some() && leader.is_none() {
        Verdict {
            type_: DEGRADED,
            status: true,
            reason: "NoLeader",
            message: available.message.clone(),
        }
    } else if matches!(plan.step, Step::Wait(WaitReason::QuorumAtRisk { .. })) {
        Verdict {
            type_: DEGRADED,
            status: true,
            reason: "QuorumAtRisk",
            message: plan.step.to_string(),
        }
    } else if leader.is_some() && healthy_voters < voters {
        Verdict {
            type_: DEGRADED,
            status: true,
            reason: "MembersLagging",
            message: format!(
                "{} of {voters} voters are down or behind the leader",
                voters - healthy_voters
            ),
        }
    } else {
        Verdict {
            type_: DEGRADED,
            status: false,
            reason: "AsExpected",
            message: "all members healthy".to_owned(),
        }
    };

    let phase = if degraded.status {
        Phase::Degraded
    } else if plan.cluster_id.is_none() {
        if matches!(plan.step, Step::Initialize { .. }) || inputs.observed.nodes.contains_key(&0) {
            Phase::Initializing
        } else {
            Phase::Pending
        }
    } else if progressing.status {
        Phase::Scaling
    } else {
        Phase::Running
    };

    let previous = inputs
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    RecipeStoreStatus {
        observed_generation: inputs.generation,
        replicas: inputs.pods,
        ready_replicas: inputs.ready_pods,
        selector: inputs.topology.selector_string(),
        leader: leader.map(|l| inputs.topology.pod(l.id)),
        term: leader.map(|l| l.term),
        cluster_id: plan.cluster_id.clone(),
        members,
        phase,
        conditions: [available, progressing, degraded]
            .into_iter()
            .map(|v| condition(v, previous, inputs.generation, &inputs.now))
            .collect(),
    }
}

/// Status for a spec that cannot be run: nothing else is looked at.
pub fn invalid(
    generation: Option<i64>,
    topology: &Topology,
    message: &str,
    previous: Option<&RecipeStoreStatus>,
    now: &Time,
) -> RecipeStoreStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let conditions = status.conditions.clone();
    let degraded = Verdict {
        type_: DEGRADED,
        status: true,
        reason: "InvalidSpec",
        message: message.to_owned(),
    };
    let progressing = Verdict {
        type_: PROGRESSING,
        status: false,
        reason: "InvalidSpec",
        message: message.to_owned(),
    };
    status
        .conditions
        .retain(|c| c.type_ != DEGRADED && c.type_ != PROGRESSING);
    status
        .conditions
        .push(condition(progressing, &conditions, generation, now));
    status
        .conditions
        .push(condition(degraded, &conditions, generation, now));
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    status.observed_generation = generation;
    status.selector = topology.selector_string();
    status.phase = Phase::Failed;
    status
}

fn members(leader: &NodeStatus, policy: &Policy) -> Vec<MemberStatus> {
    let caught_up = |id| crate::membership::is_healthy(leader, policy, id);
    let voters = leader.voters.iter().map(|m| (m, MemberRole::Voter));
    let learners = leader.learners.iter().map(|m| (m, MemberRole::Learner));
    let mut members: Vec<MemberStatus> = voters
        .chain(learners)
        .map(|(m, role)| MemberStatus {
            id: m.id,
            address: m.peer_addr.clone(),
            role,
            caught_up: caught_up(m.id),
        })
        .collect();
    members.sort_by_key(|m| m.id);
    members
}

fn condition(v: Verdict, previous: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
    let status = if v.status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == v.type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: v.type_.to_owned(),
        status,
        reason: v.reason.to_owned(),
        message: v.message,
        observed_generation: generation,
        last_transition_time,
    }
}
