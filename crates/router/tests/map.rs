//! Specification tests of the cluster map and the routing cache.
//!
//! The initial map is checked against a deliberately dumb reference written here (slots dealt
//! round robin to count each group's share, then laid out in group order; nodes dealt to groups
//! one by one), never against `even_split` itself. Property tests print their seed; replay a
//! failure with `PROPTEST_RNG_SEED=<seed> cargo test -p kvorum-router --test map`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kvorum_router::map::{even_split, HASH_NAME, MAX_CONFIG_VOTERS};
use kvorum_router::{
    slot_of, ClusterMap, GroupId, GroupInfo, NodeId, NodeLifecycle, RoutingCache, Slot, Task,
    TaskKind, TaskStep, CONFIG_GROUP, SLOT_COUNT,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers and the reference implementation.
// ---------------------------------------------------------------------------------------------

/// The address of node `id` in these tests.
fn addr(id: NodeId) -> String {
    format!("10.0.0.{id}:7000")
}

/// A view of `n` nodes with ids 1..=n.
fn view(n: usize) -> Vec<String> {
    (1..=n as NodeId).map(addr).collect()
}

/// The initial map of `n` nodes with `k` replicas per group.
fn initial(n: usize, k: usize) -> ClusterMap {
    ClusterMap::initial(&view(n), k).expect("a valid (N, K) gives a map")
}

/// Proptest configuration with an explicit seed, printed so that a failure can be replayed.
fn config() -> ProptestConfig {
    common::seeded_config(ProptestConfig::default().cases, "map")
}

/// Reference slot table: `parts` groups (ids from 1) share `slot_count` slots. Each group's
/// share is found by dealing the slots one at a time round robin; the shares are then laid out
/// as consecutive runs in group order.
fn reference_owners(slot_count: usize, parts: usize) -> Vec<GroupId> {
    let mut share = vec![0usize; parts];
    let mut next = 0;
    for _ in 0..slot_count {
        share[next] += 1;
        next = (next + 1) % parts;
    }
    let mut owners = Vec::new();
    for (i, n) in share.iter().enumerate() {
        for _ in 0..*n {
            owners.push(GroupId(i as u64 + 1));
        }
    }
    owners
}

/// Reference membership: nodes 1..=n are dealt in order to groups 1, 2, ... until a group has
/// `k` members; nodes left over once the last full group is formed are spares.
fn reference_groups(n: usize, k: usize) -> (BTreeMap<GroupId, BTreeSet<NodeId>>, Vec<NodeId>) {
    let partitions = n / k;
    let mut groups: BTreeMap<GroupId, BTreeSet<NodeId>> = BTreeMap::new();
    let mut spares = Vec::new();
    let mut current = 1u64;
    for node in 1..=n as NodeId {
        if current as usize > partitions {
            spares.push(node);
            continue;
        }
        let members = groups.entry(GroupId(current)).or_default();
        members.insert(node);
        if members.len() == k {
            current += 1;
        }
    }
    (groups, spares)
}

/// Checks every property the initial map of `addrs` with `k` replicas must have.
fn check_initial(addrs: &[String], k: usize) {
    let n = addrs.len();
    let ctx = format!("N={n} K={k}");
    let map = ClusterMap::initial(addrs, k).expect("a valid (N, K) gives a map");
    let partitions = n / k;

    // Header fields.
    assert_eq!(map.epoch, 1, "{ctx}");
    assert_eq!(map.k, k, "{ctx}");
    assert_eq!(map.slot_count, SLOT_COUNT, "{ctx}");
    assert_eq!(map.hash, HASH_NAME, "{ctx}");
    assert!(map.tasks.is_empty(), "{ctx}");
    assert_eq!(map.next_task_id, 1, "{ctx}");

    // Nodes: ids 1..=N in view order, all active.
    assert_eq!(map.nodes.len(), n, "{ctx}");
    for (i, a) in addrs.iter().enumerate() {
        let id = i as NodeId + 1;
        let node = map.nodes.get(&id).expect("node ids are positions from 1");
        assert_eq!(&node.addr, a, "{ctx} node {id}");
        assert_eq!(node.state, NodeLifecycle::Active, "{ctx} node {id}");
        assert_eq!(map.addr(id), Some(a.as_str()), "{ctx} node {id}");
        assert!(map.is_active(id), "{ctx} node {id}");
    }

    // Groups: floor(N/K) of exactly K members, ids 1..=P, disjoint, as the reference deals them.
    let (ref_groups, ref_spares) = reference_groups(n, k);
    assert_eq!(map.groups.len(), partitions, "{ctx}");
    let ids: Vec<u64> = map.groups.keys().map(|g| g.0).collect();
    assert_eq!(ids, (1..=partitions as u64).collect::<Vec<_>>(), "{ctx}");
    let mut times_in_a_group: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (gid, g) in &map.groups {
        assert_eq!(g.members.len(), k, "{ctx} group {gid}");
        for m in &g.members {
            assert!(map.nodes.contains_key(m), "{ctx} member {m} is a node");
            *times_in_a_group.entry(*m).or_default() += 1;
        }
        assert_eq!(map.members_of(*gid), Some(&g.members), "{ctx} group {gid}");
    }
    assert!(
        times_in_a_group.values().all(|c| *c == 1),
        "{ctx} groups overlap"
    );
    let ref_members: BTreeMap<GroupId, BTreeSet<NodeId>> = map
        .groups
        .iter()
        .map(|(id, g)| (*id, g.members.clone()))
        .collect();
    assert_eq!(ref_members, ref_groups, "{ctx}");

    // Spares: N - P*K of them, exactly the nodes in no group.
    let spares = map.spares();
    assert_eq!(spares.len(), n - partitions * k, "{ctx}");
    let in_no_group: Vec<NodeId> = map
        .nodes
        .keys()
        .copied()
        .filter(|id| !times_in_a_group.contains_key(id))
        .collect();
    assert_eq!(spares, in_no_group, "{ctx}");
    assert_eq!(spares, ref_spares, "{ctx}");
    for id in map.nodes.keys() {
        let expected = ref_groups
            .iter()
            .find(|(_, m)| m.contains(id))
            .map(|(g, _)| *g);
        assert_eq!(map.group_of_node(*id), expected, "{ctx} node {id}");
    }

    // Slots: every one owned by exactly one existing group (a Vec has one owner per slot).
    assert_eq!(map.slots.len(), SLOT_COUNT as usize, "{ctx}");
    let mut counts: BTreeMap<GroupId, usize> = BTreeMap::new();
    let mut first: BTreeMap<GroupId, usize> = BTreeMap::new();
    let mut last: BTreeMap<GroupId, usize> = BTreeMap::new();
    for (s, g) in map.slots.iter().enumerate() {
        assert!(map.groups.contains_key(g), "{ctx} slot {s} owner {g}");
        *counts.entry(*g).or_default() += 1;
        first.entry(*g).or_insert(s);
        last.insert(*g, s);
        assert_eq!(map.group_of(Slot(s as u16)), Some(*g), "{ctx} slot {s}");
    }
    // Every group owns slots, the counts differ by at most one and sum to SLOT_COUNT.
    assert_eq!(counts.len(), partitions, "{ctx} a group owns no slot");
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    assert!(max - min <= 1, "{ctx} counts {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), SLOT_COUNT as usize, "{ctx}");
    for (g, count) in &counts {
        assert_eq!(map.slot_count_of(*g), *count, "{ctx} group {g}");
        // Contiguous: the span from the first to the last slot holds only this group's slots.
        assert_eq!(last[g] - first[g] + 1, *count, "{ctx} group {g} is split");
        assert_eq!(
            map.slot_ranges(*g),
            vec![(first[g] as u16, last[g] as u16)],
            "{ctx} group {g}"
        );
    }
    assert_eq!(
        map.slots,
        reference_owners(SLOT_COUNT as usize, partitions),
        "{ctx}"
    );

    // Config voters: the first min(N, 3) nodes.
    let voters: BTreeSet<NodeId> = (1..=n.min(3) as NodeId).collect();
    assert_eq!(map.config_voters, voters, "{ctx}");
    assert_eq!(map.members_of(CONFIG_GROUP), Some(&voters), "{ctx}");

    map.validate().expect("the initial map is valid");

    // Deterministic: the same input gives the same map.
    assert_eq!(
        ClusterMap::initial(addrs, k).expect("a valid (N, K) gives a map"),
        map,
        "{ctx}"
    );
}

/// The first key `key-{i}` that `map` routes to `group`.
fn key_in(map: &ClusterMap, group: GroupId) -> Vec<u8> {
    (0..100_000)
        .map(|i| format!("key-{i}").into_bytes())
        .find(|k| map.route_key(k).map(|(_, g)| g) == Some(group))
        .expect("some key among the first 100,000 lands in every group")
}

/// `map` with `epoch` set.
fn at_epoch(map: &ClusterMap, epoch: u64) -> Arc<ClusterMap> {
    let mut m = map.clone();
    m.epoch = epoch;
    Arc::new(m)
}

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

// ---------------------------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------------------------

/// Asserts `map` is rejected with an error whose message contains `what`.
fn assert_rejected(map: &ClusterMap, what: &str) {
    match map.validate() {
        Ok(()) => panic!("validate accepted a broken map ({what}): {}", map.summary()),
        Err(e) => assert!(e.to_string().contains(what), "expected {what:?}, got {e}"),
    }
}

// A slot table shorter or longer than slot_count is rejected.
#[test]
fn validate_rejects_wrong_slot_vector_length() {
    let mut short = initial(7, 2);
    short.slots.pop();
    assert_rejected(&short, "slot owners");

    let mut long = initial(7, 2);
    long.slots.push(GroupId(1));
    assert_rejected(&long, "slot owners");

    let mut empty = initial(7, 2);
    empty.slots.clear();
    assert_rejected(&empty, "slot owners");

    let mut fewer_slots = initial(7, 2);
    fewer_slots.slot_count -= 1;
    assert_rejected(&fewer_slots, "slot owners");
}

// A slot owned by a group that is not in the map (the config group included) is rejected.
#[test]
fn validate_rejects_slot_naming_unknown_group() {
    let mut map = initial(7, 2);
    map.slots[100] = GroupId(9);
    assert_rejected(&map, "unknown group");

    let mut config = initial(7, 2);
    config.slots[0] = CONFIG_GROUP;
    assert_rejected(&config, "unknown group");

    // A group deleted while still owning slots.
    let mut dissolved = initial(7, 2);
    dissolved.groups.remove(&GroupId(3));
    assert_rejected(&dissolved, "unknown group");
}

// A node in two data groups is rejected.
#[test]
fn validate_rejects_node_in_two_groups() {
    let mut map = initial(7, 2);
    map.groups
        .get_mut(&GroupId(2))
        .expect("group 2")
        .members
        .insert(1);
    assert_rejected(&map, "two data groups");

    // Also when the shared node is a spare added to two groups.
    let mut spare = initial(7, 2);
    for g in [GroupId(1), GroupId(3)] {
        spare
            .groups
            .get_mut(&g)
            .expect("group exists")
            .members
            .insert(7);
    }
    assert_rejected(&spare, "two data groups");
}

// A group member that is not a node of the map is rejected.
#[test]
fn validate_rejects_unknown_member() {
    let mut map = initial(7, 2);
    map.groups
        .get_mut(&GroupId(1))
        .expect("group 1")
        .members
        .insert(99);
    assert_rejected(&map, "unknown member");
}

// A config voter that is not a node of the map is rejected.
#[test]
fn validate_rejects_unknown_config_voter() {
    let mut map = initial(7, 2);
    map.config_voters.insert(42);
    assert_rejected(&map, "config voter");
}

// A data group numbered 0 (the config group's id) is rejected.
#[test]
fn validate_rejects_reserved_group_id() {
    let mut map = initial(7, 2);
    map.groups.insert(
        CONFIG_GROUP,
        GroupInfo {
            members: BTreeSet::from([7]),
        },
    );
    assert_rejected(&map, "reserved");
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

// A map with a removed node and a task survives a JSON round trip unchanged.
#[test]
fn map_with_task_and_removed_node_json_round_trip() {
    let mut map = initial(7, 2);
    map.epoch = 12;
    map.nodes.get_mut(&2).expect("node 2").state = NodeLifecycle::Removed;
    map.tasks.push(Task {
        id: 4,
        kind: TaskKind::ReplaceReplica {
            group: GroupId(1),
            dead: 2,
            replacement: 7,
        },
        step: TaskStep::Swap,
        started_ms: 1_700_000_000_000,
        leader_term: 3,
    });
    map.next_task_id = 5;
    let json = serde_json::to_string_pretty(&map).expect("a map serializes");
    let back: ClusterMap = serde_json::from_str(&json).expect("a map deserializes");
    assert_eq!(back, map);
    // Serializing the result again gives the same text.
    assert_eq!(
        serde_json::to_string_pretty(&back).expect("a map serializes"),
        json
    );
}

// A task recorded by an older release (steps `promote`/`remove_dead`, no start time, no leader
// term) decodes: both old steps are the one swap step, start and term default to 0 (unknown).
#[test]
fn task_of_an_older_release_decodes() {
    for old in ["promote", "remove_dead"] {
        let json = format!(
            r#"{{"id":4,"kind":{{"kind":"replace_replica","group":1,"dead":2,"replacement":7}},"step":"{old}"}}"#
        );
        let task: Task = serde_json::from_str(&json).expect("an old task decodes");
        assert_eq!(task.step, TaskStep::Swap, "step {old}");
        assert_eq!((task.started_ms, task.leader_term), (0, 0), "step {old}");
        assert_eq!(task.kind.group(), Some(GroupId(1)));
    }
    assert_eq!(TaskStep::Swap.to_string(), "swap");
    assert_eq!(TaskStep::AddLearner.to_string(), "add_learner");
}

// ---------------------------------------------------------------------------------------------
// RoutingCache
// ---------------------------------------------------------------------------------------------

// A new cache has no map, epoch 0, no route, and needs a refresh.
#[test]
fn empty_cache_needs_refresh_and_has_no_route() {
    let cache = RoutingCache::new();
    assert!(cache.map().is_none());
    assert_eq!(cache.epoch(), 0);
    assert!(cache.needs_refresh());
    assert_eq!(cache.route(b"a"), None);
    assert!(cache.leaders().is_empty());
}

// update_map installs a first map, then only maps with a strictly newer epoch.
#[test]
fn update_map_accepts_only_newer_epochs() {
    let base = initial(6, 3);
    let mut cache = RoutingCache::new();
    assert!(cache.update_map(at_epoch(&base, 5)));
    assert_eq!(cache.epoch(), 5);
    assert!(!cache.update_map(at_epoch(&base, 5)), "same epoch");
    assert!(!cache.update_map(at_epoch(&base, 4)), "older epoch");
    assert_eq!(cache.epoch(), 5);
    assert!(cache.update_map(at_epoch(&base, 6)));
    assert_eq!(cache.epoch(), 6);
    assert_eq!(cache.map().map(|m| m.epoch), Some(6));
}

// A rejected older map leaves the cached map's content in place, not just its epoch.
#[test]
fn rejected_map_does_not_replace_content() {
    let mut cache = RoutingCache::new();
    let newer = at_epoch(&initial(6, 3), 3);
    assert!(cache.update_map(newer.clone()));
    assert!(!cache.update_map(at_epoch(&initial(7, 2), 2)));
    assert_eq!(cache.map(), Some(&newer));
}

/// One step of the cache model test.
#[derive(Debug, Clone)]
enum Op {
    /// Offer a map of this epoch.
    Install(u64),
    /// A peer reports this epoch.
    Saw(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..20).prop_map(Op::Install),
        (0u64..20).prop_map(Op::Saw)
    ]
}

proptest! {
    #![proptest_config(config())]

    // Against a model (cached epoch = max installed; seen = max of everything heard), the cache
    // never rolls back and needs_refresh is exactly "no map, or someone saw a newer epoch".
    #[test]
    fn cache_epoch_follows_model(ops in proptest::collection::vec(op(), 0..60)) {
        let base = initial(6, 3);
        let mut cache = RoutingCache::new();
        let mut cached: Option<u64> = None;
        let mut seen = 0u64;
        for op in &ops {
            match op {
                Op::Install(e) => {
                    let newer = match cached {
                        None => true,
                        Some(c) => *e > c,
                    };
                    prop_assert_eq!(cache.update_map(at_epoch(&base, *e)), newer, "{:?}", op);
                    if newer {
                        cached = Some(*e);
                    }
                    seen = seen.max(*e);
                }
                Op::Saw(e) => {
                    cache.saw_epoch(*e);
                    seen = seen.max(*e);
                }
            }
            prop_assert_eq!(cache.epoch(), cached.unwrap_or(0));
            let stale = match cached {
                None => true,
                Some(c) => seen > c,
            };
            prop_assert_eq!(cache.needs_refresh(), stale, "after {:?}", op);
        }
    }
}

// needs_refresh turns true when a peer reports a newer epoch and false once it is installed.
#[test]
fn needs_refresh_after_saw_epoch() {
    let base = initial(6, 3);
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&base, 3));
    assert!(!cache.needs_refresh());
    cache.saw_epoch(3);
    assert!(!cache.needs_refresh(), "same epoch is not newer");
    cache.saw_epoch(2);
    assert!(!cache.needs_refresh(), "older epoch is not newer");
    cache.saw_epoch(5);
    assert!(cache.needs_refresh());
    cache.saw_epoch(4);
    assert!(
        cache.needs_refresh(),
        "a lower report does not cancel a higher one"
    );
    cache.update_map(at_epoch(&base, 4));
    assert!(
        cache.needs_refresh(),
        "epoch 4 is still older than the reported 5"
    );
    cache.update_map(at_epoch(&base, 5));
    assert!(!cache.needs_refresh());
}

// A reported epoch before any map does not stop the first map from being installed.
#[test]
fn saw_epoch_before_any_map() {
    let mut cache = RoutingCache::new();
    cache.saw_epoch(7);
    assert!(cache.needs_refresh());
    assert!(cache.update_map(at_epoch(&initial(6, 3), 2)));
    assert!(
        cache.needs_refresh(),
        "the map is older than the reported epoch"
    );
    assert!(cache.update_map(at_epoch(&initial(6, 3), 7)));
    assert!(!cache.needs_refresh());
}

// set_leader records and clears hints.
#[test]
fn set_leader_records_and_clears() {
    let mut cache = RoutingCache::new();
    cache.set_leader(GroupId(1), Some(2));
    assert_eq!(cache.leader(GroupId(1)), Some(2));
    cache.set_leader(GroupId(1), Some(3));
    assert_eq!(cache.leader(GroupId(1)), Some(3));
    cache.set_leader(GroupId(1), None);
    assert_eq!(cache.leader(GroupId(1)), None);
    assert!(cache.leaders().is_empty());
}

// A new map drops hints naming a node that is no longer a member (or a group that is gone),
// keeps the others, and a rejected map drops nothing.
#[test]
fn update_map_drops_hints_of_non_members() {
    let v1 = initial(7, 2);
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&v1, 1));
    cache.set_leader(CONFIG_GROUP, Some(3));
    cache.set_leader(GroupId(1), Some(2));
    cache.set_leader(GroupId(2), Some(4));
    cache.set_leader(GroupId(3), Some(5));
    cache.set_leader(GroupId(9), Some(1));

    // An old map changes nothing, hints included.
    let mut stale = v1.clone();
    stale.groups.clear();
    assert!(!cache.update_map(at_epoch(&stale, 1)));
    assert_eq!(cache.leaders().len(), 5);

    // Epoch 2: node 7 replaces 2 in group 1 and 3 in the config group; group 3 is gone.
    let mut v2 = v1.clone();
    let g1 = &mut v2.groups.get_mut(&GroupId(1)).expect("group 1").members;
    g1.remove(&2);
    g1.insert(7);
    v2.config_voters.remove(&3);
    v2.config_voters.insert(7);
    v2.groups.remove(&GroupId(3));
    assert!(cache.update_map(at_epoch(&v2, 2)));

    let expected: BTreeMap<GroupId, NodeId> = [(GroupId(2), 4)].into();
    assert_eq!(cache.leaders(), &expected);
}

// A hint naming a node that is still a member survives a new map.
#[test]
fn update_map_keeps_hints_of_members() {
    let v1 = initial(6, 3);
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&v1, 1));
    cache.set_leader(CONFIG_GROUP, Some(1));
    cache.set_leader(GroupId(1), Some(3));
    assert!(cache.update_map(at_epoch(&v1, 2)));
    assert_eq!(cache.leader(CONFIG_GROUP), Some(1));
    assert_eq!(cache.leader(GroupId(1)), Some(3));
}

// route lists the leader hint first, then the other members in id order, with the map's epoch.
#[test]
fn route_puts_leader_hint_first() {
    let map = initial(6, 3);
    let key = key_in(&map, GroupId(1));
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&map, 4));

    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.slot, slot_of(&key));
    assert_eq!(route.group, GroupId(1));
    assert_eq!(route.epoch, 4);
    assert_eq!(route.addrs, vec![addr(1), addr(2), addr(3)], "no hint");

    cache.set_leader(GroupId(1), Some(3));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.addrs, vec![addr(3), addr(1), addr(2)], "hint 3");

    cache.set_leader(GroupId(1), Some(2));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.addrs, vec![addr(2), addr(1), addr(3)], "hint 2");
}

// A hint naming a node outside the group is ignored: the route lists only members.
#[test]
fn route_ignores_hint_of_non_member() {
    let map = initial(6, 3);
    let key = key_in(&map, GroupId(1));
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&map, 1));
    cache.set_leader(GroupId(1), Some(5));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.addrs, vec![addr(1), addr(2), addr(3)]);
}

// A removed node still listed as a member (a replacement in progress) is not routed to.
#[test]
fn route_skips_removed_members() {
    let mut map = initial(6, 3);
    map.nodes.get_mut(&2).expect("node 2").state = NodeLifecycle::Removed;
    let key = key_in(&map, GroupId(1));
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&map, 2));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.addrs, vec![addr(1), addr(3)], "no hint");

    cache.set_leader(GroupId(1), Some(3));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.addrs, vec![addr(3), addr(1)], "hint 3");
}

// A leader hint naming a removed node is not routed to either, not even first.
#[test]
fn route_skips_removed_leader_hint() {
    let mut map = initial(6, 3);
    let key = key_in(&map, GroupId(1));
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&map, 1));
    cache.set_leader(GroupId(1), Some(2));
    // Node 2 is removed but still a member: the hint survives the new map.
    map.nodes.get_mut(&2).expect("node 2").state = NodeLifecycle::Removed;
    assert!(cache.update_map(at_epoch(&map, 2)));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.addrs, vec![addr(1), addr(3)]);
}

// Routes follow the newest map: a key whose slot moved goes to its new group.
#[test]
fn route_follows_the_newest_map() {
    let v1 = initial(6, 3);
    let key = key_in(&v1, GroupId(1));
    let slot = slot_of(&key);
    let mut cache = RoutingCache::new();
    cache.update_map(at_epoch(&v1, 1));
    let mut v2 = v1.clone();
    v2.slots[slot.0 as usize] = GroupId(2);
    cache.update_map(at_epoch(&v2, 2));
    let route = cache.route(&key).expect("a cached map routes every key");
    assert_eq!(route.group, GroupId(2));
    assert_eq!(route.epoch, 2);
    assert_eq!(route.addrs, vec![addr(4), addr(5), addr(6)]);
}
