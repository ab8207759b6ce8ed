//! The `docker` suite: the real image, a 3-node cluster of containers on
//! private networks with named volumes; failover, a partition, and a full
//! restart, checking every acknowledged write.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_client::admin::AdminClient;
use recipestore_client::admin::Timeouts;
use recipestore_e2e::docker::DockerCluster;
use recipestore_e2e::docker::POLL;
use recipestore_e2e::docker::build_node_image;
use recipestore_protocol::pb;
use recipestore_protocol::pb::Consistency;
use tonic::Code;

fn client(endpoints: &[String], attempts: u32, timeout: Duration) -> Client {
    let policy = RetryPolicy {
        max_attempts: attempts,
        max_delay: Duration::from_millis(500),
        budget: 1_000.0,
        ..RetryPolicy::default()
    };
    Client::with_policy(endpoints, policy, timeout).expect("client")
}

fn admin(c: &DockerCluster, id: u64, request_timeout: Duration) -> anyhow::Result<AdminClient> {
    let timeouts = Timeouts {
        request: request_timeout,
        ..Timeouts::default()
    };
    Ok(AdminClient::new(&c.admin_endpoint(id)?, timeouts)?)
}

async fn status(c: &DockerCluster, id: u64) -> anyhow::Result<pb::StatusResponse> {
    Ok(admin(c, id, Duration::from_secs(2))?.status().await?)
}

/// Polls until the given nodes agree on a leader among them.
async fn leader_among(c: &DockerCluster, nodes: &[u64], wait: Duration) -> u64 {
    let deadline = Instant::now() + wait;
    loop {
        let mut seen = Vec::new();
        for id in nodes {
            if let Ok(s) = status(c, *id).await {
                seen.push(s.leader_id);
            }
        }
        if let Some(Some(leader)) = seen.first()
            && seen.len() == nodes.len()
            && seen.iter().all(|l| *l == Some(*leader))
            && nodes.contains(leader)
        {
            return *leader;
        }
        assert!(
            Instant::now() < deadline,
            "no leader among {nodes:?}: {seen:?}\n{}",
            c.logs(nodes[0])
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn upload_all(
    client: &Client,
    prefix: &str,
    n: usize,
    acked: &mut BTreeMap<String, (u64, Vec<u8>)>,
) {
    for i in 0..n {
        let name = format!("{prefix}-{i:03}");
        let content = format!("{name}: rice, beans, {i} chillies").into_bytes();
        let v = client
            .upload(&name, content.clone(), None)
            .await
            .expect("upload")
            .version;
        acked.insert(name, (v, content));
    }
}

async fn assert_readable(
    client: &Client,
    acked: &BTreeMap<String, (u64, Vec<u8>)>,
    consistency: Consistency,
) {
    let min = acked.values().map(|(v, _)| *v).max();
    for (name, (version, content)) in acked {
        let read = client
            .download(name, consistency, min)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {name} unreadable: {e}"));
        assert_eq!((&read.version, &read.content), (version, content), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_failover_partition_and_restart() {
    let _cluster = crate::ONE_CLUSTER_AT_A_TIME.lock().await;
    build_node_image().expect("build the node image");
    let c = DockerCluster::start(3).expect("start containers");
    let endpoints: Vec<String> = (0..3).map(|id| c.client_endpoint(id).unwrap()).collect();

    // Form the cluster through node 0's admin API, with peer aliases.
    let members: Vec<pb::Member> = (0..3)
        .map(|id| pb::Member {
            id,
            peer_addr: format!("peer-{id}:7071"),
            client_addr: format!("peer-{id}:7070"),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let admin = admin(&c, 0, Duration::from_secs(10))?;
            anyhow::Ok(admin.initialize(members.clone()).await?)
        };
        match attempt.await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "initialize: {e:#}\n{}",
                c.logs(0)
            ),
        }
        tokio::time::sleep(POLL).await;
    }
    let leader = leader_among(&c, &[0, 1, 2], Duration::from_secs(60)).await;

    // Upload and download through each container.
    let mut acked = BTreeMap::new();
    for id in 0..3 {
        let node = client(
            &endpoints[id as usize..=id as usize],
            20,
            Duration::from_secs(5),
        );
        upload_all(&node, &format!("via-{id}"), 5, &mut acked).await;
        assert_readable(&node, &acked, Consistency::Linearizable).await;
    }

    // docker kill the leader: the others elect a new one and keep writing.
    c.kill(leader).unwrap();
    let others: Vec<u64> = (0..3).filter(|id| *id != leader).collect();
    let new_leader = leader_among(&c, &others, Duration::from_secs(60)).await;
    assert_ne!(new_leader, leader);
    let survivors: Vec<String> = others
        .iter()
        .map(|id| endpoints[*id as usize].clone())
        .collect();
    let majority = client(&survivors, 40, Duration::from_secs(5));
    upload_all(&majority, "after-kill", 10, &mut acked).await;
    c.start_node(leader).unwrap();
    // Its client address may change with the restart.
    let endpoints: Vec<String> = (0..3).map(|id| c.client_endpoint(id).unwrap()).collect();
    let all = client(&endpoints, 40, Duration::from_secs(5));
    assert_readable(&all, &acked, Consistency::Linearizable).await;

    // Partition the current leader from its peers.
    let isolated = leader_among(&c, &[0, 1, 2], Duration::from_secs(60)).await;
    c.partition(isolated).unwrap();
    let majority_ids: Vec<u64> = (0..3).filter(|id| *id != isolated).collect();
    leader_among(&c, &majority_ids, Duration::from_secs(60)).await;
    let majority_endpoints: Vec<String> = majority_ids
        .iter()
        .map(|id| endpoints[*id as usize].clone())
        .collect();
    let majority = client(&majority_endpoints, 40, Duration::from_secs(5));
    upload_all(&majority, "during-partition", 10, &mut acked).await;

    // The minority refuses linearizable reads and writes.
    let minority = client(
        &endpoints[isolated as usize..=isolated as usize],
        1,
        Duration::from_secs(3),
    );
    let err = minority
        .upload("minority-write", b"lost?".to_vec(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
        ),
        "minority write: {err}"
    );
    let err = minority
        .download("via-0-000", Consistency::Linearizable, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        ),
        "minority linearizable read: {err}"
    );

    // Heal: the isolated node converges on the majority's log.
    c.heal(isolated).unwrap();
    let healed = client(
        &endpoints[isolated as usize..=isolated as usize],
        40,
        Duration::from_secs(10),
    );
    assert_readable(&healed, &acked, Consistency::Local).await;
    assert_readable(&healed, &acked, Consistency::Linearizable).await;

    // Restart every container: all acknowledged writes survive.
    c.restart_all().unwrap();
    leader_among(&c, &[0, 1, 2], Duration::from_secs(60)).await;
    let endpoints: Vec<String> = (0..3).map(|id| c.client_endpoint(id).unwrap()).collect();
    let all = client(&endpoints, 40, Duration::from_secs(5));
    assert_readable(&all, &acked, Consistency::Linearizable).await;
    for id in 0..3 {
        assert!(c.is_running(id), "node {id} is running");
    }
}
