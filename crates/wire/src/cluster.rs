//! View changes over HTTP: `POST /v1/cluster/nodes` (add a node), `DELETE
//! /v1/cluster/nodes/{id}` (remove one), `GET /v1/cluster/tasks/{id}` (a change's progress) and
//! `POST /v1/cluster/tasks/{id}/cancel` (stop it safely).
//!
//! A change runs as a task of the metadata leader, recorded in the cluster map, so it survives
//! the loss of the metadata leader and of the client that asked for it: the add and remove calls
//! answer `202 Accepted` with the task's [`TaskProgress`] at once, and the client polls the task
//! until [`TaskState::is_final`]. Any node answers these routes (a node that is not the metadata
//! leader forwards the call to it). Refusals are [`crate::ErrorBody`]s with a stable `code`:
//! the planner's codes (`unknown_node`, `node_removed`, `address_in_use`, `empty_address`,
//! `too_few_nodes`, `below_quorum`, `dead_node`), `change_in_progress` (409, with the running
//! task's id in `task`), `unreachable` (the new node's address does not answer as a waiting
//! node), `unknown_task` (404).

use kvorum_router::{NodeId, ViewChange};
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNodeBody {
    /// The new node's address, `ip:port`. The node must be running and waiting to join
    /// (started with `--join`, or with a view that includes it).
    pub addr: String,
}

/// Where a view-change task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Its steps are running.
    Running,
    /// A cancel was asked for: moves not yet past Release roll back, the others finish.
    Cancelling,
    /// Every step completed: the cluster has its new shape.
    Done,
    /// Cancelled: what had been done stays valid; the change did not complete.
    Cancelled,
    /// Stopped by an error it could not get past; the map is valid and the reason is in `error`.
    Failed,
}

impl TaskState {
    /// Whether the task has ended (it will not change any more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::Cancelled | TaskState::Failed
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskState::Running => "running",
            TaskState::Cancelling => "cancelling",
            TaskState::Done => "done",
            TaskState::Cancelled => "cancelled",
            TaskState::Failed => "failed",
        })
    }
}

/// A view change's progress: the reply of the add, remove, task and cancel routes. Fields are
/// declared in alphabetical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// Bytes of slot data copied so far.
    pub bytes_moved: u64,
    /// The change the task makes.
    pub change: ViewChange,
    /// The cluster map's epoch when this answer was made.
    pub epoch: u64,
    /// Why the task failed (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it ended, in milliseconds since the Unix epoch (final states only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The task's id.
    pub id: u64,
    /// Keys copied so far.
    pub keys_moved: u64,
    /// The node the change adds or removes (for an add: the id it was given, once it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// Slots whose owner has changed so far.
    pub slots_moved: u64,
    /// Slots the whole change moves.
    pub slots_total: u64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Where it stands.
    pub state: TaskState,
    /// Steps completed so far.
    pub step: u64,
    /// What the current step does, for people (e.g. `move slots 1366..=2047 from group 1 to group 3`).
    pub step_name: String,
    /// Number of steps of the plan.
    pub steps: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_progress_round_trips_with_its_json_shape() {
        let p = TaskProgress {
            bytes_moved: 1024,
            change: ViewChange::AddNode {
                addr: "127.0.0.9:7070".into(),
            },
            epoch: 7,
            error: None,
            finished_ms: None,
            id: 3,
            keys_moved: 10,
            node: Some(9),
            slots_moved: 100,
            slots_total: 1365,
            started_ms: 1,
            state: TaskState::Running,
            step: 2,
            step_name: "move".into(),
            steps: 5,
        };
        let v = serde_json::to_value(&p).expect("serializes");
        assert_eq!(
            v,
            json!({"bytes_moved": 1024, "change": {"change": "add_node", "addr": "127.0.0.9:7070"},
                   "epoch": 7, "id": 3, "keys_moved": 10, "node": 9, "slots_moved": 100,
                   "slots_total": 1365, "started_ms": 1, "state": "running", "step": 2,
                   "step_name": "move", "steps": 5})
        );
        assert_eq!(
            serde_json::from_value::<TaskProgress>(v).expect("parses"),
            p
        );
        assert!(TaskState::Done.is_final() && !TaskState::Cancelling.is_final());
        assert!(serde_json::from_value::<AddNodeBody>(json!({"addr": "a", "x": 1})).is_err());
    }
}
