//! The heartbeat exchange's messages: a node's heartbeat with its replicas' reports, and the
//! metadata leader's reply.

use std::collections::BTreeMap;

use kvorum_raftstore::{GroupId, NodeId, StateHash};
use kvorum_router::ClusterMap;
use serde::{Deserialize, Serialize};

/// One replica's state, as its node reports it in a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// The replica's group.
    pub group: GroupId,
    /// Whether this replica leads its group.
    pub is_leader: bool,
    /// The group's leader as this replica knows it.
    pub leader: Option<NodeId>,
    /// The replica's Raft term.
    pub term: u64,
    /// The replica's last applied log index.
    pub applied: Option<u64>,
    /// Keys of this replica's applied data.
    pub keys: Option<u64>,
    /// Bytes (keys and values) of this replica's applied data.
    pub bytes: Option<u64>,
    /// The voter sets of the replica's current membership: one set, or two (old and new) while
    /// a joint membership change is under way.
    #[serde(default)]
    pub voters: Vec<Vec<NodeId>>,
    /// The replica's newest hash of its applied state (the consistency check), if it computed
    /// one since it started.
    #[serde(default)]
    pub hash: Option<StateHash>,
}

/// A node's heartbeat to the metadata leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's node id.
    pub node: NodeId,
    /// The epoch of the sender's map: the reply carries the map when it is older.
    pub epoch: u64,
    /// Every replica the sender hosts.
    pub replicas: Vec<ReplicaReport>,
    /// The sender's incarnation (see `incarnation.rs`); absent from nodes of older versions.
    #[serde(default)]
    pub incarnation: Option<String>,
}

/// The metadata leader's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The answering metadata leader.
    pub metadata_leader: NodeId,
    /// The epoch of its map.
    pub epoch: u64,
    /// The current map, when the sender's is older.
    pub map: Option<ClusterMap>,
    /// The leader of each group, as its replicas report it.
    pub leaders: BTreeMap<GroupId, NodeId>,
}
