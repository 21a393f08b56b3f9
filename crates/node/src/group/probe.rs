//! The liveness probe: on a group's leader, whether a replica the metadata leader believes dead
//! still follows the group's log, or is still reached by another member of its group.
//!
//! Steps: (1) append a probe entry (a conditional delete that never holds, so it changes no key);
//! (2) wait up to [`ALIVE_PROBE_WAIT`] for the replica to acknowledge it; one that does is alive
//! (`replica_alive`), whatever its heartbeats said; (3) one that does not is asked after at every
//! other voter of the group (`POST /internal/v1/reach`: the voter calls the node's `/healthz`
//! from its own address); if one of them reaches it, the node is only cut off from the leader
//! and the metadata leader (a partial partition), not dead (`replica_alive` again); (4) a node
//! that no member reaches is gone.

use std::time::Duration;

use kvorum_raftstore::{Command, Condition, NodeId, Raft};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::node::Node;

/// The internal route of step (3): does this node reach an address?
pub(crate) const REACH_PATH: &str = "/internal/v1/reach";
/// How long a member's `/healthz` call to the node may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the leader waits for a member's answer about the node (its own call included).
const REACH_ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Body of `POST /internal/v1/reach`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReachRequest {
    /// The address whose `/healthz` the member calls.
    pub addr: String,
}

/// Answer of `POST /internal/v1/reach`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReachReply {
    /// Whether the node's `/healthz` answered from this member's address.
    pub reached: bool,
}

/// Whether this node reaches `addr`'s `/healthz` (its client binds to its own address, so a
/// partition between the two addresses is seen as such).
pub async fn reaches(state: &Node, addr: &str) -> bool {
    state
        .http
        .get(format!("http://{addr}/healthz"))
        .timeout(REACH_TIMEOUT)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Step (3), on the group's leader: asks every other voter of `raft`'s group but `node` whether
/// it reaches `node`; `replica_alive` naming the first that does. A voter that does not answer
/// counts as not reaching it.
pub(super) async fn confirm_unreached(
    state: &Node,
    raft: &Raft,
    node: NodeId,
) -> Result<(), ApiError> {
    let membership = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    let Some(target) = membership.get_node(&node).map(|n| n.addr.clone()) else {
        return Ok(());
    };
    let me = state.id();
    let asks = membership
        .voter_ids()
        .filter(|v| *v != me && *v != node)
        .filter_map(|v| membership.get_node(&v).map(|n| (v, n.addr.clone())))
        .map(|(v, addr)| {
            let body = ReachRequest {
                addr: target.clone(),
            };
            async move {
                let answer = state
                    .internal_request(reqwest::Method::POST, &addr, REACH_PATH)
                    .timeout(REACH_ASK_TIMEOUT)
                    .json(&body)
                    .send()
                    .await
                    .ok()?
                    .json::<ReachReply>()
                    .await
                    .ok()?;
                answer.reached.then_some(v)
            }
        });
    match futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .next()
    {
        Some(v) => Err(ApiError::ReplicaAlive {
            node,
            detail: format!(
                "node {v}, a member of its group, still reaches it (cut off from the leader only)"
            ),
        }),
        None => Ok(()),
    }
}

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
            detail: format!(
                "it is still replicating with the group's leader (it acknowledged the probe at \
                 log index {index})"
            ),
        }),
        Err(openraft::metrics::WaitError::Timeout(..)) => Ok(()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}
