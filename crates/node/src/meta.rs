//! The metadata role, active on the config group's leader: collects heartbeats, derives node
//! health, repairs groups from spares as resumable tasks recorded in the cluster map, and answers
//! the cluster status.
//!
//! Steps of a tick (every 500 ms, only while this node leads the config group): (1) a read-index
//! round on the config group, so the local map is everything committed; (2) on a new term, give
//! every node a fresh grace period (heartbeats are soft state, not in the log); (3) start a driver
//! for every task that has none; (4) plan repairs for the groups without a task. The tick never
//! waits for a repair step: each task runs in its own driver, which stops when this node loses
//! the term it was started in.
//!
//! A repair replaces a replica on a dead (or removed) node: AddLearner (the replacement joins the
//! group as a learner and catches up by snapshot and log), then Swap: one membership change
//! (openraft's joint consensus from the old voters to the new ones, in one call) replaces the dead
//! voter by the learner, so the group never has more than K voters; the map then lists the
//! replacement and marks the dead node removed. Before the swap, the group's leader confirms the
//! dead replica no longer acknowledges its log (a node cut off from the metadata leader only is
//! not dead). At most one task per group; tasks of different groups run in parallel. A task not
//! swapped within [`TASK_TIME_LIMIT`] of its start, whose replacement died, or whose dead node is
//! heard from again is abandoned (its learner removed). Each step checks the group's real
//! membership first, so a new leader can redo any step. Membership requests carry the task id and
//! the map epoch; the group's leader refuses those its newest map makes stale, and a new metadata
//! leader claims each task (a map change) before its first request, so a deposed leader's late
//! step is refused.
//!
//! Who replaces what: a data replica on a dead node is replaced by an alive spare. A config voter
//! on a dead node is replaced by an alive spare; once the node is removed (replaced elsewhere) any
//! alive non-voter may take its seat. With no candidate the group keeps running without it, and
//! the node may come back (it rejoins with its data).
//!
//! The map is changed only here, by a compare-and-set on its record version in the config group,
//! so two leaders of different terms can never both apply a change computed from the same map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_raftstore::{Command, CommandResult, Condition, GroupId, NodeId, Raft};
use kvorum_router::{ClusterMap, NodeLifecycle, Task, TaskKind, TaskStep, CONFIG_GROUP};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::node::{initial_map, Node, MAP_KEY};
use crate::transport::check_internal;

/// Interval of the metadata loop.
const TICK: Duration = Duration::from_millis(500);
/// Interval of the one-line health summary in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for a new learner to catch up, per attempt.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// Longest a repair may run before its swap; past it the task is abandoned (its learner removed)
/// and planned afresh. Counted from the task's recorded start, so a new metadata leader keeps it.
const TASK_TIME_LIMIT: Duration = Duration::from_secs(600);
/// How long a group's leader waits for a "dead" replica to acknowledge a probe entry before it
/// believes it gone; a live follower acknowledges within one round trip.
const ALIVE_PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long the metadata leader leaves a node alone after a group's leader saw it still
/// replicating while its heartbeats said it was dead.
const ALIVE_VETO: Duration = Duration::from_secs(30);
/// Longest wait of a group's leader to learn the newer map a membership request names.
const MAP_LEARN_WAIT: Duration = Duration::from_secs(2);
/// The key of the liveness probe entry; the probe is a conditional delete that never holds, so
/// it changes no key, this one included.
const PROBE_KEY: &str = "kvorum-internal/liveness-probe";

/// One replica's state, as its node reports it in a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub group: GroupId,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub applied: Option<u64>,
    /// Keys and bytes of this replica's applied data.
    pub keys: Option<u64>,
    pub bytes: Option<u64>,
    /// The voter sets of the replica's current membership: one set, or two (old and new) while
    /// a joint membership change is under way.
    #[serde(default)]
    pub voters: Vec<Vec<NodeId>>,
}

/// A node's heartbeat to the metadata leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    /// The epoch of the sender's map: the reply carries the map when it is older.
    pub epoch: u64,
    pub replicas: Vec<ReplicaReport>,
    /// The sender's incarnation (see `incarnation.rs`); absent from nodes of older versions.
    #[serde(default)]
    pub incarnation: Option<String>,
}

/// The metadata leader's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub metadata_leader: NodeId,
    pub epoch: u64,
    /// The current map, when the sender's is older.
    pub map: Option<ClusterMap>,
    /// The leader of each group, as its replicas report it.
    pub leaders: BTreeMap<GroupId, NodeId>,
}

/// Health of a node, derived from the time since its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Alive,
    Suspect,
    Dead,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Dead => "dead",
        }
    }
}

/// The last heartbeat of a node.
#[derive(Debug, Clone)]
struct Seen {
    /// The start of the node's silence: its last heartbeat, or the start of a grace period.
    at: Instant,
    /// When its last heartbeat really arrived (never moved by a grace period).
    heard: Option<Instant>,
    beat: Option<Heartbeat>,
}

#[derive(Default)]
struct MetaInner {
    /// The config group term this node leads in, while it does.
    led_term: Option<u64>,
    seen: HashMap<NodeId, Seen>,
    last_summary: Option<Instant>,
    /// When the metadata loop last finished a tick.
    last_tick: Option<Instant>,
    /// The drivers of the tasks this leader runs, by task id.
    drivers: HashMap<u64, tokio::task::JoinHandle<()>>,
    /// Nodes a group's leader saw still replicating when asked to remove them, and when.
    vetoed: HashMap<NodeId, Instant>,
}

impl MetaInner {
    /// Stops every task driver (this node no longer leads in their term).
    fn stop_drivers(&mut self) {
        for (_, h) in self.drivers.drain() {
            h.abort();
        }
    }
}

/// Test-only fault (feature `test-faults`): how long every repair step waits before it runs,
/// from `KVORUM_FAULT_TASK_STEP_DELAY_MS`. Zero in production builds.
fn step_delay() -> Duration {
    static DELAY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms = std::env::var("KVORUM_FAULT_TASK_STEP_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|_| cfg!(feature = "test-faults"))
            .unwrap_or(0);
        if ms > 0 {
            tracing::error!("FAULT INJECTED: every repair step waits {ms} ms before it runs");
        }
        Duration::from_millis(ms)
    })
}

/// State of the metadata role, plus the node's guess of who holds it.
#[derive(Default)]
pub struct MetaState {
    inner: Mutex<MetaInner>,
    /// The metadata leader, as last learned from a heartbeat reply.
    known_leader: Mutex<Option<NodeId>>,
    /// As a group's leader: the newest epoch of a membership request accepted; older ones are
    /// refused.
    membership_epoch: AtomicU64,
    /// Serializes this node's map changes (see [`update_map`]).
    map_writes: tokio::sync::Mutex<()>,
}

impl MetaState {
    fn lock(&self) -> std::sync::MutexGuard<'_, MetaInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Incarnations brought by heartbeats of active nodes whose incarnation `map` does not
    /// record yet.
    fn unrecorded_incarnations(&self, map: &ClusterMap) -> BTreeMap<NodeId, String> {
        let inner = self.lock();
        inner
            .seen
            .iter()
            .filter_map(|(id, seen)| {
                let inc = seen.beat.as_ref()?.incarnation.clone()?;
                let node = map.nodes.get(id)?;
                (node.state == NodeLifecycle::Active && node.incarnation.is_none())
                    .then_some((*id, inc))
            })
            .collect()
    }

    /// The metadata leader this node last heard from.
    pub fn known_leader(&self) -> Option<NodeId> {
        *self.known_leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_known_leader(&self, l: Option<NodeId>) {
        *self.known_leader.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }

    /// Health of every node of `map` (removed ones excluded). `me` is alive by definition.
    fn health(
        &self,
        map: &ClusterMap,
        me: NodeId,
        suspect: Duration,
        dead: Duration,
    ) -> BTreeMap<NodeId, Health> {
        let inner = self.lock();
        let now = Instant::now();
        map.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeLifecycle::Active)
            .map(|(id, _)| {
                let age = inner
                    .seen
                    .get(id)
                    .map_or(Duration::MAX, |s| now.duration_since(s.at));
                let h = if *id == me || age < suspect {
                    Health::Alive
                } else if age < dead {
                    Health::Suspect
                } else {
                    Health::Dead
                };
                (*id, h)
            })
            .collect()
    }

    /// Nodes whose own heartbeat arrived within `within`.
    fn heard_within(&self, within: Duration) -> BTreeSet<NodeId> {
        self.lock()
            .seen
            .iter()
            .filter(|(_, s)| s.heard.is_some_and(|h| h.elapsed() < within))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Notes that a group's leader saw `node` still replicating.
    fn veto(&self, node: NodeId) {
        self.lock().vetoed.insert(node, Instant::now());
    }

    /// Nodes not to repair for now (see [`ALIVE_VETO`]).
    fn vetoed(&self) -> BTreeSet<NodeId> {
        let mut inner = self.lock();
        inner.vetoed.retain(|_, at| at.elapsed() < ALIVE_VETO);
        inner.vetoed.keys().copied().collect()
    }

    /// Notes that this node leads the config group in `term`: a new term starts every node's
    /// grace period afresh (the previous leader's heartbeat times are not known here).
    fn leading(&self, term: u64, map: &ClusterMap) -> bool {
        let mut inner = self.lock();
        if inner.led_term == Some(term) {
            return false;
        }
        inner.led_term = Some(term);
        inner.stop_drivers();
        inner.vetoed.clear();
        let now = Instant::now();
        inner.seen = map
            .nodes
            .keys()
            .map(|id| {
                (
                    *id,
                    Seen {
                        at: now,
                        heard: None,
                        beat: None,
                    },
                )
            })
            .collect();
        inner.last_summary = Some(now);
        true
    }

    fn not_leading(&self) {
        let mut inner = self.lock();
        inner.led_term = None;
        inner.stop_drivers();
    }

    /// Called at the start of a tick. When this node itself stalled between ticks for longer
    /// than `stall` (paused, starved of CPU), every node's silence is partly its own: restart
    /// their clocks rather than declare healthy nodes dead.
    fn tick(&self, stall: Duration) {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner
            .last_tick
            .is_some_and(|t| now.duration_since(t) > stall)
        {
            tracing::warn!(
                "the metadata loop stalled for over {} ms; restarting every node's heartbeat clock",
                stall.as_millis()
            );
            for s in inner.seen.values_mut() {
                s.at = now;
            }
        }
    }

    /// Called at the end of every tick, leading or not, successful or not.
    fn tick_done(&self) {
        self.lock().last_tick = Some(Instant::now());
    }
}

/// Whether this node currently leads the config group.
pub fn is_metadata_leader(state: &Node) -> bool {
    state.group(CONFIG_GROUP).is_some_and(|r| {
        let m = r.metrics();
        let m = m.borrow();
        m.current_leader == Some(state.id()) && m.state.is_leader()
    })
}

/// The leader of the config group as this node's replica knows it.
pub fn config_leader_hint(state: &Node) -> Option<NodeId> {
    state
        .group(CONFIG_GROUP)
        .and_then(|r| r.metrics().borrow().current_leader)
}

/// Why a heartbeat was not taken.
pub enum Refused {
    /// This node does not lead the config group; the leader is this, if known.
    NotLeader(Option<NodeId>),
    /// The sender was removed from the cluster.
    Removed(String),
}

/// Takes a heartbeat on the metadata leader.
pub fn receive_heartbeat(state: &Node, beat: Heartbeat) -> Result<HeartbeatReply, Refused> {
    if !is_metadata_leader(state) {
        return Err(Refused::NotLeader(config_leader_hint(state)));
    }
    let map = state.map();
    match map.nodes.get(&beat.node) {
        Some(n) if n.state == NodeLifecycle::Active => {
            if let (Some(recorded), Some(theirs)) = (&n.incarnation, &beat.incarnation) {
                if recorded != theirs {
                    return Err(Refused::Removed(format!(
                        "node {}'s data directory is not the one the cluster knows under id {} \
                         (incarnation {theirs}, the map records {recorded}): it was wiped or \
                         replaced. Start it with its original data directory, or remove node {} \
                         and join this machine as a new node",
                        beat.node, beat.node, beat.node
                    )));
                }
            }
        }
        Some(_) => {
            return Err(Refused::Removed(format!(
                "node {} was removed from the cluster; wipe its data directory and join it as a new node",
                beat.node
            )))
        }
        None => {
            return Err(Refused::Removed(format!(
                "node {} is not in the cluster map",
                beat.node
            )))
        }
    }
    let mut inner = state.meta.lock();
    let now = Instant::now();
    inner.seen.insert(
        beat.node,
        Seen {
            at: now,
            heard: Some(now),
            beat: Some(beat.clone()),
        },
    );
    let leaders = leaders_of(&inner);
    Ok(HeartbeatReply {
        metadata_leader: state.id(),
        epoch: map.epoch,
        map: (beat.epoch < map.epoch).then(|| (*map).clone()),
        leaders,
    })
}

/// The leader of each group, from the reports of replicas that say they lead (highest term wins).
fn leaders_of(inner: &MetaInner) -> BTreeMap<GroupId, NodeId> {
    best_reports(inner)
        .into_iter()
        .map(|(g, (node, _))| (g, node))
        .collect()
}

/// For each group, the node whose replica reports leading it in the highest term, and its report.
fn best_reports(inner: &MetaInner) -> BTreeMap<GroupId, (NodeId, ReplicaReport)> {
    let mut best: BTreeMap<GroupId, (NodeId, ReplicaReport)> = BTreeMap::new();
    for (node, seen) in &inner.seen {
        let Some(beat) = &seen.beat else { continue };
        for r in beat.replicas.iter().filter(|r| r.is_leader) {
            if best.get(&r.group).is_none_or(|(_, b)| b.term < r.term) {
                best.insert(r.group, (*node, r.clone()));
            }
        }
    }
    best
}

/// The voter sets of a replica's membership, as in [`ReplicaReport::voters`].
pub fn voter_sets(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Vec<Vec<NodeId>> {
    m.membership_config
        .membership()
        .get_joint_config()
        .iter()
        .map(|c| c.iter().copied().collect())
        .collect()
}

/// `POST /internal/v1/heartbeat`.
pub async fn heartbeat_handler(
    State(state): State<Arc<Node>>,
    headers: HeaderMap,
    Json(beat): Json<Heartbeat>,
) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    match receive_heartbeat(&state, beat) {
        Ok(reply) => Json(reply).into_response(),
        Err(refused) => refused_response(refused),
    }
}

fn refused_response(r: Refused) -> Response {
    match r {
        Refused::NotLeader(leader) => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(json!({ "code": "not_leader", "message": "not the leader", "leader": leader })),
        )
            .into_response(),
        Refused::Removed(message) => (
            StatusCode::GONE,
            Json(json!({ "code": "node_removed", "message": message })),
        )
            .into_response(),
    }
}

/// Runs the metadata loop for the node's lifetime; it acts only while the node leads the
/// config group.
pub async fn run(state: Arc<Node>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = meta_tick(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "metadata server: step failed; retrying");
        }
        state.meta.tick_done();
    }
}

/// The current map: the config group's stored record, or the initial map before the first
/// change; with the record version to compare-and-set against (0: absent).
fn current_map(state: &Node) -> anyhow::Result<(ClusterMap, u64)> {
    match state.stored_map()? {
        Some(x) => Ok(x),
        None => Ok((initial_map(&state.identity)?, 0)),
    }
}

async fn meta_tick(state: &Arc<Node>) -> anyhow::Result<()> {
    let Some(raft) = state.group(CONFIG_GROUP) else {
        return Ok(());
    };
    let term = {
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(state.id()) || !m.state.is_leader() {
            state.meta.not_leading();
            return Ok(());
        }
        m.current_term
    };
    tokio::time::timeout(state.cfg.request_timeout, raft.ensure_linearizable())
        .await
        .context("read index on the config group timed out")?
        .context("read index on the config group")?;
    let (map, _) = current_map(state)?;
    state.install_map(map.clone()).await?;
    state.meta.set_known_leader(Some(state.id()));
    if state.meta.leading(term, &map) {
        tracing::info!(term, map = %map.summary(), "this node is the metadata leader");
    }
    state.meta.tick(state.cfg.suspect_after);
    let health = state.meta.health(
        &map,
        state.id(),
        state.cfg.suspect_after,
        state.cfg.dead_after,
    );
    log_summary(state, &map, &health);
    let unrecorded = state.meta.unrecorded_incarnations(&map);
    if !unrecorded.is_empty() {
        // Recorded once, never changed: from now on a wiped node is refused under its old id.
        update_map(state, "record node incarnations", |m| {
            for (id, inc) in unrecorded {
                if let Some(n) = m.nodes.get_mut(&id) {
                    n.incarnation.get_or_insert(inc);
                }
            }
        })
        .await?;
        return Ok(());
    }
    start_drivers(state, &map, term);
    plan(state, &map, &health, term).await
}

fn log_summary(state: &Node, map: &ClusterMap, health: &BTreeMap<NodeId, Health>) {
    {
        let mut inner = state.meta.lock();
        if inner
            .last_summary
            .is_some_and(|t| t.elapsed() < SUMMARY_EVERY)
        {
            return;
        }
        inner.last_summary = Some(Instant::now());
    }
    let of = |h: Health| -> Vec<NodeId> {
        health
            .iter()
            .filter(|(_, x)| **x == h)
            .map(|(id, _)| *id)
            .collect()
    };
    let removed: Vec<NodeId> = map
        .nodes
        .iter()
        .filter(|(_, n)| n.state == NodeLifecycle::Removed)
        .map(|(id, _)| *id)
        .collect();
    tracing::info!(
        "health: epoch {} alive {:?} suspect {:?} dead {:?} removed {:?} spares {:?} tasks {}",
        map.epoch,
        of(Health::Alive),
        of(Health::Suspect),
        of(Health::Dead),
        removed,
        map.spares(),
        map.tasks.len()
    );
}

/// Whether `node`'s replicas need replacing: dead, or removed from the cluster.
fn needs_replacing(map: &ClusterMap, health: &BTreeMap<NodeId, Health>, node: NodeId) -> bool {
    !map.is_active(node) || health.get(&node) == Some(&Health::Dead)
}

/// One repair to start: replace `dead`'s replica of `group` by one on `replacement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pick {
    group: GroupId,
    dead: NodeId,
    replacement: NodeId,
}

/// The repairs to start now. Pure. At most one task per group: every group without a task
/// (data groups in id order, then the config group) gets a repair of its first replica on a dead
/// or removed node, if a candidate exists. A data replica is replaced by an alive spare; a config
/// voter by an alive spare that is no voter, or, once the node is removed (it will never come
/// back), by any alive non-voter. A node is the replacement of one task at a time. `vetoed`
/// nodes are dead by heartbeats, but a group's leader saw them still replicating: they are left
/// alone for now.
fn plan_repairs(
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    vetoed: &BTreeSet<NodeId>,
) -> Vec<Pick> {
    let alive = |n: &NodeId| health.get(n) == Some(&Health::Alive);
    let busy: BTreeSet<GroupId> = map.tasks.iter().map(|t| t.kind.group()).collect();
    let mut used: BTreeSet<NodeId> = map
        .tasks
        .iter()
        .map(|t| match &t.kind {
            TaskKind::ReplaceReplica { replacement, .. } => *replacement,
        })
        .collect();
    let replaceable =
        |n: NodeId| needs_replacing(map, health, n) && !(map.is_active(n) && vetoed.contains(&n));
    let spares: Vec<NodeId> = map.spares().into_iter().filter(alive).collect();
    let mut picks = Vec::new();
    for (gid, g) in map.groups.iter().filter(|(gid, _)| !busy.contains(gid)) {
        let Some(dead) = g.members.iter().copied().find(|m| replaceable(*m)) else {
            continue;
        };
        if let Some(s) = spares.iter().copied().find(|s| !used.contains(s)) {
            used.insert(s);
            picks.push(Pick {
                group: *gid,
                dead,
                replacement: s,
            });
        }
    }
    if !busy.contains(&CONFIG_GROUP) {
        for v in map
            .config_voters
            .iter()
            .copied()
            .filter(|v| replaceable(*v))
        {
            let free = |n: &NodeId| !used.contains(n) && !map.config_voters.contains(n);
            // A node that is merely dead may come back; only a spare may take its seat (which
            // removes it). A removed node's seat goes to any alive non-voter.
            let candidate = spares.iter().copied().find(free).or_else(|| {
                (!map.is_active(v))
                    .then(|| {
                        map.nodes
                            .keys()
                            .copied()
                            .find(|n| map.is_active(*n) && alive(n) && free(n))
                    })
                    .flatten()
            });
            if let Some(c) = candidate {
                picks.push(Pick {
                    group: CONFIG_GROUP,
                    dead: v,
                    replacement: c,
                });
                break;
            }
        }
    }
    picks
}

/// Milliseconds since the Unix epoch (the clock of [`Task::started_ms`]); 0 if the clock is
/// before 1970.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the repairs [`plan_repairs`] picks, all in one map change.
async fn plan(
    state: &Node,
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    term: u64,
) -> anyhow::Result<()> {
    let vetoed = state.meta.vetoed();
    let picks = plan_repairs(map, health, &vetoed);
    if picks.is_empty() {
        return Ok(());
    }
    let started_ms = now_ms();
    let map = update_map(state, "repair planned", |m| {
        for p in &picks {
            m.tasks.push(Task {
                id: m.next_task_id,
                kind: TaskKind::ReplaceReplica {
                    group: p.group,
                    dead: p.dead,
                    replacement: p.replacement,
                },
                step: TaskStep::AddLearner,
                started_ms,
                leader_term: term,
            });
            m.next_task_id += 1;
        }
    })
    .await?;
    for p in picks {
        tracing::warn!(
            group = %p.group,
            dead = p.dead,
            replacement = p.replacement,
            epoch = map.epoch,
            "repair started: replacing the replica of node {} in group {} by node {}",
            p.dead,
            p.group,
            p.replacement
        );
    }
    Ok(())
}

/// Starts a driver for every task of `map` that has none running on this leader.
fn start_drivers(state: &Arc<Node>, map: &ClusterMap, term: u64) {
    let mut inner = state.meta.lock();
    inner.drivers.retain(|_, h| !h.is_finished());
    for t in &map.tasks {
        inner
            .drivers
            .entry(t.id)
            .or_insert_with(|| tokio::spawn(drive_task(state.clone(), t.id, term)));
    }
}

/// Whether this node still leads the config group in `term`.
fn leads_in(state: &Node, term: u64) -> bool {
    state.group(CONFIG_GROUP).is_some_and(|r| {
        let m = r.metrics();
        let m = m.borrow();
        m.current_leader == Some(state.id()) && m.state.is_leader() && m.current_term == term
    })
}

/// Why a task that has not swapped yet must be abandoned, if it must. Pure.
/// `heard_recently`: nodes whose own heartbeat reached this leader within `suspect_after`.
fn abandon_reason(
    task: &Task,
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    heard_recently: &BTreeSet<NodeId>,
    now_ms: u64,
) -> Option<String> {
    let TaskKind::ReplaceReplica {
        dead, replacement, ..
    } = &task.kind;
    if !map.is_active(*replacement) || health.get(replacement) == Some(&Health::Dead) {
        return Some(format!("the replacement node {replacement} died"));
    }
    if map.is_active(*dead) && heard_recently.contains(dead) {
        return Some(format!("node {dead} is alive again"));
    }
    let age = Duration::from_millis(now_ms.saturating_sub(task.started_ms));
    if task.started_ms > 0 && age > TASK_TIME_LIMIT {
        return Some(format!(
            "it ran {} s, over its limit of {} s",
            age.as_secs(),
            TASK_TIME_LIMIT.as_secs()
        ));
    }
    None
}

/// Why a task must be abandoned now, from this leader's view, if it must.
fn should_abandon(state: &Node, map: &ClusterMap, task: &Task) -> Option<String> {
    let health = state.meta.health(
        map,
        state.id(),
        state.cfg.suspect_after,
        state.cfg.dead_after,
    );
    let heard = state.meta.heard_within(state.cfg.suspect_after);
    abandon_reason(task, map, &health, &heard, now_ms())
}

/// What a driver does after a step.
enum Next {
    /// Run the next step at once.
    Now,
    /// Look again after a tick.
    Later,
    /// The task is finished, abandoned, or no longer this driver's.
    Done,
}

/// Drives task `id` while this node leads the config group in `term`: claims it, runs its
/// steps in order (each idempotent), and abandons it when it can no longer finish safely. Runs
/// beside the metadata loop, one driver per task, so a long step holds up nothing else.
async fn drive_task(state: Arc<Node>, id: u64, term: u64) {
    // The test-only step delay: the step being held, and since when.
    let mut held: Option<(TaskStep, Instant)> = None;
    loop {
        if !leads_in(&state, term) {
            return;
        }
        let map = state.map();
        let Some(task) = map.tasks.iter().find(|t| t.id == id).cloned() else {
            return;
        };
        match drive_step(&state, &map, &task, term, &mut held).await {
            Ok(Next::Now) => {}
            Ok(Next::Later) => tokio::time::sleep(TICK).await,
            Ok(Next::Done) => return,
            Err(e) => {
                tracing::warn!(task = id, error = %format!("{e:#}"), "repair step failed; retrying");
                tokio::time::sleep(TICK).await;
            }
        }
    }
}

/// Runs the next step of `task`.
async fn drive_step(
    state: &Node,
    map: &ClusterMap,
    task: &Task,
    term: u64,
    held: &mut Option<(TaskStep, Instant)>,
) -> anyhow::Result<Next> {
    let TaskKind::ReplaceReplica {
        group,
        dead,
        replacement,
    } = task.kind.clone();
    let id = task.id;
    if task.leader_term != term || task.started_ms == 0 {
        // Claim the task: the epoch this bumps is newer than any a deposed leader can send.
        update_map(state, "repair claimed", |m| {
            if let Some(t) = m.tasks.iter_mut().find(|t| t.id == id) {
                t.leader_term = term;
                if t.started_ms == 0 {
                    t.started_ms = now_ms();
                }
            }
        })
        .await?;
        return Ok(Next::Now);
    }
    if task.step == TaskStep::AddLearner {
        if let Some(reason) = should_abandon(state, map, task) {
            abandon(state, task, &reason).await?;
            return Ok(Next::Done);
        }
    }
    let delay = step_delay();
    if !delay.is_zero() {
        let since = match *held {
            Some((step, at)) if step == task.step => at,
            _ => {
                let now = Instant::now();
                *held = Some((task.step, now));
                now
            }
        };
        if since.elapsed() < delay {
            return Ok(Next::Later);
        }
    }
    match task.step {
        TaskStep::AddLearner => {
            let addr = map
                .addr(replacement)
                .context("the replacement is not in the map")?
                .to_string();
            let op = MembershipOp::AddLearner {
                node: replacement,
                addr,
            };
            // The catch-up may take long: meanwhile, look every tick whether to give up.
            let outcome = {
                let call = membership(state, group, id, &op);
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        r = &mut call => break Ok(r),
                        _ = tokio::time::sleep(TICK) => {
                            if !leads_in(state, term) {
                                return Ok(Next::Done);
                            }
                            let map = state.map();
                            let Some(t) = map.tasks.iter().find(|t| t.id == id) else {
                                return Ok(Next::Done);
                            };
                            if let Some(reason) = should_abandon(state, &map, t) {
                                break Err(reason);
                            }
                        }
                    }
                }
            };
            match outcome {
                Ok(r) => r?,
                Err(reason) => {
                    abandon(state, task, &reason).await?;
                    return Ok(Next::Done);
                }
            }
            set_step(state, id, TaskStep::Swap).await?;
            tracing::info!(group = %group, replacement, "repair: learner caught up");
            Ok(Next::Now)
        }
        TaskStep::Swap => {
            let op = MembershipOp::ReplaceVoter { dead, replacement };
            match membership(state, group, id, &op).await {
                Ok(()) => {}
                Err(StepError::Refused { code, message }) if code == "replica_alive" => {
                    state.meta.veto(dead);
                    abandon(state, task, &message).await?;
                    return Ok(Next::Done);
                }
                Err(StepError::Refused { code, .. }) if code == "no_learner" => {
                    set_step(state, id, TaskStep::AddLearner).await?;
                    return Ok(Next::Now);
                }
                Err(e) => return Err(e.into()),
            }
            let map = update_map(state, "repair finished", |m| {
                let members = if group == CONFIG_GROUP {
                    Some(&mut m.config_voters)
                } else {
                    m.groups.get_mut(&group).map(|g| &mut g.members)
                };
                if let Some(members) = members {
                    members.remove(&dead);
                    members.insert(replacement);
                }
                if let Some(n) = m.nodes.get_mut(&dead) {
                    n.state = NodeLifecycle::Removed;
                }
                m.tasks.retain(|t| t.id != id);
            })
            .await?;
            tracing::warn!(
                group = %group,
                dead,
                replacement,
                epoch = map.epoch,
                "repair finished: node {replacement} replaced node {dead} in group {group}; node {dead} is removed"
            );
            Ok(Next::Done)
        }
    }
}

/// Drops `task`, which has not swapped: removes its learner (best effort; a learner left behind
/// holds no vote) while the task is still in the map, then the task.
async fn abandon(state: &Node, task: &Task, reason: &str) -> anyhow::Result<()> {
    let TaskKind::ReplaceReplica {
        group,
        dead,
        replacement,
    } = task.kind.clone();
    let remove = MembershipOp::RemoveLearner { node: replacement };
    if let Err(e) = membership(state, group, task.id, &remove).await {
        tracing::warn!(group = %group, replacement, error = %e, "could not remove the learner");
    }
    update_map(state, "repair abandoned", |m| {
        m.tasks.retain(|t| t.id != task.id)
    })
    .await?;
    tracing::warn!(
        group = %group,
        dead,
        replacement,
        "repair abandoned: {reason}; node {dead} stays in group {group}"
    );
    Ok(())
}

async fn set_step(state: &Node, id: u64, step: TaskStep) -> anyhow::Result<()> {
    update_map(state, "repair step", |m| {
        if let Some(t) = m.tasks.iter_mut().find(|t| t.id == id) {
            t.step = step;
        }
    })
    .await
    .map(|_| ())
}

/// Changes the map through the config group's log: reads the current map, applies `change`,
/// bumps the epoch and writes it back if nobody wrote it meanwhile (compare-and-set on the
/// record version). Returns the new map, also installed locally. This node's changes are made
/// one at a time, so that its task drivers do not fail each other's compare-and-set.
pub async fn update_map(
    state: &Node,
    what: &str,
    change: impl FnOnce(&mut ClusterMap),
) -> anyhow::Result<ClusterMap> {
    let _one = state.meta.map_writes.lock().await;
    let raft = state
        .group(CONFIG_GROUP)
        .context("this node hosts no config replica")?;
    let (cur, version) = current_map(state)?;
    let mut next = cur.clone();
    change(&mut next);
    next.epoch = cur.epoch + 1;
    next.validate()
        .map_err(|e| anyhow::anyhow!("refusing an invalid map ({what}): {e}"))?;
    let cmd = Command::Put {
        key: MAP_KEY.to_string(),
        value: serde_json::to_string(&next)?,
        condition: Some(Condition::Version(version)),
    };
    let resp = tokio::time::timeout(state.cfg.request_timeout, raft.client_write(cmd))
        .await
        .context("the map change was not committed in time")?
        .context("the map change failed")?;
    match resp.data {
        CommandResult::Written { .. } => {
            tracing::info!(epoch = next.epoch, "{what}: map {}", next.summary());
            state.install_map(next.clone()).await?;
            Ok(next)
        }
        CommandResult::ConditionFailed { .. } => {
            anyhow::bail!("the map changed concurrently; the change ({what}) will be re-planned")
        }
        other => anyhow::bail!("unexpected result of a map change: {other:?}"),
    }
}

/// A membership change of one group, run by its leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum MembershipOp {
    /// Add `node` as a learner (if not yet a member) and wait until it has caught up.
    AddLearner { node: NodeId, addr: String },
    /// In one membership change (joint consensus, old voters to new), replace the voter `dead`
    /// by the learner `replacement`, after confirming `dead` no longer replicates.
    ReplaceVoter { dead: NodeId, replacement: NodeId },
    /// Remove the learner `node`.
    RemoveLearner { node: NodeId },
}

/// `POST /internal/v1/groups/{group}/membership`: a membership step of a repair task, asked of
/// the group's leader by the metadata leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRequest {
    /// The task the step belongs to.
    pub task: u64,
    /// The epoch of the sender's map. The group's leader refuses epochs older than its own
    /// map's, or than one it has accepted before: they come from a deposed metadata leader.
    pub epoch: u64,
    #[serde(flatten)]
    pub op: MembershipOp,
}

/// Why a group's leader refused a membership step. Each variant says what the caller does.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// This node does not lead the group. Retry at `leader`, if known.
    #[error("this node is not the group's leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    /// The task or epoch is not in the newest map this node knows: the request comes from a
    /// deposed metadata leader or an outdated step. Re-read the map; do not retry as is.
    #[error("stale membership request: {0}")]
    StaleTask(String),
    /// The replica to remove still acknowledges the leader's log: it is not dead. Abandon the
    /// repair.
    #[error("node {node} is still replicating with the group's leader ({detail}); it is not dead")]
    ReplicaAlive { node: NodeId, detail: String },
    /// The replacement is not a learner of the group. Add it as a learner first.
    #[error("node {0} is not a learner of the group; add it as a learner first")]
    NoLearner(NodeId),
    /// The change could not be made now. Retry shortly.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl MembershipError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            MembershipError::NotLeader { .. } => "not_leader",
            MembershipError::StaleTask(_) => "stale_task",
            MembershipError::ReplicaAlive { .. } => "replica_alive",
            MembershipError::NoLearner(_) => "no_learner",
            MembershipError::Unavailable(_) => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            MembershipError::NotLeader { .. } => StatusCode::MISDIRECTED_REQUEST,
            MembershipError::StaleTask(_)
            | MembershipError::ReplicaAlive { .. }
            | MembershipError::NoLearner(_) => StatusCode::CONFLICT,
            MembershipError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for MembershipError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code(), "message": self.to_string() });
        if let MembershipError::NotLeader { leader } = &self {
            body["leader"] = json!(leader);
        }
        (self.status(), Json(body)).into_response()
    }
}

/// Why a membership step failed, as its driver sees it.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The group's leader refused the step; `code` is a [`MembershipError::code`].
    #[error("{message}")]
    Refused { code: String, message: String },
    /// The step could not be delivered or failed; retry.
    #[error("{0}")]
    Failed(String),
}

impl From<MembershipError> for StepError {
    fn from(e: MembershipError) -> StepError {
        match e {
            MembershipError::NotLeader { .. } | MembershipError::Unavailable(_) => {
                StepError::Failed(e.to_string())
            }
            _ => StepError::Refused {
                code: e.code().to_string(),
                message: e.to_string(),
            },
        }
    }
}

/// Runs `op` of task `task` on `group`'s leader: locally for the config group (this node leads
/// it), else over HTTP with the newest map's epoch, at the leader hint, then the other members.
async fn membership(
    state: &Node,
    group: GroupId,
    task: u64,
    op: &MembershipOp,
) -> Result<(), StepError> {
    if group == CONFIG_GROUP {
        let raft = state
            .group(CONFIG_GROUP)
            .ok_or_else(|| StepError::Failed("no config replica".into()))?;
        return Ok(apply_membership(&raft, state.id(), op).await?);
    }
    let map = state.map();
    let req = MembershipRequest {
        task,
        epoch: map.epoch,
        op: op.clone(),
    };
    let mut addrs = state.group_addrs(group);
    if addrs.is_empty() {
        return Err(StepError::Failed(format!(
            "group {group} has no reachable member in epoch {}",
            map.epoch
        )));
    }
    let mut last = String::new();
    let mut tried = BTreeSet::new();
    while let Some(addr) = addrs.first().cloned() {
        addrs.remove(0);
        if !tried.insert(addr.clone()) || tried.len() > 6 {
            continue;
        }
        let resp = state
            .internal_request(
                reqwest::Method::POST,
                &addr,
                &format!("/internal/v1/groups/{}/membership", group.0),
            )
            .timeout(CATCH_UP_WAIT + Duration::from_secs(5))
            .json(&req)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status() == StatusCode::MISDIRECTED_REQUEST => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if let Some(a) = body["leader"].as_u64().and_then(|l| map.addr(l)) {
                    addrs.insert(0, a.to_string());
                }
                last = format!("{addr}: not the leader");
            }
            Ok(r) => {
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let message = body["message"].as_str().unwrap_or_default().to_string();
                match body["code"].as_str() {
                    Some(code @ ("stale_task" | "replica_alive" | "no_learner")) => {
                        return Err(StepError::Refused {
                            code: code.to_string(),
                            message,
                        })
                    }
                    _ => last = format!("{addr}: {status} {message}"),
                }
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(StepError::Failed(format!(
        "membership change {op:?} of group {group} failed: {last}"
    )))
}

/// Checks a membership request against the newest map this group leader knows (`map`) and the
/// newest epoch it accepted before (`accepted`). Pure.
fn check_request(
    map: &ClusterMap,
    accepted: u64,
    group: GroupId,
    req: &MembershipRequest,
) -> Result<(), MembershipError> {
    if req.epoch > map.epoch {
        return Err(MembershipError::Unavailable(format!(
            "the request is at epoch {}, this node knows only epoch {}; retry once it has \
             learned the newer map",
            req.epoch, map.epoch
        )));
    }
    if req.epoch < map.epoch || req.epoch < accepted {
        return Err(MembershipError::StaleTask(format!(
            "the request is at epoch {}, but this node's map is at epoch {} and it accepted \
             epoch {accepted}: it comes from a deposed metadata leader or an outdated step",
            req.epoch, map.epoch
        )));
    }
    let Some(task) = map.tasks.iter().find(|t| t.id == req.task) else {
        return Err(MembershipError::StaleTask(format!(
            "task {} is not in the map at epoch {}",
            req.task, map.epoch
        )));
    };
    let TaskKind::ReplaceReplica {
        group: g,
        dead,
        replacement,
    } = &task.kind;
    let fits = *g == group
        && match &req.op {
            MembershipOp::AddLearner { node, .. } | MembershipOp::RemoveLearner { node } => {
                node == replacement
            }
            MembershipOp::ReplaceVoter {
                dead: d,
                replacement: r,
            } => d == dead && r == replacement,
        };
    if !fits {
        return Err(MembershipError::StaleTask(format!(
            "task {} at epoch {} does not do {:?} in group {group}",
            req.task, map.epoch, req.op
        )));
    }
    Ok(())
}

/// Admits `req` on this group leader: first learns the request's epoch if it is newer than the
/// local map (a heartbeat at once, waited for briefly), then [`check_request`]; an admitted
/// epoch becomes the oldest this node accepts from now on.
async fn admit(
    state: &Node,
    group: GroupId,
    req: &MembershipRequest,
) -> Result<(), MembershipError> {
    if state.map().epoch < req.epoch {
        state.refresh.notify_one();
        let deadline = Instant::now() + MAP_LEARN_WAIT;
        while state.map().epoch < req.epoch && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let accepted = state.meta.membership_epoch.load(Ordering::SeqCst);
    check_request(&state.map(), accepted, group, req)?;
    state
        .meta
        .membership_epoch
        .fetch_max(req.epoch, Ordering::SeqCst);
    Ok(())
}

/// The log index up to which the leader's replica of `node` matches, from the leader's metrics.
fn matched(m: &openraft::RaftMetrics<NodeId, BasicNode>, node: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&node))
        .and_then(|l| l.as_ref())
        .map(|l| l.index)
}

/// Confirms, on the group's leader, that `node`'s replica no longer follows its log: appends a
/// probe entry (a conditional delete that never holds, so it changes nothing) and waits up to
/// [`ALIVE_PROBE_WAIT`] for `node` to acknowledge it. One that acknowledges is alive, whatever
/// its heartbeats to the metadata leader say.
async fn confirm_gone(raft: &Raft, node: NodeId) -> Result<(), MembershipError> {
    let probe = Command::Delete {
        key: PROBE_KEY.to_string(),
        // Versions are log indexes: never u64::MAX.
        condition: Some(Condition::Version(u64::MAX)),
    };
    let index = tokio::time::timeout(ALIVE_PROBE_WAIT, raft.client_write(probe))
        .await
        .map_err(|_| {
            MembershipError::Unavailable("the liveness probe was not committed in time".into())
        })?
        .map_err(|e| MembershipError::Unavailable(format!("liveness probe: {e}")))?
        .log_id
        .index;
    let acked = raft
        .wait(Some(ALIVE_PROBE_WAIT))
        .metrics(
            move |m| matched(m, node).is_some_and(|i| i >= index),
            "the probe acknowledged",
        )
        .await;
    match acked {
        Ok(_) => Err(MembershipError::ReplicaAlive {
            node,
            detail: format!("it acknowledged the probe at log index {index}"),
        }),
        Err(openraft::metrics::WaitError::Timeout(..)) => Ok(()),
        Err(e) => Err(MembershipError::Unavailable(e.to_string())),
    }
}

/// Runs `op` on `raft`, which must lead its group. Idempotent: a change already in place is a
/// success.
async fn apply_membership(
    raft: &Raft,
    me: NodeId,
    op: &MembershipOp,
) -> Result<(), MembershipError> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) || !m.state.is_leader() {
        return Err(MembershipError::NotLeader {
            leader: m.current_leader,
        });
    }
    let membership = m.membership_config.membership().clone();
    let is_voter = |n: &NodeId| membership.voter_ids().any(|v| v == *n);
    let is_node = |n: &NodeId| membership.get_node(n).is_some();
    let failed = |e: String| MembershipError::Unavailable(format!("membership change failed: {e}"));
    match op {
        MembershipOp::AddLearner { node, addr } => {
            let index = if is_node(node) {
                m.last_log_index.unwrap_or(0)
            } else {
                raft.add_learner(*node, BasicNode::new(addr), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?
                    .log_id
                    .index
            };
            let node = *node;
            raft.wait(Some(CATCH_UP_WAIT))
                .metrics(
                    move |mm| matched(mm, node).is_some_and(|i| i >= index),
                    "the learner caught up",
                )
                .await
                .map_err(|e| {
                    MembershipError::Unavailable(format!("learner {node} still catching up: {e}"))
                })?;
        }
        MembershipOp::ReplaceVoter { dead, replacement } => {
            let joint = membership.get_joint_config();
            let last: BTreeSet<NodeId> = joint.last().cloned().unwrap_or_default();
            let target: BTreeSet<NodeId> = last
                .iter()
                .copied()
                .filter(|n| n != dead)
                .chain([*replacement])
                .collect();
            if joint.len() == 1 && last == target {
                return Ok(());
            }
            if !is_node(replacement) {
                return Err(MembershipError::NoLearner(*replacement));
            }
            // Not begun yet: make sure the dead replica is really gone before it leaves for good.
            // Once the joint configuration is in the log, the change is only finished.
            if joint.len() == 1 && last.contains(dead) {
                if *dead == me {
                    return Err(MembershipError::ReplicaAlive {
                        node: me,
                        detail: "it leads the group".into(),
                    });
                }
                confirm_gone(raft, *dead).await?;
            }
            // One call: openraft commits the joint configuration (old and new voters, a quorum
            // of each), then the new one; the group never has more than K voters in a config.
            raft.change_membership(ChangeMembers::ReplaceAllVoters(target), false)
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        MembershipOp::RemoveLearner { node } => {
            if is_node(node) && !is_voter(node) {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*node])), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// `POST /internal/v1/groups/{group}/membership`: a membership step of a repair task, run by the
/// group's leader once the request's task and epoch are current (see [`check_request`]).
pub async fn membership_handler(
    State(state): State<Arc<Node>>,
    Path(group): Path<u64>,
    headers: HeaderMap,
    Json(req): Json<MembershipRequest>,
) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    let group = GroupId(group);
    let Some(raft) = state.group(group) else {
        return MembershipError::NotLeader { leader: None }.into_response();
    };
    let leader = raft.metrics().borrow().current_leader;
    if leader != Some(state.id()) {
        return MembershipError::NotLeader { leader }.into_response();
    }
    if let Err(e) = admit(&state, group, &req).await {
        tracing::warn!(group = %group, task = req.task, epoch = req.epoch, error = %e, "membership request refused");
        return e.into_response();
    }
    match apply_membership(&raft, state.id(), &req.op).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => {
            if matches!(e, MembershipError::ReplicaAlive { .. }) {
                tracing::warn!(group = %group, task = req.task, error = %e, "membership change refused");
            }
            e.into_response()
        }
    }
}

/// The cluster status. Built by the metadata leader from heartbeats (`health_known`); a node
/// that cannot reach it builds one from its own map and replicas, with every node's state
/// "unknown".
pub fn status(state: &Node) -> serde_json::Value {
    let map = state.map();
    let leading = is_metadata_leader(state);
    let health_known = leading && state.meta.lock().led_term.is_some();
    let health = health_known.then(|| {
        state.meta.health(
            &map,
            state.id(),
            state.cfg.suspect_after,
            state.cfg.dead_after,
        )
    });
    let inner = state.meta.lock();
    let now = Instant::now();
    let best = if health_known {
        best_reports(&inner)
    } else {
        // Our own replicas are all we know.
        state
            .replicas()
            .into_iter()
            .filter_map(|(g, h)| {
                let m = h.raft.metrics().borrow().clone();
                let l = m.current_leader?;
                let r = ReplicaReport {
                    group: g,
                    is_leader: l == state.id(),
                    leader: Some(l),
                    term: m.current_term,
                    applied: m.last_applied.map(|x| x.index),
                    keys: None,
                    bytes: None,
                    voters: voter_sets(&m),
                };
                Some((g, (l, r)))
            })
            .collect()
    };
    let nodes: Vec<serde_json::Value> = map
        .nodes
        .iter()
        .map(|(id, n)| {
            let st = if n.state == NodeLifecycle::Removed {
                "removed"
            } else {
                health
                    .as_ref()
                    .and_then(|h| h.get(id))
                    .map_or("unknown", |h| h.as_str())
            };
            let group = map.group_of_node(*id);
            let beat = health_known
                .then(|| {
                    inner
                        .seen
                        .get(id)
                        .and_then(|s| s.beat.as_ref().map(|b| (s.at, b)))
                })
                .flatten();
            let last = beat.map(|(at, _)| now.duration_since(at).as_millis() as u64);
            // The node's data: the sum over the replicas it hosts.
            let data_bytes =
                beat.map(|(_, b)| b.replicas.iter().filter_map(|r| r.bytes).sum::<u64>());
            json!({
                "id": id,
                "addr": n.addr,
                "state": st,
                "role": if group.is_some() { "replica" } else { "spare" },
                "config_voter": map.config_voters.contains(id),
                "groups": group.map(|g| vec![g.0]).unwrap_or_default(),
                "last_heartbeat_ms": last,
                "data_bytes": data_bytes,
            })
        })
        .collect();
    let groups: Vec<serde_json::Value> = map
        .groups
        .iter()
        .map(|(gid, g)| {
            let r = best.get(gid).map(|(_, r)| r);
            let ranges: Vec<String> = map
                .slot_ranges(*gid)
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            json!({
                "id": gid.0,
                "members": g.members,
                "leader": r.and_then(|r| r.leader),
                "term": r.map(|r| r.term),
                "slots": ranges.join(","),
                "slot_count": map.slot_count_of(*gid),
                "keys": r.and_then(|r| r.keys),
                "bytes": r.and_then(|r| r.bytes),
                "applied": r.and_then(|r| r.applied),
                "voters": r.map(|r| r.voters.clone()),
            })
        })
        .collect();
    let config = best.get(&CONFIG_GROUP).map(|(_, r)| r);
    let tasks: Vec<serde_json::Value> = map
        .tasks
        .iter()
        .map(|t| {
            let TaskKind::ReplaceReplica {
                group,
                dead,
                replacement,
            } = &t.kind;
            json!({
                "id": t.id,
                "kind": "replace_replica",
                "group": group.0,
                "dead": dead,
                "replacement": replacement,
                "step": t.step.to_string(),
                "started_ms": t.started_ms,
            })
        })
        .collect();
    json!({
        "cluster_id": state.identity.cluster_id,
        "epoch": map.epoch,
        "k": map.k,
        "slot_count": map.slot_count,
        "hash": map.hash,
        "answered_by": state.id(),
        "metadata_leader": if leading { Some(state.id()) } else { config.and_then(|r| r.leader).or(state.meta.known_leader()) },
        "health_known": health_known,
        "nodes": nodes,
        "groups": groups,
        "spares": map.spares(),
        "config": {
            "voters": map.config_voters,
            "leader": if leading { Some(state.id()) } else { config.and_then(|r| r.leader) },
            "term": config.map(|r| r.term),
        },
        "tasks": tasks,
    })
}

/// `GET /internal/v1/status`: the status as this node knows it (the metadata leader's is full).
pub async fn status_handler(State(state): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    Json(status(&state)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initial map of `n` nodes with K=3 on made-up addresses.
    fn map(n: usize) -> ClusterMap {
        let view: Vec<String> = (1..=n).map(|i| format!("127.0.0.{i}:7000")).collect();
        ClusterMap::initial(&view, 3).expect("a valid view")
    }

    /// Every node of `map` alive except `dead`.
    fn health(map: &ClusterMap, dead: &[NodeId]) -> BTreeMap<NodeId, Health> {
        map.nodes
            .keys()
            .map(|id| {
                let h = if dead.contains(id) {
                    Health::Dead
                } else {
                    Health::Alive
                };
                (*id, h)
            })
            .collect()
    }

    fn task(id: u64, group: u64, dead: NodeId, replacement: NodeId) -> Task {
        Task {
            id,
            kind: TaskKind::ReplaceReplica {
                group: GroupId(group),
                dead,
                replacement,
            },
            step: TaskStep::AddLearner,
            started_ms: 1_000_000,
            leader_term: 1,
        }
    }

    // Two groups with a dead replica each and two spares: both repairs start at once, each with
    // its own spare; the config voter on a dead node waits for a free candidate.
    #[test]
    fn repairs_of_different_groups_are_planned_together() {
        let m = map(8);
        let picks = plan_repairs(&m, &health(&m, &[3, 5]), &BTreeSet::new());
        assert_eq!(
            picks,
            vec![
                Pick {
                    group: GroupId(1),
                    dead: 3,
                    replacement: 7
                },
                Pick {
                    group: GroupId(2),
                    dead: 5,
                    replacement: 8
                },
            ]
        );
    }

    // At most one task per group: a group with a task gets no second one, and a spare that is
    // already some task's replacement is not picked again.
    #[test]
    fn one_task_per_group_and_per_replacement() {
        let mut m = map(8);
        m.tasks.push(task(1, 1, 3, 7));
        let picks = plan_repairs(&m, &health(&m, &[2, 3, 5]), &BTreeSet::new());
        assert_eq!(
            picks,
            vec![Pick {
                group: GroupId(2),
                dead: 5,
                replacement: 8
            }]
        );
    }

    // A node a group's leader saw replicating is not planned for repair while vetoed.
    #[test]
    fn vetoed_node_is_not_repaired() {
        let m = map(7);
        let h = health(&m, &[5]);
        assert!(plan_repairs(&m, &h, &BTreeSet::from([5])).is_empty());
        assert_eq!(plan_repairs(&m, &h, &BTreeSet::new()).len(), 1);
    }

    // Before the swap, a task is abandoned when its replacement died, when its dead node is
    // heard from again, or when it is over its time limit; otherwise it goes on.
    #[test]
    fn abandon_reasons() {
        let m = map(7);
        let t = task(1, 2, 5, 7);
        let now = t.started_ms + 1_000;
        let none = BTreeSet::new();
        assert_eq!(abandon_reason(&t, &m, &health(&m, &[5]), &none, now), None);
        let r = abandon_reason(&t, &m, &health(&m, &[5, 7]), &none, now);
        assert!(r.is_some_and(|r| r.contains("replacement node 7 died")));
        let r = abandon_reason(&t, &m, &health(&m, &[]), &BTreeSet::from([5]), now);
        assert!(r.is_some_and(|r| r.contains("node 5 is alive again")));
        let late = t.started_ms + TASK_TIME_LIMIT.as_millis() as u64 + 1;
        let r = abandon_reason(&t, &m, &health(&m, &[5]), &none, late);
        assert!(r.is_some_and(|r| r.contains("over its limit")));
    }

    fn request(task: u64, epoch: u64, op: MembershipOp) -> MembershipRequest {
        MembershipRequest { task, epoch, op }
    }

    // A group's leader accepts a step of a task in its newest map at that map's epoch, and
    // refuses: an older epoch, an epoch older than one it accepted, an unknown task, a step the
    // task does not do, and (as unavailable) an epoch newer than its map.
    #[test]
    fn membership_requests_are_checked_against_the_newest_map() {
        let mut m = map(7);
        m.epoch = 10;
        m.tasks.push(task(4, 2, 5, 7));
        let g2 = GroupId(2);
        let add = MembershipOp::AddLearner {
            node: 7,
            addr: "127.0.0.7:7000".into(),
        };
        let swap = MembershipOp::ReplaceVoter {
            dead: 5,
            replacement: 7,
        };
        assert!(check_request(&m, 0, g2, &request(4, 10, add.clone())).is_ok());
        assert!(check_request(&m, 10, g2, &request(4, 10, swap.clone())).is_ok());
        let code = |r: Result<(), MembershipError>| r.err().map(|e| e.code());
        assert_eq!(
            code(check_request(&m, 0, g2, &request(4, 9, add.clone()))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 11, g2, &request(4, 10, add.clone()))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 0, g2, &request(5, 10, add.clone()))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 0, GroupId(1), &request(4, 10, add))),
            Some("stale_task")
        );
        let other = MembershipOp::ReplaceVoter {
            dead: 4,
            replacement: 7,
        };
        assert_eq!(
            code(check_request(&m, 0, g2, &request(4, 10, other))),
            Some("stale_task")
        );
        assert_eq!(
            code(check_request(&m, 0, g2, &request(4, 11, swap))),
            Some("unavailable")
        );
    }

    // The wire form of a membership request: task and epoch beside the tagged operation.
    #[test]
    fn membership_request_wire_form() {
        let r = request(
            4,
            10,
            MembershipOp::ReplaceVoter {
                dead: 5,
                replacement: 7,
            },
        );
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(
            v,
            json!({ "task": 4, "epoch": 10, "op": "replace_voter", "dead": 5, "replacement": 7 })
        );
        let back: MembershipRequest = serde_json::from_value(v).expect("deserializes");
        assert_eq!((back.task, back.epoch), (4, 10));
    }
}
