//! What every task driver shares: the outcome of a step, the task clock, and finding and
//! advancing a task in the map.

use kvorum_raftstore::GroupId;
use kvorum_router::{ClusterMap, TaskKind, ViewChangeTask};

use super::state::Meta;

use super::record::update_map;

/// What a driver does after a step.
pub(super) enum Next {
    /// Run the next step at once.
    Now,
    /// Look again after a tick.
    Later,
    /// The task is finished, abandoned, or no longer this driver's.
    Done,
}

/// Milliseconds since the Unix epoch (the clock of [`Task::started_ms`]); 0 if the clock is
/// before 1970.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `map` has a repair task of one of `groups`. A driver checks it again inside the map
/// change that records a batch: repairs are planned on the map they are recorded in, so one of
/// the two map changes sees the other.
pub(super) fn repair_running(map: &ClusterMap, groups: [GroupId; 2]) -> bool {
    map.tasks
        .iter()
        .any(|t| t.kind.group().is_some_and(|g| groups.contains(&g)))
}

/// Records that step `index` of task `id` completed, with `also` applied to the map in the same
/// change.
pub(super) async fn step_done(
    meta: &Meta,
    id: u64,
    index: usize,
    what: &str,
    also: impl FnOnce(&mut ClusterMap),
) -> anyhow::Result<()> {
    update_map(meta, what, |m| {
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

/// The view-change task `id` of `m`, to change in place (`None`: no such view change).
pub(super) fn task_mut(m: &mut ClusterMap, id: u64) -> Option<&mut ViewChangeTask> {
    m.tasks
        .iter_mut()
        .find(|t| t.id == id)
        .and_then(|t| match &mut t.kind {
            TaskKind::ViewChange(v) => Some(v.as_mut()),
            TaskKind::ReplaceReplica { .. } => None,
        })
}
