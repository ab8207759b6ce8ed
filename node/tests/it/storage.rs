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
