//! The drain routes (the contract is `kvorum_wire::drain`): `POST /v1/cluster/nodes/{id}/drain`
//! and `DELETE /v1/cluster/nodes/{id}/drain` on any node (forwarded to the metadata leader), and
//! `POST /internal/v1/drain`, the metadata leader's call asking the drained node to hand off
//! its leaderships.
//!
//! Steps of a drain at the metadata leader: (1) record the mark in the map (`meta::set_drain`),
//! so no repair replaces the node from now on; (2) ask the node to hand off every group it leads
//! (`group::handoff`; the metadata leader asks itself directly); (3) answer the mark and the
//! hand-offs. A node that does not answer step 2 is reported `unreachable`, its mark stays.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_router::NodeId;
use kvorum_wire::drain::{DEFAULT_DRAIN_MINUTES, MAX_DRAIN_MINUTES};
use kvorum_wire::{DrainBody, DrainReply, Leaderships};

use crate::error::ApiError;
use crate::group::handoff::{hand_off_all, HANDOFF_LIMIT};
use crate::meta::{self, Meta};
use crate::node::Node;

use super::forward::forward;
use super::transport::check_internal;

/// The internal route the metadata leader calls on the drained node.
const HAND_OFF_PATH: &str = "/internal/v1/drain";
/// Longest wait for the drained node's hand-offs: a node leads at most its data group and the
/// config group, each hand-off bounded by [`HANDOFF_LIMIT`].
const HAND_OFF_CALL_TIMEOUT: Duration = Duration::from_secs(2 * HANDOFF_LIMIT.as_secs() + 5);

/// `POST /v1/cluster/nodes/{id}/drain`: no repair replaces node `id` for the body's minutes, and
/// it hands its leaderships to other voters.
pub async fn drain(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let node = node_id(&id)?;
    let minutes = minutes(&body)?;
    if !meta::is_metadata_leader(&state) {
        let path = format!("/v1/cluster/nodes/{node}/drain");
        return forward(&state, Method::POST, &path, &headers, body).await;
    }
    let until_ms = meta::now_ms() + minutes * 60_000;
    meta::set_drain(&meta, node, Some(until_ms)).await?;
    tracing::info!(
        node,
        minutes,
        "drain: no repair replaces the node until its drain ends"
    );
    let (leaderships, unreachable) = if node == state.id() {
        (Some(hand_off_all(&state).await), None)
    } else {
        match ask_to_hand_off(&state, node).await {
            Ok(l) => (Some(l), None),
            Err(why) => (None, Some(why)),
        }
    };
    Ok(Json(DrainReply {
        node,
        until_ms: Some(until_ms),
        leaderships,
        unreachable,
    })
    .into_response())
}

/// `DELETE /v1/cluster/nodes/{id}/drain`: ends node `id`'s drain; repairs treat it as any node
/// again.
pub async fn undrain(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = node_id(&id)?;
    if !meta::is_metadata_leader(&state) {
        let path = format!("/v1/cluster/nodes/{node}/drain");
        return forward(&state, Method::DELETE, &path, &headers, Bytes::new()).await;
    }
    meta::set_drain(&meta, node, None).await?;
    tracing::info!(node, "drain ended");
    Ok(Json(DrainReply {
        node,
        until_ms: None,
        leaderships: None,
        unreachable: None,
    })
    .into_response())
}

/// `POST /internal/v1/drain`: hand off every group this node leads; answers [`Leaderships`].
pub async fn hand_off_handler(
    State(state): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Json<Leaderships>, ApiError> {
    check_internal(&state, &headers)?;
    Ok(Json(hand_off_all(&state).await))
}

/// Asks `node` to hand off its leaderships; `Err` says why its answer is not known.
async fn ask_to_hand_off(state: &Node, node: NodeId) -> Result<Leaderships, String> {
    let addr = state
        .map()
        .nodes
        .get(&node)
        .map(|n| n.addr.clone())
        .ok_or_else(|| format!("node {node} is not in the map"))?;
    let resp = state
        .internal_request(reqwest::Method::POST, &addr, HAND_OFF_PATH)
        .timeout(HAND_OFF_CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("node {node} at {addr} did not answer: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("node {node} at {addr} answered {status}: {text}"));
    }
    resp.json::<Leaderships>()
        .await
        .map_err(|e| format!("node {node} at {addr} answered an unreadable body: {e}"))
}

fn node_id(id: &str) -> Result<NodeId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a node id")))
}

/// The drain's length from the body (empty: the default), checked.
fn minutes(body: &[u8]) -> Result<u64, ApiError> {
    let req: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("body must be {{\"minutes\": N}} or empty: {e}"))
        })?
    };
    let minutes = req.minutes.unwrap_or(DEFAULT_DRAIN_MINUTES);
    if !(1..=MAX_DRAIN_MINUTES).contains(&minutes) {
        return Err(ApiError::BadRequest(format!(
            "minutes must be between 1 and {MAX_DRAIN_MINUTES}, not {minutes}"
        )));
    }
    Ok(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_default_and_bounds() -> Result<(), ApiError> {
        assert_eq!(minutes(b"")?, DEFAULT_DRAIN_MINUTES);
        assert_eq!(minutes(b" \n")?, DEFAULT_DRAIN_MINUTES);
        assert_eq!(minutes(b"{}")?, DEFAULT_DRAIN_MINUTES);
        assert_eq!(minutes(br#"{"minutes": 5}"#)?, 5);
        for bad in [
            &br#"{"minutes": 0}"#[..],
            br#"{"minutes": 10081}"#,
            br#"{"minutes": -1}"#,
            br#"{"mins": 5}"#,
            b"5",
        ] {
            assert!(
                matches!(minutes(bad), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        Ok(())
    }
}
