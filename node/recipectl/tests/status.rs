//! `recipectl` against a real node process.

use std::time::Duration;

use recipectl::local_cluster::LocalCluster;
use recipestore_protocol::pb;
use recipestore_testkit::FAST_RAFT;
use recipestore_testkit::binary;
use recipestore_testkit::eventually;
use recipestore_testkit::free_node_ports;

/// From outside a cluster (a port-forward, a load balancer) a member's
/// advertised address often does not work: `recipectl status` uses the
/// address it was given, and says which advertised names do not resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_uses_the_addresses_it_was_given_and_names_unresolvable_members() {
    // Node 0 advertises an address nothing listens on, as a pod's in-cluster
    // name looks from a laptop.
    let dir = tempfile::tempdir().unwrap();
    let mut args = FAST_RAFT.to_vec();
    args.extend(["--advertise-addr", "127.0.0.2"]);
    let mut cluster = LocalCluster::new(
        &binary("recipestore-node"),
        dir.path(),
        free_node_ports(),
        1,
        &args,
    )
    .unwrap();
    cluster.start_all().unwrap();
    let node = &cluster.nodes[0];
    eventually(Duration::from_secs(30), "node 0 to initialize", || async {
        node.admin().initialize(vec![]).await.ok()
    })
    .await;
    eventually(Duration::from_secs(30), "node 0 to lead", || async {
        let status = node.status().await.ok()?;
        (status.leader_id == Some(0)).then_some(())
    })
    .await;
    let far = pb::Member {
        id: 9,
        peer_addr: "store-9.peers.recipes.invalid:7071".into(),
        client_addr: "store-9.peers.recipes.invalid:7070".into(),
    };
    node.admin()
        .add_learner(far, false)
        .await
        .unwrap_or_else(|e| panic!("add learner: {e}\n{}", node.log()));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recipectl"))
        .args(["--peers", &node.peer_addr(), "--output", "json", "status"])
        .output()
        .expect("run recipectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = |id: u64| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("node {id} missing: {rows}"))
            .clone()
    };
    assert_eq!(row(0)["role"], "leader", "{rows}");
    let error = row(9)["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("does not resolve"), "{rows}");
}
