//! The node configuration ConfigMap: the spec's node settings as the
//! `RECIPESTORE_*` variables the node reads as its flags (the pods load it
//! with `envFrom`). Which variable is which setting is written once, in the
//! recipestore-settings crate, and tested there against the node's flags.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::object_meta;
use crate::RecipeStore;
use crate::topology::Topology;

pub fn build(rs: &RecipeStore, topology: &Topology, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: object_meta(topology, topology.config_map(), owner),
        data: Some(rs.spec.node_settings().to_env()),
        ..ConfigMap::default()
    }
}
