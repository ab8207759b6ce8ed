use std::time::Duration;

use recipestore_protocol::pb;

use crate::cluster::TestCluster;
use crate::cluster::eventually;
use crate::cluster::metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_after_the_log_was_purged_catches_up_by_snapshot() {
    // Keep no log behind snapshots, so the learner cannot catch up from the log.
    let mut c = TestCluster::start(3, &["--logs-to-keep", "0"]).await;
    let client = c.client();
    let mut written = Vec::new();
    for i in 0..50 {
        let name = format!("snap-{i:03}");
        let content = vec![b'a' + (i % 26) as u8; 2_000 + i];
        let version = client
            .upload(&name, content.clone(), None)
            .await
            .unwrap()
            .version;
        written.push((name, version, content));
    }
    let leader = c.leader().await;
    let admin = c.cluster.nodes[leader as usize].admin();
    let snap = admin.trigger_snapshot().await.unwrap();
    let purged = eventually(
        Duration::from_secs(10),
        "the leader's log to be purged",
        || async {
            let s = c.cluster.nodes[leader as usize].status().await.ok()?;
            (s.purged_index >= snap.last_index).then_some(s.purged_index)
        },
    )
    .await;
    assert!(purged > 1, "log purged up to {purged}");

    let learner = c.cluster.push_node();
    learner.start().unwrap();
    let member = learner.member();
    admin
        .add_learner(member, true)
        .await
        .unwrap_or_else(|e| panic!("add learner: {e}\n{}", c.logs()));

    let status = c.cluster.nodes[3]
        .status()
        .await
        .unwrap_or_else(|e| panic!("learner status: {e}\n{}", c.logs()));
    assert_eq!(status.role, pb::Role::Learner as i32);
    let installed = status
        .snapshot
        .expect("the learner has a snapshot")
        .last_index;
    assert!(
        installed >= snap.last_index,
        "installed snapshot at {installed}"
    );

    let learner_client = c.node_client(3);
    for (name, version, content) in &written {
        let read = learner_client
            .download(name, pb::Consistency::Local, Some(*version))
            .await
            .unwrap();
        assert_eq!((&read.version, &read.content), (version, content), "{name}");
    }
}

/// A snapshot rewrites the whole state, so a node waits for as many
/// entries as half the recipes its last snapshot held, not only for
/// `--snapshot-logs`: before, a store of 100k recipes was rewritten every
/// 10,000 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_state_is_snapshotted_after_proportionally_more_entries() {
    let c = TestCluster::start(1, &["--snapshot-logs", "50"]).await;
    let client = c.client();
    let node = &c.cluster.nodes[0];
    for i in 0..400 {
        client
            .upload(&format!("r-{i:03}"), vec![b'x'; 100], None)
            .await
            .unwrap();
    }
    // A snapshot of all 400 recipes: the next is due 200 entries later.
    let first = node.admin().trigger_snapshot().await.unwrap().last_index;
    const BUILDS: &str = "recipestore_storage_snapshot_build_duration_seconds_count";
    let builds = metric(&c, 0, BUILDS).await;
    assert!(builds > 0.0, "no snapshot build counted");
    for i in 0..260 {
        client
            .upload(&format!("r-{i:03}"), vec![b'y'; 100], None)
            .await
            .unwrap();
    }
    let next = eventually(Duration::from_secs(10), "the next snapshot", || async {
        let s = node.status().await.ok()?;
        s.snapshot
            .map(|snap| snap.last_index)
            .filter(|&index| index > first)
    })
    .await;
    assert!(
        next >= first + 200,
        "a snapshot {} entries after the last",
        next - first
    );
    assert_eq!(
        metric(&c, 0, BUILDS).await,
        builds + 1.0,
        "one snapshot built in 260 entries"
    );
}
