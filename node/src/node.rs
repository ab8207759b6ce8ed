//! The state the gRPC services and HTTP endpoints share, and the operations
//! they share: writes and read indexes (through the router in `routing`),
//! waiting for a leader or an applied index. Starting and stopping a node
//! is in `lifecycle`.

use openraft::async_runtime::watch::WatchReceiver;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::ReadPolicy;
use openraft::error::ClientWriteError;
use openraft::error::LinearizableReadError;
use openraft::error::RaftError;
use recipestore_protocol::pb;
use tonic::Status;
use tonic::transport::Channel;

use crate::codec;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::identity::Identity;
use crate::metrics;
use crate::overload::Overload;
use crate::raft::Command;
use crate::raft::Member;
use crate::raft::Outcome;
use crate::raft::network::PeerChannels;
use crate::raft::proposer::Proposer;
use crate::raft::state_machine::Recipes;
use crate::raft::typ;
use crate::read_index::ReadIndexes;
use crate::routing;
use crate::routing::Attempt;
use crate::tls::NodeTls;

/// State shared by the gRPC services and the HTTP endpoints.
pub struct Node {
    pub id: u64,
    pub raft: typ::Raft,
    /// Batches this node's proposals when it leads.
    pub proposer: Proposer,
    /// Linearizable reads waiting for a read index.
    pub read_indexes: ReadIndexes,
    pub recipes: Recipes,
    pub identity: Arc<Identity>,
    pub config: NodeConfig,
    pub member: Member,
    pub overload: Overload,
    /// TLS on the gRPC ports, when configured.
    pub tls: Option<Arc<NodeTls>>,
    pub(crate) peer_channels: PeerChannels,
}

/// How long a call without a deadline may wait for a leader or a read index.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

impl Node {
    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(u64, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    /// The leader's client address, empty when unknown.
    pub fn leader_hint(&self) -> String {
        self.leader()
            .map(|(_, m)| m.client_addr)
            .unwrap_or_default()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    /// A reused channel to another node's peer port.
    pub fn peer_channel(&self, addr: &str) -> Result<Channel, NodeError> {
        self.peer_channels
            .get(addr)
            .map_err(|e| NodeError::Internal(format!("invalid peer address {addr}: {e}")))
    }

    /// Waits, up to `wait`, until some node is known as leader.
    pub async fn await_leader(&self, wait: Duration) -> Result<(u64, Member), NodeError> {
        let deadline = Instant::now() + wait;
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero()
                || tokio::time::timeout(remaining, metrics.changed())
                    .await
                    .is_err()
            {
                return Err(NodeError::Unavailable(
                    "no leader is known; the cluster may be electing one".into(),
                ));
            }
        }
    }

    /// Proposes `command` on this node if it leads, else on the leader.
    /// Retries only when the command was certainly not proposed.
    pub async fn write(&self, command: Command, wait: Duration) -> Result<Outcome, NodeError> {
        let attempt = |leader_id, leader: Member, deadline: Instant| {
            let command = command.clone();
            async move {
                if leader_id != self.id {
                    return self.forward_write(&leader, &command, deadline).await;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.propose(command)).await {
                    // Leadership moved before the proposal.
                    Ok(Err(error @ NodeError::NotLeader { .. })) => Attempt::NotRun(error),
                    Ok(result) => Attempt::Ran(result),
                    Err(_) => {
                        metrics::proposal_failed("timeout");
                        Attempt::Ran(Err(NodeError::DeadlineExceeded(
                            "the write was not committed within the deadline; it may still commit"
                                .into(),
                        )))
                    }
                }
            }
        };
        self.on_leader(wait, attempt, |error| {
            metrics::proposal_failed("no_leader");
            error
        })
        .await
    }

    /// Proposes on this node, which believes it is the leader.
    pub async fn propose(&self, command: Command) -> Result<Outcome, NodeError> {
        let failed = |reason: String| {
            metrics::proposal_failed("raft");
            // The entry may or may not commit: not safe to retry blindly.
            Err(NodeError::OutcomeUnknown(format!("write failed: {reason}")))
        };
        match self.proposer.propose(command).await {
            Some(Ok(response)) => Ok(response.data),
            Some(Err(ClientWriteError::ForwardToLeader(_))) => Err(self.not_leader()),
            Some(Err(e)) => failed(e.to_string()),
            None => failed("raft stopped".into()),
        }
    }

    /// One attempt at `command` on the leader at `leader`.
    async fn forward_write(
        &self,
        leader: &Member,
        command: &Command,
        deadline: Instant,
    ) -> Attempt<Outcome> {
        let prepared = self.peer_channel(&leader.peer_addr).and_then(|channel| {
            let command = codec::encode(command).map_err(|e| NodeError::Internal(e.to_string()))?;
            Ok((routing::forward_client(channel), command))
        });
        let (mut client, command) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return Attempt::Ran(Err(error)),
        };
        let request = routing::forwarded(
            pb::ForwardWriteRequest {
                cluster_id: self.identity.cluster_id().unwrap_or_default(),
                command,
            },
            deadline,
        );
        match client.write(request).await {
            Ok(reply) => Attempt::Ran(
                codec::decode(&reply.into_inner().outcome)
                    .map_err(|e| NodeError::Internal(format!("bad reply from leader: {e}"))),
            ),
            // It did not lead after all, or was not reached: nothing was
            // proposed.
            Err(status) if routing::did_not_run(&status) => {
                Attempt::NotRun(NodeError::Unavailable(format!(
                    "the write did not reach a leader at {}: {}",
                    leader.peer_addr,
                    status.message()
                )))
            }
            Err(status) => Attempt::Ran(Err(NodeError::OutcomeUnknown(format!(
                "forwarding to leader {} failed: {}",
                leader.client_addr,
                status.message()
            )))),
        }
    }

    /// Waits until this node has applied at least `index`.
    pub async fn await_applied(&self, index: u64, wait: Duration) -> Result<(), NodeError> {
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "await applied")
            .await
            .map(|_| ())
            .map_err(|_| {
                NodeError::DeadlineExceeded(format!(
                    "this node had not applied index {index} within {} ms",
                    wait.as_millis()
                ))
            })
    }

    /// The log index a linearizable read must observe, confirmed by a quorum
    /// after this call began; shared with the reads waiting beside it.
    pub async fn read_index(&self, wait: Duration) -> Result<u64, NodeError> {
        // Boxed: nested inline, the read path's future type grew too deep
        // for the compiler's layout queries.
        self.read_indexes
            .get(wait, || Box::pin(self.fetch_read_index(wait)))
            .await
    }

    /// One read index from the leader, wherever it is.
    async fn fetch_read_index(&self, wait: Duration) -> Result<u64, NodeError> {
        let attempt = |leader_id, leader: Member, deadline: Instant| async move {
            let result = if leader_id == self.id {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::timeout(left, self.local_read_index())
                    .await
                    .unwrap_or_else(|_| {
                        Err(NodeError::DeadlineExceeded(
                            "a quorum did not confirm leadership within the deadline".into(),
                        ))
                    })
            } else {
                self.remote_read_index(&leader, deadline).await
            };
            match result {
                Ok(index) => Attempt::Ran(Ok(index)),
                // A read has no effect: whatever failed once the deadline
                // is over is reported as the deadline.
                Err(error)
                    if matches!(error, NodeError::Unavailable(_)) || Instant::now() >= deadline =>
                {
                    Attempt::NotRun(error)
                }
                Err(error) => Attempt::Ran(Err(error)),
            }
        };
        self.on_leader(wait, attempt, |error| {
            NodeError::DeadlineExceeded(format!("no read index within the deadline: {error}"))
        })
        .await
    }

    /// Read index through the leader at `leader`.
    async fn remote_read_index(
        &self,
        leader: &Member,
        deadline: Instant,
    ) -> Result<u64, NodeError> {
        let mut client = routing::forward_client(self.peer_channel(&leader.peer_addr)?);
        let request = routing::forwarded(
            pb::ReadIndexRequest {
                cluster_id: self.identity.cluster_id().unwrap_or_default(),
            },
            deadline,
        );
        client
            .read_index(request)
            .await
            .map(|r| r.into_inner().index)
            .map_err(|status| read_index_failure(leader, &status))
    }

    /// Read index on the leader: openraft confirms leadership with a quorum.
    pub async fn local_read_index(&self) -> Result<u64, NodeError> {
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _)) => Ok(read_log_id.index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(e) => Err(NodeError::Unavailable(format!(
                "cannot confirm leadership: {e}"
            ))),
        }
    }
}

/// What a failed ReadIndex call to the leader means to our caller. A read
/// has no effect, so every failure of the peer call, whatever its code (a
/// timeout shows as CANCELLED, a broken connection as UNKNOWN, an HTTP/2
/// error even as RESOURCE_EXHAUSTED), is UNAVAILABLE: not executed, safe to
/// retry. Passing the peer's code on would break the client contract, where
/// RESOURCE_EXHAUSTED means a shed and UNKNOWN a write that may have run.
/// Only a refusal by the leader's own checks keeps its code: it would refuse
/// a retry the same way.
fn read_index_failure(leader: &Member, status: &Status) -> NodeError {
    match status.code() {
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
            NodeError::Refused(status.clone())
        }
        _ => NodeError::Unavailable(format!(
            "the leader at {} did not give a read index: {}",
            leader.peer_addr,
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn a_failed_read_index_call_is_unavailable_whatever_the_peer_said() {
        let leader = Member {
            peer_addr: "10.0.0.1:7071".into(),
            client_addr: "10.0.0.1:7070".into(),
        };
        // What a follower saw from the leader's ReadIndex RPC under faults.
        for peer in [
            Status::cancelled("Timeout expired"),
            Status::unknown("transport error"),
            Status::resource_exhausted("h2 protocol error: stream no longer needed"),
            Status::unavailable("cannot confirm leadership"),
            Status::internal("h2 protocol error"),
            Status::deadline_exceeded("deadline has elapsed"),
        ] {
            let mapped = Status::from(read_index_failure(&leader, &peer));
            assert_eq!(mapped.code(), Code::Unavailable, "{peer:?}");
            assert!(mapped.message().contains("10.0.0.1:7071"), "{mapped:?}");
            assert!(mapped.message().contains(peer.message()), "{mapped:?}");
        }
        // The leader's own refusals would repeat on a retry: kept as they are.
        let refused = Status::failed_precondition("cluster id mismatch");
        assert_eq!(
            Status::from(read_index_failure(&leader, &refused)).code(),
            Code::FailedPrecondition
        );
    }
}
