//! `recipectl` against a real node process.

use std::time::Duration;

use recipectl::local_cluster::LocalCluster;
use recipectl::local_cluster::LocalStore;
use recipestore_protocol::pb;
use recipestore_testkit::FAST_RAFT;
use recipestore_testkit::binary;
use recipestore_testkit::eventually;
use recipestore_testkit::free_node_ports;

/// `recipectl --peers <peers> --output json <command...>`'s output, which
/// must succeed.
fn recipectl_json(peers: &str, command: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recipectl"))
        .args(["--peers", peers, "--output", "json"])
        .args(command)
        .output()
        .expect("run recipectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

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

    let rows = recipectl_json(&node.peer_addr(), &["status"]);
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

/// `recipectl shards` and `status` on a store of two shards: each shard's
/// slots from its own group, the moves to three shards, every member named
/// by shard and id, and a warning for the slots of shards it was not told
/// how to reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_shows_each_shard_s_slots_and_what_no_shard_reached_owns() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LocalStore::new(
        &binary("recipestore-node"),
        dir.path(),
        free_node_ports(),
        2,
        1,
        FAST_RAFT,
    )
    .unwrap();
    store.start_all().unwrap();
    store.initialize(Duration::from_secs(30)).await.unwrap();
    let peers = store.peer_endpoints();

    let all = recipectl_json(&peers.join(","), &["shards"]);
    let shards = all["shards"].as_array().unwrap();
    let ranges: Vec<_> = shards
        .iter()
        .map(|s| (s["shard"].clone(), s["ranges"].clone()))
        .collect();
    assert_eq!(
        ranges,
        [(0.into(), "0-511".into()), (1.into(), "512-1023".into())],
        "{all}"
    );
    assert_eq!(all["problems"], serde_json::json!([]), "{all}");

    let one = recipectl_json(&peers[1], &["shards"]);
    assert_eq!(one["shards"].as_array().unwrap().len(), 1, "{one}");
    let problem = one["problems"][0].as_str().unwrap_or_default();
    assert!(
        problem.contains("no shard reached owns slots 0-511"),
        "{one}"
    );

    // Three shards would take 170 of shard 0's slots and 171 of shard 1's.
    let plan = recipectl_json(&peers.join(","), &["shards", "--plan", "3"]);
    assert_eq!(plan["moved"], 341, "{plan}");
    let runs: Vec<_> = plan["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].clone(), m["to"].clone(), m["slots"].clone()))
        .collect();
    assert_eq!(
        runs,
        [
            (0.into(), 2.into(), "342-511".into()),
            (1.into(), 2.into(), "853-1023".into())
        ],
        "{plan}"
    );

    let members = recipectl_json(&peers.join(","), &["status"]);
    let keys: Vec<_> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["shard"].clone(), m["id"].clone()))
        .collect();
    assert_eq!(
        keys,
        [(0.into(), 0.into()), (1.into(), 0.into())],
        "{members}"
    );
    store.stop_all(Duration::from_secs(5));
}
