//! `GET /v1/join`: whether a node is a member of a cluster or still waiting to be added.
//!
//! A node started with `--join ADDR,...` (or with a VIEW on an empty data directory while another
//! cluster already runs at those addresses) serves only `/healthz` and this route until the
//! metadata leader adds it (`kvctl add-node ADDR`); every other route answers 503 `joining`. A
//! serving node answers it too, with [`JoinPhase::Member`] and its id.

use kvorum_router::NodeId;
use serde::{Deserialize, Serialize};

/// Where a node stands with respect to its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinPhase {
    /// Not in any cluster map yet: the node polls the addresses it was given and waits to be
    /// added. It hosts nothing and serves nothing but its health and this route.
    Waiting,
    /// A node of the cluster under the id in [`JoinState::node`].
    Member,
}

/// Reply of `GET /v1/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinState {
    /// The node's address, `ip:port`: what `kvctl add-node` takes.
    pub addr: String,
    /// Waiting to be added, or a member.
    pub state: JoinPhase,
    /// The node's id; `None` while waiting.
    pub node: Option<NodeId>,
    /// The id of the cluster the node belongs to, or (while waiting) of the cluster it found at
    /// the addresses it was given; `None` while no such peer has answered.
    pub cluster_id: Option<String>,
    /// The incarnation of the node's data directory (see the node's `incarnation.rs`); the map
    /// records it from the node's first heartbeat after it was added.
    pub incarnation: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // The phases are lowercase words on the wire, and a waiting node names no id.
    #[test]
    fn join_state_json() {
        let waiting = JoinState {
            addr: "127.0.0.4:7070".into(),
            state: JoinPhase::Waiting,
            node: None,
            cluster_id: None,
            incarnation: "ab".into(),
        };
        let v = serde_json::to_value(&waiting).expect("serializes");
        assert_eq!(
            v,
            json!({"addr": "127.0.0.4:7070", "state": "waiting", "node": null,
                   "cluster_id": null, "incarnation": "ab"})
        );
        assert_eq!(
            serde_json::from_value::<JoinState>(v).expect("parses"),
            waiting
        );
        let member: JoinState = serde_json::from_value(json!({"addr": "a", "state": "member",
            "node": 4, "cluster_id": "c", "incarnation": "i"}))
        .expect("parses");
        assert_eq!(member.state, JoinPhase::Member);
        assert_eq!(member.node, Some(4));
    }
}
