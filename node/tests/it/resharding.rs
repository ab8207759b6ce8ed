//! Moving slots between the shards of a running store of real node
//! processes, while clients write: nothing acknowledged is lost, nothing
//! is applied twice, and each recipe's versions keep growing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use recipestore_client::Client;
use recipestore_client::reshard::Pace;
use recipestore_protocol::pb;
use recipestore_protocol::pb::Consistency;
use recipestore_protocol::slots::slot_of;
use tonic::Code;

use crate::cluster::TestStore;
use crate::cluster::Writer;
use crate::cluster::assert_all_readable;
use crate::cluster::metric_at;

/// Counters each incremented by a compare-and-set loop (read, then upload
/// the next value if the version is still the one read): an increment
/// applied twice, or one acknowledged and lost, leaves a counter that is
/// not its number of acknowledged increments.
struct Counters {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    versions: Arc<Mutex<BTreeMap<String, Increments>>>,
}

/// A counter's acknowledged increments' versions, in order, and how many
/// increments failed (and may or may not have applied).
type Increments = (Vec<u64>, usize);

impl Counters {
    fn start(client: Arc<Client>, names: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let versions = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = names
            .iter()
            .map(|name| {
                let (client, name, stop, versions) =
                    (client.clone(), name.clone(), stop.clone(), versions.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut failed = 0;
                    let (mut value, mut version) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let next = (value + 1).to_string().into_bytes();
                        match client.upload(&name, next, Some(version)).await {
                            Ok(reply) => {
                                assert!(
                                    reply.version > version,
                                    "{name}: {} after {version}",
                                    reply.version
                                );
                                value += 1;
                                version = reply.version;
                                acked.push(version);
                            }
                            // Lost reply or a race: learn where the counter is.
                            Err(_) => {
                                failed += 1;
                                match client
                                    .download(&name, Consistency::Linearizable, None)
                                    .await
                                {
                                    Ok(current) => {
                                        value = String::from_utf8(current.content)
                                            .unwrap()
                                            .parse()
                                            .unwrap();
                                        version = current.version;
                                    }
                                    Err(status) if status.code() == Code::NotFound => {}
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                    versions.lock().unwrap().insert(name, (acked, failed));
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            versions,
        }
    }

    /// Stops; checks every counter against its acknowledged increments.
    async fn finish(self, client: &Client) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("counter task");
        }
        let versions = self.versions.lock().unwrap().clone();
        for (name, (acked, failed)) in versions {
            assert!(
                acked.len() > 5,
                "{name} was incremented {} times",
                acked.len()
            );
            assert!(
                acked.windows(2).all(|w| w[0] < w[1]),
                "{name}: versions {acked:?}"
            );
            let current = client
                .download(&name, Consistency::Linearizable, None)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let value: usize = String::from_utf8(current.content).unwrap().parse().unwrap();
            // Every acknowledged increment applied once; a failed one may
            // have applied (its reply lost) or not.
            assert!(
                (acked.len()..=acked.len() + failed).contains(&value),
                "{name}: {value} after {} acknowledged and {failed} failed increments",
                acked.len()
            );
            assert!(current.version >= *acked.last().unwrap(), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_to_a_new_shard_and_back_while_clients_write() {
    let mut store = TestStore::start(1, 3).await;
    let client = store.client();
    let writer = Writer::start(store.client(), "moved");
    let counter_names: Vec<String> = (0..4).map(|i| format!("counter-{i}")).collect();
    let counters = Counters::start(Arc::new(store.client()), &counter_names);
    writer.await_progress(50, Duration::from_secs(30)).await;

    // A second shard joins, and half the slots move to it.
    store.store.add_shards(2).unwrap();
    store.store.start_all().unwrap();
    store.store.shards[1]
        .initialize(Duration::from_secs(30))
        .await
        .unwrap();
    // Pages of a few recipes: the copies and the catch-ups go in many.
    let pace = Pace {
        batch_slots: 128,
        page_bytes: 256,
        ..Pace::default()
    };
    let mut reports = Vec::new();
    let grown = store
        .store
        .reshard(2, pace, |p| reports.push(p.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((grown.slots_moved, grown.slots_total), (512, 512));
    assert!(grown.recipes_copied > 0, "{grown:?}");
    assert_eq!(reports.len(), 4, "one report after each batch");
    assert_eq!(reports[0].slots_total, 512, "known from the first batch on");
    for shard in 0..2 {
        let placement = store.store.shards[shard].nodes[0]
            .admin()
            .status()
            .await
            .unwrap()
            .placement
            .expect("placed");
        let owned = placement
            .owners
            .iter()
            .filter(|&&o| o == shard as u32)
            .count();
        assert_eq!(owned, 512, "shard {shard}");
        assert!(placement.released.is_empty());
    }
    // A run again finds nothing to move.
    let again = store.store.reshard(2, pace, |_| {}).await.unwrap();
    assert_eq!(again.slots_total, 0);
    writer.await_progress(50, Duration::from_secs(30)).await;
    let shard1_http = store.store.shards[1].nodes[0].http_addr();
    assert_eq!(
        metric_at(&shard1_http, "recipestore_shard_slots").await,
        512.0
    );

    // And back: shard 1 gives every slot to shard 0, and stops.
    let shrunk = store.store.reshard(1, pace, |_| {}).await.unwrap();
    assert_eq!(shrunk.slots_moved, 512);
    store
        .store
        .retire_shards(1, Duration::from_secs(10))
        .unwrap();
    writer.await_progress(50, Duration::from_secs(30)).await;

    let acked = writer.finish().await;
    eprintln!(
        "grown {grown:?}, shrunk {shrunk:?}, {} uploads acknowledged",
        acked.len()
    );
    counters.finish(&client).await;
    assert_all_readable(&client, &acked).await;
    // One listing through shard 0 holds every name once.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list("moved-", 1000, &token, Consistency::Linearizable)
            .await
            .unwrap();
        listed.extend(page.recipes.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let acked_names: Vec<&String> = acked.keys().collect();
    let listed_acked: Vec<&String> = listed.iter().filter(|n| acked.contains_key(*n)).collect();
    assert_eq!(listed_acked, acked_names);
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "in order, once each"
    );
}

/// A run stopped after a source released slots: the next run finishes the
/// move to a shard that stays, and rolls back the one to a shard leaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_move_is_finished_or_rolled_back_by_the_next_run() {
    let store = TestStore::start(3, 1).await;
    let client = store.client();
    let names: Vec<String> = (0..200).map(|i| format!("dish-{i:03}")).collect();
    let mut versions = BTreeMap::new();
    for name in &names {
        let reply = client
            .upload(name, name.as_bytes().to_vec(), None)
            .await
            .unwrap();
        versions.insert(name.clone(), reply.version);
    }
    let admin = |k: usize| store.store.shards[k].nodes[0].admin();
    let release = |slots: std::ops::Range<u32>, to: u32, epoch: u64| pb::MoveSlotsRequest {
        step: pb::MoveStep::Release as i32,
        slots: slots.collect(),
        shard: to,
        epoch,
    };
    // Shard 0 owns slots 0 to 341: some go to shard 1, some to shard 2.
    admin(0).move_slots(release(0..64, 1, 2)).await.unwrap();
    admin(0).move_slots(release(300..308, 2, 3)).await.unwrap();

    // A write to a released slot waits for the move, and, past its
    // deadline, is refused as not run.
    let probe = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|n| slot_of(n) < 64)
        .unwrap();
    let mut raw = store.raw_client(0, 0).await;
    let mut request = tonic::Request::new(pb::UploadRequest {
        name: probe.clone(),
        content: b"waits".to_vec(),
        if_version: None,
    });
    request.set_timeout(Duration::from_millis(300));
    let refused = raw.upload(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("moving"), "{refused:?}");

    // Pages of a recipe or two: the catch-up of the released slots, their
    // only copy, goes in many.
    let pace = Pace {
        page_bytes: 16,
        ..Pace::default()
    };
    let done = store
        .store
        .reshard(2, pace, |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The 64 slots the finished move took to shard 1, then shard 2's 341
    // (its rolled-back ones stay at shard 0).
    assert_eq!((done.slots_moved, done.slots_total), (405, 405));
    let mut owners = Vec::new();
    for k in 0..3 {
        let placement = admin(k).status().await.unwrap().placement.unwrap();
        assert!(placement.released.is_empty(), "shard {k}");
        owners.push(placement.owners.iter().filter(|&&o| o == k as u32).count());
        if k == 1 {
            let acquired: Vec<u32> = placement.acquired.iter().map(|a| a.slot).collect();
            assert!(
                (0..64).all(|s| acquired.contains(&s)),
                "the finished move: {acquired:?}"
            );
        }
    }
    assert_eq!(owners, [512, 512, 0]);
    for name in &names {
        let got = client
            .download(name, Consistency::Linearizable, None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (got.version, got.content),
            (versions[name], name.as_bytes().to_vec())
        );
    }
    let written = client.upload(&probe, b"goes".to_vec(), None).await.unwrap();
    assert!(
        written.version > 1 << 40,
        "written by shard 1 after the move: {written:?}"
    );
}
