//! The nodes' `Admin` API as membership sees it, behind the [`NodeAdmin`]
//! trait so that membership can be driven by a fake in tests. The gRPC
//! implementation is the client library's admin client.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use recipestore_client::admin::AdminClient;
use recipestore_client::admin::Timeouts;
use recipestore_client::reshard;
use recipestore_protocol::pb as proto;
use tonic::transport::ClientTlsConfig;

use recipestore_settings::Shedding;

use crate::membership::{Member, NodeId, NodeStatus, Role};
use crate::placement::GroupPlacement;

/// Failure of one admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Node(#[from] recipestore_client::admin::AdminError),
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
    /// The same calls over TLS with `tls` (the store's CA and an
    /// administrator's certificate); without one, a store on TLS cannot be
    /// called and every call fails.
    fn with_tls(self: Arc<Self>, tls: Option<ClientTlsConfig>) -> Arc<dyn NodeAdmin>;
    /// Applies `shedding` to the running node at `addr`.
    fn reconfigure<'a>(
        &'a self,
        addr: &'a str,
        shedding: &'a Shedding,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    /// Records `placement` in the group of the node at `addr`; answers the
    /// epoch the group holds. A group holding the very same placement
    /// answers success.
    fn place<'a>(
        &'a self,
        addr: &'a str,
        placement: proto::Placement,
    ) -> BoxFuture<'a, Result<u64, AdminError>>;
    /// Takes the store one step toward `target` shards (see
    /// `recipestore_client::reshard::step`): finishes a move left half
    /// done, or moves the next batch of slots.
    fn reshard_step<'a>(
        &'a self,
        shards: &'a [ShardAddrs],
        target: u16,
        pace: reshard::Pace,
    ) -> BoxFuture<'a, Result<reshard::Step, reshard::ReshardError>>;
}

/// Where one shard is reached: its voters' peer (admin) and client addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardAddrs {
    pub shard: u16,
    pub peer_addrs: Vec<String>,
    pub client_addrs: Vec<String>,
}

impl ShardAddrs {
    /// Every shard the placement planner was given, as the driver reaches it.
    pub fn of(inputs: &crate::placement::Inputs) -> Vec<Self> {
        inputs
            .shards
            .iter()
            .map(|s| Self {
                shard: s.shard,
                peer_addrs: s.peer_addrs.clone(),
                client_addrs: s.client_addrs.clone(),
            })
            .collect()
    }
}

/// [`NodeAdmin`] over gRPC. Connects per call: the operator talks to each node
/// a few times per reconcile, and a fresh connection never outlives a pod.
#[derive(Clone, Debug)]
pub struct GrpcAdmin {
    timeouts: Timeouts,
    tls: Option<ClientTlsConfig>,
}

impl GrpcAdmin {
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            timeouts: Timeouts {
                connect: connect_timeout,
                request: request_timeout,
            },
            tls: None,
        }
    }

    fn client(&self, addr: &str) -> Result<AdminClient, AdminError> {
        Ok(AdminClient::with_tls(
            addr,
            self.timeouts,
            self.tls.as_ref(),
        )?)
    }
}

impl Default for GrpcAdmin {
    fn default() -> Self {
        Self::new(Duration::from_secs(2), Duration::from_secs(10))
    }
}

impl NodeAdmin for GrpcAdmin {
    fn with_tls(self: Arc<Self>, tls: Option<ClientTlsConfig>) -> Arc<dyn NodeAdmin> {
        Arc::new(Self {
            timeouts: self.timeouts,
            tls,
        })
    }

    fn status<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<NodeStatus, AdminError>> {
        Box::pin(async move { Ok(self.client(addr)?.status().await?.into()) })
    }

    fn initialize<'a>(
        &'a self,
        addr: &'a str,
        members: Vec<Member>,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        Box::pin(async move {
            let members = members.into_iter().map(Into::into).collect();
            Ok(self.client(addr)?.initialize(members).await?.cluster_id)
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
            self.client(addr)?.add_learner(member.into(), false).await?;
            Ok(())
        })
    }

    fn change_membership<'a>(
        &'a self,
        addr: &'a str,
        voters: BTreeSet<NodeId>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let voters = voters.into_iter().collect();
            self.client(addr)?.change_membership(voters, false).await?;
            Ok(())
        })
    }

    fn remove_learner<'a>(
        &'a self,
        addr: &'a str,
        id: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            self.client(addr)?.remove_learner(id).await?;
            Ok(())
        })
    }

    fn transfer_leadership<'a>(
        &'a self,
        addr: &'a str,
        to: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            self.client(addr)?.transfer_leadership(to).await?;
            Ok(())
        })
    }

    fn reconfigure<'a>(
        &'a self,
        addr: &'a str,
        shedding: &'a Shedding,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let json = serde_json::to_string(shedding).expect("settings serialize");
            self.client(addr)?.reconfigure(json).await?;
            Ok(())
        })
    }

    fn reshard_step<'a>(
        &'a self,
        shards: &'a [ShardAddrs],
        target: u16,
        pace: reshard::Pace,
    ) -> BoxFuture<'a, Result<reshard::Step, reshard::ReshardError>> {
        Box::pin(async move {
            let mut reached = Vec::new();
            for s in shards {
                let admins = s
                    .peer_addrs
                    .iter()
                    .map(|addr| self.client(addr))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| reshard::ReshardError::Store(e.to_string()))?;
                reached.push(reshard::Shard {
                    shard: s.shard,
                    admins,
                    client_addrs: s.client_addrs.clone(),
                });
            }
            reshard::step(&reached, target, pace).await
        })
    }

    fn place<'a>(
        &'a self,
        addr: &'a str,
        placement: proto::Placement,
    ) -> BoxFuture<'a, Result<u64, AdminError>> {
        Box::pin(async move { Ok(self.client(addr)?.place(placement).await?) })
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
            recent_admitted: s.recent_admitted,
            recent_shed: s.recent_shed,
            recent_seconds: s.recent_seconds,
            // Empty from a node too old to say (and to be reconfigured).
            shedding: serde_json::from_str(&s.shedding_json).ok(),
            // A placement naming a shard or owner beyond u16 is not one a
            // node takes; it cannot hold one.
            placement: s.placement.and_then(|p| {
                Some(GroupPlacement {
                    shard: u16::try_from(p.shard).ok()?,
                    epoch: p.epoch,
                    owners: p
                        .owners
                        .into_iter()
                        .map(u16::try_from)
                        .collect::<Result<_, _>>()
                        .ok()?,
                    shards: p
                        .shards
                        .into_iter()
                        .map(|e| Some((u16::try_from(e.shard).ok()?, e.client_addrs)))
                        .collect::<Option<_>>()?,
                    releasing: p.released.len(),
                })
            }),
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
