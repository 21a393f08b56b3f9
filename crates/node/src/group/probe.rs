//! The liveness probe: on a group's leader, whether a replica the metadata leader believes dead
//! still follows the group's log.
//!
//! Steps: (1) append a probe entry (a conditional delete that never holds, so it changes no key);
//! (2) wait up to [`ALIVE_PROBE_WAIT`] for the replica to acknowledge it; (3) one that does is
//! alive (`replica_alive`), whatever its heartbeats said; one that does not is gone.

use std::time::Duration;

use kvorum_raftstore::{Command, Condition, NodeId, Raft};
use openraft::BasicNode;

use crate::error::ApiError;

/// How long a group's leader waits for a "dead" replica to acknowledge a probe entry before it
/// believes it gone; a live follower acknowledges within one round trip.
const ALIVE_PROBE_WAIT: Duration = Duration::from_secs(2);
/// The key of the liveness probe entry; the probe is a conditional delete that never holds, so
/// it changes no key, this one included.
const PROBE_KEY: &str = "kvorum-internal/liveness-probe";

/// The log index up to which the leader's replica of `node` matches, from the leader's metrics.
pub(super) fn matched(m: &openraft::RaftMetrics<NodeId, BasicNode>, node: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&node))
        .and_then(|l| l.as_ref())
        .map(|l| l.index)
}

/// Confirms, on the group's leader, that `node`'s replica no longer follows its log: appends a
/// probe entry (a conditional delete that never holds, so it changes nothing) and waits up to
/// [`ALIVE_PROBE_WAIT`] for `node` to acknowledge it. One that acknowledges is alive, whatever
/// its heartbeats to the metadata leader say.
pub(super) async fn confirm_gone(raft: &Raft, node: NodeId) -> Result<(), ApiError> {
    let probe = Command::Delete {
        key: PROBE_KEY.to_string(),
        // Versions are log indexes: never u64::MAX.
        condition: Some(Condition::Version(u64::MAX)),
    };
    let index = tokio::time::timeout(ALIVE_PROBE_WAIT, raft.client_write(probe))
        .await
        .map_err(|_| ApiError::Unavailable("the liveness probe was not committed in time".into()))?
        .map_err(|e| ApiError::Unavailable(format!("liveness probe: {e}")))?
        .log_id
        .index;
    let acked = raft
        .wait(Some(ALIVE_PROBE_WAIT))
        .metrics(
            move |m| matched(m, node).is_some_and(|i| i >= index),
            "the probe acknowledged",
        )
        .await;
    match acked {
        Ok(_) => Err(ApiError::ReplicaAlive {
            node,
            detail: format!("it acknowledged the probe at log index {index}"),
        }),
        Err(openraft::metrics::WaitError::Timeout(..)) => Ok(()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}
