//! The operator binary, run as a cluster runs it, against the fake API
//! server: what it does without its CRD, with an outdated one, without the
//! Prometheus operator, and how fast it stops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use kube::CustomResourceExt;
use recipestore_operator::RecipeStore;
use recipestore_testkit::{free_port, poll};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api_server::{ApiServer, CRD_NAME};

const OPERATOR_NAMESPACE: &str = "recipestore-system";
const POD: &str = "recipestore-operator-7d9f-x2x4q";

struct Operator {
    child: Child,
    http: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Operator {
    fn start(api: &ApiServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("operator.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_recipestore-operator"))
            .args(["--http-addr", &http, "--leader-election", "false"])
            .env("KUBECONFIG", api.kubeconfig(dir.path()))
            .env("POD_NAME", POD)
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start the operator");
        Self {
            child,
            http,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /readyz`: the status code and body, once the server answers.
    async fn readyz(&self) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(&self.http).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: operator\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let code = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((code, body))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `within`.
    async fn exit(&mut self, within: Duration) -> ExitStatus {
        let log = self.log.clone();
        let child = &mut self.child;
        eventually(&log, within, "the operator to exit", || {
            std::future::ready(child.try_wait().expect("try_wait"))
        })
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, failing after `wait` with the
/// operator's log (at `log`).
async fn eventually<T, F, Fut>(log: &Path, wait: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(wait, Duration::from_millis(100), check)
        .await
        .unwrap_or_else(|| {
            panic!(
                "timed out after {wait:?} waiting for {what}\n--- operator log ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
}

fn crd() -> Value {
    serde_json::to_value(RecipeStore::crd()).expect("crd")
}

/// Events recorded on the operator's own Pod, as (reason, note).
fn events_on_own_pod(api: &ApiServer) -> Vec<(String, String)> {
    api.all("events")
        .iter()
        .filter(|e| e["regarding"]["kind"] == "Pod" && e["regarding"]["name"] == POD)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the operator has created `plural/name` in the store's
/// namespace, and returns it.
async fn created(api: &ApiServer, operator: &Operator, plural: &str, name: &str) -> Value {
    let what = format!("{plural}/{name}");
    eventually(&operator.log, WAIT, &what, || async {
        api.get(plural, "recipes", name)
    })
    .await
}

/// Waits for the first Events on the operator's own Pod.
async fn first_events_on_own_pod(api: &ApiServer, operator: &Operator) -> Vec<(String, String)> {
    eventually(
        &operator.log,
        WAIT,
        "an Event on the operator's Pod",
        || async { Some(events_on_own_pod(api)).filter(|e| !e.is_empty()) },
    )
    .await
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn without_its_crd_the_operator_is_not_ready_says_why_and_starts_once_it_is_installed() {
    let api = ApiServer::start().await;
    let operator = Operator::start(&api);

    let (code, body) = eventually(&operator.log, WAIT, "/readyz to refuse", || async {
        operator
            .readyz()
            .await
            .filter(|(_, body)| body.contains(CRD_NAME))
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("is not installed"), "{body}");
    assert!(body.contains("kubectl apply --server-side"), "{body}");
    let events = first_events_on_own_pod(&api, &operator).await;
    assert_eq!(events[0].0, "CRDMissing", "{events:?}");
    assert!(
        operator.log().contains("is not installed"),
        "{}",
        operator.log()
    );

    api.put("customresourcedefinitions", crd());
    eventually(&operator.log, WAIT, "/readyz to accept", || async {
        operator.readyz().await.filter(|(code, _)| *code == 200)
    })
    .await;
    eventually(
        &operator.log,
        WAIT,
        "the RecipeStores to be watched",
        || async {
            api.requests()
                .iter()
                .any(|r| r.contains("/recipestores?") && r.contains("watch=true"))
                .then_some(())
        },
    )
    .await;
    assert!(
        events_on_own_pod(&api)
            .iter()
            .any(|(reason, _)| reason == "CRDReady")
    );
}

#[tokio::test]
async fn an_outdated_crd_is_refused_naming_the_fields_it_lacks() {
    let api = ApiServer::start().await;
    let mut old = crd();
    let spec = &mut old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"].as_object_mut().unwrap().remove("queues");
    api.put("customresourcedefinitions", old);
    let operator = Operator::start(&api);

    let (code, body) = eventually(&operator.log, WAIT, "/readyz to refuse", || async {
        operator
            .readyz()
            .await
            .filter(|(_, body)| body.contains("older"))
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("spec.queues"), "{body}");
    let events = first_events_on_own_pod(&api, &operator).await;
    assert_eq!(events[0].0, "CRDOutdated");
    assert!(events[0].1.contains("spec.queues"), "{events:?}");
    // Nothing is watched, so nothing is pruned by an old schema.
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.contains("/apis/recipestore.dev/")),
        "{:#?}",
        api.requests()
    );
}

#[tokio::test]
async fn a_stop_request_while_waiting_for_the_crd_ends_the_operator_at_once() {
    let api = ApiServer::start().await;
    let mut operator = Operator::start(&api);
    eventually(&operator.log, WAIT, "/readyz to answer", || {
        operator.readyz()
    })
    .await;
    operator.terminate();
    assert!(operator.exit(Duration::from_secs(5)).await.success());
}

/// The controller's own graceful shutdown waits for its cache to fill, which
/// a watch that keeps failing never does.
#[tokio::test]
async fn a_stop_request_while_the_watches_fail_ends_the_operator_promptly() {
    let api = ApiServer::start().await;
    api.put("customresourcedefinitions", crd());
    api.forbid("recipestores");
    let mut operator = Operator::start(&api);
    // The refusal reached the operator once it logged it, not once the
    // server answered.
    eventually(
        &operator.log,
        WAIT,
        "a refused list of RecipeStores, logged",
        || async {
            let listed = api
                .requests()
                .iter()
                .any(|r| r.starts_with("GET /apis/recipestore.dev/v1alpha1/recipestores"));
            (listed && operator.log().contains("forbidden")).then_some(())
        },
    )
    .await;
    operator.terminate();
    assert!(operator.exit(Duration::from_secs(5)).await.success());
}

/// A fake API server with the RecipeStore CRD and the README's example store.
async fn with_example_store() -> ApiServer {
    let api = ApiServer::start().await;
    api.put("customresourcedefinitions", crd());
    api.put("recipestores", example_store());
    api
}

fn example_store() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/recipestore-operator/examples/recipestore.yaml");
    let mut store: Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("example")).expect("yaml");
    store["metadata"]["namespace"] = json!("recipes");
    store
}

/// The README's example on a cluster without the Prometheus operator: the
/// example asks for a ServiceMonitor, which the cluster cannot take.
#[tokio::test]
async fn without_the_prometheus_operator_the_example_store_gets_its_objects_and_a_condition() {
    let api = ApiServer::start().await;
    api.put("customresourcedefinitions", crd());
    let store = example_store();
    assert_eq!(
        store["spec"]["monitoring"]["serviceMonitor"]["enabled"],
        json!(true),
        "the example asks for a ServiceMonitor"
    );
    api.put("recipestores", store);
    let mut operator = Operator::start(&api);

    let status = eventually(&operator.log, WAIT, "the store's status", || async {
        api.get("recipestores", "recipes", "cookbook")
            .and_then(|s| s.get("status").cloned())
            .filter(|s| s["conditions"].as_array().is_some_and(|c| !c.is_empty()))
    })
    .await;
    for (plural, name) in [
        ("configmaps", "cookbook-config"),
        ("services", "cookbook"),
        ("services", "cookbook-peers"),
        ("poddisruptionbudgets", "cookbook"),
        ("statefulsets", "cookbook"),
        // TLS by default: the certificates the operator issues.
        ("secrets", "cookbook-tls-ca"),
        ("secrets", "cookbook-tls"),
        ("secrets", "cookbook-tls-admin"),
    ] {
        assert!(
            api.get(plural, "recipes", name).is_some(),
            "{plural}/{name} was not created\n{}",
            operator.log()
        );
    }
    let monitoring = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Monitoring")
        .unwrap_or_else(|| panic!("no Monitoring condition: {status}"));
    assert_eq!(monitoring["status"], "False");
    assert_eq!(monitoring["reason"], "ServiceMonitorAPIMissing");
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.contains("/apis/monitoring.coreos.com")),
        "nothing asks for the missing group: {:#?}",
        api.requests()
    );
    assert!(
        !operator.log().contains("reconcile failed"),
        "{}",
        operator.log()
    );

    operator.terminate();
    assert!(operator.exit(Duration::from_secs(25)).await.success());
}

#[tokio::test]
async fn an_object_the_api_server_refuses_is_told_on_the_store_with_the_field() {
    let api = with_example_store().await;
    let field = "spec.template.spec.containers[0].resources.requests";
    api.reject(
        "statefulsets",
        field,
        "Invalid value: \"250m\": exceeds the namespace's LimitRange",
    );
    let operator = Operator::start(&api);

    let note = eventually(&operator.log, WAIT, "a ReconcileFailed Event", || async {
        api.all("events").into_iter().find_map(|e| {
            (e["regarding"]["name"] == "cookbook" && e["reason"] == "ReconcileFailed")
                .then(|| e["note"].as_str().unwrap_or_default().to_owned())
        })
    })
    .await;
    assert!(note.contains("apply StatefulSet"), "{note}");
    assert!(note.contains(field), "{note}");
    assert!(note.contains("LimitRange"), "{note}");
}

/// etcd compacts, the API server restarts: the operator's watches resume
/// from a version the server no longer has, get `410 Expired`, and must
/// list again to find the store created meanwhile.
#[tokio::test]
async fn a_store_created_while_the_watch_history_expired_is_found_by_listing_again() {
    let api = with_example_store().await;
    let operator = Operator::start(&api);
    created(&api, &operator, "statefulsets", "cookbook").await;

    let mut second = example_store();
    second["metadata"]["name"] = json!("pantry");
    api.restart_after("recipestores", second);
    created(&api, &operator, "statefulsets", "pantry").await;
    assert!(
        api.requests().iter().any(|r| r
            .starts_with("GET /apis/recipestore.dev/v1alpha1/recipestores?")
            && !r.contains("watch=true")),
        "listed again"
    );
}

/// Someone else (a person with `kubectl apply --server-side`, another
/// controller) applied the StatefulSet's pod image: the operator's apply
/// takes the field back instead of failing on the conflict.
#[tokio::test]
async fn fields_another_manager_applied_are_taken_back() {
    let api = with_example_store().await;
    let operator = Operator::start(&api);
    let ours = created(&api, &operator, "statefulsets", "cookbook").await;
    let image = |sts: &Value| sts["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    let our_image = image(&ours);
    assert!(our_image.is_string(), "{ours}");

    let mut theirs = ours.clone();
    theirs["spec"]["template"]["spec"]["containers"][0]["image"] = json!("elsewhere/node:9");
    api.apply_as("kubectl", "statefulsets", theirs);
    eventually(&operator.log, WAIT, "the operator's image back", || async {
        let now = api.get("statefulsets", "recipes", "cookbook")?;
        let manager = api.manager_of("statefulsets", "recipes", "cookbook");
        (image(&now) == our_image && manager.as_deref() == Some("recipestore-operator"))
            .then_some(())
    })
    .await;
}

/// The Prometheus operator is there when the store is created and is
/// uninstalled later: the store gets its ServiceMonitor, then goes on
/// without it, with no failed reconcile.
#[tokio::test]
async fn a_service_monitor_api_that_goes_away_is_noticed_without_a_failed_reconcile() {
    let monitoring_crd = "servicemonitors.monitoring.coreos.com";
    let api = ApiServer::start().await;
    api.put("customresourcedefinitions", crd());
    api.put(
        "customresourcedefinitions",
        json!({"metadata": {"name": monitoring_crd}, "spec": {"group": "monitoring.coreos.com"}}),
    );
    api.put("recipestores", example_store());
    let operator = Operator::start(&api);
    created(&api, &operator, "servicemonitors", "cookbook").await;
    eventually(&operator.log, WAIT, "Monitoring to be True", || async {
        (monitoring_condition(&api)? == "True").then_some(())
    })
    .await;

    api.delete("customresourcedefinitions", "", monitoring_crd);
    eventually(&operator.log, WAIT, "Monitoring to be False", || async {
        (monitoring_condition(&api)? == "False").then_some(())
    })
    .await;
    assert!(
        !operator.log().contains("reconcile failed"),
        "{}",
        operator.log()
    );
    assert!(
        !api.all("events")
            .iter()
            .any(|e| e["reason"] == "ReconcileFailed"),
        "{:#?}",
        api.all("events")
    );
}

fn monitoring_condition(api: &ApiServer) -> Option<String> {
    let store = api.get("recipestores", "recipes", "cookbook")?;
    store["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Monitoring")
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

/// The example store with `shards: 3`, then 4: the operator binary gives
/// each shard its objects, lists the shards in the status, waits to place
/// them (no node runs here), and on the change adds the fourth shard's
/// objects and deletes nothing.
#[tokio::test]
async fn a_store_of_three_shards_then_four_gets_each_shard_s_objects_and_loses_none() {
    let api = ApiServer::start().await;
    api.put("customresourcedefinitions", crd());
    let mut store = example_store();
    store["spec"]["shards"] = json!(3);
    api.put("recipestores", store.clone());
    let mut operator = Operator::start(&api);

    let shards_listed = |count: usize| {
        let api = &api;
        move || async move {
            api.get("recipestores", "recipes", "cookbook")
                .and_then(|s| s.get("status").cloned())
                .filter(|s| s["shards"].as_array().is_some_and(|l| l.len() == count))
        }
    };
    let status = eventually(&operator.log, WAIT, "three shards listed", shards_listed(3)).await;
    for (plural, name) in [
        ("services", "cookbook"),
        ("services", "cookbook-peers"),
        ("services", "cookbook-s1-peers"),
        ("services", "cookbook-s2-peers"),
        ("poddisruptionbudgets", "cookbook"),
        ("poddisruptionbudgets", "cookbook-s1"),
        ("poddisruptionbudgets", "cookbook-s2"),
        ("statefulsets", "cookbook"),
        ("statefulsets", "cookbook-s1"),
        ("statefulsets", "cookbook-s2"),
    ] {
        created(&api, &operator, plural, name).await;
    }
    let pending = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "SlotsPending")
        .unwrap_or_else(|| panic!("no SlotsPending condition: {status}"));
    assert_eq!(pending["reason"], "WaitingToPlace", "{pending}");
    let hosts = created(&api, &operator, "secrets", "cookbook-tls").await["metadata"]
        ["annotations"]["recipestore.dev/hosts"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        hosts.contains("*.cookbook-s2-peers.recipes.svc"),
        "the members' certificate names every shard's pods: {hosts}"
    );

    store["spec"]["shards"] = json!(4);
    api.put("recipestores", store);
    eventually(&operator.log, WAIT, "four shards listed", shards_listed(4)).await;
    created(&api, &operator, "statefulsets", "cookbook-s3").await;
    for name in ["cookbook", "cookbook-s1", "cookbook-s2"] {
        assert!(api.get("statefulsets", "recipes", name).is_some(), "{name}");
    }
    assert!(
        !api.requests().iter().any(|r| r.starts_with("DELETE")),
        "nothing is deleted: {:#?}",
        api.requests()
    );
    assert!(
        !operator.log().contains("reconcile failed"),
        "{}",
        operator.log()
    );

    operator.terminate();
    assert!(operator.exit(Duration::from_secs(25)).await.success());
}
