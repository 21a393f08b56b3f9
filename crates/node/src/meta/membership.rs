//! The driver side of a membership step: sending it to the group's leader (locally for the
//! config group, which this node leads) and what its failure means. The leader side is
//! `group/membership.rs`.

use std::time::Duration;

use kvorum_raftstore::{FenceToken, GroupId};
use kvorum_router::CONFIG_GROUP;

use crate::error::ApiError;

use super::state::Meta;

use super::leader_call::{call_leader, Answer, LeaderCall};
use crate::group::membership::{apply_membership, catch_up_wait, MembershipOp, MembershipRequest};

/// Time a membership call gets beyond the leader's catch-up wait: the membership change itself
/// (a joint and a final entry) and the round trips to and from the group's leader.
const CALL_SLACK: Duration = Duration::from_secs(5);

/// Why a membership step failed, as its driver sees it.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// The group's leader refused the step; `code` is a [`ApiError::code`].
    #[error("{message}")]
    Refused { code: String, message: String },
    /// The step could not be delivered or failed; retry.
    #[error("{0}")]
    Failed(String),
}

impl From<ApiError> for StepError {
    fn from(e: ApiError) -> StepError {
        match e {
            ApiError::NotLeader { .. } | ApiError::Unavailable(_) => {
                StepError::Failed(e.to_string())
            }
            _ => StepError::Refused {
                code: e.code().to_string(),
                message: e.to_string(),
            },
        }
    }
}

/// Runs `op` of task `task` on `group`'s leader: locally for the config group (this node leads
/// it), else over HTTP with the newest map's epoch, at the leader hint, then the other members.
pub(super) async fn membership(
    meta: &Meta,
    group: GroupId,
    token: FenceToken,
    op: &MembershipOp,
) -> Result<(), StepError> {
    if !super::lease::acts_in(meta, token.term).await {
        return Err(StepError::Failed(format!(
            "this node no longer holds a confirmed metadata role in term {}",
            token.term
        )));
    }
    if group == CONFIG_GROUP {
        let raft = meta
            .node
            .group(CONFIG_GROUP)
            .ok_or_else(|| StepError::Failed("no config replica".into()))?;
        return Ok(apply_membership(&meta.node, &raft, op, catch_up_wait(&meta.node)).await?);
    }
    let map = meta.node.map();
    let req = MembershipRequest {
        task: token.task,
        epoch: map.epoch,
        op: op.clone(),
        token: Some(token),
    };
    let call = LeaderCall {
        group,
        path: format!("/internal/v1/groups/{}/membership", group.0),
        content_type: "application/json",
        body: serde_json::to_vec(&req).map_err(|e| StepError::Failed(e.to_string()))?,
        timeout: catch_up_wait(&meta.node) + CALL_SLACK,
        final_codes: &["stale_task", "replica_alive", "no_learner"],
    };
    match call_leader(meta, meta.node.group_addrs(group), call).await {
        Ok(Answer::Ok(_)) => Ok(()),
        Ok(Answer::Refused(err)) => Err(StepError::Refused {
            code: err.code,
            message: err.message,
        }),
        Err(last) => Err(StepError::Failed(format!(
            "membership change {op:?} of group {group} failed: {last}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StatusCode;

    // Membership refusals have their status and code, and the driver retries only what is not
    // a refusal (no leader here, unavailable).
    #[test]
    fn membership_errors_keep_their_status_and_code() {
        let cases = [
            (
                ApiError::NotLeader { leader: Some(2) },
                StatusCode::MISDIRECTED_REQUEST,
                None,
            ),
            (
                ApiError::StaleTask("old".into()),
                StatusCode::CONFLICT,
                Some("stale_task"),
            ),
            (
                ApiError::ReplicaAlive {
                    node: 5,
                    detail: "acked".into(),
                },
                StatusCode::CONFLICT,
                Some("replica_alive"),
            ),
            (
                ApiError::NoLearner(7),
                StatusCode::CONFLICT,
                Some("no_learner"),
            ),
            (
                ApiError::Unavailable("later".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            ),
        ];
        for (e, status, refused) in cases {
            assert_eq!(e.status(), status, "{e}");
            match (StepError::from(e), refused) {
                (StepError::Refused { code, .. }, Some(want)) => assert_eq!(code, want),
                (StepError::Failed(_), None) => {}
                (other, want) => panic!("{other:?}, want a refusal {want:?}"),
            }
        }
    }
}
