//! openraft's storage test suite against the RocksDB store, and what apply keeps of its own:
//! key and byte counts that match a scan, and the hard cap on a value's size.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, StorageError};
use tempfile::TempDir;

use crate::test_support::{apply, del, put};
use crate::{
    Command, CommandResult, Condition, GroupId, LogStore, NodeId, StateMachineStore, Store,
    TypeConfig, WriteResult,
};

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

const MIB: usize = 1 << 20;

// No sequence of appends (of the old, unbounded variant) grows a value past the hard cap of
// 32 MiB: the append that would is refused at apply and writes nothing, and a snapshot of the
// largest accepted value builds and installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_stop_at_the_hard_cap_and_snapshots_still_round_trip() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let group = GroupId(5);
    let mut sm = store.state_machine(group).await?;
    let suffix = "x".repeat(MIB);
    let cmds = (0..34)
        .map(|_| Command::Append {
            key: "big".into(),
            suffix: suffix.clone(),
        })
        .collect();
    let mut index = 0;
    let results = apply(&mut sm, &mut index, cmds).await?;
    let stored = store.read(group, "big")?.map_or(0, |r| r.value.len());
    assert!(
        stored <= 32 * MIB,
        "a value of {stored} bytes was stored, past the 32 MiB hard cap"
    );
    assert_eq!(stored, 32 * MIB);
    for (i, r) in results.iter().enumerate() {
        if i < 32 {
            assert!(
                matches!(r, CommandResult::Write(WriteResult::Written { .. })),
                "{i}: {r:?}"
            );
        } else {
            assert!(
                matches!(r, CommandResult::Write(WriteResult::ValueTooLarge { .. })),
                "{i}: {r:?}"
            );
        }
    }
    // A bounded append (what nodes propose) is refused past its own, smaller limit.
    let bounded = |suffix: &str| Command::AppendBounded {
        key: "small".into(),
        suffix: suffix.into(),
        max_value_bytes: 4,
    };
    let results = apply(&mut sm, &mut index, vec![bounded("abc"), bounded("de")]).await?;
    assert!(matches!(
        results[0],
        CommandResult::Write(WriteResult::Written { .. })
    ));
    assert_eq!(
        results[1],
        CommandResult::Write(WriteResult::ValueTooLarge { len: 5, limit: 4 })
    );
    assert_eq!(
        store.read(group, "small")?.map(|r| r.value),
        Some("abc".into())
    );
    assert_eq!(store.group_stats(group)?, store.scan_stats(group)?);

    let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
    let dir2 = tempfile::TempDir::new()?;
    let store2 = Store::open(dir2.path())?;
    let mut sm2 = store2.state_machine(group).await?;
    sm2.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(store2.read(group, "big")?, store.read(group, "big")?);
    assert_eq!(store2.read(group, "small")?, store.read(group, "small")?);
    Ok(())
}
