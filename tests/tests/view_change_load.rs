//! Clients through view changes, and the figures of a move: 8 writers and 8 readers run while
//! three nodes join a 6-node K=3 cluster (a third group is created and 1365 slots move to it),
//! and while a 6-node K=2 cluster loses a replica (a group is dissolved) and gets its address
//! back as a new node (a group is created again).
//! No write or read may fail unless its outcome is unknown, no acknowledged write may be lost,
//! and no read may return a value older than one acknowledged before it began.
//!
//! It prints one `MOVE-BENCH` line: the write pause per moved slot as the clients saw it (the
//! longest write latency on the slot during the change; p50/p99/max over the moved slots that
//! were written meanwhile), the pause per batch as the metadata leader measured it (Freeze to
//! Activate, from its log), and the move rate (keys and bytes copied over the change's duration).
//! CI runs it with 4,000 keys of 1 KiB; `KVORUM_MOVE_BENCH_KEYS=200000` gives the figures of
//! docs/benchmarks.md (see there for the command).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_client::{ClientError, TaskState};
use kvorum_router::slot_of;
use kvorum_tests::workload::run_all;
use kvorum_tests::{kvnode_bin, seed, Cluster, ClusterOptions, ONE_AT_A_TIME};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writers and readers running through the change.
const WRITERS: usize = 8;
const READERS: usize = 8;
/// Keys loaded before the change (CI); `KVORUM_MOVE_BENCH_KEYS` overrides.
const DEFAULT_KEYS: usize = 4_000;
/// Keys of the remove-and-add-back run.
const SHRINK_KEYS: usize = 2_000;
/// Bytes of every value.
const VALUE_BYTES: usize = 1024;
/// Longest the three adds may take together.
const CHANGE_WITHIN: Duration = Duration::from_secs(600);

/// The value of write `n` of `key`: `key:n:` padded to [`VALUE_BYTES`].
fn value(key: &str, n: u64) -> String {
    let mut v = format!("{key}:{n}:");
    v.extend(std::iter::repeat_n(
        'x',
        VALUE_BYTES.saturating_sub(v.len()),
    ));
    v
}

/// The write number a value carries.
fn number(v: &str) -> Option<u64> {
    v.split(':').nth(1)?.parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Shared {
    /// Highest acknowledged write number per key.
    acked: BTreeMap<String, u64>,
    /// Highest write number attempted per key (acknowledged or not).
    tried: BTreeMap<String, u64>,
    /// Longest write latency per slot during the change, in ms.
    slot_pause: BTreeMap<u16, u64>,
    writes: u64,
    reads: u64,
    unknown: u64,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_run_through_a_move_without_errors() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("clients_run_through_a_move_without_errors");
    let n_keys: usize = std::env::var("KVORUM_MOVE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KEYS);
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 6, 3)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let keys: Arc<Vec<String>> = Arc::new((0..n_keys).map(|i| format!("mb-{i}")).collect());

    let client = Arc::new(c.client());
    load_keys(&client, &keys).await;
    let load = Load::start(client.clone(), keys.clone(), seed);

    // The change: three joiners; the third forms group 3 and 1365 slots move to it.
    let before = c.status().await.expect("status");
    let changed = Instant::now();
    let mut joiners = Vec::new();
    let mut last = None;
    for ip in ["127.0.0.7", "127.0.0.8", "127.0.0.9"] {
        let j = c.start_joiner(ip).await;
        let p = client
            .add_node(&j.addr.to_string())
            .await
            .unwrap_or_else(|e| panic!("add {}: {e}", j.addr));
        let done = tokio::time::timeout(
            CHANGE_WITHIN,
            client.wait_task(p.id, Duration::from_millis(250), |_| {}),
        )
        .await
        .expect("the change ends in time")
        .expect("task");
        assert_eq!(
            done.state,
            TaskState::Done,
            "{done:?}; logs in {}",
            c.path().display()
        );
        joiners.push(j);
        last = Some(done);
    }
    let change_s = changed.elapsed().as_secs_f64();
    // A little traffic on the new layout, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = load.stop().await;
    let done = last.unwrap();
    let lost = lost_writes(&client, &keys, &s).await;

    let after = c.status().await.expect("status");
    let owner_before: BTreeMap<u16, u64> = before
        .groups
        .iter()
        .flat_map(|g| slots_of(&g.slots).into_iter().map(move |s| (s, g.id.0)))
        .collect();
    let moved: BTreeSet<u16> = after
        .groups
        .iter()
        .flat_map(|g| slots_of(&g.slots).into_iter().map(move |s| (s, g.id.0)))
        .filter(|(s, g)| owner_before.get(s) != Some(g))
        .map(|(s, _)| s)
        .collect();
    let mut client_pause: Vec<u64> = moved
        .iter()
        .filter_map(|slot| s.slot_pause.get(slot).copied())
        .collect();
    client_pause.sort_unstable();
    // The metadata leader's per-batch timings (ms from the Freeze): copied, released, and the
    // pause (to Activate and the flip), one `[copied, released, pause]` per batch moved, in order.
    let names = ["copied_ms", "released_ms", "pause_ms"];
    let batches: Vec<[Option<u64>; 3]> = c
        .nodes
        .iter()
        .flat_map(|n| {
            n.log_text()
                .lines()
                .filter(|l| l.contains("batch moved"))
                .map(|l| {
                    names.map(|name| {
                        l.split(&format!(" {name}="))
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .parse()
                            .ok()
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let field = |name: &str| -> Vec<u64> {
        let i = names
            .iter()
            .position(|n| *n == name)
            .expect("a batch field");
        let mut v: Vec<u64> = batches.iter().filter_map(|b| b[i]).collect();
        v.sort_unstable();
        v
    };
    // Each batch in the order moved (a slow batch stands out).
    let per_batch: Vec<String> = batches
        .iter()
        .map(|b| {
            b.map(|v| v.map_or("?".to_string(), |v| v.to_string()))
                .join("/")
        })
        .collect();
    println!(
        "MOVE-BENCH batches copied/released/pause ms, in order: {}",
        per_batch.join(" ")
    );
    let server_pause = field("pause_ms");
    for name in ["copied_ms", "released_ms"] {
        let v = field(name);
        println!(
            "MOVE-BENCH batch {name} p50={} p99={} max={}",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(0)
        );
    }
    let secs = done
        .finished_ms
        .unwrap_or(done.started_ms)
        .saturating_sub(done.started_ms) as f64
        / 1000.0;
    println!(
        "MOVE-BENCH keys={n_keys} value_bytes={VALUE_BYTES} slots_moved={} keys_moved={} \
         bytes_moved={} last_add_s={secs:.1} three_adds_s={change_s:.1} rate_keys_s={:.0} \
         rate_mb_s={:.2} client_pause_ms_p50={} p99={} max={} (over {} moved slots written \
         during the change) server_pause_ms_p50={} p99={} max={} (over {} batches) writes={} \
         reads={} unknown={} failures={} lost={}",
        done.slots_moved,
        done.keys_moved,
        done.bytes_moved,
        done.keys_moved as f64 / secs.max(0.001),
        done.bytes_moved as f64 / secs.max(0.001) / 1e6,
        percentile(&client_pause, 0.5),
        percentile(&client_pause, 0.99),
        client_pause.last().copied().unwrap_or(0),
        client_pause.len(),
        percentile(&server_pause, 0.5),
        percentile(&server_pause, 0.99),
        server_pause.last().copied().unwrap_or(0),
        server_pause.len(),
        s.writes,
        s.reads,
        s.unknown,
        s.failures.len(),
        lost.len()
    );
    assert_eq!(moved.len(), 1365, "slots that changed owner");
    assert_clean(&s, &lost);
    assert!(!server_pause.is_empty(), "no batch pause logged");
    drop(joiners);
}

// The seed's shrink scenario under the same load: 6 nodes K=2 (3 groups); removing node 6, a
// replica, with no spare dissolves a group (its slots move to the other two, its remaining
// member becomes a spare); node 6's address then comes back as a new node and forms a third
// group again with the spare. No operation fails (unless its outcome is unknown), no
// acknowledged write is lost, no read goes back in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_run_through_a_remove_and_an_add_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("clients_run_through_a_remove_and_an_add_back");
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 6, 2)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let keys: Arc<Vec<String>> = Arc::new((0..SHRINK_KEYS).map(|i| format!("rb-{i}")).collect());
    let client = Arc::new(c.client());
    load_keys(&client, &keys).await;
    let load = Load::start(client.clone(), keys.clone(), seed);

    let wait = |id: u64| {
        let client = client.clone();
        async move {
            tokio::time::timeout(
                CHANGE_WITHIN,
                client.wait_task(id, Duration::from_millis(250), |_| {}),
            )
            .await
            .expect("the change ends in time")
            .expect("task")
        }
    };
    let p = client.remove_node(6).await.expect("remove accepted");
    let removed = wait(p.id).await;
    assert_eq!(
        removed.state,
        TaskState::Done,
        "{removed:?}; logs in {}",
        c.path().display()
    );
    let s = c
        .wait_for_status(Duration::from_secs(20), "2 groups and a spare", |s| {
            s.groups.len() == 2 && s.spares.len() == 1
        })
        .await;
    assert!(s.groups.iter().all(|g| g.slot_count == 2048), "{s:?}");
    assert!(
        c.wait_for_exit(5, Duration::from_secs(15)).await.is_some(),
        "the removed node 6 kept running"
    );
    let ip6 = c.nodes[5].addr.ip().to_string();
    let j = c.start_joiner(&ip6).await;
    let p = client
        .add_node(&j.addr.to_string())
        .await
        .unwrap_or_else(|e| panic!("add {}: {e}", j.addr));
    let added = wait(p.id).await;
    assert_eq!(
        added.state,
        TaskState::Done,
        "{added:?}; logs in {}",
        c.path().display()
    );
    c.wait_for_status(Duration::from_secs(20), "3 groups, no spare", |s| {
        s.groups.len() == 3 && s.spares.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = load.stop().await;
    let lost = lost_writes(&client, &keys, &s).await;
    println!(
        "SHRINK-GROW remove: {} slots in {:.1} s; add back: {} slots in {:.1} s; writes={} \
         reads={} unknown={} failures={} lost={}",
        removed.slots_moved,
        removed
            .finished_ms
            .unwrap_or(0)
            .saturating_sub(removed.started_ms) as f64
            / 1000.0,
        added.slots_moved,
        added
            .finished_ms
            .unwrap_or(0)
            .saturating_sub(added.started_ms) as f64
            / 1000.0,
        s.writes,
        s.reads,
        s.unknown,
        s.failures.len(),
        lost.len()
    );
    assert_clean(&s, &lost);
    drop(j);
}

/// Loads every key with write #0, 32 at a time.
async fn load_keys(client: &Arc<kvorum_client::Client>, keys: &[String]) {
    let loaded = Instant::now();
    let failed = run_all(keys.to_vec(), 32, {
        let client = client.clone();
        move |k| {
            let client = client.clone();
            async move {
                // The same value again is idempotent: retrying an unknown outcome is safe.
                let mut last = String::new();
                for _ in 0..3 {
                    match client.put(&k, &value(&k, 0), None).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(last)
            }
        }
    })
    .await;
    assert!(
        failed.is_empty(),
        "load failed: {:?}",
        &failed[..failed.len().min(3)]
    );
    eprintln!(
        "loaded {} keys of {VALUE_BYTES} B in {:.1} s",
        keys.len(),
        loaded.elapsed().as_secs_f64()
    );
}

/// [`WRITERS`] writers and [`READERS`] readers running until [`Load::stop`].
struct Load {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients on `keys` (every key loaded with write #0).
    fn start(client: Arc<kvorum_client::Client>, keys: Arc<Vec<String>>, seed: u64) -> Load {
        let shared = Arc::new(Mutex::new(Shared {
            acked: keys.iter().map(|k| (k.clone(), 0)).collect(),
            tried: keys.iter().map(|k| (k.clone(), 0)).collect(),
            ..Shared::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..WRITERS {
            let (client, keys, shared, stop) =
                (client.clone(), keys.clone(), shared.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1));
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // Writer w owns the keys i with i % WRITERS == w: its writes of a key are in order.
                    let i = rng.gen_range(0..keys.len() / WRITERS) * WRITERS + w;
                    let Some(key) = keys.get(i) else { continue };
                    let n = {
                        let mut s = shared.lock().unwrap();
                        let t = s.tried.get_mut(key).unwrap();
                        *t += 1;
                        *t
                    };
                    let t0 = Instant::now();
                    let r = client.put(key, &value(key, n), None).await;
                    let ms = t0.elapsed().as_millis() as u64;
                    let mut s = shared.lock().unwrap();
                    s.writes += 1;
                    let slot = slot_of(key.as_bytes()).0;
                    let p = s.slot_pause.entry(slot).or_default();
                    *p = (*p).max(ms);
                    match r {
                        Ok(_) => {
                            let a = s.acked.get_mut(key).unwrap();
                            *a = (*a).max(n);
                        }
                        Err(ClientError::OutcomeUnknown(_)) => s.unknown += 1,
                        Err(e) => s.failures.push(format!("write {key} #{n}: {e}")),
                    }
                }
            }));
        }
        for r in 0..READERS {
            let (client, keys, shared, stop) =
                (client.clone(), keys.clone(), shared.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (0x100 + r as u64));
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[rng.gen_range(0..keys.len())];
                    let floor = shared.lock().unwrap().acked[key];
                    let got = client.get(key, false).await;
                    let mut s = shared.lock().unwrap();
                    s.reads += 1;
                    match got {
                        Ok(v) => match number(&v.value) {
                            Some(n) if n >= floor => {}
                            other => s.failures.push(format!(
                                "read {key}: write #{other:?}, but #{floor} was acknowledged before the read"
                            )),
                        },
                        Err(e) => s.failures.push(format!("read {key}: {e}")),
                    }
                }
            }));
        }
        Load {
            shared,
            stop,
            workers,
        }
    }

    /// Stops the clients and returns what they saw.
    async fn stop(self) -> Shared {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let s = std::mem::take(&mut *self.shared.lock().unwrap());
        s
    }
}

/// Reads every key back, 32 at a time: an error or a value outside [acked, tried] is a lost
/// write (the final value is at least the last acknowledged one and at most the last attempted).
async fn lost_writes(
    client: &Arc<kvorum_client::Client>,
    keys: &[String],
    s: &Shared,
) -> Vec<(String, String)> {
    let bounds: Arc<BTreeMap<String, (u64, u64)>> = Arc::new(
        keys.iter()
            .map(|k| (k.clone(), (s.acked[k], s.tried[k])))
            .collect(),
    );
    run_all(keys.to_vec(), 32, {
        let client = client.clone();
        move |key| {
            let (client, bounds) = (client.clone(), bounds.clone());
            async move {
                let v = client.get(&key, false).await.map_err(|e| e.to_string())?;
                let n = number(&v.value).unwrap_or(0);
                let (acked, tried) = bounds[&key];
                if n < acked || n > tried {
                    return Err(format!("read #{n}, acked #{acked}, tried #{tried}"));
                }
                Ok(())
            }
        }
    })
    .await
}

/// No failed operation (other than outcome unknown), no lost write, and load enough to say so.
fn assert_clean(s: &Shared, lost: &[(String, String)]) {
    assert!(
        s.failures.is_empty(),
        "{} failed operations, e.g. {:?}",
        s.failures.len(),
        &s.failures[..s.failures.len().min(5)]
    );
    assert!(
        lost.is_empty(),
        "lost acknowledged writes: {:?}",
        &lost[..lost.len().min(5)]
    );
    assert!(
        s.writes > 100 && s.reads > 100,
        "too little load: {} writes, {} reads",
        s.writes,
        s.reads
    );
}

/// Slots of a status range list `a-b,c,...`.
fn slots_of(ranges: &str) -> Vec<u16> {
    ranges
        .split(',')
        .filter(|r| !r.is_empty())
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap(),
            None => {
                let a = r.parse::<u16>().unwrap();
                a..=a
            }
        })
        .collect()
}
