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
