//! Lookups on a map: keys spread by the slot hash, and the `ClusterMap` helpers (`group_of`,
//! `route_key`, `members_of`, spares, `slot_ranges`).

use super::*;

// ---------------------------------------------------------------------------------------------
// Keys: hash and split together.
// ---------------------------------------------------------------------------------------------

/// Share of 10,000 keys `key-{i}` per group of `map`.
fn key_shares(map: &ClusterMap) -> BTreeMap<GroupId, f64> {
    const KEYS: usize = 10_000;
    let mut counts: BTreeMap<GroupId, usize> = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("key-{i}");
        let (slot, group) = map
            .route_key(key.as_bytes())
            .expect("every slot has an owner");
        // The route agrees with the hash and with the reference table.
        assert_eq!(slot, slot_of(key.as_bytes()));
        assert_eq!(
            group,
            reference_owners(SLOT_COUNT as usize, map.groups.len())[slot.0 as usize]
        );
        *counts.entry(group).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(g, c)| (g, c as f64 / KEYS as f64))
        .collect()
}

// With 6 nodes and K=3, each of the 2 groups gets 1/2 of 10,000 keys, within ±5% of 1/2.
#[test]
fn keys_spread_over_two_groups() {
    let shares = key_shares(&initial(6, 3));
    assert_eq!(shares.len(), 2, "{shares:?}");
    for (g, share) in &shares {
        assert!((share - 0.5).abs() <= 0.05 * 0.5, "group {g} share {share}");
    }
}

// With 7 nodes and K=2, each of the 3 groups gets 1/3 of 10,000 keys, within ±5% of 1/3.
#[test]
fn keys_spread_over_three_groups() {
    let shares = key_shares(&initial(7, 2));
    assert_eq!(shares.len(), 3, "{shares:?}");
    for (g, share) in &shares {
        let ideal = 1.0 / 3.0;
        assert!(
            (share - ideal).abs() <= 0.05 * ideal,
            "group {g} share {share}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ClusterMap helpers
// ---------------------------------------------------------------------------------------------

// group_of answers for slots in range and None past the end.
#[test]
fn group_of_is_none_out_of_range() {
    let map = initial(6, 3);
    assert_eq!(map.group_of(Slot(0)), Some(GroupId(1)));
    assert_eq!(map.group_of(Slot(2047)), Some(GroupId(1)));
    assert_eq!(map.group_of(Slot(2048)), Some(GroupId(2)));
    assert_eq!(map.group_of(Slot(SLOT_COUNT - 1)), Some(GroupId(2)));
    assert_eq!(map.group_of(Slot(SLOT_COUNT)), None);
    assert_eq!(map.group_of(Slot(u16::MAX)), None);
}

// route_key uses the golden slot hash: "a" → 3615, "key-1" → 2553, "user:42" → 1194.
#[test]
fn route_key_uses_the_slot_hash() {
    let map = initial(6, 3);
    assert_eq!(map.route_key(b"a"), Some((Slot(3615), GroupId(2))));
    assert_eq!(map.route_key(b"key-1"), Some((Slot(2553), GroupId(2))));
    assert_eq!(map.route_key(b"user:42"), Some((Slot(1194), GroupId(1))));
}

// A map with a short slot table has no route for keys past its end (it is invalid anyway).
#[test]
fn route_key_is_none_for_a_slot_without_owner() {
    let mut map = initial(6, 3);
    map.slots.truncate(2000);
    assert_eq!(map.route_key(b"a"), None);
    assert_eq!(map.route_key(b"user:42"), Some((Slot(1194), GroupId(1))));
}

// members_of names the config voters for group 0, a data group's members, None otherwise.
#[test]
fn members_of_config_data_and_unknown_groups() {
    let map = initial(7, 2);
    assert_eq!(
        map.members_of(CONFIG_GROUP),
        Some(&BTreeSet::from([1, 2, 3]))
    );
    assert_eq!(map.members_of(GroupId(3)), Some(&BTreeSet::from([5, 6])));
    assert_eq!(map.members_of(GroupId(4)), None);
}

// Spares are the active nodes in no group: a removed node is not a spare.
#[test]
fn removed_node_is_not_a_spare() {
    let mut map = initial(9, 2);
    assert_eq!(map.spares(), vec![9]);
    map.nodes.get_mut(&9).expect("node 9").state = NodeLifecycle::Removed;
    assert!(map.spares().is_empty());
    assert!(!map.is_active(9));
    assert!(!map.is_active(10));
    assert_eq!(map.addr(9), Some(addr(9).as_str()));
    assert_eq!(map.addr(10), None);
}

// A node taken out of its group becomes a spare; one added to a group stops being one.
#[test]
fn spares_follow_membership() {
    let mut map = initial(7, 2);
    let g1 = &mut map.groups.get_mut(&GroupId(1)).expect("group 1").members;
    g1.remove(&2);
    g1.insert(7);
    assert_eq!(map.spares(), vec![2]);
    assert_eq!(map.group_of_node(7), Some(GroupId(1)));
    map.validate()
        .expect("swapping a member for a spare keeps the map valid");
}

// An unknown group owns no slots and no ranges.
#[test]
fn unknown_group_owns_nothing() {
    let map = initial(6, 3);
    assert_eq!(map.slot_count_of(GroupId(3)), 0);
    assert!(map.slot_ranges(GroupId(3)).is_empty());
    assert_eq!(map.slot_count_of(CONFIG_GROUP), 0);
}

// slot_ranges splits a group's slots into maximal ranges at the table's edges and gaps.
#[test]
fn slot_ranges_of_a_fragmented_table() {
    let mut map = initial(6, 3);
    map.slots[0] = GroupId(2);
    map.slots[10] = GroupId(2);
    map.slots[11] = GroupId(2);
    map.slots[SLOT_COUNT as usize - 1] = GroupId(1);
    assert_eq!(
        map.slot_ranges(GroupId(1)),
        vec![(1, 9), (12, 2047), (4095, 4095)]
    );
    assert_eq!(
        map.slot_ranges(GroupId(2)),
        vec![(0, 0), (10, 11), (2048, 4094)]
    );
    // Group 1 lost slots 0, 10 and 11 and gained 4095; group 2 the reverse.
    assert_eq!(map.slot_count_of(GroupId(1)), 2048 - 3 + 1);
    assert_eq!(map.slot_count_of(GroupId(2)), 2048 + 3 - 1);
}

proptest! {
    #![proptest_config(config())]

    // For any slot table, each group's ranges are ordered, maximal (never touching), hold only
    // its slots, and cover exactly slot_count_of slots.
    #[test]
    fn slot_ranges_cover_exactly_the_groups_slots(
        owners in proptest::collection::vec(1u64..=4, SLOT_COUNT as usize),
    ) {
        let mut map = initial(4, 1);
        map.slots = owners.iter().map(|g| GroupId(*g)).collect();
        for g in 1..=5u64 {
            let g = GroupId(g);
            let ranges = map.slot_ranges(g);
            let mut covered = 0usize;
            let mut prev_end: Option<u16> = None;
            for (start, end) in &ranges {
                prop_assert!(start <= end, "{g}: {ranges:?}");
                if let Some(p) = prev_end {
                    prop_assert!(*start > p + 1, "{g}: ranges touch or overlap: {ranges:?}");
                }
                for s in *start..=*end {
                    prop_assert_eq!(map.slots[s as usize], g);
                }
                covered += (end - start + 1) as usize;
                prev_end = Some(*end);
            }
            let brute = owners.iter().filter(|o| **o == g.0).count();
            prop_assert_eq!(covered, brute, "{}", g);
            prop_assert_eq!(map.slot_count_of(g), brute, "{}", g);
        }
    }
}

// A node removed by a repair is released (may wipe itself and rejoin) only once no data group
// and no config seat lists it; a node removed by an operator, or an active one, never is.
#[test]
fn released_by_repair_needs_the_replaced_mark_and_no_seat() {
    let mut map = initial(4, 3);
    let removed = |map: &mut ClusterMap, replaced: bool| {
        let n = map.nodes.get_mut(&3).expect("node 3");
        n.state = NodeLifecycle::Removed;
        n.replaced = replaced;
    };
    // Active: not released.
    assert!(!map.released_by_repair(3));
    // Replaced in group 1, still a config voter: not yet.
    let g1 = map.groups.get_mut(&GroupId(1)).expect("group 1");
    g1.members.remove(&3);
    g1.members.insert(4);
    removed(&mut map, true);
    assert!(map.config_voters.contains(&3));
    assert!(!map.released_by_repair(3));
    // Its config seat replaced too: released.
    map.config_voters.remove(&3);
    map.config_voters.insert(4);
    assert!(map.released_by_repair(3));
    // The same map, but removed by an operator: never released.
    removed(&mut map, false);
    assert!(!map.released_by_repair(3));
}
