//! The read path: a linearizable read through a batched read index, or a stale read, at this
//! node's replica or forwarded.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_raftstore::{GroupId, ServedRead, StoreError};
use kvorum_router::Slot;
use kvorum_wire::{GetQuery, KeyReply};

use crate::error::ApiError;
use crate::node::Node;
use crate::serve::read_index::ReadIndex;

use super::request::Incoming;
use super::route::{forward, leader_target, member_replica, node_addr, resolve, Target};

/// Reads `key` from this node's replica of `group`, which must own its slot at map `epoch`
/// (checked after the read index, where the slot table is current, and again after the read:
/// a move's Release or DropSlots, or the group's drop, may apply in between).
pub(crate) fn local_read(
    state: &Node,
    group: GroupId,
    slot: Slot,
    epoch: u64,
    key: &str,
) -> Result<Response, ApiError> {
    match state.store.read_served(group, slot.0, epoch, key) {
        Ok(ServedRead::Found(r)) => {
            let reply = KeyReply {
                key: key.to_string(),
                value: r.value,
                version: r.version,
            };
            Ok(Json(reply).into_response())
        }
        Ok(ServedRead::Absent) => Err(ApiError::KeyNotFound(key.to_string())),
        Ok(ServedRead::NotServed) => Err(ApiError::SlotMoving {
            slot,
            detail: "the group no longer, or not yet, owns it".into(),
        }),
        // Only a follower installs snapshots: a stale read can retry here or at another replica.
        Err(e @ StoreError::Installing { .. }) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(state.store_failed(group, e)),
    }
}

pub(crate) async fn read_once(
    state: &Arc<Node>,
    inc: &Incoming,
    key: &str,
    q: &GetQuery,
) -> Result<Response, ApiError> {
    let state = state.clone();
    let (slot, group, epoch) = resolve(&state, inc, key).await?;
    let local = member_replica(&state, group).is_some();
    if q.stale || (state.faults.stale_reads() && local) {
        // A stale read (or the injected fault): whatever this replica has applied.
        return if local {
            local_read(&state, group, slot, epoch, key)
        } else {
            forward(&state, &state.group_addrs(group), inc, slot, false).await
        };
    }
    match leader_target(&state, group).await? {
        Target::Forward(addrs) => forward(&state, &addrs, inc, slot, false).await,
        Target::Local(replica) => {
            let outcome =
                tokio::time::timeout(state.cfg.request_timeout, replica.reads.read_index()).await;
            match outcome {
                Ok(ReadIndex::Ready) => local_read(&state, group, slot, epoch, key),
                Ok(ReadIndex::NotLeader { leader: Some(l) }) if l != state.id() => {
                    match node_addr(&replica.raft, l) {
                        Some(addr) => forward(&state, &[addr], inc, slot, false).await,
                        None => Err(ApiError::NoLeader { group }),
                    }
                }
                Ok(ReadIndex::NotLeader { .. }) => Err(ApiError::NoLeader { group }),
                Ok(ReadIndex::Failed(m)) => {
                    Err(ApiError::Unavailable(format!("read index failed: {m}")))
                }
                Err(_) => Err(ApiError::Unavailable("read index timed out".into())),
            }
        }
    }
}
