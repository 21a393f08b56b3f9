//! The routing cache of clients and nodes: key → slot → group → leader, from a cluster map and
//! leader hints. No I/O: the caller fetches maps and reports what it learned.
//!
//! Rules:
//! - a map replaces the cached one only if its epoch is newer, so a late reply never rolls the
//!   cache back;
//! - leader hints are advisory (a wrong one costs a forward); a hint for a group whose members
//!   changed is dropped with the old map;
//! - a `NotOwner`-style answer carrying a newer epoch makes [`RoutingCache::needs_refresh`] true.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::map::ClusterMap;
use crate::{GroupId, NodeId, Slot};

/// Where to send a request for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The key's slot.
    pub slot: Slot,
    /// The group owning the slot in the cached map.
    pub group: GroupId,
    /// The epoch of the map the route came from; sent with the request.
    pub epoch: u64,
    /// Addresses to try, best first: the leader hint (if any), then the other members.
    /// Removed nodes are never listed, even as the leader hint.
    pub addrs: Vec<String>,
}

/// A cluster map plus leader hints.
#[derive(Debug, Clone, Default)]
pub struct RoutingCache {
    map: Option<Arc<ClusterMap>>,
    leaders: BTreeMap<GroupId, NodeId>,
    /// Highest epoch anyone told us about.
    seen_epoch: u64,
}

impl RoutingCache {
    /// An empty cache: no map, no hints.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached map, if any.
    pub fn map(&self) -> Option<&Arc<ClusterMap>> {
        self.map.as_ref()
    }

    /// The cached map's epoch (0 without a map).
    pub fn epoch(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.epoch)
    }

    /// Installs `map` if it is newer than the cached one; returns whether it was installed.
    pub fn update_map(&mut self, map: Arc<ClusterMap>) -> bool {
        if self.map.as_ref().is_some_and(|m| m.epoch >= map.epoch) {
            return false;
        }
        // Drop hints that no longer name a member.
        self.leaders.retain(|g, l| {
            map.members_of(*g)
                .is_some_and(|members| members.contains(l))
        });
        self.seen_epoch = self.seen_epoch.max(map.epoch);
        self.map = Some(map);
        true
    }

    /// Records that `leader` leads `group` (from a reply or a heartbeat).
    pub fn set_leader(&mut self, group: GroupId, leader: Option<NodeId>) {
        match leader {
            Some(l) => {
                self.leaders.insert(group, l);
            }
            None => {
                self.leaders.remove(&group);
            }
        }
    }

    /// The leader hint of `group`.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.leaders.get(&group).copied()
    }

    /// All leader hints.
    pub fn leaders(&self) -> &BTreeMap<GroupId, NodeId> {
        &self.leaders
    }

    /// Notes that a peer reported `epoch` (for example in a `NotOwner` answer).
    pub fn saw_epoch(&mut self, epoch: u64) {
        self.seen_epoch = self.seen_epoch.max(epoch);
    }

    /// Whether the cached map is missing or older than an epoch someone reported.
    pub fn needs_refresh(&self) -> bool {
        self.map.is_none() || self.seen_epoch > self.epoch()
    }

    /// The route of `key`, or `None` without a map.
    pub fn route(&self, key: &[u8]) -> Option<Route> {
        let map = self.map.as_ref()?;
        let (slot, group) = map.route_key(key)?;
        Some(Route {
            slot,
            group,
            epoch: map.epoch,
            addrs: self.group_addrs(group)?,
        })
    }

    /// Addresses of `group`'s active members, the leader hint first; `None` without a map or
    /// for an unknown group.
    pub fn group_addrs(&self, group: GroupId) -> Option<Vec<String>> {
        let map = self.map.as_ref()?;
        let members = map.members_of(group)?;
        // A hint naming a removed node is ignored like any other non-active member.
        let leader = self
            .leader(group)
            .filter(|l| members.contains(l) && map.is_active(*l));
        let mut addrs = Vec::with_capacity(members.len());
        if let Some(a) = leader.and_then(|l| map.addr(l)) {
            addrs.push(a.to_string());
        }
        for m in members {
            if Some(*m) != leader && map.is_active(*m) {
                if let Some(a) = map.addr(*m) {
                    addrs.push(a.to_string());
                }
            }
        }
        Some(addrs)
    }
}
