//! What can go wrong serving a call, as the node's own type. Routing,
//! shedding and queueing say which of these happened; the gRPC status a
//! client sees is made in one place, `From<NodeError> for Status`, at the
//! server edge. The codes are the client contract (README, "Errors"):
//! UNAVAILABLE and RESOURCE_EXHAUSTED were not executed and may be retried,
//! UNKNOWN may have been applied, DEADLINE_EXCEEDED ran out of time.

use std::time::Duration;

use recipestore_protocol::metadata;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::overload::shed::{Op, ShedReason};

#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// Not executed, safe to retry: no leader is known, leadership is
    /// moving, or the leader was not reached.
    #[error("{0}")]
    Unavailable(String),

    /// This node was asked for what only the leader does and does not
    /// lead: not executed, safe to retry on the leader.
    #[error("this node does not lead{}; retry on the leader", leader.as_ref().map(|l| format!(" (the leader is at {l})")).unwrap_or_default())]
    NotLeader {
        /// The leader's peer address, when known.
        leader: Option<String>,
    },

    /// Refused by overload protection before it ran.
    #[error(
        "{} shed ({}): {}; retry after {} ms",
        op.label(),
        reason.label(),
        load,
        retry_after.as_millis()
    )]
    Shed {
        op: Op,
        reason: ShedReason,
        /// The load that decided it, for the message.
        load: String,
        retry_after: Duration,
    },

    /// The deadline passed. A write may still commit.
    #[error("{0}")]
    DeadlineExceeded(String),

    /// A write that may or may not have been applied: not safe to retry
    /// blindly.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),

    /// This node's own machinery failed (encoding, a peer address).
    #[error("{0}")]
    Internal(String),

    /// The node is stopping and takes no more work.
    #[error("the node is shutting down")]
    ShuttingDown,

    /// A refusal that a retry would meet again (a failed precondition, an
    /// invalid argument, a missing recipe), already in its final form.
    #[error("{}", .0.message())]
    Refused(Status),
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Self {
        let message = error.to_string();
        match error {
            NodeError::Unavailable(_) | NodeError::ShuttingDown => Status::unavailable(message),
            NodeError::NotLeader { .. } => {
                let mut status = Status::unavailable(message);
                status
                    .metadata_mut()
                    .insert(metadata::NOT_LEADER, MetadataValue::from_static("1"));
                status
            }
            NodeError::Shed { retry_after, .. } => {
                let mut status = Status::resource_exhausted(message);
                if let Ok(value) = MetadataValue::try_from(retry_after.as_millis().to_string()) {
                    status
                        .metadata_mut()
                        .insert(metadata::RETRY_AFTER_MS, value);
                }
                status
            }
            NodeError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            NodeError::OutcomeUnknown(_) => Status::unknown(message),
            NodeError::Internal(_) => Status::internal(message),
            NodeError::Refused(status) => status,
        }
    }
}

/// A status made by a service (a refusal with its metadata) passes through
/// routing and queueing unchanged.
impl From<Status> for NodeError {
    fn from(status: Status) -> Self {
        NodeError::Refused(status)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_error_has_its_contract_code() {
        let cases = [
            (
                NodeError::Unavailable("no leader".into()),
                Code::Unavailable,
            ),
            (NodeError::ShuttingDown, Code::Unavailable),
            (NodeError::NotLeader { leader: None }, Code::Unavailable),
            (
                NodeError::DeadlineExceeded("late".into()),
                Code::DeadlineExceeded,
            ),
            (NodeError::OutcomeUnknown("lost".into()), Code::Unknown),
            (NodeError::Internal("bad".into()), Code::Internal),
            (
                NodeError::Refused(Status::failed_precondition("mismatch")),
                Code::FailedPrecondition,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn a_shed_is_resource_exhausted_with_its_retry_after() {
        let status = Status::from(NodeError::Shed {
            op: Op::Upload,
            reason: ShedReason::QueueFull,
            load: "cpu 40 %, queue 8/8".into(),
            retry_after: Duration::from_millis(120),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get(metadata::RETRY_AFTER_MS).unwrap(),
            "120"
        );
        assert_eq!(
            status.message(),
            "upload shed (queue_full): cpu 40 %, queue 8/8; retry after 120 ms"
        );
        assert_eq!(
            Status::from(NodeError::OutcomeUnknown("the leader went away".into())).message(),
            "outcome unknown: the leader went away"
        );
    }
}
