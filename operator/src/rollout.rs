//! Rolling upgrades, driven by the operator rather than by the StatefulSet
//! controller. The StatefulSet's update strategy is `OnDelete`: a changed
//! pod template (a new image, or settings whose hash is on the template)
//! makes a new revision and changes no pod; this planner then picks the one
//! pod to delete next, and the StatefulSet controller recreates it from the
//! new revision with its volume. Like [`crate::membership`], it is a pure
//! function of what is observed now, so a restarted operator continues a
//! roll where it stood.
//!
//! It is asked only when membership is steady (the voters are exactly the
//! desired ordinals, no learner, no change in flight), and its rules are:
//!
//! 1. Gates, checked on every voter before each step: its pod runs and is
//!    ready, its node answers and follows the current leader in its term,
//!    the leader sees its log caught up, and it
//!    sheds at most `Policy::max_shed_percent` of its recent client
//!    requests. A failed gate holds the roll. So a member restarted by the
//!    previous step must be back as a caught-up voter before the next one,
//!    and a roll never goes past a member that fails on the new revision.
//! 2. The exception: when the only member failing a gate of its own health
//!    (not shedding) is a follower still on an old revision, it is
//!    restarted: it
//!    serves nothing now, so restarting it costs nothing, and that is how a
//!    member stuck on a broken revision gets the fixed one.
//! 3. Followers first, highest ordinal first.
//! 4. The leader last: leadership moves first to the most caught-up
//!    updated voter, and the former leader is then restarted as a follower.
//!    A single voter is simply restarted (it has nobody to hand over to).

use std::fmt;

use crate::membership::{
    Handoff, NodeId, NodeStatus, Observed, Pod, Policy, Step, WaitReason, is_healthy,
};

/// Fewer client requests than this over a node's recent window say nothing
/// about shedding: one shed of three requests is not an overloaded member.
pub const MIN_REQUESTS_FOR_SHED_GATE: u64 = 100;

/// What holds a roll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The member's pod does not exist, does not run, or is not ready.
    PodNotReady { id: NodeId, updated: bool },
    /// The member's node does not answer its admin API.
    NodeUnreachable(NodeId),
    /// The member's node does not follow the current leader in its term
    /// yet (a restarted node that has not heard from it).
    NotFollowing { id: NodeId, leader: NodeId },
    /// The leader sees the member's log trailing (or has no figure for it).
    Behind { id: NodeId, lag: Option<u64> },
    /// The member shed more of its recent client requests than allowed.
    Shedding {
        id: NodeId,
        shed: u64,
        requests: u64,
        seconds: u64,
    },
}

impl Gate {
    /// The member the gate is about.
    pub fn id(&self) -> NodeId {
        match self {
            Gate::PodNotReady { id, .. }
            | Gate::NodeUnreachable(id)
            | Gate::NotFollowing { id, .. }
            | Gate::Behind { id, .. }
            | Gate::Shedding { id, .. } => *id,
        }
    }

    /// Whether the gate is about the member's own health rather than the load.
    fn is_health(&self) -> bool {
        !matches!(self, Gate::Shedding { .. })
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gate::PodNotReady { id, updated: true } => write!(
                f,
                "waiting for node {id}, restarted on the new revision, to be ready"
            ),
            Gate::PodNotReady { id, updated: false } => {
                write!(f, "the pod of node {id} is not ready")
            }
            Gate::NodeUnreachable(id) => write!(f, "node {id} does not answer its admin API"),
            Gate::NotFollowing { id, leader } => {
                write!(f, "node {id} has not heard from leader {leader} yet")
            }
            Gate::Behind { id, lag: Some(lag) } => {
                write!(f, "voter {id} is {lag} entries behind the leader")
            }
            Gate::Behind { id, lag: None } => {
                write!(f, "the leader has no progress figure for voter {id}")
            }
            Gate::Shedding {
                id,
                shed,
                requests,
                seconds,
            } => write!(
                f,
                "node {id} shed {shed} of {requests} client requests in the last {seconds} s"
            ),
        }
    }
}

/// How far a roll is, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The revision pods are rolled to.
    pub update_revision: Option<String>,
    /// The revision the not yet updated pods run (the update revision once
    /// every pod runs it).
    pub current_revision: Option<String>,
    /// Desired members whose pod runs the update revision.
    pub updated: u32,
}

/// How far the roll is, from the pods' revisions.
pub fn progress(observed: &Observed) -> Progress {
    let Some(update) = observed.update_revision.clone() else {
        return Progress::default();
    };
    let desired = 0..u64::from(observed.desired_replicas);
    let revisions: Vec<Option<&String>> = desired
        .filter_map(|id| observed.pods.get(&id))
        .map(|p| p.revision.as_ref())
        .collect();
    let updated = revisions.iter().filter(|r| **r == Some(&update)).count();
    let current = revisions
        .iter()
        .flatten()
        .find(|r| ***r != update)
        .map_or_else(|| update.clone(), |r| (*r).clone());
    Progress {
        current_revision: Some(current),
        update_revision: Some(update),
        updated: u32::try_from(updated).unwrap_or(u32::MAX),
    }
}

/// The next step of a roll, or `None` when every member runs the update
/// revision (or no revision is known). `leader` is the current leader,
/// whose voters are the desired ordinals.
pub fn plan(observed: &Observed, leader: &NodeStatus, policy: &Policy) -> Option<Step> {
    let revision = observed.update_revision.as_deref()?;
    let voters = leader.voter_ids();
    // Voters whose pod is not (yet) on the update revision: one being
    // deleted, or gone and not recreated yet, is on its way there and is
    // waited for; the others are to be restarted.
    let behind: Vec<(NodeId, Option<&Pod>)> = voters
        .iter()
        .map(|id| (*id, observed.pods.get(id)))
        .filter(|(_, pod)| pod.is_none_or(|p| p.revision.as_deref() != Some(revision)))
        .collect();
    if behind.is_empty() {
        return None;
    }
    let outdated: Vec<NodeId> = behind
        .iter()
        .filter(|(_, pod)| pod.is_some_and(|p| !p.deleting))
        .map(|(id, _)| *id)
        .collect();

    // Rules 1 and 2.
    let failed: Vec<Gate> = voters
        .iter()
        .filter_map(|id| gate(observed, leader, policy, *id, revision))
        .collect();
    match failed.as_slice() {
        [] => {}
        [only] if only.is_health() && only.id() != leader.id && outdated.contains(&only.id()) => {
            return Some(restart(only.id(), revision));
        }
        [first, ..] => return Some(Step::Wait(WaitReason::RollHeld(first.clone()))),
    }

    // Rule 3.
    if let Some(id) = outdated.iter().rev().copied().find(|id| *id != leader.id) {
        return Some(restart(id, revision));
    }

    // Rule 4: only the leader is left.
    let successor = voters
        .iter()
        .copied()
        .filter(|id| *id != leader.id)
        .max_by_key(|id| {
            (
                leader.matched_index.get(id).copied(),
                std::cmp::Reverse(*id),
            )
        });
    Some(match successor {
        Some(to) => Step::TransferLeadership {
            from: leader.id,
            to,
            before: Handoff::Restart,
        },
        None => restart(leader.id, revision),
    })
}

fn restart(id: NodeId, revision: &str) -> Step {
    Step::RestartMember {
        id,
        revision: revision.to_owned(),
    }
}

/// The first gate `id` fails, if any.
fn gate(
    observed: &Observed,
    leader: &NodeStatus,
    policy: &Policy,
    id: NodeId,
    revision: &str,
) -> Option<Gate> {
    let pod = observed.pods.get(&id);
    if !pod.is_some_and(|p| p.running && p.ready) {
        let updated = pod.is_none_or(|p| p.deleting || p.revision.as_deref() == Some(revision));
        return Some(Gate::PodNotReady { id, updated });
    }
    let Some(node) = observed.nodes.get(&id) else {
        return Some(Gate::NodeUnreachable(id));
    };
    // The leader's figure for a member that just restarted may still be
    // the one from before: the member's own view says whether it is back.
    if id != leader.id && (node.leader_id != Some(leader.id) || node.term != leader.term) {
        return Some(Gate::NotFollowing {
            id,
            leader: leader.id,
        });
    }
    if !is_healthy(leader, policy, id) {
        return Some(Gate::Behind {
            id,
            lag: leader.lag_of(id),
        });
    }
    let requests = node.recent_admitted + node.recent_shed;
    if requests >= MIN_REQUESTS_FOR_SHED_GATE
        && node.recent_shed * 100 > policy.max_shed_percent * requests
    {
        return Some(Gate::Shedding {
            id,
            shed: node.recent_shed,
            requests,
            seconds: node.recent_seconds,
        });
    }
    None
}
