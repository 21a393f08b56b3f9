//! Slot operations of view changes, asked of a data group by the metadata leader: initializing a
//! new group, proposing the slot-table commands of a move (InitSlots, BeginIncoming, Freeze,
//! Ingest, Release, Activate, DropSlots and the rollbacks Unfreeze and AbortIncoming), reading a
//! chunk of slot data for the copy and the group leader's slot states.
//!
//! Steps of a request: (1) the driver sends it over `POST /internal/v1/groups/{group}/admin`
//! (bincode, like Raft RPCs: a chunk carries values up to the value limit) to the group's leader,
//! following `not_leader` hints; (2) the receiver admits it like a membership request: it first
//! learns a newer epoch than its map's, then refuses an epoch older than its map's or than one
//! it accepted (a deposed metadata leader), and a task that is not a view change in its map;
//! (3) it runs the operation: a proposal through the group's log (the state machine decides, the
//! same on every replica), or a read after a read-index round, so that it sees every committed
//! slot command (a copy after Freeze reads exactly the frozen data).

use kvorum_raftstore::{AdminResult, Command, CommandResult, FenceToken, GroupId, SlotState};

use super::state::Meta;

use super::leader_call::{call_leader, Answer, LeaderCall};
use crate::group::admin::{AdminOp, AdminReply, AdminRequest, ADMIN_TIMEOUT};

/// Why an admin call failed, as its driver sees it.
#[derive(Debug, thiserror::Error)]
pub(super) enum AdminError {
    /// The receiver refused it as stale: this driver's map is not the newest; it stops.
    #[error("stale admin request: {0}")]
    Stale(String),
    /// Not delivered or failed; retry.
    #[error("{0}")]
    Failed(String),
    /// The group's state machine refused a slot command: `slot` is in `state`, from which the
    /// command's transition is not allowed. Deterministic: repeating it gets the same answer
    /// until another command changes the slot.
    #[error("group {group} refused a slot command: slot {slot} is {state:?}")]
    Refused {
        group: GroupId,
        slot: u16,
        state: SlotState,
    },
}

/// Sends `op` of view-change `task` to `group`'s leader (the leader hint first, then every
/// member) with the newest map's epoch. `Initialize` goes to `to` when given.
pub(super) async fn admin(
    meta: &Meta,
    group: GroupId,
    token: FenceToken,
    op: AdminOp,
    to: Option<&str>,
) -> Result<AdminReply, AdminError> {
    if !super::lease::acts_in(meta, token.term).await {
        return Err(AdminError::Stale(format!(
            "this node no longer holds a confirmed metadata role in term {}",
            token.term
        )));
    }
    let map = meta.node.map();
    let req = AdminRequest {
        task: token.task,
        token,
        epoch: map.epoch,
        op,
        map: serde_json::to_string(&*map).ok(),
    };
    let body = bincode::serialize(&req).map_err(|e| AdminError::Failed(e.to_string()))?;
    let addrs: Vec<String> = match to {
        Some(a) => vec![a.to_string()],
        None => {
            // The group's leader first: this node when its own replica leads (the metadata
            // leader often leads a data group too), else the leader hint, then the members.
            let mut addrs = meta.node.group_addrs(group);
            if let (true, Some(me)) = (meta.node.leads(group), map.addr(meta.node.id())) {
                addrs.insert(0, me.to_string());
            }
            addrs
        }
    };
    let call = LeaderCall {
        group,
        path: format!("/internal/v1/groups/{}/admin", group.0),
        content_type: "application/octet-stream",
        body,
        timeout: ADMIN_TIMEOUT,
        final_codes: &["stale_task"],
    };
    match call_leader(meta, addrs, call).await {
        Ok(Answer::Ok(bytes)) => match bincode::deserialize(&bytes) {
            // The group's state machine refused the step: a newer driver fenced the group.
            Ok(AdminReply::Result(CommandResult::Admin(AdminResult::Fenced { current }))) => {
                Err(AdminError::Stale(format!(
                    "group {group} is fenced by the driver of {current}; this driver ({token}) \
                     is deposed"
                )))
            }
            Ok(reply) => Ok(reply),
            Err(e) => Err(AdminError::Failed(format!(
                "bad admin reply from group {group}: {e}"
            ))),
        },
        Ok(Answer::Refused(err)) => Err(AdminError::Stale(err.message)),
        Err(last) => Err(AdminError::Failed(format!(
            "slot operation on group {group} failed: {last}"
        ))),
    }
}

/// Proposes the slot command `cmd` on `group` and checks that it applied.
pub(super) async fn propose(
    meta: &Meta,
    group: GroupId,
    token: FenceToken,
    cmd: Command,
) -> Result<CommandResult, AdminError> {
    match admin(meta, group, token, AdminOp::Propose { cmd }, None).await? {
        AdminReply::Result(CommandResult::Admin(AdminResult::SlotState { slot, state })) => {
            Err(AdminError::Refused { group, slot, state })
        }
        AdminReply::Result(r) => Ok(r),
        other => Err(AdminError::Failed(format!(
            "unexpected admin reply {other:?}"
        ))),
    }
}

/// Raises `group`'s fence to `token` (see [`AdminOp::Fence`]); a refusal (a newer driver fenced
/// the group) is [`AdminError::Stale`].
pub(super) async fn raise_fence(
    meta: &Meta,
    group: GroupId,
    token: FenceToken,
) -> Result<(), AdminError> {
    match admin(meta, group, token, AdminOp::Fence, None).await? {
        AdminReply::Result(CommandResult::None) => Ok(()),
        other => Err(AdminError::Failed(format!(
            "unexpected reply to a fence: {other:?}"
        ))),
    }
}
