//! Membership steps on a group's leader: the request (of a repair or a view change), its
//! checks, and the change itself. The driver that sends it is `meta/membership.rs`.
//!
//! Steps of a request: (1) the task's driver sends it (locally for the config group, else over
//! HTTP to the group's leader, following `not_leader` hints); (2) the group's leader learns the
//! request's epoch if it is newer than its map ([`admit`]); (3) it checks that the task and step
//! are in its newest map and the epoch is not older than one it accepted ([`check_request`]);
//! (4) it applies the change, idempotently ([`apply_membership`]): before a swap begins, a
//! liveness probe confirms the dead replica no longer acknowledges the group's log.

use std::collections::BTreeSet;
use std::time::Duration;

use kvorum_raftstore::{AdminResult, Command, CommandResult, FenceToken, GroupId, NodeId, Raft};
use kvorum_router::{ClusterMap, Step, TaskKind};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::node::Node;

use super::probe::{confirm_gone, confirm_unreached, matched};
use super::steps::MAP_LEARN_WAIT;

/// Longest wait for a new learner to catch up, per attempt.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

/// [`CATCH_UP_WAIT`], or the test binary's catch-up fault.
pub(crate) fn catch_up_wait(state: &Node) -> Duration {
    state.faults.catch_up_wait().unwrap_or(CATCH_UP_WAIT)
}

/// A membership change of one group, run by its leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
// The variant docs name and describe each field.
#[allow(missing_docs)]
pub enum MembershipOp {
    /// Add `node` as a learner (if not yet a member) and wait until it has caught up.
    AddLearner { node: NodeId, addr: String },
    /// In one membership change (joint consensus, old voters to new), replace the voter `dead`
    /// by the learner `replacement`, after confirming `dead` no longer replicates (a repair), or
    /// with `live` set, replacing a live voter (a view change removing a node) without that check.
    ReplaceVoter {
        dead: NodeId,
        replacement: NodeId,
        #[serde(default, skip_serializing_if = "is_false")]
        live: bool,
    },
    /// Remove the learner `node`.
    RemoveLearner { node: NodeId },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `POST /internal/v1/groups/{group}/membership`: a membership step of a repair task, asked of
/// the group's leader by the metadata leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRequest {
    /// The task the step belongs to.
    pub task: u64,
    /// The epoch of the sender's map. The group's leader refuses epochs older than its own
    /// map's, or than one it has accepted before: they come from a deposed metadata leader.
    pub epoch: u64,
    /// The driver's token: the group's leader commits a [`Command::Fence`] with it before the
    /// change, and refuses the step (`stale_task`) when the group's state machine refuses that
    /// fence (a newer driver fenced the group). Absent from older senders: no fence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FenceToken>,
    /// The change asked for.
    #[serde(flatten)]
    pub op: MembershipOp,
}

/// Checks a membership request against the newest map this group leader knows (`map`) and the
/// newest epoch it accepted before (`accepted`). Pure.
fn check_request(
    map: &ClusterMap,
    accepted: u64,
    group: GroupId,
    req: &MembershipRequest,
) -> Result<(), ApiError> {
    if req.epoch > map.epoch {
        return Err(ApiError::Unavailable(format!(
            "the request is at epoch {}, this node knows only epoch {}; retry once it has \
             learned the newer map",
            req.epoch, map.epoch
        )));
    }
    if req.epoch < map.epoch || req.epoch < accepted {
        return Err(ApiError::StaleTask(format!(
            "the request is at epoch {}, but this node's map is at epoch {} and it accepted \
             epoch {accepted}: it comes from a deposed metadata leader or an outdated step",
            req.epoch, map.epoch
        )));
    }
    let Some(task) = map.tasks.iter().find(|t| t.id == req.task) else {
        return Err(ApiError::StaleTask(format!(
            "task {} is not in the map at epoch {}",
            req.task, map.epoch
        )));
    };
    let fits = match &task.kind {
        TaskKind::ReplaceReplica {
            group: g,
            dead,
            replacement,
        } => {
            *g == group
                && match &req.op {
                    MembershipOp::AddLearner { node, .. }
                    | MembershipOp::RemoveLearner { node } => node == replacement,
                    MembershipOp::ReplaceVoter {
                        dead: d,
                        replacement: r,
                        live,
                    } => d == dead && r == replacement && !live,
                }
        }
        TaskKind::ViewChange(v) => match (v.steps.get(v.next), &req.op) {
            (
                Some(Step::AddLearner { group: g, node }),
                MembershipOp::AddLearner { node: n, .. },
            ) => *g == group && n == node,
            (
                Some(Step::ReplaceVoter { group: g, old, new }),
                MembershipOp::ReplaceVoter {
                    dead, replacement, ..
                },
            ) => *g == group && dead == old && replacement == new,
            // The clean-up of a change that stops: a learner one of its steps so far added.
            (_, MembershipOp::RemoveLearner { node: n }) => v.steps.iter().take(v.next + 1).any(
                |s| matches!(s, Step::AddLearner { group: g, node } if *g == group && node == n),
            ),
            _ => false,
        },
    };
    if !fits {
        return Err(ApiError::StaleTask(format!(
            "task {} at epoch {} does not do {:?} in group {group}",
            req.task, map.epoch, req.op
        )));
    }
    Ok(())
}

/// Admits `req` on this group leader: first learns the request's epoch if it is newer than the
/// local map (a heartbeat at once, waited for briefly), then [`check_request`]; an admitted
/// epoch becomes the oldest this node accepts from now on.
async fn admit(state: &Node, group: GroupId, req: &MembershipRequest) -> Result<(), ApiError> {
    state.learn_epoch(req.epoch, MAP_LEARN_WAIT).await;
    let accepted = state.steps.accepted();
    check_request(&state.map(), accepted, group, req)?;
    state.steps.accept(req.epoch);
    Ok(())
}

/// Commits [`Command::Fence`] with `token` in the group's log: refused (`stale_task`) when a
/// newer driver fenced the group.
async fn fence(raft: &Raft, group: GroupId, token: FenceToken) -> Result<(), ApiError> {
    let r = tokio::time::timeout(
        MAP_LEARN_WAIT * 5,
        raft.client_write(Command::Fence { token }),
    )
    .await
    .map_err(|_| ApiError::Unavailable("the step's fence was not committed in time".into()))?
    .map_err(|e| ApiError::Unavailable(format!("the step's fence failed: {e}")))?;
    match r.data {
        CommandResult::Admin(AdminResult::Fenced { current }) => {
            tracing::warn!(group = %group, fence = %current, token = %token, "refused a deposed driver's membership step");
            Err(ApiError::StaleTask(format!(
                "group {group} is fenced by the driver of {current}; this step ({token}) comes \
                 from a deposed metadata leader"
            )))
        }
        _ => Ok(()),
    }
}

/// Runs `op` on `raft`, which must lead its group, waiting at most `wait` for a new learner to
/// catch up. Idempotent: a change already in place is a
/// success.
pub(crate) async fn apply_membership(
    state: &Node,
    raft: &Raft,
    op: &MembershipOp,
    wait: Duration,
) -> Result<(), ApiError> {
    let me = state.id();
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) || !m.state.is_leader() {
        return Err(ApiError::NotLeader {
            leader: m.current_leader,
        });
    }
    let membership = m.membership_config.membership().clone();
    let is_voter = |n: &NodeId| membership.voter_ids().any(|v| v == *n);
    let is_node = |n: &NodeId| membership.get_node(n).is_some();
    let failed = |e: String| ApiError::Unavailable(format!("membership change failed: {e}"));
    match op {
        MembershipOp::AddLearner { node, addr } => {
            let index = if is_node(node) {
                m.last_log_index.unwrap_or(0)
            } else {
                raft.add_learner(*node, BasicNode::new(addr), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .log_id
                    .index
            };
            let node = *node;
            raft.wait(Some(wait))
                .metrics(
                    move |mm| matched(mm, node).is_some_and(|i| i >= index),
                    "the learner caught up",
                )
                .await
                .map_err(|e| {
                    ApiError::Unavailable(format!("learner {node} still catching up: {e}"))
                })?;
        }
        MembershipOp::ReplaceVoter {
            dead,
            replacement,
            live,
        } => {
            let joint = membership.get_joint_config();
            let last: BTreeSet<NodeId> = joint.last().cloned().unwrap_or_default();
            let target: BTreeSet<NodeId> = last
                .iter()
                .copied()
                .filter(|n| n != dead)
                .chain([*replacement])
                .collect();
            if joint.len() == 1 && last == target {
                return Ok(());
            }
            if !is_node(replacement) {
                return Err(ApiError::NoLearner(*replacement));
            }
            // Not begun yet: make sure the dead replica is really gone before it leaves for good.
            // Once the joint configuration is in the log, the change is only finished.
            if joint.len() == 1 && last.contains(dead) && !live {
                if *dead == me {
                    return Err(ApiError::ReplicaAlive {
                        node: me,
                        detail: "it leads the group".into(),
                    });
                }
                confirm_gone(raft, *dead).await?;
                confirm_unreached(state, raft, *dead).await?;
            }
            // One call: openraft commits the joint configuration (old and new voters, a quorum
            // of each), then the new one; the group never has more than K voters in a config.
            raft.change_membership(ChangeMembers::ReplaceAllVoters(target), false)
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        MembershipOp::RemoveLearner { node } => {
            if is_node(node) && !is_voter(node) {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*node])), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Runs membership request `req` on this node's replica of `group`, which must lead it, once
/// the request's task and epoch are current (see `check_request`); the route is
/// `POST /internal/v1/groups/{group}/membership`.
pub async fn serve_membership(
    state: &Node,
    group: GroupId,
    req: MembershipRequest,
) -> Result<(), ApiError> {
    let raft = state.leading_replica(group)?;
    if let Err(e) = admit(state, group, &req).await {
        tracing::warn!(group = %group, task = req.task, epoch = req.epoch, error = %e, "membership request refused");
        return Err(e);
    }
    // The fence and the change under the group's step lock: no newer driver's fence can land
    // between them on this leader.
    let lock = state.steps.step_lock(group);
    let _one = lock.lock().await;
    if let Some(token) = req.token {
        fence(&raft, group, token).await?;
    }
    match apply_membership(state, &raft, &req.op, catch_up_wait(state)).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if matches!(e, ApiError::ReplicaAlive { .. }) {
                tracing::warn!(group = %group, task = req.task, error = %e, "membership change refused");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use serde_json::json;

    fn request(task: u64, epoch: u64, op: MembershipOp) -> MembershipRequest {
        MembershipRequest {
            task,
            epoch,
            op,
            token: None,
        }
    }

    // A group's leader accepts a step of a task in its newest map at that map's epoch, and
    // refuses: an older epoch, an epoch older than one it accepted, an unknown task, a step the
    // task does not do, and (as unavailable) an epoch newer than its map.
    #[test]
    fn membership_requests_are_checked_against_the_newest_map() {
        let mut m = map(7);
        m.epoch = 10;
        m.tasks.push(task(4, 2, 5, 7));
        let g2 = GroupId(2);
        let add = MembershipOp::AddLearner {
            node: 7,
            addr: "127.0.0.7:7000".into(),
        };
        let swap = MembershipOp::ReplaceVoter {
            dead: 5,
            replacement: 7,
            live: false,
        };
        assert!(check_request(&m, 0, g2, &request(4, 10, add.clone())).is_ok());
        assert!(check_request(&m, 10, g2, &request(4, 10, swap.clone())).is_ok());
        let code = |r: Result<(), ApiError>| r.err().map(|e| e.code());
        assert_eq!(
            code(check_request(&m, 0, g2, &request(4, 9, add.clone()))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 11, g2, &request(4, 10, add.clone()))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 0, g2, &request(5, 10, add.clone()))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 0, GroupId(1), &request(4, 10, add))),
            Some("stale_task")
        );
        let other = MembershipOp::ReplaceVoter {
            dead: 4,
            replacement: 7,
            live: false,
        };
        assert_eq!(
            code(check_request(&m, 0, g2, &request(4, 10, other))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 0, g2, &request(4, 11, swap))),
            Some("unavailable")
        );
    }

    // The wire form of a membership request: task and epoch beside the tagged operation.
    #[test]
    fn membership_request_wire_form() {
        let r = request(
            4,
            10,
            MembershipOp::ReplaceVoter {
                dead: 5,
                replacement: 7,
                live: false,
            },
        );
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(
            v,
            json!({ "task": 4, "epoch": 10, "op": "replace_voter", "dead": 5, "replacement": 7 })
        );
        let back: MembershipRequest = serde_json::from_value(v).expect("deserializes");
        assert_eq!((back.task, back.epoch), (4, 10));
    }
}
