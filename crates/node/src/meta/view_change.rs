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
//! A `MoveSlots` step moves its slots in batches of at most [`MOVE_BATCH_SLOTS`] (`moves.rs`);
//! each batch: (a) recorded in the map (`batch`), (b) both groups fenced with the driver's token
//! (a `Fence` entry in the source's log first, in the destination's before the copy; every later
//! step is a `Fenced` entry, refused by the group's state machine if a newer driver fenced it
//! since), (c) both groups' slot tables
//! initialized from the map (a no-op after the first time), (d) BeginIncoming at the destination
//! (its old copy of the slots, if any, dropped), (e) copy while the source still serves: chunks
//! read at the source's leader after a read-index round, proposed as Ingest entries at the
//! destination, (f) fence of the slots: Freeze at the source (writes to the slots refused from
//! here on) and its final data read in the same call, (g) catch-up: one CatchUp entry at the
//! destination with what changed since the copy, (h) Release at the source, (i) ActivateAt at
//! the destination together with the flip (the map names the destination, new epoch),
//! (j) DropSlots at the source, and the next batch recorded in the same map change. A resumed
//! batch that was not flipped asks the source's slot table: Released means the copy had
//! completed, so it rolls forward from (i); otherwise it restarts at (c) (every step is
//! idempotent) or, when a cancel was asked for, rolls back: Unfreeze at the source first (the
//! gate: refused once the source released, and then the batch only rolls forward), then
//! AbortIncoming at the destination. A flipped batch only rolls forward.
//!
//! Requests to a slot between (f) and (i) are held by the node that received them and retried
//! (see `serve/write.rs`); the pause is the catch-up of what changed during the copy plus two proposals
//! and a map change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use kvorum_raftstore::{Command, FenceToken, GroupId, NodeId};
use kvorum_router::{
    plan_with, ChangeOutcome, ClusterMap, FinishedChange, GroupInfo, NodeInfo, NodeLifecycle,
    PlanOptions, Step, Task, TaskKind, TaskStep, ViewChange, ViewChangeTask, CONFIG_GROUP,
    FINISHED_KEPT,
};

use crate::error::ApiError;

use super::state::Meta;

use super::admin::{admin, propose};
use super::driver::{now_ms, step_done, Next};
use super::membership::membership;
use super::moves::RollBack;
use super::progress::describe;
use super::record::update_map;
use super::Health;
use crate::group::AdminOp;
use crate::group::MembershipOp;

/// Longest a step may keep failing before the change stops as failed (a batch not yet released
/// rolls back first; a batch past its Release never fails: it rolls forward, retrying).
const STEP_FAIL_LIMIT: Duration = Duration::from_secs(120);

/// Plans `change` on the current map and records it as a task. Refused, with nothing changed,
/// when a change is already running or the planner refuses it. `incarnation`: for an add, the
/// one the node answered when asked to join, recorded with it by the `AddNode` step.
pub async fn start_change(
    meta: &Meta,
    change: ViewChange,
    incarnation: Option<String>,
) -> Result<Task, ApiError> {
    let opts = check_change(meta, &change)?;
    let mut outcome: Result<Task, ApiError> = Err(ApiError::Internal("not planned".into()));
    update_map(meta, "view change accepted", |m| {
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
        let task = Task {
            id: m.next_task_id,
            kind: TaskKind::ViewChange(Box::new(ViewChangeTask::planned(
                change.clone(),
                plan,
                incarnation.clone(),
            ))),
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
pub fn check_change(meta: &Meta, change: &ViewChange) -> Result<PlanOptions, ApiError> {
    let map = meta.node.map();
    if let Some((t, _)) = map.view_change() {
        return Err(ApiError::ChangeInProgress { task: t.id });
    }
    let opts = PlanOptions {
        dead: dead_nodes(meta, &map),
        max_config_voters: meta.node.cfg.config_voters,
    };
    plan_with(&map, change, &opts).map_err(refused)?;
    Ok(opts)
}

/// Asks the running change `id` to stop safely.
pub async fn cancel_change(meta: &Meta, id: u64) -> Result<(), ApiError> {
    let map = meta.node.map();
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
    update_map(meta, "view change cancel asked", |m| {
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

/// Nodes the metadata leader sees dead now (none when this node is not its leader).
fn dead_nodes(meta: &Meta, map: &ClusterMap) -> std::collections::BTreeSet<NodeId> {
    meta.health(
        map,
        meta.node.id(),
        meta.node.cfg.suspect_after,
        meta.node.cfg.dead_after,
    )
    .into_iter()
    .filter(|(_, h)| *h == Health::Dead)
    .map(|(n, _)| n)
    .collect()
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
    meta: &Meta,
    map: &ClusterMap,
    task: &Task,
    failing: &mut Option<(usize, Instant)>,
) -> anyhow::Result<Next> {
    let v = view(task)?.clone();
    let id = task.id;
    // Claimed by this driver's term (see `drive_step`): every step carries it.
    let tok = FenceToken {
        term: task.leader_term,
        task: id,
    };
    if v.next >= v.steps.len() {
        finish(meta, id, ChangeOutcome::Done, None).await?;
        return Ok(Next::Done);
    }
    if v.cancel && v.batch.is_none() {
        remove_added_learners(meta, map, tok, &v, v.next).await;
        finish(meta, id, ChangeOutcome::Cancelled, None).await?;
        return Ok(Next::Done);
    }
    let step = v.steps[v.next].clone();
    let result = run_step(meta, map, tok, &v, &step).await;
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
            let limit = meta
                .node
                .faults
                .step_fail_limit()
                .unwrap_or(STEP_FAIL_LIMIT);
            if since.elapsed() > limit {
                let reason = format!(
                    "step {} ({}) kept failing: {e:#}",
                    v.next + 1,
                    describe(&step)
                );
                // A batch past its Release only rolls forward: the source gave the slots up
                // and the destination holds the only copy. Failing the change there would
                // leave the slots served by nobody, so it keeps retrying (the task shows the
                // error) until the destination can complete it.
                if let Some(b) = &v.batch {
                    if b.flipped {
                        tracing::warn!(task = id, error = %e, "{reason}; the batch was flipped: it rolls forward");
                        return Err(e);
                    }
                    if super::moves::roll_back(meta, tok, b).await? == RollBack::PastRelease {
                        return Err(e);
                    }
                }
                // The failing step itself may have added its learner.
                remove_added_learners(meta, map, tok, &v, v.next + 1).await;
                finish(meta, id, ChangeOutcome::Failed, Some(reason)).await?;
                return Ok(Next::Done);
            }
            Err(e)
        }
    }
}

/// The learners that the first `ran` steps of change `v` may have added and that `map` does not
/// list as members of their group (no later step made them voters): `(group, node)`.
fn added_learners(map: &ClusterMap, v: &ViewChangeTask, ran: usize) -> Vec<(GroupId, NodeId)> {
    v.steps
        .iter()
        .take(ran)
        .filter_map(|s| match s {
            Step::AddLearner { group, node } => Some((*group, *node)),
            _ => None,
        })
        .filter(|(group, node)| {
            if *group == CONFIG_GROUP {
                !map.config_voters.contains(node)
            } else {
                map.groups
                    .get(group)
                    .is_none_or(|g| !g.members.contains(node))
            }
        })
        .collect()
}

/// Removes from their groups the learners a change that stops (failed or cancelled) added with
/// its first `ran` steps, while the task is still in the map (the groups' leaders admit the
/// removal as a step of it). Best effort, logged: a learner left behind holds no vote, but its
/// group's leader keeps sending it the log, at an address a new node may take.
async fn remove_added_learners(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    v: &ViewChangeTask,
    ran: usize,
) {
    let id = tok.task;
    for (group, node) in added_learners(map, v, ran) {
        let op = MembershipOp::RemoveLearner { node };
        match membership(meta, group, tok, &op).await {
            Ok(()) => {
                tracing::info!(task = id, group = %group, node, "view change stops: learner removed")
            }
            Err(e) => {
                tracing::warn!(task = id, group = %group, node, error = %e, "view change stops: could not remove the learner it added")
            }
        }
    }
}

async fn run_step(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    v: &ViewChangeTask,
    step: &Step,
) -> anyhow::Result<Next> {
    let (id, index) = (tok.task, v.next);
    match step {
        Step::AddNode { node, addr } => {
            let (node, addr, incarnation) = (*node, addr.clone(), v.incarnation.clone());
            step_done(meta, id, index, "view change: node added", |m| {
                add_node(m, node, addr, incarnation)
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
            membership(meta, *group, tok, &op).await?;
            step_done(meta, id, index, "view change: learner added", |_| {}).await?;
        }
        Step::ReplaceVoter { group, old, new } => {
            let op = MembershipOp::ReplaceVoter {
                dead: *old,
                replacement: *new,
                live: true,
            };
            membership(meta, *group, tok, &op).await?;
            let (group, old, new) = (*group, *old, *new);
            step_done(meta, id, index, "view change: voter replaced", |m| {
                if let Some(g) = m.groups.get_mut(&group) {
                    g.members.remove(&old);
                    g.members.insert(new);
                }
            })
            .await?;
        }
        Step::CreateGroup { group, members } => {
            create_group(meta, map, tok, *group, members).await?;
            let group = *group;
            step_done(meta, id, index, "view change: group created", |m| {
                m.next_group_id = m.next_group_id.max(group.0 + 1);
            })
            .await?;
        }
        Step::MoveSlots { from, to, ranges } => {
            let step = super::moves::SlotMove {
                from: *from,
                to: *to,
                ranges,
            };
            return super::moves::move_slots(meta, map, tok, v, step).await;
        }
        Step::DissolveGroup { group } => {
            let group = *group;
            if map.slot_count_of(group) > 0 {
                anyhow::bail!("group {group} still owns slots; it cannot be dissolved");
            }
            step_done(meta, id, index, "view change: group dissolved", |m| {
                m.groups.remove(&group);
                m.next_group_id = m.next_group_id.max(group.0 + 1);
            })
            .await?;
            tracing::warn!(task = id, group = %group, "view change: group {group} dissolved");
        }
        Step::SetConfigVoters { voters } => {
            let raft = meta
                .node
                .group(CONFIG_GROUP)
                .context("this node hosts no config replica")?;
            raft.change_membership(
                openraft::ChangeMembers::ReplaceAllVoters(voters.clone()),
                false,
            )
            .await
            .context("changing the config voters")?;
            let voters = voters.clone();
            step_done(meta, id, index, "view change: config voters set", |m| {
                m.config_voters = voters;
            })
            .await?;
        }
        Step::RemoveNode { node } => {
            let node = *node;
            step_done(meta, id, index, "view change: node removed", |m| {
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

/// The map change of an `AddNode` step: `node` enters `m` as an active spare at `addr`, with
/// the incarnation it answered when the change was accepted, so that a joiner wiped before its
/// first heartbeat (a new incarnation) is refused the id instead of taking it without its log
/// and vote. Idempotent: an entry already there is kept.
fn add_node(m: &mut ClusterMap, node: NodeId, addr: String, incarnation: Option<String>) {
    m.nodes.entry(node).or_insert(NodeInfo {
        addr,
        state: NodeLifecycle::Active,
        incarnation,
        replaced: false,
        drain_until_ms: None,
    });
}

/// Puts group `group` in the map with `members` (no slot), has one member initialize it, and
/// gives it an empty slot table once it has a leader. Idempotent.
async fn create_group(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    group: GroupId,
    members: &std::collections::BTreeSet<NodeId>,
) -> anyhow::Result<()> {
    if !map.groups.contains_key(&group) {
        let members2 = members.clone();
        update_map(meta, "view change: group listed", |m| {
            m.groups
                .entry(group)
                .or_insert(GroupInfo { members: members2 });
            m.next_group_id = m.next_group_id.max(group.0 + 1);
        })
        .await?;
    }
    let addrs: BTreeMap<NodeId, String> = members
        .iter()
        .filter_map(|n| meta.node.map().addr(*n).map(|a| (*n, a.to_string())))
        .collect();
    let mut last = None;
    let mut initialized = false;
    for addr in addrs.values() {
        let op = AdminOp::Initialize {
            members: addrs.clone(),
        };
        match admin(meta, group, tok, op, Some(addr)).await {
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
    propose(meta, group, tok, cmd).await?;
    tracing::info!(task = tok.task, group = %group, "view change: group {group} created on {members:?}");
    Ok(())
}

/// Ends task `id`: it leaves `tasks` for `finished`.
async fn finish(
    meta: &Meta,
    id: u64,
    outcome: ChangeOutcome,
    error: Option<String>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let err2 = error.clone();
    update_map(meta, "view change finished", |m| {
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
    use crate::join::{listed, Listed};

    const ADDR: &str = "127.0.0.4:7070";

    // A node added by a view change is recorded with the incarnation it answered when asked to
    // join: that data directory takes the id, and a joiner wiped before its first heartbeat (a
    // new incarnation) is refused it rather than taking it without its log and vote.
    #[test]
    fn an_added_node_is_recorded_with_the_incarnation_that_asked_to_join() {
        let view: Vec<String> = (1..=3).map(|i| format!("127.0.0.{i}:7070")).collect();
        let mut m = ClusterMap::initial(&view, 3).expect("valid view");
        add_node(&mut m, 4, ADDR.into(), Some("joiner".into()));
        assert_eq!(listed(&m, ADDR, "joiner"), Listed::Adopt(4));
        assert_eq!(listed(&m, ADDR, "wiped"), Listed::OtherIncarnation(4));
        // Idempotent: a repeated step keeps the entry.
        add_node(&mut m, 4, ADDR.into(), None);
        assert_eq!(listed(&m, ADDR, "wiped"), Listed::OtherIncarnation(4));
    }

    // A change that stops removes the learners its steps so far added, except those a later
    // step made members (voters) of their group.
    #[test]
    fn a_stopped_change_removes_the_learners_it_added_and_not_the_voters() {
        let view: Vec<String> = (1..=4).map(|i| format!("127.0.0.{i}:7070")).collect();
        let mut m = ClusterMap::initial(&view, 3).expect("valid view");
        let g = GroupId(1);
        let v = ViewChangeTask {
            change: ViewChange::RemoveNode { node: 3 },
            node: 3,
            steps: vec![
                Step::AddLearner {
                    group: CONFIG_GROUP,
                    node: 4,
                },
                Step::SetConfigVoters {
                    voters: [1, 2, 4].into(),
                },
                Step::AddLearner { group: g, node: 4 },
                Step::ReplaceVoter {
                    group: g,
                    old: 3,
                    new: 4,
                },
                Step::RemoveNode { node: 3 },
            ],
            next: 0,
            batch: None,
            slots_total: 0,
            slots_moved: 0,
            keys_moved: 0,
            bytes_moved: 0,
            cancel: false,
            incarnation: None,
        };
        assert_eq!(added_learners(&m, &v, 0), vec![]);
        assert_eq!(added_learners(&m, &v, 1), vec![(CONFIG_GROUP, 4)]);
        assert_eq!(added_learners(&m, &v, 3), vec![(CONFIG_GROUP, 4), (g, 4)]);
        // Once the voters are set and the swap done, nothing is left to remove.
        m.config_voters = [1, 2, 4].into();
        let members = &mut m.groups.get_mut(&g).expect("group 1").members;
        members.remove(&3);
        members.insert(4);
        assert_eq!(added_learners(&m, &v, 5), vec![]);
    }
}
