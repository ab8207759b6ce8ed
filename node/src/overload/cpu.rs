//! Resource sampling: the container's CPU usage from cgroup v2 (`cpu.stat`
//! against the `cpu.max` quota, else the CPUs available), falling back to
//! the host's `/proc/stat` (or, on a machine shared with other work, this
//! process's own CPU time); and the memory available to the container.
//! Sampled on an interval and smoothed, so one busy tick does not shed.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// Weight of the newest sample in the exponential moving average.
const SMOOTHING: f64 = 0.5;

/// A cumulative CPU reading.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// Microseconds of CPU used (by the cgroup, or by this process), with
    /// the CPUs it may use.
    Used { usage_usec: u64, cpus: f64 },
    /// Busy and total jiffies of the host.
    Host { busy: u64, total: u64 },
}

/// What to measure when there is no cgroup CPU controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// The whole host's CPU usage.
    Host,
    /// This process's CPU time against the CPUs available: for machines
    /// shared with unrelated work, whose load the node should not shed for.
    Process,
}

/// Where CPU and memory figures come from.
#[derive(Debug, Clone)]
pub struct Source {
    cgroup_dir: PathBuf,
    proc_dir: PathBuf,
    fallback: Fallback,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, fixed by the ABI).
const USER_HZ: u64 = 100;

impl Source {
    /// `cgroup_dir` is normally `/sys/fs/cgroup`, `proc_dir` `/proc`.
    pub fn new(cgroup_dir: &Path, proc_dir: &Path, fallback: Fallback) -> Self {
        Self {
            cgroup_dir: cgroup_dir.to_path_buf(),
            proc_dir: proc_dir.to_path_buf(),
            fallback,
        }
    }

    fn read(&self) -> Option<Reading> {
        if let Ok(stat) = std::fs::read_to_string(self.cgroup_dir.join("cpu.stat"))
            && let Some(usage_usec) = parse_cpu_stat_usage(&stat)
        {
            let quota = std::fs::read_to_string(self.cgroup_dir.join("cpu.max"))
                .ok()
                .and_then(|max| parse_cpu_max(&max));
            let cpus = quota.unwrap_or_else(available_cpus);
            return Some(Reading::Used { usage_usec, cpus });
        }
        if self.fallback == Fallback::Process {
            let stat = std::fs::read_to_string(self.proc_dir.join("self/stat")).ok()?;
            let ticks = parse_process_ticks(&stat)?;
            return Some(Reading::Used {
                usage_usec: ticks * (1_000_000 / USER_HZ),
                cpus: available_cpus(),
            });
        }
        let stat = std::fs::read_to_string(self.proc_dir.join("stat")).ok()?;
        let (busy, total) = parse_proc_stat(&stat)?;
        Some(Reading::Host { busy, total })
    }

    /// Bytes of memory the process may still use: the cgroup's limit less
    /// its usage when limited, else the host's MemAvailable.
    pub fn memory_available(&self) -> Option<u64> {
        let limit = std::fs::read_to_string(self.cgroup_dir.join("memory.max"))
            .ok()
            .and_then(|m| m.trim().parse::<u64>().ok());
        let current = std::fs::read_to_string(self.cgroup_dir.join("memory.current"))
            .ok()
            .and_then(|m| m.trim().parse::<u64>().ok());
        if let (Some(limit), Some(current)) = (limit, current) {
            return Some(limit.saturating_sub(current));
        }
        let meminfo = std::fs::read_to_string(self.proc_dir.join("meminfo")).ok()?;
        parse_mem_available(&meminfo)
    }
}

fn available_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// `usage_usec` from a cgroup v2 `cpu.stat`.
fn parse_cpu_stat_usage(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// CPUs granted by a cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD").
fn parse_cpu_max(max: &str) -> Option<f64> {
    let mut parts = max.split_whitespace();
    let quota = parts.next()?;
    let period: f64 = parts.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

/// Busy and total jiffies from the aggregate `cpu` line of `/proc/stat`.
fn parse_proc_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal ...; guest time is
    // already counted in user, so only the first eight fields are summed.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields[4];
    Some((total - idle, total))
}

/// User plus system clock ticks from `/proc/self/stat` (fields 14 and 15,
/// counted after the parenthesised command name, which may hold spaces).
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so fields 14 and 15 are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU usage in percent between two readings taken `elapsed` apart.
fn usage_percent(previous: Reading, current: Reading, elapsed: Duration) -> Option<f64> {
    let percent = match (previous, current) {
        (
            Reading::Used { usage_usec: a, .. },
            Reading::Used {
                usage_usec: b,
                cpus,
            },
        ) => {
            let available_usec = elapsed.as_secs_f64() * 1e6 * cpus;
            if available_usec <= 0.0 {
                return None;
            }
            b.saturating_sub(a) as f64 / available_usec * 100.0
        }
        (Reading::Host { busy: a, total: t }, Reading::Host { busy: b, total: u }) => {
            if u <= t {
                return None;
            }
            b.saturating_sub(a) as f64 / (u - t) as f64 * 100.0
        }
        _ => return None,
    };
    Some(percent.clamp(0.0, 100.0))
}

/// The latest smoothed figures, readable without locks.
#[derive(Debug, Default)]
pub struct Gauges {
    cpu_bits: AtomicU64,
    memory_available: AtomicU64,
}

impl Gauges {
    pub fn cpu_percent(&self) -> f64 {
        f64::from_bits(self.cpu_bits.load(Ordering::Relaxed))
    }

    pub fn memory_available(&self) -> u64 {
        self.memory_available.load(Ordering::Relaxed)
    }

    fn set(&self, cpu: f64, memory: u64) {
        self.cpu_bits.store(cpu.to_bits(), Ordering::Relaxed);
        self.memory_available.store(memory, Ordering::Relaxed);
    }
}

/// Keeps [`Gauges`] up to date.
pub struct Sampler {
    source: Source,
    previous: Option<(Reading, Instant)>,
    smoothed: Option<f64>,
}

impl Sampler {
    pub fn new(source: Source) -> Self {
        Self {
            source,
            previous: None,
            smoothed: None,
        }
    }

    /// Takes one sample and publishes the smoothed result.
    pub fn sample(&mut self, gauges: &Gauges) {
        let now = Instant::now();
        if let Some(current) = self.source.read() {
            if let Some((previous, at)) = self.previous
                && let Some(percent) = usage_percent(previous, current, now - at)
            {
                let smoothed = match self.smoothed {
                    Some(s) => s + SMOOTHING * (percent - s),
                    None => percent,
                };
                self.smoothed = Some(smoothed);
            }
            self.previous = Some((current, now));
        }
        let memory = self.source.memory_available().unwrap_or(u64::MAX);
        gauges.set(self.smoothed.unwrap_or(0.0), memory);
    }

    /// Samples every `interval` until the returned task is aborted.
    pub fn spawn(
        mut self,
        gauges: std::sync::Arc<Gauges>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                self.sample(&gauges);
                crate::metrics::observe_resources(gauges.cpu_percent(), gauges.memory_available());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_and_proc_files() {
        assert_eq!(
            parse_cpu_stat_usage("usage_usec 1234\nuser_usec 1000\n"),
            Some(1234)
        );
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(
            parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n"),
            Some((150, 1000))
        );
        assert_eq!(
            parse_mem_available("MemTotal: 100 kB\nMemAvailable:  2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
    }

    #[test]
    fn cgroup_usage_is_measured_against_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("cpu.stat", "usage_usec 0\n");
        write("cpu.max", "50000 100000\n"); // half a CPU
        write("memory.max", "1000000\n");
        write("memory.current", "400000\n");
        let source = Source::new(dir.path(), Path::new("/nonexistent"), Fallback::Host);
        let first = source.read().unwrap();
        assert_eq!(
            first,
            Reading::Used {
                usage_usec: 0,
                cpus: 0.5
            }
        );
        write("cpu.stat", "usage_usec 400000\n");
        let second = source.read().unwrap();
        // 0.4 s of CPU in 1 s against a 0.5 CPU quota is 80 %.
        let p = usage_percent(first, second, Duration::from_secs(1)).unwrap();
        assert!((p - 80.0).abs() < 1e-9, "{p}");
        assert_eq!(source.memory_available(), Some(600_000));

        // Without a quota the CPUs available count.
        write("cpu.max", "max 100000\n");
        assert_eq!(
            source.read().unwrap(),
            Reading::Used {
                usage_usec: 400000,
                cpus: available_cpus()
            }
        );
    }

    #[test]
    fn falls_back_to_the_host_and_clamps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), "cpu  0 0 0 100 0 0 0 0\n").unwrap();
        let source = Source::new(Path::new("/nonexistent"), dir.path(), Fallback::Host);
        let first = source.read().unwrap();
        std::fs::write(dir.path().join("stat"), "cpu  30 0 20 150 0 0 0 0\n").unwrap();
        let second = source.read().unwrap();
        let p = usage_percent(first, second, Duration::from_secs(1)).unwrap();
        assert!((p - 50.0).abs() < 1e-9, "{p}");
        let over = Reading::Used {
            usage_usec: 10_000_000,
            cpus: 1.0,
        };
        let start = Reading::Used {
            usage_usec: 0,
            cpus: 1.0,
        };
        assert_eq!(
            usage_percent(start, over, Duration::from_secs(1)),
            Some(100.0)
        );
    }

    #[test]
    fn the_process_fallback_counts_only_this_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("self")).unwrap();
        let write = |ticks: u64| {
            let stat =
                format!("42 (recipe store) S 1 42 42 0 -1 4194560 0 0 0 0 {ticks} 0 0 0 20 0 1 0");
            std::fs::write(dir.path().join("self/stat"), stat).unwrap();
        };
        write(0);
        // A busy host does not matter: only this process's time counts.
        std::fs::write(dir.path().join("stat"), "cpu  1000 0 0 0 0 0 0 0\n").unwrap();
        let source = Source::new(Path::new("/nonexistent"), dir.path(), Fallback::Process);
        let first = source.read().unwrap();
        write(50); // half a CPU-second
        let second = source.read().unwrap();
        let p = usage_percent(first, second, Duration::from_secs(1)).unwrap();
        let expected = 50.0 / available_cpus();
        assert!((p - expected).abs() < 1e-9, "{p} != {expected}");
        assert_eq!(
            parse_process_ticks("1 (a) b) R 0 0 0 0 0 0 0 0 0 0 7 8 0"),
            Some(15)
        );
    }

    #[test]
    fn the_sampler_smooths_spikes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |usage: u64| {
            std::fs::write(dir.path().join("cpu.stat"), format!("usage_usec {usage}\n")).unwrap()
        };
        std::fs::write(dir.path().join("cpu.max"), "100000 100000\n").unwrap();
        write(0);
        let gauges = Gauges::default();
        let mut sampler = Sampler::new(Source::new(
            dir.path(),
            Path::new("/nonexistent"),
            Fallback::Host,
        ));
        sampler.sample(&gauges);
        assert_eq!(gauges.cpu_percent(), 0.0);
        // Ten CPU-seconds used: a full CPU for any interval this test can take.
        write(10_000_000);
        sampler.sample(&gauges);
        assert_eq!(gauges.cpu_percent(), 100.0);
        // Then idle: the average decays instead of dropping to zero.
        sampler.sample(&gauges);
        let after_idle = gauges.cpu_percent();
        assert!(after_idle > 0.0 && after_idle < 100.0, "{after_idle}");
    }
}
