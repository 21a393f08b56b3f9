//! The node's HTTP surface: the route table of the client API (`/v1`), health, status and
//! metrics, and the internal routes; request extraction and the key handlers are in `keys`, the
//! view-change routes in `cluster`. Serving a key request (routing, writes, reads) is the
//! `serve` module's; the one error mapping is `crate::error`. The listener that serves these
//! routes, with its connection caps and timers, is `listener`; how the open-file limit is shared
//! between storage and connections, `budget`.

pub mod budget;
pub mod cluster;
pub mod drain;
pub mod forward;
pub mod internal;
pub mod keys;
pub mod listener;
pub mod transport;

use keys::{append_key, body_limit, delete_key, get_key, put_key};

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{middleware, Json, Router};
use kvorum_raftstore::{NodeId, Raft};
use kvorum_wire::{ClusterStatus, JoinPhase, JoinState, MapReply};
use serde_json::json;

use crate::courier::{self, Attempt};
use crate::error::ApiError;
use crate::meta::Meta;
use crate::node::Node;

/// Longest wait for the metadata leader's status (assembled from its memory): a node that gets
/// no answer in time reports its own view instead, marked `health_known: false`.
const STATUS_PROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest body of an internal Raft RPC (append batches and snapshot chunks), in bytes.
pub const RAFT_BODY_LIMIT: usize = 256 << 20;
/// Largest body of an internal control call (heartbeat, membership change, status), in bytes:
/// their JSON takes a few KiB.
pub const CONTROL_BODY_LIMIT: usize = 1 << 20;

/// The router of the client API and the internal transport.
///
/// The client routes are open. Every internal route (`/internal/...`) sits behind
/// [`transport::guard`], a route layer that authenticates the call (the cluster secret,
/// or in protected mode the caller's address) and checks the announced body size before any
/// handler or extractor runs; Raft RPCs take bodies up to [`RAFT_BODY_LIMIT`], the control
/// routes up to [`CONTROL_BODY_LIMIT`].
pub fn router(state: Arc<Node>, meta: Arc<Meta>) -> Router {
    let body_limit = body_limit(&state);
    let client: Router<Shared> = Router::new()
        .route(
            "/v1/keys/*key",
            get(get_key)
                .put(put_key)
                .delete(delete_key)
                .fallback(method_not_allowed),
        )
        .route("/v1/keys", any(empty_key))
        .route("/v1/keys/", any(empty_key))
        .route(
            "/v1/append/*key",
            post(append_key).fallback(method_not_allowed),
        )
        .route("/v1/append/", any(empty_key))
        .route(
            "/v1/cluster/status",
            get(status).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/map",
            get(cluster_map).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/nodes",
            post(crate::http::cluster::add_node).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/nodes/:id",
            axum::routing::delete(crate::http::cluster::remove_node).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/nodes/:id/drain",
            post(drain::drain)
                .delete(drain::undrain)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/tasks/:id",
            get(crate::http::cluster::task).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/tasks/:id/cancel",
            post(crate::http::cluster::cancel).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/consistency",
            post(internal::consistency_handler).fallback(method_not_allowed),
        )
        .route("/v1/join", get(join_state).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit));
    let guarded = |routes: Router<Shared>, body_limit: usize| {
        let guard = transport::InternalGuard {
            state: state.clone(),
            body_limit,
        };
        routes
            .layer(DefaultBodyLimit::max(body_limit))
            .route_layer(middleware::from_fn_with_state(guard, transport::guard))
    };
    // Slot copies carry values up to the value limit, like Raft appends.
    let raft = Router::new()
        .route("/internal/v1/raft/:group/:rpc", post(transport::handle_rpc))
        .route(
            "/internal/v1/groups/:group/admin",
            post(internal::admin_handler),
        );
    let control = Router::new()
        .route("/internal/v1/heartbeat", post(internal::heartbeat_handler))
        .route(
            "/internal/v1/groups/:group/membership",
            post(internal::membership_handler),
        )
        .route(
            "/internal/v1/groups/:group/hash",
            post(internal::hash_handler),
        )
        .route("/internal/v1/status", get(internal::status_handler))
        .route("/internal/v1/drain", post(drain::hand_off_handler))
        .route(
            crate::group::probe::REACH_PATH,
            post(internal::reach_handler),
        );
    let internal = guarded(raft, RAFT_BODY_LIMIT).merge(guarded(control, CONTROL_BODY_LIMIT));
    client
        .merge(internal)
        .fallback(no_route)
        .with_state(Shared { node: state, meta })
}

/// What the routes share: the node, and its metadata role for the routes that only the metadata
/// leader answers. A handler takes the part it needs (`State<Arc<Node>>` or `State<Arc<Meta>>`).
#[derive(Clone)]
pub struct Shared {
    node: Arc<Node>,
    meta: Arc<Meta>,
}

impl FromRef<Shared> for Arc<Node> {
    fn from_ref(shared: &Shared) -> Arc<Node> {
        shared.node.clone()
    }
}

impl FromRef<Shared> for Arc<Meta> {
    fn from_ref(shared: &Shared) -> Arc<Meta> {
        shared.meta.clone()
    }
}

/// The router of a node waiting to be added to a cluster (`join.rs`): `/healthz`, and
/// `GET /v1/join` with `status`; every other route answers 503 `joining`.
pub fn joining_router(status: Arc<tokio::sync::watch::Sender<JoinState>>) -> Router {
    Router::new()
        .route("/v1/join", get(joining_state).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .fallback(joining)
        .with_state(status)
}

/// `GET /v1/join` on a joining node: waiting, and the cluster it found.
async fn joining_state(
    State(status): State<Arc<tokio::sync::watch::Sender<JoinState>>>,
) -> Json<JoinState> {
    Json(status.borrow().clone())
}

/// Every other route of a joining node.
async fn joining(State(status): State<Arc<tokio::sync::watch::Sender<JoinState>>>) -> ApiError {
    ApiError::Joining {
        addr: status.borrow().addr.clone(),
    }
}

async fn empty_key(State(state): State<Arc<Node>>) -> ApiError {
    ApiError::EmptyKey {
        max: state.cfg.max_key_bytes,
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /v1/cluster/status`: nodes with their health, groups with leader, term, slots, keys and
/// bytes, the epoch and the tasks in progress. Built by the metadata leader from heartbeats; a
/// node that cannot reach it answers from its own map with `health_known: false`.
async fn status(
    State(state): State<Arc<Node>>,
    State(meta): State<Arc<Meta>>,
) -> Json<ClusterStatus> {
    if !crate::meta::is_metadata_leader(&state) {
        // The metadata leader's view, from the leader this node knows (or its config replica
        // names); its own otherwise.
        let map = state.map();
        let candidates: Vec<NodeId> = state
            .known_metadata_leader()
            .into_iter()
            .chain(crate::meta::config_leader_hint(&state))
            .filter(|l| *l != state.id())
            .collect();
        let (state, map) = (&state, &map);
        let leaders = courier::deliver(candidates, |leader: NodeId| async move {
            let Some(addr) = map.addr(leader) else {
                return Attempt::Next(format!("node {leader} has no address in the map"));
            };
            let resp = state
                .internal_request(reqwest::Method::GET, addr, "/internal/v1/status")
                .timeout(STATUS_PROXY_TIMEOUT)
                .send()
                .await;
            let status = match resp.and_then(|r| r.error_for_status()) {
                Ok(r) => r.json::<ClusterStatus>().await.ok(),
                Err(_) => None,
            };
            match status {
                Some(mut v) if v.health_known => {
                    v.answered_by = state.id();
                    Attempt::<_, std::convert::Infallible, _>::Done(v)
                }
                _ => Attempt::Next(format!("node {leader} gave no metadata leader's status")),
            }
        })
        .await;
        if let Ok(v) = leaders {
            return Json(v);
        }
    }
    Json(crate::status::status(&meta))
}

/// `GET /v1/cluster/map`: this node's cluster map, its leader hints (group → node) and its
/// cluster id.
async fn cluster_map(State(state): State<Arc<Node>>) -> Json<MapReply> {
    Json(MapReply {
        leaders: state.routing().leaders().clone(),
        map: (*state.map()).clone(),
        cluster_id: Some(state.identity.cluster_id.clone()),
    })
}

/// `GET /v1/join` on a serving node: a member, with its id.
async fn join_state(State(state): State<Arc<Node>>) -> Json<JoinState> {
    Json(JoinState {
        addr: state.identity.addr.to_string(),
        state: JoinPhase::Member,
        node: Some(state.id()),
        cluster_id: Some(state.identity.cluster_id.clone()),
        incarnation: state.identity.incarnation.clone(),
    })
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<Arc<Node>>, State(meta): State<Arc<Meta>>) -> Response {
    let mut out = String::new();
    let replicas = state.replicas();
    let series = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&Raft) -> u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (g, h) in &replicas {
            out.push_str(&format!("{name}{{group=\"{g}\"}} {}\n", value(&h.raft)));
        }
    };
    let me = state.id();
    series(
        &mut out,
        "kvorum_raft_term",
        "Current Raft term of this replica.",
        &|r| r.metrics().borrow().current_term,
    );
    series(
        &mut out,
        "kvorum_raft_is_leader",
        "1 when this replica leads its group.",
        &|r| u64::from(r.metrics().borrow().current_leader == Some(me)),
    );
    series(
        &mut out,
        "kvorum_raft_last_log_index",
        "Last log index of this replica.",
        &|r| r.metrics().borrow().last_log_index.unwrap_or(0),
    );
    series(
        &mut out,
        "kvorum_raft_applied_index",
        "Last applied log index of this replica.",
        &|r| r.metrics().borrow().last_applied.map_or(0, |l| l.index),
    );
    out.push_str("# HELP kvorum_state_hash_index Log index of this replica's newest state hash (consistency check; 0: none).\n# TYPE kvorum_state_hash_index gauge\n");
    for g in replicas.keys() {
        let index = state.store.state_hash(*g).map_or(0, |h| h.index);
        out.push_str(&format!(
            "kvorum_state_hash_index{{group=\"{g}\"}} {index}\n"
        ));
    }
    if crate::meta::is_metadata_leader(&state) {
        // Only the metadata leader compares the replicas' hashes.
        let compared = crate::meta::comparisons(&meta.lock(), &state.map());
        out.push_str("# HELP kvorum_consistency_mismatched_replicas Replicas whose state hash differs from their group's at the last compared index (metadata leader only).\n# TYPE kvorum_consistency_mismatched_replicas gauge\n");
        for c in compared {
            out.push_str(&format!(
                "kvorum_consistency_mismatched_replicas{{group=\"{}\"}} {}\n",
                c.group,
                c.mismatched.len()
            ));
        }
    }
    out.push_str("# HELP kvorum_map_epoch Epoch of the cluster map this node knows.\n# TYPE kvorum_map_epoch gauge\n");
    out.push_str(&format!("kvorum_map_epoch {}\n", state.map().epoch));
    state.connections.write_metrics(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
