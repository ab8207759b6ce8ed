//! The `kube` suite, against whatever cluster `KUBECONFIG` (or the current
//! kubectl context) names: build the images (and load them into kind, or push
//! them to `RECIPESTORE_E2E_REGISTRY`), `helm install` the chart, create a
//! RecipeStore, use it through its client Service, scale 3 → 5 → 3, delete the
//! leader's pod, check `kubectl get rstore` and the Events, and uninstall.
//!
//! Run it with `bash e2e/kube.sh` (see the README). Without a reachable
//! cluster it skips, saying why.

use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use recipestore_client::Client;
use recipestore_e2e::docker::docker;
use recipestore_protocol::pb::Consistency;
use recipestore_testkit::workspace_root;

const NAMESPACE: &str = "recipestore-e2e";
const RELEASE: &str = "recipestore-e2e";
const STORE: &str = "recipes";

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["--namespace", NAMESPACE];
    full.extend_from_slice(args);
    run("kubectl", &full)
}

/// Polls `check` (kubectl calls) every 2 s until it yields a value,
/// failing after `wait`.
async fn eventually<T>(wait: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    recipestore_testkit::poll(wait, Duration::from_secs(2), || std::future::ready(check()))
        .await
        .unwrap_or_else(|| panic!("timed out after {wait:?} waiting for {what}"))
}

fn jsonpath(resource: &str, path: &str) -> Option<String> {
    kubectl(&["get", resource, "-o", &format!("jsonpath={path}")]).ok()
}

/// Builds both images and makes them pullable by the cluster.
fn publish_images(context: &str) -> anyhow::Result<(String, String)> {
    let root = workspace_root();
    run(
        "bash",
        &[&root.join("scripts/base-image.sh").to_string_lossy()],
    )?;
    let profile = if root.join("target/release/recipestore-operator").exists() {
        "release"
    } else {
        "debug"
    };
    let registry = std::env::var("RECIPESTORE_E2E_REGISTRY").ok();
    let prefix = registry
        .as_deref()
        .map(|r| format!("{r}/"))
        .unwrap_or_default();
    let node = format!("{prefix}recipestore-node:e2e");
    let operator = format!("{prefix}recipestore-operator:e2e");
    let context_dir = root.to_string_lossy().into_owned();
    let build_arg = format!("PROFILE={profile}");
    for (target, tag) in [("node", &node), ("operator", &operator)] {
        docker(&[
            "build",
            "--quiet",
            "--target",
            target,
            "--build-arg",
            &build_arg,
            "-t",
            tag,
            &context_dir,
        ])?;
        if registry.is_some() {
            docker(&["push", tag])?;
        } else if let Some(cluster) = context.strip_prefix("kind-") {
            run("kind", &["load", "docker-image", tag, "--name", cluster])?;
        }
    }
    Ok((node, operator))
}

/// `kubectl port-forward` to the client Service, stopped on drop.
struct PortForward(Child);

impl PortForward {
    fn start(local_port: u16) -> anyhow::Result<Self> {
        let mapping = format!("{local_port}:7070");
        let service = format!("service/{STORE}");
        let child = Command::new("kubectl")
            .args(["--namespace", NAMESPACE, "port-forward", &service, &mapping])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run kubectl port-forward")?;
        Ok(Self(child))
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn voters(expected: usize) {
    eventually(
        Duration::from_secs(600),
        &format!("{expected} caught-up voters"),
        || {
            let roles = jsonpath(&format!("rstore/{STORE}"), "{.status.members[*].role}")?;
            let ready = jsonpath(&format!("rstore/{STORE}"), "{.status.readyReplicas}")?;
            let voters = roles
                .split_whitespace()
                .filter(|r| r.eq_ignore_ascii_case("voter"))
                .count();
            (voters == expected && ready == expected.to_string()).then_some(())
        },
    )
    .await;
}

async fn available() {
    eventually(
        Duration::from_secs(600),
        "the store to be Available",
        || {
            let status = jsonpath(
                &format!("rstore/{STORE}"),
                "{.status.conditions[?(@.type==\"Available\")].status}",
            )?;
            (status == "True").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_scale_failover_and_uninstall_on_a_real_cluster() {
    let context = match run("kubectl", &["config", "current-context"]) {
        Ok(c) if run("kubectl", &["cluster-info"]).is_ok() => c,
        _ => {
            eprintln!(
                "SKIPPED: no reachable Kubernetes cluster (set KUBECONFIG or a kubectl context); \
                 run `bash e2e/kube.sh` against kind or a cloud cluster"
            );
            return;
        }
    };
    let (node_image, operator_image) = publish_images(&context).expect("publish images");
    let (node_repo, node_tag) = node_image.rsplit_once(':').unwrap();
    let (operator_repo, operator_tag) = operator_image.rsplit_once(':').unwrap();
    let chart = workspace_root().join("charts/recipestore-operator");
    let chart = chart.to_string_lossy();
    let set_image = format!("image.repository={operator_repo},image.tag={operator_tag}");
    run(
        "helm",
        &[
            "upgrade",
            "--install",
            RELEASE,
            &chart,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            &set_image,
            "--wait",
            "--timeout",
            "5m",
        ],
    )
    .expect("helm install");

    let manifest = format!(
        "apiVersion: recipestore.dev/v1alpha1\nkind: RecipeStore\nmetadata:\n  name: {STORE}\n  namespace: {NAMESPACE}\n\
         spec:\n  replicas: 3\n  image: {node_repo}:{node_tag}\n  imagePullPolicy: IfNotPresent\n  storage:\n    size: 1Gi\n"
    );
    let path = std::env::temp_dir().join("recipestore-e2e.yaml");
    std::fs::write(&path, manifest).unwrap();
    kubectl(&["apply", "-f", &path.to_string_lossy()]).expect("apply the RecipeStore");
    available().await;
    voters(3).await;

    // Upload and download through the client Service.
    let forward = PortForward::start(17070).unwrap();
    let client = Client::new(&["127.0.0.1:17070".to_string()]).unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("kube-{i:02}");
        let reply = eventually_upload(&client, &name).await;
        acked.push((name, reply));
    }
    check_all(&client, &acked).await;

    // kubectl scale 3 → 5 → 3.
    kubectl(&["scale", &format!("rstore/{STORE}"), "--replicas=5"]).expect("scale out");
    voters(5).await;
    check_all(&client, &acked).await;
    kubectl(&["scale", &format!("rstore/{STORE}"), "--replicas=3"]).expect("scale in");
    voters(3).await;
    let pods = kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={STORE}"),
        "-o",
        "name",
    ])
    .unwrap();
    assert_eq!(pods.lines().count(), 3, "{pods}");
    check_all(&client, &acked).await;

    // Delete the leader's pod: the store recovers.
    let leader = jsonpath(&format!("rstore/{STORE}"), "{.status.leader}").expect("leader");
    kubectl(&["delete", "pod", &leader, "--wait=false"]).expect("delete the leader pod");
    eventually(Duration::from_secs(300), "a new leader", || {
        jsonpath(&format!("rstore/{STORE}"), "{.status.leader}")
            .filter(|l| !l.is_empty() && *l != leader)
    })
    .await;
    available().await;
    voters(3).await;
    drop(forward);
    let forward = PortForward::start(17071).unwrap();
    let client = Client::new(&["127.0.0.1:17071".to_string()]).unwrap();
    check_all(&client, &acked).await;
    drop(forward);

    // `kubectl get rstore` columns and the Events.
    let table = kubectl(&["get", "rstore", STORE]).unwrap();
    for column in ["REPLICAS", "READY", "LEADER", "PHASE", "AGE"] {
        assert!(table.contains(column), "missing column {column}:\n{table}");
    }
    let events = kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={STORE}"),
    ])
    .unwrap();
    for reason in [
        "Initialize",
        "AddLearner",
        "PromoteLearner",
        "RemoveVoter",
        "ShrinkStatefulSet",
    ] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }

    // Uninstall: nothing left but the namespace's retained volumes.
    kubectl(&["delete", "rstore", STORE, "--wait=true", "--timeout=5m"]).expect("delete the store");
    run(
        "helm",
        &["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"],
    )
    .expect("helm uninstall");
    let left = kubectl(&[
        "get",
        "statefulsets,services,configmaps,poddisruptionbudgets,deployments",
        "-o",
        "name",
    ])
    .unwrap_or_default();
    let left: Vec<&str> = left
        .lines()
        .filter(|l| !l.contains("kube-root-ca.crt"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = run(
        "kubectl",
        &["delete", "namespace", NAMESPACE, "--wait=false"],
    );
}

/// Every acknowledged upload reads back at its version.
async fn check_all(client: &Client, acked: &[(String, u64)]) {
    for (name, version) in acked {
        let read = client
            .download(name, Consistency::Linearizable, None)
            .await
            .expect("download");
        assert_eq!(read.version, *version, "{name}");
    }
}

/// Uploads, retrying while the port-forward and the store come up.
async fn eventually_upload(client: &Client, name: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client
            .upload(name, format!("{name}: noodles").into_bytes(), None)
            .await
        {
            Ok(reply) => return reply.version,
            Err(e) => assert!(Instant::now() < deadline, "upload {name}: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
