//! A sharded store of real node processes: every node serves every
//! recipe, each recipe lives in the one shard that owns its slot, and a
//! listing through any node holds every shard's recipes.

use std::collections::BTreeSet;

use recipestore_protocol::metadata;
use recipestore_protocol::pb;
use recipestore_protocol::pb::Consistency;
use recipestore_protocol::slots::slot_of;
use tonic::Code;

use crate::cluster::TestStore;
use crate::cluster::metric_at;

/// The shard owning `name` in a store of `shards` evenly split shards.
fn owner(name: &str, shards: u16) -> usize {
    let slot = slot_of(name);
    recipestore_protocol::slots::even_split(shards)
        .iter()
        .position(|range| range.contains(&slot))
        .expect("every slot has an owner")
}

#[tokio::test]
async fn any_node_serves_every_recipe_of_a_sharded_store_from_the_shard_that_owns_it() {
    let store = TestStore::start(2, 3).await;
    let names: Vec<String> = (0..40).map(|i| format!("dish-{i:02}")).collect();
    assert!(names.iter().any(|n| owner(n, 2) == 0) && names.iter().any(|n| owner(n, 2) == 1));

    // Written through one follower of shard 1, read through one of shard 0.
    let writer = store.node_client(1, 2);
    for name in &names {
        writer
            .upload(name, name.as_bytes().to_vec(), None)
            .await
            .unwrap_or_else(|e| panic!("upload {name}: {e}"));
    }
    // The writer passed on each upload shard 0 owns, and counts them.
    let writer_http = store.store.shards[1].nodes[2].http_addr();
    let passed_on = metric_at(
        &writer_http,
        "recipestore_shard_passed_on_total{op=\"upload\"}",
    )
    .await;
    let shard0 = names.iter().filter(|n| owner(n, 2) == 0).count();
    assert!(passed_on as usize >= shard0, "{passed_on} < {shard0}");
    let info = metric_at(&writer_http, "recipestore_shard_info{shard=\"1\"}").await;
    assert_eq!(info, 1.0);
    let slots = metric_at(&writer_http, "recipestore_shard_slots").await;
    assert_eq!(slots, 512.0);

    let reader = store.node_client(0, 1);
    for name in &names {
        let got = reader
            .download(name, Consistency::Linearizable, None)
            .await
            .unwrap_or_else(|e| panic!("download {name}: {e}"));
        assert_eq!(got.content, name.as_bytes());
    }

    // Each recipe is in its owner only: a call the other shard may not pass
    // on is refused as moved, naming the owner.
    let mut raw = store.raw_client(0, 0).await;
    for name in names.iter().filter(|n| owner(n, 2) == 1).take(3) {
        let mut request = tonic::Request::new(pb::DownloadRequest {
            name: name.clone(),
            consistency: Consistency::Local.into(),
            min_version: None,
        });
        request
            .metadata_mut()
            .insert(metadata::SHARD_FORWARDED, "1".parse().unwrap());
        let status = raw.download(request).await.expect_err("not shard 0's");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let moved_to = status.metadata().get(metadata::MOVED_SHARD).unwrap();
        assert_eq!(moved_to.to_str().unwrap(), "1");
        let addrs = status.metadata().get(metadata::MOVED_TO).unwrap();
        assert!(
            addrs
                .to_str()
                .unwrap()
                .contains(&store.store.shards[1].nodes[0].client_addr())
        );
    }

    // Conditions and deletes keep their meaning through another shard.
    let name = names.iter().find(|n| owner(n, 2) == 1).unwrap();
    let current = reader
        .download(name, Consistency::Linearizable, None)
        .await
        .unwrap()
        .version;
    let stale = reader
        .upload(name, b"new".to_vec(), Some(current + 1))
        .await;
    assert_eq!(stale.unwrap_err().code(), Code::FailedPrecondition);
    let written = reader.upload(name, b"new".to_vec(), Some(current)).await;
    assert!(written.unwrap().version > current);
    reader.delete(name, None).await.expect("delete");
    let gone = reader.download(name, Consistency::Linearizable, None).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);

    // A listing through one node pages through both shards' names, in
    // order, each once.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = reader
            .list("dish-", 7, &token, Consistency::Linearizable)
            .await
            .expect("list");
        assert!(page.recipes.len() <= 7);
        listed.extend(page.recipes.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = names.iter().filter(|n| *n != name).cloned().collect();
    assert_eq!(listed, expected);
    assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), listed.len());
}

/// A client of every node learns from each reply which node leads the
/// shard of the recipe's slot: once it has written a name, it writes it
/// straight to that shard's leader, and no node passes the write on.
#[tokio::test]
async fn a_client_writes_straight_to_the_leader_of_each_recipe_s_shard() {
    let mut store = TestStore::start(2, 3).await;
    let client = store.client();
    let names: Vec<String> = (0..30).map(|i| format!("stew-{i}")).collect();
    let passed_on = "recipestore_shard_passed_on_total{op=\"upload\"}";
    for name in &names {
        client
            .upload(name, b"1".to_vec(), None)
            .await
            .expect("upload");
    }
    let learning = store.metric_sum(passed_on).await;
    for name in &names {
        client
            .upload(name, b"2".to_vec(), None)
            .await
            .expect("upload");
    }
    assert_eq!(
        store.metric_sum(passed_on).await,
        learning,
        "writes passed on once learnt"
    );
}

#[tokio::test]
async fn each_shard_holds_its_placement_and_refuses_one_that_would_lose_recipes() {
    let store = TestStore::start(2, 1).await;
    let admin = |shard: usize| store.store.shards[shard].nodes[0].admin();
    for shard in 0..2 {
        let placement = admin(shard)
            .status()
            .await
            .expect("status")
            .placement
            .expect("a sharded store's shard has a placement");
        assert_eq!((placement.shard, placement.epoch), (shard as u32, 1));
        let owned = placement.owners.iter().filter(|o| **o == shard as u32);
        assert_eq!(owned.count(), 512);
    }
    store
        .node_client(0, 0)
        .upload("soup", b"hot".to_vec(), None)
        .await
        .expect("upload");

    // Shard 0 may not give up its slots, nor become another shard.
    let mut held = admin(0).status().await.unwrap().placement.unwrap();
    held.epoch = 2;
    let mut give_away = held.clone();
    give_away.owners = vec![1; 1024];
    let refused = admin(0).place(give_away).await.unwrap_err();
    let status = refused.status().expect("a call error");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("slots change only by moving"),
        "{status:?}"
    );
    let mut other = held.clone();
    other.shard = 1;
    let refused = admin(0).place(other).await.unwrap_err();
    assert!(refused.status().unwrap().message().contains("not shard 1"));
    // A malformed placement is refused before it reaches the log.
    let mut short = held.clone();
    short.owners.pop();
    let refused = admin(0).place(short).await.unwrap_err();
    assert_eq!(refused.status().unwrap().code(), Code::InvalidArgument);

    // A newer epoch with the same slots is taken; the old one no longer is.
    assert_eq!(admin(0).place(held.clone()).await.expect("newer"), 2);
    held.epoch = 1;
    let refused = admin(0).place(held).await.unwrap_err();
    assert!(
        refused
            .status()
            .unwrap()
            .message()
            .contains("epoch 2, which one of epoch 1 cannot replace")
    );
    let got = store
        .node_client(1, 0)
        .download("soup", Consistency::Linearizable, None)
        .await
        .expect("still served");
    assert_eq!(got.content, b"hot");
}
