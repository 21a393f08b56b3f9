//! Table tests: the seed scenarios.

use super::*;

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
