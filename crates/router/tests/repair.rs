//! Specification tests of the repair choice ([`plan_repairs`]).
//!
//! Table tests first, each case naming its property. Then a property test that checks every
//! choice on random maps against [`reference`], a deliberately simple rewrite of the rules
//! (plain loops over the map, no shared helpers), and against the rules' invariants checked one
//! by one ([`check_invariants`]).
//!
//! The property test prints its seed; replay a failure with
//! `PROPTEST_RNG_SEED=<seed> cargo test --workspace --test repair -- plan_repairs_matches`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use kvorum_router::{
    plan, plan_repairs, ClusterMap, GroupId, Health, MoveBatch, NodeId, NodeLifecycle, Repair,
    Step, Task, TaskKind, TaskStep, ViewChange, ViewChangeTask, CONFIG_GROUP,
};
use proptest::prelude::*;

use kvorum_router::testing::{health, repair_task as task};

/// The initial map of `n` nodes (ids 1..=n) with K=3 on made-up addresses.
fn map(n: usize) -> ClusterMap {
    kvorum_router::testing::map_at("127.0.0.", 7000, n, 3)
}

fn repair(group: u64, dead: NodeId, replacement: NodeId) -> Repair {
    Repair {
        group: GroupId(group),
        dead,
        replacement,
    }
}

fn none() -> BTreeSet<NodeId> {
    BTreeSet::new()
}

// ---------------------------------------------------------------------------------------------
// Table tests.
// ---------------------------------------------------------------------------------------------

// Two groups with a dead replica each and two spares: both repairs start at once, each with its
// own spare; the config voter on a dead node waits for a free candidate.
#[test]
fn repairs_of_different_groups_are_planned_together() {
    let m = map(8);
    let picks = plan_repairs(&m, &health(&m, &[3, 5]), &none());
    assert_eq!(picks, vec![repair(1, 3, 7), repair(2, 5, 8)]);
}

// At most one task per group: a group with a task gets no second one, and a spare that is
// already some task's replacement is not picked again.
#[test]
fn one_task_per_group_and_per_replacement() {
    let mut m = map(8);
    m.tasks.push(task(1, GroupId(1), 3, 7));
    let picks = plan_repairs(&m, &health(&m, &[2, 3, 5]), &none());
    assert_eq!(picks, vec![repair(2, 5, 8)]);
}

// A node a group's leader saw replicating is not planned for repair while vetoed (the hold-off
// after a `replica_alive` refusal); once the veto is gone it is.
#[test]
fn vetoed_node_is_not_repaired() {
    let m = map(7);
    let h = health(&m, &[5]);
    assert!(plan_repairs(&m, &h, &BTreeSet::from([5])).is_empty());
    assert_eq!(plan_repairs(&m, &h, &none()), vec![repair(2, 5, 7)]);
}

// Nothing is repaired without an alive spare: a suspect node is neither replaced nor a
// replacement.
#[test]
fn suspects_are_neither_replaced_nor_replacements() {
    let m = map(7);
    let mut h = health(&m, &[]);
    h.insert(5, Health::Suspect);
    assert!(plan_repairs(&m, &h, &none()).is_empty());
    h.insert(5, Health::Dead);
    h.insert(7, Health::Suspect);
    assert!(plan_repairs(&m, &h, &none()).is_empty());
}

// A dead config voter (a node in no data group here) is replaced by a spare that is no voter.
#[test]
fn dead_config_voter_is_replaced_by_a_spare() {
    let mut m = map(8);
    // Make node 7 (a spare) a config voter in place of node 3.
    m.config_voters = m
        .config_voters
        .iter()
        .copied()
        .filter(|v| *v != 3)
        .collect();
    m.config_voters.insert(7);
    let picks = plan_repairs(&m, &health(&m, &[7]), &none());
    assert_eq!(picks, vec![repair(0, 7, 8)]);
}

// A removed config voter's seat goes to any alive active non-voter when no spare is free; a
// merely dead voter's seat does not.
#[test]
fn removed_config_voter_is_replaced_by_any_alive_non_voter() {
    let mut m = map(6);
    let voter = *m.config_voters.iter().next().expect("a config voter");
    let h = health(&m, &[voter]);
    assert!(plan_repairs(&m, &h, &none())
        .iter()
        .all(|r| r.group != CONFIG_GROUP));
    if let Some(n) = m.nodes.get_mut(&voter) {
        n.state = NodeLifecycle::Removed;
    }
    let picks = plan_repairs(&m, &h, &none());
    let config: Vec<&Repair> = picks.iter().filter(|r| r.group == CONFIG_GROUP).collect();
    assert_eq!(config.len(), 1, "{picks:?}");
    assert!(!m.config_voters.contains(&config[0].replacement));
}

// A group's task blocks only that group: the config group with a task keeps its dead voter,
// the data groups are still repaired.
#[test]
fn a_config_task_does_not_block_data_groups() {
    let mut m = map(7);
    m.tasks.push(task(1, CONFIG_GROUP, 1, 7));
    let picks = plan_repairs(&m, &health(&m, &[1]), &none());
    // Node 7 is taken by the config task; no other spare is free.
    assert!(picks.is_empty());
    let mut m = map(8);
    m.tasks.push(task(1, CONFIG_GROUP, 1, 7));
    assert_eq!(
        plan_repairs(&m, &health(&m, &[1]), &none()),
        vec![repair(1, 1, 8)]
    );
}

/// `m` with view change `change` recorded as task 1 at step `next` (the planner's steps), with
/// `batch` in flight.
fn with_change(
    mut m: ClusterMap,
    change: ViewChange,
    next: usize,
    batch: Option<MoveBatch>,
) -> ClusterMap {
    let plan = plan(&m, &change).expect("a valid change");
    let mut v = ViewChangeTask::planned(change, plan, None);
    v.next = next;
    v.batch = batch;
    m.tasks.push(Task {
        id: 1,
        kind: TaskKind::ViewChange(Box::new(v)),
        step: TaskStep::Running,
        started_ms: 1_000_000,
        leader_term: 1,
    });
    m.next_task_id = 2;
    m
}

// 8 nodes (groups 1-3 and 4-6, spares 7 and 8), node 6 being removed (spare 7 takes its place
// in group 2): a dead replica of group 1 is repaired by spare 8 during the change; group 2, the
// change's own, is not repaired, and spare 7, which the change needs, replaces nobody.
#[test]
fn a_change_keeps_its_groups_and_nodes_and_others_are_repaired() {
    let m = with_change(map(8), ViewChange::RemoveNode { node: 6 }, 0, None);
    assert_eq!(
        plan_repairs(&m, &health(&m, &[2]), &none()),
        vec![repair(1, 2, 8)]
    );
    assert!(plan_repairs(&m, &health(&m, &[5]), &none()).is_empty());
    // With spare 8 dead too, spare 7 (named by the change) is not taken.
    assert!(plan_repairs(&m, &health(&m, &[2, 8]), &none()).is_empty());
    // Node 6 itself, even dead, is the change's to remove.
    assert!(plan_repairs(&m, &health(&m, &[6]), &none()).is_empty());
}

// 8 nodes plus a spare 10 (made up beside the change that adds node 9 and forms group 3 of
// {7, 8, 9}): while a batch moves slots from group 1 to group 3, group 1's dead replica waits
// for the batch boundary (no batch in flight), while group 2, whose move is a later step, is
// repaired at once.
#[test]
fn a_batch_holds_its_groups_until_its_boundary() {
    let planned = with_change(
        map(8),
        ViewChange::AddNode {
            addr: "127.0.0.9:7000".into(),
        },
        0,
        None,
    );
    let mut task = planned.tasks[0].clone();
    let TaskKind::ViewChange(v) = &mut task.kind else {
        panic!("no change recorded");
    };
    let first_move = v
        .steps
        .iter()
        .position(|s| matches!(s, Step::MoveSlots { .. }))
        .expect("the add moves slots");
    let Step::MoveSlots { from, to, .. } = v.steps[first_move].clone() else {
        unreachable!()
    };
    assert_eq!((from, to), (GroupId(1), GroupId(3)), "{:?}", v.steps);
    v.next = first_move;
    v.batch = Some(MoveBatch {
        from,
        to,
        slots: vec![(4000, 4095)],
        flipped: false,
    });
    // The map as the change's earlier steps left it (node 9 added, group 3 of {7, 8, 9}
    // created), plus a spare 10 made up for the test.
    let mut m = map(8);
    for id in [9u64, 10] {
        m.nodes.insert(
            id,
            kvorum_router::NodeInfo {
                addr: format!("127.0.0.{id}:7000"),
                state: NodeLifecycle::Active,
                incarnation: None,
                replaced: false,
                drain_until_ms: None,
            },
        );
    }
    m.groups.insert(
        GroupId(3),
        kvorum_router::GroupInfo {
            members: BTreeSet::from([7, 8, 9]),
        },
    );
    m.tasks.push(task);
    m.next_task_id = 2;
    // (Node 2 is a config voter too: its config seat, which the change does not hold, is.)
    assert_eq!(
        plan_repairs(&m, &health(&m, &[2]), &none()),
        vec![repair(0, 2, 10)]
    );
    assert!(plan_repairs(&m, &health(&m, &[8]), &none()).is_empty());
    assert_eq!(
        plan_repairs(&m, &health(&m, &[5]), &none()),
        vec![repair(2, 5, 10)]
    );
    // At the batch boundary both of its groups may be repaired.
    if let TaskKind::ViewChange(v) = &mut m.tasks[0].kind {
        v.batch = None;
    }
    assert_eq!(
        plan_repairs(&m, &health(&m, &[2]), &none()),
        vec![repair(1, 2, 10)]
    );
    assert_eq!(
        plan_repairs(&m, &health(&m, &[8]), &none()),
        vec![repair(3, 8, 10)]
    );
    // Node 9, the node the change adds, is the change's.
    assert!(plan_repairs(&m, &health(&m, &[9]), &none()).is_empty());
}

// A change that still has config steps holds the config group: its dead voter waits.
#[test]
fn a_change_with_config_steps_holds_the_config_group() {
    let m = map(8);
    let voter = *m.config_voters.iter().next().expect("a config voter");
    let m = with_change(m, ViewChange::RemoveNode { node: voter }, 0, None);
    let Some(TaskKind::ViewChange(v)) = m.tasks.first().map(|t| &t.kind) else {
        panic!("no change recorded");
    };
    assert!(
        v.steps
            .iter()
            .any(|s| matches!(s, Step::SetConfigVoters { .. })),
        "{:?}",
        v.steps
    );
    let other = *m.config_voters.iter().nth(1).expect("a second voter");
    assert!(plan_repairs(&m, &health(&m, &[other]), &none())
        .iter()
        .all(|r| r.group != CONFIG_GROUP));
}

// ---------------------------------------------------------------------------------------------
// The reference and the property test.
// ---------------------------------------------------------------------------------------------

/// The rules of `repair.rs`, written as plainly as possible.
fn reference(
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    vetoed: &BTreeSet<NodeId>,
) -> Vec<Repair> {
    let active = |n: NodeId| {
        map.nodes
            .get(&n)
            .is_some_and(|i| i.state == NodeLifecycle::Active)
    };
    let alive = |n: NodeId| health.get(&n) == Some(&Health::Alive);
    let needs = |n: NodeId| {
        let broken = !active(n) || health.get(&n) == Some(&Health::Dead);
        broken && !(active(n) && vetoed.contains(&n))
    };
    let busy = |g: GroupId| map.tasks.iter().any(|t| t.kind.group() == Some(g));
    let mut taken: Vec<NodeId> = Vec::new();
    for t in &map.tasks {
        if let TaskKind::ReplaceReplica { replacement, .. } = &t.kind {
            taken.push(*replacement);
        }
    }
    let mut in_group: Vec<NodeId> = Vec::new();
    for g in map.groups.values() {
        in_group.extend(g.members.iter().copied());
    }
    let mut alive_spares: Vec<NodeId> = Vec::new();
    for id in map.nodes.keys() {
        if active(*id) && !in_group.contains(id) && alive(*id) {
            alive_spares.push(*id);
        }
    }
    let mut out = Vec::new();
    for (gid, g) in &map.groups {
        if busy(*gid) {
            continue;
        }
        let mut dead = None;
        for m in &g.members {
            if needs(*m) {
                dead = Some(*m);
                break;
            }
        }
        let Some(dead) = dead else { continue };
        for s in &alive_spares {
            if !taken.contains(s) {
                taken.push(*s);
                out.push(Repair {
                    group: *gid,
                    dead,
                    replacement: *s,
                });
                break;
            }
        }
    }
    if !busy(CONFIG_GROUP) {
        for v in &map.config_voters {
            if !needs(*v) {
                continue;
            }
            let mut candidates: Vec<NodeId> = Vec::new();
            for s in &alive_spares {
                if !taken.contains(s) && !map.config_voters.contains(s) {
                    candidates.push(*s);
                }
            }
            if !active(*v) {
                for id in map.nodes.keys() {
                    if active(*id)
                        && alive(*id)
                        && !taken.contains(id)
                        && !map.config_voters.contains(id)
                    {
                        candidates.push(*id);
                    }
                }
            }
            if let Some(c) = candidates.first() {
                out.push(Repair {
                    group: CONFIG_GROUP,
                    dead: *v,
                    replacement: *c,
                });
                break;
            }
        }
    }
    out
}

/// The rules' invariants, each checked on its own: one repair per group and none for a group
/// with a task, distinct replacements that no task uses, alive active replacements that are not
/// members already, a replaced node that needs it and is not vetoed, spares for data groups.
fn check_invariants(
    map: &ClusterMap,
    health: &BTreeMap<NodeId, Health>,
    vetoed: &BTreeSet<NodeId>,
    picks: &[Repair],
) -> Result<(), String> {
    let mut groups = BTreeSet::new();
    let mut replacements = BTreeSet::new();
    let spares = map.spares();
    for r in picks {
        if !groups.insert(r.group) {
            return Err(format!("two repairs of group {}", r.group));
        }
        if map.tasks.iter().any(|t| t.kind.group() == Some(r.group)) {
            return Err(format!("group {} has a task already", r.group));
        }
        if !replacements.insert(r.replacement) {
            return Err(format!("node {} replaces twice", r.replacement));
        }
        if map.tasks.iter().any(|t| {
            matches!(&t.kind, TaskKind::ReplaceReplica { replacement, .. } if *replacement == r.replacement)
        }) {
            return Err(format!("node {} is a task's replacement", r.replacement));
        }
        if !map.is_active(r.replacement) || health.get(&r.replacement) != Some(&Health::Alive) {
            return Err(format!("replacement {} is not alive", r.replacement));
        }
        let members = if r.group == CONFIG_GROUP {
            Some(&map.config_voters)
        } else {
            map.members_of(r.group)
        };
        let members = members.ok_or(format!("no group {}", r.group))?;
        if !members.contains(&r.dead) || members.contains(&r.replacement) {
            return Err(format!("{r:?} does not fit members {members:?}"));
        }
        let dead = !map.is_active(r.dead) || health.get(&r.dead) == Some(&Health::Dead);
        if !dead || (map.is_active(r.dead) && vetoed.contains(&r.dead)) {
            return Err(format!("node {} needs no repair", r.dead));
        }
        if r.group != CONFIG_GROUP && !spares.contains(&r.replacement) {
            return Err(format!("data replacement {} is no spare", r.replacement));
        }
    }
    Ok(())
}

/// A random situation: a map of 3 to 12 nodes with some removed, random health, vetoes and
/// tasks.
fn situation() -> impl Strategy<Value = (ClusterMap, BTreeMap<NodeId, Health>, BTreeSet<NodeId>)> {
    (3usize..=12).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec(0u8..8, n),
            proptest::collection::vec(0u8..4, n),
            proptest::collection::vec(0usize..=2 * n, 5),
        )
            .prop_map(|(n, states, vetoes, tasks)| {
                let mut m = map(n);
                let mut h = BTreeMap::new();
                let mut v = BTreeSet::new();
                for (i, s) in states.iter().enumerate() {
                    let id = i as NodeId + 1;
                    match s {
                        0 => {
                            if let Some(info) = m.nodes.get_mut(&id) {
                                info.state = NodeLifecycle::Removed;
                            }
                        }
                        1 | 2 => {
                            h.insert(id, Health::Dead);
                        }
                        3 => {
                            h.insert(id, Health::Suspect);
                        }
                        _ => {
                            h.insert(id, Health::Alive);
                        }
                    }
                    if vetoes[i] == 0 {
                        v.insert(id);
                    }
                }
                let groups: Vec<GroupId> = std::iter::once(CONFIG_GROUP)
                    .chain(m.groups.keys().copied())
                    .collect();
                for (g, pick) in groups.iter().zip(&tasks) {
                    if (1..=n).contains(pick) {
                        let id = m.next_task_id;
                        m.tasks.push(task(id, *g, 0, *pick as NodeId));
                        m.next_task_id += 1;
                    }
                }
                (m, h, v)
            })
    })
}

/// Proptest configuration with an explicit seed, printed so that a failure can be replayed.
fn config(cases: u32) -> ProptestConfig {
    common::seeded_config(cases, "repair")
}

proptest! {
    #![proptest_config(config(2000))]

    // On any map, health, vetoes and tasks: the choice is the reference's, and keeps every rule.
    #[test]
    fn plan_repairs_matches_the_reference((m, h, v) in situation()) {
        let picks = plan_repairs(&m, &h, &v);
        prop_assert_eq!(&picks, &reference(&m, &h, &v));
        if let Err(e) = check_invariants(&m, &h, &v, &picks) {
            return Err(TestCaseError::fail(e));
        }
    }
}
