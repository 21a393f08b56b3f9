//! The short Jepsen-style suite: every nemesis alone and mixed on 6 nodes with K=3 (two data
//! groups, keys in both), the membership nemesis on 7 nodes with K=2 alone, with kill and with
//! partition, each history checked for linearizability, and proof that the suite catches an
//! injected stale-read fault.
//! `KVORUM_JEPSEN_LONG=1` makes each run 5 minutes; `KVORUM_JEPSEN_SEED` replays a schedule.

#![allow(clippy::unwrap_used)]

use kvorum_tests::jepsen::{self, JepsenOptions};
use kvorum_tests::nemesis::{Nemesis, Partitioner};
use kvorum_tests::{kvnode_bin, ONE_AT_A_TIME};

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
    run_checked(JepsenOptions::short(kvnode_bin!(), name, nemeses)).await;
}

/// Runs `opts` and asserts faults were injected, enough operations ran, and the history is
/// linearizable. The caller holds [`ONE_AT_A_TIME`].
async fn run_checked(opts: JepsenOptions) -> jepsen::Outcome {
    let (name, faulty) = (opts.name.clone(), !opts.nemeses.is_empty());
    let out = jepsen::run(opts).await;
    assert!(out.faults > 0 || !faulty, "no fault was injected");
    assert!(out.ops > 100, "only {} operations ran", out.ops);
    assert!(
        out.linearizable(),
        "{name}: {:?}\n{}\nartifacts: {}",
        out.report.verdict,
        out.report.to_text(),
        out.dir.display()
    );
    out
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

// SIGKILL under load on 7 nodes (K=3, node 7 a spare) with failure detection much shorter than a
// kill (heartbeats every 300 ms, suspect 1 s, dead 2 s; a kill lasts 8 s), so the metadata server
// replaces a killed replica by the spare — learner, then one swap of the dead voter for it —
// while the workload runs; the history stays linearizable. The nemesis only hits nodes 4–6
// (group 2; not config voters), so the first kill always starts a repair and no metadata
// failover delays it. (A node back before the swap keeps its seat, so a kill must outlast
// detection, catch-up and the group leader's 2 s liveness probe; killing the metadata leader
// adds a failover and a fresh health clock, which an 8 s kill does not always outlast.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_kill_with_repair_is_linearizable() {
    let _guard = ONE_AT_A_TIME.lock().await;
    let mut opts = JepsenOptions::short(kvnode_bin!(), "kill-repair", &[Nemesis::Kill]);
    opts.nodes = 7;
    opts.targets = Some((3..6).collect());
    opts.fault_period = std::time::Duration::from_secs(8);
    opts.env = vec![
        ("KVORUM_NODE_HEARTBEAT_MS".into(), "300".into()),
        ("KVORUM_SUSPECT_AFTER_MS".into(), "1000".into()),
        ("KVORUM_DEAD_AFTER_MS".into(), "2000".into()),
    ];
    let out = run_checked(opts).await;
    let s = &out.final_status;
    let removed: Vec<u64> = s
        .nodes
        .iter()
        .filter(|n| n.state.as_str() == "removed")
        .map(|n| n.id)
        .collect();
    eprintln!(
        "kill-repair: epoch {} after the run; removed nodes {removed:?}; artifacts {}",
        s.epoch,
        out.dir.display()
    );
    assert!(
        !removed.is_empty() && s.epoch > 1,
        "no repair happened during the run: {s:?}"
    );
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

/// Slots per move batch in the membership runs (`KVORUM_FAULT_MOVE_BATCH_SLOTS`).
const MEMBERSHIP_BATCH_SLOTS: u16 = 256;

/// A short membership run: 7 nodes with K=2 (3 groups of 2 and a spare), so that every add of a
/// node creates a group and every removal of a replica without a spare dissolves one, with slots
/// moving each time; 8 keys, half of them in slots the first add moves.
fn membership_opts(name: &str, nemeses: &[Nemesis]) -> JepsenOptions {
    let mut opts = JepsenOptions::short(kvnode_bin!(), name, nemeses);
    opts.nodes = 7;
    opts.k = 2;
    opts.keys = 8;
    // 1024 slots move per change: 4 batches instead of 64 (each batch costs about 1 s of map
    // updates and proposals on a loaded 2-core machine).
    opts.env = vec![(
        "KVORUM_FAULT_MOVE_BATCH_SLOTS".into(),
        MEMBERSHIP_BATCH_SLOTS.to_string(),
    )];
    if std::env::var("KVORUM_JEPSEN_LONG").is_err() {
        opts.duration = std::time::Duration::from_secs(25);
    }
    opts
}

/// Runs a membership run and asserts, besides [`run_checked`]: changes started, none stuck past
/// its deadline, and at least one moved the slot of a run key.
async fn assert_membership(name: &str, nemeses: &[Nemesis]) {
    let _guard = ONE_AT_A_TIME.lock().await;
    let started = std::time::Instant::now();
    let out = run_checked(membership_opts(name, nemeses)).await;
    let m = &out.membership;
    eprintln!(
        "{name}: {m:?} in {:?}; final epoch {}, {} groups, spares {:?}; artifacts {}",
        started.elapsed(),
        out.final_status.epoch,
        out.final_status.groups.len(),
        out.final_status.spares,
        out.dir.display()
    );
    assert!(m.stuck.is_empty(), "{name}: stuck changes {:?}", m.stuck);
    assert!(m.started > 0, "{name}: no view change started: {m:?}");
    assert!(
        m.moved_run_keys > 0,
        "{name}: no change moved a run key's slot: {m:?}; see {}/nemesis.log",
        out.dir.display()
    );
}

// View changes under load: nodes added (with `--join`) and removed — spares, replicas replaced
// by a spare, replicas whose group dissolves — while the workers follow the nodes that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_membership_is_linearizable() {
    assert_membership("membership", &[Nemesis::Membership]).await;
}

// View changes mixed with SIGKILL/restart of nodes not being added or removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_membership_with_kill_is_linearizable() {
    assert_membership("membership-kill", &[Nemesis::Membership, Nemesis::Kill]).await;
}

// View changes mixed with network partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_membership_with_partition_is_linearizable() {
    if !partitions_available("jepsen_membership_with_partition_is_linearizable") {
        return;
    }
    assert_membership(
        "membership-partition",
        &[Nemesis::Membership, Nemesis::Partition],
    )
    .await;
}
