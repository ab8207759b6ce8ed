//! The client of one node's Admin service (on its peer port), used by
//! `recipectl`, the operator and the tests alike.
//!
//! Each call has the client's request timeout and names, when it fails, the
//! call and the node. Membership changes may be sent to any member: a member
//! that does not lead forwards them to the leader.

use std::time::Duration;

use recipestore_protocol::pb;
use recipestore_protocol::pb::admin_client;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

/// How long to wait for a connection and for each call.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(10),
        }
    }
}

/// Failure of one admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid peer address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("admin call {call} to {addr} failed: {:?}: {}", .source.code(), .source.message())]
    Call {
        call: &'static str,
        addr: String,
        #[source]
        source: Status,
    },
}

impl AdminError {
    /// The node's answer, when the call reached the transport.
    pub fn status(&self) -> Option<&Status> {
        match self {
            AdminError::Address { .. } => None,
            AdminError::Call { source, .. } => Some(source),
        }
    }
}

/// A connection to one node's Admin service. Connects on first use, so a
/// node that is down fails the call, not the construction.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: String,
    inner: admin_client::AdminClient<Channel>,
    /// How it was made, to reach other nodes alike.
    timeouts: Timeouts,
    tls: Option<ClientTlsConfig>,
}

impl AdminClient {
    /// A client of the node at `addr` (`host:port`, or a URI).
    pub fn new(addr: &str, timeouts: Timeouts) -> Result<Self, AdminError> {
        Self::with_tls(addr, timeouts, None)
    }

    /// Like [`AdminClient::new`], over TLS when `tls` is given: the peer
    /// port then requires a certificate for `recipestore-admin` (or a
    /// member's).
    pub fn with_tls(
        addr: &str,
        timeouts: Timeouts,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<Self, AdminError> {
        let channel = recipestore_tls::endpoint(addr, tls)
            .map_err(|source| AdminError::Address {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(timeouts.connect)
            .connect_lazy();
        Ok(Self {
            addr: addr.to_owned(),
            inner: admin_client::AdminClient::new(channel),
            timeouts,
            tls: tls.cloned(),
        })
    }

    /// A client of the node at `addr` with this one's timeouts and TLS:
    /// another member this node named (its leader, say).
    pub fn reach(&self, addr: &str) -> Result<Self, AdminError> {
        Self::with_tls(addr, self.timeouts, self.tls.as_ref())
    }

    /// The address this client calls.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeouts.request);
        request
    }

    fn failed(&self, call: &'static str) -> impl FnOnce(Status) -> AdminError {
        let addr = self.addr.clone();
        move |source| AdminError::Call { call, addr, source }
    }

    pub async fn status(&self) -> Result<pb::StatusResponse, AdminError> {
        let request = self.request(pb::StatusRequest {});
        let reply = self.inner.clone().status(request).await;
        Ok(reply.map_err(self.failed("Status"))?.into_inner())
    }

    /// Creates the cluster with `members` (this node alone when empty);
    /// answers the existing cluster's id when it already exists with them.
    pub async fn initialize(
        &self,
        members: Vec<pb::Member>,
    ) -> Result<pb::InitializeResponse, AdminError> {
        let request = self.request(pb::InitializeRequest { members });
        let reply = self.inner.clone().initialize(request).await;
        Ok(reply.map_err(self.failed("Initialize"))?.into_inner())
    }

    /// Adds a learner; with `blocking`, answers once it has caught up.
    pub async fn add_learner(
        &self,
        member: pb::Member,
        blocking: bool,
    ) -> Result<pb::MembershipResponse, AdminError> {
        let request = self.request(pb::AddLearnerRequest {
            member: Some(member),
            blocking,
        });
        let reply = self.inner.clone().add_learner(request).await;
        Ok(reply.map_err(self.failed("AddLearner"))?.into_inner())
    }

    /// Makes `voters` the voters; removed voters stay as learners when
    /// `retain_removed_as_learners`.
    pub async fn change_membership(
        &self,
        voters: Vec<u64>,
        retain_removed_as_learners: bool,
    ) -> Result<pb::MembershipResponse, AdminError> {
        let request = self.request(pb::ChangeMembershipRequest {
            voters,
            retain_removed_as_learners,
        });
        let reply = self.inner.clone().change_membership(request).await;
        Ok(reply.map_err(self.failed("ChangeMembership"))?.into_inner())
    }

    pub async fn promote(&self, id: u64) -> Result<pb::MembershipResponse, AdminError> {
        let request = self.request(pb::PromoteRequest { id });
        let reply = self.inner.clone().promote(request).await;
        Ok(reply.map_err(self.failed("Promote"))?.into_inner())
    }

    /// Removes a member: a voter leaves the voters, a learner the cluster.
    pub async fn remove_member(&self, id: u64) -> Result<pb::MembershipResponse, AdminError> {
        let request = self.request(pb::RemoveMemberRequest { id });
        let reply = self.inner.clone().remove_member(request).await;
        Ok(reply.map_err(self.failed("RemoveMember"))?.into_inner())
    }

    pub async fn remove_learner(&self, id: u64) -> Result<pb::MembershipResponse, AdminError> {
        let request = self.request(pb::RemoveLearnerRequest { id });
        let reply = self.inner.clone().remove_learner(request).await;
        Ok(reply.map_err(self.failed("RemoveLearner"))?.into_inner())
    }

    pub async fn transfer_leadership(
        &self,
        to: u64,
    ) -> Result<pb::TransferLeadershipResponse, AdminError> {
        let request = self.request(pb::TransferLeadershipRequest { to });
        let reply = self.inner.clone().transfer_leadership(request).await;
        Ok(reply
            .map_err(self.failed("TransferLeadership"))?
            .into_inner())
    }

    /// Starts a backup of this node's state: the file's bytes, in order.
    /// The call has no deadline as a whole (a large store takes long to
    /// send); the caller bounds the wait for each chunk.
    pub async fn save_snapshot(&self) -> Result<tonic::Streaming<pb::BackupChunk>, AdminError> {
        let reply = self
            .inner
            .clone()
            .save_snapshot(pb::SaveSnapshotRequest {})
            .await;
        Ok(reply.map_err(self.failed("SaveSnapshot"))?.into_inner())
    }

    /// Builds a snapshot on this node now.
    /// Applies `shedding_json` (a `spec.shedding`) to the running node;
    /// answers whether anything changed.
    pub async fn reconfigure(&self, shedding_json: String) -> Result<bool, AdminError> {
        let request = self.request(pb::ReconfigureRequest { shedding_json });
        let reply = self.inner.clone().reconfigure(request).await;
        Ok(reply
            .map_err(self.failed("Reconfigure"))?
            .into_inner()
            .changed)
    }

    /// Records `placement` in this node's shard (through its leader);
    /// answers the epoch the shard now holds.
    pub async fn place(&self, placement: pb::Placement) -> Result<u64, AdminError> {
        let request = self.request(pb::PlaceRequest {
            placement: Some(placement),
        });
        let reply = self.inner.clone().place(request).await;
        Ok(reply.map_err(self.failed("Place"))?.into_inner().epoch)
    }

    /// One page of the recipes of some slots, as this node holds them
    /// after a read index.
    pub async fn export_slots(
        &self,
        request: pb::ExportSlotsRequest,
    ) -> Result<pb::ExportSlotsResponse, AdminError> {
        let request = self.request(request);
        let reply = self.inner.clone().export_slots(request).await;
        Ok(reply.map_err(self.failed("ExportSlots"))?.into_inner())
    }

    /// Writes copies of recipes into this node's shard (through its leader).
    pub async fn import_recipes(
        &self,
        request: pb::ImportRecipesRequest,
    ) -> Result<(), AdminError> {
        let request = self.request(request);
        let reply = self.inner.clone().import_recipes(request).await;
        reply.map_err(self.failed("ImportRecipes"))?;
        Ok(())
    }

    /// Records one step of a slot move in this node's shard (through its leader).
    pub async fn move_slots(&self, request: pb::MoveSlotsRequest) -> Result<(), AdminError> {
        let request = self.request(request);
        let reply = self.inner.clone().move_slots(request).await;
        reply.map_err(self.failed("MoveSlots"))?;
        Ok(())
    }

    pub async fn trigger_snapshot(&self) -> Result<pb::TriggerSnapshotResponse, AdminError> {
        let request = self.request(pb::TriggerSnapshotRequest {});
        let reply = self.inner.clone().trigger_snapshot(request).await;
        Ok(reply.map_err(self.failed("TriggerSnapshot"))?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_call_names_the_call_the_node_and_the_code() {
        let timeouts = Timeouts {
            connect: Duration::from_millis(200),
            request: Duration::from_millis(500),
        };
        // Nothing listens on port 1.
        let admin = AdminClient::new("127.0.0.1:1", timeouts).unwrap();
        let error = admin.status().await.unwrap_err();
        assert_eq!(error.status().unwrap().code(), tonic::Code::Unavailable);
        let message = error.to_string();
        assert!(
            message.starts_with("admin call Status to 127.0.0.1:1 failed: Unavailable"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_address_is_refused_up_front() {
        let error = AdminClient::new("not an address\n", Timeouts::default()).unwrap_err();
        assert!(matches!(error, AdminError::Address { .. }), "{error}");
    }
}
