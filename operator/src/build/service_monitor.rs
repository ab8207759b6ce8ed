//! ServiceMonitor for the Prometheus operator, built as a `DynamicObject`
//! because its CRD is optional and its types are not ours.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject};
use serde_json::json;

use super::object_meta;
use crate::RecipeStore;
use crate::topology::{HTTP_PORT_NAME, SERVICE_ROLE_LABEL, SHARD_LABEL, Topology};

/// The ServiceMonitor of a store (`sharded`: of several shards).
pub fn build(
    rs: &RecipeStore,
    topology: &Topology,
    owner: &OwnerReference,
    api: &ApiResource,
    sharded: bool,
) -> DynamicObject {
    let settings = &rs.spec.monitoring.service_monitor;
    let mut metadata = object_meta(topology, topology.statefulset(), owner);
    metadata
        .labels
        .get_or_insert_default()
        .extend(settings.labels.clone());
    let mut selector = topology.selector_labels();
    // Scrape each pod once. Of a store of one shard, through the client
    // Service (the peer Service selects the same pods); of a sharded store,
    // through every shard's peer Service (all carry shard 0's object
    // labels), since the client Service leaves out shards serving no slots.
    let role = if sharded { "peers" } else { "client" };
    selector.insert(SERVICE_ROLE_LABEL.to_owned(), role.to_owned());
    let mut endpoint = json!({ "port": HTTP_PORT_NAME, "path": "/metrics" });
    if let Some(interval) = &settings.interval {
        endpoint["interval"] = json!(interval);
    }
    let mut object = DynamicObject::new(topology.statefulset(), api).within(&topology.namespace);
    object.metadata = metadata;
    object.data = json!({
        "spec": {
            "selector": { "matchLabels": selector },
            "endpoints": [endpoint],
        }
    });
    // `job` is the Service's name unless a label names it: the store's
    // name for a sharded store too, whose Services are its shards' peer
    // Services, so that the dashboards and alerts find every shard.
    // Each series also names its shard (`recipestore_dev_shard`, empty for
    // shard 0), as each shard is a Raft group of its own: the alerts on
    // leaders and log indexes are per shard.
    if sharded {
        object.data["spec"]["jobLabel"] = json!("app.kubernetes.io/instance");
        object.data["spec"]["podTargetLabels"] = json!([SHARD_LABEL]);
    }
    object
}
