//! Builders from CR fixtures: explicit assertions on what matters to a user,
//! and reviewed golden files for every field of every object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::*;
use crate::topology::SERVICE_ROLE_LABEL;

const MINIMAL: &str = include_str!("../../tests/fixtures/minimal.yaml");
const FULL: &str = include_str!("../../tests/fixtures/full.yaml");

fn fixture(yaml: &str) -> RecipeStore {
    serde_yaml::from_str(yaml).expect("fixture is a RecipeStore")
}

fn service_monitor_api() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ))
}

fn node_pod(r: &Resources) -> &PodSpec {
    r.shards[0]
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn node_container(r: &Resources) -> &Container {
    &node_pod(r).containers[0]
}

fn env(c: &Container) -> BTreeMap<&str, &EnvVar> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect()
}

fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    env(c).get(name).and_then(|e| e.value.as_deref())
}

/// Compares `value` with `tests/golden/<name>.yaml`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, value: &impl serde::Serialize) {
    let path = format!("{}/tests/golden/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let actual = serde_yaml::to_string(value).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(format!("{}/tests/golden", env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{path} missing: run with UPDATE_GOLDEN=1"));
    assert!(
        actual == expected,
        "{name} differs from {path}; review and run with UPDATE_GOLDEN=1\n{actual}"
    );
}

#[test]
fn minimal_spec_gets_documented_defaults() {
    let rs = fixture(MINIMAL);
    assert_eq!(rs.spec.replicas, 3);
    assert_eq!(rs.spec.storage.size.0, "10Gi");
    assert_eq!(rs.spec.raft.heartbeat_interval_ms, 100);
    assert_eq!(
        (
            rs.spec.raft.election_timeout_min_ms,
            rs.spec.raft.election_timeout_max_ms
        ),
        (300, 450)
    );
    assert!(rs.spec.shedding.enabled);
    assert!(rs.spec.monitoring.service_monitor.enabled);
}

#[test]
fn every_object_is_owned_by_the_recipestore_and_labelled() {
    let rs = fixture(MINIMAL);
    let r = build(&rs, &[3], None, Some(&service_monitor_api()), None).unwrap();
    let metas = [
        &r.config_map.metadata,
        &r.shards[0].peer_service.metadata,
        &r.client_service.metadata,
        &r.shards[0].pdb.metadata,
        &r.shards[0].statefulset.metadata,
        &r.service_monitor.as_ref().unwrap().metadata,
    ];
    for meta in metas {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "RecipeStore");
        assert_eq!(owner.name, "recipes");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("kitchen"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "recipes");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "recipestore-operator"
        );
    }
}

#[test]
fn object_names_follow_the_resource_name() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    assert_eq!(
        r.config_map.metadata.name.as_deref(),
        Some("recipes-config")
    );
    assert_eq!(
        r.shards[0].peer_service.metadata.name.as_deref(),
        Some("recipes-peers")
    );
    assert_eq!(r.client_service.metadata.name.as_deref(), Some("recipes"));
    assert_eq!(r.shards[0].pdb.metadata.name.as_deref(), Some("recipes"));
    assert_eq!(
        r.shards[0].statefulset.metadata.name.as_deref(),
        Some("recipes")
    );
}

#[test]
fn config_map_carries_node_settings_as_env() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let data = r.config_map.data.unwrap();
    let expected: BTreeMap<String, String> = [
        ("RECIPESTORE_HEARTBEAT_MS", "100"),
        ("RECIPESTORE_ELECTION_TIMEOUT_MIN_MS", "300"),
        ("RECIPESTORE_ELECTION_TIMEOUT_MAX_MS", "450"),
        ("RECIPESTORE_SHED_ENABLED", "true"),
        ("RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU", "90"),
        ("RECIPESTORE_SHED_DOWNLOAD_TIERS", "95:0.25,90:0.10,85:0.05"),
        ("RECIPESTORE_SHED_UPLOAD_TIERS", "80:0.25,75:0.10,>70:0.05"),
        ("RECIPESTORE_SHED_CPU", "when-overloaded"),
        ("RECIPESTORE_SHED_MEMORY_FLOOR_MIB", "64"),
        ("RECIPESTORE_UPLOAD_QUEUE_CAPACITY", "256"),
        ("RECIPESTORE_DOWNLOAD_QUEUE_CAPACITY", "1024"),
        ("RECIPESTORE_UPLOAD_WORKERS", "256"),
        ("RECIPESTORE_DOWNLOAD_WORKERS_MIN", "4"),
        ("RECIPESTORE_DOWNLOAD_WORKERS_MAX", "64"),
        ("RECIPESTORE_QUEUE_DELAY_TARGET_MS", "100"),
        ("RECIPESTORE_UPLOAD_QUEUE_DELAY_TARGET_MS", "500"),
        ("RECIPESTORE_QUEUE_DELAY_INTERVAL_MS", "100"),
        ("RECIPESTORE_CACHE_MIB", "64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(data, expected);
}

#[test]
fn config_map_sorts_shedding_tables_highest_cpu_first() {
    let r = build(&fixture(FULL), &[5], None, None, None).unwrap();
    let data = r.config_map.data.unwrap();
    assert_eq!(data["RECIPESTORE_SHED_DOWNLOAD_TIERS"], "97:0.50,90:0.20");
    assert_eq!(data["RECIPESTORE_SHED_UPLOAD_TIERS"], "70:0.30,>60:1.00");
    assert_eq!(data["RECIPESTORE_SHED_ENABLED"], "false");
    assert_eq!(data["RECIPESTORE_CACHE_MIB"], "256");
}

#[test]
fn peer_service_is_headless_and_publishes_not_ready_pods() {
    let mut r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let spec = r.shards[0].peer_service.spec.clone().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let ports: Vec<(Option<&str>, i32)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("client"), 7070),
            (Some("peer"), 7071),
            (Some("http"), 9090)
        ]
    );
    assert_eq!(
        r.shards
            .swap_remove(0)
            .peer_service
            .metadata
            .labels
            .unwrap()[SERVICE_ROLE_LABEL],
        "peers"
    );
}

#[test]
fn client_service_serves_clients_and_metrics() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let spec = r.client_service.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.publish_not_ready_addresses, None);
    let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [7070, 9090]);
    assert_eq!(
        spec.selector.unwrap()["app.kubernetes.io/instance"],
        "recipes"
    );
}

#[test]
fn pdb_allows_one_member_down() {
    let mut r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let spec = r.shards.swap_remove(0).pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.min_available, None);
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
        "recipestore"
    );
}

#[test]
fn statefulset_uses_planned_replicas_not_spec_replicas() {
    let mut r = build(&fixture(FULL), &[7], None, None, None).unwrap();
    assert_eq!(
        r.shards.swap_remove(0).statefulset.spec.unwrap().replicas,
        Some(7)
    );
}

#[test]
fn statefulset_gives_nodes_stable_identity_and_storage() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let spec = r.shards[0].statefulset.spec.as_ref().unwrap();
    assert_eq!(spec.service_name.as_deref(), Some("recipes-peers"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec.access_modes,
        Some(vec!["ReadWriteOnce".to_owned()])
    );
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "10Gi"
    );
    assert_eq!(claim_spec.storage_class_name, None);
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Delete"))
    );

    let c = node_container(&r);
    let pod_name = env(c)["POD_NAME"]
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(pod_name.field_path, "metadata.name");
    assert_eq!(env_value(c, "RECIPESTORE_POD_NAME"), Some("$(POD_NAME)"));
    assert_eq!(
        env_value(c, "RECIPESTORE_DATA_DIR"),
        Some("/var/lib/recipestore")
    );
    assert_eq!(env_value(c, "RECIPESTORE_PEER_ADDR"), Some("0.0.0.0:7071"));
    assert_eq!(
        env_value(c, "RECIPESTORE_CLIENT_ADDR"),
        Some("0.0.0.0:7070")
    );
    assert_eq!(env_value(c, "RECIPESTORE_HTTP_ADDR"), Some("0.0.0.0:9090"));
    assert_eq!(env_value(c, "RECIPESTORE_LOG_FORMAT"), Some("json"));
    assert_eq!(
        env_value(c, "RECIPESTORE_ADVERTISE_ADDR"),
        Some("$(POD_NAME).recipes-peers.$(POD_NAMESPACE).svc")
    );
    let env_from = &c.env_from.as_ref().unwrap()[0];
    assert_eq!(
        env_from.config_map_ref.as_ref().unwrap().name,
        "recipes-config"
    );
}

#[test]
fn statefulset_probes_health_and_readiness() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let c = node_container(&r);
    let path = |p: &Option<Probe>| {
        p.as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    assert_eq!(path(&c.liveness_probe), "/healthz");
    assert_eq!(path(&c.readiness_probe), "/readyz");
}

#[test]
fn statefulset_runs_non_root_with_read_only_root() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let pod = r.shards[0]
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sc = node_container(&r).security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
}

#[test]
fn statefulset_prefers_one_pod_per_host_by_default() {
    let r = build(&fixture(MINIMAL), &[3], None, None, None).unwrap();
    let pod = r.shards[0]
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    let preferred = &anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        preferred.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
}

#[test]
fn full_spec_reaches_the_pod() {
    let r = build(&fixture(FULL), &[5], None, None, None).unwrap();
    let sts = r.shards[0].statefulset.spec.as_ref().unwrap();
    let pod = sts.template.spec.as_ref().unwrap();
    let c = node_container(&r);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example.com/recipestore-node:1.2.3")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "1Gi"
    );
    assert_eq!(pod.node_selector.as_ref().unwrap()["disktype"], "ssd");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].value.as_deref(),
        Some("recipes")
    );
    assert_eq!(
        pod.topology_spread_constraints.as_ref().unwrap()[0].topology_key,
        "topology.kubernetes.io/zone"
    );
    // An explicit affinity replaces the default anti-affinity.
    let affinity = pod.affinity.as_ref().unwrap();
    assert!(affinity.node_affinity.is_some() && affinity.pod_anti_affinity.is_none());
    let claim = sts.volume_claim_templates.as_ref().unwrap()[0]
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "50Gi"
    );
    let retention = sts
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Delete"), Some("Retain"))
    );
}

#[test]
fn config_changes_roll_the_pods() {
    let annotation = |rs: &RecipeStore| {
        let mut r = build(rs, &[3], None, None, None).unwrap();
        r.shards
            .swap_remove(0)
            .statefulset
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[statefulset::CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let rs = fixture(MINIMAL);
    let mut changed = rs.clone();
    changed.spec.cache.size_mib = 1;
    assert_eq!(annotation(&rs), annotation(&rs.clone()));
    assert_ne!(annotation(&rs), annotation(&changed));

    // Shedding settings the nodes take while running roll nothing, but
    // for turning shedding off, which the queues read at start.
    let mut reloaded = rs.clone();
    reloaded.spec.shedding.download_thresholds = "99:0.5".parse().unwrap();
    reloaded.spec.shedding.upload_priority_cpu_percent = 99;
    reloaded.spec.shedding.memory_floor_mib = 8;
    assert_eq!(annotation(&rs), annotation(&reloaded));
    let mut off = rs.clone();
    off.spec.shedding.enabled = false;
    assert_ne!(annotation(&rs), annotation(&off));
}

#[test]
fn service_monitor_only_when_its_crd_exists_and_enabled() {
    let rs = fixture(MINIMAL);
    assert!(
        build(&rs, &[3], None, None, None)
            .unwrap()
            .service_monitor
            .is_none()
    );
    assert!(
        build(&rs, &[3], None, Some(&service_monitor_api()), None)
            .unwrap()
            .service_monitor
            .is_some()
    );
    let mut disabled = rs.clone();
    disabled.spec.monitoring.service_monitor.enabled = false;
    assert!(
        build(&disabled, &[3], None, Some(&service_monitor_api()), None)
            .unwrap()
            .service_monitor
            .is_none()
    );
}

#[test]
fn service_monitor_scrapes_the_client_service_with_extra_labels() {
    let r = build(
        &fixture(FULL),
        &[5],
        None,
        Some(&service_monitor_api()),
        None,
    )
    .unwrap();
    let sm = r.service_monitor.unwrap();
    assert_eq!(sm.types.as_ref().unwrap().kind, "ServiceMonitor");
    assert_eq!(
        sm.types.as_ref().unwrap().api_version,
        "monitoring.coreos.com/v1"
    );
    assert_eq!(
        sm.metadata.labels.as_ref().unwrap()["release"],
        "kube-prometheus"
    );
    assert_eq!(
        sm.data["spec"],
        json!({
            "selector": { "matchLabels": {
                "app.kubernetes.io/instance": "cookbook",
                "app.kubernetes.io/name": "recipestore",
                SERVICE_ROLE_LABEL: "client",
            }},
            "endpoints": [{ "port": "http", "path": "/metrics", "interval": "15s" }],
        })
    );
}

#[test]
fn a_resource_without_uid_cannot_own_children() {
    let mut rs = fixture(MINIMAL);
    rs.metadata.uid = None;
    assert!(matches!(
        build(&rs, &[3], None, None, None),
        Err(Error::MissingObjectKey("metadata.uid"))
    ));
}

#[test]
fn minimal_objects_match_golden_files() {
    let r = build(
        &fixture(MINIMAL),
        &[3],
        None,
        Some(&service_monitor_api()),
        None,
    )
    .unwrap();
    golden("minimal-configmap", &r.config_map);
    golden("minimal-peer-service", &r.shards[0].peer_service);
    golden("minimal-client-service", &r.client_service);
    golden("minimal-pdb", &r.shards[0].pdb);
    golden("minimal-statefulset", &r.shards[0].statefulset);
    golden("minimal-servicemonitor", &r.service_monitor);
}

#[test]
fn full_objects_match_golden_files() {
    let r = build(
        &fixture(FULL),
        &[5],
        None,
        Some(&service_monitor_api()),
        None,
    )
    .unwrap();
    golden("full-configmap", &r.config_map);
    golden("full-statefulset", &r.shards[0].statefulset);
    golden("full-servicemonitor", &r.service_monitor);
}

#[test]
fn backups_are_a_cronjob_whose_pods_no_member_selector_matches() {
    let mut rs = fixture(MINIMAL);
    assert!(
        build(&rs, &[3], None, None, None).unwrap().backup.is_none(),
        "no backups unless asked"
    );
    rs.spec.backup = Some(crate::crd::BackupSpec {
        schedule: "0 */6 * * *".to_owned(),
        retain: 5,
        claim_name: Some("cookbook-backups".to_owned()),
        s3: None,
        suspend: false,
    });
    let r = build(&rs, &[3], None, None, None).unwrap();
    let cronjob = r.backup.clone().expect("a backup CronJob");
    let spec = cronjob.spec.unwrap();
    assert_eq!(spec.schedule, "0 */6 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod_template = spec.job_template.spec.unwrap().template;
    let labels = pod_template.metadata.unwrap().labels.unwrap();
    let selector = r.shards[0]
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone();
    let selects = selector
        .match_labels
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    assert!(!selects, "a backup pod is no member: {labels:?}");
    let pod = pod_template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.volumes.unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "cookbook-backups"
    );
    let container = &pod.containers[0];
    assert_eq!(container.image, node_container(&r).image);
    let args = container.args.clone().unwrap().join(" ");
    assert!(
        args.ends_with("snapshot save --into /backups --keep 5"),
        "{args}"
    );
    let topology = topology(&rs).unwrap();
    for id in 0..3 {
        let peer = topology.member(id).peer_addr;
        assert!(args.contains(&peer), "member {id} is a peer to try: {args}");
    }
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
}

fn restoring(rs: &mut RecipeStore) {
    rs.metadata.uid = Some("4bd7f3c2-7a0e-4c38-9d52-2a8a1c1e5f10".to_owned());
    rs.spec.restore_from = Some(crate::crd::RestoreSpec {
        claim_name: Some("cookbook-backups".to_owned()),
        s3: None,
        file: "backup-20261206T060000.000Z.rsback".to_owned(),
    });
}

fn init_containers(r: &Resources) -> Vec<Container> {
    node_pod(r).init_containers.clone().unwrap_or_default()
}

#[test]
fn a_store_created_from_a_backup_restores_each_member_before_its_node_starts() {
    let mut rs = fixture(MINIMAL);
    assert!(init_containers(&build(&rs, &[3], None, None, None).unwrap()).is_empty());
    restoring(&mut rs);
    let r = build(&rs, &[3], None, None, None).unwrap();
    let init = init_containers(&r);
    assert_eq!(init.len(), 1);
    let args = init[0].args.clone().unwrap().join(" ");
    assert!(
        args.starts_with(
            "snapshot restore-member /restore/backup-20261206T060000.000Z.rsback \
             --data-dir /var/lib/recipestore --cluster-id 4bd7f3c2-7a0e-4c38-9d52-2a8a1c1e5f10"
        ),
        "{args}"
    );
    let topology = topology(&rs).unwrap();
    for id in 0..3 {
        let m = topology.member(id);
        assert!(
            args.contains(&format!("--member {id}={},{}", m.peer_addr, m.client_addr)),
            "{args}"
        );
    }
    assert!(!args.contains("--member 3="), "{args}");

    // Scaled out later: the members stay those the store was created with,
    // so the template (and the pods) do not change.
    let mut grown = rs.clone();
    grown.spec.replicas = 5;
    grown.status = Some(crate::crd::RecipeStoreStatus {
        cluster_id: Some("4bd7f3c2-7a0e-4c38-9d52-2a8a1c1e5f10".to_owned()),
        restored_members: Some(3),
        ..Default::default()
    });
    assert_eq!(
        init_containers(&build(&grown, &[5], None, None, None).unwrap()),
        init
    );
}

#[test]
fn restore_is_refused_for_a_running_store_and_for_paths() {
    let mut rs = fixture(MINIMAL);
    restoring(&mut rs);
    assert_eq!(restore::check(&rs), Ok(()));
    let mut running = rs.clone();
    running.status = Some(crate::crd::RecipeStoreStatus {
        cluster_id: Some("c-1".to_owned()),
        ..Default::default()
    });
    let problem = restore::check(&running).unwrap_err();
    assert!(
        problem.contains("only applies when a store is created"),
        "{problem}"
    );
    for file in ["../etc/passwd", "sub/backup.rsback", ".."] {
        let mut bad = rs.clone();
        bad.spec.restore_from.as_mut().unwrap().file = file.to_owned();
        let problem = restore::check(&bad).unwrap_err();
        assert!(problem.contains("must name a backup"), "{problem}");
    }
}

fn bucket() -> crate::crd::S3Spec {
    crate::crd::S3Spec {
        endpoint: "http://minio.storage:9000".to_owned(),
        bucket: "kitchen".to_owned(),
        prefix: "cookbook/".to_owned(),
        region: "eu-west-1".to_owned(),
        secret_name: "kitchen-s3".to_owned(),
    }
}

fn s3_env_of(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => from
                    .secret_key_ref
                    .as_ref()
                    .map(|secret| format!("secret {}/{}", secret.name, secret.key))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

#[test]
fn backups_and_restores_through_a_bucket_take_its_keys_from_the_secret() {
    let mut rs = fixture(MINIMAL);
    rs.spec.backup = Some(crate::crd::BackupSpec {
        schedule: "@daily".to_owned(),
        retain: 3,
        claim_name: None,
        s3: Some(bucket()),
        suspend: false,
    });
    let cronjob = build(&rs, &[3], None, None, None).unwrap().backup.unwrap();
    let pod = cronjob
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap().join(" ");
    assert!(
        args.ends_with("--into s3://kitchen/cookbook --keep 3"),
        "{args}"
    );
    let env = s3_env_of(container);
    assert_eq!(env["RECIPESTORE_S3_ENDPOINT"], "http://minio.storage:9000");
    assert_eq!(env["AWS_REGION"], "eu-west-1");
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"],
        "secret kitchen-s3/AWS_ACCESS_KEY_ID"
    );
    assert_eq!(
        env["AWS_SECRET_ACCESS_KEY"],
        "secret kitchen-s3/AWS_SECRET_ACCESS_KEY"
    );
    // The backup is saved and checked in scratch space first.
    let volume = &pod.volumes.unwrap()[0];
    assert!(volume.empty_dir.is_some(), "{volume:?}");
    assert_eq!(
        container.volume_mounts.as_ref().unwrap()[0].mount_path,
        "/tmp"
    );

    restoring(&mut rs);
    let restore = rs.spec.restore_from.as_mut().unwrap();
    restore.claim_name = None;
    restore.s3 = Some(bucket());
    assert_eq!(restore::check(&rs), Ok(()));
    let r = build(&rs, &[3], None, None, None).unwrap();
    let init = &init_containers(&r)[0];
    let args = init.args.clone().unwrap().join(" ");
    assert!(
        args.starts_with(
            "snapshot restore-member s3://kitchen/cookbook/backup-20261206T060000.000Z.rsback"
        ),
        "{args}"
    );
    assert_eq!(
        s3_env_of(init)["AWS_ACCESS_KEY_ID"],
        "secret kitchen-s3/AWS_ACCESS_KEY_ID"
    );
    let mounts: Vec<&str> = init
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/var/lib/recipestore"], "no claim to mount");

    // One place, not both, not neither.
    let restore = rs.spec.restore_from.as_mut().unwrap();
    restore.claim_name = Some("cookbook-backups".to_owned());
    assert!(restore::check(&rs).unwrap_err().contains("exactly one"));
}

#[test]
fn a_sharded_store_s_shard_0_is_an_unsharded_store_s_objects_and_its_other_shards_have_their_own() {
    let rs = fixture(MINIMAL);
    let unsharded = build(&rs, &[3], None, Some(&service_monitor_api()), None).unwrap();
    let sharded = build(&rs, &[3, 3, 3], None, Some(&service_monitor_api()), None).unwrap();
    fn value<T: serde::Serialize>(object: &T) -> serde_json::Value {
        serde_json::to_value(object).unwrap()
    }
    // Existing stores become shard 0 without their StatefulSet, PDB or
    // peer Service changing.
    assert_eq!(
        value(&sharded.shards[0].statefulset),
        value(&unsharded.shards[0].statefulset)
    );
    assert_eq!(
        value(&sharded.shards[0].pdb),
        value(&unsharded.shards[0].pdb)
    );
    assert_eq!(
        value(&sharded.shards[0].peer_service),
        value(&unsharded.shards[0].peer_service)
    );
    let names: Vec<(Option<&str>, Option<&str>, Option<&str>)> = sharded
        .shards
        .iter()
        .map(|s| {
            (
                s.statefulset.metadata.name.as_deref(),
                s.pdb.metadata.name.as_deref(),
                s.peer_service.metadata.name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (Some("recipes"), Some("recipes"), Some("recipes-peers")),
            (
                Some("recipes-s1"),
                Some("recipes-s1"),
                Some("recipes-s1-peers")
            ),
            (
                Some("recipes-s2"),
                Some("recipes-s2"),
                Some("recipes-s2-peers")
            ),
        ]
    );
    let s2 = sharded.shards[2].statefulset.spec.as_ref().unwrap();
    assert_eq!(s2.service_name.as_deref(), Some("recipes-s2-peers"));
    assert_eq!(
        s2.selector.match_labels.as_ref().unwrap()["recipestore.dev/shard"],
        "2"
    );
    // One client Service, for the pods marked serving in every shard.
    assert_eq!(
        sharded.client_service.spec.as_ref().unwrap().selector,
        Some(Topology::new("recipes", "kitchen").serving_selector())
    );
    // The ServiceMonitor scrapes every shard's peer Service, as the store.
    let sm = sharded.service_monitor.unwrap();
    assert_eq!(
        sm.data["spec"]["selector"]["matchLabels"][SERVICE_ROLE_LABEL],
        "peers"
    );
    assert_eq!(sm.data["spec"]["jobLabel"], "app.kubernetes.io/instance");
    assert_eq!(
        sm.data["spec"]["podTargetLabels"],
        json!(["recipestore.dev/shard"])
    );
    for shard in &sharded.shards {
        let labels = shard.peer_service.metadata.labels.as_ref().unwrap();
        for (k, v) in sm.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(labels.get(k).map(String::as_str), v.as_str(), "{k}");
        }
    }
}
