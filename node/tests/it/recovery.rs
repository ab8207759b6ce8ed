//! Recovery from the permanent loss of a majority: `--force-new-cluster`.

use std::collections::BTreeSet;
use std::time::Duration;

use recipestore_client::RetryPolicy;
use recipestore_protocol::pb;

use crate::cluster::Acked;
use crate::cluster::TestCluster;
use crate::cluster::assert_all_readable;
use crate::cluster::eventually;

fn voters(status: &pb::StatusResponse) -> BTreeSet<u64> {
    status.voters.iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_majority_is_forced_into_a_new_cluster_and_the_others_rejoin() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let mut acked = Acked::new();
    for i in 0..50 {
        let name = format!("kept-{i:02}");
        let content = format!("recipe {i}").into_bytes();
        let version = client
            .upload(&name, content.clone(), None)
            .await
            .unwrap()
            .version;
        acked.insert(name, (version, content));
    }
    let last = acked.values().map(|(v, _)| *v).max().unwrap();
    // Node 0 is the most up-to-date survivor: it has applied every write.
    eventually(Duration::from_secs(10), "node 0 to apply", || async {
        let s = c.cluster.nodes[0].status().await.ok()?;
        (s.applied_index >= last).then_some(())
    })
    .await;
    let cluster_id = c.cluster.nodes[0].status().await.unwrap().cluster_id;

    // Nodes 1 and 2 are lost with their disks: node 0 alone has no quorum.
    for id in [1, 2] {
        let node = &mut c.cluster.nodes[id];
        node.kill();
        std::fs::remove_dir_all(&node.data_dir).unwrap();
    }
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let lone = c.client_with(
        &[c.cluster.nodes[0].client_addr()],
        once,
        Duration::from_secs(2),
    );
    assert!(
        lone.upload("lost-quorum", b"x".to_vec(), None)
            .await
            .is_err(),
        "a write committed without a quorum"
    );

    let node = &mut c.cluster.nodes[0];
    node.stop(Duration::from_secs(5));
    node.add_args(&["--force-new-cluster"]);
    node.start().unwrap();
    let status = eventually(Duration::from_secs(30), "node 0 to lead alone", || async {
        let s = c.cluster.nodes[0].status().await.ok()?;
        (s.leader_id == Some(0)).then_some(s)
    })
    .await;
    assert_eq!(voters(&status), BTreeSet::from([0]));
    assert_eq!(status.cluster_id, cluster_id, "the cluster keeps its id");
    let survivor = c.node_client(0);
    assert_all_readable(&survivor, &acked).await;
    let next = survivor
        .upload("after-recovery", b"y".to_vec(), None)
        .await
        .unwrap();
    assert!(next.version > last, "{next:?}");

    // The lost members come back as new members with empty disks.
    let admin = c.cluster.nodes[0].admin();
    for id in [1, 2] {
        let node = &mut c.cluster.nodes[id];
        node.start().unwrap();
        admin
            .add_learner(node.member(), true)
            .await
            .unwrap_or_else(|e| panic!("add learner {id}: {e}\n{}", c.logs()));
        admin.promote(id as u64).await.unwrap();
    }
    let status = c.cluster.nodes[0].status().await.unwrap();
    assert_eq!(voters(&status), BTreeSet::from([0, 1, 2]));

    // Restarted with the flag still set, node 0 changes nothing: the
    // members added back stay.
    let node = &mut c.cluster.nodes[0];
    node.stop(Duration::from_secs(5));
    node.start().unwrap();
    c.leader().await;
    let status = eventually(Duration::from_secs(30), "node 0 back", || async {
        c.cluster.nodes[0].status().await.ok()
    })
    .await;
    assert_eq!(voters(&status), BTreeSet::from([0, 1, 2]), "{}", c.logs());
    assert!(
        c.cluster.nodes[0].log().contains("nothing changed"),
        "{}",
        c.logs()
    );
    assert_all_readable(&c.client(), &acked).await;
}
