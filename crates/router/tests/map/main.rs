//! Specification tests of the cluster map and the routing cache.
//!
//! The initial map is checked against a deliberately dumb reference written here (slots dealt
//! round robin to count each group's share, then laid out in group order; nodes dealt to groups
//! one by one), never against `even_split` itself. Property tests print their seed; replay a
//! failure with `PROPTEST_RNG_SEED=<seed> cargo test -p kvorum-router --test map`.

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kvorum_router::map::{even_split, HASH_NAME, MAX_CONFIG_VOTERS};
use kvorum_router::{
    slot_of, ClusterMap, GroupId, GroupInfo, NodeId, NodeLifecycle, RoutingCache, Slot, Task,
    TaskKind, TaskStep, CONFIG_GROUP, SLOT_COUNT,
};
use proptest::prelude::*;

mod cache;
mod initial_map;
mod json;
mod lookups;
mod validate;

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
