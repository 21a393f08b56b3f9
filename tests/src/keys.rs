//! Key names chosen by the map: the data group of a key, keys per group, and keys spread over
//! the groups.

use std::collections::BTreeMap;

use kvorum_router::ClusterMap;

/// The data group of `key` in `map`.
pub fn group_of_key(map: &ClusterMap, key: &str) -> u64 {
    map.route_key(key.as_bytes())
        .map(|(_, g)| g.0)
        .expect("every slot has an owner")
}

/// `per_group` key names `{prefix}{n}` for every data group of `map`, found by hashing
/// `n = 0, 1, …` (deterministic).
pub fn keys_by_group(
    map: &ClusterMap,
    prefix: &str,
    per_group: usize,
) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> =
        map.groups.keys().map(|g| (g.0, Vec::new())).collect();
    let mut n = 0u64;
    while out.values().any(|v| v.len() < per_group) {
        let key = format!("{prefix}{n}");
        n += 1;
        let keys = out
            .get_mut(&group_of_key(map, &key))
            .expect("a group of the map");
        if keys.len() < per_group {
            keys.push(key);
        }
    }
    out
}

/// `count` key names spread round-robin over the data groups of `map`: with at least as many
/// keys as groups, every group owns one.
pub fn spread_keys(map: &ClusterMap, prefix: &str, count: usize) -> Vec<String> {
    let groups = map.groups.len().max(1);
    let by_group: Vec<Vec<String>> = keys_by_group(map, prefix, count.div_ceil(groups))
        .into_values()
        .collect();
    (0..count)
        .map(|i| by_group[i % groups][i / groups].clone())
        .collect()
}
