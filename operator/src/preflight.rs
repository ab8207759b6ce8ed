//! What must hold before the controller starts: the RecipeStore
//! CustomResourceDefinition is installed, serves this operator's version and
//! knows every field this operator writes and reads.
//!
//! A cluster where the chart's install failed half-way (Helm 4 applies
//! server-side, so the Deployment can land without the CRD), or where the
//! CRD was left at an older chart's schema, would otherwise run an operator
//! that looks Ready while every watch fails or the API server prunes the
//! fields it sets. Instead the operator says what is wrong in its log, in
//! an Event on its own Pod and through `/readyz`, and checks again until the
//! CRD is right.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, CustomResourceExt, Resource};
use tracing::{error, info, warn};

use crate::RecipeStore;
use crate::http::Readiness;

/// How often a missing or outdated CRD is checked again.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Why the installed CRD cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No CustomResourceDefinition of that name.
    Missing { crd: String },
    /// Installed, but does not serve this operator's version.
    VersionNotServed { crd: String, version: String },
    /// Installed at an older schema: these fields (dotted paths) are absent,
    /// so the API server would prune them.
    Outdated { crd: String, missing: Vec<String> },
    /// The CRD could not be read (RBAC, API server unavailable).
    Unreadable { crd: String, error: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const INSTALL: &str = "install it from the chart's crds/ directory \
            (kubectl apply --server-side -f crds/recipestore.yaml)";
        match self {
            Problem::Missing { crd } => {
                write!(
                    f,
                    "CustomResourceDefinition {crd} is not installed: {INSTALL}"
                )
            }
            Problem::VersionNotServed { crd, version } => write!(
                f,
                "CustomResourceDefinition {crd} does not serve {version}: {INSTALL}"
            ),
            Problem::Outdated { crd, missing } => write!(
                f,
                "CustomResourceDefinition {crd} is older than this operator: its schema lacks {}; \
                 upgrade it: {INSTALL}",
                missing.join(", ")
            ),
            Problem::Unreadable { crd, error } => write!(
                f,
                "cannot read CustomResourceDefinition {crd} (the operator's ClusterRole grants \
                 get on it): {error}"
            ),
        }
    }
}

/// Checks `installed` (None: not found) against this operator's own CRD.
pub fn check(installed: Option<&CustomResourceDefinition>) -> Result<(), Problem> {
    let ours = RecipeStore::crd();
    let crd = ours.metadata.name.clone().unwrap_or_default();
    let Some(installed) = installed else {
        return Err(Problem::Missing { crd });
    };
    let version = RecipeStore::version(&());
    let served = installed
        .spec
        .versions
        .iter()
        .find(|v| v.name == version && v.served);
    let Some(served) = served else {
        return Err(Problem::VersionNotServed {
            crd,
            version: version.into_owned(),
        });
    };
    let ours = ours
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref()?.open_api_v3_schema.as_ref());
    let theirs = served
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    let mut missing = Vec::new();
    if let (Some(ours), Some(theirs)) = (ours, theirs) {
        missing_fields(ours, theirs, "", &mut missing);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Problem::Outdated { crd, missing })
    }
}

/// Collects the dotted paths of properties `ours` declares and `theirs`
/// lacks. A schema that keeps unknown fields accepts anything below it.
fn missing_fields(
    ours: &JSONSchemaProps,
    theirs: &JSONSchemaProps,
    at: &str,
    out: &mut Vec<String>,
) {
    if theirs.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    for (name, our_field) in ours.properties.iter().flatten() {
        let path = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        match theirs.properties.as_ref().and_then(|p| p.get(name)) {
            Some(their_field) => missing_fields(our_field, their_field, &path, out),
            None => out.push(path),
        }
    }
    if let (
        Some(JSONSchemaPropsOrArray::Schema(ours)),
        Some(JSONSchemaPropsOrArray::Schema(theirs)),
    ) = (&ours.items, &theirs.items)
    {
        missing_fields(ours, theirs, &format!("{at}[]"), out);
    }
}

/// Reads the installed CRD and checks it.
pub async fn check_installed(client: &Client) -> Result<(), Problem> {
    let name = RecipeStore::crd_name();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.get_opt(name).await {
        Ok(installed) => check(installed.as_ref()),
        Err(error) => Err(Problem::Unreadable {
            crd: name.to_owned(),
            error: error.to_string(),
        }),
    }
}

/// Where the operator reports on itself: its own Pod, when it knows it.
pub struct SelfReport {
    pub recorder: Recorder,
    pub pod: Option<ObjectReference>,
}

impl SelfReport {
    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        let Some(pod) = &self.pod else { return };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            action: "CheckCRD".to_owned(),
            note: Some(note),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, pod).await {
            warn!(%error, "failed to record an Event on the operator's Pod");
        }
    }
}

/// Returns once the CRD is installed and current. Until then `readiness`
/// carries the problem, and each new problem is logged and recorded.
pub async fn wait_until_installed(client: &Client, readiness: &Readiness, report: &SelfReport) {
    let mut last: Option<Problem> = None;
    loop {
        match check_installed(client).await {
            Ok(()) => {
                info!("the RecipeStore CRD is installed and current");
                readiness.set(Ok(()));
                if last.is_some() {
                    report
                        .publish(
                            EventType::Normal,
                            "CRDReady",
                            "the RecipeStore CRD is installed and current".to_owned(),
                        )
                        .await;
                }
                return;
            }
            Err(problem) => {
                readiness.set(Err(problem.to_string()));
                if last.as_ref() != Some(&problem) {
                    error!(%problem, "not starting the controller");
                    let reason = match problem {
                        Problem::Missing { .. } => "CRDMissing",
                        Problem::VersionNotServed { .. } | Problem::Outdated { .. } => {
                            "CRDOutdated"
                        }
                        Problem::Unreadable { .. } => "CRDUnreadable",
                    };
                    report
                        .publish(EventType::Warning, reason, problem.to_string())
                        .await;
                    last = Some(problem);
                }
            }
        }
        tokio::time::sleep(RECHECK_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed() -> CustomResourceDefinition {
        RecipeStore::crd()
    }

    fn spec_schema(crd: &mut CustomResourceDefinition) -> &mut JSONSchemaProps {
        crd.spec.versions[0]
            .schema
            .as_mut()
            .unwrap()
            .open_api_v3_schema
            .as_mut()
            .unwrap()
            .properties
            .as_mut()
            .unwrap()
            .get_mut("spec")
            .unwrap()
    }

    #[test]
    fn this_operators_own_crd_passes() {
        assert_eq!(check(Some(&installed())), Ok(()));
    }

    #[test]
    fn a_missing_crd_says_how_to_install_it() {
        let problem = check(None).unwrap_err();
        assert_eq!(
            problem,
            Problem::Missing {
                crd: "recipestores.recipestore.dev".to_owned()
            }
        );
        assert!(problem.to_string().contains("kubectl apply --server-side"));
    }

    #[test]
    fn a_crd_without_this_version_is_refused() {
        let mut crd = installed();
        crd.spec.versions[0].served = false;
        assert!(matches!(
            check(Some(&crd)),
            Err(Problem::VersionNotServed { version, .. }) if version == "v1alpha1"
        ));
    }

    #[test]
    fn an_older_schema_is_refused_naming_every_field_it_lacks() {
        let mut crd = installed();
        let spec = spec_schema(&mut crd);
        let raft = spec.properties.as_mut().unwrap().get_mut("raft").unwrap();
        raft.properties
            .as_mut()
            .unwrap()
            .remove("heartbeatIntervalMs");
        spec.properties.as_mut().unwrap().remove("queues");
        let Err(Problem::Outdated { missing, .. }) = check(Some(&crd)) else {
            panic!("an older schema passed");
        };
        assert_eq!(missing, ["spec.queues", "spec.raft.heartbeatIntervalMs"]);
    }

    #[test]
    fn a_newer_schema_with_more_fields_passes() {
        let mut crd = installed();
        spec_schema(&mut crd)
            .properties
            .as_mut()
            .unwrap()
            .insert("futureField".to_owned(), JSONSchemaProps::default());
        assert_eq!(check(Some(&crd)), Ok(()));
    }
}
