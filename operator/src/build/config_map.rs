//! The node configuration ConfigMap. Each key is an environment variable the
//! node reads (the pods load the ConfigMap with `envFrom`):
//!
//! | key | meaning |
//! |---|---|
//! | `RECIPESTORE_HEARTBEAT_MS` | leader heartbeat interval |
//! | `RECIPESTORE_ELECTION_TIMEOUT_MIN_MS` | election timeout lower bound |
//! | `RECIPESTORE_ELECTION_TIMEOUT_MAX_MS` | election timeout upper bound |
//! | `RECIPESTORE_SHED_ENABLED` | `true` or `false` |
//! | `RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU_PERCENT` | CPU use above which all uploads are shed |
//! | `RECIPESTORE_SHED_DOWNLOAD_THRESHOLDS` | `cpu:probability` percent pairs, comma separated, e.g. `95:25,90:10,85:5` |
//! | `RECIPESTORE_SHED_UPLOAD_THRESHOLDS` | same for uploads, e.g. `80:25,75:10,70:5` |
//! | `RECIPESTORE_UPLOAD_QUEUE_CAPACITY` | bounded upload queue length |
//! | `RECIPESTORE_DOWNLOAD_QUEUE_CAPACITY` | bounded download queue length |
//! | `RECIPESTORE_UPLOAD_WORKERS` | upload worker pool size |
//! | `RECIPESTORE_DOWNLOAD_WORKERS_MIN` | download workers kept when idle |
//! | `RECIPESTORE_DOWNLOAD_WORKERS_MAX` | download workers under load |
//! | `RECIPESTORE_CACHE_CAPACITY_BYTES` | read cache capacity in bytes (0 disables) |

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
    let entries = [
        (
            "RECIPESTORE_HEARTBEAT_MS",
            spec.raft.heartbeat_interval_ms.to_string(),
        ),
        (
            "RECIPESTORE_ELECTION_TIMEOUT_MIN_MS",
            spec.raft.election_timeout_min_ms.to_string(),
        ),
        (
            "RECIPESTORE_ELECTION_TIMEOUT_MAX_MS",
            spec.raft.election_timeout_max_ms.to_string(),
        ),
        (
            "RECIPESTORE_SHED_ENABLED",
            spec.shedding.enabled.to_string(),
        ),
        (
            "RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU_PERCENT",
            spec.shedding.upload_priority_cpu_percent.to_string(),
        ),
        (
            "RECIPESTORE_SHED_DOWNLOAD_THRESHOLDS",
            thresholds(&spec.shedding.download_thresholds),
        ),
        (
            "RECIPESTORE_SHED_UPLOAD_THRESHOLDS",
            thresholds(&spec.shedding.upload_thresholds),
        ),
        (
            "RECIPESTORE_UPLOAD_QUEUE_CAPACITY",
            spec.queues.upload_capacity.to_string(),
        ),
        (
            "RECIPESTORE_DOWNLOAD_QUEUE_CAPACITY",
            spec.queues.download_capacity.to_string(),
        ),
        (
            "RECIPESTORE_UPLOAD_WORKERS",
            spec.queues.upload_workers.to_string(),
        ),
        (
            "RECIPESTORE_DOWNLOAD_WORKERS_MIN",
            spec.queues.download_workers_min.to_string(),
        ),
        (
            "RECIPESTORE_DOWNLOAD_WORKERS_MAX",
            spec.queues.download_workers_max.to_string(),
        ),
        (
            "RECIPESTORE_CACHE_CAPACITY_BYTES",
            (u64::from(spec.cache.size_mib) * 1024 * 1024).to_string(),
        ),
    ];
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// `cpu:probability` pairs, highest CPU first so the node can take the first match.
fn thresholds(rows: &[ShedThreshold]) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| std::cmp::Reverse(r.cpu_percent));
    rows.iter()
        .map(|r| format!("{}:{}", r.cpu_percent, r.probability_percent))
        .collect::<Vec<_>>()
        .join(",")
}
