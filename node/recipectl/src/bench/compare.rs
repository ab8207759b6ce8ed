//! `--profile compare`: the same write-heavy and read-heavy runs against
//! RecipeStore and etcd, one after the other on the same machine, and the
//! ratios RecipeStore / etcd.

use recipestore_protocol::pb::Consistency;
use serde::Serialize;

use super::BenchArgs;
use super::Profile;
use super::TargetKind;
use super::load::Pacing;
use super::report::RunReport;
use super::report::ratio;
use super::workload::Schedule;
use crate::Output;

/// One workload measured on both systems.
#[derive(Debug, Serialize)]
pub struct Case {
    pub name: String,
    pub recipestore: RunReport,
    pub etcd: RunReport,
    /// RecipeStore / etcd.
    pub throughput_ratio: f64,
    pub p50_ratio: f64,
    pub p99_ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub cases: Vec<Case>,
}

struct Workload {
    name: String,
    profile: Profile,
    clients: usize,
    consistency: Consistency,
}

fn workloads(clients: usize) -> Vec<Workload> {
    let w = |name: String, profile, clients, consistency| Workload {
        name,
        profile,
        clients,
        consistency,
    };
    vec![
        w(
            "write c=1".into(),
            Profile::Write,
            1,
            Consistency::Linearizable,
        ),
        w(
            format!("write c={clients}"),
            Profile::Write,
            clients,
            Consistency::Linearizable,
        ),
        w(
            format!("read linearizable c={clients}"),
            Profile::Read,
            clients,
            Consistency::Linearizable,
        ),
        w(
            format!("read local/serializable c={clients}"),
            Profile::Read,
            clients,
            Consistency::Local,
        ),
    ]
}

pub async fn run(
    args: &BenchArgs,
    endpoints: &[String],
    output: Output,
) -> anyhow::Result<serde_json::Value> {
    let mut cases = Vec::new();
    for w in workloads(args.clients) {
        let mut runs = Vec::new();
        for (kind, eps) in [
            (TargetKind::Recipestore, endpoints),
            (TargetKind::Etcd, args.etcd_endpoints.as_slice()),
        ] {
            let target = super::connect(
                args,
                eps,
                kind,
                w.clients,
                w.consistency,
                args.throttle_ratio,
            )
            .await?;
            let (_, mix) = super::prepare(args, &target, w.profile, w.clients).await?;
            let pacing = if args.rate > 0.0 {
                Pacing::Open(Schedule::constant(args.rate))
            } else {
                Pacing::Closed
            };
            let consistency = match (kind, w.consistency) {
                (_, Consistency::Linearizable) => "linearizable",
                (TargetKind::Etcd, _) => "serializable",
                (TargetKind::Recipestore, _) => "local",
            };
            let report = super::measure(
                args,
                &target,
                &w.name,
                pacing,
                mix,
                w.clients,
                consistency,
                output,
            )
            .await;
            if output == Output::Text {
                print!("{}", report.table());
            }
            runs.push(report);
        }
        let etcd = runs.pop().expect("two runs");
        let recipestore = runs.pop().expect("two runs");
        cases.push(Case {
            throughput_ratio: ratio(recipestore.total.goodput, etcd.total.goodput),
            p50_ratio: ratio(recipestore.total.latency.p50_ms, etcd.total.latency.p50_ms),
            p99_ratio: ratio(recipestore.total.latency.p99_ms, etcd.total.latency.p99_ms),
            name: w.name,
            recipestore,
            etcd,
        });
    }
    let report = CompareReport { cases };
    if output == Output::Text {
        println!();
        print!("{}", table(&report));
    }
    Ok(serde_json::to_value(&report)?)
}

/// The ratio table: RecipeStore / etcd per workload.
pub fn table(report: &CompareReport) -> String {
    let mut out = format!(
        "{:<34} {:>10} {:>10} {:>7} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}\n",
        "workload",
        "RS ops/s",
        "etcd ops/s",
        "ratio",
        "RS p50",
        "etcd p50",
        "ratio",
        "RS p99",
        "etcd p99",
        "ratio"
    );
    for c in &report.cases {
        out.push_str(&format!(
            "{:<34} {:>10.0} {:>10.0} {:>7.2} {:>8.2} {:>8.2} {:>7.2} {:>8.2} {:>8.2} {:>7.2}\n",
            c.name,
            c.recipestore.total.goodput,
            c.etcd.total.goodput,
            c.throughput_ratio,
            c.recipestore.total.latency.p50_ms,
            c.etcd.total.latency.p50_ms,
            c.p50_ratio,
            c.recipestore.total.latency.p99_ms,
            c.etcd.total.latency.p99_ms,
            c.p99_ratio,
        ));
    }
    out.push_str("(latencies in ms; ratio = RecipeStore / etcd)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_covers_single_client_writes_and_both_read_kinds() {
        let names: Vec<String> = workloads(64).into_iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "write c=1",
                "write c=64",
                "read linearizable c=64",
                "read local/serializable c=64"
            ]
        );
    }
}
