//! Planner specification: a table of observed states and the one step each
//! must yield, and properties that hold for any observed state.

use super::*;
use proptest::prelude::*;

const CLUSTER: &str = "c-1";
const LOG_END: u64 = 1_000;

fn member(id: NodeId) -> Member {
    Member {
        id,
        peer_addr: format!("rs-{id}.rs-peers.ns.svc:7071"),
        client_addr: format!("rs-{id}.rs-peers.ns.svc:7070"),
    }
}

fn ids(ids: impl IntoIterator<Item = NodeId>) -> BTreeSet<NodeId> {
    ids.into_iter().collect()
}

/// Builds observed states the way they appear in a cluster.
#[derive(Clone, Debug)]
struct World {
    observed: Observed,
}

impl World {
    /// `pods` running pods (ordinals `0..pods`), StatefulSet of the same size.
    fn new(desired: u32, pods: u32) -> Self {
        Self {
            observed: Observed {
                desired_replicas: desired,
                statefulset_replicas: pods,
                pods: (0..u64::from(pods))
                    .map(|id| {
                        (
                            id,
                            Pod {
                                member: member(id),
                                running: true,
                                ready: true,
                                deleting: false,
                                revision: None,
                            },
                        )
                    })
                    .collect(),
                nodes: BTreeMap::new(),
                recorded_cluster_id: None,
                force_recovery: None,
                forcing: None,
                update_revision: None,
            },
        }
    }

    fn statefulset(mut self, replicas: u32) -> Self {
        self.observed.statefulset_replicas = replicas;
        self
    }

    /// Every pod answers `Status` as an empty, uninitialized node.
    fn fresh_nodes(mut self) -> Self {
        for id in self.observed.pods.keys() {
            self.observed
                .nodes
                .insert(*id, node(*id, "", Role::Learner));
        }
        self
    }

    /// An initialized cluster with `leader`, `voters` and `learners`, all caught
    /// up; other running pods answer as fresh nodes.
    fn cluster(mut self, leader: NodeId, voters: &[NodeId], learners: &[NodeId]) -> Self {
        self = self.fresh_nodes();
        self.observed.recorded_cluster_id = Some(CLUSTER.to_owned());
        let voters_m: Vec<Member> = voters.iter().copied().map(member).collect();
        let learners_m: Vec<Member> = learners.iter().copied().map(member).collect();
        for id in voters.iter().chain(learners) {
            let role = match (*id == leader, learners.contains(id)) {
                (true, _) => Role::Leader,
                (false, true) => Role::Learner,
                (false, false) => Role::Follower,
            };
            let mut n = node(*id, CLUSTER, role);
            n.term = 3;
            n.leader_id = Some(leader);
            n.voters = voters_m.clone();
            n.learners = learners_m.clone();
            n.last_log_index = LOG_END;
            n.committed_index = LOG_END;
            if *id == leader {
                n.matched_index = voters
                    .iter()
                    .chain(learners)
                    .map(|m| (*m, LOG_END))
                    .collect();
                n.millis_since_quorum_ack = Some(50);
            }
            self.observed.nodes.insert(*id, n);
        }
        self
    }

    fn leader_mut(&mut self) -> &mut NodeStatus {
        self.observed
            .nodes
            .values_mut()
            .find(|n| n.role == Role::Leader)
            .unwrap()
    }

    /// The leader sees `id` trailing by `lag` entries.
    fn lagging(mut self, id: NodeId, lag: u64) -> Self {
        self.leader_mut().matched_index.insert(id, LOG_END - lag);
        self
    }

    /// The pod of `id` is down: not running, not answering, unknown to the leader's progress.
    fn down(mut self, id: NodeId) -> Self {
        if let Some(p) = self.observed.pods.get_mut(&id) {
            p.running = false;
            p.ready = false;
        }
        self.observed.nodes.remove(&id);
        if let Some(leader) = self
            .observed
            .nodes
            .values_mut()
            .find(|n| n.role == Role::Leader)
        {
            leader.matched_index.remove(&id);
        }
        self
    }

    fn unreachable(mut self, id: NodeId) -> Self {
        self.observed.nodes.remove(&id);
        self
    }

    fn without_pod(mut self, id: NodeId) -> Self {
        self.observed.pods.remove(&id);
        self.observed.nodes.remove(&id);
        self
    }

    fn foreign(mut self, id: NodeId, cluster_id: &str) -> Self {
        self.observed
            .nodes
            .insert(id, node(id, cluster_id, Role::Follower));
        self
    }

    fn recorded(mut self, cluster_id: &str) -> Self {
        self.observed.recorded_cluster_id = Some(cluster_id.to_owned());
        self
    }

    fn plan(&self) -> Plan {
        plan(&self.observed, &Policy::default())
    }

    /// No leader any more, and the nodes of `lost` answer with new, empty
    /// volumes; the others keep their log, `log` entries long.
    fn lost(mut self, lost: &[NodeId], logs: &[(NodeId, u64)]) -> Self {
        for node in self.observed.nodes.values_mut() {
            if node.role == Role::Leader {
                node.role = Role::Candidate;
                node.matched_index.clear();
                node.millis_since_quorum_ack = None;
            }
        }
        for (id, log) in logs {
            self.observed.nodes.get_mut(id).unwrap().last_log_index = *log;
        }
        for id in lost {
            self.observed
                .nodes
                .insert(*id, node(*id, "", Role::Learner));
        }
        self
    }

    fn annotated(mut self, named: &str) -> Self {
        self.observed.force_recovery = Some(named.to_owned());
        self
    }

    fn forcing(mut self, id: NodeId) -> Self {
        self.observed.forcing = Some(id);
        self
    }

    /// The StatefulSet's update revision is `update`; every pod runs
    /// `current` except the `updated` ones.
    fn revisions(mut self, update: &str, current: &str, updated: &[NodeId]) -> Self {
        self.observed.update_revision = Some(update.to_owned());
        for (id, pod) in &mut self.observed.pods {
            let revision = if updated.contains(id) {
                update
            } else {
                current
            };
            pod.revision = Some(revision.to_owned());
        }
        self
    }

    /// The pod of `id` runs and answers but is not ready.
    fn unready(mut self, id: NodeId) -> Self {
        self.observed.pods.get_mut(&id).unwrap().ready = false;
        self
    }

    /// `id` shed `shed` of its recent requests and admitted `admitted`.
    fn shedding(mut self, id: NodeId, shed: u64, admitted: u64) -> Self {
        let node = self.observed.nodes.get_mut(&id).unwrap();
        node.recent_shed = shed;
        node.recent_admitted = admitted;
        node.recent_seconds = 10;
        self
    }
}

fn node(id: NodeId, cluster_id: &str, role: Role) -> NodeStatus {
    NodeStatus {
        id,
        cluster_id: cluster_id.to_owned(),
        role,
        ..NodeStatus::default()
    }
}

#[test]
fn planner_table() {
    use Step::*;
    use WaitReason::*;
    let cases: Vec<(&str, World, Step)> = vec![
        (
            "initializes ordinal 0 alone when no node belongs to a cluster",
            World::new(3, 3).fresh_nodes(),
            Initialize { member: member(0) },
        ),
        (
            "waits for pod 0 before initializing",
            World::new(3, 0),
            Wait(PodMissing(0)),
        ),
        (
            "waits for pod 0 to run before initializing",
            World::new(3, 1).fresh_nodes().down(0),
            Wait(PodNotRunning(0)),
        ),
        (
            "waits for node 0 to answer before initializing",
            World::new(3, 3).fresh_nodes().unreachable(0),
            Wait(NodeUnreachable(0)),
        ),
        (
            "refuses to re-initialize a recorded cluster whose data is gone",
            World::new(3, 3).fresh_nodes().recorded(CLUSTER),
            Refuse(Refusal::ClusterLost {
                cluster_id: CLUSTER.to_owned(),
            }),
        ),
        (
            "waits without a leader",
            {
                let mut w = World::new(3, 3).cluster(0, &[0, 1, 2], &[]);
                w.leader_mut().role = Role::Candidate;
                w
            },
            Wait(NoLeader),
        ),
        (
            "does not trust a leader from an older term",
            {
                let mut w = World::new(3, 3).cluster(0, &[0, 1, 2], &[]);
                w.observed.nodes.get_mut(&1).unwrap().term = 4;
                w
            },
            Wait(NoLeader),
        ),
        (
            "does not trust a leader cut off from its quorum",
            {
                let mut w = World::new(3, 3).cluster(0, &[0, 1, 2], &[]);
                w.leader_mut().millis_since_quorum_ack = Some(60_000);
                w
            },
            Wait(NoLeader),
        ),
        (
            "adds the first new pod as a learner on scale-out",
            World::new(3, 3).cluster(0, &[0], &[]),
            AddLearner { member: member(1) },
        ),
        (
            "waits for a learner to catch up before promoting it",
            World::new(3, 3).cluster(0, &[0], &[1]).lagging(1, 500),
            Wait(LearnerCatchingUp {
                id: 1,
                lag: Some(500),
            }),
        ),
        (
            "waits for a learner the leader has no progress for",
            {
                let mut w = World::new(3, 3).cluster(0, &[0], &[1]);
                w.leader_mut().matched_index.remove(&1);
                w
            },
            Wait(LearnerCatchingUp { id: 1, lag: None }),
        ),
        (
            "promotes a caught-up learner",
            World::new(3, 3).cluster(0, &[0], &[1]).lagging(1, 10),
            PromoteLearner {
                id: 1,
                voters: ids([0, 1]),
            },
        ),
        (
            "adds the next pod only after the previous learner is a voter",
            World::new(3, 3).cluster(0, &[0, 1], &[]),
            AddLearner { member: member(2) },
        ),
        (
            "is steady when the voters match the spec",
            World::new(3, 3).cluster(0, &[0, 1, 2], &[]),
            Steady,
        ),
        (
            "waits for pods the StatefulSet has yet to create",
            World::new(5, 3).cluster(0, &[0, 1, 2], &[]),
            Wait(PodMissing(3)),
        ),
        (
            "waits for a new pod whose node does not answer",
            World::new(4, 4).cluster(0, &[0, 1, 2], &[]).unreachable(3),
            Wait(NodeUnreachable(3)),
        ),
        (
            "removes the highest voter first on scale-in",
            World::new(3, 5).cluster(0, &[0, 1, 2, 3, 4], &[]),
            RemoveVoter {
                id: 4,
                voters: ids([0, 1, 2, 3]),
            },
        ),
        (
            "shrinks the StatefulSet only once the highest voter is gone",
            World::new(3, 5).cluster(0, &[0, 1, 2, 3], &[]),
            ShrinkStatefulSet { from: 5, to: 4 },
        ),
        (
            "removes the next voter after the shrink",
            World::new(3, 4).cluster(0, &[0, 1, 2, 3], &[]),
            RemoveVoter {
                id: 3,
                voters: ids([0, 1, 2]),
            },
        ),
        (
            "moves leadership off a voter before removing it",
            World::new(3, 4).cluster(3, &[0, 1, 2, 3], &[]),
            TransferLeadership {
                from: 3,
                to: 0,
                before: Handoff::Removal,
            },
        ),
        (
            "moves leadership to a healthy voter only",
            World::new(3, 4).cluster(3, &[0, 1, 2, 3], &[]).down(0),
            TransferLeadership {
                from: 3,
                to: 1,
                before: Handoff::Removal,
            },
        ),
        (
            "does not remove a voter when the rest would lack a healthy quorum",
            World::new(3, 4)
                .cluster(0, &[0, 1, 2, 3], &[])
                .down(1)
                .down(2),
            Wait(QuorumAtRisk {
                healthy: 2,
                voters: 4,
            }),
        ),
        (
            "does not promote when the new voter set would lack a healthy quorum",
            World::new(4, 4)
                .cluster(0, &[0, 1, 2], &[3])
                .down(1)
                .down(2),
            Wait(QuorumAtRisk {
                healthy: 1,
                voters: 3,
            }),
        ),
        (
            "treats a down voter as down, not as scale-in",
            World::new(3, 3).cluster(0, &[0, 1, 2], &[]).down(2),
            Steady,
        ),
        (
            "treats a deleted pod of a voter as restarting, not as scale-in",
            World::new(3, 3).cluster(0, &[0, 1, 2], &[]).without_pod(2),
            Steady,
        ),
        (
            "refuses to join a node holding another cluster's data",
            World::new(3, 3)
                .cluster(0, &[0, 1], &[])
                .foreign(2, "c-other"),
            Refuse(Refusal::Fenced {
                id: 2,
                cluster_id: "c-other".to_owned(),
            }),
        ),
        (
            "refuses a leader of another cluster than the recorded one",
            World::new(3, 3)
                .cluster(0, &[0, 1, 2], &[])
                .recorded("c-old"),
            Refuse(Refusal::ForeignCluster {
                expected: "c-old".to_owned(),
                found: CLUSTER.to_owned(),
            }),
        ),
        (
            "waits for the recorded cluster's leader rather than report a fenced node's own cluster",
            {
                let mut w = World::new(3, 3).cluster(0, &[0, 1], &[]).unreachable(0);
                let mut foreign = node(2, "c-other", Role::Leader);
                foreign.voters = vec![member(2)];
                foreign.term = 9;
                w.observed.nodes.insert(2, foreign);
                w
            },
            Wait(NoLeader),
        ),
        (
            "removes a learner beyond the desired ordinals instead of promoting it",
            World::new(3, 4).cluster(0, &[0, 1, 2], &[3]),
            RemoveLearner { id: 3 },
        ),
        (
            "removes the highest unwanted learner first",
            World::new(3, 5).cluster(0, &[0, 1, 2], &[3, 4]),
            RemoveLearner { id: 4 },
        ),
        (
            "shrinks past a pod once its learner is gone",
            World::new(3, 4).cluster(0, &[0, 1, 2], &[]),
            ShrinkStatefulSet { from: 4, to: 3 },
        ),
        (
            "keeps the single voter of a one-node cluster",
            World::new(1, 1).cluster(0, &[0], &[]),
            Steady,
        ),
    ];
    let mut failures = Vec::new();
    for (name, world, expected) in cases {
        let got = world.plan().step;
        if got != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "planner table mismatches:\n{}",
        failures.join("\n")
    );
}

fn survivor(id: NodeId, last_log_index: u64) -> Survivor {
    Survivor {
        id,
        last_log_index,
        term: 3,
    }
}

#[test]
fn quorum_loss_is_refused_until_a_person_names_a_survivor() {
    use Step::*;
    use WaitReason::*;
    let five = || World::new(5, 5).cluster(0, &[0, 1, 2, 3, 4], &[]);
    let three_lost = || five().lost(&[2, 3, 4], &[(0, 900), (1, 1_000)]);
    let lost = |refusal| Refuse(refusal);
    let cases: Vec<(&str, World, Step, Option<NodeId>)> = vec![
        (
            "two of five lost: a quorum can still form, so wait",
            five().lost(&[3, 4], &[]),
            Wait(NoLeader),
            None,
        ),
        (
            "two lost and one silent: it may come back, so wait",
            five().lost(&[3, 4], &[]).unreachable(2),
            Wait(NoLeader),
            None,
        ),
        (
            "three of five lost: refused, the survivors named",
            three_lost(),
            lost(Refusal::QuorumLost {
                voters: ids(0..5),
                lost: ids([2, 3, 4]),
                survivors: vec![survivor(0, 900), survivor(1, 1_000)],
            }),
            None,
        ),
        (
            "the annotation names a survivor: it forces a new cluster",
            three_lost().annotated("1"),
            ForceNewCluster { id: 1 },
            Some(1),
        ),
        (
            "the survivor is told already: wait for it",
            three_lost().annotated("1").forcing(1),
            Wait(ForcingNewCluster(1)),
            Some(1),
        ),
        (
            "the annotation names a lost member: refused",
            three_lost().annotated("3"),
            lost(Refusal::NotASurvivor {
                named: "3".to_owned(),
                survivors: vec![survivor(0, 900), survivor(1, 1_000)],
            }),
            None,
        ),
        (
            "the annotation is not a member id: refused",
            three_lost().annotated("node-1"),
            lost(Refusal::NotASurvivor {
                named: "node-1".to_owned(),
                survivors: vec![survivor(0, 900), survivor(1, 1_000)],
            }),
            None,
        ),
        (
            "an annotation without a lost quorum does nothing",
            five().lost(&[4], &[]).annotated("1"),
            Wait(NoLeader),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (name, world, expected, forcing) in cases {
        let plan = world.plan();
        if plan.step != expected || plan.forcing != forcing {
            failures.push(format!(
                "{name}:\n  expected {expected:?} forcing {forcing:?}\n  got      {:?} forcing {:?}",
                plan.step, plan.forcing
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn quorum_loss_names_the_most_up_to_date_survivor() {
    let plan = World::new(5, 5)
        .cluster(0, &[0, 1, 2, 3, 4], &[])
        .lost(&[2, 3, 4], &[(0, 900), (1, 1_000)])
        .plan();
    let message = plan.step.to_string();
    assert!(message.contains("node 0 (log 900, term 3)"), "{message}");
    assert!(
        message.contains("node 1 is the most up to date")
            && message.contains("recipestore.dev/force-recovery=\"1\""),
        "{message}"
    );
}

#[test]
fn a_leader_back_clears_the_annotation_and_the_forcing() {
    let plan = World::new(3, 3)
        .cluster(1, &[1], &[])
        .annotated("1")
        .forcing(1)
        .plan();
    assert!(plan.clear_force_recovery);
    assert_eq!(plan.forcing, None);
    // The lost members come back as new ones.
    assert_eq!(plan.step, Step::AddLearner { member: member(0) });
}

#[test]
fn scale_out_grows_the_statefulset_at_once() {
    let plan = World::new(5, 3).cluster(0, &[0, 1, 2], &[]).plan();
    assert_eq!(plan.statefulset_replicas, 5);
}

#[test]
fn scale_in_keeps_the_statefulset_until_the_voter_is_removed() {
    let plan = World::new(3, 5).cluster(0, &[0, 1, 2, 3, 4], &[]).plan();
    assert_eq!(plan.statefulset_replicas, 5);
}

#[test]
fn no_leader_never_shrinks_the_statefulset() {
    let mut w = World::new(1, 3).cluster(0, &[0], &[]);
    w.leader_mut().role = Role::Follower;
    assert_eq!(w.plan().statefulset_replicas, 3);
}

#[test]
fn fenced_nodes_are_reported_whatever_the_step() {
    let plan = World::new(3, 4)
        .cluster(0, &[0, 1, 2], &[])
        .foreign(3, "c-other")
        .plan();
    assert_eq!(plan.step, Step::ShrinkStatefulSet { from: 4, to: 3 });
    assert_eq!(
        plan.fenced,
        vec![Fenced {
            id: 3,
            cluster_id: "c-other".to_owned()
        }]
    );
}

#[test]
fn plan_names_the_leader_and_cluster() {
    let plan = World::new(3, 3).cluster(1, &[0, 1, 2], &[]).plan();
    assert_eq!(plan.leader, Some(member(1)));
    assert_eq!(plan.cluster_id.as_deref(), Some(CLUSTER));
}

/// How a member appears to the leader in a generated state.
#[derive(Clone, Copy, Debug)]
enum Health {
    CaughtUp,
    Lagging,
    Down,
}

fn arb_health() -> impl Strategy<Value = Health> {
    prop_oneof![
        Just(Health::CaughtUp),
        Just(Health::Lagging),
        Just(Health::Down)
    ]
}

prop_compose! {
    /// Any initialized cluster of up to 7 ordinals, with any mix of voters,
    /// learners, health, missing pods, desired and StatefulSet sizes.
    fn arb_world()(
        desired in 1u32..=7,
        statefulset in 1u32..=7,
        roles in proptest::collection::vec(0u8..3, 7),
        health in proptest::collection::vec(arb_health(), 7),
        leader_pick in 0usize..7,
        leader_is_leader in proptest::bool::weighted(0.9),
    ) -> World {
        // role 0: not a member, 1: voter, 2: learner
        let mut voters: Vec<NodeId> = (0..7).filter(|i| roles[*i as usize] == 1).collect();
        if voters.is_empty() {
            voters.push(0);
        }
        let learners: Vec<NodeId> =
            (0..7).filter(|i| roles[*i as usize] == 2 && !voters.contains(i)).collect();
        let leader = voters[leader_pick % voters.len()];
        let pods = statefulset.max(u32::try_from(voters.iter().max().unwrap() + 1).unwrap());
        let mut w = World::new(desired, pods).statefulset(statefulset.max(pods)).cluster(leader, &voters, &learners);
        for id in 0..7u64 {
            if id == leader {
                continue;
            }
            match health[id as usize] {
                Health::CaughtUp => {}
                Health::Lagging => w = w.lagging(id, LOG_END / 2),
                Health::Down => w = w.down(id),
            }
        }
        if !leader_is_leader {
            w.leader_mut().role = Role::Follower;
        }
        w
    }
}

fn healthy_count(leader: &NodeStatus, set: &BTreeSet<NodeId>) -> usize {
    set.iter()
        .filter(|id| is_healthy(leader, &Policy::default(), **id))
        .count()
}

proptest! {
    #[test]
    fn membership_changes_keep_a_healthy_quorum_and_move_one_voter(world in arb_world()) {
        let plan = world.plan();
        let Some(leader) = world.observed.nodes.values().find(|n| n.role == Role::Leader) else {
            prop_assert!(!plan.step.is_change(), "acted without a leader: {:?}", plan.step);
            return Ok(());
        };
        let before = leader.voter_ids();
        let after = match &plan.step {
            Step::PromoteLearner { voters, .. } | Step::RemoveVoter { voters, .. } => voters.clone(),
            _ => return Ok(()),
        };
        prop_assert_eq!(before.symmetric_difference(&after).count(), 1);
        prop_assert!(!after.is_empty());
        for set in [&before, &after] {
            prop_assert!(healthy_count(leader, set) > set.len() / 2,
                "set {:?} lacks a healthy quorum after {:?}", set, plan.step);
        }
    }

    #[test]
    fn only_voters_beyond_desired_are_removed_and_never_the_leader(world in arb_world()) {
        let plan = world.plan();
        if let Step::RemoveVoter { id, .. } = plan.step {
            prop_assert!(id >= u64::from(world.observed.desired_replicas));
            prop_assert_ne!(Some(id), plan.leader.map(|l| l.id));
        }
    }

    #[test]
    fn statefulset_never_drops_below_desired_or_a_voter(world in arb_world()) {
        let plan = world.plan();
        prop_assert!(plan.statefulset_replicas >= world.observed.desired_replicas);
        prop_assert!(plan.statefulset_replicas <= world.observed.statefulset_replicas.max(world.observed.desired_replicas));
        if let Some(leader) = world.observed.nodes.values().find(|n| n.role == Role::Leader) {
            let highest = leader.voter_ids().into_iter().max().unwrap_or(0);
            prop_assert!(u64::from(plan.statefulset_replicas) > highest,
                "shrank to {} under voter {}", plan.statefulset_replicas, highest);
        }
        if !matches!(plan.step, Step::ShrinkStatefulSet { .. }) {
            prop_assert!(plan.statefulset_replicas >= world.observed.statefulset_replicas);
        }
    }

    #[test]
    fn a_roll_takes_down_one_member_at_a_time_and_the_leader_last(
        world in arb_world(),
        updated in proptest::collection::vec(proptest::bool::ANY, 7),
    ) {
        let updated: Vec<NodeId> = (0..7).filter(|id| updated[*id as usize]).collect();
        let world = world.revisions("r2", "r1", &updated);
        let plan = world.plan();
        let Step::RestartMember { id, .. } = plan.step else {
            return Ok(());
        };
        let leader = world.observed.nodes.values().find(|n| n.role == Role::Leader).unwrap();
        let voters = leader.voter_ids();
        let others_serving = voters.iter().filter(|v| **v != id).all(|v| {
            world.observed.pods[v].ready && is_healthy(leader, &Policy::default(), *v)
        });
        prop_assert!(others_serving, "restarted {} while another voter was out: {:?}", id, world);
        if id == leader.id {
            prop_assert_eq!(voters.len(), 1, "restarted the leader of {:?}", voters);
        }
    }

    #[test]
    fn initialized_clusters_are_never_initialized_again(world in arb_world()) {
        let step = world.plan().step;
        prop_assert!(!matches!(step, Step::Initialize { .. }), "{:?}", step);
    }

    #[test]
    fn a_down_pod_within_desired_never_causes_removal(world in arb_world()) {
        let mut w = world;
        w.observed.desired_replicas = 7;
        let plan = w.plan();
        prop_assert!(!matches!(plan.step, Step::RemoveVoter { .. } | Step::ShrinkStatefulSet { .. }),
            "{:?}", plan.step);
    }
}

fn restart(id: NodeId) -> Step {
    Step::RestartMember {
        id,
        revision: "r2".to_owned(),
    }
}

#[test]
fn rolling_upgrade_table() {
    use Step::*;
    use WaitReason::*;
    use rollout::Gate;
    let cluster = || World::new(3, 3).cluster(1, &[0, 1, 2], &[]);
    let cases: Vec<(&str, World, Step)> = vec![
        (
            "is steady when every pod runs the update revision",
            cluster().revisions("r2", "r1", &[0, 1, 2]),
            Steady,
        ),
        ("is steady when no revision is known", cluster(), Steady),
        (
            "restarts followers first, the highest ordinal first",
            cluster().revisions("r2", "r1", &[]),
            restart(2),
        ),
        (
            "then the next follower",
            cluster().revisions("r2", "r1", &[2]),
            restart(0),
        ),
        (
            "moves leadership to an updated voter before restarting the leader",
            cluster().revisions("r2", "r1", &[0, 2]),
            TransferLeadership {
                from: 1,
                to: 0,
                before: Handoff::Restart,
            },
        ),
        (
            "hands leadership to the most caught-up voter",
            cluster().revisions("r2", "r1", &[0, 2]).lagging(0, 3),
            TransferLeadership {
                from: 1,
                to: 2,
                before: Handoff::Restart,
            },
        ),
        (
            "restarts the former leader once it follows",
            World::new(3, 3)
                .cluster(0, &[0, 1, 2], &[])
                .revisions("r2", "r1", &[0, 2]),
            restart(1),
        ),
        (
            "restarts a single voter: it has nobody to hand over to",
            World::new(1, 1)
                .cluster(0, &[0], &[])
                .revisions("r2", "r1", &[]),
            restart(0),
        ),
        (
            "waits for the member just restarted to be ready",
            cluster().revisions("r2", "r1", &[2]).unready(2),
            Wait(RollHeld(Gate::PodNotReady {
                id: 2,
                updated: true,
            })),
        ),
        (
            "waits for the member just restarted to catch up",
            cluster().revisions("r2", "r1", &[2]).lagging(2, 500),
            Wait(RollHeld(Gate::Behind {
                id: 2,
                lag: Some(500),
            })),
        ),
        (
            "waits for a member just restarted to answer",
            cluster().revisions("r2", "r1", &[2]).unreachable(2),
            Wait(RollHeld(Gate::NodeUnreachable(2))),
        ),
        (
            "waits for the member just restarted to hear from the leader",
            {
                let mut w = cluster().revisions("r2", "r1", &[2]);
                w.observed.nodes.get_mut(&2).unwrap().leader_id = None;
                w
            },
            Wait(RollHeld(Gate::NotFollowing { id: 2, leader: 1 })),
        ),
        (
            "waits for a recreated pod",
            cluster().revisions("r2", "r1", &[2]).without_pod(2),
            Wait(RollHeld(Gate::PodNotReady {
                id: 2,
                updated: true,
            })),
        ),
        (
            "never goes past a member that fails on the new revision",
            cluster().revisions("r2", "r1", &[2]).down(2),
            Wait(RollHeld(Gate::PodNotReady {
                id: 2,
                updated: true,
            })),
        ),
        (
            "waits while a member sheds",
            cluster().revisions("r2", "r1", &[]).shedding(0, 60, 940),
            Wait(RollHeld(Gate::Shedding {
                id: 0,
                shed: 60,
                requests: 1000,
                seconds: 10,
            })),
        ),
        (
            "goes on below the shedding threshold",
            cluster().revisions("r2", "r1", &[]).shedding(0, 40, 960),
            restart(2),
        ),
        (
            "goes on when too few requests say anything about shedding",
            cluster().revisions("r2", "r1", &[]).shedding(0, 10, 10),
            restart(2),
        ),
        (
            "waits for a pod being deleted, and never deletes it again",
            {
                let mut w = cluster().revisions("r2", "r1", &[2]).down(0);
                w.observed.pods.get_mut(&0).unwrap().deleting = true;
                w
            },
            Wait(RollHeld(Gate::PodNotReady {
                id: 0,
                updated: true,
            })),
        ),
        (
            "is not done while the last member is still being deleted",
            {
                let mut w = World::new(3, 3)
                    .cluster(0, &[0, 1, 2], &[])
                    .revisions("r2", "r1", &[0, 2])
                    .down(1);
                w.observed.pods.get_mut(&1).unwrap().deleting = true;
                w
            },
            Wait(RollHeld(Gate::PodNotReady {
                id: 1,
                updated: true,
            })),
        ),
        (
            "is not done while the last member's pod is gone and not recreated yet",
            World::new(3, 3)
                .cluster(0, &[0, 1, 2], &[])
                .revisions("r2", "r1", &[0, 2])
                .without_pod(1),
            Wait(RollHeld(Gate::PodNotReady {
                id: 1,
                updated: true,
            })),
        ),
        (
            "restarts a member that is down on an old revision first",
            cluster().revisions("r2", "r1", &[2]).down(0),
            restart(0),
        ),
        (
            "but not while another member is down too",
            cluster().revisions("r2", "r1", &[]).down(0).lagging(2, 500),
            Wait(RollHeld(Gate::PodNotReady {
                id: 0,
                updated: false,
            })),
        ),
        (
            "does not restart a shedding member out of turn",
            cluster().revisions("r2", "r1", &[2]).shedding(0, 500, 500),
            Wait(RollHeld(Gate::Shedding {
                id: 0,
                shed: 500,
                requests: 1000,
                seconds: 10,
            })),
        ),
        (
            "finishes a scale-out before rolling",
            World::new(4, 4)
                .cluster(1, &[0, 1, 2], &[])
                .revisions("r2", "r1", &[]),
            AddLearner { member: member(3) },
        ),
    ];
    for (name, world, expected) in cases {
        assert_eq!(world.plan().step, expected, "{name}");
    }
}

/// Carries a step out on the world as Kubernetes and the nodes would,
/// the restarted member coming back caught up on the update revision.
fn take(world: &mut World, step: &Step) {
    match step {
        Step::RestartMember { id, revision } => {
            world.observed.pods.get_mut(id).unwrap().revision = Some(revision.clone());
        }
        Step::TransferLeadership { from, to, .. } => {
            let mut leader = world.observed.nodes.remove(from).unwrap();
            let mut successor = world.observed.nodes.remove(to).unwrap();
            successor.role = Role::Leader;
            successor.matched_index = std::mem::take(&mut leader.matched_index);
            successor.millis_since_quorum_ack = leader.millis_since_quorum_ack.take();
            leader.role = Role::Follower;
            world.observed.nodes.insert(*from, leader);
            world.observed.nodes.insert(*to, successor);
            for node in world.observed.nodes.values_mut() {
                node.term += 1;
                node.leader_id = Some(*to);
            }
        }
        other => panic!("not a rolling step: {other:?}"),
    }
}

#[test]
fn a_roll_restarts_each_member_once_and_the_leader_last() {
    for (voters, leader) in [(1, 0), (3, 0), (3, 2), (5, 3), (5, 4)] {
        let ids: Vec<NodeId> = (0..voters).collect();
        let replicas = u32::try_from(voters).unwrap();
        let mut world = World::new(replicas, replicas)
            .cluster(leader, &ids, &[])
            .revisions("r2", "r1", &[]);
        let mut restarted = Vec::new();
        while let step @ (Step::RestartMember { .. } | Step::TransferLeadership { .. }) =
            world.plan().step
        {
            if let Step::RestartMember { id, .. } = step {
                restarted.push(id);
            }
            take(&mut world, &step);
            assert!(restarted.len() <= ids.len(), "{restarted:?}");
        }
        assert_eq!(world.plan().step, Step::Steady);
        assert_eq!(restarted.len(), ids.len(), "{restarted:?}");
        assert_eq!(restarted.last(), Some(&leader), "{restarted:?}");
        assert_eq!(rollout::progress(&world.observed).updated, replicas);
    }
}

#[test]
fn progress_counts_updated_members_and_names_the_old_revision() {
    let world = World::new(3, 3)
        .cluster(1, &[0, 1, 2], &[])
        .revisions("r2", "r1", &[2]);
    let progress = rollout::progress(&world.observed);
    assert_eq!(progress.updated, 1);
    assert_eq!(progress.update_revision.as_deref(), Some("r2"));
    assert_eq!(progress.current_revision.as_deref(), Some("r1"));
    let done = world.revisions("r2", "r1", &[0, 1, 2]);
    assert_eq!(
        rollout::progress(&done.observed)
            .current_revision
            .as_deref(),
        Some("r2")
    );
}
