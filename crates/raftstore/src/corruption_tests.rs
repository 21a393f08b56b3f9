//! Corrupted files are detected, never silently dropped: a WAL damaged anywhere but in its final
//! record stops the open with a message naming the file; a torn final record (a crash in the
//! middle of a write) is tolerated.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::test_support::{apply, put};
use crate::{GroupId, Store, StoreError};

/// Keys written before the WAL is damaged: enough batches that the WAL's middle is far from
/// its final record.
const KEYS: usize = 2_000;
/// Keys per applied batch (one WAL record each).
const BATCH: usize = 50;

/// Writes [`KEYS`] keys to `group` in a store under `dir`, then closes it (its WAL still holds
/// every write: RocksDB does not flush memtables on close).
async fn write_keys(dir: &Path, group: GroupId) -> anyhow::Result<()> {
    let store = Store::open(dir)?;
    let mut sm = store.state_machine(group).await?;
    let mut index = 0;
    for b in 0..KEYS / BATCH {
        let cmds = (0..BATCH)
            .map(|i| put(&format!("key-{:05}", b * BATCH + i), &"v".repeat(64)))
            .collect();
        apply(&mut sm, &mut index, cmds).await?;
    }
    Ok(())
}

/// The newest WAL file (`*.log`) of the store under `dir`.
fn newest_wal(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut wals: Vec<PathBuf> = std::fs::read_dir(dir.join("db"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    wals.sort();
    wals.pop()
        .ok_or_else(|| anyhow::anyhow!("no WAL file in {}", dir.display()))
}

/// Number of keys of `group` that read back.
fn keys_read_back(store: &Store, group: GroupId) -> anyhow::Result<usize> {
    let mut n = 0;
    for i in 0..KEYS {
        if store.read(group, &format!("key-{i:05}"))?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

// 16 bytes flipped in the middle of the WAL: the store refuses to open, naming the WAL file and
// saying what to do, instead of recovering the records before the damage and dropping the rest
// (RocksDB's point-in-time recovery).
#[tokio::test]
async fn wal_corrupted_in_the_middle_refuses_to_open_and_names_the_file() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let group = GroupId(3);
    write_keys(dir.path(), group).await?;
    let wal = newest_wal(dir.path())?;
    let len = std::fs::metadata(&wal)?.len();
    assert!(len > 64 * 1024, "the WAL holds every write: {len} bytes");
    let mut f = std::fs::OpenOptions::new().write(true).open(&wal)?;
    f.seek(SeekFrom::Start(len / 2))?;
    f.write_all(&[0xA5; 16])?;
    f.sync_all()?;
    drop(f);

    match Store::open(dir.path()) {
        Ok(store) => panic!(
            "a store with a corrupted WAL opened silently, {} of {KEYS} keys left",
            keys_read_back(&store, group)?
        ),
        Err(e) => {
            assert!(matches!(e, StoreError::CorruptAtOpen { .. }), "{e:?}");
            let msg = e.to_string();
            eprintln!("the open refused: {msg}");
            let name = wal.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            assert!(msg.contains(name), "the error names the WAL file: {msg}");
            assert!(msg.contains("wipe"), "the error says what to do: {msg}");
        }
    }
    Ok(())
}

// A torn final record (a crash in the middle of a WAL write) is not corruption: the store opens
// with every write before it.
#[tokio::test]
async fn wal_with_a_torn_final_record_opens() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let group = GroupId(3);
    write_keys(dir.path(), group).await?;
    let wal = newest_wal(dir.path())?;
    let len = std::fs::metadata(&wal)?.len();
    let f = std::fs::OpenOptions::new().write(true).open(&wal)?;
    f.set_len(len - 100)?;
    f.sync_all()?;
    drop(f);

    let store = Store::open(dir.path())?;
    let n = keys_read_back(&store, group)?;
    assert_eq!(n, KEYS - BATCH, "every batch but the torn last one is back");
    Ok(())
}

mod consistency {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

    use crate::test_support::{apply, put};
    use crate::{AdminResult, Command, CommandResult, GroupId, Store};

    /// The hash a `ComputeHash` answered.
    fn hashed(results: &[CommandResult]) -> (u64, u64) {
        match results.last() {
            Some(CommandResult::Admin(AdminResult::Hashed { index, hash })) => (*index, *hash),
            other => panic!("ComputeHash answered {other:?}"),
        }
    }

    // Replicas that applied the same log hash alike at the same index, in the middle of a batch
    // too (the hash is of the state at its entry, not at the batch's end), and a replica that
    // installed a snapshot hashes like them; a key written behind Raft's back changes the hash.
    #[tokio::test]
    async fn replicas_hash_alike_unless_data_changed_behind_their_back() -> anyhow::Result<()> {
        let group = GroupId(4);
        let cmds = || {
            vec![
                put("a", "1"),
                put("b", "2"),
                Command::ComputeHash,
                put("c", "3"),
            ]
        };
        let (d1, d2) = (tempfile::TempDir::new()?, tempfile::TempDir::new()?);
        let (s1, s2) = (Store::open(d1.path())?, Store::open(d2.path())?);
        let (mut sm1, mut sm2) = (
            s1.state_machine(group).await?,
            s2.state_machine(group).await?,
        );
        let (mut i1, mut i2) = (0, 0);
        let r1 = apply(&mut sm1, &mut i1, cmds()).await?;
        let r2 = apply(&mut sm2, &mut i2, cmds()).await?;
        assert_eq!(r1[2], r2[2]);
        assert_eq!(s1.state_hash(group), s2.state_hash(group));
        let (index, mid) = hashed(&r1[..3]);
        assert_eq!(index, 3);
        assert_eq!(s1.read(group, "c")?.map(|r| r.value), Some("3".into()));

        // The same state reached by a snapshot hashes the same.
        let snap = sm1.get_snapshot_builder().await.build_snapshot().await?;
        let d3 = tempfile::TempDir::new()?;
        let s3 = Store::open(d3.path())?;
        let mut sm3 = s3.state_machine(group).await?;
        sm3.install_snapshot(&snap.meta, snap.snapshot).await?;
        let (mut i3, mut i1b) = (i1, i1);
        let h1 = hashed(&apply(&mut sm1, &mut i1b, vec![Command::ComputeHash]).await?);
        let h3 = hashed(&apply(&mut sm3, &mut i3, vec![Command::ComputeHash]).await?);
        assert_eq!(h1, h3, "a replica that installed a snapshot hashes alike");
        assert_ne!(h1.1, mid, "the state changed since index 3");

        // Changed behind Raft's back: the next hash at the same index differs.
        s2.write_behind_raft(group, "b", "tampered")?;
        let h2 = hashed(&apply(&mut sm2, &mut i2, vec![Command::ComputeHash]).await?);
        assert_eq!(h2.0, h1.0);
        assert_ne!(h2.1, h1.1, "a tampered replica hashes differently");
        Ok(())
    }
}
