//! The node configuration ConfigMap: the spec's node settings as the
//! `RECIPESTORE_*` variables the node reads as its flags (the pods load it
//! with `envFrom`). Which variable is which setting is written once, in the
//! recipestore-settings crate, and tested there against the node's flags.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::object_meta;
use crate::RecipeStore;
use crate::topology::Topology;

/// The node flag (`--force-new-cluster=ID`) that makes the member with that
/// id restart as the only voter of its cluster; the others ignore it.
pub const FORCE_NEW_CLUSTER: &str = "RECIPESTORE_FORCE_NEW_CLUSTER";

/// The ConfigMap, telling member `forcing` to force a new cluster when set
/// (the operator restarts that member's pod; see [`FORCE_NEW_CLUSTER`]).
pub fn build(
    rs: &RecipeStore,
    topology: &Topology,
    owner: &OwnerReference,
    forcing: Option<u64>,
) -> ConfigMap {
    let mut data = rs.spec.node_settings().to_env();
    if let Some(id) = forcing {
        data.insert(FORCE_NEW_CLUSTER.to_owned(), id.to_string());
    }
    ConfigMap {
        metadata: object_meta(topology, topology.config_map(), owner),
        data: Some(data),
        ..ConfigMap::default()
    }
}
