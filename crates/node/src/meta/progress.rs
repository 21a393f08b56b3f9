//! What a view change's progress looks like from outside: the [`TaskProgress`] of a running or
//! finished change, read from the map, and steps described for people.

use kvorum_router::{ChangeOutcome, ClusterMap, Step, ViewChangeTask};
use kvorum_wire::{TaskProgress, TaskState};

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
