//! The handlers of the internal control routes (`/internal/v1/...` but the Raft RPCs, which are
//! `transport`'s): each checks the call, decodes it, and hands it to the role that answers it —
//! the metadata leader (`meta`: heartbeats, the consistency check), a group's leader (`group`:
//! admin and membership steps, state hashes) or any node (`status`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_raftstore::GroupId;
use serde_json::json;

use crate::error::ApiError;
use crate::group::{self, AdminReply, AdminRequest, MembershipRequest};
use crate::meta::{self, Heartbeat, HeartbeatReply, Meta};
use crate::node::Node;

use super::forward::forward;
use super::transport::check_internal;

/// `POST /internal/v1/heartbeat`.
pub async fn heartbeat_handler(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    headers: HeaderMap,
    Json(beat): Json<Heartbeat>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    check_internal(&state, &headers)?;
    Ok(Json(meta::receive_heartbeat(&meta, beat)?))
}

/// `POST /internal/v1/groups/{group}/admin` (bincode both ways): an admin step of a view
/// change, on the group's leader (see `group::admin`).
pub async fn admin_handler(
    State(state): State<Arc<Node>>,
    Path(group): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_internal(&state, &headers)?;
    let req: AdminRequest = bincode::deserialize(&body)
        .map_err(|e| ApiError::BadRequest(format!("bad admin request: {e}")))?;
    let r: AdminReply = group::serve_admin(&state, GroupId(group), req).await?;
    match bincode::serialize(&r) {
        Ok(b) => Ok((StatusCode::OK, b).into_response()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// `POST /internal/v1/groups/{group}/membership`: a membership step of a repair or a view
/// change, on the group's leader (see `group::membership`).
pub async fn membership_handler(
    State(state): State<Arc<Node>>,
    Path(group): Path<u64>,
    headers: HeaderMap,
    Json(req): Json<MembershipRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_internal(&state, &headers)?;
    group::serve_membership(&state, GroupId(group), req).await?;
    Ok(Json(json!({ "ok": true })))
}

/// `POST /internal/v1/groups/{group}/hash`, on the group's leader: its [`kvorum_raftstore::StateHash`]
/// (JSON) once a `ComputeHash` applied.
pub async fn hash_handler(
    State(state): State<Arc<Node>>,
    Path(group): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_internal(&state, &headers)?;
    let hash = group::hash::state_hash(&state, GroupId(group)).await?;
    Ok(Json(hash).into_response())
}

/// `POST /v1/cluster/consistency`: an on-demand check (`meta::check_now`), answered with a
/// [`kvorum_wire::ConsistencyReport`]; any node forwards it to the metadata leader.
pub async fn consistency_handler(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !meta::is_metadata_leader(&state) {
        return forward(
            &state,
            Method::POST,
            "/v1/cluster/consistency",
            &headers,
            Bytes::new(),
        )
        .await;
    }
    Ok(Json(meta::check_now(&meta).await).into_response())
}

/// `GET /internal/v1/status`: the status as this node knows it (the metadata leader's is full).
pub async fn status_handler(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    Json(crate::status::status(&meta)).into_response()
}

/// `POST /internal/v1/reach`: whether this node reaches the body's address (a group leader's
/// liveness probe asks the other members, `group::probe`).
pub async fn reach_handler(
    State(state): State<Arc<Node>>,
    headers: HeaderMap,
    Json(req): Json<group::probe::ReachRequest>,
) -> Result<Json<group::probe::ReachReply>, ApiError> {
    check_internal(&state, &headers)?;
    Ok(Json(group::probe::ReachReply {
        reached: group::probe::reaches(&state, &req.addr).await,
    }))
}
