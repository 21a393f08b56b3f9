//! Where a node finds its cluster map: the config group's record (`MAP_KEY`), the map file in
//! its data directory (`MAP_FILE`, the newest map it ever installed), the map a peer answered
//! while it started, and the initial map of a new cluster; the newest of them wins.

use anyhow::Context;
use kvorum_raftstore::Store;
use kvorum_router::{ClusterMap, CONFIG_GROUP};

use crate::identity::Identity;

/// Key of the cluster map in the config group's state machine.
pub const MAP_KEY: &str = "cluster_map";
/// File in the data directory holding the newest cluster map this node installed (JSON),
/// replaced atomically and durably with every newer map, so that a restarted node starts from
/// the newest map it ever knew even when it is not a config voter.
pub const MAP_FILE: &str = "cluster-map.json";

/// The initial map of the cluster this node was created in (for a joined node: of the view it
/// was started with, which is not its cluster's; see [`initial_map_to_use`]).
pub fn initial_map(identity: &Identity) -> anyhow::Result<ClusterMap> {
    let view: Vec<String> = identity.view.iter().map(|a| a.to_string()).collect();
    ClusterMap::initial(&view, identity.k).map_err(|e| anyhow::anyhow!("initial map: {e}"))
}

/// The initial map a node takes into account at startup: its view's, or `None` for a node that
/// joined a running cluster (its view is not its cluster's initial view).
pub fn initial_map_to_use(identity: &Identity) -> anyhow::Result<Option<ClusterMap>> {
    if identity.joined {
        return Ok(None);
    }
    initial_map(identity).map(Some)
}

/// The map stored in `store`'s config replica and its record version, if any.
pub fn stored_map_in(store: &Store) -> anyhow::Result<Option<(ClusterMap, u64)>> {
    let Some(rec) = store.read(CONFIG_GROUP, MAP_KEY)? else {
        return Ok(None);
    };
    let map: ClusterMap =
        serde_json::from_str(&rec.value).context("the stored cluster map does not decode")?;
    Ok(Some((map, rec.version)))
}

/// Replaces [`MAP_FILE`] in `dir` with `map`, atomically and durably.
pub fn write_map_file(dir: &std::path::Path, map: &ClusterMap) -> anyhow::Result<()> {
    crate::identity::write_file_durably(dir, MAP_FILE, &serde_json::to_vec(map)?)
        .with_context(|| format!("cannot persist the cluster map (epoch {})", map.epoch))
}

/// The map [`MAP_FILE`] in `dir` holds, if the file exists.
pub fn read_map_file(dir: &std::path::Path) -> anyhow::Result<Option<ClusterMap>> {
    let path = dir.join(MAP_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            anyhow::anyhow!(
                "{} is corrupt ({e}); delete it (the node then starts from its other maps)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The newest (highest epoch) of the maps a node knows at startup: its config replica's stored
/// map, its [`MAP_FILE`], and the initial map of its view (not for a joined node).
pub fn newest_map(candidates: impl IntoIterator<Item = Option<ClusterMap>>) -> Option<ClusterMap> {
    candidates.into_iter().flatten().max_by_key(|m| m.epoch)
}

/// The initial map to initialize pristine groups from, given the newest map the node knows:
/// only while that map is still the initial one (epoch 1). A node that ever learned a later map
/// never initializes from its view: after a view change the initial map is stale, and its groups
/// may have been dissolved or given other members; replicas then join by the members' Raft
/// (as learners), never by initializing.
pub fn initial_to_initialize(
    newest: &ClusterMap,
    initial: Option<ClusterMap>,
) -> Option<ClusterMap> {
    initial.filter(|_| newest.epoch == 1)
}
