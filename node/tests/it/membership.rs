use std::collections::BTreeSet;
use std::time::Duration;

use recipestore_protocol::pb;

use crate::cluster::TestCluster;
use crate::cluster::Writer;
use crate::cluster::assert_all_readable;
use crate::cluster::eventually;

async fn voters(c: &TestCluster, via: u64) -> BTreeSet<u64> {
    let status = c.cluster.nodes[via as usize]
        .status()
        .await
        .unwrap_or_else(|e| panic!("status of node {via}: {e}\n{}", c.logs()));
    status.voters.iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_five_to_three_voters_with_writes_running_loses_nothing() {
    let mut c = TestCluster::start(3, &[]).await;
    let writer = Writer::start(c.client(), "scale");
    writer.await_progress(10, Duration::from_secs(30)).await;

    // Scale out: start two nodes, add them as learners, then promote.
    for _ in 0..2 {
        let node = c.cluster.push_node();
        node.start().unwrap();
    }
    for id in [3, 4] {
        let member = c.cluster.nodes[id as usize].member();
        let admin = c.cluster.nodes[0].admin();
        let reply = admin
            .add_learner(member, true)
            .await
            .unwrap_or_else(|e| panic!("add learner {id}: {e}\n{}", c.logs()));
        assert!(reply.learners.iter().any(|m| m.id == id));
    }
    let admin = c.cluster.nodes[1].admin();
    let reply = admin
        .change_membership(vec![0, 1, 2, 3, 4], false)
        .await
        .unwrap();
    assert_eq!(reply.voters.len(), 5);
    // The newest voter learns the membership it belongs to by replication.
    eventually(
        Duration::from_secs(10),
        "node 4 to see five voters",
        || async { (voters(&c, 4).await == BTreeSet::from([0, 1, 2, 3, 4])).then_some(()) },
    )
    .await;
    writer.await_progress(10, Duration::from_secs(30)).await;

    // Scale in: remove the two highest ids, one at a time, then stop them.
    for (id, remaining) in [(4, vec![0, 1, 2, 3]), (3, vec![0, 1, 2])] {
        admin
            .change_membership(remaining.clone(), false)
            .await
            .unwrap_or_else(|e| panic!("remove {id}: {e}\n{}", c.logs()));
        eventually(Duration::from_secs(10), "the removal to commit", || async {
            let v = voters(&c, 0).await;
            (v == remaining.iter().copied().collect()).then_some(())
        })
        .await;
        c.cluster.node(id).stop(Duration::from_secs(5));
        writer.await_progress(5, Duration::from_secs(30)).await;
    }
    let acked = writer.finish().await;
    let status = c.cluster.nodes[0].status().await.unwrap();
    assert!(
        status.learners.is_empty(),
        "removed nodes are gone: {:?}",
        status.learners
    );
    assert_all_readable(&c.client(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_on_request_and_on_graceful_shutdown() {
    let mut c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let target = (leader + 1) % 3;
    let admin = c.cluster.nodes[target as usize].admin();
    let reply = admin
        .transfer_leadership(target)
        .await
        .unwrap_or_else(|e| panic!("transfer: {e}\n{}", c.logs()));
    assert_eq!(reply.leader_id, target);
    assert_eq!(c.leader().await, target);

    // SIGTERM on the leader hands leadership over before it exits.
    c.cluster.node(target).stop(Duration::from_secs(10));
    let next = c.leader().await;
    assert_ne!(next, target);
    assert!(
        c.cluster.nodes[target as usize]
            .log()
            .contains("node stopped"),
        "the leader shut down cleanly"
    );
    c.client()
        .upload("after-handover", b"ok".to_vec(), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_can_be_removed_but_a_voter_must_leave_the_voters_first() {
    let mut c = TestCluster::start(3, &[]).await;
    let learner = c.cluster.push_node();
    learner.start().unwrap();
    let member = learner.member();
    let admin = c.cluster.nodes[2].admin();
    admin
        .add_learner(member, true)
        .await
        .unwrap_or_else(|e| panic!("add learner: {e}\n{}", c.logs()));

    let err = admin.remove_learner(1).await.unwrap_err();
    assert_eq!(
        err.status().unwrap().code(),
        tonic::Code::FailedPrecondition,
        "{err}"
    );
    let reply = admin.remove_learner(3).await.unwrap();
    assert!(reply.learners.is_empty(), "{:?}", reply.learners);
    assert_eq!(reply.voters.len(), 3);
    let err = admin.remove_learner(3).await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), tonic::Code::NotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_remove_are_computed_by_the_leader_and_idempotent() {
    let mut c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    // Ask a follower each time: the leader computes every change.
    let via = (leader + 1) % 3;
    let learner = c.cluster.push_node();
    learner.start().unwrap();
    let member = learner.member();
    let admin = c.cluster.nodes[via as usize].admin();
    let first = admin.add_learner(member.clone(), true).await.unwrap();
    assert!(first.changed);
    // Adding it again, as a retry after a lost reply would, changes nothing.
    let again = admin.add_learner(member.clone(), false).await.unwrap();
    assert!(!again.changed, "{again:?}");
    assert!(again.learners.iter().any(|m| m.id == 3));
    // The same id at another address is a different node: refused.
    let moved = pb::Member {
        peer_addr: "127.0.0.1:1".into(),
        ..member
    };
    let err = admin.add_learner(moved, false).await.unwrap_err();
    assert_eq!(
        err.status().unwrap().code(),
        tonic::Code::FailedPrecondition,
        "{err}"
    );

    let promoted = admin
        .promote(3)
        .await
        .unwrap_or_else(|e| panic!("promote: {e}\n{}", c.logs()));
    assert!(promoted.changed);
    let ids: BTreeSet<u64> = promoted.voters.iter().map(|m| m.id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2, 3]));
    let again = admin.promote(3).await.unwrap();
    assert!(!again.changed);
    let err = admin.promote(9).await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), tonic::Code::NotFound, "{err}");

    let removed = admin
        .remove_member(3)
        .await
        .unwrap_or_else(|e| panic!("remove: {e}\n{}", c.logs()));
    assert!(removed.changed);
    let ids: BTreeSet<u64> = removed.voters.iter().map(|m| m.id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]));
    assert!(removed.learners.is_empty(), "{:?}", removed.learners);
    let again = admin.remove_member(3).await.unwrap();
    assert!(!again.changed);
}

/// A follower stopped while the leader keeps replicating to it (its append
/// stream open) shuts down promptly, rather than waiting out the server's
/// grace for the stream to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stops_promptly_while_the_leader_replicates_to_it() {
    let mut c = TestCluster::start(3, &[]).await;
    let writer = Writer::start(c.client(), "stop");
    writer.await_progress(20, Duration::from_secs(30)).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let started = std::time::Instant::now();
    c.cluster.node(follower).stop(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        c.cluster.nodes[follower as usize]
            .log()
            .contains("node stopped"),
        "the follower shut down cleanly"
    );
    assert!(
        took < Duration::from_secs(3),
        "the follower took {took:?} to stop\n{}",
        c.logs()
    );
    writer.finish().await;
}
