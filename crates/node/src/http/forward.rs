//! Forwarding a call of the metadata leader's (a view change, a consistency check) from the node
//! that took it to the metadata leader.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use kvorum_router::{NodeId, CONFIG_GROUP};

use crate::courier::{self, Attempt};
use crate::error::ApiError;
use crate::node::Node;

use crate::meta::config_leader_hint;

/// Longest wait for the metadata leader's answer to a forwarded call.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);
/// Header marking a call forwarded to the metadata leader (it is not forwarded again).
const FORWARDED_HEADER: &str = "x-kvorum-forwarded";

/// Forwards a call of the metadata leader's (a view change, a consistency check) to it and
/// passes its answer through.
pub async fn forward(
    state: &Node,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(ApiError::MetadataLeaderChanging);
    }
    let map = state.map();
    let mut candidates: Vec<NodeId> = Vec::new();
    candidates.extend(state.known_metadata_leader());
    candidates.extend(config_leader_hint(state));
    candidates.extend(map.members_of(CONFIG_GROUP).into_iter().flatten().copied());
    let (map, body) = (&map, &body);
    courier::deliver(candidates, |node: NodeId| {
        let method = method.clone();
        async move {
            if node == state.id() {
                return Attempt::Next("this node is not the metadata leader".into());
            }
            let Some(addr) = map.addr(node) else {
                return Attempt::Next(format!("node {node} has no address in the map"));
            };
            let req = state
                .http
                .request(method, format!("http://{addr}{path}"))
                .header(FORWARDED_HEADER, "1")
                .header(header::CONTENT_TYPE, "application/json")
                .timeout(FORWARD_TIMEOUT)
                .body(body.clone());
            let (status, bytes) = match courier::exchange(req, addr).await {
                Ok(answer) => answer,
                Err(why) => return Attempt::Next(why),
            };
            let err: Option<kvorum_wire::ErrorBody> = serde_json::from_slice(&bytes).ok();
            if err
                .as_ref()
                .is_some_and(|e| e.code == ApiError::MetadataLeaderChanging.code())
            {
                return Attempt::Next(format!("{addr}: not the metadata leader"));
            }
            let mut out = (status, bytes).into_response();
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            Attempt::Done(out)
        }
    })
    .await
    .map_err(|e| {
        ApiError::Unavailable(format!(
            "could not reach the metadata leader: {}",
            e.reason()
        ))
    })
}
