//! The metadata role on this node ([`Meta`]): the node it runs on and the role's soft state —
//! the heartbeats it saw, the term it leads and confirmed, its task drivers, vetoes and
//! consistency-check schedule. Nothing here is in the log: a new metadata leader starts it
//! afresh. Every node has the role object; it acts only while the node leads the config group.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_raftstore::{GroupId, NodeId};
use kvorum_router::ClusterMap;

use crate::node::Node;

use super::messages::Heartbeat;

/// Interval of the metadata loop.
pub(super) const TICK: Duration = Duration::from_millis(500);

/// The last heartbeat of a node.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// The start of the node's silence: its last heartbeat, or the start of a grace period.
    pub(crate) at: Instant,
    /// When its last heartbeat really arrived (never moved by a grace period).
    pub(super) heard: Option<Instant>,
    pub(crate) beat: Option<Heartbeat>,
}

#[derive(Default)]
pub(crate) struct MetaInner {
    /// The config group term this node leads in, while it does.
    pub(crate) led_term: Option<u64>,
    /// The term and the start of the last config read index that confirmed this node's
    /// leadership (see [`Meta::confirmed_in`]).
    pub(super) confirmed: Option<(u64, Instant)>,
    pub(crate) seen: HashMap<NodeId, Seen>,
    pub(super) last_summary: Option<Instant>,
    /// When the metadata loop last finished a tick.
    pub(super) last_tick: Option<Instant>,
    /// The drivers of the tasks this leader runs, by task id.
    pub(super) drivers: HashMap<u64, tokio::task::JoinHandle<()>>,
    /// Nodes a group's leader saw still replicating when asked to remove them, and when.
    pub(super) vetoed: HashMap<NodeId, Instant>,
    /// The consistency check's schedule and the mismatches it logged.
    pub(super) check: CheckState,
}

impl MetaInner {
    /// Stops every task driver (this node no longer leads in their term).
    pub(super) fn stop_drivers(&mut self) {
        for (_, h) in self.drivers.drain() {
            h.abort();
        }
    }
}

/// The metadata role on a node: what the metadata loop, its task drivers and the cluster routes
/// that only the metadata leader answers share. Owned by the role (the server creates it beside
/// the [`Node`] and hands it to the loop, the heartbeat sender and the routes); the node knows
/// nothing of it.
pub struct Meta {
    /// The node the role runs on.
    pub(crate) node: Arc<Node>,
    inner: Mutex<MetaInner>,
    /// Serializes this node's map changes (see [`update_map`](super::update_map)).
    pub(super) map_writes: tokio::sync::Mutex<()>,
}

impl Meta {
    /// The metadata role of `node`, not acting yet.
    pub fn new(node: Arc<Node>) -> Meta {
        Meta {
            node,
            inner: Mutex::default(),
            map_writes: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, MetaInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
    /// [`Meta::confirmed_in`]), if any.
    pub(crate) fn confirmed_term(&self, lease: Duration) -> Option<u64> {
        let inner = self.lock();
        match (inner.led_term, inner.confirmed) {
            (Some(term), Some((t, at))) if t == term && at.elapsed() < lease => Some(term),
            _ => None,
        }
    }

    /// Notes that this node leads the config group in `term`: a new term starts every node's
    /// grace period afresh (the previous leader's heartbeat times are not known here).
    pub(super) fn leading(&self, term: u64, map: &ClusterMap) -> bool {
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
    pub(super) fn not_leading(&self) {
        let mut inner = self.lock();
        if inner.led_term.is_some() {
            tracing::warn!("this node no longer holds the metadata role");
        }
        inner.led_term = None;
        inner.confirmed = None;
        inner.stop_drivers();
    }

    /// Notes that a config read index started at `at` confirmed this node's leadership in `term`.
    pub(super) fn confirmed(&self, term: u64, at: Instant) {
        self.lock().confirmed = Some((term, at));
    }

    /// Called at the start of a tick. When this node itself stalled between ticks for longer
    /// than `stall` (paused, starved of CPU), every node's silence is partly its own: restart
    /// their clocks rather than declare healthy nodes dead.
    pub(super) fn tick(&self, stall: Duration) {
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
    pub(super) fn tick_done(&self) {
        self.lock().last_tick = Some(Instant::now());
    }
}

/// The consistency check's memory on the metadata leader.
#[derive(Default)]
pub(crate) struct CheckState {
    /// When the last scheduled check started (`None`: not yet leading; the first waits a full
    /// interval).
    pub(super) last: Option<Instant>,
    /// The (group, index) mismatches already logged, so each is logged once.
    pub(super) logged: HashSet<(GroupId, u64)>,
}
