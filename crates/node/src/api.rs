//! The client HTTP API (`/v1`), health and metrics, and forwarding to the serving replica.
//!
//! Steps of a request: (1) extract and validate the key, body and query (bad input is answered
//! here, at the first node), (2) route it: key → slot → owning group in this node's map; a
//! request carrying `x-kvorum-route: slot:epoch:group` is checked against the map (a newer epoch
//! first refreshes the map; a group that does not own the slot answers `not_owner`), (3) find
//! where it is served: locally when this node's replica leads the group (or for a stale read on
//! any replica of it), else at the group's leader (leader hint first, then its members; a spare
//! or a replica of another group always forwards), (4) serve it locally — writes through the
//! Raft log, linearizable reads through a batched read-index round — or forward the original
//! request with this node's route and pass the answer through.
//!
//! Definite vs unknown: a write fails definitely only before it is proposed (validation, no
//! leader, the forward target unreachable before sending). After proposing, a timeout, a lost
//! connection or a leader change answer `outcome_unknown`; no layer retries such a write.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{middleware, Json, Router};
use kvorum_raftstore::{
    Command, CommandResult, Condition, GroupId, NodeId, Raft, ServedRead, StoreError,
};
use kvorum_router::{slot_of, ClusterMap, Slot};
use kvorum_wire::{
    AppendBody, ClusterStatus, ConditionConflict, DeleteQuery, DeleteReply, GetQuery, JoinPhase,
    JoinState, KeyReply, MapReply, PutBody, RouteHeader, WriteReply,
};
use openraft::error::{ClientWriteError, RaftError};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::courier::{self, Attempt, Undelivered};
use crate::error::ApiError;
use crate::node::{Node, Replica};
use crate::reads::ReadIndex;

pub use kvorum_wire::headers::{HOPS_HEADER, ROUTE_HEADER};
/// Longest wait for a newer map that a request's route announced.
const MAP_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait for the metadata leader's status (assembled from its memory): a node that gets
/// no answer in time reports its own view instead, marked `health_known: false`.
const STATUS_PROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// First wait before a request to a moving slot is tried again; it doubles up to
/// [`MOVE_RETRY_MAX`].
const MOVE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(5);
/// Longest wait between two tries of a request to a moving slot: a batch's frozen window is tens
/// of milliseconds, and a longer wait would add up to itself to the request's pause (each try
/// also asks for the newest map).
const MOVE_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(10);
/// A request forwarded this many times is refused: the cluster disagrees on its leader.
const MAX_HOPS: u32 = 3;
/// Largest body of an internal Raft RPC (append batches and snapshot chunks), in bytes.
pub const RAFT_BODY_LIMIT: usize = 256 << 20;
/// Largest body of an internal control call (heartbeat, membership change, status), in bytes:
/// their JSON takes a few KiB.
pub const CONTROL_BODY_LIMIT: usize = 1 << 20;

/// The router of the client API and the internal transport.
///
/// The client routes are open. Every internal route (`/internal/...`) sits behind
/// [`crate::transport::guard`], a route layer that authenticates the call (the cluster secret,
/// or in protected mode the caller's address) and checks the announced body size before any
/// handler or extractor runs; Raft RPCs take bodies up to [`RAFT_BODY_LIMIT`], the control
/// routes up to [`CONTROL_BODY_LIMIT`].
pub fn router(state: Arc<Node>) -> Router {
    let body_limit = body_limit(&state);
    let client = Router::new()
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
            post(crate::changes::add_node).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/nodes/:id",
            axum::routing::delete(crate::changes::remove_node).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/tasks/:id",
            get(crate::changes::task).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/tasks/:id/cancel",
            post(crate::changes::cancel).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/consistency",
            post(crate::meta::consistency_handler).fallback(method_not_allowed),
        )
        .route("/v1/join", get(join_state).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit));
    let guarded =
        |routes: Router<Arc<Node>>, body_limit: usize| {
            let guard = crate::transport::InternalGuard {
                state: state.clone(),
                body_limit,
            };
            routes.layer(DefaultBodyLimit::max(body_limit)).route_layer(
                middleware::from_fn_with_state(guard, crate::transport::guard),
            )
        };
    // Slot copies carry values up to the value limit, like Raft appends.
    let raft = Router::new()
        .route(
            "/internal/v1/raft/:group/:rpc",
            post(crate::transport::handle_rpc),
        )
        .route(
            "/internal/v1/groups/:group/admin",
            post(crate::meta::admin_handler),
        );
    let control = Router::new()
        .route(
            "/internal/v1/heartbeat",
            post(crate::meta::heartbeat_handler),
        )
        .route(
            "/internal/v1/groups/:group/membership",
            post(crate::meta::membership_handler),
        )
        .route(
            "/internal/v1/groups/:group/hash",
            post(crate::meta::hash_handler),
        )
        .route("/internal/v1/status", get(crate::status::status_handler));
    let internal = guarded(raft, RAFT_BODY_LIMIT).merge(guarded(control, CONTROL_BODY_LIMIT));
    client.merge(internal).fallback(no_route).with_state(state)
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

/// The original request, kept so that it can be forwarded unchanged.
pub struct Incoming {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Largest body a client request may have: JSON escaping can make a string up to six times
/// longer than its bytes.
fn body_limit(state: &Node) -> usize {
    6 * (state.cfg.max_value_bytes + state.cfg.max_key_bytes) + 64 * 1024
}

#[axum::async_trait]
impl FromRequest<Arc<Node>> for Incoming {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<Node>) -> Result<Self, ApiError> {
        let max = body_limit(state);
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            // Refused from the headers: the body is never read.
            return Err(ApiError::BodyTooLarge { max });
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { max },
                _ => ApiError::BadRequest(format!("cannot read the request body: {e}")),
            })?;
        Ok(Incoming {
            method,
            uri,
            headers,
            body,
        })
    }
}

impl Incoming {
    fn hops(&self) -> u32 {
        self.headers
            .get(HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The body parsed as JSON, after checking its content type.
    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType);
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
    }
}

/// Checks a key from the path against the limits.
fn check_key(state: &Node, key: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::BadRequest(format!("bad key in path: {e}")))?;
    let max = state.cfg.max_key_bytes;
    if key.is_empty() {
        return Err(ApiError::EmptyKey { max });
    }
    if key.len() > max {
        return Err(ApiError::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(key)
}

fn check_value(state: &Node, value: &str) -> Result<(), ApiError> {
    let max = state.cfg.max_value_bytes;
    if value.len() > max {
        return Err(ApiError::ValueTooLarge {
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// The condition a request asks for, refusing one that gives both kinds.
fn condition(
    asked: Result<Option<Condition>, ConditionConflict>,
) -> Result<Option<Condition>, ApiError> {
    asked.map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

/// Where a request is served.
enum Target {
    Local(Replica),
    /// Forward to the first reachable of these addresses.
    Forward(Vec<String>),
}

/// The address of `node` in `raft`'s current membership.
fn node_addr(raft: &Raft, node: NodeId) -> Option<String> {
    let m = raft.metrics().borrow().membership_config.clone();
    m.membership().get_node(&node).map(|n| n.addr.clone())
}

/// Waits (briefly) until this node knows a map of at least `epoch`, asking for one at once.
async fn await_epoch(state: &Node, epoch: u64) {
    state.learn_epoch(epoch, MAP_REFRESH_WAIT).await;
}

/// What a request's route says against this node's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routed {
    /// The route agrees with the map: serve the request for this group.
    Serve(GroupId),
    /// The route names a newer epoch than the map: wait (briefly) for a map of this epoch, then
    /// check again.
    AwaitEpoch(u64),
}

/// Checks `route`, the route a request for a key in `slot` carries, against `map`. A newer
/// epoch is awaited once (`waited` false); after that the map decides as it is. Pure: the
/// waiting is the caller's.
fn check_route(
    map: &ClusterMap,
    slot: Slot,
    route: &RouteHeader,
    waited: bool,
) -> Result<Routed, ApiError> {
    if route.slot != slot {
        return Err(ApiError::BadRequest(format!(
            "{ROUTE_HEADER} names slot {}, but the key is in slot {slot}",
            route.slot
        )));
    }
    if !waited && map.epoch < route.epoch {
        return Ok(Routed::AwaitEpoch(route.epoch));
    }
    let owner = map
        .group_of(slot)
        .ok_or_else(|| ApiError::Internal(format!("slot {slot} has no owner")))?;
    if owner != route.group {
        return Err(ApiError::NotOwner {
            slot,
            group: owner,
            epoch: map.epoch,
        });
    }
    Ok(Routed::Serve(owner))
}

/// The slot and owning group of `key`, after checking the route the request carries, if any,
/// and the epoch of the map that names that group the owner (the route a proposal carries,
/// [`Command::Routed`], and a read is checked under).
async fn resolve(
    state: &Node,
    inc: &Incoming,
    key: &str,
) -> Result<(Slot, GroupId, u64), ApiError> {
    let slot = slot_of(key.as_bytes());
    if let Some(h) = inc.headers.get(ROUTE_HEADER) {
        let route: RouteHeader = h
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{ROUTE_HEADER} must be slot:epoch:group"))
            })?;
        let mut waited = false;
        loop {
            let map = state.map();
            let checked = check_route(&map, slot, &route, waited)?;
            match checked {
                Routed::Serve(owner) => return Ok((slot, owner, map.epoch)),
                Routed::AwaitEpoch(epoch) => {
                    await_epoch(state, epoch).await;
                    waited = true;
                }
            }
        }
    }
    let map = state.map();
    let owner = map
        .group_of(slot)
        .ok_or_else(|| ApiError::Internal(format!("slot {slot} has no owner")))?;
    Ok((slot, owner, map.epoch))
}

/// This node's replica of `group` if it is a voter of it: in the map, or already in the group's
/// Raft membership (a replacement promoted a moment before the map lists it).
fn member_replica(state: &Node, group: GroupId) -> Option<Replica> {
    let replica = state.replica(group)?;
    if state.is_member(group) {
        return Some(replica);
    }
    let voter = replica
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == state.id());
    voter.then_some(replica)
}

/// Where the leader-served requests of `group` go: waits briefly for a leader to be known.
async fn leader_target(state: &Node, group: GroupId) -> Result<Target, ApiError> {
    let Some(replica) = member_replica(state, group) else {
        return Ok(Target::Forward(state.group_addrs(group)));
    };
    let raft = &replica.raft;
    let wait = state.cfg.request_timeout / 2;
    let leader = match raft
        .wait(Some(wait))
        .metrics(|m| m.current_leader.is_some(), "a leader is known")
        .await
    {
        Ok(m) => m.current_leader,
        Err(_) => None,
    };
    match leader {
        Some(id) if id == state.id() => Ok(Target::Local(replica.clone())),
        Some(id) => match node_addr(raft, id) {
            Some(addr) => Ok(Target::Forward(vec![addr])),
            None => Err(ApiError::NoLeader { group }),
        },
        None => Err(ApiError::NoLeader { group }),
    }
}

/// Sends `inc` to the first reachable address with this node's route for `slot` and passes the
/// answer through.
async fn forward(
    state: &Node,
    addrs: &[String],
    inc: &Incoming,
    slot: Slot,
    write: bool,
) -> Result<Response, ApiError> {
    let hops = inc.hops();
    if hops >= MAX_HOPS {
        return Err(ApiError::Unavailable(
            "the request was forwarded too many times; the cluster is changing leaders".into(),
        ));
    }
    let map = state.map();
    let route = match map.group_of(slot) {
        Some(group) => RouteHeader {
            slot,
            epoch: map.epoch,
            group,
        }
        .to_string(),
        None => return Err(ApiError::Internal(format!("slot {slot} has no owner"))),
    };
    let path = inc.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (map, route) = (&map, &route);
    let answer = courier::deliver(addrs.iter().cloned(), |addr: String| async move {
        let mut req = state
            .http
            .request(inc.method.clone(), format!("http://{addr}{path}"))
            .header(HOPS_HEADER, (hops + 1).to_string())
            .header(ROUTE_HEADER, route.as_str())
            .timeout(state.cfg.request_timeout)
            .body(inc.body.clone());
        if let Some(ct) = inc.headers.get(header::CONTENT_TYPE) {
            req = req.header(header::CONTENT_TYPE, ct.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Not connected: nothing was sent, so trying the next address is safe.
            Err(e) if e.is_connect() => {
                tracing::debug!(%addr, error = %e, "forward target unreachable");
                return Attempt::Next(format!("{addr}: {e}"));
            }
            Err(e) if write => {
                return Attempt::Fail(ApiError::OutcomeUnknown(format!(
                    "forwarding to {addr}: {e}"
                )))
            }
            Err(e) => {
                return Attempt::Fail(ApiError::Unavailable(format!("forwarding to {addr}: {e}")))
            }
        };
        let status = resp.status();
        if status == StatusCode::MISDIRECTED_REQUEST {
            // Our map is older than the target's (a slot moved): nothing was proposed. Learn the
            // new map and route again.
            state.refresh.notify_one();
            return Attempt::Fail(ApiError::SlotMoving {
                slot,
                detail: format!("the cluster map changed (epoch {} here)", map.epoch),
            });
        }
        let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if write => {
                return Attempt::Fail(ApiError::OutcomeUnknown(format!(
                    "reply from {addr} lost: {e}"
                )))
            }
            Err(e) => {
                return Attempt::Fail(ApiError::Unavailable(format!(
                    "reply from {addr} lost: {e}"
                )))
            }
        };
        let mut out = (status, body).into_response();
        if let Some(ct) = ct {
            out.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        if let Some(r) = retry {
            out.headers_mut().insert(header::RETRY_AFTER, r);
        }
        Attempt::Done(out)
    })
    .await;
    match answer {
        Ok(out) => Ok(out),
        Err(Undelivered::Failed(e)) => Err(e),
        Err(Undelivered::Exhausted(last)) => Err(ApiError::Unavailable(format!(
            "no replica reachable among {addrs:?} ({last})"
        ))),
    }
}

/// Proposes `cmd` through `raft`'s log and waits for it to apply.
async fn propose(state: &Node, raft: &Raft, cmd: Command) -> Result<CommandResult, ApiError> {
    let timeout = state.cfg.request_timeout;
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Ok(Ok(resp)) => Ok(resp.data),
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
async fn through_moves<F, Fut>(state: &Node, mut serve: F) -> Result<Response, ApiError>
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
async fn write(state: &Node, inc: &Incoming, cmd: Command) -> Result<Response, ApiError> {
    through_moves(state, || write_once(state, inc, cmd.clone())).await
}

async fn write_once(state: &Node, inc: &Incoming, cmd: Command) -> Result<Response, ApiError> {
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
async fn ack_before_commit(
    state: &Node,
    raft: &Raft,
    group: GroupId,
    cmd: &Command,
    slot: Slot,
    epoch: u64,
) -> Result<Option<CommandResult>, ApiError> {
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

fn write_response(key: String, slot: Slot, result: CommandResult) -> Result<Response, ApiError> {
    match result {
        // Refused at apply: the slot is frozen by a move, or no longer (or not yet) this group's.
        CommandResult::Frozen { .. } => Err(ApiError::SlotMoving {
            slot,
            detail: "frozen for a move".into(),
        }),
        CommandResult::NotOwner { .. } => Err(ApiError::SlotMoving {
            slot,
            detail: "the group no longer, or not yet, owns it".into(),
        }),
        CommandResult::SlotState { .. }
        | CommandResult::Ingested { .. }
        | CommandResult::Fenced { .. } => Err(ApiError::Internal(
            "a key write applied as a slot command".into(),
        )),
        // This node and the group's state machine disagree on the key's slot: a bug, or nodes
        // that hash keys differently. Nothing was written.
        CommandResult::Misrouted { .. } => Err(ApiError::Internal(format!(
            "the group refused the write as misrouted: {result:?}"
        ))),
        CommandResult::Written { version } => Ok(Json(WriteReply { key, version }).into_response()),
        CommandResult::Deleted { existed } => Ok(Json(DeleteReply {
            deleted: existed,
            key,
        })
        .into_response()),
        CommandResult::ConditionFailed { current } => Err(ApiError::ConditionFailed { current }),
        // Refused at apply (the append would grow the value past the limit): definite.
        CommandResult::ValueTooLarge { len, limit } => Err(ApiError::ValueTooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(limit).unwrap_or(usize::MAX),
        }),
        CommandResult::KeyTooLarge { len, limit } => Err(ApiError::KeyTooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(limit).unwrap_or(usize::MAX),
        }),
        // Refused at apply by the group's slot table (a move is under way): definite, retryable.
        CommandResult::None | CommandResult::BadSlotRange { .. } | CommandResult::Hashed { .. } => {
            Err(ApiError::Internal(format!(
                "a write applied as a non-write entry: {result:?}"
            )))
        }
    }
}

/// Reads `key` from this node's replica of `group`, which must own its slot at map `epoch`
/// (checked after the read index, where the slot table is current, and again after the read:
/// a move's Release or DropSlots, or the group's drop, may apply in between).
fn local_read(
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

async fn get_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    q: Result<Query<GetQuery>, QueryRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let q = query(q)?;
    through_moves(&state, || read_once(&state, &inc, &key, &q)).await
}

async fn read_once(
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

async fn put_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let body: PutBody = inc.json()?;
    check_value(&state, &body.value)?;
    let cmd = Command::Put {
        key,
        condition: condition(body.condition())?,
        value: body.value,
    };
    write(&state, &inc, cmd).await
}

async fn delete_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let q = query(q)?;
    if let Some(v) = &q.expected_value {
        check_value(&state, v)?;
    }
    let cmd = Command::Delete {
        key,
        condition: condition(q.condition())?,
    };
    write(&state, &inc, cmd).await
}

async fn append_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let body: AppendBody = inc.json()?;
    check_value(&state, &body.value)?;
    // The limit travels in the command: every replica refuses, at apply, an append that would
    // grow the value past it.
    let cmd = Command::AppendBounded {
        key,
        suffix: body.value,
        max_value_bytes: state.cfg.max_value_bytes as u64,
    };
    write(&state, &inc, cmd).await
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
async fn status(State(state): State<Arc<Node>>) -> Json<ClusterStatus> {
    if !crate::meta::is_metadata_leader(&state) {
        // The metadata leader's view, from the leader this node knows (or its config replica
        // names); its own otherwise.
        let map = state.map();
        let candidates: Vec<NodeId> = state
            .meta
            .known_leader()
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
    Json(crate::status::status(&state))
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
async fn metrics(State(state): State<Arc<Node>>) -> Response {
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
        let compared = crate::meta::comparisons(&state.meta.lock(), &state.map());
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 7 nodes, K=3: groups {1,2,3} and {4,5,6}, spare 7.
    fn map3() -> ClusterMap {
        kvorum_router::testing::map(7, 3)
    }

    // A route that agrees with the map is served by the slot's owner, whatever its (older or
    // equal) epoch; a newer epoch is awaited once, then the map decides.
    #[test]
    fn agreeing_routes_are_served() {
        let map = map3();
        let slot = slot_of(b"k");
        let owner = map.group_of(slot).expect("owned");
        let route = |epoch| RouteHeader {
            slot,
            epoch,
            group: owner,
        };
        for epoch in [0, map.epoch] {
            let checked = check_route(&map, slot, &route(epoch), false).expect("served");
            assert_eq!(checked, Routed::Serve(owner));
        }
        let newer = route(map.epoch + 1);
        let checked = check_route(&map, slot, &newer, false).expect("awaits");
        assert_eq!(checked, Routed::AwaitEpoch(map.epoch + 1));
        let checked = check_route(&map, slot, &newer, true).expect("served after waiting");
        assert_eq!(checked, Routed::Serve(owner));
    }

    // A route naming another slot than the key's is a bad request; one naming another group
    // than the owner is not_owner with the owner and this map's epoch (after the wait, too).
    #[test]
    fn disagreeing_routes_are_refused() {
        let map = map3();
        let slot = slot_of(b"k");
        let owner = map.group_of(slot).expect("owned");
        let other = GroupId(owner.0 % 3 + 1);
        assert_ne!(other, owner);
        let wrong_slot = RouteHeader {
            slot: Slot((slot.0 + 1) % kvorum_router::SLOT_COUNT),
            epoch: map.epoch,
            group: owner,
        };
        let err = check_route(&map, slot, &wrong_slot, false).expect_err("wrong slot");
        assert_eq!(err.code(), "bad_request");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        for (epoch, waited) in [(map.epoch, false), (map.epoch + 1, true)] {
            let route = RouteHeader {
                slot,
                epoch,
                group: other,
            };
            let err = check_route(&map, slot, &route, waited).expect_err("other group");
            assert!(
                matches!(err, ApiError::NotOwner { slot: s, group, epoch: e }
                    if s == slot && group == owner && e == map.epoch),
                "{err:?}"
            );
            assert_eq!(err.status(), StatusCode::MISDIRECTED_REQUEST);
        }
    }
}
