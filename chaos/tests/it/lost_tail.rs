use std::time::Duration;

use recipectl::local_cluster::LocalCluster;
use recipestore::lifecycle::raft_log_dir;
use recipestore_chaos::logs;
use recipestore_chaos::run;
use recipestore_client::Client;
use recipestore_wal::Log;
use recipestore_wal::Options;

/// A power cut can take the tail of a leader's log that followers already
/// stored: the leader replicates entries while its own fdatasync runs. If it
/// restarts before anyone else times out and took its leadership back in the
/// same term, it would give new entries the log ids of the lost ones, and
/// the followers, which hold those ids, would keep their own entries: one id,
/// two entries. It must win a new election instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_log_tail_never_reuses_a_log_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Elections take seconds, so the leader is back long before one.
    let args = [
        "--shed-enabled=false",
        "--election-timeout-min-ms",
        "3000",
        "--election-timeout-max-ms",
        "4000",
    ];
    let binary = run::node_binary().expect("node binary");
    let base_port = run::free_base_port(&mut rand::rng(), 3);
    let mut cluster = LocalCluster::new(&binary, dir.path(), base_port, 3, &args).expect("layout");
    cluster.start_all().expect("start");
    cluster
        .initialize(Duration::from_secs(30))
        .await
        .expect("initialize");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let client = Client::new(&cluster.client_endpoints()).expect("client");
    for i in 0..20 {
        client
            .upload(&format!("before-{i}"), b"x".to_vec(), None)
            .await
            .expect("upload");
    }

    // The crash: the leader dies and its disk keeps all but the last 5 entries.
    cluster.node(leader).kill();
    {
        let log_dir = raft_log_dir(&cluster.nodes[leader as usize].data_dir);
        let (mut log, _) = Log::open(&log_dir, Options::default()).expect("open log");
        let last = log.last_index().expect("entries");
        log.truncate_after(last - 5).expect("cut the tail");
    }
    cluster.node(leader).start().expect("restart");

    // Writes through the restarted node, with different contents.
    let restarted = Client::new(&[cluster.nodes[leader as usize].client_addr()]).expect("client");
    for i in 0..10 {
        restarted
            .upload(&format!("after-{i}"), b"y".to_vec(), None)
            .await
            .expect("upload after the restart");
    }
    for i in 0..20 {
        let name = format!("before-{i}");
        restarted
            .download(
                &name,
                recipestore_protocol::pb::Consistency::Linearizable,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"));
    }
    cluster.stop_all(Duration::from_secs(10));

    let dirs: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, raft_log_dir(&n.data_dir)))
        .collect();
    let node_logs = logs::read_logs(dirs.iter().map(|(id, d)| (*id, d.as_path()))).expect("logs");
    let divergent = logs::divergent_log_ids(&node_logs).expect("compare");
    assert!(
        divergent.is_empty(),
        "log ids with two entries: {divergent:#?}"
    );
}
