use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_client::is_throttled;
use recipestore_protocol::metadata;
use recipestore_protocol::pb::Consistency;
use tonic::Code;

use crate::cluster::FakeCpu;
use crate::cluster::TestCluster;
use crate::cluster::eventually;
use crate::cluster::metric;

/// A client that never retries, so sheds are visible.
fn single_shot(c: &TestCluster, endpoint: String) -> Client {
    let policy = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    c.client_with(&[endpoint], policy, Duration::from_secs(5))
}

async fn await_cpu_above(c: &TestCluster, node: u64, ratio: f64) {
    eventually(
        Duration::from_secs(10),
        "the sampled CPU to rise",
        || async { (metric(c, node, "recipestore_cpu_usage_ratio").await > ratio).then_some(()) },
    )
    .await;
}

/// The seed's CPU rules as written, on CPU alone: what the tests that
/// saturate a node's CPU need to see shedding without a real overload.
const SEED_CPU_RULES: &[&str] = &["--shed-cpu", "always"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_busy_cpu_that_serves_in_time_sheds_nothing() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let _cpu = FakeCpu::saturated(&c);
    await_cpu_above(&c, leader, 0.9).await;
    let node = single_shot(&c, c.cluster.nodes[leader as usize].client_addr());
    for i in 0..50 {
        let name = format!("busy-{i}");
        node.upload(&name, b"x".to_vec(), None)
            .await
            .unwrap_or_else(|e| panic!("upload {i} at busy CPU: {e}"));
        node.download(&name, Consistency::Linearizable, None)
            .await
            .unwrap_or_else(|e| panic!("download {i} at busy CPU: {e}"));
    }
    assert!(metric(&c, leader, "recipestore_cpu_usage_ratio").await > 0.9);
    for op in ["upload", "download"] {
        for reason in ["cpu_priority", "cpu_probabilistic"] {
            let series =
                format!("recipestore_shed_requests_total{{op=\"{op}\",reason=\"{reason}\"}}");
            assert_eq!(metric(&c, leader, &series).await, 0.0, "{series}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_high_cpu_uploads_are_shed_without_effect_while_downloads_keep_flowing() {
    let c = TestCluster::start(3, SEED_CPU_RULES).await;
    let leader = c.leader().await;
    let client = c.client();
    client
        .upload("congee", b"rice, water, ginger".to_vec(), None)
        .await
        .unwrap();

    let _cpu = FakeCpu::saturated(&c);
    let endpoint = c.cluster.nodes[leader as usize].client_addr();
    await_cpu_above(&c, leader, 0.9).await;
    let node = single_shot(&c, endpoint);

    let err = node
        .upload("shed-me", b"x".to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("cpu_priority"), "{}", err.message());
    let hint = err
        .metadata()
        .get(metadata::RETRY_AFTER_MS)
        .expect("a retry-after hint");
    assert!(hint.to_str().unwrap().parse::<u64>().unwrap() > 0);

    // Downloads are shed only probabilistically (25 % at >= 95 % CPU).
    let mut ok = 0;
    for _ in 0..100 {
        match node.download("congee", Consistency::Local, None).await {
            Ok(reply) => {
                assert_eq!(reply.content, b"rice, water, ginger");
                ok += 1;
            }
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e}"),
        }
    }
    assert!(
        (50..100).contains(&ok),
        "{ok} of 100 downloads served at a saturated CPU"
    );
    assert!(
        metric(
            &c,
            leader,
            "recipestore_shed_requests_total{op=\"upload\",reason=\"cpu_priority\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &c,
            leader,
            "recipestore_shed_requests_total{op=\"download\",reason=\"cpu_probabilistic\"}"
        )
        .await
            >= 1.0
    );

    // The admin Status reports the recent sheds, for the operator's gates:
    // some (the downloads just shed), and never more than were shed or
    // admitted here (older ones may have left its 10 s window already).
    let status = c.cluster.nodes[leader as usize].status().await.unwrap();
    assert_eq!(status.recent_seconds, 10);
    let shed = 100 - ok + 1;
    assert!(
        (1..=shed).contains(&status.recent_shed),
        "{} recent sheds reported; the upload and {} downloads were shed",
        status.recent_shed,
        shed - 1
    );
    // Admitted: the downloads served and the first upload.
    assert!(
        (1..=ok + 1).contains(&status.recent_admitted),
        "{} recent requests admitted; {} downloads and one upload were",
        status.recent_admitted,
        ok
    );

    // The shed upload left no trace.
    let err = client
        .download("shed-me", Consistency::Linearizable, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_deadline_cannot_be_met_is_refused_before_it_queues() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let endpoint = c.cluster.nodes[leader as usize].client_addr();
    let node = single_shot(&c, endpoint.clone());
    // Teach the upload queue its service time (a replicated, fsync'd write).
    for i in 0..10 {
        node.upload(&format!("warm-{i}"), b"x".to_vec(), None)
            .await
            .unwrap();
    }
    let queued_before = metric(
        &c,
        leader,
        "recipestore_queue_wait_seconds_count{queue=\"upload\"}",
    )
    .await;

    // A 1 ms deadline is shorter than the learned service time of an
    // fsync'd, replicated write, so a request that reaches the node with it
    // is refused before it queues. The client gives up at the same
    // deadline, so on a loaded machine an attempt may never reach the node:
    // send until one is counted.
    let hurried = c.client_with(
        &[endpoint],
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        Duration::from_millis(1),
    );
    let mut sent = Vec::new();
    eventually(
        Duration::from_secs(10),
        "a hurried upload to reach the node and be refused",
        || {
            let key = format!("too-late-{}", sent.len());
            sent.push(key.clone());
            let (c, hurried) = (&c, &hurried);
            async move {
                let err = hurried.upload(&key, b"x".to_vec(), None).await.unwrap_err();
                assert!(
                    matches!(
                        err.code(),
                        Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled
                    ),
                    "{err}"
                );
                let shed = metric(
                    c,
                    leader,
                    "recipestore_shed_requests_total{op=\"upload\",reason=\"deadline\"}",
                )
                .await;
                (shed >= 1.0).then_some(())
            }
        },
    )
    .await;
    let queued_after = metric(
        &c,
        leader,
        "recipestore_queue_wait_seconds_count{queue=\"upload\"}",
    )
    .await;
    assert_eq!(
        queued_after, queued_before,
        "the shed request never entered the queue"
    );
    for key in &sent {
        let err = node
            .download(key, Consistency::Linearizable, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{key} was written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_bounded_by_the_queue_not_by_memory_or_latency() {
    let c = TestCluster::start(
        3,
        &[
            "--download-queue-capacity",
            "4",
            "--download-workers-min",
            "1",
            "--download-workers-max",
            "2",
        ],
    )
    .await;
    let client = c.client();
    client
        .upload("ramen", b"noodles, broth".to_vec(), None)
        .await
        .unwrap();
    let endpoint = c.cluster.nodes[0].client_addr();
    let node = Arc::new(single_shot(&c, endpoint));

    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..300 {
        let node = node.clone();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = node
                .download("ramen", Consistency::Linearizable, None)
                .await;
            (result.map(|_| ()).map_err(|e| e.code()), t.elapsed())
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        let (result, took) = call.await.unwrap();
        match result {
            Ok(()) => ok += 1,
            Err(Code::ResourceExhausted) => shed += 1,
            Err(code) => panic!("unexpected {code:?}"),
        }
        assert!(took < Duration::from_secs(5), "a call took {took:?}");
    }
    assert!(ok > 0 && shed > 0, "{ok} served, {shed} shed");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        metric(
            &c,
            0,
            "recipestore_shed_requests_total{op=\"download\",reason=\"queue_full\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_backs_off_as_told_and_succeeds_once_the_node_recovers() {
    let c = TestCluster::start(3, SEED_CPU_RULES).await;
    let leader = c.leader().await;
    let cpu = FakeCpu::saturated(&c);
    await_cpu_above(&c, leader, 0.9).await;

    let endpoint = c.cluster.nodes[leader as usize].client_addr();
    let client = c.client_with(&[endpoint], RetryPolicy::default(), Duration::from_secs(5));
    let started = Instant::now();
    let upload = tokio::spawn(async move { client.upload("patient", b"ok".to_vec(), None).await });
    let series = "recipestore_shed_requests_total{op=\"upload\",reason=\"cpu_priority\"}";
    eventually(
        Duration::from_secs(10),
        "two sheds of the retried upload",
        || async { (metric(&c, leader, series).await >= 2.0).then_some(()) },
    )
    .await;
    drop(cpu);
    let reply = upload.await.unwrap().expect("the retried upload succeeds");
    assert!(reply.version > 0);
    // Two sheds, each with a 500 ms retry-after hint the client honoured.
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_again_and_again_stops_sending_to_that_node() {
    let c = TestCluster::start(3, SEED_CPU_RULES).await;
    let leader = c.leader().await;
    let _cpu = FakeCpu::saturated(&c);
    await_cpu_above(&c, leader, 0.9).await;
    let node = single_shot(&c, c.cluster.nodes[leader as usize].client_addr());

    let calls = 200;
    let mut throttled = 0;
    for i in 0..calls {
        let err = node
            .upload(&format!("refused-{i}"), b"x".to_vec(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        throttled += usize::from(is_throttled(&err));
    }
    assert!(
        throttled > calls / 2,
        "only {throttled} of {calls} throttled"
    );
    // Exactly the calls the client did not throttle reached the node.
    let shed = metric(
        &c,
        leader,
        "recipestore_shed_requests_total{op=\"upload\",reason=\"cpu_priority\"}",
    )
    .await;
    assert_eq!(shed as usize, calls - throttled);
}

/// The shedding settings but `enabled` change on a running node through
/// the admin `Reconfigure` call, as the operator gives them; bad ones are
/// refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_settings_are_reloaded_without_a_restart() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let node = &c.cluster.nodes[leader as usize];
    let _cpu = FakeCpu::saturated(&c);
    await_cpu_above(&c, leader, 0.9).await;
    let client = single_shot(&c, node.client_addr());
    // Serving in time at a busy CPU: nothing is shed (the default).
    client
        .upload("before", b"x".to_vec(), None)
        .await
        .expect("admitted by the settings the node started with");

    let admin = recipestore_client::admin::AdminClient::with_tls(
        &node.peer_addr(),
        recipestore_client::admin::Timeouts::default(),
        c.client_tls().as_ref(),
    )
    .unwrap();
    let refused = admin
        .reconfigure(r#"{"uploadPriorityCpuPercent": 0}"#.to_owned())
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("shedding.uploadPriorityCpuPercent (--shed-upload-priority-cpu) must be at least 1, not 0"),
        "{refused}"
    );

    let seed_rules = r#"{"cpu": "always", "enabled": false}"#.to_owned();
    assert!(
        admin.reconfigure(seed_rules.clone()).await.unwrap(),
        "changed"
    );
    assert!(!admin.reconfigure(seed_rules).await.unwrap(), "unchanged");
    let err = client
        .upload("after", b"x".to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("cpu_priority"), "{}", err.message());

    // Status says what the node runs with; `enabled` stays as started.
    let status = node.status().await.unwrap();
    let running: serde_json::Value = serde_json::from_str(&status.shedding_json).unwrap();
    assert_eq!(running["cpu"], "always");
    assert_eq!(running["enabled"], true);
}
