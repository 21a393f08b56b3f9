//! The routing cache: newer epochs only, leader hints, refresh.

use super::*;

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
