use std::time::Duration;

use recipestore_protocol::pb::Consistency;

use crate::cluster::TestCluster;
use crate::cluster::eventually;
use crate::cluster::http_get;
use crate::cluster::metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_a_follower_is_readable_from_every_node() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = (0..3).find(|id| *id != leader).unwrap();

    let reply = c
        .node_client(follower)
        .upload(
            "pad-thai",
            b"rice noodles, tamarind, peanuts".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert!(reply.version > 0);
    let leader_addr = c.cluster.nodes[leader as usize].client_addr();
    assert_eq!(reply.leader, leader_addr, "the reply names the leader");

    for id in 0..3 {
        let node = c.node_client(id);
        let local = node
            .download("pad-thai", Consistency::Local, Some(reply.version))
            .await
            .unwrap();
        assert_eq!(local.content, b"rice noodles, tamarind, peanuts");
        assert_eq!(local.version, reply.version);
        let linearizable = node
            .download("pad-thai", Consistency::Linearizable, None)
            .await
            .unwrap();
        assert_eq!(linearizable.version, reply.version);
        assert_eq!(linearizable.content, local.content);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_the_latest_acknowledged_write() {
    let c = TestCluster::start(3, &[]).await;
    let writer = c.client();
    let leader = c.leader().await;
    let follower = c.node_client((leader + 1) % 3);
    for round in 0..20u32 {
        let content = format!("version {round}").into_bytes();
        let reply = writer.upload("stew", content.clone(), None).await.unwrap();
        let read = follower
            .download("stew", Consistency::Linearizable, None)
            .await
            .unwrap();
        assert!(
            read.version >= reply.version,
            "stale linearizable read in round {round}"
        );
        assert_eq!(read.content, content);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_conditional_writes_and_list_pages_behave_like_a_kv_store() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let v1 = client
        .upload("soup/tomato", b"v1".to_vec(), Some(0))
        .await
        .unwrap()
        .version;
    // if_version 0 means "create only".
    let err = client
        .upload("soup/tomato", b"v2".to_vec(), Some(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert_eq!(recipestore_client::current_version(&err), Some(v1));
    let v2 = client
        .upload("soup/tomato", b"v2".to_vec(), Some(v1))
        .await
        .unwrap()
        .version;
    assert!(v2 > v1, "versions grow");
    for name in ["soup/leek", "soup/miso", "salad/greek"] {
        client
            .upload(name, name.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }

    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list("soup/", 2, &token, Consistency::Linearizable)
            .await
            .unwrap();
        pages += 1;
        names.extend(page.recipes.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["soup/leek", "soup/miso", "soup/tomato"]);
    assert_eq!(pages, 2);

    let err = client.delete("soup/tomato", Some(v1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(recipestore_client::current_version(&err), Some(v2));
    client.delete("soup/tomato", Some(v2)).await.unwrap();
    let err = client
        .download("soup/tomato", Consistency::Linearizable, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client.delete("soup/tomato", None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_report_health_readiness_and_metrics() {
    let c = TestCluster::start(3, &[]).await;
    // Node 1 serves an upload and a download, so its request, queue and
    // cache families all have samples.
    let client = c.node_client(1);
    let v = client
        .upload("bread", b"flour, water".to_vec(), None)
        .await
        .unwrap()
        .version;
    client
        .download("bread", Consistency::Local, Some(v))
        .await
        .unwrap();
    let http = c.cluster.nodes[1].http_addr();
    eventually(Duration::from_secs(10), "readyz", || async {
        http_get(&http, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(http_get(&http, "/healthz").await.unwrap().0, 200);
    let (code, metrics) = http_get(&http, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for family in [
        "recipestore_raft_term",
        "recipestore_raft_is_leader",
        "recipestore_raft_log_index",
        "recipestore_raft_members",
        "recipestore_storage_fsync_duration_seconds",
        "recipestore_process_cpu_seconds_total",
        "recipestore_requests_total{code=\"Ok\",op=\"upload\"}",
        "recipestore_request_duration_seconds_bucket",
        "recipestore_shed_requests_total{op=\"download\",reason=\"memory\"}",
        "recipestore_queue_depth{queue=\"download\"}",
        "recipestore_queue_wait_seconds_count{queue=\"upload\"}",
        "recipestore_queue_workers{queue=\"download\"}",
        "recipestore_cpu_usage_ratio",
        "recipestore_memory_available_bytes",
        "recipestore_cache_hits_total",
        "recipestore_cache_misses_total",
        "recipestore_cache_evictions_total",
        "recipestore_cache_size_bytes",
        "recipestore_cache_entries",
    ] {
        assert!(
            metrics.contains(family),
            "/metrics lacks {family}:\n{metrics}"
        );
    }

    // A node that belongs to no cluster is alive but not ready.
    let mut lone = TestCluster::layout(1, &[]);
    lone.cluster.start_all().unwrap();
    let lone_http = lone.cluster.nodes[0].http_addr();
    eventually(Duration::from_secs(10), "lone node healthz", || async {
        http_get(&lone_http, "/healthz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    let (code, body) = http_get(&lone_http, "/readyz").await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("no known leader"), "{body}");
}

/// Writes that reach the leader together are proposed together: they share
/// its log appends (one per batch, not one per write), and with them the
/// fdatasyncs and AppendEntries that follow. Handed to Raft one by one,
/// 512 writes from 64 writers took 180-190 appends; batched, about 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_the_leaders_log_appends() {
    const APPENDS: &str = "recipestore_storage_fsync_batch_appends_sum";
    const WRITERS: usize = 64;
    const ROUNDS: usize = 8;
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let client = std::sync::Arc::new(c.node_client(leader));
    let before = metric(&c, leader, APPENDS).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    client
                        .upload(&format!("batched-{w}"), vec![round as u8; 512], None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let appends = metric(&c, leader, APPENDS).await - before;
    let writes = (WRITERS * ROUNDS) as f64;
    assert!(
        appends > 0.0 && appends * 6.0 < writes,
        "the leader made {appends} log appends for {writes} concurrent writes"
    );
}
