//! The settings of a RecipeStore node that a RecipeStore resource exposes,
//! as one type for the three places they live:
//!
//! - the CRD spec (serde and schemars: camelCase fields, schema bounds and
//!   defaults, CEL rules), where the operator embeds each group;
//! - the node's flags and their `RECIPESTORE_*` environment equivalents
//!   (clap), which the node flattens into its own;
//! - the ConfigMap the operator gives the pods: [`NodeSettings::to_env`].
//!
//! Defaults ([`defaults`]) and the rules between settings
//! ([`NodeSettings::validate`]) are written once, here.
//!
//! Adding a setting: a field on one of the groups, with its doc comment
//! (CRD description and flag help), default, bounds and flag, and its line
//! in `to_env`. The round-trip test fails until all of them agree.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use clap::{ArgAction, Args};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The environment variables of the settings a running node takes through
/// the admin `Reconfigure` call (the shedding group but `enabled`):
/// changing them needs no restart, so they do not roll the pods.
pub const RELOADABLE_ENV: &[&str] = &[
    "RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU",
    "RECIPESTORE_SHED_DOWNLOAD_TIERS",
    "RECIPESTORE_SHED_UPLOAD_TIERS",
    "RECIPESTORE_SHED_CPU",
    "RECIPESTORE_SHED_MEMORY_FLOOR_MIB",
];

/// Every default, in one place.
pub mod defaults {
    pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
    pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
    pub const ELECTION_TIMEOUT_MAX_MS: u64 = 450;
    pub const SHEDDING_ENABLED: bool = true;
    pub const UPLOAD_PRIORITY_CPU_PERCENT: u8 = 90;
    pub const DOWNLOAD_THRESHOLDS: &str = "95:0.25,90:0.10,85:0.05";
    pub const UPLOAD_THRESHOLDS: &str = "80:0.25,75:0.10,>70:0.05";
    pub const MEMORY_FLOOR_MIB: u32 = 64;
    pub const UPLOAD_CAPACITY: u32 = 256;
    pub const DOWNLOAD_CAPACITY: u32 = 1024;
    /// An upload's worker waits for the commit, not for the CPU, and the
    /// leader proposes together the writes its workers hold: at 64 workers,
    /// 256 closed-loop writers ran no faster than 64 (the other 192 waited
    /// in the queue, out of the batches); at 256, 1.3x the writes a second.
    pub const UPLOAD_WORKERS: u32 = 256;
    pub const DOWNLOAD_WORKERS_MIN: u32 = 4;
    pub const DOWNLOAD_WORKERS_MAX: u32 = 64;
    /// A linearizable download waits for a read index from the leader, so
    /// 256 closed-loop readers on a 3-node cluster (which etcd serves
    /// without errors) saw queue waits past 20 ms and 2 % were shed; at
    /// 100 ms none were.
    pub const DELAY_TARGET_MS: u32 = 100;
    /// An upload waits for a quorum's fdatasync, so under many concurrent
    /// writers its queue stands for as long as commits take. 256
    /// closed-loop writers on a healthy 3-node cluster (a load etcd serves
    /// without errors) were shed by half at a target of 20 ms or 100 ms,
    /// 0.2 % at 250 ms, none at 500 ms, with 2.7x the goodput.
    pub const UPLOAD_DELAY_TARGET_MS: u32 = 500;
    pub const DELAY_INTERVAL_MS: u32 = 100;
    pub const CACHE_SIZE_MIB: u32 = 64;
}

/// The bounds the schema and [`NodeSettings::validate`] share.
pub mod bounds {
    pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;
    pub const ELECTION_TIMEOUT_MIN_MS_MIN: u64 = 50;
    pub const ELECTION_TIMEOUT_MAX_MS_MIN: u64 = 100;
    pub const THRESHOLDS_MAX: usize = 16;
}

/// Why settings cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{field} must be at least {min}, not {value}")]
    TooSmall {
        field: &'static str,
        min: u64,
        value: u64,
    },
    #[error("{field} must be at most {max}, not {value}")]
    TooLarge {
        field: &'static str,
        max: u64,
        value: u64,
    },
    #[error(
        "raft.electionTimeoutMinMs (--election-timeout-min-ms, {min}) must be less than \
         raft.electionTimeoutMaxMs (--election-timeout-max-ms, {max})"
    )]
    ElectionTimeoutsOutOfOrder { min: u64, max: u64 },
    #[error(
        "raft.heartbeatIntervalMs (--heartbeat-ms, {heartbeat}) must be less than half of \
         raft.electionTimeoutMinMs (--election-timeout-min-ms, {min}) so that followers hear \
         from the leader before they time out"
    )]
    HeartbeatTooSlow { heartbeat: u64, min: u64 },
    #[error(
        "queues.downloadWorkersMin (--download-workers-min, {min}) must not exceed \
         queues.downloadWorkersMax (--download-workers-max, {max})"
    )]
    DownloadWorkersOutOfOrder { min: u32, max: u32 },
}

/// Every setting a RecipeStore gives its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    #[serde(default)]
    #[command(flatten)]
    pub raft: Raft,
    #[serde(default)]
    #[command(flatten)]
    pub shedding: Shedding,
    #[serde(default)]
    #[command(flatten)]
    pub queues: Queues,
    #[serde(default)]
    #[command(flatten)]
    pub cache: Cache,
}

/// Raft timings, in milliseconds. An election timeout is drawn uniformly from
/// `[electionTimeoutMinMs, electionTimeoutMaxMs)`; heartbeats must arrive well
/// inside the shortest timeout or followers start needless elections.
/// Openraft's followers honour a leader's lease for the longest timeout, then
/// wait a random one: a dead leader is replaced after max + [min, max), with
/// the defaults 750-900 ms and 7 heartbeats missed before anyone moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.electionTimeoutMinMs < self.electionTimeoutMaxMs",
        "message": "raft.electionTimeoutMinMs must be less than raft.electionTimeoutMaxMs"
    },
    {
        "rule": "self.heartbeatIntervalMs * 2 < self.electionTimeoutMinMs",
        "message": "raft.heartbeatIntervalMs must be less than half of raft.electionTimeoutMinMs so that followers hear from the leader before they time out"
    }
]))]
pub struct Raft {
    /// Interval between leader heartbeats.
    #[schemars(range(min = bounds::HEARTBEAT_INTERVAL_MS_MIN))]
    #[arg(long = "heartbeat-ms", env = "RECIPESTORE_HEARTBEAT_MS", default_value_t = defaults::HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    #[schemars(range(min = bounds::ELECTION_TIMEOUT_MIN_MS_MIN))]
    #[arg(long, env = "RECIPESTORE_ELECTION_TIMEOUT_MIN_MS", default_value_t = defaults::ELECTION_TIMEOUT_MIN_MS)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout; also the leader lease
    /// followers honour.
    #[schemars(range(min = bounds::ELECTION_TIMEOUT_MAX_MS_MIN))]
    #[arg(long, env = "RECIPESTORE_ELECTION_TIMEOUT_MAX_MS", default_value_t = defaults::ELECTION_TIMEOUT_MAX_MS)]
    pub election_timeout_max_ms: u64,
}

impl Default for Raft {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: defaults::HEARTBEAT_INTERVAL_MS,
            election_timeout_min_ms: defaults::ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: defaults::ELECTION_TIMEOUT_MAX_MS,
        }
    }
}

/// Load shedding. The threshold tables say: when smoothed CPU use is at
/// least `cpuPercent` (above it, for an `exclusive` row), shed
/// `probabilityPercent` of the requests of that kind. The highest matching
/// row applies. By default the CPU rules apply only to an overloaded node
/// (see [`CpuShedding`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(rename_all = "camelCase", default)]
pub struct Shedding {
    /// Shed load at all; off admits everything (for control runs).
    #[arg(long = "shed-enabled", env = "RECIPESTORE_SHED_ENABLED", default_value_t = defaults::SHEDDING_ENABLED, action = ArgAction::Set)]
    pub enabled: bool,
    /// Above this CPU use every upload is shed, so downloads keep flowing.
    #[schemars(range(min = 1, max = 100))]
    #[arg(long = "shed-upload-priority-cpu", env = "RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU", default_value_t = defaults::UPLOAD_PRIORITY_CPU_PERCENT)]
    pub upload_priority_cpu_percent: u8,
    /// Probabilistic shedding of downloads; as a flag `[>]CPU:FRACTION,...`.
    #[schemars(length(max = bounds::THRESHOLDS_MAX))]
    #[arg(long = "shed-download-tiers", env = "RECIPESTORE_SHED_DOWNLOAD_TIERS", default_value = defaults::DOWNLOAD_THRESHOLDS)]
    pub download_thresholds: Thresholds,
    /// Probabilistic shedding of uploads; `>` makes a row's CPU bound exclusive.
    #[schemars(length(max = bounds::THRESHOLDS_MAX))]
    #[arg(long = "shed-upload-tiers", env = "RECIPESTORE_SHED_UPLOAD_TIERS", default_value = defaults::UPLOAD_THRESHOLDS)]
    pub upload_thresholds: Thresholds,
    /// When the CPU rules (the upload priority and both tables) apply.
    #[arg(long = "shed-cpu", env = "RECIPESTORE_SHED_CPU", value_enum, default_value_t = CpuShedding::WhenOverloaded)]
    pub cpu: CpuShedding,
    /// Shed when less memory than this is available to a node, in MiB.
    #[arg(long = "shed-memory-floor-mib", env = "RECIPESTORE_SHED_MEMORY_FLOOR_MIB", default_value_t = defaults::MEMORY_FLOOR_MIB)]
    pub memory_floor_mib: u32,
}

impl Default for Shedding {
    fn default() -> Self {
        Self {
            enabled: defaults::SHEDDING_ENABLED,
            upload_priority_cpu_percent: defaults::UPLOAD_PRIORITY_CPU_PERCENT,
            download_thresholds: defaults::DOWNLOAD_THRESHOLDS
                .parse()
                .expect("the default download thresholds parse"),
            upload_thresholds: defaults::UPLOAD_THRESHOLDS
                .parse()
                .expect("the default upload thresholds parse"),
            cpu: CpuShedding::WhenOverloaded,
            memory_floor_mib: defaults::MEMORY_FLOOR_MIB,
        }
    }
}

/// When CPU use alone may shed a request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "camelCase")]
pub enum CpuShedding {
    /// Only while the request's queue is over its delay target (its queue
    /// has not emptied for a whole interval and requests leave it later
    /// than the target): a node whose CPU is busy but which still keeps
    /// its latency objective is not overloaded and sheds nothing for CPU.
    WhenOverloaded,
    /// On CPU use alone, as the seed's tables read; a node saturated by a
    /// load it serves in time still refuses part of it.
    Always,
}

impl fmt::Display for CpuShedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// One row of a shedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShedThreshold {
    /// CPU use, in percent, from which this row applies.
    #[schemars(range(min = 0, max = 100))]
    pub cpu_percent: u8,
    /// Share of requests shed, in percent.
    #[schemars(range(min = 0, max = 100))]
    pub probability_percent: u8,
    /// Apply only above `cpuPercent`, not at it.
    #[serde(default)]
    pub exclusive: bool,
}

/// A shedding table: a list in the CRD, `[>]CPU:FRACTION,...` as a flag
/// (e.g. `95:0.25,90:0.10,>70:0.05`), in any order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Thresholds(pub Vec<ShedThreshold>);

impl Thresholds {
    /// The rows from the highest CPU down, an exclusive row above an
    /// inclusive one at equal CPU: the order in which the first match is
    /// the one that applies.
    pub fn highest_first(&self) -> Vec<ShedThreshold> {
        let mut rows = self.0.clone();
        rows.sort_by_key(|r| std::cmp::Reverse((r.cpu_percent, r.exclusive)));
        rows
    }
}

impl FromStr for Thresholds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let percent = |part: &str, text: &str, what: &str, scale: f64| -> Result<u8, String> {
            let value: f64 = text
                .parse()
                .map_err(|_| format!("tier {part:?}: {text:?} is not {what}"))?;
            let percent = value * scale;
            if !(0.0..=100.0).contains(&percent) || (percent - percent.round()).abs() > 1e-6 {
                return Err(format!(
                    "tier {part:?}: {what} must be a whole percent within 0..=100"
                ));
            }
            Ok(percent.round() as u8)
        };
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|part| {
                let (cpu, probability) = part
                    .split_once(':')
                    .ok_or_else(|| format!("tier {part:?} is not CPU:PROBABILITY"))?;
                let (exclusive, cpu) = match cpu.strip_prefix('>') {
                    Some(cpu) => (true, cpu),
                    None => (false, cpu),
                };
                Ok(ShedThreshold {
                    cpu_percent: percent(part, cpu, "a CPU percentage", 1.0)?,
                    probability_percent: percent(part, probability, "a probability", 100.0)?,
                    exclusive,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<String> = self
            .highest_first()
            .iter()
            .map(|r| {
                let p = r.probability_percent;
                let gt = if r.exclusive { ">" } else { "" };
                format!("{gt}{}:{}.{:02}", r.cpu_percent, p / 100, p % 100)
            })
            .collect();
        f.write_str(&rows.join(","))
    }
}

/// Bounded request queues and their worker pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.downloadWorkersMin <= self.downloadWorkersMax",
        "message": "queues.downloadWorkersMin must not exceed queues.downloadWorkersMax"
    }
]))]
pub struct Queues {
    /// Uploads waiting for a worker before new ones are shed.
    #[schemars(range(min = 1))]
    #[arg(long = "upload-queue-capacity", env = "RECIPESTORE_UPLOAD_QUEUE_CAPACITY", default_value_t = defaults::UPLOAD_CAPACITY)]
    pub upload_capacity: u32,
    /// Downloads waiting for a worker before new ones are shed.
    #[schemars(range(min = 1))]
    #[arg(long = "download-queue-capacity", env = "RECIPESTORE_DOWNLOAD_QUEUE_CAPACITY", default_value_t = defaults::DOWNLOAD_CAPACITY)]
    pub download_capacity: u32,
    /// Workers proposing uploads concurrently.
    #[schemars(range(min = 1))]
    #[arg(long, env = "RECIPESTORE_UPLOAD_WORKERS", default_value_t = defaults::UPLOAD_WORKERS)]
    pub upload_workers: u32,
    /// Download workers kept when idle.
    #[schemars(range(min = 1))]
    #[arg(long, env = "RECIPESTORE_DOWNLOAD_WORKERS_MIN", default_value_t = defaults::DOWNLOAD_WORKERS_MIN)]
    pub download_workers_min: u32,
    /// Download workers under a backlog.
    #[schemars(range(min = 1))]
    #[arg(long, env = "RECIPESTORE_DOWNLOAD_WORKERS_MAX", default_value_t = defaults::DOWNLOAD_WORKERS_MAX)]
    pub download_workers_max: u32,
    /// In a standing download queue, downloads that waited longer than
    /// this many milliseconds for a worker are shed.
    #[schemars(range(min = 1))]
    #[arg(long = "queue-delay-target-ms", env = "RECIPESTORE_QUEUE_DELAY_TARGET_MS", default_value_t = defaults::DELAY_TARGET_MS)]
    pub delay_target_ms: u32,
    /// In a standing upload queue, uploads that waited longer than this many
    /// milliseconds for a worker are shed. Longer than the download target:
    /// an upload's wait includes a commit on a quorum.
    #[schemars(range(min = 1))]
    #[arg(long = "upload-queue-delay-target-ms", env = "RECIPESTORE_UPLOAD_QUEUE_DELAY_TARGET_MS", default_value_t = defaults::UPLOAD_DELAY_TARGET_MS)]
    pub upload_delay_target_ms: u32,
    /// A queue not empty for this many milliseconds is standing; shorter
    /// bursts are absorbed.
    #[schemars(range(min = 1))]
    #[arg(long = "queue-delay-interval-ms", env = "RECIPESTORE_QUEUE_DELAY_INTERVAL_MS", default_value_t = defaults::DELAY_INTERVAL_MS)]
    pub delay_interval_ms: u32,
}

impl Default for Queues {
    fn default() -> Self {
        Self {
            upload_capacity: defaults::UPLOAD_CAPACITY,
            download_capacity: defaults::DOWNLOAD_CAPACITY,
            upload_workers: defaults::UPLOAD_WORKERS,
            download_workers_min: defaults::DOWNLOAD_WORKERS_MIN,
            download_workers_max: defaults::DOWNLOAD_WORKERS_MAX,
            delay_target_ms: defaults::DELAY_TARGET_MS,
            upload_delay_target_ms: defaults::UPLOAD_DELAY_TARGET_MS,
            delay_interval_ms: defaults::DELAY_INTERVAL_MS,
        }
    }
}

/// The read cache of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Args)]
#[serde(rename_all = "camelCase", default)]
pub struct Cache {
    /// Capacity of the read cache in MiB; 0 disables it.
    #[arg(long = "cache-mib", env = "RECIPESTORE_CACHE_MIB", default_value_t = defaults::CACHE_SIZE_MIB)]
    pub size_mib: u32,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            size_mib: defaults::CACHE_SIZE_MIB,
        }
    }
}

impl Cache {
    pub fn bytes(&self) -> u64 {
        mib(self.size_mib)
    }
}

impl Shedding {
    pub fn memory_floor_bytes(&self) -> u64 {
        mib(self.memory_floor_mib)
    }
}

fn mib(n: u32) -> u64 {
    u64::from(n) << 20
}

impl NodeSettings {
    /// Checks every bound and every rule between settings: what the CRD's
    /// schema and CEL rules check, so that the node refuses exactly what
    /// the API server refuses.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let (raft, shedding, queues) = (&self.raft, &self.shedding, &self.queues);
        let at_least = |field, value: u64, min: u64| {
            if value < min {
                Err(SettingsError::TooSmall { field, min, value })
            } else {
                Ok(())
            }
        };
        let at_most = |field, value: u64, max: u64| {
            if value > max {
                Err(SettingsError::TooLarge { field, max, value })
            } else {
                Ok(())
            }
        };
        at_least(
            "raft.heartbeatIntervalMs (--heartbeat-ms)",
            raft.heartbeat_interval_ms,
            bounds::HEARTBEAT_INTERVAL_MS_MIN,
        )?;
        at_least(
            "raft.electionTimeoutMinMs (--election-timeout-min-ms)",
            raft.election_timeout_min_ms,
            bounds::ELECTION_TIMEOUT_MIN_MS_MIN,
        )?;
        at_least(
            "raft.electionTimeoutMaxMs (--election-timeout-max-ms)",
            raft.election_timeout_max_ms,
            bounds::ELECTION_TIMEOUT_MAX_MS_MIN,
        )?;
        if raft.election_timeout_min_ms >= raft.election_timeout_max_ms {
            return Err(SettingsError::ElectionTimeoutsOutOfOrder {
                min: raft.election_timeout_min_ms,
                max: raft.election_timeout_max_ms,
            });
        }
        if raft.heartbeat_interval_ms.saturating_mul(2) >= raft.election_timeout_min_ms {
            return Err(SettingsError::HeartbeatTooSlow {
                heartbeat: raft.heartbeat_interval_ms,
                min: raft.election_timeout_min_ms,
            });
        }
        let priority = u64::from(shedding.upload_priority_cpu_percent);
        at_least(
            "shedding.uploadPriorityCpuPercent (--shed-upload-priority-cpu)",
            priority,
            1,
        )?;
        at_most(
            "shedding.uploadPriorityCpuPercent (--shed-upload-priority-cpu)",
            priority,
            100,
        )?;
        for (field, table) in [
            (
                "shedding.downloadThresholds (--shed-download-tiers)",
                &shedding.download_thresholds,
            ),
            (
                "shedding.uploadThresholds (--shed-upload-tiers)",
                &shedding.upload_thresholds,
            ),
        ] {
            at_most(field, table.0.len() as u64, bounds::THRESHOLDS_MAX as u64)?;
            for row in &table.0 {
                at_most(field, u64::from(row.cpu_percent), 100)?;
                at_most(field, u64::from(row.probability_percent), 100)?;
            }
        }
        for (field, value) in [
            (
                "queues.uploadCapacity (--upload-queue-capacity)",
                queues.upload_capacity,
            ),
            (
                "queues.downloadCapacity (--download-queue-capacity)",
                queues.download_capacity,
            ),
            (
                "queues.uploadWorkers (--upload-workers)",
                queues.upload_workers,
            ),
            (
                "queues.downloadWorkersMin (--download-workers-min)",
                queues.download_workers_min,
            ),
            (
                "queues.downloadWorkersMax (--download-workers-max)",
                queues.download_workers_max,
            ),
            (
                "queues.delayTargetMs (--queue-delay-target-ms)",
                queues.delay_target_ms,
            ),
            (
                "queues.uploadDelayTargetMs (--upload-queue-delay-target-ms)",
                queues.upload_delay_target_ms,
            ),
            (
                "queues.delayIntervalMs (--queue-delay-interval-ms)",
                queues.delay_interval_ms,
            ),
        ] {
            at_least(field, u64::from(value), 1)?;
        }
        if queues.download_workers_min > queues.download_workers_max {
            return Err(SettingsError::DownloadWorkersOutOfOrder {
                min: queues.download_workers_min,
                max: queues.download_workers_max,
            });
        }
        Ok(())
    }

    /// The settings as the node's environment variables: the ConfigMap the
    /// operator gives every pod (loaded with `envFrom`).
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let (raft, shedding, queues) = (&self.raft, &self.shedding, &self.queues);
        [
            ("HEARTBEAT_MS", raft.heartbeat_interval_ms.to_string()),
            (
                "ELECTION_TIMEOUT_MIN_MS",
                raft.election_timeout_min_ms.to_string(),
            ),
            (
                "ELECTION_TIMEOUT_MAX_MS",
                raft.election_timeout_max_ms.to_string(),
            ),
            ("SHED_ENABLED", shedding.enabled.to_string()),
            (
                "SHED_UPLOAD_PRIORITY_CPU",
                shedding.upload_priority_cpu_percent.to_string(),
            ),
            (
                "SHED_DOWNLOAD_TIERS",
                shedding.download_thresholds.to_string(),
            ),
            ("SHED_UPLOAD_TIERS", shedding.upload_thresholds.to_string()),
            ("SHED_CPU", shedding.cpu.to_string()),
            (
                "SHED_MEMORY_FLOOR_MIB",
                shedding.memory_floor_mib.to_string(),
            ),
            ("UPLOAD_QUEUE_CAPACITY", queues.upload_capacity.to_string()),
            (
                "DOWNLOAD_QUEUE_CAPACITY",
                queues.download_capacity.to_string(),
            ),
            ("UPLOAD_WORKERS", queues.upload_workers.to_string()),
            (
                "DOWNLOAD_WORKERS_MIN",
                queues.download_workers_min.to_string(),
            ),
            (
                "DOWNLOAD_WORKERS_MAX",
                queues.download_workers_max.to_string(),
            ),
            ("QUEUE_DELAY_TARGET_MS", queues.delay_target_ms.to_string()),
            (
                "UPLOAD_QUEUE_DELAY_TARGET_MS",
                queues.upload_delay_target_ms.to_string(),
            ),
            (
                "QUEUE_DELAY_INTERVAL_MS",
                queues.delay_interval_ms.to_string(),
            ),
            ("CACHE_MIB", self.cache.size_mib.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (format!("RECIPESTORE_{name}"), value))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    /// The settings alone, parsed as the node parses its flags.
    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        settings: NodeSettings,
    }

    fn varied() -> NodeSettings {
        NodeSettings {
            raft: Raft {
                heartbeat_interval_ms: 70,
                election_timeout_min_ms: 500,
                election_timeout_max_ms: 900,
            },
            shedding: Shedding {
                enabled: false,
                upload_priority_cpu_percent: 77,
                download_thresholds: "97:0.5,60:0.01".parse().unwrap(),
                upload_thresholds: ">50:1".parse().unwrap(),
                cpu: CpuShedding::Always,
                memory_floor_mib: 12,
            },
            queues: Queues {
                upload_capacity: 3,
                download_capacity: 5,
                upload_workers: 7,
                download_workers_min: 2,
                download_workers_max: 9,
                delay_target_ms: 11,
                upload_delay_target_ms: 19,
                delay_interval_ms: 13,
            },
            cache: Cache { size_mib: 17 },
        }
    }

    /// Every `to_env` variable, given back to the node's parser through the
    /// flag that reads it, gives back the same settings; and every flag has
    /// a variable. A variable the node does not read, or a flag the
    /// ConfigMap does not set, fails here.
    #[test]
    fn every_setting_round_trips_through_the_environment_and_the_node_flags() {
        let command = Flags::command();
        let flag_of: BTreeMap<String, String> = command
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_owned();
                Some((env, a.get_long()?.to_owned()))
            })
            .collect();
        for settings in [NodeSettings::default(), varied()] {
            let env = settings.to_env();
            let env_names: Vec<&String> = env.keys().collect();
            let flag_envs: Vec<&String> = flag_of.keys().collect();
            assert_eq!(
                env_names, flag_envs,
                "to_env and the flags name different variables"
            );
            let mut args = vec!["node".to_owned()];
            for (name, value) in &env {
                args.push(format!("--{}={value}", flag_of[name]));
            }
            let matches = Flags::command().try_get_matches_from(&args).unwrap();
            let parsed = Flags::from_arg_matches(&matches).unwrap();
            assert_eq!(parsed.settings, settings);
        }
    }

    #[test]
    fn the_flag_defaults_are_the_schema_defaults() {
        let parsed = Flags::try_parse_from(["node"]).unwrap();
        assert_eq!(parsed.settings, NodeSettings::default());
        let from_empty: NodeSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(from_empty, NodeSettings::default());
        assert_eq!(NodeSettings::default().validate(), Ok(()));
    }

    /// The reloadable variables are exactly those of the shedding settings
    /// a running node takes: everything in the group but `enabled`.
    #[test]
    fn the_reloadable_settings_are_the_shedding_group_but_enabled() {
        let base = NodeSettings::default().to_env();
        let mut shedding = varied().shedding;
        shedding.enabled = NodeSettings::default().shedding.enabled;
        let changed = NodeSettings {
            shedding,
            ..NodeSettings::default()
        }
        .to_env();
        let differ: Vec<&str> = base
            .iter()
            .filter(|(k, v)| changed.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .collect();
        let mut reloadable = RELOADABLE_ENV.to_vec();
        reloadable.sort_unstable();
        assert_eq!(differ, reloadable);
    }

    #[test]
    fn thresholds_keep_the_node_syntax() {
        let table: Thresholds = "80:0.25,75:0.10,>70:0.05".parse().unwrap();
        assert_eq!(
            table.0[2],
            ShedThreshold {
                cpu_percent: 70,
                probability_percent: 5,
                exclusive: true
            }
        );
        assert_eq!(table.to_string(), "80:0.25,75:0.10,>70:0.05");
        // Written in any order, applied highest first.
        let shuffled: Thresholds = ">70:0.05,80:0.25,75:0.1".parse().unwrap();
        assert_eq!(shuffled.to_string(), "80:0.25,75:0.10,>70:0.05");
        assert_eq!("".parse::<Thresholds>(), Ok(Thresholds(Vec::new())));
        for bad in ["90", "90:2", "101:0.1", "x:0.1", "90:0.125"] {
            assert!(bad.parse::<Thresholds>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn validate_names_the_setting_and_its_flag() {
        let mut s = NodeSettings::default();
        s.raft.heartbeat_interval_ms = 150;
        let error = s.validate().unwrap_err();
        assert_eq!(
            error,
            SettingsError::HeartbeatTooSlow {
                heartbeat: 150,
                min: 300
            }
        );
        assert!(error.to_string().contains("--heartbeat-ms"));

        let mut s = NodeSettings::default();
        s.queues.download_workers_min = 65;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::DownloadWorkersOutOfOrder { min: 65, max: 64 })
        ));

        let mut s = NodeSettings::default();
        s.queues.upload_workers = 0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("--upload-workers")
        );

        let mut s = NodeSettings::default();
        s.raft.election_timeout_max_ms = 300;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::ElectionTimeoutsOutOfOrder { .. })
        ));
    }
}
