//! The `RecipeStore` custom resource: spec with documented defaults, status,
//! and the validation rules the API server enforces (schema + CEL).
//!
//! Defaults live in the schema (via `#[serde(default)]`) so that the API server
//! fills them in and `kubectl get -o yaml` shows what the operator acts on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use recipestore_settings::{Cache, NodeSettings, Queues, Raft, Shedding};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every RecipeStore resource.
pub const GROUP: &str = "recipestore.dev";

/// Desired state of a RecipeStore cluster.
// Repeated `printcolumn(type_ = ..)` keys are distinct columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "recipestore.dev",
    version = "v1alpha1",
    kind = "RecipeStore",
    namespaced,
    shortname = "rstore",
    status = "RecipeStoreStatus",
    doc = "A Raft-replicated recipe store run as a StatefulSet of RecipeStore nodes.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of voters of each shard"
    ),
    printcolumn(
        name = "Shards",
        type_ = "integer",
        json_path = ".spec.shards",
        description = "Desired number of shards (Raft groups)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready pods of shard 0"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Pod of shard 0's Raft leader"
    ),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedMembers",
        description = "Members running the StatefulSet's update revision"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.shards) || self.shards == 1 || !has(self.backup)"
).message(
    "backup is not supported on a store of several shards: a backup holds one Raft group's recipes; remove spec.backup or set spec.shards to 1"
))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.shards) || self.shards == 1 || !has(self.restoreFrom)"
).message(
    "restoreFrom is not supported on a store of several shards: a backup holds one Raft group's recipes; restore into a store of 1 shard"
))]
pub struct RecipeStoreSpec {
    /// Number of Raft voters (and pods) of each shard. Odd numbers
    /// tolerate the most failures per pod: 3 survives one failure, 5
    /// survives two.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,

    /// Number of shards: Raft groups of `replicas` members each, every one
    /// owning a share of the 1024 hash slots recipe names fall in. A store
    /// created with several is given an even split of the slots; one of a
    /// single shard is never placed and serves every slot. Changing it on a
    /// running store creates the added shards (they own no slots until
    /// slots move to them) and never removes a shard: see the
    /// `SlotsPending` condition.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 1024))]
    pub shards: i32,

    /// Container image of the RecipeStore node.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Pull policy of the node image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// CPU and memory requests and limits of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent storage of every node. Immutable: volume claim templates of a
    /// StatefulSet cannot change after creation.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message(
        "storage is immutable: a StatefulSet cannot change its volume claims; create a new RecipeStore to change size or class"
    ))]
    pub storage: StorageSpec,

    // The node settings: one type each, shared with the node's flags and
    // the ConfigMap (crate recipestore-settings).
    /// Raft timings.
    #[serde(default)]
    pub raft: Raft,

    /// Load shedding policy of the nodes.
    #[serde(default)]
    pub shedding: Shedding,

    /// Request queue sizes and worker pools of the nodes.
    #[serde(default)]
    pub queues: Queues,

    /// Read cache of every node.
    #[serde(default)]
    pub cache: Cache,

    /// Prometheus integration.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Where the pods may run.
    #[serde(default)]
    pub placement: PlacementSpec,

    /// What happens to the nodes' volumes when the RecipeStore is deleted or scaled in.
    #[serde(default)]
    pub persistent_volume_claim_retention_policy: PvcRetentionPolicy,

    /// TLS on the nodes' gRPC ports.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Scheduled backups; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Create the store from a backup instead of empty: every recipe at its
    /// version, in a new cluster of `replicas` members. Read when the store
    /// is created; refused on a store that already holds its cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreSpec>,
}

/// TLS on the nodes' gRPC ports: mutual TLS between members (the peer port
/// takes members, and administrators on its admin API, only), TLS to
/// clients. The HTTP port (metrics, health) stays plaintext.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// TLS on or off. Unset: on for a new store; a running store keeps
    /// what it runs. A running store cannot be switched, as its members
    /// would stop understanding each other mid-roll: back it up and
    /// restore it into a new store instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// A Secret (`tls.crt`, `tls.key`, `ca.crt`) with the members'
    /// certificate: common name `recipestore-member`, naming
    /// `*.<store>-peers.<namespace>.svc` (and, with shards,
    /// `*.<store>-s<k>-peers.<namespace>.svc` of each shard k from 1) and
    /// the client Service. Unset: the
    /// operator issues it, from a CA it keeps in `<store>-tls-ca`, into
    /// `<store>-tls`, and renews it before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// With `secretName`: a Secret (`tls.crt`, `tls.key`, `ca.crt`) with a
    /// `recipestore-admin` certificate of the same CA, which the operator
    /// and backup jobs present. Unset: the operator's `<store>-tls-admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret_name: Option<String>,

    /// A cert-manager issuer to issue the certificates from, instead of the
    /// operator's own CA; needs cert-manager's Certificate API. The
    /// operator asks for `<store>-tls` and `<store>-tls-admin` through
    /// Certificates, and cert-manager renews them. The issuer must put
    /// `ca.crt` in the Secrets (a CA or Vault issuer does). Not with
    /// `secretName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// Require a certificate of the CA from every client of the client port.
    #[serde(default)]
    pub client_cert_auth: bool,
}

/// A cert-manager issuer.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The issuer's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` (in the store's namespace) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    /// The issuer's API group.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}

/// A backup in a PersistentVolumeClaim or an S3-compatible bucket (where
/// scheduled backups go, say): one of `claimName` and `s3`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The claim holding the backup; mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// The bucket holding the backup, under its prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// The backup's name at the root of the claim, or under the bucket's
    /// prefix, such as `backup-20261206T060000.000Z.rsback`.
    #[schemars(length(min = 1))]
    pub file: String,
}

/// Backups on a schedule, each a consistent snapshot of every recipe taken
/// at a linearizable point (`recipectl snapshot save`), written by a
/// CronJob into a PersistentVolumeClaim or an S3-compatible bucket (one of
/// `claimName` and `s3`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take a backup, as a CronJob schedule (`0 */6 * * *`, `@daily`).
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// Backups to keep: after each successful backup the oldest beyond
    /// this many are deleted (default 7).
    #[serde(default = "default_backups_retained")]
    #[schemars(range(min = 1, max = 1000))]
    pub retain: u32,
    /// An existing PersistentVolumeClaim the backups are written to, as
    /// `backup-<UTC time>.rsback` files at its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// An S3-compatible bucket the backups are written to, as
    /// `<prefix>/backup-<UTC time>.rsback` objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// Pause the schedule without forgetting it.
    #[serde(default)]
    pub suspend: bool,
}

/// A bucket of an S3-compatible service, and the Secret with its keys.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// The service's URL, such as `https://s3.eu-west-1.amazonaws.com` or
    /// `http://minio.storage:9000`; requests are path-style.
    #[schemars(length(min = 1))]
    pub endpoint: String,
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// The key prefix backups go under (default: none, the bucket's root).
    #[serde(default)]
    pub prefix: String,
    /// The bucket's region (default `us-east-1`).
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// A Secret in the store's namespace with the keys `AWS_ACCESS_KEY_ID`
    /// and `AWS_SECRET_ACCESS_KEY`; the operator never reads it, the
    /// backup and restore containers get it as environment.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// Image pull policy of the node container.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Persistent volume of every node.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume (default `10Gi`).
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Prometheus integration.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// ServiceMonitor for the Prometheus operator.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
}

/// ServiceMonitor settings. The ServiceMonitor is created only when the
/// `monitoring.coreos.com` CRD is installed in the cluster.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create a ServiceMonitor (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Scrape interval, e.g. `15s` (default: Prometheus' own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitor, e.g. the label your Prometheus selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Pod placement. Pods of one RecipeStore always prefer distinct hosts; these
/// settings add to that.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default preferred anti-affinity on `kubernetes.io/hostname` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// Retention of the nodes' PersistentVolumeClaims.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// On deletion of the RecipeStore (default Retain: data outlives a mistaken delete).
    #[serde(default = "retain")]
    pub when_deleted: PvcRetention,
    /// On scale-in (default Delete: a removed member's log is of no use, and a
    /// member added later catches up from a snapshot).
    #[serde(default = "delete")]
    pub when_scaled: PvcRetention,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvcRetention {
    Retain,
    Delete,
}

impl PvcRetention {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}

fn default_replicas() -> i32 {
    3
}
fn default_shards() -> i32 {
    1
}
fn default_image() -> String {
    "ghcr.io/recipestore/recipestore-node:latest".to_owned()
}
fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_owned())
}
fn default_s3_region() -> String {
    "us-east-1".to_owned()
}
fn default_backups_retained() -> u32 {
    7
}
fn default_true() -> bool {
    true
}
fn retain() -> PvcRetention {
    PvcRetention::Retain
}
fn delete() -> PvcRetention {
    PvcRetention::Delete
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

impl RecipeStoreSpec {
    /// The settings every node of this store runs with.
    pub fn node_settings(&self) -> NodeSettings {
        NodeSettings {
            raft: self.raft.clone(),
            shedding: self.shedding.clone(),
            queues: self.queues.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: None,
            labels: BTreeMap::new(),
        }
    }
}

impl Default for PvcRetentionPolicy {
    fn default() -> Self {
        Self {
            when_deleted: retain(),
            when_scaled: delete(),
        }
    }
}

/// Observed state of a RecipeStore, computed from the StatefulSet, the pods and
/// the nodes' own view of the Raft cluster on every reconcile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecipeStoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the StatefulSet.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods of the StatefulSet.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, for the scale subresource.
    #[serde(default)]
    pub selector: String,
    /// Pod name of the current Raft leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Current Raft term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Identity of the Raft cluster, set once it is initialized. Nodes that
    /// report another cluster id are fenced, never joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The member restarted as the only voter of its cluster to recover a
    /// lost quorum, while it is (the `recipestore.dev/force-recovery`
    /// annotation names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forcing_new_cluster: Option<u64>,
    /// Members of the Raft cluster as the leader sees them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The StatefulSet revision the operator rolls the pods onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The revision the pods not rolled yet run; the update revision once
    /// every member runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Members whose pod runs the update revision.
    #[serde(default)]
    pub updated_members: u32,
    /// The member a rolling upgrade is restarting or waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_member: Option<u64>,
    /// Members the store was created with from `spec.restoreFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_members: Option<u32>,
    /// Scheduled backups, as their CronJob reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// Each shard of a store of several (shard 0 included; the fields
    /// above describe shard 0); empty for a store of one shard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["shard".into()]))]
    pub shards: Vec<ShardStatus>,
    /// Which shard serves which hash slots now, and the split
    /// `spec.shards` asks for; absent for a store of one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStatus>,
    #[serde(default)]
    pub phase: Phase,
    /// `Available`, `Progressing` and `Degraded`, one of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One shard: its Raft group and its StatefulSet.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard: u16,
    /// The shard's StatefulSet (and PodDisruptionBudget).
    pub stateful_set: String,
    /// Identity of the shard's Raft cluster, once initialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Pod name of the shard's Raft leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Voters of the shard's group as its leader sees them.
    pub voters: u32,
    /// Pods of the shard's StatefulSet, and the ready ones among them.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Hash slots the shard's group serves.
    pub slots: u32,
    /// Epoch of the placement the shard's group holds; absent while it
    /// holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_epoch: Option<u64>,
}

/// The store's slot map: the owner of each hash slot now and in the even
/// split of `spec.shards`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// The highest placement epoch a group holds; absent before the store
    /// is placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The slots each shard serves now. Empty while a new store's shards
    /// wait to be placed: no shard serves any slot yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current: Vec<SlotRanges>,
    /// The slots each shard serves once `spec.shards` is reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<SlotRanges>,
    /// Slots whose owner differs between `current` and `target`.
    #[serde(default)]
    pub slots_to_move: u32,
}

/// The hash slots one shard owns.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlotRanges {
    pub shard: u16,
    /// How many slots.
    pub slots: u32,
    /// The slots as inclusive ranges, such as `0-341,700-711`.
    pub ranges: String,
}

/// Scheduled backups, from the CronJob's status.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the last backup was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last backup finished successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
}

/// One member of the Raft cluster.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Node id (the StatefulSet ordinal).
    pub id: u64,
    /// Peer address (`host:port`).
    pub address: String,
    pub role: MemberRole,
    /// Whether the member's log is close to the leader's.
    pub caught_up: bool,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    Learner,
}

/// Coarse summary of the cluster, for `kubectl get`.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Resources are being created; no node has answered yet.
    #[default]
    Pending,
    /// Waiting to bootstrap the Raft cluster on ordinal 0.
    Initializing,
    /// All desired voters are members and a leader is elected.
    Running,
    /// Members are being added or removed.
    Scaling,
    /// Pods are being rolled onto a new revision, one at a time.
    Updating,
    /// No leader, a fenced node, or another condition that needs attention.
    Degraded,
    /// The spec is invalid and the store was never created. A refused
    /// change to a running store shows in the Degraded condition instead.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Initializing => "Initializing",
            Self::Running => "Running",
            Self::Scaling => "Scaling",
            Self::Updating => "Updating",
            Self::Degraded => "Degraded",
            Self::Failed => "Failed",
        }
    }
}
