//! The node configuration ConfigMap. Each key is an environment variable that
//! `recipestore-node` reads as the equivalent of one of its flags (the pods
//! load the ConfigMap with `envFrom`):
//!
//! | key | node flag | from the spec |
//! |---|---|---|
//! | `RECIPESTORE_HEARTBEAT_MS` | `--heartbeat-ms` | `raft.heartbeatIntervalMs` |
//! | `RECIPESTORE_ELECTION_TIMEOUT_MIN_MS` | `--election-timeout-min-ms` | `raft.electionTimeoutMinMs` |
//! | `RECIPESTORE_ELECTION_TIMEOUT_MAX_MS` | `--election-timeout-max-ms` | `raft.electionTimeoutMaxMs` |
//! | `RECIPESTORE_SHED_ENABLED` | `--shed-enabled` | `shedding.enabled` |
//! | `RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU` | `--shed-upload-priority-cpu` | `shedding.uploadPriorityCpuPercent` |
//! | `RECIPESTORE_SHED_DOWNLOAD_TIERS` | `--shed-download-tiers` | `shedding.downloadThresholds`, e.g. `95:0.25,90:0.10,85:0.05` |
//! | `RECIPESTORE_SHED_UPLOAD_TIERS` | `--shed-upload-tiers` | `shedding.uploadThresholds`, e.g. `80:0.25,75:0.10,>70:0.05` |
//! | `RECIPESTORE_SHED_MEMORY_FLOOR_MIB` | `--shed-memory-floor-mib` | `shedding.memoryFloorMib` |
//! | `RECIPESTORE_UPLOAD_QUEUE_CAPACITY` | `--upload-queue-capacity` | `queues.uploadCapacity` |
//! | `RECIPESTORE_DOWNLOAD_QUEUE_CAPACITY` | `--download-queue-capacity` | `queues.downloadCapacity` |
//! | `RECIPESTORE_UPLOAD_WORKERS` | `--upload-workers` | `queues.uploadWorkers` |
//! | `RECIPESTORE_DOWNLOAD_WORKERS_MIN` | `--download-workers-min` | `queues.downloadWorkersMin` |
//! | `RECIPESTORE_DOWNLOAD_WORKERS_MAX` | `--download-workers-max` | `queues.downloadWorkersMax` |
//! | `RECIPESTORE_QUEUE_DELAY_TARGET_MS` | `--queue-delay-target-ms` | `queues.delayTargetMs` |
//! | `RECIPESTORE_QUEUE_DELAY_INTERVAL_MS` | `--queue-delay-interval-ms` | `queues.delayIntervalMs` |
//! | `RECIPESTORE_CACHE_BYTES` | `--cache-bytes` | `cache.sizeMib` × 2²⁰ |

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::object_meta;
use crate::RecipeStore;
use crate::crd::ShedThreshold;
use crate::topology::Topology;

pub fn build(rs: &RecipeStore, topology: &Topology, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(topology, topology.config_map(), owner),
        data: Some(node_env(rs)),
        ..ConfigMap::default()
    }
}

/// The node settings of the spec as `RECIPESTORE_*` variables.
pub fn node_env(rs: &RecipeStore) -> BTreeMap<String, String> {
    let spec = &rs.spec;
    let (raft, shed, queues) = (&spec.raft, &spec.shedding, &spec.queues);
    let cache_bytes = u64::from(spec.cache.size_mib) << 20;
    let entries = [
        ("HEARTBEAT_MS", raft.heartbeat_interval_ms.to_string()),
        (
            "ELECTION_TIMEOUT_MIN_MS",
            raft.election_timeout_min_ms.to_string(),
        ),
        (
            "ELECTION_TIMEOUT_MAX_MS",
            raft.election_timeout_max_ms.to_string(),
        ),
        ("SHED_ENABLED", shed.enabled.to_string()),
        (
            "SHED_UPLOAD_PRIORITY_CPU",
            shed.upload_priority_cpu_percent.to_string(),
        ),
        ("SHED_DOWNLOAD_TIERS", tiers(&shed.download_thresholds)),
        ("SHED_UPLOAD_TIERS", tiers(&shed.upload_thresholds)),
        ("SHED_MEMORY_FLOOR_MIB", shed.memory_floor_mib.to_string()),
        ("UPLOAD_QUEUE_CAPACITY", queues.upload_capacity.to_string()),
        (
            "DOWNLOAD_QUEUE_CAPACITY",
            queues.download_capacity.to_string(),
        ),
        ("UPLOAD_WORKERS", queues.upload_workers.to_string()),
        (
            "DOWNLOAD_WORKERS_MIN",
            queues.download_workers_min.to_string(),
        ),
        (
            "DOWNLOAD_WORKERS_MAX",
            queues.download_workers_max.to_string(),
        ),
        ("QUEUE_DELAY_TARGET_MS", queues.delay_target_ms.to_string()),
        (
            "QUEUE_DELAY_INTERVAL_MS",
            queues.delay_interval_ms.to_string(),
        ),
        ("CACHE_BYTES", cache_bytes.to_string()),
    ];
    entries
        .into_iter()
        .map(|(k, v)| (format!("RECIPESTORE_{k}"), v))
        .collect()
}

/// The node's tier syntax: `[>]cpu:probability`, probability as a fraction,
/// highest CPU first so the first matching tier wins.
fn tiers(rows: &[ShedThreshold]) -> String {
    let mut rows = rows.to_vec();
    // At equal CPU an exclusive row starts above an inclusive one.
    rows.sort_by_key(|r| std::cmp::Reverse((r.cpu_percent, r.exclusive)));
    rows.iter()
        .map(|r| {
            let p = r.probability_percent;
            let gt = if r.exclusive { ">" } else { "" };
            format!("{gt}{}:{}.{:02}", r.cpu_percent, p / 100, p % 100)
        })
        .collect::<Vec<_>>()
        .join(",")
}
