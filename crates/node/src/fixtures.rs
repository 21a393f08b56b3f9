//! Maps, health views and tasks the node's unit tests share.

use kvorum_raftstore::GroupId;
use kvorum_router::{ClusterMap, NodeId, Task};

pub(crate) use kvorum_router::testing::health;
/// The initial map of `n` nodes with K=3 on made-up addresses.
pub(crate) fn map(n: usize) -> ClusterMap {
    kvorum_router::testing::map_at("127.0.0.", 7000, n, 3)
}

/// A repair task of data group `group` at its first step.
pub(crate) fn task(id: u64, group: u64, dead: NodeId, replacement: NodeId) -> Task {
    kvorum_router::testing::repair_task(id, GroupId(group), dead, replacement)
}
