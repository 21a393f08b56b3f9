//! `GET /v1/cluster/status`: the cluster status the metadata leader assembles.
//!
//! The node builds a [`ClusterStatus`] and sends it; `kvctl status` and the tests read it back as
//! the same type. Fields are declared in alphabetical order, the order the node wrote them in
//! (with `json!`) before these types existed, so the bytes on the wire did not change.
//!
//! Compatibility: no status type denies unknown fields, so an older reader ignores the fields a
//! newer node adds. A field added later must be `#[serde(default)]` so that a newer reader still
//! reads an older node's status.

use std::collections::BTreeMap;
use std::fmt;

use kvorum_router::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

/// The cluster status. Built by the metadata leader from heartbeats (`health_known: true`); a
/// node that cannot reach it builds one from its own map and replicas (`health_known: false`):
/// then every active node's state is [`NodeState::Unknown`], no heartbeat times or sizes are
/// known, and group leaders come from the answering node's own replicas only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered the request (a node that forwards to the metadata leader puts its
    /// own id here).
    pub answered_by: NodeId,
    /// The cluster's id (hex), fixed at bootstrap.
    pub cluster_id: String,
    /// The config group (group 0, the metadata leader's Raft group).
    pub config: ConfigStatus,
    /// The last comparison of each group's replica state hashes (the consistency check), for
    /// the groups whose replicas reported a hash; only the metadata leader knows them (empty
    /// otherwise; left out of the JSON when empty, so the status of a cluster that never
    /// checked keeps its bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistency: Vec<GroupConsistency>,
    /// The epoch of the answering node's cluster map.
    pub epoch: u64,
    /// Every data group of the map, by id.
    pub groups: Vec<GroupStatus>,
    /// The name of the slot hash; fixed for the cluster.
    pub hash: String,
    /// Whether the answer comes from the metadata leader's heartbeat view; when false, node
    /// states are `unknown` and sizes and heartbeat times are null.
    pub health_known: bool,
    /// Replicas per data group.
    pub k: usize,
    /// The metadata leader (leader of the config group), if known.
    pub metadata_leader: Option<NodeId>,
    /// Every node ever in the cluster, removed ones included, by id.
    pub nodes: Vec<NodeStatus>,
    /// The number of slots; fixed for the cluster.
    pub slot_count: u16,
    /// Active nodes that host no data group, by id.
    pub spares: Vec<NodeId>,
    /// The metadata leader's tasks in progress.
    pub tasks: Vec<TaskStatus>,
}

/// One node in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's client API and Raft address, `ip:port`.
    pub addr: String,
    /// Whether the node is a voter of the config group.
    pub config_voter: bool,
    /// Bytes of applied data over the replicas the node hosts, from its last heartbeat; null when
    /// health is unknown or the node never reported.
    pub data_bytes: Option<u64>,
    /// Until when (Unix milliseconds) an operator's drain keeps repairs from replacing the
    /// node; absent when it is not drained (or the drain ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until_ms: Option<u64>,
    /// The data groups the node is a member of (at most one today).
    pub groups: Vec<GroupId>,
    /// The node's id.
    pub id: NodeId,
    /// Milliseconds since the node's last heartbeat reached the metadata leader; null when
    /// health is unknown or the node never reported.
    pub last_heartbeat_ms: Option<u64>,
    /// Whether the node hosts a data group.
    pub role: NodeRole,
    /// The node's health.
    pub state: NodeState,
}

/// Whether a node hosts a data group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// A member of a data group.
    Replica,
    /// Hosts no data group; waits to replace a dead replica.
    Spare,
}

impl NodeRole {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Replica => "replica",
            NodeRole::Spare => "spare",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's health in the status: the metadata leader's view, `removed` from the map, or
/// `unknown` when the answering node has no heartbeat view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heard from within the suspect threshold.
    Alive,
    /// Silent for longer than the suspect threshold, not yet the dead one.
    Suspect,
    /// Silent for longer than the dead threshold.
    Dead,
    /// Removed from the cluster; its id is never used again.
    Removed,
    /// Not known to the answering node. A state this build does not know also reads as this.
    #[serde(other)]
    Unknown,
}

impl NodeState {
    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Dead => "dead",
            NodeState::Removed => "removed",
            NodeState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One data group in the status. The Raft facts (`leader`, `term`, `applied`, `voters`, sizes)
/// come from the best leader report known (highest term); all are null when none is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The leader's last applied log index.
    pub applied: Option<u64>,
    /// Bytes of the group's applied data, as its leader reported them.
    pub bytes: Option<u64>,
    /// The group's id (from 1).
    pub id: GroupId,
    /// Keys of the group's applied data, as its leader reported them.
    pub keys: Option<u64>,
    /// The group's leader.
    pub leader: Option<NodeId>,
    /// The group's members in the map, by id.
    pub members: Vec<NodeId>,
    /// The number of slots the group owns.
    pub slot_count: usize,
    /// The slots the group owns as ranges, `a-b` or `a`, comma-separated (empty: none).
    pub slots: String,
    /// The leader's Raft term.
    pub term: Option<u64>,
    /// The voter sets of the group's Raft membership: one set, or two (old and new) while a joint
    /// membership change is under way; each set by id.
    pub voters: Option<Vec<Vec<NodeId>>>,
}

/// The config group in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The config group's leader (the metadata leader), if known.
    pub leader: Option<NodeId>,
    /// The config leader's Raft term, if known.
    pub term: Option<u64>,
    /// The config group's voters in the map, by id.
    pub voters: Vec<NodeId>,
}

/// One task of the metadata leader in progress.
///
/// Tolerant of task kinds this build does not know: `kind` and `step` are strings, the fields
/// only some kinds have are optional (left out when `None`), and the fields of kinds this build
/// does not know are kept in `other` (so that `kvctl status` can show them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// `view_change`: the change (add or remove a node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<kvorum_router::ViewChange>,
    /// `replace_replica`: the node whose replica goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<NodeId>,
    /// `replace_replica`: the group whose replica is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// The task's id: unique within the cluster, increasing.
    pub id: u64,
    /// What the task does (`replace_replica`).
    pub kind: String,
    /// `replace_replica`: the node that takes the dead node's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<NodeId>,
    /// `view_change`: slots whose owner has changed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots_moved: Option<u64>,
    /// `view_change`: slots the whole change moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots_total: Option<u64>,
    /// When the task was planned, in milliseconds since the Unix epoch; 0 when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// The step reached so far (`add_learner`, `swap`; for a view change, the running step in
    /// words).
    pub step: String,
    /// Fields of task kinds this build does not know, as they came; always empty in what this
    /// build's node sends. Serialized after the fields above.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// [`TaskStatus::kind`] of a replica replacement.
pub const REPLACE_REPLICA: &str = "replace_replica";
/// [`TaskStatus::kind`] of a view change (its `step` describes the running step).
pub const VIEW_CHANGE: &str = "view_change";

/// The comparison of one group's replica state hashes at one log index (the consistency check:
/// every replica hashes its applied state at the same log entry). Replicas that applied the same
/// log hold the same state, so a replica in `mismatched` holds data that changed behind Raft's
/// back (a damaged disk, a bug): take it out (stop it; the cluster replaces it like a dead
/// node), wipe it and add it back as a new node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConsistency {
    /// Members whose hash at `index` is the one most members have.
    pub agreeing: Vec<NodeId>,
    /// Why the group could not be checked (its leader did not answer), if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The group (0: the config group).
    pub group: GroupId,
    /// The log index at which the hashes were computed.
    pub index: u64,
    /// Members whose hash at `index` differs from the one most members have (all members that
    /// reported one, when no hash has more holders than every other).
    pub mismatched: Vec<NodeId>,
    /// Members that reported no hash at `index` (not applied yet, down, or already past it).
    pub missing: Vec<NodeId>,
}

impl GroupConsistency {
    /// Whether the group's replicas disagree.
    pub fn is_mismatch(&self) -> bool {
        !self.mismatched.is_empty()
    }
}

/// The answer of `POST /v1/cluster/consistency` (`kvctl check-consistency`): every group's
/// comparison, the config group's first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// One comparison per group.
    pub groups: Vec<GroupConsistency>,
}

impl ConsistencyReport {
    /// Whether every group was checked and no replica disagrees.
    pub fn consistent(&self) -> bool {
        self.groups
            .iter()
            .all(|g| !g.is_mismatch() && g.error.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> ClusterStatus {
        ClusterStatus {
            answered_by: 4,
            cluster_id: "c-7f3a".into(),
            config: ConfigStatus {
                leader: Some(2),
                term: Some(3),
                voters: vec![1, 2, 3],
            },
            consistency: vec![],
            epoch: 3,
            groups: vec![
                GroupStatus {
                    applied: Some(77),
                    bytes: Some(5678),
                    id: GroupId(1),
                    keys: Some(1234),
                    leader: Some(2),
                    members: vec![1, 2, 3],
                    slot_count: 2048,
                    slots: "0-2047".into(),
                    term: Some(5),
                    voters: Some(vec![vec![1, 2, 3], vec![1, 2, 7]]),
                },
                GroupStatus {
                    applied: None,
                    bytes: None,
                    id: GroupId(2),
                    keys: None,
                    leader: None,
                    members: vec![4, 5, 6],
                    slot_count: 2048,
                    slots: "2048-4095".into(),
                    term: None,
                    voters: None,
                },
            ],
            hash: "xxh3_64".into(),
            health_known: true,
            k: 3,
            metadata_leader: Some(2),
            nodes: vec![
                NodeStatus {
                    addr: "127.0.0.1:7070".into(),
                    config_voter: true,
                    data_bytes: Some(10240),
                    drain_until_ms: None,
                    groups: vec![GroupId(1)],
                    id: 1,
                    last_heartbeat_ms: Some(120),
                    role: NodeRole::Replica,
                    state: NodeState::Alive,
                },
                NodeStatus {
                    addr: "127.0.0.1:7076".into(),
                    config_voter: false,
                    data_bytes: None,
                    drain_until_ms: None,
                    groups: vec![],
                    id: 7,
                    last_heartbeat_ms: None,
                    role: NodeRole::Spare,
                    state: NodeState::Removed,
                },
            ],
            slot_count: 4096,
            spares: vec![7],
            tasks: vec![TaskStatus {
                change: None,
                dead: Some(3),
                group: Some(GroupId(1)),
                id: 9,
                kind: REPLACE_REPLICA.into(),
                replacement: Some(7),
                slots_moved: None,
                slots_total: None,
                started_ms: Some(1_700_000_000_000),
                step: "swap".into(),
                other: BTreeMap::new(),
            }],
        }
    }

    // The status serializes to the exact bytes the node wrote with `json!` (sorted keys, nulls
    // present), and reads back to the same value.
    #[test]
    fn cluster_status_keeps_its_json() {
        let expected = json!({
            "answered_by": 4, "cluster_id": "c-7f3a",
            "config": {"leader": 2, "term": 3, "voters": [1, 2, 3]},
            "epoch": 3,
            "groups": [
                {"applied": 77, "bytes": 5678, "id": 1, "keys": 1234, "leader": 2,
                 "members": [1, 2, 3], "slot_count": 2048, "slots": "0-2047", "term": 5,
                 "voters": [[1, 2, 3], [1, 2, 7]]},
                {"applied": null, "bytes": null, "id": 2, "keys": null, "leader": null,
                 "members": [4, 5, 6], "slot_count": 2048, "slots": "2048-4095", "term": null,
                 "voters": null},
            ],
            "hash": "xxh3_64", "health_known": true, "k": 3, "metadata_leader": 2,
            "nodes": [
                {"addr": "127.0.0.1:7070", "config_voter": true, "data_bytes": 10240,
                 "groups": [1], "id": 1, "last_heartbeat_ms": 120, "role": "replica",
                 "state": "alive"},
                {"addr": "127.0.0.1:7076", "config_voter": false, "data_bytes": null,
                 "groups": [], "id": 7, "last_heartbeat_ms": null, "role": "spare",
                 "state": "removed"},
            ],
            "slot_count": 4096, "spares": [7],
            "tasks": [{"dead": 3, "group": 1, "id": 9, "kind": "replace_replica",
                       "replacement": 7, "started_ms": 1_700_000_000_000u64, "step": "swap"}],
        });
        let status = full();
        let text = serde_json::to_string(&status).expect("serializes");
        assert_eq!(text, expected.to_string());
        let pretty = serde_json::to_string_pretty(&status).expect("serializes");
        assert_eq!(
            pretty,
            serde_json::to_string_pretty(&expected).expect("pretty")
        );
        let back: ClusterStatus = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, status);
    }

    // The fallback (health unknown) has the same shape: null leaders, times and sizes, every
    // state `unknown`.
    #[test]
    fn fallback_status_keeps_its_json() {
        let mut status = full();
        status.health_known = false;
        status.metadata_leader = None;
        status.config = ConfigStatus {
            leader: None,
            term: None,
            voters: vec![1, 2, 3],
        };
        status.nodes.truncate(1);
        status.nodes[0].state = NodeState::Unknown;
        status.nodes[0].data_bytes = None;
        status.nodes[0].last_heartbeat_ms = None;
        status.tasks.clear();
        let v = serde_json::to_value(&status).expect("serializes");
        assert_eq!(v["health_known"], json!(false));
        assert_eq!(v["metadata_leader"], json!(null));
        assert_eq!(
            v["config"],
            json!({"leader": null, "term": null, "voters": [1, 2, 3]})
        );
        assert_eq!(
            v["nodes"][0],
            json!({"addr": "127.0.0.1:7070", "config_voter": true, "data_bytes": null,
                   "groups": [1], "id": 1, "last_heartbeat_ms": null, "role": "replica",
                   "state": "unknown"})
        );
        assert_eq!(v["tasks"], json!([]));
        let back: ClusterStatus = serde_json::from_value(v).expect("parses");
        assert_eq!(back, status);
    }

    // A status with consistency comparisons round-trips, and one without (an older node's, or
    // a cluster never checked) reads with none.
    #[test]
    fn consistency_comparisons_round_trip() {
        let mut status = full();
        status.consistency = vec![GroupConsistency {
            agreeing: vec![1, 3],
            error: None,
            group: GroupId(1),
            index: 42,
            mismatched: vec![2],
            missing: vec![],
        }];
        let v = serde_json::to_value(&status).expect("serializes");
        assert_eq!(
            v["consistency"],
            json!([{"agreeing": [1, 3], "group": 1, "index": 42, "mismatched": [2],
                    "missing": []}])
        );
        let back: ClusterStatus = serde_json::from_value(v).expect("parses");
        assert_eq!(back, status);
        assert!(back.consistency[0].is_mismatch());
        let old: ClusterStatus =
            serde_json::from_value(serde_json::to_value(full()).expect("serializes"))
                .expect("parses");
        assert!(old.consistency.is_empty());
    }

    // A newer node's status reads: unknown fields are ignored, a task of an unknown kind keeps
    // its own fields in `other`, and an unknown node state reads as `unknown`.
    #[test]
    fn newer_status_reads() {
        let mut v = serde_json::to_value(full()).expect("serializes");
        v["future_field"] = json!({"x": 1});
        v["groups"][0]["learners"] = json!([7]);
        v["nodes"][0]["state"] = json!("draining");
        v["nodes"][0]["zone"] = json!("a");
        v["config"]["learners"] = json!([]);
        v["tasks"] = json!([
            {"id": 2, "kind": "move_slots", "from": 1, "to": 3, "step": "copy"},
        ]);
        let s: ClusterStatus = serde_json::from_value(v).expect("parses");
        assert_eq!(s.nodes[0].state, NodeState::Unknown);
        let t = &s.tasks[0];
        assert_eq!(
            (t.id, t.kind.as_str(), t.step.as_str()),
            (2, "move_slots", "copy")
        );
        assert_eq!(
            (t.group, t.dead, t.replacement, t.started_ms),
            (None, None, None, None)
        );
        assert_eq!(
            t.other,
            BTreeMap::from([("from".to_string(), json!(1)), ("to".to_string(), json!(3))])
        );
    }
}
