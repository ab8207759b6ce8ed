use std::time::Duration;
use std::time::SystemTime;

use recipestore_chaos::faults::Fault;
use recipestore_chaos::run;
use recipestore_chaos::run::RunConfig;
use recipestore_chaos::workload::WorkloadConfig;

/// A fresh seed per CI run (printed, so a failure can be replayed with
/// `scripts/chaos.sh --fault F --seed N`), or `$CHAOS_SEED`.
fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() % 100_000)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_leaves_a_linearizable_history_and_identical_logs() {
    let seed = seed();
    let node_binary = run::node_binary().expect("node binary");
    let mut found = Vec::new();
    for fault in Fault::ALL {
        let config = RunConfig {
            fault,
            duration: Duration::from_secs(8),
            seed,
            workload: WorkloadConfig::default(),
            node_binary: node_binary.clone(),
            node_args: Vec::new(),
            shards: 1,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let report = run::run(&config, dir.path())
            .await
            .unwrap_or_else(|e| panic!("{fault} run with seed {seed} failed: {e:#}"));
        println!("{}", serde_json::to_string(&report).expect("json"));
        assert!(report.faults_injected > 0, "{fault}: no fault was injected");
        assert!(
            report.ok > 100,
            "{fault}: too few operations succeeded to tell anything: {report:?}"
        );
        if !report.is_clean() {
            found.push(format!("{fault} (seed {seed}): {report:#?}"));
            let _ = dir.keep();
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Faults on one shard of a two-shard store, whose calls pass between the
/// shards: still linearizable, still no divergent log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_one_shard_of_a_sharded_store_leave_a_linearizable_history() {
    let seed = seed();
    let node_binary = run::node_binary().expect("node binary");
    let mut found = Vec::new();
    for fault in [Fault::KillLeader, Fault::PauseLeader] {
        let config = RunConfig {
            fault,
            duration: Duration::from_secs(8),
            seed,
            // Keys in both shards: chaos/k0..k7 fall in slots 259, 848, 105,
            // 694, 975, 540, 821 and 386.
            workload: WorkloadConfig {
                keys: 8,
                ..WorkloadConfig::default()
            },
            node_binary: node_binary.clone(),
            node_args: Vec::new(),
            shards: 2,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let report = run::run(&config, dir.path())
            .await
            .unwrap_or_else(|e| panic!("sharded {fault} run with seed {seed} failed: {e:#}"));
        println!("{}", serde_json::to_string(&report).expect("json"));
        assert!(report.faults_injected > 0, "{fault}: no fault was injected");
        assert!(
            report.ok > 100,
            "{fault}: too few operations succeeded: {report:?}"
        );
        if !report.is_clean() {
            found.push(format!("sharded {fault} (seed {seed}): {report:#?}"));
            let _ = dir.keep();
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
