//! Power loss: node data directories on lazyfs mounts (unsynced writes live in the mount's
//! memory), nodes "lose power" (SIGKILL, then the mount drops every unsynced write) and restart
//! on what was fsynced. Every acknowledged write must survive: the check is the set of
//! acknowledged puts (unique keys, one write each) read back afterwards, each with its value.
//! A planted fault (`KVORUM_FAULT_SKIP_WAL_FSYNC`) shows the check can fail; another
//! (`KVORUM_FAULT_FSYNC_EIO`) shows a node stops on an fsync error while the cluster serves.
//!
//! Needs root and /dev/fuse: without them the lazyfs tests print SKIPPED (and fail under CI).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_client::{Client, ClientError};
use kvorum_tests::mount::lazyfs_available;
use kvorum_tests::{kvnode_bin, lazyfs_bin, seed, Cluster, ClusterOptions, ONE_AT_A_TIME};
use rand::{Rng, SeedableRng};

/// Concurrent writers of the load.
const WRITERS: usize = 4;
/// Longest wait for the cluster to serve again after a power cut.
const RECOVER: Duration = Duration::from_secs(60);

/// Whether the lazyfs tests can run; prints SKIPPED (or fails under CI) when not.
fn lazyfs_or_skip(test: &str) -> bool {
    match lazyfs_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").is_err(),
                "{test} cannot run in CI: {why}"
            );
            println!("SKIPPED {test}: {why}");
            false
        }
    }
}

fn options(nodes: usize) -> ClusterOptions {
    ClusterOptions::new(kvnode_bin!(), nodes, 3)
        .with_env("KVORUM_SUSPECT_AFTER_MS", "1500")
        .with_env("KVORUM_DEAD_AFTER_MS", "30000")
        .with_lazyfs(lazyfs_bin!())
}

/// Writers putting unique keys `{tag}-{writer}-{n}` until `stop`; returns the acknowledged ones.
async fn load(client: &Arc<Client>, tag: &str, stop: Instant) -> BTreeMap<String, String> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, acked, tag) = (client.clone(), acked.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let (k, v) = (format!("{tag}-{w}-{n}"), format!("v{n}"));
                if client.put(&k, &v, None).await.is_ok() {
                    acked.lock().unwrap().insert(k, v);
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let out = acked.lock().unwrap().clone();
    out
}

/// Reads every acknowledged key back (retrying transient errors until `RECOVER`); returns the
/// keys lost (not found or another value).
async fn lost(c: &Cluster, acked: &BTreeMap<String, String>) -> Vec<String> {
    let client = c.client();
    let deadline = Instant::now() + RECOVER;
    let mut lost = Vec::new();
    for (k, v) in acked {
        loop {
            match client.get(k, false).await {
                Ok(got) if got.value == *v => break,
                Ok(got) => {
                    lost.push(format!("{k}: read {:?}, acked {v:?}", got.value));
                    break;
                }
                Err(ClientError::NotFound) => {
                    lost.push(format!("{k}: not found, acked {v:?}"));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "reading {k} after the cut: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    lost
}

async fn restart_all(c: &mut Cluster, idx: &[usize]) {
    for &i in idx {
        c.restart(i);
    }
    c.wait_ready(RECOVER).await;
}

// One node, then all nodes, lose power while acknowledged writes flow; nothing acknowledged is
// lost and the cluster serves again. (With N=3 a minority is one node.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cuts_keep_every_acknowledged_write() {
    if !lazyfs_or_skip("power_cuts_keep_every_acknowledged_write") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("power_cuts_keep_every_acknowledged_write");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(options(3)).await;
    let client = Arc::new(c.client());
    let mut acked = BTreeMap::new();

    // One node loses power in the middle of the load.
    let victim = rng.gen_range(0..3);
    let stop = Instant::now() + Duration::from_secs(4);
    let writing = {
        let client = client.clone();
        tokio::spawn(async move { load(&client, "one", stop).await })
    };
    tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2500))).await;
    eprintln!("power cut of node {}", victim + 1);
    c.power_cut(&[victim]);
    let got = writing.await.unwrap();
    restart_all(&mut c, &[victim]).await;
    acked.extend(got);

    // Every node loses power right after the load (their unsynced writes are dropped).
    let stop = Instant::now() + Duration::from_secs(3);
    acked.extend(load(&client, "all", stop).await);
    let stats: Vec<String> = c.mounts.iter().map(|m| m.stats()).collect();
    eprintln!("unsynced before the all-nodes cut: {stats:?}");
    c.power_cut(&[0, 1, 2]);
    restart_all(&mut c, &[0, 1, 2]).await;

    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    let lost = lost(&c, &acked).await;
    eprintln!(
        "{} acknowledged writes checked, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after power cuts (seed {seed}): {lost:?}"
    );
}

// Planted fault: the WAL fsync is skipped on every node, so after an all-nodes power cut
// acknowledged writes are gone, and the check above must see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skipped_wal_fsync_is_caught_by_power_cut() {
    if !lazyfs_or_skip("skipped_wal_fsync_is_caught_by_power_cut") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(3).with_env("KVORUM_FAULT_SKIP_WAL_FSYNC", "1")).await;
    let client = Arc::new(c.client());
    let acked = load(&client, "skip", Instant::now() + Duration::from_secs(3)).await;
    let stats: Vec<String> = c.mounts.iter().map(|m| m.stats()).collect();
    eprintln!("unsynced before the cut: {stats:?}");
    c.power_cut(&[0, 1, 2]);
    for i in 0..3 {
        c.restart(i);
    }
    // The cluster may not even come back (its own metadata was acknowledged unsynced too):
    // that is a detected loss as well.
    let deadline = Instant::now() + RECOVER;
    let mut served = false;
    while Instant::now() < deadline {
        if let Some(s) = c.status().await {
            if c.shows_ready(&s) {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !served {
        eprintln!("DETECTED: the cluster did not serve again within {RECOVER:?} after the cut");
        return;
    }
    let lost = lost(&c, &acked).await;
    eprintln!(
        "DETECTED: {} of {} acknowledged writes lost",
        lost.len(),
        acked.len()
    );
    assert!(
        !lost.is_empty(),
        "the skipped WAL fsync lost no acknowledged write: power cuts would not catch it"
    );
}

// An fsync that fails with EIO stops the node (it never retries and carries on: the page cache
// may have dropped the data), and the other nodes keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_eio_stops_the_node_cluster_serves() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    c.stop(1);
    c.restart_with_env(1, &[("KVORUM_FAULT_FSYNC_EIO", "1")]);
    let client = c.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    // Writes reach node 2's WAL and its first fsync fails.
    let exit = loop {
        let _ = client.put(&format!("eio-{n}"), "x", None).await;
        n += 1;
        if let Some(st) = c.wait_for_exit(1, Duration::from_millis(50)).await {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
    };
    let log = c.nodes[1].log_text();
    assert!(
        exit.is_some_and(|s| !s.success()),
        "node 2 kept running after a failed fsync (exit {exit:?}); logs in {}",
        c.path().display()
    );
    assert!(
        log.contains("FAULT INJECTED") && log.contains("stopped on a fatal error"),
        "node 2's log does not say it stopped on the fsync error; logs in {}",
        c.path().display()
    );
    let client = c.client_of(&[0, 2]);
    client.put("after-eio", "y", None).await.unwrap();
    assert_eq!(client.get("after-eio", false).await.unwrap().value, "y");
}

/// Rounds of [`read_right_after_an_all_nodes_cut_sees_the_last_ack`].
const STALE_READ_ROUNDS: usize = 8;
/// Acknowledged puts of one key before each all-nodes cut.
const PUTS_BEFORE_CUT: usize = 10;

// Every node loses power right after a put is acknowledged (nothing else runs); after the
// restart, the first read of the key must return that put's value. A leader that came back in
// its old term (its vote for itself was committed) would know only the commit index it had
// synced: the last commit (and the apply the put's answer came from) is not synced by anything
// after it, so answering reads by that index served the previous value (11 of 54 rounds) until
// restarted nodes read their vote back uncommitted (they are elected again first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_right_after_an_all_nodes_cut_sees_the_last_ack() {
    if !lazyfs_or_skip("read_right_after_an_all_nodes_cut_sees_the_last_ack") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(3)).await;
    let client = c.client();
    let mut stale = Vec::new();
    for round in 0..STALE_READ_ROUNDS {
        let key = format!("r{round}");
        let mut last = String::new();
        for n in 0..PUTS_BEFORE_CUT {
            last = format!("v{n}");
            let deadline = Instant::now() + RECOVER;
            while let Err(e) = client.put(&key, &last, None).await {
                assert!(Instant::now() < deadline, "put {key}={last}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        c.power_cut(&[0, 1, 2]);
        for i in 0..3 {
            c.restart(i);
        }
        // Read as soon as any node answers (not after the cluster looks ready).
        let deadline = Instant::now() + RECOVER;
        let got = loop {
            match client.get(&key, false).await {
                Ok(g) => break Some(g.value),
                Err(ClientError::NotFound) => break None,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "reading {key} after the cut: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        c.wait_ready(RECOVER).await;
        eprintln!("round {round}: acked {last:?}, first read after the cut {got:?}");
        if got.as_deref() != Some(last.as_str()) {
            stale.push(format!("round {round}: acked {last:?}, read {got:?}"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale reads right after all-nodes power cuts: {stale:?}"
    );
}
