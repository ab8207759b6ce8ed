//! The generated CustomResourceDefinition: current on disk, installable on
//! the oldest supported Kubernetes (1.30, see the README), and carrying the
//! scale subresource and the CEL rules users rely on.

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
fn crd_printer_columns_are_replicas_shards_ready_leader_updated_phase_age() {
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
            ("Shards", ".spec.shards"),
            ("Ready", ".status.readyReplicas"),
            ("Leader", ".status.leader"),
            ("Updated", ".status.updatedMembers"),
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
fn crd_shards_default_to_one_within_the_hash_slots() {
    let crd = crd_from_disk();
    let shards = property(schema(&crd), &["spec", "shards"]);
    assert_eq!(
        shards.default.as_ref().map(|d| d.0.clone()),
        Some(serde_json::json!(1))
    );
    assert_eq!(shards.minimum, Some(1.0));
    assert_eq!(
        shards.maximum,
        Some(f64::from(recipestore_protocol::slots::SLOTS))
    );
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
fn cel_rejects_backups_and_restores_of_several_shards_but_not_of_one() {
    let backup = serde_json::json!({ "schedule": "@daily", "claimName": "backups" });
    let restore = serde_json::json!({ "claimName": "backups", "file": "b.rsback" });
    let sharded_backup = recipestore(serde_json::json!({ "shards": 3, "backup": backup }));
    let messages = cel_messages(kube::core::cel::validate_cel(&sharded_backup));
    assert!(
        messages.contains("backup is not supported on a store of several shards"),
        "{messages}"
    );
    let sharded_restore = recipestore(serde_json::json!({ "shards": 2, "restoreFrom": restore }));
    let messages = cel_messages(kube::core::cel::validate_cel(&sharded_restore));
    assert!(
        messages.contains("restoreFrom is not supported on a store of several shards"),
        "{messages}"
    );
    for one in [
        serde_json::json!({ "shards": 1, "backup": backup }),
        serde_json::json!({ "restoreFrom": restore }),
        serde_json::json!({ "shards": 3 }),
    ] {
        assert_eq!(
            cel_messages(kube::core::cel::validate_cel(&recipestore(one.clone()))),
            "",
            "{one}"
        );
    }
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

/// The version's schema as JSON, the form the API server and kube-cel read.
fn schema_json() -> serde_json::Value {
    serde_json::to_value(schema(&crd_from_disk())).expect("schema serializes")
}

/// Calls `visit` with every node of `schema` and its dotted path.
fn walk(schema: &serde_json::Value, path: &str, visit: &mut dyn FnMut(&str, &serde_json::Value)) {
    visit(path, schema);
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        walk(property, &format!("{path}.{name}"), visit);
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), visit);
    }
    if schema["additionalProperties"].is_object() {
        walk(
            &schema["additionalProperties"],
            &format!("{path}{{}}"),
            visit,
        );
    }
}

/// What the API server's structural validation checks of `value` against
/// `schema`: types, bounds, enums, list lengths and required fields,
/// recursively.
fn structural_errors(
    schema: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
) -> Vec<String> {
    use serde_json::Value;
    let mut errors = Vec::new();
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let type_ok = match (schema["type"].as_str(), value) {
        _ if int_or_string => value.is_i64() || value.is_string(),
        (None, _) => true,
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        _ => false,
    };
    if !type_ok {
        errors.push(format!("{path}: {value} is not of type {}", schema["type"]));
        return errors;
    }
    if let Some(number) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| number < min) {
            errors.push(format!(
                "{path}: {number} is below the minimum {}",
                schema["minimum"]
            ));
        }
        if schema["maximum"].as_f64().is_some_and(|max| number > max) {
            errors.push(format!(
                "{path}: {number} is above the maximum {}",
                schema["maximum"]
            ));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Value::Object(fields) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap_or_default();
            if !fields.contains_key(required) {
                errors.push(format!("{path}: required field {required} is missing"));
            }
        }
        for (name, field) in fields {
            match schema["properties"].get(name) {
                Some(property) => errors.extend(structural_errors(
                    property,
                    field,
                    &format!("{path}.{name}"),
                )),
                None if schema["additionalProperties"].is_object() => {
                    errors.extend(structural_errors(
                        &schema["additionalProperties"],
                        field,
                        &format!("{path}.{name}"),
                    ))
                }
                None if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                None => errors.push(format!("{path}: unknown field {name} would be pruned")),
            }
        }
    }
    if let Value::Array(items) = value {
        if schema["maxItems"]
            .as_u64()
            .is_some_and(|max| items.len() as u64 > max)
        {
            errors.push(format!("{path}: more than {} items", schema["maxItems"]));
        }
        for (i, item) in items.iter().enumerate() {
            errors.extend(structural_errors(
                &schema["items"],
                item,
                &format!("{path}[{i}]"),
            ));
        }
    }
    errors
}

#[test]
fn the_schema_is_structural() {
    // Every node says its type (or is an int-or-string, or keeps unknown
    // fields), as apiextensions.k8s.io/v1 requires of every CRD.
    let mut untyped = Vec::new();
    walk(&schema_json(), "", &mut |path, node| {
        let typed = node["type"].is_string()
            || node["x-kubernetes-int-or-string"] == true
            || node["x-kubernetes-preserve-unknown-fields"] == true;
        if !typed {
            untyped.push(path.to_owned());
        }
    });
    assert!(untyped.is_empty(), "nodes without a type: {untyped:?}");
}

#[test]
fn every_default_is_valid_against_its_own_schema_and_rules() {
    // The API server refuses a CRD whose defaults fail their own schema, and
    // a default that breaks a CEL rule makes every object that omits the
    // field invalid (the heartbeat default once did).
    let validator = kube_cel::Validator::new();
    let mut problems = Vec::new();
    let mut defaults = 0;
    walk(&schema_json(), "", &mut |path, node| {
        let Some(default) = node.get("default") else {
            return;
        };
        defaults += 1;
        problems.extend(structural_errors(node, default, path));
        if let Err(errors) = validator.validate(node, default, None) {
            problems.push(format!("{path}: {errors:?}"));
        }
    });
    assert!(defaults > 10, "only {defaults} defaults found");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn an_empty_spec_defaulted_by_the_api_server_is_a_valid_store() {
    let schema = schema_json();
    let object = serde_json::json!({
        "apiVersion": "recipestore.dev/v1alpha1",
        "kind": "RecipeStore",
        "metadata": {"name": "cookbook"},
        "spec": {},
    });
    let defaulted = kube_cel::apply_defaults(&schema, &object);
    let errors = structural_errors(&schema["properties"]["spec"], &defaulted["spec"], "spec");
    assert!(errors.is_empty(), "{errors:#?}");
    kube_cel::Validator::new()
        .validate(&schema, &object, None)
        .expect("the defaulted store passes every CEL rule");
    // What the API server stores is what the operator reads.
    let store: RecipeStore = serde_json::from_value(defaulted).expect("parses");
    assert_eq!(store.spec, recipestore(serde_json::json!({})).spec);
}

#[test]
fn every_cel_rule_compiles_uses_only_its_scope_and_stays_within_the_cost_budget() {
    let mut rules_seen = 0;
    let mut problems = Vec::new();
    walk(&schema_json(), "", &mut |path, node| {
        let Some(rules) = node["x-kubernetes-validations"].as_array() else {
            return;
        };
        let compiled = kube_cel::compile_schema(node);
        for error in compiled.compilation_errors() {
            problems.push(format!("{path}: {error:?}"));
        }
        for rule in rules {
            rules_seen += 1;
            // Fields of a rule that 1.30 does not have generally available
            // (optionalOldSelf) would be dropped or refused there.
            for key in rule.as_object().into_iter().flatten().map(|(k, _)| k) {
                if !["rule", "message", "messageExpression"].contains(&key.as_str()) {
                    problems.push(format!(
                        "{path}: rule field {key} is newer than Kubernetes 1.30"
                    ));
                }
            }
            let text = rule["rule"].as_str().unwrap_or_default();
            for warning in
                kube_cel::analyze_rule(text, &compiled, kube_cel::ScopeContext::CrdValidation)
            {
                if warning.kind != kube_cel::WarningKind::MissingBounds {
                    problems.push(format!("{path}: {text}: {}", warning.message));
                }
            }
        }
    });
    assert_eq!(rules_seen, 6);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The API server (schema bounds and CEL rules) and the node
/// (`NodeSettings::validate`) refuse exactly the same settings, so a store
/// the API server takes never has nodes that refuse to start.
#[test]
fn the_crd_refuses_exactly_the_settings_the_node_refuses() {
    use recipestore_settings::{NodeSettings, ShedThreshold, Thresholds};

    let schema = schema_json();
    let spec_schema = &schema["properties"]["spec"];
    let validator = kube_cel::Validator::new();
    let mut cases: Vec<NodeSettings> = Vec::new();
    let base = NodeSettings::default();
    let millis = [
        0, 1, 9, 10, 11, 49, 50, 99, 100, 101, 149, 150, 151, 299, 300, 301, 449, 450, 451, 5000,
    ];
    for value in millis {
        for set in [
            |s: &mut NodeSettings, v| s.raft.heartbeat_interval_ms = v,
            |s: &mut NodeSettings, v| s.raft.election_timeout_min_ms = v,
            |s: &mut NodeSettings, v| s.raft.election_timeout_max_ms = v,
        ] {
            let mut s = base.clone();
            set(&mut s, value);
            cases.push(s);
        }
    }
    for value in [0u32, 1, 2, 3, 4, 5, 63, 64, 65, 1_000_000] {
        for set in [
            |s: &mut NodeSettings, v| s.queues.upload_capacity = v,
            |s: &mut NodeSettings, v| s.queues.download_capacity = v,
            |s: &mut NodeSettings, v| s.queues.upload_workers = v,
            |s: &mut NodeSettings, v| s.queues.download_workers_min = v,
            |s: &mut NodeSettings, v| s.queues.download_workers_max = v,
            |s: &mut NodeSettings, v| s.queues.delay_target_ms = v,
            |s: &mut NodeSettings, v| s.queues.upload_delay_target_ms = v,
            |s: &mut NodeSettings, v| s.queues.delay_interval_ms = v,
            |s: &mut NodeSettings, v| s.shedding.memory_floor_mib = v,
            |s: &mut NodeSettings, v| s.cache.size_mib = v,
        ] {
            let mut s = base.clone();
            set(&mut s, value);
            cases.push(s);
        }
    }
    for value in [0u8, 1, 50, 100, 101, 255] {
        let mut s = base.clone();
        s.shedding.upload_priority_cpu_percent = value;
        cases.push(s);
        let row = ShedThreshold {
            cpu_percent: value,
            probability_percent: 100u8.saturating_sub(value / 2),
            exclusive: false,
        };
        let mut s = base.clone();
        s.shedding.download_thresholds = Thresholds(vec![row]);
        cases.push(s);
        let mut s = base.clone();
        s.shedding.upload_thresholds = Thresholds(vec![ShedThreshold {
            probability_percent: value,
            ..row
        }]);
        cases.push(s);
    }
    for rows in [16, 17] {
        let mut s = base.clone();
        s.shedding.download_thresholds =
            Thresholds(vec![base.shedding.download_thresholds.0[0]; rows]);
        cases.push(s);
    }

    let mut refused = 0;
    for settings in cases {
        let mut spec = serde_json::to_value(recipestore(serde_json::json!({})).spec).unwrap();
        for (group, value) in serde_json::to_value(&settings)
            .unwrap()
            .as_object()
            .unwrap()
        {
            spec[group] = value.clone();
        }
        let structural = structural_errors(spec_schema, &spec, "spec");
        let cel = validator.validate(spec_schema, &spec, None);
        let api_accepts = structural.is_empty() && cel.is_ok();
        let node = settings.validate();
        refused += usize::from(!api_accepts);
        assert_eq!(
            api_accepts,
            node.is_ok(),
            "API server: {structural:?} {cel:?}; node: {node:?}; for {settings:?}"
        );
    }
    assert!(
        refused > 20,
        "only {refused} refusals: the cases test too little"
    );
}
