//! The generated CustomResourceDefinition: current on disk, installable, and
//! carrying the scale subresource and the CEL rules users rely on.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, ValidationRule,
};
use kube::CustomResourceExt;
use recipestore_operator::RecipeStore;

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/recipestore.yaml");

fn crd_from_disk() -> CustomResourceDefinition {
    let yaml = std::fs::read_to_string(CRD_FILE).expect("crds/recipestore.yaml exists");
    serde_yaml::from_str(&yaml).expect("crds/recipestore.yaml is a CustomResourceDefinition")
}

fn schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("version has a schema")
}

fn property<'a>(schema: &'a JSONSchemaProps, path: &[&str]) -> &'a JSONSchemaProps {
    path.iter().fold(schema, |s, name| {
        s.properties
            .as_ref()
            .and_then(|p| p.get(*name))
            .unwrap_or_else(|| panic!("schema has property {name}"))
    })
}

fn rules(schema: &JSONSchemaProps) -> Vec<&ValidationRule> {
    schema.x_kubernetes_validations.iter().flatten().collect()
}

#[test]
fn crd_file_is_current_with_crdgen_output() {
    let generated = serde_yaml::to_string(&RecipeStore::crd()).expect("crd serializes");
    let on_disk = std::fs::read_to_string(CRD_FILE).expect("crds/recipestore.yaml exists");
    assert!(
        generated == on_disk,
        "crds/recipestore.yaml is stale: run `cargo run -p recipestore-operator --bin crdgen > crds/recipestore.yaml`"
    );
}

#[test]
fn crd_names_scope_and_version() {
    let crd = crd_from_disk();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("recipestores.recipestore.dev")
    );
    assert_eq!(crd.spec.group, "recipestore.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "RecipeStore");
    assert_eq!(crd.spec.names.short_names, Some(vec!["rstore".to_owned()]));
    assert_eq!(crd.spec.versions.len(), 1);
    assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    assert!(crd.spec.versions[0].served && crd.spec.versions[0].storage);
}

#[test]
fn crd_has_status_and_scale_subresources() {
    let crd = crd_from_disk();
    let sub = crd.spec.versions[0]
        .subresources
        .as_ref()
        .expect("subresources");
    assert!(sub.status.is_some(), "status subresource");
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
}

#[test]
fn crd_printer_columns_are_replicas_ready_leader_phase_age() {
    let crd = crd_from_disk();
    let columns: Vec<(&str, &str)> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Replicas", ".spec.replicas"),
            ("Ready", ".status.readyReplicas"),
            ("Leader", ".status.leader"),
            ("Phase", ".status.phase"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn crd_replicas_default_to_three_and_must_be_positive() {
    let crd = crd_from_disk();
    let replicas = property(schema(&crd), &["spec", "replicas"]);
    assert_eq!(
        replicas.default.as_ref().map(|d| d.0.clone()),
        Some(serde_json::json!(3))
    );
    assert_eq!(replicas.minimum, Some(1.0));
}

#[test]
fn crd_storage_is_immutable() {
    let crd = crd_from_disk();
    let storage = rules(property(schema(&crd), &["spec", "storage"]));
    assert_eq!(storage.len(), 1);
    assert_eq!(storage[0].rule, "self == oldSelf");
    assert!(
        storage[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("storage is immutable")
    );
}

#[test]
fn crd_raft_timings_are_ordered() {
    let crd = crd_from_disk();
    let raft: Vec<&str> = rules(property(schema(&crd), &["spec", "raft"]))
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(
        raft,
        [
            "self.electionTimeoutMinMs < self.electionTimeoutMaxMs",
            "self.heartbeatIntervalMs * 2 < self.electionTimeoutMinMs",
        ]
    );
    for rule in rules(property(schema(&crd), &["spec", "raft"])) {
        assert!(rule.message.is_some(), "rule {} explains itself", rule.rule);
    }
}

#[test]
fn crd_download_worker_bounds_are_ordered() {
    let crd = crd_from_disk();
    let queues = rules(property(schema(&crd), &["spec", "queues"]));
    assert_eq!(queues.len(), 1);
    assert_eq!(
        queues[0].rule,
        "self.downloadWorkersMin <= self.downloadWorkersMax"
    );
}

#[test]
fn crd_shedding_probabilities_are_percentages() {
    let crd = crd_from_disk();
    let row = property(schema(&crd), &["spec", "shedding", "downloadThresholds"])
        .items
        .as_ref()
        .expect("array items");
    let row = match row {
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s) => s,
        other => panic!("unexpected items {other:?}"),
    };
    let probability = property(row, &["probabilityPercent"]);
    assert_eq!(
        (probability.minimum, probability.maximum),
        (Some(0.0), Some(100.0))
    );
}

/// A RecipeStore as `kubectl apply` would send it.
fn recipestore(spec: serde_json::Value) -> RecipeStore {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "recipestore.dev/v1alpha1",
        "kind": "RecipeStore",
        "metadata": { "name": "recipes", "namespace": "kitchen" },
        "spec": spec,
    }))
    .expect("a RecipeStore")
}

fn cel_messages(result: Result<(), kube::core::cel::ValidationErrors>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn cel_accepts_the_defaults_and_the_full_fixture() {
    assert_eq!(
        cel_messages(kube::core::cel::validate_cel(&recipestore(
            serde_json::json!({})
        ))),
        ""
    );
    let full: RecipeStore =
        serde_yaml::from_str(include_str!("../fixtures/full.yaml")).expect("full fixture parses");
    assert_eq!(cel_messages(kube::core::cel::validate_cel(&full)), "");
}

#[test]
fn cel_rejects_election_timeouts_out_of_order() {
    let rs = recipestore(
        serde_json::json!({ "raft": { "electionTimeoutMinMs": 2000, "electionTimeoutMaxMs": 1000 } }),
    );
    let messages = cel_messages(kube::core::cel::validate_cel(&rs));
    assert!(
        messages.contains("electionTimeoutMinMs must be less than"),
        "{messages}"
    );
}

#[test]
fn cel_rejects_a_heartbeat_too_close_to_the_election_timeout() {
    let rs = recipestore(serde_json::json!({ "raft": { "heartbeatIntervalMs": 600 } }));
    let messages = cel_messages(kube::core::cel::validate_cel(&rs));
    assert!(
        messages.contains("heartbeatIntervalMs must be less than half"),
        "{messages}"
    );
}

#[test]
fn cel_rejects_download_worker_bounds_out_of_order() {
    let rs = recipestore(
        serde_json::json!({ "queues": { "downloadWorkersMin": 8, "downloadWorkersMax": 4 } }),
    );
    let messages = cel_messages(kube::core::cel::validate_cel(&rs));
    assert!(
        messages.contains("downloadWorkersMin must not exceed"),
        "{messages}"
    );
}

#[test]
fn cel_rejects_a_storage_change_but_not_a_replica_change() {
    let old = recipestore(serde_json::json!({ "storage": { "size": "10Gi" } }));
    let resized = recipestore(serde_json::json!({ "storage": { "size": "20Gi" } }));
    let messages = cel_messages(kube::core::cel::validate_cel_update(&resized, &old));
    assert!(messages.contains("storage is immutable"), "{messages}");
    let scaled = recipestore(serde_json::json!({ "replicas": 5, "storage": { "size": "10Gi" } }));
    assert_eq!(
        cel_messages(kube::core::cel::validate_cel_update(&scaled, &old)),
        ""
    );
}

#[test]
fn crd_status_conditions_merge_by_type() {
    let crd = crd_from_disk();
    let conditions = property(schema(&crd), &["status", "conditions"]);
    assert_eq!(conditions.x_kubernetes_list_type.as_deref(), Some("map"));
    assert_eq!(
        conditions.x_kubernetes_list_map_keys,
        Some(vec!["type".to_owned()])
    );
}
