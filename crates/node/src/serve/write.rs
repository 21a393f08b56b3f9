//! The write path: proposing a command through the group's Raft log, and retrying a request
//! that met a moving slot.

use std::time::Instant;

use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_raftstore::{Command, CommandResult, GroupId, Raft, WriteResult};
use kvorum_router::Slot;
use kvorum_wire::{DeleteReply, WriteReply};
use openraft::error::{ClientWriteError, RaftError};

use crate::error::ApiError;
use crate::node::Node;

use super::request::Incoming;
use super::route::{forward, leader_target, resolve, Target};

/// First wait before a request to a moving slot is tried again; it doubles up to
/// [`MOVE_RETRY_MAX`].
const MOVE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(5);
/// Longest wait between two tries of a request to a moving slot: a batch's frozen window is tens
/// of milliseconds, and a longer wait would add up to itself to the request's pause (each try
/// also asks for the newest map).
const MOVE_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(10);

/// Proposes the key write `cmd` through `raft`'s log and waits for it to apply.
pub(crate) async fn propose(
    state: &Node,
    raft: &Raft,
    cmd: Command,
) -> Result<WriteResult, ApiError> {
    let timeout = state.cfg.request_timeout;
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Ok(Ok(resp)) => match resp.data {
            CommandResult::Write(result) => Ok(result),
            // A key write's entry always answers a write result: a bug.
            other => Err(ApiError::Internal(format!(
                "a key write applied as a non-write entry: {other:?}"
            ))),
        },
        // openraft also answers ForwardToLeader for an entry it appended and later truncated,
        // which another replica may still commit: not definite.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(
            ApiError::OutcomeUnknown("leadership changed after the write was proposed".into()),
        ),
        Ok(Err(e)) => Err(ApiError::OutcomeUnknown(e.to_string())),
        Err(_) => Err(ApiError::OutcomeUnknown(format!(
            "not committed within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Runs `serve` again while it answers `slot_moving` (the key's slot is being moved between
/// groups: nothing was written), refreshing the map meanwhile, until the request's deadline; then
/// the last `slot_moving` is the answer (definite).
pub(crate) async fn through_moves<F, Fut>(state: &Node, mut serve: F) -> Result<Response, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let deadline = Instant::now() + state.cfg.request_timeout;
    let mut backoff = MOVE_RETRY_FIRST;
    loop {
        match serve().await {
            Err(ApiError::SlotMoving { .. }) if Instant::now() + backoff < deadline => {
                state.refresh.notify_one();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MOVE_RETRY_MAX);
            }
            other => return other,
        }
    }
}

/// Serves a write: locally when this node leads the key's group, else at its leader. A write to
/// a slot being moved waits for the move (see [`through_moves`]).
pub(crate) async fn write(
    state: &Node,
    inc: &Incoming,
    cmd: Command,
) -> Result<Response, ApiError> {
    through_moves(state, || write_once(state, inc, cmd.clone())).await
}

pub(crate) async fn write_once(
    state: &Node,
    inc: &Incoming,
    cmd: Command,
) -> Result<Response, ApiError> {
    let key = cmd.key().to_string();
    let (slot, group, epoch) = resolve(state, inc, &key).await?;
    match leader_target(state, group).await? {
        Target::Forward(addrs) => forward(state, &addrs, inc, slot, true).await,
        Target::Local(replica) => {
            #[cfg(feature = "test-faults")]
            if state.faults.ack_before_commit() {
                if let Some(result) =
                    ack_before_commit(state, &replica.raft, group, &cmd, slot, epoch).await?
                {
                    return write_response(key, slot, result);
                }
            }
            #[cfg(feature = "test-faults")]
            let fail = state.faults.fail_this_proposal();
            let result = propose(state, &replica.raft, cmd.routed(slot.0, epoch)).await?;
            #[cfg(feature = "test-faults")]
            if let Some(message) = fail {
                // Planted fault: a definite failure for a write that was proposed (and here
                // committed).
                return Err(ApiError::Unavailable(message));
            }
            write_response(key, slot, result)
        }
    }
}

/// Planted fault `KVORUM_FAULT_ACK_BEFORE_COMMIT` (see `faults.rs`): hands `cmd` to Raft without
/// waiting for it to commit, and returns the result predicted from the key's applied record,
/// with the version the entry would get (the log index it was appended at, plus the group's
/// version base). `None` when the prediction is a refusal: the caller proposes honestly. The
/// entry is `cmd` routed as `(slot, epoch)`, as honest proposals are.
#[cfg(feature = "test-faults")]
pub(crate) async fn ack_before_commit(
    state: &Node,
    raft: &Raft,
    group: GroupId,
    cmd: &Command,
    slot: Slot,
    epoch: u64,
) -> Result<Option<WriteResult>, ApiError> {
    let current = state
        .store
        .read(group, cmd.key())
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let (before, applied) = {
        let m = raft.metrics().borrow().clone();
        (
            m.last_log_index.unwrap_or(0),
            m.last_applied.map_or(0, |l| l.index),
        )
    };
    let base = state
        .store
        .version_high_water(group)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .saturating_sub(applied);
    if crate::faults::predicted_result(cmd, 0, current.as_ref()).is_none() {
        return Ok(None);
    }
    let rx = raft
        .client_write_ff(cmd.clone().routed(slot.0, epoch))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Nobody waits for the outcome; the task only keeps openraft from logging a dropped responder.
    tokio::spawn(rx);
    let index = raft
        .wait(Some(state.cfg.request_timeout))
        .metrics(|m| m.last_log_index > Some(before), "the write is appended")
        .await
        .ok()
        .and_then(|m| m.last_log_index)
        .unwrap_or(before + 1);
    Ok(crate::faults::predicted_result(
        cmd,
        index + base,
        current.as_ref(),
    ))
}

/// The answer to a key write whose entry applied with `result`.
pub(crate) fn write_response(
    key: String,
    slot: Slot,
    result: WriteResult,
) -> Result<Response, ApiError> {
    match result {
        // Refused at apply: the slot is frozen by a move, or no longer (or not yet) this group's.
        WriteResult::Frozen { .. } => Err(ApiError::SlotMoving {
            slot,
            detail: "frozen for a move".into(),
        }),
        WriteResult::NotOwner { .. } => Err(ApiError::SlotMoving {
            slot,
            detail: "the group no longer, or not yet, owns it".into(),
        }),
        // This node and the group's state machine disagree on the key's slot: a bug, or nodes
        // that hash keys differently. Nothing was written.
        WriteResult::Misrouted { .. } => Err(ApiError::Internal(format!(
            "the group refused the write as misrouted: {result:?}"
        ))),
        WriteResult::Written { version } => Ok(Json(WriteReply { key, version }).into_response()),
        WriteResult::Deleted { existed } => Ok(Json(DeleteReply {
            deleted: existed,
            key,
        })
        .into_response()),
        WriteResult::ConditionFailed { current } => Err(ApiError::ConditionFailed { current }),
        // Refused at apply (the append would grow the value past the limit): definite.
        WriteResult::ValueTooLarge { len, limit } => Err(ApiError::ValueTooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(limit).unwrap_or(usize::MAX),
        }),
        WriteResult::KeyTooLarge { len, limit } => Err(ApiError::KeyTooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(limit).unwrap_or(usize::MAX),
        }),
    }
}
