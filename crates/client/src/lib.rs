//! The kvorum client library, used by `kvctl` and by applications.
//!
//! A [`Client`] talks to the nodes of a cluster over HTTP. Any node accepts any request and
//! forwards it to the right group's leader, so the plain path is: send to one of the configured
//! endpoints, try the next when one cannot be connected to, and retry answers that are definite
//! failures (503: no leader) until the deadline.
//!
//! Smart routing (on by default, [`Client::with_smart_routing`]) saves the forwarding hop: the
//! client caches the cluster map (`GET /v1/cluster/map`, fetched on the first request and again
//! when stale), sends a key's request to its group's members (leader hint first) with the
//! `x-kvorum-route: <slot>:<epoch>:<group>` header, and falls back to the plain path. A node
//! whose map gives the slot to another group answers 421 `not_owner` before proposing anything;
//! the client then refreshes its map and routes again. The map being unavailable never fails a
//! request: the client just uses the endpoints. See `routing.rs` for the steps. Caveat: routed
//! requests go to the addresses in the map, which need not be among the configured endpoints;
//! to talk to given nodes only (a test of one node, a firewall), turn smart routing off.
//!
//! A key's slot being moved between groups (a view change) is invisible to callers: while the
//! slot is frozen its group answers 503 `slot_moving` (nothing was done), which the client
//! retries, reads and writes alike, with a short backoff ([`SLOT_MOVING_BACKOFF_MIN`] doubling to
//! [`SLOT_MOVING_BACKOFF_MAX`]) for up to the larger of `retry_for` and `request_timeout`; once
//! the move is over the old group answers 421 `not_owner` and the request follows the new map.
//!
//! View changes (add or remove a node) and their tasks: see `cluster.rs`
//! ([`Client::add_node`], [`Client::remove_node`], [`Client::wait_task`]). The errors and the
//! node codes that are definite are in `error.rs`, the settings in `options.rs`.
//!
//! Invariants:
//! - a write is retried (at any address) only after a definite failure: a connect error (nothing
//!   was sent), 503 (including `slot_moving`) or 421. Once a write may have reached a node and no answer came, the outcome
//!   is unknown and surfaces as [`ClientError::OutcomeUnknown`]; nothing retries it;
//! - an error is definite ([`ClientError::is_definite`]) only when the node's code is in the
//!   explicit list [`DEFINITE_CODES`] ("nothing was written"); `internal`, unknown codes and
//!   replies that cannot be parsed (a 200 included) are not, and are never retried. The client
//!   reports what the node said: a node that answers `unavailable` for a write it proposed lies,
//!   and the Jepsen suite's planted fault checks that the checker catches that lie;
//! - the routing state's lock is never held across an await.
//!
//! Not implemented: binary keys and values (keys and values are UTF-8 strings); learning leader
//! changes from replies (hints come only from map fetches, refetched after a routed failure).

#![warn(missing_docs)]

mod cluster;
mod error;
mod options;
mod routing;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvorum_wire::{AppendBody, DeleteQuery, DeleteReply, KeyReply, PutBody, WriteReply};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;

pub use error::{ClientError, DEFINITE_CODES};
pub use kvorum_router::{ClusterMap, NodeId, Route, ViewChange};
/// The view-change contract: the add-node body and a task's progress.
pub use kvorum_wire::{AddNodeBody, DrainReply, Leaderships, TaskProgress, TaskState};
/// A write's condition ([`Condition::Value`]`(None)`, "absent", is sent as version 0) and a
/// value with its version: the types the node and the Raft log use.
pub use kvorum_wire::{ClusterStatus, Condition, ConsistencyReport, GroupConsistency, Versioned};
pub use options::{parse_endpoints, ClientOptions, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_FOR};
pub use routing::{route_header, ROUTE_HEADER};

use error::{bad_reply, interpret, Reply};
use options::CONNECT_TIMEOUT;
use routing::{Routing, MAP_FETCH_BUDGET, MAX_REROUTES};

/// Characters of a key left unescaped in a URL path: RFC 3986 unreserved.
const KEY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Pause between retries of a definite failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// First pause before retrying a request refused with 503 `slot_moving` (its slot is frozen by a
/// move, which lasts milliseconds to a few seconds); it doubles up to [`SLOT_MOVING_BACKOFF_MAX`].
pub const SLOT_MOVING_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause between retries of a request refused with 503 `slot_moving`.
pub const SLOT_MOVING_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// A client of a kvorum cluster. Cheap to share across tasks (`Arc<Client>`).
pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
    /// The configured endpoint to try next (rotates on failure).
    next: AtomicUsize,
    opts: ClientOptions,
    /// Whether key requests are routed by the cluster map.
    smart: bool,
    routing: Mutex<Routing>,
    /// Held while the map is fetched, so that concurrent requests fetch it once.
    fetching: tokio::sync::Mutex<()>,
}

impl Client {
    /// A client of the nodes at `endpoints` (`host:port`), with smart routing on.
    pub fn new(endpoints: Vec<String>, opts: ClientOptions) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Unavailable("no endpoints given".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .local_address(opts.local_address)
            .build()
            .map_err(|e| ClientError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            endpoints,
            http,
            next: AtomicUsize::new(0),
            opts,
            smart: true,
            routing: Mutex::new(Routing::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Turns smart routing on (the default) or off. Off, every request goes to the configured
    /// endpoints, which forward it: the way to exercise one particular node.
    pub fn with_smart_routing(mut self, on: bool) -> Self {
        self.smart = on;
        self
    }

    /// Whether key requests are routed by the cluster map.
    pub fn smart_routing(&self) -> bool {
        self.smart
    }

    /// The value of `key`: linearizable, or a possibly stale read from one replica's local state.
    pub async fn get(&self, key: &str, stale: bool) -> Result<Versioned, ClientError> {
        let q = if stale { "?stale=true" } else { "" };
        let v = self
            .call(
                Some(key),
                Method::GET,
                &key_path("keys", key, q),
                None,
                false,
            )
            .await?;
        serde_json::from_value(v)
            .map(KeyReply::into_versioned)
            .map_err(bad_reply)
    }

    /// Sets `key` to `value` if `expect` holds; returns the new version.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        expect: Option<Condition>,
    ) -> Result<u64, ClientError> {
        let body = serde_json::to_value(PutBody::new(value, expect.as_ref())).map_err(bad_reply)?;
        let v = self
            .call(
                Some(key),
                Method::PUT,
                &key_path("keys", key, ""),
                Some(body),
                true,
            )
            .await?;
        version_of(v)
    }

    /// Removes `key` if `expect` holds; returns whether it existed.
    pub async fn delete(&self, key: &str, expect: Option<Condition>) -> Result<bool, ClientError> {
        let q = match DeleteQuery::new(expect.as_ref()) {
            DeleteQuery {
                expected_version: Some(v),
                ..
            } => format!("?expected_version={v}"),
            DeleteQuery {
                expected_value: Some(v),
                ..
            } => format!("?expected_value={}", utf8_percent_encode(&v, KEY_ESCAPE)),
            DeleteQuery { .. } => String::new(),
        };
        let v = self
            .call(
                Some(key),
                Method::DELETE,
                &key_path("keys", key, &q),
                None,
                true,
            )
            .await?;
        serde_json::from_value(v)
            .map(|r: DeleteReply| r.deleted)
            .map_err(bad_reply)
    }

    /// Appends `value` to `key` (absent counts as empty); returns the new version.
    pub async fn append(&self, key: &str, value: &str) -> Result<u64, ClientError> {
        let body = AppendBody {
            value: value.to_string(),
        };
        let body = serde_json::to_value(body).map_err(bad_reply)?;
        let v = self
            .call(
                Some(key),
                Method::POST,
                &key_path("append", key, ""),
                Some(body),
                true,
            )
            .await?;
        version_of(v)
    }

    /// The cluster status as seen by the first node that answers: `GET /v1/cluster/status`
    /// (nodes and their health, groups, spares, config group, tasks).
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let v = self
            .call(None, Method::GET, "/v1/cluster/status", None, false)
            .await?;
        serde_json::from_value(v).map_err(bad_reply)
    }

    /// Runs a consistency check now (`POST /v1/cluster/consistency`, answered by the metadata
    /// leader): every group's replicas hash their applied state at a new log index, and the
    /// report compares them per group. Harmless to repeat, so retried freely. Takes up to a few
    /// seconds plus the time a replica needs to hash its group: give a large cluster a longer
    /// request timeout.
    pub async fn check_consistency(&self) -> Result<ConsistencyReport, ClientError> {
        let v = self
            .call(None, Method::POST, "/v1/cluster/consistency", None, false)
            .await?;
        serde_json::from_value(v).map_err(bad_reply)
    }

    /// The cluster map and leader hints (data or config group id → node id) as the first node
    /// that answers knows them. Installs the map in the routing cache if it is newer.
    pub async fn map(&self) -> Result<(ClusterMap, BTreeMap<u64, u64>), ClientError> {
        let v = self
            .call(None, Method::GET, "/v1/cluster/map", None, false)
            .await?;
        let (map, leaders) = routing::parse_map_reply(v).map_err(bad_reply)?;
        self.routing()
            .install(map.clone(), &leaders, Instant::now());
        Ok((map, leaders))
    }

    /// The cluster map this client routes by, if it has fetched one.
    pub fn cached_map(&self) -> Option<Arc<ClusterMap>> {
        self.routing().cache.map().cloned()
    }

    /// How long a request keeps retrying a slot that is being moved, and how long
    /// [`Client::wait_task`] goes without any answer before giving up: the larger of
    /// `retry_for` and `request_timeout`.
    pub fn patience(&self) -> Duration {
        self.opts.retry_for.max(self.opts.request_timeout)
    }

    /// The routing state. Never held across an await.
    fn routing(&self) -> MutexGuard<'_, Routing> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.routing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request. Each pass tries the key's route (when routing) with the route header, then
    /// one configured endpoint without it; definite failures move on to the next address, and
    /// passes repeat after [`RETRY_PAUSE`] until `retry_for` has passed. A 421 `not_owner`
    /// refreshes the map and starts a new pass at once (at most [`MAX_REROUTES`] times, then the
    /// plain path only). A 503 `slot_moving` ends the pass (every node would forward to the same
    /// frozen slot) and starts a new one after a backoff ([`SLOT_MOVING_BACKOFF_MIN`] doubling to
    /// [`SLOT_MOVING_BACKOFF_MAX`]) until [`Client::patience`] has passed. A write that may have
    /// reached a node without an answer is never retried.
    async fn call(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        write: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let req = Request {
            method: &method,
            path,
            body: body.as_ref(),
            write,
        };
        let mut pauses = Pauses::new(Instant::now(), self.opts.retry_for, self.patience());
        let mut last = String::from("no node tried");
        let mut routed = self.smart && key.is_some();
        let mut reroutes = 0;
        loop {
            let route = match key {
                Some(k) if routed => self.route(k).await,
                _ => None,
            };
            let mut tried: Vec<&str> = Vec::new();
            let mut pass = match &route {
                Some(r) => self.try_route(r, &req, &mut tried, &mut last).await,
                None => Pass::Exhausted,
            };
            if let Pass::Exhausted = pass {
                pass = self.try_endpoint(&tried, &req, &mut last).await;
            }
            let go_on = match pass {
                Pass::Answer(result) => return result,
                Pass::NotOwner {
                    addr,
                    epoch,
                    route_epoch,
                } => {
                    reroutes += 1;
                    routed = reroutes <= MAX_REROUTES
                        && self.refresh_after_not_owner(addr, epoch, route_epoch).await;
                    continue;
                }
                Pass::Moving => pauses.moving().await,
                Pass::Exhausted => pauses.retry().await,
            };
            if !go_on {
                return Err(ClientError::Unavailable(last));
            }
        }
    }

    /// The routed step of a pass: sends to the route's addresses in turn with the route header,
    /// noting each in `tried` and each failure in `last`, until one answers or refuses in a way
    /// that ends the pass.
    async fn try_route<'r>(
        &self,
        r: &'r Route,
        req: &Request<'_>,
        tried: &mut Vec<&'r str>,
        last: &mut String,
    ) -> Pass<'r> {
        let header = route_header(r);
        for addr in &r.addrs {
            tried.push(addr);
            match self.send(addr, Some(&header), req).await {
                Attempt::Done(result) => {
                    self.routing().addr_ok(addr);
                    return Pass::Answer(result);
                }
                Attempt::Unknown(m) => {
                    self.routing().addr_failed(addr, Instant::now());
                    return Pass::Answer(Err(ClientError::OutcomeUnknown(m)));
                }
                Attempt::Failed(m) => {
                    self.routing().addr_failed(addr, Instant::now());
                    *last = m;
                }
                Attempt::Retry(m) => {
                    // No leader there: the hints may be old.
                    self.routing().mark_stale();
                    *last = m;
                }
                Attempt::SlotMoving(m) => {
                    // The group's leader answered: the other members would forward.
                    self.routing().addr_ok(addr);
                    *last = m;
                    return Pass::Moving;
                }
                Attempt::NotOwner { epoch, message } => {
                    // Definite: the node refused before proposing.
                    *last = message;
                    return Pass::NotOwner {
                        addr,
                        epoch,
                        route_epoch: r.epoch,
                    };
                }
            }
        }
        Pass::Exhausted
    }

    /// The plain step of a pass: sends to one configured endpoint not yet `tried`, without the
    /// route header, and rotates the endpoints after a definite failure.
    async fn try_endpoint(
        &self,
        tried: &[&str],
        req: &Request<'_>,
        last: &mut String,
    ) -> Pass<'static> {
        let Some(ep) = self.pick_endpoint(tried) else {
            return Pass::Exhausted;
        };
        match self.send(&ep, None, req).await {
            Attempt::Done(result) => Pass::Answer(result),
            Attempt::Unknown(m) => Pass::Answer(Err(ClientError::OutcomeUnknown(m))),
            Attempt::SlotMoving(m) => {
                *last = m;
                Pass::Moving
            }
            Attempt::Failed(m) | Attempt::Retry(m) | Attempt::NotOwner { message: m, .. } => {
                *last = m;
                self.next.fetch_add(1, Ordering::Relaxed);
                Pass::Exhausted
            }
        }
    }

    /// One HTTP exchange with `addr`, with the route header if given.
    async fn send(&self, addr: &str, route: Option<&str>, req: &Request<'_>) -> Attempt {
        let Request {
            method,
            path,
            body,
            write,
        } = *req;
        let mut req = self
            .http
            .request(method.clone(), format!("http://{addr}{path}"));
        if let Some(h) = route {
            req = req.header(ROUTE_HEADER, h);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            // Nothing was sent: safe to try elsewhere, even a write.
            Err(e) if e.is_connect() => Attempt::Failed(format!("{addr}: {e}")),
            // The write may have reached the node.
            Err(e) if write => Attempt::Unknown(format!("{addr}: {e}")),
            Err(e) => Attempt::Failed(format!("{addr}: {e}")),
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(bytes) => match interpret(status, &bytes) {
                        Reply::Done(r) => Attempt::Done(r),
                        Reply::Retry(m) => Attempt::Retry(format!("{addr}: {m}")),
                        Reply::SlotMoving(m) => Attempt::SlotMoving(format!("{addr}: {m}")),
                        Reply::NotOwner { epoch, message } => Attempt::NotOwner {
                            epoch,
                            message: format!("{addr}: {message}"),
                        },
                    },
                    Err(e) if write => Attempt::Unknown(format!("{addr}: {e}")),
                    Err(e) => Attempt::Failed(format!("{addr}: {e}")),
                }
            }
        }
    }

    /// The configured endpoint to try next, skipping those this pass already tried.
    fn pick_endpoint(&self, tried: &[&str]) -> Option<String> {
        let n = self.endpoints.len();
        let start = self.next.load(Ordering::Relaxed);
        (0..n)
            .map(|j| &self.endpoints[(start + j) % n])
            .find(|ep| !tried.contains(&ep.as_str()))
            .cloned()
    }

    /// The route of `key`, fetching the map first if it is missing or stale. A fetch already
    /// under way elsewhere is not waited for: the request routes by what is cached (or takes the
    /// plain path).
    async fn route(&self, key: &str) -> Option<Route> {
        if self.routing().should_fetch(Instant::now()) {
            if let Ok(_fetching) = self.fetching.try_lock() {
                if self.routing().should_fetch(Instant::now()) {
                    self.fetch_map(None).await;
                }
            }
        }
        self.routing().route(key, Instant::now())
    }

    /// After a 421 from `addr` to a route of epoch `route_epoch`: notes the reported epoch and
    /// fetches the map (from `addr` first: it knows the newer one) unless a newer map is cached
    /// already. Returns whether the cache now holds a map newer than the route's, so that
    /// routing again can help.
    async fn refresh_after_not_owner(
        &self,
        addr: &str,
        reported: Option<u64>,
        route_epoch: u64,
    ) -> bool {
        if let Some(e) = reported {
            self.routing().cache.saw_epoch(e);
            if e <= route_epoch {
                // The node's map is no newer than ours (the node is behind): a new map will not
                // help; the plain path lets it forward.
                return false;
            }
        }
        let _fetching = self.fetching.lock().await;
        if self.routing().cache.epoch() <= route_epoch {
            self.fetch_map(Some(addr)).await;
        }
        self.routing().cache.epoch() > route_epoch
    }

    /// Fetches the map from `prefer`, then the configured endpoints, within
    /// [`MAP_FETCH_BUDGET`], and installs it. A failure is recorded (so fetching backs off) and
    /// otherwise ignored: requests take the plain path meanwhile.
    async fn fetch_map(&self, prefer: Option<&str>) {
        let n = self.endpoints.len();
        let start = self.next.load(Ordering::Relaxed);
        let mut candidates: Vec<&str> = prefer.into_iter().collect();
        for j in 0..n {
            let ep = self.endpoints[(start + j) % n].as_str();
            if !candidates.contains(&ep) {
                candidates.push(ep);
            }
        }
        let timeout = MAP_FETCH_BUDGET.min(self.opts.request_timeout);
        let fetch = async {
            for addr in candidates {
                let resp = self
                    .http
                    .get(format!("http://{addr}/v1/cluster/map"))
                    .timeout(timeout)
                    .send()
                    .await;
                let Ok(resp) = resp else { continue };
                if !resp.status().is_success() {
                    continue;
                }
                let Ok(bytes) = resp.bytes().await else {
                    continue;
                };
                let parsed = serde_json::from_slice(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(routing::parse_map_reply);
                if let Ok(got) = parsed {
                    return Some(got);
                }
            }
            None
        };
        let got = tokio::time::timeout(MAP_FETCH_BUDGET, fetch)
            .await
            .ok()
            .flatten();
        let now = Instant::now();
        let mut routing = self.routing();
        match got {
            Some((map, leaders)) => routing.install(map, &leaders, now),
            None => routing.fetch_failed(now),
        }
    }
}

/// What one request sends, whichever address it goes to.
#[derive(Clone, Copy)]
struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    body: Option<&'a serde_json::Value>,
    /// Whether it may change state (then an exchange without an answer is an unknown outcome).
    write: bool,
}

/// How a step of a pass ended.
enum Pass<'r> {
    /// An answer to return: a success, an error retrying cannot fix, or an unknown outcome.
    Answer(Result<serde_json::Value, ClientError>),
    /// The key's slot is frozen by a move (503 `slot_moving`): end the pass, retry after a
    /// backoff.
    Moving,
    /// A 421 `not_owner` from `addr` to a route of epoch `route_epoch`, with the epoch of the
    /// node's map if it said: refresh the map and route again at once.
    NotOwner {
        addr: &'r str,
        epoch: Option<u64>,
        route_epoch: u64,
    },
    /// Every address of the step failed definitely (or there was none): go on.
    Exhausted,
}

/// The pauses between passes of one request and its deadlines: [`RETRY_PAUSE`] until
/// `retry_for` has passed, and for a slot being moved a backoff from
/// [`SLOT_MOVING_BACKOFF_MIN`] doubling to [`SLOT_MOVING_BACKOFF_MAX`] until the client's
/// patience has.
struct Pauses {
    deadline: Instant,
    moving_deadline: Instant,
    moving_pause: Duration,
}

impl Pauses {
    fn new(start: Instant, retry_for: Duration, patience: Duration) -> Pauses {
        Pauses {
            deadline: start + retry_for,
            moving_deadline: start + patience,
            moving_pause: SLOT_MOVING_BACKOFF_MIN,
        }
    }

    /// Sleeps before the next pass after a definite failure; false if the deadline has passed.
    async fn retry(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        true
    }

    /// Sleeps before the next pass after a `slot_moving` refusal (definite, and over once the
    /// move is: retry soon); false if the patience has run out.
    async fn moving(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.moving_deadline {
            return false;
        }
        tokio::time::sleep(self.moving_pause.min(self.moving_deadline - now)).await;
        self.moving_pause = (self.moving_pause * 2).min(SLOT_MOVING_BACKOFF_MAX);
        true
    }
}

/// The result of one HTTP exchange, as the retry loop sees it.
enum Attempt {
    /// An answer to return: a success, or an error retrying cannot fix.
    Done(Result<serde_json::Value, ClientError>),
    /// Safe to retry elsewhere: nothing was sent (connect error), or a read got no answer.
    Failed(String),
    /// A definite, retryable refusal (503: no leader, unavailable).
    Retry(String),
    /// 503 `slot_moving`: the key's slot is frozen by a move. Definite; retry after a backoff.
    SlotMoving(String),
    /// 421: the node's map gives the routed slot to another group. Definite.
    NotOwner { epoch: Option<u64>, message: String },
    /// A write may or may not have been applied.
    Unknown(String),
}

fn key_path(kind: &str, key: &str, query: &str) -> String {
    format!("/v1/{kind}/{}{query}", utf8_percent_encode(key, KEY_ESCAPE))
}

/// The new version a write reply carries.
fn version_of(v: serde_json::Value) -> Result<u64, ClientError> {
    serde_json::from_value(v)
        .map(|r: WriteReply| r.version)
        .map_err(bad_reply)
}

#[cfg(test)]
mod client_tests;

#[cfg(test)]
mod cluster_tests;

#[cfg(test)]
mod tests {
    use super::*;

    // Keys are percent-encoded so any UTF-8 key, slashes included, is one path segment.
    #[test]
    fn keys_are_escaped_in_paths() {
        assert_eq!(key_path("keys", "a/b c", ""), "/v1/keys/a%2Fb%20c");
        assert_eq!(
            key_path("keys", "k-1_.~", "?stale=true"),
            "/v1/keys/k-1_.~?stale=true"
        );
    }
}
