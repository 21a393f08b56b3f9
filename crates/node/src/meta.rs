//! The metadata role, active on the config group's leader: collects heartbeats, derives node
//! health, repairs groups from spares as resumable tasks recorded in the cluster map, and answers
//! the cluster status.
//!
//! Steps of a tick (every 500 ms, only while this node leads the config group): (1) a read-index
//! round on the config group, so the local map is everything committed; (2) on a new term, give
//! every node a fresh grace period (heartbeats are soft state, not in the log); (3) drive the
//! first task one step, or plan a repair when none runs.
//!
//! A repair replaces a replica on a dead (or removed) node: AddLearner (the replacement joins the
//! group as a learner and catches up by snapshot and log), Promote (it becomes a voter), RemoveDead
//! (the dead replica leaves; the map then lists the replacement and marks the dead node removed).
//! One task at a time in the whole cluster, so one membership change per group at a time. Each
//! step checks the group's real membership first, so a new leader can redo any step.
//!
//! Who replaces what: a data replica on a dead node is replaced by an alive spare. A config voter
//! on a dead node is replaced by an alive spare; once the node is removed (replaced elsewhere) any
//! alive non-voter may take its seat. With no candidate the group keeps running without it, and
//! the node may come back (it rejoins with its data).
//!
//! The map is changed only here, by a compare-and-set on its record version in the config group,
//! so two leaders of different terms can never both apply a change computed from the same map.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_raftstore::{Command, CommandResult, Condition, GroupId, NodeId, Raft};
use kvorum_router::{
    ClusterMap, NodeState as MapNodeState, Task, TaskKind, TaskStep, CONFIG_GROUP,
};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cluster::{initial_map, NodeState, MAP_KEY};
use crate::error::ApiError;
use crate::transport::check_internal;

/// Interval of the metadata loop.
const TICK: Duration = Duration::from_millis(500);
/// Interval of the one-line health summary in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for a new learner to catch up, per attempt.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

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
    at: Instant,
    beat: Option<Heartbeat>,
}

#[derive(Default)]
struct MetaInner {
    /// The config group term this node leads in, while it does.
    led_term: Option<u64>,
    seen: HashMap<NodeId, Seen>,
    last_summary: Option<Instant>,
    /// The task step this leader first saw pending, and when (for the test-only step delay).
    step_seen: Option<(u64, TaskStep, Instant)>,
    /// When the metadata loop last finished a tick.
    last_tick: Option<Instant>,
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
}

impl MetaState {
    fn lock(&self) -> std::sync::MutexGuard<'_, MetaInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
            .filter(|(_, n)| n.state == MapNodeState::Active)
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

    /// Notes that this node leads the config group in `term`: a new term starts every node's
    /// grace period afresh (the previous leader's heartbeat times are not known here).
    fn leading(&self, term: u64, map: &ClusterMap) -> bool {
        let mut inner = self.lock();
        if inner.led_term == Some(term) {
            return false;
        }
        inner.led_term = Some(term);
        let now = Instant::now();
        inner.seen = map
            .nodes
            .keys()
            .map(|id| {
                (
                    *id,
                    Seen {
                        at: now,
                        beat: None,
                    },
                )
            })
            .collect();
        inner.last_summary = Some(now);
        true
    }

    fn not_leading(&self) {
        self.lock().led_term = None;
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
pub fn is_metadata_leader(state: &NodeState) -> bool {
    state.group(CONFIG_GROUP).is_some_and(|r| {
        let m = r.metrics();
        let m = m.borrow();
        m.current_leader == Some(state.id()) && m.state.is_leader()
    })
}

/// The leader of the config group as this node's replica knows it.
pub fn config_leader_hint(state: &NodeState) -> Option<NodeId> {
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
pub fn receive_heartbeat(state: &NodeState, beat: Heartbeat) -> Result<HeartbeatReply, Refused> {
    if !is_metadata_leader(state) {
        return Err(Refused::NotLeader(config_leader_hint(state)));
    }
    let map = state.map();
    match map.nodes.get(&beat.node) {
        Some(n) if n.state == MapNodeState::Active => {}
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
    inner.seen.insert(
        beat.node,
        Seen {
            at: Instant::now(),
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
    State(state): State<Arc<NodeState>>,
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
pub async fn run(state: Arc<NodeState>) {
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
fn current_map(state: &NodeState) -> anyhow::Result<(ClusterMap, u64)> {
    match state.stored_map()? {
        Some(x) => Ok(x),
        None => Ok((initial_map(&state.identity)?, 0)),
    }
}

async fn meta_tick(state: &Arc<NodeState>) -> anyhow::Result<()> {
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
    match map.tasks.first() {
        Some(task) => drive(state, &map, &health, task).await,
        None => plan(state, &map, &health).await,
    }
}

fn log_summary(state: &NodeState, map: &ClusterMap, health: &BTreeMap<NodeId, Health>) {
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
        .filter(|(_, n)| n.state == MapNodeState::Removed)
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

/// Starts a repair when a replica sits on a dead or removed node and a candidate exists.
async fn plan(
    state: &NodeState,
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
) -> anyhow::Result<()> {
    let alive = |n: &NodeId| health.get(n) == Some(&Health::Alive);
    let spares: Vec<NodeId> = map.spares().into_iter().filter(alive).collect();
    let mut pick: Option<(GroupId, NodeId, NodeId)> = None;
    'groups: for (gid, g) in &map.groups {
        for m in &g.members {
            if needs_replacing(map, health, *m) {
                if let Some(s) = spares.first() {
                    pick = Some((*gid, *m, *s));
                    break 'groups;
                }
            }
        }
    }
    if pick.is_none() {
        for v in &map.config_voters {
            if !needs_replacing(map, health, *v) {
                continue;
            }
            // A node that is merely dead may come back; only a spare may take its seat (which
            // removes it). A removed node's seat goes to any alive non-voter.
            let candidate = spares
                .iter()
                .find(|s| !map.config_voters.contains(s))
                .copied()
                .or_else(|| {
                    (!map.is_active(*v))
                        .then(|| {
                            map.nodes
                                .keys()
                                .find(|n| {
                                    map.is_active(**n) && alive(n) && !map.config_voters.contains(n)
                                })
                                .copied()
                        })
                        .flatten()
                });
            if let Some(c) = candidate {
                pick = Some((CONFIG_GROUP, *v, c));
                break;
            }
        }
    }
    let Some((group, dead, replacement)) = pick else {
        return Ok(());
    };
    let map = update_map(state, "repair planned", |m| {
        m.tasks.push(Task {
            id: m.next_task_id,
            kind: TaskKind::ReplaceReplica {
                group,
                dead,
                replacement,
            },
            step: TaskStep::AddLearner,
        });
        m.next_task_id += 1;
    })
    .await?;
    tracing::warn!(
        group = %group,
        dead,
        replacement,
        epoch = map.epoch,
        "repair started: replacing the replica of node {dead} in group {group} by node {replacement}"
    );
    Ok(())
}

/// Runs the next step of `task`.
async fn drive(
    state: &NodeState,
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    task: &Task,
) -> anyhow::Result<()> {
    let TaskKind::ReplaceReplica {
        group,
        dead,
        replacement,
    } = task.kind.clone();
    let id = task.id;
    let delay = step_delay();
    if !delay.is_zero() {
        let mut inner = state.meta.lock();
        let since = match inner.step_seen {
            Some((i, step, at)) if i == id && step == task.step => at,
            _ => {
                let now = Instant::now();
                inner.step_seen = Some((id, task.step, now));
                now
            }
        };
        if since.elapsed() < delay {
            return Ok(());
        }
    }
    // A replacement that died before it was promoted: nothing depends on the learner yet, so
    // drop it and the task; planning starts over. Once it is a voter the change is finished and
    // the group repairs the replacement next.
    let replacement_lost =
        !map.is_active(replacement) || health.get(&replacement) == Some(&Health::Dead);
    if replacement_lost && task.step == TaskStep::AddLearner {
        let remove = MembershipOp::RemoveLearner { node: replacement };
        if let Err(e) = membership(state, map, group, &remove).await {
            tracing::warn!(group = %group, replacement, error = %e, "could not remove the learner");
        }
        update_map(state, "repair abandoned: the replacement died", |m| {
            m.tasks.retain(|t| t.id != id)
        })
        .await?;
        tracing::warn!(group = %group, replacement, "repair abandoned: the replacement node died");
        return Ok(());
    }
    let addr = map
        .addr(replacement)
        .context("the replacement is not in the map")?
        .to_string();
    match task.step {
        TaskStep::AddLearner => {
            membership(
                state,
                map,
                group,
                &MembershipOp::AddLearner {
                    node: replacement,
                    addr,
                },
            )
            .await?;
            set_step(state, id, TaskStep::Promote).await?;
            tracing::info!(group = %group, replacement, "repair: learner caught up");
        }
        TaskStep::Promote => {
            membership(
                state,
                map,
                group,
                &MembershipOp::AddVoter { node: replacement },
            )
            .await?;
            set_step(state, id, TaskStep::RemoveDead).await?;
            tracing::info!(group = %group, replacement, "repair: replacement promoted to voter");
        }
        TaskStep::RemoveDead => {
            membership(state, map, group, &MembershipOp::RemoveVoter { node: dead }).await?;
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
                    n.state = MapNodeState::Removed;
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
        }
    }
    Ok(())
}

async fn set_step(state: &NodeState, id: u64, step: TaskStep) -> anyhow::Result<()> {
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
/// record version). Returns the new map, also installed locally.
pub async fn update_map(
    state: &NodeState,
    what: &str,
    change: impl FnOnce(&mut ClusterMap),
) -> anyhow::Result<ClusterMap> {
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
    /// Promote the learner `node` to voter.
    AddVoter { node: NodeId },
    /// Remove the voter `node`.
    RemoveVoter { node: NodeId },
    /// Remove the learner `node`.
    RemoveLearner { node: NodeId },
}

/// Runs `op` on `group`'s leader: locally for the config group (this node leads it), else over
/// HTTP at the leader hint, then the other members.
async fn membership(
    state: &NodeState,
    map: &ClusterMap,
    group: GroupId,
    op: &MembershipOp,
) -> anyhow::Result<()> {
    if group == CONFIG_GROUP {
        let raft = state.group(CONFIG_GROUP).context("no config replica")?;
        return apply_membership(&raft, state.id(), op)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"));
    }
    let mut addrs = state.group_addrs(group);
    if addrs.is_empty() {
        anyhow::bail!(
            "group {group} has no reachable member in epoch {}",
            map.epoch
        );
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
            .json(op)
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
                last = format!("{addr}: {status} {}", r.text().await.unwrap_or_default());
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    anyhow::bail!("membership change {op:?} of group {group} failed: {last}")
}

/// Runs `op` on `raft`, which must lead its group. Idempotent: a change already in place is a
/// success.
async fn apply_membership(raft: &Raft, me: NodeId, op: &MembershipOp) -> Result<(), ApiError> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return Err(ApiError::NotLeader {
            leader: m.current_leader,
        });
    }
    let membership = m.membership_config.membership().clone();
    let is_voter = |n: &NodeId| membership.voter_ids().any(|v| v == *n);
    let is_node = |n: &NodeId| membership.get_node(n).is_some();
    let failed = |e: String| ApiError::Unavailable(format!("membership change failed: {e}"));
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
                    move |mm| {
                        mm.replication
                            .as_ref()
                            .and_then(|r| r.get(&node))
                            .and_then(|l| l.as_ref())
                            .is_some_and(|l| l.index >= index)
                    },
                    "the learner caught up",
                )
                .await
                .map_err(|e| {
                    ApiError::Unavailable(format!("learner {node} still catching up: {e}"))
                })?;
        }
        MembershipOp::AddVoter { node } => {
            if !is_voter(node) {
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*node])), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        MembershipOp::RemoveVoter { node } => {
            if is_voter(node) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*node])), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
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

/// `POST /internal/v1/groups/{group}/membership`: a membership change run by the group's leader.
pub async fn membership_handler(
    State(state): State<Arc<NodeState>>,
    Path(group): Path<u64>,
    headers: HeaderMap,
    Json(op): Json<MembershipOp>,
) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    let Some(raft) = state.group(GroupId(group)) else {
        return ApiError::NotLeader { leader: None }.into_response();
    };
    match apply_membership(&raft, state.id(), &op).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The cluster status. Built by the metadata leader from heartbeats (`health_known`); a node
/// that cannot reach it builds one from its own map and replicas, with every node's state
/// "unknown".
pub fn status(state: &NodeState) -> serde_json::Value {
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
            .all_hosted()
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
            let st = if n.state == MapNodeState::Removed {
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
pub async fn status_handler(State(state): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    Json(status(&state)).into_response()
}
