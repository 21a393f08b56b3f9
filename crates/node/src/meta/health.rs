//! Heartbeat intake on the metadata leader, and the node health derived from it.
//!
//! Steps of a heartbeat: (1) refuse it unless this node leads the config group (`not_leader`,
//! with the leader hint); (2) refuse a sender the map marks removed or does not know, or whose
//! incarnation differs from the recorded one (`node_removed`), and tell a sender a repair
//! replaced and that holds no seat any more to rejoin as a new node (`node_replaced`); (3)
//! record it as the sender's last heartbeat (its silence starts now); (4) reply with the map when the sender's is older, and the
//! leader of each group from the replicas' reports. Health: alive under `suspect_after` of
//! silence, suspect under `dead_after`, dead beyond; the metadata leader itself is always alive.
//! Incarnations the map does not record yet are recorded by the tick (`tick.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kvorum_raftstore::{GroupId, NodeId};
use kvorum_router::{ClusterMap, NodeLifecycle};
use openraft::BasicNode;

use crate::error::ApiError;

use super::lease::{config_leader_hint, is_metadata_leader, lease};
use super::messages::{Heartbeat, HeartbeatReply, ReplicaReport};
use super::state::{Meta, MetaInner, Seen};

pub use kvorum_router::Health;

impl Meta {
    /// Incarnations brought by heartbeats of active nodes whose incarnation `map` does not
    /// record yet.
    pub(super) fn unrecorded_incarnations(&self, map: &ClusterMap) -> BTreeMap<NodeId, String> {
        let inner = self.lock();
        inner
            .seen
            .iter()
            .filter_map(|(id, seen)| {
                let inc = seen.beat.as_ref()?.incarnation.clone()?;
                let node = map.nodes.get(id)?;
                (node.state == NodeLifecycle::Active && node.incarnation.is_none())
                    .then_some((*id, inc))
            })
            .collect()
    }

    /// Health of every node of `map` (removed ones excluded). `me` is alive by definition.
    pub(crate) fn health(
        &self,
        map: &ClusterMap,
        me: NodeId,
        suspect: Duration,
        dead: Duration,
    ) -> BTreeMap<NodeId, Health> {
        let mut inner = self.lock();
        let now = Instant::now();
        map.nodes
            .iter()
            .filter(|(_, n)| n.state == NodeLifecycle::Active)
            .map(|(id, _)| {
                // A node this leader has not known before (added by a view change since it
                // took over) starts its clock now, like every node does at a new term.
                let seen = inner.seen.entry(*id).or_insert(Seen {
                    at: now,
                    heard: None,
                    beat: None,
                });
                let age = now.duration_since(seen.at);
                let h = if *id == me || age < suspect {
                    Health::Alive
                } else if age < dead {
                    Health::Suspect
                } else {
                    Health::Dead
                };
                (*id, h)
            })
            .collect()
    }

    /// Nodes whose own heartbeat arrived within `within`.
    pub(super) fn heard_within(&self, within: Duration) -> BTreeSet<NodeId> {
        self.lock()
            .seen
            .iter()
            .filter(|(_, s)| s.heard.is_some_and(|h| h.elapsed() < within))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Why a heartbeat was not taken.
pub enum Refused {
    /// This node does not lead the config group; the leader is this, if known.
    NotLeader(Option<NodeId>),
    /// The sender was removed from the cluster (by an operator), or its data directory is not
    /// the one the map records: it stops.
    Removed(String),
    /// The sender was removed by a repair and holds no seat any more: it drops its stale
    /// replicas and rejoins as a new node.
    Replaced(String),
}

/// Takes a heartbeat on the metadata leader.
pub fn receive_heartbeat(meta: &Meta, beat: Heartbeat) -> Result<HeartbeatReply, Refused> {
    // Only a leader whose leadership a config read index confirmed recently (and that has
    // installed the stored map since) answers: a leader cut off from its config peers, or one
    // just elected, must not hand out its map or judge who was removed.
    if !is_metadata_leader(&meta.node) || meta.confirmed_term(lease(&meta.node)).is_none() {
        return Err(Refused::NotLeader(config_leader_hint(&meta.node)));
    }
    let map = meta.node.map();
    if map.epoch < beat.epoch {
        // The sender knows a newer map than this leader: whatever this map says of it (absent,
        // removed) may be stale. Let it ask another node.
        return Err(Refused::NotLeader(None));
    }
    match map.nodes.get(&beat.node) {
        Some(n) if n.state == NodeLifecycle::Active => {
            if let (Some(recorded), Some(theirs)) = (&n.incarnation, &beat.incarnation) {
                if recorded != theirs {
                    return Err(Refused::Removed(format!(
                        "node {}'s data directory is not the one the cluster knows under id {} \
                         (incarnation {theirs}, the map records {recorded}): it was wiped or \
                         replaced. Start it with its original data directory, or remove node {} \
                         and join this machine as a new node",
                        beat.node, beat.node, beat.node
                    )));
                }
            }
        }
        Some(n) if n.replaced => {
            if !map.released_by_repair(beat.node) {
                // A repair replaced it in one group but another still lists it: its replica
                // there is still a voter, so it must not drop its data yet. Answer like a node
                // that cannot judge; it asks again at its next beat.
                return Err(Refused::NotLeader(None));
            }
            return Err(Refused::Replaced(format!(
                "node {} was replaced while it was away (epoch {}); dropping its stale replicas \
                 and rejoining as a new node",
                beat.node, map.epoch
            )));
        }
        Some(_) => {
            return Err(Refused::Removed(format!(
                "node {} was removed from the cluster; wipe its data directory and join it as a new node",
                beat.node
            )))
        }
        None => {
            return Err(Refused::Removed(format!(
                "node {} is not in the cluster map",
                beat.node
            )))
        }
    }
    let mut inner = meta.lock();
    let now = Instant::now();
    inner.seen.insert(
        beat.node,
        Seen {
            at: now,
            heard: Some(now),
            beat: Some(beat.clone()),
        },
    );
    let leaders = leaders_of(&inner);
    Ok(HeartbeatReply {
        metadata_leader: meta.node.id(),
        epoch: map.epoch,
        map: (beat.epoch < map.epoch).then(|| (*map).clone()),
        leaders,
    })
}

/// The leader of each group, from the reports of replicas that say they lead (highest term wins).
fn leaders_of(inner: &MetaInner) -> BTreeMap<GroupId, NodeId> {
    best_reports(inner)
        .into_iter()
        .map(|(g, (node, _))| (g, node))
        .collect()
}

/// For each group, the node whose replica reports leading it in the highest term, and its report.
pub(crate) fn best_reports(inner: &MetaInner) -> BTreeMap<GroupId, (NodeId, ReplicaReport)> {
    let mut best: BTreeMap<GroupId, (NodeId, ReplicaReport)> = BTreeMap::new();
    for (node, seen) in &inner.seen {
        let Some(beat) = &seen.beat else { continue };
        for r in beat.replicas.iter().filter(|r| r.is_leader) {
            if best.get(&r.group).is_none_or(|(_, b)| b.term < r.term) {
                best.insert(r.group, (*node, r.clone()));
            }
        }
    }
    best
}

/// The voter sets of a replica's membership, as in [`ReplicaReport::voters`].
pub fn voter_sets(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Vec<Vec<NodeId>> {
    m.membership_config
        .membership()
        .get_joint_config()
        .iter()
        .map(|c| c.iter().copied().collect())
        .collect()
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::NotLeader(leader) => ApiError::NotLeader { leader },
            Refused::Removed(message) => ApiError::NodeGone(message),
            Refused::Replaced(message) => ApiError::NodeReplaced(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StatusCode;

    // Heartbeat refusals keep the status and code the sender's heartbeat loop reads: 421
    // `not_leader` (with the hint), 410 `node_removed`.
    #[test]
    fn refusals_keep_their_status_and_code() {
        let e = ApiError::from(Refused::NotLeader(Some(3)));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::MISDIRECTED_REQUEST, "not_leader")
        );
        let e = ApiError::from(Refused::Removed("node 4 was removed".into()));
        assert_eq!((e.status(), e.code()), (StatusCode::GONE, "node_removed"));
        assert_eq!(e.to_string(), "node 4 was removed");
    }
}
