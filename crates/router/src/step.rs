//! What a view change is and the steps a plan is made of: the types the map records in a
//! view-change task and the planner produces.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::CONFIG_GROUP;
use crate::{GroupId, NodeId};

/// One view change: adding or removing one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum ViewChange {
    /// Add a new node at `addr` (`ip:port`). It gets id max(existing ids) + 1; ids are never
    /// reused, so a wiped node comes back under a new id even at its old address.
    AddNode { addr: String },
    /// Remove `node` from the cluster for good; its id is never used again.
    RemoveNode { node: NodeId },
}

/// One step of a plan. Steps run in order, each after the previous one completed; each is
/// idempotent when re-run against the real state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// Record `node` at `addr` in the map as an active spare.
    AddNode { node: NodeId, addr: String },
    /// Add `node` to `group` (a data group, or [`CONFIG_GROUP`]) as a non-voting learner and
    /// catch it up by snapshot and log. The group's voters do not change.
    AddLearner { group: GroupId, node: NodeId },
    /// One membership change of data group `group`: the caught-up learner `new` replaces the
    /// voter `old`. The group has K voters before and after (never K + 1).
    ReplaceVoter {
        group: GroupId,
        old: NodeId,
        new: NodeId,
    },
    /// Start a new data group on `members` (K spares), initialized with them as voters. It owns
    /// no slot yet.
    CreateGroup {
        group: GroupId,
        members: BTreeSet<NodeId>,
    },
    /// Move the slots of `ranges` (inclusive, ascending, disjoint) from group `from` to group
    /// `to` with the move protocol (copy, freeze, catch up, release, flip, activate, clean up).
    MoveSlots {
        from: GroupId,
        to: GroupId,
        ranges: Vec<(u16, u16)>,
    },
    /// Dissolve data group `group`, which owns no slot any more: its replicas stop and delete
    /// their state, and its members become spares.
    DissolveGroup { group: GroupId },
    /// One membership change of the config group to exactly `voters`; new voters were added as
    /// learners by earlier steps.
    SetConfigVoters { voters: BTreeSet<NodeId> },
    /// Mark `node` removed. It is in no group and not a config voter any more.
    RemoveNode { node: NodeId },
}

impl Step {
    /// Number of slots this step moves (0 unless it is a `MoveSlots`).
    pub fn moved_slots(&self) -> usize {
        match self {
            Step::MoveSlots { ranges, .. } => ranges
                .iter()
                .map(|(a, b)| usize::from(*b) - usize::from(*a) + 1)
                .sum(),
            _ => 0,
        }
    }
}
