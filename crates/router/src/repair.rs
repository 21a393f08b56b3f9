//! The repair choice: which replicas on dead (or removed) nodes to replace now, and by which
//! node. Pure and deterministic; the metadata leader (crates/node, `meta/tasks.rs`) records the
//! choices as tasks and runs them.
//!
//! Rules, in the order [`plan_repairs`] applies them:
//! - at most one task per group: a group with a task in the map gets no repair; repairs of
//!   different groups are chosen together and run in parallel;
//! - every data group without a task (in group id order), then the config group, gets a repair
//!   of its first member (lowest id) on a dead or removed node, if a candidate exists;
//! - a data replica is replaced by an alive spare; a config voter by an alive spare that is no
//!   voter, or, once the node is removed (it will never come back), by any alive active
//!   non-voter; at most one config voter is replaced at a time;
//! - a node is the replacement of one task at a time (existing tasks' replacements included);
//! - while a view change runs, the groups and nodes its remaining steps need
//!   ([`crate::ViewChangeTask::holds`]: the groups of its membership steps and of the slot batch
//!   in flight, the nodes its steps name) get no repair, are not replaced and replace nobody;
//!   every other group is repaired as without a change;
//! - a node a group's leader saw still replicating (`vetoed`: dead by heartbeats, alive by its
//!   log) is left alone while the veto holds; the caller decides how long it holds.

use std::collections::{BTreeMap, BTreeSet};

use crate::map::{ClusterMap, TaskKind};
use crate::{GroupId, NodeId, CONFIG_GROUP};

/// Health of a node, as the metadata leader derives it from the time since its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Heard from within the suspect threshold.
    Alive,
    /// Silent for longer than the suspect threshold, not yet the dead one.
    Suspect,
    /// Silent for longer than the dead threshold.
    Dead,
}

impl Health {
    /// The name of this health in the cluster status and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Dead => "dead",
        }
    }
}

/// One repair to start: replace `dead`'s replica of `group` by one on `replacement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    /// The group whose replica is replaced.
    pub group: GroupId,
    /// The node whose replica is replaced (dead or removed).
    pub dead: NodeId,
    /// The node that gets the new replica.
    pub replacement: NodeId,
}

/// Whether `node`'s replicas need replacing: dead, or removed from the cluster.
pub fn needs_replacing(map: &ClusterMap, health: &BTreeMap<NodeId, Health>, node: NodeId) -> bool {
    !map.is_active(node) || health.get(&node) == Some(&Health::Dead)
}

/// The repairs to start now, by the rules of this module. `health` covers the active nodes (a
/// node absent from it is not alive); `vetoed` nodes are dead by heartbeats, but a group's leader
/// saw them still replicating: they are left alone.
pub fn plan_repairs(
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    vetoed: &BTreeSet<NodeId>,
) -> Vec<Repair> {
    let alive = |n: &NodeId| health.get(n) == Some(&Health::Alive);
    // A view change keeps what its remaining steps need; everything else may be repaired.
    let (held_groups, held_nodes) = map
        .view_change()
        .map(|(_, v)| v.holds())
        .unwrap_or_default();
    let mut busy: BTreeSet<GroupId> = map.tasks.iter().filter_map(|t| t.kind.group()).collect();
    busy.extend(held_groups);
    let mut used: BTreeSet<NodeId> = map
        .tasks
        .iter()
        .filter_map(|t| match &t.kind {
            TaskKind::ReplaceReplica { replacement, .. } => Some(*replacement),
            TaskKind::ViewChange(_) => None,
        })
        .collect();
    let replaceable = |n: NodeId| {
        needs_replacing(map, health, n)
            && !(map.is_active(n) && vetoed.contains(&n))
            && !held_nodes.contains(&n)
    };
    let spares: Vec<NodeId> = map
        .spares()
        .into_iter()
        .filter(|n| alive(n) && !held_nodes.contains(n))
        .collect();
    let mut picks = Vec::new();
    for (gid, g) in map.groups.iter().filter(|(gid, _)| !busy.contains(gid)) {
        let Some(dead) = g.members.iter().copied().find(|m| replaceable(*m)) else {
            continue;
        };
        if let Some(s) = spares.iter().copied().find(|s| !used.contains(s)) {
            used.insert(s);
            picks.push(Repair {
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
            let free = |n: &NodeId| {
                !used.contains(n) && !map.config_voters.contains(n) && !held_nodes.contains(n)
            };
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
                picks.push(Repair {
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
