//! The receiving side of the internal Raft transport (the handler of
//! `/internal/v1/raft/{group}/{append|vote|snapshot}`; the sending side is `network`), and the
//! guard of every internal route.
//!
//! Trust: every internal route sits behind [`guard`], a route layer that decides from the
//! caller's address and headers alone, before the handler or any body extractor runs, so an
//! unauthenticated caller cannot make the node read, buffer or parse its body. With a cluster
//! secret configured, a call must carry it (and the cluster id) from any address. Without one
//! the node is in protected mode: the secret sent is the public development default, so a call
//! is accepted only from loopback or the address of a node of the cluster map.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kvorum_raftstore::{GroupId, NodeId, TypeConfig};
use kvorum_router::ClusterMap;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{de::DeserializeOwned, Serialize};

use crate::election::{self, PreVoteRequest};
use crate::error::ApiError;
use crate::incarnation::{self, Mismatch};
use crate::node::{Node, Replica};

pub use kvorum_wire::headers::{CLUSTER_HEADER, FROM_HEADER, SECRET_HEADER};

/// Constant-time comparison, so the secret cannot be guessed byte by byte from timings.
fn secret_matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Checks the cluster secret and cluster id of a call to an internal route. [`guard`] runs it
/// (after the protected-mode address check) before every internal handler.
pub fn check_internal(state: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !secret_matches(given, state.cfg.cluster_secret.as_bytes()) {
        return Err(ApiError::Unauthorized);
    }
    let cluster = headers
        .get(CLUSTER_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if cluster != state.identity.cluster_id.as_bytes() {
        return Err(ApiError::WrongCluster);
    }
    Ok(())
}

/// Whether `peer` may call the internal routes in protected mode: it is loopback (127.0.0.1 or
/// ::1) or the IP of a node `map` lists. Removed nodes count, so that one that comes back is
/// told it was removed (their Raft RPCs are refused by the handler). Ports are not compared:
/// a node calls from its own IP with an ephemeral port.
pub fn admitted_in_protected_mode(peer: IpAddr, map: &ClusterMap) -> bool {
    // An IPv4 caller on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    if peer == IpAddr::V4(Ipv4Addr::LOCALHOST) || peer == IpAddr::V6(Ipv6Addr::LOCALHOST) {
        return true;
    }
    is_node_ip(peer, map)
}

/// Whether `ip` is the IP of a node `map` lists (removed nodes included). Nodes call each other
/// from their own IP (`node::http_client` binds it), so this tells the cluster's connections
/// from clients' unless nodes reach each other through NAT or a proxy.
pub fn is_node_ip(ip: IpAddr, map: &ClusterMap) -> bool {
    let ip = ip.to_canonical();
    map.nodes.values().any(|n| {
        n.addr
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().to_canonical() == ip)
    })
}

/// Authenticates a call to an internal route from the caller's address and the headers only.
/// In protected mode the address is checked first (against the node's current map, which can
/// change), so a stranger is refused whatever it sends; then the secret and the cluster id.
pub fn authenticate(
    state: &Node,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if state.cfg.protected_mode {
        match peer {
            Some(p) if admitted_in_protected_mode(p.ip(), &state.map()) => {}
            // No address known (not served with connect info): refuse rather than guess.
            _ => {
                return Err(ApiError::ProtectedMode {
                    peer: peer.map_or_else(|| "an unknown address".into(), |p| p.ip().to_string()),
                })
            }
        }
    }
    check_internal(state, headers)
}

/// What [`guard`] needs for one set of internal routes.
#[derive(Clone)]
pub struct InternalGuard {
    /// The node whose routes these are.
    pub state: Arc<Node>,
    /// The largest body these routes take, in bytes.
    pub body_limit: usize,
}

/// Route layer of every internal route (`axum::middleware::from_fn_with_state`): authenticates
/// the call ([`authenticate`]) and refuses a body announced larger than the routes take (413),
/// before the handler or any extractor runs, so nothing of the body is read for a refused call.
/// (A body sent without a length is cut at the same limit by the routes' `DefaultBodyLimit`.)
pub async fn guard(State(g): State<InternalGuard>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Err(e) = authenticate(&g.state, peer, req.headers()) {
        tracing::debug!(?peer, path = %req.uri().path(), code = e.code(), "internal call refused");
        return e.into_response();
    }
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > g.body_limit as u64) {
        return ApiError::BodyTooLarge { max: g.body_limit }.into_response();
    }
    next.run(req).await
}

/// Handler of `POST /internal/v1/raft/{group}/{rpc}`, behind [`guard`].
pub async fn handle_rpc(
    State(state): State<Arc<Node>>,
    Path((group, rpc)): Path<(u64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A removed node's replicas must not disturb the groups it left (for example by calling
    // elections with its stale membership).
    let from = headers
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok());
    if let Some(from) = from {
        if !state.map().is_active(from) {
            return ApiError::NodeRemoved(from).into_response();
        }
    }
    if let Err(m) = incarnation::check(
        &headers,
        from,
        state.id(),
        &state.identity.incarnation,
        &state.incarnations,
    ) {
        if m == Mismatch::Receiver {
            let reason = incarnation::wiped_message(state.id(), &state.cfg.data_dir);
            tracing::error!("{reason}");
            state.stop_with(reason);
        }
        return ApiError::from(m).into_response();
    }
    let Some(Replica { raft, clock, .. }) = state.replica(GroupId(group)) else {
        return (
            StatusCode::NOT_FOUND,
            format!("group {group} is not hosted here"),
        )
            .into_response();
    };
    fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        bincode::deserialize(b).map_err(|e| format!("bad rpc body: {e}"))
    }
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg).into_response();
    fn encode<T: Serialize>(v: &T) -> Response {
        match bincode::serialize(v) {
            Ok(b) => (StatusCode::OK, b).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    // The leader of the current term (or a newer one) was heard: elections wait on this.
    let heard = |term: u64| clock.heard(term, raft.metrics().borrow().current_term);
    match rpc.as_str() {
        "append" => match decode::<AppendEntriesRequest<TypeConfig>>(&body) {
            Ok(req) => {
                heard(req.vote.leader_id().term);
                encode(&raft.append_entries(req).await)
            }
            Err(m) => bad(m),
        },
        "vote" => match decode::<VoteRequest<NodeId>>(&body) {
            Ok(req) => encode(&raft.vote(req).await),
            Err(m) => bad(m),
        },
        "snapshot" => match decode::<InstallSnapshotRequest<TypeConfig>>(&body) {
            Ok(req) => {
                heard(req.vote.leader_id().term);
                encode(&raft.install_snapshot(req).await)
            }
            Err(m) => bad(m),
        },
        "prevote" => match decode::<PreVoteRequest>(&body) {
            Ok(req) => {
                let reply = election::answer(&raft, &clock, state.cfg.election_timeout, &req);
                encode(&Ok::<_, RaftError<NodeId>>(reply))
            }
            Err(m) => bad(m),
        },
        other => (StatusCode::NOT_FOUND, format!("unknown rpc {other}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The secret check accepts only the exact secret.
    #[test]
    fn secret_must_match_exactly() {
        assert!(secret_matches(b"abc", b"abc"));
        assert!(!secret_matches(b"abd", b"abc"));
        assert!(!secret_matches(b"ab", b"abc"));
        assert!(!secret_matches(b"", b"abc"));
    }

    // Protected mode admits loopback and the IPs of the map's nodes, on any port, and no one else.
    #[test]
    fn protected_mode_admits_loopback_and_the_maps_nodes_only() {
        let view: Vec<String> = ["10.0.0.1:7070", "10.0.0.2:7070", "[fd00::3]:7070"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        let map = ClusterMap::initial(&view, 3).expect("valid view");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let cases = [
            // loopback, both families
            ("127.0.0.1", true),
            ("::1", true),
            // the nodes of the map, whatever port they call from
            ("10.0.0.2", true),
            ("fd00::3", true),
            // an IPv4 node seen through a dual-stack socket
            ("::ffff:10.0.0.1", true),
            // strangers: another host, another loopback address, the unspecified address
            ("10.0.0.9", false),
            ("127.0.0.9", false),
            ("0.0.0.0", false),
        ];
        for (peer, want) in cases {
            assert_eq!(admitted_in_protected_mode(ip(peer), &map), want, "{peer}");
        }
    }
}
