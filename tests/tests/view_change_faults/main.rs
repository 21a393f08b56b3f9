//! Faults in the middle of a view change, each under the Jepsen-style workload with its history
//! checked for linearizability: 7 nodes with K=2 (3 groups of 2 and spare 7) get node 8, which
//! forms group 4 with the spare, and 1024 slots move to it. Every node has the test-only fault
//! `KVORUM_FAULT_MOVE_HOLD=<point>:<ms>` (every move batch waits at `point`, and the metadata
//! leader logs `FAULT INJECTED: move held at <point>`), which gives the window the fault hits:
//! (a) the metadata leader killed during a copy, (b) the source group's leader killed after
//! Freeze, (c) the destination group's leader killed before Activate, (d) the source group cut
//! off from every other node while its batch is frozen, healed later; and so on for the other
//! faults below. The deposed-metadata-leader run has its own shape: 8 nodes K=3 get node 9, with
//! the copy-chunk delay `KVORUM_FAULT_COPY_CHUNK_DELAY_MS` so that a copy spans seconds.
//!
//! Each run asserts: the change ends `done`, `cancelled` or `failed` within [`CHANGE_WITHIN`]
//! (never stuck), the map is valid afterwards (every slot owned by one existing group, no view
//! change left), and the history — the final linearizable read of every key included, so every
//! acknowledged write is readable — is linearizable. Half of the keys lie in the first batch of
//! a move (frozen while held), the others in slots that stay.
//! `KVORUM_JEPSEN_SEED=<seed>` replays a run's operations.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_client::TaskState;
use kvorum_router::{ClusterMap, Step, ViewChange};
use kvorum_tests::jepsen::{self, keys_in_slots, Ctx, JepsenOptions, Scenario};
use kvorum_tests::nemesis::{partitions_available, Partitioner};
use kvorum_tests::{direct_client, kvnode_bin, ONE_AT_A_TIME};

mod deposed;
use deposed::{isolate_metadata_leader, preload};

/// How long every move batch is held at the fault's point.
const HOLD_MS: u64 = 3000;
/// Slots per move batch (`KVORUM_FAULT_MOVE_BATCH_SLOTS`): the change moves its 1024 slots in
/// 3 batches (341 or 342 from each of 3 groups), so that the holds add up to seconds, not
/// minutes (64 batches of the default 16 slots).
const BATCH_SLOTS: u16 = 512;
/// How long a killed node stays down, or a partition stays.
const FAULT_FOR: Duration = Duration::from_secs(3);
/// Longest the change may take to end: above the metadata leader's 120 s step failure limit,
/// so that a change that fails is seen failing rather than taken for stuck.
const CHANGE_WITHIN: Duration = Duration::from_secs(150);
/// Longest wait for the first hold after the change starts (the new group is created first).
const HOLD_WITHIN: Duration = Duration::from_secs(60);

/// Longest wait for a node's map to show the change's end.
const MAP_WITHIN: Duration = Duration::from_secs(20);

/// Where the fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillMetadataLeader,
    KillSourceLeader,
    KillDestinationLeader,
    IsolateSource,
    /// The destination group's leader killed after Freeze (K=2: the group has no quorum), and
    /// the change cancelled while it is down: the batch must roll back (unfreeze at the source).
    CancelWithDestinationDown,
    /// The destination group's leader killed after Freeze and kept down longer than the step
    /// failure limit: the batch rolls back on its own and the change ends `failed`.
    DestinationDownBeforeRelease,
    /// The destination group's leader killed after the source released the batch and kept down
    /// longer than the step failure limit: past Release a batch only rolls forward, so the
    /// change waits for the destination and ends `done`.
    DestinationDownPastRelease,
    /// The sequence, on 8 nodes K=3 (groups {1,2,3} = the config voters, {4,5,6}, spares
    /// 7 and 8) getting node 9, which forms group 3: the metadata leader, holding the frozen
    /// batch of group 2 (no config voter in it) after its copy, is cut off from the other config
    /// voters only; a new metadata leader resumes the batch, copies it (slowed to seconds by the
    /// copy-chunk delay) and is held in turn; the leaders of the source and destination groups
    /// are killed and restarted, so that their successors know only the deposed leader's map;
    /// the cut heals after the new leader's hold. Every preloaded key of the moving slots must
    /// read back.
    IsolateMetadataLeader,
}

impl Fault {
    fn point(self) -> &'static str {
        match self {
            Fault::KillDestinationLeader | Fault::DestinationDownPastRelease => "before_activate",
            _ => "after_freeze",
        }
    }

    /// How long every batch is held at [`Fault::point`].
    fn hold_ms(self) -> u64 {
        match self {
            // Long enough for a new metadata leader to be elected, resume the batch and be
            // held in turn while the deposed one is still held.
            Fault::IsolateMetadataLeader => ISOLATED_HOLD_MS,
            _ => HOLD_MS,
        }
    }

    /// Nodes and K of the run: 8 nodes K=3 for the deposed-leader sequence (groups of 3, so a
    /// killed leader has a successor at once), 7 nodes K=2 otherwise.
    fn shape(self) -> (usize, usize) {
        match self {
            Fault::IsolateMetadataLeader => (8, 3),
            _ => (7, 2),
        }
    }

    /// Slots per move batch: one batch per move for the deposed-leader sequence (the batch it
    /// attacks holds all the preloaded data), [`BATCH_SLOTS`] otherwise.
    fn batch_slots(self) -> u16 {
        match self {
            Fault::IsolateMetadataLeader => 4096,
            _ => BATCH_SLOTS,
        }
    }

    /// Faults that outlast the metadata leader's step failure limit, shortened for them to
    /// [`STEP_FAIL_LIMIT_MS`].
    fn outlasts_the_step_limit(self) -> bool {
        matches!(
            self,
            Fault::DestinationDownBeforeRelease | Fault::DestinationDownPastRelease
        )
    }
}

/// How long every batch is held in the run that isolates the metadata leader.
const ISOLATED_HOLD_MS: u64 = 10_000;
/// The copy-chunk delay (`KVORUM_FAULT_COPY_CHUNK_DELAY_MS`) of that run: the preloaded 1.6 MB
/// are 7 chunks of 256 KB, so a copy takes about 9 s. The new metadata leader (elected about
/// 3 s into the deposed one's hold) is held after its copy, 2 s after the deposed one's hold
/// ended; the groups' leaders are killed then, so the deposed leader's steps fail until their
/// successors are elected, and it starts its copy afresh (wiping the destination's): the new
/// leader wakes in the middle of that copy.
const COPY_CHUNK_DELAY_MS: u64 = 1300;
/// When the cut heals in that run, counted from the cut: after the new leader's hold.
const ISOLATED_CUT_FOR: Duration = Duration::from_secs(35);
/// Keys (of [`PRELOAD_VALUE_BYTES`] each) written into the first batch's slots of every move
/// before the change in the run that isolates the metadata leader, so that a copy takes a
/// while; each must read back afterwards.
const PRELOAD_KEYS: usize = 400;
const PRELOAD_VALUE_BYTES: usize = 4096;

/// The step failure limit (`KVORUM_FAULT_STEP_FAIL_LIMIT_MS`) of the runs whose fault outlasts
/// it; the node is kept down for [`LONG_FAULT_FOR`].
const STEP_FAIL_LIMIT_MS: u64 = 3000;
/// How long a node stays down in the runs that outlast the step failure limit.
const LONG_FAULT_FOR: Duration = Duration::from_secs(8);

/// The run's keys: for every move of the first planned change (adding a node), 2 keys in its
/// first batch's slots and 1 in its other slots if it has more than one batch, plus 2 in slots
/// that stay.
fn chosen_keys(map: &ClusterMap, batch_slots: u16) -> Vec<String> {
    let change = ViewChange::AddNode {
        addr: "127.0.0.250:1".into(),
    };
    let plan = kvorum_router::plan(map, &change).expect("adding a node is planned");
    let mut keys = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let Step::MoveSlots { ranges, .. } = step else {
            continue;
        };
        let slots: Vec<u16> = ranges.iter().flat_map(|(a, b)| *a..=*b).collect();
        let (first, rest) = slots.split_at(usize::from(batch_slots).min(slots.len()));
        keys.extend(keys_in_slots(&format!("f{i}-"), 2, |s| first.contains(&s)));
        if !rest.is_empty() {
            keys.extend(keys_in_slots(&format!("r{i}-"), 1, |s| rest.contains(&s)));
        }
    }
    keys.extend(keys_in_slots("stay-", 2, |s| {
        map.slots.get(usize::from(s)) == plan.target.slots.get(usize::from(s))
    }));
    keys
}

/// Times `FAULT INJECTED: move held at <point>` appears in each initial node's log.
async fn holds(ctx: &Ctx, point: &str) -> Vec<usize> {
    log_counts(ctx, &format!("FAULT INJECTED: move held at {point}")).await
}

/// Times `mark` appears in each initial node's log.
async fn log_counts(ctx: &Ctx, mark: &str) -> Vec<usize> {
    let c = ctx.cluster.lock().await;
    c.nodes
        .iter()
        .map(|n| n.log_text().matches(mark).count())
        .collect()
}

/// The leader of `group` as the cluster's status shows it (from its replicas' heartbeats): asked
/// again for up to `within` if the answering node has not heard one yet (the holds last seconds).
async fn group_leader(ctx: &Ctx, group: kvorum_router::GroupId, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    loop {
        let status = ctx.members.admin().status().await;
        let leader = status.ok().and_then(|s| {
            s.groups
                .iter()
                .find(|g| g.id == group)
                .and_then(|g| g.leader)
        });
        if leader.is_some() || Instant::now() >= deadline {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scenario: add a node, wait for the first held batch, inject `fault`, heal it, wait for
/// the change to end, and check the map. Returns a summary.
async fn scenario(ctx: Arc<Ctx>, fault: Fault) -> String {
    let point = fault.point();
    let preloaded = if fault == Fault::IsolateMetadataLeader {
        preload(&ctx, fault.batch_slots()).await
    } else {
        Vec::new()
    };
    let addr = ctx.start_joiner().await.expect("joiner up");
    let mut before = holds(&ctx, point).await;
    let p = ctx
        .members
        .admin()
        .add_node(&addr.to_string())
        .await
        .expect("add accepted");
    ctx.log(&format!("fault test: add {addr}: task {} started", p.id));

    // The first hold (for the deposed-leader sequence: the first of a batch whose source has no
    // config voter): its log line names the metadata leader.
    let (held_by, map, batch) = loop {
        let deadline = Instant::now() + HOLD_WITHIN;
        let held_by = loop {
            let now = holds(&ctx, point).await;
            if let Some(i) = (0..now.len()).find(|i| now[*i] > before[*i]) {
                break i;
            }
            assert!(
                Instant::now() < deadline,
                "no batch held at {point} within {HOLD_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The batch in flight, from the metadata leader's own map (another node's may lag).
        let leader = ctx.cluster.lock().await.nodes[held_by].addr;
        let leader = direct_client(leader, Duration::from_secs(2), Duration::ZERO);
        let deadline = Instant::now() + Duration::from_millis(fault.hold_ms());
        let (map, batch) = loop {
            if let Ok((m, _)) = leader.map().await {
                if let Some(b) = m.view_change().and_then(|(_, v)| v.batch.clone()) {
                    break (m, b);
                }
            }
            assert!(Instant::now() < deadline, "no batch in flight while held");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let voters_in_source = map
            .members_of(batch.from)
            .is_some_and(|m| m.iter().any(|n| map.config_voters.contains(n)));
        if fault == Fault::IsolateMetadataLeader && voters_in_source {
            ctx.log(&format!(
                "fault test: batch from group {} (config voters in it) held; waiting for the next",
                batch.from.0
            ));
            before = holds(&ctx, point).await;
            continue;
        }
        break (held_by, map, batch);
    };
    let moved_at_fault = map.view_change().map_or(0, |(_, v)| v.slots_moved);
    ctx.log(&format!(
        "fault test: batch {:?} from group {} to group {} held at {point} by node {}",
        batch.slots,
        batch.from.0,
        batch.to.0,
        held_by + 1
    ));
    let victim: Option<String> = match fault {
        Fault::KillMetadataLeader => Some(ctx.cluster.lock().await.nodes[held_by].addr.to_string()),
        Fault::KillSourceLeader
        | Fault::KillDestinationLeader
        | Fault::CancelWithDestinationDown
        | Fault::DestinationDownBeforeRelease
        | Fault::DestinationDownPastRelease => {
            let group = if fault == Fault::KillSourceLeader {
                batch.from
            } else {
                batch.to
            };
            let leader = group_leader(&ctx, group, Duration::from_millis(1500))
                .await
                .unwrap_or_else(|| panic!("no leader of group {group} known within 1.5 s"));
            Some(
                map.addr(leader)
                    .unwrap_or_else(|| panic!("no address of node {leader}"))
                    .to_string(),
            )
        }
        Fault::IsolateSource | Fault::IsolateMetadataLeader => None,
    };
    match victim {
        Some(a) if fault == Fault::CancelWithDestinationDown => {
            ctx.log(&format!("fault test: {fault:?}: kill {a}"));
            assert!(ctx.kill_addr(&a).await, "no process at {a}");
            let c = ctx.members.admin().cancel_task(p.id).await;
            ctx.log(&format!("fault test: cancel task {}: {c:?}", p.id));
            let done = ctx
                .wait_task(p.id, CHANGE_WITHIN)
                .await
                .unwrap_or_else(|| panic!("task {} not final within {CHANGE_WITHIN:?}", p.id));
            ctx.log(&format!(
                "fault test: task {} ended {:?} with the destination down",
                done.id, done.state
            ));
            assert_eq!(done.state, TaskState::Cancelled, "{done:?}");
            ctx.log(&format!("fault test: restart {a}"));
            ctx.restart_addr(&a).await;
        }
        Some(a) => {
            ctx.log(&format!("fault test: {fault:?}: kill {a}"));
            assert!(ctx.kill_addr(&a).await, "no process at {a}");
            let down = if fault.outlasts_the_step_limit() {
                LONG_FAULT_FOR
            } else {
                FAULT_FOR
            };
            tokio::time::sleep(down).await;
            ctx.log(&format!("fault test: restart {a}"));
            ctx.restart_addr(&a).await;
        }
        None if fault == Fault::IsolateMetadataLeader => {
            isolate_metadata_leader(&ctx, &map, &batch, held_by, point).await;
        }
        None => {
            let members = map.members_of(batch.from).cloned().unwrap_or_default();
            let nodes: Vec<(u64, IpAddr)> = map
                .nodes
                .iter()
                .filter(|(id, _)| map.is_active(**id))
                .filter_map(|(id, n)| {
                    Some((*id, n.addr.parse::<std::net::SocketAddr>().ok()?.ip()))
                })
                .collect();
            let ips: Vec<IpAddr> = nodes.iter().map(|(_, ip)| *ip).collect();
            let inside: Vec<bool> = nodes.iter().map(|(id, _)| members.contains(id)).collect();
            let p = Partitioner::new().expect("partitions (checked by the test)");
            ctx.log(&format!(
                "fault test: isolate group {} ({members:?}) from {:?}",
                batch.from.0,
                nodes.iter().map(|(id, _)| *id).collect::<Vec<_>>()
            ));
            p.cut(&ips, |a, b| inside[a] == inside[b]).expect("nft");
            tokio::time::sleep(FAULT_FOR * 2).await;
            p.heal().expect("nft heal");
            ctx.log("fault test: healed");
        }
    }

    let done = ctx
        .wait_task(p.id, CHANGE_WITHIN)
        .await
        .unwrap_or_else(|| panic!("task {} not final within {CHANGE_WITHIN:?}", p.id));
    ctx.log(&format!(
        "fault test: task {} ended {:?}: {}/{} slots ({} at the fault){}",
        done.id,
        done.state,
        done.slots_moved,
        done.slots_total,
        moved_at_fault,
        done.error
            .as_ref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default()
    ));
    assert!(
        matches!(
            done.state,
            TaskState::Done | TaskState::Cancelled | TaskState::Failed
        ),
        "{done:?}"
    );

    // The map is valid: every slot owned by one existing group, no view change left (asked of
    // the present nodes until one's map has caught up with the task's end).
    let deadline = Instant::now() + MAP_WITHIN;
    let map = loop {
        if let Some(m) = ctx.map().await {
            if m.view_change().is_none() || Instant::now() >= deadline {
                break m;
            }
        }
        assert!(Instant::now() < deadline, "no map from any node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    map.validate()
        .unwrap_or_else(|e| panic!("invalid map after the change: {e}: {}", map.summary()));
    assert!(
        map.slots.iter().all(|g| map.groups.contains_key(g)),
        "a slot owned by no group: {}",
        map.summary()
    );
    assert!(map.view_change().is_none(), "{}", map.summary());
    if done.state == TaskState::Done {
        let (nodes, k) = fault.shape();
        assert_eq!(map.groups.len(), (nodes + 1) / k, "{}", map.summary());
    }
    match fault {
        Fault::DestinationDownBeforeRelease => {
            assert_eq!(done.state, TaskState::Failed, "{done:?}")
        }
        Fault::DestinationDownPastRelease => assert_eq!(done.state, TaskState::Done, "{done:?}"),
        _ => {}
    }
    if matches!(
        fault,
        Fault::CancelWithDestinationDown | Fault::DestinationDownBeforeRelease
    ) {
        // Rolled back: the source still owns the batch's slots.
        for (a, b) in &batch.slots {
            for s in *a..=*b {
                assert_eq!(
                    map.slots[usize::from(s)],
                    batch.from,
                    "slot {s} after the rollback: {}",
                    map.summary()
                );
            }
        }
    }
    // Every preloaded key reads back with its value (the linearizable final reads of the
    // workload's keys are checked with the history).
    let client = ctx.members.admin();
    let mut lost = Vec::new();
    for (k, v) in &preloaded {
        match client.get(k, false).await {
            Ok(r) if &r.value == v => {}
            other => lost.push(format!("{k}: {:?}", other.map(|r| r.value.len()))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} preloaded keys lost after the change: {:?}",
        lost.len(),
        preloaded.len(),
        &lost[..lost.len().min(10)]
    );
    format!(
        "{fault:?}: task ended {:?} ({}/{} slots); map {}",
        done.state,
        done.slots_moved,
        done.slots_total,
        map.summary()
    )
}

async fn run_fault(name: &str, fault: Fault) {
    let _guard = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut opts = JepsenOptions::short(kvnode_bin!(), name, &[]);
    (opts.nodes, opts.k) = fault.shape();
    opts.duration = Duration::from_secs(15);
    opts.env = vec![
        (
            "KVORUM_FAULT_MOVE_HOLD".into(),
            format!("{}:{}", fault.point(), fault.hold_ms()),
        ),
        (
            "KVORUM_FAULT_MOVE_BATCH_SLOTS".into(),
            fault.batch_slots().to_string(),
        ),
    ];
    if fault == Fault::IsolateMetadataLeader {
        opts.env.push((
            "KVORUM_FAULT_COPY_CHUNK_DELAY_MS".into(),
            COPY_CHUNK_DELAY_MS.to_string(),
        ));
    }
    if fault.outlasts_the_step_limit() {
        opts.env.push((
            "KVORUM_FAULT_STEP_FAIL_LIMIT_MS".into(),
            STEP_FAIL_LIMIT_MS.to_string(),
        ));
    }
    let map = ClusterMap::initial(
        &(1..=opts.nodes)
            .map(|i| format!("127.0.0.{i}:1"))
            .collect::<Vec<_>>(),
        opts.k,
    )
    .expect("map");
    // The planner's choice does not depend on ports: pick keys on a map of the same shape.
    opts.chosen_keys = Some(chosen_keys(&map, fault.batch_slots()));
    let s: Scenario = Box::new(move |ctx| Box::pin(scenario(ctx, fault)));
    let out = jepsen::run_with(opts, Some(s)).await;
    eprintln!(
        "{name}: {} operations in {:?}; {}; artifacts {}",
        out.ops,
        started.elapsed(),
        out.scenario.as_deref().unwrap_or(""),
        out.dir.display()
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

// (a) The metadata leader killed while a batch is held after Freeze (before its copy): the next
// metadata leader resumes the task at the batch in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_leader_killed_during_a_copy() {
    run_fault("vc-fault-meta-leader", Fault::KillMetadataLeader).await;
}

// (b) The source group's leader killed after Freeze: the source elects a new leader once the
// node is back (K=2), which still holds the frozen slots; the copy resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_leader_killed_after_freeze() {
    run_fault("vc-fault-source-leader", Fault::KillSourceLeader).await;
}

// (c) The destination group's leader killed after the flip, before Activate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destination_leader_killed_before_activate() {
    run_fault("vc-fault-dest-leader", Fault::KillDestinationLeader).await;
}

// (e) The destination group loses its quorum after Freeze (its leader killed; K=2) and the
// change is cancelled while it is down: the batch rolls back (the source unfreezes its slots
// although the destination cannot drop its copy), and the task ends `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_with_the_destination_down_rolls_back() {
    run_fault(
        "vc-fault-cancel-dest-down",
        Fault::CancelWithDestinationDown,
    )
    .await;
}

// (f) The destination group loses its quorum after Freeze for longer than the step failure
// limit: the batch rolls back on its own (the source unfreezes), and the change ends `failed`
// with the map valid and every key readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destination_down_too_long_before_release_rolls_back() {
    run_fault(
        "vc-fault-dest-down-before-release",
        Fault::DestinationDownBeforeRelease,
    )
    .await;
}

// (g) The destination group loses its quorum after the source released the batch, for longer
// than the step failure limit: the batch cannot roll back any more (the source gave up the
// slots), so the change keeps rolling forward and completes once the destination is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destination_down_too_long_past_release_rolls_forward() {
    run_fault(
        "vc-fault-dest-down-past-release",
        Fault::DestinationDownPastRelease,
    )
    .await;
}

// (h) A deposed metadata leader's steps (8 nodes K=3 getting a ninth): the metadata leader,
// holding the frozen batch of 1.6 MB out of the group without a config voter, is cut off from
// the other config voters only; a new metadata leader resumes the batch, copies it (each chunk
// delayed 1.3 s) and is held in turn; the leaders of the source and destination groups are
// killed and restarted; the cut heals 35 s later. The change completes or rolls back, and every
// preloaded key and every acknowledged write reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deposed_metadata_leader_cannot_complete_a_batch() {
    if !partitions_available("deposed_metadata_leader_cannot_complete_a_batch") {
        return;
    }
    run_fault("vc-fault-isolate-meta", Fault::IsolateMetadataLeader).await;
}

// (d) The source group cut off from every other node while its batch is frozen, then healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_group_partitioned_after_freeze() {
    if !partitions_available("source_group_partitioned_after_freeze") {
        return;
    }
    run_fault("vc-fault-isolate-source", Fault::IsolateSource).await;
}
