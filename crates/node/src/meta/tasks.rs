//! Repair tasks: planning, driving and abandoning them, and the map changes they make.
//!
//! Steps of a task: (1) planned: the tick picks repairs ([`kvorum_router::plan_repairs`], pure) and one map change
//! records them at step AddLearner; (2) claimed: its driver records the leader's term (an epoch
//! bump that makes a deposed leader's requests stale); (3) AddLearner: the replacement joins the
//! group as a learner and catches up, while the driver looks every tick whether to abandon;
//! (4) Swap: one membership change replaces the dead voter by the learner, then the map lists the
//! replacement and marks the dead node removed. Abandoning (only before the swap) removes the
//! learner, then the task.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kvorum_raftstore::{FenceToken, GroupId, NodeId};
use kvorum_router::{ClusterMap, NodeLifecycle, Task, TaskKind, TaskStep, CONFIG_GROUP};

use super::state::Meta;

use super::driver::{now_ms, Next};
use super::lease::acts_in;
use super::membership::{membership, StepError};
use super::record::{is_map_conflict, update_map};
use super::state::TICK;
use super::Health;
use crate::group::MembershipOp;

/// Longest a repair may run before its swap; past it the task is abandoned (its learner removed)
/// and planned afresh. Counted from the task's recorded start, so a new metadata leader keeps it.
const TASK_TIME_LIMIT: Duration = Duration::from_secs(600);
/// How long the metadata leader leaves a node alone after a group's leader saw it still
/// replicating while its heartbeats said it was dead.
const ALIVE_VETO: Duration = Duration::from_secs(30);

impl Meta {
    /// Notes that a group's leader saw `node` still replicating.
    fn veto(&self, node: NodeId) {
        self.lock().vetoed.insert(node, Instant::now());
    }

    /// Nodes not to repair for now: those a group's leader saw replicating (see
    /// [`ALIVE_VETO`]) and those `map` says an operator drained for a planned stop.
    pub(super) fn vetoed(&self, map: &ClusterMap) -> BTreeSet<NodeId> {
        let mut inner = self.lock();
        inner.vetoed.retain(|_, at| at.elapsed() < ALIVE_VETO);
        let mut vetoed = map.drained(now_ms());
        vetoed.extend(inner.vetoed.keys().copied());
        vetoed
    }
}

/// Starts the repairs [`kvorum_router::plan_repairs`] picks, all in one map change.
pub(super) async fn plan(
    meta: &Meta,
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    term: u64,
) -> anyhow::Result<()> {
    let vetoed = meta.vetoed(map);
    if kvorum_router::plan_repairs(map, health, &vetoed).is_empty() {
        return Ok(());
    }
    let started_ms = now_ms();
    let mut picks = Vec::new();
    let map = update_map(meta, "repair planned", |m| {
        // Chosen again on the map this change applies to: a view change's driver may have
        // started a batch since (its groups are then held).
        picks = kvorum_router::plan_repairs(m, health, &vetoed);
        for p in &picks {
            m.tasks.push(Task {
                id: m.next_task_id,
                kind: TaskKind::ReplaceReplica {
                    group: p.group,
                    dead: p.dead,
                    replacement: p.replacement,
                },
                step: TaskStep::AddLearner,
                started_ms,
                leader_term: term,
            });
            m.next_task_id += 1;
        }
    })
    .await?;
    for p in picks {
        tracing::warn!(
            group = %p.group,
            dead = p.dead,
            replacement = p.replacement,
            epoch = map.epoch,
            "repair started: replacing the replica of node {} in group {} by node {}",
            p.dead,
            p.group,
            p.replacement
        );
    }
    Ok(())
}

/// Starts a driver for every task of `map` that has none running on this leader.
pub(super) fn start_drivers(meta: &Arc<Meta>, map: &ClusterMap, term: u64) {
    let mut inner = meta.lock();
    inner.drivers.retain(|_, h| !h.is_finished());
    for t in &map.tasks {
        inner
            .drivers
            .entry(t.id)
            .or_insert_with(|| tokio::spawn(drive_task(meta.clone(), t.id, term)));
    }
}

/// Why a task that has not swapped yet must be abandoned, if it must. Pure.
/// `heard_recently`: nodes whose own heartbeat reached this leader within `suspect_after`.
fn abandon_reason(
    task: &Task,
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    heard_recently: &BTreeSet<NodeId>,
    now_ms: u64,
) -> Option<String> {
    let TaskKind::ReplaceReplica {
        dead, replacement, ..
    } = &task.kind
    else {
        return None;
    };
    if !map.is_active(*replacement) || health.get(replacement) == Some(&Health::Dead) {
        return Some(format!("the replacement node {replacement} died"));
    }
    if map.is_active(*dead) && heard_recently.contains(dead) {
        return Some(format!("node {dead} is alive again"));
    }
    let age = Duration::from_millis(now_ms.saturating_sub(task.started_ms));
    if task.started_ms > 0 && age > TASK_TIME_LIMIT {
        return Some(format!(
            "it ran {} s, over its limit of {} s",
            age.as_secs(),
            TASK_TIME_LIMIT.as_secs()
        ));
    }
    None
}

/// Why a task must be abandoned now, from this leader's view, if it must.
fn should_abandon(meta: &Meta, map: &ClusterMap, task: &Task) -> Option<String> {
    let health = meta.health(
        map,
        meta.node.id(),
        meta.node.cfg.suspect_after,
        meta.node.cfg.dead_after,
    );
    let heard = meta.heard_within(meta.node.cfg.suspect_after);
    abandon_reason(task, map, &health, &heard, now_ms())
}

/// Drives task `id` while this node leads the config group in `term`: claims it, runs its
/// steps in order (each idempotent), and abandons it when it can no longer finish safely. Runs
/// beside the metadata loop, one driver per task, so a long step holds up nothing else.
async fn drive_task(meta: Arc<Meta>, id: u64, term: u64) {
    // The test-only step delay: the step being held, and since when.
    let mut held: Option<(TaskStep, Instant)> = None;
    // A view change's step that keeps failing, and since when.
    let mut failing: Option<(usize, Instant)> = None;
    loop {
        if !acts_in(&meta, term).await {
            return;
        }
        let map = meta.node.map();
        let Some(task) = map.tasks.iter().find(|t| t.id == id).cloned() else {
            return;
        };
        match drive_step(&meta, &map, &task, term, &mut held, &mut failing).await {
            Ok(Next::Now) => {}
            Ok(Next::Later) => tokio::time::sleep(TICK).await,
            Ok(Next::Done) => return,
            Err(e) => {
                // Repairs and view changes share this loop: name which one failed.
                let what = match &task.kind {
                    TaskKind::ReplaceReplica { .. } => "repair",
                    TaskKind::ViewChange(_) => "view change",
                };
                if is_map_conflict(&e) {
                    tracing::info!(task = id, error = %format!("{e:#}"), "{what} step lost a map race; retrying");
                } else {
                    tracing::warn!(task = id, error = %format!("{e:#}"), "{what} step failed; retrying");
                }
                tokio::time::sleep(TICK).await;
            }
        }
    }
}

/// Runs the next step of `task`.
async fn drive_step(
    meta: &Meta,
    map: &ClusterMap,
    task: &Task,
    term: u64,
    held: &mut Option<(TaskStep, Instant)>,
    failing: &mut Option<(usize, Instant)>,
) -> anyhow::Result<Next> {
    let id = task.id;
    if task.leader_term != term || task.started_ms == 0 {
        claim(meta, id, term).await?;
        return Ok(Next::Now);
    }
    let TaskKind::ReplaceReplica {
        group,
        dead,
        replacement,
    } = task.kind.clone()
    else {
        return super::view_change::drive_change(meta, map, task, failing).await;
    };
    let r = RepairStep {
        id,
        group,
        dead,
        replacement,
        tok: FenceToken { term, task: id },
    };
    if task.step == TaskStep::AddLearner {
        if let Some(reason) = should_abandon(meta, map, task) {
            abandon(meta, task, &reason).await?;
            return Ok(Next::Done);
        }
    }
    if held_by_fault(meta, task, held) {
        return Ok(Next::Later);
    }
    match task.step {
        TaskStep::AddLearner => add_learner(meta, map, task, &r).await,
        TaskStep::Running => Ok(Next::Done),
        TaskStep::Swap => swap(meta, task, &r).await,
    }
}

/// What the steps of one repair task act on.
struct RepairStep {
    /// The task's id.
    id: u64,
    /// The group repaired.
    group: GroupId,
    /// The node whose replica is replaced.
    dead: NodeId,
    /// The node that gets the new replica.
    replacement: NodeId,
    /// The driver's token for its membership steps.
    tok: FenceToken,
}

/// Claims task `id` for this leader's `term` (and starts its clock): the epoch this bumps is
/// newer than any a deposed leader can send.
async fn claim(meta: &Meta, id: u64, term: u64) -> anyhow::Result<()> {
    update_map(meta, "repair claimed", |m| {
        if let Some(t) = m.tasks.iter_mut().find(|t| t.id == id) {
            t.leader_term = term;
            if t.started_ms == 0 {
                t.started_ms = now_ms();
            }
        }
    })
    .await?;
    Ok(())
}

/// Whether the test suite's step-delay fault (zero in `kvnode`) still holds `task`'s step.
fn held_by_fault(meta: &Meta, task: &Task, held: &mut Option<(TaskStep, Instant)>) -> bool {
    let delay = meta.node.faults.task_step_delay();
    if delay.is_zero() {
        return false;
    }
    let since = match *held {
        Some((step, at)) if step == task.step => at,
        _ => {
            let now = Instant::now();
            *held = Some((task.step, now));
            now
        }
    };
    since.elapsed() < delay
}

/// The AddLearner step: the replacement joins the group as a learner and catches up; meanwhile
/// the driver looks every tick whether to give up.
async fn add_learner(
    meta: &Meta,
    map: &ClusterMap,
    task: &Task,
    r: &RepairStep,
) -> anyhow::Result<Next> {
    let RepairStep {
        id,
        group,
        replacement,
        tok,
        ..
    } = *r;
    let term = tok.term;
    let addr = map
        .addr(replacement)
        .context("the replacement is not in the map")?
        .to_string();
    let op = MembershipOp::AddLearner {
        node: replacement,
        addr,
    };
    // The catch-up may take long: meanwhile, look every tick whether to give up.
    let outcome = {
        let call = membership(meta, group, tok, &op);
        tokio::pin!(call);
        loop {
            tokio::select! {
                r = &mut call => break Ok(r),
                _ = tokio::time::sleep(TICK) => {
                    if !acts_in(meta, term).await {
                        return Ok(Next::Done);
                    }
                    let map = meta.node.map();
                    let Some(t) = map.tasks.iter().find(|t| t.id == id) else {
                        return Ok(Next::Done);
                    };
                    if let Some(reason) = should_abandon(meta, &map, t) {
                        break Err(reason);
                    }
                }
            }
        }
    };
    match outcome {
        Ok(r) => r?,
        Err(reason) => {
            abandon(meta, task, &reason).await?;
            return Ok(Next::Done);
        }
    }
    set_step(meta, id, TaskStep::Swap).await?;
    tracing::info!(group = %group, replacement, "repair: learner caught up");
    Ok(Next::Now)
}

/// The Swap step: one membership change replaces the dead voter by the caught-up learner, then
/// the map lists the replacement and marks the dead node removed.
async fn swap(meta: &Meta, task: &Task, r: &RepairStep) -> anyhow::Result<Next> {
    let RepairStep {
        id,
        group,
        dead,
        replacement,
        tok,
    } = *r;
    // A node the map already marks removed (the repair of another of its groups finished) is
    // out for good, alive or not: its seat goes without the liveness probe. Were it back and
    // acknowledging, the probe would keep it in a seat it can never use, and it could not
    // rejoin as a new node while it holds one.
    let removed = !meta.node.map().is_active(dead);
    let op = MembershipOp::ReplaceVoter {
        dead,
        replacement,
        live: removed,
    };
    match membership(meta, group, tok, &op).await {
        Ok(()) => {}
        Err(StepError::Refused { code, message }) if code == "replica_alive" => {
            meta.veto(dead);
            abandon(meta, task, &message).await?;
            return Ok(Next::Done);
        }
        Err(StepError::Refused { code, .. }) if code == "no_learner" => {
            set_step(meta, id, TaskStep::AddLearner).await?;
            return Ok(Next::Now);
        }
        Err(e) => return Err(e.into()),
    }
    let map = update_map(meta, "repair finished", |m| {
        let members = if group == CONFIG_GROUP {
            Some(&mut m.config_voters)
        } else {
            m.groups.get_mut(&group).map(|g| &mut g.members)
        };
        if let Some(members) = members {
            members.remove(&dead);
            members.insert(replacement);
        }
        if let Some(n) = m.nodes.get_mut(&dead) {
            n.state = NodeLifecycle::Removed;
            // Removed by a repair, not by an operator: if it comes back it rejoins by itself.
            n.replaced = true;
        }
        m.tasks.retain(|t| t.id != id);
    })
    .await?;
    tracing::warn!(
        group = %group,
        dead,
        replacement,
        epoch = map.epoch,
        "repair finished: node {replacement} replaced node {dead} in group {group}; node {dead} is removed"
    );
    Ok(Next::Done)
}

/// Drops `task`, which has not swapped: removes its learner (best effort; a learner left behind
/// holds no vote) while the task is still in the map, then the task.
async fn abandon(meta: &Meta, task: &Task, reason: &str) -> anyhow::Result<()> {
    let TaskKind::ReplaceReplica {
        group,
        dead,
        replacement,
    } = task.kind.clone()
    else {
        return Ok(());
    };
    let remove = MembershipOp::RemoveLearner { node: replacement };
    let tok = FenceToken {
        term: task.leader_term,
        task: task.id,
    };
    if let Err(e) = membership(meta, group, tok, &remove).await {
        tracing::warn!(group = %group, replacement, error = %e, "could not remove the learner");
    }
    update_map(meta, "repair abandoned", |m| {
        m.tasks.retain(|t| t.id != task.id)
    })
    .await?;
    tracing::warn!(
        group = %group,
        dead,
        replacement,
        "repair abandoned: {reason}; node {dead} stays in group {group}"
    );
    Ok(())
}

async fn set_step(meta: &Meta, id: u64, step: TaskStep) -> anyhow::Result<()> {
    update_map(meta, "repair step", |m| {
        if let Some(t) = m.tasks.iter_mut().find(|t| t.id == id) {
            t.step = step;
        }
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    // Before the swap, a task is abandoned when its replacement died, when its dead node is
    // heard from again, or when it is over its time limit; otherwise it goes on.
    #[test]
    fn abandon_reasons() {
        let m = map(7);
        let t = task(1, 2, 5, 7);
        let now = t.started_ms + 1_000;
        let none = BTreeSet::new();
        assert_eq!(abandon_reason(&t, &m, &health(&m, &[5]), &none, now), None);
        let r = abandon_reason(&t, &m, &health(&m, &[5, 7]), &none, now);
        assert!(r.is_some_and(|r| r.contains("replacement node 7 died")));
        let r = abandon_reason(&t, &m, &health(&m, &[]), &BTreeSet::from([5]), now);
        assert!(r.is_some_and(|r| r.contains("node 5 is alive again")));
        let late = t.started_ms + TASK_TIME_LIMIT.as_millis() as u64 + 1;
        let r = abandon_reason(&t, &m, &health(&m, &[5]), &none, late);
        assert!(r.is_some_and(|r| r.contains("over its limit")));
    }
}
