//! Node configuration: one typed struct, filled from flags or their
//! `RECIPESTORE_*` environment equivalents, validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::ValueEnum;

use recipestore_settings::{NodeSettings, SettingsError};

use crate::lifecycle::SnapshotPolicy;
use crate::overload::cpu::Fallback;

/// Default largest recipe content: 1 MiB.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Why a node's flags cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("a node id is required: pass --id N or --pod-name NAME-N")]
    NoNodeId,
    #[error("pod name {0:?} does not end in -<ordinal>")]
    PodName(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("--max-content-bytes ({0}) must be between 1 and 33554432")]
    MaxContentBytes(usize),
    #[error("{0} must be positive")]
    Zero(&'static str),
    #[error("invalid Raft settings: {0}")]
    Raft(String),
}

/// A RecipeStore node.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "recipestore-node",
    version,
    about = "A RecipeStore node: Raft-replicated recipe storage",
    // A flag given twice takes its last value, so a wrapper's defaults can
    // be overridden by appending flags.
    args_override_self = true
)]
pub struct NodeConfig {
    /// Node id, unique in the cluster. Mutually exclusive with --pod-name.
    #[arg(long, env = "RECIPESTORE_ID", conflicts_with = "pod_name")]
    pub id: Option<u64>,

    /// StatefulSet pod name (e.g. `store-2`); the node id is its ordinal.
    #[arg(long, env = "RECIPESTORE_POD_NAME")]
    pub pod_name: Option<String>,

    /// Directory for the Raft log, state machine, snapshots and identity stamp.
    #[arg(long, env = "RECIPESTORE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Listen address of the client gRPC API.
    #[arg(long, env = "RECIPESTORE_CLIENT_ADDR", default_value = "0.0.0.0:7070")]
    pub client_addr: SocketAddr,

    /// Listen address of the peer gRPC API (Raft, admin, forwarding).
    #[arg(long, env = "RECIPESTORE_PEER_ADDR", default_value = "0.0.0.0:7071")]
    pub peer_addr: SocketAddr,

    /// Listen address of the HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "RECIPESTORE_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,

    /// Host name or IP other nodes and clients use to reach this node; the
    /// client and peer ports are appended. Defaults to the listen IP, or the
    /// machine's host name when listening on all interfaces.
    #[arg(long, env = "RECIPESTORE_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Refuse to start unless the data directory is new or belongs to this cluster.
    #[arg(long, env = "RECIPESTORE_CLUSTER_ID")]
    pub cluster_id: Option<String>,

    /// Largest accepted recipe content, in bytes.
    #[arg(long, env = "RECIPESTORE_MAX_CONTENT_BYTES", default_value_t = DEFAULT_MAX_CONTENT_BYTES)]
    pub max_content_bytes: usize,

    /// Build a snapshot once this many log entries were applied since the
    /// last one, and as many as half the recipes the last one held (a
    /// snapshot rewrites the whole state).
    #[arg(long, env = "RECIPESTORE_SNAPSHOT_LOGS", default_value_t = 10_000)]
    pub snapshot_logs: u64,

    /// Also build a snapshot this often when entries were applied since the last (0 disables).
    #[arg(
        long,
        env = "RECIPESTORE_SNAPSHOT_INTERVAL_SECS",
        default_value_t = 600
    )]
    pub snapshot_interval_secs: u64,

    /// Log entries kept behind a snapshot, so a briefly lagging follower
    /// catches up from the log rather than by snapshot.
    #[arg(long, env = "RECIPESTORE_LOGS_TO_KEEP", default_value_t = 1_000)]
    pub logs_to_keep: u64,

    /// Start as the only voter of this node's cluster, keeping its data and
    /// cluster id: for the most up-to-date member left after a majority of
    /// the voters was lost for good. With a node id (`=2`), only that node
    /// does and the others ignore it (for a setting a StatefulSet's pods
    /// share). Applied once (the data directory records it); add the other
    /// members back, then remove the flag.
    #[arg(
        long,
        env = "RECIPESTORE_FORCE_NEW_CLUSTER",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "ID",
        value_parser = parse_force_new_cluster
    )]
    pub force_new_cluster: Option<ForceNewCluster>,

    /// Readiness requires the applied index to be within this many entries of the commit index.
    #[arg(long, env = "RECIPESTORE_READY_MAX_APPLY_LAG", default_value_t = 1_000)]
    pub ready_max_apply_lag: u64,

    /// Log output format.
    #[arg(
        long,
        env = "RECIPESTORE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub tls: TlsConfig,

    /// The settings a RecipeStore resource exposes (Raft timings, load
    /// shedding, queues, cache): defaults and rules shared with the CRD.
    #[command(flatten)]
    pub settings: NodeSettings,

    #[command(flatten)]
    pub sampling: SamplingConfig,
}

/// TLS on the gRPC ports. With the three files, the peer port speaks
/// mutual TLS only and the client port TLS; the HTTP port (metrics, health)
/// stays plaintext. The files are read again when they change, so rotated
/// certificates (a Secret Kubernetes updates) serve new connections without
/// a restart.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsConfig {
    /// This node's certificate (PEM), used on both gRPC ports and towards
    /// peers; its common name must be `recipestore-member`.
    #[arg(long, env = "RECIPESTORE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RECIPESTORE_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,

    /// The cluster CA (PEM): peers, administrators and client certificates
    /// must be signed by it.
    #[arg(long, env = "RECIPESTORE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// Require a certificate signed by the CA from every client of the
    /// client port (by default a client may present one or none).
    #[arg(long, env = "RECIPESTORE_CLIENT_CERT_AUTH", requires = "tls_cert")]
    pub client_cert_auth: bool,
}

impl TlsConfig {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<recipestore_tls::PemFiles> {
        Some(recipestore_tls::PemFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }
}

/// Which node `--force-new-cluster` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForceNewCluster {
    /// The node it is given to.
    ThisNode,
    /// The node with this id; any other ignores it.
    Node(u64),
}

fn parse_force_new_cluster(value: &str) -> Result<ForceNewCluster, String> {
    match value {
        "true" => Ok(ForceNewCluster::ThisNode),
        id => id.parse().map(ForceNewCluster::Node).map_err(|_| {
            format!(
                "{id:?} is neither a node id nor `true` (this node), as --force-new-cluster takes"
            )
        }),
    }
}

/// How the load that shedding decides on is measured.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingConfig {
    /// How often CPU and memory are sampled, in milliseconds.
    #[arg(long, env = "RECIPESTORE_CPU_SAMPLE_MS", default_value_t = 250)]
    pub cpu_sample_ms: u64,

    /// What CPU usage means without a cgroup CPU controller: the host's, or
    /// this process's own (for machines shared with unrelated work).
    #[arg(
        long,
        env = "RECIPESTORE_CPU_FALLBACK",
        value_enum,
        default_value = "host"
    )]
    pub cpu_fallback: Fallback,

    /// The cgroup v2 directory CPU and memory figures are read from.
    #[arg(long, env = "RECIPESTORE_CGROUP_DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_dir: PathBuf,
}

impl NodeConfig {
    /// The node id from --id, or the ordinal at the end of --pod-name.
    pub fn node_id(&self) -> Result<u64, ConfigError> {
        match (&self.id, &self.pod_name) {
            (Some(id), _) => Ok(*id),
            (None, Some(pod)) => ordinal_of(pod),
            (None, None) => Err(ConfigError::NoNodeId),
        }
    }

    /// Checks relations between settings that flags alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node_id()?;
        self.settings.validate()?;
        if self.max_content_bytes == 0 || self.max_content_bytes > 32 * 1024 * 1024 {
            return Err(ConfigError::MaxContentBytes(self.max_content_bytes));
        }
        if self.snapshot_logs == 0 {
            return Err(ConfigError::Zero("--snapshot-logs"));
        }
        if self.sampling.cpu_sample_ms == 0 {
            return Err(ConfigError::Zero("--cpu-sample-ms"));
        }
        Ok(())
    }

    fn advertise_host(&self) -> String {
        if let Some(host) = &self.advertise_addr {
            return host.clone();
        }
        let ip = self.peer_addr.ip();
        if !ip.is_unspecified() {
            return ip.to_string();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    /// host:port at which peers reach this node.
    pub fn advertised_peer_addr(&self) -> String {
        format!("{}:{}", self.advertise_host(), self.peer_addr.port())
    }

    /// host:port at which clients reach this node.
    pub fn advertised_client_addr(&self) -> String {
        format!("{}:{}", self.advertise_host(), self.client_addr.port())
    }

    /// The openraft configuration these settings describe.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let config = openraft::Config {
            cluster_name: "recipestore".into(),
            heartbeat_interval: self.settings.raft.heartbeat_interval_ms,
            election_timeout_min: self.settings.raft.election_timeout_min_ms,
            election_timeout_max: self.settings.raft.election_timeout_max_ms,
            // The node decides when (`lifecycle::SnapshotPolicy`).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.logs_to_keep,
            enable_pre_vote: Some(true),
            // A restarted leader must win a new election, in a new term.
            // Restoring its leadership in the old term would let it assign
            // log ids of that term again: entries it had replicated before
            // its own fsync returned may be gone from its disk (power loss),
            // and followers keep their entry under a matching id, so the
            // same id would name two different entries.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Raft(e.to_string()))
    }

    /// Whether this node, `id`, is to force a new cluster at start.
    pub fn forces_new_cluster(&self, id: u64) -> bool {
        match self.force_new_cluster {
            None => false,
            Some(ForceNewCluster::ThisNode) => true,
            Some(ForceNewCluster::Node(forced)) => forced == id,
        }
    }

    /// When to build snapshots.
    pub fn snapshot_policy(&self) -> SnapshotPolicy {
        SnapshotPolicy {
            min_logs: self.snapshot_logs,
            interval: (self.snapshot_interval_secs > 0)
                .then(|| Duration::from_secs(self.snapshot_interval_secs)),
        }
    }
}

/// The ordinal of a StatefulSet pod name: the digits after the last `-`.
pub fn ordinal_of(pod_name: &str) -> Result<u64, ConfigError> {
    pod_name
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .ok_or_else(|| ConfigError::PodName(pod_name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::shed::{ShedPolicy, Tiers};

    fn parse(args: &[&str]) -> NodeConfig {
        NodeConfig::try_parse_from(std::iter::once("recipestore-node").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn force_new_cluster_is_for_this_node_or_the_node_it_names() {
        let forces =
            |args: &[&str], id| parse(&[&["--id", "0"], args].concat()).forces_new_cluster(id);
        assert!(!forces(&[], 2));
        assert!(forces(&["--force-new-cluster"], 2));
        assert!(forces(&["--force-new-cluster=true"], 2));
        assert!(forces(&["--force-new-cluster=2"], 2));
        assert!(!forces(&["--force-new-cluster=1"], 2));
        let error = NodeConfig::try_parse_from(["recipestore-node", "--force-new-cluster=two"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("neither a node id"), "{error}");
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let c = parse(&["--id", "0", "--shed-enabled=false", "--shed-enabled=true"]);
        assert!(c.settings.shedding.enabled);
        assert_eq!(parse(&["--id", "0", "--id", "2"]).node_id(), Ok(2));
    }

    #[test]
    fn node_id_comes_from_the_pod_ordinal() {
        assert_eq!(parse(&["--pod-name", "recipes-store-12"]).node_id(), Ok(12));
        assert_eq!(parse(&["--id", "3"]).node_id(), Ok(3));
        let error = parse(&["--pod-name", "store"]).node_id().unwrap_err();
        assert_eq!(error, ConfigError::PodName("store".into()));
        assert!(error.to_string().contains("-<ordinal>"));
        assert_eq!(parse(&[]).validate(), Err(ConfigError::NoNodeId));
    }

    #[test]
    fn timing_relations_are_checked() {
        let err = parse(&[
            "--id",
            "0",
            "--election-timeout-min-ms",
            "900",
            "--election-timeout-max-ms",
            "800",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Settings(SettingsError::ElectionTimeoutsOutOfOrder { min: 900, max: 800 })
        );
        let err = parse(&["--id", "0", "--heartbeat-ms", "200"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("less than half"), "{err}");
        parse(&["--id", "0"]).validate().unwrap();
        parse(&["--id", "0"]).raft_config().unwrap();
        let err = parse(&[
            "--id",
            "0",
            "--download-workers-min",
            "8",
            "--download-workers-max",
            "4",
        ])
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("must not exceed"), "{err}");
        assert_eq!(
            parse(&["--id", "0", "--snapshot-logs", "0"]).validate(),
            Err(ConfigError::Zero("--snapshot-logs"))
        );
    }

    #[test]
    fn shedding_defaults_are_the_seed_tables_and_can_be_switched_off() {
        let policy = ShedPolicy::from(&parse(&["--id", "0"]).settings.shedding);
        assert!(policy.enabled);
        assert_eq!(policy.download_tiers, Tiers::seed_downloads());
        assert_eq!(policy.upload_tiers, Tiers::seed_uploads());
        let off = parse(&["--id", "0", "--shed-enabled", "false"]);
        assert!(!ShedPolicy::from(&off.settings.shedding).enabled);
        let bad = NodeConfig::try_parse_from(["n", "--id", "0", "--shed-download-tiers", "90:2"]);
        assert!(bad.unwrap_err().to_string().contains("probability"));
    }

    #[test]
    fn advertised_addresses_use_the_listen_ip_or_the_flag() {
        let c = parse(&[
            "--id",
            "0",
            "--peer-addr",
            "127.0.0.1:8001",
            "--client-addr",
            "127.0.0.1:8000",
        ]);
        assert_eq!(c.advertised_peer_addr(), "127.0.0.1:8001");
        assert_eq!(c.advertised_client_addr(), "127.0.0.1:8000");
        let c = parse(&[
            "--id",
            "0",
            "--advertise-addr",
            "store-0.store-peers.ns.svc",
        ]);
        assert_eq!(c.advertised_peer_addr(), "store-0.store-peers.ns.svc:7071");
    }
}
