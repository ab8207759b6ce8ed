use std::time::Duration;

use crate::cluster::TestCluster;
use crate::cluster::Writer;
use crate::cluster::assert_all_readable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_writes_elects_a_new_one_and_loses_nothing() {
    let mut c = TestCluster::start(3, &[]).await;
    let old_leader = c.leader().await;
    let writer = Writer::start(c.client(), "failover");
    writer.await_progress(20, Duration::from_secs(30)).await;

    c.cluster.node(old_leader).kill();
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old_leader, "a surviving node leads");
    // Writes resume under the new leader.
    writer.await_progress(20, Duration::from_secs(30)).await;
    let acked = writer.finish().await;

    c.cluster.node(old_leader).start().unwrap();
    assert_all_readable(&c.client(), &acked).await;
    // The restarted node catches up and serves the same data locally.
    let last = acked.values().map(|(v, _)| *v).max().unwrap();
    let old = c.node_client(old_leader);
    for (name, (version, content)) in acked.iter().rev().take(5) {
        let read = old
            .download(
                name,
                recipestore_protocol::pb::Consistency::Local,
                Some(last),
            )
            .await
            .unwrap_or_else(|e| panic!("restarted node lacks {name}: {e}\n{}", c.logs()));
        assert_eq!((&read.version, &read.content), (version, content));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_node_during_writes_keeps_every_acknowledged_upload() {
    let mut c = TestCluster::start(3, &[]).await;
    let writer = Writer::start(c.client(), "crash");
    writer.await_progress(40, Duration::from_secs(30)).await;

    // SIGKILL all three while uploads are in flight.
    for id in 0..3 {
        c.cluster.node(id).kill();
    }
    let acked = writer.finish().await;

    c.cluster.start_all().unwrap();
    c.leader().await;
    assert_all_readable(&c.client(), &acked).await;
}
