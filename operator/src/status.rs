//! Status of a RecipeStore, computed from what was observed on this reconcile
//! (StatefulSet counts, the leader's view of the members, the plan), never
//! remembered. Conditions keep their transition time while unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    BackupStatus, MemberRole, MemberStatus, Phase, PlacementStatus, RecipeStoreStatus, ShardStatus,
    SlotRanges,
};
use crate::membership::{Handoff, NodeStatus, Observed, Plan, Policy, Step, WaitReason};
use crate::placement::{self, Decision, SlotMap};
use crate::rollout;
use crate::topology::Topology;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Whether the ServiceMonitor the spec asks for exists; absent when the
/// spec asks for none.
pub const MONITORING: &str = "Monitoring";
/// Whether a sharded store's slots are not yet where `spec.shards` puts
/// them; absent for a store of one shard.
pub const SLOTS_PENDING: &str = "SlotsPending";
/// The reason (and Event) for slots that must move between shards.
pub const SLOT_MOVE_PENDING: &str = "SlotMovePending";

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
    /// The backup CronJob's figures, when `spec.backup` asks for backups.
    pub backup: Option<BackupStatus>,
    /// Members the store was created with from a backup.
    pub restored_members: Option<u32>,
    pub now: Time,
    /// When the spec asks for a ServiceMonitor: whether the cluster serves
    /// the ServiceMonitor API (so the operator applied one).
    pub service_monitor_api: Option<bool>,
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

    // A member a roll restarted lags until it is back: that is the roll
    // going as planned, and the condition says it; the phase says Updating.
    let rolling = rolling_member(&plan.step).is_some();
    let phase = if degraded.status && !(rolling && degraded.reason == "MembersLagging") {
        Phase::Degraded
    } else if plan.cluster_id.is_none() {
        if matches!(plan.step, Step::Initialize { .. }) || inputs.observed.nodes.contains_key(&0) {
            Phase::Initializing
        } else {
            Phase::Pending
        }
    } else if progressing.status && rolling {
        Phase::Updating
    } else if progressing.status {
        Phase::Scaling
    } else {
        Phase::Running
    };

    let monitoring = inputs.service_monitor_api.map(|served| {
        if served {
            Verdict {
                type_: MONITORING,
                status: true,
                reason: "ServiceMonitorApplied",
                message: format!(
                    "ServiceMonitor {} selects the store's metrics Service",
                    inputs.topology.statefulset()
                ),
            }
        } else {
            Verdict {
                type_: MONITORING,
                status: false,
                reason: "ServiceMonitorAPIMissing",
                message: "monitoring.serviceMonitor.enabled is true, but the cluster does not \
                    serve monitoring.coreos.com/v1 ServiceMonitor (the Prometheus operator is \
                    not installed), so none was created; the store runs without it and one is \
                    created within 5 minutes of the API appearing"
                    .to_owned(),
            }
        }
    });

    let progress = rollout::progress(inputs.observed);
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
        forcing_new_cluster: plan.forcing,
        members,
        update_revision: progress.update_revision,
        current_revision: progress.current_revision,
        updated_members: progress.updated,
        rolling_member: rolling_member(&plan.step),
        backup: inputs.backup.clone(),
        restored_members: inputs.restored_members,
        shards: Vec::new(),
        placement: None,
        phase,
        conditions: [
            Some(available),
            Some(progressing),
            Some(degraded),
            monitoring,
        ]
        .into_iter()
        .flatten()
        .map(|v| condition(v, previous, inputs.generation, &inputs.now))
        .collect(),
    }
}

/// The status of a store from each shard's own (shard 0 first). A store of
/// one shard, never placed, has shard 0's. A sharded store's top-level
/// fields describe shard 0 (its leader, members and counts, for
/// `kubectl get` and the scale subresource), but its phase and its
/// Available, Progressing and Degraded conditions are those of the first
/// shard that is not Running, if shard 0 is; `shards` lists every shard,
/// `placement` the slot map, and `SlotsPending` says whether the slots
/// are where `spec.shards` puts them.
pub fn of_shards(
    mut shards: Vec<(&Topology, RecipeStoreStatus)>,
    inputs: &placement::Inputs,
    decision: &Decision,
    previous: Option<&RecipeStoreStatus>,
    now: &Time,
) -> RecipeStoreStatus {
    if shards.len() <= 1 && *decision == Decision::Unsharded {
        return shards.pop().map(|(_, s)| s).unwrap_or_default();
    }
    let current = placement::current(inputs);
    let mut status = shards[0].1.clone();
    if status.phase == Phase::Running
        && let Some((k, other)) = shards
            .iter()
            .enumerate()
            .skip(1)
            .map(|(k, (_, s))| (k, s))
            .find(|(_, s)| s.phase != Phase::Running)
    {
        status.phase = other.phase;
        for condition in &mut status.conditions {
            if let Some(theirs) = other
                .conditions
                .iter()
                .find(|c| c.type_ == condition.type_ && c.type_ != MONITORING)
            {
                *condition = theirs.clone();
                condition.message = format!("shard {k}: {}", theirs.message);
            }
        }
    }
    status.shards = shards
        .iter()
        .zip(&inputs.shards)
        .map(|((topology, shard), observed)| ShardStatus {
            shard: observed.shard,
            stateful_set: topology.statefulset().to_owned(),
            cluster_id: shard.cluster_id.clone(),
            leader: shard.leader.clone(),
            term: shard.term,
            voters: shard
                .members
                .iter()
                .filter(|m| m.role == MemberRole::Voter)
                .count() as u32,
            replicas: shard.replicas,
            ready_replicas: shard.ready_replicas,
            slots: current
                .as_ref()
                .map_or(0, |map| map.slots_of(observed.shard)),
            placement_epoch: observed.placement.as_ref().map(|p| p.epoch),
        })
        .collect();
    let target = SlotMap::even(inputs.target, None);
    let ranges = |map: &SlotMap, shards: u16| -> Vec<SlotRanges> {
        (0..shards)
            .filter(|&k| map.serves(k))
            .map(|k| SlotRanges {
                shard: k,
                slots: map.slots_of(k),
                ranges: map.ranges_of(k),
            })
            .collect()
    };
    let listed = u16::try_from(inputs.shards.len()).unwrap_or(u16::MAX);
    status.placement = Some(PlacementStatus {
        epoch: current.as_ref().and_then(|map| map.epoch),
        current: current
            .as_ref()
            .map(|map| ranges(map, listed))
            .unwrap_or_default(),
        target: ranges(&target, inputs.target),
        slots_to_move: current.as_ref().map_or(0, |map| {
            map.owners
                .iter()
                .zip(&target.owners)
                .filter(|(a, b)| a != b)
                .count() as u32
        }),
    });
    let pending = match decision {
        Decision::Move(pending) => Verdict {
            type_: SLOTS_PENDING,
            status: true,
            reason: SLOT_MOVE_PENDING,
            message: pending.to_string(),
        },
        Decision::Wait(why) => Verdict {
            type_: SLOTS_PENDING,
            status: true,
            reason: "WaitingToPlace",
            message: why.clone(),
        },
        Decision::Place(placings) => Verdict {
            type_: SLOTS_PENDING,
            status: true,
            reason: "Placing",
            message: format!(
                "placing shards {:?} with the even split of {} shards",
                placings.iter().map(|p| p.shard).collect::<Vec<_>>(),
                inputs.target
            ),
        },
        Decision::Steady | Decision::Unsharded => {
            let mut message = format!(
                "every slot is served by the shard the even split of {} shards gives it",
                inputs.target
            );
            let beyond: Vec<u16> = (inputs.target..listed).collect();
            if !beyond.is_empty() {
                message.push_str(&format!(
                    "; shard(s) {beyond:?} beyond spec.shards serve no slots and are kept \
                     (removing a shard's objects and data is not built yet)"
                ));
            }
            Verdict {
                type_: SLOTS_PENDING,
                status: false,
                reason: "Placed",
                message,
            }
        }
    };
    let previous = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions.push(condition(
        pending,
        previous,
        status.observed_generation,
        now,
    ));
    status
}

/// Status for a spec that cannot be run. The refusal is a condition; the
/// phase goes on describing the store as last observed (a running store
/// keeps serving on its previous spec), and is `Failed` only for a store
/// that never got past `Pending`, which this spec cannot create.
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
    status.phase = match previous.map(|p| p.phase) {
        Some(Phase::Pending | Phase::Failed) | None => Phase::Failed,
        Some(phase) => phase,
    };
    status
}

/// The member a rolling upgrade restarts, hands leadership away from, or
/// waits for.
fn rolling_member(step: &Step) -> Option<u64> {
    match step {
        Step::RestartMember { id, .. }
        | Step::TransferLeadership {
            from: id,
            before: Handoff::Restart,
            ..
        } => Some(*id),
        Step::Wait(WaitReason::RollHeld(gate)) => Some(gate.id()),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::membership::{self, Member, NodeId, Role};

    fn topology() -> Topology {
        Topology::new("rs", "ns")
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    /// Leader 0 of `voters` and `learners`; `lagging` members are far behind.
    fn observed(
        desired: u32,
        voters: &[NodeId],
        learners: &[NodeId],
        lagging: &[NodeId],
    ) -> Observed {
        let member = |id| topology().member(id);
        let leader = NodeStatus {
            id: 0,
            cluster_id: "c".to_owned(),
            role: Role::Leader,
            term: 4,
            leader_id: Some(0),
            voters: voters.iter().copied().map(member).collect::<Vec<Member>>(),
            learners: learners.iter().copied().map(member).collect(),
            last_log_index: 1000,
            committed_index: 1000,
            matched_index: voters
                .iter()
                .chain(learners)
                .map(|id| (*id, if lagging.contains(id) { 0 } else { 1000 }))
                .collect(),
            millis_since_quorum_ack: Some(1),
            ..NodeStatus::default()
        };
        Observed {
            desired_replicas: desired,
            statefulset_replicas: desired,
            pods: BTreeMap::new(),
            nodes: BTreeMap::from([(0, leader)]),
            recorded_cluster_id: Some("c".to_owned()),
            ..Observed::default()
        }
    }

    fn compute_at(
        observed: &Observed,
        previous: Option<&RecipeStoreStatus>,
        now: Time,
    ) -> RecipeStoreStatus {
        let policy = Policy::default();
        let plan = membership::plan(observed, &policy);
        compute(&Inputs {
            generation: Some(2),
            topology: &topology(),
            pods: 3,
            ready_pods: 3,
            observed,
            plan: &plan,
            policy: &policy,
            previous,
            backup: None,
            restored_members: None,
            now,
            service_monitor_api: None,
        })
    }

    fn condition<'a>(status: &'a RecipeStoreStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn healthy_cluster_is_running_and_available() {
        let status = compute_at(&observed(3, &[0, 1, 2], &[], &[]), None, at(10));
        assert_eq!(status.phase, Phase::Running);
        assert_eq!(status.leader.as_deref(), Some("rs-0"));
        assert_eq!(status.term, Some(4));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(condition(&status, AVAILABLE).status, "True");
        assert_eq!(condition(&status, DEGRADED).reason, "AsExpected");
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn learners_are_listed_with_their_progress() {
        let status = compute_at(&observed(3, &[0, 1], &[2], &[2]), None, at(10));
        let learner = status.members.iter().find(|m| m.id == 2).unwrap();
        assert_eq!(
            (learner.role, learner.caught_up),
            (MemberRole::Learner, false)
        );
        assert_eq!(status.phase, Phase::Scaling);
        assert_eq!(condition(&status, PROGRESSING).reason, "LearnerCatchingUp");
    }

    #[test]
    fn a_lagging_voter_degrades_the_cluster() {
        let status = compute_at(&observed(3, &[0, 1, 2], &[], &[2]), None, at(10));
        assert_eq!(status.phase, Phase::Degraded);
        assert_eq!(condition(&status, DEGRADED).reason, "MembersLagging");
        assert_eq!(
            condition(&status, AVAILABLE).status,
            "True",
            "a quorum still serves"
        );
    }

    #[test]
    fn no_leader_after_initialization_is_degraded() {
        let mut o = observed(3, &[0, 1, 2], &[], &[]);
        o.nodes.get_mut(&0).unwrap().role = Role::Candidate;
        let status = compute_at(&o, None, at(10));
        assert_eq!(status.phase, Phase::Degraded);
        assert_eq!(condition(&status, AVAILABLE).reason, "NoLeader");
        assert_eq!(status.leader, None);
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_flips() {
        let healthy = observed(3, &[0, 1, 2], &[], &[]);
        let first = compute_at(&healthy, None, at(10));
        let again = compute_at(&healthy, Some(&first), at(20));
        assert_eq!(condition(&again, AVAILABLE).last_transition_time, at(10));
        let lagging = observed(3, &[0, 1, 2], &[], &[2]);
        let flipped = compute_at(&lagging, Some(&again), at(30));
        assert_eq!(condition(&flipped, DEGRADED).last_transition_time, at(30));
        assert_eq!(condition(&flipped, AVAILABLE).last_transition_time, at(10));
    }

    #[test]
    fn a_wanted_service_monitor_is_a_condition_whether_or_not_its_api_is_served() {
        let observed = observed(3, &[0, 1, 2], &[], &[]);
        let policy = Policy::default();
        let plan = membership::plan(&observed, &policy);
        let with = |service_monitor_api| {
            compute(&Inputs {
                generation: Some(2),
                topology: &topology(),
                pods: 3,
                ready_pods: 3,
                observed: &observed,
                plan: &plan,
                policy: &policy,
                previous: None,
                backup: None,
                restored_members: None,
                now: at(10),
                service_monitor_api,
            })
        };
        let missing = with(Some(false));
        let condition_of = |status: &RecipeStoreStatus| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == MONITORING)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        assert_eq!(
            condition_of(&missing),
            Some(("False".to_owned(), "ServiceMonitorAPIMissing".to_owned()))
        );
        // A missing optional API does not make the store less available.
        assert_eq!(missing.phase, Phase::Running);
        assert_eq!(condition(&missing, AVAILABLE).status, "True");
        assert_eq!(
            condition_of(&with(Some(true))),
            Some(("True".to_owned(), "ServiceMonitorApplied".to_owned()))
        );
        assert_eq!(condition_of(&with(None)), None);
    }

    #[test]
    fn a_refused_spec_is_a_condition_and_the_phase_still_describes_the_store() {
        let running = compute_at(&observed(3, &[0, 1, 2], &[], &[]), None, at(10));
        assert_eq!(running.phase, Phase::Running);
        let status = invalid(Some(3), &topology(), "bad timings", Some(&running), &at(20));
        assert_eq!(status.phase, Phase::Running, "the store still serves");
        assert_eq!(status.leader.as_deref(), Some("rs-0"));
        assert_eq!(condition(&status, DEGRADED).reason, "InvalidSpec");
        assert_eq!(condition(&status, DEGRADED).message, "bad timings");
        assert_eq!(condition(&status, AVAILABLE).status, "True");
        assert_eq!(status.observed_generation, Some(3));
        // A store this spec never created has failed.
        let new = invalid(Some(1), &topology(), "bad timings", None, &at(20));
        assert_eq!(new.phase, Phase::Failed);
    }

    fn shard_status(phase: Phase, available: (&str, &str)) -> RecipeStoreStatus {
        RecipeStoreStatus {
            phase,
            conditions: vec![Condition {
                type_: AVAILABLE.to_owned(),
                status: available.0.to_owned(),
                reason: available.1.to_owned(),
                message: "as observed".to_owned(),
                observed_generation: Some(1),
                last_transition_time: at(1),
            }],
            ..RecipeStoreStatus::default()
        }
    }

    fn unplaced(shards: u16, target: u16) -> placement::Inputs {
        placement::Inputs {
            target,
            shards: (0..shards)
                .map(|k| placement::Shard {
                    shard: k,
                    leader: Some(format!("s{k}:7071")),
                    placement: None,
                    client_addrs: vec![format!("s{k}:7070")],
                    peer_addrs: vec![format!("s{k}:7071")],
                })
                .collect(),
            ran_unsharded: true,
        }
    }

    #[test]
    fn a_store_of_one_shard_has_no_shard_list_placement_or_slot_condition() {
        let status = shard_status(Phase::Running, ("True", "LeaderElected"));
        let t = topology();
        let of = of_shards(
            vec![(&t, status.clone())],
            &unplaced(1, 1),
            &Decision::Unsharded,
            None,
            &at(2),
        );
        assert_eq!(of, status);
    }

    #[test]
    fn a_sharded_store_is_as_far_along_as_its_first_shard_that_is_not_running() {
        let (t0, t1) = (topology(), topology().shard(1));
        let inputs = unplaced(2, 2);
        let decision = placement::plan(&inputs);
        let of = of_shards(
            vec![
                (&t0, shard_status(Phase::Running, ("True", "LeaderElected"))),
                (
                    &t1,
                    shard_status(Phase::Initializing, ("False", "NotInitialized")),
                ),
            ],
            &inputs,
            &decision,
            None,
            &at(2),
        );
        assert_eq!(of.phase, Phase::Initializing);
        let available = of.conditions.iter().find(|c| c.type_ == AVAILABLE).unwrap();
        assert_eq!(available.reason, "NotInitialized");
        assert_eq!(available.message, "shard 1: as observed");
        let names: Vec<&str> = of.shards.iter().map(|s| s.stateful_set.as_str()).collect();
        assert_eq!(names, ["rs", "rs-s1"]);
        let slots: Vec<u32> = of.shards.iter().map(|s| s.slots).collect();
        assert_eq!(slots, [1024, 0], "shard 0 serves all until slots move");
        let pending = of
            .conditions
            .iter()
            .find(|c| c.type_ == SLOTS_PENDING)
            .unwrap();
        assert_eq!(
            (pending.status.as_str(), pending.reason.as_str()),
            ("True", SLOT_MOVE_PENDING)
        );
    }

    #[test]
    fn a_shard_beyond_spec_shards_that_serves_nothing_is_said_to_be_kept() {
        let (t0, t1) = (topology(), topology().shard(1));
        let inputs = unplaced(2, 1);
        let running = || shard_status(Phase::Running, ("True", "LeaderElected"));
        let of = of_shards(
            vec![(&t0, running()), (&t1, running())],
            &inputs,
            &placement::plan(&inputs),
            None,
            &at(2),
        );
        let pending = of
            .conditions
            .iter()
            .find(|c| c.type_ == SLOTS_PENDING)
            .unwrap();
        assert_eq!(pending.status, "False");
        assert!(
            pending
                .message
                .contains("shard(s) [1] beyond spec.shards serve no slots and are kept"),
            "{}",
            pending.message
        );
        assert_eq!(of.placement.unwrap().slots_to_move, 0);
    }
}
