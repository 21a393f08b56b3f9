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
//! swapped within `TASK_TIME_LIMIT` of its start, whose replacement died, or whose dead node is
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

mod admin;
mod change;
mod consistency;
mod heartbeats;
mod leader_call;
mod membership;
mod moves;
mod probe;
mod progress;
mod tasks;

pub use admin::{admin_handler, AdminOp, AdminReply, AdminRequest};
pub use change::{cancel_change, check_change, start_change};
pub(crate) use consistency::comparisons;
pub use consistency::{consistency_handler, hash_handler};
pub(crate) use heartbeats::best_reports;
pub use heartbeats::{
    heartbeat_handler, receive_heartbeat, voter_sets, Health, Heartbeat, HeartbeatReply, Refused,
    ReplicaReport,
};
pub use membership::{membership_handler, MembershipOp, MembershipRequest};
pub use moves::{next_batch, MOVE_BATCH_SLOTS};
pub use progress::{describe, progress};
use tasks::{plan, start_drivers};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_raftstore::{Command, CommandResult, Condition, NodeId};
use kvorum_router::{ClusterMap, MapError, NodeLifecycle, CONFIG_GROUP};

use crate::node::{initial_map, Node, MAP_KEY};

/// Longest wait of a group's leader to learn the newer map an admin or membership request
/// names (a heartbeat round to the metadata leader, with room for a slow one).
pub(crate) const MAP_LEARN_WAIT: Duration = Duration::from_secs(2);
/// Interval of the metadata loop.
const TICK: Duration = Duration::from_millis(500);
/// Interval of the one-line health summary in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The last heartbeat of a node.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The start of the node's silence: its last heartbeat, or the start of a grace period.
    pub(crate) at: Instant,
    /// When its last heartbeat really arrived (never moved by a grace period).
    heard: Option<Instant>,
    pub(crate) beat: Option<Heartbeat>,
}

#[derive(Default)]
pub(crate) struct MetaInner {
    /// The config group term this node leads in, while it does.
    pub(crate) led_term: Option<u64>,
    /// The term and the start of the last config read index that confirmed this node's
    /// leadership (see [`MetaState::confirmed_in`]).
    confirmed: Option<(u64, Instant)>,
    pub(crate) seen: HashMap<NodeId, Seen>,
    last_summary: Option<Instant>,
    /// When the metadata loop last finished a tick.
    last_tick: Option<Instant>,
    /// The drivers of the tasks this leader runs, by task id.
    drivers: HashMap<u64, tokio::task::JoinHandle<()>>,
    /// Nodes a group's leader saw still replicating when asked to remove them, and when.
    vetoed: HashMap<NodeId, Instant>,
    /// The consistency check's schedule and the mismatches it logged.
    check: consistency::CheckState,
}

impl MetaInner {
    /// Stops every task driver (this node no longer leads in their term).
    fn stop_drivers(&mut self) {
        for (_, h) in self.drivers.drain() {
            h.abort();
        }
    }
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
    /// As a group's leader: one lock per group, held while a driver's step is proposed and,
    /// for a membership step, from its fence to its membership change (see
    /// [`MetaState::step_lock`]).
    step_locks: Mutex<HashMap<kvorum_raftstore::GroupId, Arc<tokio::sync::Mutex<()>>>>,
}

impl MetaState {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, MetaInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock of `group`'s driver steps on this node. A membership step holds it from its
    /// [`Command::Fence`] to its membership change, and every other step while it is proposed,
    /// so a newer driver's fence can never fall between a deposed driver's fence check and its
    /// membership change on this leader (on another leader the change fails: it no longer
    /// leads).
    pub(crate) fn step_lock(
        &self,
        group: kvorum_raftstore::GroupId,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.step_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(group).or_default().clone()
    }

    /// Whether this node holds the metadata role in `term` now: it leads the config group in
    /// `term` and confirmed it with a quorum (a config read index) less than [`lease`] ago.
    /// Drivers, heartbeat answers and map decisions act only while this holds.
    pub(crate) fn confirmed_in(&self, term: u64, lease: Duration) -> bool {
        let inner = self.lock();
        inner.led_term == Some(term)
            && inner
                .confirmed
                .is_some_and(|(t, at)| t == term && at.elapsed() < lease)
    }

    /// The term in which this node holds a confirmed metadata role (see
    /// [`MetaState::confirmed_in`]), if any.
    pub(crate) fn confirmed_term(&self, lease: Duration) -> Option<u64> {
        let inner = self.lock();
        match (inner.led_term, inner.confirmed) {
            (Some(term), Some((t, at))) if t == term && at.elapsed() < lease => Some(term),
            _ => None,
        }
    }

    /// The metadata leader this node last heard from.
    pub fn known_leader(&self) -> Option<NodeId> {
        *self.known_leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the metadata leader this node last heard from (`None`: none answered).
    pub fn set_known_leader(&self, l: Option<NodeId>) {
        *self.known_leader.lock().unwrap_or_else(|p| p.into_inner()) = l;
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

    /// Gives the metadata role up at once: its drivers stop and no heartbeat is answered until
    /// a read index confirms this node's leadership again.
    fn not_leading(&self) {
        let mut inner = self.lock();
        if inner.led_term.is_some() {
            tracing::warn!("this node no longer holds the metadata role");
        }
        inner.led_term = None;
        inner.confirmed = None;
        inner.stop_drivers();
    }

    /// Notes that a config read index started at `at` confirmed this node's leadership in `term`.
    fn confirmed(&self, term: u64, at: Instant) {
        self.lock().confirmed = Some((term, at));
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

/// How long a confirmation of the config group's leadership lets the metadata role act: four
/// fifths of the election timeout, so it lapses before any other config voter can be elected
/// (a voter starts an election no sooner than an election timeout after it last heard this
/// leader, which is after the confirming round started). The metadata loop renews it every
/// [`TICK`].
pub(crate) fn lease(state: &Node) -> Duration {
    state.cfg.election_timeout * 4 / 5
}

/// Whether this node still leads the config group in `term`, as its replica sees it.
fn raft_leads_in(state: &Node, term: u64) -> bool {
    state.group(CONFIG_GROUP).is_some_and(|r| {
        let m = r.metrics();
        let m = m.borrow();
        m.current_leader == Some(state.id()) && m.state.is_leader() && m.current_term == term
    })
}

/// Whether this node may act as the metadata leader of `term` now: waits (at most two election
/// timeouts) while its replica still leads in `term` but the last confirmation lapsed (a slow
/// tick); `false` once it no longer leads in `term` or the confirmation does not come.
pub(crate) async fn acts_in(state: &Node, term: u64) -> bool {
    let lease = lease(state);
    let deadline = Instant::now() + state.cfg.election_timeout * 2;
    loop {
        if state.meta.confirmed_in(term, lease) {
            return true;
        }
        if !raft_leads_in(state, term) || Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
}

/// How often [`acts_in`] looks again for a renewed confirmation (the loop renews it every
/// [`TICK`]; a driver waits at most one poll past it).
const CONFIRM_POLL: Duration = Duration::from_millis(20);

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

/// Runs the metadata loop for the node's lifetime; it acts only while the node leads the
/// config group.
pub async fn run(state: Arc<Node>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = meta_tick(&state).await {
            if is_map_conflict(&e) {
                tracing::info!(error = %format!("{e:#}"), "metadata server: lost a map race; retrying");
            } else {
                tracing::warn!(error = %format!("{e:#}"), "metadata server: step failed; retrying");
            }
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
    // Confirm the leadership with a quorum before acting on it (openraft 0.9 has no
    // check-quorum: a leader cut off from its config peers still believes it leads). A leader
    // that cannot confirm gives the role up at once.
    let started = Instant::now();
    let confirmed = tokio::time::timeout(lease(state), raft.ensure_linearizable()).await;
    match confirmed {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            state.meta.not_leading();
            return Err(anyhow::Error::from(e).context("read index on the config group"));
        }
        Err(_) => {
            state.meta.not_leading();
            anyhow::bail!("read index on the config group timed out: leadership not confirmed");
        }
    }
    let (map, _) = current_map(state)?;
    state.install_map(map.clone()).await?;
    state.meta.set_known_leader(Some(state.id()));
    if state.meta.leading(term, &map) {
        tracing::info!(term, map = %map.summary(), "this node is the metadata leader");
    }
    // Only now (the stored map installed): heartbeats are answered and drivers act.
    state.meta.confirmed(term, started);
    state.meta.tick(state.cfg.suspect_after);
    let health = state.meta.health(
        &map,
        state.id(),
        state.cfg.suspect_after,
        state.cfg.dead_after,
    );
    log_summary(state, &map, &health);
    consistency::tick(state, &map);
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

/// Why a map change was not made. Only [`MapUpdateError::Conflict`] is expected in normal
/// operation (two writers raced); the caller re-plans from the newer map.
#[derive(Debug, thiserror::Error)]
pub enum MapUpdateError {
    /// The compare-and-set lost to a concurrent writer: the map changed since it was read.
    /// Nothing was written; re-plan from the newer map.
    #[error("the map changed concurrently; the change ({what}) will be re-planned")]
    Conflict {
        /// What the change was for.
        what: String,
    },
    /// The changed map breaks an invariant of the map; nothing was written.
    #[error("refusing an invalid map ({what}): {error}")]
    Invalid {
        /// What the change was for.
        what: String,
        /// The broken invariant.
        error: MapError,
    },
    /// The change was not committed (no config replica, timeout, failed or unexpected write);
    /// it may or may not be in the log. Retry after re-reading the map.
    #[error("{0}")]
    NotCommitted(String),
    /// Reading the current map or installing the new one locally failed.
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

/// Whether `e` is (or wraps) a lost compare-and-set of the map: an expected race, logged below
/// warning.
pub(crate) fn is_map_conflict(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<MapUpdateError>(),
        Some(MapUpdateError::Conflict { .. })
    )
}

/// Changes the map through the config group's log: reads the current map, applies `change`,
/// bumps the epoch and writes it back if nobody wrote it meanwhile (compare-and-set on the
/// record version). Returns the new map, also installed locally. This node's changes are made
/// one at a time, so that its task drivers do not fail each other's compare-and-set.
pub async fn update_map(
    state: &Node,
    what: &str,
    change: impl FnOnce(&mut ClusterMap),
) -> Result<ClusterMap, MapUpdateError> {
    let _one = state.meta.map_writes.lock().await;
    let raft = state.group(CONFIG_GROUP).ok_or_else(|| {
        MapUpdateError::NotCommitted("this node hosts no config replica".to_string())
    })?;
    let (cur, version) = current_map(state)?;
    let mut next = cur.clone();
    change(&mut next);
    next.epoch = cur.epoch + 1;
    next.validate().map_err(|error| MapUpdateError::Invalid {
        what: what.to_string(),
        error,
    })?;
    let cmd = Command::Put {
        key: MAP_KEY.to_string(),
        value: serde_json::to_string(&next).map_err(anyhow::Error::from)?,
        condition: Some(Condition::Version(version)),
    };
    let resp = tokio::time::timeout(state.cfg.request_timeout, raft.client_write(cmd))
        .await
        .map_err(|_| {
            MapUpdateError::NotCommitted("the map change was not committed in time".to_string())
        })?
        .map_err(|e| MapUpdateError::NotCommitted(format!("the map change failed: {e}")))?;
    match resp.data {
        CommandResult::Written { .. } => {
            tracing::info!(epoch = next.epoch, "{what}: map {}", next.summary());
            state.install_map(next.clone()).await?;
            Ok(next)
        }
        CommandResult::ConditionFailed { .. } => Err(MapUpdateError::Conflict {
            what: what.to_string(),
        }),
        other => Err(MapUpdateError::NotCommitted(format!(
            "unexpected result of a map change: {other:?}"
        ))),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use kvorum_raftstore::GroupId;
    pub(crate) use kvorum_router::testing::health;
    use kvorum_router::Task;

    /// The initial map of `n` nodes with K=3 on made-up addresses.
    pub(crate) fn map(n: usize) -> ClusterMap {
        kvorum_router::testing::map_at("127.0.0.", 7000, n, 3)
    }

    /// A repair task of data group `group` at its first step.
    pub(crate) fn task(id: u64, group: u64, dead: NodeId, replacement: NodeId) -> Task {
        kvorum_router::testing::repair_task(id, GroupId(group), dead, replacement)
    }

    // A lost compare-and-set is recognized as such, also under added context; other map errors
    // are not.
    #[test]
    fn map_conflict_is_recognized_through_context() {
        let conflict = anyhow::Error::from(MapUpdateError::Conflict {
            what: "repair step".into(),
        });
        assert!(is_map_conflict(&conflict));
        assert!(is_map_conflict(&conflict.context("while driving task 3")));
        let other = anyhow::Error::from(MapUpdateError::NotCommitted("timeout".into()));
        assert!(!is_map_conflict(&other));
        assert!(!is_map_conflict(&anyhow::anyhow!("unrelated")));
    }
}
