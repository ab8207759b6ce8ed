//! Reaching the leader. One router, [`Node::on_leader`], runs writes, read
//! indexes and the leader-only admin calls: here when this node leads, else
//! on the leader, and again on the next leader for as long as an attempt
//! certainly did not run.
//!
//! One convention forwards them all (the `Forward` service in
//! `cluster.proto` describes it): the call goes to the leader's peer port
//! marked [`metadata::FORWARDED`], with the caller's remaining deadline. A
//! receiver that does not lead refuses it with [`NodeError::NotLeader`]
//! (UNAVAILABLE marked [`metadata::NOT_LEADER`]) and never forwards it
//! again, so a leadership change cannot bounce a call between members.

use std::time::Duration;
use std::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;
use recipestore_protocol::metadata;
use recipestore_protocol::pb::forward_client::ForwardClient;
use tonic::Request;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::error::NodeError;
use crate::node::Node;
use crate::raft::Member;
use crate::raft::network::MAX_PEER_MESSAGE_BYTES;

/// One attempt at an operation on the leader.
pub(crate) enum Attempt<T> {
    /// It ran (or may have): its result is final.
    Ran(Result<T, NodeError>),
    /// It certainly did not run: another leader may take it.
    NotRun(NodeError),
}

impl Node {
    /// Runs an operation on the leader: `attempt(leader id, leader,
    /// deadline)` on whichever node leads now, again after leadership
    /// settles for as long as an attempt certainly did not run, until
    /// `wait` is over; then `gave_up` says why.
    pub(crate) async fn on_leader<T, F, Fut>(
        &self,
        wait: Duration,
        mut attempt: F,
        gave_up: impl FnOnce(NodeError) -> NodeError,
    ) -> Result<T, NodeError>
    where
        F: FnMut(u64, Member, Instant) -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + wait;
        loop {
            let (leader_id, leader) = self
                .await_leader(deadline.saturating_duration_since(Instant::now()))
                .await?;
            match attempt(leader_id, leader, deadline).await {
                Attempt::Ran(result) => return result,
                Attempt::NotRun(error) if Instant::now() >= deadline => {
                    return Err(gave_up(error));
                }
                Attempt::NotRun(_) => {
                    // Leadership is moving: wait for the cluster to settle,
                    // then try the new leader.
                    let mut m = self.raft.metrics();
                    let _ = tokio::time::timeout(Duration::from_millis(50), m.changed()).await;
                }
            }
        }
    }

    /// The refusal of a leader-only call this node cannot run because it
    /// does not lead.
    pub(crate) fn not_leader(&self) -> NodeError {
        NodeError::NotLeader {
            leader: self.leader().map(|(_, m)| m.peer_addr),
        }
    }
}

/// `message` as a call forwarded to the leader: marked, with what is left
/// of the caller's deadline.
pub(crate) fn forwarded<T>(message: T, deadline: Instant) -> Request<T> {
    marked(message, metadata::FORWARDED, deadline)
}

/// `message` as a call passed on: marked with `mark`, with what is left of
/// the caller's deadline.
pub(crate) fn marked<T>(message: T, mark: &'static str, deadline: Instant) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(mark, MetadataValue::from_static("1"));
    request.set_timeout(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    );
    request
}

/// Whether a call was forwarded by another member, and so must not be
/// forwarded again.
pub(crate) fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(metadata::FORWARDED)
}

/// Whether a forwarded call's failure means it certainly did not run: the
/// receiver did not lead, or the call never reached it.
pub(crate) fn did_not_run(status: &Status) -> bool {
    status.metadata().contains_key(metadata::NOT_LEADER) || is_connect_failure(status)
}

/// True when the call failed before reaching the peer's application.
fn is_connect_failure(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (status.message().contains("connect") || status.message().contains("transport"))
}

/// A forwarding client to a peer, with the peer port's message limits.
pub(crate) fn forward_client(channel: Channel) -> ForwardClient<Channel> {
    ForwardClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_refusal_or_a_failed_connection_did_not_run() {
        let refused = Status::from(NodeError::NotLeader { leader: None });
        assert!(did_not_run(&refused));
        assert!(did_not_run(&Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused"
        )));
        // The leader may have proposed these before failing.
        for status in [
            Status::unavailable("raft is stopping"),
            Status::unknown("h2 protocol error"),
            Status::cancelled("Timeout expired"),
            Status::deadline_exceeded("deadline has elapsed"),
        ] {
            assert!(!did_not_run(&status), "{status:?}");
        }
    }

    #[test]
    fn a_forwarded_call_is_marked_and_carries_the_deadline() {
        let request = forwarded((), Instant::now() + Duration::from_secs(2));
        assert!(is_forwarded(request.metadata()));
        let timeout = request.metadata().get("grpc-timeout").unwrap();
        assert!(!timeout.is_empty());
    }
}
