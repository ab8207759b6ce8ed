//! The shedding policy: a pure function from the observed load to "admit"
//! or "shed, and why". No I/O, so every table boundary is unit-tested.
//!
//! The order of checks is memory, queue bound, CPU priority, CPU
//! probabilistic, deadline: the cheapest and most certain reasons first.
//!
//! The CPU rules apply only to an overloaded node by default: one whose
//! queue for the request's kind is over its delay target. Busy CPU alone is
//! not overload: a node that uses all of its CPU while it still serves in
//! time would only turn away work it was about to do.

use std::time::Duration;

use recipestore_settings::{CpuShedding, Shedding, Thresholds};

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Upload,
    Download,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Upload => "upload",
            Op::Download => "download",
        }
    }
}

/// Why a request was shed; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    CpuPriority,
    CpuProbabilistic,
    Deadline,
    QueueFull,
    /// Waited past the delay target in a standing queue (decided by the
    /// queue when the request reaches a worker, not by [`decide`]).
    QueueDelay,
    Memory,
}

impl ShedReason {
    pub const ALL: [ShedReason; 6] = [
        ShedReason::CpuPriority,
        ShedReason::CpuProbabilistic,
        ShedReason::Deadline,
        ShedReason::QueueFull,
        ShedReason::QueueDelay,
        ShedReason::Memory,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ShedReason::CpuPriority => "cpu_priority",
            ShedReason::CpuProbabilistic => "cpu_probabilistic",
            ShedReason::Deadline => "deadline",
            ShedReason::QueueFull => "queue_full",
            ShedReason::QueueDelay => "queue_delay",
            ShedReason::Memory => "memory",
        }
    }
}

/// One row of a probabilistic table: at CPU `>= min` (or `> min` when
/// `exclusive`), shed with `probability`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tier {
    pub min: f64,
    pub exclusive: bool,
    pub probability: f64,
}

impl Tier {
    fn applies(&self, cpu: f64) -> bool {
        if self.exclusive {
            cpu > self.min
        } else {
            cpu >= self.min
        }
    }
}

/// A probabilistic table, highest threshold first, built from the settings'
/// [`Thresholds`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers(pub Vec<Tier>);

#[cfg(test)]
impl Tiers {
    /// The seed's download table: [95,100] 25 %, [90,95) 10 %, [85,90) 5 %.
    pub fn seed_downloads() -> Self {
        Self(vec![
            tier(95.0, false, 0.25),
            tier(90.0, false, 0.10),
            tier(85.0, false, 0.05),
        ])
    }

    /// The seed's upload table: [80,100] 25 %, [75,80) 10 %, (70,75) 5 %.
    pub fn seed_uploads() -> Self {
        Self(vec![
            tier(80.0, false, 0.25),
            tier(75.0, false, 0.10),
            tier(70.0, true, 0.05),
        ])
    }
}

impl Tiers {
    /// The shed probability at `cpu` percent: the first tier that applies.
    pub fn probability(&self, cpu: f64) -> f64 {
        self.0
            .iter()
            .find(|t| t.applies(cpu))
            .map_or(0.0, |t| t.probability)
    }
}

fn tier(min: f64, exclusive: bool, probability: f64) -> Tier {
    Tier {
        min,
        exclusive,
        probability,
    }
}

/// The settings' table, highest row first, probabilities as fractions.
impl From<&Thresholds> for Tiers {
    fn from(table: &Thresholds) -> Self {
        Self(
            table
                .highest_first()
                .iter()
                .map(|row| {
                    tier(
                        f64::from(row.cpu_percent),
                        row.exclusive,
                        f64::from(row.probability_percent) / 100.0,
                    )
                })
                .collect(),
        )
    }
}

/// What the shedder decides on.
#[derive(Debug, Clone)]
pub struct ShedPolicy {
    pub enabled: bool,
    /// Uploads are shed outright above this CPU percentage.
    pub upload_priority_cpu: f64,
    pub download_tiers: Tiers,
    pub upload_tiers: Tiers,
    /// When the CPU rules above apply.
    pub cpu: CpuShedding,
    /// Shed when less memory than this is available.
    pub memory_floor_bytes: u64,
}

impl From<&Shedding> for ShedPolicy {
    fn from(shedding: &Shedding) -> Self {
        Self {
            enabled: shedding.enabled,
            upload_priority_cpu: f64::from(shedding.upload_priority_cpu_percent),
            download_tiers: Tiers::from(&shedding.download_thresholds),
            upload_tiers: Tiers::from(&shedding.upload_thresholds),
            cpu: shedding.cpu,
            memory_floor_bytes: shedding.memory_floor_bytes(),
        }
    }
}

impl Default for ShedPolicy {
    fn default() -> Self {
        Self::from(&Shedding::default())
    }
}

/// The load a request meets when it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Smoothed CPU usage of the container, 0..=100.
    pub cpu_percent: f64,
    pub queue_len: usize,
    pub queue_capacity: usize,
    /// The queue is over its delay target: the node is overloaded.
    pub over_delay_target: bool,
    /// Expected wait in the queue before a worker takes the request.
    pub expected_wait: Duration,
    /// Expected time to serve it once taken.
    pub service_time: Duration,
    /// Time left before the caller's deadline, if it set one.
    pub time_left: Option<Duration>,
    pub memory_available_bytes: u64,
}

/// Admits or sheds one request. `coin` is uniform in [0, 1).
pub fn decide(policy: &ShedPolicy, op: Op, load: &Load, coin: f64) -> Result<(), ShedReason> {
    if !policy.enabled {
        return Ok(());
    }
    if load.memory_available_bytes < policy.memory_floor_bytes {
        return Err(ShedReason::Memory);
    }
    if load.queue_len >= load.queue_capacity {
        return Err(ShedReason::QueueFull);
    }
    let overloaded = match policy.cpu {
        CpuShedding::WhenOverloaded => load.over_delay_target,
        CpuShedding::Always => true,
    };
    if overloaded {
        if op == Op::Upload && load.cpu_percent > policy.upload_priority_cpu {
            return Err(ShedReason::CpuPriority);
        }
        let tiers = match op {
            Op::Upload => &policy.upload_tiers,
            Op::Download => &policy.download_tiers,
        };
        if coin < tiers.probability(load.cpu_percent) {
            return Err(ShedReason::CpuProbabilistic);
        }
    }
    if let Some(left) = load.time_left
        && left < load.expected_wait + load.service_time
    {
        return Err(ShedReason::Deadline);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Load {
        Load {
            cpu_percent: 0.0,
            queue_len: 0,
            queue_capacity: 10,
            over_delay_target: false,
            expected_wait: Duration::ZERO,
            service_time: Duration::from_millis(1),
            time_left: None,
            memory_available_bytes: u64::MAX,
        }
    }

    /// An overloaded node at `cpu` percent, where the CPU rules apply.
    fn at_cpu(cpu: f64) -> Load {
        Load {
            cpu_percent: cpu,
            over_delay_target: true,
            ..idle()
        }
    }

    #[test]
    fn busy_cpu_alone_sheds_nothing_until_the_queue_is_over_its_target() {
        let p = ShedPolicy::default();
        let busy_in_time = Load {
            over_delay_target: false,
            ..at_cpu(100.0)
        };
        for op in [Op::Upload, Op::Download] {
            assert_eq!(decide(&p, op, &busy_in_time, 0.0), Ok(()), "{op:?}");
        }
        assert_eq!(
            decide(&p, Op::Upload, &at_cpu(100.0), 0.99),
            Err(ShedReason::CpuPriority)
        );
        assert_eq!(
            decide(&p, Op::Download, &at_cpu(100.0), 0.0),
            Err(ShedReason::CpuProbabilistic)
        );
    }

    #[test]
    fn always_applies_the_cpu_rules_on_cpu_alone() {
        let p = ShedPolicy {
            cpu: CpuShedding::Always,
            ..ShedPolicy::default()
        };
        let busy_in_time = Load {
            over_delay_target: false,
            ..at_cpu(100.0)
        };
        assert_eq!(
            decide(&p, Op::Upload, &busy_in_time, 0.99),
            Err(ShedReason::CpuPriority)
        );
        assert_eq!(
            decide(&p, Op::Download, &busy_in_time, 0.0),
            Err(ShedReason::CpuProbabilistic)
        );
    }

    #[test]
    fn download_table_matches_the_seed_at_every_boundary() {
        let t = Tiers::seed_downloads();
        let cases = [
            (0.0, 0.0),
            (84.99, 0.0),
            (85.0, 0.05),
            (89.99, 0.05),
            (90.0, 0.10),
            (94.99, 0.10),
            (95.0, 0.25),
            (100.0, 0.25),
        ];
        for (cpu, p) in cases {
            assert_eq!(t.probability(cpu), p, "downloads at {cpu} %");
        }
    }

    #[test]
    fn upload_table_matches_the_seed_at_every_boundary() {
        let t = Tiers::seed_uploads();
        let cases = [
            (0.0, 0.0),
            (70.0, 0.0), // (70, 75): 70 itself is excluded
            (70.01, 0.05),
            (74.99, 0.05),
            (75.0, 0.10),
            (79.99, 0.10),
            (80.0, 0.25),
            (100.0, 0.25),
        ];
        for (cpu, p) in cases {
            assert_eq!(t.probability(cpu), p, "uploads at {cpu} %");
        }
    }

    #[test]
    fn uploads_are_shed_outright_above_ninety_percent_and_downloads_are_not() {
        let p = ShedPolicy::default();
        // A coin of 0.99 never triggers the probabilistic tables.
        assert_eq!(decide(&p, Op::Upload, &at_cpu(90.0), 0.99), Ok(()));
        assert_eq!(
            decide(&p, Op::Upload, &at_cpu(90.01), 0.99),
            Err(ShedReason::CpuPriority)
        );
        assert_eq!(decide(&p, Op::Download, &at_cpu(99.0), 0.99), Ok(()));
    }

    #[test]
    fn probabilistic_shedding_follows_the_coin() {
        let p = ShedPolicy::default();
        assert_eq!(
            decide(&p, Op::Download, &at_cpu(96.0), 0.24),
            Err(ShedReason::CpuProbabilistic)
        );
        assert_eq!(decide(&p, Op::Download, &at_cpu(96.0), 0.25), Ok(()));
        assert_eq!(
            decide(&p, Op::Upload, &at_cpu(72.0), 0.04),
            Err(ShedReason::CpuProbabilistic)
        );
        assert_eq!(decide(&p, Op::Upload, &at_cpu(72.0), 0.05), Ok(()));
        assert_eq!(decide(&p, Op::Download, &at_cpu(50.0), 0.0), Ok(()));
    }

    #[test]
    fn a_deadline_shorter_than_wait_plus_service_is_shed() {
        let p = ShedPolicy::default();
        let load = Load {
            expected_wait: Duration::from_millis(80),
            service_time: Duration::from_millis(20),
            time_left: Some(Duration::from_millis(99)),
            ..idle()
        };
        assert_eq!(
            decide(&p, Op::Download, &load, 0.5),
            Err(ShedReason::Deadline)
        );
        let enough = Load {
            time_left: Some(Duration::from_millis(100)),
            ..load
        };
        assert_eq!(decide(&p, Op::Download, &enough, 0.5), Ok(()));
        let no_deadline = Load {
            time_left: None,
            ..load
        };
        assert_eq!(decide(&p, Op::Download, &no_deadline, 0.5), Ok(()));
    }

    #[test]
    fn queue_and_memory_bounds_come_first() {
        let p = ShedPolicy::default();
        let full = Load {
            queue_len: 10,
            ..at_cpu(99.0)
        };
        assert_eq!(
            decide(&p, Op::Upload, &full, 0.0),
            Err(ShedReason::QueueFull)
        );
        let low_memory = Load {
            memory_available_bytes: p.memory_floor_bytes - 1,
            ..full
        };
        assert_eq!(
            decide(&p, Op::Download, &low_memory, 0.99),
            Err(ShedReason::Memory)
        );
        let almost_full = Load {
            queue_len: 9,
            ..idle()
        };
        assert_eq!(decide(&p, Op::Download, &almost_full, 0.99), Ok(()));
    }

    #[test]
    fn a_disabled_policy_admits_everything() {
        let p = ShedPolicy {
            enabled: false,
            ..ShedPolicy::default()
        };
        let worst = Load {
            queue_len: 100,
            memory_available_bytes: 0,
            time_left: Some(Duration::ZERO),
            ..at_cpu(100.0)
        };
        assert_eq!(decide(&p, Op::Upload, &worst, 0.0), Ok(()));
    }

    #[test]
    fn the_settings_tables_become_the_seed_tiers() {
        let defaults = Shedding::default();
        assert_eq!(
            Tiers::from(&defaults.download_thresholds),
            Tiers::seed_downloads()
        );
        assert_eq!(
            Tiers::from(&defaults.upload_thresholds),
            Tiers::seed_uploads()
        );
        // Written in any order, the highest row comes first.
        let shuffled: Thresholds = ">70:0.05,80:0.25,75:0.10".parse().unwrap();
        assert_eq!(Tiers::from(&shuffled), Tiers::seed_uploads());
        assert_eq!(ShedPolicy::from(&defaults).memory_floor_bytes, 64 << 20);
    }
}
