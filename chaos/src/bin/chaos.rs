//! `chaos`: fault-injection runs against local clusters, with a table of
//! what they found. `scripts/chaos.sh` builds and runs it.

use std::time::Duration;

use clap::Parser;
use recipestore_chaos::faults::Fault;
use recipestore_chaos::run;
use recipestore_chaos::run::RunConfig;
use recipestore_chaos::workload::WorkloadConfig;

/// Runs a workload under faults and checks the history and the Raft logs.
#[derive(Debug, Parser)]
#[command(name = "chaos")]
struct Cli {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
    }
    anyhow::ensure!(dirty == 0, "{dirty} of {} runs found violations", cli.runs);
    Ok(())
}
