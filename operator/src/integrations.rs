//! Optional APIs the operator uses when a cluster has them: the Prometheus
//! operator's ServiceMonitor and cert-manager's Certificate. They are found through API
//! discovery's group list (`GET /apis`, which every API server serves), once
//! at start-up and then on a slow timer, never inside a reconcile: a cluster
//! without the Prometheus operator answers a request for its group with a
//! plain-text `404 page not found`, and a reconcile must not depend on how
//! an absent API says it is absent.

use std::sync::RwLock;
use std::time::Duration;

use kube::Client;
use kube::core::ApiResource;
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use tracing::info;
use tracing::warn;

const MONITORING_GROUP: &str = "monitoring.coreos.com";
const CERT_MANAGER_GROUP: &str = "cert-manager.io";

/// How often optional APIs are looked for again (a CRD installed later is
/// picked up within this).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// What optional APIs the cluster was last seen to serve.
#[derive(Default)]
pub struct Integrations {
    service_monitor: RwLock<Option<ApiResource>>,
    certificate: RwLock<Option<ApiResource>>,
}

impl Integrations {
    /// Integrations already known (tests, or a cluster told what it has).
    pub fn known(service_monitor: Option<ApiResource>, certificate: Option<ApiResource>) -> Self {
        Self {
            service_monitor: RwLock::new(service_monitor),
            certificate: RwLock::new(certificate),
        }
    }

    /// cert-manager's Certificate API, when the cluster serves it.
    pub fn certificate(&self) -> Option<ApiResource> {
        self.certificate
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The ServiceMonitor API, when the cluster serves it.
    pub fn service_monitor(&self) -> Option<ApiResource> {
        self.service_monitor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Looks for the optional APIs again. A failed discovery keeps what
    /// was known and says so in the log; it never fails a caller.
    pub async fn refresh(&self, client: &Client) {
        match Discovery::new(client.clone())
            .filter(&[MONITORING_GROUP, CERT_MANAGER_GROUP])
            .run()
            .await
        {
            Ok(discovery) => {
                let found = |group, kind| {
                    let gvk = GroupVersionKind::gvk(group, "v1", kind);
                    discovery.resolve_gvk(&gvk).map(|(api, _)| api)
                };
                note(
                    &self.service_monitor,
                    found(MONITORING_GROUP, "ServiceMonitor"),
                    "the ServiceMonitor API (Prometheus operator) changed availability",
                );
                note(
                    &self.certificate,
                    found(CERT_MANAGER_GROUP, "Certificate"),
                    "the Certificate API (cert-manager) changed availability",
                );
            }
            Err(error) => warn!(
                %error,
                "API discovery failed; keeping what was known of optional APIs"
            ),
        }
    }

    /// Refreshes every [`REFRESH_INTERVAL`], forever.
    pub async fn refresh_periodically(&self, client: Client) {
        let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            self.refresh(&client).await;
        }
    }
}

/// Records what discovery found of one API, saying so when it changed.
fn note(known: &RwLock<Option<ApiResource>>, found: Option<ApiResource>, changed: &str) {
    let mut known = known.write().unwrap_or_else(|e| e.into_inner());
    if found.is_some() != known.is_some() {
        info!(available = found.is_some(), "{changed}");
    }
    *known = found;
}

#[cfg(test)]
mod tests {
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock::{self, Handle};

    use super::*;

    /// Answers the next request, which must be `GET path`.
    async fn answer(
        handle: &mut Handle<Request<Body>, Response<Body>>,
        path: &str,
        status: StatusCode,
        content_type: &str,
        body: Vec<u8>,
    ) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.uri().path(), path);
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(Body::from(body))
                .unwrap(),
        );
    }

    fn group_list(with_monitoring: bool) -> Vec<u8> {
        let group = |name: &str| {
            json!({"name": name, "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
                   "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}})
        };
        let mut groups = vec![group("apps"), group("recipestore.dev")];
        if with_monitoring {
            groups.push(group(MONITORING_GROUP));
        }
        serde_json::to_vec(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            .unwrap()
    }

    fn monitoring_resources() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
            "resources": [{"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
                           "kind": "ServiceMonitor", "verbs": ["get", "list", "patch", "delete"]}]
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_cluster_without_the_prometheus_operator_has_no_service_monitor_and_asks_nothing_more()
     {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let integrations = Integrations::default();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                "/apis",
                StatusCode::OK,
                "application/json",
                group_list(false),
            )
            .await;
            handle
        });
        integrations.refresh(&client).await;
        assert!(integrations.service_monitor().is_none());
        drop(client);
        let mut handle = server.await.unwrap();
        assert!(
            handle.next_request().await.is_none(),
            "nothing is asked of a group the cluster does not list"
        );
    }

    #[tokio::test]
    async fn the_service_monitor_api_is_found_when_its_group_is_listed() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let integrations = Integrations::default();
        tokio::spawn(async move {
            answer(
                &mut handle,
                "/apis",
                StatusCode::OK,
                "application/json",
                group_list(true),
            )
            .await;
            answer(
                &mut handle,
                "/apis/monitoring.coreos.com/v1",
                StatusCode::OK,
                "application/json",
                monitoring_resources(),
            )
            .await;
        });
        integrations.refresh(&client).await;
        let api = integrations.service_monitor().expect("found");
        assert_eq!(
            (api.group.as_str(), api.plural.as_str()),
            (MONITORING_GROUP, "servicemonitors")
        );
    }

    /// A real API server answers a path of a group it does not serve (say,
    /// its CRD was deleted between the group list and this request) with a
    /// plain-text `404 page not found`, not a JSON Status: discovery fails,
    /// and what was known is kept.
    #[tokio::test]
    async fn a_plain_text_404_keeps_what_was_known_and_fails_nothing() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let integrations = Integrations::default();
        tokio::spawn(async move {
            answer(
                &mut handle,
                "/apis",
                StatusCode::OK,
                "application/json",
                group_list(true),
            )
            .await;
            answer(
                &mut handle,
                "/apis/monitoring.coreos.com/v1",
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"404 page not found\n".to_vec(),
            )
            .await;
        });
        integrations.refresh(&client).await;
        assert!(integrations.service_monitor().is_none());
    }
}
