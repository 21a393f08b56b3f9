//! View changes (adding or removing a node), run by the metadata leader as a task in the map.
//!
//! Steps of a change: (1) accepted: [`start_change`] plans it ([`kvorum_router::plan_with`],
//! pure) and records the task with the plan's steps, refusing it up front with the planner's code
//! when it cannot complete safely; (2) its driver (the same driver loop as repairs, see
//! `tasks.rs`) claims it and runs the steps in order, recording `next` in the map after each, so
//! a new metadata leader resumes at the step that was running; every step is idempotent;
//! (3) at the end (or on cancel, or on an error it cannot get past) the task leaves `tasks` for
//! `finished`.
//!
//! A `MoveSlots` step moves its slots in batches of at most [`MOVE_BATCH_SLOTS`]; each batch:
//! (a) recorded in the map (`batch`), (b) both groups' slot tables initialized from the map
//! (a no-op after the first time), (c) BeginIncoming at the destination (its old copy of the
//! slots, if any, dropped), (d) Freeze at the source: writes to the slots are refused from here
//! on, (e) copy: chunks read at the source's leader after a read-index round (so after the
//! Freeze) and proposed as Ingest entries at the destination, (f) Release at the source,
//! (g) flip: the map names the destination (new epoch), (h) Activate at the destination: the
//! slots serve again, (i) DropSlots at the source, (j) the batch leaves the map. A resumed batch
//! that was not flipped asks the source's slot table: Released means the copy had completed, so
//! it rolls forward from (g); otherwise it restarts at (b) (every step is idempotent) or, when a
//! cancel was asked for, rolls back (AbortIncoming at the destination, Unfreeze at the source).
//! A flipped batch only rolls forward.
//!
//! Requests to a slot between (d) and (h) are held by the node that received them and retried
//! (see `api.rs`); the pause is one batch's copy plus three proposals and a map change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use kvorum_raftstore::{Command, CommandResult, GroupId, NodeId, SlotState};
use kvorum_router::{
    plan_with, ChangeOutcome, ClusterMap, FinishedChange, GroupInfo, MoveBatch, NodeInfo,
    NodeLifecycle, PlanOptions, Step, Task, TaskKind, TaskStep, ViewChange, ViewChangeTask,
    CONFIG_GROUP, FINISHED_KEPT,
};
use kvorum_wire::{TaskProgress, TaskState};

use crate::error::ApiError;
use crate::node::Node;

use super::admin::{admin, propose, AdminOp, AdminReply};
use super::membership::{membership, MembershipOp};
use super::tasks::{now_ms, Next};
use super::{update_map, Health};

/// Most slots moved in one batch: a request to one of them waits for at most one batch.
pub const MOVE_BATCH_SLOTS: u16 = 16;

/// Slots per move batch: [`MOVE_BATCH_SLOTS`], or (feature `test-faults` only)
/// `KVORUM_FAULT_MOVE_BATCH_SLOTS=<n>`, which lets end-to-end tests of changes under faults move
/// a group's slots in a few batches on a slow machine.
fn batch_slots() -> u16 {
    static SLOTS: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *SLOTS.get_or_init(|| {
        std::env::var("KVORUM_FAULT_MOVE_BATCH_SLOTS")
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|n| cfg!(feature = "test-faults") && *n > 0)
            .unwrap_or(MOVE_BATCH_SLOTS)
    })
}

/// Bytes of slot data per copy chunk (one Ingest entry; at least one record).
const COPY_CHUNK_BYTES: usize = 256 << 10;
/// Longest a step may keep failing before the change stops as failed (a batch not yet released
/// rolls back first).
const STEP_FAIL_LIMIT: Duration = Duration::from_secs(120);

/// Test-only fault (feature `test-faults`): `KVORUM_FAULT_MOVE_HOLD=<point>:<ms>` makes every
/// move batch wait `ms` at `point` (`after_freeze`: the source is frozen, nothing copied yet;
/// `before_activate`: flipped in the map, the destination not yet serving), logging
/// `FAULT INJECTED: move held at <point>` first, so that a test can kill or cut nodes in that
/// window. Nothing in production builds.
async fn hold_at(point: &str, task: u64) {
    static HOLD: std::sync::OnceLock<Option<(String, Duration)>> = std::sync::OnceLock::new();
    let hold = HOLD.get_or_init(|| {
        let v = std::env::var("KVORUM_FAULT_MOVE_HOLD").ok()?;
        let (p, ms) = v.split_once(':')?;
        let ms: u64 = ms.parse().ok()?;
        cfg!(feature = "test-faults").then(|| (p.to_string(), Duration::from_millis(ms)))
    });
    if let Some((p, d)) = hold {
        if p == point {
            tracing::error!(
                task,
                "FAULT INJECTED: move held at {point} for {} ms",
                d.as_millis()
            );
            tokio::time::sleep(*d).await;
        }
    }
}

/// Plans `change` on the current map and records it as a task. Refused, with nothing changed,
/// when a change is already running or the planner refuses it.
pub async fn start_change(state: &Node, change: ViewChange) -> Result<Task, ApiError> {
    let opts = check_change(state, &change)?;
    let mut outcome: Result<Task, ApiError> = Err(ApiError::Internal("not planned".into()));
    update_map(state, "view change accepted", |m| {
        if let Some((t, _)) = m.view_change() {
            outcome = Err(ApiError::ChangeInProgress { task: t.id });
            return;
        }
        let plan = match plan_with(m, &change, &opts) {
            Ok(p) => p,
            Err(e) => {
                outcome = Err(refused(e));
                return;
            }
        };
        let node = match &change {
            ViewChange::RemoveNode { node } => *node,
            ViewChange::AddNode { .. } => plan
                .steps
                .iter()
                .find_map(|s| match s {
                    Step::AddNode { node, .. } => Some(*node),
                    _ => None,
                })
                .unwrap_or(0),
        };
        let task = Task {
            id: m.next_task_id,
            kind: TaskKind::ViewChange(Box::new(ViewChangeTask {
                change: change.clone(),
                node,
                slots_total: plan.moved_slots() as u64,
                steps: plan.steps,
                next: 0,
                batch: None,
                slots_moved: 0,
                keys_moved: 0,
                bytes_moved: 0,
                cancel: false,
            })),
            step: TaskStep::Running,
            started_ms: now_ms(),
            leader_term: 0,
        };
        m.next_task_id += 1;
        m.tasks.push(task.clone());
        outcome = Ok(task);
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the change could not be recorded: {e}")))?;
    let task = outcome?;
    tracing::warn!(task = task.id, change = ?change, "view change started");
    Ok(task)
}

/// Plans `change` on the current map without recording anything: the refusal it would get, or
/// the planner's options to plan it with.
pub fn check_change(state: &Node, change: &ViewChange) -> Result<PlanOptions, ApiError> {
    let map = state.map();
    if let Some((t, _)) = map.view_change() {
        return Err(ApiError::ChangeInProgress { task: t.id });
    }
    let opts = PlanOptions {
        dead: dead_nodes(state, &map),
        max_config_voters: state.cfg.config_voters,
    };
    plan_with(&map, change, &opts).map_err(refused)?;
    Ok(opts)
}

/// Asks the running change `id` to stop safely.
pub async fn cancel_change(state: &Node, id: u64) -> Result<(), ApiError> {
    let map = state.map();
    if !map
        .tasks
        .iter()
        .any(|t| t.id == id && t.kind.view_change().is_some())
    {
        return if map.finished.iter().any(|f| f.id == id) {
            Ok(())
        } else {
            Err(ApiError::UnknownTask(id))
        };
    }
    update_map(state, "view change cancel asked", |m| {
        if let Some(t) = m.tasks.iter_mut().find(|t| t.id == id) {
            if let TaskKind::ViewChange(v) = &mut t.kind {
                v.cancel = true;
            }
        }
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the cancel could not be recorded: {e}")))?;
    Ok(())
}

fn refused(e: kvorum_router::PlanError) -> ApiError {
    if let kvorum_router::PlanError::TaskInProgress { task } = e {
        return ApiError::ChangeInProgress { task };
    }
    ApiError::ChangeRefused {
        code: e.code(),
        message: e.to_string(),
    }
}

/// Nodes the metadata server sees dead now (none when this node is not its leader).
fn dead_nodes(state: &Node, map: &ClusterMap) -> std::collections::BTreeSet<NodeId> {
    state
        .meta
        .health(
            map,
            state.id(),
            state.cfg.suspect_after,
            state.cfg.dead_after,
        )
        .into_iter()
        .filter(|(_, h)| *h == Health::Dead)
        .map(|(n, _)| n)
        .collect()
}

/// The progress of task `id`, running or finished, from `map`.
pub fn progress(map: &ClusterMap, id: u64) -> Option<TaskProgress> {
    if let Some(t) = map.tasks.iter().find(|t| t.id == id) {
        let v = t.kind.view_change()?;
        let state = if v.cancel {
            TaskState::Cancelling
        } else {
            TaskState::Running
        };
        return Some(progress_of(map, id, v, state, t.started_ms, None, None));
    }
    let f = map.finished.iter().find(|f| f.id == id)?;
    let state = match f.outcome {
        ChangeOutcome::Done => TaskState::Done,
        ChangeOutcome::Cancelled => TaskState::Cancelled,
        ChangeOutcome::Failed => TaskState::Failed,
    };
    Some(progress_of(
        map,
        id,
        &f.task,
        state,
        f.started_ms,
        Some(f.finished_ms),
        f.error.clone(),
    ))
}

fn progress_of(
    map: &ClusterMap,
    id: u64,
    v: &ViewChangeTask,
    state: TaskState,
    started_ms: u64,
    finished_ms: Option<u64>,
    error: Option<String>,
) -> TaskProgress {
    let step_name = match v.steps.get(v.next) {
        Some(s) => describe(s),
        None => "finished".into(),
    };
    TaskProgress {
        bytes_moved: v.bytes_moved,
        change: v.change.clone(),
        epoch: map.epoch,
        error,
        finished_ms,
        id,
        keys_moved: v.keys_moved,
        node: (v.node != 0).then_some(v.node),
        slots_moved: v.slots_moved,
        slots_total: v.slots_total,
        started_ms,
        state,
        step: v.next as u64,
        step_name,
        steps: v.steps.len() as u64,
    }
}

/// A step, for people.
pub fn describe(s: &Step) -> String {
    let ranges = |r: &[(u16, u16)]| {
        r.iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}..={b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    match s {
        Step::AddNode { node, addr } => format!("add node {node} at {addr} as a spare"),
        Step::AddLearner { group, node } => {
            format!("add node {node} to group {group} as a learner")
        }
        Step::ReplaceVoter { group, old, new } => {
            format!("replace node {old} by node {new} in group {group}")
        }
        Step::CreateGroup { group, members } => format!("create group {group} on {members:?}"),
        Step::MoveSlots {
            from,
            to,
            ranges: r,
        } => {
            format!("move slots {} from group {from} to group {to}", ranges(r))
        }
        Step::DissolveGroup { group } => format!("dissolve group {group}"),
        Step::SetConfigVoters { voters } => format!("set the config voters to {voters:?}"),
        Step::RemoveNode { node } => format!("mark node {node} removed"),
    }
}

/// The view change of `task`, if it is one.
fn view(task: &Task) -> anyhow::Result<&ViewChangeTask> {
    task.kind
        .view_change()
        .context("the task is not a view change")
}

/// Runs the next step of view change `task` (claimed by this leader). `failing`: since when the
/// current step has kept failing, kept by the driver.
pub(super) async fn drive_change(
    state: &Node,
    map: &ClusterMap,
    task: &Task,
    failing: &mut Option<(usize, Instant)>,
) -> anyhow::Result<Next> {
    let v = view(task)?.clone();
    let id = task.id;
    if v.next >= v.steps.len() {
        finish(state, id, ChangeOutcome::Done, None).await?;
        return Ok(Next::Done);
    }
    if v.cancel && v.batch.is_none() {
        finish(state, id, ChangeOutcome::Cancelled, None).await?;
        return Ok(Next::Done);
    }
    let step = v.steps[v.next].clone();
    let result = run_step(state, map, id, &v, &step).await;
    match result {
        Ok(next) => {
            *failing = None;
            Ok(next)
        }
        Err(e) => {
            let since = match failing {
                Some((at, since)) if *at == v.next => *since,
                _ => {
                    *failing = Some((v.next, Instant::now()));
                    Instant::now()
                }
            };
            if since.elapsed() > STEP_FAIL_LIMIT {
                let reason = format!(
                    "step {} ({}) kept failing: {e:#}",
                    v.next + 1,
                    describe(&step)
                );
                if let Some(b) = &v.batch {
                    if !b.flipped {
                        roll_back(state, id, b).await?;
                    }
                }
                finish(state, id, ChangeOutcome::Failed, Some(reason)).await?;
                return Ok(Next::Done);
            }
            Err(e)
        }
    }
}

/// Records that step `index` of task `id` completed, with `also` applied to the map in the same
/// change.
async fn step_done(
    state: &Node,
    id: u64,
    index: usize,
    what: &str,
    also: impl FnOnce(&mut ClusterMap),
) -> anyhow::Result<()> {
    update_map(state, what, |m| {
        also(m);
        if let Some(v) = task_mut(m, id) {
            if v.next == index {
                v.next += 1;
            }
        }
    })
    .await?;
    Ok(())
}

fn task_mut(m: &mut ClusterMap, id: u64) -> Option<&mut ViewChangeTask> {
    m.tasks
        .iter_mut()
        .find(|t| t.id == id)
        .and_then(|t| match &mut t.kind {
            TaskKind::ViewChange(v) => Some(v.as_mut()),
            TaskKind::ReplaceReplica { .. } => None,
        })
}

async fn run_step(
    state: &Node,
    map: &ClusterMap,
    id: u64,
    v: &ViewChangeTask,
    step: &Step,
) -> anyhow::Result<Next> {
    let index = v.next;
    match step {
        Step::AddNode { node, addr } => {
            let (node, addr) = (*node, addr.clone());
            step_done(state, id, index, "view change: node added", |m| {
                m.nodes.entry(node).or_insert(NodeInfo {
                    addr,
                    state: NodeLifecycle::Active,
                    incarnation: None,
                });
            })
            .await?;
            tracing::info!(task = id, node, "view change: node {node} added as a spare");
        }
        Step::AddLearner { group, node } => {
            let addr = map
                .addr(*node)
                .context("the node is not in the map")?
                .to_string();
            let op = MembershipOp::AddLearner { node: *node, addr };
            membership(state, *group, id, &op).await?;
            step_done(state, id, index, "view change: learner added", |_| {}).await?;
        }
        Step::ReplaceVoter { group, old, new } => {
            let op = MembershipOp::ReplaceVoter {
                dead: *old,
                replacement: *new,
                live: true,
            };
            membership(state, *group, id, &op).await?;
            let (group, old, new) = (*group, *old, *new);
            step_done(state, id, index, "view change: voter replaced", |m| {
                if let Some(g) = m.groups.get_mut(&group) {
                    g.members.remove(&old);
                    g.members.insert(new);
                }
            })
            .await?;
        }
        Step::CreateGroup { group, members } => {
            create_group(state, map, id, *group, members).await?;
            let group = *group;
            step_done(state, id, index, "view change: group created", |m| {
                m.next_group_id = m.next_group_id.max(group.0 + 1);
            })
            .await?;
        }
        Step::MoveSlots { from, to, ranges } => {
            return move_slots(state, map, id, v, *from, *to, ranges).await;
        }
        Step::DissolveGroup { group } => {
            let group = *group;
            if map.slot_count_of(group) > 0 {
                anyhow::bail!("group {group} still owns slots; it cannot be dissolved");
            }
            step_done(state, id, index, "view change: group dissolved", |m| {
                m.groups.remove(&group);
                m.next_group_id = m.next_group_id.max(group.0 + 1);
            })
            .await?;
            tracing::warn!(task = id, group = %group, "view change: group {group} dissolved");
        }
        Step::SetConfigVoters { voters } => {
            let raft = state
                .group(CONFIG_GROUP)
                .context("this node hosts no config replica")?;
            raft.change_membership(
                openraft::ChangeMembers::ReplaceAllVoters(voters.clone()),
                false,
            )
            .await
            .context("changing the config voters")?;
            let voters = voters.clone();
            step_done(state, id, index, "view change: config voters set", |m| {
                m.config_voters = voters;
            })
            .await?;
        }
        Step::RemoveNode { node } => {
            let node = *node;
            step_done(state, id, index, "view change: node removed", |m| {
                if let Some(n) = m.nodes.get_mut(&node) {
                    n.state = NodeLifecycle::Removed;
                }
            })
            .await?;
            tracing::warn!(task = id, node, "view change: node {node} removed");
        }
    }
    Ok(Next::Now)
}

/// Puts group `group` in the map with `members` (no slot), has one member initialize it, and
/// gives it an empty slot table once it has a leader. Idempotent.
async fn create_group(
    state: &Node,
    map: &ClusterMap,
    id: u64,
    group: GroupId,
    members: &std::collections::BTreeSet<NodeId>,
) -> anyhow::Result<()> {
    if !map.groups.contains_key(&group) {
        let members2 = members.clone();
        update_map(state, "view change: group listed", |m| {
            m.groups
                .entry(group)
                .or_insert(GroupInfo { members: members2 });
            m.next_group_id = m.next_group_id.max(group.0 + 1);
        })
        .await?;
    }
    let addrs: BTreeMap<NodeId, String> = members
        .iter()
        .filter_map(|n| state.map().addr(*n).map(|a| (*n, a.to_string())))
        .collect();
    let mut last = None;
    let mut initialized = false;
    for addr in addrs.values() {
        let op = AdminOp::Initialize {
            members: addrs.clone(),
        };
        match admin(state, group, id, op, Some(addr)).await {
            Ok(_) => {
                initialized = true;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if !initialized {
        anyhow::bail!("no member of group {group} could initialize it: {last:?}");
    }
    let cmd = Command::InitSlots { owned: Vec::new() };
    propose(state, group, id, cmd).await?;
    tracing::info!(task = id, group = %group, "view change: group {group} created on {members:?}");
    Ok(())
}

/// The next batch of a move: up to [`MOVE_BATCH_SLOTS`] slots of `ranges` that `from` still
/// owns, in slot order, as ranges. Pure.
pub fn next_batch(map: &ClusterMap, from: GroupId, ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    let mut n = 0;
    for (a, b) in ranges {
        for s in *a..=*b {
            if n == batch_slots() {
                return out;
            }
            if map.slots.get(usize::from(s)) != Some(&from) {
                continue;
            }
            n += 1;
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
    }
    out
}

fn count(slots: &[(u16, u16)]) -> u64 {
    slots.iter().map(|(a, b)| u64::from(b - a) + 1).sum()
}

async fn move_slots(
    state: &Node,
    map: &ClusterMap,
    id: u64,
    v: &ViewChangeTask,
    from: GroupId,
    to: GroupId,
    ranges: &[(u16, u16)],
) -> anyhow::Result<Next> {
    let Some(batch) = v.batch.clone() else {
        if v.cancel {
            return Ok(Next::Now);
        }
        let slots = next_batch(map, from, ranges);
        let index = v.next;
        if slots.is_empty() {
            step_done(state, id, index, "view change: slots moved", |_| {}).await?;
            return Ok(Next::Now);
        }
        update_map(state, "view change: move batch started", |m| {
            if let Some(v) = task_mut(m, id) {
                v.batch = Some(MoveBatch {
                    from,
                    to,
                    slots,
                    flipped: false,
                });
            }
        })
        .await?;
        return Ok(Next::Now);
    };
    if !batch.flipped {
        let states = slot_states(state, id, from, &batch.slots).await?;
        let released = states.iter().all(|s| *s == SlotState::Released);
        if !released {
            if v.cancel {
                roll_back(state, id, &batch).await?;
                return Ok(Next::Now);
            }
            copy_batch(state, map, id, &batch).await?;
        }
        let n = count(&batch.slots);
        let slots = batch.slots.clone();
        update_map(state, "view change: slots flipped", |m| {
            for (a, b) in &slots {
                for s in *a..=*b {
                    if let Some(o) = m.slots.get_mut(usize::from(s)) {
                        *o = to;
                    }
                }
            }
            if let Some(v) = task_mut(m, id) {
                v.slots_moved += n;
                if let Some(b) = &mut v.batch {
                    b.flipped = true;
                }
            }
        })
        .await?;
    }
    hold_at("before_activate", id).await;
    propose(
        state,
        to,
        id,
        Command::Activate {
            slots: batch.slots.clone(),
        },
    )
    .await?;
    propose(
        state,
        from,
        id,
        Command::DropSlots {
            slots: batch.slots.clone(),
        },
    )
    .await?;
    update_map(state, "view change: move batch done", |m| {
        if let Some(v) = task_mut(m, id) {
            v.batch = None;
        }
    })
    .await?;
    Ok(Next::Now)
}

/// The source's slot states of `slots`.
async fn slot_states(
    state: &Node,
    id: u64,
    group: GroupId,
    slots: &[(u16, u16)],
) -> anyhow::Result<Vec<SlotState>> {
    let op = AdminOp::SlotStates {
        slots: slots.to_vec(),
    };
    match admin(state, group, id, op, None).await? {
        AdminReply::States(s) => Ok(s),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

/// Steps (b)-(f) of a batch: both tables initialized, the destination cleared, the source
/// frozen, the data copied in chunks, the destination's version base raised above every version
/// the source gave, the source released.
async fn copy_batch(state: &Node, map: &ClusterMap, id: u64, b: &MoveBatch) -> anyhow::Result<()> {
    let (from, to) = (b.from, b.to);
    propose(
        state,
        from,
        id,
        Command::InitSlots {
            owned: map.slot_ranges(from),
        },
    )
    .await?;
    propose(
        state,
        to,
        id,
        Command::InitSlots {
            owned: map.slot_ranges(to),
        },
    )
    .await?;
    propose(
        state,
        to,
        id,
        Command::BeginIncoming {
            slots: b.slots.clone(),
        },
    )
    .await?;
    let frozen_at = Instant::now();
    propose(
        state,
        from,
        id,
        Command::Freeze {
            slots: b.slots.clone(),
        },
    )
    .await?;
    hold_at("after_freeze", id).await;
    let mut after = None;
    let (mut keys, mut bytes) = (0u64, 0u64);
    loop {
        let op = AdminOp::Scan {
            slots: b.slots.clone(),
            after: after.take(),
            max_bytes: COPY_CHUNK_BYTES,
        };
        let AdminReply::Chunk {
            records,
            next,
            bytes: n,
        } = admin(state, from, id, op, None).await?
        else {
            anyhow::bail!("unexpected reply to a scan");
        };
        if !records.is_empty() {
            keys += records.len() as u64;
            bytes += n;
            match propose(state, to, id, Command::Ingest { records }).await? {
                CommandResult::Ingested { skipped: 0, .. } => {}
                CommandResult::Ingested { skipped, .. } => {
                    anyhow::bail!("group {to} skipped {skipped} records of the copy")
                }
                other => anyhow::bail!("unexpected ingest result {other:?}"),
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let AdminReply::HighWater(above) =
        admin(state, from, id, AdminOp::VersionHighWater, None).await?
    else {
        anyhow::bail!("unexpected reply to a version high-water read");
    };
    propose(state, to, id, Command::RaiseVersionBase { above }).await?;
    propose(
        state,
        from,
        id,
        Command::Release {
            slots: b.slots.clone(),
        },
    )
    .await?;
    tracing::info!(
        task = id,
        from = %from,
        to = %to,
        slots = ?b.slots,
        keys,
        bytes,
        frozen_ms = frozen_at.elapsed().as_millis() as u64,
        "view change: batch copied and released"
    );
    update_map(state, "view change: copy counted", |m| {
        if let Some(v) = task_mut(m, id) {
            v.keys_moved += keys;
            v.bytes_moved += bytes;
        }
    })
    .await?;
    Ok(())
}

/// Rolls back a batch not yet released: the destination drops its copy, the source unfreezes.
async fn roll_back(state: &Node, id: u64, b: &MoveBatch) -> anyhow::Result<()> {
    let abort = Command::AbortIncoming {
        slots: b.slots.clone(),
    };
    if let Err(e) = propose(state, b.to, id, abort).await {
        // The destination never serves Incoming slots; its copy is dropped by the next move.
        tracing::warn!(task = id, error = %e, "rollback: the destination could not drop its copy");
    }
    let unfreeze = Command::Unfreeze {
        slots: b.slots.clone(),
    };
    propose(state, b.from, id, unfreeze).await?;
    update_map(state, "view change: batch rolled back", |m| {
        if let Some(v) = task_mut(m, id) {
            v.batch = None;
        }
    })
    .await?;
    tracing::warn!(task = id, slots = ?b.slots, "view change: batch rolled back");
    Ok(())
}

/// Ends task `id`: it leaves `tasks` for `finished`.
async fn finish(
    state: &Node,
    id: u64,
    outcome: ChangeOutcome,
    error: Option<String>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let err2 = error.clone();
    update_map(state, "view change finished", |m| {
        let Some(pos) = m.tasks.iter().position(|t| t.id == id) else {
            return;
        };
        let t = m.tasks.remove(pos);
        if let TaskKind::ViewChange(v) = t.kind {
            m.finished.push(FinishedChange {
                id,
                task: *v,
                outcome,
                error: err2,
                started_ms: t.started_ms,
                finished_ms: now,
            });
            let extra = m.finished.len().saturating_sub(FINISHED_KEPT);
            m.finished.drain(..extra);
        }
    })
    .await?;
    match outcome {
        ChangeOutcome::Done => tracing::warn!(task = id, "view change done"),
        _ => tracing::warn!(task = id, ?outcome, error = ?error, "view change stopped"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::fixtures::map;

    // Batches take the source's slots of the step's ranges in order, at most
    // MOVE_BATCH_SLOTS, skipping slots that already moved.
    #[test]
    fn batches_take_the_sources_remaining_slots_in_order() {
        let mut m = map(6);
        let g1 = GroupId(1);
        let ranges = vec![(0u16, 9u16), (20, 40)];
        assert_eq!(next_batch(&m, g1, &ranges), vec![(0, 9), (20, 25)]);
        for s in 0..=5 {
            m.slots[s] = GroupId(2);
        }
        assert_eq!(next_batch(&m, g1, &ranges), vec![(6, 9), (20, 31)]);
        for s in (6..=9).chain(20..=40) {
            m.slots[s] = GroupId(2);
        }
        assert!(next_batch(&m, g1, &ranges).is_empty());
    }
}
