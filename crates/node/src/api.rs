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

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{middleware, Json, Router};
use kvorum_raftstore::{Command, CommandResult, Condition, GroupId, NodeId, Raft, StoreError};
use kvorum_router::{slot_of, Slot};
use openraft::error::{ClientWriteError, RaftError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::node::{Node, Replica};
use crate::reads::ReadIndex;

/// Header counting how many times a request was forwarded.
pub const HOPS_HEADER: &str = "x-kvorum-hops";
/// Header naming the route a request was sent on: `slot:epoch:group`.
pub const ROUTE_HEADER: &str = "x-kvorum-route";
/// Longest wait for a newer map that a request's route announced.
const MAP_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
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
    let raft = Router::new().route(
        "/internal/v1/raft/:group/:rpc",
        post(crate::transport::handle_rpc),
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
        .route("/internal/v1/status", get(crate::status::status_handler));
    let internal = guarded(raft, RAFT_BODY_LIMIT).merge(guarded(control, CONTROL_BODY_LIMIT));
    client.merge(internal).fallback(no_route).with_state(state)
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

fn condition(
    expected_version: Option<u64>,
    expected_value: Option<String>,
) -> Result<Option<Condition>, ApiError> {
    match (expected_version, expected_value) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give at most one of expected_version and expected_value".into(),
        )),
        (Some(v), None) => Ok(Some(Condition::Version(v))),
        (None, Some(v)) => Ok(Some(Condition::Value(Some(v)))),
        (None, None) => Ok(None),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

/// Query of `GET /v1/keys/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// Serve from this replica's local state without read index (may be stale).
    #[serde(default)]
    stale: bool,
}

/// Body of `PUT /v1/keys/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    value: String,
    /// Write only if the key's version equals this (0: only if absent).
    expected_version: Option<u64>,
    /// Write only if the key's value equals this.
    expected_value: Option<String>,
}

/// Query of `DELETE /v1/keys/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    expected_version: Option<u64>,
    expected_value: Option<String>,
}

/// Body of `POST /v1/append/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    value: String,
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

/// Parses `slot:epoch:group`.
fn parse_route(v: &header::HeaderValue) -> Option<(u16, u64, u64)> {
    let mut it = v.to_str().ok()?.split(':');
    let slot = it.next()?.trim().parse().ok()?;
    let epoch = it.next()?.trim().parse().ok()?;
    let group = it.next()?.trim().parse().ok()?;
    it.next().is_none().then_some((slot, epoch, group))
}

/// Waits (briefly) until this node knows a map of at least `epoch`, asking for one at once.
async fn await_epoch(state: &Node, epoch: u64) {
    if state.map().epoch >= epoch {
        return;
    }
    state.refresh.notify_one();
    let deadline = tokio::time::Instant::now() + MAP_REFRESH_WAIT;
    while state.map().epoch < epoch && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The slot and owning group of `key`, after checking the route the request carries, if any.
async fn resolve(state: &Node, inc: &Incoming, key: &str) -> Result<(Slot, GroupId), ApiError> {
    let slot = slot_of(key.as_bytes());
    if let Some(h) = inc.headers.get(ROUTE_HEADER) {
        let (s, epoch, group) = parse_route(h).ok_or_else(|| {
            ApiError::BadRequest(format!("{ROUTE_HEADER} must be slot:epoch:group"))
        })?;
        if s != slot.0 {
            return Err(ApiError::BadRequest(format!(
                "{ROUTE_HEADER} names slot {s}, but the key is in slot {slot}"
            )));
        }
        await_epoch(state, epoch).await;
        let map = state.map();
        let owner = map
            .group_of(slot)
            .ok_or_else(|| ApiError::Internal(format!("slot {slot} has no owner")))?;
        if owner.0 != group {
            return Err(ApiError::NotOwner {
                slot: slot.0,
                group: owner.0,
                epoch: map.epoch,
            });
        }
        return Ok((slot, owner));
    }
    let owner = state
        .owner(slot)
        .ok_or_else(|| ApiError::Internal(format!("slot {slot} has no owner")))?;
    Ok((slot, owner))
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
            None => Err(ApiError::NoLeader { group: group.0 }),
        },
        None => Err(ApiError::NoLeader { group: group.0 }),
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
        Some(g) => format!("{}:{}:{}", slot.0, map.epoch, g.0),
        None => return Err(ApiError::Internal(format!("slot {slot} has no owner"))),
    };
    let path = inc.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    for addr in addrs {
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
                continue;
            }
            Err(e) if write => {
                return Err(ApiError::OutcomeUnknown(format!(
                    "forwarding to {addr}: {e}"
                )))
            }
            Err(e) => return Err(ApiError::Unavailable(format!("forwarding to {addr}: {e}"))),
        };
        let status = resp.status();
        if status == StatusCode::MISDIRECTED_REQUEST {
            // Our map is older than the target's: nothing was proposed. Learn the new map; the
            // client retries.
            state.refresh.notify_one();
            return Err(ApiError::Unavailable(format!(
                "the cluster map changed (epoch {} here); retry",
                map.epoch
            )));
        }
        let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if write => {
                return Err(ApiError::OutcomeUnknown(format!(
                    "reply from {addr} lost: {e}"
                )))
            }
            Err(e) => {
                return Err(ApiError::Unavailable(format!(
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
        return Ok(out);
    }
    Err(ApiError::Unavailable(format!(
        "no replica reachable among {addrs:?}"
    )))
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

/// Serves a write: locally when this node leads the key's group, else at its leader.
async fn write(state: &Node, inc: &Incoming, cmd: Command) -> Result<Response, ApiError> {
    let key = cmd.key().to_string();
    let (slot, group) = resolve(state, inc, &key).await?;
    match leader_target(state, group).await? {
        Target::Forward(addrs) => forward(state, &addrs, inc, slot, true).await,
        Target::Local(replica) => {
            let result = propose(state, &replica.raft, cmd).await?;
            write_response(key, result)
        }
    }
}

fn write_response(key: String, result: CommandResult) -> Result<Response, ApiError> {
    match result {
        CommandResult::Written { version } => {
            Ok(Json(json!({ "key": key, "version": version })).into_response())
        }
        CommandResult::Deleted { existed } => {
            Ok(Json(json!({ "key": key, "deleted": existed })).into_response())
        }
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
        CommandResult::None => Err(ApiError::Internal(
            "a write applied as a blank entry".into(),
        )),
    }
}

fn local_read(state: &Node, group: GroupId, key: &str) -> Result<Response, ApiError> {
    match state.store.read(group, key) {
        Ok(Some(r)) => {
            Ok(Json(json!({ "key": key, "value": r.value, "version": r.version })).into_response())
        }
        Ok(None) => Err(ApiError::KeyNotFound(key.to_string())),
        // Only a follower installs snapshots: a stale read can retry here or at another replica.
        Err(e @ StoreError::Installing { .. }) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => {
            tracing::error!(error = %e, "local read failed");
            Err(ApiError::Internal(e.to_string()))
        }
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
    let (slot, group) = resolve(&state, &inc, &key).await?;
    let local = member_replica(&state, group).is_some();
    if q.stale || (state.fault_stale_reads && local) {
        // A stale read (or the injected fault): whatever this replica has applied.
        return if local {
            local_read(&state, group, &key)
        } else {
            forward(&state, &state.group_addrs(group), &inc, slot, false).await
        };
    }
    match leader_target(&state, group).await? {
        Target::Forward(addrs) => forward(&state, &addrs, &inc, slot, false).await,
        Target::Local(replica) => {
            let outcome =
                tokio::time::timeout(state.cfg.request_timeout, replica.reads.read_index()).await;
            match outcome {
                Ok(ReadIndex::Ready) => local_read(&state, group, &key),
                Ok(ReadIndex::NotLeader { leader: Some(l) }) if l != state.id() => {
                    match node_addr(&replica.raft, l) {
                        Some(addr) => forward(&state, &[addr], &inc, slot, false).await,
                        None => Err(ApiError::NoLeader { group: group.0 }),
                    }
                }
                Ok(ReadIndex::NotLeader { .. }) => Err(ApiError::NoLeader { group: group.0 }),
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
        value: body.value,
        condition: condition(body.expected_version, body.expected_value)?,
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
        condition: condition(q.expected_version, q.expected_value)?,
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
async fn status(State(state): State<Arc<Node>>) -> Json<serde_json::Value> {
    if !crate::meta::is_metadata_leader(&state) {
        let map = state.map();
        let leader = state
            .meta
            .known_leader()
            .filter(|l| *l != state.id())
            .and_then(|l| map.addr(l).map(str::to_string));
        if let Some(addr) = leader {
            let resp = state
                .internal_request(reqwest::Method::GET, &addr, "/internal/v1/status")
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = resp.and_then(|r| r.error_for_status()) {
                if let Ok(mut v) = r.json::<serde_json::Value>().await {
                    if v["health_known"].as_bool() == Some(true) {
                        v["answered_by"] = json!(state.id());
                        return Json(v);
                    }
                }
            }
        }
    }
    Json(crate::status::status(&state))
}

/// `GET /v1/cluster/map`: this node's cluster map and its leader hints (group → node).
async fn cluster_map(State(state): State<Arc<Node>>) -> Json<serde_json::Value> {
    let routing = state.routing();
    Json(json!({ "map": *state.map(), "leaders": routing.leaders() }))
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
    out.push_str("# HELP kvorum_map_epoch Epoch of the cluster map this node knows.\n# TYPE kvorum_map_epoch gauge\n");
    out.push_str(&format!("kvorum_map_epoch {}\n", state.map().epoch));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
