//! HTTP routes of view changes: `POST /v1/cluster/nodes`, `DELETE /v1/cluster/nodes/{id}`,
//! `GET /v1/cluster/tasks/{id}` and `POST /v1/cluster/tasks/{id}/cancel` (the contract is
//! `kvorum_wire::cluster`).
//!
//! Steps of an add or remove: (1) any node takes the call; one that is not the metadata leader
//! forwards it there (the leader hint of its heartbeats, then the config voters); (2) the
//! leader checks an added address answers `GET /v1/join` as a node waiting to join; (3) it plans
//! and records the change as a task (`meta::start_change`: refused up front with a stable code
//! when it cannot complete safely) and answers 202 with the task's progress. Task reads are
//! answered from the node's own map (nodes learn the map within a heartbeat).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_router::{NodeId, ViewChange};
use kvorum_wire::{AddNodeBody, TaskProgress};

use crate::error::ApiError;
use crate::meta;
use crate::meta::Meta;
use crate::node::Node;

/// Longest wait for a new node's answer to `GET /v1/join`.
const JOIN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `POST /v1/cluster/nodes`: add the node at `addr`.
pub async fn add_node(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AddNodeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("body must be {{\"addr\": \"ip:port\"}}: {e}"))
    })?;
    let addr = req.addr.trim().to_string();
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApiError::BadRequest(format!(
            "{addr:?} is not an ip:port address"
        )));
    }
    if !meta::is_metadata_leader(&state) {
        return crate::http::forward::forward(
            &state,
            Method::POST,
            "/v1/cluster/nodes",
            &headers,
            body,
        )
        .await;
    }
    let change = ViewChange::AddNode { addr: addr.clone() };
    meta::check_change(&meta, &change)?;
    let joiner = probe_joiner(&state, &addr).await?;
    let task = meta::start_change(&meta, change, Some(joiner.incarnation)).await?;
    accepted(&state, task.id)
}

/// `DELETE /v1/cluster/nodes/{id}`: remove node `id`.
pub async fn remove_node(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node: NodeId = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a node id")))?;
    if !meta::is_metadata_leader(&state) {
        let path = format!("/v1/cluster/nodes/{node}");
        return crate::http::forward::forward(
            &state,
            Method::DELETE,
            &path,
            &headers,
            Bytes::new(),
        )
        .await;
    }
    let task = meta::start_change(&meta, ViewChange::RemoveNode { node }, None).await?;
    accepted(&state, task.id)
}

/// `GET /v1/cluster/tasks/{id}`: a view change's progress.
///
/// A node whose map does not have the task yet (it was accepted after this node's last
/// heartbeat) asks the metadata leader.
pub async fn task(
    State(state): State<Arc<Node>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    let map = state.map();
    match meta::progress(&map, id) {
        Some(p) => Ok(Json::<TaskProgress>(p).into_response()),
        None if id >= map.next_task_id && !meta::is_metadata_leader(&state) => {
            let path = format!("/v1/cluster/tasks/{id}");
            crate::http::forward::forward(&state, Method::GET, &path, &headers, Bytes::new()).await
        }
        None => Err(ApiError::UnknownTask(id)),
    }
}

/// `POST /v1/cluster/tasks/{id}/cancel`: stop a view change safely.
pub async fn cancel(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = task_id(&id)?;
    if !meta::is_metadata_leader(&state) {
        let path = format!("/v1/cluster/tasks/{id}/cancel");
        return crate::http::forward::forward(&state, Method::POST, &path, &headers, Bytes::new())
            .await;
    }
    meta::cancel_change(&meta, id).await?;
    let p = meta::progress(&state.map(), id).ok_or(ApiError::UnknownTask(id))?;
    Ok(Json(p).into_response())
}

fn task_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a task id")))
}

fn accepted(state: &Node, id: u64) -> Result<Response, ApiError> {
    let p = meta::progress(&state.map(), id)
        .ok_or_else(|| ApiError::Internal(format!("task {id} vanished")))?;
    Ok((StatusCode::ACCEPTED, Json(p)).into_response())
}

/// Checks that `addr` answers `GET /v1/join` as a node waiting to join; returns its answer.
async fn probe_joiner(state: &Node, addr: &str) -> Result<kvorum_wire::JoinState, ApiError> {
    let unreachable = |why: String| {
        ApiError::Unreachable(format!(
            "{addr} does not answer as a node waiting to join ({why}); start it first with \
             `kvnode --join <a node's address>` (and IPPORT={addr}), then add it"
        ))
    };
    let resp = state
        .http
        .get(format!("http://{addr}/v1/join"))
        .timeout(JOIN_PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!("it answered {}", resp.status())));
    }
    let join: kvorum_wire::JoinState = resp
        .json()
        .await
        .map_err(|e| unreachable(format!("unreadable answer: {e}")))?;
    if join.state != kvorum_wire::JoinPhase::Waiting {
        return Err(unreachable("it is already a member of a cluster".into()));
    }
    Ok(join)
}
