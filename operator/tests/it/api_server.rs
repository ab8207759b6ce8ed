//! A fake Kubernetes API server on a real socket, to run the operator binary
//! as a cluster would. It keeps objects and answers as kube-apiserver does
//! where the operator depends on the answer (shapes checked against the API
//! conventions and apimachinery's `StatusError` constructors):
//!
//! - an unknown group, version or path: `404 page not found` in plain text
//!   (the generic handler's answer), not a JSON Status;
//! - errors on known resources: a JSON `Status` with reason, message,
//!   details and code: 404 NotFound, 409 AlreadyExists, 409 Conflict (a
//!   stale `resourceVersion`, or a server-side apply by another field
//!   manager without `force`), 422 Invalid with field causes, 403 Forbidden;
//! - discovery (`/api`, `/apis`, `/apis/{group}/{version}`), in which the
//!   RecipeStore group appears only while its CRD is installed;
//! - lists with a `resourceVersion`, label selectors of `key=value` terms;
//! - watches from a `resourceVersion`: the changes since then, live changes,
//!   bookmarks when asked for, and `ERROR` with 410 Expired for a version
//!   older than the kept history;
//! - server-side apply (create or update, `generation` bumped on a spec
//!   change, a write that changes nothing stored as nothing), the status
//!   subresource, JSON merge patches, create, delete.
//!
//! Simplified on purpose: apply conflicts are found per top-level `spec`
//! field against the object's last applier (the real server tracks every
//! leaf field per manager), and label selectors are `key=value` terms.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A kind the fake serves.
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const CRDS: &str = "customresourcedefinitions";
pub const CRD_NAME: &str = "recipestores.recipestore.dev";

const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
    },
    Kind {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
    },
    Kind {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: CRDS,
        kind: "CustomResourceDefinition",
        namespaced: false,
    },
    // Custom resources: served only while their CRD is installed.
    Kind {
        group: "recipestore.dev",
        version: "v1alpha1",
        plural: "recipestores",
        kind: "RecipeStore",
        namespaced: true,
    },
    Kind {
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "servicemonitors",
        kind: "ServiceMonitor",
        namespaced: true,
    },
];

/// The CRD that must exist for a custom resource to be served.
fn crd_of(kind: &Kind) -> Option<String> {
    // Built-in groups are unqualified ("apps") or end in .k8s.io.
    (kind.group.contains('.') && !kind.group.ends_with(".k8s.io"))
        .then(|| format!("{}.{}", kind.plural, kind.group))
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, as messages name a resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn kind_of(plural: &str) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.plural == plural)
        .unwrap_or_else(|| panic!("the fake serves no {plural}"))
}

/// Where an object lives: its kind's plural, namespace ("" if cluster
/// scoped) and name.
type Key = (&'static str, String, String);

/// How much change history watches can resume from.
const HISTORY: usize = 1_000;

#[derive(Clone, Debug)]
struct Change {
    revision: u64,
    type_: &'static str,
    key: Key,
    object: Value,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    /// The field manager of the last server-side apply of each object.
    managers: BTreeMap<Key, String>,
    revision: u64,
    /// Watches cannot resume from this revision or older (etcd compacted).
    compacted: u64,
    history: Vec<Change>,
    /// Plurals whose every request is refused, as RBAC would.
    forbidden: BTreeSet<String>,
    /// Plurals whose writes fail validation: (field, detail).
    invalid: BTreeMap<String, (String, String)>,
    /// Every request, as `METHOD path?query`.
    requests: Vec<String>,
}

struct Shared {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch, as an API server restart does.
    epoch: tokio::sync::watch::Sender<u64>,
}

pub struct ApiServer {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    pub async fn start() -> Self {
        let (changes, _) = broadcast::channel(HISTORY);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changes,
            epoch: tokio::sync::watch::Sender::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Self { url, shared, task }
    }

    /// A kubeconfig file that points at this server, in `dir`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             users:\n- name: fake\n  user: {{}}\n",
            self.url
        );
        std::fs::write(&path, config).expect("kubeconfig");
        path
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates or replaces an object, as an administrator would.
    pub fn put(&self, plural: &str, object: Value) {
        self.put_locked(&mut self.store(), plural, object);
    }

    fn put_locked(&self, store: &mut Store, plural: &str, object: Value) {
        let kind = kind_of(plural);
        let key = key_of(plural, &object);
        let existing = store.objects.get(&key).cloned();
        let object = admit(store, kind, &key, existing.as_ref(), object);
        publish(&self.shared, store, key, object, existing.is_some());
    }

    /// Stores `object` as a server-side apply by field manager `manager`.
    pub fn apply_as(&self, manager: &str, plural: &str, object: Value) {
        let mut store = self.store();
        store
            .managers
            .insert(key_of(plural, &object), manager.to_owned());
        self.put_locked(&mut store, plural, object);
    }

    /// The field manager of the last server-side apply of an object.
    pub fn manager_of(&self, plural: &str, namespace: &str, name: &str) -> Option<String> {
        let key = key(plural, namespace, name);
        self.store().managers.get(&key).cloned()
    }

    /// Ends every open watch, then stores `object` and compacts the history
    /// past it, as an API server restart during an etcd compaction would:
    /// a watch resumed from before it gets `410 Expired` and must list again
    /// to see `object`.
    pub fn restart_after(&self, plural: &str, object: Value) {
        // Under the lock, so that no watch reopens before the compaction.
        let mut store = self.store();
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
        self.put_locked(&mut store, plural, object);
        store.compacted = store.revision;
        store.history.clear();
    }

    /// Deletes an object; a CRD takes its custom resources with it.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let mut store = self.store();
        let mut doomed = vec![key(plural, namespace, name)];
        if plural == CRDS {
            let kinds: Vec<&str> = KINDS
                .iter()
                .filter(|k| crd_of(k).as_deref() == Some(name))
                .map(|k| k.plural)
                .collect();
            doomed.extend(
                store
                    .objects
                    .keys()
                    .filter(|key| kinds.contains(&key.0))
                    .cloned(),
            );
        }
        for key in doomed {
            if let Some(object) = store.objects.remove(&key) {
                store.revision += 1;
                record(&self.shared, &mut store, "DELETED", key, object);
            }
        }
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = key(plural, namespace, name);
        self.store().objects.get(&key).cloned()
    }

    /// Every object of a kind, in every namespace.
    pub fn all(&self, plural: &str) -> Vec<Value> {
        let plural = kind_of(plural).plural;
        self.store()
            .objects
            .iter()
            .filter(|((p, _, _), _)| *p == plural)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Refuses every request for `plural` from now on, as RBAC would.
    pub fn forbid(&self, plural: &str) {
        self.store().forbidden.insert(plural.to_owned());
    }

    /// Refuses every write of `plural` as invalid at `field`.
    pub fn reject(&self, plural: &str, field: &str, detail: &str) {
        self.store()
            .invalid
            .insert(plural.to_owned(), (field.to_owned(), detail.to_owned()));
    }

    /// The requests seen so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.store().requests.clone()
    }
}

fn key(plural: &str, namespace: &str, name: &str) -> Key {
    (
        kind_of(plural).plural,
        namespace.to_owned(),
        name.to_owned(),
    )
}

/// Where `object`, of kind `plural`, is kept.
fn key_of(plural: &str, object: &Value) -> Key {
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().expect("object has a name");
    key(plural, metadata["namespace"].as_str().unwrap_or(""), name)
}

/// Fills in what the API server sets on every write: uid, creation time,
/// resource version and generation (bumped when the spec changes).
fn admit(
    store: &mut Store,
    kind: &Kind,
    key: &Key,
    existing: Option<&Value>,
    mut object: Value,
) -> Value {
    store.revision += 1;
    object["apiVersion"] = json!(kind.api_version());
    object["kind"] = json!(kind.kind);
    let metadata = &mut object["metadata"];
    if kind.namespaced {
        metadata["namespace"] = json!(key.1);
    }
    metadata["resourceVersion"] = json!(store.revision.to_string());
    match existing {
        Some(old) => {
            for field in ["uid", "creationTimestamp"] {
                metadata[field] = old["metadata"][field].clone();
            }
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed = old.get("spec") != object.get("spec");
            object["metadata"]["generation"] = json!(generation + i64::from(changed));
        }
        None => {
            metadata["uid"] = json!(format!("uid-{}", store.revision));
            metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            metadata["generation"] = json!(1);
        }
    }
    object
}

/// Whether `next` is `old` but for what the server sets itself.
fn unchanged(old: &Value, next: &Value) -> bool {
    let mut next = next.clone();
    for field in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "namespace",
    ] {
        match old["metadata"].get(field) {
            Some(value) => next["metadata"][field] = value.clone(),
            None => {
                if let Some(metadata) = next["metadata"].as_object_mut() {
                    metadata.remove(field);
                }
            }
        }
    }
    for field in ["apiVersion", "kind"] {
        next[field] = old[field].clone();
    }
    *old == next
}

fn publish(shared: &Shared, store: &mut Store, key: Key, object: Value, existed: bool) {
    store.objects.insert(key.clone(), object.clone());
    let type_ = if existed { "MODIFIED" } else { "ADDED" };
    record(shared, store, type_, key, object);
}

fn record(shared: &Shared, store: &mut Store, type_: &'static str, key: Key, object: Value) {
    let change = Change {
        revision: store.revision,
        type_,
        key,
        object,
    };
    store.history.push(change.clone());
    if store.history.len() > HISTORY {
        store.history.remove(0);
    }
    let _ = shared.changes.send(change);
}

// ---------- answers ----------

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("json"),
    )
        .into_response()
}

/// The generic handler's answer for a path no API serves.
fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// A `Status` failure, as apimachinery's `StatusError` serializes it.
pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        status["details"] = details;
    }
    status
}

fn failure(code: u16, reason: &str, message: &str, details: Value) -> Response {
    json_response(
        StatusCode::from_u16(code).expect("code"),
        &status(code, reason, message, details),
    )
}

fn not_found(kind: &Kind, name: &str) -> Response {
    failure(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.qualified()),
        json!({"name": name, "group": kind.group, "kind": kind.plural}),
    )
}

fn forbidden(kind: &Kind, verb: &str, namespace: &str) -> Response {
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{namespace}\"")
    };
    failure(
        403,
        "Forbidden",
        &format!(
            "{} is forbidden: User \"system:serviceaccount:recipestore-system:recipestore-operator\" \
             cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
            kind.qualified(),
            kind.plural,
            kind.group
        ),
        json!({"group": kind.group, "kind": kind.plural}),
    )
}

fn invalid(kind: &Kind, name: &str, field: &str, detail: &str) -> Response {
    failure(
        422,
        "Invalid",
        &format!(
            "{}.{} \"{name}\" is invalid: {field}: {detail}",
            kind.kind, kind.group
        ),
        json!({
            "name": name,
            "group": kind.group,
            "kind": kind.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        }),
    )
}

fn stale(kind: &Kind, name: &str) -> Response {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.qualified()
        ),
        json!({"name": name, "group": kind.group, "kind": kind.plural}),
    )
}

fn apply_conflict(kind: &Kind, name: &str, manager: &str, fields: &[String]) -> Response {
    let causes: Vec<Value> = fields
        .iter()
        .map(|f| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {}", kind.api_version()),
                "field": f,
            })
        })
        .collect();
    let plural = if fields.len() == 1 {
        "conflict"
    } else {
        "conflicts"
    };
    failure(
        409,
        "Conflict",
        &format!(
            "Apply failed with {} {plural}: conflict with \"{manager}\" using {}: {}",
            fields.len(),
            kind.api_version(),
            fields.join(", ")
        ),
        json!({"name": name, "group": kind.group, "kind": kind.plural, "causes": causes}),
    )
}

// ---------- routing ----------

/// A request for objects, parsed from its path.
struct Target {
    kind: &'static Kind,
    namespace: String,
    name: Option<String>,
    status: bool,
}

fn served(store: &Store, kind: &Kind) -> bool {
    crd_of(kind).is_none_or(|crd| store.objects.contains_key(&(CRDS, String::new(), crd)))
}

fn group_versions(store: &Store) -> BTreeSet<(&'static str, &'static str)> {
    KINDS
        .iter()
        .filter(|k| served(store, k))
        .map(|k| (k.group, k.version))
        .collect()
}

fn parse_target(store: &Store, segments: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let (plural, name, status) = match rest {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some(name.to_string()), false),
        [plural, name, "status"] => (*plural, Some(name.to_string()), true),
        _ => return None,
    };
    let kind = KINDS.iter().find(|k| {
        k.group == group && k.version == version && k.plural == plural && served(store, k)
    })?;
    Some(Target {
        kind,
        namespace,
        name,
        status,
    })
}

fn query_params(uri: &Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Whether `object` matches a selector of `key=value` terms.
fn selects(selector: Option<&String>, object: &Value) -> bool {
    selector.is_none_or(|selector| {
        selector.split(',').filter(|t| !t.is_empty()).all(|term| {
            let (key, value) = term.split_once('=').unwrap_or((term, ""));
            object["metadata"]["labels"][key].as_str() == Some(value)
        })
    })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let params = query_params(&uri);
    let mut store = shared.store.lock().unwrap();
    store.requests.push(format!(
        "{method} {}",
        uri.path_and_query().map_or(path, |p| p.as_str())
    ));

    match segments.as_slice() {
        ["api"] => {
            return json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            );
        }
        ["apis"] => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (group, version) in group_versions(&store) {
                if !group.is_empty() {
                    groups.entry(group).or_default().push(version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(name, versions)| {
                    let versions: Vec<Value> = versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                        .collect();
                    json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            return json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            );
        }
        ["api", version] | ["apis", _, version] => {
            let group = if segments[0] == "api" {
                ""
            } else {
                segments[1]
            };
            if !group_versions(&store).contains(&(group, *version)) {
                return page_not_found();
            }
            let resources: Vec<Value> = KINDS
                .iter()
                .filter(|k| k.group == group && k.version == *version && served(&store, k))
                .map(|k| {
                    json!({
                        "name": k.plural, "singularName": k.kind.to_lowercase(),
                        "namespaced": k.namespaced, "kind": k.kind,
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    })
                })
                .collect();
            let group_version = if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            };
            return json_response(
                StatusCode::OK,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
            );
        }
        _ => {}
    }

    let Some(target) = parse_target(&store, &segments) else {
        return page_not_found();
    };
    let kind = target.kind;
    let watching = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name, watching) {
        (&Method::GET, _, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), false) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PATCH, _, _) => "patch",
        (&Method::PUT, _, _) => "update",
        (&Method::DELETE, _, _) => "delete",
        _ => {
            return failure(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            );
        }
    };
    if store.forbidden.contains(kind.plural) {
        return forbidden(kind, verb, &target.namespace);
    }
    let in_scope = |key: &Key| {
        key.0 == kind.plural && (target.namespace.is_empty() || key.1 == target.namespace)
    };

    match verb {
        "list" => {
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|(key, object)| {
                    in_scope(key) && selects(params.get("labelSelector"), object)
                })
                .map(|(_, o)| o.clone())
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "kind": format!("{}List", kind.kind),
                    "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": store.revision.to_string()},
                    "items": items,
                }),
            )
        }
        "watch" => {
            let from: u64 = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(store.revision);
            let oldest = store
                .history
                .first()
                .map_or(store.revision, |c| c.revision - 1)
                .max(store.compacted);
            let selector = params.get("labelSelector").cloned();
            let wanted = {
                let namespace = target.namespace.clone();
                move |change: &Change| {
                    change.key.0 == kind.plural
                        && (namespace.is_empty() || change.key.1 == namespace)
                        && selects(selector.as_ref(), &change.object)
                }
            };
            let bookmarks = params
                .get("allowWatchBookmarks")
                .is_some_and(|b| b == "true");
            let timeout = params
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .map_or(Duration::from_secs(290), Duration::from_secs);
            if from < oldest {
                // etcd compacted past the asked version: the watch opens and
                // says so in an ERROR event.
                let expired = status(
                    410,
                    "Expired",
                    &format!("too old resource version: {from} ({oldest})"),
                    Value::Null,
                );
                let error = json!({"type": "ERROR", "object": expired});
                return watch_response(futures::stream::iter([error]).boxed());
            }
            let backlog: Vec<Value> = store
                .history
                .iter()
                .filter(|c| c.revision > from && wanted(c))
                .map(|c| json!({"type": c.type_, "object": c.object}))
                .collect();
            let current = store.revision;
            let bookmark = bookmarks.then(|| {
                let api_version = kind.api_version();
                move |revision: u64| {
                    json!({"type": "BOOKMARK", "object": {
                        "kind": kind.kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": revision.to_string()},
                    }})
                }
            });
            let live = live_changes(shared.changes.subscribe(), current, wanted, bookmark);
            let events =
                futures::stream::iter(backlog)
                    .chain(live)
                    .take_until(futures::future::select(
                        Box::pin(tokio::time::sleep(timeout)),
                        Box::pin(restarted(&shared)),
                    ));
            watch_response(events.boxed())
        }
        "get" => {
            let name = target.name.clone().unwrap_or_default();
            match store
                .objects
                .get(&(kind.plural, target.namespace.clone(), name.clone()))
            {
                Some(object) => json_response(StatusCode::OK, object),
                None => not_found(kind, &name),
            }
        }
        "delete" => {
            let name = target.name.clone().unwrap_or_default();
            let key = (kind.plural, target.namespace.clone(), name.clone());
            match store.objects.remove(&key) {
                Some(object) => {
                    store.revision += 1;
                    record(&shared, &mut store, "DELETED", key, object.clone());
                    json_response(StatusCode::OK, &object)
                }
                None => not_found(kind, &name),
            }
        }
        _ => write(&shared, &mut store, &target, verb, &params, &headers, &body),
    }
}

/// Completes when the server "restarts" (see [`ApiServer::restart_after`]).
fn restarted(shared: &Shared) -> impl Future<Output = ()> + Send + 'static {
    let mut epoch = shared.epoch.subscribe();
    async move {
        let _ = epoch.changed().await;
    }
}

/// Changes after revision `after` that `wanted` keeps, as watch events,
/// and every second a bookmark when `bookmark` makes one. A bookmark
/// carries the revision of the last change this stream has received, as
/// the API server's does: every event up to it has been sent, so a client
/// that resumes from it misses nothing. (The global revision, read at the
/// tick, could be ahead of a change still on its way to the stream.)
fn live_changes(
    changes: broadcast::Receiver<Change>,
    after: u64,
    wanted: impl Fn(&Change) -> bool + Send + 'static,
    bookmark: Option<impl Fn(u64) -> Value + Send + 'static>,
) -> BoxStream<'static, Value> {
    let ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let state = (changes, after, ticks, wanted, bookmark);
    futures::stream::unfold(state, |state| async move {
        let (mut changes, mut seen, mut ticks, wanted, bookmark) = state;
        let event = loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) if change.revision > seen => {
                        seen = change.revision;
                        if wanted(&change) {
                            break json!({"type": change.type_, "object": change.object});
                        }
                    }
                    Ok(_) => {}
                    // A watcher that fell behind is closed; it resumes from
                    // the last version it saw, which the history still holds.
                    Err(_) => return None,
                },
                _ = ticks.tick(), if bookmark.is_some() => {
                    break bookmark.as_ref().map(|make| make(seen))?;
                }
            }
        };
        Some((event, (changes, seen, ticks, wanted, bookmark)))
    })
    .boxed()
}

/// A watch: one JSON event per line, on a response that stays open.
fn watch_response(events: BoxStream<'static, Value>) -> Response {
    let lines = events.map(|event| {
        let mut line = serde_json::to_vec(&event).expect("json");
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .expect("response")
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, the rest replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Creates, updates or patches an object, as the API server's write paths do.
fn write(
    shared: &Shared,
    store: &mut Store,
    target: &Target,
    verb: &str,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let kind = target.kind;
    let patch: Value = match serde_json::from_slice(body).or_else(|_| serde_yaml::from_slice(body))
    {
        Ok(patch) => patch,
        Err(error) => {
            return failure(
                400,
                "BadRequest",
                &format!("the body of the request was in an unknown format: {error}"),
                Value::Null,
            );
        }
    };
    let body_name = patch["metadata"]["name"].as_str();
    let name = match (
        &target.name,
        body_name,
        patch["metadata"]["generateName"].as_str(),
    ) {
        (Some(name), _, _) => name.clone(),
        (None, Some(name), _) => name.to_owned(),
        (None, None, Some(prefix)) => format!("{prefix}{:05}", store.revision + 1),
        (None, None, None) => {
            return invalid(
                kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            );
        }
    };
    if let Some(body_name) = body_name
        && body_name != name
        && !target.status
    {
        return failure(
            400,
            "BadRequest",
            &format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ),
            Value::Null,
        );
    }
    if let Some((field, detail)) = store.invalid.get(kind.plural) {
        return invalid(kind, &name, field, detail);
    }
    let key = (kind.plural, target.namespace.clone(), name.clone());
    let existing = store.objects.get(&key).cloned();
    if let (Some(old), Some(expected)) = (&existing, patch["metadata"]["resourceVersion"].as_str())
        && old["metadata"]["resourceVersion"].as_str() != Some(expected)
    {
        return stale(kind, &name);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let object = match (verb, &existing) {
        ("create", Some(_)) => {
            return failure(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", kind.qualified()),
                json!({"name": name, "group": kind.group, "kind": kind.plural}),
            );
        }
        ("create", None) => patch,
        ("patch", _) if content_type.starts_with("application/apply-patch") => {
            let Some(manager) = params.get("fieldManager") else {
                return failure(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    Value::Null,
                );
            };
            let force = params.get("force").is_some_and(|f| f == "true");
            match &existing {
                None if target.status => return not_found(kind, &name),
                None => {
                    store.managers.insert(key.clone(), manager.clone());
                    patch
                }
                Some(old) => {
                    let owner = store.managers.get(&key).cloned();
                    if let Some(owner) = owner.filter(|o| o != manager && !force && !target.status)
                    {
                        let conflicts: Vec<String> = patch["spec"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(field, value)| {
                                old["spec"].get(*field).is_some_and(|v| v != *value)
                            })
                            .map(|(field, _)| format!(".spec.{field}"))
                            .collect();
                        if !conflicts.is_empty() {
                            return apply_conflict(kind, &name, &owner, &conflicts);
                        }
                    }
                    let mut next = old.clone();
                    if target.status {
                        next["status"] = patch["status"].clone();
                    } else {
                        store.managers.insert(key.clone(), manager.clone());
                        let status = old.get("status").cloned();
                        next = patch;
                        if let Some(status) = status {
                            next["status"] = status;
                        }
                    }
                    next
                }
            }
        }
        ("patch", Some(old)) => {
            let mut next = old.clone();
            merge(&mut next, &patch);
            next
        }
        ("update", Some(old)) => {
            let mut next = patch;
            // The main resource ignores status; the subresource all but status.
            let kept = if target.status { "spec" } else { "status" };
            if let Some(value) = old.get(kept) {
                next[kept] = value.clone();
            }
            next
        }
        (_, None) => return not_found(kind, &name),
        _ => unreachable!("verbs are matched above"),
    };
    if let Some(old) = &existing
        && unchanged(old, &object)
    {
        // A write that changes nothing is not stored: no new
        // resourceVersion, no watch event.
        return json_response(StatusCode::OK, old);
    }
    let created = existing.is_none();
    let object = admit(store, kind, &key, existing.as_ref(), object);
    publish(shared, store, key, object.clone(), !created);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(code, &object)
}

/// The fake's answers as kube-client reads them: the shapes the operator's
/// error handling is written against.
#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use kube::api::{Api, Patch, PatchParams};

    use super::*;

    async fn client(api: &ApiServer) -> kube::Client {
        let config = kube::Config::new(api.url.parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    fn statefulset(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "cookbook", "namespace": "recipes"},
            "spec": {"replicas": 3, "serviceName": "cookbook-peers",
                     "selector": {"matchLabels": {"app": "cookbook"}},
                     "template": {"metadata": {"labels": {"app": "cookbook"}},
                                  "spec": {"containers": [{"name": "node", "image": image}]}}},
        })
    }

    fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
        match result {
            Err(kube::Error::Api(status)) => *status,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unknown_group_is_plain_text_that_kube_client_does_not_read_as_not_found() {
        let api = ApiServer::start().await;
        let request = http::Request::get("/apis/monitoring.coreos.com/v1")
            .body(Vec::new())
            .unwrap();
        let status = api_error(client(&api).await.request::<Value>(request).await);
        assert_eq!(status.code, 404);
        // Why a reconcile must never depend on such a GET: the absent group
        // is not recognisable as NotFound.
        assert!(!status.is_not_found(), "{status:?}");
        assert!(status.message.contains("404 page not found"), "{status:?}");
    }

    #[tokio::test]
    async fn a_missing_object_of_a_served_resource_is_a_not_found_status() {
        let api = ApiServer::start().await;
        let statefulsets: Api<StatefulSet> = Api::namespaced(client(&api).await, "recipes");
        let status = api_error(statefulsets.get("cookbook").await);
        assert!(status.is_not_found(), "{status:?}");
        assert_eq!(status.message, "statefulsets.apps \"cookbook\" not found");
        assert_eq!(status.details.expect("details").kind, "statefulsets");
    }

    #[tokio::test]
    async fn an_apply_by_another_manager_without_force_conflicts_naming_each_field() {
        let api = ApiServer::start().await;
        api.apply_as("kubectl", "statefulsets", statefulset("node:1"));
        let statefulsets: Api<StatefulSet> = Api::namespaced(client(&api).await, "recipes");
        let mut ours = statefulset("node:2");
        ours["spec"]["replicas"] = json!(5);
        let status = api_error(
            statefulsets
                .patch(
                    "cookbook",
                    &PatchParams::apply("recipestore-operator"),
                    &Patch::Apply(&ours),
                )
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        let causes = status.details.expect("details").causes;
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, [".spec.replicas", ".spec.template"]);
        assert!(causes.iter().all(|c| c.reason == "FieldManagerConflict"));
        // Forced, the apply takes the fields over.
        let forced = PatchParams::apply("recipestore-operator").force();
        let applied = statefulsets
            .patch("cookbook", &forced, &Patch::Apply(&ours))
            .await
            .expect("a forced apply succeeds");
        assert_eq!(applied.spec.unwrap().replicas, Some(5));
    }

    #[tokio::test]
    async fn a_write_from_a_stale_resource_version_conflicts() {
        let api = ApiServer::start().await;
        api.put("statefulsets", statefulset("node:1"));
        api.put("statefulsets", statefulset("node:2"));
        let statefulsets: Api<StatefulSet> = Api::namespaced(client(&api).await, "recipes");
        let mut stale = statefulset("node:3");
        stale["metadata"]["resourceVersion"] = json!("1");
        let status = api_error(
            statefulsets
                .patch("cookbook", &PatchParams::default(), &Patch::Merge(&stale))
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        assert!(
            status.message.contains("the object has been modified"),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_request_is_forbidden_naming_the_user_and_resource() {
        let api = ApiServer::start().await;
        api.forbid("statefulsets");
        let statefulsets: Api<StatefulSet> = Api::all(client(&api).await);
        let status = api_error(statefulsets.list(&Default::default()).await);
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        assert!(
            status.message.contains(
                "cannot list resource \"statefulsets\" in API group \"apps\" at the cluster scope"
            ),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn an_invalid_object_is_unprocessable_with_a_cause_per_field() {
        let api = ApiServer::start().await;
        api.reject(
            "statefulsets",
            "spec.replicas",
            "Invalid value: -1: must be greater than or equal to 0",
        );
        let statefulsets: Api<StatefulSet> = Api::namespaced(client(&api).await, "recipes");
        let status = api_error(
            statefulsets
                .patch(
                    "cookbook",
                    &PatchParams::apply("recipestore-operator"),
                    &Patch::Apply(&statefulset("node:1")),
                )
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        let causes = status.details.expect("details").causes;
        assert_eq!(causes[0].field, "spec.replicas");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
    }
}
