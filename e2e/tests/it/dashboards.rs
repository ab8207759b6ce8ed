//! The Grafana dashboards of the chart, proven against a real Prometheus:
//! a local 3-node cluster runs a short seed-like workload that makes the
//! nodes shed (a CPU spike and a burst on a tiny download queue), Prometheus
//! scrapes it with the labels a Kubernetes install attaches (`namespace`,
//! `pod`, and `job` = the store's name), and every query of every panel,
//! with its variables filled in as Grafana would, must return data.
//!
//! The operator dashboard cannot have data without a Kubernetes cluster: its
//! queries must only be accepted by Prometheus.
//!
//! Needs `cargo build --workspace` (the node binary) and `prometheus`
//! (Debian package `prometheus`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::prometheus::{Job, Prometheus, Target};
use anyhow::Context;
use recipectl::local_cluster::LocalCluster;
use recipestore_client::{Client, RetryPolicy};
use recipestore_protocol::pb;
use recipestore_testkit::{FAST_RAFT, binary, free_node_ports, workspace_root};
use serde_json::Value;
use tonic::transport::ClientTlsConfig;

/// What the scrape config calls the store and its namespace.
const NAMESPACE: &str = "kitchen";
const STORE: &str = "cookbook";
/// Dashboards whose panels need a Kubernetes cluster to have data.
const NEEDS_A_CLUSTER: &[&str] = &["recipestore-operator.json"];
/// `$__rate_interval` as Grafana would compute it for a short time range.
const RATE_INTERVAL: &str = "2m";

/// Besides the test Raft timings: a download queue of two served by one
/// worker (so a burst overflows it), a read cache of a few recipes (so it
/// evicts), and the CPU rules on CPU alone (so the faked CPU spike sheds
/// without a real overload).
const NODE_ARGS: &[&str] = &[
    "--cpu-sample-ms",
    "50",
    "--shed-cpu",
    "always",
    "--download-queue-capacity",
    "2",
    "--download-workers-min",
    "1",
    "--download-workers-max",
    "1",
    "--cache-mib",
    "1",
];

fn dashboards_dir() -> PathBuf {
    workspace_root().join("charts/recipestore-operator/dashboards")
}

/// A fake cgroup v2 CPU controller of one CPU whose usage the test sets.
struct FakeCpu {
    stat: PathBuf,
}

impl FakeCpu {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("cpu.max"), "100000 100000\n")?;
        std::fs::write(dir.join("cpu.stat"), "usage_usec 0\n")?;
        Ok(Self {
            stat: dir.join("cpu.stat"),
        })
    }

    /// Reports `percent` CPU usage until `stop` is set, then an idle CPU.
    fn busy(&self, percent: f64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let path = self.stat.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let usage = (started.elapsed().as_micros() as f64 * percent / 100.0) as u64;
                let tmp = path.with_extension("tmp");
                let _ = std::fs::write(&tmp, format!("usage_usec {usage}\n"));
                let _ = std::fs::rename(&tmp, &path);
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::write(&path, "usage_usec 0\n");
        })
    }
}

fn client(tls: &ClientTlsConfig, endpoints: &[String], attempts: u32) -> Client {
    let policy = RetryPolicy {
        max_attempts: attempts,
        ..RetryPolicy::default()
    };
    Client::with_tls(endpoints, policy, Duration::from_secs(5), Some(tls.clone())).expect("client")
}

/// About 200 KiB, so that the 1 MiB cache holds only a few recipes.
fn recipe(name: &str) -> Vec<u8> {
    format!("{name}: rice, eggs, soy sauce. ")
        .repeat(6400)
        .into_bytes()
}

/// The names of seed client `id`'s recipes.
fn recipe_names(id: usize) -> Vec<String> {
    (0..10).map(|i| format!("client-{id}-recipe-{i}")).collect()
}

/// The seed workload in small, first part: each client uploads 10 recipes.
async fn seed_uploads(client: &Client, id: usize) {
    for name in recipe_names(id) {
        client
            .upload(&name, recipe(&name), None)
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
    }
}

/// Second part: about 99.5 % downloads and 0.5 % uploads, round-robin over
/// the nodes, until `stop`. Sheds are expected and not retried much.
async fn seed_reads(client: Client, id: usize, stop: Arc<AtomicBool>) -> usize {
    let names = recipe_names(id);
    let mut calls = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = &names[calls % names.len()];
        if calls % 200 == 199 {
            let _ = client.upload(name, recipe(name), None).await;
        } else {
            let _ = client.download(name, pb::Consistency::Local, None).await;
        }
        calls += 1;
    }
    calls
}

/// A variable of a dashboard: `label_values(<selector>, <label>)`.
struct Variable {
    name: String,
    selector: String,
    label: String,
    multi: bool,
}

fn variables(dashboard: &Value) -> Vec<Variable> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_default();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("unsupported variable query {query}"));
            let (selector, label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("unsupported variable query {query}"));
            Variable {
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                selector: selector.trim().to_owned(),
                label: label.trim().to_owned(),
                multi: v["includeAll"] == true || v["multi"] == true,
            }
        })
        .collect()
}

/// Replaces `$name` and `${name}` with their values, longest names first.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    out
}

/// Resolves the variables in order, as Grafana does: each one's query
/// sees the values chosen before it. A single-value variable takes the
/// first value; "All" of a multi-value one is the alternation of all.
async fn resolve(
    prometheus: &Prometheus,
    dashboard: &Value,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::from([("__rate_interval".to_owned(), RATE_INTERVAL.to_owned())]);
    for variable in variables(dashboard) {
        let selector = substitute(&variable.selector, &values);
        let samples = prometheus
            .query(&selector)
            .await
            .with_context(|| format!("variable {} ({selector})", variable.name))?;
        let mut found: Vec<String> = samples
            .iter()
            .filter_map(|s| s.labels[&variable.label].as_str().map(str::to_owned))
            .collect();
        found.sort();
        found.dedup();
        let value = match (found.as_slice(), variable.multi) {
            ([], _) => ".*".to_owned(),
            (all, true) => format!("({})", all.join("|")),
            ([first, ..], false) => first.clone(),
        };
        values.insert(variable.name, value);
    }
    Ok(values)
}

/// Every panel with its queries, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(panels: &Value, out: &mut Vec<(String, Vec<String>)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let exprs: Vec<String> = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str().map(str::to_owned))
                .collect();
            if !exprs.is_empty() {
                let title = panel["title"].as_str().unwrap_or("<untitled>").to_owned();
                out.push((title, exprs));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_data_from_a_live_cluster() {
    let _cluster = crate::ONE_CLUSTER_AT_A_TIME.lock().await;
    let node = binary("recipestore-node");
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu = FakeCpu::create(&dir.path().join("cgroup")).expect("fake cgroup");
    let cgroup = dir.path().join("cgroup").display().to_string();
    let mut args = [FAST_RAFT, NODE_ARGS].concat();
    args.extend(["--cgroup-dir", &cgroup]);
    let mut cluster = LocalCluster::new(
        &node,
        &dir.path().join("nodes"),
        free_node_ports(),
        3,
        &args,
    )
    .expect("layout");
    // On TLS, as stores run by default, so the TLS panels have data too.
    let tls = cluster.use_tls().expect("certificates").admin().clone();
    cluster.start_all().expect("start nodes");
    let logs = |cluster: &LocalCluster| {
        cluster
            .nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    cluster
        .initialize(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("initialize: {e:#}\n{}", logs(&cluster)));
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&cluster)));

    let job = Job {
        name: STORE.to_owned(),
        targets: cluster
            .nodes
            .iter()
            .map(|n| Target {
                address: n.http_addr(),
                labels: vec![
                    ("namespace".to_owned(), NAMESPACE.to_owned()),
                    ("pod".to_owned(), format!("{STORE}-{}", n.id)),
                ],
            })
            .collect(),
    };
    let rules = workspace_root().join("charts/recipestore-operator/rules/recipestore.rules.yaml");
    let prometheus = Prometheus::start(&dir.path().join("prometheus"), &[job], &[&rules])
        .await
        .expect("prometheus");
    prometheus
        .await_data("count(up == 1) == 3", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", prometheus.log()));

    // The workload: eight seed clients over every node upload their
    // recipes, then read them...
    let endpoints = cluster.client_endpoints();
    let uploader = client(&tls, &endpoints, 8);
    for id in 0..8 {
        seed_uploads(&uploader, id).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seeders: Vec<_> = (0..8)
        .map(|id| tokio::spawn(seed_reads(client(&tls, &endpoints, 2), id, stop.clone())))
        .collect();
    prometheus
        .await_data(
            r#"sum(recipestore_requests_total{op="download", code="Ok"}) > 500"#,
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("the seed clients do not download: {e:#}"));
    // ...with a burst of concurrent downloads on one node's two-slot queue...
    let burst = Arc::new(client(&tls, &endpoints[..1], 1));
    let downloads: Vec<_> = (0..64)
        .map(|i| {
            let burst = burst.clone();
            tokio::spawn(async move {
                let name = format!("client-{}-recipe-{}", i % 8, i % 10);
                burst.download(&name, pb::Consistency::Local, None).await
            })
        })
        .collect();
    for download in downloads {
        let _ = download.await;
    }
    // ...and a CPU spike at 97 % until Prometheus has seen uploads shed and
    // downloads shed by chance, then calm again.
    let spike = Arc::new(AtomicBool::new(false));
    let cpu_thread = cpu.busy(97.0, spike.clone());
    let mut seen = Ok(Vec::new());
    for reason in ["cpu_priority", "cpu_probabilistic"] {
        if seen.is_ok() {
            seen = prometheus
                .await_data(
                    &format!(r#"sum(recipestore_shed_requests_total{{reason="{reason}"}}) > 0"#),
                    Duration::from_secs(60),
                )
                .await;
        }
    }
    spike.store(true, Ordering::Relaxed);
    let _ = cpu_thread.join();
    seen.unwrap_or_else(|e| panic!("no request was shed at 97 % CPU: {e:#}"));
    prometheus
        .await_data(
            "max(recipestore_cpu_usage_ratio) < 0.5",
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("the CPU does not calm down: {e:#}"));

    // Two snapshots on every node, one scrape apart, so that the storage
    // panels see snapshot builds within their rate interval.
    for (round, seen) in [
        (
            1,
            "count(recipestore_storage_snapshot_build_duration_seconds_count) == 3",
        ),
        (
            2,
            "min(recipestore_storage_snapshot_build_duration_seconds_count) >= 2",
        ),
    ] {
        for node in &cluster.nodes {
            node.admin()
                .trigger_snapshot()
                .await
                .unwrap_or_else(|e| panic!("snapshot {round} on node {}: {e}", node.id));
        }
        prometheus
            .await_data(seen, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("snapshot {round}: {e:#}\n{}", logs(&cluster)));
    }
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for seeder in seeders {
        calls += seeder.await.expect("seed client");
    }
    assert!(calls > 100, "the seed clients made only {calls} calls");

    // Wait until Prometheus has scraped what the workload left behind.
    for expr in [
        r#"sum(recipestore_shed_requests_total{reason="queue_full"}) > 0"#,
        "sum(recipestore_cache_evictions_total) > 0",
    ] {
        prometheus
            .await_data(expr, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&cluster)));
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let file_name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("read"))
            .unwrap_or_else(|e| panic!("{file_name} is not JSON: {e}"));
        let needs_data = !NEEDS_A_CLUSTER.contains(&file_name.as_str());
        let values = match resolve(&prometheus, &dashboard).await {
            Ok(values) => values,
            Err(e) => {
                failures.push(format!("{file_name}: {e:#}"));
                continue;
            }
        };
        if needs_data {
            for variable in variables(&dashboard) {
                if values.get(&variable.name).map(String::as_str) == Some(".*") {
                    failures.push(format!(
                        "{file_name}: variable {} has no values",
                        variable.name
                    ));
                }
            }
        }
        for (title, exprs) in panels(&dashboard) {
            for expr in exprs {
                let query = substitute(&expr, &values);
                checked += 1;
                match prometheus.query(&query).await {
                    Err(e) => failures.push(format!(
                        "{file_name} / {title}: rejected: {e:#}\n    {query}"
                    )),
                    Ok(samples) if needs_data && !samples.iter().any(|s| s.value.is_finite()) => {
                        failures.push(format!(
                            "{file_name} / {title}: no data ({} series, none finite)\n    {query}",
                            samples.len()
                        ))
                    }
                    Ok(_) => {}
                }
            }
        }
    }
    cluster.stop_all(Duration::from_secs(5));
    assert!(checked > 50, "only {checked} queries found");
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
