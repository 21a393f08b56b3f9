//! Tests of `node`.
use super::*;
use crate::config::FileConfig;
use crate::map_copies::{initial_map_to_use, initial_to_initialize, newest_map, read_map_file};

fn map_at(epoch: u64) -> ClusterMap {
    let view: Vec<String> = (1..=3).map(|i| format!("127.0.0.{i}:7070")).collect();
    let mut map = ClusterMap::initial(&view, 3).expect("valid view");
    map.epoch = epoch;
    map
}

// The newest of the maps a node knows at startup wins, whichever source it comes from.
#[test]
fn startup_takes_the_newest_map() {
    assert_eq!(newest_map([None, None, None]), None);
    let newest = newest_map([Some(map_at(3)), Some(map_at(7)), None, Some(map_at(1))]);
    assert_eq!(newest.map(|m| m.epoch), Some(7));
}

// Groups of the initial map are initialized only while the newest known map is the initial
// one: after a view change the initial map is stale (its groups may be dissolved).
#[test]
fn initializes_only_from_an_epoch_1_map() {
    let initial = map_at(1);
    assert_eq!(
        initial_to_initialize(&map_at(1), Some(initial.clone())),
        Some(initial.clone())
    );
    assert_eq!(initial_to_initialize(&map_at(2), Some(initial)), None);
    // A joined node has no initial map.
    assert_eq!(initial_to_initialize(&map_at(1), None), None);
}

// A joined node never uses the initial map of the view it was started with.
#[test]
fn joined_nodes_have_no_initial_map() -> anyhow::Result<()> {
    let cfg = Config::from_file_config(FileConfig {
        view: Some("127.0.0.1:7070,127.0.0.2:7070".into()),
        listen: Some("127.0.0.2:7070".into()),
        ..Default::default()
    })?;
    let mut identity = Identity::from_config(&cfg)?;
    assert!(initial_map_to_use(&identity)?.is_some());
    identity.joined = true;
    assert!(initial_map_to_use(&identity)?.is_none());
    Ok(())
}

// Every newer map a node installs is on disk before it is used, and an older one never
// replaces it; a restart reads it back.
#[tokio::test]
async fn installed_maps_are_persisted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = Config::from_file_config(FileConfig {
        view: Some("127.0.0.1:7070,127.0.0.2:7070,127.0.0.3:7070".into()),
        listen: Some("127.0.0.1:7070".into()),
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })?;
    let identity = Identity::load_or_create(dir.path(), &cfg)?;
    let store = Store::open(dir.path())?;
    let node = Node::new(
        cfg.clone(),
        identity,
        store,
        map_at(1),
        http_client(&cfg)?,
        NodeFaults::default(),
        Arc::new(Connections::new(
            crate::http::listener::Limits::of(
                &cfg,
                &crate::http::budget::FdBudget::plan(1024, cfg.max_client_connections)?,
            ),
            1024,
        )),
    );
    assert_eq!(read_map_file(dir.path())?, None);
    assert!(node.install_map(map_at(4)).await?);
    assert_eq!(read_map_file(dir.path())?.map(|m| m.epoch), Some(4));
    assert!(!node.install_map(map_at(3)).await?);
    assert_eq!(read_map_file(dir.path())?.map(|m| m.epoch), Some(4));
    assert!(node.install_map(map_at(5)).await?);
    assert_eq!(read_map_file(dir.path())?, Some(map_at(5)));
    node.shutdown_replicas().await;
    Ok(())
}
