use std::time::Duration;

use recipestore_testkit::eventually;

use crate::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_another_nodes_data_directory() {
    let mut c = TestCluster::start(3, &[]).await;
    c.cluster.node(1).stop(Duration::from_secs(5));
    let other_dir = c.cluster.nodes[2].data_dir.clone();
    let out = c.cluster.nodes[1]
        .command(&other_dir)
        .output()
        .expect("run the node");
    assert!(!out.status.success(), "the node must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("belongs to node 2") && stderr.contains("started as node 1"),
        "unclear refusal: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_one_cluster_refuses_to_join_another() {
    let a = TestCluster::start(1, &[]).await;
    let mut b = TestCluster::start(1, &[]).await;
    let a_id = a.cluster.nodes[0].status().await.unwrap().cluster_id;
    let b_id = b.cluster.nodes[0].status().await.unwrap().cluster_id;
    assert_ne!(a_id, b_id);

    // Asked to add B's node, A's leader refuses and says why. Over TLS
    // the clusters' CAs differ, so A cannot even reach B's node: the
    // handshake refuses it before the cluster ids are compared.
    let admin = a.cluster.nodes[0].admin();
    let err = admin
        .add_learner(b.cluster.nodes[0].member(), false)
        .await
        .unwrap_err();
    let status = err.status().unwrap();
    if a.client_tls().is_none() {
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status
                .message()
                .contains(&format!("belongs to cluster {b_id}")),
            "{err}"
        );
    }
    let status = a.cluster.nodes[0].status().await.unwrap();
    assert!(status.learners.is_empty(), "nothing was added");

    // Restarted with A's cluster id expected, B's node refuses to start.
    b.cluster.node(0).stop(Duration::from_secs(5));
    let node = &b.cluster.nodes[0];
    let out = node
        .command(&node.data_dir)
        .args(["--cluster-id", &a_id])
        .output()
        .expect("run the node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("belongs to cluster {b_id}")) && stderr.contains(&a_id),
        "unclear refusal: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_is_idempotent_but_never_reinitializes_a_cluster() {
    let c = TestCluster::start(3, &[]).await;
    let first = c.cluster.nodes[0].status().await.unwrap().cluster_id;
    let again = c.cluster.initialize(Duration::from_secs(5)).await.unwrap();
    assert!(again.already_initialized);
    assert_eq!(again.cluster_id, first);

    // Once node 1 has heard from the leader it belongs to the cluster, and a
    // fresh single-node cluster is refused. (Before that it is an empty node:
    // an election says nothing about whether the other voters have heard yet.)
    let node1 = &c.cluster.nodes[1];
    eventually(
        Duration::from_secs(10),
        "node 1 to learn the cluster id",
        || async {
            let id = node1.status().await.ok()?.cluster_id;
            (id == first).then_some(())
        },
    )
    .await;
    let err = node1.admin().initialize(vec![]).await.unwrap_err();
    let status = err.status().unwrap();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains(&first), "{err}");
}
