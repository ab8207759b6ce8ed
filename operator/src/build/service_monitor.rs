//! ServiceMonitor for the Prometheus operator, built as a `DynamicObject`
//! because its CRD is optional and its types are not ours.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject};
use serde_json::json;

use super::object_meta;
use crate::RecipeStore;
use crate::topology::{HTTP_PORT_NAME, SERVICE_ROLE_LABEL, Topology};

pub fn build(
    rs: &RecipeStore,
    topology: &Topology,
    owner: &OwnerReference,
    api: &ApiResource,
) -> DynamicObject {
    let settings = &rs.spec.monitoring.service_monitor;
    let mut metadata = object_meta(topology, topology.statefulset(), owner);
    metadata
        .labels
        .get_or_insert_default()
        .extend(settings.labels.clone());
    let mut selector = topology.selector_labels();
    // Scrape through the client Service only: the peer Service selects the same pods.
    selector.insert(SERVICE_ROLE_LABEL.to_owned(), "client".to_owned());
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
    object
}
