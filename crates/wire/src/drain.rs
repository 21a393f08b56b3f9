//! Draining a node before a planned stop: `POST /v1/cluster/nodes/{id}/drain` with a
//! [`DrainBody`], and `DELETE /v1/cluster/nodes/{id}/drain` to end a drain early; both answer a
//! [`DrainReply`].
//!
//! A drain (1) records in the cluster map that no repair replaces the node's replicas until a
//! time (the metadata leader's clock), however long the node is silent, and (2) asks the node to
//! hand the leadership of every group it leads to another voter. The node can then be stopped and
//! started again within that time without a repair and without a failover at the stop. Any node
//! answers these routes (a node that is not the metadata leader forwards the call to it).
//! Refusals are [`crate::ErrorBody`]s: `bad_request` (minutes out of range), `unknown_node` and
//! `node_removed` (404/409).

use kvorum_router::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

/// The drain time when the body names none, in minutes.
pub const DEFAULT_DRAIN_MINUTES: u64 = 30;
/// The longest drain, in minutes (a week): past it an operator removes the node instead.
pub const MAX_DRAIN_MINUTES: u64 = 7 * 24 * 60;

/// Body of `POST /v1/cluster/nodes/{id}/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// For how long no repair replaces the node, from now (1 to [`MAX_DRAIN_MINUTES`]; default
    /// [`DEFAULT_DRAIN_MINUTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u64>,
}

/// One group whose leadership the drained node handed off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOff {
    /// The group.
    pub group: GroupId,
    /// The group's new leader, as the drained node saw it.
    pub to: NodeId,
    /// Milliseconds from the hand-off's start until the new leader was known.
    pub took_ms: u64,
}

/// What the drained node did with its leaderships (its answer to the internal drain call).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaderships {
    /// Groups now led by another node.
    pub moved: Vec<HandedOff>,
    /// Groups the node still leads, each with why the hand-off failed.
    pub kept: Vec<(GroupId, String)>,
}

/// The answer of the drain routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    /// The drained node.
    pub node: NodeId,
    /// Until when no repair replaces the node (Unix milliseconds); `None` after a
    /// `DELETE`: the drain ended.
    pub until_ms: Option<u64>,
    /// The node's hand-offs; `None` when it was not asked (a `DELETE`) or did not answer.
    pub leaderships: Option<Leaderships>,
    /// Why the node's leaderships are not known (it did not answer the call), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}
