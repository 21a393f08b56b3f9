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

mod stats {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};

    use crate::{Command, Condition, GroupId, Store};

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            condition: None,
        }
    }

    fn del(key: &str) -> Command {
        Command::Delete {
            key: key.into(),
            condition: None,
        }
    }

    // The key and byte counts kept by apply and by snapshot installs always equal a scan of the
    // group's data: after creates, overwrites, appends, deletes, failed conditions and no-ops.
    #[tokio::test]
    async fn counts_match_a_scan() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let group = GroupId(3);
        let mut sm = store.state_machine(group).await?;
        let steps: Vec<Vec<Command>> = vec![
            vec![put("a", "1"), put("b", "22")],
            vec![put("a", "longer value")],
            vec![Command::Append {
                key: "c".into(),
                suffix: "x".into(),
            }],
            vec![del("b"), del("absent")],
            vec![Command::Put {
                key: "a".into(),
                value: "never".into(),
                condition: Some(Condition::Version(999)),
            }],
            vec![put("b", "again"), del("b"), put("d", "")],
        ];
        let mut index = 0;
        for cmds in steps {
            let entries: Vec<Entry<crate::TypeConfig>> = cmds
                .into_iter()
                .map(|c| {
                    index += 1;
                    Entry {
                        log_id: log_id(1, 1, index),
                        payload: EntryPayload::Normal(c),
                    }
                })
                .collect();
            sm.apply(entries).await?;
            assert_eq!(
                store.group_stats(group)?,
                store.scan_stats(group)?,
                "after entry {index}"
            );
        }
        assert_eq!(store.group_stats(group)?.0, 3, "a, c and d remain");

        // A snapshot installed on another store carries the same counts.
        let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
        let dir2 = tempfile::TempDir::new()?;
        let store2 = Store::open(dir2.path())?;
        let mut sm2 = store2.state_machine(group).await?;
        sm2.install_snapshot(&snap.meta, snap.snapshot).await?;
        assert_eq!(store2.group_stats(group)?, store.group_stats(group)?);
        assert_eq!(store2.group_stats(group)?, store2.scan_stats(group)?);
        Ok(())
    }
}
