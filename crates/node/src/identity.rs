//! The node's identity, persisted in its data directory: node id, cluster id, address, and the
//! view it was created with. A restart rejoins with them.
//!
//! A node of the initial view takes its id from its position in the view and the cluster id from
//! the view and K. A node that joined a running cluster (`join.rs`) takes both from the cluster
//! (`joined`), and its view is only the one it was started with.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// File name of the identity inside the data directory.
pub(crate) const IDENTITY_FILE: &str = "kvorum-node.json";

/// Who this node is. Written once when the data directory is created; never changes after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// This node's id: its 1-based position in the view it was created with, or (joined) the id
    /// the cluster map gave it.
    pub node_id: u64,
    /// Identifies the cluster: a hash of the initial view and K. Peers must agree on it.
    pub cluster_id: String,
    /// This node's address.
    pub addr: SocketAddr,
    /// The view the cluster was created with; for a joined node, the view it was started with
    /// (empty with `--join`), which is not its cluster's initial view.
    pub view: Vec<SocketAddr>,
    /// Replicas per group.
    pub k: usize,
    /// A random id created with the data directory (see `incarnation.rs`): the cluster map
    /// records it, and a node with another incarnation under this id (a wiped data directory) is
    /// refused. Identity files written before incarnations existed get one at their next start.
    #[serde(default)]
    pub incarnation: String,
    /// Whether this node joined a running cluster (was added by a view change) rather than
    /// being created with its initial view: it never computes or initializes the initial map of
    /// `view`. Absent in files written before joining existed: false.
    #[serde(default)]
    pub joined: bool,
}

impl Identity {
    /// The identity the configuration implies for a new data directory.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Identity> {
        let view = cfg.effective_view();
        let pos = view
            .iter()
            .position(|a| *a == cfg.listen)
            .ok_or_else(|| anyhow::anyhow!("listen address {} not in view", cfg.listen))?;
        let mut h = format!("k={};", cfg.k);
        for a in &view {
            h.push_str(&a.to_string());
            h.push(',');
        }
        Ok(Identity {
            node_id: pos as u64 + 1,
            cluster_id: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(h.as_bytes())),
            addr: cfg.listen,
            view,
            k: cfg.k,
            incarnation: crate::incarnation::new_incarnation(),
            joined: false,
        })
    }

    /// Writes the identity of a node that joined a running cluster under `node_id` into `dir`
    /// (which must hold no identity yet), atomically and durably.
    pub fn create_joined(dir: &Path, identity: &Identity) -> anyhow::Result<()> {
        assert!(identity.joined, "not a joined identity: {identity:?}");
        if Identity::exists(dir) {
            anyhow::bail!("{} already holds a node identity", dir.display());
        }
        std::fs::create_dir_all(dir)?;
        write_durably(dir, identity)
    }

    /// Whether `dir` holds an identity file (the directory belongs to a node that ran before).
    pub fn exists(dir: &Path) -> bool {
        dir.join(IDENTITY_FILE).exists()
    }

    /// Loads the identity in `dir`, or creates it from `cfg` for a new directory. A directory
    /// created for another address or view is refused: it belongs to another node.
    pub fn load_or_create(dir: &Path, cfg: &Config) -> anyhow::Result<Identity> {
        let want = Identity::from_config(cfg)?;
        let path = dir.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let have: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is corrupt ({e}); restore it or wipe the data directory",
                        path.display()
                    )
                })?;
                if have.addr != want.addr || (!cfg.view.is_empty() && have.view != want.view) {
                    anyhow::bail!(
                        "data directory {} belongs to node {} at {} in view {:?}; this node is configured as {} \
                         in view {:?}. Use that node's settings, or another data directory",
                        dir.display(),
                        have.node_id,
                        have.addr,
                        have.view,
                        want.addr,
                        want.view
                    );
                }
                if have.incarnation.is_empty() {
                    let upgraded = Identity {
                        incarnation: crate::incarnation::new_incarnation(),
                        ..have
                    };
                    write_durably(dir, &upgraded)?;
                    return Ok(upgraded);
                }
                Ok(have)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                write_durably(dir, &want)?;
                Ok(want)
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }
}

/// Writes `identity` into `dir` atomically and durably, before RocksDB holds any state under it.
fn write_durably(dir: &Path, identity: &Identity) -> anyhow::Result<()> {
    write_file_durably(dir, IDENTITY_FILE, &serde_json::to_vec_pretty(identity)?)
}

/// Replaces `dir/name` with `bytes` atomically and durably: a temporary file, fsynced, renamed
/// over the old one, then the directory fsynced. A crash leaves the old file or the new one.
pub fn write_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    // The contents must be on disk before the rename makes them the file.
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn config(dir: &Path) -> anyhow::Result<Config> {
        Config::from_file_config(FileConfig {
            view: Some("127.0.0.1:7070,127.0.0.1:7071".into()),
            listen: Some("127.0.0.1:7071".into()),
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        })
    }

    // A new data directory gets a new incarnation; a restart keeps it.
    #[test]
    fn incarnation_is_created_with_the_directory_and_kept() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = config(dir.path())?;
        assert!(!Identity::exists(dir.path()));
        let first = Identity::load_or_create(dir.path(), &cfg)?;
        assert!(Identity::exists(dir.path()));
        assert_eq!(first.node_id, 2);
        assert_eq!(first.incarnation.len(), 32);
        assert_eq!(Identity::load_or_create(dir.path(), &cfg)?, first);
        // A wiped directory is a new incarnation.
        let other = tempfile::tempdir()?;
        let second = Identity::load_or_create(other.path(), &config(other.path())?)?;
        assert_ne!(second.incarnation, first.incarnation);
        Ok(())
    }

    // A joined node's identity is written once and loads back; identity files from before
    // joining existed load as not joined.
    #[test]
    fn joined_identity_round_trips() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = config(dir.path())?;
        let joined = Identity {
            node_id: 7,
            cluster_id: "feed".into(),
            joined: true,
            ..Identity::from_config(&cfg)?
        };
        Identity::create_joined(dir.path(), &joined)?;
        assert_eq!(Identity::load_or_create(dir.path(), &cfg)?, joined);
        assert!(Identity::create_joined(dir.path(), &joined).is_err());
        let mut old = serde_json::to_value(Identity::from_config(&cfg)?)?;
        old.as_object_mut().map(|o| o.remove("joined"));
        let old: Identity = serde_json::from_value(old)?;
        assert!(!old.joined);
        Ok(())
    }

    // An identity file from before incarnations existed gets one, persisted at once.
    #[test]
    fn old_identity_files_get_an_incarnation() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = config(dir.path())?;
        let mut old = serde_json::to_value(Identity::from_config(&cfg)?)?;
        old.as_object_mut().map(|o| o.remove("incarnation"));
        std::fs::write(dir.path().join(IDENTITY_FILE), serde_json::to_vec(&old)?)?;
        let upgraded = Identity::load_or_create(dir.path(), &cfg)?;
        assert_eq!(upgraded.incarnation.len(), 32);
        assert_eq!(Identity::load_or_create(dir.path(), &cfg)?, upgraded);
        Ok(())
    }
}
