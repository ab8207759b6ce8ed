//! The CronJob of scheduled backups (`spec.backup`): each run is
//! `recipectl snapshot save --into <claim or bucket> --keep N` against the
//! members' peer ports, writing one checked backup into the claim (mounted
//! at `/backups`) or the bucket (saved and checked in a scratch volume
//! first) and deleting the oldest beyond `retain`.
//!
//! Its pods carry labels of their own, not the store's selector labels: a
//! backup pod must never be taken for a member, counted by the
//! PodDisruptionBudget or sent client traffic by the client Service.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::object_meta;
use super::statefulset::{container_security_context, pod_security_context};
use crate::crd::S3Spec;
use crate::tls::StoreTls;
use crate::topology::{MANAGED_BY_LABEL, Topology};
use crate::{FIELD_MANAGER, RecipeStore};

/// Where the claim is mounted in the backup container.
pub const BACKUP_DIR: &str = "/backups";
/// recipectl's temporary directory, where a backup bound for a bucket is
/// saved and checked first (the root filesystem is read-only).
const SCRATCH_DIR: &str = "/tmp";
const VOLUME: &str = "backups";
/// Attempts of one scheduled backup before the run counts as failed.
const BACKOFF_LIMIT: i32 = 2;
/// A run that cannot start within this long after its time is skipped
/// (and counted as missed) rather than started late.
const STARTING_DEADLINE_SECONDS: i64 = 300;
/// Finished runs kept for `kubectl get jobs` and their logs.
const HISTORY: i32 = 3;

/// The CronJob for `spec.backup`, or `None` when the spec asks for none.
pub fn build(
    rs: &RecipeStore,
    topology: &Topology,
    owner: &OwnerReference,
    tls: Option<&StoreTls>,
) -> Option<CronJob> {
    let backup = rs.spec.backup.as_ref()?;
    let labels = pod_labels(topology);
    // The claim where the backups go, or scratch space for a bucket's.
    let (into, volume, env) = match (&backup.claim_name, &backup.s3) {
        (_, Some(s3)) => (
            s3_location(s3, ""),
            Volume {
                name: VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Some(s3_env(s3)),
        ),
        (claim, None) => (
            BACKUP_DIR.to_owned(),
            Volume {
                name: VOLUME.to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone().unwrap_or_default(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            },
            None,
        ),
    };
    let mount = if backup.s3.is_some() {
        SCRATCH_DIR
    } else {
        BACKUP_DIR
    };
    let mut volumes = vec![volume];
    let mut volume_mounts = vec![VolumeMount {
        name: VOLUME.to_owned(),
        mount_path: mount.to_owned(),
        ..VolumeMount::default()
    }];
    let mut env = env.unwrap_or_default();
    // Backups are an administrator's call on the peer port.
    if let Some(tls) = tls {
        volumes.push(crate::tls::volume(&tls.admin_secret));
        volume_mounts.push(crate::tls::volume_mount());
        env.extend(crate::tls::recipectl_env());
    }
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        security_context: Some(pod_security_context()),
        // recipectl talks to the members, never to the Kubernetes API.
        automount_service_account_token: Some(false),
        containers: vec![Container {
            name: "backup".to_owned(),
            image: Some(rs.spec.image.clone()),
            image_pull_policy: Some(rs.spec.image_pull_policy.as_str().to_owned()),
            command: Some(vec!["/usr/local/bin/recipectl".to_owned()]),
            args: Some(args(rs, topology, &into, backup.retain)),
            env: (!env.is_empty()).then_some(env),
            volume_mounts: Some(volume_mounts),
            security_context: Some(container_security_context()),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    Some(CronJob {
        metadata: object_meta(topology, topology.backup_cronjob(), owner),
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            suspend: Some(backup.suspend),
            // Two runs at once would only race for the same files.
            concurrency_policy: Some("Forbid".to_owned()),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(HISTORY),
            failed_jobs_history_limit: Some(HISTORY),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKOFF_LIMIT),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    })
}

/// Every member's peer address, in the order recipectl tries them: any
/// member serves a backup (it asks the leader for a read index first).
fn args(rs: &RecipeStore, topology: &Topology, into: &str, retain: u32) -> Vec<String> {
    let replicas = u64::try_from(rs.spec.replicas).unwrap_or(1).max(1);
    let peers: Vec<String> = (0..replicas)
        .map(|id| topology.member(id).peer_addr)
        .collect();
    vec![
        "--peers".to_owned(),
        peers.join(","),
        "snapshot".to_owned(),
        "save".to_owned(),
        "--into".to_owned(),
        into.to_owned(),
        "--keep".to_owned(),
        retain.to_string(),
    ]
}

/// recipectl's `s3://BUCKET/KEY` for `name` under the bucket's prefix (the
/// prefix itself for an empty name).
pub(super) fn s3_location(s3: &S3Spec, name: &str) -> String {
    let prefix = s3.prefix.trim_matches('/');
    let key = match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}/{name}"),
    };
    format!("s3://{}/{key}", s3.bucket)
}

/// recipectl's S3 settings, the keys from the Secret the spec names.
pub(super) fn s3_env(s3: &S3Spec) -> Vec<EnvVar> {
    let secret = |key: &str| EnvVar {
        name: key.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: s3.secret_name.clone(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    vec![
        value("RECIPESTORE_S3_ENDPOINT", &s3.endpoint),
        value("AWS_REGION", &s3.region),
        secret("AWS_ACCESS_KEY_ID"),
        secret("AWS_SECRET_ACCESS_KEY"),
    ]
}

fn pod_labels(topology: &Topology) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "recipestore-backup".to_owned(),
        ),
        (
            "app.kubernetes.io/instance".to_owned(),
            topology.name.clone(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "backup".to_owned(),
        ),
        (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
    ])
}
