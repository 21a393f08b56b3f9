//! The reference itself and `ClusterMap::initial`: every small cluster, random views, the issue's
//! layouts.

use super::*;

// ---------------------------------------------------------------------------------------------
// The reference itself.
// ---------------------------------------------------------------------------------------------

// The reference deals 7 nodes with K=2 into {1,2} {3,4} {5,6} with spare 7, and gives the one
// extra slot of 4096 = 3 * 1365 + 1 to group 1.
#[test]
fn reference_is_what_we_mean() {
    let (groups, spares) = reference_groups(7, 2);
    let expected: BTreeMap<GroupId, BTreeSet<NodeId>> = [
        (GroupId(1), BTreeSet::from([1, 2])),
        (GroupId(2), BTreeSet::from([3, 4])),
        (GroupId(3), BTreeSet::from([5, 6])),
    ]
    .into();
    assert_eq!(groups, expected);
    assert_eq!(spares, vec![7]);
    let owners = reference_owners(4096, 3);
    assert_eq!(owners.iter().filter(|g| g.0 == 1).count(), 1366);
    assert_eq!(owners.iter().filter(|g| g.0 == 2).count(), 1365);
    assert_eq!(owners[1365], GroupId(1));
    assert_eq!(owners[1366], GroupId(2));
}

// ---------------------------------------------------------------------------------------------
// ClusterMap::initial
// ---------------------------------------------------------------------------------------------

// Every (N, K) with N in 1..=40 and K in 1..=N gives a map with all the initial-map properties.
#[test]
fn initial_map_properties_hold_for_every_small_cluster() {
    for n in 1..=40 {
        for k in 1..=n {
            check_initial(&view(n), k);
        }
    }
}

/// Random addresses and a K valid for them.
fn view_and_k() -> impl Strategy<Value = (Vec<String>, usize)> {
    proptest::collection::vec("[a-z0-9.-]{1,15}:[0-9]{1,5}", 1..=40).prop_flat_map(|v| {
        let n = v.len();
        (Just(v), 1..=n)
    })
}

proptest! {
    #![proptest_config(config())]

    // With arbitrary addresses, the initial map has every property the reference demands.
    #[test]
    fn initial_map_matches_reference((addrs, k) in view_and_k()) {
        check_initial(&addrs, k);
    }

    // A K of 0 or above N is refused rather than producing a map.
    #[test]
    fn initial_refuses_k_out_of_range(n in 1usize..=40, over in 1usize..=10) {
        prop_assert!(ClusterMap::initial(&view(n), 0).is_err());
        prop_assert!(ClusterMap::initial(&view(n), n + over).is_err());
    }

    // even_split gives the reference table for any slot count and number of parts.
    #[test]
    fn even_split_matches_reference(slot_count in 0u16..=SLOT_COUNT, parts in 1usize..=200) {
        let split = even_split(slot_count, parts);
        prop_assert_eq!(split, reference_owners(slot_count as usize, parts));
    }

    // The initial map survives a JSON round trip unchanged.
    #[test]
    fn initial_map_json_round_trip((addrs, k) in view_and_k()) {
        let map = ClusterMap::initial(&addrs, k).expect("a valid (N, K) gives a map");
        let json = serde_json::to_string(&map).expect("a map serializes");
        let back: ClusterMap = serde_json::from_str(&json).expect("a map deserializes");
        prop_assert_eq!(back, map);
    }
}

// An empty view is refused.
#[test]
fn initial_refuses_an_empty_view() {
    assert!(ClusterMap::initial(&[], 1).is_err());
    assert!(ClusterMap::initial(&[], 0).is_err());
}

// Issue case: 6 nodes with K=3 make 2 groups of 2048 slots each and no spare.
#[test]
fn six_nodes_k3_make_two_groups_of_2048_slots() {
    let map = initial(6, 3);
    assert_eq!(map.groups.len(), 2);
    assert_eq!(map.members_of(GroupId(1)), Some(&BTreeSet::from([1, 2, 3])));
    assert_eq!(map.members_of(GroupId(2)), Some(&BTreeSet::from([4, 5, 6])));
    assert_eq!(map.slot_count_of(GroupId(1)), 2048);
    assert_eq!(map.slot_count_of(GroupId(2)), 2048);
    assert_eq!(map.slot_ranges(GroupId(1)), vec![(0, 2047)]);
    assert_eq!(map.slot_ranges(GroupId(2)), vec![(2048, 4095)]);
    assert!(map.spares().is_empty());
    assert_eq!(map.config_voters, BTreeSet::from([1, 2, 3]));
}

// Issue case: 7 nodes with K=2 make 3 groups and leave node 7 as the one spare.
#[test]
fn seven_nodes_k2_make_three_groups_and_spare_node_7() {
    let map = initial(7, 2);
    assert_eq!(map.groups.len(), 3);
    assert_eq!(map.members_of(GroupId(1)), Some(&BTreeSet::from([1, 2])));
    assert_eq!(map.members_of(GroupId(2)), Some(&BTreeSet::from([3, 4])));
    assert_eq!(map.members_of(GroupId(3)), Some(&BTreeSet::from([5, 6])));
    assert_eq!(map.spares(), vec![7]);
    assert_eq!(map.group_of_node(7), None);
    assert_eq!(map.slot_ranges(GroupId(1)), vec![(0, 1365)]);
    assert_eq!(map.slot_ranges(GroupId(2)), vec![(1366, 2730)]);
    assert_eq!(map.slot_ranges(GroupId(3)), vec![(2731, 4095)]);
    assert_eq!(map.config_voters, BTreeSet::from([1, 2, 3]));
}

// Issue case: 5 nodes with K=2 make 2 groups of 2048 slots and leave node 5 as the spare.
#[test]
fn five_nodes_k2_make_two_groups_and_one_spare() {
    let map = initial(5, 2);
    assert_eq!(map.groups.len(), 2);
    assert_eq!(map.members_of(GroupId(1)), Some(&BTreeSet::from([1, 2])));
    assert_eq!(map.members_of(GroupId(2)), Some(&BTreeSet::from([3, 4])));
    assert_eq!(map.spares(), vec![5]);
    assert_eq!(map.slot_count_of(GroupId(1)), 2048);
    assert_eq!(map.slot_count_of(GroupId(2)), 2048);
}

// One node with K=1 is a whole cluster: one group owning every slot, one config voter.
#[test]
fn one_node_owns_every_slot() {
    let map = initial(1, 1);
    assert_eq!(map.slot_ranges(GroupId(1)), vec![(0, SLOT_COUNT - 1)]);
    assert_eq!(map.config_voters, BTreeSet::from([1]));
    assert!(map.spares().is_empty());
}

// Config voters stop at MAX_CONFIG_VOTERS however large the cluster.
#[test]
fn config_voters_are_capped() {
    assert_eq!(MAX_CONFIG_VOTERS, 3);
    assert_eq!(initial(2, 1).config_voters, BTreeSet::from([1, 2]));
    assert_eq!(initial(40, 4).config_voters, BTreeSet::from([1, 2, 3]));
}
