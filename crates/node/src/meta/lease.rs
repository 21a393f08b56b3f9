//! Whether this node holds the metadata role: it leads the config group, and (for acting) it
//! confirmed that with a quorum within the lease.

use std::time::{Duration, Instant};

use kvorum_raftstore::NodeId;
use kvorum_router::CONFIG_GROUP;

use crate::node::Node;

use super::state::Meta;

/// How long a confirmation of the config group's leadership lets the metadata role act: four
/// fifths of the election timeout, so it lapses before any other config voter can be elected
/// (a voter starts an election no sooner than an election timeout after it last heard this
/// leader, which is after the confirming round started). The metadata loop renews it every
/// [`TICK`].
pub(crate) fn lease(state: &Node) -> Duration {
    state.cfg.election_timeout * 4 / 5
}

/// Whether this node still leads the config group in `term`, as its replica sees it.
fn raft_leads_in(state: &Node, term: u64) -> bool {
    state.group(CONFIG_GROUP).is_some_and(|r| {
        let m = r.metrics();
        let m = m.borrow();
        m.current_leader == Some(state.id()) && m.state.is_leader() && m.current_term == term
    })
}

/// Whether this node may act as the metadata leader of `term` now: waits (at most two election
/// timeouts) while its replica still leads in `term` but the last confirmation lapsed (a slow
/// tick); `false` once it no longer leads in `term` or the confirmation does not come.
pub(crate) async fn acts_in(meta: &Meta, term: u64) -> bool {
    let lease = lease(&meta.node);
    let deadline = Instant::now() + meta.node.cfg.election_timeout * 2;
    loop {
        if meta.confirmed_in(term, lease) {
            return true;
        }
        if !raft_leads_in(&meta.node, term) || Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
}

/// How often [`acts_in`] looks again for a renewed confirmation (the loop renews it every
/// [`TICK`]; a driver waits at most one poll past it).
const CONFIRM_POLL: Duration = Duration::from_millis(20);

/// Whether this node currently leads the config group.
pub fn is_metadata_leader(state: &Node) -> bool {
    state.group(CONFIG_GROUP).is_some_and(|r| {
        let m = r.metrics();
        let m = m.borrow();
        m.current_leader == Some(state.id()) && m.state.is_leader()
    })
}

/// The leader of the config group as this node's replica knows it.
pub fn config_leader_hint(state: &Node) -> Option<NodeId> {
    state
        .group(CONFIG_GROUP)
        .and_then(|r| r.metrics().borrow().current_leader)
}
