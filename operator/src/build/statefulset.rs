//! The StatefulSet of RecipeStore nodes.
//!
//! Environment of the node container (flags of `recipestore-node`):
//!
//! | variable | value |
//! |---|---|
//! | `POD_NAME`, `RECIPESTORE_POD_NAME` | the pod name; the node takes its id from the ordinal |
//! | `POD_NAMESPACE` | the namespace |
//! | `RECIPESTORE_DATA_DIR` | `/var/lib/recipestore` (the volume claim) |
//! | `RECIPESTORE_CLIENT_ADDR` | `0.0.0.0:7070` |
//! | `RECIPESTORE_PEER_ADDR` | `0.0.0.0:7071` |
//! | `RECIPESTORE_HTTP_ADDR` | `0.0.0.0:9090` |
//! | `RECIPESTORE_ADVERTISE_ADDR` | `<pod>.<name>-peers.<namespace>.svc` (ports are appended by the node) |
//! | `RECIPESTORE_LOG_FORMAT` | `json`, for log collectors |
//!
//! | `RECIPESTORE_TLS_CERT`, `_KEY`, `_CA`, `RECIPESTORE_CLIENT_CERT_AUTH` | with TLS: the members' Secret's files (see [`crate::tls`]) |
//!
//! plus every key of the ConfigMap (see [`super::config_map`]) through `envFrom`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::tls::StoreTls;
use crate::topology::{
    CLIENT_PORT, CLIENT_PORT_NAME, HTTP_PORT, HTTP_PORT_NAME, PEER_PORT, PEER_PORT_NAME, Topology,
};
use crate::{Error, RecipeStore, Result};

/// Mount point of the data volume.
pub const DATA_DIR: &str = "/var/lib/recipestore";
/// Name of the volume claim template (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// Name of the node container.
pub const CONTAINER: &str = "node";
/// Annotation on the pod template that changes with the node configuration,
/// so that a ConfigMap change rolls the pods (env vars are read at start).
pub const CONFIG_HASH_ANNOTATION: &str = "recipestore.dev/config-hash";
/// Unprivileged uid/gid of the node process (distroless `nonroot`).
const NODE_UID: i64 = 65532;
/// A leader hands leadership over, then drains, before it exits.
const TERMINATION_GRACE_SECONDS: i64 = 60;

pub fn build(
    rs: &RecipeStore,
    topology: &Topology,
    owner: &OwnerReference,
    replicas: u32,
    config_map: &ConfigMap,
    tls: Option<&StoreTls>,
) -> Result<StatefulSet> {
    let spec = &rs.spec;
    let replicas = i32::try_from(replicas)
        .map_err(|_| Error::InvalidSpec(format!("{replicas} replicas is too many")))?;
    let retention = &spec.persistent_volume_claim_retention_policy;
    let selector = topology.selector_labels();

    let template_meta = ObjectMeta {
        labels: Some(topology.pod_labels()),
        annotations: Some(BTreeMap::from([(
            CONFIG_HASH_ANNOTATION.to_owned(),
            config_hash(config_map.data.as_ref()),
        )])),
        ..ObjectMeta::default()
    };

    let mut volumes = vec![Volume {
        // Writable scratch space under a read-only root filesystem.
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    volumes.extend(tls.map(|tls| crate::tls::volume(&tls.member_secret)));
    let restore = super::restore::init(rs, topology).map(|(container, volume)| {
        volumes.extend(volume);
        vec![container]
    });
    let pod_spec = PodSpec {
        init_containers: restore,
        containers: vec![container(rs, topology, tls)],
        volumes: Some(volumes),
        security_context: Some(pod_security_context()),
        // Nodes never call the Kubernetes API: no token to steal.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: Some(
            spec.placement
                .affinity
                .clone()
                .unwrap_or_else(|| spread_over_hosts(topology)),
        ),
        node_selector: non_empty_map(&spec.placement.node_selector),
        tolerations: non_empty_vec(&spec.placement.tolerations),
        topology_spread_constraints: non_empty_vec(&spec.placement.topology_spread_constraints),
        ..PodSpec::default()
    };

    Ok(StatefulSet {
        metadata: object_meta(topology, topology.statefulset(), owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(topology.peer_service()),
            // Parallel: after a full outage every pod must start at once, or
            // ordinal 0 waits for a quorum that OrderedReady never lets start.
            // Membership is ordered by the operator, not by pod creation.
            pod_management_policy: Some("Parallel".to_owned()),
            // The operator rolls the pods itself (`crate::rollout`): one
            // member at a time, the leader last, gated on the nodes' own
            // health; the StatefulSet controller's roll knows only ordinals
            // and readiness.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![volume_claim(rs)]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.when_deleted.as_str().to_owned()),
                    when_scaled: Some(retention.when_scaled.as_str().to_owned()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn container(rs: &RecipeStore, topology: &Topology, tls: Option<&StoreTls>) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    let mut env = vec![
        EnvVar {
            name: "POD_NAME".to_owned(),
            value_from: Some(field("metadata.name")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "POD_NAMESPACE".to_owned(),
            value_from: Some(field("metadata.namespace")),
            ..EnvVar::default()
        },
        value("RECIPESTORE_POD_NAME", "$(POD_NAME)"),
        value("RECIPESTORE_DATA_DIR", DATA_DIR),
        value("RECIPESTORE_CLIENT_ADDR", &format!("0.0.0.0:{CLIENT_PORT}")),
        value("RECIPESTORE_PEER_ADDR", &format!("0.0.0.0:{PEER_PORT}")),
        value("RECIPESTORE_HTTP_ADDR", &format!("0.0.0.0:{HTTP_PORT}")),
        value("RECIPESTORE_LOG_FORMAT", "json"),
        value(
            "RECIPESTORE_ADVERTISE_ADDR",
            &format!(
                "$(POD_NAME).{}.$(POD_NAMESPACE).svc",
                topology.peer_service()
            ),
        ),
    ];
    let mut volume_mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ];
    if let Some(tls) = tls {
        env.extend(crate::tls::node_env(tls));
        volume_mounts.push(crate::tls::volume_mount());
    }
    Container {
        name: CONTAINER.to_owned(),
        image: Some(rs.spec.image.clone()),
        image_pull_policy: Some(rs.spec.image_pull_policy.as_str().to_owned()),
        ports: Some(vec![
            container_port(CLIENT_PORT_NAME, CLIENT_PORT),
            container_port(PEER_PORT_NAME, PEER_PORT),
            container_port(HTTP_PORT_NAME, HTTP_PORT),
        ]),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: topology.config_map(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        resources: rs.spec.resources.clone(),
        // Liveness only asks "is the process serving": a node without a
        // leader is alive and must not be restarted for it.
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // Readiness takes the node out of the client Service while it cannot serve.
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        volume_mounts: Some(volume_mounts),
        security_context: Some(container_security_context()),
        ..Container::default()
    }
}

/// The node image's unprivileged identity, which also owns the volumes it
/// writes (`fsGroup`): for the nodes and for the backup jobs.
pub(super) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NODE_UID),
        run_as_group: Some(NODE_UID),
        fs_group: Some(NODE_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// No privilege, no capability, nothing written outside the volumes.
pub(super) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(HTTP_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// Default placement: prefer one node per host, so that losing a host costs
/// one vote. Preferred, not required: a small cluster must still schedule.
fn spread_over_hosts(topology: &Topology) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(topology.selector_labels()),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn volume_claim(rs: &RecipeStore) -> PersistentVolumeClaim {
    let storage = &rs.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// FNV-1a over the sorted key/value pairs: stable across processes and
/// releases, unlike `std`'s hasher.
pub fn config_hash(data: Option<&BTreeMap<String, String>>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    // The member told to force a new cluster is restarted alone; the
    // others, lost or not, are not rolled for it. Settings the nodes take
    // while running are given to them, not rolled either.
    let rolled = data.into_iter().flatten().filter(|(k, _)| {
        *k != super::config_map::FORCE_NEW_CLUSTER
            && !recipestore_settings::RELOADABLE_ENV.contains(&k.as_str())
    });
    for (k, v) in rolled {
        for byte in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

fn non_empty_vec<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}
