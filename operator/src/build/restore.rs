//! A store created from a backup (`spec.restoreFrom`): each pod first runs
//! `recipectl snapshot restore-member` as an init container, which makes
//! its volume the data directory of one member of a new cluster holding
//! the backup's state. The cluster's id is the RecipeStore's own uid (a
//! UUID, the same for every member, new for every store), and its voters
//! the pods that existed when the store was created: the count is frozen
//! in `status.restoredMembers`, so a later scale-out neither changes the
//! template nor restores into the new pods (they start empty and join).
//! The init container does nothing on a volume that already holds a
//! node's data, so restarts and upgrades never restore again.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    Volume, VolumeMount,
};

use super::backup::{s3_env, s3_location};
use super::statefulset::{DATA_DIR, DATA_VOLUME, container_security_context};
use crate::RecipeStore;
use crate::topology::Topology;

/// Where the backup's claim is mounted, read-only, in the init container.
const BACKUP_DIR: &str = "/restore";
const VOLUME: &str = "restore-from";

/// How many members the store was created with from a backup, or `None`
/// when it was not created from one. A store that already had a cluster
/// before `restoreFrom` appeared is not restored ([`check`] refuses it).
pub fn members(rs: &RecipeStore) -> Option<u32> {
    rs.spec.restore_from.as_ref()?;
    let status = rs.status.as_ref();
    match status.and_then(|s| s.restored_members) {
        Some(members) => Some(members),
        None if status.and_then(|s| s.cluster_id.as_ref()).is_none() => {
            Some(u32::try_from(rs.spec.replicas).unwrap_or(1).max(1))
        }
        None => None,
    }
}

/// Refuses what the schema cannot: a file that is not a plain name in the
/// claim, and a restore asked of a store that already holds a cluster.
pub fn check(rs: &RecipeStore) -> Result<(), String> {
    let Some(restore) = &rs.spec.restore_from else {
        return Ok(());
    };
    let file = &restore.file;
    if restore.claim_name.is_some() == restore.s3.is_some() {
        return Err(
            "restoreFrom needs exactly one of claimName (a PersistentVolumeClaim) and s3 (a bucket)"
                .to_owned(),
        );
    }
    if file.is_empty() || file.contains('/') || file == "." || file == ".." {
        return Err(format!(
            "restoreFrom.file {file:?} must name a backup at the root of the claim or under the bucket's prefix, such as backup-20261206T060000.000Z.rsback"
        ));
    }
    if members(rs).is_none() {
        return Err(
            "restoreFrom only applies when a store is created: this store already holds its cluster; \
             create a new RecipeStore to restore a backup"
                .to_owned(),
        );
    }
    Ok(())
}

/// The init container, and the volume of the backup's claim when it is in
/// one, for a store created from a backup.
pub fn init(rs: &RecipeStore, topology: &Topology) -> Option<(Container, Option<Volume>)> {
    let restore = rs.spec.restore_from.as_ref()?;
    let members = members(rs)?;
    let cluster_id = rs.metadata.uid.clone()?;
    let (file, env, volume) = match (&restore.claim_name, &restore.s3) {
        (_, Some(s3)) => (s3_location(s3, &restore.file), Some(s3_env(s3)), None),
        (claim, None) => (
            format!("{BACKUP_DIR}/{}", restore.file),
            None,
            Some(Volume {
                name: VOLUME.to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone().unwrap_or_default(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }),
        ),
    };
    let mut args = vec![
        "snapshot".to_owned(),
        "restore-member".to_owned(),
        file,
        "--data-dir".to_owned(),
        DATA_DIR.to_owned(),
        "--cluster-id".to_owned(),
        cluster_id,
    ];
    for id in 0..u64::from(members) {
        let member = topology.member(id);
        args.push("--member".to_owned());
        args.push(format!("{id}={},{}", member.peer_addr, member.client_addr));
    }
    let container = Container {
        name: "restore".to_owned(),
        image: Some(rs.spec.image.clone()),
        image_pull_policy: Some(rs.spec.image_pull_policy.as_str().to_owned()),
        command: Some(vec!["/usr/local/bin/recipectl".to_owned()]),
        args: Some(args),
        env: Some(
            [EnvVar {
                name: "POD_NAME".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".to_owned(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }]
            .into_iter()
            .chain(env.into_iter().flatten())
            .collect(),
        ),
        volume_mounts: Some(
            [VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: DATA_DIR.to_owned(),
                ..VolumeMount::default()
            }]
            .into_iter()
            .chain(volume.as_ref().map(|_| VolumeMount {
                name: VOLUME.to_owned(),
                mount_path: BACKUP_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }))
            .collect(),
        ),
        security_context: Some(container_security_context()),
        ..Container::default()
    };
    Some((container, volume))
}
