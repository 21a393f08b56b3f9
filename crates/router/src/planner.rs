//! The view-change planner: from a cluster map and one view change (add a node, remove a node) to
//! the target map and the ordered steps that reach it. Pure and deterministic: the same map,
//! change and options always give the same plan, so any config leader that resumes a change
//! recomputes the same steps.
//!
//! Rules (docs/architecture.md, "View changes"): partitions = floor(N/K) at all times (N = active nodes);
//! nodes beyond that are spares.
//! - **Add**: the node gets id max(existing ids) + 1 and becomes a spare. When K spares exist,
//!   the K lowest-id spares (alive ones first) form a new data group (id max(group ids) + 1) and
//!   slots move to it until every group owns SLOT_COUNT/P ± 1 slots.
//! - **Remove a spare**: it leaves at once.
//! - **Remove a replica, a spare exists**: the lowest-id spare (alive ones first) replaces it in
//!   one membership change, as a repair does; no slot moves.
//! - **Remove a replica, no spare**: P drops by one. The group with the fewest slots is dissolved
//!   (ties: the removed node's group, then the highest group id): its slots move to the others,
//!   then it is dissolved and its members become spares; if it was not the removed node's group,
//!   the lowest-id freed spare then replaces the removed replica.
//! - **Config voters**: min(N, `max_config_voters`) active nodes. Surviving voters stay; missing
//!   ones are filled with active non-voters (alive first, lowest id); a removed voter is replaced.
//!
//! Slot moves are minimal: every group gets a target of SLOT_COUNT/P or one more, the larger
//! targets going to the groups that own the most slots (ties: lowest group id), so the number of
//! slots that change owner is Σ max(0, owned − target), the lower bound. A donor gives away its
//! highest slots; donors (by group id) fill receivers (by group id) in order.
//!
//! Steps of a plan, in order (each is a [`Step`]):
//! 1. `AddNode` (an add only): the node enters the map as an active spare.
//! 2. `AddLearner { group: CONFIG_GROUP, .. }` for each new config voter, then `SetConfigVoters`,
//!    when the config voters change.
//! 3. Membership and slots of data groups:
//!    - add: `CreateGroup`, then `MoveSlots` into it;
//!    - remove with a spare: `AddLearner`, then `ReplaceVoter`;
//!    - remove without a spare: `MoveSlots` out of the dissolved group, `DissolveGroup`, then
//!      `AddLearner` + `ReplaceVoter` if the dissolved group was not the removed node's.
//! 4. `RemoveNode` (a remove only): the node, now in no group, is marked removed.
//!
//! Safety of the steps: no data group ever has more than K voters (a replacement is one
//! membership change that swaps a caught-up learner for the old voter); a group is dissolved only
//! after all its slots have moved away; a node is removed only after it left every group. With
//! [`PlanOptions::dead`], a plan is refused when any step would need a group (config group
//! included) below quorum, or would need a dead node to catch up.
//!
//! Refused up front ([`PlanError`]): an unknown or removed node, an address already used by an
//! active node, a change leaving fewer than K active nodes, a map with a task in progress, a map
//! that breaks its invariants.
//!
//! Not implemented here: executing the steps (tasks of the metadata leader), slot moves
//! themselves, disk-space checks ("no room for the data").
//!
//! Caveat: a new group gets max(existing group ids) + 1, so the id of a dissolved group can be
//! given again. That is safe only if dissolving deletes the group's Raft state on every member
//! (dead ones included) before the id comes back; a map field remembering the highest id ever
//! used would remove the question.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::map::{ClusterMap, GroupInfo, MapError, NodeInfo, NodeLifecycle, MAX_CONFIG_VOTERS};
use crate::step::{Step, ViewChange};
use crate::{GroupId, NodeId, CONFIG_GROUP, FIRST_DATA_GROUP};

/// Options of [`plan_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Largest number of config group voters; the plan keeps min(N, this) voters (at least 1).
    /// Default [`MAX_CONFIG_VOTERS`].
    pub max_config_voters: usize,
    /// Nodes known to be dead. They are chosen last for any new role, and a plan in which some
    /// step needs a group below quorum, or a dead node to catch up, is refused. Default empty.
    pub dead: BTreeSet<NodeId>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_config_voters: MAX_CONFIG_VOTERS,
            dead: BTreeSet::new(),
        }
    }
}

/// The result of planning one view change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The map once every step has run: epoch + 1, validated. Its tasks are the input map's.
    pub target: ClusterMap,
    /// The steps, in the order they must run.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Number of slots whose owner changes: the sum over the `MoveSlots` steps.
    pub fn moved_slots(&self) -> usize {
        self.steps.iter().map(Step::moved_slots).sum()
    }
}

/// Why a view change is refused. Each variant says what the caller should do; [`PlanError::code`]
/// is a stable string for APIs.
// The variant docs name and describe each field.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The node is not in the map. Check the id.
    #[error("node {node} is not in the cluster map")]
    UnknownNode { node: NodeId },
    /// The node was removed already; nothing to do.
    #[error("node {node} was already removed")]
    NodeRemoved { node: NodeId },
    /// An active node already has this address. Remove it first, or use another address.
    #[error("address {addr} is already used by active node {node}")]
    AddressInUse { addr: String, node: NodeId },
    /// The address is empty. Give the node's `ip:port`.
    #[error("the address of a new node must not be empty")]
    EmptyAddress,
    /// The change would leave fewer active nodes than replicas per group. Add nodes first.
    #[error("the change would leave {active} active nodes, fewer than K = {k}")]
    TooFewNodes { active: usize, k: usize },
    /// Some step would need `group` while a majority of its voters is dead. Repair the group (or
    /// bring its nodes back) first.
    #[error("group {group} would be below quorum at step {step}: {alive} alive of {voters:?}")]
    BelowQuorum {
        group: GroupId,
        step: usize,
        voters: BTreeSet<NodeId>,
        alive: usize,
    },
    /// Some step needs a dead node to join a group and catch up. Bring it back or remove it.
    #[error("step {step} needs dead node {node} to join a group")]
    DeadNode { node: NodeId, step: usize },
    /// A task is running; one change at a time. Retry when it has finished.
    #[error("task {task} is in progress")]
    TaskInProgress { task: u64 },
    /// The input map breaks its invariants. Nothing can be planned from it.
    #[error("invalid cluster map: {0}")]
    InvalidMap(#[source] MapError),
    /// The planner produced a map that breaks the invariants: a bug in the planner.
    #[error("planner bug, invalid target map: {0}")]
    InvalidTarget(#[source] MapError),
}

impl PlanError {
    /// A stable machine-readable code for the error, e.g. `"unknown_node"`. MUST NOT change.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::UnknownNode { .. } => "unknown_node",
            PlanError::NodeRemoved { .. } => "node_removed",
            PlanError::AddressInUse { .. } => "address_in_use",
            PlanError::EmptyAddress => "empty_address",
            PlanError::TooFewNodes { .. } => "too_few_nodes",
            PlanError::BelowQuorum { .. } => "below_quorum",
            PlanError::DeadNode { .. } => "dead_node",
            PlanError::TaskInProgress { .. } => "task_in_progress",
            PlanError::InvalidMap(_) => "invalid_map",
            PlanError::InvalidTarget(_) => "invalid_target",
        }
    }
}

/// Plans `change` on `map` with the default [`PlanOptions`] (3 config voters, no dead nodes).
/// See [`plan_with`].
pub fn plan(map: &ClusterMap, change: &ViewChange) -> Result<Plan, PlanError> {
    plan_with(map, change, &PlanOptions::default())
}

/// Plans `change` on `map`: the target map (epoch + 1) and the ordered steps that reach it (see
/// the module docs for the rules). Deterministic: the result depends only on the arguments.
/// Refuses, without side effects, a change that cannot complete safely.
pub fn plan_with(
    map: &ClusterMap,
    change: &ViewChange,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    check_input(map)?;
    if let Some(task) = map.tasks.first() {
        return Err(PlanError::TaskInProgress { task: task.id });
    }
    let mut p = Planner {
        target: map.clone(),
        steps: Vec::new(),
        opts,
    };
    p.target.epoch += 1;
    match change {
        ViewChange::AddNode { addr } => p.add(addr)?,
        ViewChange::RemoveNode { node } => p.remove(*node)?,
    }
    let Planner { target, steps, .. } = p;
    target.validate().map_err(PlanError::InvalidTarget)?;
    check_liveness(map, &steps, &opts.dead)?;
    Ok(Plan { target, steps })
}

/// Checks the invariants the planner relies on: those of [`ClusterMap::validate`] (checked here
/// by runs of slots rather than slot by slot, which keeps planning cheap) and K ≥ 1, floor(N/K)
/// groups of exactly K active members, config voters active and not empty. The target map is
/// checked with [`ClusterMap::validate`] itself.
fn check_input(map: &ClusterMap) -> Result<(), PlanError> {
    let bad = |m: String| Err(PlanError::InvalidMap(MapError(m)));
    if map.k == 0 {
        return bad("K is 0".into());
    }
    if map.slots.is_empty() || map.slots.len() != usize::from(map.slot_count) {
        return bad(format!(
            "{} slot owners for {} slots",
            map.slots.len(),
            map.slot_count
        ));
    }
    if let Some(g) = slot_runs(map).keys().find(|g| !map.groups.contains_key(g)) {
        return bad(format!("a slot belongs to unknown group {g}"));
    }
    let active = active_nodes(map).len();
    if map.groups.len() != active / map.k {
        return bad(format!(
            "{} data groups for {active} active nodes and K = {}",
            map.groups.len(),
            map.k
        ));
    }
    let mut seen = BTreeSet::new();
    for (gid, g) in &map.groups {
        if gid.0 < FIRST_DATA_GROUP.0 {
            return bad(format!("data group id {gid} is reserved"));
        }
        if g.members.len() != map.k || g.members.iter().any(|m| !map.is_active(*m)) {
            return bad(format!("group {gid} does not have K active members"));
        }
        if let Some(m) = g.members.iter().find(|m| !seen.insert(**m)) {
            return bad(format!("node {m} is in two data groups"));
        }
    }
    if map.config_voters.is_empty() || map.config_voters.iter().any(|v| !map.is_active(*v)) {
        return bad("the config voters are empty or not all active".into());
    }
    Ok(())
}

/// Active nodes of `map`, in id order.
fn active_nodes(map: &ClusterMap) -> Vec<NodeId> {
    map.nodes
        .iter()
        .filter(|(_, n)| n.state == NodeLifecycle::Active)
        .map(|(id, _)| *id)
        .collect()
}

/// Builds a plan: `target` is the map as the steps pushed so far leave it.
struct Planner<'a> {
    target: ClusterMap,
    steps: Vec<Step>,
    opts: &'a PlanOptions,
}

impl Planner<'_> {
    /// Sort key preferring alive nodes, then low ids.
    fn preference(&self, node: NodeId) -> (bool, NodeId) {
        (self.opts.dead.contains(&node), node)
    }

    /// Plans adding a node at `addr`: record it, grow the config voters, and form a group with
    /// its slots when K spares exist.
    fn add(&mut self, addr: &str) -> Result<(), PlanError> {
        if addr.trim().is_empty() {
            return Err(PlanError::EmptyAddress);
        }
        if let Some((id, _)) = self
            .target
            .nodes
            .iter()
            .find(|(_, n)| n.state == NodeLifecycle::Active && n.addr == addr)
        {
            return Err(PlanError::AddressInUse {
                addr: addr.to_string(),
                node: *id,
            });
        }
        let active = active_nodes(&self.target).len() + 1;
        let node = self.target.nodes.keys().max().map_or(1, |m| m + 1);
        self.target.nodes.insert(
            node,
            NodeInfo {
                addr: addr.to_string(),
                state: NodeLifecycle::Active,
                incarnation: None,
                replaced: false,
                drain_until_ms: None,
            },
        );
        self.steps.push(Step::AddNode {
            node,
            addr: addr.to_string(),
        });
        self.config_voters(None);
        let partitions = active / self.target.k;
        if self.target.groups.len() < partitions {
            self.create_group();
            self.rebalance(None);
        }
        Ok(())
    }

    /// Plans removing `node`: replace its config seat, then its replica (by a spare, or by
    /// dissolving a group when P drops), then mark it removed.
    fn remove(&mut self, node: NodeId) -> Result<(), PlanError> {
        match self.target.nodes.get(&node) {
            None => return Err(PlanError::UnknownNode { node }),
            Some(n) if n.state == NodeLifecycle::Removed => {
                return Err(PlanError::NodeRemoved { node })
            }
            Some(_) => {}
        }
        let k = self.target.k;
        let active = active_nodes(&self.target).len() - 1;
        if active < k {
            return Err(PlanError::TooFewNodes { active, k });
        }
        self.config_voters(Some(node));
        if let Some(group) = self.target.group_of_node(node) {
            if self.target.groups.len() > active / k {
                let dissolved = self.dissolve_choice(node);
                self.rebalance(Some(dissolved));
                self.target.groups.remove(&dissolved);
                self.steps.push(Step::DissolveGroup { group: dissolved });
                if dissolved != group {
                    self.replace(group, node);
                }
            } else {
                self.replace(group, node);
            }
        }
        if let Some(n) = self.target.nodes.get_mut(&node) {
            n.state = NodeLifecycle::Removed;
        }
        self.steps.push(Step::RemoveNode { node });
        Ok(())
    }

    /// Sets the config voters to min(N, max) active nodes, `leaving` excluded: surviving voters
    /// stay (alive and low ids first if there are too many), the rest are filled with active
    /// non-voters (alive first, lowest id). Pushes the steps if they change.
    fn config_voters(&mut self, leaving: Option<NodeId>) {
        let active: Vec<NodeId> = active_nodes(&self.target)
            .into_iter()
            .filter(|n| Some(*n) != leaving)
            .collect();
        let want = active.len().min(self.opts.max_config_voters.max(1));
        let mut keep: Vec<NodeId> = self
            .target
            .config_voters
            .iter()
            .copied()
            .filter(|v| active.contains(v))
            .collect();
        keep.sort_by_key(|n| self.preference(*n));
        keep.truncate(want);
        let mut fill: Vec<NodeId> = active
            .iter()
            .copied()
            .filter(|n| !keep.contains(n))
            .collect();
        fill.sort_by_key(|n| self.preference(*n));
        fill.truncate(want - keep.len());
        let voters: BTreeSet<NodeId> = keep.into_iter().chain(fill.iter().copied()).collect();
        if voters == self.target.config_voters {
            return;
        }
        for node in fill {
            self.steps.push(Step::AddLearner {
                group: CONFIG_GROUP,
                node,
            });
        }
        self.steps.push(Step::SetConfigVoters {
            voters: voters.clone(),
        });
        self.target.config_voters = voters;
    }

    /// Spares of the target, preferred first (alive, then lowest id).
    fn spares(&self) -> Vec<NodeId> {
        let mut spares = self.target.spares();
        spares.sort_by_key(|n| self.preference(*n));
        spares
    }

    /// Forms a new group from the K preferred spares. The caller checked that K spares exist.
    fn create_group(&mut self) {
        let members: BTreeSet<NodeId> = self.spares().into_iter().take(self.target.k).collect();
        let group = self.target.new_group_id();
        self.target.next_group_id = group.0 + 1;
        self.target.groups.insert(
            group,
            GroupInfo {
                members: members.clone(),
            },
        );
        self.steps.push(Step::CreateGroup { group, members });
    }

    /// Replaces `old` in `group` by the preferred spare. The caller checked that a spare exists.
    fn replace(&mut self, group: GroupId, old: NodeId) {
        let Some(new) = self.spares().first().copied() else {
            return;
        };
        self.steps.push(Step::AddLearner { group, node: new });
        self.steps.push(Step::ReplaceVoter { group, old, new });
        if let Some(g) = self.target.groups.get_mut(&group) {
            g.members.remove(&old);
            g.members.insert(new);
        }
    }

    /// The group to dissolve when `removed` leaves and the partitions drop: the one with the
    /// fewest slots (keeping the largest groups moves the fewest slots), then the removed node's
    /// group (saves a replacement), then the highest id.
    fn dissolve_choice(&self, removed: NodeId) -> GroupId {
        let counts = slot_counts(&self.target);
        let own = self.target.group_of_node(removed);
        self.target
            .groups
            .keys()
            .copied()
            .min_by_key(|g| {
                (
                    counts.get(g).copied().unwrap_or(0),
                    Some(*g) != own,
                    Reverse(*g),
                )
            })
            .unwrap_or(FIRST_DATA_GROUP)
    }

    /// Moves the fewest slots so that every group but `dissolving` owns SLOT_COUNT/P or one more
    /// slots, and `dissolving` owns none. Pushes one `MoveSlots` per (donor, receiver) pair.
    fn rebalance(&mut self, dissolving: Option<GroupId>) {
        let counts = slot_counts(&self.target);
        let count = |g: &GroupId| counts.get(g).copied().unwrap_or(0);
        let mut live: Vec<GroupId> = self
            .target
            .groups
            .keys()
            .copied()
            .filter(|g| Some(*g) != dissolving)
            .collect();
        if live.is_empty() {
            return;
        }
        let total = self.target.slots.len();
        let (base, extra) = (total / live.len(), total % live.len());
        // The larger targets go to the groups that own the most: they keep the most slots.
        live.sort_by_key(|g| (Reverse(count(g)), *g));
        let mut targets: BTreeMap<GroupId, usize> = live
            .iter()
            .enumerate()
            .map(|(i, g)| (*g, base + usize::from(i < extra)))
            .collect();
        if let Some(d) = dissolving {
            targets.insert(d, 0);
        }
        // Donors give away their highest slots, in group id order: half-open runs, ascending.
        let runs = slot_runs(&self.target);
        let mut given: Vec<(GroupId, usize, usize)> = Vec::new();
        for (g, t) in &targets {
            let mut excess = count(g).saturating_sub(*t);
            let mut mine: Vec<(GroupId, usize, usize)> = Vec::new();
            for (start, end) in runs.get(g).into_iter().flatten().rev() {
                if excess == 0 {
                    break;
                }
                let take = excess.min(end - start);
                mine.push((*g, end - take, *end));
                excess -= take;
            }
            given.extend(mine.into_iter().rev());
        }
        let mut receivers = targets
            .iter()
            .filter(|(g, t)| count(g) < **t)
            .map(|(g, t)| (*g, *t - count(g)));
        let mut current: Option<(GroupId, usize)> = receivers.next();
        let mut moves: Vec<(GroupId, GroupId, Vec<Run>)> = Vec::new();
        'give: for (from, mut start, end) in given {
            while start < end {
                let Some((to, need)) = current.as_mut() else {
                    break 'give;
                };
                let take = (*need).min(end - start);
                let run = (start, start + take);
                match moves.last_mut() {
                    Some((f, t, runs)) if *f == from && *t == *to => runs.push(run),
                    _ => moves.push((from, *to, vec![run])),
                }
                start += take;
                *need -= take;
                if *need == 0 {
                    current = receivers.next();
                }
            }
        }
        self.push_moves(moves);
    }

    /// Applies `moves` (half-open runs of slots) to the target and pushes their steps.
    fn push_moves(&mut self, moves: Vec<(GroupId, GroupId, Vec<Run>)>) {
        for (from, to, runs) in moves {
            for (start, end) in &runs {
                self.target.slots[*start..*end].fill(to);
            }
            self.steps.push(Step::MoveSlots {
                from,
                to,
                ranges: ranges(&runs),
            });
        }
    }
}

/// A half-open run of slots `start..end`.
type Run = (usize, usize);

/// Number of slots of each group that owns any.
fn slot_counts(map: &ClusterMap) -> BTreeMap<GroupId, usize> {
    slot_runs(map)
        .into_iter()
        .map(|(g, runs)| (g, runs.iter().map(|(a, b)| b - a).sum()))
        .collect()
}

/// The slots of each group as maximal half-open runs `start..end`, ascending.
fn slot_runs(map: &ClusterMap) -> BTreeMap<GroupId, Vec<Run>> {
    let mut runs: BTreeMap<GroupId, Vec<Run>> = BTreeMap::new();
    let mut start = 0;
    for chunk in map.slots.chunk_by(|a, b| a == b) {
        runs.entry(chunk[0])
            .or_default()
            .push((start, start + chunk.len()));
        start += chunk.len();
    }
    runs
}

/// Ascending half-open runs of slots as inclusive ranges, adjacent runs merged.
fn ranges(runs: &[Run]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (start, end) in runs {
        // Slots index a table of at most `u16::MAX + 1` entries (`slot_count` is a u16).
        let (first, last) = (*start as u16, (*end - 1) as u16);
        match out.last_mut() {
            Some((_, prev)) if usize::from(*prev) + 1 == *start => *prev = last,
            _ => out.push((first, last)),
        }
    }
    out
}

/// Replays `steps` from `map` and refuses the plan if, with `dead` nodes down, some step needs a
/// group below quorum (the config group commits every step; a membership change needs a quorum
/// of both the old and the new voters; a move needs both groups) or a dead node to join a group.
fn check_liveness(
    map: &ClusterMap,
    steps: &[Step],
    dead: &BTreeSet<NodeId>,
) -> Result<(), PlanError> {
    let mut config = map.config_voters.clone();
    let mut groups: BTreeMap<GroupId, BTreeSet<NodeId>> = map
        .groups
        .iter()
        .map(|(g, i)| (*g, i.members.clone()))
        .collect();
    let quorum = |group: GroupId, voters: &BTreeSet<NodeId>, step: usize| {
        let alive = voters.iter().filter(|v| !dead.contains(v)).count();
        if alive * 2 > voters.len() {
            Ok(())
        } else {
            Err(PlanError::BelowQuorum {
                group,
                step,
                voters: voters.clone(),
                alive,
            })
        }
    };
    let alive = |node: NodeId, step: usize| {
        if dead.contains(&node) {
            Err(PlanError::DeadNode { node, step })
        } else {
            Ok(())
        }
    };
    let empty = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        quorum(CONFIG_GROUP, &config, i)?;
        match step {
            Step::AddNode { .. } | Step::RemoveNode { .. } => {}
            Step::AddLearner { group, node } => {
                let voters = if *group == CONFIG_GROUP {
                    &config
                } else {
                    groups.get(group).unwrap_or(&empty)
                };
                quorum(*group, voters, i)?;
                alive(*node, i)?;
            }
            Step::ReplaceVoter { group, old, new } => {
                let voters = groups.entry(*group).or_default();
                quorum(*group, voters, i)?;
                voters.remove(old);
                voters.insert(*new);
                quorum(*group, voters, i)?;
            }
            Step::CreateGroup { group, members } => {
                for m in members {
                    alive(*m, i)?;
                }
                groups.insert(*group, members.clone());
            }
            Step::MoveSlots { from, to, .. } => {
                quorum(*from, groups.get(from).unwrap_or(&empty), i)?;
                quorum(*to, groups.get(to).unwrap_or(&empty), i)?;
            }
            Step::DissolveGroup { group } => {
                groups.remove(group);
            }
            Step::SetConfigVoters { voters } => {
                quorum(CONFIG_GROUP, voters, i)?;
                config = voters.clone();
            }
        }
    }
    Ok(())
}
