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

/// Every fault on an unsharded store; then the faults that spare the
/// network on shard 0 of a two-shard store, whose calls pass between the
/// shards while slots move back and forth between them. One after
/// another: runs side by side would draw the same ports from the same seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_leaves_a_linearizable_history_and_identical_logs() {
    let seed = seed();
    let node_binary = run::node_binary().expect("node binary");
    let unsharded = Fault::ALL.map(|fault| (fault, 1));
    let sharded = [Fault::KillLeader, Fault::PauseLeader].map(|fault| (fault, 2));
    let mut found = Vec::new();
    for (fault, shards) in unsharded.into_iter().chain(sharded) {
        let config = RunConfig {
            fault,
            duration: Duration::from_secs(8),
            seed,
            workload: match shards {
                1 => WorkloadConfig::default(),
                // Keys in both shards of two: chaos/k0..k7 fall in slots
                // 259, 848, 105, 694, 975, 540, 821 and 386.
                _ => WorkloadConfig {
                    keys: 8,
                    ..WorkloadConfig::default()
                },
            },
            node_binary: node_binary.clone(),
            node_args: Vec::new(),
            shards,
            reshard: shards > 1,
        };
        let run = format!("{fault} on {shards} shard(s), seed {seed}");
        let dir = tempfile::tempdir().expect("tempdir");
        let report = run::run(&config, dir.path())
            .await
            .unwrap_or_else(|e| panic!("{run} failed: {e:#}"));
        println!("{}", serde_json::to_string(&report).expect("json"));
        assert!(report.faults_injected > 0, "{run}: no fault was injected");
        assert!(
            report.ok > 100,
            "{run}: too few operations succeeded to tell anything: {report:?}"
        );
        assert!(
            !config.reshard || report.slots_moved >= 512,
            "{run}: slots did not move: {report:?}"
        );
        if !report.is_clean() {
            found.push(format!("{run}: {report:#?}"));
            let _ = dir.keep();
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
