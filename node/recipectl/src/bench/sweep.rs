//! The overload sweep: measure a cluster's capacity on the seed mix (closed
//! loop, saturated), then offer 0.5x..3x of it open loop and record goodput
//! (successes within the deadline) at each step, for the cluster at
//! `--endpoints` and optionally a control cluster (e.g. shedding off).

use std::time::Duration;

use serde::Serialize;

use super::BenchArgs;
use super::Profile;
use super::TargetKind;
use super::load::Pacing;
use super::report::RunReport;
use super::report::ratio;
use super::workload::Schedule;
use crate::Output;

/// One offered load on one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub label: String,
    /// Offered load as a multiple of the capacity.
    pub factor: f64,
    pub offered_per_sec: f64,
    pub goodput_per_sec: f64,
    /// Goodput over the highest goodput of this cluster's sweep (or the
    /// capacity, if higher).
    pub fraction_of_peak: f64,
    pub shed_per_sec: f64,
    /// Refused by the clients' own throttles, per second.
    pub throttled_per_sec: f64,
    /// Answers past the deadline or none at all, per second.
    pub late_per_sec: f64,
    pub errors_per_sec: f64,
    pub download_p50_ms: f64,
    pub download_p99_ms: f64,
    pub upload_good: u64,
    pub upload_shed: u64,
}

#[derive(Debug, Serialize)]
pub struct SweepReport {
    /// Good requests per second of the closed-loop saturation run.
    pub capacity: f64,
    pub capacity_run: Option<RunReport>,
    pub points: Vec<Point>,
    pub runs: Vec<RunReport>,
    /// Clusters that could not be measured, and why.
    pub failed: Vec<String>,
}

pub fn point(label: &str, factor: f64, run: &RunReport) -> Point {
    let secs = run.seconds;
    Point {
        label: label.to_string(),
        factor,
        offered_per_sec: run.rate,
        goodput_per_sec: run.total.goodput,
        fraction_of_peak: 0.0,
        shed_per_sec: run.total.shed as f64 / secs,
        throttled_per_sec: run.total.throttled as f64 / secs,
        late_per_sec: (run.total.deadline_exceeded + run.total.late) as f64 / secs,
        errors_per_sec: (run.total.errors + run.total.dropped) as f64 / secs,
        download_p50_ms: run.download.latency.p50_ms,
        download_p99_ms: run.download.latency.p99_ms,
        upload_good: run.upload.good,
        upload_shed: run.upload.shed,
    }
}

/// Fills in each point's fraction of its own cluster's peak goodput.
pub fn set_peaks(points: &mut [Point], capacity: f64) {
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    for label in labels {
        let peak = points
            .iter()
            .filter(|p| p.label == label)
            .map(|p| p.goodput_per_sec)
            .fold(capacity, f64::max);
        for p in points.iter_mut().filter(|p| p.label == label) {
            p.fraction_of_peak = ratio(p.goodput_per_sec, peak);
        }
    }
}

pub async fn run(
    args: &BenchArgs,
    endpoints: &[String],
    output: Output,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!args.factors.is_empty(), "--factors is empty");
    let mut clusters = vec![(args.label.clone(), endpoints.to_vec(), args.throttle_ratio)];
    if !args.baseline_endpoints.is_empty() {
        clusters.push((
            args.baseline_label.clone(),
            args.baseline_endpoints.clone(),
            args.baseline_throttle_ratio,
        ));
    }
    let mut capacity = args.capacity.unwrap_or(0.0);
    let mut capacity_run = None;
    let mut points = Vec::new();
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for (i, (label, eps, throttle_ratio)) in clusters.iter().enumerate() {
        let clients = args.clients.max(args.capacity_clients);
        let target = super::connect(
            args,
            eps,
            TargetKind::Recipestore,
            clients,
            args.consistency(),
            *throttle_ratio,
        )
        .await?;
        let mix = match super::prepare(args, &target, Profile::Sweep, clients).await {
            Ok((_, mix)) => mix,
            // The control cluster's results still stand without this one.
            Err(e) if i > 0 => {
                let reason = format!("{label}: setup failed: {e:#}");
                eprintln!("{reason}");
                failed.push(reason);
                continue;
            }
            Err(e) => return Err(e),
        };
        if i == 0 && args.capacity.is_none() {
            let report = super::measure(
                args,
                &target,
                &format!("capacity ({label})"),
                Pacing::Closed,
                mix.clone(),
                args.capacity_clients,
                args.consistency_name(),
                output,
            )
            .await;
            capacity = report.total.goodput;
            if output == Output::Text {
                print!("{}", report.table());
                println!("capacity: {capacity:.0} good requests/s\n");
            }
            capacity_run = Some(report);
        }
        anyhow::ensure!(capacity > 0.0, "the capacity run had no successes");
        for &factor in &args.factors {
            // Let queues left by the previous step drain.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let report = super::measure(
                args,
                &target,
                &format!("seed mix at {factor}x capacity ({label})"),
                Pacing::Open(Schedule::constant(factor * capacity)),
                mix.clone(),
                args.clients,
                args.consistency_name(),
                output,
            )
            .await;
            if output == Output::Text {
                print!("{}", report.table());
            }
            points.push(point(label, factor, &report));
            runs.push(report);
        }
    }
    set_peaks(&mut points, capacity);
    let report = SweepReport {
        capacity,
        capacity_run,
        points,
        runs,
        failed,
    };
    if output == Output::Text {
        println!();
        print!("{}", table(&report));
    }
    if let Some(path) = &args.plot {
        super::plot::sweep(path, &report)?;
    }
    Ok(serde_json::to_value(&report)?)
}

pub fn table(report: &SweepReport) -> String {
    let mut out = format!(
        "capacity {:.0} good req/s (seed mix)\n{:<14} {:>6} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9}\n",
        report.capacity,
        "cluster",
        "load",
        "offered/s",
        "goodput/s",
        "of peak",
        "shed/s",
        "thrott/s",
        "late/s",
        "errs/s",
        "dl p50 ms",
        "dl p99 ms"
    );
    for p in &report.points {
        out.push_str(&format!(
            "{:<14} {:>5.1}x {:>9.0} {:>9.0} {:>6.0}% {:>8.0} {:>8.0} {:>8.0} {:>7.0} {:>9.2} {:>9.2}\n",
            p.label,
            p.factor,
            p.offered_per_sec,
            p.goodput_per_sec,
            p.fraction_of_peak * 100.0,
            p.shed_per_sec,
            p.throttled_per_sec,
            p.late_per_sec,
            p.errors_per_sec,
            p.download_p50_ms,
            p.download_p99_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &str, factor: f64, goodput: f64) -> Point {
        Point {
            label: label.into(),
            factor,
            offered_per_sec: factor * 100.0,
            goodput_per_sec: goodput,
            fraction_of_peak: 0.0,
            shed_per_sec: 0.0,
            throttled_per_sec: 0.0,
            late_per_sec: 0.0,
            errors_per_sec: 0.0,
            download_p50_ms: 0.0,
            download_p99_ms: 0.0,
            upload_good: 0,
            upload_shed: 0,
        }
    }

    #[test]
    fn each_cluster_is_measured_against_its_own_peak() {
        let mut points = vec![
            p("on", 1.0, 100.0),
            p("on", 2.0, 120.0),
            p("off", 1.0, 90.0),
            p("off", 2.0, 30.0),
        ];
        set_peaks(&mut points, 100.0);
        let f: Vec<f64> = points.iter().map(|p| p.fraction_of_peak).collect();
        assert_eq!(f, [100.0 / 120.0, 1.0, 0.9, 0.3]);
        assert!(
            table(&SweepReport {
                capacity: 100.0,
                capacity_run: None,
                points,
                runs: Vec::new(),
                failed: Vec::new(),
            })
            .contains("2.0x")
        );
    }
}
