//! The `Forward` service: what another member asks of this node, as the
//! leader, on behalf of its own caller (the convention is in `routing`).

use std::sync::Arc;

use recipestore_protocol::pb;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::admit_peer;
use crate::codec;
use crate::error::NodeError;
use crate::node::Node;
use crate::raft::Command;

pub struct Forward {
    node: Arc<Node>,
}

impl Forward {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl pb::forward_server::Forward for Forward {
    async fn write(
        &self,
        request: Request<pb::ForwardWriteRequest>,
    ) -> Result<Response<pb::ForwardWriteResponse>, Status> {
        let request = request.into_inner();
        admit_peer(&self.node, &request.cluster_id)?;
        let command: Command = codec::decode(&request.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        let outcome = self.node.propose(command).await?;
        let outcome = codec::encode(&outcome).map_err(|e| NodeError::Internal(e.to_string()))?;
        Ok(Response::new(pb::ForwardWriteResponse { outcome }))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        admit_peer(&self.node, &request.into_inner().cluster_id)?;
        let index = self.node.local_read_index().await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }
}
