//! The CronJob of scheduled backups (`spec.backup`): each run is
//! `recipectl snapshot save --into /backups --keep N` against the members'
//! peer ports, writing one checked backup file into the claim and deleting
//! the oldest beyond `retain`.
//!
//! Its pods carry labels of their own, not the store's selector labels: a
//! backup pod must never be taken for a member, counted by the
//! PodDisruptionBudget or sent client traffic by the client Service.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::object_meta;
use super::statefulset::{container_security_context, pod_security_context};
use crate::crd::BackupSpec;
use crate::topology::{MANAGED_BY_LABEL, Topology};
use crate::{FIELD_MANAGER, RecipeStore};

/// Where the claim is mounted in the backup container.
pub const BACKUP_DIR: &str = "/backups";
const VOLUME: &str = "backups";
/// Attempts of one scheduled backup before the run counts as failed.
const BACKOFF_LIMIT: i32 = 2;
/// A run that cannot start within this long after its time is skipped
/// (and counted as missed) rather than started late.
const STARTING_DEADLINE_SECONDS: i64 = 300;
/// Finished runs kept for `kubectl get jobs` and their logs.
const HISTORY: i32 = 3;

/// The CronJob for `spec.backup`, or `None` when the spec asks for none.
pub fn build(rs: &RecipeStore, topology: &Topology, owner: &OwnerReference) -> Option<CronJob> {
    let backup = rs.spec.backup.as_ref()?;
    let labels = pod_labels(topology);
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        security_context: Some(pod_security_context()),
        containers: vec![Container {
            name: "backup".to_owned(),
            image: Some(rs.spec.image.clone()),
            image_pull_policy: Some(rs.spec.image_pull_policy.as_str().to_owned()),
            command: Some(vec!["/usr/local/bin/recipectl".to_owned()]),
            args: Some(args(rs, topology, backup)),
            volume_mounts: Some(vec![VolumeMount {
                name: VOLUME.to_owned(),
                mount_path: BACKUP_DIR.to_owned(),
                ..VolumeMount::default()
            }]),
            security_context: Some(container_security_context()),
            ..Container::default()
        }],
        volumes: Some(vec![Volume {
            name: VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: backup.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        }]),
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
fn args(rs: &RecipeStore, topology: &Topology, backup: &BackupSpec) -> Vec<String> {
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
        BACKUP_DIR.to_owned(),
        "--keep".to_owned(),
        backup.retain.to_string(),
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
