//! Crash and concurrency safety: snapshot builds, reads and installs that overlap or are cut
//! short by a crash, stalled writes off the async threads, and a vote read back after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::Vote;

use crate::layout::{self, tag, CF_DATA, CF_META};
use crate::test_support::{apply, put};
use crate::{GroupId, Store, StoreError};

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
            layout::meta_key(group, tag::INSTALLING),
            bincode::serialize(&true)?,
        )?;
        db.delete_cf(store.cf(CF_DATA), layout::data_key(group, b"b"))?;
    }
    let store = Store::open(dir.path())?;
    assert_eq!(store.read(group, "b")?.map(|r| r.value), Some("new".into()));
    let mut sm = store.state_machine(group).await?;
    assert_eq!(sm.applied_state().await?.0, snap.meta.last_log_id);
    Ok(())
}

// A RocksDB write that stalls (in apply, in save_vote) and a log read that stalls (the leader's
// replication reads entries to send; under a disk-heavy neighbour a read that misses the cache
// waits for the disk) run off the async threads: on a runtime whose only task thread is the
// test's (current_thread), the test's task still runs while the call is stalled, and sees it
// unfinished. A log read on the async threads once stalled both of a leader's workers (one per
// follower's replication) long enough for its followers to elect another leader.
#[test]
fn a_stalled_write_or_log_read_does_not_block_the_async_workers() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let group = GroupId(1);
        let log = store.log_store(group);
        for op in ["apply", "save_vote", "read_log"] {
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
                "save_vote" => {
                    let mut log = log.clone();
                    tokio::spawn(async move {
                        log.save_vote(&Vote::new(1, 1)).await?;
                        anyhow::Ok(())
                    })
                }
                _ => {
                    let mut log = log.clone();
                    tokio::spawn(async move {
                        log.try_get_log_entries(0..10).await?;
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
                "{op}: the stalled call blocked the runtime's thread for {waited:?}"
            );
        }
        anyhow::Ok(())
    })
}

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
