use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use recipestore::cache::RecipeCache;
use recipestore::raft::TypeConfig;
use recipestore::raft::log_store::LogStore;
use recipestore::raft::state_machine::StateMachine;
use tempfile::TempDir;

struct NodeStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for NodeStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("open sled");
        let log = LogStore::open(&dir.path().join("raft-log")).expect("log store");
        let cache = RecipeCache::new(1 << 20);
        let sm =
            StateMachine::open(&db, &dir.path().join("snapshots"), cache).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_passes_the_openraft_suite() {
    Suite::test_all(NodeStoreBuilder)
        .await
        .expect("openraft storage suite");
}

/// A data directory of release 0.1 keeps the Raft log in sled's `raft`
/// tree (vote, purged id, entries under `l` + big-endian index): the first
/// start moves it into the log of segment files, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_log_kept_in_sled_moves_to_the_segment_log_once() {
    use openraft::RaftLogReader;
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorage;
    use openraft::vote::RaftLeaderId;
    use recipestore::codec::encode;
    use recipestore::raft::Command;
    use recipestore::raft::typ::Entry;
    use recipestore::raft::typ::LogId;
    use recipestore::raft::typ::Vote;

    type Leader = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .open()
        .expect("open sled");
    let vote = Vote::new_committed(3, 1);
    let purged = LogId::new(Leader::new(2, 0), 4);
    let entries: Vec<Entry> = (5..=9)
        .map(|i| {
            Entry::new_normal(
                LogId::new(Leader::new(3, 1), i),
                Command::Delete {
                    name: format!("r{i}"),
                    if_version: None,
                },
            )
        })
        .collect();
    {
        let tree = db.open_tree("raft").expect("tree");
        tree.insert("m/vote", encode(&vote).unwrap()).unwrap();
        tree.insert("m/purged", encode(&purged).unwrap()).unwrap();
        for entry in &entries {
            let mut key = vec![b'l'];
            key.extend_from_slice(&entry.index().to_be_bytes());
            tree.insert(key, encode(entry).unwrap()).unwrap();
        }
    }

    let log_dir = dir.path().join("raft-log");
    let mut log = LogStore::open(&log_dir).expect("log store");
    log.import_sled_log(&db).expect("import");
    assert!(
        !db.tree_names().iter().any(|n| n == b"raft"),
        "the sled tree is gone"
    );
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(purged));
    assert_eq!(state.last_log_id, Some(entries[4].log_id()));
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), entries);

    // Reopened (as at the next start), nothing is imported twice.
    drop(log);
    let mut log = LogStore::open(&log_dir).expect("reopen");
    log.import_sled_log(&db).expect("second import is a no-op");
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), entries);
}
