//! `chaos`: fault-injection runs against local clusters, with a table of
//! what they found. `scripts/chaos.sh` builds and runs it.

use std::time::Duration;

use clap::Parser;
use recipestore_chaos::failover;
use recipestore_chaos::faults::Fault;
use recipestore_chaos::history;
use recipestore_chaos::linearizability;
use recipestore_chaos::local_reads;
use recipestore_chaos::run;
use recipestore_chaos::run::RunConfig;
use recipestore_chaos::run::RunReport;
use recipestore_chaos::workload::WorkloadConfig;

/// Fault injection and failover measurement on local clusters.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
enum Cli {
    /// Run a workload under faults; check the history and the Raft logs.
    Run(RunArgs),
    /// Check a history a run kept (`history.jsonl`) again, and explain
    /// what is wrong with it.
    Check {
        /// The history, one operation per line.
        history: std::path::PathBuf,
        /// Shards of the store the history was recorded on (versions come
        /// from each shard's log; see the run's `--shards`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
        shards: u16,
    },
    /// SIGKILL the leader repeatedly, on RecipeStore and on etcd (3 members
    /// each, loopback), and time the first write through the survivors.
    Failover {
        /// Leader kills per system.
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Skip etcd (when it is not installed).
        #[arg(long)]
        no_etcd: bool,
        /// Where the clusters keep their data.
        #[arg(long, default_value = "./chaos-runs")]
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Fault to inject (kill-node, kill-leader, kill-all, pause-node,
    /// pause-leader, membership), or `all` to take turns.
    #[arg(long, default_value = "all")]
    fault: String,
    /// Length of each run's faulty phase, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seed of the first run; run i uses seed + i.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of runs.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Keys the clients share.
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Where runs keep their data; runs that found something are kept.
    #[arg(long, default_value = "./chaos-runs")]
    dir: std::path::PathBuf,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    /// Extra flags for every node, e.g. `--node-arg=--heartbeat-ms=50`.
    #[arg(long = "node-arg")]
    node_args: Vec<String>,
    /// Shards of the store: the faulted cluster is shard 0, the others run
    /// three healthy nodes each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
    shards: u16,
    /// Move slots between the shards throughout each run (needs
    /// `--shards` 2 or more): the last shard gives its slots away and
    /// takes them back, over and over.
    #[arg(long)]
    reshard: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Run(args) => run_faults(args).await,
        Cli::Check { history, shards } => check_history(&history, shards),
        Cli::Failover { reps, no_etcd, dir } => measure_failover(reps, no_etcd, &dir).await,
    }
}

fn check_history(path: &std::path::Path, shards: u16) -> anyhow::Result<()> {
    let ops = history::load_jsonl(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let linear = linearizability::check_spaced(
        &ops,
        &linearizability::Config::default(),
        &run::log_of(shards),
    );
    let local = local_reads::check(&ops);
    println!("{linear}");
    for violation in &local.violations {
        println!("LOCAL read {}: {}", violation.op, violation.explanation);
    }
    anyhow::ensure!(
        linear.is_ok() && local.is_ok(),
        "{} is not a correct history",
        path.display()
    );
    println!("{} operations, linearizable", ops.len());
    Ok(())
}

async fn measure_failover(reps: usize, no_etcd: bool, dir: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(reps > 0, "--reps must be positive");
    std::fs::create_dir_all(dir)?;
    let store_dir = tempfile::tempdir_in(dir)?;
    let ours = failover::recipestore(&run::node_binary()?, store_dir.path(), reps).await?;
    let mut results = vec![ours];
    if !no_etcd {
        let etcd_dir = tempfile::tempdir_in(dir)?;
        results.push(failover::etcd(etcd_dir.path(), reps).await?);
    }
    for r in &results {
        let (min, max) = (
            r.millis.iter().min().copied().unwrap_or(0),
            r.millis.iter().max().copied().unwrap_or(0),
        );
        println!(
            "{:<12} median {:>5} ms  min {:>5} ms  max {:>5} ms  all {:?}",
            r.system,
            r.median(),
            min,
            max,
            r.millis
        );
    }
    if let [ours, etcd] = &results[..] {
        println!(
            "ratio of medians (recipestore / etcd): {:.2}",
            ours.median() as f64 / etcd.median().max(1) as f64
        );
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}

async fn run_faults(cli: RunArgs) -> anyhow::Result<()> {
    let faults: Vec<Fault> = if cli.fault == "all" {
        Fault::ALL.to_vec()
    } else {
        vec![cli.fault.parse().map_err(anyhow::Error::msg)?]
    };
    anyhow::ensure!(
        cli.seconds > 0 && cli.runs > 0,
        "--seconds and --runs must be positive"
    );
    std::fs::create_dir_all(&cli.dir)?;
    let node_binary = run::node_binary()?;
    let mut dirty = 0;
    let mut reports = Vec::new();
    if !cli.json {
        println!(
            "{:<13} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>9} {:>10}",
            "fault",
            "seed",
            "faults",
            "ops",
            "ok",
            "failed",
            "unknown",
            "gap_ms",
            "violation",
            "divergent"
        );
    }
    for i in 0..cli.runs {
        let fault = faults[(i as usize) % faults.len()];
        let config = RunConfig {
            fault,
            duration: Duration::from_secs(cli.seconds),
            seed: cli.seed + i,
            workload: WorkloadConfig {
                clients: cli.clients,
                keys: cli.keys,
                ..WorkloadConfig::default()
            },
            node_binary: node_binary.clone(),
            node_args: cli.node_args.clone(),
            shards: cli.shards,
            reshard: cli.reshard,
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("{fault}-{}-", config.seed))
            .tempdir_in(&cli.dir)?;
        let report = run::run(&config, dir.path()).await?;
        if cli.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{:<13} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>9} {:>10}",
                report.fault,
                report.seed,
                report.faults_injected,
                report.operations,
                report.ok,
                report.failed,
                report.unknown,
                report.longest_write_gap_ms,
                report.violations.len(),
                report.divergent_log_ids.len()
            );
        }
        if !report.is_clean() {
            dirty += 1;
            let kept = dir.keep();
            for line in report.violations.iter().chain(&report.divergent_log_ids) {
                eprintln!("  {line}");
            }
            eprintln!("  kept in {}", kept.display());
        }
        reports.push(report);
    }
    if !cli.json {
        print_summary(&reports);
    }
    anyhow::ensure!(dirty == 0, "{dirty} of {} runs found violations", cli.runs);
    Ok(())
}

/// Totals per fault, as a Markdown table.
fn print_summary(reports: &[RunReport]) {
    println!();
    println!(
        "| fault | runs | faults injected | operations | ok | failed | unknown | ok share | median / max write gap (ms) | violations | divergent log ids |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let mut faults: Vec<&str> = reports.iter().map(|r| r.fault.as_str()).collect();
    faults.sort_unstable();
    faults.dedup();
    for fault in faults {
        let runs: Vec<&RunReport> = reports.iter().filter(|r| r.fault == fault).collect();
        let sum = |f: fn(&RunReport) -> usize| runs.iter().map(|r| f(r)).sum::<usize>();
        let mut gaps: Vec<u64> = runs.iter().map(|r| r.longest_write_gap_ms).collect();
        gaps.sort_unstable();
        let operations = sum(|r| r.operations);
        println!(
            "| {fault} | {} | {} | {operations} | {} | {} | {} | {:.1} % | {} / {} | {} | {} |",
            runs.len(),
            sum(|r| r.faults_injected),
            sum(|r| r.ok),
            sum(|r| r.failed),
            sum(|r| r.unknown),
            100.0 * sum(|r| r.ok) as f64 / operations.max(1) as f64,
            gaps[gaps.len() / 2],
            gaps[gaps.len() - 1],
            sum(|r| r.violations.len()),
            sum(|r| r.divergent_log_ids.len()),
        );
    }
}
