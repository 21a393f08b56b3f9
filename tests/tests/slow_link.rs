//! Large values over a slow link: a 3-node cluster runs in a network namespace of its own whose
//! loopback is rate-limited with `tc` (token bucket filter), so replication, read-index rounds
//! and client traffic share a real, narrow link. openraft 0.9 gives an append RPC one heartbeat
//! interval to complete; an RPC too big for that window times out, is retried bigger, and
//! replication stalls for good. The transport bounds each append RPC by bytes and the heartbeat
//! is long enough for one bounded RPC, so replication keeps up and reads keep answering.
//!
//! Needs root, `ip` and `tc` (iproute2). Without them the test fails, unless
//! `KVORUM_ALLOW_SKIP=1`, which skips it with a message.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_client::ClientError;
use kvorum_tests::{direct_client, kvnode_bin, Cluster, ClusterOptions};

/// Rate of the namespace's loopback: every byte between nodes and clients crosses it once.
const LINK_RATE: &str = "400mbit";
/// Size of every value written: the default largest value.
const VALUE_BYTES: usize = 1 << 20;
/// Concurrent writers of large values.
const WRITERS: usize = 3;
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(15);
/// Fewest acknowledged large writes the load must reach (the link carries ~50 MB/s, each write
/// crosses it three times: client to leader, leader to each follower).
const MIN_WRITES: usize = 15;

/// Runs `cmd args` and panics with its output when it fails.
fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Whether this process can create namespaces and shape traffic; else why not.
fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("`{tool}` not found (Debian package iproute2)"));
        }
    }
    None
}

#[test]
fn large_values_replicate_over_a_slow_link() {
    if let Some(why) = unavailable() {
        if std::env::var("KVORUM_ALLOW_SKIP").is_ok_and(|v| v == "1") {
            println!("SKIPPED large_values_replicate_over_a_slow_link: {why}");
            return;
        }
        panic!("large_values_replicate_over_a_slow_link cannot run: {why} (KVORUM_ALLOW_SKIP=1 skips it)");
    }
    let ns = Netns(format!("kvorum-slow-{}", std::process::id()));
    run("ip", &["netns", "add", &ns.0]);
    run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
    run(
        "tc",
        &[
            "-n", &ns.0, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", LINK_RATE, "burst",
            "256kb", "latency", "200ms",
        ],
    );
    // Enter the namespace on this thread before the runtime starts: its worker threads and the
    // node processes they spawn inherit it; other tests' threads are not affected.
    let f = std::fs::File::open(format!("/var/run/netns/{}", ns.0)).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(load_over_slow_link());
}

async fn load_over_slow_link() {
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    let value = "v".repeat(VALUE_BYTES);
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = c.client();
        let (value, done, written) = (value.clone(), done.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                match client.put(&format!("big-{w}-{i}"), &value, None).await {
                    Ok(_) => {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                i += 1;
            }
            errors
        }));
    }
    // A reader of a small key through each node, with no retries: a read-index round that times
    // out on the busy link shows up as a 503.
    c.client().put("small", "s", None).await.unwrap();
    let readers: Vec<_> = (0..3)
        .map(|i| direct_client(c.nodes[i].addr, Duration::from_secs(5), Duration::ZERO))
        .collect();
    let started = Instant::now();
    let mut reads = 0usize;
    let mut unavailable = Vec::new();
    while started.elapsed() < LOAD {
        for r in &readers {
            match r.get("small", false).await {
                Ok(v) => {
                    assert_eq!(v.value, "s");
                    reads += 1;
                }
                Err(e @ ClientError::Unavailable(_)) => unavailable.push(e.to_string()),
                Err(e @ ClientError::Api { status: 503, .. }) => unavailable.push(e.to_string()),
                Err(e) => panic!("read failed: {e}; logs in {}", c.path().display()),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut write_errors = Vec::new();
    for w in writers {
        write_errors.extend(w.await.unwrap());
    }
    let written = written.load(Ordering::Relaxed);
    eprintln!(
        "slow link {LINK_RATE}: {written} writes of {VALUE_BYTES} bytes acknowledged, {} failed; \
         {reads} reads, {} unavailable",
        write_errors.len(),
        unavailable.len()
    );
    assert!(
        unavailable.is_empty(),
        "reads answered unavailable on a slow link: {:?}; logs in {}",
        &unavailable[..unavailable.len().min(5)],
        c.path().display()
    );
    assert!(
        written >= MIN_WRITES && write_errors.is_empty(),
        "replication did not keep up: {written} writes acknowledged in {LOAD:?}, errors: {:?}; \
         logs in {}",
        &write_errors[..write_errors.len().min(5)],
        c.path().display()
    );
    // Every replica caught up: the last writes are readable from each node's local state.
    let last: Vec<String> = (0..WRITERS).map(|w| format!("big-{w}-0")).collect();
    for i in 0..3 {
        let local = direct_client(c.nodes[i].addr, Duration::from_secs(5), Duration::ZERO);
        c.wait_until(
            Duration::from_secs(20),
            "every replica holding the writes",
            || {
                let (local, last) = (&local, &last);
                async move {
                    for k in last {
                        if local.get(k, true).await.map(|v| v.value.len()).ok() != Some(VALUE_BYTES)
                        {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
    }
}
