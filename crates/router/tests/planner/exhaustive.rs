//! Exhaustive and property tests against the references.

use super::*;

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
