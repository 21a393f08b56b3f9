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

mod common;

use std::collections::{BTreeMap, BTreeSet};

use kvorum_router::map::MAX_CONFIG_VOTERS;
use kvorum_router::{
    plan, plan_with, ClusterMap, GroupId, NodeId, NodeLifecycle, Plan, PlanError, PlanOptions,
    Step, Task, TaskKind, TaskStep, ViewChange, CONFIG_GROUP,
};
use proptest::prelude::*;

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

// ---------------------------------------------------------------------------------------------
// Table tests: the seed scenarios.
// ---------------------------------------------------------------------------------------------

// Adding a node to 6 nodes with K=3 makes it a spare: nothing moves, no group changes.
#[test]
fn add_to_full_groups_makes_a_spare() {
    let before = initial(6, 3);
    let p = checked(&before, &add(7)).expect("allowed");
    assert_eq!(
        p.steps,
        vec![Step::AddNode {
            node: 7,
            addr: addr(7)
        }]
    );
    assert_eq!(p.target.groups, before.groups);
    assert_eq!(p.target.slots, before.slots);
    assert_eq!(p.target.spares(), vec![7]);
}

// Two more nodes make K spares: they form group 3 and the slots split 1365/1365/1366, moving
// only the 1365 slots the new group needs.
#[test]
fn k_spares_form_a_new_group() {
    let map = after(initial(6, 3), &[add(7), add(8)]);
    let p = checked(&map, &add(9)).expect("allowed");
    assert_eq!(p.target.groups[&GroupId(3)].members, set(&[7, 8, 9]));
    assert_eq!(sorted_counts(&p.target), vec![1365, 1365, 1366]);
    assert_eq!(p.moved_slots(), 1365);
    assert_eq!(
        p.steps,
        vec![
            Step::AddNode {
                node: 9,
                addr: addr(9)
            },
            Step::CreateGroup {
                group: GroupId(3),
                members: set(&[7, 8, 9])
            },
            // Group 1 keeps the larger share (tie on 2048: lowest id); donors give their top.
            Step::MoveSlots {
                from: GroupId(1),
                to: GroupId(3),
                ranges: vec![(1366, 2047)]
            },
            Step::MoveSlots {
                from: GroupId(2),
                to: GroupId(3),
                ranges: vec![(3413, 4095)]
            },
        ]
    );
}

// 6 nodes with K=2 and no spare: removing a replica drops to 2 groups and a spare. The smallest
// group (3, tie with 2 broken by highest id) is emptied and dissolved, its freed member 5
// replaces node 1, node 6 stays a spare; node 1's config seat goes to node 4.
#[test]
fn remove_replica_without_spare_dissolves_a_group() {
    let before = initial(6, 2);
    let p = checked(&before, &remove(1)).expect("allowed");
    assert_eq!(
        p.steps,
        vec![
            Step::AddLearner {
                group: CONFIG_GROUP,
                node: 4
            },
            Step::SetConfigVoters {
                voters: set(&[2, 3, 4])
            },
            Step::MoveSlots {
                from: GroupId(3),
                to: GroupId(1),
                ranges: vec![(2731, 3412)]
            },
            Step::MoveSlots {
                from: GroupId(3),
                to: GroupId(2),
                ranges: vec![(3413, 4095)]
            },
            Step::DissolveGroup { group: GroupId(3) },
            Step::AddLearner {
                group: GroupId(1),
                node: 5
            },
            Step::ReplaceVoter {
                group: GroupId(1),
                old: 1,
                new: 5
            },
            Step::RemoveNode { node: 1 },
        ]
    );
    assert_eq!(p.target.groups.len(), 2);
    assert_eq!(p.target.spares(), vec![6]);
    assert_eq!(sorted_counts(&p.target), vec![2048, 2048]);
}

// ... and adding the node back (a new id, 7, at node 1's old address) makes 3 groups again.
#[test]
fn removed_node_comes_back_under_a_new_id() {
    let map = after(initial(6, 2), &[remove(1)]);
    let p = checked(&map, &add(1)).expect("a removed node's address may be reused");
    assert_eq!(p.target.nodes[&7].addr, addr(1));
    assert_eq!(p.target.nodes[&1].state, NodeLifecycle::Removed);
    assert_eq!(p.target.groups.len(), 3);
    assert_eq!(p.target.groups[&GroupId(3)].members, set(&[6, 7]));
    assert_eq!(sorted_counts(&p.target), vec![1365, 1365, 1366]);
}

// Removing a replica of the smallest group dissolves its own group: no replacement needed.
#[test]
fn remove_replica_of_smallest_group_dissolves_its_group() {
    let p = checked(&initial(6, 2), &remove(5)).expect("allowed");
    assert!(p.steps.contains(&Step::DissolveGroup { group: GroupId(3) }));
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::ReplaceVoter { .. })));
    assert_eq!(p.target.spares(), vec![6]);
}

// With a spare, removing a replica is one membership change (learner first); nothing moves.
#[test]
fn remove_replica_with_spare_is_one_replacement() {
    let p = checked(&initial(7, 2), &remove(4)).expect("allowed");
    assert_eq!(
        p.steps,
        vec![
            Step::AddLearner {
                group: GroupId(2),
                node: 7
            },
            Step::ReplaceVoter {
                group: GroupId(2),
                old: 4,
                new: 7
            },
            Step::RemoveNode { node: 4 },
        ]
    );
}

// A spare leaves at once.
#[test]
fn remove_spare_leaves_at_once() {
    let p = checked(&initial(7, 2), &remove(7)).expect("allowed");
    assert_eq!(p.steps, vec![Step::RemoveNode { node: 7 }]);
}

// With K=1 a new node is a group at once and takes its share of the slots.
#[test]
fn k1_add_creates_a_group_at_once() {
    let p = checked(&initial(2, 1), &add(3)).expect("allowed");
    assert_eq!(p.target.groups[&GroupId(3)].members, set(&[3]));
    assert_eq!(p.moved_slots(), 1365);
}

// Config voters grow toward 3 as nodes arrive, and toward a larger maximum when asked.
#[test]
fn config_voters_grow_as_nodes_arrive() {
    let map = after(initial(1, 1), &[add(2)]);
    assert_eq!(map.config_voters, set(&[1, 2]));
    let map = after(map, &[add(3), add(4)]);
    assert_eq!(map.config_voters, set(&[1, 2, 3]));
    let opts = PlanOptions {
        max_config_voters: 5,
        ..PlanOptions::default()
    };
    let p = plan_with(&map, &add(5), &opts).expect("allowed");
    check_plan(&map, &add(5), &p, 5);
    assert_eq!(p.target.config_voters, set(&[1, 2, 3, 4, 5]));
}

// ---------------------------------------------------------------------------------------------
// Table tests: refusals, each with its stable code.
// ---------------------------------------------------------------------------------------------

#[test]
fn refusals_have_stable_codes() {
    let map = initial(6, 2);
    let removed = after(map.clone(), &[remove(6)]);
    let mut busy = map.clone();
    busy.tasks.push(Task {
        id: 4,
        kind: TaskKind::ReplaceReplica {
            group: GroupId(1),
            dead: 1,
            replacement: 6,
        },
        step: TaskStep::AddLearner,
        started_ms: 0,
        leader_term: 0,
    });
    let mut short = map.clone();
    short.groups.get_mut(&GroupId(1)).expect("group 1").members = set(&[1]);
    let cases: Vec<(&str, &ClusterMap, ViewChange, &str)> = vec![
        // Removing an id the map never had.
        ("unknown", &map, remove(7), "unknown_node"),
        // Removing a node twice.
        ("twice", &removed, remove(6), "node_removed"),
        // Adding an address an active node has.
        ("address", &map, add(3), "address_in_use"),
        // Adding an empty address.
        (
            "empty",
            &map,
            ViewChange::AddNode { addr: " ".into() },
            "empty_address",
        ),
        // One change at a time.
        ("busy", &busy, remove(1), "task_in_progress"),
        // A map whose group is not of K members.
        ("invalid", &short, add(7), "invalid_map"),
    ];
    for (name, m, change, code) in cases {
        let err = plan(m, &change).expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
    }
    // Leaving fewer than K active nodes.
    let err = plan(&initial(3, 3), &remove(2)).expect_err("too few");
    assert_eq!(err, PlanError::TooFewNodes { active: 2, k: 3 });
    assert_eq!(err.code(), "too_few_nodes");
}

// A membership change of a K=2 group with a dead member has no quorum: refused.
#[test]
fn dead_member_blocks_replacement_in_k2_group() {
    let opts = PlanOptions {
        dead: set(&[2]),
        ..PlanOptions::default()
    };
    let err = plan_with(&initial(5, 2), &remove(2), &opts).expect_err("no quorum");
    assert_eq!(err.code(), "below_quorum", "{err}");
    assert!(
        matches!(err, PlanError::BelowQuorum { group, .. } if group == CONFIG_GROUP || group == GroupId(1)),
        "{err}"
    );
}

// With K=3, one dead member leaves a majority: removing the dead node is planned, and the
// replacement is an alive spare even when a dead spare has a lower id.
#[test]
fn dead_node_is_replaced_by_an_alive_spare() {
    let map = initial(8, 3); // groups {1,2,3} {4,5,6}, spares 7 8
    let opts = PlanOptions {
        dead: set(&[5, 7]),
        ..PlanOptions::default()
    };
    let p = plan_with(&map, &remove(5), &opts).expect("a majority is alive");
    check_plan(&map, &remove(5), &p, MAX_CONFIG_VOTERS);
    assert_eq!(p.target.groups[&GroupId(2)].members, set(&[4, 6, 8]));
}

// A dead config majority blocks every change; a dead spare cannot be a replacement.
#[test]
fn dead_config_majority_and_dead_spare_are_refused() {
    let map = initial(7, 3); // groups {1,2,3} {4,5,6}, spare 7, config {1,2,3}
    let dead_config = PlanOptions {
        dead: set(&[1, 2]),
        ..PlanOptions::default()
    };
    let err = plan_with(&map, &remove(7), &dead_config).expect_err("config below quorum");
    assert!(
        matches!(err, PlanError::BelowQuorum { group, .. } if group == CONFIG_GROUP),
        "{err}"
    );
    let dead_spare = PlanOptions {
        dead: set(&[7]),
        ..PlanOptions::default()
    };
    let err = plan_with(&map, &remove(4), &dead_spare).expect_err("spare is dead");
    assert_eq!(err, PlanError::DeadNode { node: 7, step: 0 });
}

// A config group shrinking to two voters, one of them dead, would have no quorum: refused, and
// the error names the new voters (found by the property test below).
#[test]
fn shrinking_config_group_needs_a_live_majority() {
    let opts = PlanOptions {
        dead: set(&[2]),
        ..PlanOptions::default()
    };
    let err = plan_with(&initial(3, 1), &remove(1), &opts).expect_err("no config quorum");
    assert!(
        matches!(&err, PlanError::BelowQuorum { group, voters, alive: 1, .. }
            if *group == CONFIG_GROUP && *voters == set(&[2, 3])),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Exhaustive and property tests against the references.
// ---------------------------------------------------------------------------------------------

// Every single change from every initial map with N ≤ 40 and K ≤ N: the plan meets every
// invariant, moves exactly the lower bound and replays to its target; and a change leaving fewer
// than K nodes, an unknown node or a used address is refused.
#[test]
fn every_single_change_from_initial_maps() {
    for n in 1..=40usize {
        for k in 1..=n {
            let map = initial(n, k);
            let next = n as NodeId + 1;
            checked(&map, &add(next)).expect("adding is always allowed");
            for node in 1..=n as NodeId {
                match checked(&map, &remove(node)) {
                    Ok(_) => assert!(n > k, "n {n} k {k}: must be refused"),
                    Err(e) => assert_eq!(e, PlanError::TooFewNodes { active: n - 1, k }),
                }
            }
            assert_eq!(
                plan(&map, &remove(next)).map_err(|e| e.code()),
                Err("unknown_node")
            );
            assert_eq!(
                plan(&map, &add(1)).map_err(|e| e.code()),
                Err("address_in_use")
            );
        }
    }
}

// Every single change from maps produced by a previous plan (an add, or the removal of the first
// or the last node, depending on N + K), for N ≤ 40 and K ≤ N: the same properties, and removing
// the removed node is refused.
#[test]
fn every_single_change_after_a_previous_plan() {
    for n in 1..=40usize {
        for k in 1..=n {
            // One first change per (N, K), rotating over the three kinds, keeps the test short;
            // the random walks cover longer histories.
            let first = match (n + k) % 3 {
                _ if n == k => add(n as NodeId + 1),
                0 => add(n as NodeId + 1),
                1 => remove(1),
                _ => remove(n as NodeId),
            };
            {
                let map = after(initial(n, k), std::slice::from_ref(&first));
                let next = map.nodes.keys().max().map_or(1, |m| m + 1);
                checked(&map, &add(next)).expect("adding is always allowed");
                let n2 = active(&map).len();
                for node in map.nodes.keys().copied() {
                    match checked(&map, &remove(node)) {
                        Ok(_) => assert!(map.is_active(node) && n2 > k),
                        Err(PlanError::NodeRemoved { .. }) => assert!(!map.is_active(node)),
                        Err(e) => assert_eq!(e, PlanError::TooFewNodes { active: n2 - 1, k }),
                    }
                }
            }
        }
    }
}

/// A starting cluster and a walk of changes: `true` adds a node, `false` removes the active
/// node at position `pick % N`.
fn walk() -> impl Strategy<Value = (usize, usize, Vec<(bool, usize)>)> {
    (1usize..=40)
        .prop_flat_map(|n| (Just(n), 1usize..=n))
        .prop_flat_map(|(n, k)| {
            (
                Just(n),
                Just(k),
                proptest::collection::vec((any::<bool>(), any::<usize>()), 1..8),
            )
        })
}

/// The change a walk step means on `map`; `None` when it would be refused for too few nodes.
fn walk_change(map: &ClusterMap, (adding, pick): (bool, usize)) -> Option<ViewChange> {
    let nodes: Vec<NodeId> = active(map).into_iter().collect();
    if adding {
        let next = map.nodes.keys().max().map_or(1, |m| m + 1);
        Some(add(next))
    } else if nodes.len() > map.k {
        Some(remove(nodes[pick % nodes.len()]))
    } else {
        None
    }
}

proptest! {
    #![proptest_config(config(64))]

    // Walks of adds and removes: every plan along the way meets the references and is
    // deterministic; removing an already removed node is refused.
    #[test]
    fn random_walks_meet_the_references((n, k, steps) in walk()) {
        let mut map = initial(n, k);
        for step in steps {
            let Some(change) = walk_change(&map, step) else { continue };
            map = checked_twice(&map, &change).expect("allowed").target;
            if let ViewChange::RemoveNode { node } = change {
                prop_assert_eq!(
                    plan(&map, &remove(node)).map_err(|e| e.code()),
                    Err("node_removed")
                );
            }
        }
    }

}

proptest! {
    #![proptest_config(config(256))]

    // With dead nodes, a plan is made only if no step needs a group below quorum or a dead
    // node to join a group (the test's own replay finds no such step); a refusal happens only
    // because of the dead nodes (the same change is planned when all are alive) and names a real
    // obstacle: a dead node, or a group whose voters (in the map, or the config group's new
    // voters) have a dead majority.
    #[test]
    fn dead_nodes_never_leave_a_step_without_quorum(
        (n, k, steps) in walk(),
        last in (any::<bool>(), any::<usize>()),
        picks in proptest::collection::vec(any::<usize>(), 0..3),
    ) {
        let mut map = initial(n, k);
        for step in steps {
            let Some(change) = walk_change(&map, step) else { continue };
            map = plan(&map, &change).expect("allowed").target;
        }
        let Some(change) = walk_change(&map, last) else { return Ok(()) };
        let nodes: Vec<NodeId> = active(&map).into_iter().collect();
        let dead: BTreeSet<NodeId> = picks.iter().map(|p| nodes[p % nodes.len()]).collect();
        let opts = PlanOptions { dead: dead.clone(), ..PlanOptions::default() };
        match plan_with(&map, &change, &opts) {
            Ok(p) => {
                check_plan(&map, &change, &p, MAX_CONFIG_VOTERS);
                prop_assert_eq!(quorum_violation(&map, &p.steps, &dead), None);
            }
            Err(e) => {
                prop_assert!(plan(&map, &change).is_ok(), "refused with all alive: {}", e);
                match e {
                    PlanError::DeadNode { node, .. } => prop_assert!(dead.contains(&node)),
                    PlanError::BelowQuorum { group, voters, alive, .. } => {
                        let a = voters.iter().filter(|m| !dead.contains(m)).count();
                        prop_assert_eq!(a, alive);
                        prop_assert!(2 * alive <= voters.len(), "{:?}", voters);
                        let members = map.members_of(group).expect("the group exists");
                        if *members != voters {
                            // Only the config group's new voters differ from the map's: min(N, 3)
                            // active nodes after the change, keeping the surviving voters.
                            prop_assert_eq!(group, CONFIG_GROUP);
                            let mut left = active(&map);
                            if let ViewChange::RemoveNode { node } = &change {
                                left.remove(node);
                            }
                            prop_assert!(voters.is_subset(&left), "{:?}", voters);
                            prop_assert!(members.intersection(&left).all(|v| voters.contains(v)));
                            if let ViewChange::RemoveNode { .. } = &change {
                                prop_assert_eq!(voters.len(), left.len().min(MAX_CONFIG_VOTERS));
                            }
                        }
                    }
                    e => prop_assert!(false, "unexpected refusal {}", e),
                }
            }
        }
    }
}
