//! Fixtures for the workspace's tests: made-up cluster maps, health views and repair tasks.
//! Compiled only with the `testing` feature, which only dev-dependencies enable, so no shipped
//! build has it.

use std::collections::BTreeMap;

use crate::map::{ClusterMap, Task, TaskKind, TaskStep};
use crate::repair::Health;
use crate::{GroupId, NodeId};

/// The initial map of `n` nodes at `{ip_prefix}{i}:{port}` (i = 1..=n), `k` replicas a group.
pub fn map_at(ip_prefix: &str, port: u16, n: usize, k: usize) -> ClusterMap {
    let view: Vec<String> = (1..=n).map(|i| format!("{ip_prefix}{i}:{port}")).collect();
    ClusterMap::initial(&view, k).expect("a valid view")
}

/// The initial map of `n` nodes at `10.0.0.{i}:7070`, `k` replicas a group.
pub fn map(n: usize, k: usize) -> ClusterMap {
    map_at("10.0.0.", 7070, n, k)
}

/// Every node of `map` alive except `dead`.
pub fn health(map: &ClusterMap, dead: &[NodeId]) -> BTreeMap<NodeId, Health> {
    map.nodes
        .keys()
        .map(|id| {
            let h = if dead.contains(id) {
                Health::Dead
            } else {
                Health::Alive
            };
            (*id, h)
        })
        .collect()
}

/// A repair task `id` of `group` at its first step (`AddLearner`), claimed in term 1.
pub fn repair_task(id: u64, group: GroupId, dead: NodeId, replacement: NodeId) -> Task {
    Task {
        id,
        kind: TaskKind::ReplaceReplica {
            group,
            dead,
            replacement,
        },
        step: TaskStep::AddLearner,
        started_ms: 1_000_000,
        leader_term: 1,
    }
}
