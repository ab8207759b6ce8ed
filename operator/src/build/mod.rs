//! Pure builders: from a `RecipeStore` (and the replica count the membership
//! planner allows) to the objects the operator applies. No client, no I/O.

pub mod backup;
pub mod config_map;
pub mod pdb;
pub mod restore;
pub mod service;
pub mod service_monitor;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{ApiResource, DynamicObject};

use crate::tls::StoreTls;
use crate::topology::Topology;
use crate::{Error, RecipeStore, Result};

/// Everything applied for one RecipeStore, in apply order: configuration and
/// network identity before the pods that need them.
#[derive(Clone, Debug)]
pub struct Resources {
    pub config_map: ConfigMap,
    /// One Service for the clients of every shard.
    pub client_service: Service,
    /// Each shard's own objects, shard 0 first.
    pub shards: Vec<ShardResources>,
    /// Only when the ServiceMonitor CRD exists and monitoring asks for it.
    pub service_monitor: Option<DynamicObject>,
    /// Only when `spec.backup` asks for scheduled backups.
    pub backup: Option<CronJob>,
}

/// The objects of one shard: its Raft group's pods and their names.
#[derive(Clone, Debug)]
pub struct ShardResources {
    pub peer_service: Service,
    pub pdb: PodDisruptionBudget,
    pub statefulset: StatefulSet,
}

/// Builds every owned object of a store of `replicas.len()` shards, shard
/// `k` of `replicas[k]` pods. The counts come from each shard's membership
/// plan, not straight from the spec: on scale-in a StatefulSet shrinks only
/// after the member is removed.
pub fn build(
    rs: &RecipeStore,
    replicas: &[u32],
    forcing: Option<u64>,
    service_monitor: Option<&ApiResource>,
    tls: Option<&StoreTls>,
) -> Result<Resources> {
    let topology = topology(rs)?;
    let owner = rs
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let sharded = replicas.len() > 1;
    let config_map = config_map::build(rs, &topology, &owner, forcing);
    let shards = replicas
        .iter()
        .enumerate()
        .map(|(k, &replicas)| {
            let shard =
                topology
                    .shard(u16::try_from(k).map_err(|_| {
                        Error::InvalidSpec(format!("{} shards is too many", k + 1))
                    })?);
            Ok(ShardResources {
                peer_service: service::build_peer(&shard, &owner),
                pdb: pdb::build(&shard, &owner),
                statefulset: statefulset::build(rs, &shard, &owner, replicas, &config_map, tls)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Resources {
        client_service: service::build_client(&topology, &owner, sharded),
        shards,
        backup: backup::build(rs, &topology, &owner, tls),
        service_monitor: service_monitor
            .filter(|_| rs.spec.monitoring.service_monitor.enabled)
            .map(|api| service_monitor::build(rs, &topology, &owner, api, sharded)),
        config_map,
    })
}

/// Names and addresses of a stored RecipeStore.
pub fn topology(rs: &RecipeStore) -> Result<Topology> {
    let name = rs
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = rs
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    Ok(Topology::new(name, namespace))
}

/// Metadata every owned object starts from.
pub(crate) fn object_meta(
    topology: &Topology,
    name: impl Into<String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(topology.namespace.clone()),
        labels: Some(topology.labels()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests;
