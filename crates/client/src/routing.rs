//! The client's routing state: a [`RoutingCache`] (cluster map and leader hints) plus what the
//! client learned about addresses, and the pure helpers of smart routing.
//!
//! Steps of a routed request (driven by `Client::call` in `lib.rs`):
//! 1. if the map is missing or stale (and not fetched too recently), fetch `/v1/cluster/map`;
//! 2. route the key: slot → group → the group's addresses, leader hint first, addresses that
//!    failed recently last;
//! 3. send to those addresses in turn with the `x-kvorum-route` header, moving on after a
//!    definite failure, then to one configured endpoint without it (the plain path, which always
//!    works: any node forwards); pause and repeat until the deadline;
//! 4. on 421 `not_owner`, note the reported epoch, refetch the map (from the node that answered
//!    first: it has the newer map) and route again.
//!
//! Nothing here does I/O; the lock around [`Routing`] is never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_router::map::HASH_NAME;
use kvorum_router::{ClusterMap, GroupId, NodeId, Route, RoutingCache, CONFIG_GROUP, SLOT_COUNT};
use kvorum_wire::{MapReply, RouteHeader};

pub use kvorum_wire::headers::ROUTE_HEADER;

/// Shortest pause between two map fetches made because the map may be stale (leader hints
/// wrong after a failure). A fetch after a `not_owner` answer does not wait for it.
pub const MAP_FETCH_MIN_GAP: Duration = Duration::from_millis(200);

/// Pause after a failed map fetch before the next try; requests use the endpoints meanwhile.
pub const MAP_FETCH_BACKOFF: Duration = Duration::from_secs(2);

/// Longest time one map fetch (over all candidate nodes) may delay a request.
pub const MAP_FETCH_BUDGET: Duration = Duration::from_secs(2);

/// How long an address whose request failed in transport is tried after the others.
pub const FAILED_ADDR_PENALTY: Duration = Duration::from_secs(5);

/// Most `not_owner` answers one request follows (refreshing the map each time) before it falls
/// back to the plain path.
pub const MAX_REROUTES: usize = 3;

/// The value of the [`ROUTE_HEADER`] for `route`: `<slot>:<epoch>:<group>`.
pub fn route_header(route: &Route) -> String {
    RouteHeader {
        slot: route.slot,
        epoch: route.epoch,
        group: route.group,
    }
    .to_string()
}

/// Parses a `GET /v1/cluster/map` reply ([`MapReply`]) into the map and its leader hints
/// (group → node); null or unparsable hints are skipped.
pub fn parse_map_reply(
    v: serde_json::Value,
) -> Result<(ClusterMap, BTreeMap<u64, NodeId>), String> {
    let r: MapReply = serde_json::from_value(v).map_err(|e| format!("bad cluster map: {e}"))?;
    let leaders = r.leaders.into_iter().map(|(g, l)| (g.0, l)).collect();
    Ok((r.map, leaders))
}

/// Why a map cannot be used to route: this client hashes keys with [`kvorum_router::slot_of`],
/// so the cluster must use the same hash and slot count, and the map must be consistent.
pub fn unusable(map: &ClusterMap) -> Option<String> {
    if map.hash != HASH_NAME || map.slot_count != SLOT_COUNT {
        return Some(format!(
            "the cluster hashes with {} over {} slots; this client knows {HASH_NAME} over \
             {SLOT_COUNT}",
            map.hash, map.slot_count
        ));
    }
    map.validate().err().map(|e| e.to_string())
}

/// Orders a route's addresses: those that failed within [`FAILED_ADDR_PENALTY`] go last, the
/// route's order (leader hint first) is kept otherwise.
pub fn order_addrs(
    addrs: &[String],
    failed: &HashMap<String, Instant>,
    now: Instant,
) -> Vec<String> {
    let recent = |a: &String| {
        failed
            .get(a)
            .is_some_and(|t| now.saturating_duration_since(*t) < FAILED_ADDR_PENALTY)
    };
    let mut out: Vec<String> = addrs.iter().filter(|a| !recent(a)).cloned().collect();
    out.extend(addrs.iter().filter(|a| recent(a)).cloned());
    out
}

/// When the map was last fetched, and whether that worked.
#[derive(Debug, Clone, Copy)]
struct Fetch {
    at: Instant,
    ok: bool,
}

/// The routing state of one client.
#[derive(Debug, Default)]
pub struct Routing {
    pub cache: RoutingCache,
    /// A routed request failed, so the leader hints may be wrong: refetch (rate-limited).
    stale: bool,
    last_fetch: Option<Fetch>,
    /// Addresses whose last request failed in transport, and when.
    failed: HashMap<String, Instant>,
}

impl Routing {
    /// Whether the map should be fetched before routing now.
    pub fn should_fetch(&self, now: Instant) -> bool {
        if !(self.stale || self.cache.needs_refresh()) {
            return false;
        }
        match self.last_fetch {
            None => true,
            Some(f) => {
                let gap = if f.ok {
                    MAP_FETCH_MIN_GAP
                } else {
                    MAP_FETCH_BACKOFF
                };
                now.saturating_duration_since(f.at) >= gap
            }
        }
    }

    /// Records a map fetch that failed; requests use the endpoints until the backoff ends.
    pub fn fetch_failed(&mut self, now: Instant) {
        self.last_fetch = Some(Fetch { at: now, ok: false });
    }

    /// Installs a fetched map (if newer than the cached one) and, if the cache now holds that
    /// epoch, its leader hints, replacing older hints. A map this client cannot route with is
    /// recorded as a failed fetch.
    pub fn install(&mut self, map: ClusterMap, leaders: &BTreeMap<u64, NodeId>, now: Instant) {
        if unusable(&map).is_some() {
            self.fetch_failed(now);
            return;
        }
        let epoch = map.epoch;
        self.cache.update_map(Arc::new(map));
        if let Some(cached) = self.cache.map().filter(|m| m.epoch == epoch).cloned() {
            let groups = cached.groups.keys().copied().chain([CONFIG_GROUP]);
            for g in groups.collect::<Vec<GroupId>>() {
                self.cache.set_leader(g, leaders.get(&g.0).copied());
            }
        }
        self.stale = false;
        self.last_fetch = Some(Fetch { at: now, ok: true });
    }

    /// Notes that a request to `addr` failed in transport (or the node had no leader): try it
    /// last for a while, and refetch the map for fresh leader hints.
    pub fn addr_failed(&mut self, addr: &str, now: Instant) {
        self.failed
            .retain(|_, t| now.saturating_duration_since(*t) < FAILED_ADDR_PENALTY);
        self.failed.insert(addr.to_string(), now);
        self.stale = true;
    }

    /// Notes that the leader hints may be wrong (a node had no leader): refetch (rate-limited).
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Notes that `addr` answered.
    pub fn addr_ok(&mut self, addr: &str) {
        if !self.failed.is_empty() {
            self.failed.remove(addr);
        }
    }

    /// The route of `key`, its addresses in the order to try them, or `None` without a map.
    pub fn route(&self, key: &str, now: Instant) -> Option<Route> {
        let mut r = self.cache.route(key.as_bytes())?;
        r.addrs = order_addrs(&r.addrs, &self.failed, now);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvorum_router::Slot;

    /// 7 nodes, K=3: groups {1,2,3} and {4,5,6}, spare 7.
    fn map3() -> ClusterMap {
        kvorum_router::testing::map(7, 3)
    }

    // The route header is `<slot>:<epoch>:<group>`, the format the nodes parse.
    #[test]
    fn route_header_is_slot_epoch_group() {
        let r = Route {
            slot: Slot(4095),
            group: GroupId(2),
            epoch: 17,
            addrs: vec![],
        };
        assert_eq!(route_header(&r), "4095:17:2");
    }

    // A map reply parses into the map and numeric leader hints; null and bad hints are skipped.
    #[test]
    fn map_reply_parses_with_leader_hints() {
        let map = map3();
        let v = serde_json::json!({
            "map": serde_json::to_value(&map).expect("map serializes"),
            "leaders": {"1": 2, "2": null, "x": 3, "0": 1},
        });
        let (parsed, leaders) = parse_map_reply(v).expect("parses");
        assert_eq!(parsed, map);
        assert_eq!(leaders, BTreeMap::from([(0, 1), (1, 2)]));
        // Leaders are optional.
        let v = serde_json::json!({ "map": serde_json::to_value(&map).expect("map serializes") });
        assert!(parse_map_reply(v).expect("parses").1.is_empty());
        assert!(parse_map_reply(serde_json::json!({"leaders": {}})).is_err());
    }

    // A key routes to its group's members, the leader hint first, with the map's epoch.
    #[test]
    fn installed_map_routes_leader_first() {
        let now = Instant::now();
        let mut r = Routing::default();
        assert!(r.should_fetch(now), "no map yet");
        assert!(r.route("k", now).is_none());
        let map = map3();
        let (slot, group) = map.route_key(b"k").expect("in range");
        let members: Vec<u64> = map.groups[&group].members.iter().copied().collect();
        r.install(map, &BTreeMap::from([(group.0, members[2])]), now);
        assert!(!r.should_fetch(now));
        let route = r.route("k", now).expect("routed");
        assert_eq!((route.slot, route.group, route.epoch), (slot, group, 1));
        let addr = |n: u64| format!("10.0.0.{n}:7070");
        assert_eq!(
            route.addrs,
            vec![addr(members[2]), addr(members[0]), addr(members[1])]
        );
    }

    // An older map never replaces a newer one, and its leader hints are ignored.
    #[test]
    fn older_map_does_not_roll_back() {
        let now = Instant::now();
        let mut r = Routing::default();
        let mut newer = map3();
        newer.epoch = 5;
        r.install(newer, &BTreeMap::from([(1, 1)]), now);
        r.install(map3(), &BTreeMap::from([(1, 2)]), now);
        assert_eq!(r.cache.epoch(), 5);
        assert_eq!(r.cache.leader(GroupId(1)), Some(1));
    }

    // A not_owner answer with a newer epoch makes the map stale at once; a map the client cannot
    // hash for is refused and backs off.
    #[test]
    fn newer_epoch_or_unusable_map_drive_fetching() {
        let now = Instant::now();
        let mut r = Routing::default();
        r.install(map3(), &BTreeMap::new(), now);
        assert!(!r.should_fetch(now + MAP_FETCH_MIN_GAP));
        r.cache.saw_epoch(2);
        assert!(r.should_fetch(now + MAP_FETCH_MIN_GAP));

        let mut r = Routing::default();
        let mut odd = map3();
        odd.hash = "crc16".into();
        assert!(unusable(&odd).is_some());
        r.install(odd, &BTreeMap::new(), now);
        assert!(r.cache.map().is_none());
        assert!(!r.should_fetch(now + MAP_FETCH_MIN_GAP), "backing off");
        assert!(r.should_fetch(now + MAP_FETCH_BACKOFF));
    }

    // An address that failed is tried last, and the map is refetched for new leader hints;
    // once it answers again it regains its place.
    #[test]
    fn failed_address_goes_last_until_it_answers() {
        let now = Instant::now();
        let mut r = Routing::default();
        let map = map3();
        let (_, group) = map.route_key(b"k").expect("in range");
        let first = map.groups[&group]
            .members
            .first()
            .copied()
            .expect("K members");
        r.install(map, &BTreeMap::new(), now);
        let a = format!("10.0.0.{first}:7070");
        assert_eq!(r.route("k", now).expect("routed").addrs[0], a);
        r.addr_failed(&a, now);
        assert!(
            r.should_fetch(now + MAP_FETCH_MIN_GAP),
            "hints may be wrong"
        );
        let addrs = r.route("k", now).expect("routed").addrs;
        assert_eq!(addrs.last(), Some(&a));
        let later = now + FAILED_ADDR_PENALTY;
        assert_eq!(r.route("k", later).expect("routed").addrs[0], a);
        r.addr_failed(&a, now);
        r.addr_ok(&a);
        assert_eq!(r.route("k", now).expect("routed").addrs[0], a);
    }
}
