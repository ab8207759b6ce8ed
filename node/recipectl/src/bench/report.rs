//! What a run measured: outcomes and latency histograms per operation and
//! per second, percentile summaries, the text table and the JSON report.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::OpKind;
use super::workload::Spike;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// OK. Counted as good only if it also came back within the deadline.
    Ok,
    /// RESOURCE_EXHAUSTED: the server shed it.
    Shed,
    /// Refused by the client's own adaptive throttle, never sent.
    Throttled,
    /// No answer within the deadline (client timer or DEADLINE_EXCEEDED).
    Deadline,
    /// Any other error.
    Error,
    /// Never sent: the generator already had its maximum in flight.
    Dropped,
}

/// Latencies are recorded in microseconds, up to a minute.
const MAX_MICROS: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Counts and latencies of one operation kind.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// OK within the deadline.
    pub good: u64,
    /// OK but after the deadline (a client gave up on it already).
    pub late: u64,
    pub shed: u64,
    pub throttled: u64,
    pub deadline: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Latency of good requests, from their scheduled send time.
    pub latency: Histogram<u64>,
}

impl Default for KindStats {
    fn default() -> Self {
        Self {
            good: 0,
            late: 0,
            shed: 0,
            throttled: 0,
            deadline: 0,
            errors: 0,
            dropped: 0,
            latency: new_histogram(),
        }
    }
}

impl KindStats {
    pub fn sent(&self) -> u64 {
        self.good
            + self.late
            + self.shed
            + self.throttled
            + self.deadline
            + self.errors
            + self.dropped
    }

    fn add(&mut self, other: &KindStats) {
        self.good += other.good;
        self.late += other.late;
        self.shed += other.shed;
        self.throttled += other.throttled;
        self.deadline += other.deadline;
        self.errors += other.errors;
        self.dropped += other.dropped;
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
    }
}

/// One second of a run, by completion time (offered: by scheduled time).
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub offered: u64,
    pub kinds: [KindStats; 2],
}

/// Collects outcomes as they complete.
#[derive(Debug, Clone)]
pub struct Recorder {
    deadline: Duration,
    pub kinds: [KindStats; 2],
    pub seconds: Vec<Second>,
}

impl Recorder {
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            kinds: Default::default(),
            seconds: Vec::new(),
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::default);
        }
        &mut self.seconds[i]
    }

    /// A request was due at `scheduled` (from the start of the run).
    pub fn offered(&mut self, scheduled: Duration) {
        self.second(scheduled).offered += 1;
    }

    /// A request due at `scheduled` ended with `outcome` at `completed`.
    pub fn record(
        &mut self,
        kind: OpKind,
        scheduled: Duration,
        completed: Duration,
        outcome: Outcome,
    ) {
        let latency = completed.saturating_sub(scheduled);
        let deadline = self.deadline;
        let apply = |stats: &mut KindStats| match outcome {
            Outcome::Ok if latency <= deadline => {
                stats.good += 1;
                stats
                    .latency
                    .saturating_record((latency.as_micros() as u64).clamp(1, MAX_MICROS));
            }
            Outcome::Ok => stats.late += 1,
            Outcome::Shed => stats.shed += 1,
            Outcome::Throttled => stats.throttled += 1,
            Outcome::Deadline => stats.deadline += 1,
            Outcome::Error => stats.errors += 1,
            Outcome::Dropped => stats.dropped += 1,
        };
        apply(&mut self.kinds[kind.index()]);
        apply(&mut self.second(completed).kinds[kind.index()]);
    }

    /// Every kind together.
    pub fn total(&self) -> KindStats {
        let mut all = KindStats::default();
        for k in &self.kinds {
            all.add(k);
        }
        all
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Totals of one kind (or all) over a run.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub op: String,
    pub sent: u64,
    pub good: u64,
    pub late: u64,
    pub shed: u64,
    pub throttled: u64,
    pub deadline_exceeded: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Good requests per second.
    pub goodput: f64,
    pub latency: Summary,
}

impl KindReport {
    pub fn new(op: &str, stats: &KindStats, seconds: f64) -> Self {
        Self {
            op: op.to_string(),
            sent: stats.sent(),
            good: stats.good,
            late: stats.late,
            shed: stats.shed,
            throttled: stats.throttled,
            deadline_exceeded: stats.deadline,
            errors: stats.errors,
            dropped: stats.dropped,
            goodput: per_second(stats.good, seconds),
            latency: Summary::of(&stats.latency),
        }
    }
}

/// One second of the time series.
#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    pub t: usize,
    pub offered: u64,
    pub good: u64,
    pub shed: u64,
    pub throttled: u64,
    pub deadline_exceeded: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub download_p99_ms: f64,
}

/// Everything one run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub name: String,
    pub target: String,
    /// `open` (scheduled sends) or `closed` (each client waits for its reply).
    pub pacing: String,
    pub clients: usize,
    /// Offered requests per second (base rate for a spiky schedule); 0 when closed.
    pub rate: f64,
    pub seconds: f64,
    pub deadline_ms: u64,
    pub consistency: String,
    pub spikes: Vec<Spike>,
    pub total: KindReport,
    pub upload: KindReport,
    pub download: KindReport,
    pub per_second: Vec<SecondReport>,
}

impl RunReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        target: &str,
        pacing: &str,
        clients: usize,
        rate: f64,
        seconds: f64,
        recorder: &Recorder,
        consistency: &str,
        spikes: &[Spike],
    ) -> Self {
        let per_second = recorder
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                let mut all = KindStats::default();
                all.add(&s.kinds[0]);
                all.add(&s.kinds[1]);
                let summary = Summary::of(&all.latency);
                SecondReport {
                    t,
                    offered: s.offered,
                    good: all.good,
                    shed: all.shed,
                    throttled: all.throttled,
                    deadline_exceeded: all.deadline + all.late,
                    errors: all.errors + all.dropped,
                    p50_ms: summary.p50_ms,
                    p99_ms: summary.p99_ms,
                    download_p99_ms: Summary::of(&s.kinds[OpKind::Download.index()].latency).p99_ms,
                }
            })
            .collect();
        Self {
            name: name.to_string(),
            target: target.to_string(),
            pacing: pacing.to_string(),
            clients,
            rate,
            seconds,
            deadline_ms: recorder.deadline.as_millis() as u64,
            consistency: consistency.to_string(),
            spikes: spikes.to_vec(),
            total: KindReport::new("total", &recorder.total(), seconds),
            upload: KindReport::new("upload", &recorder.kinds[0], seconds),
            download: KindReport::new("download", &recorder.kinds[1], seconds),
            per_second,
        }
    }

    /// The summary table a person reads.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} against {} ({} loop, {} clients{}, {:.1} s, deadline {} ms, {} reads)\n",
            self.name,
            self.target,
            self.pacing,
            self.clients,
            if self.rate > 0.0 {
                format!(", {:.0} req/s offered", self.rate)
            } else {
                String::new()
            },
            self.seconds,
            self.deadline_ms,
            self.consistency,
        );
        out.push_str(&format!(
            "{:<9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "op",
            "sent",
            "good",
            "shed",
            "thrott",
            "late",
            "dl-exc",
            "errors",
            "good/s",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        ));
        for k in [&self.upload, &self.download, &self.total] {
            if k.sent == 0 && k.op != "total" {
                continue;
            }
            out.push_str(&format!(
                "{:<9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                k.op,
                k.sent,
                k.good,
                k.shed,
                k.throttled,
                k.late,
                k.deadline_exceeded,
                k.errors + k.dropped,
                k.goodput,
                k.latency.mean_ms,
                k.latency.p50_ms,
                k.latency.p90_ms,
                k.latency.p99_ms,
                k.latency.max_ms
            ));
        }
        out
    }
}

pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// `a / b`, or 0 when `b` is 0 (for ratio tables).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_of_a_uniform_spread() {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            h.record(ms * 1000).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 100);
        assert!((s.mean_ms - 50.5).abs() < 0.1, "{s:?}");
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p90_ms - 90.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(Summary::of(&new_histogram()), Summary::default());
    }

    #[test]
    fn late_answers_are_not_good_and_every_outcome_is_counted_once() {
        let mut r = Recorder::new(Duration::from_millis(100));
        let at = Duration::from_millis;
        r.offered(at(0));
        r.record(OpKind::Download, at(0), at(50), Outcome::Ok);
        r.record(OpKind::Download, at(0), at(150), Outcome::Ok);
        r.record(OpKind::Download, at(10), at(20), Outcome::Shed);
        r.record(OpKind::Upload, at(900), at(1200), Outcome::Deadline);
        r.record(OpKind::Upload, at(1000), at(1001), Outcome::Error);
        r.record(OpKind::Upload, at(1000), at(1000), Outcome::Dropped);
        let d = &r.kinds[OpKind::Download.index()];
        assert_eq!((d.good, d.late, d.shed), (1, 1, 1));
        assert_eq!(d.latency.len(), 1);
        let u = &r.kinds[OpKind::Upload.index()];
        assert_eq!((u.deadline, u.errors, u.dropped), (1, 1, 1));
        assert_eq!(r.total().sent(), 6);
        // Completions land in the second they completed in.
        assert_eq!(r.seconds.len(), 2);
        assert_eq!(r.seconds[0].offered, 1);
        assert_eq!(r.seconds[0].kinds[OpKind::Download.index()].sent(), 3);
        assert_eq!(r.seconds[1].kinds[OpKind::Upload.index()].sent(), 3);
    }

    #[test]
    fn the_report_derives_goodput_and_the_time_series() {
        let mut r = Recorder::new(Duration::from_secs(1));
        for i in 0..200u64 {
            let t = Duration::from_millis(i * 10);
            r.offered(t);
            r.record(
                OpKind::Download,
                t,
                t + Duration::from_millis(2),
                Outcome::Ok,
            );
        }
        let report = RunReport::new(
            "read",
            "recipestore",
            "open",
            4,
            100.0,
            2.0,
            &r,
            "local",
            &[],
        );
        assert_eq!(report.total.good, 200);
        assert!((report.download.goodput - 100.0).abs() < 1e-9);
        assert_eq!(report.per_second.len(), 2);
        assert_eq!(report.per_second[0].offered, 100);
        assert!((report.per_second[1].p99_ms - 2.0).abs() < 0.01);
        assert!(report.table().contains("download"));
        assert!(!report.table().contains("upload "));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["download"]["good"], 200);
    }

    #[test]
    fn ratios_never_divide_by_zero() {
        assert_eq!(ratio(10.0, 4.0), 2.5);
        assert_eq!(ratio(10.0, 0.0), 0.0);
        assert_eq!(per_second(30, 0.0), 0.0);
    }
}
