//! The Raft transport service: decodes peer messages, enforces cluster
//! fencing, and hands them to openraft. Forwarded client calls have their
//! own service, `forward`.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use openraft::raft::AppendEntriesRequest;
use recipestore_protocol::pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::admit_peer;
use super::stopped;
use crate::codec;
use crate::node::Node;
use crate::raft::TypeConfig;
use crate::raft::network::SnapshotHeader;
use crate::raft::typ::Snapshot;

pub struct Transport {
    node: Arc<Node>,
    /// Set when the node stops: an append stream from a leader that is
    /// still running ends then, so the server's graceful shutdown does not
    /// wait on it.
    stop: watch::Receiver<bool>,
}

impl Transport {
    pub fn new(node: Arc<Node>, stop: watch::Receiver<bool>) -> Self {
        Self { node, stop }
    }

    fn open<T: DeserializeOwned>(&self, message: pb::RaftMessage) -> Result<T, Status> {
        admit_peer(&self.node, &message.cluster_id)?;
        decode(&message)
    }

    /// Opens a vote request: only a node with its cluster's data votes.
    fn open_vote<T: DeserializeOwned>(&self, message: pb::RaftMessage) -> Result<T, Status> {
        self.node
            .identity
            .admit_vote(&message.cluster_id)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        decode(&message)
    }
}

fn decode<T: DeserializeOwned>(message: &pb::RaftMessage) -> Result<T, Status> {
    codec::decode(&message.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<pb::RaftMessage>, Status> {
    Ok(Response::new(pb::RaftMessage {
        cluster_id: String::new(),
        payload: codec::encode(value).map_err(|e| Status::internal(e.to_string()))?,
    }))
}

fn raft_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is stopping: {e}"))
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for Transport {
    type AppendStreamStream = BoxStream<'static, Result<pb::RaftMessage, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let node = self.node.clone();
        // A message that fails fencing or decoding ends the requests; the
        // leader sees the stream end and starts a new session.
        // Both directions end when the node stops: openraft reads the
        // requests in a task of its own, which holds the call open until
        // they end.
        let requests = request.into_inner().take_until(stopped(self.stop.clone()));
        let requests = requests.scan((), move |(), message| {
            let opened = message.and_then(|message| {
                admit_peer(&node, &message.cluster_id)?;
                codec::decode::<AppendEntriesRequest<TypeConfig>>(&message.payload)
                    .map_err(|e| Status::invalid_argument(format!("undecodable append: {e}")))
            });
            let request = opened
                .inspect_err(|e| tracing::warn!(error = %e.message(), "ended an append stream"))
                .ok();
            std::future::ready(request)
        });
        let results = self.node.raft.stream_append(requests).map(|result| {
            let result = result.map_err(raft_failed)?;
            Ok(pb::RaftMessage {
                cluster_id: String::new(),
                payload: codec::encode(&result).map_err(|e| Status::internal(e.to_string()))?,
            })
        });
        Ok(Response::new(
            results.take_until(stopped(self.stop.clone())).boxed(),
        ))
    }

    async fn append_entries(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc = self.open(request.into_inner())?;
        reply(
            &self
                .node
                .raft
                .append_entries(rpc)
                .await
                .map_err(raft_failed)?,
        )
    }

    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc = self.open_vote(request.into_inner())?;
        reply(&self.node.raft.vote(rpc).await.map_err(raft_failed)?)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc = self.open_vote(request.into_inner())?;
        reply(&self.node.raft.pre_vote(rpc).await.map_err(raft_failed)?)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let rpc = self.open(request.into_inner())?;
        reply(
            &self
                .node
                .raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(raft_failed)?,
        )
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        admit_peer(&self.node, &first.cluster_id)?;
        let header: SnapshotHeader = codec::decode(&first.header)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;

        // Spool to a file so a large snapshot never sits in memory.
        let dir = self.node.config.data_dir.join("incoming");
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let spool =
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let mut file = spool
            .reopen()
            .map_err(|e| Status::internal(e.to_string()))?;
        let write = |file: &mut File, data: &[u8]| {
            file.write_all(data)
                .map_err(|e| Status::internal(e.to_string()))
        };
        write(&mut file, &first.data)?;
        let mut done = first.done;
        while !done {
            let chunk = chunks
                .next()
                .await
                .ok_or_else(|| Status::aborted("snapshot stream ended before its last chunk"))??;
            write(&mut file, &chunk.data)?;
            done = chunk.done;
        }
        file.sync_all()
            .map_err(|e| Status::internal(e.to_string()))?;
        let data = spool
            .reopen()
            .map_err(|e| Status::internal(e.to_string()))?;
        let snapshot = Snapshot {
            meta: header.meta,
            snapshot: data,
        };
        let response = self
            .node
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(raft_failed)?;
        reply(&response)
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::raft::TransferLeaderRequest;
    use openraft::raft::VoteRequest;
    use openraft::vote::RaftLeaderId;
    use proptest::prelude::*;

    use super::*;
    use crate::raft::typ::CommittedLeaderId;
    use crate::raft::typ::Entry;
    use crate::raft::typ::LogId;
    use crate::raft::typ::Vote;

    fn message(payload: Vec<u8>) -> pb::RaftMessage {
        pb::RaftMessage {
            cluster_id: String::new(),
            payload,
        }
    }

    /// Every payload a peer's message may carry, decoded as the transport
    /// does; a refusal must be INVALID_ARGUMENT.
    fn decode_all(payload: &[u8]) -> Result<(), TestCaseError> {
        let m = message(payload.to_vec());
        let codes = [
            decode::<AppendEntriesRequest<TypeConfig>>(&m).err(),
            decode::<VoteRequest<TypeConfig>>(&m).err(),
            decode::<TransferLeaderRequest<TypeConfig>>(&m).err(),
            codec::decode::<SnapshotHeader>(payload)
                .err()
                .map(|e| Status::invalid_argument(e.to_string())),
        ];
        for status in codes.into_iter().flatten() {
            prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
        Ok(())
    }

    /// An append of two entries, as a leader sends it.
    fn append() -> Vec<u8> {
        let leader = CommittedLeaderId::new(3, 1);
        let entries = (5..7)
            .map(|index| Entry::new_blank(LogId::new(leader, index)))
            .collect();
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(leader, 4)),
            entries,
            leader_commit: Some(LogId::new(leader, 4)),
        };
        codec::encode(&request).unwrap()
    }

    proptest! {
        #[test]
        fn any_payload_decodes_or_is_invalid_argument(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            decode_all(&bytes)?;
        }

        #[test]
        fn a_damaged_append_decodes_or_is_invalid_argument(
            flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = append();
            for (at, bit) in flips {
                let at = at % bytes.len();
                bytes[at] ^= 1 << bit;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            decode_all(&bytes)?;
        }
    }

    /// A length field claiming four billion entries costs nothing: the
    /// decoder allocates for what arrives, not for what is claimed.
    #[test]
    fn a_huge_claimed_length_is_refused_without_allocating_it() {
        let mut bytes = append();
        let entries = bytes
            .windows(7)
            .position(|w| w == b"entries")
            .expect("named fields")
            + 7;
        // The array header after the field name: fixarray (0x92) of two.
        assert_eq!(bytes[entries], 0x92);
        bytes.splice(entries..=entries, [0xdd, 0xff, 0xff, 0xff, 0xff]);
        let status = decode::<AppendEntriesRequest<TypeConfig>>(&message(bytes)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("undecodable Raft message"),
            "{status}"
        );
    }
}
