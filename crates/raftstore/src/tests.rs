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

    use super::util::{del, put};
    use crate::{Command, Condition, GroupId, Store};

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

/// Helpers shared by the safety tests below.
pub(crate) mod util {
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};

    use crate::{Command, CommandResult, StateMachineStore, TypeConfig};

    pub fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            condition: None,
        }
    }

    pub fn del(key: &str) -> Command {
        Command::Delete {
            key: key.into(),
            condition: None,
        }
    }

    /// Applies `cmds` as one batch of entries starting after `*index`.
    pub async fn apply(
        sm: &mut StateMachineStore,
        index: &mut u64,
        cmds: Vec<Command>,
    ) -> anyhow::Result<Vec<CommandResult>> {
        let entries: Vec<Entry<TypeConfig>> = cmds
            .into_iter()
            .map(|c| {
                *index += 1;
                Entry {
                    log_id: log_id(1, 1, *index),
                    payload: EntryPayload::Normal(c),
                }
            })
            .collect();
        Ok(sm.apply(entries).await?)
    }
}

mod limits {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use super::util::apply;
    use crate::{Command, CommandResult, GroupId, Store};

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
                assert!(matches!(r, CommandResult::Written { .. }), "{i}: {r:?}");
            } else {
                assert!(
                    matches!(r, CommandResult::ValueTooLarge { .. }),
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
        assert!(matches!(results[0], CommandResult::Written { .. }));
        assert_eq!(
            results[1],
            CommandResult::ValueTooLarge { len: 5, limit: 4 }
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
}

mod snapshots {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use super::util::{apply, put};
    use crate::{GroupId, Store};

    // get_current_snapshot never fails because a concurrent build replaced (and deleted) the
    // file it was about to open, and concurrent builds never fail on each other's files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn current_snapshot_survives_concurrent_builds() -> anyhow::Result<()> {
        const BUILDS: usize = 150;
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let group = GroupId(9);
        let mut sm = store.state_machine(group).await?;
        let mut index = 0;
        apply(&mut sm, &mut index, vec![put("a", "1"), put("b", "2")]).await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        let done = Arc::new(AtomicBool::new(false));
        let mut builders = Vec::new();
        for _ in 0..2 {
            let mut b = sm.get_snapshot_builder().await;
            let done = done.clone();
            builders.push(tokio::spawn(async move {
                let mut r = Ok(());
                for _ in 0..BUILDS / 2 {
                    if let Err(e) = b.build_snapshot().await {
                        r = Err(e);
                        break;
                    }
                }
                done.store(true, Ordering::SeqCst);
                r
            }));
        }
        let mut reads = 0u64;
        while !done.load(Ordering::SeqCst) {
            let s = sm.get_current_snapshot().await;
            assert!(
                matches!(s, Ok(Some(_))),
                "get_current_snapshot failed after {reads} reads: {s:?}"
            );
            reads += 1;
        }
        for b in builders {
            b.await??;
        }
        // Only the current snapshot's file is left.
        let files = std::fs::read_dir(dir.path().join("snapshots"))?.count();
        assert_eq!(files, 1, "snapshot files left after {reads} reads");
        Ok(())
    }

    // Files that no current record names (a build's or install's `.tmp` left by a crash, a
    // superseded `.snap`) are deleted when the store opens; the current snapshot is kept.
    #[tokio::test]
    async fn leftover_files_are_removed_at_open() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let snaps = dir.path().join("snapshots");
        let current = {
            let store = Store::open(dir.path())?;
            let mut sm = store.state_machine(GroupId(2)).await?;
            let mut index = 0;
            apply(&mut sm, &mut index, vec![put("a", "1")]).await?;
            let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
            format!("{}.snap", snap.meta.snapshot_id)
        };
        let leftovers = [
            "g2-1-1-0.snap.tmp",
            "g2-0-5-1.snap",
            "g3-7-9-2.snap",
            "g12-1-1-3.snap",
        ];
        for f in leftovers {
            std::fs::write(snaps.join(f), b"junk")?;
        }
        let store = Store::open(dir.path())?;
        let mut left: Vec<String> = std::fs::read_dir(&snaps)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        left.sort();
        assert_eq!(left, vec![current.clone()]);
        let mut sm = store.state_machine(GroupId(2)).await?;
        let snap = sm.get_current_snapshot().await?;
        assert_eq!(
            snap.map(|s| format!("{}.snap", s.meta.snapshot_id)),
            Some(current)
        );
        Ok(())
    }
}

mod install {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use super::util::{apply, put};
    use crate::{GroupId, Store, StoreError};

    // A stale read concurrent with a snapshot install sees the state before it or after it (or
    // is refused), never the half-replaced data range in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_reads_never_see_a_half_installed_snapshot() -> anyhow::Result<()> {
        const KEYS: usize = 4000;
        let group = GroupId(4);
        let value = "n".repeat(4096);
        // The snapshot: KEYS keys of 4 KiB, several install batches.
        let src_dir = tempfile::TempDir::new()?;
        let src = Store::open(src_dir.path())?;
        let mut src_sm = src.state_machine(group).await?;
        let mut index = 0;
        let cmds = (0..KEYS).map(|i| put(&format!("k{i}"), &value)).collect();
        apply(&mut src_sm, &mut index, cmds).await?;

        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(group).await?;
        let mut index2 = 0;
        let cmds = (0..KEYS).map(|i| put(&format!("k{i}"), "old")).collect();
        apply(&mut sm, &mut index2, cmds).await?;

        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
                let (mut reads, mut refused) = (0u64, 0u64);
                let keys = ["k0".to_string(), format!("k{}", KEYS - 1)];
                while !stop.load(Ordering::SeqCst) {
                    for k in &keys {
                        match store.read(group, k) {
                            Ok(Some(_)) => reads += 1,
                            Ok(None) => anyhow::bail!(
                                "key {k} absent mid-install after {reads} reads: a state that never existed"
                            ),
                            Err(StoreError::Installing { .. }) => refused += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok((reads, refused))
            })
        };
        for _ in 0..5 {
            let snap = src_sm.get_snapshot_builder().await.build_snapshot().await?;
            sm.install_snapshot(&snap.meta, snap.snapshot).await?;
            // Back to the old state for the next round.
            let cmds = (0..KEYS).map(|i| put(&format!("k{i}"), "old")).collect();
            let mut idx = sm.applied_state().await?.0.map_or(0, |l| l.index);
            apply(&mut sm, &mut idx, cmds).await?;
        }
        stop.store(true, Ordering::SeqCst);
        let (reads, refused) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        println!("reads {reads}, refused {refused}");
        Ok(())
    }

    // An installed snapshot file is durable under its final name before the install records it:
    // the file is fsynced, renamed into the snapshot directory, and the directory is fsynced
    // (a rename is only durable once its directory is).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn installed_snapshot_file_and_its_directory_are_synced() -> anyhow::Result<()> {
        let group = GroupId(6);
        let src_dir = tempfile::TempDir::new()?;
        let src = Store::open(src_dir.path())?;
        let mut src_sm = src.state_machine(group).await?;
        let mut index = 0;
        apply(&mut src_sm, &mut index, vec![put("a", "1")]).await?;
        let snap = src_sm.get_snapshot_builder().await.build_snapshot().await?;

        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(group).await?;
        sm.install_snapshot(&snap.meta, snap.snapshot).await?;

        let log = crate::snapshot::durability::LOG
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let snap_dir = store.inner.snapshot_dir.clone();
        let ours: Vec<(&str, std::path::PathBuf)> = log
            .into_iter()
            .filter(|(_, p)| p.starts_with(&snap_dir))
            .collect();
        let renamed = ours
            .iter()
            .position(|(what, p)| *what == "rename" && p.extension().is_some_and(|e| e == "snap"))
            .ok_or_else(|| anyhow::anyhow!("the install renamed no .snap file: {ours:?}"))?;
        assert!(
            ours[..renamed].iter().any(|(what, _)| *what == "sync file"),
            "the installed file was not fsynced before its rename: {ours:?}"
        );
        assert!(
            ours[renamed..]
                .iter()
                .any(|(what, p)| *what == "sync dir" && *p == snap_dir),
            "the snapshot directory was not fsynced after the install's rename: {ours:?}"
        );
        Ok(())
    }
}

mod blocking {
    use std::time::Duration;

    use openraft::storage::RaftLogStorage;
    use openraft::Vote;

    use super::util::{apply, put};
    use crate::{GroupId, Store};

    // A RocksDB write that stalls (in apply, in save_vote) runs off the async threads: on a
    // runtime whose only task thread is the test's (current_thread), the test's task still runs
    // while the write is stalled, and sees the write unfinished.
    #[test]
    fn a_stalled_write_does_not_block_the_async_workers() -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let dir = tempfile::TempDir::new()?;
            let store = Store::open(dir.path())?;
            let group = GroupId(1);
            let log = store.log_store(group);
            for op in ["apply", "save_vote"] {
                let (entered, release) = store.arm_write_stall();
                let write = match op {
                    "apply" => {
                        let mut sm = store.state_machine(group).await?;
                        tokio::spawn(async move {
                            let mut index = 0;
                            apply(&mut sm, &mut index, vec![put("a", "1")]).await?;
                            anyhow::Ok(())
                        })
                    }
                    _ => {
                        let mut log = log.clone();
                        tokio::spawn(async move {
                            log.save_vote(&Vote::new(1, 1)).await?;
                            anyhow::Ok(())
                        })
                    }
                };
                let start = std::time::Instant::now();
                tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
                    .await??;
                // Had the write blocked this thread, we would only get here once it finished.
                let still_stalled = !write.is_finished();
                let waited = start.elapsed();
                let _ = release.send(());
                write.await??;
                assert!(
                    still_stalled,
                    "{op}: the stalled write blocked the runtime's thread for {waited:?}"
                );
            }
            anyhow::Ok(())
        })
    }
}

mod install_flag {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use super::util::{apply, put};
    use crate::keys::{self, tag, CF_DATA, CF_META};
    use crate::{GroupId, Store, StoreError};

    // While a group installs a snapshot, reads of it are refused (typed, retryable); reads of
    // other groups are not, and the group is readable again when the install ends.
    #[tokio::test]
    async fn reads_are_refused_while_the_install_flag_is_set() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let (g, other) = (GroupId(1), GroupId(2));
        for group in [g, other] {
            let mut sm = store.state_machine(group).await?;
            apply(&mut sm, &mut 0, vec![put("a", "1")]).await?;
        }
        store.begin_install(g);
        assert!(matches!(
            store.read(g, "a"),
            Err(StoreError::Installing { group }) if group == g
        ));
        assert!(store.read(other, "a")?.is_some());
        store.end_install(g);
        assert!(store.read(g, "a")?.is_some());
        Ok(())
    }

    // An install a crash interrupted (marker set, data half replaced) is finished when the store
    // opens, before any read: the first read sees the snapshot's state, not the half-way one.
    #[tokio::test]
    async fn an_interrupted_install_is_finished_at_store_open() -> anyhow::Result<()> {
        let group = GroupId(6);
        let src_dir = tempfile::TempDir::new()?;
        let src = Store::open(src_dir.path())?;
        let mut src_sm = src.state_machine(group).await?;
        apply(&mut src_sm, &mut 0, vec![put("a", "new"), put("b", "new")]).await?;
        let snap = src_sm.get_snapshot_builder().await.build_snapshot().await?;

        let dir = tempfile::TempDir::new()?;
        {
            let store = Store::open(dir.path())?;
            let mut sm = store.state_machine(group).await?;
            apply(&mut sm, &mut 0, vec![put("a", "old"), put("b", "old")]).await?;
            sm.install_snapshot(&snap.meta, snap.snapshot).await?;
            // Simulate a crash in step (5): marker set again, one key not yet streamed in.
            let db = store.db();
            db.put_cf(
                store.cf(CF_META),
                keys::meta_key(group, tag::INSTALLING),
                bincode::serialize(&true)?,
            )?;
            db.delete_cf(store.cf(CF_DATA), keys::data_key(group, b"b"))?;
        }
        let store = Store::open(dir.path())?;
        assert_eq!(store.read(group, "b")?.map(|r| r.value), Some("new".into()));
        let mut sm = store.state_machine(group).await?;
        assert_eq!(sm.applied_state().await?.0, snap.meta.last_log_id);
        Ok(())
    }
}

mod moves {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use super::util::{apply, del, put};
    use crate::keys::{self, CF_DATA, CF_LOG, CF_META};
    use crate::{Command, CommandResult, GroupId, Record, SlotState, StateMachineStore, Store};
    use kvorum_router::slot_of;

    const ALL: (u16, u16) = (0, 4095);

    fn slot(key: &str) -> u16 {
        slot_of(key.as_bytes()).0
    }

    /// `n` keys whose slots are pairwise distinct.
    fn keys_in_distinct_slots(n: usize) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        (0..)
            .map(|i| format!("key{i}"))
            .filter(|k| seen.insert(slot(k)))
            .take(n)
            .collect()
    }

    /// The applied index of `sm`.
    async fn index_of(sm: &mut StateMachineStore) -> anyhow::Result<u64> {
        Ok(sm.applied_state().await?.0.map_or(0, |l| l.index))
    }

    /// Applies `cmds` after `sm`'s applied index.
    async fn run(
        sm: &mut StateMachineStore,
        cmds: Vec<Command>,
    ) -> anyhow::Result<Vec<CommandResult>> {
        let mut index = index_of(sm).await?;
        apply(sm, &mut index, cmds).await
    }

    async fn run1(sm: &mut StateMachineStore, cmd: Command) -> anyhow::Result<CommandResult> {
        Ok(run(sm, vec![cmd]).await?.remove(0))
    }

    /// The end of a move: `slots` released at the source `from`, activated at the destination
    /// `to` (results not checked).
    async fn hand_over(
        from: &mut StateMachineStore,
        to: &mut StateMachineStore,
        slots: &[(u16, u16)],
    ) -> anyhow::Result<()> {
        let slots = slots.to_vec();
        run1(
            from,
            Command::Release {
                slots: slots.clone(),
            },
        )
        .await?;
        run1(to, Command::Activate { slots }).await?;
        Ok(())
    }

    fn one(s: u16) -> Vec<(u16, u16)> {
        vec![(s, s)]
    }

    fn assert_stats_right(store: &Store, group: GroupId) -> anyhow::Result<()> {
        assert_eq!(
            store.group_stats(group)?,
            store.scan_stats(group)?,
            "{group}"
        );
        Ok(())
    }

    // Writes of every kind to a Frozen slot answer Frozen, to a Released or Incoming slot
    // NotOwner, and write nothing; writes to Owned slots still apply.
    #[tokio::test]
    async fn writes_to_unserved_slots_are_refused_and_write_nothing() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let g = GroupId(11);
        let mut sm = store.state_machine(g).await?;
        let ks = keys_in_distinct_slots(4);
        let (frozen, released, incoming, owned) = (&ks[0], &ks[1], &ks[2], &ks[3]);
        let mut cmds = vec![Command::InitSlots { owned: vec![ALL] }];
        cmds.extend(ks.iter().map(|k| put(k, "v1")));
        cmds.extend([
            Command::Freeze {
                slots: vec![
                    (slot(frozen), slot(frozen)),
                    (slot(released), slot(released)),
                ],
            },
            Command::Release {
                slots: one(slot(released)),
            },
            Command::Freeze {
                slots: one(slot(incoming)),
            },
            Command::Release {
                slots: one(slot(incoming)),
            },
            Command::BeginIncoming {
                slots: one(slot(incoming)),
            },
        ]);
        let results = run(&mut sm, cmds).await?;
        assert!(
            results
                .iter()
                .all(|r| !matches!(r, CommandResult::SlotState { .. })),
            "{results:?}"
        );
        let before: Vec<Option<Record>> = ks
            .iter()
            .map(|k| store.read(g, k))
            .collect::<Result<_, _>>()?;
        assert!(before[2].is_none(), "BeginIncoming deletes the slot's data");
        for (key, expect) in [
            (frozen, CommandResult::Frozen { slot: slot(frozen) }),
            (
                released,
                CommandResult::NotOwner {
                    slot: slot(released),
                },
            ),
            (
                incoming,
                CommandResult::NotOwner {
                    slot: slot(incoming),
                },
            ),
        ] {
            let writes = vec![
                put(key, "v2"),
                Command::Delete {
                    key: key.clone(),
                    condition: None,
                },
                Command::Append {
                    key: key.clone(),
                    suffix: "x".into(),
                },
                Command::AppendBounded {
                    key: key.clone(),
                    suffix: "x".into(),
                    max_value_bytes: 99,
                },
            ];
            for r in run(&mut sm, writes).await? {
                assert_eq!(r, expect, "{key}");
            }
        }
        let after: Vec<Option<Record>> = ks
            .iter()
            .map(|k| store.read(g, k))
            .collect::<Result<_, _>>()?;
        assert_eq!(after[..3], before[..3], "a refused write wrote something");
        assert!(matches!(
            run1(&mut sm, put(owned, "v2")).await?,
            CommandResult::Written { .. }
        ));
        assert_eq!(store.slot_state(g, slot(frozen)), SlotState::Frozen);
        assert_eq!(store.slot_state(g, slot(released)), SlotState::Released);
        assert_eq!(store.slot_state(g, slot(incoming)), SlotState::Incoming);
        assert_eq!(store.slot_state(g, slot(owned)), SlotState::Owned);
        assert_stats_right(&store, g)
    }

    // A group whose table was never initialized serves every slot, and a later InitSlots is
    // applied once (a second one is a no-op).
    #[tokio::test]
    async fn uninitialized_groups_own_every_slot_and_init_is_idempotent() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let g = GroupId(12);
        let mut sm = store.state_machine(g).await?;
        assert!(matches!(
            run1(&mut sm, put("a", "1")).await?,
            CommandResult::Written { .. }
        ));
        assert_eq!(store.slot_table(g), None);
        assert_eq!(store.slot_state(g, slot("a")), SlotState::Owned);
        let s = slot("a");
        assert_eq!(
            run1(&mut sm, Command::InitSlots { owned: one(s) }).await?,
            CommandResult::None
        );
        assert_eq!(
            run1(&mut sm, Command::InitSlots { owned: vec![] }).await?,
            CommandResult::None
        );
        let table = store.slot_table(g).expect("initialized");
        assert_eq!(table[usize::from(s)], SlotState::Owned);
        assert_eq!(table.iter().filter(|t| **t == SlotState::Owned).count(), 1);
        Ok(())
    }

    // Copy → fence → catch-up: B copies A's slots while A still takes writes (overwrites,
    // deletes, creates); after A freezes, a scan since the copy's high-water mark returns only
    // what changed as records and the rest as keys, and one CatchUp (changed records, keys the
    // copy brought that A no longer has, A's final high-water mark) leaves B equal to A, with
    // B's next writes above every version A gave.
    #[tokio::test]
    async fn a_copy_before_the_freeze_is_caught_up_after_it() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let (a, b) = (GroupId(31), GroupId(32));
        let mut sa = store.state_machine(a).await?;
        let mut sb = store.state_machine(b).await?;
        run1(&mut sa, Command::InitSlots { owned: vec![ALL] }).await?;
        run1(&mut sb, Command::InitSlots { owned: vec![] }).await?;
        let moving = vec![(0u16, 2047u16)];
        let moves = |k: &str| slot(k) <= 2047;
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        run(&mut sa, keys.iter().map(|k| put(k, "v1")).collect()).await?;
        run1(
            &mut sb,
            Command::BeginIncoming {
                slots: moving.clone(),
            },
        )
        .await?;
        // The copy, A not frozen: the mark is read before the scan.
        let mark = store.version_high_water(a)?;
        let mut copied: Vec<String> = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let chunk = store.scan_slots(a, &moving, cursor.as_deref(), 500)?;
            assert!(chunk.unchanged.is_empty());
            copied.extend(chunk.records.iter().map(|(k, _)| k.clone()));
            run1(
                &mut sb,
                Command::Ingest {
                    records: chunk.records,
                },
            )
            .await?;
            match chunk.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // A keeps serving: overwrites, deletes and creates in the moving slots.
        let mut later = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match i % 4 {
                0 => later.push(put(k, "v2")),
                1 => later.push(del(k)),
                _ => {}
            }
        }
        later.extend((0..40).map(|i| put(&format!("new{i}"), "n")));
        run(&mut sa, later).await?;
        run1(
            &mut sa,
            Command::Freeze {
                slots: moving.clone(),
            },
        )
        .await?;
        // The catch-up: everything changed since the mark, in one chunk.
        let chunk = store.scan_slots_since(a, &moving, None, 1 << 20, mark)?;
        assert_eq!(chunk.next, None);
        let present: std::collections::BTreeSet<&String> = chunk
            .unchanged
            .iter()
            .chain(chunk.records.iter().map(|(k, _)| k))
            .collect();
        let changed = keys
            .iter()
            .enumerate()
            .filter(|(i, k)| i % 4 == 0 && moves(k))
            .count()
            + (0..40).filter(|i| moves(&format!("new{i}"))).count();
        assert_eq!(
            chunk.records.len(),
            changed,
            "only changed records carry values"
        );
        assert!(chunk.records.iter().all(|(_, r)| r.version > mark));
        let removed: Vec<String> = copied
            .iter()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        let deleted = keys
            .iter()
            .enumerate()
            .filter(|(i, k)| i % 4 == 1 && moves(k))
            .count();
        assert_eq!(removed.len(), deleted);
        let above = store.version_high_water(a)?;
        let r = run1(
            &mut sb,
            Command::CatchUp {
                records: chunk.records,
                removed,
                above,
            },
        )
        .await?;
        assert_eq!(
            r,
            CommandResult::Ingested {
                written: (changed + deleted) as u64,
                skipped: 0
            }
        );
        // B now holds exactly A's data of the moving slots.
        let all: Vec<String> = keys
            .iter()
            .cloned()
            .chain((0..40).map(|i| format!("new{i}")))
            .collect();
        for k in &all {
            let want = if moves(k) { store.read(a, k)? } else { None };
            assert_eq!(store.read(b, k)?, want, "{k}");
        }
        assert_eq!(store.slot_stats(a, &moving)?, store.slot_stats(b, &moving)?);
        assert_stats_right(&store, b)?;
        hand_over(&mut sa, &mut sb, &moving).await?;
        // A key deleted at A and created again at B gets a version above every one A gave.
        let gone = keys
            .iter()
            .enumerate()
            .find(|(i, k)| i % 4 == 1 && moves(k))
            .map(|(_, k)| k.clone())
            .expect("a deleted moving key");
        match run1(&mut sb, put(&gone, "again")).await? {
            CommandResult::Written { version } => assert!(version > above, "{version} <= {above}"),
            r => panic!("{r:?}"),
        }
        Ok(())
    }

    // A whole move of half the slots from A to B in one store, copying in small chunks:
    // afterwards B serves every moved key with its value and version, A none of them, the
    // others stay at A, counts are right on both, and B's next writes get higher versions.
    #[tokio::test]
    async fn a_move_between_two_groups_moves_every_key_with_its_version() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let (a, b) = (GroupId(21), GroupId(22));
        let mut sa = store.state_machine(a).await?;
        let mut sb = store.state_machine(b).await?;
        run1(&mut sa, Command::InitSlots { owned: vec![ALL] }).await?;
        run1(&mut sb, Command::InitSlots { owned: vec![] }).await?;
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        run(
            &mut sa,
            keys.iter()
                .map(|k| put(k, &format!("value of {k}")))
                .collect(),
        )
        .await?;
        // Overwrites, so A's versions are well above B's log index.
        run(
            &mut sa,
            keys.iter().map(|k| put(k, &format!("v2 of {k}"))).collect(),
        )
        .await?;
        let moving = vec![(0u16, 1000u16), (3000, 4095)];
        let moves = |k: &str| moving.iter().any(|&(f, t)| (f..=t).contains(&slot(k)));
        let before: Vec<Option<Record>> = keys
            .iter()
            .map(|k| store.read(a, k))
            .collect::<Result<_, _>>()?;

        assert_eq!(
            run1(
                &mut sa,
                Command::Freeze {
                    slots: moving.clone()
                }
            )
            .await?,
            CommandResult::None
        );
        assert_eq!(
            run1(
                &mut sb,
                Command::BeginIncoming {
                    slots: moving.clone()
                }
            )
            .await?,
            CommandResult::None
        );
        let mut cursor: Option<Vec<u8>> = None;
        let (mut copied, mut chunks) = (0u64, 0);
        loop {
            let chunk = store.scan_slots(a, &moving, cursor.as_deref(), 300)?;
            assert!(chunk.bytes <= 300 + 200, "chunk of {} bytes", chunk.bytes);
            chunks += 1;
            if !chunk.records.is_empty() {
                let n = chunk.records.len() as u64;
                let r = run1(
                    &mut sb,
                    Command::Ingest {
                        records: chunk.records,
                    },
                )
                .await?;
                assert_eq!(
                    r,
                    CommandResult::Ingested {
                        written: n,
                        skipped: 0
                    }
                );
                copied += n;
            }
            match chunk.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected = keys.iter().filter(|k| moves(k)).count() as u64;
        assert_eq!(copied, expected, "in {chunks} chunks");
        assert!(chunks > 5, "only {chunks} chunks");
        assert_eq!(store.slot_stats(a, &moving)?, store.slot_stats(b, &moving)?);
        hand_over(&mut sa, &mut sb, &moving).await?;
        run1(
            &mut sa,
            Command::DropSlots {
                slots: moving.clone(),
            },
        )
        .await?;

        for (k, rec) in keys.iter().zip(&before) {
            let (at_a, at_b) = (store.read(a, k)?, store.read(b, k)?);
            if moves(k) {
                assert_eq!(&at_b, rec, "{k} at B");
                assert_eq!(at_a, None, "{k} at A");
            } else {
                assert_eq!(&at_a, rec, "{k} at A");
                assert_eq!(at_b, None, "{k} at B");
            }
        }
        assert_eq!(store.group_stats(b)?.0, expected);
        assert_eq!(store.group_stats(a)?.0, keys.len() as u64 - expected);
        assert_stats_right(&store, a)?;
        assert_stats_right(&store, b)?;
        // Writes: the moved keys at A are refused, at B they get a higher version.
        let moved = keys.iter().position(|k| moves(k)).expect("some key moves");
        let k = &keys[moved];
        assert_eq!(
            run1(&mut sa, put(k, "x")).await?,
            CommandResult::NotOwner { slot: slot(k) }
        );
        let old = before[moved].as_ref().map_or(0, |r| r.version);
        let max = before
            .iter()
            .flatten()
            .map(|r| r.version)
            .max()
            .unwrap_or(0);
        match run1(&mut sb, put(k, "x")).await? {
            CommandResult::Written { version } => {
                assert!(
                    version > max,
                    "version {version} after a move, not above {max} (was {old})"
                )
            }
            r => panic!("{r:?}"),
        }
        Ok(())
    }

    // A move rolled back: the destination's AbortIncoming deletes what it copied and releases
    // the slots; the source's Unfreeze makes the slots writable again.
    #[tokio::test]
    async fn a_rolled_back_move_leaves_the_source_serving() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let (a, b) = (GroupId(31), GroupId(32));
        let mut sa = store.state_machine(a).await?;
        let mut sb = store.state_machine(b).await?;
        run1(&mut sa, Command::InitSlots { owned: vec![ALL] }).await?;
        run1(&mut sb, Command::InitSlots { owned: vec![] }).await?;
        let s = slot("k");
        run1(&mut sa, put("k", "v")).await?;
        run1(&mut sa, Command::Freeze { slots: one(s) }).await?;
        run1(&mut sb, Command::BeginIncoming { slots: one(s) }).await?;
        let chunk = store.scan_slots(a, &one(s), None, 1 << 20)?;
        assert_eq!(chunk.next, None);
        run1(
            &mut sb,
            Command::Ingest {
                records: chunk.records,
            },
        )
        .await?;
        assert!(store.read(b, "k")?.is_some());
        assert_eq!(
            run1(&mut sb, Command::AbortIncoming { slots: one(s) }).await?,
            CommandResult::None
        );
        assert_eq!(store.read(b, "k")?, None);
        assert_eq!(store.group_stats(b)?, (0, 0));
        assert_eq!(store.slot_state(b, s), SlotState::Released);
        // Activating an aborted copy is refused.
        assert_eq!(
            run1(&mut sb, Command::Activate { slots: one(s) }).await?,
            CommandResult::SlotState {
                slot: s,
                state: SlotState::Released
            }
        );
        assert_eq!(
            run1(&mut sa, Command::Unfreeze { slots: one(s) }).await?,
            CommandResult::None
        );
        assert!(matches!(
            run1(&mut sa, put("k", "w")).await?,
            CommandResult::Written { .. }
        ));
        assert_stats_right(&store, a)?;
        assert_stats_right(&store, b)
    }

    // The same entries give the same results and state whether applied in one batch (reading
    // through the batch's pending writes and range deletes) or one by one, and applying a
    // sequence's admin commands again changes nothing further.
    #[tokio::test]
    async fn batched_and_single_application_agree() -> anyhow::Result<()> {
        let ks = keys_in_distinct_slots(3);
        let s: Vec<u16> = ks.iter().map(|k| slot(k)).collect();
        let rec = |v: &str, version| Record {
            value: v.into(),
            version,
        };
        let cmds = vec![
            Command::InitSlots {
                owned: vec![(s[0], s[0])],
            },
            put(&ks[0], "a"),
            put(&ks[1], "refused"),
            Command::BeginIncoming { slots: one(s[1]) },
            Command::Ingest {
                records: vec![
                    (ks[1].clone(), rec("in", 500)),
                    (ks[0].clone(), rec("skip", 9)),
                ],
            },
            Command::AbortIncoming { slots: one(s[1]) },
            Command::BeginIncoming { slots: one(s[1]) },
            Command::Ingest {
                records: vec![(ks[1].clone(), rec("in2", 700))],
            },
            Command::Ingest {
                records: vec![(ks[1].clone(), rec("in3", 800))],
            },
            Command::BeginIncoming { slots: one(s[1]) },
            Command::Ingest {
                records: vec![(ks[1].clone(), rec("in4", 900))],
            },
            Command::Activate { slots: one(s[1]) },
            Command::Activate { slots: one(s[1]) },
            Command::Append {
                key: ks[1].clone(),
                suffix: "+".into(),
            },
            Command::Freeze { slots: one(s[0]) },
            Command::Freeze { slots: one(s[0]) },
            put(&ks[0], "frozen"),
            Command::Release { slots: one(s[0]) },
            Command::Release { slots: one(s[0]) },
            Command::DropSlots { slots: vec![ALL] },
            Command::DropSlots { slots: vec![ALL] },
            Command::Freeze { slots: one(s[2]) },
        ];
        let mut outcomes = Vec::new();
        for batched in [true, false] {
            let dir = tempfile::TempDir::new()?;
            let store = Store::open(dir.path())?;
            let g = GroupId(40);
            let mut sm = store.state_machine(g).await?;
            let results = if batched {
                run(&mut sm, cmds.clone()).await?
            } else {
                let mut rs = Vec::new();
                for c in cmds.clone() {
                    rs.push(run1(&mut sm, c).await?);
                }
                rs
            };
            let data: Vec<Option<Record>> = ks
                .iter()
                .map(|k| store.read(g, k))
                .collect::<Result<_, _>>()?;
            assert_stats_right(&store, g)?;
            outcomes.push((results, data, store.slot_table(g), store.group_stats(g)?));
        }
        assert_eq!(outcomes[0], outcomes[1]);
        let (results, data, _, stats) = &outcomes[0];
        assert_eq!(results[2], CommandResult::NotOwner { slot: s[1] });
        assert_eq!(
            results[4],
            CommandResult::Ingested {
                written: 1,
                skipped: 1
            }
        );
        assert_eq!(results[16], CommandResult::Frozen { slot: s[0] });
        assert_eq!(
            results[21],
            CommandResult::SlotState {
                slot: s[2],
                state: SlotState::Released
            }
        );
        assert_eq!(data[0], None, "dropped");
        assert_eq!(data[1].as_ref().map(|r| r.value.as_str()), Some("in4+"));
        assert!(data[1].as_ref().is_some_and(|r| r.version > 900));
        assert_eq!(stats.0, 1);
        Ok(())
    }

    // The slot table and version base survive a restart, and are carried by a snapshot into
    // another store; versions keep growing above ingested ones on both.
    #[tokio::test]
    async fn table_and_version_base_survive_restart_and_snapshots() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let g = GroupId(50);
        let s = slot("k");
        let (table, snap, last) = {
            let store = Store::open(dir.path())?;
            let mut sm = store.state_machine(g).await?;
            run1(&mut sm, Command::InitSlots { owned: vec![] }).await?;
            run1(&mut sm, Command::BeginIncoming { slots: one(s) }).await?;
            let rec = Record {
                value: "old".into(),
                version: 10_000,
            };
            let r = run1(
                &mut sm,
                Command::Ingest {
                    records: vec![("k".into(), rec.clone())],
                },
            )
            .await?;
            assert_eq!(
                r,
                CommandResult::Ingested {
                    written: 1,
                    skipped: 0
                }
            );
            assert_eq!(store.read(g, "k")?, Some(rec));
            run1(&mut sm, Command::Activate { slots: one(s) }).await?;
            let mut last = 10_000;
            for i in 0..3 {
                match run1(&mut sm, put("k", &format!("v{i}"))).await? {
                    CommandResult::Written { version } => {
                        assert!(version > last, "version {version} not above {last}");
                        last = version;
                    }
                    r => panic!("{r:?}"),
                }
            }
            let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
            (store.slot_table(g), snap, last)
        };
        assert!(table.is_some());
        // Restart.
        let store = Store::open(dir.path())?;
        assert_eq!(
            store.slot_table(g),
            table,
            "loaded at open, before the state machine"
        );
        let mut sm = store.state_machine(g).await?;
        match run1(&mut sm, put("k", "after restart")).await? {
            CommandResult::Written { version } => assert!(version > last, "{version} <= {last}"),
            r => panic!("{r:?}"),
        }
        // Snapshot install into another store's group (which had a different table).
        let dir2 = tempfile::TempDir::new()?;
        let store2 = Store::open(dir2.path())?;
        let mut sm2 = store2.state_machine(g).await?;
        run1(&mut sm2, Command::InitSlots { owned: vec![ALL] }).await?;
        sm2.install_snapshot(&snap.meta, snap.snapshot).await?;
        assert_eq!(store2.slot_table(g), table);
        assert_eq!(store2.slot_state(g, s), SlotState::Owned);
        assert_eq!(
            store2.slot_state(g, s.wrapping_add(1) % 4096),
            SlotState::Released
        );
        assert_stats_right(&store2, g)?;
        match run1(&mut sm2, put("k", "on the copy")).await? {
            CommandResult::Written { version } => assert!(version > last, "{version} <= {last}"),
            r => panic!("{r:?}"),
        }
        // And after a restart of the installed copy.
        drop(sm2);
        drop(store2);
        let store2 = Store::open(dir2.path())?;
        assert_eq!(store2.slot_table(g), table);
        Ok(())
    }

    // A routed write applies only if it names its key's slot and the group owns the slot at its
    // epoch: ActivateAt records the epoch from which it does (a later ActivateAt of an owned slot
    // keeps it); reads are checked the same way. Unrouted writes (entries of older nodes) apply
    // as before. The epochs survive a restart (loaded at open, before the state machine) and
    // travel in snapshots.
    #[tokio::test]
    async fn routed_writes_and_reads_are_checked_against_the_slot_epochs() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let g = GroupId(52);
        let s = slot("k");
        let other = (s + 1) % 4096;
        let snap = {
            let store = Store::open(dir.path())?;
            let mut sm = store.state_machine(g).await?;
            run1(&mut sm, Command::InitSlots { owned: vec![] }).await?;
            run1(&mut sm, Command::BeginIncoming { slots: one(s) }).await?;
            let activate = |epoch| Command::ActivateAt {
                slots: one(s),
                epoch,
            };
            assert_eq!(run1(&mut sm, activate(7)).await?, CommandResult::None);
            assert!(!store.serves_read(g, s, 6) && store.serves_read(g, s, 7));
            assert_eq!(
                run1(&mut sm, put("k", "old map").routed(s, 6)).await?,
                CommandResult::NotOwner { slot: s }
            );
            assert_eq!(store.read(g, "k")?, None);
            let written = run1(&mut sm, put("k", "v").routed(s, 7)).await?;
            assert!(
                matches!(written, CommandResult::Written { .. }),
                "{written:?}"
            );
            assert_eq!(
                run1(&mut sm, put("k", "x").routed(other, 7)).await?,
                CommandResult::Misrouted {
                    slot: other,
                    key_slot: Some(s)
                }
            );
            let not_a_write = Command::Freeze { slots: one(s) }.routed(s, 7);
            let nested = put("k", "x").routed(s, 7).routed(s, 7);
            for cmd in [not_a_write, nested] {
                assert_eq!(
                    run1(&mut sm, cmd).await?,
                    CommandResult::Misrouted {
                        slot: s,
                        key_slot: None
                    }
                );
            }
            assert_eq!(store.read(g, "k")?.map(|r| r.value), Some("v".into()));
            // An unrouted write (an entry proposed by an older node) is not epoch-checked.
            let unrouted = run1(&mut sm, put("k", "unrouted")).await?;
            assert!(
                matches!(unrouted, CommandResult::Written { .. }),
                "{unrouted:?}"
            );
            // Activating an owned slot again keeps its epoch.
            assert_eq!(run1(&mut sm, activate(9)).await?, CommandResult::None);
            assert!(store.serves_read(g, s, 7));
            // Released slots are not served whatever the epoch.
            assert!(!store.serves_read(g, other, 100));
            sm.get_snapshot_builder().await.build_snapshot().await?
        };
        let store = Store::open(dir.path())?;
        assert!(
            !store.serves_read(g, s, 6) && store.serves_read(g, s, 7),
            "loaded at open"
        );
        let mut sm = store.state_machine(g).await?;
        assert_eq!(
            run1(&mut sm, put("k", "old map").routed(s, 6)).await?,
            CommandResult::NotOwner { slot: s }
        );
        // A snapshot carries them into another store's group (which had none).
        let dir2 = tempfile::TempDir::new()?;
        let store2 = Store::open(dir2.path())?;
        let mut sm2 = store2.state_machine(g).await?;
        run1(&mut sm2, Command::InitSlots { owned: vec![ALL] }).await?;
        assert!(store2.serves_read(g, s, 1));
        sm2.install_snapshot(&snap.meta, snap.snapshot).await?;
        assert!(!store2.serves_read(g, s, 6) && store2.serves_read(g, s, 7));
        assert_eq!(
            run1(&mut sm2, put("k", "old map").routed(s, 6)).await?,
            CommandResult::NotOwner { slot: s }
        );
        drop(sm2);
        drop(store2);
        let store2 = Store::open(dir2.path())?;
        assert!(!store2.serves_read(g, s, 6) && store2.serves_read(g, s, 7));
        Ok(())
    }

    // A key deleted at the source and re-created at the destination gets a version above every
    // version the source gave, once the move raised the destination's base to the source's
    // high water.
    #[tokio::test]
    async fn raise_version_base_puts_later_writes_above_the_source() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let (a, b) = (GroupId(55), GroupId(56));
        let mut sa = store.state_machine(a).await?;
        let mut sb = store.state_machine(b).await?;
        let cmds = (0..50).map(|i| put("k", &i.to_string())).collect();
        run(&mut sa, cmds).await?;
        let last = store.read(a, "k")?.map_or(0, |r| r.version);
        run1(
            &mut sa,
            Command::Delete {
                key: "k".into(),
                condition: None,
            },
        )
        .await?;
        let high = store.version_high_water(a)?;
        assert!(high >= last, "{high} < {last}");
        run1(&mut sb, Command::RaiseVersionBase { above: high }).await?;
        match run1(&mut sb, put("k", "re-created")).await? {
            CommandResult::Written { version } => assert!(version > high, "{version} <= {high}"),
            r => panic!("{r:?}"),
        }
        assert!(store.version_high_water(b)? > high);
        Ok(())
    }

    // A snapshot of a group without a table (as older versions wrote them) installs as
    // uninitialized with base 0, replacing the receiver's table.
    #[tokio::test]
    async fn a_snapshot_without_a_table_installs_as_uninitialized() -> anyhow::Result<()> {
        let g = GroupId(51);
        let src_dir = tempfile::TempDir::new()?;
        let src = Store::open(src_dir.path())?;
        let mut src_sm = src.state_machine(g).await?;
        run1(&mut src_sm, put("a", "1")).await?;
        let snap = src_sm.get_snapshot_builder().await.build_snapshot().await?;
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(g).await?;
        run(&mut sm, vec![Command::InitSlots { owned: vec![] }]).await?;
        sm.install_snapshot(&snap.meta, snap.snapshot).await?;
        assert_eq!(store.slot_table(g), None);
        match run1(&mut sm, put("a", "2")).await? {
            CommandResult::Written { version } => assert_eq!(version, index_of(&mut sm).await?),
            r => panic!("{r:?}"),
        }
        Ok(())
    }

    // Dropping a group leaves no key of it in any column family and none of its snapshot
    // files; other groups are untouched, and the group can start again from empty.
    // A committed vote is kept (same term, same candidate) but read back uncommitted, so that a
    // restarted node never resumes its old leadership without an election (see `read_vote`).
    #[tokio::test]
    async fn a_committed_vote_reads_back_uncommitted() -> anyhow::Result<()> {
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let mut log = store.log_store(GroupId(62));
        assert_eq!(log.read_vote().await?, None);
        log.save_vote(&openraft::Vote::new_committed(7, 3)).await?;
        let v = log.read_vote().await?.expect("a vote");
        assert_eq!(v, openraft::Vote::new(7, 3));
        assert!(!v.is_committed());
        Ok(())
    }

    #[tokio::test]
    async fn drop_group_leaves_nothing_behind() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let (g, other) = (GroupId(60), GroupId(61));
        for group in [g, other] {
            let mut sm = store.state_machine(group).await?;
            run(
                &mut sm,
                vec![Command::InitSlots { owned: vec![ALL] }, put("a", "1")],
            )
            .await?;
            sm.get_snapshot_builder().await.build_snapshot().await?;
            use openraft::storage::RaftLogStorage;
            let mut log = store.log_store(group);
            log.save_vote(&openraft::Vote::new(1, 1)).await?;
        }
        store.drop_group(g)?;
        for cf in [CF_LOG, CF_META, CF_DATA] {
            let mut it = store.db().raw_iterator_cf(store.cf(cf));
            it.seek(keys::group_start(g));
            let left = it.key().filter(|k| k.starts_with(&keys::group_start(g)));
            assert!(
                left.is_none(),
                "{cf}: key {left:?} of the dropped group left"
            );
        }
        let files: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        assert!(files.iter().all(|f| !f.starts_with("g60-")), "{files:?}");
        assert!(files.iter().any(|f| f.starts_with("g61-")), "{files:?}");
        assert_eq!(store.slot_table(g), None);
        assert!(store.slot_table(other).is_some());
        assert!(store.read(other, "a")?.is_some());
        let mut sm = store.state_machine(g).await?;
        assert_eq!(sm.applied_state().await?.0, None);
        assert_eq!(store.read(g, "a")?, None);
        Ok(())
    }
}
