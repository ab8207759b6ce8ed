use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use recipestore_protocol::pb::Consistency;
use tonic::Code;

use crate::cluster::TestCluster;
use crate::cluster::metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_returns_a_value_older_than_the_last_acknowledged_write() {
    let c = TestCluster::start(3, &[]).await;
    let writers: Vec<_> = (0..3).map(|id| Arc::new(c.node_client(id))).collect();
    let readers: Vec<_> = (0..3).map(|id| Arc::new(c.node_client(id))).collect();
    // The highest version any writer has seen acknowledged.
    let acked = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for (w, writer) in writers.into_iter().enumerate() {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let content = format!("writer {w} round {i}").into_bytes();
                let v = writer
                    .upload("hot", content, None)
                    .await
                    .expect("upload")
                    .version;
                acked.fetch_max(v, Ordering::SeqCst);
            }
        }));
    }
    for (r, reader) in readers.into_iter().enumerate() {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..60 {
                let floor = acked.load(Ordering::SeqCst);
                // Linearizable: at least every write acknowledged before the read began.
                match reader
                    .download("hot", Consistency::Linearizable, None)
                    .await
                {
                    Ok(read) => assert!(
                        read.version >= floor,
                        "node {r}: read {} < acked {floor}",
                        read.version
                    ),
                    Err(e) => assert_eq!(e.code(), Code::NotFound, "{e}"),
                }
                // Read-your-writes on any node through min_version, served from the cache.
                if floor > 0 {
                    let read = reader
                        .download("hot", Consistency::Local, Some(floor))
                        .await
                        .expect("local read");
                    assert!(
                        read.version >= floor,
                        "node {r}: local read {} < {floor}",
                        read.version
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // Every node converges on the last write, and a delete is seen everywhere.
    let client = c.client();
    let last = client
        .download("hot", Consistency::Linearizable, None)
        .await
        .unwrap();
    for id in 0..3 {
        let local = c
            .node_client(id)
            .download("hot", Consistency::Local, Some(last.version))
            .await
            .unwrap();
        assert_eq!(
            (local.version, &local.content),
            (last.version, &last.content)
        );
    }
    let deleted = client.delete("hot", None).await.unwrap().version;
    for id in 0..3 {
        let node = c.node_client(id);
        // Waits until the node has applied the delete (the name is irrelevant).
        node.download("any", Consistency::Local, Some(deleted))
            .await
            .unwrap_err();
        let err = node
            .download("hot", Consistency::Local, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::NotFound,
            "node {id} still serves a deleted recipe"
        );
    }
}

/// Reads on `node` of `name` at `version` or later: the cache hits and
/// misses they count.
async fn reads_counted(c: &TestCluster, node: u64, name: &str, version: u64) -> (f64, f64) {
    let count = |series| metric(c, node, series);
    let (hits, misses) = (
        count("recipestore_cache_hits_total").await,
        count("recipestore_cache_misses_total").await,
    );
    let read = c
        .node_client(node)
        .download(name, Consistency::Local, Some(version))
        .await
        .expect("local read");
    assert_eq!(read.version, version);
    (
        count("recipestore_cache_hits_total").await - hits,
        count("recipestore_cache_misses_total").await - misses,
    )
}

/// The node that serves an upload caches the recipe; another member, which
/// only applied it, caches it on its own first read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_cached_where_it_was_served() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let version = c
        .node_client(leader)
        .upload("soup", b"hot".to_vec(), None)
        .await
        .unwrap()
        .version;

    assert_eq!(reads_counted(&c, leader, "soup", version).await, (1.0, 0.0));
    assert_eq!(
        reads_counted(&c, follower, "soup", version).await,
        (0.0, 1.0),
        "a member that only applied the upload cached it"
    );
    assert_eq!(
        reads_counted(&c, follower, "soup", version).await,
        (1.0, 0.0)
    );
}

/// The cache's hit ratio is the reads': applying conditional writes, which
/// looks up each recipe's version (on the leader, in the cache that holds
/// it), counts neither hits nor misses on any member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_writes_counts_no_cache_reads() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let mut version = 0;
    for round in 0..3 {
        // The first upload creates the recipe; the others are conditional.
        let if_version = (round > 0).then_some(version);
        version = client
            .upload("soup", format!("round {round}").into_bytes(), if_version)
            .await
            .unwrap()
            .version;
    }
    for node in 0..3 {
        // Waits until the node has applied the last write (a read of
        // another name, which counts one miss).
        c.node_client(node)
            .download("any", Consistency::Local, Some(version))
            .await
            .unwrap_err();
        let reads = metric(&c, node, "recipestore_cache_hits_total").await
            + metric(&c, node, "recipestore_cache_misses_total").await;
        assert_eq!(reads, 1.0, "node {node} counted its applies as cache reads");
    }
}
