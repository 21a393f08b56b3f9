//! The cluster map: nodes, K, data groups and their members, the slot→group table, the config
//! group's voters and the tasks in progress. Versioned by its `epoch`; the config group's state
//! machine holds it, and every change goes through that group's log.
//!
//! Invariants (checked by [`ClusterMap::validate`]):
//! - `slots` has exactly `slot_count` entries and every one names an existing data group;
//! - every group member and config voter is a node of the map; no node is in two data groups;
//! - a removed node is never a member of anything new; its id is never reused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::step::{Step, ViewChange};
use crate::{GroupId, NodeId, Slot, FIRST_DATA_GROUP, SLOT_COUNT};

/// Name of the slot hash, recorded in the map. Never changes for a cluster.
pub const HASH_NAME: &str = "xxh3_64";

/// Largest number of config group voters.
pub const MAX_CONFIG_VOTERS: usize = 3;

/// The lifecycle state of a node in the map. Health (alive, suspect, dead) is not part of the
/// map: the metadata leader derives it from heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeLifecycle {
    /// Part of the cluster.
    Active,
    /// Removed (by an operator, or replaced after it was dead, see [`NodeInfo::replaced`]); its
    /// id is never used again. If the process comes back it is refused under this id.
    Removed,
}

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of the node's client API and Raft transport, `ip:port`.
    pub addr: String,
    /// Whether the node is part of the cluster or was removed.
    pub state: NodeLifecycle,
    /// The incarnation of the node's data directory (a random id created with it), recorded by
    /// the metadata leader from the node's first heartbeat; `None` until then. Never changes once
    /// recorded: a node with another incarnation under this id was wiped and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// Whether a repair removed the node (it was dead and a spare took its replicas), rather than
    /// an operator's `remove-node`: if its process comes back, it drops its stale replicas and
    /// rejoins as a new node by itself. Only meaningful once `state` is `Removed`. Absent in maps
    /// written before it existed (and whenever false): false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replaced: bool,
    /// Set by `kvctl drain` (a planned stop): until this time (Unix milliseconds, the metadata
    /// leader's clock) no repair replaces the node's replicas, however long it is silent. `None`
    /// (and in maps written before it existed): not drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until_ms: Option<u64>,
}

/// Whether `b` is false (serde's `skip_serializing_if` of a field that defaults to false).
fn is_false(b: &bool) -> bool {
    !*b
}

/// One data group of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group's voters.
    pub members: BTreeSet<NodeId>,
}

/// A resumable task of the metadata leader, recorded in the map so that a new config leader
/// continues it. Every step is idempotent.
///
/// Fields added after the first release decode with defaults from older maps (`started_ms` 0:
/// the start is unknown and the next leader's first look counts as the start; `leader_term` 0:
/// not yet claimed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique within the cluster, increasing.
    pub id: u64,
    /// What the task does.
    pub kind: TaskKind,
    /// The step reached so far, for status; the steps re-check the real membership.
    pub step: TaskStep,
    /// When the task was planned, in milliseconds since the Unix epoch (wall clock, so that a new
    /// metadata leader keeps the task's time limit); 0 when unknown.
    #[serde(default)]
    pub started_ms: u64,
    /// The config group term of the metadata leader driving the task. A new leader claims the
    /// task (commits its term here, which bumps the epoch) before its first membership call, so
    /// the group's leader can refuse the calls of a deposed one: they carry an older epoch.
    #[serde(default)]
    pub leader_term: u64,
}

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TaskKind {
    /// Replace `dead`'s replica of `group` (a data group, or the config group) by one on
    /// `replacement`.
    ReplaceReplica {
        /// The group whose replica is replaced.
        group: GroupId,
        /// The node whose replica goes.
        dead: NodeId,
        /// The node that takes its place.
        replacement: NodeId,
    },
    /// Add or remove a node: see [`ViewChangeTask`].
    ViewChange(Box<ViewChangeTask>),
}

impl TaskKind {
    /// The one group a repair changes (at most one repair per group runs at a time); `None` for
    /// a view change, whose groups are those of its remaining steps
    /// ([`ViewChangeTask::holds`]).
    pub fn group(&self) -> Option<GroupId> {
        match self {
            TaskKind::ReplaceReplica { group, .. } => Some(*group),
            TaskKind::ViewChange(_) => None,
        }
    }

    /// The view change this task runs, if it is one.
    pub fn view_change(&self) -> Option<&ViewChangeTask> {
        match self {
            TaskKind::ViewChange(v) => Some(v),
            TaskKind::ReplaceReplica { .. } => None,
        }
    }
}

/// A view change (adding or removing one node) being run by the metadata leader: the plan's
/// steps, fixed when the change was accepted, and how far it got. Resumable: a new metadata
/// leader continues at `next`, and a slot batch in flight (`batch`) is finished or rolled back
/// from what the groups' slot tables say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeTask {
    /// The change asked for.
    pub change: ViewChange,
    /// The node added (its new id) or removed.
    pub node: NodeId,
    /// The plan's steps, in order.
    pub steps: Vec<Step>,
    /// Index of the step running now (`steps.len()`: all done).
    pub next: usize,
    /// The slot batch of the current `MoveSlots` step that is between its start and its
    /// cleanup, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<MoveBatch>,
    /// Slots the whole change moves.
    pub slots_total: u64,
    /// Slots whose owner has changed so far.
    pub slots_moved: u64,
    /// Keys copied so far.
    pub keys_moved: u64,
    /// Bytes copied so far (keys and values).
    pub bytes_moved: u64,
    /// A cancel was asked for: a batch not yet released rolls back, then the change stops.
    #[serde(default)]
    pub cancel: bool,
    /// An add only: the incarnation the node answered (`GET /v1/join`) when the change was
    /// accepted. The `AddNode` step records it with the node, so only that data directory can
    /// take the new id (a joiner wiped before its first heartbeat has another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

impl ViewChangeTask {
    /// A change about to start: `plan`'s steps, none run yet. The node is the one removed, or
    /// for an add the id its `AddNode` step gives (0 if the plan has none).
    pub fn planned(change: ViewChange, plan: crate::Plan, incarnation: Option<String>) -> Self {
        let node = match &change {
            ViewChange::RemoveNode { node } => *node,
            ViewChange::AddNode { .. } => plan
                .steps
                .iter()
                .find_map(|s| match s {
                    Step::AddNode { node, .. } => Some(*node),
                    _ => None,
                })
                .unwrap_or(0),
        };
        ViewChangeTask {
            change,
            node,
            slots_total: plan.moved_slots() as u64,
            steps: plan.steps,
            next: 0,
            batch: None,
            slots_moved: 0,
            keys_moved: 0,
            bytes_moved: 0,
            cancel: false,
            incarnation,
        }
    }

    /// The groups and nodes this change still needs as its plan fixed them: a repair leaves
    /// them alone while the change runs. Groups: those of the remaining membership steps
    /// (`AddLearner`, `ReplaceVoter`, `CreateGroup`, `DissolveGroup`; the config group for
    /// `SetConfigVoters` and config learners) and both groups of the batch in flight, if any
    /// (a later `MoveSlots` step holds nothing: its driver waits at each batch boundary for a
    /// repair of its groups to end). Nodes: the node added or removed and every node a remaining
    /// step names, so that a repair neither replaces one nor takes one as a replacement.
    pub fn holds(&self) -> (BTreeSet<GroupId>, BTreeSet<NodeId>) {
        let mut groups = BTreeSet::new();
        let mut nodes = BTreeSet::from([self.node]);
        for step in self.steps.iter().skip(self.next) {
            match step {
                Step::AddNode { node, .. } | Step::RemoveNode { node } => {
                    nodes.insert(*node);
                }
                Step::AddLearner { group, node } => {
                    groups.insert(*group);
                    nodes.insert(*node);
                }
                Step::ReplaceVoter { group, old, new } => {
                    groups.insert(*group);
                    nodes.extend([*old, *new]);
                }
                Step::CreateGroup { group, members } => {
                    groups.insert(*group);
                    nodes.extend(members.iter().copied());
                }
                Step::DissolveGroup { group } => {
                    groups.insert(*group);
                }
                Step::SetConfigVoters { voters } => {
                    groups.insert(crate::CONFIG_GROUP);
                    nodes.extend(voters.iter().copied());
                }
                Step::MoveSlots { .. } => {}
            }
        }
        if let Some(b) = &self.batch {
            groups.extend([b.from, b.to]);
        }
        (groups, nodes)
    }
}

/// Slots moving together from one group to another: frozen, copied, released and activated as
/// one batch, so a request to one of them waits for at most one batch's move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveBatch {
    /// The group giving the slots.
    pub from: GroupId,
    /// The group receiving them.
    pub to: GroupId,
    /// The slots, as inclusive ranges.
    pub slots: Vec<(u16, u16)>,
    /// Whether the map already names `to` as their owner (past the flip: only Activate and
    /// clean-up remain, and the batch can only roll forward).
    #[serde(default)]
    pub flipped: bool,
}

/// How a view change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Every step completed.
    Done,
    /// Stopped on request; what completed stays valid.
    Cancelled,
    /// Stopped by an error it could not get past; the map is valid.
    Failed,
}

/// A view change that ended, kept in the map (the newest [`FINISHED_KEPT`]) so that clients can
/// ask how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedChange {
    /// The task's id.
    pub id: u64,
    /// The change and its counters as they were at the end.
    pub task: ViewChangeTask,
    /// How it ended.
    pub outcome: ChangeOutcome,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When it ended, ms since the Unix epoch.
    pub finished_ms: u64,
}

/// Number of finished view changes the map keeps.
pub const FINISHED_KEPT: usize = 16;

/// Steps of a replacement, in order. The group never has more than K voters: the replacement
/// waits as a learner, and one membership change swaps it for the dead voter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStep {
    /// The replacement is being added as a learner and caught up.
    AddLearner,
    /// One membership change (joint consensus from the old voters to the new ones) replaces the
    /// dead voter by the caught-up learner, once the group's leader confirms the dead replica
    /// no longer replicates. Maps of older releases named the steps of this phase `promote` and
    /// `remove_dead`; both decode as this step, which finishes either.
    #[serde(alias = "promote", alias = "remove_dead")]
    Swap,
    /// A view change running its steps (see [`ViewChangeTask::next`]).
    Running,
}

impl fmt::Display for TaskStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskStep::AddLearner => "add_learner",
            TaskStep::Swap => "swap",
            TaskStep::Running => "running",
        })
    }
}

/// Errors of map construction and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError(pub String);

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MapError {}

/// The cluster map. Its version is `epoch`; every committed change increments it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The map's version: 1 for the initial map, +1 with every committed change.
    pub epoch: u64,
    /// Replicas per data group.
    pub k: usize,
    /// Number of slots; fixed for the cluster.
    pub slot_count: u16,
    /// Name of the slot hash; fixed for the cluster.
    pub hash: String,
    /// Every node ever in the cluster, removed ones included (ids are never reused).
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Voters of the config group (group 0).
    pub config_voters: BTreeSet<NodeId>,
    /// Data groups (ids from 1).
    pub groups: BTreeMap<GroupId, GroupInfo>,
    /// Owner of each slot: `slots[s]` is the group of slot `s`.
    pub slots: Vec<GroupId>,
    /// Tasks in progress.
    pub tasks: Vec<Task>,
    /// The id the next task gets.
    pub next_task_id: u64,
    /// Lowest id a new data group may get: ids of dissolved groups are never given again (their
    /// Raft state may survive on a node that was down). 0 in maps that never created a group.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_group_id: u64,
    /// The newest view changes that ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<FinishedChange>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ClusterMap {
    /// The deterministic initial map of a cluster created from `view` (node addresses in order;
    /// node ids are positions from 1) with `k` replicas per group: floor(N/K) groups of K
    /// consecutive nodes, slots split into contiguous ranges whose sizes differ by at most one,
    /// the rest spares, config voters the first min(N, 3) nodes. Epoch 1.
    pub fn initial(view: &[String], k: usize) -> Result<ClusterMap, MapError> {
        let n = view.len();
        if n == 0 {
            return Err(MapError("the view is empty".into()));
        }
        if k == 0 || k > n {
            return Err(MapError(format!(
                "K must be between 1 and the number of nodes ({n}), got {k}"
            )));
        }
        let partitions = n / k;
        let nodes: BTreeMap<NodeId, NodeInfo> = view
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    i as NodeId + 1,
                    NodeInfo {
                        addr: a.clone(),
                        state: NodeLifecycle::Active,
                        incarnation: None,
                        replaced: false,
                        drain_until_ms: None,
                    },
                )
            })
            .collect();
        let groups: BTreeMap<GroupId, GroupInfo> = (0..partitions)
            .map(|g| {
                let members = (g * k..(g + 1) * k).map(|i| i as NodeId + 1).collect();
                (
                    GroupId(g as u64 + FIRST_DATA_GROUP.0),
                    GroupInfo { members },
                )
            })
            .collect();
        let slots = even_split(SLOT_COUNT, partitions);
        Ok(ClusterMap {
            epoch: 1,
            k,
            slot_count: SLOT_COUNT,
            hash: HASH_NAME.to_string(),
            nodes,
            config_voters: (1..=n.min(MAX_CONFIG_VOTERS) as NodeId).collect(),
            groups,
            slots,
            tasks: Vec::new(),
            next_task_id: 1,
            next_group_id: 0,
            finished: Vec::new(),
        })
    }

    /// The id a new data group gets: above every group id in the map and every id used before.
    pub fn new_group_id(&self) -> GroupId {
        let above = self
            .groups
            .keys()
            .max()
            .map_or(FIRST_DATA_GROUP.0, |g| g.0 + 1);
        GroupId(above.max(self.next_group_id).max(FIRST_DATA_GROUP.0))
    }

    /// The view change in progress, if any, with its task.
    pub fn view_change(&self) -> Option<(&Task, &ViewChangeTask)> {
        self.tasks
            .iter()
            .find_map(|t| t.kind.view_change().map(|v| (t, v)))
    }

    /// The group owning `slot`, if the slot is in range.
    pub fn group_of(&self, slot: Slot) -> Option<GroupId> {
        self.slots.get(slot.0 as usize).copied()
    }

    /// The slot and owning group of `key`.
    pub fn route_key(&self, key: &[u8]) -> Option<(Slot, GroupId)> {
        let slot = crate::slot_of(key);
        self.group_of(slot).map(|g| (slot, g))
    }

    /// The address of `node`, if in the map.
    pub fn addr(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.addr.as_str())
    }

    /// Whether `node` is in the map and not removed.
    pub fn is_active(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| n.state == NodeLifecycle::Active)
    }

    /// Whether `node` was removed by a repair ([`NodeInfo::replaced`]) and holds no seat any
    /// more: no data group lists it and it is no config voter. Its replicas were all replaced,
    /// so its data is no longer needed: it may drop them and rejoin as a new node.
    pub fn released_by_repair(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| n.state == NodeLifecycle::Removed && n.replaced)
            && !self.config_voters.contains(&node)
            && self.groups.values().all(|g| !g.members.contains(&node))
    }

    /// The data group `node` is a member of, if any.
    pub fn group_of_node(&self, node: NodeId) -> Option<GroupId> {
        self.groups
            .iter()
            .find(|(_, g)| g.members.contains(&node))
            .map(|(id, _)| *id)
    }

    /// Members of `group`: the config voters for [`crate::CONFIG_GROUP`], else the data group's.
    pub fn members_of(&self, group: GroupId) -> Option<&BTreeSet<NodeId>> {
        if group == crate::CONFIG_GROUP {
            Some(&self.config_voters)
        } else {
            self.groups.get(&group).map(|g| &g.members)
        }
    }

    /// The active nodes whose drain ([`NodeInfo::drain_until_ms`]) still holds at `now_ms`
    /// (Unix milliseconds): no repair replaces them.
    pub fn drained(&self, now_ms: u64) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.state == NodeLifecycle::Active && n.drain_until_ms.is_some_and(|t| now_ms < t)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Active nodes in no data group, in id order.
    pub fn spares(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, n)| {
                n.state == NodeLifecycle::Active && self.group_of_node(**id).is_none()
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The slots of `group` as inclusive ranges, in order.
    pub fn slot_ranges(&self, group: GroupId) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (s, g) in self.slots.iter().enumerate() {
            if *g != group {
                continue;
            }
            let s = s as u16;
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// Number of slots `group` owns.
    pub fn slot_count_of(&self, group: GroupId) -> usize {
        self.slots.iter().filter(|g| **g == group).count()
    }

    /// Checks the map's invariants.
    pub fn validate(&self) -> Result<(), MapError> {
        let err = |m: String| Err(MapError(m));
        if self.slots.len() != self.slot_count as usize {
            return err(format!(
                "{} slot owners for {} slots",
                self.slots.len(),
                self.slot_count
            ));
        }
        if let Some((s, g)) = self
            .slots
            .iter()
            .enumerate()
            .find(|(_, g)| !self.groups.contains_key(g))
        {
            return err(format!("slot {s} belongs to unknown group {g}"));
        }
        let mut seen = BTreeSet::new();
        for (gid, g) in &self.groups {
            if gid.0 < FIRST_DATA_GROUP.0 {
                return err(format!("data group id {gid} is reserved"));
            }
            for m in &g.members {
                if !self.nodes.contains_key(m) {
                    return err(format!("group {gid} has unknown member {m}"));
                }
                if !seen.insert(*m) {
                    return err(format!("node {m} is in two data groups"));
                }
            }
        }
        if let Some(v) = self
            .config_voters
            .iter()
            .find(|v| !self.nodes.contains_key(v))
        {
            return err(format!("config voter {v} is not a node"));
        }
        Ok(())
    }

    /// A one-line summary, for logs.
    pub fn summary(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(id, g)| format!("g{id}={:?}", g.members))
            .collect();
        format!(
            "epoch {} k {} groups [{}] spares {:?} config {:?} tasks {}",
            self.epoch,
            self.k,
            groups.join(" "),
            self.spares(),
            self.config_voters,
            self.tasks.len()
        )
    }
}

/// Splits `slot_count` slots over `parts` groups (ids from 1) in contiguous ranges whose sizes
/// differ by at most one; the first `slot_count % parts` groups get the larger size.
pub fn even_split(slot_count: u16, parts: usize) -> Vec<GroupId> {
    let n = slot_count as usize;
    let parts = parts.max(1);
    let (base, extra) = (n / parts, n % parts);
    let mut slots = Vec::with_capacity(n);
    for g in 0..parts {
        let size = base + usize::from(g < extra);
        slots.extend(std::iter::repeat_n(
            GroupId(g as u64 + FIRST_DATA_GROUP.0),
            size,
        ));
    }
    slots
}
