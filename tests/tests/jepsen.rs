//! The short Jepsen-style suite: every nemesis alone and mixed (kill, pause, partition,
//! kill-all) on 6 nodes with K=3 (two data groups, keys in both), power loss on lazyfs (5 nodes,
//! K=5: one node, a minority of 2, all five), the membership nemesis on 7 nodes with K=2 alone,
//! with kill and with partition, each history checked for linearizability and each run checked
//! not to be vacuous (see `run_checked`), and proof that the suite catches an injected
//! stale-read fault.
//! `KVORUM_JEPSEN_LONG=1` makes each run 5 minutes; `KVORUM_JEPSEN_SEED` replays a schedule.
//!
//! Partition and power-loss runs need root, nftables and /dev/fuse: without them they FAIL,
//! unless `KVORUM_ALLOW_SKIP=1`, which skips them and prints `SKIPPED …` on stdout.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kvorum_tests::jepsen::{self, JepsenOptions};
use kvorum_tests::mount::lazyfs_available;
use kvorum_tests::nemesis::{available_or_skip, partitions_available, Nemesis};
use kvorum_tests::{kvnode_bin, lazyfs_bin, ONE_AT_A_TIME};

async fn assert_linearizable(name: &str, nemeses: &[Nemesis]) {
    let _guard = ONE_AT_A_TIME.lock().await;
    run_checked(JepsenOptions::short(kvnode_bin!(), name, nemeses)).await;
}

/// Runs `opts` and asserts: faults were injected; the run is not vacuous (every key has at
/// least `MIN_OK_READS_PER_KEY` reads and `MIN_OK_WRITES_PER_KEY` writes completed `ok`, and
/// every final read succeeded); snapshots were built (the run's small snapshot interval), and
/// installed in the kill and power-loss runs; no node stopped on a fatal storage error; no
/// acknowledged write is missing from the final reads; the history is linearizable. The caller
/// holds [`ONE_AT_A_TIME`].
async fn run_checked(opts: JepsenOptions) -> jepsen::Outcome {
    let (name, faulty) = (opts.name.clone(), !opts.nemeses.is_empty());
    let snapshots = opts.snapshot_every.is_some();
    // A single node killed (or cut off power) for seconds comes back far behind its group's
    // kept log, so the kill and power-loss runs must see installs (the power-loss run's one
    // group holds every key, and its first cuts hit one node and a minority). (After a
    // kill-all or an all-nodes power cut nobody is ahead, and a mixed run's one kill may hit a
    // node whose group wrote little meanwhile: not asserted.)
    let installs =
        snapshots && (opts.nemeses == [Nemesis::Kill] || opts.nemeses == [Nemesis::PowerLoss]);
    let out = jepsen::run(opts).await;
    assert!(out.faults > 0 || !faulty, "no fault was injected");
    if let Some(why) = out.vacuous() {
        panic!(
            "{name}: vacuous run: {why}; artifacts {}",
            out.dir.display()
        );
    }
    assert!(
        !snapshots || out.snapshots_built > 0,
        "{name}: no snapshot was built; artifacts {}",
        out.dir.display()
    );
    assert!(
        !installs || out.snapshots_installed > 0,
        "{name}: no snapshot was installed (a node came back from a kill or power cut); \
         artifacts {}",
        out.dir.display()
    );
    assert!(
        out.fatal_stops.is_empty(),
        "{name}: nodes stopped on a fatal error: {:#?}; artifacts {}",
        out.fatal_stops,
        out.dir.display()
    );
    assert!(
        out.lost_acks.is_empty(),
        "{name}: acknowledged writes lost: {:?}; artifacts {}",
        out.lost_acks,
        out.dir.display()
    );
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

// Kill, pause, partition and kill-all mixed on one schedule: each strikes once (the nemeses
// take turns in a seeded order), faults of 5–6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_mixed_is_linearizable() {
    if !partitions_available("jepsen_mixed_is_linearizable") {
        return;
    }
    let _guard = ONE_AT_A_TIME.lock().await;
    let nemeses = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::KillAll,
    ];
    let mut opts = JepsenOptions::short(kvnode_bin!(), "mixed", &nemeses);
    opts.fault_max = Duration::from_secs(6);
    if std::env::var("KVORUM_JEPSEN_LONG").is_err() {
        // Room for every nemesis once at its longest, plus the restarts' and heals' own time:
        // 32 s left a fourth fault out whenever the first three were long (2 of 80 soak runs).
        opts.duration = (opts.quiet + opts.fault_max) * nemeses.len() as u32 + MIXED_SLACK;
    }
    let out = run_checked(opts).await;
    assert!(out.faults >= nemeses.len(), "only {} faults", out.faults);
}

// Every node SIGKILLed at once, then all restarted, three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_kill_all_is_linearizable() {
    assert_linearizable("kill-all", &[Nemesis::KillAll]).await;
}

// Power loss on lazyfs-mounted data directories (unsynced writes dropped), 5 nodes with K=5 (one
// group of 5: a minority is 2): in turn one node, two nodes, all five lose power and restart on
// what they fsynced. Linearizable, and no acknowledged write missing from the final reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_power_loss_is_linearizable() {
    if !available_or_skip("jepsen_power_loss_is_linearizable", lazyfs_available()) {
        return;
    }
    let _guard = ONE_AT_A_TIME.lock().await;
    let mut opts = JepsenOptions::short(kvnode_bin!(), "power-loss", &[Nemesis::PowerLoss]);
    opts.nodes = 5;
    opts.k = 5;
    opts.lazyfs = Some(lazyfs_bin!());
    let out = run_checked(opts).await;
    assert!(
        out.faults >= 3,
        "only {} power cuts (want one node, a minority, all)",
        out.faults
    );
}

// SIGKILL under load on 7 nodes (K=3, node 7 a spare) with failure detection much shorter than a
// kill (heartbeats every 300 ms, suspect 1 s, dead 2 s; a kill lasts 12 s), so the metadata leader
// replaces a killed replica by the spare — learner, then one swap of the dead voter for it —
// while the workload runs; the history stays linearizable. The nemesis only hits nodes 4–6
// (group 2; not config voters), so the first kill always starts a repair and no metadata
// failover delays it. (A node back before the swap keeps its seat, so a kill must outlast
// detection, catch-up and the group leader's 2 s liveness probe; killing the metadata leader
// adds a failover and a fresh health clock, which a kill of this length does not always outlast.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_kill_with_repair_is_linearizable() {
    let _guard = ONE_AT_A_TIME.lock().await;
    let mut opts = JepsenOptions::short(kvnode_bin!(), "kill-repair", &[Nemesis::Kill]);
    opts.nodes = 7;
    opts.targets = Some((3..6).collect());
    // One kill of 12 s: the dead timeout (2 s) plus a new leader for the killed node's group
    // (once 7 s under a loaded CI run: split votes) plus the repair's steps fit in it.
    opts.fault_period = Duration::from_secs(12);
    opts.fault_max = Duration::from_secs(12);
    opts.quiet = Duration::from_secs(8);
    opts.duration = Duration::from_secs(24);
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
    if !partitions_available("jepsen_catches_stale_reads_fault") {
        return;
    }
    let nemesis = Nemesis::Partition;
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
        opts.duration = Duration::from_secs(15);
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

/// Time a short mixed run adds to its faults' worst case, for restarting and healing.
const MIXED_SLACK: Duration = Duration::from_secs(4);

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
    // A change after every 3 s of quiet (kill and partition faults of 3 s).
    opts.quiet = Duration::from_secs(3);
    opts.fault_period = Duration::from_secs(3);
    opts.fault_max = Duration::from_secs(3);
    if std::env::var("KVORUM_JEPSEN_LONG").is_err() {
        opts.duration = Duration::from_secs(25);
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

// View changes while the metadata leader is cut off from the other config voters only (it still
// reaches every data node): a new metadata leader takes the change over, and the deposed one's
// late steps are refused by the groups' fences (and it stops acting once it cannot confirm its
// leadership). Mixed with kills, so group leaders change under both drivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_membership_with_metadata_leader_isolated_is_linearizable() {
    if !partitions_available("jepsen_membership_with_metadata_leader_isolated_is_linearizable") {
        return;
    }
    assert_membership(
        "membership-isolate-meta",
        &[
            Nemesis::Membership,
            Nemesis::IsolateMetadataLeader,
            Nemesis::Kill,
        ],
    )
    .await;
}
