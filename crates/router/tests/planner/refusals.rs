//! Table tests: refusals, each with its stable code.

use super::*;

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
