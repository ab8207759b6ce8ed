//! Carries out membership: asks every pod's node for its `Status`, and
//! performs a planned [`Step`] through a [`NodeAdmin`]. Free of Kubernetes
//! types, so the same code drives real node processes in tests.

use std::collections::BTreeMap;

use futures::future::join_all;
use tracing::debug;

use recipestore_settings::Shedding;

use crate::admin::{AdminError, NodeAdmin};
use crate::membership::{self, NodeId, NodeStatus, Observed, Plan, Pod, Policy, Step};

/// Asks every existing pod's node for its status, concurrently. A node that
/// does not answer is left out: the planner treats it as unreachable.
pub async fn observe_nodes(
    admin: &dyn NodeAdmin,
    pods: &BTreeMap<NodeId, Pod>,
) -> BTreeMap<NodeId, NodeStatus> {
    let calls = pods.values().filter(|p| p.running).map(|pod| async move {
        match admin.status(&pod.member.peer_addr).await {
            Ok(status) => Some((pod.member.id, status)),
            Err(error) => {
                debug!(node = pod.member.id, error = %error, "node did not answer Status");
                None
            }
        }
    });
    join_all(calls).await.into_iter().flatten().collect()
}

/// Performs the admin call of a step. Steps that change nothing through the
/// admin API (waiting, refusing, shrinking the StatefulSet) are no-ops here.
pub async fn execute(admin: &dyn NodeAdmin, plan: &Plan) -> Result<(), AdminError> {
    let leader = |call| {
        plan.leader
            .as_ref()
            .map(|l| l.peer_addr.as_str())
            .ok_or(AdminError::NoLeader { call })
    };
    match &plan.step {
        Step::Initialize { member } => {
            admin
                .initialize(&member.peer_addr, vec![member.clone()])
                .await?;
        }
        Step::AddLearner { member } => {
            admin
                .add_learner(leader("AddLearner")?, member.clone())
                .await?
        }
        Step::PromoteLearner { voters, .. } | Step::RemoveVoter { voters, .. } => {
            admin
                .change_membership(leader("ChangeMembership")?, voters.clone())
                .await?
        }
        Step::RemoveLearner { id } => admin.remove_learner(leader("RemoveLearner")?, *id).await?,
        Step::TransferLeadership { to, .. } => {
            admin
                .transfer_leadership(leader("TransferLeadership")?, *to)
                .await?
        }
        // Kubernetes steps: the controller takes them.
        Step::ShrinkStatefulSet { .. }
        | Step::RestartMember { .. }
        | Step::ForceNewCluster { .. }
        | Step::Wait(_)
        | Step::Refuse(_)
        | Step::Steady => {}
    }
    Ok(())
}

/// Gives `desired` shedding settings to every answering node that runs
/// with others (but for `enabled`, which needs a restart); answers the
/// nodes reconfigured. A node that does not say what it runs is left
/// alone: it is too old to take them.
pub async fn reconfigure(
    admin: &dyn NodeAdmin,
    observed: &Observed,
    desired: &Shedding,
) -> Result<Vec<NodeId>, AdminError> {
    let mut reconfigured = Vec::new();
    for (id, node) in &observed.nodes {
        let Some(running) = &node.shedding else {
            continue;
        };
        let wanted = Shedding {
            enabled: running.enabled,
            ..desired.clone()
        };
        if *running == wanted {
            continue;
        }
        if let Some(pod) = observed.pods.get(id) {
            admin.reconfigure(&pod.member.peer_addr, desired).await?;
            reconfigured.push(*id);
        }
    }
    Ok(reconfigured)
}

/// One full round without Kubernetes: observe the nodes of `observed.pods`,
/// plan, and perform the step. Returns the plan (with the observation it was
/// made from) so the caller can apply `statefulset_replicas`.
pub async fn advance(
    admin: &dyn NodeAdmin,
    mut observed: Observed,
    policy: &Policy,
) -> Result<(Observed, Plan), AdminError> {
    observed.nodes = observe_nodes(admin, &observed.pods).await;
    let plan = membership::plan(&observed, policy);
    execute(admin, &plan).await?;
    Ok((observed, plan))
}
