//! Specification tests of the view-change planner.
//!
//! Table tests first: the seed scenarios and the refusals, each case naming its property. Then
//! property tests that check every plan against references written here, independently of the
//! planner:
//! - [`check_plan`]: the target map's invariants (groups of exactly K active members, floor(N/K)
//!   groups, every slot owned once, balance ±1, config voters = min(N, 3) active nodes that keep
//!   the surviving ones, at most one group dissolved or created, at most one replacement);
//! - [`lower_bound`]: the fewest slots any valid target must move, by a direct count (what each
//!   kept group can keep, best over every choice of dissolved group); the plan moves exactly that;
//! - [`replay`]: a dumb executor that runs the steps one by one on a copy of the map, checks each
//!   step's precondition (learners before voters, K voters at most, a group dissolved only when
//!   empty, a node removed only when in nothing, every slot moved at most once) and must end at
//!   the target;
//! - [`quorum_violation`]: the first step that needs a group below quorum, for the dead-node
//!   refusals.
//!
//! Property tests print their seed; replay a failure with
//! `PROPTEST_RNG_SEED=<seed> cargo test -p kvorum-router --test planner`.

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use kvorum_router::map::MAX_CONFIG_VOTERS;
use kvorum_router::{
    plan, plan_with, ClusterMap, GroupId, NodeId, NodeLifecycle, Plan, PlanError, PlanOptions,
    Step, Task, TaskKind, TaskStep, ViewChange, CONFIG_GROUP,
};
use proptest::prelude::*;

mod exhaustive;
mod refusals;
mod scenarios;

// ---------------------------------------------------------------------------------------------
// Helpers and the references.
// ---------------------------------------------------------------------------------------------

/// The address of node `id` in these tests.
fn addr(id: NodeId) -> String {
    format!("10.0.0.{id}:7000")
}

/// The initial map of `n` nodes (ids 1..=n) with `k` replicas per group.
fn initial(n: usize, k: usize) -> ClusterMap {
    let view: Vec<String> = (1..=n as NodeId).map(addr).collect();
    ClusterMap::initial(&view, k).expect("a valid (N, K) gives a map")
}

fn add(id: NodeId) -> ViewChange {
    ViewChange::AddNode { addr: addr(id) }
}

fn remove(node: NodeId) -> ViewChange {
    ViewChange::RemoveNode { node }
}

fn set(nodes: &[NodeId]) -> BTreeSet<NodeId> {
    nodes.iter().copied().collect()
}

/// Active nodes of `map`, by a plain scan.
fn active(map: &ClusterMap) -> BTreeSet<NodeId> {
    map.nodes
        .iter()
        .filter(|(_, n)| n.state == NodeLifecycle::Active)
        .map(|(id, _)| *id)
        .collect()
}

/// Slots owned by each group, by a plain count.
fn counts(map: &ClusterMap) -> BTreeMap<GroupId, usize> {
    let mut c: BTreeMap<GroupId, usize> = map.groups.keys().map(|g| (*g, 0)).collect();
    // By runs of equal owners: one map update per run keeps the debug build fast.
    for run in map.slots.chunk_by(|a, b| a == b) {
        *c.entry(run[0]).or_default() += run.len();
    }
    c
}

/// Slot counts in ascending order.
fn sorted_counts(map: &ClusterMap) -> Vec<usize> {
    let mut c: Vec<usize> = counts(map).into_values().collect();
    c.sort();
    c
}

/// The fewest slots that must change owner to go from `before` to any map with `partitions`
/// groups each owning S/P or S/P + 1 slots, where the groups are `before`'s minus at most one
/// dissolved, plus new empty ones. Counted directly: a kept group with c slots keeps at most
/// min(c, S/P), plus one if it gets one of the S mod P larger shares and c > S/P; every slot of
/// a dissolved group moves. The best over every choice of dissolved group.
fn lower_bound(before: &ClusterMap, partitions: usize) -> usize {
    let total = before.slots.len();
    let (base, extra) = (total / partitions, total % partitions);
    let c = counts(before);
    let keepable = |kept: &[usize]| -> usize {
        let at_most_base: usize = kept.iter().map(|c| (*c).min(base)).sum();
        at_most_base + extra.min(kept.iter().filter(|c| **c > base).count())
    };
    let all: Vec<usize> = c.values().copied().collect();
    if partitions >= all.len() {
        return total - keepable(&all);
    }
    assert_eq!(partitions + 1, all.len(), "one change dissolves one group");
    (0..all.len())
        .map(|d| {
            let kept: Vec<usize> = (0..all.len()).filter(|i| *i != d).map(|i| all[i]).collect();
            total - keepable(&kept)
        })
        .min()
        .expect("at least one group")
}

/// What the dumb executor tracks.
#[derive(Debug, Clone)]
struct Sim {
    nodes: BTreeMap<NodeId, bool>,
    groups: BTreeMap<GroupId, BTreeSet<NodeId>>,
    learners: BTreeMap<GroupId, BTreeSet<NodeId>>,
    config: BTreeSet<NodeId>,
    slots: Vec<GroupId>,
}

impl Sim {
    fn of(map: &ClusterMap) -> Sim {
        Sim {
            nodes: map
                .nodes
                .iter()
                .map(|(id, n)| (*id, n.state == NodeLifecycle::Active))
                .collect(),
            groups: map
                .groups
                .iter()
                .map(|(g, i)| (*g, i.members.clone()))
                .collect(),
            learners: BTreeMap::new(),
            config: map.config_voters.clone(),
            slots: map.slots.clone(),
        }
    }

    fn in_a_group(&self, node: NodeId) -> bool {
        self.groups.values().any(|m| m.contains(&node))
    }
}

/// Runs `steps` on a copy of `map`, checking each step's precondition and that no data group
/// ever has more than K voters; returns the final state.
fn replay(map: &ClusterMap, steps: &[Step]) -> Sim {
    let k = map.k;
    let mut sim = Sim::of(map);
    let mut moved = vec![false; map.slots.len()];
    for (i, step) in steps.iter().enumerate() {
        let ctx = format!("step {i} {step:?}");
        match step {
            Step::AddNode { node, .. } => {
                assert_eq!(
                    Some(*node),
                    sim.nodes.keys().max().map(|m| m + 1),
                    "{ctx}: ids are max + 1"
                );
                sim.nodes.insert(*node, true);
            }
            Step::AddLearner { group, node } => {
                assert!(sim.nodes[node], "{ctx}: learner must be active");
                if *group == CONFIG_GROUP {
                    assert!(!sim.config.contains(node), "{ctx}: already a voter");
                } else {
                    assert!(sim.groups.contains_key(group), "{ctx}: unknown group");
                    assert!(!sim.in_a_group(*node), "{ctx}: learner must be a spare");
                }
                sim.learners.entry(*group).or_default().insert(*node);
            }
            Step::ReplaceVoter { group, old, new } => {
                assert!(
                    sim.learners.get(group).is_some_and(|l| l.contains(new)),
                    "{ctx}: the new voter must be a learner first"
                );
                assert!(!sim.in_a_group(*new), "{ctx}: new voter in another group");
                let members = sim.groups.get_mut(group).expect("group exists");
                assert!(members.remove(old), "{ctx}: old is not a voter");
                members.insert(*new);
                sim.learners.entry(*group).or_default().remove(new);
            }
            Step::CreateGroup { group, members } => {
                assert!(!sim.groups.contains_key(group), "{ctx}: group exists");
                assert_eq!(
                    group.0,
                    sim.groups
                        .keys()
                        .max()
                        .map_or(1, |g| g.0 + 1)
                        .max(map.next_group_id),
                    "{ctx}: new group id is above every id used before"
                );
                assert_eq!(members.len(), k, "{ctx}: K members");
                for m in members {
                    assert!(sim.nodes[m] && !sim.in_a_group(*m), "{ctx}: not a spare");
                }
                sim.groups.insert(*group, members.clone());
            }
            Step::MoveSlots { from, to, ranges } => {
                assert_ne!(from, to, "{ctx}");
                assert!(
                    sim.groups.contains_key(from) && sim.groups.contains_key(to),
                    "{ctx}: both groups exist"
                );
                assert!(!ranges.is_empty(), "{ctx}: empty move");
                for w in ranges.windows(2) {
                    assert!(w[0].1 < w[1].0, "{ctx}: ranges ascending, disjoint");
                }
                for (a, b) in ranges {
                    assert!(a <= b, "{ctx}");
                    let range = *a as usize..=*b as usize;
                    assert!(
                        sim.slots[range.clone()].iter().all(|g| g == from),
                        "{ctx}: a slot of {a}..={b} is not owned by {from}"
                    );
                    assert!(
                        !moved[range.clone()].contains(&true),
                        "{ctx}: a slot of {a}..={b} moved twice"
                    );
                    moved[range.clone()].fill(true);
                    sim.slots[range].fill(*to);
                }
            }
            Step::DissolveGroup { group } => {
                assert!(
                    !sim.slots.contains(group),
                    "{ctx}: dissolved group still owns slots"
                );
                assert!(sim.groups.remove(group).is_some(), "{ctx}: unknown group");
            }
            Step::SetConfigVoters { voters } => {
                assert!(!voters.is_empty(), "{ctx}");
                let learners = sim.learners.remove(&CONFIG_GROUP).unwrap_or_default();
                for v in voters {
                    assert!(
                        sim.config.contains(v) || learners.contains(v),
                        "{ctx}: new config voter {v} was not a learner"
                    );
                    assert!(sim.nodes[v], "{ctx}: config voter not active");
                }
                sim.config = voters.clone();
            }
            Step::RemoveNode { node } => {
                assert!(sim.nodes[node], "{ctx}: removing an inactive node");
                assert!(!sim.in_a_group(*node), "{ctx}: still in a group");
                assert!(!sim.config.contains(node), "{ctx}: still a config voter");
                sim.nodes.insert(*node, false);
            }
        }
        for (g, m) in &sim.groups {
            assert!(m.len() <= k, "{ctx}: group {g} has {} voters", m.len());
        }
    }
    sim
}

/// The first step at which a group the step needs has a dead majority: the config group at
/// every step, both configurations of a membership change, both groups of a move, the group a
/// learner joins. Also reports a dead node asked to join a group.
fn quorum_violation(
    map: &ClusterMap,
    steps: &[Step],
    dead: &BTreeSet<NodeId>,
) -> Option<(usize, String)> {
    let ok = |voters: &BTreeSet<NodeId>| {
        let alive = voters.iter().filter(|v| !dead.contains(v)).count();
        2 * alive > voters.len()
    };
    let mut sim = Sim::of(map);
    for (i, step) in steps.iter().enumerate() {
        if !ok(&sim.config) {
            return Some((i, "config".into()));
        }
        let bad = match step {
            Step::AddLearner { group, node } => {
                let voters = if *group == CONFIG_GROUP {
                    &sim.config
                } else {
                    &sim.groups[group]
                };
                !ok(voters) || dead.contains(node)
            }
            Step::ReplaceVoter { group, old, new } => {
                let before = sim.groups[group].clone();
                let mut after = before.clone();
                after.remove(old);
                after.insert(*new);
                let bad = !ok(&before) || !ok(&after);
                sim.groups.insert(*group, after);
                bad
            }
            Step::CreateGroup { group, members } => {
                sim.groups.insert(*group, members.clone());
                members.iter().any(|m| dead.contains(m))
            }
            Step::MoveSlots { from, to, .. } => !ok(&sim.groups[from]) || !ok(&sim.groups[to]),
            Step::DissolveGroup { group } => {
                sim.groups.remove(group);
                false
            }
            Step::SetConfigVoters { voters } => {
                let bad = !ok(voters);
                sim.config = voters.clone();
                bad
            }
            Step::AddNode { .. } | Step::RemoveNode { .. } => false,
        };
        if bad {
            return Some((i, format!("{step:?}")));
        }
    }
    None
}

/// Context of a failure message, formatted only when an assertion fails.
struct Ctx<'a>(&'a ClusterMap, &'a ViewChange);

impl std::fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} on {}", self.1, self.0.summary())
    }
}

/// Checks `plan` of `change` on `before` against the references. `max_voters` is the options'
/// `max_config_voters`.
fn check_plan(before: &ClusterMap, change: &ViewChange, plan: &Plan, max_voters: usize) {
    let t = &plan.target;
    let ctx = Ctx(before, change);
    let k = before.k;
    assert_eq!(t.epoch, before.epoch + 1, "{ctx}: epoch + 1");
    assert_eq!(
        (t.k, t.slot_count, &t.hash, &t.tasks, t.next_task_id),
        (
            before.k,
            before.slot_count,
            &before.hash,
            &before.tasks,
            before.next_task_id
        ),
        "{ctx}: fixed fields"
    );

    // Nodes: a new node gets max id + 1; a removed node stays, marked removed; ids never reused.
    let mut expected_active = active(before);
    match change {
        ViewChange::AddNode { addr } => {
            let id = before.nodes.keys().max().map_or(1, |m| m + 1);
            assert_eq!(t.nodes.len(), before.nodes.len() + 1, "{ctx}");
            assert_eq!(t.addr(id), Some(addr.as_str()), "{ctx}: new node's address");
            expected_active.insert(id);
        }
        ViewChange::RemoveNode { node } => {
            assert_eq!(t.nodes.len(), before.nodes.len(), "{ctx}");
            assert_eq!(t.nodes[node].state, NodeLifecycle::Removed, "{ctx}");
            expected_active.remove(node);
        }
    }
    assert_eq!(active(t), expected_active, "{ctx}: active nodes");
    let n = expected_active.len();

    // Groups: floor(N/K) of exactly K active members; the rest spares.
    let partitions = n / k;
    assert_eq!(t.groups.len(), partitions, "{ctx}: floor(N/K) groups");
    for (g, info) in &t.groups {
        assert_eq!(info.members.len(), k, "{ctx}: group {g} has K members");
        assert!(
            info.members.is_subset(&expected_active),
            "{ctx}: group {g} members active"
        );
    }
    assert_eq!(t.spares().len(), n - partitions * k, "{ctx}: spares");

    // Slots: every slot owned by exactly one existing group, balanced ±1.
    let total = t.slots.len();
    for (g, c) in counts(t) {
        assert!(t.groups.contains_key(&g), "{ctx}: slot owner {g} exists");
        assert!(
            c == total / partitions || c == total / partitions + 1,
            "{ctx}: group {g} owns {c} slots"
        );
    }

    // Minimal movement: exactly the lower bound, and what the steps say they move.
    let moved = (0..total)
        .filter(|s| before.slots[*s] != t.slots[*s])
        .count();
    assert_eq!(
        moved,
        lower_bound(before, partitions),
        "{ctx}: minimal movement"
    );
    assert_eq!(plan.moved_slots(), moved, "{ctx}: steps move what changes");

    // Group churn: at most one group dissolved or created, a new id above every id the map has
    // used (dissolved ones included), at most one replacement among the groups that stay.
    let old: BTreeSet<GroupId> = before.groups.keys().copied().collect();
    let new: BTreeSet<GroupId> = t.groups.keys().copied().collect();
    assert!(
        old.difference(&new).count() + new.difference(&old).count() <= 1,
        "{ctx}"
    );
    for g in new.difference(&old) {
        assert_eq!(
            g.0,
            old.iter()
                .max()
                .map_or(1, |m| m.0 + 1)
                .max(before.next_group_id),
            "{ctx}: new group id"
        );
        assert!(t.next_group_id > g.0, "{ctx}: the new id is remembered");
    }
    let changed: usize = old
        .intersection(&new)
        .map(|g| {
            before.groups[g]
                .members
                .difference(&t.groups[g].members)
                .count()
        })
        .sum();
    assert!(changed <= 1, "{ctx}: {changed} replicas replaced");

    // Config voters: min(N, max) active nodes, keeping every surviving voter.
    assert_eq!(
        t.config_voters.len(),
        n.min(max_voters),
        "{ctx}: config voters"
    );
    assert!(t.config_voters.is_subset(&expected_active), "{ctx}");
    let surviving: BTreeSet<NodeId> = before
        .config_voters
        .intersection(&expected_active)
        .copied()
        .collect();
    if surviving.len() <= max_voters {
        assert!(surviving.is_subset(&t.config_voters), "{ctx}: voters kept");
    }

    // Steps: a dumb executor runs them and lands on the target.
    let sim = replay(before, &plan.steps);
    let target_groups: BTreeMap<GroupId, BTreeSet<NodeId>> = t
        .groups
        .iter()
        .map(|(g, i)| (*g, i.members.clone()))
        .collect();
    assert_eq!(sim.groups, target_groups, "{ctx}: replayed groups");
    assert_eq!(sim.slots, t.slots, "{ctx}: replayed slots");
    assert_eq!(sim.config, t.config_voters, "{ctx}: replayed config");
    let sim_active: BTreeSet<NodeId> = sim
        .nodes
        .iter()
        .filter(|(_, a)| **a)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(sim_active, expected_active, "{ctx}: replayed nodes");
    assert!(
        sim.learners.values().all(BTreeSet::is_empty),
        "{ctx}: learners left over"
    );
}

/// Plans `change` (default options) and checks it against the references. (The planner
/// validates the target with `ClusterMap::validate` itself.)
fn checked(before: &ClusterMap, change: &ViewChange) -> Result<Plan, PlanError> {
    let result = plan(before, change);
    if let Ok(p) = &result {
        check_plan(before, change, p, MAX_CONFIG_VOTERS);
    }
    result
}

/// [`checked`], and planning again gives the same result.
fn checked_twice(before: &ClusterMap, change: &ViewChange) -> Result<Plan, PlanError> {
    let result = checked(before, change);
    assert_eq!(result, plan(before, change), "deterministic: {change:?}");
    result
}

/// Applies `changes` one after the other, checking each plan.
fn after(mut map: ClusterMap, changes: &[ViewChange]) -> ClusterMap {
    for c in changes {
        map = checked(&map, c).expect("the change is allowed").target;
    }
    map
}

/// Proptest configuration with an explicit seed, printed so that a failure can be replayed.
fn config(cases: u32) -> ProptestConfig {
    common::seeded_config(cases, "planner")
}
