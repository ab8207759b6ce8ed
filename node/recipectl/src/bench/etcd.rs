//! etcd as a benchmark target: the same `write` / `read` requests as put and
//! range calls through `etcd-client`, so both systems are measured by one
//! load generator on one machine.

use std::time::Duration;

use etcd_client::ConnectOptions;
use etcd_client::GetOptions;
use etcd_client::KvClient;
use recipestore_protocol::pb::Consistency;

use super::load::classify;
use super::report::Outcome;
use super::workload::Op;
use super::workload::OpKind;

/// Connections to an etcd cluster, each balancing over every endpoint.
pub struct EtcdTarget {
    kv: Vec<KvClient>,
    /// LOCAL maps to etcd's serializable reads, LINEARIZABLE to its default.
    serializable: bool,
}

impl EtcdTarget {
    pub async fn connect(
        endpoints: &[String],
        connections: usize,
        deadline: Duration,
        consistency: Consistency,
    ) -> anyhow::Result<Self> {
        let mut kv = Vec::new();
        for i in 0..connections.max(1) {
            let mut rotated = endpoints.to_vec();
            rotated.rotate_left(i % endpoints.len().max(1));
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(deadline);
            let client = etcd_client::Client::connect(&rotated, Some(options))
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to etcd at {rotated:?}: {e}"))?;
            kv.push(client.kv_client());
        }
        Ok(Self {
            kv,
            serializable: consistency == Consistency::Local,
        })
    }

    pub async fn execute(&self, client: usize, op: Op) -> Outcome {
        let mut kv = self.kv[client % self.kv.len()].clone();
        let result = match op.kind {
            OpKind::Upload => kv.put(op.key, op.value, None).await.map(|_| ()),
            OpKind::Download => {
                let options = if self.serializable {
                    GetOptions::new().with_serializable()
                } else {
                    GetOptions::new()
                };
                match kv.get(op.key, Some(options)).await {
                    Ok(reply) if reply.kvs().is_empty() => return Outcome::Error,
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => Outcome::Ok,
            Err(etcd_client::Error::GRpcStatus(status)) => classify(status.code()),
            Err(_) => Outcome::Error,
        }
    }
}
