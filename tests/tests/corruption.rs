//! Corrupted data files with real kvnode processes: a damaged block of a group leader's data is
//! detected by the read that hits it; the replica's node leaves service, the metadata leader
//! replaces it from the spare as for a dead node, and every key reads back; the node refuses to
//! start on its damaged data.
//!
//! Tests run one at a time (each cluster wants both cores). Every wait is a condition with a
//! deadline.

#![allow(clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kvorum_tests::workload::{assert_readable, run_all, write_all};
use kvorum_tests::{
    direct_client, keys_by_group, kvnode_bin, seed, status_group, Cluster, ClusterOptions,
    ONE_AT_A_TIME,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Short failure detection, so a repair fits in the test's deadlines.
fn options(nodes: usize, k: usize) -> ClusterOptions {
    ClusterOptions::new(kvnode_bin!(), nodes, k)
        .with_env("KVORUM_SUSPECT_AFTER_MS", "1500")
        .with_env("KVORUM_DEAD_AFTER_MS", "4000")
}

/// Keys written to group 1: several RocksDB data blocks (4 KiB) of about 35 bytes each.
const KEYS: usize = 600;
/// Bytes flipped in the middle of the SST file.
const FLIPPED: usize = 64;

/// The SST files of column family `cf` in the data directory `dir`: a table's properties block
/// (not compressed) holds the key `rocksdb.column.family.name` (prefix-compressed after
/// `rocksdb.column.family.id`, so stored as `name`) followed by its value, the name.
fn sst_files_of(dir: &Path, cf: &str) -> Vec<PathBuf> {
    let needle = [b"name".as_slice(), cf.as_bytes()].concat();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("db"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .filter(|p| {
            std::fs::read(p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect();
    files.sort();
    files
}

// 64 bytes flipped in the middle of the data SST of group 1's leader, behind the running node's
// back: the linearizable reads served by that leader hit the damaged block, and instead of
// answering 500 "block checksum mismatch" for as long as the node runs, the node marks its store
// corrupt and stops; the metadata leader replaces it from the spare; every key reads back from
// healthy replicas; and the node refuses to start again on its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sst_corruption_on_a_group_leader_gets_the_replica_replaced() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("sst_corruption_on_a_group_leader_gets_the_replica_replaced");
    let mut rng = StdRng::seed_from_u64(seed);
    // Group 1 = nodes 1, 2, 3; node 4 is the spare.
    let mut c = Cluster::start(options(4, 3)).await;
    let keys = keys_by_group(&c.initial_map(), "c-", KEYS)
        .remove(&1)
        .unwrap();
    write_all(&c, &keys, &mut rng).await;
    // A restart recovers the WAL into SST files (RocksDB flushes what it recovered), and leaves
    // the block cache empty.
    for i in 0..3 {
        c.stop(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_ready(Duration::from_secs(60)).await;
    let leader = c.wait_for_leader(Duration::from_secs(30)).await;
    let li = c.index_of(leader);
    let ssts = sst_files_of(&c.nodes[li].data_dir, "data");
    let sst = ssts
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap_or_else(|| panic!("no data SST file in {}", c.nodes[li].data_dir.display()))
        .clone();
    // In the middle of group 1's records (the file also holds the config group's map, a large
    // value): at the middle one of our values, stored uncompressed.
    let bytes = std::fs::read(&sst).unwrap();
    let ours: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"v-c-")
        .map(|(i, _)| i)
        .collect();
    assert!(!ours.is_empty(), "no value of ours in {}", sst.display());
    let at = ours[ours.len() / 2] as u64;
    let mut f = std::fs::OpenOptions::new().write(true).open(&sst).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[0x5A; FLIPPED]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    eprintln!(
        "flipped {FLIPPED} bytes at {at} of {} ({} bytes) on node {leader}, group 1's leader",
        sst.display(),
        bytes.len()
    );

    // Read every key through the leader: the damaged block's keys fail there, and the node leaves.
    // No retries: once the node is gone, the remaining reads fail at once.
    let to_leader = Arc::new(direct_client(
        c.nodes[li].addr,
        Duration::from_secs(5),
        Duration::ZERO,
    ));
    let failed = run_all(keys.clone(), 8, move |key| {
        let client = to_leader.clone();
        async move {
            client
                .get(&key, false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    eprintln!(
        "{} of {KEYS} reads through node {leader} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let exit = c.wait_for_exit(li, Duration::from_secs(20)).await;
    let log = c.nodes[li].log_text();
    assert!(
        exit.is_some_and(|s| !s.success()),
        "node {leader} kept serving (exit: {exit:?}) after reading a damaged block; logs in {}",
        c.path().display()
    );
    assert!(
        log.contains("corrupt data"),
        "node {leader}'s log does not say it found corrupt data; logs in {}",
        c.path().display()
    );
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut want = survivors.clone();
    want.push(4);
    c.wait_for_status(
        Duration::from_secs(60),
        "the spare (node 4) replacing the corrupt leader in group 1",
        |s| status_group(s, 1).is_some_and(|g| g.members == want),
    )
    .await;
    let via: Vec<usize> = (0..4).filter(|i| *i != li).collect();
    assert_readable(&c, &keys, &via, seed).await;

    // Restarted on its damaged data, the node refuses to start and says what to do.
    c.restart(li);
    let exit = c.wait_for_exit(li, Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| !s.success()),
        "node {leader} started again on corrupt data; logs in {}",
        c.path().display()
    );
    let log = c.nodes[li].log_text();
    assert!(
        log.contains("refusing to start: corrupt data") && log.contains("wipe"),
        "node {leader}'s restart does not say why it refuses; logs in {}",
        c.path().display()
    );
}

// A replica whose data changed behind Raft's back (a key written straight into node 3's RocksDB
// while it was stopped) is reported by the consistency check: `kvctl check-consistency` (the
// client's `check_consistency`) names it as mismatched against the other two, and the status,
// the metadata leader's metrics and its log report it too. The config group, untouched, agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consistency_check_reports_a_replica_changed_behind_its_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("consistency_check_reports_a_replica_changed_behind_its_back");
    let mut rng = StdRng::seed_from_u64(seed);
    // Group 1 = nodes 1, 2, 3, the config voters too.
    let mut c = Cluster::start(options(3, 3)).await;
    let keys = keys_by_group(&c.initial_map(), "h-", 50)
        .remove(&1)
        .unwrap();
    write_all(&c, &keys, &mut rng).await;
    let client = c.client();
    let before = client.check_consistency().await.unwrap();
    assert!(before.consistent(), "before the change: {before:?}");

    c.stop(2);
    {
        let store = kvorum_raftstore::Store::open(&c.nodes[2].data_dir).unwrap();
        store
            .write_behind_raft(kvorum_raftstore::GroupId(1), "written-behind-raft", "x")
            .unwrap();
    }
    c.restart(2);
    c.wait_ready(Duration::from_secs(60)).await;

    // Node 3 may still be catching up when the first check runs: repeat until it hashed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let r = client.check_consistency().await.unwrap();
        let g1 = r.groups.iter().find(|g| g.group.0 == 1).unwrap().clone();
        if g1.missing.is_empty() || std::time::Instant::now() >= deadline {
            break r;
        }
    };
    let g1 = report.groups.iter().find(|g| g.group.0 == 1).unwrap();
    assert_eq!(
        (g1.mismatched.clone(), g1.agreeing.clone()),
        (vec![3], vec![1, 2]),
        "group 1's comparison: {report:?}; logs in {}",
        c.path().display()
    );
    assert!(!report.consistent());
    let g0 = report.groups.iter().find(|g| g.group.0 == 0).unwrap();
    assert!(!g0.is_mismatch(), "the config group agrees: {report:?}");

    let s = c
        .wait_for_status(Duration::from_secs(10), "the mismatch in the status", |s| {
            s.consistency
                .iter()
                .any(|g| g.group.0 == 1 && g.mismatched == vec![3])
        })
        .await;
    let meta = c.index_of(s.metadata_leader.unwrap());
    let metrics = reqwest::get(format!("http://{}/metrics", c.nodes[meta].addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kvorum_consistency_mismatched_replicas{group=\"1\"} 1"),
        "metrics of the metadata leader:\n{metrics}"
    );
    assert!(
        c.nodes[meta]
            .log_text()
            .contains("CONSISTENCY CHECK FAILED"),
        "the metadata leader's log reports the mismatch; logs in {}",
        c.path().display()
    );
}
