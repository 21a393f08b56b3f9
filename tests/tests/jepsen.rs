//! The short Jepsen-style suite: every nemesis alone and mixed on 6 nodes with K=3 (two data
//! groups, keys in both), each history checked for linearizability, and proof that the suite
//! catches an injected stale-read fault.
//! `KVORUM_JEPSEN_LONG=1` makes each run 5 minutes; `KVORUM_JEPSEN_SEED` replays a schedule.

#![allow(clippy::unwrap_used)]

use kvorum_tests::jepsen::{self, JepsenOptions};
use kvorum_tests::kvnode_bin;
use kvorum_tests::nemesis::{Nemesis, Partitioner};

/// Runs are serialized: each wants the machine's cores for itself, and partitions use the same
/// loopback addresses.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether partitions can be done here; prints why not, so a skip is never silent.
fn partitions_available(test: &str) -> bool {
    match Partitioner::new() {
        Ok(_) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

async fn assert_linearizable(name: &str, nemeses: &[Nemesis]) {
    let _guard = ONE_AT_A_TIME.lock().await;
    let out = jepsen::run(JepsenOptions::short(kvnode_bin!(), name, nemeses)).await;
    assert!(
        out.faults > 0 || nemeses.is_empty(),
        "no fault was injected"
    );
    assert!(out.ops > 100, "only {} operations ran", out.ops);
    assert!(
        out.linearizable(),
        "{name}: {:?}\n{}\nartifacts: {}",
        out.report.verdict,
        out.report.to_text(),
        out.dir.display()
    );
}

// SIGKILL and restart of random nodes under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_kill_is_linearizable() {
    assert_linearizable("kill", &[Nemesis::Kill]).await;
}

// SIGSTOP/SIGCONT of random nodes under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_pause_is_linearizable() {
    assert_linearizable("pause", &[Nemesis::Pause]).await;
}

// Network partitions (random halves, isolated leader, majority ring) with nftables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_partition_is_linearizable() {
    if !partitions_available("jepsen_partition_is_linearizable") {
        return;
    }
    assert_linearizable("partition", &[Nemesis::Partition]).await;
}

// All nemeses mixed on one schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_mixed_is_linearizable() {
    let mut nemeses = vec![Nemesis::Kill, Nemesis::Pause];
    if partitions_available("the partition part of jepsen_mixed_is_linearizable") {
        nemeses.push(Nemesis::Partition);
    }
    assert_linearizable("mixed", &nemeses).await;
}

// The suite can fail: with reads served from local state without read index, a partitioned or
// restarted replica answers stale values, and the checker must call the history not
// linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_catches_stale_reads_fault() {
    let _guard = ONE_AT_A_TIME.lock().await;
    let nemesis =
        if partitions_available("partitions in jepsen_catches_stale_reads_fault (using kill)") {
            Nemesis::Partition
        } else {
            Nemesis::Kill
        };
    let mut verdicts = Vec::new();
    for attempt in 0..3 {
        let mut opts =
            JepsenOptions::short(kvnode_bin!(), &format!("stale-reads-{attempt}"), &[nemesis]);
        opts.stale_reads = true;
        // One group of 3: every node hosts every key, so every read a worker sends is served
        // locally by the faulty read path (on 6 nodes half of them would be forwarded).
        opts.nodes = 3;
        opts.keys = 3;
        opts.clients = 8;
        opts.duration = std::time::Duration::from_secs(15);
        let out = jepsen::run(opts).await;
        if matches!(out.report.verdict, kvorum_checker::Verdict::NotLinearizable) {
            eprintln!("caught the injected fault:\n{}", out.report.to_text());
            assert!(out.dir.join("report.html").exists());
            return;
        }
        verdicts.push(format!("{:?} ({})", out.report.verdict, out.dir.display()));
    }
    panic!("the stale-reads fault went unnoticed in 3 runs: {verdicts:?}");
}
