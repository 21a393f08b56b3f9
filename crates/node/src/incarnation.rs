//! A node's incarnation: a random id created together with its data directory, recorded in the
//! cluster map, and checked on every Raft RPC and heartbeat. It stops Raft amnesia: a node whose
//! data directory was wiped (or replaced) has lost its log and its vote, and if it took part under
//! its old id it could help elect a leader that lacks acknowledged writes.
//!
//! The rules:
//! 1. The incarnation is created with the identity file and never changes (`identity.rs`).
//! 2. The metadata leader records each node's incarnation in the map: a node added by a view
//!    change with the incarnation it answered when the add was accepted, any other the first time
//!    a heartbeat brings it; a recorded incarnation never changes (a wiped node is a new node).
//! 3. A node starting on an empty data directory first asks the peers of its view (or, joining,
//!    the addresses it was given) for their map; if one records another incarnation for its
//!    address (the cluster knows it as a member), the node refuses to start (`join.rs`): a wiped
//!    node may join only as a new node, after the old one is removed.
//! 4. Every Raft RPC carries the sender's incarnation, the id of the node it is addressed to and
//!    the incarnation the sender's map records for that node. A receiver refuses a sender whose
//!    incarnation differs from its own map's record; a receiver whose id is not the addressed one
//!    refuses the RPC (a new node at a removed node's address, which a group may still list);
//!    and a receiver that is the addressed node but not the incarnation the sender expects
//!    refuses and stops: so a wiped node that started anyway (its peers were unreachable) can
//!    neither vote nor be voted for. Heartbeats are checked the same way by the metadata leader.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::http::HeaderMap;
use kvorum_raftstore::NodeId;
use kvorum_router::ClusterMap;

use crate::error::ApiError;

pub use kvorum_wire::headers::{INCARNATION_HEADER, TO_INCARNATION_HEADER, TO_NODE_HEADER};

/// A new random incarnation id: 128 bits, hex.
pub fn new_incarnation() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The incarnations recorded in the newest map this node knows, by node; shared with the Raft
/// transport so every RPC can name the incarnation it expects.
#[derive(Debug, Clone, Default)]
pub struct Incarnations(Arc<RwLock<BTreeMap<NodeId, String>>>);

impl Incarnations {
    /// Takes the recorded incarnations of `map`.
    pub fn update(&self, map: &ClusterMap) {
        let recorded = map
            .nodes
            .iter()
            .filter_map(|(id, n)| n.incarnation.clone().map(|i| (*id, i)))
            .collect();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = recorded;
    }

    /// The incarnation the map records for `node`, if any.
    pub fn of(&self, node: NodeId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
    }
}

/// Why a request's incarnation headers were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
pub enum Mismatch {
    /// The sender is not the incarnation the map records for its id: it was wiped.
    Sender { node: NodeId },
    /// This node is the one addressed, but not the incarnation the sender's map records for it:
    /// this node was wiped. It stops.
    Receiver,
    /// The request is addressed to another node id (`to`; `None`: it names none, and expects
    /// another incarnation): this node took over the address of a node that was removed and
    /// that the sender still knows. Refused; this node goes on.
    OtherNode { to: Option<NodeId> },
}

/// Checks the incarnation headers of an internal request from `from` against this node's id `me`,
/// its incarnation `mine` and its known `recorded` incarnations. Headers that are absent are not
/// checked (a map that records nothing yet, in a cluster's first seconds), except that a request
/// expecting another incarnation without naming its target is refused, not obeyed.
pub fn check(
    headers: &HeaderMap,
    from: Option<NodeId>,
    me: NodeId,
    mine: &str,
    recorded: &Incarnations,
) -> Result<(), Mismatch> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let to = header(TO_NODE_HEADER).and_then(|v| v.parse::<NodeId>().ok());
    if to.is_some_and(|to| to != me) {
        return Err(Mismatch::OtherNode { to });
    }
    if let Some(expected) = header(TO_INCARNATION_HEADER) {
        if expected != mine {
            return Err(match to {
                Some(_) => Mismatch::Receiver,
                None => Mismatch::OtherNode { to: None },
            });
        }
    }
    if let (Some(from), Some(theirs)) = (from, header(INCARNATION_HEADER)) {
        if recorded.of(from).is_some_and(|r| r != theirs) {
            return Err(Mismatch::Sender { node: from });
        }
    }
    Ok(())
}

/// What a node must do when the cluster knows another data directory under its id `node`.
pub fn wiped_message_short(node: NodeId) -> String {
    format!(
        "A node without its log and vote must not take part under its old id: start it with its \
         original data directory, or remove node {node} from the cluster first and join this \
         machine as a new node"
    )
}

/// The message of a node that learns it is not the incarnation the cluster knows under its id.
pub fn wiped_message(node: NodeId, data_dir: &std::path::Path) -> String {
    format!(
        "node {node}'s data directory {} is not the one the cluster knows under id {node} (it was \
         wiped or replaced): a node without its log and vote must not take part under its old id. \
         Start it with its original data directory, or remove node {node} from the cluster first \
         and join this machine as a new node",
        data_dir.display()
    )
}

impl From<Mismatch> for ApiError {
    fn from(m: Mismatch) -> ApiError {
        match m {
            Mismatch::Sender { node } => ApiError::IncarnationMismatch(format!(
                "node {node} is not the incarnation the cluster map records (its data directory \
                 was wiped); it must join as a new node"
            )),
            Mismatch::Receiver => ApiError::IncarnationMismatch(
                "this node is not the incarnation the cluster map records (its data directory was \
                 wiped); it stops"
                    .to_string(),
            ),
            Mismatch::OtherNode { to: Some(to) } => ApiError::WrongNode(format!(
                "this RPC is for node {to}, which no longer runs at this address; refused"
            )),
            Mismatch::OtherNode { to: None } => ApiError::WrongNode(
                "this RPC names no node and expects another incarnation than this node's; refused"
                    .to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    fn recorded(pairs: &[(NodeId, &str)]) -> Incarnations {
        let i = Incarnations::default();
        *i.0.write().expect("lock") = pairs.iter().map(|(n, s)| (*n, s.to_string())).collect();
        i
    }

    // Requests that name no incarnations (a map that records none yet) pass.
    #[test]
    fn absent_headers_pass() {
        assert_eq!(
            check(&headers(&[]), Some(2), 1, "me", &recorded(&[])),
            Ok(())
        );
    }

    // A sender whose incarnation differs from the recorded one was wiped: refused.
    #[test]
    fn wiped_sender_is_refused() {
        let rec = recorded(&[(2, "old")]);
        let h = headers(&[(INCARNATION_HEADER, "new")]);
        assert_eq!(
            check(&h, Some(2), 1, "me", &rec),
            Err(Mismatch::Sender { node: 2 })
        );
        let h = headers(&[(INCARNATION_HEADER, "old")]);
        assert_eq!(check(&h, Some(2), 1, "me", &rec), Ok(()));
        // Not recorded yet: accepted (it is recorded from its first heartbeat).
        let h = headers(&[(INCARNATION_HEADER, "x")]);
        assert_eq!(check(&h, Some(3), 1, "me", &rec), Ok(()));
    }

    // A receiver that is the node addressed but not the incarnation the sender expects was
    // wiped: refused, and it stops.
    #[test]
    fn wiped_receiver_refuses() {
        let h = headers(&[(TO_NODE_HEADER, "4"), (TO_INCARNATION_HEADER, "old")]);
        assert_eq!(
            check(&h, Some(1), 4, "new", &recorded(&[])),
            Err(Mismatch::Receiver)
        );
        assert_eq!(check(&h, Some(1), 4, "old", &recorded(&[])), Ok(()));
    }

    // An RPC addressed to another node id (a removed node whose address a new node took, still
    // listed by a group's leader) is refused without stopping the receiver, whatever
    // incarnation it expects; one that names no node but expects another incarnation too.
    #[test]
    fn rpc_for_another_node_id_is_refused_without_stopping() {
        for expected in [Some("old"), Some("new"), None] {
            let mut pairs = vec![(TO_NODE_HEADER, "4")];
            pairs.extend(expected.map(|e| (TO_INCARNATION_HEADER, e)));
            assert_eq!(
                check(&headers(&pairs), Some(1), 6, "new", &recorded(&[])),
                Err(Mismatch::OtherNode { to: Some(4) }),
                "{expected:?}"
            );
        }
        let h = headers(&[(TO_INCARNATION_HEADER, "old")]);
        assert_eq!(
            check(&h, Some(1), 6, "new", &recorded(&[])),
            Err(Mismatch::OtherNode { to: None })
        );
    }

    // Incarnations are 128 random bits, so two data directories never share one.
    #[test]
    fn incarnations_differ() {
        let (a, b) = (new_incarnation(), new_incarnation());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
