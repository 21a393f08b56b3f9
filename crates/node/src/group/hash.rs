//! The state hash of the consistency check, on a group's leader.

use std::time::Duration;

use kvorum_raftstore::{AdminResult, Command, CommandResult, GroupId, StateHash};

use crate::error::ApiError;
use crate::node::Node;

/// Longest wait of a group's leader for its `ComputeHash` to apply (it scans the group).
pub(crate) const HASH_TIMEOUT: Duration = Duration::from_secs(30);

/// Proposes `Command::ComputeHash` on this node's replica of `group`, which must lead it, and
/// answers the leader's [`StateHash`] once it applied; the route is
/// `POST /internal/v1/groups/{group}/hash`.
pub async fn state_hash(state: &Node, group: GroupId) -> Result<StateHash, ApiError> {
    let raft = state.leading_replica(group)?;
    let r = tokio::time::timeout(HASH_TIMEOUT, raft.client_write(Command::ComputeHash))
        .await
        .map_err(|_| ApiError::Unavailable("ComputeHash not applied in time".into()))?
        .map_err(|e| ApiError::Unavailable(format!("ComputeHash failed: {e}")))?;
    match r.data {
        CommandResult::Admin(AdminResult::Hashed { index, hash }) => Ok(StateHash { index, hash }),
        other => Err(ApiError::Internal(format!(
            "ComputeHash answered {other:?}"
        ))),
    }
}
