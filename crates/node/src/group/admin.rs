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

use std::collections::BTreeMap;
use std::time::Duration;

use kvorum_raftstore::{
    AdminResult, Command, CommandResult, FenceToken, GroupId, NodeId, SlotState, Versioned,
};
use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::steps::MAP_LEARN_WAIT;
use crate::error::ApiError;
use crate::node::Node;

/// Longest an admin call may take (a proposal, a read-index round and a chunk read).
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One slot operation on a data group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminOp {
    /// Initialize the group with `members` as voters if this replica's log is empty (asked of
    /// one member of a group a view change creates; the others learn from its leader).
    Initialize {
        /// The voters and their addresses.
        members: BTreeMap<NodeId, String>,
    },
    /// Propose a slot command (never a key write) through the group's log and answer its
    /// result. Leader only.
    Propose {
        /// The command.
        cmd: Command,
    },
    /// Read up to `max_bytes` of the data of `slots` after the key `after`, in key order, after
    /// a read-index round. Leader only. The reply's high-water mark is read before the data, so
    /// every write the chunk does not show has a version above it (a copy made before the
    /// source froze catches up from there). Records whose version is at most `since` come back
    /// as keys only (`unchanged`).
    ///
    /// With `freeze`, the leader first proposes `Freeze { slots }` and reads right after it
    /// applied, without a read-index round: once the Freeze applied on this replica, no later
    /// entry can change the slots' data but an Unfreeze (after which the source's Release, the
    /// copy's gate, is refused), so this replica's state is the slots' final data. A refused
    /// Freeze answers `Result` with the refusal.
    Scan {
        /// Inclusive slot ranges.
        slots: Vec<(u16, u16)>,
        /// Resume after this position (the previous chunk's `next`).
        after: Option<Vec<u8>>,
        /// Bytes to return at most (at least one record when any remain).
        max_bytes: usize,
        /// Records at or below this version are returned as keys only (0: none).
        since: u64,
        /// Freeze the slots first (see above).
        freeze: bool,
    },
    /// The group's version high-water mark (every version it ever gave is at most this), after
    /// a read-index round: the destination of a move raises its version base above it, so
    /// versions of moved keys never go backwards, deleted-then-recreated ones included.
    VersionHighWater,
    /// The state of each slot of `slots` in the leader's slot table, after a read-index round.
    SlotStates {
        /// Inclusive slot ranges.
        slots: Vec<(u16, u16)>,
    },
    /// Raise the group's fence to the request's token ([`Command::Fence`]): asked of every
    /// group a driver touches before its first other step, so a deposed driver's later steps are
    /// refused by the group's state machine. Answers the command's result.
    Fence,
}

/// `POST /internal/v1/groups/{group}/admin`, bincode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminRequest {
    /// The view-change task the operation belongs to.
    pub task: u64,
    /// The driver's token: every command the operation proposes is a [`Command::Fenced`] step
    /// under it, so the group's state machine refuses it once a newer driver fenced the group.
    pub token: FenceToken,
    /// The epoch of the sender's map (see the module docs).
    pub epoch: u64,
    /// What to do.
    pub op: AdminOp,
    /// The sender's map (JSON), so that a receiver whose map is older installs it at once rather
    /// than waiting for a heartbeat: a move changes the map several times per batch.
    pub map: Option<String>,
}

/// The answer to an [`AdminRequest`], bincode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminReply {
    /// `Initialize` done (or the replica was initialized already).
    Initialized,
    /// The result of a proposed command.
    Result(CommandResult),
    /// A chunk of slot data; `next` is `None` at the end.
    Chunk {
        /// Keys and records, in key order.
        records: Vec<(String, Versioned)>,
        /// Keys present whose version is at most the scan's `since`, without their records.
        unchanged: Vec<String>,
        /// Where to resume.
        next: Option<Vec<u8>>,
        /// Bytes of the chunk (keys and values).
        bytes: u64,
        /// The group's version high-water mark when the chunk was read (see
        /// [`AdminOp::VersionHighWater`]); final once the slots are frozen.
        high_water: u64,
    },
    /// Slot states, in slot order.
    States(Vec<SlotState>),
    /// The version high-water mark.
    HighWater(u64),
}

/// Admits `req` on this group's leader: learns a newer epoch first, then checks it against the
/// newest map and the newest epoch accepted before. Pure part: [`check_admin`].
async fn admit(state: &Node, req: &AdminRequest) -> Result<(), ApiError> {
    if state.map().epoch < req.epoch {
        // The metadata leader's map, sent with the request over an authenticated internal route
        // (the same trust as a heartbeat reply): installed only if it is the epoch it claims.
        let sent = req
            .map
            .as_deref()
            .and_then(|m| serde_json::from_str::<kvorum_router::ClusterMap>(m).ok())
            .filter(|m| m.epoch == req.epoch && m.validate().is_ok());
        if let Some(m) = sent {
            if let Err(e) = state.install_map(m).await {
                tracing::warn!(error = %e, "could not install the map of an admin request");
            }
        }
    }
    state.learn_epoch(req.epoch, MAP_LEARN_WAIT).await;
    let accepted = state.steps.accepted();
    check_admin(&state.map(), accepted, req)?;
    state.steps.accept(req.epoch);
    Ok(())
}

/// Checks an admin request against the newest map this node knows and the newest epoch it
/// accepted. Pure.
fn check_admin(
    map: &kvorum_router::ClusterMap,
    accepted: u64,
    req: &AdminRequest,
) -> Result<(), ApiError> {
    if req.epoch > map.epoch {
        return Err(ApiError::Unavailable(format!(
            "the request is at epoch {}, this node knows only epoch {}",
            req.epoch, map.epoch
        )));
    }
    if req.epoch < map.epoch || req.epoch < accepted {
        return Err(ApiError::StaleTask(format!(
            "the request is at epoch {}, this node's map is at epoch {} and it accepted epoch \
             {accepted}",
            req.epoch, map.epoch
        )));
    }
    let running = map
        .tasks
        .iter()
        .any(|t| t.id == req.task && t.kind.view_change().is_some());
    if !running {
        return Err(ApiError::StaleTask(format!(
            "task {} is not a running view change at epoch {}",
            req.task, map.epoch
        )));
    }
    if let AdminOp::Propose { cmd } = &req.op {
        if !cmd.is_slot_command() {
            return Err(ApiError::BadRequest(
                "only slot commands may be proposed here".into(),
            ));
        }
    }
    Ok(())
}

/// Runs admin request `req` on this node's replica of `group` (see the module docs); the
/// route is `POST /internal/v1/groups/{group}/admin`.
pub async fn serve_admin(
    state: &Node,
    group: GroupId,
    req: AdminRequest,
) -> Result<AdminReply, ApiError> {
    let Some(replica) = state.replica(group) else {
        return Err(ApiError::NotLeader { leader: None });
    };
    let raft = replica.raft.clone();
    if let AdminOp::Initialize { members } = &req.op {
        admit(state, &req).await?;
        if raft.is_initialized().await.unwrap_or(false) {
            return Ok(AdminReply::Initialized);
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a)))
            .collect();
        return match raft.initialize(nodes).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(group = %group, "initialized a group created by a view change");
                Ok(AdminReply::Initialized)
            }
            Err(e) => Err(ApiError::Unavailable(format!("initialize failed: {e}"))),
        };
    }
    let leader = raft.metrics().borrow().current_leader;
    if leader != Some(state.id()) {
        return Err(ApiError::NotLeader { leader });
    }
    admit(state, &req).await?;
    let token = req.token;
    match req.op {
        AdminOp::Initialize { .. } => Err(ApiError::Internal("unreachable".into())),
        AdminOp::Propose { cmd } => {
            let r = fenced_write(state, group, &raft, cmd.fenced(token)).await?;
            Ok(AdminReply::Result(r))
        }
        AdminOp::Fence => {
            let r = fenced_write(state, group, &raft, Command::Fence { token }).await?;
            Ok(AdminReply::Result(r))
        }
        AdminOp::Scan {
            slots,
            after,
            max_bytes,
            since,
            freeze,
        } => {
            if freeze {
                let cmd = Command::Freeze {
                    slots: slots.clone(),
                };
                let r = fenced_write(state, group, &raft, cmd.fenced(token)).await?;
                if r != CommandResult::None {
                    return Ok(AdminReply::Result(r));
                }
            } else {
                read_index(&raft).await?;
            }
            let high_water = state
                .store
                .version_high_water(group)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let chunk = state
                .store
                .scan_slots_since(group, &slots, after.as_deref(), max_bytes, since)
                .map_err(|e| state.store_failed(group, e))?;
            Ok(AdminReply::Chunk {
                records: chunk.records,
                unchanged: chunk.unchanged,
                next: chunk.next,
                bytes: chunk.bytes,
                high_water,
            })
        }
        AdminOp::VersionHighWater => {
            read_index(&raft).await?;
            let v = state
                .store
                .version_high_water(group)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(AdminReply::HighWater(v))
        }
        AdminOp::SlotStates { slots } => {
            read_index(&raft).await?;
            let states = slots
                .iter()
                .flat_map(|(a, b)| *a..=*b)
                .map(|s| state.store.slot_state(group, s))
                .collect();
            Ok(AdminReply::States(states))
        }
    }
}

/// Proposes a driver's step (a [`Command::Fence`] or [`Command::Fenced`]) on this group's
/// leader and answers its result, holding the group's step lock (see
/// [`super::steps::GroupSteps::step_lock`]) so that it never lands between a membership step's fence
/// and its membership change.
async fn fenced_write(
    state: &Node,
    group: GroupId,
    raft: &kvorum_raftstore::Raft,
    cmd: Command,
) -> Result<CommandResult, ApiError> {
    let lock = state.steps.step_lock(group);
    let _one = lock.lock().await;
    let r = tokio::time::timeout(ADMIN_TIMEOUT, raft.client_write(cmd))
        .await
        .map_err(|_| ApiError::Unavailable("slot command not committed in time".into()))?
        .map_err(|e| ApiError::Unavailable(format!("slot command failed: {e}")))?;
    if let CommandResult::Admin(AdminResult::Fenced { current }) = &r.data {
        tracing::warn!(group = %group, fence = %current, "refused a deposed driver's step");
    }
    Ok(r.data)
}

/// A read-index round: this replica leads and has applied everything committed before it.
async fn read_index(raft: &kvorum_raftstore::Raft) -> Result<(), ApiError> {
    tokio::time::timeout(ADMIN_TIMEOUT, raft.ensure_linearizable())
        .await
        .map_err(|_| ApiError::Unavailable("read index timed out".into()))?
        .map_err(|e| ApiError::Unavailable(format!("read index failed: {e}")))?;
    Ok(())
}
