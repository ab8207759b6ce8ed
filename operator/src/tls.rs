//! A store's TLS: whether it runs it, the Secrets its certificates are in,
//! the certificates the operator issues and renews itself, and the
//! administrator's identity the operator calls the nodes with.
//!
//! Issued certificates: a CA valid ten years in `<store>-tls-ca`; the
//! members' certificate (common name `recipestore-member`, every pod's peer
//! name and the client Service's names) in `<store>-tls`; an
//! administrator's (`recipestore-admin`) in `<store>-tls-admin`, for the
//! operator and backup jobs. Each leaf lasts a year and is issued again 30
//! days before it expires, from the same CA: the kubelet updates the
//! mounted files, the nodes read them again, and nothing restarts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{EnvVar, Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject};
use recipestore_tls::Authority;
use recipestore_tls::Pem;
use recipestore_tls::TlsError;
use serde_json::json;
use tonic::transport::ClientTlsConfig;

use crate::crd::{IssuerRef, TlsSpec};
use crate::topology::Topology;

/// The name of the certificate volume.
const VOLUME: &str = "tls";
/// Where the node's (or a backup job's) certificate Secret is mounted.
pub const MOUNT: &str = "/etc/recipestore/tls";
/// The node flag whose presence in the pod template says the store runs TLS.
pub const CERT_ENV: &str = "RECIPESTORE_TLS_CERT";

const CA_VALID_FOR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The keys of a TLS Secret (those of `kubernetes.io/tls`, and cert-manager's `ca.crt`).
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";
/// The CA's private key, in the CA Secret only.
const CA_PRIVATE_KEY: &str = "ca.key";

/// How a store runs TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreTls {
    /// The members' certificate.
    pub member_secret: String,
    /// The administrators' certificate.
    pub admin_secret: String,
    /// Who issues them.
    pub issuer: Issuer,
    pub client_cert_auth: bool,
}

/// Who issues a store's certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issuer {
    /// The operator, from the CA it keeps.
    Operator,
    /// cert-manager, through Certificates naming this issuer.
    CertManager(IssuerRef),
    /// A person: the Secrets exist, named in the spec.
    Given,
}

/// Whether the store runs TLS, and with which Secrets: the spec's choice,
/// or for a spec that does not say, what the running StatefulSet does (on
/// for a new store). Refuses a switch on a running store, and Secret names
/// given half.
pub fn decide(
    spec: &TlsSpec,
    topology: &Topology,
    statefulset: Option<&StatefulSet>,
) -> Result<Option<StoreTls>, String> {
    let running = statefulset.map(runs_tls);
    let enabled = match (spec.enabled, running) {
        (Some(wanted), Some(runs)) if wanted != runs => {
            let (now, then) = if runs {
                ("runs TLS", "off")
            } else {
                ("runs without TLS", "on")
            };
            return Err(format!(
                "tls.enabled cannot change on a running store: it {now}, and members switched \
                 {then} one by one would stop understanding each other; save a backup and \
                 restore it into a new store (spec.restoreFrom), or set tls.enabled back"
            ));
        }
        (Some(wanted), _) => wanted,
        (None, Some(runs)) => runs,
        (None, None) => true,
    };
    let issuer = match (&spec.secret_name, &spec.admin_secret_name, &spec.issuer_ref) {
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(
                "tls.secretName and tls.adminSecretName go together: the members' \
                        certificate and an administrator's of the same CA"
                    .to_owned(),
            );
        }
        (Some(_), Some(_), Some(_)) => {
            return Err(
                "tls.issuerRef and tls.secretName exclude each other: certificates \
                        are issued by cert-manager or given, not both"
                    .to_owned(),
            );
        }
        (Some(_), Some(_), None) => Issuer::Given,
        (None, None, Some(issuer)) => Issuer::CertManager(issuer.clone()),
        (None, None, None) => Issuer::Operator,
    };
    if !enabled && (issuer != Issuer::Operator || spec.client_cert_auth) {
        return Err(
            "tls.secretName, tls.issuerRef and tls.clientCertAuth need TLS, which \
                    tls.enabled turns off"
                .to_owned(),
        );
    }
    Ok(enabled.then(|| StoreTls {
        member_secret: spec
            .secret_name
            .clone()
            .unwrap_or_else(|| topology.tls_secret()),
        admin_secret: spec
            .admin_secret_name
            .clone()
            .unwrap_or_else(|| topology.tls_admin_secret()),
        issuer,
        client_cert_auth: spec.client_cert_auth,
    }))
}

fn runs_tls(statefulset: &StatefulSet) -> bool {
    statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .is_some_and(|pod| {
            pod.containers
                .iter()
                .flat_map(|c| c.env.iter().flatten())
                .any(|e| e.name == CERT_ENV)
        })
}

/// The store's certificate Secrets as read: the CA and members' ones only
/// when the operator issues them.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    pub ca: Option<Secret>,
    pub member: Option<Secret>,
    pub admin: Option<Secret>,
}

fn data<'a>(secret: Option<&'a Secret>, key: &str) -> Option<&'a [u8]> {
    Some(secret?.data.as_ref()?.get(key)?.0.as_slice())
}

/// The client config of the administrator's Secret, when it holds a
/// usable certificate.
pub fn admin_config(secrets: &Secrets) -> Option<ClientTlsConfig> {
    let admin = secrets.admin.as_ref();
    let pem = Pem::from_memory(
        "administrator's Secret",
        data(admin, CERT_KEY)?,
        data(admin, KEY_KEY)?,
        data(admin, CA_KEY)?,
    )
    .ok()?;
    Some(pem.client_config())
}

/// Whether a certificate Secret can be used until `RENEW_BEFORE` from now.
fn lasts(secret: Option<&Secret>) -> bool {
    let (Some(cert), Some(key), Some(ca)) = (
        data(secret, CERT_KEY),
        data(secret, KEY_KEY),
        data(secret, CA_KEY),
    ) else {
        return false;
    };
    Pem::from_memory("Secret", cert, key, ca).is_ok_and(|pem| pem.lasts(RENEW_BEFORE))
}

/// Annotation on the members' certificate Secret the operator issues: the
/// hosts it names, so that a store given more shards gets one naming their
/// pods too.
pub const HOSTS_ANNOTATION: &str = "recipestore.dev/hosts";

/// Whether the members' certificate names `hosts`. One issued before the
/// annotation existed named an unsharded store's hosts.
fn names(secret: Option<&Secret>, hosts: &[String], shards: u16) -> bool {
    let annotated = secret
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(HOSTS_ANNOTATION));
    match annotated {
        Some(named) => *named == hosts.join(","),
        None => shards <= 1,
    }
}

/// The Secrets to apply so that an issuing store of `shards` shards has a
/// CA and certificates that last and name every shard's pods: nothing when
/// all do.
pub fn to_issue(
    tls: &StoreTls,
    topology: &Topology,
    shards: u16,
    owner: &OwnerReference,
    existing: &Secrets,
) -> Result<Vec<Secret>, TlsError> {
    if tls.issuer != Issuer::Operator {
        return Ok(Vec::new());
    }
    let ca = existing.ca.as_ref();
    let kept = match (data(ca, CA_KEY), data(ca, CA_PRIVATE_KEY)) {
        (Some(cert), Some(key)) => Authority::from_pem(
            &String::from_utf8_lossy(cert),
            &String::from_utf8_lossy(key),
        )
        .ok(),
        _ => None,
    };
    let mut issued = Vec::new();
    let (authority, new_ca) = match kept {
        Some(authority) => (authority, false),
        None => {
            let name = format!("RecipeStore {}/{} CA", topology.namespace, topology.name);
            let authority = Authority::generate(&name, CA_VALID_FOR)?;
            issued.push(secret(
                topology,
                owner,
                topology.tls_ca_secret(),
                [
                    (CA_KEY, authority.cert_pem()),
                    (CA_PRIVATE_KEY, authority.key_pem()),
                ],
            ));
            (authority, true)
        }
    };
    let ca_pem = authority.cert_pem().to_owned();
    let hosts = topology.tls_hosts(shards);
    // A new CA invalidates every certificate of the old one.
    let member = existing.member.as_ref();
    if new_ca || !lasts(member) || !names(member, &hosts, shards) {
        let member = authority.issue(recipestore_tls::MEMBER_NAME, &hosts, LEAF_VALID_FOR)?;
        let mut member = secret(
            topology,
            owner,
            tls.member_secret.clone(),
            [
                (CERT_KEY, member.cert.as_str()),
                (KEY_KEY, member.key.as_str()),
                (CA_KEY, ca_pem.as_str()),
            ],
        );
        member.metadata.annotations = Some(BTreeMap::from([(
            HOSTS_ANNOTATION.to_owned(),
            hosts.join(","),
        )]));
        issued.push(member);
    }
    if new_ca || !lasts(existing.admin.as_ref()) {
        let admin = authority.issue(recipestore_tls::ADMIN_NAME, &[], LEAF_VALID_FOR)?;
        issued.push(secret(
            topology,
            owner,
            tls.admin_secret.clone(),
            [
                (CERT_KEY, admin.cert.as_str()),
                (KEY_KEY, admin.key.as_str()),
                (CA_KEY, ca_pem.as_str()),
            ],
        ));
    }
    Ok(issued)
}

fn secret<const N: usize>(
    topology: &Topology,
    owner: &OwnerReference,
    name: String,
    entries: [(&str, &str); N],
) -> Secret {
    Secret {
        metadata: crate::build::object_meta(topology, name, owner),
        type_: Some("Opaque".to_owned()),
        data: Some(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// The volume of a certificate Secret, mounted at [`MOUNT`]. Kubernetes
/// updates its files in place when the Secret changes (no `subPath`).
pub fn volume(secret: &str) -> Volume {
    Volume {
        name: VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            // Readable by the node's group (fsGroup) only.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub fn volume_mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.to_owned(),
        mount_path: MOUNT.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// A file of the mounted Secret.
fn mounted(key: &str) -> String {
    format!("{MOUNT}/{key}")
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// The node's TLS flags.
pub fn node_env(tls: &StoreTls) -> Vec<EnvVar> {
    let mut vars = vec![
        env(CERT_ENV, mounted(CERT_KEY)),
        env("RECIPESTORE_TLS_KEY", mounted(KEY_KEY)),
        env("RECIPESTORE_TLS_CA", mounted(CA_KEY)),
    ];
    if tls.client_cert_auth {
        vars.push(env("RECIPESTORE_CLIENT_CERT_AUTH", "true".to_owned()));
    }
    vars
}

/// `recipectl`'s TLS flags, with the administrator's Secret mounted.
pub fn recipectl_env() -> Vec<EnvVar> {
    vec![
        env("RECIPESTORE_CACERT", mounted(CA_KEY)),
        env("RECIPESTORE_CERT", mounted(CERT_KEY)),
        env("RECIPESTORE_KEY", mounted(KEY_KEY)),
    ]
}

/// The Certificates cert-manager is asked for: the members' (naming every
/// one of `shards` shards' pods) and the administrators', each renewed by
/// cert-manager a month before it expires.
pub fn certificates(
    tls: &StoreTls,
    topology: &Topology,
    shards: u16,
    owner: &OwnerReference,
    api: &ApiResource,
) -> Vec<DynamicObject> {
    let Issuer::CertManager(issuer) = &tls.issuer else {
        return Vec::new();
    };
    let (ips, names): (Vec<String>, Vec<String>) = topology
        .tls_hosts(shards)
        .into_iter()
        .partition(|host| host.parse::<std::net::IpAddr>().is_ok());
    let certificate = |secret: &str, spec: serde_json::Value| {
        let mut object = DynamicObject::new(secret, api).within(&topology.namespace);
        object.metadata = crate::build::object_meta(topology, secret, owner);
        let mut spec = spec;
        spec["secretName"] = json!(secret);
        spec["duration"] = json!(format!("{}h", LEAF_VALID_FOR.as_secs() / 3600));
        spec["renewBefore"] = json!(format!("{}h", RENEW_BEFORE.as_secs() / 3600));
        spec["privateKey"] = json!({"rotationPolicy": "Always"});
        spec["issuerRef"] =
            json!({"name": issuer.name, "kind": issuer.kind, "group": issuer.group});
        object.data = json!({ "spec": spec });
        object
    };
    vec![
        certificate(
            &tls.member_secret,
            json!({
                "commonName": recipestore_tls::MEMBER_NAME,
                "dnsNames": names,
                "ipAddresses": ips,
                "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            }),
        ),
        certificate(
            &tls.admin_secret,
            json!({
                "commonName": recipestore_tls::ADMIN_NAME,
                "usages": ["digital signature", "key encipherment", "client auth"],
            }),
        ),
    ]
}

/// The admin API as the store needs it: over TLS with the administrator's
/// certificate when the store runs TLS.
pub fn admin_for(
    admin: &Arc<dyn crate::admin::NodeAdmin>,
    tls: Option<&StoreTls>,
    secrets: &Secrets,
) -> Arc<dyn crate::admin::NodeAdmin> {
    match tls {
        Some(_) => admin.clone().with_tls(admin_config(secrets)),
        None => admin.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "recipestore.dev/v1alpha1".into(),
            kind: "RecipeStore".into(),
            name: "recipes".into(),
            uid: "u".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }
    }

    fn issuing() -> StoreTls {
        decide(
            &TlsSpec::default(),
            &Topology::new("recipes", "kitchen"),
            None,
        )
        .unwrap()
        .unwrap()
    }

    fn by_name(secrets: Vec<Secret>) -> BTreeMap<String, Secret> {
        secrets
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s))
            .collect()
    }

    #[test]
    fn a_new_store_runs_tls_with_certificates_the_operator_issues() {
        let topology = Topology::new("recipes", "kitchen");
        let tls = issuing();
        assert_eq!(tls.issuer, Issuer::Operator);
        assert_eq!(tls.member_secret, "recipes-tls");
        let issued = by_name(to_issue(&tls, &topology, 1, &owner(), &Secrets::default()).unwrap());
        assert_eq!(
            issued.keys().collect::<Vec<_>>(),
            ["recipes-tls", "recipes-tls-admin", "recipes-tls-ca"]
        );
        let existing = Secrets {
            ca: issued.get("recipes-tls-ca").cloned(),
            member: issued.get("recipes-tls").cloned(),
            admin: issued.get("recipes-tls-admin").cloned(),
        };
        assert!(admin_config(&existing).is_some());
        // Read back, nothing is issued again.
        assert!(
            to_issue(&tls, &topology, 1, &owner(), &existing)
                .unwrap()
                .is_empty()
        );
        // A lost member certificate is issued again from the same CA.
        let lost = Secrets {
            member: None,
            ..existing.clone()
        };
        let again = by_name(to_issue(&tls, &topology, 1, &owner(), &lost).unwrap());
        assert_eq!(again.keys().collect::<Vec<_>>(), ["recipes-tls"]);
        let ca = |s: &Secret| s.data.as_ref().unwrap()[CA_KEY].clone();
        assert_eq!(ca(&again["recipes-tls"]), ca(existing.ca.as_ref().unwrap()));

        // More shards: their pods' names are not in it; issued again.
        let grown = by_name(to_issue(&tls, &topology, 3, &owner(), &existing).unwrap());
        assert_eq!(grown.keys().collect::<Vec<_>>(), ["recipes-tls"]);
        let hosts = &grown["recipes-tls"].metadata.annotations.as_ref().unwrap()[HOSTS_ANNOTATION];
        assert!(hosts.contains("*.recipes-s2-peers.kitchen.svc"), "{hosts}");
        let existing = Secrets {
            member: grown.get("recipes-tls").cloned(),
            ..existing
        };
        assert!(
            to_issue(&tls, &topology, 3, &owner(), &existing)
                .unwrap()
                .is_empty()
        );
        // Issued before the annotation existed, for an unsharded store: kept.
        let mut unannotated = existing.member.clone().unwrap();
        unannotated.metadata.annotations = None;
        let before = Secrets {
            member: Some(unannotated),
            ..existing.clone()
        };
        assert!(
            to_issue(&tls, &topology, 1, &owner(), &before)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            to_issue(&tls, &topology, 2, &owner(), &before)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_cert_manager_issuer_is_asked_for_both_certificates() {
        let topology = Topology::new("recipes", "kitchen");
        let spec = TlsSpec {
            issuer_ref: Some(IssuerRef {
                name: "ca".into(),
                kind: "ClusterIssuer".into(),
                group: "cert-manager.io".into(),
            }),
            ..TlsSpec::default()
        };
        let tls = decide(&spec, &topology, None).unwrap().unwrap();
        assert!(matches!(tls.issuer, Issuer::CertManager(_)));
        assert!(
            to_issue(&tls, &topology, 1, &owner(), &Secrets::default())
                .unwrap()
                .is_empty(),
            "the operator issues nothing itself"
        );
        let gvk = kube::core::GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
        let api = ApiResource::from_gvk_with_plural(&gvk, "certificates");
        let certificates = certificates(&tls, &topology, 1, &owner(), &api);
        let [member, admin] = certificates.as_slice() else {
            panic!("{certificates:?}");
        };
        let spec = |c: &DynamicObject| c.data["spec"].clone();
        assert_eq!(spec(member)["secretName"], "recipes-tls");
        assert_eq!(spec(member)["commonName"], recipestore_tls::MEMBER_NAME);
        assert_eq!(spec(member)["ipAddresses"], json!(["127.0.0.1"]));
        assert_eq!(spec(member)["dnsNames"][0], "*.recipes-peers.kitchen.svc");
        assert_eq!(spec(member)["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(spec(admin)["secretName"], "recipes-tls-admin");
        assert_eq!(spec(admin)["commonName"], recipestore_tls::ADMIN_NAME);
        let both = TlsSpec {
            secret_name: Some("a".into()),
            admin_secret_name: Some("b".into()),
            ..spec_with_issuer()
        };
        assert!(
            decide(&both, &topology, None)
                .unwrap_err()
                .contains("exclude each other")
        );
    }

    fn spec_with_issuer() -> TlsSpec {
        TlsSpec {
            issuer_ref: Some(IssuerRef {
                name: "ca".into(),
                kind: "Issuer".into(),
                group: "cert-manager.io".into(),
            }),
            ..TlsSpec::default()
        }
    }

    #[test]
    fn a_running_store_keeps_its_mode_and_a_switch_is_refused() {
        let topology = Topology::new("recipes", "kitchen");
        let plain = StatefulSet::default();
        assert_eq!(
            decide(&TlsSpec::default(), &topology, Some(&plain)),
            Ok(None)
        );
        let on = TlsSpec {
            enabled: Some(true),
            ..TlsSpec::default()
        };
        let refused = decide(&on, &topology, Some(&plain)).unwrap_err();
        assert!(
            refused.contains("cannot change on a running store"),
            "{refused}"
        );
        let half = TlsSpec {
            secret_name: Some("mine".into()),
            ..TlsSpec::default()
        };
        assert!(
            decide(&half, &topology, None)
                .unwrap_err()
                .contains("go together")
        );
        let given = TlsSpec {
            secret_name: Some("mine".into()),
            admin_secret_name: Some("mine-admin".into()),
            ..TlsSpec::default()
        };
        let tls = decide(&given, &topology, None).unwrap().unwrap();
        assert_eq!(tls.issuer, Issuer::Given);
        assert!(
            to_issue(&tls, &topology, 1, &owner(), &Secrets::default())
                .unwrap()
                .is_empty()
        );
    }
}
