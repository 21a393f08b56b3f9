//! Drains: the map's mark that no repair replaces a node until a time (`kvctl drain`), set and
//! cleared by the metadata leader. The planner honours it through [`Meta::vetoed`]; the node's
//! hand-off of its leaderships is `group/handoff.rs`.

use kvorum_router::{NodeId, NodeLifecycle};

use crate::error::ApiError;

use super::record::update_map;
use super::state::Meta;

/// Records that no repair replaces `node` until `until_ms` (Unix milliseconds), or with `None`
/// ends its drain. Refused for a node the map does not know (`unknown_node`) or that was
/// removed (`node_removed`).
pub async fn set_drain(meta: &Meta, node: NodeId, until_ms: Option<u64>) -> Result<(), ApiError> {
    let refused = |code: &'static str, message: String| ApiError::ChangeRefused { code, message };
    match meta.node.map().nodes.get(&node) {
        None => {
            return Err(refused(
                "unknown_node",
                format!("node {node} is not in the cluster map"),
            ))
        }
        Some(n) if n.state == NodeLifecycle::Removed => {
            return Err(refused(
                "node_removed",
                format!("node {node} was removed from the cluster; there is nothing to drain"),
            ))
        }
        Some(_) => {}
    }
    let what = match until_ms {
        Some(t) => format!("drain node {node} until {t} ms"),
        None => format!("end the drain of node {node}"),
    };
    update_map(meta, &what, |m| {
        if let Some(n) = m.nodes.get_mut(&node) {
            n.drain_until_ms = until_ms;
        }
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the drain could not be recorded: {e}")))?;
    Ok(())
}
