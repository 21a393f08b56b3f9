//! Helpers over the answers of a cluster: status entries by id, node states, id lists, a
//! status shortened for messages, and the check of a map answer against a map.

use kvorum_router::ClusterMap;
use serde_json::Value;

use crate::{ClusterStatus, GroupStatus, NodeStatus};

/// A status (its JSON) shortened for error messages; `null` for none.
pub fn brief(s: Option<&ClusterStatus>) -> String {
    const MAX_CHARS: usize = 4000;
    let text = serde_json::to_string(&s).unwrap_or_default();
    if text.chars().count() > MAX_CHARS {
        format!("{}…", text.chars().take(MAX_CHARS).collect::<String>())
    } else {
        text
    }
}

/// The entry of data group `id` in a status's `groups`.
pub fn status_group(s: &ClusterStatus, id: u64) -> Option<&GroupStatus> {
    s.groups.iter().find(|g| g.id.0 == id)
}

/// The entry of node `id` in a status's `nodes`.
pub fn status_node(s: &ClusterStatus, id: u64) -> Option<&NodeStatus> {
    s.nodes.iter().find(|n| n.id == id)
}

/// The health state of node `id` in a status ("alive", "suspect", "dead", "removed",
/// "unknown"), or "" if the status does not list it.
pub fn node_state(s: &ClusterStatus, id: u64) -> &'static str {
    status_node(s, id).map_or("", |n| n.state.as_str())
}

/// A JSON array of node ids as numbers, sorted; empty if `v` is not one.
pub fn id_list(v: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Asserts a `GET /v1/cluster/map` answer holds `map`'s slot table and group members, and that
/// any leader hint names a member of its group.
pub fn assert_map_is(m: &Value, map: &ClusterMap, what: &str) {
    let slots: Vec<u64> = m["map"]["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no slot table: {m}"))
        .iter()
        .map(|g| g.as_u64().unwrap_or(0))
        .collect();
    let want: Vec<u64> = map.slots.iter().map(|g| g.0).collect();
    assert!(
        slots == want,
        "{what}: slot table differs from the initial map"
    );
    for (gid, info) in &map.groups {
        let members: Vec<u64> = info.members.iter().copied().collect();
        assert_eq!(
            id_list(&m["map"]["groups"][gid.0.to_string()]["members"]),
            members,
            "{what}: group {gid}: {m}"
        );
        if let Some(l) = m["leaders"][gid.0.to_string()].as_u64() {
            assert!(
                members.contains(&l),
                "{what}: leader hint {l} of group {gid}"
            );
        }
    }
}
