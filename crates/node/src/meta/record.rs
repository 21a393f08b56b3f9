//! The cluster map's record in the config group: the one way it is changed (a compare-and-set
//! on its record version) and read.

use kvorum_raftstore::{Command, CommandResult, Condition, WriteResult};
use kvorum_router::{ClusterMap, MapError, CONFIG_GROUP};

use crate::map_copies::{initial_map, MAP_KEY};

use super::state::Meta;

/// The current map: the config group's stored record, or the initial map before the first
/// change; with the record version to compare-and-set against (0: absent).
pub(super) fn current_map(meta: &Meta) -> anyhow::Result<(ClusterMap, u64)> {
    match meta.node.stored_map()? {
        Some(x) => Ok(x),
        None => Ok((initial_map(&meta.node.identity)?, 0)),
    }
}

/// Why a map change was not made. Only [`MapUpdateError::Conflict`] is expected in normal
/// operation (two writers raced); the caller re-plans from the newer map.
#[derive(Debug, thiserror::Error)]
pub enum MapUpdateError {
    /// The compare-and-set lost to a concurrent writer: the map changed since it was read.
    /// Nothing was written; re-plan from the newer map.
    #[error("the map changed concurrently; the change ({what}) will be re-planned")]
    Conflict {
        /// What the change was for.
        what: String,
    },
    /// The changed map breaks an invariant of the map; nothing was written.
    #[error("refusing an invalid map ({what}): {error}")]
    Invalid {
        /// What the change was for.
        what: String,
        /// The broken invariant.
        error: MapError,
    },
    /// The change was not committed (no config replica, timeout, failed or unexpected write);
    /// it may or may not be in the log. Retry after re-reading the map.
    #[error("{0}")]
    NotCommitted(String),
    /// Reading the current map or installing the new one locally failed.
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

/// Whether `e` is (or wraps) a lost compare-and-set of the map: an expected race, logged below
/// warning.
pub(crate) fn is_map_conflict(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<MapUpdateError>(),
        Some(MapUpdateError::Conflict { .. })
    )
}

/// Changes the map through the config group's log: reads the current map, applies `change`,
/// bumps the epoch and writes it back if nobody wrote it meanwhile (compare-and-set on the
/// record version). Returns the new map, also installed locally. This node's changes are made
/// one at a time, so that its task drivers do not fail each other's compare-and-set.
pub async fn update_map(
    meta: &Meta,
    what: &str,
    change: impl FnOnce(&mut ClusterMap),
) -> Result<ClusterMap, MapUpdateError> {
    let _one = meta.map_writes.lock().await;
    let raft = meta.node.group(CONFIG_GROUP).ok_or_else(|| {
        MapUpdateError::NotCommitted("this node hosts no config replica".to_string())
    })?;
    let (cur, version) = current_map(meta)?;
    let mut next = cur.clone();
    change(&mut next);
    next.epoch = cur.epoch + 1;
    next.validate().map_err(|error| MapUpdateError::Invalid {
        what: what.to_string(),
        error,
    })?;
    let cmd = Command::Put {
        key: MAP_KEY.to_string(),
        value: serde_json::to_string(&next).map_err(anyhow::Error::from)?,
        condition: Some(Condition::Version(version)),
    };
    let resp = tokio::time::timeout(meta.node.cfg.request_timeout, raft.client_write(cmd))
        .await
        .map_err(|_| {
            MapUpdateError::NotCommitted("the map change was not committed in time".to_string())
        })?
        .map_err(|e| MapUpdateError::NotCommitted(format!("the map change failed: {e}")))?;
    match resp.data {
        CommandResult::Write(WriteResult::Written { .. }) => {
            tracing::info!(epoch = next.epoch, "{what}: map {}", next.summary());
            meta.node.install_map(next.clone()).await?;
            Ok(next)
        }
        CommandResult::Write(WriteResult::ConditionFailed { .. }) => {
            Err(MapUpdateError::Conflict {
                what: what.to_string(),
            })
        }
        other => Err(MapUpdateError::NotCommitted(format!(
            "unexpected result of a map change: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A lost compare-and-set is recognized as such, also under added context; other map errors
    // are not.
    #[test]
    fn map_conflict_is_recognized_through_context() {
        let conflict = anyhow::Error::from(MapUpdateError::Conflict {
            what: "repair step".into(),
        });
        assert!(is_map_conflict(&conflict));
        assert!(is_map_conflict(&conflict.context("while driving task 3")));
        let other = anyhow::Error::from(MapUpdateError::NotCommitted("timeout".into()));
        assert!(!is_map_conflict(&other));
        assert!(!is_map_conflict(&anyhow::anyhow!("unrelated")));
    }
}
