//! Client of the nodes' `Admin` gRPC service, behind the [`NodeAdmin`] trait
//! so that membership can be driven by a fake in tests.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

use crate::membership::{Member, NodeId, NodeStatus, Role};

/// Code generated from `node/proto/recipestore/v1/{cluster,recipes}.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("recipestore.v1");
}

use proto::admin_client::AdminClient;

/// Failure of one admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid admin address {addr}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("failed to connect to the admin API of {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("admin call {call} to {addr} failed")]
    Call {
        call: &'static str,
        addr: String,
        #[source]
        source: tonic::Status,
    },
    #[error("no leader to send {call} to")]
    NoLeader { call: &'static str },
}

/// The admin calls membership needs. Every call names the node it goes to;
/// membership changes go to the leader (nodes also forward them).
pub trait NodeAdmin: Send + Sync {
    fn status<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<NodeStatus, AdminError>>;
    /// Returns the new cluster id.
    fn initialize<'a>(
        &'a self,
        addr: &'a str,
        members: Vec<Member>,
    ) -> BoxFuture<'a, Result<String, AdminError>>;
    fn add_learner<'a>(
        &'a self,
        addr: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn change_membership<'a>(
        &'a self,
        addr: &'a str,
        voters: BTreeSet<NodeId>,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn transfer_leadership<'a>(
        &'a self,
        addr: &'a str,
        to: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn remove_learner<'a>(
        &'a self,
        addr: &'a str,
        id: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
}

/// [`NodeAdmin`] over gRPC. Connects per call: the operator talks to each node
/// a few times per reconcile, and a fresh connection never outlives a pod.
#[derive(Clone, Debug)]
pub struct GrpcAdmin {
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl GrpcAdmin {
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            request_timeout,
        }
    }

    async fn client(&self, addr: &str) -> Result<AdminClient<Channel>, AdminError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| AdminError::Address {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| AdminError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(AdminClient::new(channel))
    }
}

impl Default for GrpcAdmin {
    fn default() -> Self {
        Self::new(Duration::from_secs(2), Duration::from_secs(10))
    }
}

fn call_error(call: &'static str, addr: &str) -> impl FnOnce(tonic::Status) -> AdminError {
    let addr = addr.to_owned();
    move |source| AdminError::Call { call, addr, source }
}

impl NodeAdmin for GrpcAdmin {
    fn status<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<NodeStatus, AdminError>> {
        Box::pin(async move {
            let reply = self
                .client(addr)
                .await?
                .status(proto::StatusRequest {})
                .await
                .map_err(call_error("Status", addr))?;
            Ok(reply.into_inner().into())
        })
    }

    fn initialize<'a>(
        &'a self,
        addr: &'a str,
        members: Vec<Member>,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        Box::pin(async move {
            let request = proto::InitializeRequest {
                members: members.into_iter().map(Into::into).collect(),
            };
            let reply = self
                .client(addr)
                .await?
                .initialize(request)
                .await
                .map_err(call_error("Initialize", addr))?;
            Ok(reply.into_inner().cluster_id)
        })
    }

    fn add_learner<'a>(
        &'a self,
        addr: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            // Non-blocking: the planner promotes the learner once the leader
            // reports it caught up, so a reconcile never waits on replication.
            let request = proto::AddLearnerRequest {
                member: Some(member.into()),
                blocking: false,
            };
            self.client(addr)
                .await?
                .add_learner(request)
                .await
                .map_err(call_error("AddLearner", addr))?;
            Ok(())
        })
    }

    fn change_membership<'a>(
        &'a self,
        addr: &'a str,
        voters: BTreeSet<NodeId>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let request = proto::ChangeMembershipRequest {
                voters: voters.into_iter().collect(),
                retain_removed_as_learners: false,
            };
            self.client(addr)
                .await?
                .change_membership(request)
                .await
                .map_err(call_error("ChangeMembership", addr))?;
            Ok(())
        })
    }

    fn remove_learner<'a>(
        &'a self,
        addr: &'a str,
        id: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            self.client(addr)
                .await?
                .remove_learner(proto::RemoveLearnerRequest { id })
                .await
                .map_err(call_error("RemoveLearner", addr))?;
            Ok(())
        })
    }

    fn transfer_leadership<'a>(
        &'a self,
        addr: &'a str,
        to: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let request = proto::TransferLeadershipRequest { to };
            self.client(addr)
                .await?
                .transfer_leadership(request)
                .await
                .map_err(call_error("TransferLeadership", addr))?;
            Ok(())
        })
    }
}

impl From<proto::Member> for Member {
    fn from(m: proto::Member) -> Self {
        Self {
            id: m.id,
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
        }
    }
}

impl From<Member> for proto::Member {
    fn from(m: Member) -> Self {
        Self {
            id: m.id,
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
        }
    }
}

impl From<proto::Role> for Role {
    fn from(r: proto::Role) -> Self {
        match r {
            proto::Role::Leader => Role::Leader,
            proto::Role::Follower => Role::Follower,
            proto::Role::Candidate => Role::Candidate,
            proto::Role::Learner => Role::Learner,
            proto::Role::Shutdown => Role::Shutdown,
            proto::Role::Unspecified => Role::Unknown,
        }
    }
}

impl From<proto::StatusResponse> for NodeStatus {
    fn from(s: proto::StatusResponse) -> Self {
        Self {
            id: s.id,
            role: s.role().into(),
            cluster_id: s.cluster_id,
            term: s.term,
            leader_id: s.leader_id,
            voters: s.voters.into_iter().map(Into::into).collect(),
            learners: s.learners.into_iter().map(Into::into).collect(),
            last_log_index: s.last_log_index,
            committed_index: s.committed_index,
            matched_index: s.matched_index.into_iter().collect(),
            millis_since_quorum_ack: s.millis_since_quorum_ack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_response_maps_to_node_status() {
        let reply = proto::StatusResponse {
            id: 1,
            cluster_id: "c-1".into(),
            role: proto::Role::Leader as i32,
            term: 7,
            leader_id: Some(1),
            voters: vec![proto::Member {
                id: 1,
                peer_addr: "a:7071".into(),
                client_addr: "a:7070".into(),
            }],
            learners: vec![proto::Member {
                id: 2,
                peer_addr: "b:7071".into(),
                client_addr: "b:7070".into(),
            }],
            last_log_index: 42,
            committed_index: 41,
            matched_index: [(1, 42), (2, 40)].into_iter().collect(),
            millis_since_quorum_ack: Some(12),
            ..Default::default()
        };
        let status = NodeStatus::from(reply);
        assert_eq!(status.role, Role::Leader);
        assert_eq!(status.voter_ids(), [1].into_iter().collect());
        assert_eq!(status.learner_ids(), [2].into_iter().collect());
        assert_eq!(status.lag_of(2), Some(2));
        assert_eq!(status.millis_since_quorum_ack, Some(12));
    }

    #[test]
    fn unknown_role_maps_to_unknown() {
        let reply = proto::StatusResponse {
            role: 99,
            ..Default::default()
        };
        assert_eq!(NodeStatus::from(reply).role, Role::Unknown);
    }
}
