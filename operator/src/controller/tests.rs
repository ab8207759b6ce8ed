//! Reconcile against a mocked API server. Each scenario names the requests a
//! reconcile must make, in order, and fails when one is missing, differs, or
//! an extra one arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::PodStatus;
use kube::client::Body;
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::Reporter;
use recipestore_client::admin::AdminError as CallFailed;
use serde_json::Value;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

use super::*;
use crate::admin::AdminError;
use crate::build::config_map::FORCE_NEW_CLUSTER;
use crate::crd::{Phase, RecipeStoreStatus};
use crate::membership::{FORCE_RECOVERY_ANNOTATION, Member, NodeId, NodeStatus, Role};

const NS: &str = "kitchen";
const NAME: &str = "recipes";
const CLUSTER: &str = "c-1";

// ---------- fixtures ----------

fn recipestore(replicas: i32) -> RecipeStore {
    let mut rs: RecipeStore =
        serde_yaml::from_str(include_str!("../../tests/fixtures/minimal.yaml"))
            .expect("fixture parses");
    rs.spec.replicas = replicas;
    // Plaintext, so the scenarios below are about what they name; a new
    // store's TLS has a scenario of its own.
    rs.spec.tls.enabled = Some(false);
    rs
}

fn with_cluster(mut rs: RecipeStore) -> RecipeStore {
    rs.status = Some(RecipeStoreStatus {
        cluster_id: Some(CLUSTER.to_owned()),
        ..RecipeStoreStatus::default()
    });
    rs
}

fn topology() -> Topology {
    Topology::new(NAME, NS)
}

fn statefulset(rs: &RecipeStore, replicas: u32) -> StatefulSet {
    let mut sts = build::build(rs, &[replicas], None, None, None)
        .expect("builds")
        .shards
        .swap_remove(0)
        .statefulset;
    let replicas = i32::try_from(replicas).unwrap();
    sts.status = Some(StatefulSetStatus {
        replicas,
        ready_replicas: Some(replicas),
        ..StatefulSetStatus::default()
    });
    sts
}

fn pod(ordinal: NodeId) -> Pod {
    Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(topology().pod(ordinal)),
            namespace: Some(NS.to_owned()),
            ..Default::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

fn member(id: NodeId) -> Member {
    topology().member(id)
}

/// Node statuses of an initialized cluster led by 0, everyone caught up;
/// `fresh` nodes answer but belong to no cluster yet.
fn cluster(
    voters: &[NodeId],
    learners: &[NodeId],
    fresh: &[NodeId],
) -> BTreeMap<String, NodeStatus> {
    cluster_of(&topology(), voters, learners, fresh)
}

/// [`cluster`] of the shard `topology` names.
fn cluster_of(
    topology: &Topology,
    voters: &[NodeId],
    learners: &[NodeId],
    fresh: &[NodeId],
) -> BTreeMap<String, NodeStatus> {
    let member = |id| topology.member(id);
    let mut nodes = BTreeMap::new();
    for id in voters.iter().chain(learners) {
        let leader = *id == 0;
        nodes.insert(
            member(*id).peer_addr,
            NodeStatus {
                id: *id,
                cluster_id: CLUSTER.to_owned(),
                role: if leader { Role::Leader } else { Role::Follower },
                term: 2,
                leader_id: Some(0),
                voters: voters.iter().copied().map(member).collect(),
                learners: learners.iter().copied().map(member).collect(),
                last_log_index: 50,
                committed_index: 50,
                matched_index: if leader {
                    voters.iter().chain(learners).map(|v| (*v, 50)).collect()
                } else {
                    BTreeMap::new()
                },
                millis_since_quorum_ack: leader.then_some(10),
                ..NodeStatus::default()
            },
        );
    }
    for id in fresh {
        nodes.insert(
            member(*id).peer_addr,
            NodeStatus {
                id: *id,
                cluster_id: String::new(),
                role: Role::Learner,
                term: 0,
                leader_id: None,
                voters: Vec::new(),
                learners: Vec::new(),
                last_log_index: 0,
                committed_index: 0,
                matched_index: BTreeMap::new(),
                millis_since_quorum_ack: None,
                ..NodeStatus::default()
            },
        );
    }
    nodes
}

/// Admin API of scripted nodes; records every call that changes something.
#[derive(Default)]
struct FakeAdmin {
    nodes: BTreeMap<String, NodeStatus>,
    calls: Mutex<Vec<String>>,
    /// Membership changes fail as if leadership moved mid-call.
    fail_changes: bool,
}

impl FakeAdmin {
    fn new(nodes: BTreeMap<String, NodeStatus>) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }

    fn record(&self, call: String) -> BoxFuture<'_, Result<(), AdminError>> {
        let result = if self.fail_changes {
            Err(AdminError::Node(CallFailed::Call {
                call: "ChangeMembership",
                addr: call.clone(),
                source: tonic::Status::unavailable(
                    "leadership moved during the membership change; retry",
                ),
            }))
        } else {
            Ok(())
        };
        self.calls.lock().unwrap().push(call);
        Box::pin(async move { result })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl NodeAdmin for FakeAdmin {
    fn with_tls(
        self: Arc<Self>,
        _tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Arc<dyn NodeAdmin> {
        self
    }

    fn status<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<NodeStatus, AdminError>> {
        let answer = self.nodes.get(addr).cloned().ok_or_else(|| {
            AdminError::Node(CallFailed::Call {
                call: "Status",
                addr: addr.to_owned(),
                source: tonic::Status::unavailable("connection refused"),
            })
        });
        Box::pin(async move { answer })
    }

    fn initialize<'a>(
        &'a self,
        addr: &'a str,
        members: Vec<Member>,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        self.calls.lock().unwrap().push(format!(
            "Initialize {addr} {:?}",
            members.iter().map(|m| m.id).collect::<Vec<_>>()
        ));
        Box::pin(async { Ok(CLUSTER.to_owned()) })
    }

    fn add_learner<'a>(
        &'a self,
        addr: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        self.record(format!("AddLearner {addr} {}", member.id))
    }

    fn change_membership<'a>(
        &'a self,
        addr: &'a str,
        voters: BTreeSet<NodeId>,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        self.record(format!("ChangeMembership {addr} {voters:?}"))
    }

    fn transfer_leadership<'a>(
        &'a self,
        addr: &'a str,
        to: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        self.record(format!("TransferLeadership {addr} {to}"))
    }

    fn remove_learner<'a>(
        &'a self,
        addr: &'a str,
        id: NodeId,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        self.record(format!("RemoveLearner {addr} {id}"))
    }

    fn reconfigure<'a>(
        &'a self,
        addr: &'a str,
        shedding: &'a recipestore_settings::Shedding,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        self.record(format!(
            "Reconfigure {addr} {}",
            shedding.download_thresholds
        ))
    }

    fn place<'a>(
        &'a self,
        addr: &'a str,
        placement: recipestore_protocol::pb::Placement,
    ) -> BoxFuture<'a, Result<u64, AdminError>> {
        let owned = placement
            .owners
            .iter()
            .filter(|&&o| o == placement.shard)
            .count();
        self.calls.lock().unwrap().push(format!(
            "Place {addr} shard {} epoch {} slots {owned} shards {}",
            placement.shard,
            placement.epoch,
            placement.shards.len()
        ));
        let epoch = placement.epoch;
        Box::pin(async move { Ok(epoch) })
    }

    /// Moves nothing: the scripted groups' placements stay as they are.
    fn reshard_step<'a>(
        &'a self,
        shards: &'a [crate::admin::ShardAddrs],
        target: u16,
        _pace: recipestore_client::reshard::Pace,
    ) -> BoxFuture<
        'a,
        Result<recipestore_client::reshard::Step, recipestore_client::reshard::ReshardError>,
    > {
        self.calls.lock().unwrap().push(format!(
            "ReshardStep to {target} over shards {:?}",
            shards.iter().map(|s| s.shard).collect::<Vec<_>>()
        ));
        Box::pin(async move { Ok(recipestore_client::reshard::Step::default()) })
    }
}

// ---------- the verifier ----------

/// What the mocked API server knows before the reconcile.
/// What the API server holds; the default is a new store's: nothing yet.
#[derive(Default)]
struct ApiState {
    statefulset: Option<StatefulSet>,
    pods: Vec<Pod>,
}

/// Plays the API server for one reconcile and checks every request.
struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// A request as the verifier saw it.
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

impl ApiServerVerifier {
    async fn next(&mut self, what: &str) -> (Seen, SendResponse<Response<Body>>) {
        let (request, send) = self.0.next_request().await.unwrap_or_else(|| {
            panic!("expected a request to {what}, but the reconcile made no more requests")
        });
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        assert_granted(&method, &path, &query);
        (
            Seen {
                method,
                path,
                query,
                body,
            },
            send,
        )
    }

    /// Expects `method path`, answers with `reply` (status 200 unless 404 given).
    async fn expect(&mut self, what: &str, method: Method, path: &str, reply: Reply) -> Seen {
        let (seen, send) = self.next(what).await;
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&method, path),
            "request to {what}"
        );
        let (code, body) = match reply {
            Reply::Json(v) => (StatusCode::OK, v),
            Reply::Echo => (StatusCode::OK, seen.body.clone()),
            // What the API server answers for a missing object of a served
            // resource: /apis/{group}/{version}/namespaces/{ns}/{plural}/{name},
            // or /api/v1/namespaces/{ns}/{plural}/{name} for the core group,
            // which its message and details leave out.
            Reply::NotFound => {
                let segments: Vec<&str> = seen.path.split('/').collect();
                let (resource, details) = match segments[1] {
                    "api" => {
                        let (plural, name) = (segments[5], segments[6]);
                        (plural.to_owned(), json!({"name": name, "kind": plural}))
                    }
                    _ => {
                        let (group, plural, name) = (segments[2], segments[6], segments[7]);
                        (
                            format!("{plural}.{group}"),
                            json!({"name": name, "group": group, "kind": plural}),
                        )
                    }
                };
                (
                    StatusCode::NOT_FOUND,
                    json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("{resource} \"{}\" not found", details["name"].as_str().unwrap()),
                        "reason": "NotFound",
                        "details": details,
                        "code": 404,
                    }),
                )
            }
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// Fails if any request arrives after the expected ones.
    async fn expect_no_more(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!(
                "unexpected extra request {} {}",
                request.method(),
                request.uri()
            );
        }
    }

    async fn dereference(&mut self, state: &ApiState) {
        let sts = match &state.statefulset {
            Some(s) => Reply::Json(serde_json::to_value(s).unwrap()),
            None => Reply::NotFound,
        };
        self.expect(
            "get StatefulSet",
            Method::GET,
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
            sts,
        )
        .await;
        let pods =
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": state.pods});
        let seen = self
            .expect(
                "list pods",
                Method::GET,
                &format!("/api/v1/namespaces/{NS}/pods"),
                Reply::Json(pods),
            )
            .await;
        assert!(
            seen.query.contains("labelSelector="),
            "pods are listed by selector: {}",
            seen.query
        );
    }

    /// Expects the five applies and returns what was applied.
    async fn apply_children(&mut self, service_monitor: bool) -> Applied {
        let applies = [
            (
                "apply ConfigMap",
                format!("/api/v1/namespaces/{NS}/configmaps/{NAME}-config"),
            ),
            (
                "apply peer Service",
                format!("/api/v1/namespaces/{NS}/services/{NAME}-peers"),
            ),
            (
                "apply client Service",
                format!("/api/v1/namespaces/{NS}/services/{NAME}"),
            ),
            (
                "apply PodDisruptionBudget",
                format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{NAME}"),
            ),
            (
                "apply StatefulSet",
                format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
            ),
        ];
        let mut bodies = Vec::new();
        for (what, path) in applies {
            let seen = self.expect(what, Method::PATCH, &path, Reply::Echo).await;
            assert_server_side_apply(&seen);
            assert_eq!(
                seen.body["metadata"]["ownerReferences"][0]["controller"],
                json!(true),
                "{what} is owned"
            );
            bodies.push(seen.body);
        }
        let applied = Applied {
            statefulset: bodies.pop().expect("the StatefulSet"),
            config_map: bodies.swap_remove(0),
        };
        if service_monitor {
            let seen = self
                .expect(
                    "apply ServiceMonitor",
                    Method::PATCH,
                    &format!(
                        "/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/{NAME}"
                    ),
                    Reply::Echo,
                )
                .await;
            assert_server_side_apply(&seen);
            assert_eq!(seen.body["kind"], "ServiceMonitor");
        }
        applied
    }

    /// A GET of the Secret `name`, answered 404.
    async fn secret_not_found(&mut self, name: &str) {
        self.expect(
            &format!("get Secret {name}"),
            Method::GET,
            &format!("/api/v1/namespaces/{NS}/secrets/{name}"),
            Reply::NotFound,
        )
        .await;
    }

    /// Expects an Event with `reason` and `type_`.
    async fn event(&mut self, reason: &str, type_: &str) -> Value {
        let seen = self
            .expect(
                &format!("publish {reason} Event"),
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
                Reply::Echo,
            )
            .await;
        assert_eq!(seen.body["reason"], reason);
        assert_eq!(seen.body["type"], type_);
        assert_eq!(seen.body["regarding"]["name"], NAME);
        seen.body
    }

    /// Expects the status apply and returns the status sent.
    async fn status(&mut self, rs: &RecipeStore) -> RecipeStoreStatus {
        let (seen, send) = self.next("update status").await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(
            seen.path,
            format!("/apis/recipestore.dev/v1alpha1/namespaces/{NS}/recipestores/{NAME}/status")
        );
        assert_server_side_apply(&seen);
        let status: RecipeStoreStatus =
            serde_json::from_value(seen.body["status"].clone()).unwrap();
        let mut updated = rs.clone();
        updated.status = Some(status.clone());
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&updated).unwrap()))
                .unwrap(),
        );
        status
    }
}

/// The rules of the operator's role in the chart, with every optional
/// API it may be given (the ServiceMonitor rule): the template's rules with
/// its Helm control lines left out.
fn chart_rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let template = include_str!("../../../charts/recipestore-operator/templates/rbac.yaml");
    let rules: String = template
        .split("\n---")
        .next()
        .and_then(|role| role.split_once("\nrules:\n"))
        .map(|(_, rules)| rules)
        .expect("the first document of rbac.yaml is the operator's role, ending in its rules")
        .lines()
        .filter(|line| !line.trim_start().starts_with("{{"))
        .map(|line| format!("{line}\n"))
        .collect();
    serde_yaml::from_str(&rules).expect("the role's rules parse")
}

/// Fails unless the chart's role grants the request: a call the operator
/// makes that RBAC would refuse in a real cluster.
fn assert_granted(method: &Method, path: &str, query: &str) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/... (the core group) or /apis/{group}/{version}/...
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a resource path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("not a resource path: {path}"),
    };
    let verb = match (method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        (other, _) => panic!("unexpected method {other} {path}"),
    };
    let granted = chart_rules().iter().any(|rule| {
        rule.api_groups.iter().flatten().any(|g| g == group)
            && rule.resources.iter().flatten().any(|r| *r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    });
    assert!(
        granted,
        "the chart's role does not let the operator {verb} {resource} in group {group:?} ({method} {path})"
    );
}

/// Owned objects as a reconcile applied them.
struct Applied {
    config_map: Value,
    statefulset: Value,
}

enum Reply {
    Json(Value),
    Echo,
    NotFound,
}

fn assert_server_side_apply(seen: &Seen) {
    assert!(
        seen.query.contains("fieldManager=recipestore-operator")
            && seen.query.contains("force=true"),
        "{} is a forced server-side apply by our field manager: {}",
        seen.path,
        seen.query
    );
}

fn condition<'a>(status: &'a RecipeStoreStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("{type_} condition"));
    (c.status.as_str(), c.reason.as_str())
}

/// A context on the mocked API server, with metrics in `registry`.
fn context(
    client: Client,
    registry: &prometheus::Registry,
    admin: Arc<FakeAdmin>,
    integrations: Integrations,
) -> Context {
    Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: None,
            },
        ),
        client,
        metrics: Metrics::register(registry).unwrap(),
        admin,
        policy: Policy::default(),
        integrations: Arc::new(integrations),
    }
}

/// Runs one reconcile of `rs` against `state` and `admin`, with `script`
/// playing the API server. Returns the reconcile result and the admin calls.
async fn reconcile_with<F>(
    rs: RecipeStore,
    admin: FakeAdmin,
    script: impl FnOnce(ApiServerVerifier) -> F,
) -> (Result<Action>, Vec<String>)
where
    F: Future<Output = ApiServerVerifier> + Send + 'static,
{
    reconcile_in(rs, admin, Integrations::default(), script).await
}

/// [`reconcile_with`] on a cluster with the Prometheus operator's
/// ServiceMonitor API.
async fn reconcile_with_service_monitor<F>(
    rs: RecipeStore,
    admin: FakeAdmin,
    script: impl FnOnce(ApiServerVerifier) -> F,
) -> (Result<Action>, Vec<String>)
where
    F: Future<Output = ApiServerVerifier> + Send + 'static,
{
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let api = ApiResource::from_gvk_with_plural(&gvk, "servicemonitors");
    reconcile_in(rs, admin, Integrations::known(Some(api), None), script).await
}

async fn reconcile_in<F>(
    rs: RecipeStore,
    admin: FakeAdmin,
    integrations: Integrations,
    script: impl FnOnce(ApiServerVerifier) -> F,
) -> (Result<Action>, Vec<String>)
where
    F: Future<Output = ApiServerVerifier> + Send + 'static,
{
    let registry = prometheus::Registry::new();
    reconcile_measured(rs, admin, integrations, &registry, script).await
}

/// [`reconcile_with`] with the operator's metrics in `registry`.
async fn reconcile_in_registry<F>(
    rs: RecipeStore,
    admin: FakeAdmin,
    registry: &prometheus::Registry,
    script: impl FnOnce(ApiServerVerifier) -> F,
) -> (Result<Action>, Vec<String>)
where
    F: Future<Output = ApiServerVerifier> + Send + 'static,
{
    reconcile_measured(rs, admin, Integrations::default(), registry, script).await
}

async fn reconcile_measured<F>(
    rs: RecipeStore,
    admin: FakeAdmin,
    integrations: Integrations,
    registry: &prometheus::Registry,
    script: impl FnOnce(ApiServerVerifier) -> F,
) -> (Result<Action>, Vec<String>)
where
    F: Future<Output = ApiServerVerifier> + Send + 'static,
{
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let admin = Arc::new(admin);
    let ctx = Arc::new(context(client, registry, admin.clone(), integrations));
    let verifier: JoinHandle<()> = tokio::spawn({
        let script = script(ApiServerVerifier(handle));
        async move { script.await.expect_no_more().await }
    });
    let result = reconcile(Arc::new(rs), ctx).await;
    // Dropping the context closes the mocked connection, so the verifier can
    // tell "no more requests" from "request still coming".
    tokio::time::timeout(Duration::from_secs(10), verifier)
        .await
        .expect("verifier finished")
        .expect("every expected request was made, and no other");
    (result, admin.calls())
}

// ---------- scenarios ----------

#[tokio::test]
async fn first_apply_creates_every_object_and_waits_for_pods() {
    let rs = recipestore(3);
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        let sts = api.apply_children(false).await.statefulset;
        assert_eq!(
            sts["spec"]["replicas"], 3,
            "a new StatefulSet starts at the desired size"
        );
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Pending);
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            status.selector,
            "app.kubernetes.io/instance=recipes,app.kubernetes.io/name=recipestore"
        );
        assert_eq!(condition(&status, "Available"), ("False", "NotInitialized"));
        assert_eq!(condition(&status, "Progressing"), ("True", "WaitingForPod"));
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
    assert!(
        calls.is_empty(),
        "no membership call before pods exist: {calls:?}"
    );
}

/// A cert-manager Issuer named in `spec.tls.issuerRef`.
fn cert_manager_issuer() -> crate::crd::IssuerRef {
    crate::crd::IssuerRef {
        name: "store-ca".into(),
        kind: "Issuer".into(),
        group: "cert-manager.io".into(),
    }
}

#[tokio::test]
async fn a_new_store_runs_tls_on_certificates_the_operator_issues_first() {
    let mut rs = recipestore(3);
    rs.spec.tls.enabled = None;
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, _) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        for secret in ["recipes-tls-ca", "recipes-tls", "recipes-tls-admin"] {
            api.secret_not_found(secret).await;
        }
        let mut issued = BTreeMap::new();
        for secret in ["recipes-tls-ca", "recipes-tls", "recipes-tls-admin"] {
            let seen = api
                .expect(
                    &format!("apply {secret}"),
                    Method::PATCH,
                    &format!("/api/v1/namespaces/{NS}/secrets/{secret}"),
                    Reply::Echo,
                )
                .await;
            assert_server_side_apply(&seen);
            assert_eq!(
                seen.body["metadata"]["ownerReferences"][0]["controller"],
                json!(true)
            );
            api.event("CertificateIssued", "Normal").await;
            issued.insert(secret, seen.body);
        }
        assert!(issued["recipes-tls-ca"]["data"]["ca.key"].is_string());
        assert!(
            issued["recipes-tls"]["data"].get("ca.key").is_none(),
            "the CA's key stays in its own Secret"
        );
        let sts = api.apply_children(false).await.statefulset;
        let pod = &sts["spec"]["template"]["spec"];
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let set = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            set("RECIPESTORE_TLS_CERT"),
            Some(json!("/etc/recipestore/tls/tls.crt"))
        );
        assert_eq!(
            set("RECIPESTORE_TLS_CA"),
            Some(json!("/etc/recipestore/tls/ca.crt"))
        );
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["secret"]["secretName"] == "recipes-tls"),
            "{volumes:?}"
        );
        api.status(&expected).await;
        api
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn a_cert_manager_issuer_is_asked_for_certificates_when_its_api_is_served() {
    let mut rs = recipestore(3);
    rs.spec.tls = crate::crd::TlsSpec {
        issuer_ref: Some(cert_manager_issuer()),
        ..crate::crd::TlsSpec::default()
    };
    let state = ApiState::default();
    let expected = rs.clone();
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let api_resource = ApiResource::from_gvk_with_plural(&gvk, "certificates");
    let integrations = Integrations::known(None, Some(api_resource));
    let (result, _) =
        reconcile_in(
            rs,
            FakeAdmin::default(),
            integrations,
            move |mut api| async move {
                api.dereference(&state).await;
                // cert-manager writes the Secrets: only the administrator's is read.
                api.secret_not_found("recipes-tls-admin").await;
                for certificate in ["recipes-tls", "recipes-tls-admin"] {
                    let seen = api
                .expect(
                    &format!("apply Certificate {certificate}"),
                    Method::PATCH,
                    &format!("/apis/cert-manager.io/v1/namespaces/{NS}/certificates/{certificate}"),
                    Reply::Echo,
                )
                .await;
                    assert_server_side_apply(&seen);
                    assert_eq!(seen.body["spec"]["issuerRef"]["name"], "store-ca");
                    assert_eq!(seen.body["spec"]["secretName"], certificate);
                }
                api.apply_children(false).await;
                api.status(&expected).await;
                api
            },
        )
        .await;
    result.unwrap();
}

#[tokio::test]
async fn a_cert_manager_issuer_without_cert_manager_is_refused() {
    let mut rs = recipestore(3);
    rs.spec.tls.enabled = None;
    rs.spec.tls.issuer_ref = Some(cert_manager_issuer());
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, _) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        api.secret_not_found("recipes-tls-admin").await;
        let event = api.event("InvalidSpec", "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("install cert-manager"),
            "{event}"
        );
        api.status(&expected).await;
        api
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidSpec(_))), "{result:?}");
}

#[tokio::test]
async fn a_named_administrator_secret_that_is_missing_is_told() {
    let mut rs = recipestore(3);
    rs.spec.tls = crate::crd::TlsSpec {
        secret_name: Some("mine".into()),
        admin_secret_name: Some("mine-admin".into()),
        ..crate::crd::TlsSpec::default()
    };
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, _) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        api.secret_not_found("mine-admin").await;
        let event = api.event("TLSSecretUnusable", "Warning").await;
        assert!(
            event["note"].as_str().unwrap().contains("mine-admin"),
            "{event}"
        );
        let sts = api.apply_children(false).await.statefulset;
        let volumes = sts["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert!(
            volumes.iter().any(|v| v["secret"]["secretName"] == "mine"),
            "{volumes:?}"
        );
        api.status(&expected).await;
        api
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn switching_tls_on_a_running_store_is_refused() {
    let running = recipestore(3);
    let mut rs = with_cluster(running.clone());
    rs.spec.tls.enabled = Some(true);
    let state = ApiState {
        statefulset: Some(statefulset(&running, 3)),
        pods: vec![],
    };
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        let event = api.event("InvalidSpec", "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("cannot change on a running store"),
            "{event}"
        );
        let status = api.status(&expected).await;
        assert_eq!(condition(&status, "Degraded"), ("True", "InvalidSpec"));
        api
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidSpec(_))), "{result:?}");
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn first_apply_adds_a_service_monitor_when_its_crd_exists() {
    let rs = recipestore(3);
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, _) =
        reconcile_with_service_monitor(rs, FakeAdmin::default(), move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(true).await;
            api.status(&expected).await;
            api
        })
        .await;
    result.unwrap();
}

#[tokio::test]
async fn disabled_service_monitor_is_removed() {
    let mut rs = recipestore(3);
    rs.spec.monitoring.service_monitor.enabled = false;
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, _) =
        reconcile_with_service_monitor(rs, FakeAdmin::default(), move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(false).await;
            api.expect(
                "delete ServiceMonitor",
                Method::DELETE,
                &format!("/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/{NAME}"),
                Reply::NotFound,
            )
            .await;
            api.status(&expected).await;
            api
        })
        .await;
    result.unwrap();
}

#[tokio::test]
async fn deleted_recipestore_is_left_to_the_garbage_collector() {
    let mut rs = recipestore(3);
    rs.metadata.deletion_timestamp = Some(now());
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), |api| async move { api }).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(calls.is_empty());
}

#[tokio::test]
async fn bootstrap_initializes_ordinal_zero_and_records_an_event() {
    let rs = recipestore(3);
    let sts = statefulset(&rs, 3);
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[], &[], &[0, 1, 2]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        api.event("Initialize", "Normal").await;
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Initializing);
        api
    })
    .await;
    result.unwrap();
    assert_eq!(calls, [format!("Initialize {} [0]", member(0).peer_addr)]);
}

#[tokio::test]
async fn status_update_reports_leader_members_and_conditions() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 3);
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[0, 1, 2], &[], &[]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Running);
        assert_eq!((status.replicas, status.ready_replicas), (3, 3));
        assert_eq!(status.leader.as_deref(), Some("recipes-0"));
        assert_eq!(status.term, Some(2));
        assert_eq!(status.cluster_id.as_deref(), Some(CLUSTER));
        let members: Vec<(u64, &str, bool)> = status
            .members
            .iter()
            .map(|m| (m.id, m.address.as_str(), m.caught_up))
            .collect();
        assert_eq!(
            members,
            [
                (0, "recipes-0.recipes-peers.kitchen.svc:7071", true),
                (1, "recipes-1.recipes-peers.kitchen.svc:7071", true),
                (2, "recipes-2.recipes-peers.kitchen.svc:7071", true),
            ]
        );
        assert_eq!(condition(&status, "Available"), ("True", "LeaderElected"));
        assert_eq!(condition(&status, "Progressing"), ("False", "Reconciled"));
        assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_STEADY));
    assert!(calls.is_empty());
}

#[tokio::test]
async fn scale_out_step_adds_the_next_pod_as_learner() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 3);
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[0], &[], &[1, 2]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        let event = api.event("AddLearner", "Normal").await;
        assert!(event["note"].as_str().unwrap().contains("adding node 1"));
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Scaling);
        assert_eq!(condition(&status, "Progressing"), ("True", "AddLearner"));
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
    assert_eq!(calls, [format!("AddLearner {} 1", member(0).peer_addr)]);
}

#[tokio::test]
async fn scale_out_step_promotes_a_caught_up_learner() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 3);
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[0], &[1], &[2]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        api.event("PromoteLearner", "Normal").await;
        api.status(&expected).await;
        api
    })
    .await;
    result.unwrap();
    assert_eq!(
        calls,
        [format!("ChangeMembership {} {{0, 1}}", member(0).peer_addr)]
    );
}

#[tokio::test]
async fn scale_in_step_removes_the_highest_voter_before_the_statefulset_shrinks() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 5);
    let pods = (0..5).map(pod).collect();
    let state = ApiState {
        statefulset: Some(sts),
        pods,
    };
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[0, 1, 2, 3, 4], &[], &[]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        let sts = api.apply_children(false).await.statefulset;
        assert_eq!(
            sts["spec"]["replicas"], 5,
            "the StatefulSet keeps pod 4 until it left the voters"
        );
        api.event("RemoveVoter", "Normal").await;
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Scaling);
        api
    })
    .await;
    result.unwrap();
    assert_eq!(
        calls,
        [format!(
            "ChangeMembership {} {{0, 1, 2, 3}}",
            member(0).peer_addr
        )]
    );
}

#[tokio::test]
async fn scale_in_step_shrinks_the_statefulset_once_the_voter_is_gone() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 5);
    let pods = (0..5).map(pod).collect();
    let state = ApiState {
        statefulset: Some(sts),
        pods,
    };
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[0, 1, 2, 3], &[], &[4]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        let sts = api.apply_children(false).await.statefulset;
        assert_eq!(sts["spec"]["replicas"], 4);
        api.event("ShrinkStatefulSet", "Normal").await;
        api.status(&expected).await;
        api
    })
    .await;
    result.unwrap();
    assert!(
        calls.is_empty(),
        "shrinking is done by the StatefulSet, not the admin API: {calls:?}"
    );
}

#[tokio::test]
async fn failed_step_is_reported_and_status_still_written() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 3);
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let mut admin = FakeAdmin::new(cluster(&[0], &[1], &[2]));
    admin.fail_changes = true;
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        let event = api.event("MembershipStepFailed", "Warning").await;
        assert!(
            event["note"].as_str().unwrap().contains("leadership moved"),
            "{event}"
        );
        let status = api.status(&expected).await;
        assert_eq!(
            condition(&status, "Progressing"),
            ("True", "PromoteLearner")
        );
        api
    })
    .await;
    assert!(
        matches!(
            result,
            Err(Error::Membership {
                step: "PromoteLearner",
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        calls.len(),
        1,
        "tried once, retried on the next reconcile: {calls:?}"
    );
}

#[tokio::test]
async fn fenced_node_is_refused_with_a_warning() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 3);
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let mut nodes = cluster(&[0, 1], &[], &[2]);
    nodes.get_mut(&member(2).peer_addr).unwrap().cluster_id = "c-other".to_owned();
    let (result, calls) = reconcile_with(rs, FakeAdmin::new(nodes), move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        let event = api.event("NodeFenced", "Warning").await;
        assert!(event["note"].as_str().unwrap().contains("c-other"));
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Degraded);
        assert_eq!(condition(&status, "Degraded"), ("True", "NodeFenced"));
        api
    })
    .await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(REQUEUE_STEADY),
        "a refusal waits for a person"
    );
    assert!(calls.is_empty(), "a fenced node is never joined: {calls:?}");
}

#[tokio::test]
async fn invalid_spec_is_reported_and_nothing_is_applied() {
    let mut rs = recipestore(3);
    rs.spec.raft.election_timeout_min_ms = 3000;
    let state = ApiState::default();
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        let event = api.event("InvalidSpec", "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("electionTimeoutMinMs")
        );
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Failed);
        assert_eq!(condition(&status, "Degraded"), ("True", "InvalidSpec"));
        api
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidSpec(_))), "{result:?}");
    assert!(calls.is_empty());
}

#[tokio::test]
async fn changed_storage_size_is_refused_against_the_existing_statefulset() {
    let rs = with_cluster(recipestore(3));
    let sts = statefulset(&rs, 3);
    let mut resized = rs.clone();
    resized.spec.storage.size =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".to_owned());
    let state = ApiState {
        statefulset: Some(sts),
        pods: vec![],
    };
    let expected = resized.clone();
    let (result, _) = reconcile_with(resized, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        let event = api.event("InvalidSpec", "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("storage is immutable")
        );
        api.status(&expected).await;
        api
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidSpec(_))));
}

#[test]
fn validate_accepts_the_defaults() {
    assert_eq!(validate(&recipestore(3).spec, None), Ok(()));
}

#[test]
fn validate_names_the_broken_rule() {
    type Breakage = fn(&mut RecipeStoreSpec);
    let cases: Vec<(&str, Breakage)> = vec![
        ("replicas", |s| s.replicas = 0),
        ("image", |s| s.image.clear()),
        ("must be less than raft.electionTimeoutMaxMs", |s| {
            s.raft.election_timeout_max_ms = 200
        }),
        ("heartbeatIntervalMs", |s| {
            s.raft.heartbeat_interval_ms = 500
        }),
        ("downloadWorkersMin", |s| {
            s.queues.download_workers_min = 100
        }),
        ("is not a cron schedule", |s| {
            s.backup = Some(backup_spec("every six hours"))
        }),
        ("is not a cron schedule", |s| {
            s.backup = Some(backup_spec("0 */6 * *"))
        }),
        ("exactly one of claimName", |s| {
            s.backup = Some(crate::crd::BackupSpec {
                claim_name: None,
                ..backup_spec("@daily")
            })
        }),
        ("backup.retain", |s| {
            s.backup = Some(crate::crd::BackupSpec {
                retain: 0,
                ..backup_spec("@daily")
            })
        }),
    ];
    for (needle, break_it) in cases {
        let mut spec = recipestore(3).spec;
        break_it(&mut spec);
        let problem = validate(&spec, None).expect_err(needle);
        assert!(problem.contains(needle), "{problem} mentions {needle}");
    }
}

/// Two membership steps with the same reason are two Events, each with its
/// own message; the same step again counts up its own Event.
#[tokio::test]
async fn each_step_is_an_event_of_its_own() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = context(
        client,
        &prometheus::Registry::new(),
        Arc::new(FakeAdmin::default()),
        Integrations::default(),
    );
    let server = tokio::spawn(async move {
        let mut api = ApiServerVerifier(handle);
        let path = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
        let mut notes = Vec::new();
        for _ in 0..2 {
            let seen = api
                .expect("new Event", Method::POST, &path, Reply::Echo)
                .await;
            notes.push(seen.body["note"].clone());
        }
        // The repeat of the first step updates that step's series.
        let (seen, send) = api.next("the repeat").await;
        assert_eq!(seen.method, Method::PATCH, "{}", seen.path);
        send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(serde_json::to_vec(&seen.body).unwrap()))
                .unwrap(),
        );
        (api, notes)
    });
    let rs = recipestore(3);
    for node in [1, 2, 1] {
        let note = format!("adding node {node} as a learner");
        publish(
            &ctx,
            &rs,
            EventType::Normal,
            "AddLearner",
            "Membership",
            note,
        )
        .await
        .unwrap();
    }
    drop(ctx);
    let (api, notes) = server.await.unwrap();
    assert_eq!(
        notes,
        [
            json!("adding node 1 as a learner"),
            json!("adding node 2 as a learner")
        ]
    );
    api.expect_no_more().await;
}

#[test]
fn event_actions_fit_the_events_api_limit() {
    let long = "é".repeat(200);
    let action = event_action("Membership", &long);
    assert!(action.len() <= MAX_EVENT_ACTION_BYTES);
    assert!(action.starts_with("Membership: é"));
    assert_eq!(event_action("Validate", "bad"), "Validate: bad");
}

#[tokio::test]
async fn error_policy_counts_and_backs_off() {
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let registry = prometheus::Registry::new();
    let ctx = Arc::new(context(
        client,
        &registry,
        Arc::new(FakeAdmin::default()),
        Integrations::default(),
    ));
    let rs = Arc::new(recipestore(3));
    assert_eq!(
        error_policy(rs.clone(), &Error::InvalidSpec("x".into()), ctx.clone()),
        Action::requeue(REQUEUE_INVALID)
    );
    assert_eq!(
        error_policy(rs, &Error::MissingObjectKey("metadata.uid"), ctx),
        Action::requeue(REQUEUE_ERROR)
    );
    let errors = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "recipestore_operator_reconcile_errors_total");
    assert_eq!(errors.unwrap().get_metric().len(), 2);
}

/// Nodes 1 and 2 of three came back with new, empty volumes; node 0 kept
/// its data and leads no one: a quorum can never form again.
fn quorum_lost() -> BTreeMap<String, NodeStatus> {
    let mut nodes = cluster(&[0, 1, 2], &[], &[]);
    nodes.extend(cluster(&[], &[], &[1, 2]));
    let survivor = nodes.get_mut(&member(0).peer_addr).unwrap();
    survivor.role = Role::Candidate;
    survivor.leader_id = None;
    survivor.matched_index.clear();
    survivor.millis_since_quorum_ack = None;
    nodes
}

#[tokio::test]
async fn a_lost_quorum_is_refused_until_a_person_names_the_survivor_to_force() {
    let rs = with_cluster(recipestore(3));
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let (result, calls) = reconcile_with(
        rs,
        FakeAdmin::new(quorum_lost()),
        move |mut api| async move {
            api.dereference(&state).await;
            let applied = api.apply_children(false).await;
            assert!(applied.config_map["data"].get(FORCE_NEW_CLUSTER).is_none());
            let event = api.event("QuorumLost", "Warning").await;
            let note = event["note"].as_str().unwrap();
            assert!(note.contains("node 0 is the most up to date"), "{note}");
            assert!(
                note.contains("recipestore.dev/force-recovery=\"0\""),
                "{note}"
            );
            let status = api.status(&expected).await;
            assert_eq!(condition(&status, "Degraded"), ("True", "QuorumLost"));
            assert_eq!(status.forcing_new_cluster, None);
            api
        },
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_STEADY));
    assert!(calls.is_empty(), "nothing happens unasked: {calls:?}");

    // A person names node 0: the ConfigMap tells it to force a new cluster
    // (without rolling the other pods) and its pod is restarted.
    let mut rs = with_cluster(recipestore(3));
    rs.annotations_mut()
        .insert(FORCE_RECOVERY_ANNOTATION.to_owned(), "0".to_owned());
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let unforced = statefulset(&rs, 3);
    let expected = rs.clone();
    let (result, calls) = reconcile_with(
        rs,
        FakeAdmin::new(quorum_lost()),
        move |mut api| async move {
            api.dereference(&state).await;
            let applied = api.apply_children(false).await;
            assert_eq!(applied.config_map["data"][FORCE_NEW_CLUSTER], "0");
            let hash = |sts: &Value| sts["spec"]["template"]["metadata"]["annotations"].clone();
            assert_eq!(
                hash(&applied.statefulset),
                hash(&serde_json::to_value(&unforced).unwrap()),
                "the other pods are not rolled"
            );
            api.expect(
                "restart the survivor's pod",
                Method::DELETE,
                &format!("/api/v1/namespaces/{NS}/pods/{NAME}-0"),
                Reply::Json(serde_json::to_value(pod(0)).unwrap()),
            )
            .await;
            api.event("ForceNewCluster", "Normal").await;
            let status = api.status(&expected).await;
            assert_eq!(status.forcing_new_cluster, Some(0));
            api
        },
    )
    .await;
    result.unwrap();
    assert!(calls.is_empty(), "{calls:?}");

    // Node 0 leads alone: the annotation goes, so that it never acts on a
    // later loss unasked, and the lost members rejoin as new ones.
    let mut rs = with_cluster(recipestore(3));
    rs.annotations_mut()
        .insert(FORCE_RECOVERY_ANNOTATION.to_owned(), "0".to_owned());
    rs.status.as_mut().unwrap().forcing_new_cluster = Some(0);
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let mut nodes = cluster(&[0], &[], &[]);
    nodes.extend(cluster(&[], &[], &[1, 2]));
    let expected = rs.clone();
    let patched = serde_json::to_value(&rs).unwrap();
    let (result, calls) = reconcile_with(rs, FakeAdmin::new(nodes), move |mut api| async move {
        api.dereference(&state).await;
        let applied = api.apply_children(false).await;
        assert!(applied.config_map["data"].get(FORCE_NEW_CLUSTER).is_none());
        let seen = api
            .expect(
                "remove the annotation",
                Method::PATCH,
                &format!("/apis/recipestore.dev/v1alpha1/namespaces/{NS}/recipestores/{NAME}"),
                Reply::Json(patched),
            )
            .await;
        assert_eq!(
            seen.body,
            json!({"metadata": {"annotations": {FORCE_RECOVERY_ANNOTATION: null}}})
        );
        api.event("AddLearner", "Normal").await;
        let status = api.status(&expected).await;
        assert_eq!(status.forcing_new_cluster, None);
        api
    })
    .await;
    result.unwrap();
    assert_eq!(calls, [format!("AddLearner {} 1", member(0).peer_addr)]);
}

/// A ready pod created from `revision`.
fn rolled_pod(ordinal: NodeId, revision: &str, ready: bool) -> Pod {
    let mut pod = pod(ordinal);
    pod.metadata.labels = Some(BTreeMap::from([(
        REVISION_LABEL.to_owned(),
        revision.to_owned(),
    )]));
    pod.status.as_mut().unwrap().conditions =
        Some(vec![k8s_openapi::api::core::v1::PodCondition {
            type_: "Ready".to_owned(),
            status: if ready { "True" } else { "False" }.to_owned(),
            ..Default::default()
        }]);
    pod
}

/// A store of three members led by node 0 while its StatefulSet rolls
/// onto `r2`; pod `i` runs `pods[i]` (revision, ready).
fn rolling(pods: [(&str, bool); 3]) -> (RecipeStore, ApiState) {
    let rs = with_cluster(recipestore(3));
    let state = ApiState {
        statefulset: Some(rolling_statefulset(&rs)),
        pods: (0..3)
            .zip(pods)
            .map(|(id, (revision, ready))| rolled_pod(id, revision, ready))
            .collect(),
    };
    (rs, state)
}

/// The StatefulSet after its template changed: pods are rolled onto `r2`.
fn rolling_statefulset(rs: &RecipeStore) -> StatefulSet {
    let mut sts = statefulset(rs, 3);
    let status = sts.status.as_mut().unwrap();
    status.current_revision = Some("r1".to_owned());
    status.update_revision = Some("r2".to_owned());
    sts
}

#[tokio::test]
async fn a_new_revision_is_rolled_one_follower_at_a_time_and_the_leader_last() {
    // Every pod on r1, node 0 leads: the highest follower goes first.
    let (rs, state) = rolling([("r1", true), ("r1", true), ("r1", true)]);
    let expected = rs.clone();
    let (result, calls) = reconcile_with(
        rs,
        FakeAdmin::new(cluster(&[0, 1, 2], &[], &[])),
        move |mut api| async move {
            api.dereference(&state).await;
            let applied = api.apply_children(false).await;
            assert_eq!(
                applied.statefulset["spec"]["updateStrategy"]["type"], "OnDelete",
                "the operator, not the StatefulSet controller, rolls the pods"
            );
            api.expect(
                "restart the highest follower",
                Method::DELETE,
                &format!("/api/v1/namespaces/{NS}/pods/{NAME}-2"),
                Reply::Json(serde_json::to_value(pod(2)).unwrap()),
            )
            .await;
            let event = api.event("RestartMember", "Normal").await;
            assert_eq!(
                event["note"],
                "restarting node 2 to update it to revision r2"
            );
            let status = api.status(&expected).await;
            assert_eq!(status.phase, Phase::Updating);
            assert_eq!(status.rolling_member, Some(2));
            assert_eq!(status.updated_members, 0);
            assert_eq!(status.update_revision.as_deref(), Some("r2"));
            assert_eq!(status.current_revision.as_deref(), Some("r1"));
            assert_eq!(condition(&status, "Progressing"), ("True", "RestartMember"));
            api
        },
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
    assert!(calls.is_empty(), "{calls:?}");

    // Its replacement runs r2 but is not ready yet, nor caught up: the roll
    // holds and says so.
    let (rs, state) = rolling([("r1", true), ("r1", true), ("r2", false)]);
    let expected = rs.clone();
    let mut nodes = cluster(&[0, 1, 2], &[], &[]);
    let leader = nodes.get_mut(&member(0).peer_addr).unwrap();
    leader.matched_index.remove(&2);
    let (result, calls) = reconcile_with(rs, FakeAdmin::new(nodes), move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        let event = api.event("RollHeld", "Normal").await;
        assert_eq!(
            event["note"],
            "rolling upgrade held: waiting for node 2, restarted on the new revision, to be ready"
        );
        let status = api.status(&expected).await;
        assert_eq!(condition(&status, "Progressing"), ("True", "RollHeld"));
        assert_eq!(condition(&status, "Degraded"), ("True", "MembersLagging"));
        assert_eq!(status.phase, Phase::Updating);
        assert_eq!(status.rolling_member, Some(2));
        assert_eq!(status.updated_members, 1);
        api
    })
    .await;
    result.unwrap();
    assert!(
        calls.is_empty(),
        "nothing restarts past a member not back: {calls:?}"
    );

    // Followers done: leadership moves before the leader's pod is touched.
    let (rs, state) = rolling([("r1", true), ("r2", true), ("r2", true)]);
    let expected = rs.clone();
    let (result, calls) = reconcile_with(
        rs,
        FakeAdmin::new(cluster(&[0, 1, 2], &[], &[])),
        move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(false).await;
            api.event("TransferLeadership", "Normal").await;
            let status = api.status(&expected).await;
            assert_eq!(status.rolling_member, Some(0));
            assert_eq!(status.updated_members, 2);
            api
        },
    )
    .await;
    result.unwrap();
    assert_eq!(
        calls,
        [format!("TransferLeadership {} 1", member(0).peer_addr)]
    );
}

#[tokio::test]
async fn a_roll_holds_while_a_member_sheds() {
    let (rs, state) = rolling([("r1", true), ("r1", true), ("r1", true)]);
    let mut nodes = cluster(&[0, 1, 2], &[], &[]);
    let busy = nodes.get_mut(&member(1).peer_addr).unwrap();
    busy.recent_shed = 300;
    busy.recent_admitted = 700;
    busy.recent_seconds = 10;
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::new(nodes), move |mut api| async move {
        api.dereference(&state).await;
        api.apply_children(false).await;
        let event = api.event("RollHeld", "Normal").await;
        assert_eq!(
            event["note"],
            "rolling upgrade held: node 1 shed 300 of 1000 client requests in the last 10 s"
        );
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Updating);
        api
    })
    .await;
    result.unwrap();
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn a_pod_already_gone_counts_as_restarted() {
    let (rs, state) = rolling([("r1", true), ("r1", true), ("r1", true)]);
    let expected = rs.clone();
    let (result, _) = reconcile_with(
        rs,
        FakeAdmin::new(cluster(&[0, 1, 2], &[], &[])),
        move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(false).await;
            api.expect(
                "restart the highest follower",
                Method::DELETE,
                &format!("/api/v1/namespaces/{NS}/pods/{NAME}-2"),
                Reply::NotFound,
            )
            .await;
            api.event("RestartMember", "Normal").await;
            api.status(&expected).await;
            api
        },
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
}

fn backup_spec(schedule: &str) -> crate::crd::BackupSpec {
    crate::crd::BackupSpec {
        schedule: schedule.to_owned(),
        retain: 7,
        claim_name: Some("cookbook-backups".to_owned()),
        s3: None,
        suspend: false,
    }
}

#[test]
fn validate_accepts_cron_schedules_and_macros() {
    for schedule in ["0 */6 * * *", "30 2 * * MON-FRI", "@hourly"] {
        let mut spec = recipestore(3).spec;
        spec.backup = Some(backup_spec(schedule));
        assert_eq!(validate(&spec, None), Ok(()), "{schedule}");
    }
}

#[tokio::test]
async fn scheduled_backups_are_a_cronjob_whose_outcome_shows_on_the_store() {
    let mut rs = with_cluster(recipestore(3));
    rs.spec.backup = Some(backup_spec("0 */6 * * *"));
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let registry = prometheus::Registry::new();
    let (result, _) = reconcile_in_registry(
        rs,
        FakeAdmin::new(cluster(&[0, 1, 2], &[], &[])),
        &registry,
        move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(false).await;
            let (seen, send) = api.next("apply the backup CronJob").await;
            assert_eq!(seen.method, Method::PATCH);
            assert_eq!(
                seen.path,
                format!("/apis/batch/v1/namespaces/{NS}/cronjobs/{NAME}-backup")
            );
            assert_server_side_apply(&seen);
            assert_eq!(seen.body["spec"]["schedule"], "0 */6 * * *");
            let mut applied = seen.body.clone();
            applied["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
            applied["status"] = json!({
                "lastScheduleTime": "2026-12-06T06:00:00Z",
                "lastSuccessfulTime": "2026-12-06T06:00:41Z",
            });
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&applied).unwrap()))
                    .unwrap(),
            );
            let event = api.event("BackupSucceeded", "Normal").await;
            assert_eq!(
                event["note"],
                "a scheduled backup succeeded at 2026-12-06T06:00:41Z"
            );
            let status = api.status(&expected).await;
            let backup = status.backup.expect("backup status");
            assert_eq!(
                backup.last_successful_time.unwrap().0.to_string(),
                "2026-12-06T06:00:41Z"
            );
            api
        },
    )
    .await;
    result.unwrap();
    let gauge = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "recipestore_operator_backup_last_success_timestamp_seconds")
        .expect("the backup gauge");
    let succeeded: Timestamp = "2026-12-06T06:00:41Z".parse().unwrap();
    assert_eq!(
        gauge.get_metric()[0].get_gauge().get_value(),
        succeeded.as_second() as f64
    );

    // Backups turned off: the CronJob goes (already gone is fine too).
    let mut rs = with_cluster(recipestore(3));
    rs.status.as_mut().unwrap().backup = Some(crate::crd::BackupStatus::default());
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let (result, _) = reconcile_with(
        rs,
        FakeAdmin::new(cluster(&[0, 1, 2], &[], &[])),
        move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(false).await;
            api.expect(
                "delete the backup CronJob",
                Method::DELETE,
                &format!("/apis/batch/v1/namespaces/{NS}/cronjobs/{NAME}-backup"),
                Reply::NotFound,
            )
            .await;
            let status = api.status(&expected).await;
            assert_eq!(status.backup, None);
            api
        },
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn a_store_created_from_a_backup_records_its_members_and_never_initializes() {
    let mut rs = recipestore(3);
    rs.spec.restore_from = Some(crate::crd::RestoreSpec {
        claim_name: Some("cookbook-backups".to_owned()),
        s3: None,
        file: "backup-20261206T060000.000Z.rsback".to_owned(),
    });
    // Pods still in their init containers (restoring) answer nothing.
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![],
    };
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference(&state).await;
        let sts = api.apply_children(false).await.statefulset;
        let init = &sts["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(init["name"], "restore");
        let status = api.status(&expected).await;
        assert_eq!(status.restored_members, Some(3));
        api
    })
    .await;
    result.unwrap();
    assert!(calls.is_empty(), "{calls:?}");

    // Restored members elect a leader in the cluster the store's uid
    // names; the operator adopts it.
    let mut rs = recipestore(3);
    rs.spec.restore_from = Some(crate::crd::RestoreSpec {
        claim_name: Some("cookbook-backups".to_owned()),
        s3: None,
        file: "backup-20261206T060000.000Z.rsback".to_owned(),
    });
    rs.status = Some(RecipeStoreStatus {
        restored_members: Some(3),
        ..RecipeStoreStatus::default()
    });
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    let expected = rs.clone();
    let (result, calls) = reconcile_with(
        rs,
        FakeAdmin::new(cluster(&[0, 1, 2], &[], &[])),
        move |mut api| async move {
            api.dereference(&state).await;
            api.apply_children(false).await;
            let status = api.status(&expected).await;
            assert_eq!(status.cluster_id.as_deref(), Some(CLUSTER));
            assert_eq!(status.restored_members, Some(3));
            assert_eq!(status.phase, Phase::Running);
            api
        },
    )
    .await;
    result.unwrap();
    assert!(calls.is_empty(), "no Initialize: {calls:?}");
}

#[test]
fn a_backup_success_is_told_once() {
    let at: Timestamp = "2026-12-06T06:00:41Z".parse().unwrap();
    let cronjob = CronJob {
        status: Some(k8s_openapi::api::batch::v1::CronJobStatus {
            last_successful_time: Some(Time(at)),
            ..Default::default()
        }),
        ..CronJob::default()
    };
    let mut rs = with_cluster(recipestore(3));
    assert_eq!(newly_succeeded(&rs, Some(&cronjob)), Some(Time(at)));
    rs.status.as_mut().unwrap().backup = Some(crate::crd::BackupStatus {
        last_successful_time: Some(Time(at)),
        ..Default::default()
    });
    assert_eq!(newly_succeeded(&rs, Some(&cronjob)), None);
    assert_eq!(newly_succeeded(&rs, None), None);
}

proptest::proptest! {
    /// A spec from anyone with edit rights on the resource: refused with a
    /// message, or accepted and then built into objects, never a panic.
    #[test]
    fn any_spec_is_refused_with_a_message_or_builds(
        replicas in -2i32..12,
        image in "[ -~]{0,12}",
        heartbeat in 0u64..3_000,
        election_min in 0u64..6_000,
        election_max in 0u64..6_000,
        queue in 0u32..5_000,
        workers_min in 0u32..300,
        workers_max in 0u32..300,
        cache_mib in 0u32..100_000,
        schedule in proptest::option::of("[ -~]{0,24}"),
        retain in 0u32..5,
        restore_file in proptest::option::of("[ -~]{0,16}"),
    ) {
        let mut rs = recipestore(3);
        let spec = &mut rs.spec;
        spec.replicas = replicas;
        spec.image = image;
        spec.raft.heartbeat_interval_ms = heartbeat;
        spec.raft.election_timeout_min_ms = election_min;
        spec.raft.election_timeout_max_ms = election_max;
        spec.queues.download_capacity = queue;
        spec.queues.download_workers_min = workers_min;
        spec.queues.download_workers_max = workers_max;
        spec.cache.size_mib = cache_mib;
        spec.backup = schedule.map(|schedule| crate::crd::BackupSpec {
            retain,
            ..backup_spec(&schedule)
        });
        spec.restore_from = restore_file.map(|file| crate::crd::RestoreSpec {
            claim_name: Some("cookbook-backups".to_owned()),
            s3: None,
            file,
        });
        let valid = validate(&rs.spec, None).and_then(|()| build::restore::check(&rs));
        match valid {
            Err(problem) => proptest::prop_assert!(!problem.is_empty()),
            Ok(()) => {
                let replicas = u32::try_from(rs.spec.replicas).unwrap();
                let built = build::build(&rs, &[replicas], None, None, None);
                proptest::prop_assert!(built.is_ok(), "{:?}", built.err());
            }
        }
    }
}

#[tokio::test]
async fn shedding_settings_are_reloaded_on_running_nodes_without_a_roll() {
    let mut rs = with_cluster(recipestore(3));
    rs.spec.shedding.download_thresholds = "99:0.5".parse().unwrap();
    let state = ApiState {
        statefulset: Some(statefulset(&rs, 3)),
        pods: vec![pod(0), pod(1), pod(2)],
    };
    // Node 1 runs the new settings already; node 2 is too old to say.
    let mut nodes = cluster(&[0, 1, 2], &[], &[]);
    let running = recipestore_settings::Shedding::default();
    for id in [0, 1] {
        nodes.get_mut(&member(id).peer_addr).unwrap().shedding = Some(running.clone());
    }
    nodes.get_mut(&member(1).peer_addr).unwrap().shedding = Some(rs.spec.shedding.clone());
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::new(nodes), move |mut api| async move {
        api.dereference(&state).await;
        let applied = api.apply_children(false).await;
        assert_eq!(
            applied.config_map["data"]["RECIPESTORE_SHED_DOWNLOAD_TIERS"], "99:0.50",
            "pods started later read them too"
        );
        let event = api.event("Reconfigured", "Normal").await;
        assert_eq!(
            event["note"],
            "shedding settings reloaded on [\"recipes-0\"], without a restart"
        );
        api.status(&expected).await;
        api
    })
    .await;
    result.unwrap();
    assert_eq!(
        calls,
        [format!("Reconfigure {} 99:0.50", member(0).peer_addr)]
    );
}

#[test]
fn the_chart_grants_what_reconciles_call_and_no_more_than_it_says() {
    assert_granted(
        &Method::PATCH,
        &format!("/apis/recipestore.dev/v1alpha1/namespaces/{NS}/recipestores/{NAME}/status"),
        "",
    );
    assert_granted(
        &Method::GET,
        &format!("/apis/batch/v1/namespaces/{NS}/cronjobs"),
        "watch=true",
    );
    for (method, path) in [
        // Secrets are read one by one, by name: listing them all is not needed.
        (Method::GET, format!("/api/v1/namespaces/{NS}/secrets")),
        (
            Method::DELETE,
            format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/data-{NAME}-0"),
        ),
        (
            Method::DELETE,
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"),
        ),
    ] {
        let refused = std::panic::catch_unwind(|| assert_granted(&method, &path, ""));
        assert!(refused.is_err(), "{method} {path} is not granted");
    }
}

// ---------- shards ----------

/// A store of `shards` shards of `replicas` each.
fn sharded(replicas: i32, shards: i32) -> RecipeStore {
    let mut rs = recipestore(replicas);
    rs.spec.shards = shards;
    rs
}

/// Shard `k`'s pod `ordinal`, marked serving or not.
fn shard_pod(k: u16, ordinal: NodeId, serving: bool) -> Pod {
    let mut pod = pod(ordinal);
    pod.metadata.name = Some(topology().shard(k).pod(ordinal));
    if serving {
        pod.metadata.labels = Some(BTreeMap::from([(
            SERVING_LABEL.to_owned(),
            "true".to_owned(),
        )]));
    }
    pod
}

/// Shard `k`'s StatefulSet as a store of `shards` shards builds it, with
/// every pod ready.
fn shard_statefulset(rs: &RecipeStore, k: u16, shards: usize, replicas: u32) -> StatefulSet {
    let mut sts = build::build(rs, &vec![replicas; shards], None, None, None)
        .expect("builds")
        .shards
        .swap_remove(usize::from(k))
        .statefulset;
    let replicas = i32::try_from(replicas).unwrap();
    sts.status = Some(StatefulSetStatus {
        replicas,
        ready_replicas: Some(replicas),
        ..StatefulSetStatus::default()
    });
    sts
}

/// Every shard's nodes: shard `k` a cluster of `voters`, its leader
/// holding `placements[k]`.
fn shard_clusters(
    voters: &[NodeId],
    placements: &[Option<crate::placement::GroupPlacement>],
) -> BTreeMap<String, NodeStatus> {
    let mut nodes = BTreeMap::new();
    for (k, placement) in placements.iter().enumerate() {
        let shard = topology().shard(u16::try_from(k).unwrap());
        let mut cluster = cluster_of(&shard, voters, &[], &[]);
        for node in cluster.values_mut() {
            node.placement = placement.clone();
        }
        nodes.extend(cluster);
    }
    nodes
}

/// Shard `k`'s group placed in the even split of `shards` at epoch 1,
/// every shard reached at its pods 0 to 2.
fn placed(k: u16, shards: u16) -> Option<crate::placement::GroupPlacement> {
    Some(crate::placement::GroupPlacement {
        shard: k,
        epoch: 1,
        owners: crate::placement::SlotMap::even(shards, Some(1)).owners,
        shards: (0..shards)
            .map(|s| {
                let shard = topology().shard(s);
                (s, (0..3).map(|i| shard.member(i).client_addr).collect())
            })
            .collect(),
        releasing: 0,
    })
}

/// The status of a store whose shards' groups are initialized: shard 0's
/// cluster on top, every shard listed when `listed`.
fn with_shard_clusters(mut rs: RecipeStore, listed: u16) -> RecipeStore {
    let shards = if listed > 1 {
        (0..listed)
            .map(|k| crate::crd::ShardStatus {
                shard: k,
                stateful_set: topology().shard(k).statefulset().to_owned(),
                cluster_id: Some(CLUSTER.to_owned()),
                ..crate::crd::ShardStatus::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    rs.status = Some(RecipeStoreStatus {
        cluster_id: Some(CLUSTER.to_owned()),
        shards,
        ..RecipeStoreStatus::default()
    });
    rs
}

/// What the mocked API server holds of each shard.
fn shard_states(rs: &RecipeStore, shards: usize, replicas: u32, serving: &[bool]) -> Vec<ApiState> {
    (0..shards)
        .map(|k| {
            let k16 = u16::try_from(k).unwrap();
            ApiState {
                statefulset: Some(shard_statefulset(rs, k16, shards, replicas)),
                pods: (0..u64::from(replicas))
                    .map(|i| shard_pod(k16, i, serving.get(k).copied().unwrap_or(false)))
                    .collect(),
            }
        })
        .collect()
}

impl ApiServerVerifier {
    /// Each shard's StatefulSet and pods, in shard order.
    async fn dereference_shards(&mut self, states: &[ApiState]) {
        for (k, state) in states.iter().enumerate() {
            let shard = topology().shard(u16::try_from(k).unwrap());
            let sts = match &state.statefulset {
                Some(s) => Reply::Json(serde_json::to_value(s).unwrap()),
                None => Reply::NotFound,
            };
            self.expect(
                &format!("get shard {k}'s StatefulSet"),
                Method::GET,
                &format!(
                    "/apis/apps/v1/namespaces/{NS}/statefulsets/{}",
                    shard.statefulset()
                ),
                sts,
            )
            .await;
            let pods =
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": state.pods});
            let seen = self
                .expect(
                    &format!("list shard {k}'s pods"),
                    Method::GET,
                    &format!("/api/v1/namespaces/{NS}/pods"),
                    Reply::Json(pods),
                )
                .await;
            let selector: String =
                form_urlencoded::byte_serialize(shard.selector_string().as_bytes()).collect();
            assert!(
                seen.query.contains(&format!("labelSelector={selector}")),
                "shard {k}'s pods are listed by its own selector: {}",
                seen.query
            );
        }
    }

    /// A merge patch of `pod`'s serving label to `value` (null: removed).
    async fn mark(&mut self, pod: &str, value: Value) {
        let seen = self
            .expect(
                &format!("label pod {pod}"),
                Method::PATCH,
                &format!("/api/v1/namespaces/{NS}/pods/{pod}"),
                Reply::Echo,
            )
            .await;
        assert_eq!(
            seen.body,
            json!({"metadata": {"labels": {SERVING_LABEL: value}}}),
            "{pod}"
        );
    }

    /// The ConfigMap, then `marks` (pod, label value), then each of
    /// `shards` shards' peer Service, PDB and StatefulSet, the client
    /// Service after shard 0's peer Service. Returns the objects applied
    /// by name.
    async fn apply_shards(
        &mut self,
        shards: u16,
        marks: &[(String, Value)],
    ) -> BTreeMap<String, Value> {
        let mut applied = BTreeMap::new();
        let config = self
            .expect(
                "apply ConfigMap",
                Method::PATCH,
                &format!("/api/v1/namespaces/{NS}/configmaps/{NAME}-config"),
                Reply::Echo,
            )
            .await;
        applied.insert("configmap".to_owned(), config.body);
        for (pod, value) in marks {
            self.mark(pod, value.clone()).await;
        }
        for k in 0..shards {
            let shard = topology().shard(k);
            let mut objects = vec![(
                format!("service/{}", shard.peer_service()),
                format!("/api/v1/namespaces/{NS}/services/{}", shard.peer_service()),
            )];
            if k == 0 {
                objects.push((
                    format!("service/{NAME}"),
                    format!("/api/v1/namespaces/{NS}/services/{NAME}"),
                ));
            }
            objects.push((
                format!("pdb/{}", shard.statefulset()),
                format!(
                    "/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{}",
                    shard.statefulset()
                ),
            ));
            objects.push((
                format!("statefulset/{}", shard.statefulset()),
                format!(
                    "/apis/apps/v1/namespaces/{NS}/statefulsets/{}",
                    shard.statefulset()
                ),
            ));
            for (what, path) in objects {
                let seen = self
                    .expect(&format!("apply {what}"), Method::PATCH, &path, Reply::Echo)
                    .await;
                assert_server_side_apply(&seen);
                applied.insert(what, seen.body);
            }
        }
        applied
    }
}

/// Whether `selector` (a `matchLabels`) selects a pod labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[tokio::test]
async fn a_new_store_of_three_shards_gets_three_groups_of_objects_and_one_client_service() {
    let rs = sharded(3, 3);
    let states: Vec<ApiState> = (0..3).map(|_| ApiState::default()).collect();
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference_shards(&states).await;
        let applied = api.apply_shards(3, &[]).await;
        let names: Vec<&str> = applied.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "configmap",
                "pdb/recipes",
                "pdb/recipes-s1",
                "pdb/recipes-s2",
                "service/recipes",
                "service/recipes-peers",
                "service/recipes-s1-peers",
                "service/recipes-s2-peers",
                "statefulset/recipes",
                "statefulset/recipes-s1",
                "statefulset/recipes-s2",
            ]
        );
        // No StatefulSet or PDB selects another shard's pods.
        let owners = ["recipes", "recipes-s1", "recipes-s2"];
        for a in owners {
            let sts = &applied[&format!("statefulset/{a}")];
            let pdb = &applied[&format!("pdb/{a}")];
            assert_eq!(sts["spec"]["replicas"], 3);
            assert_eq!(sts["spec"]["serviceName"], format!("{a}-peers"));
            for b in owners {
                let pods =
                    &applied[&format!("statefulset/{b}")]["spec"]["template"]["metadata"]["labels"];
                for selector in [
                    &sts["spec"]["selector"]["matchLabels"],
                    &pdb["spec"]["selector"]["matchLabels"],
                ] {
                    assert_eq!(selects(selector, pods), a == b, "{a} selecting {b}'s pods");
                }
                let peers = &applied[&format!("service/{a}-peers")]["spec"]["selector"];
                assert_eq!(
                    selects(peers, pods),
                    a == b,
                    "{a}-peers selecting {b}'s pods"
                );
            }
        }
        // One client Service, for the pods the operator marks serving.
        assert_eq!(
            applied["service/recipes"]["spec"]["selector"],
            json!({"app.kubernetes.io/instance": NAME, SERVING_LABEL: "true"})
        );
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Pending);
        let listed: Vec<(u16, &str)> = status
            .shards
            .iter()
            .map(|s| (s.shard, s.stateful_set.as_str()))
            .collect();
        assert_eq!(
            listed,
            [(0, "recipes"), (1, "recipes-s1"), (2, "recipes-s2")]
        );
        let placement = status.placement.as_ref().expect("placement status");
        assert!(placement.current.is_empty(), "nothing is served yet");
        let target: Vec<(u16, &str)> = placement
            .target
            .iter()
            .map(|t| (t.shard, t.ranges.as_str()))
            .collect();
        assert_eq!(target, [(0, "0-341"), (1, "342-682"), (2, "683-1023")]);
        assert_eq!(
            condition(&status, "SlotsPending"),
            ("True", "WaitingToPlace")
        );
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn each_shard_is_initialized_on_its_own_first_pod() {
    let rs = sharded(3, 3);
    let states = shard_states(&rs, 3, 3, &[]);
    let expected = rs.clone();
    let mut nodes = BTreeMap::new();
    for k in 0..3 {
        nodes.extend(cluster_of(&topology().shard(k), &[], &[], &[0, 1, 2]));
    }
    let (result, calls) = reconcile_with(rs, FakeAdmin::new(nodes), move |mut api| async move {
        api.dereference_shards(&states).await;
        api.apply_shards(3, &[]).await;
        api.event("Initialize", "Normal").await;
        let shard1 = api.event("Initialize", "Normal").await;
        assert!(
            shard1["note"].as_str().unwrap().starts_with("shard 1: "),
            "{shard1}"
        );
        api.event("Initialize", "Normal").await;
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Initializing);
        assert_eq!(status.shards.len(), 3);
        api
    })
    .await;
    result.unwrap();
    assert_eq!(
        calls,
        [
            "Initialize recipes-0.recipes-peers.kitchen.svc:7071 [0]",
            "Initialize recipes-s1-0.recipes-s1-peers.kitchen.svc:7071 [0]",
            "Initialize recipes-s2-0.recipes-s2-peers.kitchen.svc:7071 [0]",
        ]
    );
}

#[tokio::test]
async fn a_new_store_is_placed_once_every_shard_s_group_is_led() {
    let rs = with_shard_clusters(sharded(3, 3), 3);
    let states = shard_states(&rs, 3, 3, &[]);
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(&[0, 1, 2], &[None, None, None]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        api.apply_shards(3, &[]).await;
        for k in 0..3 {
            let placed = api.event("Placed", "Normal").await;
            assert!(
                placed["note"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("shard {k} placed at epoch 1")),
                "{placed}"
            );
        }
        let status = api.status(&expected).await;
        assert_eq!(condition(&status, "SlotsPending"), ("True", "Placing"));
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
    assert_eq!(
        calls,
        [
            "Place recipes-0.recipes-peers.kitchen.svc:7071 shard 0 epoch 1 slots 342 shards 3",
            "Place recipes-s1-0.recipes-s1-peers.kitchen.svc:7071 shard 1 epoch 1 slots 341 shards 3",
            "Place recipes-s2-0.recipes-s2-peers.kitchen.svc:7071 shard 2 epoch 1 slots 341 shards 3",
        ]
    );
}

#[tokio::test]
async fn a_placed_store_is_not_placed_again_and_its_pods_serve() {
    let rs = with_shard_clusters(sharded(3, 3), 3);
    // Shard 0's pods were marked on an earlier pass; the others not yet.
    let states = shard_states(&rs, 3, 3, &[true, false, false]);
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(
        &[0, 1, 2],
        &[placed(0, 3), placed(1, 3), placed(2, 3)],
    ));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        let marks: Vec<(String, Value)> = (1..3)
            .flat_map(|k| (0..3).map(move |i| (topology().shard(k).pod(i), json!("true"))))
            .collect();
        api.apply_shards(3, &marks).await;
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Running);
        assert_eq!(condition(&status, "SlotsPending"), ("False", "Placed"));
        let placement = status.placement.as_ref().unwrap();
        assert_eq!((placement.epoch, placement.slots_to_move), (Some(1), 0));
        let shards: Vec<String> = status
            .shards
            .iter()
            .map(|s| {
                let leader = s.leader.as_deref().unwrap_or("none");
                let epoch = s.placement_epoch.unwrap_or(0);
                format!(
                    "{} {leader} {} voters {} slots epoch {epoch}",
                    s.shard, s.voters, s.slots
                )
            })
            .collect();
        assert_eq!(
            shards,
            [
                "0 recipes-0 3 voters 342 slots epoch 1",
                "1 recipes-s1-0 3 voters 341 slots epoch 1",
                "2 recipes-s2-0 3 voters 341 slots epoch 1",
            ]
        );
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_STEADY));
    assert!(
        calls.is_empty(),
        "a placed group is not placed again: {calls:?}"
    );
}

#[tokio::test]
async fn replicas_scale_every_shard() {
    let rs = with_shard_clusters(sharded(5, 2), 2);
    let mut states = shard_states(&rs, 2, 3, &[true, true]);
    for (k, state) in states.iter_mut().enumerate() {
        // The StatefulSets still have 3 pods.
        let k = u16::try_from(k).unwrap();
        state.statefulset = Some(shard_statefulset(&rs, k, 2, 3));
    }
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(&[0, 1, 2], &[placed(0, 2), placed(1, 2)]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        let applied = api.apply_shards(2, &[]).await;
        assert_eq!(applied["statefulset/recipes"]["spec"]["replicas"], 5);
        assert_eq!(applied["statefulset/recipes-s1"]["spec"]["replicas"], 5);
        let status = api.status(&expected).await;
        assert_eq!(status.phase, Phase::Scaling);
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_CHANGING));
    assert!(calls.is_empty(), "no pod to add yet: {calls:?}");
}

/// 1 → 2 → 3 → 2 shards on a store that ran unsharded: the added shards'
/// objects appear and their groups start, nothing is placed (the slots
/// would have to move first), nothing is deleted, and the pending move is
/// a condition and an Event.
#[tokio::test]
async fn shards_one_two_three_two_add_objects_delete_nothing_and_report_the_pending_move() {
    // 1 → 2: shard 0 is the unsharded store; shard 1 does not exist yet.
    let unsharded = with_cluster(recipestore(3));
    let rs = {
        let mut rs = unsharded.clone();
        rs.spec.shards = 2;
        rs
    };
    let mut states = shard_states(&unsharded, 1, 3, &[false]);
    states.push(ApiState::default());
    let unsharded_statefulset =
        serde_json::to_value(&states[0].statefulset.as_ref().unwrap().spec).unwrap();
    let expected = rs.clone();
    let admin = FakeAdmin::new(cluster(&[0, 1, 2], &[], &[]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        // Shard 0 serves every slot: its pods are marked before the client
        // Service selects by the mark.
        let marks: Vec<(String, Value)> =
            (0..3).map(|i| (topology().pod(i), json!("true"))).collect();
        let applied = api.apply_shards(2, &marks).await;
        assert_eq!(
            applied["statefulset/recipes"]["spec"], unsharded_statefulset,
            "shard 0's StatefulSet is the unsharded store's, unchanged"
        );
        assert_eq!(applied["statefulset/recipes-s1"]["spec"]["replicas"], 3);
        let event = api.event(status::SLOT_MOVE_PENDING, "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("512 of 1024 slots must move from shard(s) [0] to shard(s) [1]"),
            "{event}"
        );
        let status = api.status(&expected).await;
        assert_eq!(
            condition(&status, "SlotsPending"),
            ("True", "SlotMovePending")
        );
        let placement = status.placement.as_ref().unwrap();
        assert_eq!(placement.epoch, None);
        assert_eq!(placement.current.len(), 1);
        assert_eq!(
            (placement.current[0].shard, placement.current[0].slots),
            (0, 1024)
        );
        assert_eq!(placement.slots_to_move, 512);
        assert_eq!(status.shards.len(), 2);
        api
    })
    .await;
    // Slots move once shard 1 has a leader: the next pass comes soon.
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_MOVING));
    assert!(calls.is_empty(), "nothing is placed: {calls:?}");

    // 2 → 3, the status of the pass before recorded: shard 0 still serves
    // everything, shard 1 runs its own group, shard 2 is created.
    let mut rs = with_shard_clusters(sharded(3, 3), 2);
    rs.status.as_mut().unwrap().placement = Some(crate::crd::PlacementStatus {
        epoch: None,
        current: vec![crate::crd::SlotRanges {
            shard: 0,
            slots: 1024,
            ranges: "0-1023".to_owned(),
        }],
        ..crate::crd::PlacementStatus::default()
    });
    let mut states = shard_states(&rs, 2, 3, &[true, false]);
    states.push(ApiState::default());
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(&[0, 1, 2], &[None, None]));
    let (result, calls) = reconcile_with(rs.clone(), admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        let applied = api.apply_shards(3, &[]).await;
        assert!(applied.contains_key("statefulset/recipes-s2"));
        let event = api.event(status::SLOT_MOVE_PENDING, "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("682 of 1024 slots must move from shard(s) [0] to shard(s) [1, 2]"),
            "{event}"
        );
        let status = api.status(&expected).await;
        assert_eq!(status.placement.as_ref().unwrap().slots_to_move, 682);
        api
    })
    .await;
    result.unwrap();
    assert!(calls.is_empty(), "nothing is placed: {calls:?}");

    // 3 → 2: the third shard keeps its objects (no DELETE is made: the
    // verifier fails on any request it does not expect), and, its pending
    // move told already, no Event repeats it.
    rs.spec.shards = 2;
    let told = crate::placement::PendingMove {
        target: 2,
        moves: recipestore_protocol::slots::rebalance(&[0; 1024], 2),
    };
    rs.status
        .as_mut()
        .unwrap()
        .shards
        .push(crate::crd::ShardStatus {
            shard: 2,
            stateful_set: "recipes-s2".to_owned(),
            cluster_id: Some(CLUSTER.to_owned()),
            ..crate::crd::ShardStatus::default()
        });
    rs.status.as_mut().unwrap().conditions.push(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: status::SLOTS_PENDING.to_owned(),
            status: "True".to_owned(),
            reason: status::SLOT_MOVE_PENDING.to_owned(),
            message: told.to_string(),
            observed_generation: Some(1),
            last_transition_time: now(),
        },
    );
    let states = shard_states(&rs, 3, 3, &[true, false, false]);
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(&[0, 1, 2], &[None, None, None]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        let applied = api.apply_shards(3, &[]).await;
        assert_eq!(applied["statefulset/recipes-s2"]["spec"]["replicas"], 3);
        let status = api.status(&expected).await;
        assert_eq!(
            condition(&status, "SlotsPending"),
            ("True", "SlotMovePending")
        );
        assert_eq!(status.shards.len(), 3, "the third shard is still listed");
        api
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(REQUEUE_MOVING));
    assert_eq!(calls, ["ReshardStep to 2 over shards [0, 1, 2]"]);
}

#[tokio::test]
async fn a_shrunk_placed_store_keeps_the_shard_that_owns_slots() {
    let mut rs = with_shard_clusters(sharded(3, 3), 3);
    rs.spec.shards = 2;
    let states = shard_states(&rs, 3, 3, &[true, true, true]);
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(
        &[0, 1, 2],
        &[placed(0, 3), placed(1, 3), placed(2, 3)],
    ));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        // Shard 2 serves its slots: its pods stay marked, its objects stay.
        let applied = api.apply_shards(3, &[]).await;
        assert_eq!(applied["statefulset/recipes-s2"]["spec"]["replicas"], 3);
        let event = api.event(status::SLOT_MOVE_PENDING, "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("from shard(s) [2]"),
            "{event}"
        );
        let status = api.status(&expected).await;
        let current: Vec<u32> = status
            .placement
            .as_ref()
            .unwrap()
            .current
            .iter()
            .map(|c| c.slots)
            .collect();
        assert_eq!(current, [342, 341, 341]);
        api
    })
    .await;
    result.unwrap();
    // One step of moving shard 2's slots away, every shard given.
    assert_eq!(calls, ["ReshardStep to 2 over shards [0, 1, 2]"]);
}

#[tokio::test]
async fn a_shard_name_held_by_another_store_is_refused() {
    let rs = sharded(3, 2);
    let other = {
        let mut other = recipestore(3);
        other.metadata.name = Some("recipes-s1".to_owned());
        other.metadata.uid = Some("another-uid".to_owned());
        other
    };
    let mut states = vec![ApiState::default(), ApiState::default()];
    let mut taken = statefulset(&other, 3);
    taken.metadata.name = Some("recipes-s1".to_owned());
    states[1].statefulset = Some(taken);
    let expected = rs.clone();
    let (result, calls) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.dereference_shards(&states).await;
        let event = api.event("InvalidSpec", "Warning").await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("the StatefulSet recipes-s1 that shard 1 would be has another owner (RecipeStore recipes-s1)"),
            "{event}"
        );
        api.status(&expected).await;
        api
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidSpec(_))));
    assert!(calls.is_empty());
}

#[test]
fn validate_refuses_what_a_sharded_store_cannot_do_yet() {
    let world = |shards: u16| World {
        shards: (0..shards)
            .map(|k| ShardWorld {
                topology: topology().shard(k),
                statefulset: None,
                membership: Observed::default(),
                serving_pods: BTreeMap::new(),
            })
            .collect(),
        service_monitor: None,
        tls: Ok(None),
        tls_secrets: tls::Secrets::default(),
        admin: Arc::new(FakeAdmin::default()),
    };
    let mut rs = sharded(3, 2);
    assert_eq!(validate_shards(&rs, &world(2)), Ok(()));
    rs.spec.backup = Some(backup_spec("@daily"));
    assert!(
        validate_shards(&rs, &world(2))
            .unwrap_err()
            .starts_with("backup is not supported on a store of several shards")
    );
    // Shrunk back to one, a store still has its other shards.
    rs.spec.shards = 1;
    assert!(validate_shards(&rs, &world(2)).is_err());
    assert_eq!(validate_shards(&rs, &world(1)), Ok(()));
    rs.spec.shards = 0;
    assert!(
        validate_shards(&rs, &world(1))
            .unwrap_err()
            .starts_with("shards must be 1 to 1024")
    );
}

#[tokio::test]
async fn new_voters_are_placed_again_at_the_next_epoch() {
    // Scaled out to 4: every shard's fourth pod has become a voter, and
    // the placements still reach the shards at their first three.
    let rs = with_shard_clusters(sharded(4, 2), 2);
    let states = shard_states(&rs, 2, 4, &[true, true]);
    let expected = rs.clone();
    let admin = FakeAdmin::new(shard_clusters(&[0, 1, 2, 3], &[placed(0, 2), placed(1, 2)]));
    let (result, calls) = reconcile_with(rs, admin, move |mut api| async move {
        api.dereference_shards(&states).await;
        api.apply_shards(2, &[]).await;
        for k in 0..2 {
            let event = api.event("Placed", "Normal").await;
            assert!(
                event["note"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("shard {k} placed at epoch 2")),
                "{event}"
            );
        }
        api.status(&expected).await;
        api
    })
    .await;
    result.unwrap();
    assert_eq!(
        calls,
        [
            "Place recipes-0.recipes-peers.kitchen.svc:7071 shard 0 epoch 2 slots 512 shards 2",
            "Place recipes-s1-0.recipes-s1-peers.kitchen.svc:7071 shard 1 epoch 2 slots 512 shards 2",
        ]
    );
}

#[tokio::test]
async fn a_store_named_like_another_store_s_shard_is_refused() {
    // Store "recipes" has a shard 1, StatefulSet "recipes-s1"; a store
    // named "recipes-s1" would be given it as its shard 0.
    let owner = sharded(3, 2);
    let rs = {
        let mut rs = recipestore(3);
        rs.metadata.name = Some("recipes-s1".to_owned());
        rs.metadata.uid = Some("another-uid".to_owned());
        rs
    };
    let taken = shard_statefulset(&owner, 1, 2, 3);
    let expected = rs.clone();
    let (result, _) = reconcile_with(rs, FakeAdmin::default(), move |mut api| async move {
        api.expect(
            "get StatefulSet",
            Method::GET,
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/recipes-s1"),
            Reply::Json(serde_json::to_value(&taken).unwrap()),
        )
        .await;
        api.expect(
            "list pods",
            Method::GET,
            &format!("/api/v1/namespaces/{NS}/pods"),
            Reply::Json(
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
            ),
        )
        .await;
        let (seen, send) = api.next("publish InvalidSpec Event").await;
        assert_eq!(seen.body["reason"], "InvalidSpec");
        assert!(
            seen.body["note"]
                .as_str()
                .unwrap()
                .contains("has another owner (RecipeStore recipes)"),
            "{}",
            seen.body
        );
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&seen.body).unwrap()))
                .unwrap(),
        );
        let (seen, send) = api.next("update status").await;
        assert!(seen.path.ends_with("/recipestores/recipes-s1/status"));
        let mut updated = expected.clone();
        updated.status = serde_json::from_value(seen.body["status"].clone()).unwrap();
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&updated).unwrap()))
                .unwrap(),
        );
        api
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidSpec(_))));
}
